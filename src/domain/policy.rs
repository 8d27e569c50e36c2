//! Where the orchestrator may send calls (participants and the alert webhook), so that a saga
//! cannot make it call cloud metadata or an internal admin port: `participant.allow` /
//! `participant.deny` host names (with `*.` wildcards) and CIDRs, on top of a fixed deny of
//! link-local (169.254.0.0/16 and fe80::/10, where cloud metadata lives), unspecified, multicast
//! and broadcast addresses. Pure: checked when a saga is accepted (what can be known without DNS)
//! and, by `crate::outbound`'s resolver, on every resolved address at call time.

use super::definition::{Mode, SagaDefinition};
use super::validation::FieldError;
use ipnet::IpNet;
use std::net::IpAddr;

/// What a blocked call's error starts with (`last_error`, logs).
pub const BLOCKED: &str = "blocked by policy";

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// A host name, lower case, without a trailing dot; `*.x` matches every name under x.
    Host(String),
    /// Addresses.
    Net(IpNet),
}

impl Rule {
    fn parse(s: &str) -> Option<Rule> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Some(Rule::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(Rule::Net(IpNet::from(ip)));
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let ok = !bare.is_empty()
            && bare.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        ok.then_some(Rule::Host(name))
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(p) => match p.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => p == host,
            },
            Rule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, Rule::Net(n) if n.contains(&ip))
    }
}

/// The allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboundPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// Why an address is always refused, if it is.
fn always_denied(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (cloud metadata)"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
            Some("link-local (cloud metadata)")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    }
}

fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl OutboundPolicy {
    /// The lists from settings; an error names each entry that is neither a host name
    /// (`*.` allowed in front) nor an address or CIDR.
    pub fn new(allow: &[String], deny: &[String]) -> Result<OutboundPolicy, Vec<String>> {
        let mut errs = Vec::new();
        let mut parse = |list: &[String], key: &str| -> Vec<Rule> {
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let r = Rule::parse(s);
                    if r.is_none() {
                        errs.push(format!(
                            "{key}[{i}] must be a host name (\"*.\" in front for every name under it), an IP address or a CIDR (got {s:?})"
                        ));
                    }
                    r
                })
                .collect()
        };
        let policy = OutboundPolicy {
            allow: parse(allow, "participant.allow"),
            deny: parse(deny, "participant.deny"),
        };
        if errs.is_empty() {
            Ok(policy)
        } else {
            Err(errs)
        }
    }

    /// Whether a call to `host` (as written in the URL) at address `ip` may go.
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let host = normal_host(host);
        let ip = ip.to_canonical();
        if let Some(why) = always_denied(ip) {
            return Err(format!("{BLOCKED}: {ip} is {why}"));
        }
        if self.deny.iter().any(|r| r.matches_host(&host)) {
            return Err(format!("{BLOCKED}: {host} is in participant.deny"));
        }
        if self.deny.iter().any(|r| r.matches_ip(ip)) {
            return Err(format!("{BLOCKED}: {ip} is in participant.deny"));
        }
        let allowed = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.matches_host(&host) || r.matches_ip(ip));
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{BLOCKED}: {host} ({ip}) is not in participant.allow"
            ))
        }
    }

    /// What can be decided from a URL's host alone, before any DNS: an address is checked
    /// fully; a name is refused when denied, or when only names may be allowed and it is none.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let host = normal_host(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_addr(&host, ip);
        }
        if self.deny.iter().any(|r| r.matches_host(&host)) {
            return Err(format!("{BLOCKED}: {host} is in participant.deny"));
        }
        let may_be_allowed = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.matches_host(&host) || matches!(r, Rule::Net(_)));
        if may_be_allowed {
            Ok(())
        } else {
            Err(format!("{BLOCKED}: {host} is not in participant.allow"))
        }
    }

    /// `Ok` when every URL of `def` passes ([`Self::check_definition`]), else its refusals.
    pub fn admit(&self, def: &SagaDefinition) -> Result<(), Vec<FieldError>> {
        let blocked = self.check_definition(def);
        if blocked.is_empty() {
            Ok(())
        } else {
            Err(blocked)
        }
    }

    /// Every endpoint of `def` that the policy refuses, with the pointer of its URL.
    pub fn check_definition(&self, def: &SagaDefinition) -> Vec<FieldError> {
        let mut out = Vec::new();
        let names = match def.mode {
            Mode::Saga => ["action", "compensation", "confirm"],
            Mode::Tcc => ["try", "cancel", "confirm"],
        };
        for (i, s) in def.steps.iter().enumerate() {
            let eps = [
                (names[0], Some(&s.forward)),
                (names[1], s.undo.as_ref()),
                (names[2], s.confirm.as_ref()),
            ];
            for (phase, ep) in eps {
                let Some(ep) = ep else { continue };
                let host = url::Url::parse(&ep.url)
                    .ok()
                    .and_then(|u| u.host_str().map(String::from))
                    .unwrap_or_default();
                if let Err(why) = self.check_host(&host) {
                    out.push(FieldError {
                        pointer: format!("/steps/{i}/{phase}/url"),
                        detail: why,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> OutboundPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        OutboundPolicy::new(&v(allow), &v(deny)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_other_special_addresses_are_always_refused() {
        let open = policy(&[], &[]);
        for bad in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
        ] {
            let e = open.check_addr("h", ip(bad)).unwrap_err();
            assert!(e.starts_with(BLOCKED), "{bad}: {e}");
            assert!(open.check_host(bad).is_err(), "{bad} as a URL host");
        }
        // Even an allow entry cannot open them.
        assert!(policy(&["169.254.0.0/16"], &[])
            .check_addr("h", ip("169.254.169.254"))
            .is_err());
        for good in ["127.0.0.1", "10.1.2.3", "::1", "93.184.216.34"] {
            assert_eq!(open.check_addr("h", ip(good)), Ok(()), "{good}");
        }
    }

    #[test]
    fn deny_and_allow_lists_match_names_wildcards_and_cidrs() {
        let p = policy(
            &["*.internal.example", "10.0.0.0/8"],
            &["admin.internal.example", "10.9.0.0/16"],
        );
        assert_eq!(
            p.check_addr("pay.internal.example", ip("192.0.2.1")),
            Ok(())
        );
        assert_eq!(
            p.check_addr("a.b.internal.example", ip("192.0.2.1")),
            Ok(())
        );
        assert!(
            p.check_addr("internal.example", ip("192.0.2.1")).is_err(),
            "*. needs a label in front"
        );
        assert!(
            p.check_addr("Admin.Internal.Example.", ip("10.1.1.1"))
                .is_err(),
            "denied name"
        );
        assert_eq!(
            p.check_addr("anything", ip("10.1.1.1")),
            Ok(()),
            "allowed CIDR"
        );
        assert!(
            p.check_addr("pay.internal.example", ip("10.9.1.1"))
                .is_err(),
            "denied CIDR wins"
        );
        assert!(p
            .check_addr("evil.example", ip("192.0.2.1"))
            .unwrap_err()
            .contains("not in participant.allow"));
        // Before DNS: a name may still resolve into 10/8, so only denied names are refused.
        assert_eq!(p.check_host("evil.example"), Ok(()));
        assert!(p.check_host("admin.internal.example").is_err());
        let names_only = policy(&["*.internal.example"], &[]);
        assert!(names_only.check_host("evil.example").is_err());
        assert_eq!(names_only.check_host("pay.internal.example"), Ok(()));
    }

    #[test]
    fn bad_entries_are_named() {
        let errs = OutboundPolicy::new(
            &["ok.example".into(), "bad host!".into()],
            &["10.0.0.0/33".into()],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("participant.allow[1]") && errs[1].contains("participant.deny[0]")
        );
    }
}
