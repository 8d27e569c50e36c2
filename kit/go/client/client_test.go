package client

// Unit tests against fake services (httptest): the wire form of requests, problem decoding,
// and the start-retry rule. service_test.go runs the client against the real service.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fast is a client of url whose start retries wait 1–2 ms.
func fast(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, append([]Option{WithRetryBackoff(2*time.Millisecond, 4*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const sagaJSON = `{"id":"s-1","name":"n","mode":"saga","status":"running","created_at":"2026-11-24T10:00:00.000Z",
"updated_at":"2026-11-24T10:00:00.000Z","deadline_at":null,"error":null,"purge_at":null,"paused_at":null,"kept":false,
"steps":[{"name":"a","status":"running","attempts":1,"compensation_attempts":0,"last_error":null,"next_attempt_at":null,
"updated_at":"2026-11-24T10:00:00.000Z","phase":"action","service":"127.0.0.1:1","stuck":false}],"something_new":1}`

func answer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func problem(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// hangUp closes the connection without an answer, after reading the request.
func hangUp(t *testing.T, w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	conn.Close()
}

func TestStartRequestForms(t *testing.T) {
	full := StartRequest{ID: "o-1", Name: "place_order", Payload: map[string]int{"qty": 2}, TimeoutMs: 5000,
		Steps: []Step{
			{Name: "a", Action: &Endpoint{URL: "http://127.0.0.1:1/a", Headers: map[string]string{"X-K": "v"}},
				Compensation: &Endpoint{URL: "http://127.0.0.1:1/u", DelayMs: 100}},
			{Name: "b", Action: &Endpoint{URL: "http://127.0.0.1:1/b", Method: "PUT", Body: json.RawMessage(`{"x":1}`)},
				DependsOn: []string{}, Retry: &Retry{MaxAttempts: 3}},
			{Name: "c", Action: &Endpoint{URL: "http://127.0.0.1:1/c"}, DependsOn: []string{"a", "b"}},
		}}
	got, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"o-1","name":"place_order","payload":{"qty":2},"timeout_ms":5000,"steps":[` +
		`{"name":"a","action":{"url":"http://127.0.0.1:1/a","headers":{"X-K":"v"}},"compensation":{"url":"http://127.0.0.1:1/u","delay_ms":100}},` +
		`{"name":"b","action":{"url":"http://127.0.0.1:1/b","method":"PUT","body":{"x":1}},"depends_on":[],"retry":{"max_attempts":3}},` +
		`{"name":"c","action":{"url":"http://127.0.0.1:1/c"},"depends_on":["a","b"]}]}`
	if string(got) != want {
		t.Errorf("full start:\n got %s\nwant %s", got, want)
	}

	got, err = json.Marshal(StartRequest{Definition: "place_order", Version: 3, ID: "o-2", Payload: map[string]string{"sku": "A1"}})
	if err != nil || string(got) != `{"definition":"place_order","version":3,"id":"o-2","payload":{"sku":"A1"}}` {
		t.Errorf("by definition: %s, %v", got, err)
	}
	got, err = json.Marshal(StartRequest{Definition: "place_order"})
	if err != nil || string(got) != `{"definition":"place_order"}` {
		t.Errorf("by definition, latest: %s, %v", got, err)
	}
	for _, bad := range []StartRequest{
		{Definition: "d", Name: "n"},
		{Definition: "d", Steps: []Step{{Name: "a"}}},
		{Definition: "d", TimeoutMs: 1},
		{Name: "n", Version: 2},
		{Definition: "d", Version: -1},
	} {
		if _, err := json.Marshal(bad); err == nil {
			t.Errorf("%+v: encoded, want an error", bad)
		}
	}
	// Nothing is sent for a request of both forms.
	var hits int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { atomic.AddInt32(&hits, 1) }))
	defer srv.Close()
	if _, _, err := fast(t, srv.URL).Start(context.Background(), StartRequest{Definition: "d", Name: "n"}, StartOptions{}); err == nil {
		t.Error("Start of both forms: no error")
	}
	if atomic.LoadInt32(&hits) != 0 {
		t.Errorf("Start of both forms sent %d requests", atomic.LoadInt32(&hits))
	}
}

func TestDefinitionDocumentReferences(t *testing.T) {
	doc := Document{Description: "d", Steps: []Step{{Name: "a",
		Action: &Endpoint{URL: "http://x/a", Headers: map[string]string{"X-A": "1"}, HeaderRefs: map[string]string{"X-Tenant": "/tenant"},
			Body: map[string]any{"sku": PayloadRef("/sku"), "all": PayloadRef("")}}}}}
	got, err := json.Marshal(doc)
	want := `{"description":"d","steps":[{"name":"a","action":{"url":"http://x/a","headers":{"X-A":"1","X-Tenant":{"$payload":"/tenant"}},` +
		`"body":{"all":{"$payload":""},"sku":{"$payload":"/sku"}}}}]}`
	if err != nil || string(got) != want {
		t.Errorf("document:\n got %s, %v\nwant %s", got, err, want)
	}
	dup := Endpoint{URL: "http://x", Headers: map[string]string{"X": "1"}, HeaderRefs: map[string]string{"X": "/x"}}
	if _, err := json.Marshal(dup); err == nil {
		t.Error("a header in Headers and HeaderRefs: no error")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://h", "http://h/?q=1", "http://"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
	for _, o := range []Option{WithStartRetries(-1), WithHTTPClient(nil), WithToken("a\nb"),
		WithWaitPoll(time.Millisecond), WithRetryBackoff(0, time.Second)} {
		if _, err := New("http://127.0.0.1:1", o); err == nil {
			t.Error("a bad option was accepted")
		}
	}
}

func TestRequestsCarryPathQueryAndToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(body))
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/retry"), strings.HasSuffix(r.URL.Path, "/abort"):
			answer(w, http.StatusAccepted, sagaJSON)
		case r.URL.Path == "/base/v1/sagas" && r.Method == http.MethodGet:
			answer(w, http.StatusOK, `{"items":[`+sagaJSON+`],"next_cursor":null}`)
		case strings.HasPrefix(r.URL.Path, "/base/v1/definitions/"):
			answer(w, http.StatusOK, `{"name":"d","version":2,"created_at":"2026-11-24T10:00:00.000Z","created_by":"x","definition":{"name":"d"}}`)
		default:
			answer(w, http.StatusOK, sagaJSON)
		}
	}))
	defer srv.Close()
	c := fast(t, srv.URL+"/base/", WithToken("tok"))
	ctx := context.Background()
	s, err := c.Get(ctx, "a:b.c", GetOptions{Attempts: true, Request: true, Wait: 2500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "s-1" || s.Steps[0].Service != "127.0.0.1:1" || s.Error != "" || s.DeadlineAt != nil ||
		!strings.Contains(string(s.Raw), "something_new") || s.CreatedAt.IsZero() {
		t.Errorf("decoded saga: %+v", s)
	}
	if _, err := c.Get(ctx, "x", GetOptions{Wait: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	p, err := c.List(ctx, ListOptions{Status: []string{"stuck", "running"}, Name: "n", Limit: 7, Cursor: "1_x"})
	if err != nil || len(p.Items) != 1 || p.NextCursor != "" {
		t.Fatalf("List: %+v, %v", p, err)
	}
	if _, err := c.Retry(ctx, "s-1", "fixed by hand"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Abort(ctx, "s-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RetireDefinition(ctx, "d", 2, "old"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"GET /base/v1/sagas/a:b.c?include=attempts%2Crequest&wait_ms=2500 Bearer tok ",
		"GET /base/v1/sagas/x?wait_ms=60000 Bearer tok ",
		"GET /base/v1/sagas?cursor=1_x&limit=7&name=n&status=stuck%2Crunning Bearer tok ",
		`POST /base/v1/sagas/s-1/retry Bearer tok {"reason":"fixed by hand"}`,
		"POST /base/v1/sagas/s-1/abort Bearer tok ",
		`POST /base/v1/definitions/d/versions/2/retire Bearer tok {"reason":"old"}`,
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

func TestProblems(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sagas/bad":
			problem(w, 400, `{"type":"urn:saga-orchestrator:problem:invalid-request","title":"Invalid request","status":400,
"detail":"1 invalid query parameter(s); see errors","errors":[{"parameter":"wait_ms","detail":"must be an integer"}]}`)
		case "/v1/sagas/gone":
			problem(w, 410, `{"type":"urn:saga-orchestrator:problem:purged","title":"Purged","status":410,"detail":"purged",
"purged":{"name":"n","status":"succeeded","finished_at":"2026-11-24T10:00:00.000Z","purged_at":"2026-11-25T10:00:00.000Z","archived_in":null,"reserved_until":"2026-12-24T10:00:00.000Z"}}`)
		case "/v1/sagas/proxy":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>bad gateway</html>")
		default:
			w.Header().Set("Retry-After", "2")
			problem(w, 503, `{"type":"urn:saga-orchestrator:problem:unavailable","title":"Service unavailable","status":503,"detail":"later"}`)
		}
	}))
	defer srv.Close()
	c := fast(t, srv.URL)
	ctx := context.Background()

	_, err := c.Get(ctx, "bad", GetOptions{})
	var p *Problem
	if !errors.As(err, &p) || !IsInvalid(err) || p.Type != TypeInvalidRequest || len(p.Errors) != 1 ||
		p.Errors[0].Parameter != "wait_ms" || !strings.Contains(err.Error(), "parameter wait_ms: must be an integer") {
		t.Errorf("400: %#v", err)
	}
	_, err = c.Get(ctx, "gone", GetOptions{})
	if !IsGone(err) || !errors.As(err, &p) || p.Purged == nil || p.Purged.Status != "succeeded" || p.Purged.ArchivedIn != "" {
		t.Errorf("410: %#v", err)
	}
	_, err = c.Get(ctx, "proxy", GetOptions{})
	if !errors.As(err, &p) || p.Status != 502 || p.Title != "Bad Gateway" || p.Detail != "<html>bad gateway</html>" || p.Type != "about:blank" {
		t.Errorf("502 without a problem document: %#v", err)
	}
	_, err = c.Get(ctx, "busy", GetOptions{})
	if !IsUnavailable(err) || !errors.As(err, &p) || p.RetryAfter != 2*time.Second || IsNotFound(err) {
		t.Errorf("503: %#v", err)
	}
	if StatusOf(errors.New("x")) != 0 || StatusOf(nil) != 0 {
		t.Error("StatusOf of a non-problem")
	}
	if d := retryAfter("Wed, 21 Oct 2015 07:28:00 GMT", time.Date(2015, 10, 21, 7, 27, 50, 0, time.UTC)); d != 10*time.Second {
		t.Errorf("Retry-After as a date: %v", d)
	}
}

// A 503 means nothing was recorded: Start sends the request again, after Retry-After.
func TestStartRetries503(t *testing.T) {
	var hits int32
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if atomic.AddInt32(&hits, 1) <= 2 {
			w.Header().Set("Retry-After", "0")
			problem(w, 503, `{"type":"urn:saga-orchestrator:problem:unavailable","title":"Service unavailable","status":503,"detail":"full"}`)
			return
		}
		answer(w, http.StatusCreated, sagaJSON)
	}))
	defer srv.Close()
	// No id: a 503 is retried all the same.
	s, created, err := fast(t, srv.URL).Start(context.Background(), StartRequest{Definition: "d"}, StartOptions{})
	if err != nil || !created || s.ID != "s-1" || atomic.LoadInt32(&hits) != 3 {
		t.Fatalf("Start: %v, created %v, %d requests", err, created, atomic.LoadInt32(&hits))
	}
	mu.Lock()
	if bodies[0] != bodies[2] || bodies[0] != `{"definition":"d"}` {
		t.Errorf("repeated bodies differ: %q", bodies)
	}
	mu.Unlock()

	// Retries are bounded.
	atomic.StoreInt32(&hits, -100)
	_, _, err = fast(t, srv.URL, WithStartRetries(2)).Start(context.Background(), StartRequest{Definition: "d"}, StartOptions{})
	if !IsUnavailable(err) || atomic.LoadInt32(&hits) != -97 {
		t.Errorf("bounded: %v after %d requests, want a 503 after 3", err, atomic.LoadInt32(&hits)+100)
	}
}

// A start whose connection breaks after the request was sent may have started the saga: it
// is sent again only when it has an id (the repeat then answers that saga).
func TestStartRetriesATransportErrorOnlyWithAnID(t *testing.T) {
	var hits int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		if atomic.AddInt32(&hits, 1) == 1 {
			hangUp(t, w)
			return
		}
		answer(w, http.StatusOK, sagaJSON)
	}))
	defer srv.Close()
	ctx := context.Background()

	_, _, err := fast(t, srv.URL).Start(ctx, StartRequest{Definition: "d"}, StartOptions{})
	if err == nil || StatusOf(err) != 0 || atomic.LoadInt32(&hits) != 1 {
		t.Fatalf("without an id: %v after %d requests, want a transport error after 1", err, atomic.LoadInt32(&hits))
	}
	atomic.StoreInt32(&hits, 0)
	s, created, err := fast(t, srv.URL).Start(ctx, StartRequest{Definition: "d", ID: "s-1"}, StartOptions{})
	if err != nil || created || s.ID != "s-1" || atomic.LoadInt32(&hits) != 2 {
		t.Fatalf("with an id: %v, created %v, after %d requests, want the saga after 2", err, created, atomic.LoadInt32(&hits))
	}
}

// countingTransport counts round trips.
type countingTransport struct{ n int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	atomic.AddInt32(&c.n, 1)
	return http.DefaultTransport.RoundTrip(r)
}

// A refused connection sent nothing: it is retried without an id too. Other answers are not.
func TestStartRetriesARefusedConnectionAndNothingElse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	tr := &countingTransport{}
	_, _, err = fast(t, closed, WithHTTPClient(&http.Client{Transport: tr}), WithStartRetries(3)).
		Start(context.Background(), StartRequest{Definition: "d"}, StartOptions{})
	if err == nil || atomic.LoadInt32(&tr.n) != 4 {
		t.Errorf("refused: %v after %d attempts, want an error after 4", err, atomic.LoadInt32(&tr.n))
	}

	var hits int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt32(&hits, 1)
		problem(w, 409, `{"type":"urn:saga-orchestrator:problem:definition-retired","title":"Definition retired","status":409,"detail":"retired"}`)
	}))
	defer srv.Close()
	_, _, err = fast(t, srv.URL).Start(context.Background(), StartRequest{Definition: "d", ID: "x"}, StartOptions{})
	if !IsConflict(err) || !IsDefinitionRetired(err) || atomic.LoadInt32(&hits) != 1 {
		t.Errorf("409: %v after %d requests", err, atomic.LoadInt32(&hits))
	}
}

// The wait between attempts ends with the context.
func TestStartRetryWaitEndsWithTheContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		problem(w, 503, `{"type":"urn:saga-orchestrator:problem:unavailable","title":"Service unavailable","status":503,"detail":"full"}`)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, _, err := fast(t, srv.URL).Start(ctx, StartRequest{Definition: "d"}, StartOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 5*time.Second {
		t.Errorf("%v after %v", err, time.Since(began))
	}
}

// Wait returns a stuck saga, and a context's end with the saga last seen.
func TestWaitSettlesOnStuckAndEndsWithTheContext(t *testing.T) {
	var status atomic.Value
	status.Store("running")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait_ms") == "" {
			t.Errorf("Wait sent no wait_ms: %s", r.URL)
		}
		time.Sleep(20 * time.Millisecond)
		answer(w, 200, strings.Replace(sagaJSON, `"status":"running"`, `"status":"`+status.Load().(string)+`"`, 1))
	}))
	defer srv.Close()
	c := fast(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	s, err := c.Wait(ctx, "s-1")
	if !errors.Is(err, context.DeadlineExceeded) || s == nil || s.Status != "running" {
		t.Errorf("ctx ended: %v, %+v", err, s)
	}
	status.Store("stuck")
	s, err = c.Wait(context.Background(), "s-1")
	if err != nil || s.Status != StatusStuck || !s.Settled() || s.Terminal() {
		t.Errorf("stuck: %v, %+v", err, s)
	}
}
