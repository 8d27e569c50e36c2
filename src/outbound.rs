//! What every outbound HTTP client of the service shares (participant calls, the alert webhook):
//! TLS through rustls trusting the platform's root certificates plus `participant.ca_file`, no
//! redirects followed, no proxy, one user agent, and the outbound policy applied to every address
//! a name resolves to (`domain::policy`: the rules; here only where they are applied).

use crate::domain::policy::{OutboundPolicy, BLOCKED};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Certificates trusted on top of the platform's roots (a private CA, say).
#[derive(Clone, Default)]
pub struct ExtraRoots(Vec<reqwest::Certificate>);

impl ExtraRoots {
    /// Reads every certificate of a PEM file; `""` means none. The error names the file and why.
    pub fn from_pem_file(path: &str) -> Result<Self, String> {
        if path.trim().is_empty() {
            return Ok(ExtraRoots::default());
        }
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{path} is not a PEM bundle of certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path} holds no PEM certificate"));
        }
        Ok(ExtraRoots(certs))
    }

    /// A client builder with these roots, no redirects, no proxy (a proxy would resolve names
    /// out of the policy's sight), the policy on every resolved address, and the service's user
    /// agent.
    pub fn client_builder(&self, policy: &Arc<OutboundPolicy>) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("saga-orchestrator/", env!("CARGO_PKG_VERSION")));
        for c in &self.0 {
            b = b.add_root_certificate(c.clone());
        }
        b
    }
}

/// Every message of an error and its sources, outermost first, without repeats (hyper and
/// reqwest often repeat the inner message in the outer one).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !out.iter().any(|m| m.contains(&msg)) {
            out.push(msg);
        }
        cur = err.source();
    }
    out
}

/// True when a failed call failed in its TLS handshake (certificate or protocol).
pub fn is_tls_failure(chain: &[String]) -> bool {
    chain.iter().any(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("certificate") || m.contains("tls") || m.contains("handshake")
    })
}

/// Resolves a name and keeps only the addresses the policy allows, at call time: a name that
/// resolves, or later re-resolves (DNS rebinding), to a refused address cannot be called.
struct PolicyResolver(Arc<OutboundPolicy>);

/// A call refused by the outbound policy.
#[derive(Debug)]
struct Blocked(String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Blocked {}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_addr(&host, a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(Box::new(Blocked(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a URL whose host is an address (no name is resolved for it, so the resolver above
/// never sees it); a name passes here and is checked when it is resolved.
pub fn check_literal(policy: &OutboundPolicy, url: &str) -> Result<(), String> {
    match url::Url::parse(url).ok().as_ref().and_then(|u| u.host()) {
        Some(url::Host::Ipv4(ip)) => policy.check_addr(&ip.to_string(), ip.into()),
        Some(url::Host::Ipv6(ip)) => policy.check_addr(&ip.to_string(), ip.into()),
        _ => Ok(()),
    }
}

/// The policy's reason when a failed call was refused by it.
pub fn blocked(chain: &[String]) -> Option<String> {
    chain
        .iter()
        .find_map(|m| m.find(BLOCKED).map(|i| m[i..].to_string()))
}
