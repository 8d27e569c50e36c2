//! How long an ended saga stays in the log (docs/saga-log.md, "Retention"): the rules, resolved
//! when a saga is accepted and stored with its definition, and the one question the store asks
//! when a saga ends: when does it leave?

use super::machine::SagaStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shortest retention (and tombstone life) besides 0 = forever: tests need seconds.
pub const MIN_RETENTION_MS: u64 = 1_000;
/// Default time a succeeded saga stays: 7 days.
pub const DEFAULT_SUCCEEDED_MS: u64 = 7 * 24 * 3_600_000;
/// Default time a compensated saga stays: 30 days (failures are looked at longer).
pub const DEFAULT_COMPENSATED_MS: u64 = 30 * 24 * 3_600_000;

/// How long a saga stays in the log after it ended, by outcome; 0 = forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// After it succeeded (ms).
    pub succeeded_ms: u64,
    /// After it was compensated (ms).
    pub compensated_ms: u64,
}

impl Retention {
    /// Kept forever: the retention of sagas accepted before retention existed.
    pub const FOREVER: Retention = Retention {
        succeeded_ms: 0,
        compensated_ms: 0,
    };

    /// The same time for both outcomes (a start request's `retention_ms`).
    pub fn both(ms: u64) -> Retention {
        Retention {
            succeeded_ms: ms,
            compensated_ms: ms,
        }
    }

    /// When a saga in `status`, which reached it at `now`, leaves the log: only succeeded and
    /// compensated sagas ever do (running, compensating, confirming, prepared and stuck ones are
    /// never touched, whatever their age); `None` = it stays.
    pub fn purge_at(&self, status: SagaStatus, now: i64) -> Option<i64> {
        let ms = match status {
            SagaStatus::Succeeded => self.succeeded_ms,
            SagaStatus::Compensated => self.compensated_ms,
            _ => return None,
        };
        (ms > 0).then(|| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Whether it is forever.
    pub fn is_forever(&self) -> bool {
        *self == Retention::FOREVER
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded_ms: DEFAULT_SUCCEEDED_MS,
            compensated_ms: DEFAULT_COMPENSATED_MS,
        }
    }
}

/// A per-name override: what it leaves unset comes from the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionOverride {
    /// After it succeeded (ms).
    pub succeeded_ms: Option<u64>,
    /// After it was compensated (ms).
    pub compensated_ms: Option<u64>,
}

/// The configured retention: defaults and per-name overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionRules {
    /// For every saga name without an override.
    pub default: Retention,
    /// By saga name.
    pub names: BTreeMap<String, RetentionOverride>,
}

impl RetentionRules {
    /// The retention a saga named `name` is accepted with: its request's `retention_ms` if
    /// given, else its name's override, else the defaults.
    pub fn resolve(&self, name: &str, requested_ms: Option<u64>) -> Retention {
        if let Some(ms) = requested_ms {
            return Retention::both(ms);
        }
        let o = self.names.get(name).copied().unwrap_or_default();
        Retention {
            succeeded_ms: o.succeeded_ms.unwrap_or(self.default.succeeded_ms),
            compensated_ms: o.compensated_ms.unwrap_or(self.default.compensated_ms),
        }
    }
}

/// Whether `ms` is an accepted retention: 0 (forever) or 1 s up to `MAX_DURATION_MS`.
pub fn is_valid_ms(ms: u64) -> bool {
    ms == 0 || (MIN_RETENTION_MS..=super::limits::MAX_DURATION_MS).contains(&ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_succeeded_and_compensated_sagas_leave() {
        let r = Retention {
            succeeded_ms: 1_000,
            compensated_ms: 5_000,
        };
        assert_eq!(r.purge_at(SagaStatus::Succeeded, 100), Some(1_100));
        assert_eq!(r.purge_at(SagaStatus::Compensated, 100), Some(5_100));
        for s in SagaStatus::all().filter(|s| !s.is_terminal()) {
            assert_eq!(r.purge_at(s, 100), None, "{s:?}");
        }
    }

    #[test]
    fn zero_keeps_forever() {
        let r = Retention {
            succeeded_ms: 0,
            compensated_ms: 2_000,
        };
        assert_eq!(r.purge_at(SagaStatus::Succeeded, 100), None);
        assert_eq!(r.purge_at(SagaStatus::Compensated, 100), Some(2_100));
        assert!(Retention::FOREVER.is_forever());
        assert!(!Retention::default().is_forever());
    }

    #[test]
    fn a_request_beats_its_name_which_beats_the_defaults() {
        let mut rules = RetentionRules::default();
        rules.names.insert(
            "place_order".into(),
            RetentionOverride {
                succeeded_ms: None,
                compensated_ms: Some(90_000),
            },
        );
        let named = rules.resolve("place_order", None);
        assert_eq!(named.succeeded_ms, DEFAULT_SUCCEEDED_MS);
        assert_eq!(named.compensated_ms, 90_000);
        assert_eq!(rules.resolve("other", None), Retention::default());
        assert_eq!(
            rules.resolve("place_order", Some(3_000)),
            Retention::both(3_000)
        );
    }

    #[test]
    fn accepted_values() {
        assert!(is_valid_ms(0));
        assert!(!is_valid_ms(999));
        assert!(is_valid_ms(1_000));
        assert!(is_valid_ms(super::super::limits::MAX_DURATION_MS));
        assert!(!is_valid_ms(super::super::limits::MAX_DURATION_MS + 1));
    }

    proptest! {
        #[test]
        fn a_saga_never_leaves_before_it_ended(ms in 0u64..=super::super::limits::MAX_DURATION_MS,
                                               now in 0i64..=4_102_444_800_000) {
            let r = Retention::both(ms);
            for s in SagaStatus::all() {
                if let Some(at) = r.purge_at(s, now) {
                    prop_assert!(s.is_terminal());
                    prop_assert!(at >= now + MIN_RETENTION_MS as i64 || ms < MIN_RETENTION_MS);
                }
            }
        }
    }
}
