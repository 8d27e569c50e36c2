// Command shop runs one participant of the shop example, chosen with -service: order (create /
// cancel), stock (deduct / refund) or balance (deduct / refund). Each has its own MariaDB database
// and makes its calls idempotent with sagakit's barrier, in the same transaction as the business
// change. See README.md; run.sh starts all three with the orchestrator and checks what they do.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql"
	sagakit "github.com/saga-orchestrator/saga-orchestrator/kit/go"
)

func main() {
	name := flag.String("service", "", "order, stock or balance")
	dsn := flag.String("dsn", "root@tcp(127.0.0.1:3306)/shop", "MySQL/MariaDB DSN of the service's own database")
	addr := flag.String("addr", "127.0.0.1:0", "listen address (port 0: any free port)")
	seed := flag.String("seed", "", "initial rows, key=value,... (stock: sku=qty; balance: user_id=amount)")
	flag.Parse()
	svc, ok := services[*name]
	if !ok {
		log.Fatalf("-service must be order, stock or balance (got %q)", *name)
	}
	log.SetPrefix(*name + ": ")
	ctx := context.Background()

	db, err := sql.Open("mysql", *dsn)
	if err != nil {
		log.Fatal(err)
	}
	// The barrier table lives next to the business tables, in the same database.
	barrier, err := sagakit.New(db, sagakit.MySQL, sagakit.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := barrier.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	for _, q := range svc.tables {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	if err := seedRows(ctx, db, svc.seed, *seed); err != nil {
		log.Fatal(err)
	}
	// Barrier rows are needed while calls for their saga can still come: until it ends. The
	// barrier's retention (30 days from X-Saga-Created-At) must outlast the longest a saga runs,
	// stuck time included; the orchestrator's own retention (after the end) does not matter
	// here: an ended or purged saga calls nobody. Cleanup now and every hour.
	go func() {
		for {
			n, err := barrier.Cleanup(ctx, sagakit.DefaultRetention)
			if err != nil {
				log.Print(err)
			} else {
				log.Printf("barrier cleanup: %d rows of sagas created over %v ago deleted", n, sagakit.DefaultRetention)
			}
			time.Sleep(time.Hour)
		}
	}()

	rec := &recorder{}
	mux := http.NewServeMux()
	for path, steps := range svc.routes {
		mux.Handle(path, rec.wrap(barrier.Handler(steps)))
	}
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		st, err := state(r.Context(), db, svc.state)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("/calls", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, rec.list()) })

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr()) // run.sh reads the address from this first line
	log.Fatal(http.Serve(ln, mux))
}

// seedRows inserts the key=value pairs of -seed with the service's seed statement.
func seedRows(ctx context.Context, db *sql.DB, insert, pairs string) error {
	if pairs == "" {
		return nil
	}
	if insert == "" {
		return fmt.Errorf("this service takes no -seed")
	}
	for _, kv := range strings.Split(pairs, ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("-seed: %q is not key=integer", kv)
		}
		if _, err := db.ExecContext(ctx, insert, k, n); err != nil {
			return err
		}
	}
	return nil
}

// state is what GET /state answers: the service's business rows as key: value (numbers stay
// numbers). Barrier rows are left out, so it can serve as check-participant's --probe.
func state(ctx context.Context, db *sql.DB, query string) (map[string]any, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		} else {
			out[k] = v
		}
	}
	return out, rows.Err()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// recorder keeps every saga call the service answered, for GET /calls: run.sh reads them to send
// exact copies (duplicate deliveries) and compare the answers. A demo aid, not for production.
type recorder struct {
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"` // X-Saga-*, Idempotency-Key, Content-Type
	Body    string            `json:"body"`
	Status  int               `json:"status"`
	Answer  string            `json:"answer"`
}

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		cw := &capture{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, r)

		c := recordedCall{Method: r.Method, Path: r.URL.Path, Headers: map[string]string{},
			Body: string(body), Status: cw.status, Answer: cw.body.String()}
		for k, v := range r.Header {
			if strings.HasPrefix(k, "X-Saga-") || k == "Idempotency-Key" || k == "Content-Type" {
				c.Headers[k] = v[0]
			}
		}
		log.Printf("%s %s (attempt %s) -> %d %s", r.URL.Path, r.Header.Get("Idempotency-Key"),
			r.Header.Get("X-Saga-Attempt"), c.Status, c.Answer)
		rec.mu.Lock()
		rec.calls = append(rec.calls, c)
		rec.mu.Unlock()
	})
}

func (rec *recorder) list() []recordedCall {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recordedCall{}, rec.calls...)
}

// capture is a ResponseWriter that keeps a copy of the status and body.
type capture struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *capture) WriteHeader(status int) {
	c.status = status
	c.ResponseWriter.WriteHeader(status)
}

func (c *capture) Write(b []byte) (int, error) {
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}
