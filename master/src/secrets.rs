//! The key that encrypts secrets at rest (issue 16): secret values are kept in the
//! registry sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`, an AEAD:
//! tampering is detected), like Swarm's encrypted raft log.
//!
//! ```text
//!   strata secret create ─▶ Operator.CreateObject ─▶ seal(name, value) ─▶ core ─▶ registry (sealed)
//!   agent FetchObjects ─▶ core (sealed, the task's pinned versions) ─▶ open ─▶ agent (TLS)
//! ```
//!
//! A sealed value is `nonce (24 random bytes) || ciphertext || tag (16)`; the secret's
//! name is the associated data, so a value moved to another name does not open.
//!
//! The key is 32 random bytes, hex in a file (`--secrets-key-file`, by default
//! `WORK_DIR/secrets.key`) created at the first start with mode 0600; a key file
//! readable by group or others is refused. A registry that holds secrets but no key
//! file, or a key that does not open them, stops the master at start: a new key would
//! make every secret unreadable. Back the file up with the registry; keep it apart
//! from registry backups.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Bytes of the key.
const KEY_BYTES: usize = 32;
/// Bytes of a nonce, in front of each sealed value.
const NONCE_BYTES: usize = 24;

/// Why the key could not be loaded, or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secrets key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the secrets key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secrets key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600 {path})"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "the secrets key file {path} is not a key: it must hold 64 hexadecimal digits (32 bytes)"
    )]
    Malformed { path: PathBuf },
    #[error(
        "the registry holds {count} secrets but the secrets key file {path} does not exist: restore it from a backup (a new key could not open them)"
    )]
    Missing { path: PathBuf, count: usize },
    #[error(
        "the secrets key in {path} does not open the registry's secrets: is it the key of this registry?"
    )]
    WrongKey { path: PathBuf },
    #[error("a sealed value does not open: it was not sealed with this key for this name")]
    Open,
}

/// The key, loaded. Cheap to share behind an `Arc`.
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    /// A random key kept in memory only (a master without a work dir: its registry is
    /// not kept either).
    pub fn ephemeral() -> SecretsKey {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        SecretsKey {
            cipher: XChaCha20Poly1305::new(&key),
            path: None,
        }
    }

    /// The key in `path`, created (mode 0600) when the file does not exist and the
    /// registry holds no secret (`secrets` is how many it holds).
    pub fn load_or_create(path: &Path, secrets: usize) -> Result<SecretsKey, KeyError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if secrets > 0 {
                    return Err(KeyError::Missing {
                        path: path.to_path_buf(),
                        count: secrets,
                    });
                }
                Self::create(path)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn load(path: &Path) -> Result<SecretsKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        Read::by_ref(&mut file)
            .take(1024)
            .read_to_string(&mut text)
            .map_err(read)?;
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        hex_decode(text.trim(), &mut key[..]).ok_or_else(|| KeyError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(SecretsKey {
            cipher: XChaCha20Poly1305::new(key.as_slice().into()),
            path: Some(path.to_path_buf()),
        })
    }

    fn create(path: &Path) -> Result<SecretsKey, KeyError> {
        let create = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut text = Zeroizing::new(hex_encode(key.as_slice()));
        text.push('\n');
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(create)?;
        file.write_all(text.as_bytes()).map_err(create)?;
        file.sync_all().map_err(create)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(create)?;
        }
        tracing::info!(path = %path.display(), "created the secrets key file; back it up with the registry");
        Ok(SecretsKey {
            cipher: XChaCha20Poly1305::new(&key),
            path: Some(path.to_path_buf()),
        })
    }

    /// Checks that the key opens `sealed`, a value of the secret `name` from the
    /// registry (at start: a wrong key file stops the master rather than every launch).
    pub fn verify(&self, name: &str, sealed: &[u8]) -> Result<(), KeyError> {
        self.open(name, sealed)
            .map(drop)
            .map_err(|_| KeyError::WrongKey {
                path: self.path.clone().unwrap_or_default(),
            })
    }

    /// Seals the value of the secret `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: value,
            aad: name.as_bytes(),
        };
        // Encryption of an in-memory buffer cannot fail (only sizes past 256 GiB do).
        let ciphertext = self
            .cipher
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 encrypts any value under 256 GiB");
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens a value [`SecretsKey::seal`] sealed for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < NONCE_BYTES {
            return Err(KeyError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad: name.as_bytes(),
        };
        self.cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Open)
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 || !text.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_name_and_key() {
        let key = SecretsKey::ephemeral();
        let sealed = key.seal("db-pass", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("db-pass", &sealed).unwrap().as_slice(), b"hunter2");
        assert!(key.open("other", &sealed).is_err());
        assert!(SecretsKey::ephemeral().open("db-pass", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open("db-pass", &tampered).is_err());
        assert!(key.open("db-pass", &sealed[..10]).is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(key.seal("db-pass", b"hunter2"), sealed);
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets.key");
        let key = SecretsKey::load_or_create(&path, 0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("s", b"v");
        let again = SecretsKey::load_or_create(&path, 1).unwrap();
        assert_eq!(again.open("s", &sealed).unwrap().as_slice(), b"v");
        again.verify("s", &sealed).unwrap();
        let other = SecretsKey::ephemeral();
        assert!(matches!(
            SecretsKey {
                cipher: other.cipher,
                path: Some(path.clone())
            }
            .verify("s", &sealed),
            Err(KeyError::WrongKey { .. })
        ));
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.key");
        let e = SecretsKey::load_or_create(&missing, 3).unwrap_err();
        assert!(e.to_string().contains("holds 3 secrets"), "{e}");
        assert!(!missing.exists());

        let open = dir.path().join("open.key");
        std::fs::write(&open, "00".repeat(32)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretsKey::load_or_create(&open, 0).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");

        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SecretsKey::load_or_create(&short, 0).unwrap_err();
        assert!(e.to_string().contains("64 hexadecimal digits"), "{e}");
    }
}
