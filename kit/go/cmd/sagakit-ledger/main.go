// Command sagakit-ledger is the reference participant of the Go kit: a one-table ledger whose
// endpoints are guarded by sagakit, checked in CI by `saga-orchestrator check-participant`.
//
//	sagakit-ledger -db postgres -dsn 'postgres://postgres@127.0.0.1:5432/ledger?sslmode=disable'
//
// POST /action {"account":"a","amount":N} deducts N (409 "insufficient funds" when the balance is
// lower); /compensation refunds what the action deducted. POST /try moves N from the balance to
// a hold, /confirm drops the hold, /cancel returns it. GET /probe lists the accounts.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/lib/pq"

	sagakit "github.com/saga-orchestrator/saga-orchestrator/kit/go"
)

// ledger holds the dialect for its own queries (sagakit's are its own business).
type ledger struct{ d sagakit.Dialect }

// q rewrites ? placeholders to $n on PostgreSQL.
func (l ledger) q(s string) string {
	if l.d != sagakit.Postgres {
		return s
	}
	var sb strings.Builder
	n := 0
	for _, r := range s {
		if r == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
		} else {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// move is both the request body and the answer recorded for replay: the undo reads the amount
// from the answer of its origin (call.Origin), so it reverses exactly what was done.
type move struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

func request(call *sagakit.Call) (move, error) {
	var m move
	if err := call.Decode(&m); err != nil || m.Account == "" || m.Amount <= 0 {
		return m, sagakit.Reject(`the body must be {"account": "...", "amount": N} with N > 0`)
	}
	return m, nil
}

// take moves amount from the balance (to the hold when hold is true), refusing an overdraft.
func (l ledger) take(ctx context.Context, tx *sql.Tx, call *sagakit.Call, hold bool) (any, error) {
	m, err := request(call)
	if err != nil {
		return nil, err
	}
	held := int64(0)
	if hold {
		held = m.Amount
	}
	res, err := tx.ExecContext(ctx, l.q("UPDATE ledger_accounts SET balance = balance - ?, held = held + ? WHERE id = ? AND balance >= ?"),
		m.Amount, held, m.Account, m.Amount)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return m, err
	}
	var one int
	if err := tx.QueryRowContext(ctx, l.q("SELECT 1 FROM ledger_accounts WHERE id = ?"), m.Account).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return nil, sagakit.Reject("unknown account")
	} else if err != nil {
		return nil, err
	}
	return nil, sagakit.Reject("insufficient funds")
}

// give undoes or finishes what the origin did, by the amount in the origin's answer: balance
// gets back toBalance, the hold loses fromHeld.
func (l ledger) give(ctx context.Context, tx *sql.Tx, call *sagakit.Call, toBalance, fromHeld bool) (any, error) {
	var m move
	if err := call.DecodeOrigin(&m); err != nil {
		return nil, fmt.Errorf("origin answer %q: %w", call.Origin, err)
	}
	back, unhold := int64(0), int64(0)
	if toBalance {
		back = m.Amount
	}
	if fromHeld {
		unhold = m.Amount
	}
	res, err := tx.ExecContext(ctx, l.q("UPDATE ledger_accounts SET balance = balance + ?, held = held - ? WHERE id = ? AND held >= ?"),
		back, unhold, m.Account, unhold)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		// Never a Reject: an undo must not be refused. A 500 keeps it retried, then stuck.
		return nil, fmt.Errorf("account %q cannot take back %+v (%d rows, %v)", m.Account, m, n, err)
	}
	return m, nil
}

func (l ledger) probe(db *sql.DB) http.HandlerFunc {
	type account struct {
		ID      string `json:"id"`
		Balance int64  `json:"balance"`
		Held    int64  `json:"held"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		rows, err := db.QueryContext(r.Context(), "SELECT id, balance, held FROM ledger_accounts ORDER BY id")
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer rows.Close()
		accounts := []account{}
		for rows.Next() {
			var a account
			if err := rows.Scan(&a.ID, &a.Balance, &a.Held); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			accounts = append(accounts, a)
		}
		if err := rows.Err(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"accounts": accounts})
	}
}

// setup creates the business table and seeds account "a" once.
func (l ledger) setup(ctx context.Context, db *sql.DB) error {
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS ledger_accounts (id VARCHAR(64) PRIMARY KEY, balance BIGINT NOT NULL, held BIGINT NOT NULL DEFAULT 0)",
		"INSERT INTO ledger_accounts (id, balance, held) SELECT 'a', 1000, 0 WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts WHERE id = 'a')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// routes creates the tables and returns the participant's endpoints.
func (l ledger) routes(ctx context.Context, db *sql.DB) (http.Handler, error) {
	b, err := sagakit.New(db, l.d, sagakit.Options{})
	if err != nil {
		return nil, err
	}
	if err := b.CreateTable(ctx); err != nil {
		return nil, err
	}
	if err := l.setup(ctx, db); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/action", b.Handler(sagakit.Steps{Action: func(ctx context.Context, tx *sql.Tx, c *sagakit.Call) (any, error) {
		return l.take(ctx, tx, c, false)
	}}))
	mux.Handle("/compensation", b.Handler(sagakit.Steps{Compensation: func(ctx context.Context, tx *sql.Tx, c *sagakit.Call) (any, error) {
		return l.give(ctx, tx, c, true, false)
	}}))
	mux.Handle("/try", b.Handler(sagakit.Steps{Try: func(ctx context.Context, tx *sql.Tx, c *sagakit.Call) (any, error) {
		return l.take(ctx, tx, c, true)
	}}))
	mux.Handle("/confirm", b.Handler(sagakit.Steps{Confirm: func(ctx context.Context, tx *sql.Tx, c *sagakit.Call) (any, error) {
		return l.give(ctx, tx, c, false, true)
	}}))
	mux.Handle("/cancel", b.Handler(sagakit.Steps{Cancel: func(ctx context.Context, tx *sql.Tx, c *sagakit.Call) (any, error) {
		return l.give(ctx, tx, c, true, true)
	}}))
	mux.HandleFunc("/probe", l.probe(db))
	return mux, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	kind := flag.String("db", "mysql", "database: mysql or postgres")
	dsn := flag.String("dsn", "", "database/sql DSN (go-sql-driver/mysql or lib/pq format)")
	flag.Parse()
	if err := run(*listen, *kind, *dsn); err != nil {
		fmt.Fprintln(os.Stderr, "sagakit-ledger:", err)
		os.Exit(1)
	}
}

func run(listen, kind, dsn string) error {
	l := ledger{d: map[string]sagakit.Dialect{"mysql": sagakit.MySQL, "postgres": sagakit.Postgres}[kind]}
	if l.d == 0 || dsn == "" {
		return errors.New("-db must be mysql or postgres, and -dsn is required")
	}
	db, err := sql.Open(kind, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mux, err := l.routes(ctx, db)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Print("sagakit-ledger: stopped")
	return nil
}
