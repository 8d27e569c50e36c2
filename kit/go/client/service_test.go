package client

// Tests against the real service: SAGA_BIN names the saga-orchestrator binary. Each test
// starts its own instance on a fresh SQLite file and a loopback port, and its participants are
// httptest servers. Without SAGA_BIN the tests are skipped, unless CI=true, when they fail.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startService runs the binary of SAGA_BIN with config (TOML, "" for none) and returns its
// base URL. The process is killed when the test ends; its log is shown if the test failed.
func startService(t *testing.T, config string) string {
	t.Helper()
	bin := os.Getenv("SAGA_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("SAGA_BIN is not set (CI=true): the client tests need the saga-orchestrator binary")
		}
		t.Skip("SAGA_BIN is not set: set it to target/debug/saga-orchestrator to run the client against the service")
	}
	dir := t.TempDir()
	args := []string{"serve"}
	if config != "" {
		file := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = []string{"--config", file, "serve"}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir // no config.toml or ./data of the test's directory
	cmd.Env = append(os.Environ(),
		"SAGA__SERVER__BIND=127.0.0.1:0",
		"SAGA__DATABASE__URL=sqlite://"+filepath.Join(dir, "t.db")+"?mode=rwc",
		"SAGA__LOG__LEVEL=info",
		"SAGA__PARTICIPANT__INITIAL_BACKOFF_MS=20",
		"SAGA__PARTICIPANT__MAX_BACKOFF_MS=100",
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	var mu sync.Mutex
	var lines []string
	bound := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		re := regexp.MustCompile(`"bound":"([^"]+)"`)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case bound <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-done
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			from := len(lines) - 30
			if from < 0 {
				from = 0
			}
			t.Logf("last lines of the service's log:\n%s", strings.Join(lines[from:], "\n"))
		}
	})
	select {
	case addr := <-bound:
		return "http://" + addr
	case <-done:
		t.Fatal("the service exited before it served")
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not report its address within 20 s")
	}
	return ""
}

// participant is a fake participant service: it answers by path and records every call.
//
//	/ok       200 {"ok": true}
//	/refuse   409 {"error": "refused"} (a business failure)
//	/unknown  503 (an unknown outcome: retried)
//	/undo     200, or 409 while refuseUndo is set (a refused compensation: the saga is stuck)
type participant struct {
	*httptest.Server
	refuseUndo atomic.Bool
	mu         sync.Mutex
	calls      []seenCall
}

type seenCall struct {
	path, sagaID, phase string
	header              http.Header
	body                json.RawMessage
}

func newParticipant(t *testing.T) *participant {
	p := &participant{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.calls = append(p.calls, seenCall{r.URL.Path, r.Header.Get("X-Saga-Id"), r.Header.Get("X-Saga-Phase"), r.Header.Clone(), body})
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/refuse", r.URL.Path == "/undo" && p.refuseUndo.Load():
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":"refused"}`)
		case r.URL.Path == "/unknown":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

// callsOf returns the calls of saga id, in order.
func (p *participant) callsOf(id string) []seenCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []seenCall
	for _, c := range p.calls {
		if c.sagaID == id {
			out = append(out, c)
		}
	}
	return out
}

func (p *participant) at(path string) *Endpoint { return &Endpoint{URL: p.URL + path} }

func newClient(t *testing.T, base string, opts ...Option) *Client {
	t.Helper()
	c, err := New(base, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// twoSteps is a saga whose second step's action is path.
func twoSteps(p *participant, id, name, path string) StartRequest {
	return StartRequest{ID: id, Name: name, Payload: map[string]any{"order": id, "qty": 2},
		Steps: []Step{
			{Name: "first", Action: p.at("/ok"), Compensation: p.at("/undo")},
			{Name: "second", Action: p.at(path), Compensation: p.at("/undo"),
				Retry: &Retry{MaxAttempts: 2, InitialBackoffMs: 10, MaxBackoffMs: 10}},
		}}
}

func TestServiceStartGetWait(t *testing.T) {
	c := newClient(t, startService(t, ""))
	p := newParticipant(t)
	ctx := timeout(t)

	req := twoSteps(p, "order-1", "place_order", "/ok")
	s, created, err := c.Start(ctx, req, StartOptions{})
	if err != nil || !created || s.ID != "order-1" || s.Name != "place_order" || s.Mode != ModeSaga || len(s.Steps) != 2 || s.CreatedAt.IsZero() {
		t.Fatalf("first start: %v, created %v, %+v", err, created, s)
	}
	again, created, err := c.Start(ctx, req, StartOptions{})
	if err != nil || created || again.ID != "order-1" || !again.CreatedAt.Equal(s.CreatedAt) {
		t.Fatalf("repeated start: %v, created %v, %+v", err, created, again)
	}
	other := twoSteps(p, "order-1", "place_order", "/refuse")
	if _, _, err := c.Start(ctx, other, StartOptions{}); !IsConflict(err) {
		t.Fatalf("another request under the id: %v, want a 409", err)
	}

	s, err = c.Wait(ctx, "order-1")
	if err != nil || s.Status != StatusSucceeded || !s.Terminal() || s.Error != "" || s.PurgeAt == nil {
		t.Fatalf("Wait: %v, %+v", err, s)
	}
	if s.TraceID == "" || len(s.Actions) == 0 || s.Step("second") == nil || s.Step("second").Status != "succeeded" ||
		fmt.Sprint(s.Step("second").DependsOn) != "[first]" {
		t.Errorf("single-saga fields: %+v", s)
	}
	calls := p.callsOf("order-1")
	if len(calls) != 2 || calls[0].path != "/ok" || calls[0].phase != "action" ||
		!jsonEqual(calls[0].body, `{"order":"order-1","qty":2}`) {
		t.Errorf("participant calls: %+v", calls)
	}

	// Start with Wait: answered once it ended, with its error.
	s, created, err = c.Start(ctx, twoSteps(p, "order-2", "place_order", "/refuse"), StartOptions{Wait: 10 * time.Second})
	if err != nil || !created || s.Status != StatusCompensated || !strings.Contains(s.Error, "second: 409") ||
		s.Step("second").Status != "failed" || s.Step("first").Status != "compensated" {
		t.Fatalf("start with Wait: %v, %+v", err, s)
	}
	// Without an id the service makes one.
	s, _, err = c.Start(ctx, StartRequest{Name: "place_order", Steps: []Step{{Name: "a", Action: p.at("/ok")}}}, StartOptions{Wait: 10 * time.Second})
	if err != nil || len(s.ID) < 32 || s.Status != StatusSucceeded {
		t.Fatalf("start without an id: %v, %+v", err, s)
	}

	full, err := c.Get(ctx, "order-2", GetOptions{Attempts: true, Request: true})
	if err != nil {
		t.Fatal(err)
	}
	h := full.Step("second").History
	if len(h) != 1 || h[0].Phase != "action" || h[0].HTTPStatus != 409 || h[0].Outcome != "failure" || h[0].FinishedAt == nil {
		t.Errorf("history: %+v", h)
	}
	var asked struct{ ID string }
	if err := json.Unmarshal(full.Request, &asked); err != nil || asked.ID != "order-2" {
		t.Errorf("request: %s, %v", full.Request, err)
	}
	if !strings.Contains(string(full.Raw), `"history"`) {
		t.Errorf("Raw lacks the history: %s", full.Raw)
	}
}

func jsonEqual(got json.RawMessage, want string) bool {
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestServiceListPages(t *testing.T) {
	c := newClient(t, startService(t, ""))
	p := newParticipant(t)
	ctx := timeout(t)
	for i := 1; i <= 3; i++ {
		if _, _, err := c.Start(ctx, twoSteps(p, fmt.Sprintf("l-%d", i), "listed", "/ok"), StartOptions{Wait: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // distinct creation times: a stable newest-first order
	}
	if _, _, err := c.Start(ctx, twoSteps(p, "other", "other_kind", "/ok"), StartOptions{}); err != nil {
		t.Fatal(err)
	}
	page, err := c.List(ctx, ListOptions{Name: "listed", Limit: 1})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != "l-3" || page.NextCursor == "" {
		t.Fatalf("first page: %v, %+v", err, page)
	}
	next, err := c.List(ctx, ListOptions{Name: "listed", Limit: 1, Cursor: page.NextCursor})
	if err != nil || len(next.Items) != 1 || next.Items[0].ID != "l-2" || next.NextCursor == "" {
		t.Fatalf("second page: %v, %+v", err, next)
	}
	var ids []string
	it := c.Sagas(ListOptions{Name: "listed", Limit: 2, Status: []string{StatusSucceeded, StatusCompensated}})
	for it.Next(ctx) {
		ids = append(ids, it.Saga().ID)
	}
	if it.Err() != nil || strings.Join(ids, ",") != "l-3,l-2,l-1" || it.Cursor() != "" {
		t.Errorf("walk: %v, %v", ids, it.Err())
	}
	page, err = c.List(ctx, ListOptions{Status: []string{StatusStuck}})
	if err != nil || len(page.Items) != 0 || page.NextCursor != "" {
		t.Errorf("no stuck saga: %v, %+v", err, page)
	}
	// A bad filter is a 400 naming the parameter; an iterator stops with it.
	it = c.Sagas(ListOptions{Status: []string{"nonsense"}})
	var p2 *Problem
	if it.Next(ctx) || !errors.As(it.Err(), &p2) || len(p2.Errors) != 1 || p2.Errors[0].Parameter != "status" {
		t.Errorf("bad status: %v", it.Err())
	}
}

func TestServiceProblems(t *testing.T) {
	c := newClient(t, startService(t, ""))
	ctx := timeout(t)
	_, _, err := c.Start(ctx, StartRequest{Name: "bad name!", Steps: []Step{{Name: "a", Action: &Endpoint{URL: "not-a-url"}}}}, StartOptions{})
	var p *Problem
	if !errors.As(err, &p) || p.Status != 400 || p.Type != TypeInvalidRequest || !IsInvalid(err) ||
		p.Field("/steps/0/action/url") == nil || p.Field("/name") == nil {
		t.Fatalf("invalid start: %#v", err)
	}
	if !strings.Contains(err.Error(), `"/steps/0/action/url": must be an absolute http or https URL`) {
		t.Errorf("message: %v", err)
	}
	_, err = c.Get(ctx, "no-such-saga", GetOptions{})
	if !IsNotFound(err) || !errors.As(err, &p) || p.Type != TypeNotFound || !strings.Contains(p.Detail, "no-such-saga") {
		t.Errorf("unknown saga: %#v", err)
	}
	if _, err := c.Retry(ctx, "no-such-saga", ""); !IsNotFound(err) {
		t.Errorf("retry of an unknown saga: %v", err)
	}
	if _, err := c.GetDefinition(ctx, "nothing"); !IsNotFound(err) {
		t.Errorf("unknown definition: %v", err)
	}
}

func TestServiceRetryAndAbort(t *testing.T) {
	c := newClient(t, startService(t, ""), WithWaitPoll(time.Second))
	p := newParticipant(t)
	ctx := timeout(t)

	// The second step refuses and the first one's compensation is refused: stuck.
	p.refuseUndo.Store(true)
	s, _, err := c.Start(ctx, twoSteps(p, "stuck-1", "ops", "/refuse"), StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err = c.Wait(ctx, s.ID)
	if err != nil || s.Status != StatusStuck || !s.Settled() || s.Terminal() {
		t.Fatalf("Wait: %v, %+v", err, s)
	}
	if _, err := c.Abort(ctx, s.ID, ""); !IsConflict(err) {
		t.Errorf("abort of a stuck saga: %v, want a 409", err)
	}
	p.refuseUndo.Store(false)
	s, err = c.Retry(ctx, s.ID, "the refund was fixed")
	if err != nil || s.Status == StatusStuck {
		t.Fatalf("Retry: %v, %+v", err, s)
	}
	s, err = c.Wait(ctx, s.ID)
	if err != nil || s.Status != StatusCompensated {
		t.Fatalf("after Retry: %v, %+v", err, s)
	}
	s, err = c.Get(ctx, s.ID, GetOptions{Attempts: true})
	if err != nil || len(s.OperatorActions) != 1 || s.OperatorActions[0].Action != "retry" || s.OperatorActions[0].Reason != "the refund was fixed" {
		t.Errorf("operator actions: %v, %+v", err, s)
	}
	if _, err := c.Retry(ctx, s.ID, ""); !IsConflict(err) {
		t.Errorf("retry of an ended saga: %v, want a 409", err)
	}

	// The second step's outcome is unknown and its retry a minute away: abort it.
	slow := twoSteps(p, "abort-1", "ops", "/unknown")
	slow.Steps[1].Retry = &Retry{MaxAttempts: 5, InitialBackoffMs: 60000, MaxBackoffMs: 60000}
	if _, _, err := c.Start(ctx, slow, StartOptions{}); err != nil {
		t.Fatal(err)
	}
	for s == nil || s.Step("second") == nil || s.Step("second").Status != "retry_scheduled" {
		if s, err = c.Get(ctx, "abort-1", GetOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err = c.Abort(ctx, "abort-1", "")
	if err != nil || (s.Status != StatusCompensating && s.Status != StatusCompensated) {
		t.Fatalf("Abort: %v, %+v", err, s)
	}
	if s, err = c.Wait(ctx, "abort-1"); err != nil || s.Status != StatusCompensated {
		t.Fatalf("after Abort: %v, %+v", err, s)
	}
}

// place is a definition of two steps on p whose bodies and a header take payload values.
func place(p *participant, description string) Document {
	return Document{Description: description, TimeoutMs: 60000, Steps: []Step{
		{Name: "create_order",
			Action: &Endpoint{URL: p.URL + "/ok", HeaderRefs: map[string]string{"X-Tenant": "/tenant"},
				Body: map[string]any{"id": PayloadRef("/order_id"), "what": description}},
			Compensation: p.at("/undo")},
		{Name: "deduct_stock",
			Action: &Endpoint{URL: p.URL + "/ok", Body: map[string]any{"sku": PayloadRef("/sku"), "qty": PayloadRef("/qty"),
				"$$literal": true}},
			Compensation: &Endpoint{URL: p.URL + "/undo", Body: map[string]any{"sku": PayloadRef("/sku")}}},
	}}
}

func TestServiceDefinitions(t *testing.T) {
	c := newClient(t, startService(t, ""))
	p := newParticipant(t)
	ctx := timeout(t)

	d, created, err := c.PutDefinition(ctx, "place_order", place(p, "v1"))
	if err != nil || !created || d.Name != "place_order" || d.Version != 1 || d.Description != "v1" || d.CreatedBy == "" || d.Retired != nil {
		t.Fatalf("first put: %v, created %v, %+v", err, created, d)
	}
	d, created, err = c.PutDefinition(ctx, "place_order", place(p, "v1"))
	if err != nil || created || d.Version != 1 {
		t.Fatalf("identical put: %v, created %v, %+v", err, created, d)
	}
	d, created, err = c.PutDefinition(ctx, "place_order", place(p, "v2"))
	if err != nil || !created || d.Version != 2 || !strings.Contains(string(d.Document), `"$payload":"/sku"`) {
		t.Fatalf("changed put: %v, created %v, %+v", err, created, d)
	}
	_, _, err = c.PutDefinition(ctx, "place_order", map[string]any{"id": "x", "steps": []any{}})
	var pr *Problem
	if !errors.As(err, &pr) || pr.Field("/id") == nil || pr.Field("/steps") == nil {
		t.Errorf("invalid definition: %#v", err)
	}

	got, err := c.GetDefinition(ctx, "place_order")
	if err != nil || got.Version != 2 || len(got.Versions) != 2 || got.Versions[0].Version != 2 || got.Versions[1].Version != 1 {
		t.Fatalf("GetDefinition: %v, %+v", err, got)
	}
	v1, err := c.GetDefinitionVersion(ctx, "place_order", 1)
	if err != nil || v1.Version != 1 || v1.Description != "v1" {
		t.Fatalf("GetDefinitionVersion: %v, %+v", err, v1)
	}
	if _, err := c.GetDefinitionVersion(ctx, "place_order", 9); !IsNotFound(err) {
		t.Errorf("unknown version: %v", err)
	}
	all, err := c.ListDefinitions(ctx)
	if err != nil || len(all) != 1 || all[0].Name != "place_order" || all[0].LatestVersion != 2 || all[0].LiveVersion != 2 ||
		strings.Join(all[0].Steps, ",") != "create_order,deduct_stock" || all[0].Mode != ModeSaga {
		t.Fatalf("ListDefinitions: %v, %+v", err, all)
	}

	payload := map[string]any{"order_id": 1042, "tenant": "acme", "sku": "A1", "qty": 2}
	// The newest version.
	latest := StartRequest{Definition: "place_order", ID: "def-1", Payload: payload}
	s, created, err := c.Start(ctx, latest, StartOptions{Wait: 10 * time.Second})
	if err != nil || !created || s.Status != StatusSucceeded || s.Name != "place_order" ||
		s.Definition == nil || *s.Definition != (DefinitionRef{"place_order", 2}) {
		t.Fatalf("start by definition: %v, %+v", err, s)
	}
	calls := p.callsOf("def-1")
	if len(calls) != 2 || calls[0].header.Get("X-Tenant") != "acme" ||
		!jsonEqual(calls[0].body, `{"id":1042,"what":"v2"}`) || !jsonEqual(calls[1].body, `{"sku":"A1","qty":2,"$literal":true}`) {
		t.Errorf("the participant saw: %+v", calls)
	}
	if s, created, err = c.Start(ctx, latest, StartOptions{}); err != nil || created || s.ID != "def-1" {
		t.Errorf("repeated start by definition: %v, created %v", err, created)
	}
	// A pinned version.
	s, _, err = c.Start(ctx, StartRequest{Definition: "place_order", Version: 1, ID: "def-2", Payload: payload}, StartOptions{Wait: 10 * time.Second})
	if err != nil || s.Status != StatusSucceeded || s.Definition == nil || s.Definition.Version != 1 {
		t.Fatalf("pinned start: %v, %+v", err, s)
	}
	if calls := p.callsOf("def-2"); len(calls) == 0 || !jsonEqual(calls[0].body, `{"id":1042,"what":"v1"}`) {
		t.Errorf("pinned: the participant saw %+v", calls)
	}
	// A value the definition needs is missing from the payload; an unknown definition.
	_, _, err = c.Start(ctx, StartRequest{Definition: "place_order", Payload: map[string]any{"sku": "A1", "qty": 1, "order_id": 1}}, StartOptions{})
	if !errors.As(err, &pr) || pr.Status != 400 || pr.Field("/payload/tenant") == nil {
		t.Errorf("missing payload value: %#v", err)
	}
	_, _, err = c.Start(ctx, StartRequest{Definition: "no_such_thing"}, StartOptions{})
	if !errors.As(err, &pr) || pr.Field("/definition") == nil {
		t.Errorf("unknown definition: %#v", err)
	}

	// Retire version 1: a start of it is a 409; the saga started from it is untouched.
	r, err := c.RetireDefinition(ctx, "place_order", 1, "superseded by v2")
	if err != nil || r.Retired == nil || r.Retired.Reason != "superseded by v2" || r.Retired.At.IsZero() {
		t.Fatalf("retire: %v, %+v", err, r)
	}
	_, _, err = c.Start(ctx, StartRequest{Definition: "place_order", Version: 1, ID: "def-3", Payload: payload}, StartOptions{})
	if !IsConflict(err) || !IsDefinitionRetired(err) {
		t.Fatalf("start of a retired version: %v, want a 409 definition-retired", err)
	}
	if _, err := c.DryRun(ctx, StartRequest{Definition: "place_order", Version: 1, Payload: payload}); !IsDefinitionRetired(err) {
		t.Errorf("dry run of a retired version: %v", err)
	}
	if s, err = c.Get(ctx, "def-2", GetOptions{}); err != nil || s.Definition == nil || s.Definition.Version != 1 {
		t.Errorf("the saga of version 1: %v, %+v", err, s)
	}
	got, err = c.GetDefinition(ctx, "place_order")
	if err != nil || got.Versions[1].RetiredAt == nil || got.Versions[0].RetiredAt != nil {
		t.Errorf("versions after the retirement: %v, %+v", err, got)
	}
	if s, _, err = c.Start(ctx, StartRequest{Definition: "place_order", ID: "def-4", Payload: payload}, StartOptions{}); err != nil || s.Definition.Version != 2 {
		t.Errorf("start of the newest after the retirement: %v, %+v", err, s)
	}
}

func TestServiceDryRun(t *testing.T) {
	c := newClient(t, startService(t, ""))
	p := newParticipant(t)
	ctx := timeout(t)

	ready := twoSteps(p, "dry-1", "dry", "/ok")
	d, err := c.DryRun(ctx, ready)
	if err != nil || !d.DryRun || !d.Ready || d.Name != "dry" || d.Definition != nil || len(d.Endpoints) != 4 ||
		!d.Endpoints[0].Connects || !d.Endpoints[0].Allowed || len(d.Plan.Levels) != 2 || len(d.Plan.Steps) != 2 ||
		d.Plan.Steps[1].Phases[0].Attempts != 2 {
		t.Fatalf("dry run: %v, %+v", err, d)
	}
	if _, err := c.Get(ctx, "dry-1", GetOptions{}); !IsNotFound(err) {
		t.Errorf("a dry run recorded the saga: %v", err)
	}
	if len(p.callsOf("dry-1")) != 0 {
		t.Error("a dry run called the participant")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/x"
	ln.Close()
	d, err = c.DryRun(ctx, StartRequest{Name: "dry", Steps: []Step{{Name: "a", Action: &Endpoint{URL: closed}}}})
	if err != nil || d.Ready || len(d.Endpoints) != 1 || d.Endpoints[0].Connects || !d.Endpoints[0].Resolves || d.Endpoints[0].Error == "" ||
		len(d.Plan.Warnings) == 0 {
		t.Fatalf("dry run of a closed port: %v, %+v", err, d)
	}

	if _, _, err := c.PutDefinition(ctx, "dry_def", place(p, "d")); err != nil {
		t.Fatal(err)
	}
	d, err = c.DryRun(ctx, StartRequest{Definition: "dry_def", Payload: map[string]any{"order_id": 1, "tenant": "t", "sku": "A", "qty": 1}})
	if err != nil || !d.Ready || d.Definition == nil || d.Definition.Version != 1 {
		t.Errorf("dry run by definition: %v, %+v", err, d)
	}
	if _, err := c.DryRun(ctx, StartRequest{Name: "dry"}); !IsInvalid(err) {
		t.Errorf("dry run of an invalid start: %v", err)
	}
}

func TestServiceTokens(t *testing.T) {
	token := func() (string, string) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		tok := "sgo_" + hex.EncodeToString(b)
		sum := sha256.Sum256([]byte(tok))
		return tok, hex.EncodeToString(sum[:])
	}
	admin, adminHash := token()
	reader, readerHash := token()
	base := startService(t, fmt.Sprintf(`[[auth.tokens]]
name = "deployer"
sha256 = %q
scopes = ["read", "write", "admin"]

[[auth.tokens]]
name = "dashboard"
sha256 = %q
scopes = ["read"]
`, adminHash, readerHash))
	p := newParticipant(t)
	ctx := timeout(t)

	var pr *Problem
	_, err := newClient(t, base).List(ctx, ListOptions{})
	if !IsUnauthorized(err) || !errors.As(err, &pr) || pr.Type != TypeUnauthorized {
		t.Fatalf("without a token: %#v", err)
	}
	if _, err := newClient(t, base, WithToken("sgo_wrong")).ListDefinitions(ctx); !IsUnauthorized(err) {
		t.Errorf("an unknown token: %v", err)
	}
	ro := newClient(t, base, WithToken(reader))
	if _, err := ro.List(ctx, ListOptions{}); err != nil {
		t.Fatalf("a read token lists: %v", err)
	}
	req := twoSteps(p, "tok-1", "secured", "/ok")
	if _, _, err := ro.Start(ctx, req, StartOptions{}); !IsForbidden(err) || !errors.As(err, &pr) || pr.Type != TypeForbidden {
		t.Errorf("a read token starts: %v, want a 403", err)
	}
	if _, _, err := ro.PutDefinition(ctx, "secured", place(p, "x")); !IsForbidden(err) {
		t.Errorf("a read token puts a definition: %v, want a 403", err)
	}
	rw := newClient(t, base, WithToken(admin))
	if _, _, err := rw.PutDefinition(ctx, "secured", place(p, "x")); err != nil {
		t.Fatalf("an admin token puts a definition: %v", err)
	}
	s, created, err := rw.Start(ctx, req, StartOptions{Wait: 10 * time.Second})
	if err != nil || !created || s.Status != StatusSucceeded {
		t.Fatalf("an admin token starts: %v, %+v", err, s)
	}
	if s, err = ro.Get(ctx, "tok-1", GetOptions{}); err != nil || s.ID != "tok-1" {
		t.Errorf("a read token reads: %v", err)
	}
	d, err := rw.GetDefinition(ctx, "secured")
	if err != nil || d.CreatedBy != "deployer" {
		t.Errorf("created_by is the token's name: %v, %+v", err, d)
	}
}
