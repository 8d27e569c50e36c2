package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Saga modes.
const (
	ModeSaga = "saga" // action and compensation per step (the default)
	ModeTCC  = "tcc"  // try, confirm and cancel per step
)

// Saga statuses (Saga.Status).
const (
	StatusRunning      = "running"
	StatusCompensating = "compensating"
	StatusConfirming   = "confirming"
	StatusSucceeded    = "succeeded"   // terminal
	StatusCompensated  = "compensated" // terminal
	StatusStuck        = "stuck"       // waits for an operator (Client.Retry)
	StatusPrepared     = "prepared"    // a TCC transaction of DTM's protocol not yet submitted
)

// StartRequest is the body of POST /v1/sagas, in one of two forms:
//
//   - by definition: Definition names a stored definition (see Client.PutDefinition), Version
//     pins one of its versions (0: the newest that is not retired). Only "definition",
//     "version", "id" and "payload" are sent, and the full-start fields must stay empty.
//   - in full: Name and Steps (and optionally Mode, TimeoutMs, RetentionMs).
//
// ID and Payload belong to both. Setting fields of both forms is an error of Start and DryRun,
// before anything is sent.
type StartRequest struct {
	// ID is the saga's id, 1–128 of [A-Za-z0-9._:-]; "" lets the service make one (a UUID v7).
	// With an ID a start is idempotent: the same id and request answer the same saga, so
	// Start may send it again after a transport error.
	ID string
	// Payload is any JSON value (nil: none, the service's {}), the default body of every call.
	// A json.RawMessage is sent as it is.
	Payload any

	// Definition is the name of the stored definition to start (the by-definition form).
	Definition string
	// Version pins the definition's version (0: the newest version that is not retired).
	Version int

	// Name is the kind of saga, 1–64 of [A-Za-z0-9_.-] (the full form; required there).
	Name string
	// Mode is ModeSaga ("" means the same) or ModeTCC.
	Mode string
	// TimeoutMs is the deadline of the forward phase from the start, in ms (0: none).
	TimeoutMs int64
	// RetentionMs, when not nil, is how long the ended saga stays in the log (0: forever,
	// else 1000 or more).
	RetentionMs *int64
	// Steps are the saga's steps, 1–64 with distinct names.
	Steps []Step
}

// byDefinition reports which form r is, or why it is neither or both.
func (r StartRequest) byDefinition() (bool, error) {
	full := r.Name != "" || r.Mode != "" || r.TimeoutMs != 0 || r.RetentionMs != nil || len(r.Steps) > 0
	switch {
	case r.Definition != "" && full:
		return false, errors.New("client: a StartRequest with Definition takes no Name, Mode, TimeoutMs, RetentionMs or Steps (the definition holds them)")
	case r.Definition == "" && r.Version != 0:
		return false, errors.New("client: StartRequest.Version needs Definition")
	case r.Version < 0:
		return false, fmt.Errorf("client: StartRequest.Version %d: must be 1 or more (0: the newest)", r.Version)
	}
	return r.Definition != "", nil
}

// MarshalJSON encodes the request in its form: {"definition", "version"?, "id"?, "payload"?}
// or the full start.
func (r StartRequest) MarshalJSON() ([]byte, error) {
	byDef, err := r.byDefinition()
	if err != nil {
		return nil, err
	}
	if byDef {
		return json.Marshal(struct {
			Definition string `json:"definition"`
			Version    int    `json:"version,omitempty"`
			ID         string `json:"id,omitempty"`
			Payload    any    `json:"payload,omitempty"`
		}{r.Definition, r.Version, r.ID, r.Payload})
	}
	return json.Marshal(struct {
		ID          string `json:"id,omitempty"`
		Name        string `json:"name"`
		Mode        string `json:"mode,omitempty"`
		Payload     any    `json:"payload,omitempty"`
		TimeoutMs   int64  `json:"timeout_ms,omitempty"`
		RetentionMs *int64 `json:"retention_ms,omitempty"`
		Steps       []Step `json:"steps"`
	}{r.ID, r.Name, r.Mode, r.Payload, r.TimeoutMs, r.RetentionMs, r.Steps})
}

// Document is a definition's document (the body of PUT /v1/definitions/{name}): a full start
// without id and payload. Its endpoints' bodies may hold PayloadRef values and their
// HeaderRefs, replaced at each start by the start's payload values. Client.PutDefinition takes
// a Document or any other value that encodes to such a JSON object.
type Document struct {
	// Name must be the definition's name, or "" (it is taken from the path).
	Name string `json:"name,omitempty"`
	// Description is for people (at most 1000 characters).
	Description string `json:"description,omitempty"`
	// Mode is ModeSaga ("" means the same) or ModeTCC.
	Mode string `json:"mode,omitempty"`
	// TimeoutMs is the deadline of the forward phase, in ms from each start (0: none).
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// RetentionMs, when not nil, is how long an ended saga stays in the log (0: forever).
	RetentionMs *int64 `json:"retention_ms,omitempty"`
	// Steps are the saga's steps.
	Steps []Step `json:"steps"`
}

// Step is one step of a saga or a definition. A saga-mode step has Action and, optionally,
// Compensation; a TCC step has Try, Confirm and Cancel.
type Step struct {
	// Name is unique in the saga, 1–64 of [A-Za-z0-9_.-].
	Name string
	// Action is the forward call (saga mode).
	Action *Endpoint
	// Compensation undoes the action (saga mode); nil: nothing to undo.
	Compensation *Endpoint
	// Try is the TCC try call.
	Try *Endpoint
	// Confirm is the TCC confirm call.
	Confirm *Endpoint
	// Cancel is the TCC cancel call.
	Cancel *Endpoint
	// DependsOn names the steps that must succeed first. nil: the previous step (the field is
	// not sent); an empty, non-nil slice: none, the step starts at once (sent as []).
	DependsOn []string
	// TimeoutMs is the timeout of one call in ms (0: participant.call_timeout_ms).
	TimeoutMs int64
	// Retry is the step's retry policy (nil: the [participant] defaults).
	Retry *Retry
}

// MarshalJSON encodes the step, with "depends_on" only when DependsOn is not nil.
func (s Step) MarshalJSON() ([]byte, error) {
	type wire struct {
		Name         string    `json:"name"`
		Action       *Endpoint `json:"action,omitempty"`
		Compensation *Endpoint `json:"compensation,omitempty"`
		Try          *Endpoint `json:"try,omitempty"`
		Confirm      *Endpoint `json:"confirm,omitempty"`
		Cancel       *Endpoint `json:"cancel,omitempty"`
		DependsOn    *[]string `json:"depends_on,omitempty"`
		TimeoutMs    int64     `json:"timeout_ms,omitempty"`
		Retry        *Retry    `json:"retry,omitempty"`
	}
	w := wire{s.Name, s.Action, s.Compensation, s.Try, s.Confirm, s.Cancel, nil, s.TimeoutMs, s.Retry}
	if s.DependsOn != nil {
		w.DependsOn = &s.DependsOn
	}
	return json.Marshal(w)
}

// Endpoint is a participant call: {"url", "method"?, "headers"?, "body"?, "delay_ms"?,
// "service"?}.
type Endpoint struct {
	// URL is absolute http(s), allowed by the service's outbound policy.
	URL string
	// Method is GET, POST ("" means POST), PUT, PATCH or DELETE.
	Method string
	// Headers are extra headers of the call.
	Headers map[string]string
	// HeaderRefs (definitions only) are headers whose value is taken from each start's
	// payload at a JSON Pointer (header name → pointer, e.g. "X-Tenant": "/tenant"). Sent
	// among "headers" as {"$payload": pointer}; a name in both maps is an error.
	HeaderRefs map[string]string
	// Body is the call's JSON body (nil: the saga's payload). In a definition it may hold
	// PayloadRef values anywhere; a json.RawMessage is sent as it is.
	Body any
	// DelayMs (compensation and cancel only) makes the call wait that long, durably.
	DelayMs int64
	// Service labels the endpoint in metrics and logs ("": host:port).
	Service string
}

// MarshalJSON encodes the endpoint, HeaderRefs as {"$payload": pointer} header values.
func (e Endpoint) MarshalJSON() ([]byte, error) {
	var headers map[string]any
	if len(e.Headers)+len(e.HeaderRefs) > 0 {
		headers = make(map[string]any, len(e.Headers)+len(e.HeaderRefs))
		for k, v := range e.Headers {
			headers[k] = v
		}
		names := make([]string, 0, len(e.HeaderRefs))
		for k := range e.HeaderRefs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if _, dup := headers[k]; dup {
				return nil, fmt.Errorf("client: header %q is in both Headers and HeaderRefs", k)
			}
			headers[k] = PayloadRef(e.HeaderRefs[k])
		}
	}
	return json.Marshal(struct {
		URL     string         `json:"url"`
		Method  string         `json:"method,omitempty"`
		Headers map[string]any `json:"headers,omitempty"`
		Body    any            `json:"body,omitempty"`
		DelayMs int64          `json:"delay_ms,omitempty"`
		Service string         `json:"service,omitempty"`
	}{e.URL, e.Method, headers, e.Body, e.DelayMs, e.Service})
}

// PayloadRef is a payload reference of a definition: the JSON Pointer of a value in each
// start's payload ("" the whole payload, "/order/id" a member), encoded as {"$payload":
// pointer} and replaced by that value when a saga starts. Use it inside Endpoint.Body of a
// definition's steps:
//
//	Body: map[string]any{"sku": client.PayloadRef("/sku"), "qty": client.PayloadRef("/qty")}
type PayloadRef string

// MarshalJSON encodes the reference as {"$payload": pointer}.
func (r PayloadRef) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"$payload": string(r)})
}

// Retry is a step's retry policy; a zero field takes the service's [participant] default.
type Retry struct {
	// MaxAttempts is the number of calls per phase, the first included (1–1000).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// InitialBackoffMs is the wait before the second call, in ms.
	InitialBackoffMs int64 `json:"initial_backoff_ms,omitempty"`
	// MaxBackoffMs is the longest wait between calls, in ms.
	MaxBackoffMs int64 `json:"max_backoff_ms,omitempty"`
	// Multiplier is the growth of the wait (1–100).
	Multiplier float64 `json:"multiplier,omitempty"`
}

// Saga is the saga resource (docs/api.md "The saga resource"). Fields the service leaves out
// of an answer (listings leave out TraceID, Definition, Actions and each step's DependsOn)
// are zero; fields this client does not know are kept in Raw.
type Saga struct {
	// ID is the saga's id.
	ID string `json:"id"`
	// Name is the kind of saga.
	Name string `json:"name"`
	// Mode is ModeSaga or ModeTCC.
	Mode string `json:"mode"`
	// Status is one of the Status constants.
	Status string `json:"status"`
	// CreatedAt is when it was accepted.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is its last change.
	UpdatedAt time.Time `json:"updated_at"`
	// DeadlineAt is the deadline of the forward phase (nil: none).
	DeadlineAt *time.Time `json:"deadline_at"`
	// Error says why it compensates or is stuck ("" when nothing went wrong).
	Error string `json:"error"`
	// PurgeAt is when retention purges it (nil while it runs, or when it is kept forever).
	PurgeAt *time.Time `json:"purge_at"`
	// PausedAt is when an operator paused it (nil: not paused).
	PausedAt *time.Time `json:"paused_at"`
	// Kept says an operator pinned it against retention.
	Kept bool `json:"kept"`
	// TraceID is the W3C trace of its participant calls (32 hex digits).
	TraceID string `json:"trace_id"`
	// TraceURL is that trace in the tracing UI, when the service has tracing.trace_url.
	TraceURL string `json:"trace_url"`
	// Definition is the stored definition and version it was started from (nil: a full
	// start).
	Definition *DefinitionRef `json:"definition"`
	// WaitingOn says what a call it decided waits for ("breaker open: …", "service paused: …").
	WaitingOn string `json:"waiting_on"`
	// Steps are its steps, in definition order.
	Steps []SagaStep `json:"steps"`
	// OperatorActions are the operator actions taken on it (GetOptions.Attempts).
	OperatorActions []OperatorAction `json:"operator_actions"`
	// Actions says of each operator action whether its state allows it now.
	Actions []AvailableAction `json:"actions"`
	// Request is the request as accepted, secret header values "***" (GetOptions.Request).
	Request json.RawMessage `json:"request"`
	// Raw is the saga's JSON document as the service sent it (not set for the items of a
	// Page).
	Raw json.RawMessage `json:"-"`
}

// Terminal reports whether the saga has ended: succeeded or compensated. Nothing changes it
// any more.
func (s *Saga) Terminal() bool {
	return s.Status == StatusSucceeded || s.Status == StatusCompensated
}

// Settled reports whether the saga waits for nobody but a person: it has ended (Terminal) or
// is stuck (a compensation, confirm or cancel used up its retries or was refused; only an
// operator's Client.Retry, or a skip, moves it on). Client.Wait returns a settled saga.
func (s *Saga) Settled() bool {
	return s.Terminal() || s.Status == StatusStuck
}

// Step returns the step named name, or nil.
func (s *Saga) Step(name string) *SagaStep {
	for i := range s.Steps {
		if s.Steps[i].Name == name {
			return &s.Steps[i]
		}
	}
	return nil
}

// SagaStep is one step of a saga resource.
type SagaStep struct {
	// Name is the step's name.
	Name string `json:"name"`
	// Status is pending, running, retry_scheduled, succeeded, failed, compensation_scheduled,
	// compensating, compensated or skipped; tcc: tried, confirming, confirmed, cancelling,
	// cancelled.
	Status string `json:"status"`
	// Attempts counts the calls of the forward phase so far.
	Attempts int `json:"attempts"`
	// CompensationAttempts counts the calls of the compensation (or cancel) so far.
	CompensationAttempts int `json:"compensation_attempts"`
	// ConfirmAttempts counts the confirm calls (tcc only; nil otherwise).
	ConfirmAttempts *int `json:"confirm_attempts"`
	// LastError is the last error ("" for none).
	LastError string `json:"last_error"`
	// NextAttemptAt is when the next call is due (nil: none is).
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	// UpdatedAt is its last change.
	UpdatedAt time.Time `json:"updated_at"`
	// Phase is the current phase (action, compensation, try, confirm, cancel).
	Phase string `json:"phase"`
	// Service is the service label of the current phase's endpoint.
	Service string `json:"service"`
	// Stuck says this step holds the saga stuck.
	Stuck bool `json:"stuck"`
	// DependsOn names the steps it waited for, as resolved at acceptance (single-saga reads).
	DependsOn []string `json:"depends_on"`
	// History is every call in order (GetOptions.Attempts).
	History []Call `json:"history"`
}

// Call is one call of a step (GetOptions.Attempts).
type Call struct {
	// Phase is action, compensation, try, confirm or cancel.
	Phase string `json:"phase"`
	// Attempt is the attempt number in the phase, from 1.
	Attempt int `json:"attempt"`
	// StartedAt is when it was sent.
	StartedAt time.Time `json:"started_at"`
	// FinishedAt is when its answer came (nil while in flight).
	FinishedAt *time.Time `json:"finished_at"`
	// HTTPStatus is the participant's status (0 when it did not answer).
	HTTPStatus int `json:"http_status"`
	// Outcome is success, failure, unknown or ongoing ("" while in flight).
	Outcome string `json:"outcome"`
	// Error says what went wrong ("" for nothing).
	Error string `json:"error"`
}

// OperatorAction is an operator action taken on a saga (GetOptions.Attempts).
type OperatorAction struct {
	// Action is retry, abort, pause, resume, wake, skip, edit, keep or unkeep.
	Action string `json:"action"`
	// By is the token's name, or the caller's address on a service without tokens.
	By string `json:"by"`
	// At is when.
	At time.Time `json:"at"`
	// Reason is why, as the operator said ("" for none).
	Reason string `json:"reason"`
	// Step is the step it named (skip, edit).
	Step string `json:"step"`
	// Old is an edit's endpoints before it.
	Old json.RawMessage `json:"old"`
	// New is an edit's endpoints after it.
	New json.RawMessage `json:"new"`
}

// AvailableAction says whether the saga's state allows an operator action now.
type AvailableAction struct {
	// Action is retry, abort, pause, resume, wake, keep, unkeep, skip or edit.
	Action string `json:"action"`
	// Step is the step it names (skip, edit).
	Step string `json:"step"`
	// Allowed says the state allows it (the token's scopes aside).
	Allowed bool `json:"allowed"`
	// Scope is the token scope it needs.
	Scope string `json:"scope"`
	// Reason says why not, when not allowed.
	Reason string `json:"reason"`
}

// DefinitionRef names a stored definition's version.
type DefinitionRef struct {
	// Name is the definition's name.
	Name string `json:"name"`
	// Version is its version, from 1.
	Version int `json:"version"`
}

// Page is one page of a saga listing, newest first.
type Page struct {
	// Items are the sagas of the page (without TraceID, Definition, Actions, steps'
	// DependsOn, and Raw).
	Items []Saga `json:"items"`
	// NextCursor is the cursor of the next page ("" on the last page).
	NextCursor string `json:"next_cursor"`
}

// Definition is one version of a stored definition.
type Definition struct {
	// Name is the definition's name.
	Name string `json:"name"`
	// Version is this version, from 1.
	Version int `json:"version"`
	// Description is the document's description ("" for none).
	Description string `json:"description"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy is who stored it: a token's name, the caller's address on a service without
	// tokens, or "file:NAME.toml" for a file of definitions.dir.
	CreatedBy string `json:"created_by"`
	// Retired is set once the version takes no more starts.
	Retired *Retirement `json:"retired"`
	// Document is the document as given (with "name" set).
	Document json.RawMessage `json:"definition"`
	// Versions lists every version, newest first (GetDefinition only).
	Versions []DefinitionVersion `json:"versions"`
}

// Retirement says when, by whom and why a definition version was retired.
type Retirement struct {
	// At is when.
	At time.Time `json:"at"`
	// By is who.
	By string `json:"by"`
	// Reason is why ("" for none given).
	Reason string `json:"reason"`
}

// DefinitionVersion is one entry of Definition.Versions.
type DefinitionVersion struct {
	// Version is the version.
	Version int `json:"version"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"created_at"`
	// CreatedBy is who stored it.
	CreatedBy string `json:"created_by"`
	// RetiredAt is when it was retired (nil: it takes starts).
	RetiredAt *time.Time `json:"retired_at"`
}

// DefinitionSummary is a definition in the list of all (Client.ListDefinitions).
type DefinitionSummary struct {
	// Name is its name.
	Name string `json:"name"`
	// LatestVersion is its newest version.
	LatestVersion int `json:"latest_version"`
	// LiveVersion is the version a start without one runs (the newest not retired); 0 when
	// every version is retired.
	LiveVersion int `json:"live_version"`
	// Description is the newest version's description.
	Description string `json:"description"`
	// UpdatedAt is when the newest version was stored.
	UpdatedAt time.Time `json:"updated_at"`
	// Mode is the newest version's mode.
	Mode string `json:"mode"`
	// Steps are the newest version's step names.
	Steps []string `json:"steps"`
}

// DryRun is the answer of a dry run (Client.DryRun): the plan of the saga a start would
// start, and whether its endpoints can be reached. Nothing was recorded or called.
type DryRun struct {
	// DryRun is always true.
	DryRun bool `json:"dry_run"`
	// Ready says every endpoint resolved and accepted a TCP connection.
	Ready bool `json:"ready"`
	// Name is the saga's name.
	Name string `json:"name"`
	// Mode is the saga's mode.
	Mode string `json:"mode"`
	// Definition is the definition version a start by definition would run (nil for a full
	// start).
	Definition *DefinitionRef `json:"definition"`
	// Plan is the order of the steps, their retry schedules and the deadline.
	Plan Plan `json:"plan"`
	// Endpoints are the endpoints, in step and phase order, with what each answered.
	Endpoints []EndpointCheck `json:"endpoints"`
}

// Plan is a dry run's plan of a saga.
type Plan struct {
	// Levels is the forward order: each level's steps start together once the level before
	// succeeded.
	Levels [][]string `json:"levels"`
	// UndoLevels is the compensation (tcc: cancel) order, steps without an undo left out.
	UndoLevels [][]string `json:"undo_levels"`
	// Steps are each step's phases.
	Steps []StepPlan `json:"steps"`
	// DeadlineMs is the forward phase's deadline (nil: none).
	DeadlineMs *int64 `json:"deadline_ms"`
	// WorstCaseForwardMs is the slowest path through the levels, every call timing out and
	// every retry taken.
	WorstCaseForwardMs int64 `json:"worst_case_forward_ms"`
	// Warnings name what a person should look at.
	Warnings []string `json:"warnings"`
}

// StepPlan is one step of a Plan.
type StepPlan struct {
	// Name is the step's name.
	Name string `json:"name"`
	// DependsOn names the steps it waits for.
	DependsOn []string `json:"depends_on"`
	// TimeoutMs is the timeout of one call.
	TimeoutMs int64 `json:"timeout_ms"`
	// Phases are its phases, forward first.
	Phases []PhasePlan `json:"phases"`
}

// PhasePlan is one phase of a StepPlan.
type PhasePlan struct {
	// Phase is action, compensation, try, confirm or cancel.
	Phase string `json:"phase"`
	// Method is the call's method.
	Method string `json:"method"`
	// URL is the call's URL.
	URL string `json:"url"`
	// Service is the endpoint's service label.
	Service string `json:"service"`
	// DelayMs is the durable wait before its first call.
	DelayMs int64 `json:"delay_ms"`
	// Attempts is the number of calls it may make.
	Attempts int `json:"attempts"`
	// BackoffsMs are the waits between those calls, before jitter.
	BackoffsMs []int64 `json:"backoffs_ms"`
	// WorstCaseMs is the longest the phase takes before it gives up.
	WorstCaseMs int64 `json:"worst_case_ms"`
}

// EndpointCheck is what a dry run found of one endpoint.
type EndpointCheck struct {
	// Step is the step's name.
	Step string `json:"step"`
	// Phase is the endpoint's phase.
	Phase string `json:"phase"`
	// Method is its method.
	Method string `json:"method"`
	// URL is its URL.
	URL string `json:"url"`
	// Service is its service label.
	Service string `json:"service"`
	// Allowed says the outbound policy allows its URL.
	Allowed bool `json:"allowed"`
	// Resolves says its host resolved to addresses the policy allows.
	Resolves bool `json:"resolves"`
	// Addresses are those addresses.
	Addresses []string `json:"addresses"`
	// Connects says one of them accepted a TCP connection.
	Connects bool `json:"connects"`
	// Error says why it did not resolve or connect.
	Error string `json:"error"`
}
