//! How an example reaches the master, shared by the examples (`#[path]`-included):
//! secure with the cluster CA and a credential, or `--insecure` for a master started
//! with `--insecure`. With `strata local`, the CA is `WORK/master/tls/ca.crt` and the
//! admin's credential `WORK/admin-credential.json`.

use std::path::PathBuf;

use anyhow::Context;
use strata_framework_sdk::ClientTls;

/// The flags that say how to reach the master.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The cluster CA (PEM) that verifies the master: `tls/ca.crt` in its work dir.
    #[arg(long, value_name = "PATH", env = "STRATA_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The framework's credential, JSON `{"principal": "...", "secret": "..."}`.
    #[arg(long, value_name = "PATH", env = "STRATA_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// Plain text and no credential, for a master started with --insecure (as the
    /// CLI, STRATA_INSECURE=1 says the same).
    #[arg(
        long,
        env = "STRATA_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new(),
        conflicts_with_all = ["ca_file", "credential_file"]
    )]
    pub insecure: bool,
}

impl Connection {
    /// The TLS settings and credential for `DriverOptions::tls` and the sandbox reads.
    pub fn tls(&self) -> anyhow::Result<ClientTls> {
        if self.insecure {
            return Ok(ClientTls::insecure());
        }
        match (&self.ca_file, &self.credential_file) {
            (Some(ca), Some(credential)) => {
                strata_framework_sdk::secure::secure_from_files(ca, credential)
                    .context("cannot read the CA or the credential")
            }
            _ => anyhow::bail!(
                "a secure master needs --ca-file PATH (tls/ca.crt in its work dir) and \
                 --credential-file PATH ({{\"principal\", \"secret\"}}; `strata local` writes \
                 WORK/admin-credential.json); or pass --insecure for a master started with --insecure"
            ),
        }
    }
}
