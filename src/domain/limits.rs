//! Every limit and name rule a request is held to, stated once: validation, the settings, the
//! handlers and the OpenAPI document (`api/schema.rs`) all read them from here, so the document
//! cannot promise what the service refuses.

use std::ops::RangeInclusive;

/// Most steps in one saga.
pub const MAX_STEPS: usize = 64;
/// Longest endpoint URL (bytes).
pub const MAX_URL_LEN: usize = 2048;
/// Most headers on one endpoint.
pub const MAX_HEADERS: usize = 32;
/// Longest header value (bytes).
pub const MAX_HEADER_VALUE_LEN: usize = 8192;
/// Deepest nesting of arrays and objects in the payload and endpoint bodies.
pub const MAX_JSON_DEPTH: usize = 32;
/// Most sagas one bulk operator action names.
pub const MAX_BULK_IDS: usize = 100;
/// Longest reason an operator gives for an action, in characters.
pub const MAX_REASON: usize = 1000;
/// Longest allowed delay or timeout (about 10 years), so that time arithmetic never overflows.
pub const MAX_DURATION_MS: u64 = 315_360_000_000;
/// Most calls per phase a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Smallest and largest backoff multiplier.
pub const MULTIPLIER_RANGE: RangeInclusive<f64> = 1.0..=100.0;
/// Longest `wait_ms` of a start or a read.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Page sizes of a listing.
pub const PAGE_SIZES: RangeInclusive<u64> = 1..=500;
/// Page size of a listing that names none.
pub const DEFAULT_PAGE: u64 = 50;

/// A listing's page size from its `limit` parameter (`default` when none is given); an empty or
/// out-of-range one is refused with what is accepted.
pub fn page_size(limit: Option<&str>, default: u64) -> Result<u64, String> {
    match limit.map(str::parse::<u64>) {
        None => Ok(default),
        Some(Ok(n)) if PAGE_SIZES.contains(&n) => Ok(n),
        Some(_) => Err(format!(
            "must be an integer from {} to {}",
            PAGE_SIZES.start(),
            PAGE_SIZES.end()
        )),
    }
}
/// Each count of `GET /v1/counts` stops here (counting further costs more than it tells).
pub const COUNT_CAP: u64 = 10_000;
/// The HTTP methods an endpoint may use.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A name made of ASCII letters, digits and a few other characters, 1 to `max` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRule {
    /// Longest name.
    pub max: usize,
    /// Characters allowed besides letters and digits.
    pub extra: &'static str,
}

/// Saga ids (client-chosen; they appear in URLs and cursors).
pub const SAGA_ID: NameRule = NameRule {
    max: 128,
    extra: "._:-",
};
/// Saga names and step names (metric labels).
pub const NAME: NameRule = NameRule {
    max: 64,
    extra: "_.-",
};
/// Service labels of endpoints.
pub const SERVICE: NameRule = NameRule {
    max: 64,
    extra: "_.:-",
};

impl NameRule {
    /// Whether `s` follows the rule.
    pub fn is_valid(&self, s: &str) -> bool {
        !s.is_empty()
            && s.len() <= self.max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || self.extra.contains(c))
    }

    /// The rule as a regular expression (for the OpenAPI document).
    pub fn pattern(&self) -> String {
        format!("^{}$", self.repeat())
    }

    /// The character class with its repetition, to build larger patterns from.
    pub fn repeat(&self) -> String {
        // `-` last, so that it is a character, not a range.
        let mut extra: String = self.extra.chars().filter(|c| *c != '-').collect();
        if self.extra.contains('-') {
            extra.push('-');
        }
        format!("[A-Za-z0-9{extra}]{{1,{}}}", self.max)
    }

    /// The rule in words, for error messages.
    pub fn describe(&self) -> String {
        let extra: Vec<String> = self.extra.chars().map(String::from).collect();
        format!(
            "1-{} characters of A-Z a-z 0-9 {}",
            self.max,
            extra.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules_agree_with_their_patterns_and_words() {
        assert_eq!(SAGA_ID.pattern(), "^[A-Za-z0-9._:-]{1,128}$");
        assert_eq!(NAME.pattern(), "^[A-Za-z0-9_.-]{1,64}$");
        assert_eq!(SERVICE.describe(), "1-64 characters of A-Z a-z 0-9 _ . : -");
        assert!(SAGA_ID.is_valid("order-1:a.b"));
        assert!(!SAGA_ID.is_valid("a b"));
        assert!(!NAME.is_valid(""));
        assert!(!NAME.is_valid(&"x".repeat(65)));
        assert!(NAME.is_valid(&"x".repeat(64)));
    }

    #[test]
    fn a_page_size_is_given_defaulted_or_refused() {
        assert_eq!(page_size(None, 50), Ok(50));
        assert_eq!(page_size(Some("500"), 50), Ok(500));
        for bad in ["", "0", "501", "-1", "ten"] {
            assert_eq!(
                page_size(Some(bad), 50),
                Err("must be an integer from 1 to 500".to_string()),
                "{bad:?}"
            );
        }
    }
}
