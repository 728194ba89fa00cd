//! What the benches' `--secure` runs share: the master's TLS options with a
//! credentials file the bench writes (principal `bench`), and the clients' settings
//! (the cluster CA and that credential).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_security::{ClientTls, Credential, MASTER_NAME};

/// The principal the bench's framework and its /metrics reader authenticate as.
pub const PRINCIPAL: &str = "bench";

/// A credentials file with the principal [`PRINCIPAL`] and a fresh secret, written in
/// `dir`; its path and the credential.
pub fn write_credentials(dir: &Path) -> anyhow::Result<(PathBuf, Credential)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let secret = strata_security::random_secret();
    let path = dir.join("bench-credentials.json");
    let text = serde_json::json!({
        "credentials": [{ "principal": PRINCIPAL, "secret": secret }]
    });
    std::fs::write(&path, text.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, Credential::new(PRINCIPAL, secret)))
}

/// The master's TLS options for a bench: its credentials are the bench's file.
pub fn tls_options(credentials: &Path) -> strata_master::TlsOptions {
    strata_master::TlsOptions {
        credentials: Some(credentials.to_path_buf()),
        ..Default::default()
    }
}

/// A framework's (or operator's) settings: the cluster CA of the master in
/// `master_dir`, and `credential`.
pub fn user_tls(master_dir: &Path, credential: &Credential) -> anyhow::Result<ClientTls> {
    let ca = master_dir.join("tls/ca.crt");
    let ca_pem =
        std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
    Ok(ClientTls {
        ca_pem: Some(ca_pem),
        identity: None,
        credential: Some(credential.clone()),
    })
}

/// An HTTP client for the master at `addr` with `tls` (plain when `tls` is), and the
/// base URL to use with it (`https://strata-master:PORT`, resolved to `addr`, so that
/// the master's certificate is verified by its name).
pub fn http(tls: &ClientTls, addr: SocketAddr) -> anyhow::Result<(reqwest::Client, String)> {
    if !tls.is_tls() {
        return Ok((reqwest::Client::new(), format!("http://{addr}")));
    }
    let client = tls
        .reqwest(reqwest::Client::builder().resolve(MASTER_NAME, addr))?
        .build()?;
    Ok((client, format!("https://{MASTER_NAME}:{}", addr.port())))
}
