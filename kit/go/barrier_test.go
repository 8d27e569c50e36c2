package sagakit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// undo pairs a phase with the phase whose row it looks at.
type undo struct{ origin, p Phase }

var undos = []undo{{Action, Compensation}, {Try, Confirm}, {Try, Cancel}}

func want(t *testing.T, what string, got res, status int) {
	t.Helper()
	if got.status != status {
		t.Fatalf("%s: got %d %s, want %d", what, got.status, got.body, status)
	}
}

func TestDuplicatesReplayWithoutRunningTwice(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, p := range []Phase{Action, Try} {
			z := &biz{}
			h, id := e.handler(e.b, z.steps()), newID()
			first := send(h, id, "s1", p, `{"amount":5}`)
			want(t, string(p), first, 200)
			for i := 0; i < 2; i++ {
				if again := send(h, id, "s1", p, `{"amount":5}`); again != first {
					t.Fatalf("duplicate %s answered %+v, first %+v", p, again, first)
				}
			}
			if z.n(p) != 1 {
				t.Fatalf("%s ran %d times", p, z.n(p))
			}
			if n, _ := e.moves(t, id); n != 1 {
				t.Fatalf("%s: %d business rows, want 1", p, n)
			}
		}
		for _, u := range undos {
			z := &biz{}
			h, id := e.handler(e.b, z.steps()), newID()
			o := send(h, id, "s1", u.origin, `{}`)
			want(t, string(u.origin), o, 200)
			first := send(h, id, "s1", u.p, `{}`)
			want(t, string(u.p), first, 200)
			if !strings.Contains(first.body, `"origin":`+o.body) {
				t.Fatalf("%s did not get its origin's answer %s: %s", u.p, o.body, first.body)
			}
			for i := 0; i < 2; i++ {
				if again := send(h, id, "s1", u.p, `{}`); again != first {
					t.Fatalf("duplicate %s answered %+v, first %+v", u.p, again, first)
				}
			}
			if z.n(u.p) != 1 {
				t.Fatalf("%s ran %d times", u.p, z.n(u.p))
			}
			if u.p == Compensation {
				if n, sum := e.moves(t, id); n != 2 || sum != 0 {
					t.Fatalf("action+compensation left %d rows summing to %d", n, sum)
				}
			}
		}
	})
}

// The first call holds the row lock inside its business code until 15 duplicates wait on it:
// they must then replay its answer, not run again.
func TestConcurrentDuplicatesWaitAndReplay(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, u := range append([]undo{{"", Action}, {"", Try}}, undos...) {
			z, release := &biz{}, make(chan struct{})
			p := u.p
			z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
				if c.Phase == p {
					<-release
				}
				return nil
			}
			h, id := e.handler(e.b, z.steps()), newID()
			if u.origin != "" {
				want(t, "origin", send(h, id, "s1", u.origin, `{}`), 200)
			}
			const n = 16
			answers := make([]res, n)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					answers[i] = send(h, id, "s1", p, `{"amount":5}`)
				}(i)
			}
			waitFor(t, "a call in the business code", func() bool { return z.n(p) >= 1 })
			e.waitLockWaiters(t, n-1)
			close(release)
			wg.Wait()
			for i := range answers {
				if answers[i] != answers[0] || answers[i].status != 200 {
					t.Fatalf("%s: answer %d is %+v, answer 0 is %+v", p, i, answers[i], answers[0])
				}
			}
			if z.n(p) != 1 {
				t.Fatalf("%s ran %d times", p, z.n(p))
			}
		}
	})
}

func TestNullCompensationLeavesTombstoneAndHangingActionIsRefused(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, u := range []undo{{Action, Compensation}, {Try, Cancel}} {
			z := &biz{}
			h, id := e.handler(e.b, z.steps()), newID()
			null := send(h, id, "s1", u.p, `{}`)
			want(t, "null "+string(u.p), null, 200)
			if z.n(u.p) != 0 {
				t.Fatalf("null %s ran the undo", u.p)
			}
			if s := e.barrierState(t, id, "s1", u.origin); s != stateTombstone {
				t.Fatalf("origin slot holds %q, want a tombstone", s)
			}
			if again := send(h, id, "s1", u.p, `{}`); again != null {
				t.Fatalf("duplicate null %s: %+v, first %+v", u.p, again, null)
			}
			hanging := send(h, id, "s1", u.origin, `{"amount":5}`)
			want(t, "hanging "+string(u.origin), hanging, 409)
			if again := send(h, id, "s1", u.origin, `{"amount":5}`); again != hanging {
				t.Fatalf("repeated hanging %s: %+v, first %+v", u.origin, again, hanging)
			}
			if z.n(u.origin) != 0 {
				t.Fatalf("hanging %s ran", u.origin)
			}
			if n, _ := e.moves(t, id); n != 0 {
				t.Fatalf("%d business rows, want none", n)
			}
		}
	})
}

// An undo that arrives while its action runs waits for it, then undoes it.
func TestCompensationWaitsForActionInFlight(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z, release := &biz{}, make(chan struct{})
		z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
			if c.Phase == Action {
				<-release
			}
			return nil
		}
		h, id := e.handler(e.b, z.steps()), newID()
		var act, comp res
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); act = send(h, id, "s1", Action, `{}`) }()
		waitFor(t, "the action in the business code", func() bool { return z.n(Action) == 1 })
		go func() { defer wg.Done(); comp = send(h, id, "s1", Compensation, `{}`) }()
		e.waitLockWaiters(t, 1)
		close(release)
		wg.Wait()
		want(t, "action", act, 200)
		want(t, "compensation", comp, 200)
		if n, sum := e.moves(t, id); n != 2 || sum != 0 {
			t.Fatalf("%d rows summing to %d, want applied and undone", n, sum)
		}
	})
}

// An action that arrives while a null compensation is uncommitted waits, then answers 409.
func TestActionWaitsForNullCompensationInFlight(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		h, id := e.handler(e.b, z.steps()), newID()
		ctx := e.ctx()
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		call := &Call{ID: id, Step: "s1", Phase: Compensation, CreatedAt: time.Now(), Body: []byte(`{}`)}
		g, ans, err := e.b.Enter(ctx, tx, call)
		if err != nil || g != nil || ans == nil || ans.Status != 200 {
			t.Fatalf("null compensation: %v %v %v", g, ans, err)
		}
		defer tx.Rollback()
		done := make(chan res, 1)
		go func() { done <- send(h, id, "s1", Action, `{}`) }()
		e.waitLockWaitersOr(t, 1, done)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		want(t, "action after its null compensation", <-done, 409)
		if z.n(Action) != 0 {
			t.Fatal("the hanging action ran")
		}
	})
}

func TestForwardAndUndoRaces(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, u := range []undo{{Action, Compensation}, {Try, Cancel}} {
			z := &biz{}
			h := e.handler(e.b, z.steps())
			outcomes := map[int]int{}
			for run := 0; run < 15; run++ {
				id := newID()
				var fwd, back res
				start := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); <-start; fwd = sendRetrying(t, h, id, "s1", u.origin, `{}`) }()
				go func() { defer wg.Done(); <-start; back = sendRetrying(t, h, id, "s1", u.p, `{}`) }()
				close(start)
				wg.Wait()
				want(t, string(u.p), back, 200)
				n, sum := e.moves(t, id)
				switch {
				case fwd.status == 200 && n == 2 && sum == 0: // applied and undone
				case fwd.status == 409 && n == 0: // untouched
				default:
					t.Fatalf("run %d: %s answered %+v and left %d rows summing to %d", run, u.origin, fwd, n, sum)
				}
				outcomes[fwd.status]++
			}
			t.Logf("%s/%s: %s answers over 15 runs: %v", u.origin, u.p, u.origin, outcomes)
		}
	})
}

func TestRejectionIsRecordedAndRepeated(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, u := range []undo{{Action, Compensation}, {Try, Cancel}, {Try, Confirm}} {
			z := &biz{}
			origin := u.origin
			z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
				if c.Phase != origin {
					return nil
				}
				// A write before the refusal must be rolled back.
				if _, err := tx.ExecContext(ctx, placeholders(ctx, "INSERT INTO moves VALUES (?, 'x', 1)"), c.ID); err != nil {
					return err
				}
				return Reject("insufficient funds")
			}
			h, id := e.handler(e.b, z.steps()), newID()
			first := send(h, id, "s1", origin, `{"amount":5000}`)
			want(t, "refused "+string(origin), first, 409)
			if first.body != `{"error":"insufficient funds"}` {
				t.Fatalf("409 body %s", first.body)
			}
			if again := send(h, id, "s1", origin, `{"amount":5000}`); again != first {
				t.Fatalf("repeated rejection: %+v, first %+v", again, first)
			}
			if z.n(origin) != 1 {
				t.Fatalf("refused %s ran %d times, want 1 (then replayed)", origin, z.n(origin))
			}
			if s := e.barrierState(t, id, "s1", origin); s != stateRejected {
				t.Fatalf("barrier row %q, want rejected", s)
			}
			r := send(h, id, "s1", u.p, `{}`)
			if u.p == Confirm {
				want(t, "confirm of a refused try", r, 500)
				continue
			}
			want(t, string(u.p)+" of a refused "+string(origin), r, 200)
			if z.n(u.p) != 0 {
				t.Fatalf("%s of a refused %s ran the undo", u.p, origin)
			}
			if n, _ := e.moves(t, id); n != 0 {
				t.Fatalf("%d business rows after a refusal", n)
			}
		}
	})
}

// A compensation that slips in between a refused action's rollback and the recording of its
// rejection wins: the action answers what the barrier says (hanging, 409), consistently.
func TestRejectionRacingCompensation(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		h, id := e.handler(e.b, z.steps()), newID()
		ctx := e.ctx()
		call := &Call{ID: id, Step: "s1", Phase: Action, CreatedAt: time.Now(), Body: []byte(`{}`)}
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, ans, err := e.b.Enter(ctx, tx, call); g == nil || ans != nil || err != nil {
			t.Fatalf("Enter: %v %v %v", g, ans, err)
		}
		_ = tx.Rollback() // the business code refused
		want(t, "compensation", send(h, id, "s1", Compensation, `{}`), 200)
		ans := e.b.Fail(ctx, call, Reject("insufficient funds"))
		if ans.Status != 409 || !strings.Contains(string(ans.Body), "compensation already ran") {
			t.Fatalf("late rejection answered %d %s", ans.Status, ans.Body)
		}
		if again := send(h, id, "s1", Action, `{}`); again.status != 409 || again.body != string(ans.Body) {
			t.Fatalf("retry answered %+v, want %s", again, ans.Body)
		}
	})
}

func TestUndoRefusalIs500Never409(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for _, u := range undos {
			z := &biz{}
			p := u.p
			z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
				if c.Phase == p && z.n(p) == 1 {
					return Reject("will not")
				}
				return nil
			}
			h, id := e.handler(e.b, z.steps()), newID()
			want(t, string(u.origin), send(h, id, "s1", u.origin, `{}`), 200)
			want(t, "refused "+string(p), send(h, id, "s1", p, `{}`), 500)
			if !e.logs.contains("only an action or try may refuse") {
				t.Fatalf("no error log for the refused %s", p)
			}
			if s := e.barrierState(t, id, "s1", p); s != "" {
				t.Fatalf("refused %s left a %q row", p, s)
			}
			want(t, "retried "+string(p), send(h, id, "s1", p, `{}`), 200)
			if n, _ := e.moves(t, id); n != 2 {
				t.Fatalf("%d business rows, want origin + one %s", n, p)
			}
		}
	})
}

func TestConfirmWithoutDoneTryIs500(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
			if c.Step == "refused" && c.Phase == Try {
				return Reject("no")
			}
			return nil
		}
		h := e.handler(e.b, z.steps())
		cases := map[string]func(id string){
			"no try":        func(string) {},
			"try cancelled": func(id string) { want(t, "cancel", send(h, id, "s1", Cancel, `{}`), 200) },
			"try refused":   func(id string) { want(t, "try", send(h, id, "refused", Try, `{}`), 409) },
		}
		for name, setup := range cases {
			id, step := newID(), "s1"
			if name == "try refused" {
				step = "refused"
			}
			setup(id)
			want(t, "confirm, "+name, send(h, id, step, Confirm, `{}`), 500)
			if z.n(Confirm) != 0 || e.barrierState(t, id, step, Confirm) != "" {
				t.Fatalf("%s: confirm ran or left a row", name)
			}
		}
		if !e.logs.contains("without a done try") {
			t.Fatal("no error log for a confirm without a try")
		}
	})
}

func TestReusedKeyWithAnotherBody(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for p, status := range map[Phase]int{Action: 422, Try: 422, Compensation: 500, Cancel: 500, Confirm: 500} {
			z := &biz{}
			h, id := e.handler(e.b, z.steps()), newID()
			if p == Confirm {
				want(t, "try", send(h, id, "s1", Try, `{}`), 200)
			}
			first := send(h, id, "s1", p, `{"amount":1}`)
			want(t, string(p), first, 200)
			want(t, string(p)+" with another body", send(h, id, "s1", p, `{"amount":2}`), status)
			if again := send(h, id, "s1", p, `{"amount":1}`); again != first {
				t.Fatalf("%s with the first body again: %+v, want %+v", p, again, first)
			}
			if z.n(p) > 1 {
				t.Fatalf("%s ran %d times", p, z.n(p))
			}
		}
	})
}

func TestInvalidCallsAre400(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		h := e.handler(e.b, Steps{Action: z.fn(Action)})
		id := newID()
		del := func(k string) func(http.Header) { return func(h http.Header) { h.Del(k) } }
		set := func(kv ...string) func(http.Header) {
			return func(h http.Header) {
				for i := 0; i < len(kv); i += 2 {
					h.Set(kv[i], kv[i+1])
				}
			}
		}
		long := strings.Repeat("a", 129)
		cases := []struct {
			name  string
			phase Phase
			mod   func(http.Header)
		}{
			{"no saga id", Action, del("X-Saga-Id")},
			{"no step", Action, del("X-Saga-Step")},
			{"no phase", Action, del("X-Saga-Phase")},
			{"unknown phase", Action, set("X-Saga-Phase", "refund", "Idempotency-Key", id+"/s1/refund")},
			{"no created-at", Action, del("X-Saga-Created-At")},
			{"created-at not RFC 3339", Action, set("X-Saga-Created-At", "yesterday")},
			{"created-at in the future", Action, createdAt(time.Now().Add(2 * time.Hour))},
			{"no idempotency key", Action, del("Idempotency-Key")},
			{"key of another step", Action, set("Idempotency-Key", id+"/s2/action")},
			{"key of another phase", Action, set("Idempotency-Key", id+"/s1/compensation")},
			{"id over 128 bytes", Action, set("X-Saga-Id", long, "Idempotency-Key", long+"/s1/action")},
			{"id with a slash", Action, set("X-Saga-Id", "a/b", "Idempotency-Key", "a/b/s1/action")},
			{"step over 64 bytes", Action, set("X-Saga-Step", long[:65], "Idempotency-Key", id+"/"+long[:65]+"/action")},
			{"attempt 0", Action, set("X-Saga-Attempt", "0")},
			{"phase not served here", Compensation, nil},
		}
		for _, c := range cases {
			w := httptest.NewRecorder()
			var mods []func(http.Header)
			if c.mod != nil {
				mods = append(mods, c.mod)
			}
			h.ServeHTTP(w, request(id, "s1", c.phase, `{}`, mods...))
			var p struct{ Status int }
			if w.Code != 400 || w.Header().Get("Content-Type") != "application/problem+json" ||
				json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != 400 {
				t.Fatalf("%s: %d %s %s", c.name, w.Code, w.Header().Get("Content-Type"), w.Body)
			}
		}
		if z.n(Action) != 0 || e.count(t, "SELECT COUNT(*) FROM saga_barrier") != 0 {
			t.Fatal("an invalid call ran or wrote a barrier row")
		}
		// The limits are inclusive, and ids compare byte for byte (MySQL: no case folding).
		max := strings.Repeat("b", 128)
		want(t, "128-byte id", send(h, max, long[:64], Action, `{}`), 200)
		want(t, "Order-1", send(h, "Order-1", "s1", Action, `{}`), 200)
		want(t, "order-1", send(h, "order-1", "s1", Action, `{}`), 200)
		if z.n(Action) != 3 {
			t.Fatalf("ran %d actions, want 3", z.n(Action))
		}
	})
}

func TestSagaOlderThanRetentionIsRefused(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		b := e.barrier(t, Options{Retention: 48 * time.Hour})
		h := e.handler(b, z.steps())
		now := time.Now()
		tooOld := createdAt(now.Add(-47*time.Hour - time.Minute)) // past 48h minus the 1h margin
		inside := createdAt(now.Add(-47*time.Hour + time.Minute))
		id := newID()
		r := send(h, id, "s1", Action, `{}`, tooOld)
		want(t, "too old action", r, 409)
		if !strings.Contains(r.body, "retention") {
			t.Fatalf("409 body %s", r.body)
		}
		r = send(h, id, "s1", Compensation, `{}`, tooOld)
		want(t, "too old compensation", r, 503)
		if !e.logs.contains("retention") {
			t.Fatal("no error log for a too old compensation")
		}
		if z.n(Action)+z.n(Compensation) != 0 || e.count(t, "SELECT COUNT(*) FROM saga_barrier") != 0 {
			t.Fatal("a too old call ran or wrote a barrier row")
		}
		want(t, "action inside the window", send(h, id, "s1", Action, `{}`, inside), 200)
		if _, err := New(e.db, e.d, Options{Retention: time.Hour}); err == nil {
			t.Fatal("a retention under 2h was accepted")
		}
	})
}

func TestCleanupDeletesOldRowsInBatches(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z := &biz{}
		b := e.barrier(t, Options{Retention: 48 * time.Hour})
		b.batch = 10
		h := e.handler(b, z.steps())
		t0 := time.Now()
		b.now = func() time.Time { return t0 }
		for i := 0; i < 25; i++ {
			want(t, "old saga", send(h, fmt.Sprintf("old-%d", i), "s1", Action, `{}`, createdAt(t0.Add(-46*time.Hour))), 200)
		}
		for i := 0; i < 5; i++ {
			want(t, "new saga", send(h, fmt.Sprintf("new-%d", i), "s1", Action, `{}`, createdAt(t0.Add(-time.Hour))), 200)
		}
		// 3 hours later the old sagas are 49h old; "edge" is one minute short of 48h.
		want(t, "edge saga", send(h, "edge", "s1", Action, `{}`, createdAt(t0.Add(-45*time.Hour+time.Minute))), 200)
		b.now = func() time.Time { return t0.Add(3 * time.Hour) }
		ctx := context.Background()
		if _, err := b.Cleanup(ctx, 47*time.Hour); err == nil {
			t.Fatal("Cleanup accepted a window shorter than the retention")
		}
		if n := e.count(t, "SELECT COUNT(*) FROM saga_barrier"); n != 31 {
			t.Fatalf("%d rows before cleanup", n)
		}
		deleted, err := b.Cleanup(ctx, 48*time.Hour)
		if err != nil || deleted != 25 {
			t.Fatalf("Cleanup deleted %d (%v), want 25 in batches of 10", deleted, err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM saga_barrier WHERE saga_id NOT LIKE 'old-%'"); n != 6 {
			t.Fatalf("%d new rows left, want 6", n)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM saga_barrier"); n != 6 {
			t.Fatalf("%d rows left, want 6", n)
		}
		if deleted, err := b.Cleanup(ctx, 48*time.Hour); err != nil || deleted != 0 {
			t.Fatalf("second Cleanup deleted %d (%v)", deleted, err)
		}
	})
}

func TestFailuresRollBackAndAnswer503(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		cases := []struct {
			name string
			fail func() error
		}{
			{"panic", func() error { panic("boom: panic") }},
			{"error", func() error { return errors.New("boom: error") }},
		}
		for _, c := range cases {
			z := &biz{}
			fail := c.fail
			z.hook = func(ctx context.Context, tx *sql.Tx, call *Call) error {
				if _, err := tx.ExecContext(ctx, placeholders(ctx, "INSERT INTO moves VALUES (?, 'x', 1)"), call.ID); err != nil {
					return err
				}
				if z.n(Action) == 1 {
					return fail()
				}
				return nil
			}
			h, id := e.handler(e.b, z.steps()), newID()
			r := send(h, id, "s1", Action, `{}`)
			if r.status != 503 || r.retryAfter != "" {
				t.Fatalf("%s: %+v, want 503 without Retry-After", c.name, r)
			}
			if n, _ := e.moves(t, id); n != 0 || e.barrierState(t, id, "s1", Action) != "" {
				t.Fatalf("%s was not rolled back", c.name)
			}
			if !e.logs.contains("boom: " + c.name) {
				t.Fatalf("%s not logged", c.name)
			}
			want(t, "retry after "+c.name, send(h, id, "s1", Action, `{}`), 200)
			if n, _ := e.moves(t, id); n != 2 { // the hook's row and the business row
				t.Fatalf("%d rows after the retry", n)
			}
		}
	})
}

func TestLockTimeoutIs503WithRetryAfter(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := e.barrier(t, Options{LockTimeout: 300 * time.Millisecond})
		z := &biz{}
		z.hook = func(ctx context.Context, tx *sql.Tx, c *Call) error {
			if e.d == MySQL { // MySQL's wait is a session setting, left to the application
				if _, err := tx.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1"); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, "UPDATE accounts SET v = v + 1 WHERE id = 1")
			return err
		}
		holder, err := e.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback()
		mustExec(t, holder, "UPDATE accounts SET v = v + 1 WHERE id = 1")
		h, id := e.handler(b, z.steps()), newID()
		r := send(h, id, "s1", Action, `{}`)
		if r.status != 503 || r.retryAfter != "1" {
			t.Fatalf("lock timeout answered %+v, want 503 with Retry-After: 1", r)
		}
		if e.barrierState(t, id, "s1", Action) != "" {
			t.Fatal("a barrier row survived the lock timeout")
		}
		_ = holder.Rollback()
		want(t, "retry", send(h, id, "s1", Action, `{}`), 200)
	})
}

func TestOversizedResultIs500(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		h, id := e.handler(e.b, Steps{Action: func(context.Context, *sql.Tx, *Call) (any, error) {
			return strings.Repeat("x", maxBody), nil
		}}), newID()
		want(t, "oversized result", send(h, id, "s1", Action, `{}`), 500)
		if e.barrierState(t, id, "s1", Action) != "" || !e.logs.contains("stored for replay") {
			t.Fatal("oversized result recorded or not logged")
		}
	})
}

func TestPartsAreIndependentBarriers(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		z1, z2 := &biz{}, &biz{}
		h1 := e.handler(e.barrier(t, Options{Part: "db1"}), z1.steps())
		h2 := e.handler(e.barrier(t, Options{Part: "db2"}), z2.steps())
		id := newID()
		for i := 0; i < 2; i++ {
			want(t, "part db1", send(h1, id, "s1", Action, `{}`), 200)
			want(t, "part db2", send(h2, id, "s1", Action, `{}`), 200)
		}
		if z1.n(Action) != 1 || z2.n(Action) != 1 || e.count(t, "SELECT COUNT(*) FROM saga_barrier") != 2 {
			t.Fatalf("parts ran %d and %d times", z1.n(Action), z2.n(Action))
		}
	})
}

// onlyTx hides everything of *sql.Tx but the Tx interface, as gorm's ConnPool would.
type onlyTx struct{ tx *sql.Tx }

func (o onlyTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return o.tx.ExecContext(ctx, q, args...)
}

func (o onlyTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return o.tx.QueryRowContext(ctx, q, args...)
}

// byo is the bring-your-own-transaction flow of the README.
func byo(t *testing.T, e *env, call *Call, business func(ctx context.Context, tx Tx) (any, error)) *Answer {
	ctx := e.ctx()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, ans, err := e.b.Enter(ctx, onlyTx{tx}, call)
	if err == nil && ans == nil {
		var result any
		if result, err = business(ctx, onlyTx{tx}); err == nil {
			ans, err = g.Done(ctx, result)
		}
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		_ = tx.Rollback()
		ans = e.b.Fail(ctx, call, err)
	}
	return ans
}

func TestBringYourOwnTransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		runs := map[Phase]int{}
		business := func(c *Call, reject bool) func(ctx context.Context, tx Tx) (any, error) {
			return func(ctx context.Context, tx Tx) (any, error) {
				runs[c.Phase]++
				amount := map[Phase]int{Action: 1, Compensation: -1}[c.Phase]
				if _, err := tx.ExecContext(ctx, e.q("INSERT INTO moves VALUES (?, ?, ?)"), c.ID, string(c.Phase), amount); err != nil {
					return nil, err
				}
				if reject {
					return nil, Reject("no")
				}
				return map[string]any{"run": runs[c.Phase], "origin": json.RawMessage(orNull(c.Origin))}, nil
			}
		}
		call := func(id string, p Phase) *Call {
			return &Call{ID: id, Step: "s1", Phase: p, CreatedAt: time.Now(), Body: []byte(`{}`)}
		}
		id := newID()
		first := byo(t, e, call(id, Action), business(call(id, Action), false))
		second := byo(t, e, call(id, Action), business(call(id, Action), false))
		if first.Status != 200 || string(first.Body) != string(second.Body) || runs[Action] != 1 {
			t.Fatalf("action %d %s, duplicate %d %s, %d runs", first.Status, first.Body, second.Status, second.Body, runs[Action])
		}
		comp := call(id, Compensation)
		if a := byo(t, e, comp, business(comp, false)); a.Status != 200 || !strings.Contains(string(a.Body), string(first.Body)) {
			t.Fatalf("compensation %d %s", a.Status, a.Body)
		}
		if n, sum := e.moves(t, id); n != 2 || sum != 0 {
			t.Fatalf("%d rows summing to %d", n, sum)
		}

		refused := newID()
		for i := 0; i < 2; i++ {
			c := call(refused, Action)
			if a := byo(t, e, c, business(c, true)); a.Status != 409 || string(a.Body) != `{"error":"no"}` {
				t.Fatalf("refusal %d: %d %s", i, a.Status, a.Body)
			}
		}
		if runs[Action] != 2 || e.barrierState(t, refused, "s1", Action) != stateRejected {
			t.Fatalf("refused action ran %d times in all", runs[Action])
		}

		null := newID()
		c := call(null, Compensation)
		if a := byo(t, e, c, business(c, false)); a.Status != 200 || runs[Compensation] != 1 {
			t.Fatalf("null compensation %d %s", a.Status, a.Body)
		}
		want(t, "hanging action after a BYO null compensation",
			send(e.handler(e.b, (&biz{}).steps()), null, "s1", Action, `{}`), 409)
	})
}

func TestErrorClassification(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{pgErr("40001"), true}, {pgErr("40P01"), true}, {pgErr("55P03"), true}, {pgErr("23505"), false},
		{errors.New("Error 1213: Deadlock found when trying to get lock"), true},
		{errors.New("Error 1205 (HY000): Lock wait timeout exceeded"), true},
		{fmt.Errorf("wrapped: %w", errors.New("Error 1213: Deadlock")), true},
		{fmt.Errorf("wrapped: %w", pgErr("40P01")), true},
		{errors.New("Error 1062: Duplicate entry"), false},
		{errors.New("Error 12135: not a deadlock"), false},
		{errors.New("deadlock"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v", c.err, got)
		}
	}
	if n := mysqlError(errors.New("Error 1062 (23000): Duplicate entry 'x' for key 'PRIMARY'")); n != 1062 {
		t.Errorf("mysqlError = %d", n)
	}
	body := errorBody(strings.Repeat("<é\x01", 3000))
	var v map[string]string
	if len(body) > maxBody || json.Unmarshal(body, &v) != nil || v["error"] == "" {
		t.Errorf("errorBody gave %d bytes", len(body))
	}
	if got := dollars("a = ? AND b = ?"); got != "a = $1 AND b = $2" {
		t.Errorf("dollars: %s", got)
	}
}

type pgErr string

func (e pgErr) Error() string    { return "pq: " + string(e) }
func (e pgErr) SQLState() string { return string(e) }
