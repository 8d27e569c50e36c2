#!/usr/bin/env python3
"""An OTLP/HTTP sink for benchmarks: answers 200 to every POST /v1/traces and counts bytes and
requests (printed on SIGINT/SIGTERM). It decodes nothing: the exporter's cost is what is
measured, not a collector's. Usage: otlp-sink.py [PORT] (default 4318, loopback only)."""
import http.server, signal, sys

stats = {"requests": 0, "bytes": 0}

class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

def done(*_):
    print(f"otlp-sink: {stats['requests']} exports, {stats['bytes']} bytes", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, done)
signal.signal(signal.SIGINT, done)
port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
