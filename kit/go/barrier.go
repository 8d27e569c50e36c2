package sagakit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"regexp"
	"strings"
	"time"
)

// Dialect is the SQL flavour of the database holding the barrier table.
type Dialect int

// The supported databases.
const (
	MySQL    Dialect = iota + 1 // MySQL 5.7+ and MariaDB 10.3+
	Postgres                    // PostgreSQL 11+
)

// String returns "mysql" or "postgres".
func (d Dialect) String() string {
	switch d {
	case MySQL:
		return "mysql"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// DefaultTable is the barrier table's name unless Options.Table says otherwise.
const DefaultTable = "saga_barrier"

// MySQLDDL creates the barrier table on MySQL/MariaDB, for migrations. Key columns are ASCII with
// a binary collation so "Order-1" and "order-1" are two sagas, as on the orchestrator; times are
// DATETIME(3) in UTC (no time zone conversion, no 2038 limit).
var MySQLDDL = strings.Join(ddl(MySQL, DefaultTable), ";\n") + ";\n"

// PostgresDDL creates the barrier table on PostgreSQL, for migrations.
var PostgresDDL = strings.Join(ddl(Postgres, DefaultTable), ";\n") + ";\n"

func ddl(d Dialect, table string) []string {
	if d == MySQL {
		key := "CHARACTER SET ascii COLLATE ascii_bin NOT NULL"
		return []string{`CREATE TABLE IF NOT EXISTS ` + table + ` (
  saga_id         VARCHAR(128) ` + key + `,
  step            VARCHAR(64)  ` + key + `,
  phase           VARCHAR(12)  ` + key + `,
  part            VARCHAR(32)  ` + key + ` DEFAULT '',
  state           VARCHAR(12)  NOT NULL,
  http_status     SMALLINT     NOT NULL,
  response_body   TEXT         NOT NULL,
  request_sha256  CHAR(64)     NOT NULL,
  saga_created_at DATETIME(3)  NOT NULL,
  created_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (saga_id, step, phase, part),
  INDEX saga_created_at (saga_created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`}
	}
	return []string{`CREATE TABLE IF NOT EXISTS ` + table + ` (
  saga_id         VARCHAR(128)   NOT NULL,
  step            VARCHAR(64)    NOT NULL,
  phase           VARCHAR(12)    NOT NULL,
  part            VARCHAR(32)    NOT NULL DEFAULT '',
  state           VARCHAR(12)    NOT NULL,
  http_status     SMALLINT       NOT NULL,
  response_body   TEXT           NOT NULL,
  request_sha256  CHAR(64)       NOT NULL,
  saga_created_at TIMESTAMPTZ(3) NOT NULL,
  created_at      TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (saga_id, step, phase, part)
)`, `CREATE INDEX IF NOT EXISTS ` + strings.ReplaceAll(table, ".", "_") + `_saga_created_at ON ` +
		table + ` (saga_created_at)`}
}

// Options tune a Barrier; the zero value gives the defaults.
type Options struct {
	// Table is the barrier table, optionally schema-qualified. Default "saga_barrier".
	Table string
	// Part tells apart several barriers guarding one call (one per database). Default "".
	Part string
	// Retention is how long rows are kept, counted from X-Saga-Created-At; calls for sagas
	// older than Retention minus one hour are refused. Default 30 days; at least 2 hours.
	Retention time.Duration
	// LockTimeout bounds lock waits in transactions sagakit opens on PostgreSQL (SET LOCAL
	// lock_timeout); a timeout answers 503 with Retry-After. Default 5s. On MySQL set
	// innodb_lock_wait_timeout in the DSN instead: sagakit does not change session variables of
	// pooled connections.
	LockTimeout time.Duration
	// Logf receives errors an operator must see (refused undos, panics, database errors).
	// Default log.Printf.
	Logf func(format string, args ...any)
}

// Barrier guards calls with the barrier table of one database.
type Barrier struct {
	db          *sql.DB
	d           Dialect
	table, part string
	retention   time.Duration
	lockTimeout time.Duration
	logf        func(string, ...any)
	now         func() time.Time // replaced in tests
	batch       int              // Cleanup batch size; smaller in tests

	qInsert, qSelect, qUpdate string
	qCleanup                  string // with %d for the batch size
}

// margin is subtracted from the retention window before refusing a saga: clock skew between the
// orchestrator and the participant must not let a call through whose rows may already be gone.
const margin = time.Hour

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// New returns a Barrier for db. The barrier table must exist (see CreateTable).
func New(db *sql.DB, d Dialect, o Options) (*Barrier, error) {
	if db == nil || (d != MySQL && d != Postgres) {
		return nil, errors.New("sagakit: New needs a *sql.DB and sagakit.MySQL or sagakit.Postgres")
	}
	b := &Barrier{db: db, d: d, table: o.Table, part: o.Part, retention: o.Retention,
		lockTimeout: o.LockTimeout, logf: o.Logf, now: time.Now, batch: 1000}
	if b.table == "" {
		b.table = DefaultTable
	}
	if !tableName.MatchString(b.table) {
		return nil, fmt.Errorf("sagakit: table name %q is not [schema.]identifier", b.table)
	}
	if err := checkName("part", b.part, maxPart, true); err != nil {
		return nil, fmt.Errorf("sagakit: %v", err)
	}
	if b.retention == 0 {
		b.retention = DefaultRetention
	}
	if b.retention < 2*margin {
		return nil, fmt.Errorf("sagakit: retention %v is under 2h", b.retention)
	}
	if b.lockTimeout <= 0 {
		b.lockTimeout = 5 * time.Second
	}
	if b.logf == nil {
		b.logf = log.Printf
	}
	key := " WHERE saga_id = ? AND step = ? AND phase = ? AND part = ?"
	b.qInsert = "INSERT INTO " + b.table + " (saga_id, step, phase, part, state, http_status," +
		" response_body, request_sha256, saga_created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
	b.qSelect = "SELECT state, http_status, response_body, request_sha256 FROM " + b.table + key
	b.qUpdate = "UPDATE " + b.table + " SET state = ?, http_status = ?, response_body = ?" + key
	if d == MySQL {
		// A plain INSERT, never INSERT IGNORE: error 1062 means "exists" and nothing is truncated.
		// LOCK IN SHARE MODE reads the latest committed row whatever the isolation level.
		b.qSelect += " LOCK IN SHARE MODE"
		b.qCleanup = "DELETE FROM " + b.table + " WHERE saga_created_at < ? LIMIT %d"
	} else {
		b.qInsert += " ON CONFLICT DO NOTHING"
		b.qSelect += " FOR SHARE"
		b.qCleanup = "DELETE FROM " + b.table + " WHERE ctid IN (SELECT ctid FROM " + b.table +
			" WHERE saga_created_at < ? LIMIT %d)"
		b.qInsert, b.qSelect, b.qUpdate, b.qCleanup = dollars(b.qInsert), dollars(b.qSelect), dollars(b.qUpdate), dollars(b.qCleanup)
	}
	return b, nil
}

// dollars turns ? placeholders into PostgreSQL's $1, $2, ...
func dollars(q string) string {
	var sb strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// CreateTable creates the barrier table and its index if they do not exist.
func (b *Barrier) CreateTable(ctx context.Context) error {
	for _, q := range ddl(b.d, b.table) {
		if _, err := b.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("sagakit: create %s: %w", b.table, err)
		}
	}
	return nil
}

// DefaultRetention is how long barrier rows are kept when Options.Retention is not set: 30
// days from X-Saga-Created-At. It must outlast the longest a saga runs, stuck time included.
const DefaultRetention = 30 * 24 * time.Hour

// Cleanup deletes rows of sagas created more than olderThan ago (by X-Saga-Created-At, all parts),
// in batches of 1000 so no statement holds many locks, and returns how many it deleted. It refuses
// a window shorter than the retention: calls inside the retention are served, and their rows
// must still be there. Run it periodically, e.g. hourly with olderThan = the retention.
func (b *Barrier) Cleanup(ctx context.Context, olderThan time.Duration) (deleted int64, err error) {
	if olderThan < b.retention {
		return 0, fmt.Errorf("sagakit: Cleanup(%v) would delete rows inside the retention window %v", olderThan, b.retention)
	}
	cutoff := b.timeArg(b.now().Add(-olderThan))
	for {
		res, err := b.db.ExecContext(ctx, fmt.Sprintf(b.qCleanup, b.batch), cutoff)
		if err != nil {
			return deleted, fmt.Errorf("sagakit: cleanup: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return deleted, err
		}
		deleted += n
		if n < int64(b.batch) {
			return deleted, nil
		}
	}
}

// timeArg passes a time the same way on every driver: MySQL DATETIME gets a UTC literal (the
// driver's loc setting cannot shift it), PostgreSQL TIMESTAMPTZ an absolute time.
func (b *Barrier) timeArg(t time.Time) any {
	if b.d == MySQL {
		return t.UTC().Format("2006-01-02 15:04:05.000")
	}
	return t.UTC()
}

// begin opens a transaction of sagakit's own. On PostgreSQL it is READ COMMITTED (under
// REPEATABLE READ a concurrent duplicate would fail with 40001 instead of replaying) with a lock
// timeout local to the transaction.
func (b *Barrier) begin(ctx context.Context) (*sql.Tx, error) {
	if b.d == MySQL {
		return b.db.BeginTx(ctx, nil)
	}
	tx, err := b.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", b.lockTimeout.Milliseconds())); err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// Row states. pending exists only inside an uncommitted transaction, between Enter and Done.
const (
	stateDone      = "done"
	stateRejected  = "rejected"
	stateTombstone = "tombstone"
	statePending   = "pending"
)

type row struct {
	state  string
	status int
	body   []byte
	hash   string
}

// insert writes a row for (call, phase) and reports false when the row exists; an uncommitted
// row makes it wait for that transaction, which is what serializes concurrent calls of one key.
func (b *Barrier) insert(ctx context.Context, tx Tx, c *Call, phase Phase, r row) (bool, error) {
	res, err := tx.ExecContext(ctx, b.qInsert, c.ID, c.Step, string(phase), b.part, r.state, r.status,
		string(r.body), r.hash, b.timeArg(c.CreatedAt))
	if b.d == MySQL {
		if mysqlError(err) == 1062 {
			return false, nil
		}
		return err == nil, err
	}
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// read returns the committed row for (call, phase) under a shared lock, or nil.
func (b *Barrier) read(ctx context.Context, tx Tx, c *Call, phase Phase) (*row, error) {
	var r row
	var body string
	err := tx.QueryRowContext(ctx, b.qSelect, c.ID, c.Step, string(phase), b.part).Scan(&r.state, &r.status, &body, &r.hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	r.body, r.hash = []byte(body), strings.TrimSpace(r.hash)
	return &r, err
}

// update turns the call's own pending row into its final answer.
func (b *Barrier) update(ctx context.Context, tx Tx, c *Call, state string, a *Answer) error {
	res, err := tx.ExecContext(ctx, b.qUpdate, state, a.Status, string(a.Body), c.ID, c.Step, string(c.Phase), b.part)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("sagakit: barrier row of %s/%s/%s vanished (%d rows, %v)", c.ID, c.Step, c.Phase, n, err)
	}
	return nil
}
