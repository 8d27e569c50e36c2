package sagakit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/lib/pq"
)

// env is one test's fresh database (created with a random sagakit_t_ name, dropped at the end)
// with the barrier table, a business table "moves" and a capturing logger.
type env struct {
	d    Dialect
	db   *sql.DB
	b    *Barrier
	logs *logs
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// forEachDB runs f against MariaDB/MySQL and PostgreSQL, each in a fresh database.
func forEachDB(t *testing.T, f func(t *testing.T, e *env)) {
	for _, d := range []Dialect{MySQL, Postgres} {
		d := d
		t.Run(d.String(), func(t *testing.T) { f(t, newEnv(t, d)) })
	}
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newEnv(t *testing.T, d Dialect) *env {
	t.Helper()
	driver, dsn := "mysql", getenv("SAGAKIT_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/")
	if d == Postgres {
		driver, dsn = "postgres", getenv("SAGAKIT_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	}
	admin, err := sql.Open(driver, dsn)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = admin.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s unreachable at %s (CI=true, so this fails): %v", d, dsn, err)
		}
		t.Skipf("%s unreachable at %s: %v", d, dsn, err)
	}
	name := "sagakit_t_" + randHex(6)
	mustExec(t, admin, "CREATE DATABASE "+name)
	if d == Postgres {
		// sagakit must force READ COMMITTED on its own transactions whatever the default.
		mustExec(t, admin, "ALTER DATABASE "+name+" SET default_transaction_isolation TO 'repeatable read'")
	}
	t.Cleanup(func() {
		drop := "DROP DATABASE " + name
		if d == Postgres {
			drop += " WITH (FORCE)" // a failed test may leave a transaction open
		} else {
			killSessions(t, admin, name)
		}
		if _, err := admin.Exec(drop); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
		admin.Close()
	})
	if d == MySQL {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DBName = name
		dsn = cfg.FormatDSN()
	} else {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		dsn = u.String()
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(40)
	t.Cleanup(func() { db.Close() }) // runs before the drop
	e := &env{d: d, db: db, logs: &logs{}}
	e.b = e.barrier(t, Options{})
	if err := e.b.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.b.CreateTable(context.Background()); err != nil { // IF NOT EXISTS: idempotent
		t.Fatal(err)
	}
	mustExec(t, db, "CREATE TABLE moves (saga_id VARCHAR(200) NOT NULL, phase VARCHAR(12) NOT NULL, amount INT NOT NULL)")
	mustExec(t, db, "CREATE TABLE accounts (id INT PRIMARY KEY, v INT NOT NULL)")
	mustExec(t, db, "INSERT INTO accounts VALUES (1, 0)")
	return e
}

// killSessions ends this test's leftover MySQL sessions (a failed test may leave a transaction
// open), which would otherwise make DROP DATABASE wait on their metadata locks.
func killSessions(t *testing.T, admin *sql.DB, name string) {
	rows, err := admin.Query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?", name)
	if err != nil {
		t.Errorf("list sessions of %s: %v", name, err)
		return
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	for _, id := range ids {
		_, _ = admin.Exec(fmt.Sprintf("KILL %d", id))
	}
}

func (e *env) barrier(t *testing.T, o Options) *Barrier {
	t.Helper()
	if o.Logf == nil {
		o.Logf = e.logs.logf
	}
	b, err := New(e.db, e.d, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustExec(t *testing.T, db Tx, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) q(s string) string {
	if e.d == Postgres {
		return dollars(s)
	}
	return s
}

func (e *env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(e.q(q), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// moves returns how many business rows a saga has and their sum.
func (e *env) moves(t *testing.T, id string) (n, sum int) {
	t.Helper()
	if err := e.db.QueryRow(e.q("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM moves WHERE saga_id = ?"), id).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return n, sum
}

// barrierState returns the state of a barrier row, or "" when there is none.
func (e *env) barrierState(t *testing.T, id, step string, p Phase) string {
	t.Helper()
	var s string
	err := e.db.QueryRow(e.q("SELECT state FROM saga_barrier WHERE saga_id = ? AND step = ? AND phase = ?"), id, step, string(p)).Scan(&s)
	if err == sql.ErrNoRows {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitLockWaiters waits until n transactions of this test's database wait on a lock.
func (e *env) waitLockWaiters(t *testing.T, n int) {
	t.Helper()
	e.waitLockWaitersOr(t, n, nil)
}

// waitLockWaitersOr is waitLockWaiters failing at once if a call that should wait answers.
func (e *env) waitLockWaitersOr(t *testing.T, n int, answered chan res) {
	t.Helper()
	q := "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
	if e.d == MySQL {
		q = `SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p
		     ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := e.count(t, q)
		if got >= n {
			return
		}
		select {
		case r := <-answered:
			t.Fatalf("a call that should wait on a lock answered %+v", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 20s for %d lock waiters, have %d", n, got)
		}
		// InnoDB refreshes INNODB_TRX only after 100 ms without a read of it.
		time.Sleep(map[Dialect]time.Duration{MySQL: 150 * time.Millisecond, Postgres: 5 * time.Millisecond}[e.d])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func newID() string { return "saga-" + randHex(8) }

// res is an HTTP answer as the orchestrator sees it.
type res struct {
	status     int
	body       string
	retryAfter string
}

// request builds a saga call with valid headers; mods change them afterwards.
func request(id, step string, p Phase, body string, mods ...func(http.Header)) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/"+string(p), strings.NewReader(body))
	h := r.Header
	h.Set("Content-Type", "application/json")
	h.Set("X-Saga-Id", id)
	h.Set("X-Saga-Step", step)
	h.Set("X-Saga-Phase", string(p))
	h.Set("X-Saga-Attempt", "1")
	h.Set("Idempotency-Key", id+"/"+step+"/"+string(p))
	h.Set("X-Saga-Created-At", time.Now().UTC().Add(-time.Minute).Format("2006-01-02T15:04:05.000Z"))
	h.Set("X-Saga-Instance", "test#1")
	for _, m := range mods {
		m(h)
	}
	return r
}

func send(h http.Handler, id, step string, p Phase, body string, mods ...func(http.Header)) res {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request(id, step, p, body, mods...))
	return res{w.Code, w.Body.String(), w.Header().Get("Retry-After")}
}

// sendRetrying resends on 503, as the orchestrator would.
func sendRetrying(t *testing.T, h http.Handler, id, step string, p Phase, body string) res {
	for i := 0; ; i++ {
		r := send(h, id, step, p, body)
		if r.status != http.StatusServiceUnavailable || i == 20 {
			return r
		}
	}
}

func createdAt(t time.Time) func(http.Header) {
	return func(h http.Header) { h.Set("X-Saga-Created-At", t.UTC().Format(time.RFC3339Nano)) }
}

// biz is the business code of the tests: each phase counts its runs and writes one row to
// "moves" (+1 for action/try, -1 for compensation/cancel, 0 for confirm). hook, when set, runs
// first and may block, fail, reject or panic.
type biz struct {
	calls [5]int64
	hook  func(ctx context.Context, tx *sql.Tx, c *Call) error
}

var phases = []Phase{Action, Compensation, Try, Confirm, Cancel}

func phaseIndex(p Phase) int {
	for i, q := range phases {
		if q == p {
			return i
		}
	}
	panic(p)
}

func (z *biz) n(p Phase) int64 { return atomic.LoadInt64(&z.calls[phaseIndex(p)]) }

func (z *biz) fn(p Phase) Func {
	amount := map[Phase]int{Action: 1, Try: 1, Confirm: 0, Compensation: -1, Cancel: -1}[p]
	return func(ctx context.Context, tx *sql.Tx, c *Call) (any, error) {
		n := atomic.AddInt64(&z.calls[phaseIndex(p)], 1)
		if z.hook != nil {
			if err := z.hook(ctx, tx, c); err != nil {
				return nil, err
			}
		}
		q := placeholders(ctx, "INSERT INTO moves (saga_id, phase, amount) VALUES (?, ?, ?)")
		if _, err := tx.ExecContext(ctx, q, c.ID, string(c.Phase), amount); err != nil {
			return nil, err
		}
		return map[string]any{"phase": p, "run": n, "origin": json.RawMessage(orNull(c.Origin))}, nil
	}
}

func orNull(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}

func (z *biz) steps() Steps {
	return Steps{Action: z.fn(Action), Compensation: z.fn(Compensation), Try: z.fn(Try),
		Confirm: z.fn(Confirm), Cancel: z.fn(Cancel)}
}

// placeholders rewrites ? for PostgreSQL, told by the context (business code has no Barrier).
type dialectKey struct{}

func placeholders(ctx context.Context, q string) string {
	if d, _ := ctx.Value(dialectKey{}).(Dialect); d == Postgres {
		return dollars(q)
	}
	return q
}

// handler serves z through b, with the dialect in the context for the business code.
func (e *env) handler(b *Barrier, s Steps) http.Handler {
	h := b.Handler(s)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), dialectKey{}, e.d)))
	})
}

func (e *env) ctx() context.Context {
	return context.WithValue(context.Background(), dialectKey{}, e.d)
}
