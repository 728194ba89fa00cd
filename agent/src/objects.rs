//! Configs and secrets of tasks (issue 16): what the agent fetches from the master at
//! launch and how it delivers the values into the task, never leaving a secret on disk.
//!
//! ```text
//! launch job ─ TaskInfo.objects non-empty ─▶ validate_task (again) ─▶ AgentLink.FetchObjects
//!            (the link's endpoint: mutual TLS)   │ Unavailable: retried for ~5 s
//!            ◀─ one value per (kind, name, version) ─ TaskObjects (zeroized on drop)
//!            ─▶ LaunchSpec.objects ─▶ containerizer:
//!
//!  process task                                 Docker task
//!  ────────────                                 ───────────
//!  secret files: Staging (below) ─bind, ro─▶     secret files + `.strata-env` (secret
//!    <sandbox>/secrets, in the task's own        variables, `export NAME='v'`): Staging
//!    mount namespace (isolation::child)          ─bind, ro─▶ /run/secrets; the shell
//!  config files: <sandbox>/PATH, 0444            command sources the env file first
//!  variables: the task's environment            config files: <sandbox>/PATH, or an absolute
//!                                                 path bound read-only from the runtime dir
//!                                               config variables: the container's Env
//!
//! Staging: WORK_DIR/runtime/objects/<container> (0700 root above it)
//!   mount tmpfs (size = values in pages + 64 KiB, mode 0500, nosuid,nodev,noexec)
//!   ─▶ files 0400, dirs 0500, owned by the task's user ─▶ remount read-only
//!   ─▶ the task (or container) binds it ─▶ the agent detaches it from the host
//!      (umount2 MNT_DETACH) and removes the directory: the tmpfs lives on only in
//!      the task's mount namespace and disappears with it.
//! ```
//!
//! Values live in memory only: [`TaskObjects`] holds them in [`Zeroizing`] buffers
//! (wiped when the launch is done with them) and its `Debug` prints names and sizes,
//! never a value. They are not logged, not checkpointed (the checkpoint keeps the
//! task's references, not values), and no error message includes one. Copies the agent
//! cannot wipe: the process environment std builds for a spawned task, the gRPC
//! library's receive buffers, and Docker's own copies of a container's `Env` (which is
//! why a Docker task's secret variables go through the tmpfs instead).
//!
//! An agent that restarts while tasks run has nothing to re-mount: each tmpfs is in
//! its task's mount namespace (or its container), not in the host's. A staging
//! directory left by an agent that died between mounting it and starting the task is
//! unmounted and removed at the next start ([`remove_leftovers`]).
//!
//! Secret files need an agent running as root (it mounts a tmpfs); without root a
//! task with secret files fails to launch and says so.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};
use strata_proto::limits::MAX_MESSAGE_BYTES;
use strata_proto::objects::{kind_name, kind_of, validate_task};
use strata_proto::v1::{self, ObjectKind, agent_link_client::AgentLinkClient, object_ref};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::containerizer::ContainerId;

/// Where staging directories are, under the agent's runtime dir.
pub const STAGING_DIR: &str = "objects";
/// Room in a staging tmpfs beyond its files' pages (directories, the env file's
/// rounding).
const TMPFS_SLACK: u64 = 64 * 1024;
/// What one file takes at least in a tmpfs.
const PAGE: u64 = 4096;
/// How long a fetch keeps retrying a master that is unavailable.
const FETCH_RETRY_FOR: Duration = Duration::from_secs(5);
/// How long one fetch attempt may take (dial included).
const FETCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times the read-only remount of a staging tmpfs is tried on EBUSY, 1 ms
/// apart.
const REMOUNT_TRIES: u32 = 1000;
/// Mode of a secret file.
pub const SECRET_FILE_MODE: u32 = 0o400;
/// Mode of a directory in the secrets tmpfs (and of its root).
pub const SECRET_DIR_MODE: u32 = 0o500;
/// Mode of a config file.
pub const CONFIG_FILE_MODE: u32 = 0o444;

/// Where one reference delivers its value.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A file: relative to the secrets directory (secret), to the sandbox (config),
    /// or an absolute path in a Docker container (config).
    File(String),
    /// An environment variable.
    Env(String),
}

/// One reference of the task, resolved to its value.
struct Delivery {
    kind: ObjectKind,
    name: String,
    version: u64,
    target: Target,
    /// Index in [`TaskObjects::values`].
    value: usize,
}

/// The values of a task's configs and secrets, as the master sent them, and where
/// each goes. Wiped from memory when dropped; `Debug` shows no value.
pub struct TaskObjects {
    values: Vec<Zeroizing<Vec<u8>>>,
    deliveries: Vec<Delivery>,
}

impl fmt::Debug for TaskObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for d in &self.deliveries {
            let target = match &d.target {
                Target::File(p) => format!("file {p}"),
                Target::Env(v) => format!("env {v}"),
            };
            list.entry(&format_args!(
                "{} '{}' v{} -> {target} ({} bytes, <redacted>)",
                kind_name(d.kind),
                d.name,
                d.version,
                self.values[d.value].len()
            ));
        }
        list.finish()
    }
}

impl TaskObjects {
    /// Pairs each of `refs` (checked by [`validate_task`]) with its value among
    /// `values`. Fails, naming the object and never showing a value, when a value is
    /// missing or cannot be an environment variable (not UTF-8, or with a NUL).
    pub fn resolve(
        refs: &[v1::ObjectRef],
        values: Vec<v1::ObjectValue>,
    ) -> Result<TaskObjects, String> {
        let mut keys = Vec::new();
        let mut data = Vec::new();
        for v in values {
            keys.push((v.kind, v.name, v.version));
            data.push(Zeroizing::new(v.data));
        }
        let mut deliveries = Vec::new();
        for r in refs {
            let kind = kind_of(r.kind).unwrap_or(ObjectKind::Unspecified);
            let what = kind_name(kind);
            let Some(value) = keys
                .iter()
                .position(|(k, n, v)| *k == r.kind && *n == r.name && *v == r.version)
            else {
                return Err(format!(
                    "cannot fetch {what} '{}': the master sent no value for version {}",
                    r.name, r.version
                ));
            };
            let target = match &r.target {
                Some(object_ref::Target::File(p)) => Target::File(p.clone()),
                Some(object_ref::Target::Env(var)) => {
                    let ok = std::str::from_utf8(&data[value]).is_ok() && !data[value].contains(&0);
                    if !ok {
                        return Err(format!(
                            "{what} '{}' cannot be the variable {var}: its value is not UTF-8 text without NUL bytes (deliver it as a file)",
                            r.name
                        ));
                    }
                    Target::Env(var.clone())
                }
                None => return Err(format!("{what} '{}' has no target", r.name)),
            };
            deliveries.push(Delivery {
                kind,
                name: r.name.clone(),
                version: r.version,
                target,
                value,
            });
        }
        Ok(TaskObjects {
            values: data,
            deliveries,
        })
    }

    fn value(&self, d: &Delivery) -> &[u8] {
        &self.values[d.value]
    }

    /// The files of `kind`: (target path, value).
    pub fn files(&self, kind: ObjectKind) -> impl Iterator<Item = (&str, &[u8])> {
        self.deliveries
            .iter()
            .filter(move |d| d.kind == kind)
            .filter_map(|d| match &d.target {
                Target::File(p) => Some((p.as_str(), self.value(d))),
                Target::Env(_) => None,
            })
    }

    /// The environment variables of `kind` (`None`: of both kinds): (name, value).
    /// The values were checked to be UTF-8 without NUL.
    pub fn env(&self, kind: Option<ObjectKind>) -> impl Iterator<Item = (&str, &str)> {
        self.deliveries
            .iter()
            .filter(move |d| kind.is_none_or(|k| d.kind == k))
            .filter_map(|d| match &d.target {
                Target::Env(var) => Some((
                    var.as_str(),
                    std::str::from_utf8(self.value(d)).unwrap_or_default(),
                )),
                Target::File(_) => None,
            })
    }

    /// Whether any secret goes to a file.
    pub fn has_secret_files(&self) -> bool {
        self.files(ObjectKind::Secret).next().is_some()
    }

    /// Whether any secret goes to a variable.
    pub fn has_secret_env(&self) -> bool {
        self.env(Some(ObjectKind::Secret)).next().is_some()
    }

    /// The `.strata-env` file of a Docker task's secrets tmpfs: one `export
    /// NAME='value'` line per secret variable.
    pub fn secret_env_file(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        for (name, value) in self.env(Some(ObjectKind::Secret)) {
            push_export(&mut out, name, value);
        }
        out
    }
}

/// Appends `export NAME='value'\n`, the value single-quoted for a POSIX shell (each
/// `'` becomes `'\''`). Writes into `out` directly, so that no unwiped copy is left.
pub fn push_export(out: &mut String, name: &str, value: &str) {
    out.reserve(name.len() + value.len() * 2 + 12);
    out.push_str("export ");
    out.push_str(name);
    out.push_str("='");
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push_str("'\n");
}

/// The connection fetches go over: one HTTP/2 channel to the master, made lazily on the
/// link's current endpoint and shared by every launch (with mutual TLS, a handshake per
/// launch would cost more than the fetch), made again when the endpoint changes (a
/// renewed certificate) or after the master was unavailable.
#[derive(Clone)]
pub(crate) struct FetchChannel {
    inner: Arc<Mutex<(watch::Receiver<Endpoint>, Option<Channel>)>>,
}

impl FetchChannel {
    pub(crate) fn new(endpoint: watch::Receiver<Endpoint>) -> FetchChannel {
        FetchChannel {
            inner: Arc::new(Mutex::new((endpoint, None))),
        }
    }

    /// The channel, made now if there is none or the endpoint changed.
    fn channel(&self) -> Channel {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (endpoint, channel) = &mut *guard;
        if endpoint.has_changed().unwrap_or(false) {
            *channel = None;
        }
        match channel {
            Some(c) => c.clone(),
            None => {
                let c = endpoint.borrow_and_update().clone().connect_lazy();
                *channel = Some(c.clone());
                c
            }
        }
    }

    /// Forgets the channel: the next fetch connects afresh.
    fn reset(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = None;
    }
}

/// Fetches the values of `task`'s configs and secrets from the master, on the link's
/// endpoint (its mutual TLS): the references are checked again first, a master that
/// is unavailable is retried for a few seconds, and every failure names the object
/// (never a value). `None` when the task references nothing.
pub(crate) async fn fetch(
    link: &FetchChannel,
    agent_id: &str,
    framework_id: &str,
    task: &v1::TaskInfo,
) -> Result<Option<TaskObjects>, String> {
    if task.objects.is_empty() {
        return Ok(None);
    }
    validate_task(task).map_err(|e| format!("invalid configs and secrets: {e}"))?;
    let request = v1::FetchObjectsRequest {
        agent_id: agent_id.to_string(),
        framework_id: framework_id.to_string(),
        task_id: task.task_id.clone(),
    };
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let response = loop {
        let channel = link.channel();
        let attempt = tokio::time::timeout(FETCH_ATTEMPT_TIMEOUT, async {
            let mut client = AgentLinkClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            client.fetch_objects(request.clone()).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::unavailable(format!(
                "no answer from the master within {FETCH_ATTEMPT_TIMEOUT:?}"
            )))
        });
        match attempt {
            Ok(response) => break response.into_inner(),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && started.elapsed() + delay < FETCH_RETRY_FOR =>
            {
                link.reset();
                tracing::debug!(task_id = %task.task_id, error = %status.message(), retry_in = ?delay, "the master is unavailable for a fetch of configs and secrets");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(status) => return Err(fetch_error(task, &status)),
        }
    };
    TaskObjects::resolve(&task.objects, response.objects).map(Some)
}

/// "cannot fetch secret 'x': <the master's message>" (each distinct object named when
/// there are several).
fn fetch_error(task: &v1::TaskInfo, status: &tonic::Status) -> String {
    let mut named: Vec<String> = Vec::new();
    for r in &task.objects {
        let one = format!(
            "{} '{}'",
            kind_name(kind_of(r.kind).unwrap_or(ObjectKind::Unspecified)),
            r.name
        );
        if !named.contains(&one) {
            named.push(one);
        }
    }
    let message = status.message();
    let message = if message.is_empty() {
        status.code().description()
    } else {
        message
    };
    match named.as_slice() {
        [one] => format!("cannot fetch {one}: {message}"),
        many => format!(
            "cannot fetch the task's configs and secrets ({}): {message}",
            many.join(", ")
        ),
    }
}

/// A tmpfs on the host holding a task's secret files until the task (or its
/// container) has bound it; dropping it detaches it from the host and removes its
/// directory (on success, once bound; on any error, before the launch fails).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    mounted: bool,
}

impl Staging {
    /// Mounts a tmpfs at `base/<container>` (`base`: the runtime dir's
    /// [`STAGING_DIR`], made 0700) and writes `files` (relative paths) into it, owned
    /// by `owner`, then makes it read-only. Needs root.
    pub fn create(
        base: &Path,
        container: &ContainerId,
        files: &[(&str, &[u8])],
        owner: (u32, u32),
    ) -> Result<Staging, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "secrets need an agent running as root: cannot mount a tmpfs: the agent runs as uid {}",
                nix::unistd::geteuid().as_raw()
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .and_then(|()| std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        let dir = base.join(&container.0);
        release(&dir); // a leftover of the same name (never, with random ids)
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut staging = Staging {
            dir,
            mounted: false,
        };
        let size: u64 = files
            .iter()
            .map(|(_, data)| (data.len() as u64).div_ceil(PAGE) * PAGE)
            .sum::<u64>()
            + TMPFS_SLACK;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let options = format!("size={size},mode=0500");
        mount(
            Some("tmpfs"),
            &staging.dir,
            Some("tmpfs"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| format!("secrets need an agent running as root: cannot mount a tmpfs: {e}"))?;
        staging.mounted = true;
        let (uid, gid) = owner;
        let chown = |path: &Path| {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give the secrets to uid {uid}: {e}"))
        };
        for (path, data) in files {
            let full = staging.dir.join(path);
            // Directories on the way (the tmpfs is root's alone until bound: paths
            // are safe here).
            let mut at = staging.dir.clone();
            let parts: Vec<&str> = path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                at.push(part);
                match std::fs::DirBuilder::new().mode(SECRET_DIR_MODE).create(&at) {
                    Ok(()) => chown(&at)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("cannot write secret file '{path}': {e}")),
                }
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(SECRET_FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&full)
                .map_err(|e| format!("cannot write secret file '{path}': {e}"))?;
            f.write_all(data)
                .map_err(|e| format!("cannot write secret file '{path}': {e}"))?;
            fchown(
                f.as_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(|e| format!("cannot give the secrets to uid {uid}: {e}"))?;
        }
        chown(&staging.dir)?;
        // EBUSY: a file of the tmpfs is still open for writing somewhere. Ours are
        // closed, but a task another launch forked while one was open holds a copy of
        // the descriptor until it execs (close-on-exec), a matter of milliseconds:
        // retried for up to a second (`strata-bench objects` saw it about once in 300
        // concurrent launches).
        let mut tries = 0;
        loop {
            match mount(
                None::<&str>,
                &staging.dir,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                None::<&str>,
            ) {
                Ok(()) => break,
                Err(Errno::EBUSY) if tries < REMOUNT_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(format!("cannot make the secrets tmpfs read-only: {e}")),
            }
        }
        Ok(staging)
    }

    /// The staging directory (the tmpfs' root).
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.mounted {
            release(&self.dir);
        } else {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Detaches whatever is mounted at `dir` from the host (lazily: a task or container
/// that bound it keeps it) and removes the directory.
fn release(dir: &Path) {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot detach a secrets tmpfs"),
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => {
            // Never holds a secret once detached (they were on the tmpfs); whatever
            // else is there goes.
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a secrets staging directory");
            }
        }
    }
}

/// At agent start: detaches and removes the staging directories a previous run left
/// under `runtime_dir` (it died between mounting one and starting its task). Returns
/// how many.
pub fn remove_leftovers(runtime_dir: &Path) -> usize {
    let base = runtime_dir.join(STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        release(&entry.path());
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(
            count = removed,
            "removed secrets staging directories of a previous run"
        );
    }
    removed
}

/// Opens a directory below `dir` (a component, no `/`), creating it (mode `mode`,
/// owned by `owner`) when missing; never through a symlink.
fn open_subdir(
    dir: &OwnedFd,
    name: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(mode)) {
        Ok(()) => {
            let fd = openat(dir.as_fd(), name, flags, Mode::empty())?;
            if let Some((uid, gid)) = owner {
                fchown(
                    fd.as_fd(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                )?;
            }
            Ok(fd)
        }
        Err(Errno::EEXIST) => Ok(openat(dir.as_fd(), name, flags, Mode::empty())?),
        Err(e) => Err(e.into()),
    }
}

/// Opens `sandbox` itself, not through a symlink.
fn open_sandbox(sandbox: &Path) -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(sandbox)?
        .into())
}

/// Writes a file at `path` (relative, checked) below `root`, mode `mode`, owned by
/// `owner`: every directory on the way is opened without following a symlink (and
/// created, 0755, `owner`'s, when missing), whatever was at the file's place is
/// unlinked and the file created anew (`O_EXCL`). The sandbox belongs to the task's
/// user, who may have planted links there.
pub fn write_file_at(
    root: &Path,
    path: &str,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut dir = open_sandbox(root)?;
    let parts: Vec<&str> = path.split('/').collect();
    let (name, parents) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::other("empty path"))?;
    for part in parents {
        dir = open_subdir(&dir, part, 0o755, owner)?;
    }
    match unlinkat(dir.as_fd(), *name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = openat(
        dir.as_fd(),
        *name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    let mut f = File::from(fd);
    f.write_all(data)?;
    if let Some((uid, gid)) = owner {
        fchown(
            f.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes the task's config files into its sandbox (mode 0444, `owner`'s). Only
/// relative paths: a Docker task's absolute ones are the Docker containerizer's.
pub fn write_config_files(
    objects: &TaskObjects,
    sandbox: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    for (path, data) in objects.files(ObjectKind::Config) {
        if path.starts_with('/') {
            continue;
        }
        write_file_at(sandbox, path, data, CONFIG_FILE_MODE, owner)
            .map_err(|e| format!("cannot write config file '{path}' in the sandbox: {e}"))?;
    }
    Ok(())
}

/// Creates the empty mountpoint `<sandbox>/secrets` (replacing a file or link there)
/// and opens it `O_PATH`, without following a link: the task's process binds the
/// secrets onto that descriptor (`/proc/self/fd/N`), not onto a path its user could
/// swap meanwhile.
pub fn secrets_mountpoint(sandbox: &Path, owner: Option<(u32, u32)>) -> std::io::Result<OwnedFd> {
    let dir = open_sandbox(sandbox)?;
    let name = strata_proto::objects::SECRETS_DIR;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        // A file or a link: not ours to follow.
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
        }
        Err(e) => return Err(e.into()),
    }
    let sub = open_subdir(&dir, name, 0o700, owner)?;
    drop(sub);
    Ok(openat(dir.as_fd(), name, flags, Mode::empty())?)
}

/// The mount point of a persistent volume at `path` (relative, checked by the caller:
/// no `..`, not absolute) in `sandbox`: every directory on the way opened without
/// following a symlink, created (0755, `owner`'s) when missing. A link or a file in
/// the way fails (the sandbox belongs to the task's user, who may have planted one).
pub fn mountpoint_at(
    sandbox: &Path,
    path: &str,
    owner: Option<(u32, u32)>,
) -> std::io::Result<OwnedFd> {
    let mut dir = open_sandbox(sandbox)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(std::io::Error::other("a '.' or '..' in the path"));
        }
        dir = open_subdir(&dir, part, 0o755, owner)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(kind: ObjectKind, name: &str, target: object_ref::Target) -> v1::ObjectRef {
        v1::ObjectRef {
            kind: kind as i32,
            name: name.into(),
            version: 3,
            target: Some(target),
        }
    }

    fn value(kind: ObjectKind, name: &str, data: &[u8]) -> v1::ObjectValue {
        v1::ObjectValue {
            kind: kind as i32,
            name: name.into(),
            version: 3,
            data: data.to_vec(),
        }
    }

    #[test]
    fn debug_shows_names_and_sizes_never_values() {
        let refs = vec![
            reference(
                ObjectKind::Secret,
                "db-pass",
                object_ref::Target::File("db-pass".into()),
            ),
            reference(
                ObjectKind::Secret,
                "db-pass",
                object_ref::Target::Env("DB_PASS".into()),
            ),
            reference(
                ObjectKind::Config,
                "app",
                object_ref::Target::File("configs/app".into()),
            ),
        ];
        let objects = TaskObjects::resolve(
            &refs,
            vec![
                value(ObjectKind::Secret, "db-pass", b"hunter2-planted"),
                value(ObjectKind::Config, "app", b"port=1"),
            ],
        )
        .unwrap();
        let shown = format!("{objects:?} {objects:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("port=1"), "{shown}");
        assert!(
            shown.contains("secret 'db-pass' v3 -> file db-pass (15 bytes, <redacted>)"),
            "{shown}"
        );
        assert!(shown.contains("env DB_PASS"), "{shown}");
        assert!(objects.has_secret_files() && objects.has_secret_env());
        assert_eq!(
            objects.env(None).collect::<Vec<_>>(),
            vec![("DB_PASS", "hunter2-planted")]
        );
        assert_eq!(
            objects.files(ObjectKind::Config).collect::<Vec<_>>(),
            vec![("configs/app", &b"port=1"[..])]
        );
    }

    #[test]
    fn missing_and_unfit_values_are_refused_by_name() {
        let refs = vec![reference(
            ObjectKind::Secret,
            "db-pass",
            object_ref::Target::Env("DB_PASS".into()),
        )];
        let e = TaskObjects::resolve(&refs, vec![]).unwrap_err();
        assert_eq!(
            e,
            "cannot fetch secret 'db-pass': the master sent no value for version 3"
        );
        for bad in [&b"a\0b"[..], &[0xff, 0xfe][..]] {
            let e = TaskObjects::resolve(&refs, vec![value(ObjectKind::Secret, "db-pass", bad)])
                .unwrap_err();
            assert!(
                e.starts_with("secret 'db-pass' cannot be the variable DB_PASS"),
                "{e}"
            );
        }
    }

    #[test]
    fn env_file_lines_are_single_quoted_for_the_shell() {
        let mut out = String::new();
        push_export(&mut out, "A", "it's $HOME `x` \"q\"\nline2");
        assert_eq!(out, "export A='it'\\''s $HOME `x` \"q\"\nline2'\n");
        // The shell reads back exactly the value.
        let script = format!("{out}printf %s \"$A\"");
        let printed = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(printed.stdout).unwrap(),
            "it's $HOME `x` \"q\"\nline2"
        );
    }

    #[test]
    fn fetch_errors_name_the_objects() {
        let mut task = v1::TaskInfo {
            objects: vec![reference(
                ObjectKind::Secret,
                "db-pass",
                object_ref::Target::File("db-pass".into()),
            )],
            ..Default::default()
        };
        let status = tonic::Status::not_found("secret 'db-pass' does not exist");
        assert_eq!(
            fetch_error(&task, &status),
            "cannot fetch secret 'db-pass': secret 'db-pass' does not exist"
        );
        task.objects.push(reference(
            ObjectKind::Config,
            "app",
            object_ref::Target::Env("APP".into()),
        ));
        assert_eq!(
            fetch_error(&task, &tonic::Status::permission_denied("no")),
            "cannot fetch the task's configs and secrets (secret 'db-pass', config 'app'): no"
        );
    }

    #[test]
    fn config_files_are_written_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sb");
        std::fs::create_dir(&sandbox).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // A link planted where the configs directory goes.
        std::os::unix::fs::symlink(&outside, sandbox.join("configs")).unwrap();
        let e = write_file_at(&sandbox, "configs/app", b"x", CONFIG_FILE_MODE, None).unwrap_err();
        assert!(
            e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR),
            "{e}"
        );
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // A link at the file's place is replaced, not written through.
        std::fs::remove_file(sandbox.join("configs")).unwrap();
        std::fs::create_dir(sandbox.join("configs")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), sandbox.join("configs/app")).unwrap();
        write_file_at(&sandbox, "configs/app", b"x", CONFIG_FILE_MODE, None).unwrap();
        assert!(!outside.join("victim").exists());
        let meta = std::fs::symlink_metadata(sandbox.join("configs/app")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(std::fs::read(sandbox.join("configs/app")).unwrap(), b"x");
    }
}
