package sagakit

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// maxBody is the largest response body stored for replay (docs/barrier.md: at most 4 KiB).
const maxBody = 4096

// Answer is what a participant sends back: a status and a JSON body.
type Answer struct {
	Status      int    // HTTP status
	Body        []byte // JSON
	ContentType string // "application/json" when empty
	RetryAfter  int    // seconds for a Retry-After header; 0 for none
}

// Write sends the answer.
func (a *Answer) Write(w http.ResponseWriter) {
	ct := a.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	if a.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(a.RetryAfter))
	}
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// Reject returns the error a business function returns to refuse an action or a try: the answer
// is 409 {"error": msg}, recorded so that every retry gets the same answer. Returned from a
// compensation, confirm or cancel it becomes a 500, since refusing to undo is a bug that a 409
// would turn into a stuck saga at once.
func Reject(msg string) error { return &rejection{msg: msg} }

type rejection struct{ msg string }

func (r *rejection) Error() string { return "rejected: " + r.msg }

// answerError carries a fixed answer through the error path (validation, refusals, misuse).
type answerError struct {
	ans *Answer
	log bool // an operator must hear about it
}

func (e *answerError) Error() string { return fmt.Sprintf("%d %s", e.ans.Status, e.ans.Body) }

// panicError is a recovered panic of the business code.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v\n%s", e.value, e.stack) }

func problem(status int, title, detail string) *Answer {
	body, _ := json.Marshal(map[string]any{"title": title, "status": status, "detail": detail})
	return &Answer{Status: status, Body: body, ContentType: "application/problem+json"}
}

func badRequest(format string, args ...any) error {
	return &answerError{ans: problem(http.StatusBadRequest, "Invalid saga call", fmt.Sprintf(format, args...))}
}

// internalError is a 500 that is logged: the orchestrator retries it, then marks the saga stuck.
func internalError(format string, args ...any) error {
	return &answerError{ans: problem(http.StatusInternalServerError, "Participant error", fmt.Sprintf(format, args...)), log: true}
}

// errorBody is {"error": msg}, msg shortened until the body fits the stored 4 KiB.
func errorBody(msg string) []byte {
	for {
		body, _ := json.Marshal(map[string]string{"error": msg})
		if len(body) <= maxBody {
			return body
		}
		cut := len(msg) * 3 / 4
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
}

// sqlStater matches PostgreSQL driver errors (lib/pq, pgx) without importing them.
type sqlStater interface{ SQLState() string }

// transient reports a lock wait timeout, deadlock or serialization failure: the same call is
// likely to succeed when retried, hence 503 with Retry-After.
func transient(err error) bool {
	var s sqlStater
	if errors.As(err, &s) {
		switch s.SQLState() {
		case "40001", "40P01", "55P03":
			return true
		}
	}
	n := mysqlError(err)
	return n == 1205 || n == 1213
}

// mysqlError returns the MySQL error number of err, or 0. go-sql-driver formats its errors as
// "Error 1213: ..." (1.5) or "Error 1213 (40001): ..." (1.7+); the message is read so the kit
// needs no driver import.
func mysqlError(err error) int {
	for ; err != nil; err = errors.Unwrap(err) {
		msg := err.Error()
		if len(msg) < 7 || msg[:6] != "Error " {
			continue
		}
		n, i := 0, 6
		for ; i < len(msg) && i < 11 && '0' <= msg[i] && msg[i] <= '9'; i++ {
			n = n*10 + int(msg[i]-'0')
		}
		if i > 6 && (i == len(msg) || msg[i] == ':' || msg[i] == ' ') {
			return n
		}
	}
	return 0
}
