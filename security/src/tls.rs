//! TLS settings of Strata's listeners and clients, all rustls (through tonic and
//! reqwest; no OpenSSL).
//!
//! Key exchange prefers X25519: [`prefer_x25519`] installs ring's provider with
//! X25519 first as the process's default (tonic's listeners and clients use it), where
//! rustls' ring provider would otherwise offer P-384 first, whose generic code made a
//! full handshake several times dearer (`strata-bench security`, 10,000 agents
//! reconnecting after a master restart).

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Credential, SecurityError};

/// Makes X25519 the first key exchange group of this process's TLS (then P-256,
/// then P-384). Done once, before any TLS settings are built; a provider another part
/// of the process installed first is left alone.
#[allow(deprecated)] // ring's provider: what tonic's `tls-ring` uses all the same
pub fn prefer_x25519() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustls::crypto::ring::{default_provider, kx_group};
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            ..default_provider()
        };
        let _ = provider.install_default();
    });
}

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
    /// A listener with `cert_pem` (issued by the CA `ca_pem`) and its key, accepting
    /// client certificates of that CA.
    pub fn new(cert_pem: &str, key_pem: &str, ca_pem: &str) -> ServerTls {
        ServerTls {
            cert_chain_pem: format!("{}\n{ca_pem}", cert_pem.trim_end()),
            key_pem: key_pem.to_string(),
            client_ca_pem: ca_pem.to_string(),
        }
    }

    /// tonic's server settings.
    pub fn tonic(&self) -> ServerTlsConfig {
        prefer_x25519();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_chain_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// `host:port` of an address given as `host:port`, `http://host:port/` or
/// `https://host:port/`.
pub fn host_port(addr: &str) -> &str {
    let addr = addr.trim().trim_end_matches('/');
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
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
        format!("{}://{}", self.scheme(), host_port(addr))
    }

    /// tonic's client settings, verifying the server as `domain` (e.g.
    /// [`crate::MASTER_NAME`]); `None` when plain text.
    pub fn tonic(&self, domain: &str) -> Option<ClientTlsConfig> {
        let ca = self.ca_pem.as_ref()?;
        prefer_x25519();
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

/// Serves `router` on `listener` (HTTP/2 and HTTP/1.1) until `stop` resolves: HTTPS
/// with the latest settings of `servers`, or plain HTTP while it holds `None`. When the
/// settings change (a renewed certificate), a server with the new ones starts on the
/// same socket and the old one stops taking connections and finishes those it has.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut servers: tokio::sync::watch::Receiver<Option<ServerTls>>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let socket = listener.into_std()?;
    tokio::pin!(stop);
    let mut current: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )> = None;
    let mut retiring = Vec::new();
    loop {
        let tls = servers.borrow_and_update().clone();
        let incoming = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
        let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
        let router = router.clone();
        let task = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &tls {
                builder = match builder.tls_config(tls.tonic()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "the listener's TLS settings are unusable");
                        return;
                    }
                };
            }
            let result = builder
                .accept_http1(true)
                .add_routes(tonic::service::Routes::from(router))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(incoming).with_nodelay(Some(true)),
                    async move {
                        let _ = done_rx.await;
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        if let Some((old_done, old_task)) = current.replace((done, task)) {
            let _ = old_done.send(());
            retiring.push(old_task);
        }
        retiring.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
        tokio::select! {
            changed = servers.changed() => {
                if changed.is_err() {
                    // Nothing changes the settings any more: serve until stopped.
                    (&mut stop).await;
                    break;
                }
            }
            () = &mut stop => break,
        }
    }
    if let Some((done, task)) = current {
        let _ = done.send(());
        retiring.push(task);
    }
    for task in retiring {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_their_scheme() {
        assert_eq!(host_port("https://m:5050/"), "m:5050");
        assert_eq!(host_port(" http://m:5050"), "m:5050");
        assert_eq!(host_port("m:5050"), "m:5050");
        let tls = ClientTls::insecure();
        assert_eq!(tls.uri("https://m:5050"), "http://m:5050");
    }
}
