//! Unit and property tests of the state machine: one test per rule of docs/api.md (statuses,
//! answers, operator actions).

use super::*;
use crate::domain::definition::{Defaults, SagaDefinition};
use crate::domain::validation::parse_request;
use proptest::prelude::*;
use serde_json::{json, Value};

const T0: i64 = 1_000_000;

fn at(now_ms: i64) -> Input {
    Input::new(now_ms, 1.0)
}

fn def(v: Value) -> SagaDefinition {
    parse_request(&v, &Defaults::default()).expect("valid test definition")
}

fn step(name: &str, comp: bool) -> Value {
    let mut s = json!({"name": name, "action": {"url": "http://127.0.0.1:1/a"},
                       "retry": {"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 1000}});
    if comp {
        s["compensation"] = json!({"url": "http://127.0.0.1:1/c"});
    }
    s
}

fn seq(n: usize) -> SagaDefinition {
    let steps: Vec<Value> = (0..n).map(|i| step(&format!("s{i}"), true)).collect();
    def(json!({"name": "t", "steps": steps}))
}

fn finished(step: usize, phase: Phase, attempt: u32, outcome: CallOutcome) -> Event {
    Event::CallFinished(Answer {
        step,
        phase,
        attempt,
        outcome,
        http_status: None,
        error: Some(format!("{outcome:?}")),
    })
}

/// The commands that act (calls, wakes, alerts, ends), without history records and notes.
fn decisions(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .filter(|c| {
            !matches!(
                c,
                Command::Record(_)
                    | Command::RetryScheduled { .. }
                    | Command::DelayScheduled { .. }
                    | Command::UndoStarted { .. }
            )
        })
        .cloned()
        .collect()
}

fn calls(cmds: &[Command]) -> Vec<(usize, Phase, u32)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Call {
                step,
                phase,
                attempt,
            } => Some((*step, *phase, *attempt)),
            _ => None,
        })
        .collect()
}

fn wake(cmds: &[Command]) -> Option<i64> {
    cmds.iter().find_map(|c| match c {
        Command::WakeAt(t) => Some(*t),
        _ => None,
    })
}

fn start(d: &SagaDefinition) -> (SagaState, Vec<Command>) {
    let mut s = SagaState::new(d, T0);
    let c = s.apply(d, at(T0), &Event::Start).unwrap();
    (s, c)
}

#[test]
fn sequential_success_calls_each_action_in_order() {
    let d = seq(3);
    let (mut s, c) = start(&d);
    assert_eq!(calls(&c), vec![(0, Phase::Action, 1)]);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Action, 1)]);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(2, Phase::Action, 1)]);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(2, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        decisions(&c),
        vec![Command::Finished(SagaStatus::Succeeded)]
    );
    assert_eq!(s.status, SagaStatus::Succeeded);
    assert!(s.steps.iter().all(|x| x.status == StepStatus::Succeeded));
}

#[test]
fn business_failure_compensates_earlier_steps_in_reverse_and_skips_later() {
    let d = seq(4);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(2, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    assert_eq!(s.steps[2].status, StepStatus::Failed);
    assert_eq!(s.steps[3].status, StepStatus::Skipped);
    // The failed step did nothing, so the first compensation is of step 1.
    assert_eq!(calls(&c), vec![(1, Phase::Compensation, 1)]);
    assert!(s.error.as_deref().unwrap().starts_with("s2: "));
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Compensation, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Compensation, 1)]);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(0, Phase::Compensation, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        decisions(&c),
        vec![Command::Finished(SagaStatus::Compensated)]
    );
    assert_eq!(s.steps[0].status, StepStatus::Compensated);
    assert_eq!(s.steps[2].status, StepStatus::Failed);
}

#[test]
fn unknown_outcome_retries_with_backoff_then_compensates_the_step_itself() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 1, CallOutcome::Unknown),
        )
        .unwrap();
    assert_eq!(s.steps[1].status, StepStatus::RetryScheduled);
    assert_eq!(decisions(&c), vec![Command::WakeAt(T0 + 100)]);
    // A tick before the due time does nothing.
    assert!(calls(&s.apply(&d, at(T0 + 99), &Event::Tick).unwrap()).is_empty());
    let c = s.apply(&d, at(T0 + 100), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Action, 2)]);
    let c = s
        .apply(
            &d,
            at(T0 + 100),
            &finished(1, Phase::Action, 2, CallOutcome::Unknown),
        )
        .unwrap();
    assert_eq!(
        decisions(&c),
        vec![Command::WakeAt(T0 + 300)],
        "second wait is initial × multiplier"
    );
    s.apply(&d, at(T0 + 300), &Event::Tick).unwrap();
    // Third and last attempt (max_attempts = 3) is unknown too: give up and compensate both.
    let c = s
        .apply(
            &d,
            at(T0 + 300),
            &finished(1, Phase::Action, 3, CallOutcome::Unknown),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    assert_eq!(
        calls(&c),
        vec![(1, Phase::Compensation, 1)],
        "may have taken effect"
    );
    assert!(s
        .error
        .as_deref()
        .unwrap()
        .contains("gave up after 3 attempts"));
}

#[test]
fn jitter_scales_the_wait_down_to_half() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    let c = s
        .apply(
            &d,
            Input::new(T0, 0.5),
            &finished(0, Phase::Action, 1, CallOutcome::Unknown),
        )
        .unwrap();
    assert_eq!(decisions(&c), vec![Command::WakeAt(T0 + 50)]);
    assert!(
        c.contains(&Command::RetryScheduled {
            step: 0,
            phase: Phase::Action,
            at: T0 + 50
        }),
        "{c:?}"
    );
}

#[test]
fn failure_after_unknown_outcomes_still_compensates_the_step() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Unknown),
    )
    .unwrap();
    s.apply(&d, at(T0 + 100), &Event::Tick).unwrap();
    let c = s
        .apply(
            &d,
            at(T0 + 100),
            &finished(0, Phase::Action, 2, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Compensation, 1)]);
}

#[test]
fn compensation_that_runs_out_of_retries_makes_the_saga_stuck_and_retry_resumes_it() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Failure),
    )
    .unwrap();
    let mut now = T0;
    for attempt in 1..=3 {
        let c = s
            .apply(
                &d,
                at(now),
                &finished(0, Phase::Compensation, attempt, CallOutcome::Unknown),
            )
            .unwrap();
        if attempt < 3 {
            let Some(Command::WakeAt(t)) = c.last().cloned() else {
                panic!("{c:?}")
            };
            now = t;
            assert_eq!(
                calls(&s.apply(&d, at(now), &Event::Tick).unwrap()),
                vec![(0, Phase::Compensation, attempt + 1)]
            );
        } else {
            assert!(
                matches!(
                    decisions(&c)[0],
                    Command::Alert {
                        step: 0,
                        phase: Phase::Compensation,
                        ..
                    }
                ),
                "{c:?}"
            );
        }
    }
    assert_eq!(s.status, SagaStatus::Stuck);
    assert!(s.steps[0].stuck);
    assert!(!s.status.is_terminal());
    assert_eq!(
        s.apply(&d, at(now), &Event::Abort),
        Err(Rejected::NotRunning(SagaStatus::Stuck))
    );
    // Nothing happens on its own while stuck.
    assert!(s
        .apply(&d, at(now + 1_000_000), &Event::Tick)
        .unwrap()
        .is_empty());
    let c = s.apply(&d, at(now), &Event::Retry).unwrap();
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Compensation, 4)],
        "attempt numbers keep counting"
    );
    assert_eq!(s.status, SagaStatus::Compensating);
    // The fresh budget allows three more calls.
    s.apply(
        &d,
        at(now),
        &finished(0, Phase::Compensation, 4, CallOutcome::Unknown),
    )
    .unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    s.apply(&d, at(now + 10_000), &Event::Tick).unwrap();
    let c = s
        .apply(
            &d,
            at(now),
            &finished(0, Phase::Compensation, 5, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        decisions(&c),
        vec![Command::Finished(SagaStatus::Compensated)]
    );
}

#[test]
fn compensation_refused_with_409_is_stuck_at_once() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Failure),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(0, Phase::Compensation, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Stuck);
    assert!(matches!(decisions(&c)[0], Command::Alert { .. }));
}

#[test]
fn retry_and_abort_answer_conflict_outside_their_status() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    assert_eq!(
        s.apply(&d, at(T0), &Event::Retry),
        Err(Rejected::NotStuck(SagaStatus::Running))
    );
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    assert_eq!(
        s.apply(&d, at(T0), &Event::Abort),
        Err(Rejected::NotRunning(SagaStatus::Succeeded))
    );
}

#[test]
fn abort_waits_for_the_call_in_flight_then_compensates() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s.apply(&d, at(T0), &Event::Abort).unwrap();
    assert!(
        calls(&c).is_empty(),
        "step 1 is in flight: its compensation waits"
    );
    assert_eq!(s.status, SagaStatus::Compensating);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Compensation, 1)]);
}

#[test]
fn step_without_compensation_has_nothing_to_undo() {
    let d =
        def(json!({"name": "t", "steps": [step("a", true), step("b", false), step("c", true)]}));
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(2, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Compensation, 1)]);
    assert_eq!(s.steps[1].status, StepStatus::Compensated);
    assert_eq!(s.steps[1].compensation_attempts, 0);
}

#[test]
fn stale_and_duplicate_answers_are_ignored() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let before = s.clone();
    assert!(s
        .apply(
            &d,
            at(T0),
            &finished(0, Phase::Action, 1, CallOutcome::Failure)
        )
        .unwrap()
        .is_empty());
    assert!(s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 7, CallOutcome::Success)
        )
        .unwrap()
        .is_empty());
    assert!(s
        .apply(
            &d,
            at(T0),
            &finished(9, Phase::Action, 1, CallOutcome::Success)
        )
        .unwrap()
        .is_empty());
    assert_eq!(s, before);
}

#[test]
fn resume_resends_a_call_whose_answer_was_lost_once_it_cannot_be_running() {
    let d = seq(2);
    let timeout = d.steps[0].timeout_ms as i64;
    let (mut s, _) = start(&d);
    // Loaded 40 ms after the call was sent: the participant may still be working on it, so the
    // same call does not go again before its timeout has run out since it was sent.
    let c = s.apply(&d, at(T0 + 40), &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![]);
    assert_eq!(s.steps[0].resend_at, Some(T0 + timeout));
    assert!(
        s.steps[0].in_flight,
        "from the participant's view it may be"
    );
    assert_eq!(wake(&c), Some(T0 + timeout));
    assert_eq!(
        s.next_wake(),
        Some(T0 + timeout),
        "durable: any instance sends it"
    );
    // An early tick changes nothing; at the time, the same attempt goes (same key), with its
    // new start recorded first, and without spending the retry budget.
    let before = s.clone();
    assert_eq!(
        calls(&s.apply(&d, at(T0 + timeout - 1), &Event::Tick).unwrap()),
        vec![]
    );
    assert_eq!(s, before);
    let c = s.apply(&d, at(T0 + timeout), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 1)]);
    assert_eq!(s.steps[0].started_at, Some(T0 + timeout));
    assert_eq!((s.steps[0].resend_at, s.steps[0].attempts), (None, 1));
    assert!(!c.iter().any(|c| matches!(c, Command::Record(_))));
    // Its answer is accepted as the answer of that attempt.
    let c = s
        .apply(
            &d,
            at(T0 + timeout + 60),
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.steps[0].status, StepStatus::Succeeded);
    assert_eq!(calls(&c), vec![(1, Phase::Action, 1)]);
}

#[test]
fn resume_after_the_timeout_resends_at_once_and_a_second_loss_waits_again() {
    let d = seq(1);
    let timeout = d.steps[0].timeout_ms as i64;
    let (mut s, _) = start(&d);
    let c = s.apply(&d, at(T0 + timeout + 5), &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 1)]);
    assert_eq!(s.steps[0].started_at, Some(T0 + timeout + 5));
    // Lost again right away: measured from the resend, not from the first send.
    let c = s.apply(&d, at(T0 + timeout + 10), &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![]);
    assert_eq!(s.steps[0].resend_at, Some(T0 + 2 * timeout + 5));
}

#[test]
fn a_stopping_shell_resumes_nothing_until_it_starts_again() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    let held = Input {
        hold_calls: true,
        ..at(T0 + 40)
    };
    let c = s.apply(&d, held, &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![]);
    assert!(s.steps[0].in_flight, "sent again at the next start");
}

#[test]
fn a_stopping_shell_records_answers_but_holds_new_calls_without_charging_them() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    let stopping = Input {
        hold_calls: true,
        ..at(T0 + 10)
    };
    let c = s
        .apply(
            &d,
            stopping,
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        s.steps[0].status,
        StepStatus::Succeeded,
        "the answer is recorded"
    );
    assert_eq!(calls(&c), vec![], "no new call while stopping");
    assert_eq!(s.steps[1].status, StepStatus::Pending);
    assert_eq!(s.steps[1].attempts, 0, "the held call is not charged");
    assert_eq!(
        s.next_wake(),
        Some(T0 + 10),
        "it is due at once after a restart"
    );
    // After the restart the held call starts as attempt 1.
    let c = s.apply(&d, at(T0 + 500), &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Action, 1)]);
}

#[test]
fn ended_and_stuck_sagas_wait_for_nothing() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    assert_eq!(s.next_wake(), None, "a call in flight needs no timer");
    assert_eq!(
        s.steps[0].started_at,
        Some(T0),
        "when the call in flight started"
    );
    let c = s
        .apply(
            &d,
            at(T0 + 10),
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert!(!c.iter().any(|c| matches!(c, Command::WakeAt(_))), "{c:?}");
    assert_eq!((s.wake_at, s.next_wake()), (None, None));
}

#[test]
fn deadline_stops_the_forward_phase_and_counts_calls_in_flight_as_unknown() {
    let mut v =
        json!({"name": "t", "timeout_ms": 500, "steps": [step("a", true), step("b", true)]});
    v["steps"][1]["depends_on"] = json!([]);
    let d = def(v);
    let (mut s, c) = start(&d);
    assert_eq!(calls(&c).len(), 2);
    assert!(c.contains(&Command::WakeAt(T0 + 500)));
    s.apply(
        &d,
        at(T0 + 10),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s.apply(&d, at(T0 + 500), &Event::Tick).unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    assert_eq!(s.error.as_deref(), Some("deadline exceeded"));
    assert_eq!(calls(&c), vec![(0, Phase::Compensation, 1)]);
    // A late "no" from step b no longer proves it did nothing.
    let c = s
        .apply(
            &d,
            at(T0 + 600),
            &finished(1, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Compensation, 1)]);
}

#[test]
fn a_paused_saga_records_answers_but_calls_nothing_until_resumed() {
    let mut v =
        json!({"name": "t", "timeout_ms": 10_000, "steps": [step("a", true), step("b", true)]});
    v["steps"][1]["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 100});
    let d = def(v);
    let (mut s, _) = start(&d);
    s.apply(&d, at(T0 + 1), &Event::Pause).unwrap();
    assert_eq!(s.paused_at, Some(T0 + 1));
    assert_eq!(
        s.apply(&d, at(T0 + 2), &Event::Pause),
        Err(Rejected::AlreadyPaused)
    );
    assert_eq!(s.apply(&d, at(T0 + 2), &Event::Wake), Err(Rejected::Paused));
    // a's answer is recorded; b waits, and nothing is due, not even the deadline.
    let c = s
        .apply(
            &d,
            at(T0 + 5),
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(decisions(&c), vec![]);
    assert_eq!(
        (s.steps[1].status, s.next_wake()),
        (StepStatus::Pending, None)
    );
    assert!(calls(&s.apply(&d, at(T0 + 20_000), &Event::Tick).unwrap()).is_empty());
    // Resumed 1000 ms later: b goes now, the deadline moved by the pause.
    let c = s.apply(&d, at(T0 + 1_001), &Event::Unpause).unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Action, 1)]);
    assert_eq!(
        (s.paused_at, s.deadline_at),
        (None, Some(T0 + 10_000 + 1_000))
    );
    assert_eq!(
        s.apply(&d, at(T0 + 1_002), &Event::Unpause),
        Err(Rejected::NotPaused)
    );
    // A retry's backoff waits with a pause too.
    s.apply(
        &d,
        at(T0 + 1_010),
        &finished(1, Phase::Action, 1, CallOutcome::Unknown),
    )
    .unwrap();
    let due = s.steps[1].next_attempt_at.unwrap();
    s.apply(&d, at(T0 + 1_020), &Event::Pause).unwrap();
    s.apply(&d, at(T0 + 1_520), &Event::Unpause).unwrap();
    assert_eq!(s.steps[1].next_attempt_at, Some(due + 500));
}

#[test]
fn a_skipped_stuck_step_counts_as_done_and_the_saga_goes_on() {
    let mut v = json!({"name": "t", "steps": [step("a", true), step("b", true)]});
    v["steps"][0]["retry"] = json!({"max_attempts": 1});
    let d = def(v);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Failure),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Compensation, 1, CallOutcome::Failure),
    )
    .unwrap();
    assert_eq!(s.status, SagaStatus::Stuck);
    assert_eq!(
        s.apply(&d, at(T0), &Event::Skip(1)),
        Err(Rejected::StepNotStuck)
    );
    assert_eq!(
        s.apply(&d, at(T0), &Event::Skip(7)),
        Err(Rejected::NoSuchStep)
    );
    assert_eq!(
        s.apply(&d, at(T0), &Event::Pause),
        Err(Rejected::NotPausable(SagaStatus::Stuck))
    );
    let c = s.apply(&d, at(T0 + 1), &Event::Skip(0)).unwrap();
    assert!(calls(&c).is_empty(), "a skipped step is not called again");
    assert_eq!(s.steps[0].status, StepStatus::Compensated);
    assert_eq!(s.status, SagaStatus::Compensated);
    assert!(c.contains(&Command::Finished(SagaStatus::Compensated)));
}

#[test]
fn an_edit_waits_for_the_call_in_flight_and_is_refused_once_paused_or_ended() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    assert_eq!(
        s.apply(&d, at(T0), &Event::Edit(0)),
        Err(Rejected::StepInFlight)
    );
    let before = s.clone();
    assert!(calls(&s.apply(&d, at(T0), &Event::Edit(1)).unwrap()).is_empty());
    assert_eq!(
        s, before,
        "an edit changes no state (the shell writes the definition)"
    );
    s.apply(&d, at(T0), &Event::Pause).unwrap();
    assert_eq!(s.apply(&d, at(T0), &Event::Edit(1)), Err(Rejected::Paused));
    s.apply(&d, at(T0), &Event::Unpause).unwrap();
    assert_eq!(
        s.apply(&d, at(T0), &Event::Edit(9)),
        Err(Rejected::NoSuchStep)
    );
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    s.apply(
        &d,
        at(T0),
        &finished(1, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    assert_eq!(
        s.apply(&d, at(T0), &Event::Edit(1)),
        Err(Rejected::NotEditable(SagaStatus::Succeeded))
    );
}

#[test]
fn each_phase_that_calls_has_its_trace_span() {
    use crate::domain::Mode;
    let named: Vec<_> = SagaStatus::all()
        .flat_map(|s| [Mode::Saga, Mode::Tcc].map(|m| (s, m, s.trace_phase(m))))
        .filter(|(.., p)| p.is_some())
        .collect();
    // Exactly the statuses in which the saga sends calls by itself.
    for (s, m, _) in &named {
        assert!(s.is_active(), "{s:?} {m:?}");
    }
    assert_eq!(
        SagaStatus::Compensating.trace_phase(Mode::Tcc),
        Some("cancel")
    );
    assert_eq!(SagaStatus::Running.trace_phase(Mode::Tcc), Some("try"));
    assert_eq!(SagaStatus::Prepared.trace_phase(Mode::Saga), None);
    assert_eq!(named.len(), 6);
}

#[test]
fn delayed_compensation_waits_its_delay() {
    let mut v = json!({"name": "t", "steps": [step("a", true), step("b", true)]});
    v["steps"][0]["compensation"]["delay_ms"] = json!(600_000);
    let d = def(v);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(decisions(&c), vec![Command::WakeAt(T0 + 600_000)]);
    // Said once, for the logs and the trace.
    let delayed = Command::DelayScheduled {
        step: 0,
        phase: Phase::Compensation,
        at: T0 + 600_000,
    };
    assert_eq!(c.iter().filter(|x| **x == delayed).count(), 1, "{c:?}");
    assert_eq!(s.steps[0].status, StepStatus::CompensationScheduled);
    assert!(calls(&s.apply(&d, at(T0 + 599_999), &Event::Tick).unwrap()).is_empty());
    let c = s.apply(&d, at(T0 + 600_000), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Compensation, 1)]);
}

#[test]
fn parallel_steps_start_together_and_a_join_waits_for_both() {
    let d = def(json!({"name": "t", "steps": [
        step("a", true),
        {"name": "b", "action": {"url": "http://h:1/b"}, "compensation": {"url": "http://h:1/c"}, "depends_on": []},
        {"name": "c", "action": {"url": "http://h:1/c"}, "compensation": {"url": "http://h:1/c"}, "depends_on": ["a", "b"]}
    ]}));
    let (mut s, c) = start(&d);
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Action, 1), (1, Phase::Action, 1)]
    );
    assert!(calls(
        &s.apply(
            &d,
            at(T0),
            &finished(0, Phase::Action, 1, CallOutcome::Success)
        )
        .unwrap()
    )
    .is_empty());
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(2, Phase::Action, 1)]);
    // c fails: a and b are compensated together.
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(2, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Compensation, 1), (1, Phase::Compensation, 1)]
    );
}

fn tcc(n: usize) -> SagaDefinition {
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("s{i}"), "try": {"url": "http://h:1/t"}, "confirm": {"url": "http://h:1/c"},
                        "cancel": {"url": "http://h:1/x"}, "retry": {"max_attempts": 2}}))
        .collect();
    def(json!({"name": "t", "mode": "tcc", "steps": steps}))
}

#[test]
fn a_stuck_saga_still_sends_again_a_lost_call_of_another_step() {
    let mut d = tcc(2);
    d.steps[1].deps = vec![];
    let timeout = d.steps[1].timeout_ms as i64;
    let (mut s, c) = start(&d);
    assert_eq!(calls(&c), vec![(0, Phase::Try, 1), (1, Phase::Try, 1)]);
    for i in 0..2 {
        s.apply(
            &d,
            at(T0),
            &finished(i, Phase::Try, 1, CallOutcome::Success),
        )
        .unwrap();
    }
    // Step 0's confirm gives up (2 attempts); step 1's is in flight when the shell crashes.
    let unknown = |attempt| finished(0, Phase::Confirm, attempt, CallOutcome::Unknown);
    s.apply(&d, at(T0 + 100), &unknown(1)).unwrap();
    let retry = s.apply(&d, at(T0 + 2000), &Event::Tick).unwrap();
    assert_eq!(calls(&retry), vec![(0, Phase::Confirm, 2)]);
    s.apply(&d, at(T0 + 2100), &unknown(2)).unwrap();
    assert_eq!(s.status, SagaStatus::Stuck);
    assert!(s.steps[1].in_flight);
    let sent = s.steps[1].started_at.unwrap();
    let c = s.apply(&d, at(T0 + 3000), &Event::Resume).unwrap();
    assert_eq!(calls(&c), vec![]);
    assert_eq!(
        s.next_wake(),
        Some(sent + timeout),
        "stuck, yet woken to resend"
    );
    let c = s.apply(&d, at(sent + timeout), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Confirm, 1)]);
    assert_eq!(s.next_wake(), None, "then it waits for the operator only");
}

#[test]
fn tcc_confirms_only_after_every_try() {
    let d = tcc(2);
    let (mut s, c) = start(&d);
    assert_eq!(calls(&c), vec![(0, Phase::Try, 1)]);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Try, 1, CallOutcome::Success),
    )
    .unwrap();
    assert_eq!(s.steps[0].status, StepStatus::Tried);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Try, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Confirming);
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Confirm, 1), (1, Phase::Confirm, 1)]
    );
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Confirm, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Confirm, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        decisions(&c),
        vec![Command::Finished(SagaStatus::Succeeded)]
    );
}

#[test]
fn tcc_failed_try_cancels_tried_steps() {
    let d = tcc(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Try, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(1, Phase::Try, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Cancel, 1)]);
    let c = s
        .apply(
            &d,
            at(T0),
            &finished(0, Phase::Cancel, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.steps[0].status, StepStatus::Cancelled);
    assert_eq!(
        decisions(&c),
        vec![Command::Finished(SagaStatus::Compensated)]
    );
}

#[test]
fn wire_names_round_trip_and_agree_with_serde() {
    use strum::IntoEnumIterator;
    for st in SagaStatus::all() {
        assert_eq!(SagaStatus::parse(st.as_str()), Some(st));
        assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
    }
    for p in Phase::iter() {
        assert_eq!(Phase::parse(p.as_str()), Some(p));
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
    }
    for st in StepStatus::iter() {
        assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
    }
    for o in CallOutcome::iter() {
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
    assert_eq!(
        StepStatus::parse("compensation_scheduled"),
        Some(StepStatus::CompensationScheduled)
    );
    assert_eq!(SagaStatus::parse("nope"), None);
    assert_eq!(Op::Retry.as_str(), "retry");
}

// ---- property tests: random DAGs, random answers, random timing ----

/// A random saga: `deps[i]` are indices below i, so the graph is acyclic.
fn arb_def() -> impl Strategy<Value = SagaDefinition> {
    (1usize..6, any::<bool>(), prop::collection::vec((any::<u8>(), any::<bool>(), 0u64..3), 6))
        .prop_map(|(n, is_tcc, raw)| {
            let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let steps: Vec<Value> = (0..n)
                .map(|i| {
                    let deps: Vec<&String> = (0..i).filter(|j| raw[i].0 >> j & 1 == 1).map(|j| &names[j]).collect();
                    let ep = json!({"url": "http://h:1/x"});
                    let delayed = json!({"url": "http://h:1/x", "delay_ms": raw[i].2 * 50});
                    let retry = json!({"max_attempts": 1 + raw[i].2 as u32, "initial_backoff_ms": 10});
                    if is_tcc {
                        json!({"name": names[i], "try": ep, "confirm": ep, "cancel": delayed, "depends_on": deps, "retry": retry})
                    } else if raw[i].1 {
                        json!({"name": names[i], "action": ep, "compensation": delayed, "depends_on": deps, "retry": retry})
                    } else {
                        json!({"name": names[i], "action": ep, "depends_on": deps, "retry": retry})
                    }
                })
                .collect();
            def(json!({"name": "p", "mode": if is_tcc {"tcc"} else {"saga"}, "steps": steps, "timeout_ms": 5_000}))
        })
}

/// The kinds of event a simulated run draws from its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A call in flight is answered.
    Answer,
    /// A timer fires (at the wake time, or early).
    Tick,
    /// An operator aborts (rejected unless running).
    Abort,
    /// The shell crashed: answers in flight are lost, the saga is loaded again.
    Resume,
    /// An operator retries (rejected unless stuck).
    Retry,
    /// An answer arrives again, or for an attempt that is not in flight.
    Stale,
    /// The shell begins a graceful stop: no new calls until the next Resume.
    Stop,
    /// An operator pauses (rejected unless active and not paused).
    Pause,
    /// An operator resumes a paused saga.
    Unpause,
    /// An operator skips a step (rejected unless it is stuck and the saga not paused).
    Skip,
}

const KINDS: [Kind; 10] = [
    Kind::Answer,
    Kind::Tick,
    Kind::Abort,
    Kind::Resume,
    Kind::Retry,
    Kind::Stale,
    Kind::Stop,
    Kind::Pause,
    Kind::Unpause,
    Kind::Skip,
];

/// What one simulated run observed.
struct Run {
    state: SagaState,
    log: Vec<(usize, Phase, CallOutcome)>,
    /// Event kinds that were applied and accepted (an abort or retry that was not rejected).
    accepted: Vec<Kind>,
}

/// The simulated shell and participant around one saga.
struct Sim<'a> {
    d: &'a SagaDefinition,
    dependents: Vec<Vec<usize>>,
    s: SagaState,
    now: i64,
    wake: Option<i64>,
    inflight: Vec<(usize, Phase, u32)>,
    answered: Vec<(usize, Phase, u32)>,
    log: Vec<(usize, Phase, CallOutcome)>,
    /// Calls sent per (step, phase) since the operator last renewed that budget.
    spent: std::collections::HashMap<(usize, Phase), u32>,
    confirms_started: bool,
    /// Forward calls in flight when the deadline passed: their answers count as unknown.
    overtaken: Vec<(usize, Phase, u32)>,
    stopping: bool,
    /// Calls whose answers a restart lost, to be sent again as the same attempts.
    resending: Vec<(usize, Phase, u32)>,
    accepted: Vec<Kind>,
    /// History records the machine asked for.
    recorded: usize,
}

impl Sim<'_> {
    fn input(&self, r: u8) -> Input {
        Input {
            now_ms: self.now,
            jitter: 0.5 + (r % 6) as f64 / 10.0,
            hold_calls: self.stopping,
        }
    }

    /// Applies `event`, checks the commands against the contract, and records what they start.
    fn step(&mut self, kind: Kind, event: Event, r: u8) -> Result<(), Rejected> {
        let before = self.s.clone();
        let cmds = self.s.apply(self.d, self.input(r), &event)?;
        self.accepted.push(kind);
        if before.status == SagaStatus::Running
            && self.s.error.as_deref() == Some("deadline exceeded")
        {
            // Lost calls waiting to go again are in flight too, from the participant's view.
            let fwd: Vec<_> = self
                .inflight
                .iter()
                .chain(&self.resending)
                .filter(|c| c.1.is_forward())
                .copied()
                .collect();
            self.overtaken.extend(fwd);
        }
        if event == Event::Retry {
            for (i, st) in before.steps.iter().enumerate().filter(|(_, st)| st.stuck) {
                self.spent.insert((i, st.phase), 0);
            }
        }
        self.wake = None;
        if self.s.paused_at.is_some() {
            assert!(
                !cmds.iter().any(|c| matches!(c, Command::Call { .. })),
                "a call started while paused: {cmds:?}"
            );
            assert_eq!(self.s.wake_at, None, "a paused saga waits for nothing");
        }
        for c in cmds {
            match c {
                Command::Call {
                    step,
                    phase,
                    attempt,
                } => self.check_call(step, phase, attempt),
                Command::WakeAt(t) => self.wake = Some(t),
                Command::Record(r) => {
                    assert!(r.started_at <= r.finished_at, "{r:?}");
                    self.recorded += 1;
                }
                Command::Alert { .. }
                | Command::Finished(_)
                | Command::RetryScheduled { .. }
                | Command::DelayScheduled { .. }
                | Command::UndoStarted { .. } => {}
            }
        }
        assert_eq!(
            self.wake, self.s.wake_at,
            "the WakeAt command is the stored wake"
        );
        Ok(())
    }

    fn check_call(&mut self, step: usize, phase: Phase, attempt: u32) {
        let (s, d) = (&self.s, self.d);
        assert!(!self.stopping, "a call started while the shell is stopping");
        if let Some(k) = self
            .resending
            .iter()
            .position(|c| *c == (step, phase, attempt))
        {
            // The same call again (same attempt, same key): checked when first sent, not charged.
            self.resending.remove(k);
            self.inflight.push((step, phase, attempt));
            return;
        }
        let spent = self.spent.entry((step, phase)).or_default();
        *spent += 1;
        assert!(
            *spent <= d.steps[step].retry.max_attempts,
            "step {step} {phase:?} called {spent} times, max_attempts {}",
            d.steps[step].retry.max_attempts
        );
        assert_eq!(
            attempt,
            s.steps[step].calls(phase),
            "attempt numbers count every call"
        );
        // No compensation before every dependent is settled, nor of a step that did nothing.
        if !phase.is_forward() && phase != Phase::Confirm {
            for &j in &self.dependents[step] {
                assert!(
                    s.steps[j].undo_settled(),
                    "step {step} undone before dependent {j}"
                );
            }
            assert!(
                s.steps[step].may_have_effect,
                "undoing a step that did nothing"
            );
            assert!(!self.confirms_started, "cancel after a confirm");
        }
        if phase == Phase::Confirm {
            self.confirms_started = true;
            assert!(
                s.steps.iter().all(|x| matches!(
                    x.status,
                    StepStatus::Tried | StepStatus::Confirming | StepStatus::Confirmed
                )),
                "confirm before every try succeeded"
            );
        }
        if phase.is_forward() {
            assert!(
                d.steps[step]
                    .deps
                    .iter()
                    .all(|&k| s.steps[k].forward_done()),
                "forward before deps"
            );
        }
        self.inflight.push((step, phase, attempt));
    }

    fn answer(&mut self, pick: usize, outcome: CallOutcome, r: u8) {
        let (step, phase, attempt) = self.inflight.remove(pick % self.inflight.len());
        let seen = if self.overtaken.contains(&(step, phase, attempt)) {
            CallOutcome::Unknown
        } else {
            outcome
        };
        self.log.push((step, phase, seen));
        self.answered.push((step, phase, attempt));
        self.now += (r % 7) as i64 * 100;
        let ev = finished(step, phase, attempt, outcome);
        self.step(Kind::Answer, ev, r)
            .expect("answers are never rejected");
    }

    /// A restart: answers in flight are lost; each of those calls is sent again, as the same
    /// attempt, once its timeout has run out since it was sent, and nothing else changes.
    fn resume(&mut self, r: u8) {
        self.resending.append(&mut self.inflight);
        self.stopping = false;
        let before = self.s.clone();
        self.step(Kind::Resume, Event::Resume, r)
            .expect("resume is never rejected");
        for &(i, phase, attempt) in &self.resending {
            let st = &self.s.steps[i];
            assert!(
                st.in_flight && st.phase == phase && st.calls(phase) == attempt,
                "a lost call is still in flight until sent again: {st:?}"
            );
            let over = st.started_at.unwrap() + self.d.steps[i].timeout_ms as i64;
            // (A call held by a pause may be overdue by now: then it goes at once.)
            assert_eq!(
                st.resend_at,
                Some(over.max(self.now)),
                "sent again when it cannot be running"
            );
            // Woken for it, unless paused: then it goes once resumed.
            assert!(
                self.s.paused_at.is_some() || self.wake.is_some_and(|w| w <= over),
                "and woken for it"
            );
        }
        if before.wake_at.is_none_or(|t| t > self.now) {
            // A lost call's resend (now, or later) is the only change: its times.
            let unchanged = |s: &StepState| match s.in_flight {
                true => StepState {
                    resend_at: None,
                    started_at: None,
                    updated_at: 0,
                    ..s.clone()
                },
                false => s.clone(),
            };
            assert!(
                self.s
                    .steps
                    .iter()
                    .map(unchanged)
                    .eq(before.steps.iter().map(unchanged)),
                "a restart with nothing due changes no step but when lost calls go again"
            );
        }
    }

    fn random_event(&mut self, r: u8, r2: u8) {
        match KINDS[r2 as usize % KINDS.len()] {
            Kind::Answer if !self.inflight.is_empty() => {
                let outcome = match (r / 4) % 5 {
                    0..=2 => CallOutcome::Success,
                    3 => CallOutcome::Failure,
                    _ => CallOutcome::Unknown,
                };
                self.answer(r as usize, outcome, r);
            }
            Kind::Answer | Kind::Tick => {
                // Usually at the wake time, sometimes early (an early tick changes nothing due).
                self.now = match self.wake {
                    Some(t) if !r.is_multiple_of(3) => self.now.max(t),
                    _ => self.now + (r % 5) as i64 * 10,
                };
                self.step(Kind::Tick, Event::Tick, r)
                    .expect("ticks are never rejected");
            }
            Kind::Abort => {
                let status = self.s.status;
                let res = self.step(Kind::Abort, Event::Abort, r);
                assert_eq!(
                    res.is_ok(),
                    status == SagaStatus::Running,
                    "abort only while running"
                );
            }
            Kind::Retry => {
                let status = self.s.status;
                let res = self.step(Kind::Retry, Event::Retry, r);
                assert_eq!(
                    res.is_ok(),
                    status == SagaStatus::Stuck,
                    "retry only when stuck"
                );
            }
            Kind::Resume => self.resume(r),
            Kind::Pause => {
                let (active, paused) = (self.s.status.is_active(), self.s.paused_at.is_some());
                let res = self.step(Kind::Pause, Event::Pause, r);
                assert_eq!(
                    res.is_ok(),
                    active && !paused,
                    "pause only an active saga, once"
                );
            }
            Kind::Unpause => {
                let paused = self.s.paused_at.is_some();
                let before = self.s.clone();
                let res = self.step(Kind::Unpause, Event::Unpause, r);
                assert_eq!(res.is_ok(), paused, "resume only a paused saga");
                if let (Ok(()), Some(p)) = (res, before.paused_at) {
                    // Waits move by the time it was paused (the advance may then use them).
                    let held = self.now - p;
                    if before.status == SagaStatus::Running && self.s.status == SagaStatus::Running
                    {
                        assert_eq!(
                            self.s.deadline_at,
                            before.deadline_at.map(|t| t + held),
                            "the deadline waited with it"
                        );
                    }
                }
            }
            Kind::Skip => {
                let i = r as usize % self.s.steps.len();
                let ok = self.s.steps[i].stuck && self.s.paused_at.is_none();
                let phase = self.s.steps[i].phase;
                let res = self.step(Kind::Skip, Event::Skip(i), r);
                assert_eq!(
                    res.is_ok(),
                    ok,
                    "skip only a stuck step of a saga not paused"
                );
                if ok {
                    let st = &self.s.steps[i];
                    assert!(!st.stuck && st.phase == phase, "{st:?}");
                    assert!(
                        matches!(
                            st.status,
                            StepStatus::Compensated | StepStatus::Cancelled | StepStatus::Confirmed
                        ),
                        "a skipped step counts as done: {st:?}"
                    );
                }
            }
            Kind::Stop => {
                self.stopping = true;
                self.accepted.push(Kind::Stop);
            }
            Kind::Stale => {
                let Some(&(step, phase, attempt)) = (!self.answered.is_empty())
                    .then(|| &self.answered[r as usize % self.answered.len()])
                    .or_else(|| self.inflight.first())
                else {
                    return;
                };
                // Again for an answered call, or a wrong attempt of one still in flight.
                let attempt = if self.answered.is_empty() {
                    attempt + 1
                } else {
                    attempt
                };
                let (before, recorded) = (self.s.clone(), self.recorded);
                let outcome = [
                    CallOutcome::Success,
                    CallOutcome::Failure,
                    CallOutcome::Unknown,
                ][r as usize % 3];
                let ev = finished(step, phase, attempt, outcome);
                self.step(Kind::Stale, ev, r)
                    .expect("answers are never rejected");
                assert_eq!(self.s, before, "a stale answer changes nothing");
                assert_eq!(self.recorded, recorded, "nor enters the history");
            }
        }
    }
}

/// Drives a saga with events drawn from `script` (two bytes an event), then to rest: a stopping
/// shell restarts, answers come back as successes, and an operator retries a stuck saga.
fn simulate(d: &SagaDefinition, script: &[u8]) -> Run {
    let mut sim = Sim {
        d,
        dependents: d.dependents().to_vec(),
        s: SagaState::new(d, T0),
        now: T0,
        wake: None,
        inflight: vec![],
        answered: vec![],
        log: vec![],
        spent: Default::default(),
        confirms_started: false,
        overtaken: vec![],
        stopping: false,
        resending: vec![],
        accepted: vec![],
        recorded: 0,
    };
    sim.step(Kind::Tick, Event::Start, 0).unwrap();
    for pair in script.chunks(2) {
        if sim.s.status.is_terminal() {
            break;
        }
        sim.random_event(pair[0], pair.get(1).copied().unwrap_or(pair[0]));
    }
    if sim.stopping {
        sim.resume(0);
    }
    sim.now += 1; // a lost call's resend may be due now: the loop below sends it
    for _ in 0..10_000 {
        if !sim.inflight.is_empty() {
            sim.answer(0, CallOutcome::Success, 1);
        } else if let Some(t) = sim.wake {
            sim.now = sim.now.max(t);
            sim.step(Kind::Tick, Event::Tick, 1).unwrap();
        } else if sim.s.paused_at.is_some() {
            sim.step(Kind::Unpause, Event::Unpause, 1).unwrap();
        } else if sim.s.status == SagaStatus::Stuck {
            sim.step(Kind::Retry, Event::Retry, 1).unwrap();
        } else {
            break;
        }
    }
    Run {
        state: sim.s,
        log: sim.log,
        accepted: sim.accepted,
    }
}

#[test]
fn the_simulation_reaches_every_event_kind() {
    // A fixed pseudo-random walk over many sagas: every kind is applied and accepted somewhere,
    // so the property below really exercises aborts, restarts, retries and stale answers.
    let mut seen = Vec::new();
    let mut x: u32 = 12345;
    let mut byte = || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (x >> 16) as u8
    };
    for n in 1..=5 {
        for comp in [true, false] {
            let steps: Vec<Value> = (0..n)
                .map(|i| {
                    let mut s = step(&format!("s{i}"), comp);
                    s["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 10});
                    s
                })
                .collect();
            let d = def(json!({"name": "p", "steps": steps}));
            for _ in 0..40 {
                let script: Vec<u8> = (0..64).map(|_| byte()).collect();
                seen.extend(simulate(&d, &script).accepted);
            }
        }
    }
    for k in KINDS {
        assert!(seen.contains(&k), "{k:?} never applied");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_saga_comes_to_rest_with_its_invariants(d in arb_def(), script in prop::collection::vec(any::<u8>(), 2..128)) {
        let Run { state: s, log, .. } = simulate(&d, &script);
        prop_assert!(s.status.is_terminal(), "{:?}", s.status);
        prop_assert!(s.steps.iter().all(|x| !x.in_flight));
        prop_assert_eq!(s.next_wake(), None);
        if s.status == SagaStatus::Succeeded {
            let want = if d.mode == Mode::Tcc { StepStatus::Confirmed } else { StepStatus::Succeeded };
            prop_assert!(s.steps.iter().all(|x| x.status == want));
            prop_assert_eq!(&s.error, &None, "a succeeded saga has no error");
        } else {
            prop_assert!(s.error.is_some(), "a compensated saga says why");
        }
        for (i, st) in s.steps.iter().enumerate() {
            let forward: Vec<_> = log.iter().filter(|(k, p, _)| *k == i && p.is_forward()).map(|x| x.2).collect();
            let undone = log.iter().any(|(k, p, _)| *k == i && matches!(p, Phase::Compensation | Phase::Cancel));
            // A step never called, or only ever answered "no", is never compensated.
            if forward.iter().all(|o| *o == CallOutcome::Failure) {
                prop_assert!(!undone, "step {} compensated without effect", i);
                prop_assert!(matches!(st.status, StepStatus::Skipped | StepStatus::Failed | StepStatus::Pending), "{:?}", st.status);
            }
            // In a compensated saga, everything that may have taken effect was undone.
            if s.status == SagaStatus::Compensated && st.may_have_effect {
                prop_assert!(matches!(st.status, StepStatus::Compensated | StepStatus::Cancelled), "{:?}", st.status);
            }
            if s.status == SagaStatus::Compensated && forward.contains(&CallOutcome::Success) {
                prop_assert!(matches!(st.status, StepStatus::Compensated | StepStatus::Cancelled));
            }
        }
    }

    #[test]
    fn decide_is_pure(d in arb_def(), r in any::<u8>()) {
        let s = SagaState::new(&d, T0);
        let input = Input::new(T0 + r as i64, 0.7);
        let a = s.decide(&d, input, &Event::Start).unwrap();
        let b = s.decide(&d, input, &Event::Start).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&s, &SagaState::new(&d, T0));
    }
}

// ---- DTM's protocol: the rules that differ (domain/protocol.rs) ----

fn dtm(n: usize) -> SagaDefinition {
    let mut d = seq(n);
    d.protocol = crate::domain::Protocol::Dtm;
    d
}

#[test]
fn dtm_ongoing_is_asked_again_as_the_same_attempt_after_the_interval() {
    let d = dtm(1);
    let (mut s, _) = start(&d);
    let c = s
        .apply(
            &d,
            at(T0 + 10),
            &finished(0, Phase::Action, 1, CallOutcome::Ongoing),
        )
        .unwrap();
    let initial = d.steps[0].retry.initial_backoff_ms as i64;
    assert_eq!(
        wake(&c),
        Some(T0 + 10 + initial),
        "the first interval, no growth"
    );
    assert_eq!(s.steps[0].status, StepStatus::RetryScheduled);
    let c = s.apply(&d, at(T0 + 10 + initial), &Event::Tick).unwrap();
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Action, 1)],
        "the same attempt, none spent"
    );
    // Asked again and again: still attempt 1, still the same wait.
    let c = s
        .apply(
            &d,
            at(T0 + 20 + initial),
            &finished(0, Phase::Action, 1, CallOutcome::Ongoing),
        )
        .unwrap();
    assert_eq!(wake(&c), Some(T0 + 20 + 2 * initial));
    assert_eq!(s.steps[0].attempts, 1);
}

#[test]
fn dtm_compensates_the_refused_step_too_and_retries_a_refused_compensation() {
    let d = dtm(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0 + 5),
            &finished(1, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    // Reverse order: the refused step 1 first (DTM calls its compensation as well), then 0.
    assert_eq!(calls(&c), vec![(1, Phase::Compensation, 1)]);
    let c = s
        .apply(
            &d,
            at(T0 + 6),
            &finished(1, Phase::Compensation, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(
        s.status,
        SagaStatus::Compensating,
        "a refused undo is retried, not stuck"
    );
    assert!(wake(&c).is_some());
    // Never stuck for running out: an undo is retried without limit.
    let max = d.steps[1].retry.max_attempts;
    s.steps[1].compensation_attempts = max + 5;
    s.steps[1].in_flight = true;
    s.steps[1].status = StepStatus::Compensating;
    s.apply(
        &d,
        at(T0 + 7),
        &finished(1, Phase::Compensation, max + 5, CallOutcome::Unknown),
    )
    .unwrap();
    assert_eq!(s.status, SagaStatus::Compensating);
    assert!(!s.steps[1].stuck);
}

#[test]
fn natively_a_refused_step_is_not_undone_and_a_refused_undo_is_stuck() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0 + 5),
            &finished(1, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Compensation, 1)],
        "step 1 did nothing"
    );
    s.apply(
        &d,
        at(T0 + 6),
        &finished(0, Phase::Compensation, 1, CallOutcome::Failure),
    )
    .unwrap();
    assert_eq!(s.status, SagaStatus::Stuck);
}

#[test]
fn wake_makes_what_waits_for_its_time_due_now() {
    let d = seq(1);
    let (mut s, _) = start(&d);
    s.apply(
        &d,
        at(T0 + 1),
        &finished(0, Phase::Action, 1, CallOutcome::Unknown),
    )
    .unwrap();
    assert!(s.steps[0].next_attempt_at.unwrap() > T0 + 1);
    let c = s.apply(&d, at(T0 + 2), &Event::Wake).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 2)], "the retry goes now");
    let (mut done, _) = start(&d);
    done.apply(
        &d,
        at(T0),
        &finished(0, Phase::Action, 1, CallOutcome::Success),
    )
    .unwrap();
    assert_eq!(
        done.apply(&d, at(T0), &Event::Wake),
        Err(Rejected::NotActive(SagaStatus::Succeeded))
    );
}

// ---- DTM's TCC: prepared by its client, branches registered, then submit or abort ----

/// A prepared TCC transaction with `n` branches registered (`01`, `02`, …).
fn dtm_tcc(n: usize, timeout_to_fail: u64) -> (SagaDefinition, SagaState) {
    use crate::domain::dtm::{parse_branch, parse_prepare, register};
    let prepare = json!({"gid": "g-tcc", "trans_type": "tcc", "timeout_to_fail": timeout_to_fail});
    let mut d = parse_prepare(&prepare, &[]).expect("valid").def;
    let mut s = SagaState::new(&d, T0);
    s.apply(&d, at(T0), &Event::Start).unwrap();
    for i in 1..=n {
        let b = json!({"gid": "g-tcc", "trans_type": "tcc", "branch_id": format!("{i:02}"),
            "data": "{}", "confirm": "http://h:1/confirm", "cancel": "http://h:1/cancel"});
        let step = parse_branch(&b, &prepare).expect("valid branch").step;
        (d, s) = register(&d, &s, step, T0).unwrap().expect("new");
    }
    (d, s)
}

#[test]
fn dtm_tcc_waits_prepared_and_a_submit_confirms_the_last_registered_first() {
    let (d, mut s) = dtm_tcc(3, 0);
    assert_eq!(s.status, SagaStatus::Prepared);
    assert_eq!(
        s.steps.iter().map(|x| x.status).collect::<Vec<_>>(),
        [StepStatus::Tried; 3],
        "the client tries"
    );
    let c = s.apply(&d, at(T0 + 1), &Event::Tick).unwrap();
    assert!(calls(&c).is_empty(), "nothing is called while prepared");
    assert_eq!(wake(&c), Some(T0 + 35_000), "DTM's default: 35 s prepared");
    let c = s.apply(&d, at(T0 + 2), &Event::Submit).unwrap();
    assert_eq!(s.status, SagaStatus::Confirming);
    assert_eq!(calls(&c), vec![(2, Phase::Confirm, 1)], "one at a time");
    let c = s
        .apply(
            &d,
            at(T0 + 3),
            &finished(2, Phase::Confirm, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Confirm, 1)]);
    s.apply(
        &d,
        at(T0 + 4),
        &finished(1, Phase::Confirm, 1, CallOutcome::Success),
    )
    .unwrap();
    let c = s
        .apply(
            &d,
            at(T0 + 5),
            &finished(0, Phase::Confirm, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Succeeded);
    assert!(c.contains(&Command::Finished(SagaStatus::Succeeded)));
    assert_eq!(
        s.apply(&d, at(T0 + 6), &Event::Submit),
        Err(Rejected::NotPrepared(SagaStatus::Succeeded))
    );
}

#[test]
fn dtm_tcc_abort_or_its_deadline_cancels_every_branch_last_first() {
    for abort in [true, false] {
        let (d, mut s) = dtm_tcc(2, 5);
        let c = if abort {
            s.apply(&d, at(T0 + 1), &Event::Abort).unwrap()
        } else {
            assert!(calls(&s.apply(&d, at(T0 + 4_999), &Event::Tick).unwrap()).is_empty());
            s.apply(&d, at(T0 + 5_000), &Event::Tick).unwrap()
        };
        assert_eq!(s.status, SagaStatus::Compensating, "abort {abort}");
        assert_eq!(calls(&c), vec![(1, Phase::Cancel, 1)]);
        let c = s
            .apply(
                &d,
                at(T0 + 6_000),
                &finished(1, Phase::Cancel, 1, CallOutcome::Success),
            )
            .unwrap();
        assert_eq!(calls(&c), vec![(0, Phase::Cancel, 1)]);
        s.apply(
            &d,
            at(T0 + 6_001),
            &finished(0, Phase::Cancel, 1, CallOutcome::Success),
        )
        .unwrap();
        assert_eq!(s.status, SagaStatus::Compensated);
    }
}

#[test]
fn dtm_tcc_takes_branches_only_while_prepared_and_the_same_one_once() {
    use crate::domain::dtm::{parse_branch, register, NotRegistered};
    let (d, s) = dtm_tcc(1, 0);
    let prepare = json!({"gid": "g-tcc", "trans_type": "tcc"});
    let b = |confirm: &str| {
        let b = json!({"gid": "g-tcc", "trans_type": "tcc", "branch_id": "01", "data": "{}",
            "confirm": confirm, "cancel": "http://h:1/cancel"});
        parse_branch(&b, &prepare).unwrap().step
    };
    assert_eq!(
        register(&d, &s, b("http://h:1/confirm"), T0),
        Ok(None),
        "again: the same"
    );
    assert_eq!(
        register(&d, &s, b("http://h:1/other"), T0),
        Err(NotRegistered::Conflict("01".into()))
    );
    let mut submitted = s.clone();
    submitted.apply(&d, at(T0), &Event::Submit).unwrap();
    let mut late = b("http://h:1/confirm");
    late.name = "02".into();
    assert!(matches!(
        register(&d, &submitted, late, T0),
        Err(NotRegistered::Rejected(Rejected::NotPrepared(_)))
    ));
    // An empty TCC transaction submitted ends at once, as in DTM.
    let (d0, mut s0) = dtm_tcc(0, 0);
    let c = s0.apply(&d0, at(T0), &Event::Submit).unwrap();
    assert_eq!(s0.status, SagaStatus::Succeeded);
    assert!(c.contains(&Command::Finished(SagaStatus::Succeeded)));
}

// ---- DTM's msg: delivered after its client committed ----

/// A prepared msg with `n` actions, asking `http://h:1/qp` when left prepared (if `check`).
fn dtm_msg(n: usize, check: bool) -> (SagaDefinition, SagaState) {
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"action": format!("http://h:1/a{i}")}))
        .collect();
    let payloads: Vec<Value> = (0..n).map(|_| json!("{}")).collect();
    let qp = if check {
        json!("http://h:1/qp")
    } else {
        Value::Null
    };
    let body = json!({"gid": "g-msg", "trans_type": "msg", "steps": steps, "payloads": payloads,
        "query_prepared": qp, "timeout_to_fail": 5});
    let d = crate::domain::dtm::parse_prepare(&body, &[])
        .expect("valid")
        .def;
    let (s, c) = start(&d);
    assert!(calls(&c).is_empty(), "nothing is sent while prepared");
    (d, s)
}

#[test]
fn dtm_msg_left_prepared_asks_its_client_and_delivers_only_a_commit() {
    // Committed: asked once at the deadline, then the actions in order.
    let (d, mut s) = dtm_msg(2, true);
    assert_eq!(s.status, SagaStatus::Prepared);
    let c = s.apply(&d, at(T0 + 5_000), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 1)], "the question");
    assert_eq!(d.steps[0].forward.method, "GET");
    let c = s
        .apply(
            &d,
            at(T0 + 5_001),
            &finished(0, Phase::Action, 1, CallOutcome::Ongoing),
        )
        .unwrap();
    assert!(calls(&c).is_empty() && s.status == SagaStatus::Prepared);
    let again = wake(&c).unwrap();
    let c = s.apply(&d, at(again), &Event::Tick).unwrap();
    assert_eq!(
        calls(&c),
        vec![(0, Phase::Action, 1)],
        "asked again, no attempt spent"
    );
    let c = s
        .apply(
            &d,
            at(again + 1),
            &finished(0, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Running);
    assert_eq!(calls(&c), vec![(1, Phase::Action, 1)]);
    // Rolled back: nothing is sent, the msg ends failed.
    let (d, mut s) = dtm_msg(2, true);
    s.apply(&d, at(T0 + 5_000), &Event::Tick).unwrap();
    let c = s
        .apply(
            &d,
            at(T0 + 5_001),
            &finished(0, Phase::Action, 1, CallOutcome::Failure),
        )
        .unwrap();
    assert!(calls(&c).is_empty());
    assert_eq!(s.status, SagaStatus::Compensated);
    // Nobody to ask: DTM takes that for a commit.
    let (d, mut s) = dtm_msg(1, false);
    let c = s.apply(&d, at(T0 + 5_000), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 1)]);
    assert_eq!(s.status, SagaStatus::Running);
}

#[test]
fn dtm_msg_submitted_delivers_every_action_until_it_succeeds() {
    let (d, mut s) = dtm_msg(2, true);
    let c = s.apply(&d, at(T0 + 1), &Event::Submit).unwrap();
    assert_eq!(
        calls(&c),
        vec![(1, Phase::Action, 1)],
        "not asked: submitted"
    );
    assert_eq!(s.steps[0].attempts, 0);
    // A refusal is asked again, past any attempt limit.
    let max = d.steps[1].retry.max_attempts;
    s.steps[1].attempts = max;
    let c = s
        .apply(
            &d,
            at(T0 + 2),
            &finished(1, Phase::Action, max, CallOutcome::Failure),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Running, "never rolled back");
    let next = wake(&c).unwrap();
    let c = s.apply(&d, at(next), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(1, Phase::Action, max + 1)]);
    let c = s
        .apply(
            &d,
            at(next + 1),
            &finished(1, Phase::Action, max + 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(
        calls(&c),
        vec![(2, Phase::Action, 1)],
        "then the next, in order"
    );
    let c = s
        .apply(
            &d,
            at(next + 2),
            &finished(2, Phase::Action, 1, CallOutcome::Success),
        )
        .unwrap();
    assert_eq!(s.status, SagaStatus::Succeeded);
    assert!(c.contains(&Command::Finished(SagaStatus::Succeeded)));
}

#[test]
fn dtm_msg_aborted_while_prepared_sends_nothing() {
    let (d, mut s) = dtm_msg(2, true);
    let c = s.apply(&d, at(T0 + 1), &Event::Abort).unwrap();
    assert!(calls(&c).is_empty());
    assert_eq!(s.status, SagaStatus::Compensated);
    assert!(c.contains(&Command::Finished(SagaStatus::Compensated)));
}

#[test]
fn a_step_state_is_stored_without_its_zero_fields_and_reads_back_from_either_form() {
    let fresh = StepState::fresh(Phase::Action, T0);
    let compact = serde_json::to_value(&fresh).unwrap();
    assert_eq!(
        compact,
        json!({"status": "pending", "phase": "action", "updated_at": T0})
    );
    // Rows written before: every field spelt out.
    let full = json!({"status": "pending", "phase": "action", "attempts": 0,
        "compensation_attempts": 0, "confirm_attempts": 0, "budget_base": 0,
        "may_have_effect": false, "in_flight": false, "stuck": false, "last_error": null,
        "next_attempt_at": null, "updated_at": T0});
    assert_eq!(serde_json::from_value::<StepState>(full).unwrap(), fresh);
    let mut busy = fresh.clone();
    busy.attempts = 2;
    busy.in_flight = true;
    busy.last_error = Some("503".into());
    let back: StepState = serde_json::from_value(serde_json::to_value(&busy).unwrap()).unwrap();
    assert_eq!(back, busy);
}
