"""A participant written for DTM, for tests/it/dtm.rs: each call runs inside dtmcli's own
BranchBarrier (PyPI dtmcli, pinned) on MariaDB, as DTM's users write them.

  python dtm_barrier_participant.py HOST PORT USER DATABASE

Serves on a random loopback port and prints "listening on HOST:PORT" on stderr (the barrier
prints to stdout). Paths:
  POST /{account}/action[/{fault}]      balance += body["delta"], inside the barrier
  POST /{account}/compensate[/{fault}]  balance -= body["delta"], inside the barrier
  GET  /balances                        {"a": …, "b": …}
Faults: "lose" commits, then answers 500 to the first call of each branch (a lost answer, so the
call comes again); "refuse" answers 409 (DTM's failure) without doing anything.
"""

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pymysql
from dtmcli import barrier, utils

HOST, PORT, USER, DB = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lost = set()
lock = threading.Lock()


def connect(db=None):
    return pymysql.connect(host=HOST, port=PORT, user=USER, database=db, autocommit=False)


def setup():
    conn = connect()
    with conn.cursor() as c:
        c.execute("create database if not exists dtm_barrier")
        # DTM's table (sqls/dtmcli.barrier.mysql.sql).
        c.execute(
            "create table if not exists dtm_barrier.barrier("
            " id bigint(22) primary key auto_increment, trans_type varchar(45) default '',"
            " gid varchar(128) default '', branch_id varchar(128) default '',"
            " op varchar(45) default '', barrier_id varchar(45) default '',"
            " reason varchar(45) default '', create_time datetime default now(),"
            " update_time datetime default now(), unique key(gid, branch_id, op, barrier_id))"
        )
        c.execute("create database if not exists `%s`" % DB)
        c.execute("create table if not exists `%s`.account(id varchar(8) primary key, balance int)" % DB)
        c.execute("insert ignore into `%s`.account values ('a', 1000), ('b', 1000)" % DB)
    conn.commit()
    conn.close()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        conn = connect(DB)
        with conn.cursor() as c:
            c.execute("select id, balance from account")
            balances = dict(c.fetchall())
        conn.close()
        self.answer(200, balances)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        account, op, fault = parts[0], parts[1], (parts[2] if len(parts) > 2 else "")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        delta = body["delta"] if op == "action" else -body["delta"]
        if fault == "refuse" and op == "action":
            return self.answer(409, {"dtm_result": "FAILURE"})
        bb = barrier.BranchBarrier(q["trans_type"], q["gid"], q["branch_id"], q["op"])

        def busi(cursor):
            cursor.execute("update account set balance = balance + %s where id = %s", (delta, account))

        conn = connect(DB)
        try:
            bb.call(conn.cursor(), busi)
        except utils.DTMFailureError:
            return self.answer(409, {"dtm_result": "FAILURE"})
        finally:
            conn.close()
        key = (q["gid"], q["branch_id"], q["op"])
        with lock:
            first = key not in lost
            lost.add(key)
        if fault == "lose" and first:
            return self.answer(500, {"error": "the answer was lost"})
        self.answer(200, {"dtm_result": "SUCCESS"})


setup()
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening on %s:%d" % server.server_address, file=sys.stderr, flush=True)
server.serve_forever()
