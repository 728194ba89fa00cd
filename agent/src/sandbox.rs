//! Task sandboxes: `WORK_DIR/frameworks/<framework_id>/tasks/<task_id>/` with the
//! task's `stdout` and `stderr` (and whatever else the task writes there), and the one
//! safe way to list and read them back.
//!
//! Ids come from the network, so they are checked ([`validate_id`]) before they ever
//! become a path. So are paths below a sandbox ([`SandboxPath::parse`]): relative, at
//! most [`MAX_PATH_LEN`] bytes, no NUL, no `..` component.
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
//! The agent runs as root and lists and reads sandbox files on behalf of anyone who
//! asks (`/files/browse`, `/files/read`). Below the sandbox everything is the task's,
//! so a path is resolved one component at a time from the sandbox's descriptor
//! (`openat` with O_NOFOLLOW | O_DIRECTORY for each directory), never through a
//! symlink at any component: a task's `evil -> /` or `sub -> /etc` is listed as a
//! symlink, and browsing or reading through it is [`SandboxError::Refused`]. [`read`]
//! serves a file only when the descriptor it opened (O_NOFOLLOW, checked with `fstat`,
//! never the path) is a regular file, has one link (a hard link to `/etc/shadow` has
//! two), and belongs to the sandbox's owner or to the agent. Anything else is
//! [`SandboxError::Refused`] (or [`SandboxError::NotRegular`]). [`browse`] lists a
//! directory reached that way: names, kinds, sizes, modes and times (`lstat`, never
//! following a listed symlink), at most [`MAX_LIST`] entries.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use strata_proto::validate::{self, IdKind};

/// Largest chunk `read` returns, whatever the caller asks for.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// Why a sandbox could not be made, listed or read.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    InvalidId(#[from] strata_proto::validate::InvalidId),
    #[error("cannot create sandbox {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A path from the network that is not one below the sandbox ([`SandboxPath`]).
    #[error("invalid path: {reason}")]
    BadPath { reason: String },
    #[error("no file '{file}' in the sandbox of the task")]
    NoFile { file: String },
    /// The directory to list (or one on the way to it) does not exist.
    #[error("{}", no_dir(.path))]
    NoDir { path: String },
    #[error("'{file}' in the sandbox of the task is not a regular file")]
    NotRegular { file: String },
    /// A component of a path (`path`, from the sandbox) is not a directory.
    #[error("'{path}' in the sandbox of the task is not a directory")]
    NotADirectory { path: String },
    /// The file is there but serving it could leak what is not the task's: a
    /// symlink (at any component of the path), a hard link (another name of some
    /// other file), a file of another user.
    #[error("refusing to serve '{file}' of the task: {reason}")]
    Refused { file: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn no_dir(path: &str) -> String {
    if path.is_empty() {
        "the sandbox of the task is not on this agent (any more)".into()
    } else {
        format!("no directory '{path}' in the sandbox of the task")
    }
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

/// Longest path below a sandbox [`SandboxPath::parse`] accepts, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest component of such a path, in bytes (the kernel's `NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// A path below a sandbox, as the network names it, checked: relative, at most
/// [`MAX_PATH_LEN`] bytes, no NUL, no component `..` or longer than 255 bytes; `.`
/// and empty components are dropped. No components: the sandbox itself. It is only
/// ever resolved from the sandbox's descriptor, one component at a time, never
/// through a symlink.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxPath {
    parts: Vec<String>,
}

impl SandboxPath {
    /// Checks `path` (from the network). The reason of a refusal says what is wrong
    /// without repeating the path (which may be long, or not printable).
    pub fn parse(path: &str) -> Result<SandboxPath, SandboxError> {
        let bad = |reason: String| SandboxError::BadPath { reason };
        if path.len() > MAX_PATH_LEN {
            return Err(bad(format!(
                "it is {} bytes long, more than {MAX_PATH_LEN}",
                path.len()
            )));
        }
        if path.contains('\0') {
            return Err(bad("it contains a NUL byte".into()));
        }
        if path.starts_with('/') {
            return Err(bad(
                "it is absolute: a path is relative to the sandbox of the task".into(),
            ));
        }
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(bad(
                        "it has a '..' component: a path stays below the sandbox of the task"
                            .into(),
                    ));
                }
                _ if part.len() > MAX_NAME_LEN => {
                    return Err(bad(format!(
                        "a component is {} bytes long, more than {MAX_NAME_LEN}",
                        part.len()
                    )));
                }
                _ => parts.push(part.to_string()),
            }
        }
        Ok(SandboxPath { parts })
    }

    /// The sandbox itself (no components).
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The path `/`-joined: `""` for the sandbox itself.
    pub fn as_string(&self) -> String {
        self.parts.join("/")
    }

    /// The first `n` components, `/`-joined.
    fn prefix(&self, n: usize) -> String {
        self.parts[..n].join("/")
    }
}

impl std::fmt::Display for SandboxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl From<LogFile> for SandboxPath {
    fn from(file: LogFile) -> SandboxPath {
        SandboxPath {
            parts: vec![file.name().to_string()],
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
        .map_err(|e| open_error(file.name(), path.clone(), e))?;
    let meta = f.metadata().map_err(|source| SandboxError::Read {
        path: path.clone(),
        source,
    })?;
    check_served(file.name(), &meta, None)?;
    Ok(f)
}

/// Why the agent does not follow a symlink.
const SYMLINK_REFUSED: &str = "it is a symbolic link, which the agent does not follow";

/// What a failed open of the sandbox file `file` (its path from the sandbox) means to
/// the caller.
fn open_error(file: &str, path: PathBuf, e: std::io::Error) -> SandboxError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => SandboxError::NoFile { file: file.into() },
        Some(libc::ELOOP) => SandboxError::Refused {
            file: file.into(),
            reason: SYMLINK_REFUSED.into(),
        },
        // A socket: nothing to read.
        Some(libc::ENXIO) => SandboxError::NotRegular { file: file.into() },
        _ => SandboxError::Read { path, source: e },
    }
}

/// Whether a sandbox file, as `fstat` describes its open descriptor, may be served or
/// written to: a regular file with one link, owned by `owner` (the sandbox's owner)
/// or by the agent. `owner` `None`: any owner (the file is written, not served).
fn check_served(
    file: &str,
    meta: &std::fs::Metadata,
    owner: Option<u32>,
) -> Result<(), SandboxError> {
    let refused = |reason: String| SandboxError::Refused {
        file: file.into(),
        reason,
    };
    if !meta.file_type().is_file() {
        return Err(SandboxError::NotRegular { file: file.into() });
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

/// A directory of a sandbox, open, reached without following a symlink.
struct Walked {
    dir: OwnedFd,
    /// The uid of the sandbox's owner (the task's user: [`prepare`] gave it the
    /// sandbox).
    owner: u32,
}

/// Why a walk stopped.
enum WalkError {
    /// The sandbox, or the directory of the first `n` components, does not exist.
    Missing(usize),
    /// Anything else, said as it is.
    Other(SandboxError),
}

/// Opens the sandbox, then the directories of the first `n` components of `path`
/// below it, each with `openat` from its parent's descriptor (O_NOFOLLOW |
/// O_DIRECTORY): never through a symlink, at any component. The sandbox itself
/// cannot be swapped (its parent is the agent's), so what is opened is below it.
fn walk(sandbox: &Path, path: &SandboxPath, n: usize) -> Result<Walked, WalkError> {
    let root = open_dir(sandbox).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => WalkError::Missing(0),
        _ => WalkError::Other(SandboxError::Read {
            path: sandbox.to_path_buf(),
            source: e,
        }),
    })?;
    let owner = root
        .metadata()
        .map_err(|source| {
            WalkError::Other(SandboxError::Read {
                path: sandbox.to_path_buf(),
                source,
            })
        })?
        .uid();
    let mut dir = OwnedFd::from(root);
    for (i, part) in path.parts[..n].iter().enumerate() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        dir = match openat(&dir, part.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(WalkError::Missing(i + 1)),
            // A symlink opened with O_NOFOLLOW | O_DIRECTORY fails with ENOTDIR (or
            // ELOOP): which one it is, `lstat` tells (only to say why).
            Err(e @ (Errno::ENOTDIR | Errno::ELOOP)) => {
                let shown = path.prefix(i + 1);
                return Err(WalkError::Other(
                    match fstatat(&dir, part.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st)
                            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                                == SFlag::S_IFLNK =>
                        {
                            SandboxError::Refused {
                                file: shown,
                                reason: SYMLINK_REFUSED.into(),
                            }
                        }
                        Ok(_) => SandboxError::NotADirectory { path: shown },
                        Err(Errno::ENOENT) => return Err(WalkError::Missing(i + 1)),
                        Err(_) => SandboxError::Read {
                            path: sandbox.join(&shown),
                            source: e.into(),
                        },
                    },
                ));
            }
            Err(e) => {
                return Err(WalkError::Other(SandboxError::Read {
                    path: sandbox.join(path.prefix(i + 1)),
                    source: e.into(),
                }));
            }
        };
    }
    Ok(Walked { dir, owner })
}

/// A chunk read from a sandbox file.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The text read (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// Where the next read should start: `offset` plus the bytes consumed. A trailing,
    /// incomplete UTF-8 sequence is left for the next read.
    pub next_offset: u64,
    /// The file's size when read: smaller than the offset asked, it was truncated
    /// (or replaced) since, and a follower starts again from 0.
    pub size: u64,
    /// Whether the read reached the current end of the file.
    pub eof: bool,
}

/// Reads at most `length` bytes (capped at [`MAX_READ`]) of `file` (`stdout`, say,
/// or any [`SandboxPath`]) in `sandbox` starting at `offset`. The file is reached
/// without following a symlink at any component, and served only if it passes the
/// checks of the module docs; the sandbox itself is not a file
/// ([`SandboxError::BadPath`]).
pub async fn read(
    sandbox: PathBuf,
    file: impl Into<SandboxPath>,
    offset: u64,
    length: u64,
) -> Result<Chunk, SandboxError> {
    let file = file.into();
    let shown = PathBuf::from(file.as_string());
    let join =
        tokio::task::spawn_blocking(move || read_blocking(&sandbox, &file, offset, length)).await;
    join.unwrap_or_else(|e| {
        Err(SandboxError::Read {
            path: shown,
            source: std::io::Error::other(e),
        })
    })
}

fn read_blocking(
    sandbox: &Path,
    file: &SandboxPath,
    offset: u64,
    length: u64,
) -> Result<Chunk, SandboxError> {
    let shown = file.as_string();
    let Some((name, _)) = file.parts.split_last() else {
        return Err(SandboxError::BadPath {
            reason: "it names the sandbox itself, not a file".into(),
        });
    };
    let path = sandbox.join(&shown);
    let read_err = |source| SandboxError::Read {
        path: path.clone(),
        source,
    };
    let Walked { dir, owner } = walk(sandbox, file, file.parts.len() - 1).map_err(|e| match e {
        WalkError::Missing(_) => SandboxError::NoFile {
            file: shown.clone(),
        },
        WalkError::Other(e) => e,
    })?;
    // Not even opened unless it is a regular file now (opening a device or a FIFO
    // can do things); what counts is what is opened, checked below.
    match fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFLNK {
                return Err(SandboxError::Refused {
                    file: shown,
                    reason: SYMLINK_REFUSED.into(),
                });
            }
            if kind != SFlag::S_IFREG {
                return Err(SandboxError::NotRegular { file: shown });
            }
        }
        Err(e) => return Err(open_error(&shown, path.clone(), e.into())),
    }
    // O_NOFOLLOW: a task may replace its stdout with a symlink; never follow it.
    // O_NONBLOCK: a FIFO in its place must not block the reader.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let mut f = File::from(
        openat(&dir, name.as_str(), flags, Mode::empty())
            .map_err(|e| open_error(&shown, path.clone(), e.into()))?,
    );
    // What was opened, not what the path names now.
    let meta = f.metadata().map_err(read_err)?;
    check_served(&shown, &meta, Some(owner))?;
    let size = meta.len();
    if offset >= size {
        return Ok(Chunk {
            data: String::new(),
            next_offset: offset,
            eof: true,
            size,
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
        size,
    })
}

/// Most entries [`browse`] lists of one directory.
pub const MAX_LIST: usize = 10_000;

/// What a listed entry is, as `lstat` says (a symlink is never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// A FIFO, a socket, a device.
    Other,
}

/// One entry of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Its name (a name that is not UTF-8 is shown with U+FFFD in place of what is
    /// not, and cannot be browsed or read by that name).
    pub name: String,
    /// Its path from the sandbox: the listed directory's path, `/`, its name.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes, as `lstat` says (a symlink: the length of its target).
    pub size: u64,
    /// Type and permissions as `ls -l` shows them: `-rw-r--r--`, `drwx------`.
    pub mode: String,
    /// Last modification, in seconds since the Unix epoch.
    pub mtime: i64,
}

/// A listed directory of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Its path from the sandbox, normalised (`""`: the sandbox itself).
    pub path: String,
    /// Directories first, then the rest, each by name (bytewise).
    pub entries: Vec<Entry>,
    /// Whether the directory has more than [`MAX_LIST`] entries: those listed are the
    /// first [`MAX_LIST`] the directory gave (in its own order), sorted.
    pub truncated: bool,
}

/// Lists the directory `path` of `sandbox`, reached without following a symlink at
/// any component.
pub async fn browse(sandbox: PathBuf, path: SandboxPath) -> Result<Listing, SandboxError> {
    let shown = PathBuf::from(path.as_string());
    let join = tokio::task::spawn_blocking(move || browse_blocking(&sandbox, &path)).await;
    join.unwrap_or_else(|e| {
        Err(SandboxError::Read {
            path: shown,
            source: std::io::Error::other(e),
        })
    })
}

fn browse_blocking(sandbox: &Path, path: &SandboxPath) -> Result<Listing, SandboxError> {
    let shown = path.as_string();
    let Walked { dir, .. } = walk(sandbox, path, path.parts.len()).map_err(|e| match e {
        WalkError::Missing(n) => SandboxError::NoDir {
            path: path.prefix(n),
        },
        WalkError::Other(e) => e,
    })?;
    let read_err = |e: Errno| SandboxError::Read {
        path: sandbox.join(&shown),
        source: e.into(),
    };
    let stat_fd = dir.try_clone().map_err(|source| SandboxError::Read {
        path: sandbox.join(&shown),
        source,
    })?;
    let mut listing = nix::dir::Dir::from_fd(dir).map_err(read_err)?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in listing.iter() {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        if entries.len() == MAX_LIST {
            truncated = true;
            break;
        }
        let st = match fstatat(&stat_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue, // removed meanwhile
            Err(e) => return Err(read_err(e)),
        };
        let name = String::from_utf8_lossy(name.to_bytes()).into_owned();
        let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => EntryKind::Dir,
            SFlag::S_IFREG => EntryKind::File,
            SFlag::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        entries.push(Entry {
            path: if shown.is_empty() {
                name.clone()
            } else {
                format!("{shown}/{name}")
            },
            name,
            kind,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode: mode_string(st.st_mode),
            mtime: st.st_mtime,
        });
    }
    entries.sort_by(|a, b| {
        (b.kind == EntryKind::Dir)
            .cmp(&(a.kind == EntryKind::Dir))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Listing {
        path: shown,
        entries,
        truncated,
    })
}

/// `st_mode` as `ls -l` shows it: the type (`-`, `d`, `l`, `p`, `s`, `c`, `b`), then
/// `rwx` for the owner, the group and others, with setuid, setgid and sticky as
/// `s`/`S` and `t`/`T`.
pub fn mode_string(st_mode: u32) -> String {
    let kind = match st_mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if st_mode & mask != 0 { c } else { '-' };
    // The execute place, with a special bit: lower case if executable too.
    let special = |x: u32, special: u32, c: char| match (st_mode & x != 0, st_mode & special != 0) {
        (true, true) => c,
        (false, true) => c.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect()
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
        // Past the end: the size says the file is shorter than the follower thought
        // (truncated since), so it can start again.
        assert_eq!((c.size, c.next_offset), (11, 50));

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
            matches!(&e, SandboxError::Refused { file, .. } if file == "stdout"),
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
            Err(SandboxError::NotRegular { file }) if file == "stderr"
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

    fn path(s: &str) -> SandboxPath {
        SandboxPath::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn paths_from_the_network_stay_below_the_sandbox() {
        assert!(path("").is_root());
        assert!(path(".").is_root());
        assert!(path("./").is_root());
        assert_eq!(
            path("./logs//deep/./app.log/").as_string(),
            "logs/deep/app.log"
        );
        assert_eq!(path("x..y/.hidden").as_string(), "x..y/.hidden");
        let refused = |s: &str| match SandboxPath::parse(s) {
            Err(SandboxError::BadPath { reason }) => reason,
            other => panic!("{s:?} was not refused: {other:?}"),
        };
        for dotdot in [
            "..",
            "../x",
            "a/..",
            "a/../b",
            "./a/../../etc/shadow",
            "a/b/..",
        ] {
            assert_eq!(
                refused(dotdot),
                "it has a '..' component: a path stays below the sandbox of the task",
                "{dotdot:?}"
            );
        }
        for absolute in ["/", "/etc/shadow", "//etc"] {
            assert_eq!(
                refused(absolute),
                "it is absolute: a path is relative to the sandbox of the task",
                "{absolute:?}"
            );
        }
        assert_eq!(refused("a\0b"), "it contains a NUL byte");
        // 4096 bytes is the most; the message says the limit, not the path.
        let longest = "a/".repeat(2048);
        assert_eq!(path(&longest).as_string().len(), 4095);
        assert_eq!(
            refused(&format!("{longest}a")),
            "it is 4097 bytes long, more than 4096"
        );
        assert_eq!(
            refused(&"n".repeat(256)),
            "a component is 256 bytes long, more than 255"
        );
        assert_eq!(
            SandboxError::BadPath { reason: "x".into() }.to_string(),
            "invalid path: x"
        );
    }

    #[test]
    fn modes_read_as_ls_shows_them() {
        for (mode, shown) in [
            (0o100644, "-rw-r--r--"),
            (0o100600, "-rw-------"),
            (0o040700, "drwx------"),
            (0o040755, "drwxr-xr-x"),
            (0o120777, "lrwxrwxrwx"),
            (0o104755, "-rwsr-xr-x"),
            (0o102640, "-rw-r-S---"),
            (0o041777, "drwxrwxrwt"),
            (0o041776, "drwxrwxrwT"),
            (0o010644, "prw-r--r--"),
            (0o140755, "srwxr-xr-x"),
            (0o020620, "crw--w----"),
            (0o060660, "brw-rw----"),
        ] {
            assert_eq!(mode_string(mode), shown, "{mode:o}");
        }
    }

    fn refused_at(e: SandboxError) -> String {
        match e {
            SandboxError::Refused { file, reason } => {
                assert_eq!(reason, SYMLINK_REFUSED, "{file}");
                file
            }
            other => panic!("not refused as a symlink: {other}"),
        }
    }

    #[tokio::test]
    async fn a_path_never_goes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb, None).await.unwrap();
        // What a task can do: links to the root, to /etc, to its own directories, deep.
        std::os::unix::fs::symlink("/", sb.join("evil")).unwrap();
        std::os::unix::fs::symlink("/etc", sb.join("sub")).unwrap();
        std::fs::create_dir_all(sb.join("a/b")).unwrap();
        std::fs::write(sb.join("a/b/ok"), "fine").unwrap();
        std::os::unix::fs::symlink("/etc", sb.join("a/b/etc")).unwrap();
        std::os::unix::fs::symlink("a", sb.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sb.join("a/passwd")).unwrap();

        for (through, at) in [
            ("evil/etc/shadow", "evil"),
            ("evil/etc/passwd", "evil"),
            ("sub/shadow", "sub"),
            ("sub/passwd", "sub"),
            ("a/b/etc/passwd", "a/b/etc"),
            ("inside/b/ok", "inside"),
            ("a/passwd", "a/passwd"),
            ("evil", "evil"),
        ] {
            let e = read(sb.clone(), path(through), 0, 100).await.unwrap_err();
            assert_eq!(refused_at(e), at, "read {through}");
        }
        for (through, at) in [
            ("evil", "evil"),
            ("evil/etc", "evil"),
            ("sub", "sub"),
            ("./sub/", "sub"),
            ("a/b/etc", "a/b/etc"),
            ("inside", "inside"),
            ("inside/b", "inside"),
        ] {
            let e = browse(sb.clone(), path(through)).await.unwrap_err();
            assert_eq!(refused_at(e), at, "browse {through}");
        }
        let e = read(sb.clone(), path("sub/shadow"), 0, 100)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to serve 'sub' of the task: it is a symbolic link, which the agent does not follow"
        );
        // The real directories are fine, and the links are listed as what they are.
        assert_eq!(
            read(sb.clone(), path("a/b/ok"), 0, 100).await.unwrap().data,
            "fine"
        );
        let root = browse(sb.clone(), SandboxPath::default()).await.unwrap();
        let kinds: Vec<(&str, EntryKind)> = root
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", EntryKind::Dir),
                ("evil", EntryKind::Symlink),
                ("inside", EntryKind::Symlink),
                ("stderr", EntryKind::File),
                ("stdout", EntryKind::File),
                ("sub", EntryKind::Symlink),
            ]
        );
        let evil = &root.entries[1];
        assert_eq!((evil.mode.as_str(), evil.size), ("lrwxrwxrwx", 1));
    }

    #[tokio::test]
    async fn a_hard_link_below_the_sandbox_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb, None).await.unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:$6$hash").unwrap();
        std::fs::create_dir_all(sb.join("deep/er")).unwrap();
        std::fs::hard_link(&secret, sb.join("deep/er/shadow")).unwrap();
        let e = read(sb.clone(), path("deep/er/shadow"), 0, 100)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to serve 'deep/er/shadow' of the task: it has 2 links (a hard link to a file outside the sandbox is never served)"
        );
        // Listed, though: its name and size are the task's to see.
        let listing = browse(sb.clone(), path("deep/er")).await.unwrap();
        assert_eq!(listing.entries[0].kind, EntryKind::File);
        assert_eq!(listing.entries[0].size, 12);
    }

    #[tokio::test]
    async fn nested_directories_are_listed_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb, None).await.unwrap();
        std::fs::create_dir_all(sb.join("logs/deep/er")).unwrap();
        std::fs::create_dir_all(sb.join("logs/0-first")).unwrap();
        std::fs::write(sb.join("logs/deep/app.log"), "line 1\nline 2\n").unwrap();
        std::fs::write(sb.join("logs/z.txt"), "z").unwrap();
        std::fs::write(sb.join("logs/A.txt"), "").unwrap();
        std::fs::set_permissions(
            sb.join("logs/deep/app.log"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::fs::set_permissions(
            sb.join("logs/deep/er"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(sb.join("logs/deep/app.log"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        nix::unistd::mkfifo(&sb.join("logs/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let logs = browse(sb.clone(), path("./logs/")).await.unwrap();
        assert_eq!(logs.path, "logs");
        assert!(!logs.truncated);
        let names: Vec<(&str, &str, EntryKind)> = logs
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.path.as_str(), e.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("0-first", "logs/0-first", EntryKind::Dir),
                ("deep", "logs/deep", EntryKind::Dir),
                ("A.txt", "logs/A.txt", EntryKind::File),
                ("pipe", "logs/pipe", EntryKind::Other),
                ("z.txt", "logs/z.txt", EntryKind::File),
            ]
        );
        assert_eq!(logs.entries[3].mode, "prwx------");

        let deep = browse(sb.clone(), path("logs/deep")).await.unwrap();
        assert_eq!(
            deep.entries,
            [
                Entry {
                    name: "er".into(),
                    path: "logs/deep/er".into(),
                    kind: EntryKind::Dir,
                    size: deep.entries[0].size,
                    mode: "drwx------".into(),
                    mtime: deep.entries[0].mtime,
                },
                Entry {
                    name: "app.log".into(),
                    path: "logs/deep/app.log".into(),
                    kind: EntryKind::File,
                    size: 14,
                    mode: "-rw-r-----".into(),
                    mtime: 1_700_000_000,
                },
            ]
        );
        assert!(
            browse(sb.clone(), path("logs/deep/er"))
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        let c = read(sb.clone(), path("logs/deep/app.log"), 7, 100)
            .await
            .unwrap();
        assert_eq!(
            (c.data.as_str(), c.next_offset, c.eof),
            ("line 2\n", 14, true)
        );

        // What is not there, and what is not a directory or not a file.
        let e = browse(sb.clone(), path("logs/nope/x")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "no directory 'logs/nope' in the sandbox of the task"
        );
        let e = browse(sb.clone(), path("logs/z.txt")).await.unwrap_err();
        assert!(
            matches!(&e, SandboxError::NotADirectory { path } if path == "logs/z.txt"),
            "{e}"
        );
        let e = read(sb.clone(), path("logs/z.txt/x"), 0, 9)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "'logs/z.txt' in the sandbox of the task is not a directory"
        );
        let e = read(sb.clone(), path("logs/nope/x"), 0, 9)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no file 'logs/nope/x' in the sandbox of the task"
        );
        for not_regular in ["logs/deep", "logs/pipe"] {
            let e = read(sb.clone(), path(not_regular), 0, 9).await.unwrap_err();
            assert!(
                matches!(&e, SandboxError::NotRegular { file } if file == not_regular),
                "{e}"
            );
        }
        // A sandbox that is gone.
        assert!(matches!(
            read(sb.clone(), SandboxPath::default(), 0, 9).await,
            Err(SandboxError::BadPath { .. })
        ));
        let gone = sandbox_path(dir.path(), "fw", "t-gone");
        let e = browse(gone.clone(), SandboxPath::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the sandbox of the task is not on this agent (any more)"
        );
        assert!(matches!(
            read(gone, LogFile::Stdout, 0, 9).await,
            Err(SandboxError::NoFile { file }) if file == "stdout"
        ));

        // In a sandbox of another user, a nested file of a third user is not served.
        if nix::unistd::geteuid().is_root() {
            let sb = sandbox_path(dir.path(), "fw", "t2");
            prepare(&sb, Some((65534, 65534))).await.unwrap();
            std::fs::create_dir(sb.join("d")).unwrap();
            std::fs::write(sb.join("d/f"), "x").unwrap(); // the agent's: served
            assert_eq!(read(sb.clone(), path("d/f"), 0, 9).await.unwrap().data, "x");
            std::os::unix::fs::chown(sb.join("d/f"), Some(1), Some(1)).unwrap();
            let e = read(sb.clone(), path("d/f"), 0, 9).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                "refusing to serve 'd/f' of the task: it belongs to uid 1, not to the task's user (uid 65534)"
            );
        }
    }

    #[tokio::test]
    async fn a_listing_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox_path(dir.path(), "fw", "t1");
        prepare(&sb, None).await.unwrap();
        std::fs::create_dir(sb.join("many")).unwrap();
        for i in 0..MAX_LIST {
            std::fs::File::create(sb.join(format!("many/{i:05}"))).unwrap();
        }
        let all = browse(sb.clone(), path("many")).await.unwrap();
        assert_eq!((all.entries.len(), all.truncated), (MAX_LIST, false));
        assert_eq!(all.entries[0].name, "00000");
        assert_eq!(all.entries[MAX_LIST - 1].name, "09999");
        std::fs::File::create(sb.join("many/one-more")).unwrap();
        let cut = browse(sb.clone(), path("many")).await.unwrap();
        assert_eq!((cut.entries.len(), cut.truncated), (MAX_LIST, true));
        assert!(cut.entries.windows(2).all(|w| w[0].name < w[1].name));
    }
}
