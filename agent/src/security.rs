//! The agent's identity: its certificate from the cluster CA (joined with a token at
//! first start, kept in `WORK_DIR/tls/`, renewed at two thirds of its life), the mutual
//! TLS of its link to the master, the HTTPS of its own API, the credentials it
//! authenticates callers of that API with (digests, fetched from the master) and the
//! ACLs it authorizes them with (the master's, fetched too: who may read which
//! sandboxes and see which tasks, see [`crate::http`]).
//!
//! ```text
//!  start ─ WORK/tls/agent.crt? ─ no ─▶ join(master, token) ─ retry while unreachable
//!        └──────────────────────── yes ─▶ identity ─▶ link endpoint (mTLS, strata-master)
//!                                                 └─▶ HTTPS server (agent.crt,
//!                                                     strata_security::tls::serve)
//!  renewer:     sleep until 2/3 of life ─▶ renew ─▶ save ─▶ new endpoint + server cert
//!  security:    every 30 s ─▶ GET /tls/credentials ─▶ Authenticator::set_credentials
//!                          └─▶ GET /tls/acls        ─▶ Authorizer::set
//!               (one kept client; a failed fetch keeps what the agent had)
//! ```
//!
//! Until the first fetch a secure agent authenticates nobody but cluster certificates
//! and authorizes with [`Acls::secure_default`]; an insecure agent uses
//! [`Authorizer::insecure`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strata_security::join::{self, AgentIdentity, JoinToken};
use strata_security::{
    Acls, Authenticator, Authorizer, ClientTls, Credentials, SecurityError, ServerTls,
};
use tokio::sync::watch;
use tonic::transport::Endpoint;

/// How often the agent refreshes the credentials' digests and the ACLs from the
/// master.
const CREDENTIALS_REFRESH: Duration = Duration::from_secs(30);
/// Retry interval of a failed join, renewal or refresh.
const RETRY: Duration = Duration::from_secs(2);
/// The paths of the agent's API anyone may call.
pub(crate) const PUBLIC: &[&str] = &["/health"];

/// Why the agent could not get or keep its identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the agent has no certificate in {0} and no join token: start it with --join-token or --join-token-file (the master's WORK_DIR/tls/join-token), or --insecure against a master started with --insecure"
    )]
    NoToken(PathBuf),
    #[error("{0}")]
    Security(#[from] strata_security::SecurityError),
}

/// Where the agent keeps its identity.
pub fn tls_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("tls")
}

/// The names the agent's certificate asks for: its hostname and its advertised host.
pub(crate) fn names(hostname: &str, address: &str) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(address)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !host.is_empty() && !names.contains(&host) {
        names.push(host);
    }
    for loopback in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == loopback) {
            names.push(loopback.to_string());
        }
    }
    names
}

/// The identity kept in the work dir, or a new one from joining with `token`. A master
/// that cannot be reached is retried until `stop` resolves (`Ok(None)` then); a token
/// the master refuses is an error at once.
pub(crate) async fn obtain(
    master: &str,
    work_dir: &Path,
    token: Option<&str>,
    names: &[String],
    stop: impl Future<Output = ()>,
) -> Result<Option<AgentIdentity>, IdentityError> {
    let dir = tls_dir(work_dir);
    if let Some(identity) = AgentIdentity::load(&dir)? {
        tracing::info!(node_id = %identity.node_id, dir = %dir.display(), "agent certificate loaded");
        return Ok(Some(identity));
    }
    let token = token.ok_or_else(|| IdentityError::NoToken(dir.clone()))?;
    let token = JoinToken::parse(token)?;
    tokio::pin!(stop);
    loop {
        let attempt = join::join(master, &token, names);
        let result = tokio::select! {
            r = attempt => r,
            () = &mut stop => return Ok(None),
        };
        match result {
            Ok(identity) => {
                identity.save(&dir)?;
                tracing::info!(node_id = %identity.node_id, dir = %dir.display(), "joined the cluster");
                return Ok(Some(identity));
            }
            Err(e) if e.is_refusal() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot join yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = &mut stop => return Ok(None),
                }
            }
        }
    }
}

/// The link's endpoint for `master` (`host:port`), mutual TLS when `tls` has a CA.
pub(crate) fn endpoint(master: &str, tls: &ClientTls) -> Result<Endpoint, String> {
    let endpoint = tls
        .endpoint(master, strata_security::MASTER_NAME)
        .map_err(|e| e.to_string())?;
    Ok(crate::link::tune(endpoint))
}

/// The HTTPS settings of the agent's API with `identity`.
pub(crate) fn server_tls(identity: &AgentIdentity) -> ServerTls {
    ServerTls::new(&identity.cert_pem, &identity.key_pem, &identity.ca_pem)
}

/// Renews the certificate at two thirds of its life, for as long as the agent runs;
/// each new identity is saved, then published (the link dials with it next time, the
/// API serves it).
pub(crate) async fn renew_forever(
    master: String,
    work_dir: PathBuf,
    names: Vec<String>,
    mut current: AgentIdentity,
    identities: watch::Sender<AgentIdentity>,
    endpoints: watch::Sender<Endpoint>,
    servers: watch::Sender<Option<ServerTls>>,
) {
    loop {
        let at = current.renew_at().unwrap_or_else(|_| SystemTime::now());
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
        match join::renew(&master, &current, &names).await {
            Ok(renewed) => {
                if let Err(e) = renewed.save(&tls_dir(&work_dir)) {
                    tracing::error!(error = %e, "cannot keep the renewed certificate; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                match endpoint(&master, &renewed.client_tls()) {
                    Ok(e) => {
                        let _ = endpoints.send(e);
                    }
                    Err(e) => tracing::error!(error = %e, "the renewed certificate is unusable"),
                }
                let _ = servers.send(Some(server_tls(&renewed)));
                let _ = identities.send(renewed.clone());
                tracing::info!(
                    node_id = %renewed.node_id,
                    not_after = ?renewed.not_after().ok(),
                    "agent certificate renewed"
                );
                current = renewed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying");
                tokio::time::sleep(RETRY.max(wait.min(Duration::from_secs(30)))).await;
            }
        }
    }
}

/// Keeps `authn`'s credentials and `authz`'s ACLs those of the master, refreshed
/// every 30 s over one kept connection (made anew when the certificate is renewed). A
/// failed fetch keeps what the agent had and is retried sooner.
pub(crate) async fn refresh_security(
    master: String,
    mut identity: watch::Receiver<AgentIdentity>,
    authn: Authenticator,
    authz: Authorizer,
) {
    let mut client: Option<join::MasterClient> = None;
    loop {
        if identity.has_changed().unwrap_or(false) {
            client = None;
        }
        if client.is_none() {
            let current = identity.borrow_and_update().clone();
            client = join::MasterClient::new(&master, &current.client_tls())
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "cannot reach the master yet"))
                .ok();
        }
        let Some(c) = &client else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let (credentials, acls) = tokio::join!(c.credentials(), c.acls());
        // A master that answered keeps its connection; one that did not is dialled
        // anew (it may have restarted, or the certificate changed).
        let mut failed = false;
        let mut unreachable = false;
        let mut failure = |what: &str, e: SecurityError| {
            tracing::debug!(error = %e, "cannot refresh the {what} yet");
            failed = true;
            unreachable |= matches!(e, SecurityError::Unreachable { .. });
        };
        match credentials {
            Ok(credentials) => authn.set_credentials(credentials),
            Err(e) => failure("credentials", e),
        }
        match acls {
            Ok(acls) => authz.set(acls),
            Err(e) => failure("ACLs", e),
        }
        if unreachable {
            client = None;
        }
        let wait = if failed { RETRY } else { CREDENTIALS_REFRESH };
        tokio::time::sleep(wait).await;
    }
}

/// An authenticator for the agent's API that accepts nobody until the credentials
/// arrive (and cluster certificates at once).
pub(crate) fn authenticator() -> Authenticator {
    Authenticator::new(Credentials::default(), PUBLIC)
}

/// The authorizer of a secure agent's API until the master's ACLs arrive:
/// [`Acls::secure_default`] (owners and `admin` only).
pub(crate) fn authorizer() -> Authorizer {
    Authorizer::new(Acls::secure_default())
}
