//! What every outbound HTTP client of the service shares (participant calls, the alert webhook):
//! TLS through rustls trusting the platform's root certificates plus `participant.ca_file`, no
//! redirects followed, one user agent.

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

    /// A client builder with these roots, no redirects and the service's user agent.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
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
