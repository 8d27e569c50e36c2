//! The W3C trace context of a saga (docs/api.md, "Trace context"): what a
//! start's `traceparent` / `tracestate` carried, parsed strictly, and the `traceparent` of each
//! participant call (same trace, the caller's flags, a new parent id per call). Pure: the
//! random ids come from the caller.

use serde::{Deserialize, Serialize};

/// The trace a saga belongs to, stored with its definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zeros.
    pub trace_id: String,
    /// The caller's span (16 hex), if the trace came from a caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Sampled (0x01) and random-trace-id (0x02) flags, the others zeroed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u8,
    /// The caller's `tracestate`, passed on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

fn is_zero(f: &u8) -> bool {
    *f == 0
}

/// Flags passed on: sampled and random-trace-id (W3C Level 2).
const KEPT_FLAGS: u8 = 0x03;

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a `traceparent` strictly (W3C Trace Context, "traceparent Header"): version 00
/// exactly 55 characters; a higher version at least 55 with its extra fields ignored; `ff`,
/// upper case, all-zero ids: none.
fn parse_traceparent(tp: &str) -> Option<(String, String, u8)> {
    let tp = tp.trim();
    if tp.len() < 55 || !tp.is_char_boundary(55) {
        return None;
    }
    let version = &tp[0..2];
    if !lower_hex(version, 2) || version == "ff" || tp.as_bytes()[2] != b'-' {
        return None;
    }
    if version == "00" && tp.len() != 55 {
        return None;
    }
    if tp.len() > 55 && tp.as_bytes()[55] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&tp[3..35], &tp[36..52], &tp[53..55]);
    if tp.as_bytes()[35] != b'-' || tp.as_bytes()[52] != b'-' {
        return None;
    }
    if !lower_hex(trace_id, 32) || !lower_hex(parent_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()? & KEPT_FLAGS;
    Some((trace_id.to_string(), parent_id.to_string(), flags))
}

/// A `tracestate` worth passing on: at most 32 members, each `key=value` (empty members
/// allowed), 512 characters at most in all; else none (the traceparent still counts).
fn valid_tracestate(ts: &str) -> Option<String> {
    let ts = ts.trim();
    if ts.is_empty() || ts.len() > 512 {
        return None;
    }
    let members: Vec<&str> = ts
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > 32 {
        return None;
    }
    let ok = members.iter().all(|m| match m.split_once('=') {
        Some((k, v)) => {
            !k.is_empty()
                && k.len() <= 256
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b))
                && !v.is_empty()
                && v.len() <= 256
                && v.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
                && !v.ends_with(' ')
        }
        None => false,
    });
    ok.then(|| members.join(","))
}

/// The ids of one of our exported spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    /// 32 hex.
    pub trace_id: String,
    /// 16 hex.
    pub span_id: String,
    /// The sampler kept it.
    pub sampled: bool,
}

impl TraceContext {
    /// With our spans exported, a saga's spans hang under the request span that started it
    /// (`request`): in the caller's trace that span is the caller's child, so only the parent
    /// changes; a trace that starts here takes the request span's trace id and its sampling
    /// decision (an unsampled trace is passed on unsampled). Without export, unchanged.
    pub fn under_request(mut self, request: Option<SpanIds>) -> Self {
        let Some(r) = request else { return self };
        if self.parent_id.is_none() {
            self.trace_id = r.trace_id;
            self.flags = u8::from(r.sampled);
        } else if r.trace_id != self.trace_id {
            // Not in the caller's trace after all: keep the caller's parent.
            return self;
        }
        self.parent_id = Some(r.span_id);
        self
    }

    /// The caller's context from a start's headers (several `tracestate` fields joined with
    /// ","), or a new trace with `new_trace_id` (32 hex) when there is none or it is malformed.
    pub fn from_headers(
        traceparent: Option<&str>,
        tracestate: &[&str],
        new_trace_id: impl FnOnce() -> String,
    ) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                parent_id: Some(parent_id),
                flags,
                tracestate: valid_tracestate(&tracestate.join(",")),
            },
            // A new trace: sampled, so that a collector keeps what we start ourselves.
            None => TraceContext {
                trace_id: new_trace_id(),
                parent_id: None,
                flags: 0x01,
                tracestate: None,
            },
        }
    }

    /// The trace of saga `id`: the one stored with it, else (a saga accepted before trace
    /// context was stored) one derived from its id, sampled, so that all its calls, on any
    /// instance and after any restart, still share one trace.
    pub fn of_saga(stored: Option<&TraceContext>, id: &str) -> TraceContext {
        if let Some(t) = stored {
            return t.clone();
        }
        use sha2::{Digest, Sha256};
        let trace_id = Sha256::digest(id.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        TraceContext {
            trace_id,
            parent_id: None,
            flags: 0x01,
            tracestate: None,
        }
    }

    /// The `traceparent` of one call, whose span is `span_id` (16 hex, new for each attempt).
    pub fn traceparent(&self, span_id: &str) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(trace_id: &str, sampled: bool) -> SpanIds {
        SpanIds {
            trace_id: trace_id.into(),
            span_id: "1111111111111111".into(),
            sampled,
        }
    }

    #[test]
    fn exported_sagas_hang_under_their_request_span() {
        let caller = TraceContext::from_headers(Some(TP), &["a=b"], || unreachable!());
        // No export: as the caller sent it.
        assert_eq!(caller.clone().under_request(None), caller);
        // The request span is in the caller's trace: it becomes the parent, flags kept.
        let t = caller
            .clone()
            .under_request(Some(ours(&caller.trace_id, false)));
        assert_eq!(t.trace_id, caller.trace_id);
        assert_eq!(t.parent_id.as_deref(), Some("1111111111111111"));
        assert_eq!((t.flags, t.tracestate.as_deref()), (1, Some("a=b")));
        // A request span in another trace is not the caller's child: nothing changes.
        let other = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            caller.clone().under_request(Some(ours(other, true))),
            caller
        );
        // A trace that starts here is the request span's, with its sampling decision.
        let new = TraceContext::from_headers(None, &[], || "ab".repeat(16));
        for sampled in [true, false] {
            let t = new.clone().under_request(Some(ours(other, sampled)));
            assert_eq!(t.trace_id, other);
            assert_eq!(t.parent_id.as_deref(), Some("1111111111111111"));
            assert_eq!(t.flags, u8::from(sampled));
        }
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept() {
        let c = TraceContext::from_headers(
            Some(TP),
            &["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"],
            || unreachable!(),
        );
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.flags, 1);
        assert_eq!(
            c.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(
            c.traceparent("b7ad6b7169203331"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
        );
    }

    #[test]
    fn malformed_ones_start_a_new_trace() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            let c = TraceContext::from_headers(Some(bad), &["a=b"], || "1".repeat(32));
            assert_eq!(c.trace_id, "1".repeat(32), "{bad:?}");
            assert_eq!(c.tracestate, None, "{bad:?}");
        }
    }

    #[test]
    fn a_higher_version_is_read_and_sent_as_00() {
        let tp = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-the-future-holds";
        let c = TraceContext::from_headers(Some(tp), &[], || unreachable!());
        assert_eq!(c.flags, 0, "unsampled stays unsampled");
        assert!(c.traceparent("b7ad6b7169203331").starts_with("00-"));
    }

    #[test]
    fn a_saga_without_a_stored_trace_always_gets_the_same_one() {
        let a = TraceContext::of_saga(None, "order-1");
        assert_eq!(a, TraceContext::of_saga(None, "order-1"));
        assert_ne!(a.trace_id, TraceContext::of_saga(None, "order-2").trace_id);
        assert!(lower_hex(&a.trace_id, 32));
        let stored = TraceContext::from_headers(Some(TP), &[], || unreachable!());
        assert_eq!(TraceContext::of_saga(Some(&stored), "order-1"), stored);
    }

    #[test]
    fn unknown_flags_are_zeroed_and_random_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
        assert_eq!(
            TraceContext::from_headers(Some(tp), &[], || unreachable!()).flags,
            0x03
        );
    }
}
