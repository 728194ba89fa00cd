//! Task sandboxes: `WORK_DIR/frameworks/<framework_id>/tasks/<task_id>/` with the
//! task's `stdout` and `stderr`, and the one safe way to read those files back.
//!
//! Ids come from the network, so they are checked ([`validate_id`]) before they ever
//! become a path.
//!
//! Who may see what (issue 14, "no root by default"):
//!
//! ```text
//! WORK_DIR/                     the operator's (the agent never changes its mode)
//!   frameworks/                 0711 root: traversable by task users, not listable
//!     <framework_id>/           0711 root
//!       tasks/                  0711 root
//!         <task_id>/            0700, owned by the task's user
//!           stdout, stderr      0600, owned by the task's user, created afresh
//! ```
//!
//! A task of another user (another framework's `nobody` task, say) can neither list
//! the tree nor enter a sandbox. A task cannot rename its sandbox (`tasks/` is the
//! agent's), so a path below it is as safe as an `openat` from it.
//!
//! The agent runs as root and reads sandbox files on behalf of anyone who asks
//! (`/files/read`), so [`read`] serves a file only when the descriptor it opened
//! (O_NOFOLLOW, checked with `fstat`, never the path) is a regular file, has one
//! link (a hard link to `/etc/shadow` has two), and belongs to the sandbox's owner
//! or to the agent. Anything else is [`SandboxError::Refused`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// The file is there but serving it could leak what is not the task's: a
    /// symlink, a hard link (another name of some other file), a file of another user.
    #[error("refusing to serve '{file}' of the task: {reason}")]
    Refused { file: &'static str, reason: String },
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

/// Mode of the directories between the work dir and a sandbox: task users may pass
/// through to their own sandbox, nobody may list which frameworks and tasks exist.
pub const TREE_MODE: u32 = 0o711;
/// Mode of a sandbox: its owner (the task's user) only.
pub const SANDBOX_MODE: u32 = 0o700;
/// Mode of `stdout` and `stderr`.
pub const LOG_MODE: u32 = 0o600;

/// Who a sandbox belongs to: the task's user (uid, gid), or `None` for the agent's
/// own user (an agent that is not root, or `--default-user ''`).
pub type Owner = Option<(u32, u32)>;

/// The task's `stdout` and `stderr`, created by [`prepare`] and open for appending.
#[derive(Debug)]
pub struct LogFiles {
    pub stdout: File,
    pub stderr: File,
}

/// Creates the sandbox directory (0700, given to `owner`) and fresh, empty `stdout`
/// and `stderr` files (0600, `owner`'s), and returns them open for appending. What an
/// earlier task with the same id left is replaced: its `stdout` and `stderr` are
/// unlinked (never truncated through: they may be links to anything) and their
/// rotated copies removed. The new files also mark the sandbox as just written, so a
/// garbage collection running meanwhile leaves it alone. The directories above the
/// sandbox, up to the work dir, are made [`TREE_MODE`].
pub async fn prepare(path: &Path, owner: Owner) -> Result<LogFiles, SandboxError> {
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
    tokio::task::spawn_blocking(move || prepare_blocking(&owned, owner))
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)
}

fn prepare_blocking(path: &Path, owner: Owner) -> std::io::Result<LogFiles> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(TREE_MODE)
        .create(path)?;
    // frameworks/, frameworks/<fw>/, frameworks/<fw>/tasks/ (made by an older agent
    // with the umask's 0755, or just now); only in that layout: a sandbox elsewhere
    // (a test's) leaves the directories above it alone.
    for dir in tree_above(path) {
        let meta = std::fs::symlink_metadata(dir)?;
        if meta.is_dir() && meta.mode() & 0o7777 != TREE_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(TREE_MODE))?;
        }
    }
    let sandbox = open_dir(path)?;
    if !sandbox.metadata()?.is_dir() {
        return Err(std::io::Error::other("the sandbox is not a directory"));
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&sandbox, Some(uid), Some(gid))?;
    }
    sandbox.set_permissions(std::fs::Permissions::from_mode(SANDBOX_MODE))?;
    let create = |file: LogFile| -> std::io::Result<File> {
        let name = path.join(file.name());
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        crate::hygiene::forget_rotations(path, file.name());
        // create_new (O_EXCL) fails on anything that appeared meanwhile, a symlink too.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(LOG_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&name)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        Ok(f)
    };
    Ok(LogFiles {
        stdout: create(LogFile::Stdout)?,
        stderr: create(LogFile::Stderr)?,
    })
}

/// The agent's directories between the work dir and the sandbox `path`
/// (`frameworks/<fw>/tasks/`, `frameworks/<fw>/`, `frameworks/`), when `path` is laid
/// out as [`sandbox_path`] makes it; else none.
fn tree_above(path: &Path) -> Vec<&Path> {
    let tasks = path.parent();
    let framework = tasks.and_then(Path::parent);
    let frameworks = framework.and_then(Path::parent);
    let named =
        |p: Option<&Path>, name: &str| p.and_then(Path::file_name).is_some_and(|n| n == name);
    match (tasks, framework, frameworks) {
        (Some(t), Some(f), Some(fs))
            if named(tasks, "tasks") && named(frameworks, "frameworks") =>
        {
            vec![t, f, fs]
        }
        _ => Vec::new(),
    }
}

/// Opens a directory without following a symlink in its place.
fn open_dir(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens `sandbox/file` for appending output the agent copies there itself (a Docker
/// container's), with the checks [`read`] makes: never through a symlink, only a
/// regular file with one link. Never creates it: [`prepare`] did, for the task's user.
pub fn open_for_output(sandbox: &Path, file: LogFile) -> Result<File, SandboxError> {
    let path = sandbox.join(file.name());
    let f = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| open_error(file, path.clone(), e))?;
    let meta = f.metadata().map_err(|source| SandboxError::Read {
        path: path.clone(),
        source,
    })?;
    check_served(file, &meta, None)?;
    Ok(f)
}

/// What a failed open of a sandbox file means to the caller.
fn open_error(file: LogFile, path: PathBuf, e: std::io::Error) -> SandboxError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => SandboxError::NoFile { file: file.name() },
        Some(libc::ELOOP) => SandboxError::Refused {
            file: file.name(),
            reason: "it is a symbolic link, which the agent does not follow".into(),
        },
        _ => SandboxError::Read { path, source: e },
    }
}

/// Whether a sandbox file, as `fstat` describes its open descriptor, may be served or
/// written to: a regular file with one link, owned by `owner` (the sandbox's owner)
/// or by the agent. `owner` `None`: any owner (the file is written, not served).
fn check_served(
    file: LogFile,
    meta: &std::fs::Metadata,
    owner: Option<u32>,
) -> Result<(), SandboxError> {
    let refused = |reason: String| SandboxError::Refused {
        file: file.name(),
        reason,
    };
    if !meta.file_type().is_file() {
        return Err(SandboxError::NotRegular { file: file.name() });
    }
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "it has {} links (a hard link to a file outside the sandbox is never served)",
            meta.nlink()
        )));
    }
    if let Some(owner) = owner {
        let agent = nix::unistd::geteuid().as_raw();
        if meta.uid() != owner && meta.uid() != agent {
            return Err(refused(format!(
                "it belongs to uid {}, not to the task's user (uid {owner})",
                meta.uid()
            )));
        }
    }
    Ok(())
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
    // The sandbox's owner is the task's user (prepare gave it the directory).
    let dir = open_dir(sandbox).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => SandboxError::NoFile { file: file.name() },
        _ => read_err(e),
    })?;
    let owner = dir.metadata().map_err(read_err)?.uid();
    // O_NOFOLLOW: a task may replace its stdout with a symlink; never follow it.
    // O_NONBLOCK: a FIFO in its place must not block the reader. The sandbox itself
    // cannot be swapped (its parent is the agent's), so this names a file in `dir`.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| open_error(file, path.clone(), e))?;
    // What was opened, not what the path names now.
    let meta = f.metadata().map_err(read_err)?;
    check_served(file, &meta, Some(owner))?;
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
        prepare(&sb, None).await.unwrap();
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
        let refused = read(sb.clone(), LogFile::Stderr, 0, 100).await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refusing to serve 'stderr' of the task: it is a symbolic link, which the agent does not follow"
        );
    }

    #[test]
    fn only_the_agents_own_directories_above_a_sandbox_are_changed() {
        let sb = sandbox_path(Path::new("/w"), "fw", "t");
        assert_eq!(
            tree_above(&sb),
            [
                Path::new("/w/frameworks/fw/tasks"),
                Path::new("/w/frameworks/fw"),
                Path::new("/w/frameworks")
            ]
        );
        // A sandbox somewhere else (a test's): nothing above it is touched, not /tmp.
        assert!(tree_above(Path::new("/tmp/x/t")).is_empty());
        assert!(tree_above(Path::new("/t")).is_empty());
        assert!(tree_above(Path::new("/frameworks/tasks")).is_empty());
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn a_sandbox_is_its_users_alone_and_the_tree_above_is_not_listable() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        // As an older agent left it: world-readable, with a stdout that links elsewhere.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&sb)
            .unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep me").unwrap();
        std::os::unix::fs::symlink(&outside, sb.join("stdout")).unwrap();
        std::fs::hard_link(&outside, sb.join("stderr")).unwrap();
        std::fs::write(sb.join("stdout.1"), "old").unwrap();

        let work_dir_mode = mode(dir.path());
        let root = nix::unistd::geteuid().is_root();
        let owner = root.then_some((65534, 65534));
        let mut logs = prepare(&sb, owner).await.unwrap();
        std::io::Write::write_all(&mut logs.stdout, b"fresh").unwrap();

        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(sb.join("stdout")).unwrap(), "fresh");
        assert!(!sb.join("stdout.1").exists());
        assert_eq!(mode(&sb), SANDBOX_MODE);
        for file in ["stdout", "stderr"] {
            let meta = std::fs::symlink_metadata(sb.join(file)).unwrap();
            assert!(meta.is_file() && meta.nlink() == 1, "{file}");
            assert_eq!(meta.mode() & 0o7777, LOG_MODE, "{file}");
        }
        for above in sb.ancestors().skip(1).take(3) {
            assert_eq!(mode(above), TREE_MODE, "{}", above.display());
        }
        assert_eq!(
            mode(dir.path()),
            work_dir_mode,
            "the work dir itself is the operator's"
        );
        if root {
            for path in [sb.clone(), sb.join("stdout"), sb.join("stderr")] {
                let meta = std::fs::metadata(&path).unwrap();
                assert_eq!(
                    (meta.uid(), meta.gid()),
                    (65534, 65534),
                    "{}",
                    path.display()
                );
            }
        }
    }

    #[tokio::test]
    async fn hard_links_and_files_of_other_users_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb, None).await.unwrap();
        std::fs::write(sb.join("stdout"), "mine").unwrap();
        assert_eq!(
            read(sb.clone(), LogFile::Stdout, 0, 100)
                .await
                .unwrap()
                .data,
            "mine"
        );

        // A second name for a file outside the sandbox (as `ln /etc/shadow stdout`).
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:$6$hash").unwrap();
        std::fs::remove_file(sb.join("stdout")).unwrap();
        std::fs::hard_link(&secret, sb.join("stdout")).unwrap();
        let e = read(sb.clone(), LogFile::Stdout, 0, 100).await.unwrap_err();
        assert!(
            matches!(e, SandboxError::Refused { file: "stdout", .. }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "refusing to serve 'stdout' of the task: it has 2 links (a hard link to a file outside the sandbox is never served)"
        );
        // Nor is it written to by the agent (a Docker task's log copier).
        assert!(matches!(
            open_for_output(&sb, LogFile::Stdout),
            Err(SandboxError::Refused { .. })
        ));
        assert!(open_for_output(&sb, LogFile::Stderr).is_ok());

        // A FIFO in place of stderr: not a regular file.
        std::fs::remove_file(sb.join("stderr")).unwrap();
        nix::unistd::mkfifo(&sb.join("stderr"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read(sb.clone(), LogFile::Stderr, 0, 100).await,
            Err(SandboxError::NotRegular { file: "stderr" })
        ));

        // In a sandbox of another user, a file of a third user is not served.
        if nix::unistd::geteuid().is_root() {
            let sb = sandbox_path(dir.path(), "fw", "t2");
            prepare(&sb, Some((65534, 65534))).await.unwrap();
            std::fs::write(sb.join("stdout"), "ok").unwrap(); // still the task user's: served
            assert_eq!(
                read(sb.clone(), LogFile::Stdout, 0, 9).await.unwrap().data,
                "ok"
            );
            std::os::unix::fs::chown(sb.join("stdout"), Some(1), Some(1)).unwrap();
            let e = read(sb.clone(), LogFile::Stdout, 0, 100).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                "refusing to serve 'stdout' of the task: it belongs to uid 1, not to the task's user (uid 65534)"
            );
        }
    }
}
