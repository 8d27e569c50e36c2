#!/bin/sh
# Checks the Go kit as CI does: formatting, vet, build without the test drivers, tests against
# real MariaDB/MySQL and PostgreSQL. Offline: drivers come from Debian's packages via go.test.mod.
# Environment: SAGAKIT_MYSQL_DSN (default root@tcp(127.0.0.1:3306)/),
# SAGAKIT_POSTGRES_DSN (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable),
# CI=true to fail instead of skipping when a database is unreachable.
set -eu
cd "$(dirname "$0")"
export GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt -l lists files that need formatting:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go build .                        # the package itself needs nothing but the standard library
go vet -modfile=go.test.mod ./...
go test -modfile=go.test.mod -count=1 -timeout 10m ./...
