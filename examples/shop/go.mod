// The shop example: three participants (order, stock, balance) built on sagakit. Nothing is
// downloaded: the kit comes from this repository and the MySQL driver from Debian's
// golang-github-go-sql-driver-mysql-dev (as in kit/go/go.test.mod).
module github.com/saga-orchestrator/saga-orchestrator/examples/shop

go 1.19

require (
	github.com/go-sql-driver/mysql v1.5.0
	github.com/saga-orchestrator/saga-orchestrator/kit/go v0.0.0
)

replace github.com/saga-orchestrator/saga-orchestrator/kit/go => ../../kit/go

replace github.com/go-sql-driver/mysql => /usr/share/gocode/src/github.com/go-sql-driver/mysql
