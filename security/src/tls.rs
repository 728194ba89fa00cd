//! TLS settings of Strata's listeners and clients, all rustls (through tonic and
//! reqwest; no OpenSSL).

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Credential, SecurityError};

/// How long a TLS handshake may take on a listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's certificate and key, and the CA whose client certificates it accepts.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate, then the CA's (PEM).
    pub cert_chain_pem: String,
    pub key_pem: String,
    /// Client certificates signed by this CA are verified and accepted (optional: a
    /// client may authenticate with a credential instead).
    pub client_ca_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// tonic's server settings.
    pub fn tonic(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_chain_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// What a client needs to reach a Strata listener: the cluster CA it trusts, and
/// optionally a certificate of its own (agents) and a credential (frameworks and
/// operators).
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The cluster CA (PEM); `None`: plain text (`--insecure`).
    pub ca_pem: Option<String>,
    /// A client certificate and key (PEM).
    pub identity: Option<(String, String)>,
    /// Sent in the `Authorization` header of every call.
    pub credential: Option<Credential>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("tls", &self.ca_pem.is_some())
            .field("identity", &self.identity.is_some())
            .field("credential", &self.credential)
            .finish()
    }
}

impl ClientTls {
    /// Plain text, no credential.
    pub fn insecure() -> ClientTls {
        ClientTls::default()
    }

    pub fn is_tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// The URI for `addr` (`host:port`, or a URI whose scheme is replaced).
    pub fn uri(&self, addr: &str) -> String {
        let addr = addr.trim().trim_end_matches('/');
        let bare = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        format!("{}://{bare}", self.scheme())
    }

    /// tonic's client settings, verifying the server as `domain` (e.g.
    /// [`crate::MASTER_NAME`]); `None` when plain text.
    pub fn tonic(&self, domain: &str) -> Option<ClientTlsConfig> {
        let ca = self.ca_pem.as_ref()?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(domain)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        Some(config)
    }

    /// A tonic endpoint for the server at `addr`, verified as `domain`.
    pub fn endpoint(
        &self,
        addr: &str,
        domain: &str,
    ) -> Result<tonic::transport::Endpoint, SecurityError> {
        let uri = self.uri(addr);
        let endpoint = tonic::transport::Endpoint::from_shared(uri.clone()).map_err(|e| {
            SecurityError::Certificate(format!("invalid address '{addr}' ({uri}): {e}"))
        })?;
        match self.tonic(domain) {
            Some(tls) => endpoint
                .tls_config(tls)
                .map_err(|e| SecurityError::Certificate(format!("TLS settings: {e}"))),
            None => Ok(endpoint),
        }
    }

    /// Adds the CA (only it: the system's roots are not trusted), the identity and the
    /// credential to a reqwest client.
    pub fn reqwest(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, SecurityError> {
        if let Some(ca) = &self.ca_pem {
            let ca = reqwest::Certificate::from_pem(ca.as_bytes())
                .map_err(|e| SecurityError::Certificate(format!("the CA does not parse: {e}")))?;
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .https_only(true);
            if let Some((cert, key)) = &self.identity {
                let pem = format!("{cert}\n{key}");
                let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
                    SecurityError::Certificate(format!(
                        "the client certificate does not parse: {e}"
                    ))
                })?;
                builder = builder.identity(identity);
            }
        }
        if let Some(credential) = &self.credential {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value = reqwest::header::HeaderValue::from_str(&credential.header_value())
                .map_err(|_| {
                    SecurityError::Certificate("the credential is not a valid header".into())
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        Ok(builder)
    }
}
