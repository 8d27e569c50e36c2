//! Unit and property tests of the state machine: one test per rule of API.md sections 3 and 5.

use super::*;
use crate::domain::definition::{Defaults, SagaDefinition};
use crate::domain::validation::parse_request;
use proptest::prelude::*;
use serde_json::{json, Value};

const T0: i64 = 1_000_000;

fn at(now_ms: i64) -> Input {
    Input {
        now_ms,
        jitter: 1.0,
    }
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
    Event::CallFinished {
        step,
        phase,
        attempt,
        outcome,
        error: Some(format!("{outcome:?}")),
    }
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
    assert_eq!(c, vec![Command::Finished(SagaStatus::Succeeded)]);
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
    assert_eq!(c, vec![Command::Finished(SagaStatus::Compensated)]);
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
    assert_eq!(c, vec![Command::WakeAt(T0 + 100)]);
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
        c,
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
            Input {
                now_ms: T0,
                jitter: 0.5,
            },
            &finished(0, Phase::Action, 1, CallOutcome::Unknown),
        )
        .unwrap();
    assert_eq!(c, vec![Command::WakeAt(T0 + 50)]);
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
                    c[0],
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
    assert_eq!(c, vec![Command::Finished(SagaStatus::Compensated)]);
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
    assert!(matches!(c[0], Command::Alert { .. }));
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
fn resume_resends_a_call_whose_answer_was_lost() {
    let d = seq(2);
    let (mut s, _) = start(&d);
    let c = s.apply(&d, at(T0), &Event::Resume).unwrap();
    assert_eq!(s.steps[0].status, StepStatus::RetryScheduled);
    assert!(s.steps[0].may_have_effect);
    assert_eq!(c, vec![Command::WakeAt(T0 + 100)]);
    let c = s.apply(&d, at(T0 + 100), &Event::Tick).unwrap();
    assert_eq!(calls(&c), vec![(0, Phase::Action, 2)]);
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
    assert_eq!(c, vec![Command::WakeAt(T0 + 600_000)]);
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
    assert_eq!(c, vec![Command::Finished(SagaStatus::Succeeded)]);
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
    assert_eq!(c, vec![Command::Finished(SagaStatus::Compensated)]);
}

#[test]
fn wire_names_round_trip() {
    for st in ALL_SAGA_STATUSES {
        assert_eq!(SagaStatus::parse(st.as_str()), Some(st));
    }
    for p in [
        Phase::Action,
        Phase::Compensation,
        Phase::Try,
        Phase::Confirm,
        Phase::Cancel,
    ] {
        assert_eq!(Phase::parse(p.as_str()), Some(p));
    }
    assert_eq!(
        StepStatus::parse("compensation_scheduled"),
        Some(StepStatus::CompensationScheduled)
    );
    assert_eq!(
        serde_json::to_value(StepStatus::RetryScheduled).unwrap(),
        json!("retry_scheduled")
    );
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

/// What one simulated run observed.
struct Run {
    state: SagaState,
    log: Vec<(usize, Phase, CallOutcome)>,
}

/// Drives a saga to rest with answers and choices drawn from `script`.
fn simulate(d: &SagaDefinition, script: &[u8]) -> Run {
    let dependents = d.dependents();
    let mut s = SagaState::new(d, T0);
    let mut now = T0;
    let mut wake: Option<i64> = None;
    let mut inflight: Vec<(usize, Phase, u32)> = Vec::new();
    let mut log = Vec::new();
    let mut confirms_started = false;
    // Forward calls in flight when the deadline passed: their answers count as unknown.
    let mut overtaken: Vec<(usize, Phase, u32)> = Vec::new();
    let mut next = script.iter().copied().cycle();
    let mut handle = |s: &SagaState,
                      cmds: Vec<Command>,
                      inflight: &mut Vec<_>,
                      wake: &mut Option<i64>| {
        for c in cmds {
            match c {
                Command::Call {
                    step,
                    phase,
                    attempt,
                } => {
                    // Invariant: no compensation before every dependent is settled.
                    if !phase.is_forward() && phase != Phase::Confirm {
                        for &j in &dependents[step] {
                            assert!(
                                s.steps[j].undo_settled(),
                                "step {step} undone before dependent {j}"
                            );
                        }
                        assert!(
                            s.steps[step].may_have_effect,
                            "undoing a step that did nothing"
                        );
                        assert!(!confirms_started, "cancel after a confirm");
                    }
                    if phase == Phase::Confirm {
                        confirms_started = true;
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
                    inflight.push((step, phase, attempt));
                }
                Command::WakeAt(t) => *wake = Some(t),
                Command::Alert { .. } | Command::Finished(_) => {}
            }
        }
    };
    let c = s.apply(d, at(now), &Event::Start).unwrap();
    handle(&s, c, &mut inflight, &mut wake);
    for _ in 0..2_000 {
        if s.status.is_terminal() || (s.status == SagaStatus::Stuck && inflight.is_empty()) {
            break;
        }
        let r = next.next().unwrap_or(0);
        let event = if !inflight.is_empty() && (r % 4 != 0 || wake.is_none()) {
            let (step, phase, attempt) = inflight.remove(r as usize % inflight.len());
            let outcome = match (r / 4) % 5 {
                0..=2 => CallOutcome::Success,
                3 => CallOutcome::Failure,
                _ => CallOutcome::Unknown,
            };
            let seen = if overtaken.contains(&(step, phase, attempt)) {
                CallOutcome::Unknown
            } else {
                outcome
            };
            log.push((step, phase, seen));
            now += (r % 7) as i64 * 100;
            finished(step, phase, attempt, outcome)
        } else if let Some(t) = wake.take() {
            now = now.max(t);
            Event::Tick
        } else if r % 9 == 0 && s.status == SagaStatus::Running {
            Event::Abort
        } else {
            panic!("saga at rest but not finished: {s:?}");
        };
        let was_running = s.status == SagaStatus::Running;
        let c = s
            .apply(
                d,
                Input {
                    now_ms: now,
                    jitter: 0.5 + (r % 6) as f64 / 10.0,
                },
                &event,
            )
            .unwrap();
        if was_running && s.error.as_deref() == Some("deadline exceeded") {
            overtaken.extend(inflight.iter().filter(|c| c.1.is_forward()).copied());
        }
        handle(&s, c, &mut inflight, &mut wake);
    }
    Run { state: s, log }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_saga_comes_to_rest_with_its_invariants(d in arb_def(), script in prop::collection::vec(any::<u8>(), 1..64)) {
        let Run { state: s, log } = simulate(&d, &script);
        prop_assert!(matches!(s.status, SagaStatus::Succeeded | SagaStatus::Compensated | SagaStatus::Stuck), "{:?}", s.status);
        prop_assert!(s.steps.iter().all(|x| !x.in_flight));
        if s.status == SagaStatus::Succeeded {
            let want = if d.mode == Mode::Tcc { StepStatus::Confirmed } else { StepStatus::Succeeded };
            prop_assert!(s.steps.iter().all(|x| x.status == want));
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
        let input = Input { now_ms: T0 + r as i64, jitter: 0.7 };
        let a = s.decide(&d, input, &Event::Start).unwrap();
        let b = s.decide(&d, input, &Event::Start).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&s, &SagaState::new(&d, T0));
    }
}
