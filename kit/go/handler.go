package sagakit

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"runtime/debug"
)

// Func is the business code of one phase. It runs in tx, the transaction that also records the
// barrier row, and must not commit or roll it back. Its result is marshalled to JSON as the 2xx
// body (at most 4 KiB, replayed to duplicates). Return Reject(msg) to refuse an action or a try
// (409); any other error or a panic rolls everything back and answers 503, so the call is retried.
type Func func(ctx context.Context, tx *sql.Tx, call *Call) (any, error)

// Steps holds the business code per phase. A phase left nil is answered 400, so an endpoint
// cannot run the wrong code when the orchestrator's configuration points it at another phase.
type Steps struct {
	Action, Compensation Func
	Try, Confirm, Cancel Func
}

func (s Steps) lookup(p Phase) Func {
	switch p {
	case Action:
		return s.Action
	case Compensation:
		return s.Compensation
	case Try:
		return s.Try
	case Confirm:
		return s.Confirm
	case Cancel:
		return s.Cancel
	}
	return nil
}

// Handler returns an http.Handler serving saga calls with sagakit's own transactions: it checks
// the saga headers (400), opens a transaction, runs the barrier and the Func of the call's phase,
// commits and writes the JSON answer.
func (b *Barrier) Handler(s Steps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		call, err := ParseCall(r)
		var fn Func
		if err == nil {
			if fn = s.lookup(call.Phase); fn == nil {
				err = badRequest("phase %s is not served at %s", call.Phase, r.URL.Path)
			}
		}
		if err != nil {
			b.Fail(ctx, call, err).Write(w)
			return
		}
		b.Serve(ctx, call, fn).Write(w)
	})
}

// Serve runs one parsed call through the barrier and fn in a transaction of its own and returns
// the answer; Handler is ParseCall plus Serve. Use it to plug sagakit into another router.
func (b *Barrier) Serve(ctx context.Context, call *Call, fn Func) *Answer {
	tx, err := b.begin(ctx)
	if err != nil {
		return b.Fail(ctx, call, err)
	}
	ans, err := b.run(ctx, tx, call, fn)
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		_ = tx.Rollback()
		return b.Fail(ctx, call, err)
	}
	return ans
}

func (b *Barrier) run(ctx context.Context, tx *sql.Tx, call *Call, fn Func) (*Answer, error) {
	g, ans, err := b.Enter(ctx, tx, call)
	if err != nil || ans != nil {
		return ans, err
	}
	res, err := protect(ctx, tx, call, fn)
	if err != nil {
		return nil, err
	}
	return g.Done(ctx, res)
}

// protect turns a panic of the business code into an error, so the transaction is rolled back
// and the orchestrator gets a 503 instead of a dropped connection.
func protect(ctx context.Context, tx *sql.Tx, call *Call, fn Func) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: debug.Stack()}
		}
	}()
	if fn == nil {
		return nil, fmt.Errorf("sagakit: no Func for phase %s", call.Phase)
	}
	return fn(ctx, tx, call)
}
