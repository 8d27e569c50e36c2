package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Problem types the service answers with (the "type" of a problem document).
const (
	TypeInvalidRequest    = "urn:saga-orchestrator:problem:invalid-request"
	TypeNotFound          = "urn:saga-orchestrator:problem:not-found"
	TypeConflict          = "urn:saga-orchestrator:problem:conflict"
	TypePurged            = "urn:saga-orchestrator:problem:purged"
	TypeDefinitionRetired = "urn:saga-orchestrator:problem:definition-retired"
	TypeUnauthorized      = "urn:saga-orchestrator:problem:unauthorized"
	TypeForbidden         = "urn:saga-orchestrator:problem:forbidden"
	TypeUnavailable       = "urn:saga-orchestrator:problem:unavailable"
)

// Problem is an error answer of the service: its application/problem+json document (RFC 9457,
// docs/api.md "Errors"). An error answer that is not a problem document (from a proxy, say)
// is a Problem too, with its status, the status text as Title and the start of the body as
// Detail. Use errors.As to get it from an error a method returned:
//
//	var p *client.Problem
//	if errors.As(err, &p) && p.Status == http.StatusBadRequest {
//		for _, f := range p.Errors { log.Printf("%s: %s", f.Pointer, f.Detail) }
//	}
type Problem struct {
	// Type is the problem type URI, e.g. TypeInvalidRequest; "about:blank" when the answer
	// was not a problem document.
	Type string `json:"type"`
	// Title is the short summary of the type.
	Title string `json:"title"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Detail says what went wrong in this occurrence, for people.
	Detail string `json:"detail"`
	// Errors lists every invalid body field or query parameter of a 400.
	Errors []FieldError `json:"errors,omitempty"`
	// Purged describes the saga an id named, when it ended and was purged by retention (a
	// 410 on a read, a 409 on a start).
	Purged *Purged `json:"purged,omitempty"`
	// RetryAfter is the answer's Retry-After header (a 503's is 1 s), 0 when it had none.
	RetryAfter time.Duration `json:"-"`
}

// FieldError is one invalid part of a request: a body field (Pointer, a JSON Pointer such as
// "/steps/1/action/url") or a query parameter (Parameter).
type FieldError struct {
	// Pointer is the JSON Pointer of the field in the request body ("" for a parameter).
	Pointer string `json:"pointer,omitempty"`
	// Parameter is the query parameter's name ("" for a body field).
	Parameter string `json:"parameter,omitempty"`
	// Detail says what is wrong with it.
	Detail string `json:"detail"`
}

// Purged is what is known of a purged saga while its id stays reserved.
type Purged struct {
	// Name is the saga's name.
	Name string `json:"name"`
	// Status is how it ended: succeeded or compensated.
	Status string `json:"status"`
	// FinishedAt is when it ended.
	FinishedAt time.Time `json:"finished_at"`
	// PurgedAt is when retention purged it.
	PurgedAt time.Time `json:"purged_at"`
	// ArchivedIn is the archive file holding it, "" when it was not archived.
	ArchivedIn string `json:"archived_in"`
	// ReservedUntil is when the id is free again.
	ReservedUntil time.Time `json:"reserved_until"`
}

// Error formats the problem as "STATUS TITLE: DETAIL", then each invalid field.
func (p *Problem) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "saga-orchestrator: %d %s", p.Status, p.Title)
	if p.Detail != "" {
		b.WriteString(": ")
		b.WriteString(p.Detail)
	}
	for i, f := range p.Errors {
		if i == 0 {
			b.WriteString(" (")
		} else {
			b.WriteString("; ")
		}
		if f.Pointer != "" || f.Parameter == "" {
			fmt.Fprintf(&b, "%q: %s", f.Pointer, f.Detail)
		} else {
			fmt.Fprintf(&b, "parameter %s: %s", f.Parameter, f.Detail)
		}
		if i == len(p.Errors)-1 {
			b.WriteString(")")
		}
	}
	return b.String()
}

// Field returns the error about the body field at pointer, or nil.
func (p *Problem) Field(pointer string) *FieldError {
	for i := range p.Errors {
		if p.Errors[i].Pointer == pointer && p.Errors[i].Parameter == "" {
			return &p.Errors[i]
		}
	}
	return nil
}

// problemOf builds the Problem of an error answer.
func problemOf(resp *http.Response, body []byte) *Problem {
	p := &Problem{}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		if json.Unmarshal(body, p) != nil {
			p = &Problem{}
		}
	}
	if p.Status == 0 || p.Title == "" {
		text := strings.TrimSpace(string(body))
		if len(text) > 512 {
			text = text[:512] + "…"
		}
		p = &Problem{Type: "about:blank", Title: http.StatusText(resp.StatusCode), Detail: text}
		if p.Title == "" {
			p.Title = "HTTP " + strconv.Itoa(resp.StatusCode)
		}
	}
	p.Status = resp.StatusCode // the answer's, should a document say otherwise
	p.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	return p
}

// retryAfter reads a Retry-After header (delay-seconds or an HTTP date).
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		if s > 3600 {
			s = 3600
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		if d := t.Sub(now); d < time.Hour {
			return d
		}
		return time.Hour
	}
	return 0
}

// StatusOf returns the HTTP status of the *Problem in err's chain, or 0 when there is none (a
// transport error, say).
func StatusOf(err error) int {
	var p *Problem
	if errors.As(err, &p) {
		return p.Status
	}
	return 0
}

// IsInvalid reports whether err is a 400 problem: the request was refused as invalid (see
// Problem.Errors) and nothing was recorded.
func IsInvalid(err error) bool { return StatusOf(err) == http.StatusBadRequest }

// IsUnauthorized reports whether err is a 401 problem: no token, or one the service does not
// know.
func IsUnauthorized(err error) bool { return StatusOf(err) == http.StatusUnauthorized }

// IsForbidden reports whether err is a 403 problem: the token lacks the route's scope.
func IsForbidden(err error) bool { return StatusOf(err) == http.StatusForbidden }

// IsNotFound reports whether err is a 404 problem: no such saga, definition or version.
func IsNotFound(err error) bool { return StatusOf(err) == http.StatusNotFound }

// IsConflict reports whether err is a 409 problem: the id exists with another request or
// names a purged saga, the definition's version is retired, or an operator action the
// saga's state does not allow.
func IsConflict(err error) bool { return StatusOf(err) == http.StatusConflict }

// IsGone reports whether err is a 410 problem: the saga ended and was purged by retention
// (Problem.Purged says when).
func IsGone(err error) bool { return StatusOf(err) == http.StatusGone }

// IsUnavailable reports whether err is a 503 problem: the service cannot answer now (on a
// start: nothing was recorded; try again after Problem.RetryAfter).
func IsUnavailable(err error) bool { return StatusOf(err) == http.StatusServiceUnavailable }

// IsDefinitionRetired reports whether err is the 409 of a start of a retired definition
// version (or of a definition whose every version is retired).
func IsDefinitionRetired(err error) bool {
	var p *Problem
	return errors.As(err, &p) && p.Type == TypeDefinitionRetired
}
