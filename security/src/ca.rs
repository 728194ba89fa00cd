//! The cluster CA: made at the master's first start (an ECDSA P-256 key and a
//! self-signed certificate valid ten years, kept in the master's work dir), it issues the
//! master's server certificate and signs the agents' certificate requests.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::{SecurityError, files};

/// How long the CA's own certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start being valid this long before they are issued, so that clocks a
/// little behind the master's accept them.
pub const BACKDATE: Duration = Duration::from_secs(300);

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA, in memory.
    pub fn create() -> Result<ClusterCa, SecurityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Strata cluster CA {}", &crate::random_secret()[..8]),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA kept in `dir` (`ca.crt`, and `ca.key` with mode 0600), made there first
    /// if `dir` has none. The flag is true when it was made now.
    pub fn load_or_create(dir: &Path) -> Result<(ClusterCa, bool), SecurityError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        match (
            files::read_if_exists(&cert_path)?,
            files::read_if_exists(&key_path)?,
        ) {
            (Some(cert), Some(key)) => Ok((ClusterCa::from_pem(&cert, &key)?, false)),
            (None, None) => {
                files::private_dir(dir)?;
                let ca = ClusterCa::create()?;
                files::write_private(&key_path, ca.issuer.key().serialize_pem().as_bytes())?;
                files::write_public(&cert_path, ca.cert_pem.as_bytes())?;
                Ok((ca, true))
            }
            (Some(_), None) => Err(SecurityError::Certificate(format!(
                "{} exists but {} does not: restore the CA's key or remove both to make a new CA (every agent must then join again)",
                cert_path.display(),
                key_path.display()
            ))),
            (None, Some(_)) => Err(SecurityError::Certificate(format!(
                "{} exists but {} does not: restore the CA's certificate or remove both to make a new CA",
                key_path.display(),
                cert_path.display()
            ))),
        }
    }

    /// A CA from its certificate and key, PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, SecurityError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| SecurityError::Certificate(format!("the CA key does not parse: {e}")))?;
        let der = pem_der(cert_pem, "CERTIFICATE")?;
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(|e| {
            SecurityError::Certificate(format!("the CA certificate does not parse: {e}"))
        })?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der: der,
            issuer,
        })
    }

    /// The CA's certificate, PEM: what every client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what a join token pins.
    pub fn fingerprint(&self) -> String {
        crate::sha256_hex(&self.cert_der)
    }

    /// A new key and a certificate for it, named `common_name`, valid for `names` (DNS
    /// names or IP addresses) as a server and a client, for `ttl`.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        ttl: Duration,
    ) -> Result<Issued, SecurityError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(common_name, names, ttl)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate request (PEM). What the request asks for is not used, only its
    /// public key (whose possession its signature proves): the certificate says
    /// `common_name` and `names`, valid for `ttl`.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        common_name: &str,
        names: &[String],
        ttl: Duration,
    ) -> Result<String, SecurityError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            SecurityError::Certificate(format!("the certificate request is not valid: {e}"))
        })?;
        let signed = CertificateSigningRequestParams {
            params: leaf_params(common_name, names, ttl)?,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(signed.pem())
    }
}

fn leaf_params(
    common_name: &str,
    names: &[String],
    ttl: Duration,
) -> Result<CertificateParams, SecurityError> {
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| {
        SecurityError::Certificate(format!("invalid certificate names {names:?}: {e}"))
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    // Positive: the top bit clear.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// A new key and a certificate request for it (both PEM), for `names`.
pub fn certificate_request(names: &[String]) -> Result<(String, String), SecurityError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(names.to_vec()).map_err(|e| {
        SecurityError::Certificate(format!("invalid certificate names {names:?}: {e}"))
    })?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// The DER bytes of the first PEM block labelled `label` in `pem`.
pub fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>, SecurityError> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block
            .map_err(|e| SecurityError::Certificate(format!("malformed PEM ({label}): {e}")))?;
        if block.label == label {
            return Ok(block.contents);
        }
    }
    Err(SecurityError::Certificate(format!(
        "no {label} block in the PEM text"
    )))
}

/// What a certificate (DER) says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads a certificate (DER).
pub fn cert_info(der: &[u8]) -> Result<CertInfo, SecurityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SecurityError::Certificate(format!("the certificate does not parse: {e}")))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(CertInfo {
        common_name,
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

/// When a certificate (PEM) should be renewed: once two thirds of its life, from when
/// it was issued ([`BACKDATE`] after its `not_before`), have passed.
pub fn renew_at(cert_pem: &str) -> Result<SystemTime, SecurityError> {
    let info = cert_info_pem(cert_pem)?;
    let issued = (info.not_before + BACKDATE).min(info.not_after);
    let life = info.not_after.duration_since(issued).unwrap_or_default();
    Ok(issued + life.mul_f64(2.0 / 3.0))
}

/// Reads the first certificate of a PEM chain.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, SecurityError> {
    cert_info(&pem_der(pem, "CERTIFICATE")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_kept_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = ClusterCa::load_or_create(&dir.path().join("tls")).unwrap();
        assert!(created);
        let (again, created) = ClusterCa::load_or_create(&dir.path().join("tls")).unwrap();
        assert!(!created);
        assert_eq!(ca.fingerprint(), again.fingerprint());
        // The reloaded CA signs certificates that name it as their issuer.
        let issued = again
            .issue(
                "agent:n1",
                &["strata-agent".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let info = cert_info_pem(&issued.cert_pem).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("agent:n1"));
        assert!(info.not_after > SystemTime::now());
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let e = ClusterCa::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("ca.key"), "{e}");
    }

    #[test]
    fn a_request_is_signed_with_the_cas_names_not_the_requested_ones() {
        let ca = ClusterCa::create().unwrap();
        let (csr, _key) = certificate_request(&[crate::MASTER_NAME.to_string()]).unwrap();
        let cert = ca
            .sign_request(
                &csr,
                "agent:n2",
                &["strata-agent".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let der = pem_der(&cert, "CERTIFICATE").unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = parsed.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec!["DNSName(strata-agent)".to_string()]);
        assert!(
            ca.sign_request("not a csr", "x", &[], Duration::from_secs(1))
                .is_err()
        );
    }
}
