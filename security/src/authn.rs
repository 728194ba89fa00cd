//! The one authentication layer. Every listener (master gRPC and HTTP, agent HTTP, App
//! API) runs [`authenticate`] before anything else; it finds who the caller is (a
//! client certificate the TLS handshake verified, or an `Authorization` header) and puts
//! a [`Principal`] in the request's extensions, or answers 401 / `UNAUTHENTICATED`.
//! Refusals are written to the audit log (target `strata::audit`).

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::credentials::{Credentials, Presented, parse_authorization};
use crate::principal::Principal;

/// Why a request was not authenticated. The message is what the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send 'Authorization: Basic base64(principal:secret)' or a client certificate of the cluster"
    )]
    Missing,
    #[error("{0}")]
    Malformed(String),
    #[error("the credential of '{0}' is not valid")]
    BadSecret(String),
    #[error("the bearer credential is not valid")]
    BadBearer,
    #[error("the client certificate does not name a principal (CN=agent:<id> or CN=user:<name>)")]
    UnnamedCertificate,
}

/// Decides who a request comes from. Cheap to clone; clones share the credentials, so
/// a reload applies to every listener at once.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: insecure, everyone is [`Principal::Anonymous`].
    credentials: Option<RwLock<Arc<Credentials>>>,
    /// Paths served to callers with no credential (as `Anonymous`).
    public: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("secure", &self.is_secure())
            .field("public", &self.inner.public)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Accepts everyone as [`Principal::Anonymous`] (`--insecure`).
    pub fn insecure() -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                credentials: None,
                public: Vec::new(),
            }),
        }
    }

    /// Accepts callers with one of `credentials` or a client certificate of the cluster
    /// (which the TLS layer verified); `public` paths are served to anyone.
    pub fn new(credentials: Credentials, public: &[&str]) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                credentials: Some(RwLock::new(Arc::new(credentials))),
                public: public.iter().map(|p| p.to_string()).collect(),
            }),
        }
    }

    pub fn is_secure(&self) -> bool {
        self.inner.credentials.is_some()
    }

    /// Replaces the credentials (a reload); requests already authenticated keep going.
    pub fn set_credentials(&self, credentials: Credentials) {
        if let Some(lock) = &self.inner.credentials {
            *lock.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(credentials);
        }
    }

    /// The credentials in use (`None` when insecure).
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.inner
            .credentials
            .as_ref()
            .map(|lock| lock.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Who presents `authorization` (the header's value) and `peer_cert` (the first
    /// certificate of the client's chain, already verified by TLS).
    pub fn authenticate_parts(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
        peer_cert: Option<&[u8]>,
    ) -> Result<Principal, AuthError> {
        let Some(credentials) = self.credentials() else {
            return Ok(Principal::Anonymous);
        };
        // Revocation (of a gone agent's certificate) is the master core's: it refuses
        // the registration with a reason the agent acts on.
        if let Some(der) = peer_cert {
            return Principal::from_cert(der).ok_or(AuthError::UnnamedCertificate);
        }
        let Some(value) = authorization else {
            if self.inner.public.iter().any(|p| p == path) {
                return Ok(Principal::Anonymous);
            }
            return Err(AuthError::Missing);
        };
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
        match parse_authorization(value).map_err(AuthError::Malformed)? {
            Presented::Basic { principal, secret } => {
                if credentials.check(&principal, &secret) {
                    Ok(Principal::User(principal))
                } else {
                    Err(AuthError::BadSecret(principal))
                }
            }
            Presented::Bearer(secret) => credentials
                .principal_of(&secret)
                .map(|p| Principal::User(p.to_string()))
                .ok_or(AuthError::BadBearer),
        }
    }

    /// Who sent `request`.
    pub fn authenticate_request<B>(
        &self,
        request: &axum::http::Request<B>,
    ) -> Result<Principal, AuthError> {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let first = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        self.authenticate_parts(
            request.uri().path(),
            request.headers().get(header::AUTHORIZATION),
            first,
        )
    }
}

/// Whether a request is a gRPC call (its refusals are gRPC statuses).
pub fn is_grpc<B>(request: &axum::http::Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The middleware: `axum::middleware::from_fn_with_state(authenticator, authenticate)`.
pub async fn authenticate(
    State(authn): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    match authn.authenticate_request(&request) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            let peer = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
                .or_else(|| {
                    request
                        .extensions()
                        .get::<TcpConnectInfo>()
                        .and_then(|i| i.remote_addr())
                });
            audit_refused(
                &Principal::Anonymous,
                request.method().as_str(),
                request.uri().path(),
                &format!(
                    "{e}{}",
                    peer.map(|p| format!(" (from {p})")).unwrap_or_default()
                ),
            );
            unauthenticated(is_grpc(&request), &e.to_string())
        }
    }
}

/// A 401 (HTTP, JSON body) or an `UNAUTHENTICATED` status (gRPC).
pub fn unauthenticated(grpc: bool, message: &str) -> Response {
    if grpc {
        return tonic::Status::unauthenticated(message).into_http::<axum::body::Body>();
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"strata\""),
    );
    response
}

/// Records an operator action in the audit log.
pub fn audit_allowed(principal: &Principal, action: &str, target: &str) {
    tracing::info!(target: "strata::audit", %principal, action, target, outcome = "allowed", "audit");
}

/// Records a refused call in the audit log.
pub fn audit_refused(principal: &Principal, action: &str, target: &str, reason: &str) {
    tracing::warn!(target: "strata::audit", %principal, action, target, outcome = "refused", reason, "audit");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credential;

    const SECRET: &str = "0123456789abcdef0123";

    fn authn() -> Authenticator {
        let creds = Credentials::parse(
            &format!(r#"{{"credentials":[{{"principal":"ops","secret":"{SECRET}"}}]}}"#),
            "",
        )
        .unwrap();
        Authenticator::new(creds, &["/health"])
    }

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn who_is_who() {
        let a = authn();
        let good = header(&Credential::new("ops", SECRET).header_value());
        assert_eq!(
            a.authenticate_parts("/state", Some(&good), None),
            Ok(Principal::User("ops".into()))
        );
        assert_eq!(
            a.authenticate_parts("/state", Some(&header(&format!("Bearer {SECRET}"))), None),
            Ok(Principal::User("ops".into()))
        );
        let wrong = header(&Credential::new("ops", "not-the-secret-at-all").header_value());
        assert_eq!(
            a.authenticate_parts("/state", Some(&wrong), None),
            Err(AuthError::BadSecret("ops".into()))
        );
        assert_eq!(
            a.authenticate_parts("/state", None, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authenticate_parts("/health", None, None),
            Ok(Principal::Anonymous)
        );
        // A wrong credential on a public path is still refused: nobody is fooled into
        // thinking it worked.
        assert!(a.authenticate_parts("/health", Some(&wrong), None).is_err());
        assert_eq!(
            Authenticator::insecure().authenticate_parts("/state", None, None),
            Ok(Principal::Anonymous)
        );
    }

    #[test]
    fn a_certificate_names_its_principal() {
        let a = authn();
        let ca = crate::ClusterCa::create().unwrap();
        let issued = ca
            .issue("agent:n1", &[], std::time::Duration::from_secs(60))
            .unwrap();
        let der = crate::ca::pem_der(&issued.cert_pem, "CERTIFICATE").unwrap();
        assert_eq!(
            a.authenticate_parts("/x", None, Some(&der)),
            Ok(Principal::Agent("n1".into()))
        );
        let master = ca
            .issue("strata-master", &[], std::time::Duration::from_secs(60))
            .unwrap();
        let der = crate::ca::pem_der(&master.cert_pem, "CERTIFICATE").unwrap();
        assert_eq!(
            a.authenticate_parts("/x", None, Some(&der)),
            Ok(Principal::Master)
        );
        let unnamed = ca
            .issue("someone", &[], std::time::Duration::from_secs(60))
            .unwrap();
        let der = crate::ca::pem_der(&unnamed.cert_pem, "CERTIFICATE").unwrap();
        assert_eq!(
            a.authenticate_parts("/x", None, Some(&der)),
            Err(AuthError::UnnamedCertificate)
        );
    }
}
