//! The saga state machine: `(state, event) -> (state, commands)`, with every rule of the contract.
//!
//! Pure: time (`now_ms`) and randomness (`jitter`) arrive in [`Input`]; nothing is read from the
//! environment. The actor shell persists the new state *before* it executes the commands
//! (write-ahead), so a crash between the two is repaired by [`Event::Resume`].
//!
//! Shape of the rules:
//! - Event handlers only record what happened to one step.
//! - [`SagaState::advance`] then looks at the whole saga and starts every call that may start:
//!   ready forward steps, due retries, compensations whose dependents are all undone, confirms.
//!   Calling it again with nothing new is harmless, which is what makes timers and restarts simple.

use super::definition::{Mode, SagaDefinition};
use serde::{Deserialize, Serialize};

wire_enum! {
/// Status of a saga (docs/api.md, "The saga resource"). Serde and strum give it one set of
/// wire names.
pub enum SagaStatus {
    /// DTM's TCC and msg: waiting for its client, which registers branches (TCC) and then
    /// submits or aborts; past its deadline it is rolled back.
    Prepared,
    /// Forward phase in progress.
    Running,
    /// Undoing: compensations or cancels.
    Compensating,
    /// Tcc: confirms in progress.
    Confirming,
    /// Terminal: every action (or confirm) succeeded.
    Succeeded,
    /// Terminal: everything that may have taken effect was undone.
    Compensated,
    /// A call that must succeed ran out of retries; waits for an operator.
    Stuck,
}
}

impl SagaStatus {
    /// Every status, in declaration order.
    pub fn all() -> impl Iterator<Item = SagaStatus> {
        <SagaStatus as strum::IntoEnumIterator>::iter()
    }

    /// Succeeded and compensated are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Succeeded | SagaStatus::Compensated)
    }

    /// Running, compensating or confirming: the saga makes progress by itself.
    pub fn is_active(self) -> bool {
        ACTIVE_STATUSES.contains(&self)
    }

    /// The phase a saga in this status is in, as its trace shows it (docs/tracing.md): one
    /// span each; none while it waits for its client or an operator, or once it has ended.
    pub fn trace_phase(self, mode: Mode) -> Option<&'static str> {
        match (self, mode) {
            (SagaStatus::Running, Mode::Saga) => Some("forward"),
            (SagaStatus::Running, Mode::Tcc) => Some("try"),
            (SagaStatus::Compensating, Mode::Saga) => Some("compensation"),
            (SagaStatus::Compensating, Mode::Tcc) => Some("cancel"),
            (SagaStatus::Confirming, _) => Some("confirm"),
            _ => None,
        }
    }
}

wire_enum! {
/// Status of a step (docs/api.md, "The saga resource").
#[allow(missing_docs)]
pub enum StepStatus {
    Pending,
    Running,
    RetryScheduled,
    Succeeded,
    Failed,
    CompensationScheduled,
    Compensating,
    Compensated,
    Skipped,
    Tried,
    Confirming,
    Confirmed,
    Cancelling,
    Cancelled,
}
}

wire_enum! {
/// Which call of a step: saga action/compensation, tcc try/confirm/cancel.
#[allow(missing_docs)]
pub enum Phase {
    Action,
    Compensation,
    Try,
    Confirm,
    Cancel,
}
}

impl Phase {
    /// Action and try go forward; failing them starts the undo.
    pub fn is_forward(self) -> bool {
        matches!(self, Phase::Action | Phase::Try)
    }

    /// Compensation and cancel undo.
    pub fn is_undo(self) -> bool {
        matches!(self, Phase::Compensation | Phase::Cancel)
    }

    fn forward(mode: Mode) -> Phase {
        match mode {
            Mode::Saga => Phase::Action,
            Mode::Tcc => Phase::Try,
        }
    }

    /// The phase that undoes a step in `mode`.
    pub fn undo(mode: Mode) -> Phase {
        match mode {
            Mode::Saga => Phase::Compensation,
            Mode::Tcc => Phase::Cancel,
        }
    }

    /// Step status while a call of this phase is in flight.
    fn in_flight_status(self) -> StepStatus {
        match self {
            Phase::Action | Phase::Try => StepStatus::Running,
            Phase::Compensation => StepStatus::Compensating,
            Phase::Confirm => StepStatus::Confirming,
            Phase::Cancel => StepStatus::Cancelling,
        }
    }

    /// Step status while the next call of this phase waits for its time.
    fn scheduled_status(self) -> StepStatus {
        match self {
            Phase::Action | Phase::Try => StepStatus::RetryScheduled,
            Phase::Compensation => StepStatus::CompensationScheduled,
            Phase::Confirm => StepStatus::Confirming,
            Phase::Cancel => StepStatus::Cancelling,
        }
    }

    /// Step status once this phase succeeded.
    fn done_status(self) -> StepStatus {
        match self {
            Phase::Action => StepStatus::Succeeded,
            Phase::Try => StepStatus::Tried,
            Phase::Compensation => StepStatus::Compensated,
            Phase::Confirm => StepStatus::Confirmed,
            Phase::Cancel => StepStatus::Cancelled,
        }
    }
}

wire_enum! {
/// How a participant answered (docs/api.md, "What a participant receives and answers").
pub enum CallOutcome {
    /// Any 2xx (DTM: a 200 whose body does not say FAILURE or ONGOING).
    Success,
    /// 409 or 422: "no, and I did nothing" (DTM: 409 or a body saying FAILURE).
    Failure,
    /// Anything else: the call may or may not have taken effect.
    Unknown,
    /// DTM only (425, or a body saying ONGOING): not done yet; asked again later, the same
    /// attempt.
    Ongoing,
}
}

/// Something that happened to a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The saga was just created.
    Start,
    /// The saga was loaded from the log after a restart (or by another instance); calls in
    /// flight lost their answers: each is sent again as the same attempt once its timeout has
    /// passed since it was sent (until then the participant may still be working on it).
    Resume,
    /// A participant call ended.
    CallFinished(Answer),
    /// A timer fired: something may be due.
    Tick,
    /// Operator: stop going forward and compensate.
    Abort,
    /// Operator: resume a stuck saga with a fresh retry budget.
    Retry,
    /// Operator: what waits for its time (a retry's backoff, a delayed compensation) is due
    /// now.
    Wake,
    /// Its client: a prepared saga goes on (DTM's submit).
    Submit,
    /// Operator: no new call until it is resumed (calls in flight finish); its deadline and
    /// what waits for its time wait with it.
    Pause,
    /// Operator: a paused saga goes on; its deadline and waits move by the time it was paused.
    Unpause,
    /// Operator: this stuck step was set right by hand; it counts as done and the saga goes on.
    Skip(usize),
    /// Operator: this step's endpoints were edited (the shell writes the new definition with
    /// the transition; the state is unchanged).
    Edit(usize),
}

wire_enum! {
/// The operator actions (docs/api.md, "Operator actions"); each is an [`Event`].
pub enum Op {
    /// Stop going forward and compensate.
    Abort,
    /// Resume a stuck saga.
    Retry,
    /// Call now what waits for its time (DTM's resetNextCronTime).
    Wake,
    /// Go on with a prepared saga (DTM's submit of a TCC or msg transaction).
    Submit,
    /// No new call until resumed.
    Pause,
    /// A paused saga goes on.
    Resume,
    /// A stuck step counts as done.
    Skip,
    /// A step's endpoints changed.
    Edit,
}
}

impl Op {
    /// The state machine's event for it (a skip names its step: [`Operation::event`]).
    pub fn event(self) -> Event {
        match self {
            Op::Abort => Event::Abort,
            Op::Retry => Event::Retry,
            Op::Wake => Event::Wake,
            Op::Submit => Event::Submit,
            Op::Pause => Event::Pause,
            Op::Resume => Event::Unpause,
            Op::Skip => Event::Skip(usize::MAX),
            Op::Edit => Event::Edit(usize::MAX),
        }
    }
}

/// An operator action as asked: what, the step it names (skip, edit), why (kept in the saga's
/// operator actions), and an edit's new endpoint fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The action.
    pub op: Op,
    /// The step's name (skip, edit).
    pub step: Option<String>,
    /// Why, in the operator's words.
    pub reason: Option<String>,
    /// An edit: the endpoint fields that change (`{"action": {"url": …}}`,
    /// `validation::parse_step_edit`).
    pub edit: Option<serde_json::Value>,
}

impl Operation {
    /// `op` with no step and no reason.
    pub fn new(op: Op) -> Operation {
        Operation {
            op,
            step: None,
            reason: None,
            edit: None,
        }
    }

    /// The state machine's event for it; a step `def` does not have is refused by the machine.
    pub fn event(&self, def: &SagaDefinition) -> Event {
        let step = || {
            self.step
                .as_deref()
                .and_then(|n| def.steps.iter().position(|s| s.name == n))
                .unwrap_or(usize::MAX)
        };
        match self.op {
            Op::Skip => Event::Skip(step()),
            Op::Edit => Event::Edit(step()),
            op => op.event(),
        }
    }
}

/// A participant's answer to one call, as the shell observed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Step index.
    pub step: usize,
    /// Phase of the call.
    pub phase: Phase,
    /// Attempt number of the call.
    pub attempt: u32,
    /// Classified answer.
    pub outcome: CallOutcome,
    /// HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// What went wrong, for people.
    pub error: Option<String>,
}

/// One call of the history, written with the transition that accepted its answer (a stale
/// answer makes none).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Step index.
    pub step: usize,
    /// Phase of the call.
    pub phase: Phase,
    /// Attempt number.
    pub attempt: u32,
    /// When the call started (ms).
    pub started_at: i64,
    /// When its answer was accepted (ms).
    pub finished_at: i64,
    /// HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// Classified answer.
    pub outcome: CallOutcome,
    /// What went wrong.
    pub error: Option<String>,
}

/// The outside world's facts that an event is judged with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input {
    /// Current time, milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// Random factor in [0.5, 1.0] for backoff jitter.
    pub jitter: f64,
    /// The shell is stopping: start no new call. A call that would start now stays due (it is
    /// neither recorded as sent nor charged an attempt) and starts after the next start-up.
    pub hold_calls: bool,
}

impl Input {
    /// The facts of a running shell at `now_ms` with this jitter.
    pub fn new(now_ms: i64, jitter: f64) -> Self {
        Input {
            now_ms,
            jitter,
            hold_calls: false,
        }
    }
}

/// What the shell must do after the new state is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Call a participant.
    Call {
        /// Step index.
        step: usize,
        /// Phase to call.
        phase: Phase,
        /// Attempt number (for `X-Saga-Attempt`).
        attempt: u32,
    },
    /// Deliver [`Event::Tick`] at this time (the earliest thing the saga waits for). A
    /// transition without it waits for nothing: any earlier wake of the saga can be dropped.
    WakeAt(i64),
    /// A call that must succeed gave up: raise an alert.
    Alert {
        /// Step index.
        step: usize,
        /// Phase that is stuck.
        phase: Phase,
        /// Last error.
        error: String,
    },
    /// The saga reached a terminal status.
    Finished(SagaStatus),
    /// Write this call into the history, in the same transaction as the new state.
    Record(CallRecord),
    /// A call got an unknown outcome and is retried at `at` (for metrics and logs).
    RetryScheduled {
        /// Step index.
        step: usize,
        /// Phase retried.
        phase: Phase,
        /// When.
        at: i64,
    },
    /// A compensation waits its endpoint's `delay_ms` until `at` (for logs and traces).
    DelayScheduled {
        /// Step index.
        step: usize,
        /// Phase delayed.
        phase: Phase,
        /// When it is due.
        at: i64,
    },
    /// The forward phase stopped and the undo began (for metrics and logs).
    UndoStarted {
        /// The forward step whose failure stopped it; none for an abort or the deadline.
        step: Option<usize>,
        /// Why.
        reason: String,
    },
}

/// An operator action that does not apply to the saga's current status (HTTP 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Abort needs a running (or prepared) saga.
    #[error("the saga is {}, only a running saga can be aborted", .0.as_str())]
    NotRunning(SagaStatus),
    /// Submit needs a prepared saga.
    #[error("the saga is {}, only a prepared saga can be submitted", .0.as_str())]
    NotPrepared(SagaStatus),
    /// Retry needs a stuck saga.
    #[error("the saga is {}, only a stuck saga can be retried", .0.as_str())]
    NotStuck(SagaStatus),
    /// Wake needs a saga that makes progress by itself.
    #[error(
        "the saga is {}, only a running, compensating or confirming saga can be woken",
        .0.as_str()
    )]
    NotActive(SagaStatus),
    /// Pause needs a saga that makes progress by itself.
    #[error(
        "the saga is {}, only a running, compensating or confirming saga can be paused",
        .0.as_str()
    )]
    NotPausable(SagaStatus),
    /// Paused already.
    #[error("the saga is paused already")]
    AlreadyPaused,
    /// Resume needs a paused saga.
    #[error("the saga is not paused")]
    NotPaused,
    /// Wake, skip and edits wait until a paused saga is resumed.
    #[error("the saga is paused; resume it first")]
    Paused,
    /// Skip needs a stuck step.
    #[error("the step is not stuck; only a stuck step can be skipped")]
    StepNotStuck,
    /// The saga has no such step.
    #[error("the saga has no such step")]
    NoSuchStep,
    /// An ended saga is not edited.
    #[error("the saga is {}, only a saga that has not ended can be edited", .0.as_str())]
    NotEditable(SagaStatus),
    /// A step with a call in flight is not edited.
    #[error("the step has a call in flight; edit it once that call has answered")]
    StepInFlight,
    /// The saga changed since the edit was checked (another edit, say).
    #[error("the edit does not apply to the saga as it is now; read it and edit again")]
    EditDoesNotApply,
}

impl SagaStatus {
    /// Whether an operator may abort a saga in this status.
    pub fn may_abort(self) -> Result<(), Rejected> {
        match self {
            SagaStatus::Running | SagaStatus::Prepared => Ok(()),
            other => Err(Rejected::NotRunning(other)),
        }
    }

    /// Whether its client may submit a saga in this status.
    pub fn may_submit(self) -> Result<(), Rejected> {
        match self {
            SagaStatus::Prepared => Ok(()),
            other => Err(Rejected::NotPrepared(other)),
        }
    }

    /// Whether an operator may retry a saga in this status.
    pub fn may_retry(self) -> Result<(), Rejected> {
        match self {
            SagaStatus::Stuck => Ok(()),
            other => Err(Rejected::NotStuck(other)),
        }
    }

    /// Whether an operator may wake a saga in this status.
    pub fn may_wake(self) -> Result<(), Rejected> {
        match self {
            s if s.is_active() => Ok(()),
            other => Err(Rejected::NotActive(other)),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// State of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Status for the API.
    pub status: StepStatus,
    /// Current (or last) phase.
    pub phase: Phase,
    // Fields at their zero value are left out of the log's `steps` column (read back as the
    // default): a step takes a third of the bytes (docs/saga-log.md, "Where the bytes go").
    /// Forward calls started (action / try).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Undo calls started (compensation / cancel).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compensation_attempts: u32,
    /// Confirm calls started (tcc).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub confirm_attempts: u32,
    /// Calls of the current phase made before the last operator retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_base: u32,
    /// The forward call succeeded or got an unknown outcome at least once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_have_effect: bool,
    /// A call is in flight; its answer is not recorded yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_flight: bool,
    /// When the latest call started (the history row of its answer keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// The call in flight lost its answer (a crash, a takeover) and is sent again, as the same
    /// attempt, at this time: once it can no longer be running at the participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_at: Option<i64>,
    /// The participant answered "ongoing": the next call of the phase asks again, as the same
    /// attempt (no attempt spent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
    /// The current phase ran out of retries (or was refused) and waits for an operator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stuck: bool,
    /// Last error of any call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next call of the current phase is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    /// Last change, ms since epoch.
    pub updated_at: i64,
}

impl StepState {
    /// A step nothing happened to yet, in `phase`.
    fn fresh(phase: Phase, now_ms: i64) -> StepState {
        StepState {
            status: StepStatus::Pending,
            phase,
            attempts: 0,
            compensation_attempts: 0,
            confirm_attempts: 0,
            budget_base: 0,
            may_have_effect: false,
            in_flight: false,
            started_at: None,
            resend_at: None,
            again: false,
            stuck: false,
            last_error: None,
            next_attempt_at: None,
            updated_at: now_ms,
        }
    }

    /// Calls started in `phase` (the attempt number of the latest one).
    pub fn calls(&self, phase: Phase) -> u32 {
        match phase {
            Phase::Action | Phase::Try => self.attempts,
            Phase::Compensation | Phase::Cancel => self.compensation_attempts,
            Phase::Confirm => self.confirm_attempts,
        }
    }

    fn calls_mut(&mut self, phase: Phase) -> &mut u32 {
        match phase {
            Phase::Action | Phase::Try => &mut self.attempts,
            Phase::Compensation | Phase::Cancel => &mut self.compensation_attempts,
            Phase::Confirm => &mut self.confirm_attempts,
        }
    }

    /// Nothing more will happen to this step during the undo.
    fn undo_settled(&self) -> bool {
        !self.in_flight
            && match self.status {
                StepStatus::Skipped | StepStatus::Compensated | StepStatus::Cancelled => true,
                StepStatus::Failed => !self.may_have_effect,
                _ => false,
            }
    }

    fn forward_done(&self) -> bool {
        matches!(self.status, StepStatus::Succeeded | StepStatus::Tried)
    }

    fn due(&self, now: i64) -> bool {
        !self.in_flight && !self.stuck && self.next_attempt_at.is_some_and(|t| t <= now)
    }
}

/// State of one saga: what the log records and the actor holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// Saga status.
    pub status: SagaStatus,
    /// Why the saga stopped going forward (first cause), or why it is stuck.
    pub error: Option<String>,
    /// End of the forward phase, ms since epoch.
    pub deadline_at: Option<i64>,
    /// One entry per step, in definition order.
    pub steps: Vec<StepState>,
    /// When the saga next needs a [`Event::Tick`] (the last [`Command::WakeAt`]); `None` when it
    /// waits only for answers, an operator, or nothing.
    #[serde(default)]
    pub wake_at: Option<i64>,
    /// Paused by an operator since then (ms): no new call until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<i64>,
}

impl SagaState {
    /// Whether an operator may pause the saga now.
    pub fn may_pause(&self) -> Result<(), Rejected> {
        if self.paused_at.is_some() {
            return Err(Rejected::AlreadyPaused);
        }
        match self.status {
            s if s.is_active() => Ok(()),
            other => Err(Rejected::NotPausable(other)),
        }
    }

    /// Whether an operator may resume the saga now.
    pub fn may_resume(&self) -> Result<(), Rejected> {
        self.paused_at.map(|_| ()).ok_or(Rejected::NotPaused)
    }

    /// Whether an operator may wake the saga now.
    pub fn may_wake(&self) -> Result<(), Rejected> {
        self.status.may_wake()?;
        self.not_paused()
    }

    /// Whether an operator may skip step `i` now.
    pub fn may_skip(&self, i: usize) -> Result<(), Rejected> {
        let s = self.steps.get(i).ok_or(Rejected::NoSuchStep)?;
        self.not_paused()?;
        if s.stuck {
            Ok(())
        } else {
            Err(Rejected::StepNotStuck)
        }
    }

    /// Whether an operator may edit step `i`'s endpoints now.
    pub fn may_edit(&self, i: usize) -> Result<(), Rejected> {
        let s = self.steps.get(i).ok_or(Rejected::NoSuchStep)?;
        self.not_paused()?;
        if self.status.is_terminal() {
            return Err(Rejected::NotEditable(self.status));
        }
        if s.in_flight {
            return Err(Rejected::StepInFlight);
        }
        Ok(())
    }

    fn not_paused(&self) -> Result<(), Rejected> {
        match self.paused_at {
            Some(_) => Err(Rejected::Paused),
            None => Ok(()),
        }
    }
}

/// Sagas in these statuses make progress by themselves (stuck waits for an operator).
pub const ACTIVE_STATUSES: [SagaStatus; 3] = [
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Confirming,
];

/// Sagas that have not ended: the active ones, the stuck ones and the prepared ones. A stuck
/// saga may still have calls in flight (of its other steps), which a restart must send again; a
/// prepared one has its deadline.
pub const UNFINISHED_STATUSES: [SagaStatus; 5] = [
    SagaStatus::Prepared,
    SagaStatus::Running,
    SagaStatus::Compensating,
    SagaStatus::Confirming,
    SagaStatus::Stuck,
];

impl SagaState {
    /// When a timer must look at the saga again, as the log stores it (`next_wake_at`); never
    /// once it is terminal, and for a stuck saga only to send again a call whose answer was
    /// lost. Calls in flight need no wake: their answers come back to the shell that sent them,
    /// and after a crash every unfinished saga is resumed.
    pub fn next_wake(&self) -> Option<i64> {
        self.wake_at.filter(|_| !self.status.is_terminal())
    }

    /// A fresh saga, nothing called yet.
    pub fn new(def: &SagaDefinition, now_ms: i64) -> Self {
        let phase = Phase::forward(def.mode);
        SagaState {
            status: if def.prepared {
                SagaStatus::Prepared
            } else {
                SagaStatus::Running
            },
            error: None,
            deadline_at: def.timeout_ms.map(|t| now_ms.saturating_add(t as i64)),
            wake_at: None,
            paused_at: None,
            steps: def
                .steps
                .iter()
                .map(|_| StepState::fresh(phase, now_ms))
                .collect(),
        }
    }

    /// A branch its client registered and tries itself (DTM's TCC): a step already tried, so
    /// that a submit confirms it and an abort or the deadline cancels it.
    pub fn register(&mut self, now_ms: i64) -> Result<(), Rejected> {
        self.status.may_submit()?;
        self.steps.push(StepState {
            status: StepStatus::Tried,
            may_have_effect: true,
            ..StepState::fresh(Phase::Try, now_ms)
        });
        Ok(())
    }

    /// The functional form: the new state and the commands, leaving `self` untouched.
    pub fn decide(
        &self,
        def: &SagaDefinition,
        input: Input,
        event: &Event,
    ) -> Result<(SagaState, Vec<Command>), Rejected> {
        let mut next = self.clone();
        let cmds = next.apply(def, input, event)?;
        Ok((next, cmds))
    }

    /// Applies an event in place and returns the commands to execute once the state is durable.
    pub fn apply(
        &mut self,
        def: &SagaDefinition,
        input: Input,
        event: &Event,
    ) -> Result<Vec<Command>, Rejected> {
        let before = self.status;
        let mut out = Vec::new();
        match event {
            Event::Start | Event::Tick => {}
            Event::Resume => {
                // The orchestrator lost the answers of the calls in flight, whose start is
                // durable: each goes again as the same attempt (same key), not before its
                // timeout has run out since it was sent, for the participant may still be
                // working on it (advance sends it when due). Held calls (a stopping shell) wait
                // for the next start.
                for (i, s) in self.steps.iter_mut().enumerate() {
                    if s.in_flight {
                        let sent = s.started_at.unwrap_or(input.now_ms);
                        let over = sent.saturating_add(def.steps[i].timeout_ms as i64);
                        s.resend_at = Some(over.max(input.now_ms));
                    }
                }
            }
            Event::CallFinished(answer) => {
                if answer.step < self.steps.len() {
                    self.on_result(def, input, answer, &mut out);
                }
            }
            Event::Abort => {
                self.status.may_abort()?;
                let why = match self.status {
                    SagaStatus::Prepared => "aborted by its client",
                    _ => "aborted by operator",
                };
                self.begin_undo(why.into(), false, None, &mut out);
            }
            Event::Submit => {
                self.status.may_submit()?;
                self.go_on(def, input.now_ms);
            }
            Event::Wake => {
                self.may_wake()?;
                // Backoffs and delays end now; a lost call's resend keeps its time (the
                // participant may still be working on it).
                for s in self.steps.iter_mut() {
                    if !s.in_flight
                        && !s.stuck
                        && s.next_attempt_at.is_some_and(|t| t > input.now_ms)
                    {
                        s.next_attempt_at = Some(input.now_ms);
                        s.updated_at = input.now_ms;
                    }
                }
            }
            Event::Retry => {
                self.status.may_retry()?;
                for s in self.steps.iter_mut() {
                    if s.stuck {
                        s.stuck = false;
                        s.budget_base = s.calls(s.phase);
                        s.status = s.phase.scheduled_status();
                        s.next_attempt_at = Some(input.now_ms);
                        s.updated_at = input.now_ms;
                    }
                }
                self.unstick();
            }
            Event::Pause => {
                self.may_pause()?;
                self.paused_at = Some(input.now_ms);
            }
            Event::Unpause => {
                self.may_resume()?;
                // The deadline and what waits for its time wait with the saga: each moves by
                // the time it was paused. A lost call's resend keeps its time.
                let paused = input.now_ms - self.paused_at.take().unwrap_or(input.now_ms);
                let later = |t: &mut Option<i64>| {
                    if let Some(t) = t {
                        *t = t.saturating_add(paused.max(0));
                    }
                };
                later(&mut self.deadline_at);
                for s in self.steps.iter_mut().filter(|s| !s.in_flight) {
                    later(&mut s.next_attempt_at);
                }
            }
            Event::Edit(i) => self.may_edit(*i)?,
            Event::Skip(i) => {
                self.may_skip(*i)?;
                let s = &mut self.steps[*i];
                s.stuck = false;
                s.status = s.phase.done_status();
                s.next_attempt_at = None;
                s.updated_at = input.now_ms;
                if !self.steps.iter().any(|s| s.stuck) {
                    self.unstick();
                }
            }
        }
        self.advance(def, input, &mut out);
        if self.status != before && self.status.is_terminal() {
            out.push(Command::Finished(self.status));
        }
        Ok(out)
    }

    /// A stuck saga goes on with what it was doing: confirming, or undoing.
    fn unstick(&mut self) {
        if self.status != SagaStatus::Stuck {
            return;
        }
        let confirming = self.steps.iter().any(|s| s.phase == Phase::Confirm);
        self.status = if confirming {
            // A confirm phase follows tries that all succeeded: nothing went wrong but the
            // stuck confirm, so a saga that now succeeds carries no error.
            self.error = None;
            SagaStatus::Confirming
        } else {
            SagaStatus::Compensating
        };
    }

    /// Records an answer.
    fn on_result(
        &mut self,
        def: &SagaDefinition,
        input: Input,
        answer: &Answer,
        out: &mut Vec<Command>,
    ) {
        let Answer {
            step: i,
            phase,
            attempt,
            outcome,
            ..
        } = *answer;
        let now = input.now_ms;
        // Going forward: running, or a prepared saga asking its client (its check step).
        let running = matches!(self.status, SagaStatus::Running | SagaStatus::Prepared);
        let policy = def.steps[i].retry;
        let deliver = def.must_deliver(i);
        let name = &def.steps[i].name;
        let protocol = def.protocol;
        let s = &mut self.steps[i];
        // A stale answer (already handled, or from before a restart) changes nothing.
        if !s.in_flight || s.phase != phase || s.calls(phase) != attempt {
            return;
        }
        out.push(Command::Record(CallRecord {
            step: i,
            phase,
            attempt,
            started_at: s.started_at.unwrap_or(now),
            finished_at: now,
            http_status: answer.http_status,
            outcome,
            error: answer.error.clone(),
        }));
        s.in_flight = false;
        s.updated_at = now;
        if let Some(e) = &answer.error {
            s.last_error = Some(e.clone());
        }
        let err = s
            .last_error
            .clone()
            .unwrap_or_else(|| outcome.as_str().into());
        let made = s.calls(phase) - s.budget_base;
        let unbounded = (!phase.is_forward() && protocol.undo_without_limit()) || deliver;
        let budget_left = made < policy.max_attempts || unbounded;
        let jitter = if protocol.exact_backoff() {
            1.0
        } else {
            input.jitter
        };
        let wait = policy.jittered_backoff_ms(made, jitter);
        let retry_at = now.saturating_add(wait as i64);
        let ongoing = outcome == CallOutcome::Ongoing && (running || !phase.is_forward());
        if ongoing {
            // Not done yet: asked again after the first backoff, with no attempt spent and no
            // growth of the wait (DTM).
            let again_at = now.saturating_add(policy.initial_backoff_ms as i64);
            s.may_have_effect |= phase.is_forward();
            s.again = true;
            s.status = phase.scheduled_status();
            s.next_attempt_at = Some(again_at);
            out.push(Command::RetryScheduled {
                step: i,
                phase,
                at: again_at,
            });
            return;
        }
        // A refused undo is retried like any error where the protocol says so (DTM).
        let outcome = match outcome {
            CallOutcome::Failure if !phase.is_forward() && protocol.retries_refused_undo() => {
                CallOutcome::Unknown
            }
            // An action that must be delivered is asked again until it succeeds.
            CallOutcome::Failure if deliver => CallOutcome::Unknown,
            // An answer "ongoing" to a forward call after the undo began: it may have taken
            // effect, as an unknown outcome may.
            CallOutcome::Ongoing => CallOutcome::Unknown,
            o => o,
        };
        if phase.is_forward() {
            match outcome {
                CallOutcome::Success => {
                    s.may_have_effect = true;
                    s.status = phase.done_status();
                }
                CallOutcome::Failure => {
                    // DTM compensates the refused step too; natively a "no" did nothing.
                    s.may_have_effect |= protocol.refused_step_is_undone();
                    s.status = StepStatus::Failed;
                    if running {
                        self.begin_undo(format!("{name}: {err}"), false, Some(i), out);
                    }
                }
                CallOutcome::Unknown | CallOutcome::Ongoing => {
                    s.may_have_effect = true;
                    if running && budget_left {
                        s.status = phase.scheduled_status();
                        s.next_attempt_at = Some(retry_at);
                        out.push(Command::RetryScheduled {
                            step: i,
                            phase,
                            at: retry_at,
                        });
                    } else {
                        s.status = StepStatus::Failed;
                        if running {
                            self.begin_undo(
                                format!("{name}: gave up after {made} attempts: {err}"),
                                false,
                                Some(i),
                                out,
                            );
                        }
                    }
                }
            }
        } else {
            match outcome {
                CallOutcome::Success => s.status = phase.done_status(),
                CallOutcome::Unknown if budget_left => {
                    s.status = phase.scheduled_status();
                    s.next_attempt_at = Some(retry_at);
                    out.push(Command::RetryScheduled {
                        step: i,
                        phase,
                        at: retry_at,
                    });
                }
                CallOutcome::Unknown | CallOutcome::Failure | CallOutcome::Ongoing => {
                    s.stuck = true;
                    s.next_attempt_at = None;
                    let why = if outcome == CallOutcome::Failure {
                        "refused"
                    } else {
                        "gave up"
                    };
                    let msg = format!(
                        "{name}: {} {why} after {made} attempts: {err}",
                        phase.as_str()
                    );
                    self.status = SagaStatus::Stuck;
                    self.error = Some(msg);
                    out.push(Command::Alert {
                        step: i,
                        phase,
                        error: err,
                    });
                }
            }
        }
    }

    /// A prepared saga goes on: its client submitted it, or said it committed when asked. The
    /// deadline was its client's: from now on it runs to its end (DTM).
    fn go_on(&mut self, def: &SagaDefinition, now: i64) {
        self.status = SagaStatus::Running;
        self.deadline_at = None;
        if def.check_first {
            // Nothing to ask any more: an answer still on its way is not waited for.
            let s = &mut self.steps[0];
            if s.status != StepStatus::Succeeded {
                s.status = StepStatus::Succeeded;
                s.in_flight = false;
                s.resend_at = None;
                s.next_attempt_at = None;
                s.updated_at = now;
            }
        }
    }

    /// Stops the forward phase: pending steps are skipped, scheduled retries dropped. `cause`
    /// is the forward step whose failure stopped it, if one did.
    fn begin_undo(
        &mut self,
        reason: String,
        deadline: bool,
        cause: Option<usize>,
        out: &mut Vec<Command>,
    ) {
        self.status = SagaStatus::Compensating;
        out.push(Command::UndoStarted {
            step: cause,
            reason: reason.clone(),
        });
        if self.error.is_none() {
            self.error = Some(reason);
        }
        for s in self.steps.iter_mut() {
            match s.status {
                StepStatus::Pending => s.status = StepStatus::Skipped,
                StepStatus::RetryScheduled => {
                    s.status = StepStatus::Failed;
                    s.next_attempt_at = None;
                }
                // Past the deadline an answer still in flight no longer counts as a "no".
                StepStatus::Running if deadline => s.may_have_effect = true,
                _ => continue,
            }
        }
    }

    fn start_call(&mut self, i: usize, phase: Phase, now: i64) -> Command {
        let s = &mut self.steps[i];
        if s.phase != phase {
            s.budget_base = 0;
        }
        // An answer "ongoing" is asked again as the same attempt; any other call is a new one.
        if !(s.again && s.phase == phase) {
            *s.calls_mut(phase) += 1;
        }
        s.again = false;
        s.phase = phase;
        s.in_flight = true;
        s.resend_at = None;
        s.started_at = Some(now);
        s.next_attempt_at = None;
        s.status = phase.in_flight_status();
        s.updated_at = now;
        Command::Call {
            step: i,
            phase,
            attempt: s.calls(phase),
        }
    }

    /// Starts the call of step `i` in `phase`, unless calls are held: then it stays due and
    /// the answer is true.
    fn start_or_hold(
        &mut self,
        i: usize,
        phase: Phase,
        input: Input,
        out: &mut Vec<Command>,
    ) -> bool {
        if !input.hold_calls {
            out.push(self.start_call(i, phase, input.now_ms));
        }
        input.hold_calls
    }

    /// Sends again, as the same attempt, each lost call whose time has come.
    fn resend_due(&mut self, input: Input, out: &mut Vec<Command>) -> bool {
        let mut held = false;
        for (i, s) in self.steps.iter_mut().enumerate() {
            if s.in_flight && s.resend_at.is_some_and(|t| t <= input.now_ms) {
                if input.hold_calls {
                    held = true;
                    continue;
                }
                // A new send: its timeout runs from now, should this answer be lost too.
                s.resend_at = None;
                s.started_at = Some(input.now_ms);
                s.updated_at = input.now_ms;
                out.push(Command::Call {
                    step: i,
                    phase: s.phase,
                    attempt: s.calls(s.phase),
                });
            }
        }
        held
    }

    /// Starts every call that may start now and says when to look again.
    fn advance(&mut self, def: &SagaDefinition, input: Input, out: &mut Vec<Command>) {
        let now = input.now_ms;
        let n = self.steps.len();
        let dependents = def.dependents();
        // Paused: answers are still recorded, nothing new is sent, and nothing is due (its
        // deadline included) until an operator resumes it.
        let paused = self.paused_at.is_some();
        let input = Input {
            hold_calls: input.hold_calls || paused,
            ..input
        };
        let mut held = self.resend_due(input, out);
        loop {
            let mut again = false;
            match self.status {
                SagaStatus::Prepared => {
                    let due = self.deadline_at.is_some_and(|d| now >= d);
                    if def.check_first && self.steps[0].forward_done() {
                        // Its client says it committed.
                        self.go_on(def, now);
                        again = true;
                    } else if due && def.mode == Mode::Tcc {
                        self.begin_undo(
                            "its client neither submitted nor aborted it in time".into(),
                            false,
                            None,
                            out,
                        );
                        again = true;
                    } else if due && !def.check_first {
                        // Nobody to ask: DTM takes that for a commit.
                        self.go_on(def, now);
                        again = true;
                    } else if due {
                        // Ask the client whether it committed (its check step), once.
                        self.deadline_at = None;
                        held |= self.start_or_hold(0, Phase::Action, input, out);
                    } else if def.check_first
                        && self.steps[0].status == StepStatus::RetryScheduled
                        && self.steps[0].due(now)
                    {
                        held |= self.start_or_hold(0, Phase::Action, input, out);
                    }
                }
                SagaStatus::Running => {
                    if !paused && self.deadline_at.is_some_and(|d| now >= d) {
                        self.begin_undo("deadline exceeded".into(), true, None, out);
                        continue;
                    }
                    let fwd = Phase::forward(def.mode);
                    for i in 0..n {
                        let s = &self.steps[i];
                        let ready = match s.status {
                            StepStatus::Pending => def.steps[i]
                                .deps
                                .iter()
                                .all(|&d| self.steps[d].forward_done()),
                            StepStatus::RetryScheduled => s.due(now),
                            _ => false,
                        };
                        if ready {
                            held |= self.start_or_hold(i, fwd, input, out);
                        }
                    }
                    if self.steps.iter().all(StepState::forward_done) {
                        self.status = match def.mode {
                            Mode::Saga => SagaStatus::Succeeded,
                            Mode::Tcc => SagaStatus::Confirming,
                        };
                        again = true;
                    }
                }
                SagaStatus::Confirming => {
                    let reverse = def.protocol.confirms_in_reverse();
                    #[allow(clippy::needless_range_loop)] // the loop mutates self.steps[i]
                    for i in 0..n {
                        let s = &self.steps[i];
                        // DTM confirms one at a time, the last registered first.
                        let turn = !reverse
                            || dependents[i]
                                .iter()
                                .all(|&d| self.steps[d].status == StepStatus::Confirmed);
                        if (s.status == StepStatus::Tried && turn)
                            || (s.status == StepStatus::Confirming && s.due(now))
                        {
                            held |= self.start_or_hold(i, Phase::Confirm, input, out);
                        }
                    }
                    if self.steps.iter().all(|s| s.status == StepStatus::Confirmed) {
                        self.status = SagaStatus::Succeeded;
                    }
                }
                SagaStatus::Compensating => {
                    let undo = Phase::undo(def.mode);
                    #[allow(clippy::needless_range_loop)] // the loop mutates self.steps[i]
                    for i in 0..n {
                        let s = &self.steps[i];
                        if s.in_flight || s.stuck {
                            continue;
                        }
                        match s.status {
                            StepStatus::Succeeded | StepStatus::Tried | StepStatus::Failed
                                if s.may_have_effect
                                    && dependents[i]
                                        .iter()
                                        .all(|&d| self.steps[d].undo_settled()) =>
                            {
                                match &def.steps[i].undo {
                                    None => {
                                        let s = &mut self.steps[i];
                                        s.status = undo.done_status();
                                        s.phase = undo;
                                        s.updated_at = now;
                                        again = true;
                                    }
                                    Some(ep) if ep.delay_ms > 0 => {
                                        let s = &mut self.steps[i];
                                        let at = now.saturating_add(ep.delay_ms as i64);
                                        s.phase = undo;
                                        s.status = undo.scheduled_status();
                                        s.next_attempt_at = Some(at);
                                        s.updated_at = now;
                                        out.push(Command::DelayScheduled {
                                            step: i,
                                            phase: undo,
                                            at,
                                        });
                                    }
                                    Some(_) => held |= self.start_or_hold(i, undo, input, out),
                                }
                            }
                            StepStatus::CompensationScheduled | StepStatus::Cancelling
                                if s.due(now) =>
                            {
                                held |= self.start_or_hold(i, undo, input, out);
                            }
                            _ => {}
                        }
                    }
                    if self.steps.iter().all(StepState::undo_settled) {
                        self.status = SagaStatus::Compensated;
                    }
                }
                SagaStatus::Stuck | SagaStatus::Succeeded | SagaStatus::Compensated => {}
            }
            if !again {
                break;
            }
        }
        let mut wake = self
            .steps
            .iter()
            .filter_map(|s| match s.in_flight {
                true => s.resend_at,
                false if !s.stuck => s.next_attempt_at,
                false => None,
            })
            .min();
        if matches!(self.status, SagaStatus::Running | SagaStatus::Prepared) {
            wake = wake.into_iter().chain(self.deadline_at).min();
        }
        if held {
            // Calls held back are due now: whoever runs the saga next starts them at once.
            wake = Some(wake.map_or(now, |w| w.min(now)));
        }
        if self.status == SagaStatus::Stuck {
            // A stuck saga waits for an operator, but a lost call of another step still goes.
            wake = self.steps.iter().filter_map(|s| s.resend_at).min();
            if held {
                wake = Some(wake.map_or(now, |w| w.min(now)));
            }
        } else if !ACTIVE_STATUSES.contains(&self.status) && self.status != SagaStatus::Prepared {
            wake = None;
        }
        if self.status.is_terminal() {
            // Its last calls answered while it was paused: an ended saga is not paused.
            self.paused_at = None;
        } else if paused {
            wake = None;
        }
        self.wake_at = wake;
        if let Some(at) = wake {
            out.push(Command::WakeAt(at));
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
