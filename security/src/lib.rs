//! Strata's identities and the one authentication layer.
//!
//! ```text
//!  master work dir/tls: ca.crt ca.key (the cluster CA) ─ issues ─▶ master.crt (strata-master)
//!                       join-token  STRATA-JOIN-1-<sha256 of ca.crt>-<secret>
//!  agent --join-token ─ GET /ca.crt (checked against the token's digest)
//!                     ─ POST /join {token, csr} ─▶ agent.crt (CN agent:<node id>), kept, renewed
//!  frameworks, operators: Authorization: Bearer <secret> | Basic principal:secret
//!                         (credentials.json, Mesos' format)
//!  every listener: authn::authenticate (an axum/tower middleware) ─▶ Principal in the
//!                  request's extensions; handlers never look at credentials
//! ```
//!
//! Clients verify the master by the name [`MASTER_NAME`], whatever address they dial,
//! so no certificate the CA issues to an agent can stand in for the master.
#![forbid(unsafe_code)]

pub mod authn;
pub mod authz;
pub mod ca;
pub mod credentials;
pub mod files;
pub mod join;
pub mod principal;
pub mod tls;

pub use authn::{AuthError, Authenticator};
pub use authz::{Acls, Action, Authorizer, Denied, WhoMay};
pub use ca::{ClusterCa, Issued};
pub use credentials::{Credential, Credentials};
pub use join::JoinToken;
pub use principal::Principal;
pub use tls::{ClientTls, ServerTls};

/// The DNS name in the master's certificate that every Strata client verifies.
pub const MASTER_NAME: &str = "strata-master";
/// The DNS name in the App API's certificate that the CLI verifies.
pub const APPS_NAME: &str = "strata-apps";
/// The DNS name every agent certificate carries (besides the agent's own names).
pub const AGENT_NAME: &str = "strata-agent";

/// A security setup that could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Certificate(String),
    #[error("invalid join token: {0}")]
    JoinToken(String),
    #[error("invalid ACLs in {path}: {reason}")]
    Acls { path: String, reason: String },
    #[error("invalid credentials{where_}: {reason}")]
    Credentials { where_: String, reason: String },
    /// The master answered and said no: not worth retrying.
    #[error("the master refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The master could not be reached (or did not answer): worth retrying.
    #[error("cannot reach the master at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

impl SecurityError {
    /// Whether the other side refused (retrying the same request would not help), as
    /// opposed to not being reachable.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SecurityError::Refused { .. } | SecurityError::JoinToken(_)
        )
    }
}

impl From<rcgen::Error> for SecurityError {
    fn from(e: rcgen::Error) -> SecurityError {
        SecurityError::Certificate(e.to_string())
    }
}

/// The SHA-256 digest of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A fresh random secret: 32 bytes from the OS generator, hex (64 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}
