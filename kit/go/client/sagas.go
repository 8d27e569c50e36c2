package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StartOptions are the options of Client.Start.
type StartOptions struct {
	// Wait, when positive, holds the start until the saga ends (succeeded or compensated),
	// becomes stuck, or Wait has passed: the POST asks the service to hold its answer
	// (?wait_ms, at most a minute), and a longer Wait goes on with long polls of the saga.
	// Start then returns the saga as last seen, whether it ended or not, without an error.
	Wait time.Duration
}

// Start starts a saga (POST /v1/sagas): in full or by definition, see StartRequest. It
// returns the saga and whether this call created it: true for 201 Created, false for 200, an
// existing saga with this id and an identical request (a repeated start never starts a second
// saga; a different request under the id is a 409 *Problem).
//
// A start is sent again, up to the client's start retries (WithStartRetries) with a growing
// wait (WithRetryBackoff), only when that cannot start a saga twice:
//
//   - a 503 answer (the service takes no new saga now, or cannot reach its database: nothing
//     was recorded), always, after its Retry-After;
//   - a failure to connect (nothing was sent), always;
//   - any other transport failure (the request may have arrived, and the saga may exist) only
//     when the request has its own ID: the service answers the repeat 200 with that saga.
//     Without an ID the error is returned, since a repeat could start a second saga.
//
// Anything else (a 4xx, the context ending) is returned at once. After a repeat, created is
// false when an earlier attempt's lost answer was the 201.
func (c *Client) Start(ctx context.Context, r StartRequest, o StartOptions) (*Saga, bool, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, false, err
	}
	var deadline time.Time
	if o.Wait > 0 {
		deadline = time.Now().Add(o.Wait)
	}
	var resp *response
	for attempt := 0; ; attempt++ {
		q := url.Values{}
		if !deadline.IsZero() {
			if w := clampWait(time.Until(deadline)); w > 0 {
				q.Set("wait_ms", millis(w))
			}
		}
		resp, err = c.send(ctx, http.MethodPost, c.endpoint(q, "v1", "sagas"), body, http.StatusCreated, http.StatusOK)
		if err == nil {
			break
		}
		if attempt >= c.startRetries || ctx.Err() != nil || !startRetryable(err, r.ID != "") {
			return nil, false, err
		}
		wait := c.backoffWait(attempt)
		var p *Problem
		if errors.As(err, &p) && p.RetryAfter > 0 {
			wait = p.RetryAfter
		}
		if e := sleep(ctx, wait); e != nil {
			return nil, false, fmt.Errorf("%w (while waiting to retry after: %v)", e, err)
		}
	}
	s := &Saga{}
	if err := decode(resp, s); err != nil {
		return nil, false, fmt.Errorf("client: POST /v1/sagas: %w", err)
	}
	created := resp.status == http.StatusCreated
	if !deadline.IsZero() && !s.Settled() && time.Now().Before(deadline) {
		// The saga exists: a wait that fails or is cut short still answers with it.
		if later, _ := c.poll(ctx, s.ID, deadline); later != nil {
			s = later
		}
	}
	return s, created, nil
}

// startRetryable says whether a failed start may be sent again: see Client.Start.
func startRetryable(err error, hasID bool) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var p *Problem
	if errors.As(err, &p) {
		switch p.Status {
		case http.StatusServiceUnavailable:
			return true
		case http.StatusBadGateway, http.StatusGatewayTimeout:
			// A proxy's: the service may have had the request.
			return hasID && p.Type == "about:blank"
		}
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true // no connection: nothing was sent
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		return false // not a transport error (a body that cannot be read, say)
	}
	return hasID
}

var (
	jitterMu sync.Mutex
	jitter   = rand.New(rand.NewSource(time.Now().UnixNano()))
)

// backoffWait is the wait before repeat number attempt+1: the client's backoff doubled per
// attempt up to its maximum, taken at random between half and all of it.
func (c *Client) backoffWait(attempt int) time.Duration {
	d := c.backoff
	for i := 0; i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	if d > c.maxBackoff {
		d = c.maxBackoff
	}
	jitterMu.Lock()
	f := 0.5 + 0.5*jitter.Float64()
	jitterMu.Unlock()
	return time.Duration(float64(d) * f)
}

// sleep waits d, or returns ctx's error when it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// clampWait bounds a long poll's wait to what one request of the service accepts.
func clampWait(d time.Duration) time.Duration {
	if d > MaxWait {
		return MaxWait
	}
	if d < 0 {
		return 0
	}
	return d
}

// DryRun asks what a start would do without doing it (POST /v1/sagas?dry_run=true): the
// plan, and whether each endpoint's host resolves and accepts a connection. Nothing is
// recorded or called. A request a start would refuse gets that *Problem (400, or 409 for a
// retired definition version).
func (c *Client) DryRun(ctx context.Context, r StartRequest) (*DryRun, error) {
	q := url.Values{"dry_run": {"true"}}
	d := &DryRun{}
	if _, err := c.call(ctx, http.MethodPost, c.endpoint(q, "v1", "sagas"), r, d, http.StatusOK); err != nil {
		return nil, err
	}
	return d, nil
}

// GetOptions are the options of Client.Get.
type GetOptions struct {
	// Attempts adds every call of each step (SagaStep.History) and the operator actions
	// (Saga.OperatorActions).
	Attempts bool
	// Request adds the request as accepted (Saga.Request), secret header values "***".
	Request bool
	// Wait, when positive, holds the answer until the saga ends (succeeded or compensated) or
	// Wait passes (at most MaxWait; a stuck saga is answered at the end of Wait).
	Wait time.Duration
}

// Get reads a saga (GET /v1/sagas/{id}). An unknown id is a 404 *Problem (IsNotFound), a
// saga purged by retention a 410 (IsGone, Problem.Purged).
func (c *Client) Get(ctx context.Context, id string, o GetOptions) (*Saga, error) {
	q := url.Values{}
	var include []string
	if o.Attempts {
		include = append(include, "attempts")
	}
	if o.Request {
		include = append(include, "request")
	}
	if len(include) > 0 {
		q.Set("include", strings.Join(include, ","))
	}
	if w := clampWait(o.Wait); w > 0 {
		q.Set("wait_ms", millis(w))
	}
	s := &Saga{}
	if _, err := c.call(ctx, http.MethodGet, c.endpoint(q, "v1", "sagas", id), nil, s, http.StatusOK); err != nil {
		return nil, err
	}
	return s, nil
}

// Wait long-polls the saga (GET /v1/sagas/{id}?wait_ms=…) until it is settled and returns it:
// ended (succeeded or compensated), or stuck. A stuck saga is not terminal, but only a person
// moves it on (Client.Retry, or a skip), so Wait returns it rather than wait for that; check
// Saga.Status, or Saga.Terminal. The service ends a long poll as soon as the saga ends but
// not when it becomes stuck: Wait notices that at the end of the poll open then (see
// WithWaitPoll).
//
// Wait returns when ctx ends, with ctx's error and the saga as last seen (nil if it was never
// read). With a deadline on ctx, the last poll ends shortly before it, so the saga returned is
// fresh. Any other error (a 404, say) is returned at once.
func (c *Client) Wait(ctx context.Context, id string) (*Saga, error) {
	return c.poll(ctx, id, time.Time{})
}

// poll long-polls saga id until it is settled, ctx ends, or deadline (if not zero) passes.
func (c *Client) poll(ctx context.Context, id string, deadline time.Time) (*Saga, error) {
	const margin = 250 * time.Millisecond // a poll ends this long before ctx's deadline
	var last *Saga
	for {
		wait := c.waitPoll
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl) - margin
			if left <= 0 {
				<-ctx.Done()
				return last, ctx.Err()
			}
			if left < wait {
				wait = left
			}
		}
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 && last != nil {
				return last, nil
			}
			if left < wait {
				wait = left
			}
		}
		began := time.Now()
		s, err := c.Get(ctx, id, GetOptions{Wait: wait})
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = s
		if s.Settled() {
			return s, nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return s, nil
		}
		// An answer far sooner than asked (a proxy that does not hold it): do not spin.
		if took := time.Since(began); wait > time.Second && took < wait/4 {
			if err := sleep(ctx, time.Second); err != nil {
				return last, err
			}
		}
	}
}

// ListOptions filter and page a saga listing (Client.List).
type ListOptions struct {
	// Status keeps the sagas in any of these statuses (none: every status).
	Status []string
	// Name keeps the sagas of this name ("": every name).
	Name string
	// Limit is the page size, 1–500 (0: the service's default, 50).
	Limit int
	// Cursor is the NextCursor of the page before ("": the first page).
	Cursor string
}

// List reads one page of sagas, newest first (GET /v1/sagas). Pass Page.NextCursor back as
// ListOptions.Cursor for the next page; Client.Sagas walks them all.
func (c *Client) List(ctx context.Context, o ListOptions) (*Page, error) {
	q := url.Values{}
	if len(o.Status) > 0 {
		q.Set("status", strings.Join(o.Status, ","))
	}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	p := &Page{}
	if _, err := c.call(ctx, http.MethodGet, c.endpoint(q, "v1", "sagas"), nil, p, http.StatusOK); err != nil {
		return nil, err
	}
	return p, nil
}

// SagaIterator walks every saga of a listing, page by page (Client.Sagas):
//
//	it := c.Sagas(client.ListOptions{Status: []string{client.StatusStuck}})
//	for it.Next(ctx) {
//		s := it.Saga()
//		…
//	}
//	if err := it.Err(); err != nil { … }
type SagaIterator struct {
	c    *Client
	opts ListOptions
	page []Saga
	cur  *Saga
	done bool
	err  error
}

// Sagas returns an iterator over every saga o selects, newest first, from o.Cursor on. It reads
// a page (o.Limit sagas) when it needs one. Sagas started while it walks may or may not be
// seen; none is seen twice.
func (c *Client) Sagas(o ListOptions) *SagaIterator {
	return &SagaIterator{c: c, opts: o}
}

// Next moves to the next saga, reading the next page if needed; false at the end or on an
// error (see Err).
func (it *SagaIterator) Next(ctx context.Context) bool {
	for len(it.page) == 0 {
		if it.done || it.err != nil {
			it.cur = nil
			return false
		}
		p, err := it.c.List(ctx, it.opts)
		if err != nil {
			it.err = err
			it.cur = nil
			return false
		}
		it.page = p.Items
		it.opts.Cursor = p.NextCursor
		it.done = p.NextCursor == ""
	}
	it.cur = &it.page[0]
	it.page = it.page[1:]
	return true
}

// Saga is the saga Next moved to.
func (it *SagaIterator) Saga() *Saga { return it.cur }

// Err is the error that ended the walk, nil at its end.
func (it *SagaIterator) Err() error { return it.err }

// Cursor is the cursor of the page after the sagas read so far ("" once the last page was
// read): a walk can go on later from it (ListOptions.Cursor), after the current page.
func (it *SagaIterator) Cursor() string { return it.opts.Cursor }

// Retry resumes a stuck saga with a fresh retry budget for the stuck call (POST
// /v1/sagas/{id}/retry; needs the admin scope). reason ("" for none) is kept in the saga's
// operator actions. A saga that is not stuck is a 409 *Problem.
func (c *Client) Retry(ctx context.Context, id, reason string) (*Saga, error) {
	return c.operate(ctx, id, "retry", reason)
}

// Abort stops a running saga going forward: it compensates (POST /v1/sagas/{id}/abort; needs
// the admin scope). reason ("" for none) is kept in the saga's operator actions. A saga that
// is not running is a 409 *Problem.
func (c *Client) Abort(ctx context.Context, id, reason string) (*Saga, error) {
	return c.operate(ctx, id, "abort", reason)
}

// operate posts an operator action, answered 202 with the saga.
func (c *Client) operate(ctx context.Context, id, action, reason string) (*Saga, error) {
	s := &Saga{}
	target := c.endpoint(nil, "v1", "sagas", id, action)
	if _, err := c.call(ctx, http.MethodPost, target, reasonBody(reason), s, http.StatusAccepted); err != nil {
		return nil, err
	}
	return s, nil
}
