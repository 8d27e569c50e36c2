// Package client is a Go client of saga-orchestrator's HTTP API (docs/api.md): start sagas in
// full or by a stored definition, dry-run them, read, list and long-poll them, retry or abort
// them, and manage definitions.
//
//	c, err := client.New("http://127.0.0.1:8080", client.WithToken(os.Getenv("SAGA_TOKEN")))
//	saga, created, err := c.Start(ctx, client.StartRequest{
//		Definition: "place_order",
//		ID:         "order-1042",
//		Payload:    map[string]any{"order_id": "1042", "sku": "A1", "qty": 2},
//	}, client.StartOptions{Wait: 10 * time.Second})
//
// Every method takes a context.Context: its cancellation and deadline end the call (and a
// long poll, and the waits between retries). Error answers of the service are *Problem
// values (use errors.As, or IsNotFound, IsConflict and the other helpers). Only starts are
// retried, and only when that cannot start a saga twice; see Client.Start.
//
// The package uses the standard library only and needs Go 1.19 or later.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultStartRetries is how many times Start sends a start again, after the first attempt,
// when that is safe (WithStartRetries changes it).
const DefaultStartRetries = 4

// DefaultWaitPoll is the longest one long-poll request of Wait holds (WithWaitPoll changes it).
const DefaultWaitPoll = 20 * time.Second

// MaxWait is the longest wait_ms the service accepts on one request: longer waits are made of
// several requests.
const MaxWait = 60 * time.Second

// userAgent names this client in the service's access log.
const userAgent = "saga-orchestrator-go-client/1"

// Client calls one saga-orchestrator service. It is safe for concurrent use.
type Client struct {
	base         *url.URL
	hc           *http.Client
	token        string
	startRetries int
	waitPoll     time.Duration
	backoff      time.Duration // first wait between start attempts; doubled up to maxBackoff
	maxBackoff   time.Duration
}

// Option configures a Client (see New).
type Option func(*Client) error

// WithToken sends the token as "Authorization: Bearer TOKEN" on every request: a service with
// [[auth.tokens]] answers 401 without it and 403 when it lacks the scope of a route (read for
// reads, write to start, admin for operator actions and definitions).
func WithToken(token string) Option {
	return func(c *Client) error {
		if strings.ContainsAny(token, "\r\n") {
			return errors.New("client: the token contains a line break")
		}
		c.token = token
		return nil
	}
}

// WithHTTPClient makes the client send its requests with hc (its transport, TLS settings,
// proxy). The default is a new http.Client without a timeout: each call ends with its context,
// since long polls (StartOptions.Wait, Wait, GetOptions.Wait) hold an answer for up to a
// minute. An hc.Timeout shorter than a long poll cuts it.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("client: WithHTTPClient(nil)")
		}
		c.hc = hc
		return nil
	}
}

// WithStartRetries sets how many times Start may send a start again after its first attempt
// (default DefaultStartRetries; 0: never). It sends again only when that is safe: see
// Client.Start.
func WithStartRetries(n int) Option {
	return func(c *Client) error {
		if n < 0 {
			return fmt.Errorf("client: WithStartRetries(%d): must be 0 or more", n)
		}
		c.startRetries = n
		return nil
	}
}

// WithRetryBackoff sets the wait before the first repeated start (default 200 ms), doubled at
// each further attempt up to max (default 5 s), each wait taken at random between half and all
// of its figure. A 503's Retry-After overrides it for that wait.
func WithRetryBackoff(first, max time.Duration) Option {
	return func(c *Client) error {
		if first <= 0 || max < first {
			return fmt.Errorf("client: WithRetryBackoff(%v, %v): need 0 < first <= max", first, max)
		}
		c.backoff, c.maxBackoff = first, max
		return nil
	}
}

// WithWaitPoll sets the longest one request of Wait (and of StartOptions.Wait beyond the
// first minute) holds, from 1 s to MaxWait (default DefaultWaitPoll). The service answers a
// long poll as soon as the saga succeeds or is compensated, but not when it becomes stuck:
// Wait sees a stuck saga at the end of the request that is open then, so a shorter poll
// notices it sooner, at the cost of more requests.
func WithWaitPoll(d time.Duration) Option {
	return func(c *Client) error {
		if d < time.Second || d > MaxWait {
			return fmt.Errorf("client: WithWaitPoll(%v): must be from 1s to %v", d, MaxWait)
		}
		c.waitPoll = d
		return nil
	}
}

// New returns a client of the service at baseURL (http or https, e.g.
// "http://127.0.0.1:8080"; a path is kept as a prefix, for a service behind a proxy).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: must be an absolute http or https URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: must have no query or fragment", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	c := &Client{
		base:         u,
		hc:           &http.Client{},
		startRetries: DefaultStartRetries,
		waitPoll:     DefaultWaitPoll,
		backoff:      200 * time.Millisecond,
		maxBackoff:   5 * time.Second,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// endpoint is the URL of path segments (each escaped) under the base URL, with query q.
func (c *Client) endpoint(q url.Values, segments ...string) string {
	u := *c.base
	raw := u.EscapedPath()
	for _, s := range segments {
		raw += "/" + url.PathEscape(s)
	}
	if p, err := url.PathUnescape(raw); err == nil {
		u.Path, u.RawPath = p, raw // RawPath keeps an escaped "/" in a segment escaped
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// response is an answer whose status the caller expected, with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// send makes one request; body nil sends none. An answer of a status not in ok becomes a
// *Problem; a transport failure is returned as net/http returns it.
func (c *Client) send(ctx context.Context, method, target string, body []byte, ok ...int) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: reading the answer (%d): %w", method, req.URL.Path, resp.StatusCode, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return &response{status: resp.StatusCode, header: resp.Header, body: data}, nil
		}
	}
	return nil, problemOf(resp, data)
}

// call sends a request with v (if not nil) as its JSON body and decodes a JSON answer into
// out (if not nil).
func (c *Client) call(ctx context.Context, method, target string, v, out any, ok ...int) (*response, error) {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("client: encoding the request: %w", err)
		}
	}
	r, err := c.send(ctx, method, target, body, ok...)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := decode(r, out); err != nil {
			return nil, fmt.Errorf("client: %s %s: %w", method, target, err)
		}
	}
	return r, nil
}

// decode reads a JSON answer into out; a *Saga also keeps the document as sent (Saga.Raw).
func decode(r *response, out any) error {
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("decoding the %d answer: %w", r.status, err)
	}
	if s, ok := out.(*Saga); ok {
		s.Raw = append(json.RawMessage(nil), r.body...)
	}
	return nil
}

// reasonBody is the optional {"reason"} of an operator action: none when reason is "".
func reasonBody(reason string) any {
	if reason == "" {
		return nil
	}
	return map[string]string{"reason": reason}
}

// millis is d in whole milliseconds, rounded up, for a *_ms query parameter.
func millis(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return fmt.Sprint(int64(ms))
}
