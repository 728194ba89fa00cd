//! The master's side of identities: the cluster CA, the master's certificate, the join
//! token and the credentials file in its work dir, the one authentication layer of its
//! port, and the join protocol's endpoints.
//!
//! ```text
//!  WORK/tls/ca.crt ca.key        the cluster CA (made at first start)
//!  WORK/tls/master.crt .key      issued at every start for strata-master + --tls-name
//!  WORK/tls/join-token           STRATA-JOIN-1-<ca digest>-<secret>
//!  WORK/credentials.json         principals and secrets (made with `admin` at first start)
//!
//!  GET  /tls/ca.crt   anyone          the CA certificate
//!  POST /tls/join     join token      signs an agent's request: CN=agent:<new node id>
//!  POST /tls/renew    an agent        signs a new request for the same node
//!  POST /tls/issue    a user          signs a request: CN=user:<principal> (a framework's
//!                                     own listener, e.g. the App API)
//!  GET  /tls/acls     an agent        the ACLs in force (agents authorize their own API
//!                                     with them)
//! ```
//!
//! Who may call what: agents only the agent link, `/tls/renew`, `/tls/credentials`,
//! `/tls/acls` and the operator event stream (where they see services only); users (frameworks, operators) everything but those, each call then
//! asked of the one [`Authorizer`] (`--acls`, reloaded by [`MasterSecurity::reload`] on
//! SIGHUP and `POST /security/reload`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_security::join::{
    ACLS_PATH, CA_PATH, CREDENTIALS_PATH, Certified, ISSUE_PATH, JOIN_PATH, JoinRequest, JoinToken,
    RENEW_PATH, RenewRequest,
};
use strata_security::{
    Acls, Authenticator, Authorizer, ClusterCa, Credentials, Principal, SecurityError, ServerTls,
    authn,
};

use crate::driver::DriverHandle;

/// How long the master's own certificate is valid (it is issued anew at every start).
const MASTER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a certificate from `/tls/issue` is valid.
const ISSUED_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The paths served to callers with no credential.
const PUBLIC: &[&str] = &["/health", CA_PATH, JOIN_PATH];
/// The paths an agent's certificate may call.
const AGENT_PREFIX: &str = "/strata.v1.AgentLink/";
/// The operator event stream, which agents follow (services only) for their proxies,
/// and their acknowledgements.
const EVENTS_PATH: &str = "/strata.v1.Operator/Subscribe";
const ACK_PATH: &str = "/strata.v1.Operator/AckEvents";

/// TLS and authentication of a master (`--insecure` turns them off).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Names (DNS or IP) put in the master's certificate besides `strata-master`,
    /// `localhost`, the loopback addresses, the hostname and the listen address.
    pub names: Vec<String>,
    /// The credentials file; `None`: `WORK/credentials.json`, made with the principal
    /// `admin` at first start.
    pub credentials: Option<PathBuf>,
    /// How long an agent's certificate is valid; agents renew at two thirds of it.
    pub agent_cert_ttl: Duration,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            names: Vec::new(),
            credentials: None,
            agent_cert_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Whether the master's port is TLS with authentication.
#[derive(Debug, Clone, Default)]
pub enum Security {
    /// Plain text, everyone anonymous: what `--insecure` gives (and the library's
    /// default, for tests that exercise other things).
    #[default]
    Insecure,
    Tls(TlsOptions),
}

/// What the master's listener needs: the authenticator, and the TLS settings and CA
/// when secure.
#[derive(Clone)]
pub struct MasterSecurity {
    pub authn: Authenticator,
    /// The one authorizer (the core holds a clone).
    pub authz: Authorizer,
    tls: Option<Arc<Secure>>,
}

struct Secure {
    /// Reloaded by [`MasterSecurity::reload`].
    credentials_path: PathBuf,
    ca: ClusterCa,
    join_token: JoinToken,
    server: ServerTls,
    /// The master's certificate and key (PEM): also its client identity towards
    /// agents (the dashboard's sandbox relay).
    identity: (String, String),
    agent_cert_ttl: Duration,
}

impl MasterSecurity {
    /// How the master reaches agents' HTTP APIs (the dashboard's sandbox relay):
    /// trusting only the cluster CA and presenting its own certificate when secure
    /// (agents know it as [`Principal::Master`]), plain text otherwise; never a
    /// credential.
    pub fn agent_client_tls(&self) -> strata_security::ClientTls {
        strata_security::ClientTls {
            ca_pem: self.tls.as_ref().map(|s| s.ca.cert_pem().to_string()),
            identity: self.tls.as_ref().map(|s| s.identity.clone()),
            credential: None,
        }
    }
}

impl std::fmt::Debug for MasterSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterSecurity")
            .field("secure", &self.tls.is_some())
            .finish()
    }
}

/// The paths of a secure master's files in its work dir.
pub fn tls_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("tls")
}

pub fn default_credentials_path(work_dir: &Path) -> PathBuf {
    work_dir.join("credentials.json")
}

impl MasterSecurity {
    pub fn insecure() -> MasterSecurity {
        MasterSecurity {
            authn: Authenticator::insecure(),
            authz: Authorizer::insecure(),
            tls: None,
        }
    }

    /// The same, deciding with `authz`.
    pub fn with_authorizer(mut self, authz: Authorizer) -> MasterSecurity {
        self.authz = authz;
        self
    }

    /// The ACLs a master applies without `--acls`: [`Acls::secure_default`] when
    /// secure, else [`Acls::insecure_default`].
    pub fn default_acls(&self) -> Acls {
        if self.tls.is_some() {
            Acls::secure_default()
        } else {
            Acls::insecure_default()
        }
    }

    /// Reads the credentials file and the ACL file again and applies both, or neither
    /// when one is unreadable or invalid (the error says which). Returns what was
    /// reloaded (an insecure master has no credentials; built-in ACLs have no file).
    pub fn reload(&self) -> Result<Vec<&'static str>, SecurityError> {
        let credentials = match &self.tls {
            Some(secure) => Some(Credentials::load(&secure.credentials_path)?),
            None => None,
        };
        let acls = match self.authz.path() {
            Some(path) => Some(Acls::load(path)?),
            None => None,
        };
        let mut reloaded = Vec::new();
        if let Some(credentials) = credentials {
            self.authn.set_credentials(credentials);
            reloaded.push("credentials");
        }
        if let Some(acls) = acls {
            self.authz.set(acls);
            reloaded.push("acls");
        }
        tracing::info!(target: "strata::audit", ?reloaded, "security files reloaded");
        Ok(reloaded)
    }

    /// Loads (or makes, at first start) the CA, the join token and the credentials in
    /// `work_dir` ([`prepare`]), and issues the master's certificate for `listen` and
    /// `options.names`.
    pub fn setup(
        work_dir: &Path,
        options: &TlsOptions,
        listen: SocketAddr,
    ) -> Result<MasterSecurity, SecurityError> {
        let Prepared {
            ca,
            join_token,
            credentials,
            credentials_path,
        } = prepare(work_dir, options)?;
        let dir = tls_dir(work_dir);
        let names = master_names(&options.names, listen);
        let issued = ca.issue(strata_security::MASTER_NAME, &names, MASTER_CERT_VALIDITY)?;
        strata_security::files::write_public(&dir.join("master.crt"), issued.cert_pem.as_bytes())?;
        strata_security::files::write_private(&dir.join("master.key"), issued.key_pem.as_bytes())?;
        let server = ServerTls::new(&issued.cert_pem, &issued.key_pem, ca.cert_pem());
        tracing::info!(
            principals = credentials.len(),
            names = ?names,
            ca = %dir.join("ca.crt").display(),
            join_token = %dir.join("join-token").display(),
            "TLS and authentication on"
        );
        Ok(MasterSecurity {
            authn: Authenticator::new(credentials, PUBLIC),
            authz: Authorizer::new(Acls::secure_default()),
            tls: Some(Arc::new(Secure {
                credentials_path,
                ca,
                join_token,
                server,
                identity: (issued.cert_pem.clone(), issued.key_pem.clone()),
                agent_cert_ttl: options.agent_cert_ttl,
            })),
        })
    }

    /// The listener's TLS settings (`None`: plain text).
    pub fn server_tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref().map(|s| &s.server)
    }

    /// The join protocol's routes (empty when insecure).
    pub fn routes(&self, driver: DriverHandle) -> Router {
        let Some(secure) = self.tls.clone() else {
            return Router::new();
        };
        Router::new()
            .route(CA_PATH, get(ca_cert))
            .route(JOIN_PATH, post(join))
            .route(RENEW_PATH, post(renew))
            .route(ISSUE_PATH, post(issue))
            .route(CREDENTIALS_PATH, get(credential_digests))
            .route(ACLS_PATH, get(acls_for_agents))
            .route_layer(axum::middleware::from_fn(crate::guard::json))
            .with_state(JoinState {
                secure,
                driver,
                authn: self.authn.clone(),
                authz: self.authz.clone(),
            })
    }
}

/// What a secure master keeps in its work dir, made at its first start.
pub struct Prepared {
    pub ca: ClusterCa,
    pub join_token: JoinToken,
    pub credentials: Credentials,
    /// `TlsOptions::credentials`, or `WORK/credentials.json`.
    pub credentials_path: PathBuf,
}

/// Loads the CA, the join token and the credentials in `work_dir`, making those missing
/// (the credentials file only where `options.credentials` names none). `strata-master`
/// and `strata local` call it before they print where these files are.
pub fn prepare(work_dir: &Path, options: &TlsOptions) -> Result<Prepared, SecurityError> {
    let dir = tls_dir(work_dir);
    let (ca, made) = ClusterCa::load_or_create(&dir)?;
    if made {
        tracing::info!(dir = %dir.display(), fingerprint = %ca.fingerprint(), "made the cluster CA");
    }
    let (join_token, made) = JoinToken::load_or_create(&dir.join("join-token"), &ca)?;
    if made {
        tracing::info!(file = %dir.join("join-token").display(), "made the agents' join token");
    }
    let credentials_path = options
        .credentials
        .clone()
        .unwrap_or_else(|| default_credentials_path(work_dir));
    let credentials = if options.credentials.is_some() {
        Credentials::load(&credentials_path)?
    } else {
        let (credentials, made) = Credentials::load_or_create(&credentials_path)?;
        if made {
            tracing::info!(
                file = %credentials_path.display(),
                "made the credentials file with the principal 'admin'"
            );
        }
        credentials
    };
    Ok(Prepared {
        ca,
        join_token,
        credentials,
        credentials_path,
    })
}

/// The names in the master's certificate.
fn master_names(extra: &[String], listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        strata_security::MASTER_NAME.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = hostname() {
        names.push(host);
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// The machine's hostname (the kernel's, as `hostname` prints it).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Agents may call only the agent link and `/tls/renew`; nobody else may call the
/// agent link.
pub async fn separate(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous);
    let agent_only = path.starts_with(AGENT_PREFIX) || path == RENEW_PATH;
    let agent_api = agent_only || path == CREDENTIALS_PATH || path == ACLS_PATH;
    let refusal = match &principal {
        Principal::Agent(_)
            if !agent_api
                && path != "/health"
                && path != CA_PATH
                && path != EVENTS_PATH
                && path != ACK_PATH =>
        {
            Some("an agent certificate may call only the agent API: use an operator's credential")
        }
        Principal::User(_) if agent_only => {
            Some("only an agent (with its cluster certificate) may call the agent API")
        }
        // The master's certificate speaks to agents (the dashboard's relay), never to
        // a master.
        Principal::Master if path != "/health" => {
            Some("the master's own certificate calls agents only")
        }
        _ => None,
    };
    match refusal {
        Some(why) => {
            authn::audit_refused(&principal, request.method().as_str(), &path, why);
            let grpc = authn::is_grpc(&request);
            if grpc {
                tonic::Status::permission_denied(why).into_http::<axum::body::Body>()
            } else {
                (
                    StatusCode::FORBIDDEN,
                    axum::Json(serde_json::json!({ "error": why })),
                )
                    .into_response()
            }
        }
        None => next.run(request).await,
    }
}

#[derive(Clone)]
struct JoinState {
    secure: Arc<Secure>,
    driver: DriverHandle,
    authn: Authenticator,
    authz: Authorizer,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// A 403 when `principal`'s certificate is revoked (its agent was marked gone), or a
/// 503 when the core cannot say.
async fn revoked(
    state: &JoinState,
    principal: &Principal,
    action: &str,
    path: &str,
) -> Option<Response> {
    let name = principal.name();
    match state.driver.revoked(&name).await {
        Ok(false) => None,
        Ok(true) => {
            authn::audit_refused(principal, action, path, "agent is gone");
            Some(error(
                StatusCode::FORBIDDEN,
                format!("the certificate of {name} is revoked: its agent was marked gone"),
            ))
        }
        Err(e) => Some(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The credentials with their secrets' digests only, for agents (not gone ones).
async fn credential_digests(
    State(state): State<JoinState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    if !matches!(principal, Principal::Agent(_)) {
        return error(
            StatusCode::FORBIDDEN,
            "only agents read the credentials' digests",
        );
    }
    if let Some(refused) = revoked(&state, &principal, "read credentials", CREDENTIALS_PATH).await {
        return refused;
    }
    match state.authn.credentials() {
        Some(credentials) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            credentials.digests_json(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no credentials: the master is insecure",
        ),
    }
}

/// The ACLs in force, for agents (which authorize their own API with them).
async fn acls_for_agents(
    State(state): State<JoinState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    if !matches!(principal, Principal::Agent(_)) {
        return error(StatusCode::FORBIDDEN, "only agents read the ACLs here");
    }
    if let Some(refused) = revoked(&state, &principal, "read ACLs", ACLS_PATH).await {
        return refused;
    }
    axum::Json(state.authz.acls().to_json()).into_response()
}

async fn ca_cert(State(state): State<JoinState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        state.secure.ca.cert_pem().to_string(),
    )
        .into_response()
}

/// The body parsed, or the text of a 400.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the body is not what this endpoint takes: {e}"))
}

async fn join(State(state): State<JoinState>, body: axum::body::Bytes) -> Response {
    let request: JoinRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if !state.secure.join_token.accepts(&request.token) {
        authn::audit_refused(&Principal::Anonymous, "join", JOIN_PATH, "wrong join token");
        return error(
            StatusCode::UNAUTHORIZED,
            "the join token is not this cluster's: copy it from the master's work dir (tls/join-token)",
        );
    }
    let node_id = uuid::Uuid::new_v4().to_string();
    sign(&state, &request.csr, &request.names, &node_id, "join")
}

async fn renew(
    State(state): State<JoinState>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let Principal::Agent(node_id) = &principal else {
        return error(
            StatusCode::FORBIDDEN,
            "only an agent (with its current certificate) renews its certificate",
        );
    };
    let request: RenewRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    // A gone agent's certificate is revoked: it is not renewed either.
    if let Some(refused) = revoked(&state, &principal, "renew", RENEW_PATH).await {
        return refused;
    }
    sign(&state, &request.csr, &request.names, node_id, "renew")
}

async fn issue(
    State(state): State<JoinState>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let Principal::User(user) = &principal else {
        return error(
            StatusCode::FORBIDDEN,
            "certificates are issued to authenticated principals only",
        );
    };
    let request: RenewRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let secure = &state.secure;
    let mut names: Vec<String> = request
        .names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| n != strata_security::MASTER_NAME && n != strata_security::AGENT_NAME)
        .collect();
    names.dedup();
    names.truncate(strata_security::join::MAX_NAMES);
    let cn = format!("{}{user}", strata_security::principal::USER_CN_PREFIX);
    match secure
        .ca
        .sign_request(&request.csr, &cn, &names, ISSUED_CERT_VALIDITY)
    {
        Ok(cert) => {
            authn::audit_allowed(&principal, "issue certificate", &names.join(","));
            axum::Json(Certified {
                node_id: String::new(),
                cert,
            })
            .into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn sign(
    state: &JoinState,
    csr: &str,
    requested: &[String],
    node_id: &str,
    action: &str,
) -> Response {
    let secure = &state.secure;
    // Clients verify the master as `strata-master` (never in an agent's certificate);
    // an agent on the master's machine may carry its loopback and host names.
    let names = strata_security::join::agent_names(requested, &[]);
    let cn = format!("{}{node_id}", strata_security::principal::AGENT_CN_PREFIX);
    match secure
        .ca
        .sign_request(csr, &cn, &names, secure.agent_cert_ttl)
    {
        Ok(cert) => {
            tracing::info!(node_id, ?names, action, "signed an agent certificate");
            axum::Json(Certified {
                node_id: node_id.to_string(),
                cert,
            })
            .into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
