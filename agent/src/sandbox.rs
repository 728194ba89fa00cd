//! Task sandboxes: `WORK_DIR/frameworks/<framework_id>/tasks/<task_id>/` with the
//! task's `stdout` and `stderr`, and the one safe way to read those files back.
//!
//! Ids come from the network, so they are checked ([`validate_id`]) before they ever
//! become a path; files are opened without following symlinks and must be regular
//! files, so a task cannot make the agent read outside its sandbox.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use strata_proto::validate::{self, IdKind};

/// Largest chunk `read` returns, whatever the caller asks for.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// Why a sandbox could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    InvalidId(#[from] strata_proto::validate::InvalidId),
    #[error("cannot create sandbox {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no file '{file}' in the sandbox of the task")]
    NoFile { file: &'static str },
    #[error("'{file}' in the sandbox of the task is not a regular file")]
    NotRegular { file: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files of a sandbox the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFile {
    Stdout,
    Stderr,
}

impl LogFile {
    pub fn name(self) -> &'static str {
        match self {
            LogFile::Stdout => "stdout",
            LogFile::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<LogFile> {
        match s {
            "stdout" => Some(LogFile::Stdout),
            "stderr" => Some(LogFile::Stderr),
            _ => None,
        }
    }
}

/// Checks that a framework or task id (`kind` is "framework" or "task") can safely
/// name a directory. The rule is the one the master applies at SUBSCRIBE and ACCEPT,
/// [`strata_proto::validate`], so a task the master let through is never refused here.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), SandboxError> {
    let kind = match kind {
        "framework" => IdKind::Framework,
        _ => IdKind::Task,
    };
    Ok(validate::path_component(kind, id)?)
}

/// The sandbox directory of a task. The ids must have passed [`validate_id`].
pub fn sandbox_path(work_dir: &Path, framework_id: &str, task_id: &str) -> PathBuf {
    work_dir
        .join("frameworks")
        .join(framework_id)
        .join("tasks")
        .join(task_id)
}

/// How many sandboxes are prepared at once in this process. Thousands of launches
/// at once (a scale run) would otherwise start hundreds of blocking threads that
/// contend for the same directory and spend their time in the kernel.
const PREPARE_CONCURRENCY: usize = 16;
static PREPARE_PERMITS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(PREPARE_CONCURRENCY);

/// Creates the sandbox directory and empty `stdout` and `stderr` files (truncating
/// the files of an earlier task with the same id, and removing its rotated copies).
/// The truncation also marks the sandbox as just written, so a garbage collection
/// running meanwhile leaves it alone.
pub async fn prepare(path: &Path) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Create {
        path: path.to_path_buf(),
        source,
    };
    // The semaphore is never closed, so acquiring only fails if it were.
    let _permit = PREPARE_PERMITS
        .acquire()
        .await
        .map_err(|e| err(std::io::Error::other(e)))?;
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&owned)?;
        for file in [LogFile::Stdout, LogFile::Stderr] {
            std::fs::File::create(owned.join(file.name()))?;
            crate::hygiene::forget_rotations(&owned, file.name());
        }
        Ok(())
    })
    .await
    .map_err(|e| err(std::io::Error::other(e)))?
    .map_err(err)
}

/// A chunk read from a sandbox file.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The text read (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// Where the next read should start: `offset` plus the bytes consumed. A trailing,
    /// incomplete UTF-8 sequence is left for the next read.
    pub next_offset: u64,
    /// Whether the read reached the current end of the file.
    pub eof: bool,
}

/// Reads at most `length` bytes (capped at [`MAX_READ`]) of `file` in `sandbox`
/// starting at `offset`.
pub async fn read(
    sandbox: PathBuf,
    file: LogFile,
    offset: u64,
    length: u64,
) -> Result<Chunk, SandboxError> {
    let join =
        tokio::task::spawn_blocking(move || read_blocking(&sandbox, file, offset, length)).await;
    join.unwrap_or_else(|e| {
        Err(SandboxError::Read {
            path: PathBuf::from(file.name()),
            source: std::io::Error::other(e),
        })
    })
}

fn read_blocking(
    sandbox: &Path,
    file: LogFile,
    offset: u64,
    length: u64,
) -> Result<Chunk, SandboxError> {
    let path = sandbox.join(file.name());
    let read_err = |source| SandboxError::Read {
        path: path.clone(),
        source,
    };
    // O_NOFOLLOW: a task may replace its stdout with a symlink; never follow it.
    // O_NONBLOCK: a FIFO in its place must not block the reader.
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SandboxError::NoFile { file: file.name() });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SandboxError::NotRegular { file: file.name() });
        }
        Err(e) => return Err(read_err(e)),
    };
    let meta = f.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(SandboxError::NotRegular { file: file.name() });
    }
    let size = meta.len();
    if offset >= size {
        return Ok(Chunk {
            data: String::new(),
            next_offset: offset,
            eof: true,
        });
    }
    let want = length.min(MAX_READ).min(size - offset);
    f.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    let mut buf = Vec::with_capacity(want as usize);
    f.by_ref()
        .take(want)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    let end = offset + buf.len() as u64;
    let eof = end >= size;
    if !eof {
        let keep = complete_utf8_prefix(&buf);
        buf.truncate(keep);
    }
    let next_offset = offset + buf.len() as u64;
    Ok(Chunk {
        data: String::from_utf8_lossy(&buf).into_owned(),
        next_offset,
        eof,
    })
}

/// The length of `buf` without a trailing incomplete UTF-8 sequence (so that a
/// character split across two reads is returned whole by the second).
fn complete_utf8_prefix(buf: &[u8]) -> usize {
    let start = buf.len().saturating_sub(3);
    for i in (start..buf.len()).rev() {
        let b = buf[i];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return buf.len(),
        };
        return if buf.len() - i < needed { i } else { buf.len() };
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_ids_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "../x",
            "a\\b",
            "a\0b",
            &"x".repeat(256),
        ] {
            let err = validate_id("task", bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("invalid task id '"),
                "{bad:?}: {err}"
            );
        }
        let err = validate_id("framework", "a/b").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid framework id 'a/b': it contains '/'"),
            "{err}"
        );
        // `..` inside one component cannot leave the sandbox root: the master accepts
        // such ids, so the agent must too.
        for good in ["web.1", "task-42", "a_b", ".hidden", "é", "x..y", "a..b"] {
            assert!(
                validate_id("task", good).is_ok(),
                "{good:?} should be accepted"
            );
        }
    }

    #[test]
    fn utf8_boundaries() {
        let s = "aé€😀".as_bytes();
        assert_eq!(complete_utf8_prefix(s), s.len());
        assert_eq!(complete_utf8_prefix(&s[..s.len() - 1]), s.len() - 4);
        assert_eq!(complete_utf8_prefix(&s[..2]), 1);
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
    }

    #[tokio::test]
    async fn reads_in_chunks_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb).await.unwrap();
        std::fs::write(sb.join("stdout"), "hello world").unwrap();
        let c = read(sb.clone(), LogFile::Stdout, 0, 5).await.unwrap();
        assert_eq!((c.data.as_str(), c.next_offset, c.eof), ("hello", 5, false));
        let c = read(sb.clone(), LogFile::Stdout, 5, 100).await.unwrap();
        assert_eq!(
            (c.data.as_str(), c.next_offset, c.eof),
            (" world", 11, true)
        );
        let c = read(sb.clone(), LogFile::Stdout, 50, 100).await.unwrap();
        assert_eq!((c.data.as_str(), c.eof), ("", true));

        std::fs::remove_file(sb.join("stderr")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sb.join("stderr")).unwrap();
        assert!(matches!(
            read(sb.clone(), LogFile::Stderr, 0, 100).await,
            Err(SandboxError::NotRegular { file: "stderr" })
        ));
    }
}
