//! Endpoint header values encrypted at rest (`secrets.key_file`): AES-256-GCM with a random
//! nonce per value, stored as `enc:v1:` and the base64 of nonce and ciphertext, in the request
//! and definition columns, so that a dump of the saga log does not leak credentials. Without a
//! key nothing is sealed; a sealed value read without the right key leaves the saga's definition
//! unreadable (it becomes `stuck` with an alert, as any unreadable definition).

use crate::domain::secrets::request_headers;
use crate::domain::SagaDefinition;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde_json::Value;

const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// Seals and opens header values; `none()` leaves them as they are.
#[derive(Clone, Default)]
pub struct Sealer(Option<Aes256Gcm>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Sealer(key)"
        } else {
            "Sealer(none)"
        })
    }
}

impl Sealer {
    /// No key: values are stored as given.
    pub fn none() -> Sealer {
        Sealer(None)
    }

    /// The key in `path` ("" = none): 32 bytes written as 64 hex digits or as base64
    /// (`openssl rand -hex 32 > key`). The error names the file and why.
    pub fn from_key_file(path: &str) -> Result<Sealer, String> {
        if path.trim().is_empty() {
            return Ok(Sealer::none());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("{path} holds neither 64 hex digits nor base64"))?
        };
        if bytes.len() != 32 {
            return Err(format!(
                "{path} must hold a 32-byte key (it holds {})",
                bytes.len()
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
        Ok(Sealer(Some(cipher)))
    }

    /// Whether values are sealed (a key is set).
    pub fn has_key(&self) -> bool {
        self.0.is_some()
    }

    /// A record as read, with its header values opened.
    pub fn open_record(&self, mut r: super::SagaRecord) -> super::SagaRecord {
        self.open_request(&mut r.request);
        if let Ok(d) = &r.definition {
            // Nothing sealed, nothing to open: most reads copy nothing.
            if self.holds_sealed(d) {
                r.definition = self.open_definition((**d).clone()).map(std::sync::Arc::new);
            }
        }
        r
    }

    /// Whether a definition holds a sealed value (so that opening it without a key fails).
    pub fn holds_sealed(&self, d: &SagaDefinition) -> bool {
        d.endpoints()
            .any(|e| e.headers.iter().any(|(_, v)| v.starts_with(PREFIX)))
    }

    fn seal(&self, plain: &str) -> String {
        let Some(c) = &self.0 else {
            return plain.to_string();
        };
        if plain.starts_with(PREFIX) {
            return plain.to_string(); // sealed already
        }
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encrypting into a Vec cannot fail for inputs of this size.
        let ct = c.encrypt(&nonce, plain.as_bytes()).unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    fn open(&self, stored: &str) -> Result<String, String> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string()); // written without a key
        };
        let c = self
            .0
            .as_ref()
            .ok_or("a header is encrypted and secrets.key_file is not set")?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "an encrypted header is damaged".to_string())?;
        if blob.len() < NONCE_LEN {
            return Err("an encrypted header is damaged".into());
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap_or_default();
        let plain = c.decrypt(&Nonce::from(nonce), ct).map_err(|_| {
            "an encrypted header does not open with secrets.key_file (another key?)"
        })?;
        String::from_utf8(plain).map_err(|_| "an encrypted header is not text".to_string())
    }

    /// A definition with every header value sealed.
    pub fn seal_definition(&self, d: &SagaDefinition) -> SagaDefinition {
        let mut d = d.clone();
        if self.0.is_some() {
            for ep in d.endpoints_mut() {
                for (_, v) in &mut ep.headers {
                    *v = self.seal(v);
                }
            }
        }
        d
    }

    /// A stored definition with every header value opened.
    pub fn open_definition(&self, mut d: SagaDefinition) -> Result<SagaDefinition, String> {
        for ep in d.endpoints_mut() {
            for (_, v) in &mut ep.headers {
                *v = self.open(v)?;
            }
        }
        Ok(d)
    }

    /// Seals every header value of a request (as accepted), in place.
    pub fn seal_request(&self, request: &mut Value) {
        if self.0.is_none() {
            return;
        }
        for (_, v) in request_headers(request) {
            if let Some(s) = v.as_str() {
                *v = Value::String(self.seal(s));
            }
        }
    }

    /// Opens every sealed header value of a stored request, in place; one that does not open
    /// stays sealed, the others are not touched.
    pub fn open_request(&self, request: &mut Value) {
        for (_, v) in request_headers(request) {
            if let Some(Ok(s)) = v
                .as_str()
                .filter(|s| s.starts_with(PREFIX))
                .map(|s| self.open(s))
            {
                *v = Value::String(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(contents: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), contents).unwrap();
        f
    }

    #[test]
    fn values_seal_and_open_with_the_key_only() {
        let k = key_file(&"ab".repeat(32));
        let s = Sealer::from_key_file(k.path().to_str().unwrap()).unwrap();
        let sealed = s.seal("Bearer s3cr3t");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("s3cr3t"));
        assert_ne!(s.seal("Bearer s3cr3t"), sealed, "a fresh nonce each time");
        assert_eq!(s.open(&sealed).unwrap(), "Bearer s3cr3t");
        assert_eq!(s.open("plain").unwrap(), "plain", "written before the key");
        assert!(Sealer::none()
            .open(&sealed)
            .unwrap_err()
            .contains("key_file is not set"));
        let other = key_file(&"cd".repeat(32));
        let other = Sealer::from_key_file(other.path().to_str().unwrap()).unwrap();
        assert!(other.open(&sealed).unwrap_err().contains("another key"));
    }

    #[test]
    fn bad_key_files_are_named() {
        assert!(Sealer::from_key_file("/nonexistent/key")
            .unwrap_err()
            .contains("cannot read"));
        let short = key_file("abcd");
        assert!(Sealer::from_key_file(short.path().to_str().unwrap()).is_err());
        assert!(Sealer::from_key_file("").unwrap().0.is_none());
    }
}
