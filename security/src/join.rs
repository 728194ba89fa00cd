//! How an agent joins the cluster, Swarm's way. The join token names the CA by its
//! digest, so the agent needs nothing else to trust the master:
//!
//! ```text
//! GET  https://master/tls/ca.crt      (unverified; its SHA-256 must equal the token's)
//! POST https://strata-master/tls/join {token, csr, names} ─▶ {node_id, cert}
//! POST https://strata-master/tls/renew {csr, names}  (with the current certificate)
//! ```
//!
//! The master names the certificate `agent:<node id>` whatever the request asks; it
//! keeps the names the agent asks for (its hostname and address, for its own HTTP
//! listener) except the master's and the App API's.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{ClientTls, ClusterCa, SecurityError, files, sha256_hex};

const PREFIX: &str = "STRATA-JOIN-1-";
/// The paths of the join protocol on the master.
pub const CA_PATH: &str = "/tls/ca.crt";
pub const JOIN_PATH: &str = "/tls/join";
pub const RENEW_PATH: &str = "/tls/renew";
/// Where an authenticated principal (a framework such as `strata serve`) has a
/// certificate for its own listener signed: `CN=user:<principal>`, the names asked for
/// except the master's.
pub const ISSUE_PATH: &str = "/tls/issue";
/// Where an agent reads the credentials' digests, to authenticate callers of its own
/// API.
pub const CREDENTIALS_PATH: &str = "/tls/credentials";
/// Where an agent reads the ACLs in force, to authorize callers of its own API (the
/// same ACLs as the master's, reloaded with them).
pub const ACLS_PATH: &str = "/tls/acls";
/// The most names an agent certificate carries.
pub const MAX_NAMES: usize = 16;

/// `STRATA-JOIN-1-<SHA-256 of the CA certificate>-<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_fingerprint, self.secret)
    }
}

impl JoinToken {
    /// A fresh token for `ca`.
    pub fn new(ca: &ClusterCa) -> JoinToken {
        JoinToken {
            ca_fingerprint: ca.fingerprint(),
            secret: crate::random_secret(),
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, SecurityError> {
        let bad = |why: &str| SecurityError::JoinToken(why.to_string());
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with STRATA-JOIN-1-"))?;
        let (fingerprint, secret) = rest
            .split_once('-')
            .ok_or_else(|| bad("expected STRATA-JOIN-1-<CA digest>-<secret>"))?;
        if fingerprint.len() != 64 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the CA digest is not 64 hex digits"));
        }
        if secret.len() < crate::credentials::MIN_SECRET_LEN
            || !secret.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(bad("the secret is too short or not alphanumeric"));
        }
        Ok(JoinToken {
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// Whether `presented` is this token (its secret compared by digest).
    pub fn accepts(&self, presented: &str) -> bool {
        match JoinToken::parse(presented) {
            Ok(t) => {
                t.ca_fingerprint == self.ca_fingerprint
                    && sha256_hex(t.secret.as_bytes()) == sha256_hex(self.secret.as_bytes())
            }
            Err(_) => false,
        }
    }

    /// The token kept at `path` (mode 0600), made there first if there is none (or the
    /// one there belongs to another CA). The flag says whether it was made now.
    pub fn load_or_create(path: &Path, ca: &ClusterCa) -> Result<(JoinToken, bool), SecurityError> {
        if let Some(text) = files::read_if_exists(path)? {
            let token = JoinToken::parse(&text)?;
            if token.ca_fingerprint == ca.fingerprint() {
                return Ok((token, false));
            }
        }
        let token = JoinToken::new(ca);
        files::write_private(path, format!("{token}\n").as_bytes())?;
        Ok((token, true))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    /// PEM.
    pub csr: String,
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Certified {
    pub node_id: String,
    /// PEM.
    pub cert: String,
}

/// The names an agent certificate gets: [`crate::AGENT_NAME`], then those asked for
/// that are valid and not reserved (the master's and the App API's names), at most
/// [`MAX_NAMES`].
pub fn agent_names(requested: &[String], reserved: &[String]) -> Vec<String> {
    let mut names = vec![crate::AGENT_NAME.to_string()];
    for name in requested {
        let name = name.trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        let taken = name == crate::MASTER_NAME
            || name == crate::APPS_NAME
            || reserved.iter().any(|r| r.eq_ignore_ascii_case(&name));
        if valid && !taken && !names.contains(&name) && names.len() < MAX_NAMES {
            names.push(name);
        }
    }
    names
}

/// An agent's certificate, key and the CA, as kept in its work dir (`tls/`).
#[derive(Clone)]
pub struct AgentIdentity {
    pub node_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// The identity kept in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<AgentIdentity>, SecurityError> {
        let (Some(ca_pem), Some(cert_pem), Some(key_pem)) = (
            files::read_if_exists(&dir.join("ca.crt"))?,
            files::read_if_exists(&dir.join("agent.crt"))?,
            files::read_if_exists(&dir.join("agent.key"))?,
        ) else {
            return Ok(None);
        };
        let info = crate::ca::cert_info_pem(&cert_pem)?;
        let node_id = info
            .common_name
            .as_deref()
            .and_then(|cn| cn.strip_prefix(crate::principal::AGENT_CN_PREFIX))
            .ok_or_else(|| {
                SecurityError::Certificate(format!(
                    "{} is not an agent certificate (CN=agent:<id>)",
                    dir.join("agent.crt").display()
                ))
            })?
            .to_string();
        Ok(Some(AgentIdentity {
            node_id,
            ca_pem,
            cert_pem,
            key_pem,
        }))
    }

    /// Keeps the identity in `dir` (the key with mode 0600), replacing what was there.
    pub fn save(&self, dir: &Path) -> Result<(), SecurityError> {
        files::private_dir(dir)?;
        files::write_public(&dir.join("ca.crt"), self.ca_pem.as_bytes())?;
        files::write_private(&dir.join("agent.key"), self.key_pem.as_bytes())?;
        files::write_public(&dir.join("agent.crt"), self.cert_pem.as_bytes())
    }

    /// When the certificate stops being valid.
    pub fn not_after(&self) -> Result<SystemTime, SecurityError> {
        Ok(crate::ca::cert_info_pem(&self.cert_pem)?.not_after)
    }

    /// When the certificate should be renewed ([`crate::ca::renew_at`]).
    pub fn renew_at(&self) -> Result<SystemTime, SecurityError> {
        crate::ca::renew_at(&self.cert_pem)
    }

    /// The settings of the agent's link to the master (mutual TLS).
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca_pem: Some(self.ca_pem.clone()),
            identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
            credential: None,
        }
    }
}

fn join_error(message: String) -> SecurityError {
    SecurityError::Certificate(message)
}

/// An HTTPS client of the master's `/tls/*` endpoints: `https://strata-master:PORT`
/// resolved to the master's address. Keep one to reuse its connection.
#[derive(Debug, Clone)]
pub struct MasterClient {
    client: reqwest::Client,
    base: String,
}

impl MasterClient {
    /// A client of the master at `addr` (`host:port`) with `tls`.
    pub async fn new(addr: &str, tls: &ClientTls) -> Result<MasterClient, SecurityError> {
        let (client, base) = master_client(addr, tls).await?;
        Ok(MasterClient { client, base })
    }

    /// The credentials' digests, for an agent's identity (see [`CREDENTIALS_PATH`]).
    pub async fn credentials(&self) -> Result<crate::Credentials, SecurityError> {
        let url = format!("{}{CREDENTIALS_PATH}", self.base);
        let text = send(self.client.get(&url), &url).await?;
        crate::Credentials::parse(&text, "the master's credentials")
    }

    /// The ACLs in force on the master (see [`ACLS_PATH`]).
    pub async fn acls(&self) -> Result<crate::Acls, SecurityError> {
        let url = format!("{}{ACLS_PATH}", self.base);
        let text = send(self.client.get(&url), &url).await?;
        crate::Acls::parse(&text).map_err(|reason| SecurityError::Acls {
            path: url.clone(),
            reason,
        })
    }
}

/// `https://strata-master:PORT` resolved to `addr`'s address, and the client for it.
async fn master_client(
    addr: &str,
    tls: &ClientTls,
) -> Result<(reqwest::Client, String), SecurityError> {
    let bare = crate::tls::host_port(addr);
    let resolved = tokio::net::lookup_host(bare)
        .await
        .map_err(|e| SecurityError::Unreachable {
            url: bare.to_string(),
            reason: format!("cannot resolve it: {e}"),
        })?
        .next()
        .ok_or_else(|| SecurityError::Unreachable {
            url: bare.to_string(),
            reason: "it resolves to nothing".to_string(),
        })?;
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .resolve(crate::MASTER_NAME, resolved);
    let client = tls
        .reqwest(builder)?
        .build()
        .map_err(|e| join_error(format!("cannot build an HTTPS client: {e}")))?;
    Ok((
        client,
        format!("https://{}:{}", crate::MASTER_NAME, resolved.port()),
    ))
}

/// Sends `request` to `url`; the body of a success, or why there is none.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<String, SecurityError> {
    let unreachable = |e: reqwest::Error| SecurityError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        // Strata's refusals are `{"error": ...}`; say just the message.
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        return Err(SecurityError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(text)
}

async fn post_json<T: Serialize, R: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &str,
    body: &T,
) -> Result<R, SecurityError> {
    let text = send(client.post(url).json(body), url).await?;
    serde_json::from_str(&text)
        .map_err(|e| join_error(format!("the master's answer does not parse: {e}")))
}

/// Joins the cluster of the master at `addr` (`host:port`) with `token`: fetches the CA
/// and checks it against the token, then has a new key's certificate signed.
pub async fn join(
    addr: &str,
    token: &JoinToken,
    names: &[String],
) -> Result<AgentIdentity, SecurityError> {
    let bare = crate::tls::host_port(addr);
    // The CA is fetched without verification: its digest, which the token carries, is
    // what makes it trusted. Nothing secret is sent on this connection.
    let unverified = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| join_error(format!("cannot build an HTTPS client: {e}")))?;
    let url = format!("https://{bare}{CA_PATH}");
    let ca_pem = send(unverified.get(&url), &url).await?;
    let digest = sha256_hex(&crate::ca::pem_der(&ca_pem, "CERTIFICATE")?);
    if digest != token.ca_fingerprint {
        return Err(SecurityError::JoinToken(format!(
            "the CA of the master at {bare} (sha256 {digest}) is not the one the join token names ({}): wrong master, or a stale token",
            token.ca_fingerprint
        )));
    }
    let (csr, key_pem) = crate::ca::certificate_request(names)?;
    let tls = ClientTls {
        ca_pem: Some(ca_pem.clone()),
        ..ClientTls::default()
    };
    let (client, base) = master_client(bare, &tls).await?;
    let certified: Certified = post_json(
        &client,
        &format!("{base}{JOIN_PATH}"),
        &JoinRequest {
            token: token.to_string(),
            csr,
            names: names.to_vec(),
        },
    )
    .await?;
    Ok(AgentIdentity {
        node_id: certified.node_id,
        ca_pem,
        cert_pem: certified.cert,
        key_pem,
    })
}

/// Has a new key's certificate signed for the same node, authenticated by `current`.
pub async fn renew(
    addr: &str,
    current: &AgentIdentity,
    names: &[String],
) -> Result<AgentIdentity, SecurityError> {
    let (csr, key_pem) = crate::ca::certificate_request(names)?;
    let (client, base) = master_client(addr, &current.client_tls()).await?;
    let certified: Certified = post_json(
        &client,
        &format!("{base}{RENEW_PATH}"),
        &RenewRequest {
            csr,
            names: names.to_vec(),
        },
    )
    .await?;
    if certified.node_id != current.node_id {
        return Err(join_error(format!(
            "the master renewed the certificate for node {} instead of {}",
            certified.node_id, current.node_id
        )));
    }
    Ok(AgentIdentity {
        node_id: certified.node_id,
        ca_pem: current.ca_pem.clone(),
        cert_pem: certified.cert,
        key_pem,
    })
}

/// Has a certificate for a new key signed by the master at `addr` for `names`,
/// authenticated by `tls`'s credential (e.g. the App API's certificate, for
/// [`crate::APPS_NAME`]). Returns the certificate and key (PEM).
pub async fn issue(
    addr: &str,
    tls: &ClientTls,
    names: &[String],
) -> Result<crate::Issued, SecurityError> {
    let (csr, key_pem) = crate::ca::certificate_request(names)?;
    let (client, base) = master_client(addr, tls).await?;
    let certified: Certified = post_json(
        &client,
        &format!("{base}{ISSUE_PATH}"),
        &RenewRequest {
            csr,
            names: names.to_vec(),
        },
    )
    .await?;
    Ok(crate::Issued {
        cert_pem: certified.cert,
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match() {
        let ca = ClusterCa::create().unwrap();
        let token = JoinToken::new(&ca);
        let text = token.to_string();
        assert!(text.starts_with("STRATA-JOIN-1-"));
        assert_eq!(JoinToken::parse(&text).unwrap(), token);
        assert!(token.accepts(&text));
        let other = JoinToken::new(&ca);
        assert!(!token.accepts(&other.to_string()));
        for bad in [
            "",
            "SWMTKN-1-x",
            "STRATA-JOIN-1-abc-def",
            &text[..text.len() - 50],
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn a_token_is_kept_per_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        let ca = ClusterCa::create().unwrap();
        let (t1, made) = JoinToken::load_or_create(&path, &ca).unwrap();
        assert!(made);
        let (t2, made) = JoinToken::load_or_create(&path, &ca).unwrap();
        assert!(!made);
        assert_eq!(t1, t2);
        let (t3, made) = JoinToken::load_or_create(&path, &ClusterCa::create().unwrap()).unwrap();
        assert!(made);
        assert_ne!(t1, t3);
    }

    #[test]
    fn agents_never_get_reserved_names() {
        let names = agent_names(
            &[
                "strata-master".into(),
                "Node1.example".into(),
                "10.0.0.5".into(),
                "bad name".into(),
                "master.example".into(),
            ],
            &["master.example".into()],
        );
        assert_eq!(names, vec!["strata-agent", "node1.example", "10.0.0.5"]);
    }

    #[test]
    fn identities_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create().unwrap();
        let issued = ca
            .issue("agent:n9", &[], Duration::from_secs(3000))
            .unwrap();
        let id = AgentIdentity {
            node_id: "n9".into(),
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        id.save(&dir.path().join("tls")).unwrap();
        let back = AgentIdentity::load(&dir.path().join("tls"))
            .unwrap()
            .unwrap();
        assert_eq!(back.node_id, "n9");
        let renew = back.renew_at().unwrap();
        assert!(renew > SystemTime::now() && renew < back.not_after().unwrap());
        assert!(
            AgentIdentity::load(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }
}
