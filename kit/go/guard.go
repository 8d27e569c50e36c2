package sagakit

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Tx is what the barrier needs from a transaction: *sql.Tx, sqlx.Tx and gorm's
// tx.Statement.ConnPool all have it. The barrier never commits or rolls it back.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Guard is an entered call whose business code must run, in the transaction given to Enter.
type Guard struct {
	b    *Barrier
	tx   Tx
	call *Call
	hash string
}

// Enter runs the barrier for call inside tx, a transaction the caller owns. One of three:
//
//   - err != nil: roll tx back and write b.Fail(ctx, call, err);
//   - ans != nil: nothing to run (a duplicate, a null compensation, a hanging action): commit tx,
//     which may hold a tombstone, then write ans;
//   - otherwise run the business code in tx, then g.Done, commit, and write Done's answer; if
//     anything fails, roll back and write b.Fail(ctx, call, err).
//
// For a compensation, cancel or confirm, Enter sets call.Origin before the business code runs.
// Rows are locked origin first, then the call's own row, so two calls of one step never deadlock.
func (b *Barrier) Enter(ctx context.Context, tx Tx, call *Call) (g *Guard, ans *Answer, err error) {
	if err := call.validate(); err != nil {
		return nil, nil, err
	}
	if err := b.checkAge(call); err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(call.Body)
	g = &Guard{b: b, tx: tx, call: call, hash: hex.EncodeToString(sum[:])}

	var origin *row // the origin row of an undo or confirm; nil when there is none
	inserted := false
	switch call.Phase {
	case Compensation, Cancel:
		// Claim the origin slot with a tombstone: if the action/try never ran, it now never will.
		tomb := row{state: stateTombstone, status: http.StatusConflict,
			body: errorBody(fmt.Sprintf("%s refused: its %s already ran", call.Phase.origin(), call.Phase))}
		if inserted, err = b.insert(ctx, tx, call, call.Phase.origin(), tomb); err != nil {
			return nil, nil, err
		}
		if !inserted {
			if origin, err = b.read(ctx, tx, call, call.Phase.origin()); err != nil {
				return nil, nil, err
			}
			if origin == nil {
				return nil, nil, errors.New("sagakit: origin row vanished (deleted by Cleanup?)")
			}
		}
	case Confirm:
		if origin, err = b.read(ctx, tx, call, Try); err != nil {
			return nil, nil, err
		}
		if origin == nil || origin.state != stateDone {
			return nil, nil, internalError("confirm of saga %s step %s without a done try", call.ID, call.Step)
		}
	}

	// Claim the call's own row; an existing one is a duplicate (or, for action/try, a tombstone).
	ok, err := b.insert(ctx, tx, call, call.Phase, row{state: statePending, hash: g.hash})
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		own, err := b.read(ctx, tx, call, call.Phase)
		if err != nil {
			return nil, nil, err
		}
		if own == nil {
			return nil, nil, errors.New("sagakit: barrier row vanished (deleted by Cleanup?)")
		}
		ans, err := g.replay(own)
		return nil, ans, err
	}

	switch {
	case call.Phase.forward():
		return g, nil, nil
	case inserted: // null compensation / cancel
		ans, err := g.finish(ctx, []byte(fmt.Sprintf(`{"result":"null %s: the %s never ran here"}`, call.Phase, call.Phase.origin())))
		return nil, ans, err
	case origin.state == stateDone:
		call.Origin = origin.body
		return g, nil, nil
	case origin.state == stateRejected || origin.state == stateTombstone:
		ans, err := g.finish(ctx, []byte(fmt.Sprintf(`{"result":"nothing to undo: the %s was refused"}`, call.Phase.origin())))
		return nil, ans, err
	}
	return nil, nil, internalError("the %s of saga %s step %s was committed without an answer (Guard.Done not called)",
		call.Phase.origin(), call.ID, call.Step)
}

// checkAge refuses sagas whose rows may have been deleted already: an undo would then look like
// a null compensation and skip a real one. Times far in the future are refused too, since their
// rows would never age out.
func (b *Barrier) checkAge(c *Call) error {
	now := b.now()
	if c.CreatedAt.After(now.Add(margin)) {
		return badRequest("X-Saga-Created-At %s is in the future", c.CreatedAt.UTC().Format(timeFormat))
	}
	if now.Sub(c.CreatedAt) <= b.retention-margin {
		return nil
	}
	msg := fmt.Sprintf("saga %s was created at %s, beyond this participant's retention of %v (minus %v)",
		c.ID, c.CreatedAt.UTC().Format(timeFormat), b.retention, margin)
	if c.Phase.forward() {
		return &answerError{ans: &Answer{Status: http.StatusConflict, Body: errorBody(msg)}}
	}
	return &answerError{ans: problem(http.StatusServiceUnavailable, "Saga too old", msg), log: true}
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// replay answers a duplicate with the stored answer, unless the key was reused for another body.
func (g *Guard) replay(r *row) (*Answer, error) {
	c := g.call
	switch r.state {
	case stateTombstone:
		return &Answer{Status: r.status, Body: r.body}, nil
	case stateDone, stateRejected:
		if r.hash == g.hash {
			return &Answer{Status: r.status, Body: r.body}, nil
		}
		msg := fmt.Sprintf("Idempotency-Key %s/%s/%s was used before with another request body", c.ID, c.Step, c.Phase)
		if c.Phase.forward() {
			return nil, &answerError{ans: problem(http.StatusUnprocessableEntity, "Key reused", msg)}
		}
		return nil, internalError("%s", msg)
	}
	return nil, internalError("the %s of saga %s step %s was committed without an answer (Guard.Done not called)",
		c.Phase, c.ID, c.Step)
}

// Done records the business result (marshalled to JSON; nil gives {}) as the call's 2xx answer in
// the guarded transaction, and returns it to write once the transaction has committed. The
// result must marshal to at most 4 KiB, since the answer is stored for replay.
func (g *Guard) Done(ctx context.Context, result any) (*Answer, error) {
	body := []byte("{}")
	if result != nil {
		var err error
		if body, err = json.Marshal(result); err != nil {
			return nil, internalError("%s result of saga %s step %s: %v", g.call.Phase, g.call.ID, g.call.Step, err)
		}
	}
	if len(body) > maxBody {
		return nil, internalError("%s result of saga %s step %s is %d bytes, over the %d stored for replay",
			g.call.Phase, g.call.ID, g.call.Step, len(body), maxBody)
	}
	return g.finish(ctx, body)
}

func (g *Guard) finish(ctx context.Context, body []byte) (*Answer, error) {
	a := &Answer{Status: http.StatusOK, Body: body}
	if err := g.b.update(ctx, g.tx, g.call, stateDone, a); err != nil {
		return nil, err
	}
	return a, nil
}

// Fail turns an error into the answer to write, once the caller's transaction is rolled back.
// A Reject of an action or try is recorded in a short transaction of its own, so its retries get
// the same 409 (call it only after rolling back, or it waits on the rolled-back call's row lock).
// A Reject elsewhere is a 500. Lock timeouts, deadlocks and serialization failures are 503 with
// Retry-After: 1; other errors and panics are logged and answered 503. call may be nil.
func (b *Barrier) Fail(ctx context.Context, call *Call, err error) *Answer {
	var ae *answerError
	var rj *rejection
	switch {
	case errors.As(err, &ae):
		if ae.log {
			b.logf("sagakit: %s: %s", who(call), ae.ans.Body)
		}
		return ae.ans
	case errors.As(err, &rj) && call != nil && call.Phase.forward():
		ans, err := b.recordRejection(ctx, call, rj.msg)
		if err != nil {
			return b.Fail(ctx, nil, err)
		}
		return ans
	case errors.As(err, &rj):
		return b.Fail(ctx, call, internalError("%s refused (%q); only an action or try may refuse", who(call), rj.msg))
	case transient(err):
		b.logf("sagakit: %s: retryable: %v", who(call), err)
		a := problem(http.StatusServiceUnavailable, "Try again", "lock wait timeout, deadlock or serialization failure")
		a.RetryAfter = 1
		return a
	}
	b.logf("sagakit: %s: %v", who(call), err)
	return problem(http.StatusServiceUnavailable, "Participant error", "the call failed and was rolled back; retry it")
}

func who(c *Call) string {
	if c == nil {
		return "call"
	}
	return fmt.Sprintf("saga %s step %s %s (attempt %d)", c.ID, c.Step, c.Phase, c.Attempt)
}

// recordRejection stores a 409 for the call, or, when a row appeared meanwhile (a concurrent
// duplicate, or a compensation that came in between), answers what that row says.
func (b *Barrier) recordRejection(ctx context.Context, c *Call, msg string) (*Answer, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(c.Body)
	g := &Guard{b: b, call: c, hash: hex.EncodeToString(sum[:])}
	tx, err := b.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	g.tx = tx
	ans := &Answer{Status: http.StatusConflict, Body: errorBody(msg)}
	ok, err := b.insert(ctx, tx, c, c.Phase, row{state: stateRejected, status: ans.Status, body: ans.Body, hash: g.hash})
	if err != nil {
		return nil, err
	}
	if !ok {
		own, err := b.read(ctx, tx, c, c.Phase)
		if err != nil || own == nil {
			return nil, fmt.Errorf("sagakit: reading the barrier row after a rejection: %v", err)
		}
		if ans, err = g.replay(own); err != nil {
			return nil, err
		}
	}
	return ans, tx.Commit()
}
