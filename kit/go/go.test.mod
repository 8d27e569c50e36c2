// CI-only module file: the published go.mod has no requirements (the package uses the standard
// library only). Tests and cmd/sagakit-ledger need database drivers, taken from Debian's
// golang-github-go-sql-driver-mysql-dev and golang-github-lib-pq-dev so nothing is downloaded:
//   go test -modfile=go.test.mod ./...
module github.com/saga-orchestrator/saga-orchestrator/kit/go

go 1.19

require (
	github.com/go-sql-driver/mysql v1.5.0
	github.com/lib/pq v1.10.7
)

replace github.com/go-sql-driver/mysql => /usr/share/gocode/src/github.com/go-sql-driver/mysql

replace github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
