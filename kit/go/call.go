// Package sagakit makes an HTTP participant of saga-orchestrator idempotent with a barrier table
// in the participant's own database, written in the same local transaction as the business change.
//
// It implements the contract of docs/barrier.md (shared with the Rust kit): duplicates replay the
// stored answer without running the business code again, a compensation or cancel for a call that
// never ran answers success and leaves a tombstone, an action or try arriving after its
// compensation or cancel answers 409 and does nothing, and rows age out after a retention window.
//
// Use Barrier.Handler when sagakit may own the transaction, or Barrier.Enter, Guard.Done and
// Barrier.Fail inside a transaction you own. The package uses only the standard library: bring
// your own database/sql driver.
package sagakit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Phase is the kind of call, from the X-Saga-Phase header.
type Phase string

// The phases the orchestrator sends.
const (
	Action       Phase = "action"
	Compensation Phase = "compensation"
	Try          Phase = "try"
	Confirm      Phase = "confirm"
	Cancel       Phase = "cancel"
)

// forward phases may be refused with 409; the others undo or finish what a forward phase did.
func (p Phase) forward() bool { return p == Action || p == Try }

// origin is the phase whose row a compensation, cancel or confirm looks at.
func (p Phase) origin() Phase {
	switch p {
	case Compensation:
		return Action
	case Cancel, Confirm:
		return Try
	}
	return ""
}

func (p Phase) valid() bool { return p.forward() || p.origin() != "" }

// Limits of the barrier table's key columns. Ids are checked in bytes and restricted to the
// orchestrator's alphabet, so a value can never be truncated or collated into another saga's key.
const (
	maxID   = 128
	maxStep = 64
	maxPart = 32
	// maxRequest bounds the request body read by ParseCall.
	maxRequest = 1 << 20
)

// Call is one delivery from the orchestrator.
type Call struct {
	ID        string    // X-Saga-Id
	Step      string    // X-Saga-Step
	Phase     Phase     // X-Saga-Phase
	Attempt   int       // X-Saga-Attempt; 0 when absent
	CreatedAt time.Time // X-Saga-Created-At: when the orchestrator accepted the saga
	Instance  string    // X-Saga-Instance, for logs only
	Body      []byte    // the request body, hashed to catch a reused key

	// Origin is the body the action (for a compensation) or the try (for a confirm or cancel)
	// answered, set by Enter before the business code runs. It lets an undo reverse exactly what
	// was done, whatever body the undo itself was sent with.
	Origin []byte

	// Request is the HTTP request the call came in, when parsed by ParseCall.
	Request *http.Request
}

// Decode unmarshals the request body (JSON) into v.
func (c *Call) Decode(v any) error { return json.Unmarshal(c.Body, v) }

// DecodeOrigin unmarshals Origin (JSON) into v.
func (c *Call) DecodeOrigin(v any) error { return json.Unmarshal(c.Origin, v) }

// ParseCall reads the saga headers and the body of r. Its error, passed to Barrier.Fail, becomes a
// 400 (or 413 for a body over 1 MiB). The body stays readable through call.Request.
func ParseCall(r *http.Request) (*Call, error) {
	h := r.Header
	c := &Call{
		ID:       h.Get("X-Saga-Id"),
		Step:     h.Get("X-Saga-Step"),
		Phase:    Phase(h.Get("X-Saga-Phase")),
		Instance: h.Get("X-Saga-Instance"),
		Request:  r,
	}
	var err error
	if created := h.Get("X-Saga-Created-At"); created != "" {
		if c.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
			return nil, badRequest("X-Saga-Created-At is not an RFC 3339 time: %q", created)
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if key, want := h.Get("Idempotency-Key"), c.ID+"/"+c.Step+"/"+string(c.Phase); key != want {
		return nil, badRequest("Idempotency-Key is %q, expected %q", key, want)
	}
	if a := h.Get("X-Saga-Attempt"); a != "" {
		if c.Attempt, err = strconv.Atoi(a); err != nil || c.Attempt < 1 {
			return nil, badRequest("X-Saga-Attempt is not a positive integer: %q", a)
		}
	}
	if r.Body != nil {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
		if err != nil {
			return nil, err // a broken connection: 503, nobody is listening anyway
		}
		if len(body) > maxRequest {
			return nil, &answerError{ans: problem(http.StatusRequestEntityTooLarge, "Body too large",
				fmt.Sprintf("the request body is over %d bytes", maxRequest))}
		}
		c.Body = body
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return c, nil
}

// validate checks what the barrier table needs; Enter repeats it for calls built by hand.
func (c *Call) validate() error {
	if err := checkName("X-Saga-Id", c.ID, maxID, false); err != nil {
		return err
	}
	if err := checkName("X-Saga-Step", c.Step, maxStep, false); err != nil {
		return err
	}
	if !c.Phase.valid() {
		return badRequest("X-Saga-Phase must be action, compensation, try, confirm or cancel (got %q)", c.Phase)
	}
	if c.CreatedAt.IsZero() {
		return badRequest("X-Saga-Created-At is missing")
	}
	return nil
}

// checkName accepts 1..max bytes of [A-Za-z0-9._:-] (empty too when optional). No '/', so the
// Idempotency-Key splits one way only; ASCII only, so byte length is column length on every
// database.
func checkName(what, s string, max int, optional bool) error {
	if s == "" && !optional {
		return badRequest("%s is missing", what)
	}
	if len(s) > max {
		return badRequest("%s is longer than %d bytes", what, max)
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			ch == '.' || ch == '_' || ch == ':' || ch == '-') {
			return badRequest("%s has a character outside [A-Za-z0-9._:-]: %q", what, s)
		}
	}
	return nil
}
