//! What a framework needs to reach a secure master, read from files: the cluster CA
//! (PEM, `tls/ca.crt` in the master's work dir) and the framework's credential (JSON
//! `{"principal": "...", "secret": "..."}`, the serde form of [`Credential`]).

use std::path::Path;

use strata_security::{ClientTls, Credential};

use crate::SdkError;

fn invalid(path: &Path, why: impl std::fmt::Display) -> SdkError {
    SdkError::InvalidArgument(format!("{}: {why}", path.display()))
}

/// Reads a credential file: `{"principal": "...", "secret": "..."}`.
pub fn read_credential(path: &Path) -> Result<Credential, SdkError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    let credential: Credential = serde_json::from_str(&text).map_err(|e| {
        invalid(
            path,
            format!("not a credential {{\"principal\": \"...\", \"secret\": \"...\"}}: {e}"),
        )
    })?;
    strata_security::credentials::check_principal(&credential.principal)
        .map_err(|e| invalid(path, e))?;
    if credential.secret.is_empty() {
        return Err(invalid(path, "the secret is empty"));
    }
    Ok(credential)
}

/// Reads the cluster CA (a PEM certificate).
pub fn read_ca(path: &Path) -> Result<String, SdkError> {
    let pem = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    strata_security::ca::cert_info_pem(&pem)
        .map_err(|e| invalid(path, format!("not a CA certificate: {e}")))?;
    Ok(pem)
}

/// The settings of [`DriverOptions::tls`](crate::DriverOptions::tls) (and
/// [`SandboxClient::with_tls`](crate::SandboxClient::with_tls)) from the CA file and
/// the credential file.
pub fn secure_from_files(ca_file: &Path, credential_file: &Path) -> Result<ClientTls, SdkError> {
    Ok(ClientTls {
        ca_pem: Some(read_ca(ca_file)?),
        identity: None,
        credential: Some(read_credential(credential_file)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_and_bad_ones_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ca = dir.join("ca.crt");
        let cred = dir.join("fw.json");
        std::fs::write(
            &ca,
            strata_security::ClusterCa::create().unwrap().cert_pem(),
        )
        .unwrap();
        std::fs::write(&cred, r#"{"principal": "fw", "secret": "s3cret-s3cret"}"#).unwrap();
        let tls = secure_from_files(&ca, &cred).unwrap();
        assert!(tls.is_tls());
        assert_eq!(tls.credential.unwrap().principal, "fw");

        std::fs::write(&cred, r#"{"principal": "a:b", "secret": "x"}"#).unwrap();
        let e = secure_from_files(&ca, &cred).unwrap_err().to_string();
        assert!(e.contains("fw.json") && e.contains("':'"), "{e}");
        let e = secure_from_files(&cred, &cred).unwrap_err().to_string();
        assert!(e.contains("not a CA certificate"), "{e}");
        let e = read_credential(&dir.join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json"), "{e}");
    }
}
