package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	sagakit "github.com/saga-orchestrator/saga-orchestrator/kit/go"
)

// The rules of `saga-orchestrator check-participant` (docs/barrier.md), replayed over HTTP
// against the ledger on both databases, each in a fresh database dropped at the end.
func TestCheckParticipantRules(t *testing.T) {
	for _, kind := range []string{"mysql", "postgres"} {
		kind := kind
		t.Run(kind, func(t *testing.T) {
			db := freshDB(t, kind)
			l := ledger{d: map[string]sagakit.Dialect{"mysql": sagakit.MySQL, "postgres": sagakit.Postgres}[kind]}
			mux, err := l.routes(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()
			c := &checker{t: t, base: srv.URL}
			c.run()
		})
	}
}

type checker struct {
	t    *testing.T
	base string
}

type answer struct {
	status int
	body   string
}

const body, rejectBody = `{"account":"a","amount":10}`, `{"account":"a","amount":1000000}`

func (c *checker) call(path, id, phase, body string, headers bool) answer {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if headers {
		req.Header.Set("X-Saga-Id", id)
		req.Header.Set("X-Saga-Step", "debit")
		req.Header.Set("X-Saga-Phase", phase)
		req.Header.Set("X-Saga-Attempt", "1")
		req.Header.Set("Idempotency-Key", id+"/debit/"+phase)
		req.Header.Set("X-Saga-Created-At", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
		req.Header.Set("X-Saga-Instance", "check#1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{resp.StatusCode, string(b)}
	if phase != "action" && phase != "try" && (a.status == 409 || a.status == 422) {
		c.t.Fatalf("%s answered %d %s: never allowed for an undo", phase, a.status, a.body)
	}
	return a
}

func (c *checker) do(phase, id, body string) answer { return c.call("/"+phase, id, phase, body, true) }

func (c *checker) probe() string {
	resp, err := http.Get(c.base + "/probe")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (c *checker) expect(rule string, ok bool, got ...any) {
	c.t.Helper()
	if !ok {
		c.t.Fatalf("FAIL %s: %v", rule, got)
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "check-" + hex.EncodeToString(b)
}

func (c *checker) run() {
	p0 := c.probe()
	id := newID()
	a1 := c.do("action", id, body)
	p1 := c.probe()
	a2 := c.do("action", id, body)
	c.expect("duplicate-action", a1.status == 200 && a1 == a2 && p1 != p0 && c.probe() == p1, a1, a2, p0, p1)

	before, id := c.probe(), newID()
	answers := make([]answer, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func(i int) { defer wg.Done(); answers[i] = c.do("action", id, body) }(i)
	}
	wg.Wait()
	for _, a := range answers {
		c.expect("concurrent-duplicates", a == answers[0] && a.status == 200, answers)
	}
	after := c.probe()
	c.do("compensation", id, body)
	c.expect("concurrent-duplicates (changed once)", after != before && c.probe() == before, before, after)

	before = c.probe()
	a := c.do("compensation", newID(), body)
	c.expect("null-compensation", a.status/100 == 2 && c.probe() == before, a)

	id = newID()
	c.do("compensation", id, body)
	a = c.do("action", id, body)
	c.expect("hanging-action", a.status == 409 && c.probe() == before, a)

	id = newID()
	c.do("action", id, body)
	x, y := c.do("compensation", id, body), c.do("compensation", id, body)
	c.expect("duplicate-compensation", x.status/100 == 2 && x == y && c.probe() == before, x, y)

	for run := 0; run < 20; run++ {
		id := newID()
		var act, comp answer
		start := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); <-start; act = c.do("action", id, body) }()
		go func() { defer wg.Done(); <-start; comp = c.do("compensation", id, body) }()
		close(start)
		wg.Wait()
		c.expect("action-compensation-race", comp.status/100 == 2 && (act.status == 200 || act.status == 409) &&
			c.probe() == before, run, act, comp)
	}

	id = newID()
	x, y = c.do("action", id, rejectBody), c.do("action", id, rejectBody)
	z := c.do("compensation", id, rejectBody)
	c.expect("repeated-rejection", x.status == 409 && x == y && strings.Contains(x.body, "insufficient funds") &&
		z.status/100 == 2 && c.probe() == before, x, y, z)

	x = c.call("/action", id, "action", body, false)
	c.expect("missing-headers", x.status == 400, x)
	req, _ := http.NewRequest(http.MethodPost, c.base+"/action", strings.NewReader(body))
	req.Header.Set("X-Saga-Id", id)
	req.Header.Set("X-Saga-Step", "debit")
	req.Header.Set("X-Saga-Phase", "action")
	req.Header.Set("X-Saga-Created-At", time.Now().UTC().Format(time.RFC3339))
	req.Header.Set("Idempotency-Key", id+"/other/action")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	c.expect("missing-headers (wrong key)", resp.StatusCode == 400, resp.StatusCode)

	a = c.do("cancel", newID(), body)
	c.expect("tcc-cancel-without-try", a.status/100 == 2 && c.probe() == before, a)

	id = newID()
	c.do("cancel", id, body)
	a = c.do("try", id, body)
	c.expect("tcc-try-after-cancel", a.status == 409 && c.probe() == before, a)

	id = newID()
	c.expect("tcc-try", c.do("try", id, body).status == 200)
	held := c.probe()
	x, y = c.do("confirm", id, body), c.do("confirm", id, body)
	c.expect("tcc-confirm-twice", x.status/100 == 2 && x == y && held != before && c.probe() != held &&
		!strings.Contains(c.probe(), `"held":10`), x, y, c.probe())

	id = newID()
	c.do("try", id, body)
	a = c.do("cancel", id, body)
	final := c.probe()
	c.expect("tcc-cancel-after-try", a.status/100 == 2 && strings.Contains(final, `"held":0`), a, final)
}

func freshDB(t *testing.T, kind string) *sql.DB {
	dsn := os.Getenv("SAGAKIT_MYSQL_DSN")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/"
	}
	if kind == "postgres" {
		if dsn = os.Getenv("SAGAKIT_POSTGRES_DSN"); dsn == "" {
			dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		}
	}
	admin, err := sql.Open(kind, dsn)
	if err == nil {
		err = admin.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s unreachable (CI=true, so this fails): %v", kind, err)
		}
		t.Skipf("%s unreachable: %v", kind, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "sagakit_t_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	if kind == "mysql" {
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
	db, err := sql.Open(kind, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		drop := "DROP DATABASE " + name
		if kind == "postgres" {
			drop += " WITH (FORCE)"
		}
		if _, err := admin.Exec(drop); err != nil {
			t.Errorf("%s: %v", drop, err)
		}
		admin.Close()
	})
	return db
}
