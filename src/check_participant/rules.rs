//! The rules a participant must keep (docs/barrier.md, "What check-participant checks"), each a
//! scenario on a fresh saga id. A probe, when given, turns "answered right" into "did right".

use super::client::{fresh_saga, Answer, Client, Headers};
use super::{Outcome, Verdict};
use crate::domain::Phase;
use serde_json::Value;

/// How many identical calls the concurrency rule sends at once.
const CONCURRENT: usize = 8;

/// Findings of one rule while it runs.
struct Check {
    rule: &'static str,
    fails: Vec<String>,
    warns: Vec<String>,
}

impl Check {
    fn new(rule: &'static str) -> Check {
        Check {
            rule,
            fails: Vec::new(),
            warns: Vec::new(),
        }
    }

    fn fail(&mut self, why: String) {
        self.fails.push(why);
    }

    fn expect(&mut self, holds: bool, why: impl FnOnce() -> String) {
        if !holds {
            self.fails.push(why());
        }
    }

    fn done(self, passed: &str) -> Outcome {
        let (verdict, detail) = if !self.fails.is_empty() {
            (Verdict::Fail, self.fails.join("; "))
        } else if !self.warns.is_empty() {
            (Verdict::Warn, self.warns.join("; "))
        } else {
            (Verdict::Pass, passed.to_string())
        };
        Outcome {
            rule: self.rule,
            verdict,
            detail,
        }
    }
}

fn skip(rule: &'static str, why: &str) -> Outcome {
    Outcome {
        rule,
        verdict: Verdict::Skip,
        detail: why.to_string(),
    }
}

/// The state digest, or `None` without a probe; a probe that fails is a finding.
async fn snap(c: &Client, chk: &mut Check) -> Option<Value> {
    match c.probe().await? {
        Ok(v) => Some(v),
        Err(e) => {
            chk.fail(format!("probe: {e}"));
            None
        }
    }
}

/// Checks that the state is back to `before` (when there is a probe).
async fn unchanged(c: &Client, chk: &mut Check, before: &Option<Value>, when: &str) {
    if let (Some(before), Some(now)) = (before, snap(c, chk).await) {
        chk.expect(&now == before, || {
            format!("{when}, the probe changed: {before} became {now}")
        });
    }
}

/// Sends a compensation, confirm or cancel; a 409/422 there is always wrong (the orchestrator
/// would make the saga stuck), and so is no 2xx.
async fn undo(c: &Client, chk: &mut Check, saga: &str, phase: Phase, what: &str) -> Answer {
    let a = c.call(saga, phase, None, Headers::Proper).await;
    if a.refused() {
        chk.fail(format!(
            "{what} answered {}: a {} must never refuse (409/422 makes the saga stuck)",
            a.describe(),
            phase.as_str()
        ));
    } else if !a.ok() {
        chk.fail(format!("{what} answered {}, not 2xx", a.describe()));
    }
    a
}

/// Sends the forward call that must succeed for a rule to say anything.
async fn forward(c: &Client, chk: &mut Check, saga: &str, phase: Phase) -> Option<Answer> {
    let a = c.call(saga, phase, None, Headers::Proper).await;
    if a.ok() {
        Some(a)
    } else {
        chk.fail(format!(
            "the {} answered {} (give a --body it accepts)",
            phase.as_str(),
            a.describe()
        ));
        None
    }
}

/// Every rule, in the order of docs/barrier.md.
pub async fn all(c: &Client) -> Vec<Outcome> {
    let saga_mode = c.url(Phase::Action).is_some();
    let tcc = c.url(Phase::Try).is_some();
    let mut out = Vec::new();
    let need_saga = "needs --action and --compensation";
    let need_tcc = "needs --try, --confirm and --cancel";
    if saga_mode {
        out.push(duplicate_action(c).await);
        out.push(concurrent_duplicates(c).await);
        out.push(null_compensation(c, Phase::Compensation, "null-compensation").await);
        out.push(hanging(c, Phase::Action, Phase::Compensation, "hanging-action").await);
        out.push(duplicate_compensation(c).await);
        out.push(race(c).await);
        out.push(repeated_rejection(c).await);
    } else {
        for rule in [
            "duplicate-action",
            "concurrent-duplicates",
            "null-compensation",
            "hanging-action",
            "duplicate-compensation",
            "action-compensation-race",
            "repeated-rejection",
        ] {
            out.push(skip(rule, need_saga));
        }
    }
    out.push(missing_headers(c, if saga_mode { Phase::Action } else { Phase::Try }).await);
    if tcc {
        out.push(null_compensation(c, Phase::Cancel, "tcc-cancel-without-try").await);
        out.push(hanging(c, Phase::Try, Phase::Cancel, "tcc-try-after-cancel").await);
        out.push(confirm_twice(c).await);
    } else {
        for rule in [
            "tcc-cancel-without-try",
            "tcc-try-after-cancel",
            "tcc-confirm-twice",
        ] {
            out.push(skip(rule, need_tcc));
        }
    }
    out
}

async fn duplicate_action(c: &Client) -> Outcome {
    let mut chk = Check::new("duplicate-action");
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    if let Some(first) = forward(c, &mut chk, &saga, Phase::Action).await {
        let after_first = snap(c, &mut chk).await;
        if before.is_some() && before == after_first {
            chk.warns
                .push("the probe saw no effect of the action; effects are unchecked".into());
        }
        let second = c.call(&saga, Phase::Action, None, Headers::Proper).await;
        chk.expect(second == first, || {
            format!(
                "the duplicate answered {}, the first {}",
                second.describe(),
                first.describe()
            )
        });
        unchanged(c, &mut chk, &after_first, "after the duplicate").await;
        undo(c, &mut chk, &saga, Phase::Compensation, "the compensation").await;
    }
    chk.done("the duplicate replayed the first answer and changed nothing")
}

async fn concurrent_duplicates(c: &Client) -> Outcome {
    let mut chk = Check::new("concurrent-duplicates");
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    let answers = futures::future::join_all(
        (0..CONCURRENT).map(|_| c.call(&saga, Phase::Action, None, Headers::Proper)),
    )
    .await;
    let ok = answers.iter().filter(|a| a.ok()).count();
    chk.expect(ok > 0, || {
        format!("no copy answered 2xx: {}", answers[0].describe())
    });
    let distinct: Vec<&Answer> = answers.iter().fold(Vec::new(), |mut acc, a| {
        if !acc.contains(&a) {
            acc.push(a);
        }
        acc
    });
    chk.expect(distinct.len() == 1, || {
        format!(
            "{CONCURRENT} identical calls got {} different answers: {}",
            distinct.len(),
            distinct
                .iter()
                .map(|a| a.describe())
                .collect::<Vec<_>>()
                .join(" | ")
        )
    });
    // One compensation undoes one action: the state is back only if the action took effect once.
    undo(c, &mut chk, &saga, Phase::Compensation, "the compensation").await;
    unchanged(
        c,
        &mut chk,
        &before,
        &format!("after {CONCURRENT} concurrent copies and one compensation"),
    )
    .await;
    chk.done(&format!(
        "{CONCURRENT} concurrent copies got one answer and took effect once"
    ))
}

async fn null_compensation(c: &Client, phase: Phase, rule: &'static str) -> Outcome {
    let mut chk = Check::new(rule);
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    let what = format!("a {} for a call never sent", phase.as_str());
    undo(c, &mut chk, &saga, phase, &what).await;
    unchanged(c, &mut chk, &before, &format!("after {what}")).await;
    chk.done(&format!("{what} answered 2xx and changed nothing"))
}

async fn hanging(
    c: &Client,
    forward_phase: Phase,
    undo_phase: Phase,
    rule: &'static str,
) -> Outcome {
    let mut chk = Check::new(rule);
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    let what = format!(
        "the {} (before its {})",
        undo_phase.as_str(),
        forward_phase.as_str()
    );
    undo(c, &mut chk, &saga, undo_phase, &what).await;
    let late = c.call(&saga, forward_phase, None, Headers::Proper).await;
    chk.expect(late.status() == Some(409), || {
        format!(
            "the {} arriving after its {} answered {}, not 409",
            forward_phase.as_str(),
            undo_phase.as_str(),
            late.describe()
        )
    });
    unchanged(c, &mut chk, &before, "after the late call").await;
    chk.done(&format!(
        "the {} after its {} answered 409 and changed nothing",
        forward_phase.as_str(),
        undo_phase.as_str()
    ))
}

async fn duplicate_compensation(c: &Client) -> Outcome {
    let mut chk = Check::new("duplicate-compensation");
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    if forward(c, &mut chk, &saga, Phase::Action).await.is_some() {
        let first = undo(c, &mut chk, &saga, Phase::Compensation, "the compensation").await;
        let second = undo(c, &mut chk, &saga, Phase::Compensation, "its duplicate").await;
        chk.expect(first == second, || {
            format!(
                "the duplicate compensation answered {}, the first {}",
                second.describe(),
                first.describe()
            )
        });
        unchanged(
            c,
            &mut chk,
            &before,
            "after an action and two compensations",
        )
        .await;
    }
    chk.done("the second compensation replayed the first; the action was undone once")
}

async fn race(c: &Client) -> Outcome {
    let mut chk = Check::new("action-compensation-race");
    let runs = c.target.runs;
    let (mut applied, mut refused) = (0, 0);
    for run in 1..=runs {
        let saga = fresh_saga();
        let before = snap(c, &mut chk).await;
        let (act, comp) = tokio::join!(
            c.call(&saga, Phase::Action, None, Headers::Proper),
            c.call(&saga, Phase::Compensation, None, Headers::Proper)
        );
        if comp.refused() || !comp.ok() {
            chk.fail(format!(
                "run {run}: the compensation answered {}, not 2xx",
                comp.describe()
            ));
        }
        match act.status() {
            Some(200..=299) => applied += 1,
            Some(409) => refused += 1,
            _ => chk.fail(format!(
                "run {run}: the action answered {}, neither 2xx nor 409",
                act.describe()
            )),
        }
        unchanged(c, &mut chk, &before, &format!("run {run}")).await;
        if !chk.fails.is_empty() {
            break;
        }
    }
    chk.done(&format!(
        "{runs} races: {applied} applied and undone, {refused} refused as hanging; state restored each time"
    ))
}

async fn repeated_rejection(c: &Client) -> Outcome {
    let mut chk = Check::new("repeated-rejection");
    let Some(reject) = c.target.reject_body.clone() else {
        return skip(chk.rule, "needs --reject-body");
    };
    let saga = fresh_saga();
    let before = snap(c, &mut chk).await;
    let first = c
        .call(&saga, Phase::Action, Some(&reject), Headers::Proper)
        .await;
    chk.expect(first.refused(), || {
        format!(
            "the action with --reject-body answered {}, not 409/422",
            first.describe()
        )
    });
    let again = c
        .call(&saga, Phase::Action, Some(&reject), Headers::Proper)
        .await;
    chk.expect(again == first, || {
        format!(
            "its retry answered {}, the first {}",
            again.describe(),
            first.describe()
        )
    });
    let comp = c
        .call(&saga, Phase::Compensation, Some(&reject), Headers::Proper)
        .await;
    if !comp.ok() {
        chk.fail(format!(
            "the compensation of a refused action answered {}, not 2xx",
            comp.describe()
        ));
    }
    unchanged(
        c,
        &mut chk,
        &before,
        "after a refused action and its compensation",
    )
    .await;
    chk.done("a refused action stays refused, and its compensation is a no-op")
}

async fn missing_headers(c: &Client, phase: Phase) -> Outcome {
    let mut chk = Check::new("missing-headers");
    let before = snap(c, &mut chk).await;
    for (mode, what) in [
        (Headers::Missing, "without the saga headers"),
        (Headers::WrongKey, "with a wrong Idempotency-Key"),
    ] {
        let a = c.call(&fresh_saga(), phase, None, mode).await;
        match a.status() {
            Some(400) => {}
            Some(s) if (400..500).contains(&s) && s != 409 && s != 422 => chk.warns.push(format!(
                "a call {what} answered {}; 400 is expected",
                a.describe()
            )),
            _ => chk.fail(format!("a call {what} answered {}, not 400", a.describe())),
        }
    }
    unchanged(c, &mut chk, &before, "after calls without proper headers").await;
    chk.done("calls without proper saga headers answered 400 and changed nothing")
}

async fn confirm_twice(c: &Client) -> Outcome {
    let mut chk = Check::new("tcc-confirm-twice");
    let saga = fresh_saga();
    if forward(c, &mut chk, &saga, Phase::Try).await.is_some() {
        let first = undo(c, &mut chk, &saga, Phase::Confirm, "the confirm").await;
        let second = undo(c, &mut chk, &saga, Phase::Confirm, "its duplicate").await;
        chk.expect(first == second, || {
            format!(
                "the second confirm answered {}, the first {}",
                second.describe(),
                first.describe()
            )
        });
    }
    chk.done("a try then two confirms: 2xx, the same answer")
}
