#!/usr/bin/env bash
# The shop example end to end: three Go participants built on sagakit (order, stock, balance), each
# with its own MariaDB database, driven by saga-orchestrator. It checks a successful order, two
# refused orders compensated, duplicate deliveries answered from the barrier, and a delayed
# compensation, then the final stock and balances. The sagas are started by definition, through the
# Go client of kit/go/client (cmd/shopctl). See README.md.
#
# Environment: MARIADB_HOST (127.0.0.1), MARIADB_PORT (3306), MARIADB_USER (root),
# MARIADB_PASSWORD (empty), SAGA_BIN (the repository's target/debug/saga-orchestrator).
# It drops and recreates the databases shop_order, shop_stock and shop_balance.
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SAGA_BIN=${SAGA_BIN:-$repo/target/debug/saga-orchestrator}
db_host=${MARIADB_HOST:-127.0.0.1}
db_port=${MARIADB_PORT:-3306}
db_user=${MARIADB_USER:-root}
export MYSQL_PWD=${MARIADB_PASSWORD:-} # read by the mariadb client; the services get it in their DSN

work=$(mktemp -d "${TMPDIR:-/tmp}/shop-example.XXXXXX")
pids=()
ok=0

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$ok" = 1 ] || [ -z "$(ls -A "$work")" ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT

fail() {
  trap - ERR
  echo >&2
  echo "FAIL: $*" >&2
  [ "$BASH_SUBSHELL" = 0 ] || exit 1 # inside $(...): the caller reports the rest
  local f
  for f in "$work"/*.log; do
    [ -e "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 12 "$f" | cut -c 1-400 >&2
  done
  exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND exited with status $?"' ERR

step() { printf '\n== %s\n' "$*"; }
say() { printf '   %s\n' "$*"; }

# expect WHAT ACTUAL WANTED
expect() {
  [ "$2" = "$3" ] || fail "$1: expected $3, got $2"
  say "ok: $1 = $2"
}

# j EXPR: evaluates the Python expression EXPR over the JSON document on stdin (as d); prints
# strings bare and anything else as JSON. No jq needed.
j() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(v if isinstance(v, str) else json.dumps(v, sort_keys=True))' "$1"
}

# wait_for SECONDS CMD...: runs CMD until it succeeds, failing after SECONDS.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
step "setup"
[ -x "$SAGA_BIN" ] || fail "no orchestrator binary at $SAGA_BIN: run \`cargo build\` in $repo (or set SAGA_BIN)"
command -v go >/dev/null || fail "go is not installed"
command -v curl >/dev/null || fail "curl is not installed"
command -v python3 >/dev/null || fail "python3 is not installed"
sql_cli=$(command -v mariadb || command -v mysql) || fail "no mariadb (or mysql) client"
sql() { "$sql_cli" -h "$db_host" -P "$db_port" -u "$db_user" -N -e "$1"; }
sql "SELECT 1" >/dev/null 2>"$work/mariadb.log" ||
  fail "MariaDB is not reachable at $db_user@$db_host:$db_port: $(cat "$work/mariadb.log")"
for s in order stock balance; do
  sql "DROP DATABASE IF EXISTS shop_$s; CREATE DATABASE shop_$s"
done
say "databases shop_order, shop_stock, shop_balance created on $db_host:$db_port"

(cd "$here" && GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod go build -o "$work/shop" . &&
  GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod go build -o "$work/shopctl" ./cmd/shopctl) ||
  fail "go build of examples/shop failed"
say "participants and shopctl built"

# first_match FILE REGEX: prints the first capture group of REGEX (sed -E) in FILE, if any.
first_match() { sed -nE "s/$2/\\1/p" "$1" | head -n 1 | grep .; }

declare -A url
start_service() { # start_service NAME [SEED]
  "$work/shop" -service "$1" -seed "${2:-}" \
    -dsn "$db_user:$MYSQL_PWD@tcp($db_host:$db_port)/shop_$1" >"$work/$1.out" 2>"$work/$1.log" &
  pids+=($!)
  wait_for 20 first_match "$work/$1.out" '^listening on (.*)$' >/dev/null || fail "the $1 service did not start"
  url[$1]=http://$(first_match "$work/$1.out" '^listening on (.*)$')
  say "$1 service on ${url[$1]}${2:+ (seeded with $2)}"
}
start_service order
start_service stock A1=10
start_service balance 7=100,8=20

SAGA__SERVER__BIND=127.0.0.1:0 SAGA__DATABASE__URL="sqlite://$work/o.db?mode=rwc" \
  SAGA__PARTICIPANT__INITIAL_BACKOFF_MS=50 SAGA__PARTICIPANT__MAX_BACKOFF_MS=500 \
  "$SAGA_BIN" serve >"$work/orchestrator.log" 2>&1 &
pids+=($!)
wait_for 30 first_match "$work/orchestrator.log" '.*"bound":"([^"]*)".*' >/dev/null || fail "the orchestrator did not start"
orch=http://$(first_match "$work/orchestrator.log" '.*"bound":"([^"]*)".*')
say "orchestrator on $orch"

# ---------------------------------------------------------------------------------------------
shopctl() { "$work/shopctl" -orchestrator "$orch" "$@"; }

# define [FLAGS]: stores the definition place_order with the services' URLs (PUT
# /v1/definitions/place_order, through the Go client); prints {"name", "version", "created"}.
define() {
  shopctl define -order "${url[order]}" -stock "${url[stock]}" -balance "${url[balance]}" "$@" ||
    fail "shopctl define $* failed"
}

# start_saga WAIT_MS ID USER_ID QTY AMOUNT: starts the saga placing order ID for QTY of sku A1,
# paid AMOUNT by USER_ID, by definition (the newest version of place_order), through the Go
# client, waiting up to WAIT_MS for the end; prints the saga.
start_saga() {
  shopctl start -wait "$1ms" -id "$2" -user "$3" -sku A1 -qty "$4" -amount "$5" ||
    fail "starting saga $2 by definition failed"
}
get_saga() { curl -sS --fail-with-body "$orch/v1/sagas/$1${2:-}" || fail "GET /v1/sagas/$1 failed"; }
state() { curl -sS --fail-with-body "${url[$1]}/state" || fail "GET ${url[$1]}/state failed"; }
row() { state "$1" | j "d.get('$2')"; } # row SERVICE KEY
# body_of SERVICE IDEMPOTENCY_KEY: the body of the last call SERVICE got with that key, as JSON.
body_of() { curl -sS --fail-with-body "${url[$1]}/calls" | j "[json.loads(c['body']) for c in d if c['headers'].get('Idempotency-Key') == '$2'][-1]"; }
barrier_rows() { sql "SELECT COUNT(*) FROM shop_$1.saga_barrier"; }
snapshot() { local s; for s in order stock balance; do echo "$s $(state "$s") barrier rows: $(barrier_rows "$s")"; done; }
step_status() { j "[s['status'] for s in d['steps'] if s['name'] == '$1'][0]"; }

# ---------------------------------------------------------------------------------------------
step "the definition: place_order, its bodies made of \$payload references"
def=$(define)
expect "definition place_order stored" "$(j '[d["version"], d["created"]]' <<<"$def")" "[1, true]"
def=$(define)
expect "the same definition again (no new version)" "$(j '[d["version"], d["created"]]' <<<"$def")" "[1, false]"

# ---------------------------------------------------------------------------------------------
step "a. an order that succeeds: user 7 buys 2 x A1 for 30"
saga=$(start_saga 10000 order-a 7 2 30)
expect "saga order-a status" "$(j 'd["status"]' <<<"$saga")" succeeded
expect "saga order-a definition" "$(j 'd["definition"]' <<<"$saga")" '{"name": "place_order", "version": 1}'
expect "order order-a" "$(row order order-a)" created
expect "stock of A1 (10 - 2)" "$(row stock A1)" 8
expect "balance of user 7 (100 - 30)" "$(row balance 7)" 70
expect "body of the stock deduction (\$payload references resolved)" "$(body_of stock order-a/deduct_stock/action)" \
  '{"amount": 30, "order_id": "order-a", "qty": 2, "sku": "A1", "user_id": 7}'

# ---------------------------------------------------------------------------------------------
step "b. an order the balance refuses: user 8 (balance 20) buys 1 x A1 for 50"
saga=$(start_saga 10000 order-b 8 1 50)
expect "saga order-b status" "$(j 'd["status"]' <<<"$saga")" compensated
expect "saga order-b error" "$(j 'd["error"]' <<<"$saga")" "deduct_balance: 409 insufficient funds"
expect "step deduct_balance" "$(step_status deduct_balance <<<"$saga")" failed
expect "step deduct_stock" "$(step_status deduct_stock <<<"$saga")" compensated
expect "step create_order" "$(step_status create_order <<<"$saga")" compensated
expect "order order-b" "$(row order order-b)" cancelled
expect "stock of A1 (deducted, then refunded)" "$(row stock A1)" 8
expect "balance of user 8 (untouched)" "$(row balance 8)" 20
expect "body of the order's cancel (the order id only)" "$(body_of order order-b/create_order/compensation)" \
  '{"order_id": "order-b"}'

step "b. an order the stock refuses: user 7 buys 100 x A1 for 10"
saga=$(start_saga 10000 order-b2 7 100 10)
expect "saga order-b2 status" "$(j 'd["status"]' <<<"$saga")" compensated
expect "saga order-b2 error" "$(j 'd["error"]' <<<"$saga")" "deduct_stock: 409 out of stock"
expect "order order-b2" "$(row order order-b2)" cancelled
expect "stock of A1 (untouched)" "$(row stock A1)" 8
expect "balance of user 7 (untouched)" "$(row balance 7)" 70
expect "calls of order-b2 the balance service got" \
  "$(curl -sS "${url[balance]}/calls" | j "len([c for c in d if c['headers'].get('X-Saga-Id') == 'order-b2'])")" 0

# ---------------------------------------------------------------------------------------------
step "c. duplicate deliveries: exact copies of the orchestrator's calls for order-a and order-b"
states_before=$(snapshot)
# One directory per call (the last delivery of each Idempotency-Key, i.e. the answered one):
# url, method, headers (curl -H @file), body, and the status and answer the orchestrator got.
mkdir "$work/replay"
for s in order stock balance; do
  curl -sS --fail-with-body "${url[$s]}/calls" >"$work/calls-$s.json"
  python3 - "$work/calls-$s.json" "${url[$s]}" "$work/replay/$s" <<'PY'
import json, os, sys
calls, base, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
last = {c["headers"]["Idempotency-Key"]: c for c in calls if c["headers"].get("X-Saga-Id") in ("order-a", "order-b")}
for i, c in enumerate(last.values()):
    d = f"{out}-{i}"
    os.makedirs(d)
    files = {"url": base + c["path"], "method": c["method"], "body": c["body"],
             "headers": "".join(f"{k}: {v}\n" for k, v in sorted(c["headers"].items())),
             "status": str(c["status"]), "answer": c["answer"]}
    for name, text in files.items():
        open(f"{d}/{name}", "w").write(text)
PY
done
replayed=0
for d in "$work"/replay/*/; do
  key=$(sed -n 's/^Idempotency-Key: //p' "$d/headers")
  status=$(curl -sS -o "$d/got" -w '%{http_code}' -X "$(cat "$d/method")" -H @"$d/headers" \
    --data-binary @"$d/body" "$(cat "$d/url")")
  [ "$status $(cat "$d/got")" = "$(cat "$d/status") $(cat "$d/answer")" ] ||
    fail "duplicate of $key: the orchestrator got $(cat "$d/status") $(cat "$d/answer"), the copy got $status $(cat "$d/got")"
  say "ok: $key again -> $status $(cat "$d/got")"
  replayed=$((replayed + 1))
done
[ "$replayed" -ge 8 ] || fail "expected at least 8 calls of order-a and order-b to replay, found $replayed"
states_after=$(snapshot)
[ "$states_after" = "$states_before" ] ||
  fail "a duplicate changed the state: before $states_before, after $states_after"
say "ok: $replayed duplicates answered as the first delivery; orders, stock, balances and barrier rows unchanged"

# ---------------------------------------------------------------------------------------------
step "d. a delayed compensation: user 8 buys 3 x A1 for 25 (refused), the stock refund waits 3 s"
def=$(define -refund-delay-ms 3000)
expect "definition place_order with a delayed refund" "$(j '[d["version"], d["created"]]' <<<"$def")" "[2, true]"
saga=$(start_saga 0 order-d 8 3 25)
expect "saga order-d definition (the newest)" "$(j 'd["definition"]' <<<"$saga")" '{"name": "place_order", "version": 2}'
expect "saga order-a definition (unchanged)" "$(get_saga order-a | j 'd["definition"]')" '{"name": "place_order", "version": 1}'
compensating() { [ "$(get_saga order-d | j 'd["status"]')" = compensating ]; }
wait_for 10 compensating || fail "saga order-d did not start compensating: $(get_saga order-d)"
started=$SECONDS
expect "stock of A1 right after the refusal (8 - 3, refund not yet due)" "$(row stock A1)" 5
expect "step deduct_stock" "$(get_saga order-d | step_status deduct_stock)" compensation_scheduled
# Long-poll until the saga ends, with a deadline (the orchestrator answers as soon as it ends).
end=$((SECONDS + 20))
until saga=$(get_saga order-d '?wait_ms=5000&include=attempts') &&
  [ "$(j 'd["status"]' <<<"$saga")" = compensated ]; do
  [ "$SECONDS" -lt "$end" ] || fail "saga order-d not compensated within 20 s: $saga"
done
say "saga order-d compensated about $((SECONDS - started)) s after it started compensating"
expect "stock of A1 (refunded)" "$(row stock A1)" 8
expect "order order-d" "$(row order order-d)" cancelled
# From the saga's history: the refund was sent at least 3000 ms after the balance refused.
gap=$(python3 -c '
import json, sys
from datetime import datetime
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
h = {s["name"]: s["history"] for s in json.load(sys.stdin)["steps"]}
refused = [c for c in h["deduct_balance"] if c["phase"] == "action"][-1]["finished_at"]
refund = [c for c in h["deduct_stock"] if c["phase"] == "compensation"][0]["started_at"]
print(int((t(refund) - t(refused)).total_seconds() * 1000))' <<<"$saga")
[ "$gap" -ge 3000 ] || fail "the stock refund was sent $gap ms after the refusal, before its 3000 ms delay"
say "ok: the stock refund was sent $gap ms after the balance refused (delay_ms 3000)"

# ---------------------------------------------------------------------------------------------
step "e. final state"
expect "stock of A1 (10 - 2 for order-a)" "$(row stock A1)" 8
expect "balance of user 7 (100 - 30 for order-a)" "$(row balance 7)" 70
expect "balance of user 8 (never charged)" "$(row balance 8)" 20
expect "orders" "$(state order | j d)" \
  '{"order-a": "created", "order-b": "cancelled", "order-b2": "cancelled", "order-d": "cancelled"}'
echo
echo "summary:"
curl -sS --fail-with-body "$orch/v1/sagas?name=place_order" |
  j '"\n".join("   saga %-9s %s" % (s["id"], s["status"]) for s in sorted(d["items"], key=lambda s: s["id"]))'
for s in order stock balance; do
  say "$s: $(state "$s" | j d), $(barrier_rows "$s") barrier rows"
done
say "duplicates replayed: $replayed; delayed refund sent after $gap ms"
echo
echo "shop example: all checks passed"
ok=1
