//! Whether an endpoint's host resolves and accepts a TCP connection, for a dry run
//! (docs/api.md, "Dry run"). Nothing is sent on the connection; the outbound policy decides
//! which resolved addresses may be tried, as it does for a real call.

use crate::domain::OutboundPolicy;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Addresses tried per host.
const ADDRESSES_TRIED: usize = 3;

/// What a dry run found out about one `host:port`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Reach {
    /// The host resolved to at least one address the outbound policy allows.
    pub resolves: bool,
    /// The addresses it resolved to that the policy allows.
    pub addresses: Vec<String>,
    /// One of them accepted a TCP connection (closed at once, nothing sent).
    pub connects: bool,
    /// Why not, when it did not resolve or connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `host:port` of a URL (the key of [`probe_all`]'s answer).
pub fn authority(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    let host = match u.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((host, u.port_or_known_default()?))
}

/// Probes each distinct `host:port` of `urls` once, all at once.
pub async fn probe_all<'a>(
    policy: &OutboundPolicy,
    urls: impl Iterator<Item = &'a str>,
) -> BTreeMap<(String, u16), Reach> {
    let mut targets: Vec<(String, u16)> = urls.filter_map(authority).collect();
    targets.sort();
    targets.dedup();
    let found = futures::future::join_all(
        targets
            .iter()
            .map(|(host, port)| probe(policy, host, *port)),
    )
    .await;
    targets.into_iter().zip(found).collect()
}

/// Resolves `host` and connects to `port` on its first allowed addresses.
pub async fn probe(policy: &OutboundPolicy, host: &str, port: u16) -> Reach {
    let mut reach = Reach {
        resolves: false,
        addresses: vec![],
        connects: false,
        error: None,
    };
    let resolved =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                reach.error = Some(format!("{host} does not resolve: {e}"));
                return reach;
            }
            Err(_) => {
                reach.error = Some(format!(
                    "{host} did not resolve within {} ms",
                    RESOLVE_TIMEOUT.as_millis()
                ));
                return reach;
            }
        };
    let mut refused = None;
    let allowed: Vec<_> = resolved
        .into_iter()
        .filter(|a| match policy.check_addr(host, a.ip()) {
            Ok(()) => true,
            Err(why) => {
                refused = Some(why);
                false
            }
        })
        .collect();
    reach.addresses = allowed.iter().map(|a| a.ip().to_string()).collect();
    reach.addresses.dedup();
    if allowed.is_empty() {
        reach.error = Some(refused.unwrap_or_else(|| format!("{host} resolves to no address")));
        return reach;
    }
    reach.resolves = true;
    let mut last = String::new();
    for addr in allowed.iter().take(ADDRESSES_TRIED) {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => {
                reach.connects = true;
                return reach;
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => {
                last = format!(
                    "{addr}: no connection within {} ms",
                    CONNECT_TIMEOUT.as_millis()
                )
            }
        }
    }
    reach.error = Some(last);
    reach
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OutboundPolicy {
        OutboundPolicy::new(&[], &[]).unwrap()
    }

    #[tokio::test]
    async fn a_listening_port_connects_and_a_closed_one_does_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let r = probe(&open(), "127.0.0.1", port).await;
        assert!(r.resolves && r.connects, "{r:?}");
        drop(l);
        let r = probe(&open(), "127.0.0.1", port).await;
        assert!(r.resolves && !r.connects, "{r:?}");
        assert!(r.error.unwrap().contains("127.0.0.1"));
    }

    /// A name with a label over DNS's 63 bytes: the resolver refuses it before it would send
    /// a query (no traffic leaves the machine).
    pub(crate) fn unresolvable() -> String {
        format!("{}.invalid", "x".repeat(70))
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_says_so() {
        let host = unresolvable();
        let r = probe(&open(), &host, 80).await;
        assert!(!r.resolves && !r.connects);
        assert!(r.error.unwrap().contains("does not resolve"));
    }

    #[tokio::test]
    async fn the_policy_decides_which_addresses_are_tried() {
        let deny = OutboundPolicy::new(&[], &["127.0.0.0/8".into()]).unwrap();
        let r = probe(&deny, "127.0.0.1", 9).await;
        assert!(!r.resolves && !r.connects && r.addresses.is_empty());
        assert!(r.error.unwrap().contains("blocked by policy"), "deny wins");
    }
}
