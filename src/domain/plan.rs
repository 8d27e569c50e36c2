//! A dry run's plan of a saga (docs/api.md, "Dry run"): the order its steps run and compensate
//! in, each phase's retry schedule and worst-case time, its deadline. Pure: whether its hosts
//! answer is found by `crate::reachability`.

use super::definition::{Mode, SagaDefinition};
use super::machine::Phase;
use serde::Serialize;
use utoipa::ToSchema;

/// The plan of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Plan {
    /// The forward phase's order: each level's steps start together, once the level before
    /// it succeeded (by `depends_on`).
    pub levels: Vec<Vec<String>>,
    /// The undo phase's order (compensation or cancel) should the saga turn back with every
    /// step done: each level is undone once the levels before it are; steps without an undo
    /// are left out.
    pub undo_levels: Vec<Vec<String>>,
    /// Each step's phases.
    pub steps: Vec<StepPlan>,
    /// The forward phase's deadline from the start, if it has one.
    pub deadline_ms: Option<u64>,
    /// The longest the forward phase can take by its timeouts and retries alone (the slowest
    /// path through the levels, every call timing out and every retry taken).
    pub worst_case_forward_ms: u64,
    /// What a person should look at (a deadline shorter than the retries, a step without
    /// compensation).
    pub warnings: Vec<String>,
}

/// One step in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepPlan {
    /// Its name.
    pub name: String,
    /// The steps it waits for.
    pub depends_on: Vec<String>,
    /// Timeout of one call.
    pub timeout_ms: u64,
    /// Its phases, forward first.
    pub phases: Vec<PhasePlan>,
}

/// One phase of a step in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PhasePlan {
    /// action, compensation, try, confirm or cancel.
    pub phase: &'static str,
    /// Method and URL it calls.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Its service label.
    pub service: String,
    /// Durable wait before its first call.
    pub delay_ms: u64,
    /// Calls it may make.
    pub attempts: u32,
    /// The waits between them, before jitter (jitter waits 50–100 % of each).
    pub backoffs_ms: Vec<u64>,
    /// Delay, every call timing out and every wait: the longest the phase takes before it
    /// gives up.
    pub worst_case_ms: u64,
}

/// The plan of `def`.
pub fn plan(def: &SagaDefinition) -> Plan {
    let n = def.steps.len();
    // Forward level: one more than the highest level among its dependencies.
    let mut level = vec![0usize; n];
    let mut finish = vec![0u64; n];
    let mut order: Vec<usize> = (0..n).collect();
    // Dependencies are acyclic (validated); relax until stable, n passes at most.
    for _ in 0..n {
        for i in 0..n {
            level[i] = def.steps[i]
                .deps
                .iter()
                .map(|&d| level[d] + 1)
                .max()
                .unwrap_or(0);
        }
    }
    order.sort_by_key(|&i| (level[i], i));
    let steps: Vec<StepPlan> = (0..n).map(|i| step_plan(def, i)).collect();
    for &i in &order {
        let start = def.steps[i]
            .deps
            .iter()
            .map(|&d| finish[d])
            .max()
            .unwrap_or(0);
        finish[i] = start.saturating_add(steps[i].phases[0].worst_case_ms);
    }
    let worst_case_forward_ms = finish.iter().copied().max().unwrap_or(0);
    // Undo level: one more than the highest among the steps that depend on it.
    let dependents = def.dependents();
    let mut undo = vec![0usize; n];
    for _ in 0..n {
        for i in 0..n {
            undo[i] = dependents[i]
                .iter()
                .map(|&j| undo[j] + 1)
                .max()
                .unwrap_or(0);
        }
    }
    let undo_phase = Phase::undo(def.mode);
    let mut warnings = Vec::new();
    if let Some(d) = def.timeout_ms.filter(|&d| d < worst_case_forward_ms) {
        warnings.push(format!(
            "the deadline ({d} ms) is shorter than the forward phase's worst case \
             ({worst_case_forward_ms} ms): a slow participant turns the saga back before its \
             retries run out"
        ));
    }
    if def.mode == Mode::Saga {
        for s in def.steps.iter().filter(|s| s.undo.is_none()) {
            warnings.push(format!(
                "step {:?} has no compensation: it is not undone if a later step fails",
                s.name
            ));
        }
    }
    Plan {
        levels: group(&level, def, |_| true),
        undo_levels: group(&undo, def, |i| def.steps[i].endpoint(undo_phase).is_some()),
        steps,
        deadline_ms: def.timeout_ms,
        worst_case_forward_ms,
        warnings,
    }
}

/// Step names grouped by level, in step order within a level; empty levels dropped.
fn group(level: &[usize], def: &SagaDefinition, keep: impl Fn(usize) -> bool) -> Vec<Vec<String>> {
    let top = level.iter().copied().max().unwrap_or(0);
    (0..=top)
        .map(|l| {
            (0..level.len())
                .filter(|&i| level[i] == l && keep(i))
                .map(|i| def.steps[i].name.clone())
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn step_plan(def: &SagaDefinition, i: usize) -> StepPlan {
    let s = &def.steps[i];
    let phases = match def.mode {
        Mode::Saga => vec![Phase::Action, Phase::Compensation],
        Mode::Tcc => vec![Phase::Try, Phase::Confirm, Phase::Cancel],
    };
    StepPlan {
        name: s.name.clone(),
        depends_on: s.deps.iter().map(|&d| def.steps[d].name.clone()).collect(),
        timeout_ms: s.timeout_ms,
        phases: phases
            .into_iter()
            .filter_map(|p| {
                let ep = s.endpoint(p)?;
                let backoffs_ms: Vec<u64> = (1..s.retry.max_attempts)
                    .map(|made| s.retry.backoff_ms(made))
                    .collect();
                let worst = backoffs_ms
                    .iter()
                    .fold(ep.delay_ms, |t, &b| t.saturating_add(b))
                    .saturating_add(s.timeout_ms.saturating_mul(s.retry.max_attempts as u64));
                Some(PhasePlan {
                    phase: p.as_str(),
                    method: ep.method.clone(),
                    url: ep.url.clone(),
                    service: ep.service.clone(),
                    delay_ms: ep.delay_ms,
                    attempts: s.retry.max_attempts,
                    backoffs_ms,
                    worst_case_ms: worst,
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{parse_request, Defaults};
    use serde_json::json;

    fn def(v: serde_json::Value) -> SagaDefinition {
        parse_request(&v, &Defaults::default()).unwrap()
    }

    #[test]
    fn levels_follow_the_graph_and_undo_runs_it_backwards() {
        let d = def(json!({"name": "g", "timeout_ms": 1000, "steps": [
            {"name": "a", "action": {"url": "http://h/a"}, "compensation": {"url": "http://h/ua"}},
            {"name": "b", "depends_on": ["a"], "action": {"url": "http://h/b"},
             "compensation": {"url": "http://h/ub", "delay_ms": 500}},
            {"name": "c", "depends_on": ["a"], "action": {"url": "http://h/c"},
             "retry": {"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 150,
                       "multiplier": 2.0}, "timeout_ms": 50},
            {"name": "d", "depends_on": ["b", "c"], "action": {"url": "http://h/d"},
             "compensation": {"url": "http://h/ud"}}
        ]}));
        let p = plan(&d);
        assert_eq!(p.levels, [vec!["a"], vec!["b", "c"], vec!["d"]]);
        assert_eq!(p.undo_levels, [vec!["d"], vec!["b"], vec!["a"]]);
        let c = &p.steps[2].phases[0];
        assert_eq!(c.backoffs_ms, [100, 150]);
        assert_eq!(c.worst_case_ms, 100 + 150 + 3 * 50);
        let ub = &p.steps[1].phases[1];
        assert_eq!((ub.phase, ub.delay_ms), ("compensation", 500));
        // Defaults: 5 attempts of 10 s, waits 200, 400, 800, 1600.
        let a = p.steps[0].phases[0].worst_case_ms;
        assert_eq!(a, 50_000 + 3_000);
        assert_eq!(p.worst_case_forward_ms, 3 * a);
        assert_eq!(p.deadline_ms, Some(1000));
        assert!(p.warnings[0].contains("deadline"));
        assert!(p.warnings[1].contains("\"c\" has no compensation"));
    }

    #[test]
    fn tcc_plans_three_phases() {
        let d = def(json!({"name": "t", "mode": "tcc", "steps": [
            {"name": "a", "try": {"url": "http://h/t"}, "confirm": {"url": "http://h/c"},
             "cancel": {"url": "http://h/x"}}]}));
        let p = plan(&d);
        let phases: Vec<_> = p.steps[0].phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, ["try", "confirm", "cancel"]);
        assert_eq!(p.undo_levels, [vec!["a"]]);
        assert!(p.warnings.is_empty());
    }
}
