//! Files that hold keys and secrets: written whole (temp file, fsync, rename) with mode
//! 0600, and read with the path in the error.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::SecurityError;

fn io(action: &'static str, path: &Path, source: std::io::Error) -> SecurityError {
    SecurityError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), SecurityError> {
    write_mode(path, contents, 0o600)
}

/// Writes `contents` to `path` with mode 0644 (certificates), replacing it atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), SecurityError> {
    write_mode(path, contents, 0o644)
}

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), SecurityError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", &tmp, e))?;
    // The umask may have taken bits away, never added them; set the mode exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", path, e))
}

/// Reads `path` as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|e| io("read", path, e))
}

/// Reads `path` if it exists.
pub fn read_if_exists(path: &Path) -> Result<Option<String>, SecurityError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path, e)),
    }
}

/// Makes `dir` (and its parents) and sets it to mode 0700.
pub fn private_dir(dir: &Path) -> Result<(), SecurityError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("set the mode of", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(read_text(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read_if_exists(&dir.path().join("none")).unwrap().is_none());
    }
}
