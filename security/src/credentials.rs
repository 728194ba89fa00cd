//! Credentials of frameworks and operators: principals and secrets, in Mesos' JSON
//! format (`{"credentials": [{"principal": "ops", "secret": "..."}]}`; a secret may be
//! given as `secret_sha256` instead, so that the file need not hold it). Callers send
//! `Authorization: Basic base64(principal:secret)` or `Authorization: Bearer secret`.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{SecurityError, files, sha256_hex};

/// The principal `strata-master` creates at its first start, and `strata local` hands
/// to its user.
pub const ADMIN: &str = "admin";
/// The shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest principal name accepted.
pub const MAX_PRINCIPAL_LEN: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_sha256: Option<String>,
}

/// The principals a listener accepts, by the SHA-256 of their secrets.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// secret digest → principal
    by_digest: HashMap<String, String>,
    /// principal → secret digest
    by_principal: HashMap<String, String>,
}

fn refused(where_: &str, reason: impl Into<String>) -> SecurityError {
    SecurityError::Credentials {
        where_: if where_.is_empty() {
            String::new()
        } else {
            format!(" in {where_}")
        },
        reason: reason.into(),
    }
}

/// Checks a principal name: 1 to 128 characters, no ':' (it ends the principal in
/// Basic authentication), no whitespace or control characters, not `agent:...`.
pub fn check_principal(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PRINCIPAL_LEN {
        return Err(format!(
            "principal '{name}' must be 1 to {MAX_PRINCIPAL_LEN} characters"
        ));
    }
    if name
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "principal '{name}' contains ':', whitespace or a control character"
        ));
    }
    Ok(())
}

impl Credentials {
    /// Parses a credentials file's text; `where_` names it in errors.
    pub fn parse(text: &str, where_: &str) -> Result<Credentials, SecurityError> {
        let file: CredentialsFile =
            serde_json::from_str(text).map_err(|e| refused(where_, e.to_string()))?;
        let mut creds = Credentials::default();
        for entry in file.credentials {
            check_principal(&entry.principal).map_err(|m| refused(where_, m))?;
            let digest = match (&entry.secret, &entry.secret_sha256) {
                (Some(secret), None) => {
                    if secret.len() < MIN_SECRET_LEN {
                        return Err(refused(
                            where_,
                            format!(
                                "the secret of '{}' is shorter than {MIN_SECRET_LEN} characters",
                                entry.principal
                            ),
                        ));
                    }
                    sha256_hex(secret.as_bytes())
                }
                (None, Some(digest)) => {
                    let digest = digest.to_ascii_lowercase();
                    if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(refused(
                            where_,
                            format!(
                                "secret_sha256 of '{}' is not 64 hex digits",
                                entry.principal
                            ),
                        ));
                    }
                    digest
                }
                _ => {
                    return Err(refused(
                        where_,
                        format!(
                            "'{}' needs exactly one of secret and secret_sha256",
                            entry.principal
                        ),
                    ));
                }
            };
            if creds.by_principal.contains_key(&entry.principal) {
                return Err(refused(
                    where_,
                    format!("principal '{}' is listed twice", entry.principal),
                ));
            }
            if creds.by_digest.contains_key(&digest) {
                return Err(refused(
                    where_,
                    format!(
                        "'{}' has the same secret as another principal: secrets must differ",
                        entry.principal
                    ),
                ));
            }
            creds
                .by_digest
                .insert(digest.clone(), entry.principal.clone());
            creds.by_principal.insert(entry.principal, digest);
        }
        Ok(creds)
    }

    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<Credentials, SecurityError> {
        let text = files::read_text(path)?;
        Credentials::parse(&text, &path.display().to_string())
    }

    /// Reads the credentials file at `path`, first writing one (mode 0600) with the
    /// principal [`ADMIN`] and a fresh secret if there is none. The flag says whether
    /// it was made now.
    pub fn load_or_create(path: &Path) -> Result<(Credentials, bool), SecurityError> {
        if files::read_if_exists(path)?.is_none() {
            let file = CredentialsFile {
                credentials: vec![Entry {
                    principal: ADMIN.to_string(),
                    secret: Some(crate::random_secret()),
                    secret_sha256: None,
                }],
            };
            let text = serde_json::to_string_pretty(&file).expect("credentials serialize");
            files::write_private(path, text.as_bytes())?;
            return Ok((Credentials::load(path)?, true));
        }
        Ok((Credentials::load(path)?, false))
    }

    /// The principal whose secret is `secret`.
    pub fn principal_of(&self, secret: &str) -> Option<&str> {
        self.by_digest
            .get(&sha256_hex(secret.as_bytes()))
            .map(String::as_str)
    }

    /// Whether `secret` is `principal`'s.
    pub fn check(&self, principal: &str, secret: &str) -> bool {
        self.by_principal
            .get(principal)
            .is_some_and(|d| *d == sha256_hex(secret.as_bytes()))
    }

    /// The principals, in no order.
    pub fn principals(&self) -> impl Iterator<Item = &str> {
        self.by_principal.keys().map(String::as_str)
    }

    /// The credentials as a file that holds only the secrets' digests (what agents
    /// fetch from the master to authenticate callers of their own API).
    pub fn digests_json(&self) -> String {
        let mut entries: Vec<Entry> = self
            .by_principal
            .iter()
            .map(|(principal, digest)| Entry {
                principal: principal.clone(),
                secret: None,
                secret_sha256: Some(digest.clone()),
            })
            .collect();
        entries.sort_by(|a, b| a.principal.cmp(&b.principal));
        serde_json::to_string(&CredentialsFile {
            credentials: entries,
        })
        .expect("credentials serialize")
    }

    pub fn len(&self) -> usize {
        self.by_principal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_principal.is_empty()
    }
}

/// Reads `principal`'s plain secret from a credentials file (for `strata local`, which
/// hands the admin's credential to the CLI).
pub fn secret_in_file(path: &Path, principal: &str) -> Result<String, SecurityError> {
    let text = files::read_text(path)?;
    let where_ = path.display().to_string();
    let file: CredentialsFile =
        serde_json::from_str(&text).map_err(|e| refused(&where_, e.to_string()))?;
    file.credentials
        .into_iter()
        .find(|e| e.principal == principal)
        .and_then(|e| e.secret)
        .ok_or_else(|| refused(&where_, format!("no plain secret for '{principal}'")))
}

/// A client's own credential: what it sends to prove who it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Credential {
    pub fn new(principal: impl Into<String>, secret: impl Into<String>) -> Credential {
        Credential {
            principal: principal.into(),
            secret: secret.into(),
        }
    }

    /// The `Authorization` header's value: `Basic base64(principal:secret)`.
    pub fn header_value(&self) -> String {
        let raw = format!("{}:{}", self.principal, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// A tonic interceptor that adds the header to every call.
    pub fn interceptor(&self) -> AuthInterceptor {
        AuthInterceptor {
            value: self.header_value().parse().ok(),
        }
    }
}

/// Adds `authorization` to every gRPC call (see [`Credential::interceptor`]); with no
/// credential it adds nothing.
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl AuthInterceptor {
    pub fn new(credential: Option<&Credential>) -> AuthInterceptor {
        credential.map(Credential::interceptor).unwrap_or_default()
    }
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInterceptor")
            .field("set", &self.value.is_some())
            .finish()
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.value {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Splits an `Authorization` header value into what it presents.
pub(crate) enum Presented {
    Basic { principal: String, secret: String },
    Bearer(String),
}

pub(crate) fn parse_authorization(value: &str) -> Result<Presented, String> {
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header is not 'Basic ...' or 'Bearer ...'")?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Presented::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "the Basic credential is not base64")?;
        let raw = String::from_utf8(raw).map_err(|_| "the Basic credential is not UTF-8")?;
        let (principal, secret) = raw
            .split_once(':')
            .ok_or("the Basic credential is not principal:secret")?;
        return Ok(Presented::Basic {
            principal: principal.to_string(),
            secret: secret.to_string(),
        });
    }
    Err(format!(
        "unknown authorization scheme '{scheme}': use Basic or Bearer"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "0123456789abcdef0123";
    const S2: &str = "fedcba98765432100123";

    #[test]
    fn parse_and_check() {
        let text = format!(
            r#"{{"credentials":[{{"principal":"ops","secret":"{S1}"}},{{"principal":"ci","secret_sha256":"{}"}}]}}"#,
            sha256_hex(S2.as_bytes())
        );
        let c = Credentials::parse(&text, "f").unwrap();
        assert_eq!(c.principal_of(S1), Some("ops"));
        assert_eq!(c.principal_of(S2), Some("ci"));
        assert!(c.check("ops", S1));
        assert!(!c.check("ops", S2));
        assert!(!c.check("nobody", S1));
        assert_eq!(c.principal_of("wrong-secret-wrong-secret"), None);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            (
                r#"{"credentials":[{"principal":"a","secret":"short"}]}"#,
                "shorter",
            ),
            (
                &format!(r#"{{"credentials":[{{"principal":"a:b","secret":"{S1}"}}]}}"#),
                "':'",
            ),
            (
                &format!(
                    r#"{{"credentials":[{{"principal":"a","secret":"{S1}"}},{{"principal":"a","secret":"{S2}"}}]}}"#
                ),
                "twice",
            ),
            (
                &format!(
                    r#"{{"credentials":[{{"principal":"a","secret":"{S1}"}},{{"principal":"b","secret":"{S1}"}}]}}"#
                ),
                "same secret",
            ),
            (r#"{"credentials":[{"principal":"a"}]}"#, "exactly one"),
            (r#"{"creds":[]}"#, "unknown field"),
        ];
        for (text, why) in cases {
            let e = Credentials::parse(text, "f.json").unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("f.json"), "{text}: {e}");
        }
    }

    #[test]
    fn the_admin_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        let (c, made) = Credentials::load_or_create(&path).unwrap();
        assert!(made);
        let secret = secret_in_file(&path, ADMIN).unwrap();
        assert_eq!(c.principal_of(&secret), Some(ADMIN));
        let (_, made) = Credentials::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(secret_in_file(&path, ADMIN).unwrap(), secret);
    }

    #[test]
    fn digests_authenticate_like_the_secrets() {
        let text = format!(r#"{{"credentials":[{{"principal":"ops","secret":"{S1}"}}]}}"#);
        let c = Credentials::parse(&text, "").unwrap();
        let digests = c.digests_json();
        assert!(!digests.contains(S1));
        let d = Credentials::parse(&digests, "").unwrap();
        assert!(d.check("ops", S1));
    }

    #[test]
    fn headers_round_trip() {
        let cred = Credential::new("ops", S1);
        match parse_authorization(&cred.header_value()).unwrap() {
            Presented::Basic { principal, secret } => {
                assert_eq!((principal.as_str(), secret.as_str()), ("ops", S1))
            }
            Presented::Bearer(_) => panic!("basic expected"),
        }
        assert!(matches!(
            parse_authorization(&format!("Bearer {S1}")).unwrap(),
            Presented::Bearer(s) if s == S1
        ));
        assert!(parse_authorization("Digest x").is_err());
        assert!(parse_authorization("Basic !!!").is_err());
        assert!(!format!("{cred:?}").contains(S1));
    }
}
