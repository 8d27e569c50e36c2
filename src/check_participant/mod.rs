//! `saga-orchestrator check-participant`: sends a participant the calls a saga can really bring
//! (duplicates, concurrent copies, null compensations, hanging actions, races, repeated refusals,
//! calls without headers) and reports PASS/FAIL per rule (docs/barrier.md), so that a
//! participant's own CI can prove its barrier.

mod client;
mod rules;

use clap::Args;
use std::time::Duration;

pub use client::{Answer, Target};

/// Command-line options of `check-participant`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// URL of the step's action (saga mode).
    #[arg(long)]
    pub action: Option<String>,
    /// URL of the step's compensation (saga mode).
    #[arg(long)]
    pub compensation: Option<String>,
    /// URL of the try (TCC mode).
    #[arg(long = "try", value_name = "URL")]
    pub try_: Option<String>,
    /// URL of the confirm (TCC mode).
    #[arg(long)]
    pub confirm: Option<String>,
    /// URL of the cancel (TCC mode).
    #[arg(long)]
    pub cancel: Option<String>,
    /// JSON body of every call; the participant must accept it.
    #[arg(long, default_value = "{}")]
    pub body: String,
    /// JSON body that the participant refuses with 409 (enables `repeated-rejection`).
    #[arg(long, value_name = "JSON")]
    pub reject_body: Option<String>,
    /// GET URL answering a digest of the participant's state (any JSON), to check effects.
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,
    /// Step name sent in X-Saga-Step.
    #[arg(long, default_value = "check")]
    pub step: String,
    /// How many times the action/compensation race is run.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// Extra header on every call, `Name: value` (repeatable), e.g. an API key.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Timeout of one call, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// How one rule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The participant keeps the rule.
    Pass,
    /// It breaks it.
    Fail,
    /// It keeps it, but something looks wrong (say, the probe saw no effect).
    Warn,
    /// The rule needs an option that was not given.
    Skip,
}

impl Verdict {
    /// The word printed in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The rule's name (docs/barrier.md).
    pub rule: &'static str,
    /// How it ended.
    pub verdict: Verdict,
    /// Why, for people.
    pub detail: String,
}

/// Checks the arguments and builds the target; an error is a usage mistake.
pub fn target(args: &CheckArgs) -> Result<Target, String> {
    let json = |what: &str, s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .map_err(|e| format!("--{what} is not JSON: {e}"))
    };
    let url = |what: &str, u: &Option<String>| -> Result<Option<String>, String> {
        match u {
            None => Ok(None),
            Some(u) => match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(Some(u.clone())),
                _ => Err(format!("--{what} must be an http(s) URL, not {u:?}")),
            },
        }
    };
    let saga = (
        url("action", &args.action)?,
        url("compensation", &args.compensation)?,
    );
    let tcc = (
        url("try", &args.try_)?,
        url("confirm", &args.confirm)?,
        url("cancel", &args.cancel)?,
    );
    if saga.0.is_some() != saga.1.is_some() {
        return Err("--action and --compensation go together".into());
    }
    let tcc_given = [&tcc.0, &tcc.1, &tcc.2]
        .iter()
        .filter(|u| u.is_some())
        .count();
    if tcc_given != 0 && tcc_given != 3 {
        return Err("--try, --confirm and --cancel go together".into());
    }
    if saga.0.is_none() && tcc_given == 0 {
        return Err("give --action and --compensation, or --try, --confirm and --cancel".into());
    }
    if args.runs == 0 || args.runs > 10_000 {
        return Err("--runs must be 1–10000".into());
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?} is not `Name: value`"))?;
        let (k, v) = (k.trim(), v.trim());
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            return Err(format!("--header {h:?} is not a valid header"));
        }
        headers.push((k.to_string(), v.to_string()));
    }
    Ok(Target {
        action: saga.0,
        compensation: saga.1,
        try_: tcc.0,
        confirm: tcc.1,
        cancel: tcc.2,
        body: json("body", &args.body)?,
        reject_body: args
            .reject_body
            .as_deref()
            .map(|b| json("reject-body", b))
            .transpose()?,
        probe: url("probe", &args.probe)?,
        step: args.step.clone(),
        runs: args.runs,
        headers,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    })
}

/// Runs every rule against `target`, in order.
pub async fn run(target: &Target) -> Result<Vec<Outcome>, String> {
    let client = client::Client::new(target.clone())?;
    Ok(rules::all(&client).await)
}

/// The report, one line per rule and a summary; answers it and whether every rule held.
pub fn report(outcomes: &[Outcome]) -> (String, bool) {
    let mut out = String::new();
    for o in outcomes {
        out.push_str(&format!(
            "{} {:<26} {}\n",
            o.verdict.as_str(),
            o.rule,
            o.detail
        ));
    }
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    let failed = count(Verdict::Fail);
    out.push_str(&format!(
        "\n{} passed, {} failed, {} warned, {} skipped\n",
        count(Verdict::Pass),
        failed,
        count(Verdict::Warn),
        count(Verdict::Skip)
    ));
    (out, failed == 0)
}
