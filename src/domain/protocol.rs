//! How a saga's participants speak: the native protocol (docs/api.md) or DTM's (docs/dtm.md).
//! Every rule that differs between the two is here, once, for the state machine and for the
//! participant client; a saga keeps the protocol it was accepted with.

use super::machine::CallOutcome;

wire_enum! {
/// Which protocol a saga's participants speak.
#[derive(Default)]
pub enum Protocol {
    /// docs/api.md: `2xx` success, `409`/`422` "no, nothing done", anything else unknown.
    #[default]
    Native,
    /// DTM's (dtm-labs/dtm): `200` success unless the body says `FAILURE`; `409` or `FAILURE`
    /// failure; `425` or `ONGOING` asked again later; anything else retried.
    Dtm,
}
}

impl Protocol {
    /// How a participant's answer (status and body) is read.
    pub fn classify(self, status: u16, body: &[u8]) -> CallOutcome {
        match self {
            Protocol::Native => match status {
                200..=299 => CallOutcome::Success,
                409 | 422 => CallOutcome::Failure,
                _ => CallOutcome::Unknown,
            },
            Protocol::Dtm => {
                // As DTM's client reads it: the body first, ONGOING before FAILURE, and only
                // a 200 is a success.
                let says = |word: &[u8]| body.windows(word.len()).any(|w| w == word);
                if status == 425 || says(b"ONGOING") {
                    CallOutcome::Ongoing
                } else if status == 409 || says(b"FAILURE") {
                    CallOutcome::Failure
                } else if status == 200 {
                    CallOutcome::Success
                } else {
                    CallOutcome::Unknown
                }
            }
        }
    }

    /// Whether a success needs its body read to be told apart from a failure.
    pub fn reads_success_body(self) -> bool {
        self == Protocol::Dtm
    }

    /// Whether a forward call answered "no" may still have taken effect, so that its step is
    /// compensated too: DTM compensates the failed step as well.
    pub fn refused_step_is_undone(self) -> bool {
        self == Protocol::Dtm
    }

    /// Whether a refused compensation, confirm or cancel is retried (DTM retries it like any
    /// error) rather than making the saga stuck at once (native: a refusal to undo needs a
    /// person).
    pub fn retries_refused_undo(self) -> bool {
        self == Protocol::Dtm
    }

    /// Whether compensations, confirms and cancels are retried without limit (DTM), rather than
    /// within the step's retry policy.
    pub fn undo_without_limit(self) -> bool {
        self == Protocol::Dtm
    }

    /// Whether confirms go one at a time, in reverse dependency order (DTM confirms the last
    /// registered branch first), rather than all at once.
    pub fn confirms_in_reverse(self) -> bool {
        self == Protocol::Dtm
    }

    /// Whether retries wait exactly their backoff (DTM doubles its interval with no jitter)
    /// rather than a random 50-100 % of it.
    pub fn exact_backoff(self) -> bool {
        self == Protocol::Dtm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_each_protocol_reads_them() {
        use CallOutcome::*;
        let n = |s| Protocol::Native.classify(s, b"");
        assert_eq!(
            [n(200), n(204), n(409), n(422), n(425), n(500)],
            [Success, Success, Failure, Failure, Unknown, Unknown]
        );
        let d = |s, b: &str| Protocol::Dtm.classify(s, b.as_bytes());
        assert_eq!(d(200, r#"{"dtm_result":"SUCCESS"}"#), Success);
        assert_eq!(d(200, ""), Success);
        assert_eq!(d(204, ""), Unknown, "only a 200 is a success");
        assert_eq!(d(200, r#"{"dtm_result":"FAILURE"}"#), Failure);
        assert_eq!(d(409, ""), Failure);
        assert_eq!(d(500, "FAILURE: out of stock"), Failure);
        assert_eq!(d(425, ""), Ongoing);
        assert_eq!(d(200, "ONGOING"), Ongoing);
        assert_eq!(d(409, "ONGOING FAILURE"), Ongoing, "ONGOING is read first");
        assert_eq!(d(503, "down"), Unknown);
    }
}
