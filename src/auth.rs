//! Who may do what: bearer tokens (kept as SHA-256 hashes, never in clear), their scopes, which
//! scope each route needs, and new random tokens for `token new`. The HTTP side is
//! `api::auth`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

crate::domain::wire_enum! {
/// What a token allows.
#[derive(PartialOrd, Ord)]
pub enum Scope {
    /// Read sagas, list them (GET).
    Read,
    /// Start sagas.
    Write,
    /// Retry and abort sagas.
    Admin,
}
}

/// What reading sagas needs (a GET, the listing, the counts; any unknown path too).
pub const READ: Scope = Scope::Read;
/// What starting a saga needs.
pub const START: Scope = Scope::Write;
/// What an operator action needs (retry, abort, one saga or in bulk).
pub const OPERATE: Scope = Scope::Admin;

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];
}

/// One configured token: its name (shown as `who`), hash and scopes.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its name, recorded on operator actions and access-log lines.
    pub name: String,
    sha256: [u8; 32],
    /// What it allows.
    pub scopes: Vec<Scope>,
}

/// The configured tokens; none means the service is open (as allowed by the config check).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    /// The scope `/metrics` needs, if any.
    pub metrics_scope: Option<Scope>,
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that is not configured: 401.
    Unauthenticated(&'static str),
    /// A known token without the scope: 403.
    Forbidden {
        /// The token's name.
        name: String,
        /// The scope it lacks.
        needs: Scope,
    },
}

/// SHA-256 of a token, hex: what `[auth]` stores.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Tokens from `(name, sha256 hex, scope names)`; an error names the bad entry.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
        metrics_scope: &str,
    ) -> Result<Tokens, Vec<String>> {
        let mut errs = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        for (i, (name, hash, scopes)) in entries.into_iter().enumerate() {
            let at = format!("auth.tokens[{i}]");
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !name_ok {
                errs.push(format!(
                    "{at}.name must be 1-64 characters of [A-Za-z0-9_.-] (got {name:?})"
                ));
            } else if tokens.iter().any(|t| t.name == name) {
                errs.push(format!("{at}.name {name:?} is used twice"));
            }
            let sha = parse_hex(&hash.to_ascii_lowercase());
            if sha.is_none() {
                errs.push(format!(
                    "{at}.sha256 must be the 64 hex digits of the token's SHA-256 (`saga-orchestrator token new` prints it), never the token"
                ));
            }
            let parsed: Vec<Option<Scope>> = scopes.iter().map(|s| Scope::parse(s)).collect();
            if scopes.is_empty() || parsed.iter().any(Option::is_none) {
                errs.push(format!(
                    "{at}.scopes must be a non-empty list of read, write, admin (got {scopes:?})"
                ));
            }
            if let Some(sha256) = sha {
                if tokens.iter().any(|t| t.sha256 == sha256) {
                    errs.push(format!("{at}.sha256 is the hash of another token too"));
                }
                tokens.push(Token {
                    name: name.to_string(),
                    sha256,
                    scopes: parsed.into_iter().flatten().collect(),
                });
            }
        }
        let metrics_scope = match metrics_scope {
            "" => None,
            s => match Scope::parse(s) {
                Some(x) => Some(x),
                None => {
                    errs.push(format!(
                        "auth.metrics_scope must be \"\" (open), read, write or admin (got {s:?})"
                    ));
                    None
                }
            },
        };
        if errs.is_empty() {
            Ok(Tokens {
                tokens,
                metrics_scope,
            })
        } else {
            Err(errs)
        }
    }

    /// No tokens: every route is open.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The scopes of the token named `name` (none for an unknown name).
    pub fn scopes_of(&self, name: &str) -> Vec<Scope> {
        self.tokens
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.scopes.clone())
            .unwrap_or_default()
    }

    /// Checks an `Authorization` header value against `needs`; answers the token's name.
    pub fn check(&self, authorization: Option<&str>, needs: Scope) -> Result<&str, Denied> {
        let presented = authorization
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Unauthenticated("a bearer token is required"))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every token, in constant time, and never stop early.
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let t = found.ok_or(Denied::Unauthenticated("the token is not known"))?;
        if t.scopes.contains(&needs) {
            Ok(&t.name)
        } else {
            Err(Denied::Forbidden {
                name: t.name.clone(),
                needs,
            })
        }
    }
}

/// A new random token (256 bits, URL-safe) and its SHA-256 for `[auth]`.
pub fn new_token() -> (String, String) {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "sgo_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let hash = sha256_hex(&token);
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let rw = ["read".to_string(), "write".to_string()];
        let admin = ["read".to_string(), "admin".to_string()];
        let (a, b) = (sha256_hex("tok-rw"), sha256_hex("tok-admin"));
        Tokens::new(
            [("ci", a.as_str(), &rw[..]), ("ops", b.as_str(), &admin[..])],
            "",
        )
        .unwrap()
    }

    #[test]
    fn tokens_are_checked_by_hash_and_scope() {
        let t = tokens();
        assert_eq!(t.check(Some("Bearer tok-rw"), Scope::Write), Ok("ci"));
        assert_eq!(t.check(Some("bearer tok-admin"), Scope::Admin), Ok("ops"));
        assert_eq!(
            t.check(Some("Bearer tok-rw"), Scope::Admin),
            Err(Denied::Forbidden {
                name: "ci".into(),
                needs: Scope::Admin
            })
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic tok-rw"),
            Some("Bearer tok-r"),
        ] {
            assert!(
                matches!(t.check(bad, Scope::Read), Err(Denied::Unauthenticated(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let none: Vec<String> = vec![];
        let read = ["read".to_string()];
        let errs = Tokens::new(
            [
                ("bad name", "abc", &none[..]),
                ("ok", &sha256_hex("x"), &read[..]),
            ],
            "root",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("auth.tokens[0].name")));
        assert!(errs.iter().any(|e| e.contains("auth.tokens[0].sha256")));
        assert!(errs.iter().any(|e| e.contains("auth.tokens[0].scopes")));
        assert!(errs.iter().any(|e| e.contains("auth.metrics_scope")));
    }

    #[test]
    fn a_new_token_matches_its_hash() {
        let (token, hash) = new_token();
        assert!(token.starts_with("sgo_") && token.len() == 68);
        assert_eq!(sha256_hex(&token), hash);
        assert_ne!(new_token().0, token);
    }
}
