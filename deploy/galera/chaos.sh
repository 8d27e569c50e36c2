#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on loopback, and the chaos suite against it.
#
#   deploy/galera/chaos.sh run [saga-bench args]   start the cluster, run the chaos suite with
#                                                  3 instances (one per node) while one node is
#                                                  killed and restarted, stop the cluster
#   deploy/galera/chaos.sh start | stop | status
#   deploy/galera/chaos.sh restart-node N          SIGKILL node N (1-3), start it again, wait
#                                                  until it has rejoined (the chaos fault)
#
# Nodes: SQL on 127.0.0.1:4306-4308, Galera replication on 14567/14577/14587, state transfer
# by rsync; data under ${GALERA_DIR:-/tmp/saga-galera}. Needs mariadb-server, galera-4 and
# rsync (installed with apt-get when missing), and `cargo build --release --bins`.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${GALERA_DIR:-/tmp/saga-galera}
bench=${SAGA_BENCH:-target/release/saga-bench}
nodes=(1 2 3)
sql_port() { echo $((4305 + $1)); }
repl_port() { echo $((14557 + 10 * $1)); }

install() {
  local need=0
  [ -f /usr/lib/galera/libgalera_smm.so ] || need=1
  [ -x /usr/sbin/mariadbd ] || need=1
  command -v rsync >/dev/null || need=1
  if [ "$need" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server galera-4 rsync >/dev/null
  fi
}

config() { # config N
  local n=$1 peers
  peers="127.0.0.1:$(repl_port 1),127.0.0.1:$(repl_port 2),127.0.0.1:$(repl_port 3)"
  cat > "$dir/n$n.cnf" <<CNF
[mysqld]
user=mysql
datadir=$dir/n$n
socket=$dir/n$n.sock
pid-file=$dir/n$n.pid
log-error=$dir/n$n.err
port=$(sql_port "$n")
bind-address=127.0.0.1
skip-name-resolve
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=256M
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=saga_chaos
wsrep_cluster_address=gcomm://$peers
wsrep_node_name=n$n
wsrep_node_address=127.0.0.1:$(repl_port "$n")
wsrep_provider_options="base_port=$(repl_port "$n");gcache.size=256M"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$((24443 + n))
CNF
}

ping() { mariadb-admin -h127.0.0.1 -P"$(sql_port "$1")" -uroot ping >/dev/null 2>&1; }
size() { mariadb -h127.0.0.1 -P"$(sql_port "$1")" -uroot -N -e "SHOW STATUS LIKE 'wsrep_cluster_size'" 2>/dev/null | cut -f2; }
synced() { [ "$(mariadb -h127.0.0.1 -P"$(sql_port "$1")" -uroot -N -e "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2)" = Synced ]; }
wait_until() { # wait_until SECONDS what CMD...
  local end=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || { echo "galera: $what did not happen in time" >&2; tail -n 20 "$dir"/n*.err >&2; return 1; }
    sleep 0.2
  done
}

start_node() { # start_node N [--wsrep-new-cluster]
  local n=$1; shift
  /usr/sbin/mariadbd --defaults-file="$dir/n$n.cnf" "$@" >/dev/null 2>&1 &
  wait_until 120 "node $n answering" ping "$n"
  wait_until 120 "node $n synced" synced "$n"
}

start() {
  install
  stop_all
  rm -rf "$dir"; mkdir -p "$dir"
  for n in "${nodes[@]}"; do config "$n"; mkdir -p "$dir/n$n"; done
  # The servers (and rsync, which state transfer runs as the server's user) write here.
  chown -R mysql:mysql "$dir"
  mariadb-install-db --defaults-file="$dir/n1.cnf" --auth-root-authentication-method=normal >/dev/null
  start_node 1 --wsrep-new-cluster
  # Joiners get the data by state transfer.
  start_node 2
  start_node 3
  wait_until 60 "3 nodes in the cluster" [ "$(size 1)" = 3 ]
  echo "galera: 3 nodes up on 127.0.0.1:$(sql_port 1)-$(sql_port 3)"
}

pid_of() { cat "$dir/n$1.pid" 2>/dev/null || true; }

stop_all() {
  for n in "${nodes[@]}"; do
    local pid; pid=$(pid_of "$n")
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for n in "${nodes[@]}"; do
    local pid; pid=$(pid_of "$n")
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done
}

restart_node() { # the "database restart" fault: one node killed, then rejoining
  local n=$1 pid; pid=$(pid_of "$n")
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sleep 2
  start_node "$n"
}

case "${1:-run}" in
  start) start ;;
  stop) stop_all ;;
  status) for n in "${nodes[@]}"; do echo "node $n: size $(size "$n")"; done ;;
  restart-node) restart_node "$2" ;;
  run)
    shift || true
    start
    trap stop_all EXIT
    "$bench" --scenario chaos --db mysql --mysql-url "mysql://root@127.0.0.1:$(sql_port 1)" \
      --db-nodes "$(sql_port 1),$(sql_port 2),$(sql_port 3)" --instances 3 \
      --db-restart "$0 restart-node 2" "$@"
    ;;
  *) echo "usage: $0 run|start|stop|status|restart-node N" >&2; exit 2 ;;
esac
