//! Persistent volumes on the agent (issue 17): the master's ledger of this agent's
//! dynamic reservations and persistent volumes, checkpointed, and the volumes' data.
//!
//! ```text
//!  master ─ CheckpointResources (the whole ledger) ─▶ AgentLoop
//!     1. written to WORK_DIR/meta/resources (protobuf, fsync, rename, fsync of meta/)
//!     2. each listed volume's directory created when missing:
//!          WORK_DIR/volumes/roles/<role>/<persistence id>   (work-dir disk)
//!          the MOUNT disk's root itself                     (MOUNT disk; must exist)
//!     3. the data of volumes no longer listed (destroyed) removed: their directory
//!        under WORK_DIR/volumes/roles (never following a link), the contents of a
//!        MOUNT disk's root (not the mount point); never a volume a task is using
//!  start: the ledger read back ─▶ Register.checkpointed at every (re-)registration
//!  launch: a task's volumes must be in the ledger ─▶ LaunchSpec.volumes
//!       process tasks: bind mounts at <sandbox>/<container_path> in the task's own
//!         mount namespace ([`crate::isolation::child`]), read-only when RO
//!       Docker tasks: binds at <sandbox mount>/<container_path> and /<container_path>
//!       the volume's root is given to the task's user, unless another task uses it
//!  every --container-disk-watch-interval: du of each volume ─▶ UsageReport.volumes
//! ```
//!
//! Mesos lays its volumes out the same way (`<work_dir>/volumes/roles/<role>/<id>`);
//! the data stays there, outside any sandbox, until the master's ledger no longer
//! lists the volume (a DESTROY).

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;
use strata_proto::Resources;
use strata_proto::resources::Value;
use strata_proto::v1;

/// The checkpointed ledger, under the work dir.
pub const LEDGER_FILE: &str = "meta/resources";
/// Where work-dir volumes live, under the work dir: `<role>/<persistence id>` below.
pub const VOLUMES_DIR: &str = "volumes/roles";
/// Mode of the directories above a volume: the agent's, passable.
const TREE_MODE: u32 = 0o711;
/// Mode of a new volume's root (given to the task's user at its first use).
const VOLUME_MODE: u32 = 0o755;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One persistent volume of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub role: String,
    pub id: String,
    pub principal: String,
    /// Where tasks see it, relative to their sandbox.
    pub container_path: String,
    pub read_only: bool,
    /// The MOUNT disk's root the volume is (`None`: a work-dir volume).
    pub mount: Option<PathBuf>,
    /// Its size, MB (thousandths).
    pub size_milli: i64,
    /// Its data on this agent: the MOUNT root, or `WORK_DIR/volumes/roles/<role>/<id>`.
    pub path: PathBuf,
}

/// The master's ledger of this agent, as last checkpointed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// What the master sent, whole (sent back in `Register.checkpointed`).
    pub proto: v1::CheckpointResources,
    /// Its persistent volumes (those this agent can place; see [`Ledger::new`]).
    pub volumes: Vec<Volume>,
    /// Whether the master ever sent one (else this is the empty default).
    pub from_master: bool,
}

impl Ledger {
    /// The ledger `proto`, its volumes placed under `work_dir`. A volume this agent
    /// cannot place (malformed resources, a role that is not a safe path) is left out
    /// and said in the log.
    pub fn new(work_dir: &Path, proto: v1::CheckpointResources) -> Ledger {
        let mut volumes = Vec::new();
        match Resources::try_from_proto(&proto.volumes) {
            Err(e) => {
                tracing::error!(error = %e, "the master's ledger lists malformed volumes; they are ignored")
            }
            Ok(resources) => {
                for entry in resources.volumes() {
                    let (Some(p), Some(role)) = (entry.persistence(), entry.role.as_ref()) else {
                        continue;
                    };
                    if !safe_role(role) {
                        tracing::error!(%role, id = %p.id, "a volume's role is not a safe directory name; the volume is ignored");
                        continue;
                    }
                    let mount = entry
                        .disk
                        .as_ref()
                        .and_then(|d| d.mount.as_ref())
                        .map(PathBuf::from);
                    let path = match &mount {
                        Some(root) => root.clone(),
                        None => volume_dir(work_dir, role, &p.id),
                    };
                    let size_milli = match &entry.value {
                        Value::Scalar(s) => s.milli(),
                        Value::Ranges(_) => 0,
                    };
                    volumes.push(Volume {
                        role: role.clone(),
                        id: p.id.clone(),
                        principal: p.principal.clone(),
                        container_path: p.container_path.clone(),
                        read_only: p.read_only,
                        mount,
                        size_milli,
                        path,
                    });
                }
            }
        }
        Ledger {
            proto,
            volumes,
            from_master: true,
        }
    }

    /// The volume `id` of `role`, if the ledger lists it.
    pub fn volume(&self, role: &str, id: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.role == role && v.id == id)
    }
}

/// A role is a directory (hierarchical roles, `a/b`, are nested ones): no empty, `.`
/// or `..` part, not absolute.
fn safe_role(role: &str) -> bool {
    !role.is_empty()
        && !role.contains('\0')
        && role
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The role, id and data on this agent of a volume entry (of a task's resources, or
/// of the ledger); `None` for other entries and roles that are not safe paths.
pub fn data_of(
    work_dir: &Path,
    entry: &strata_proto::resources::Entry,
) -> Option<(String, String, PathBuf)> {
    let p = entry.persistence()?;
    let role = entry.role.as_ref().filter(|r| safe_role(r))?;
    let path = match entry.disk.as_ref().and_then(|d| d.mount.as_ref()) {
        Some(root) => PathBuf::from(root),
        None => volume_dir(work_dir, role, &p.id),
    };
    Some((role.clone(), p.id.clone(), path))
}

/// `WORK_DIR/volumes/roles/<role>/<id>`.
pub fn volume_dir(work_dir: &Path, role: &str, id: &str) -> PathBuf {
    work_dir.join(VOLUMES_DIR).join(role).join(id)
}

/// The checkpointed ledger, if there is one.
pub fn read(work_dir: &Path) -> Result<Option<v1::CheckpointResources>, LedgerError> {
    let path = work_dir.join(LEDGER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LedgerError::Read { path, source }),
    };
    v1::CheckpointResources::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| LedgerError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

/// Writes the ledger durably: a temporary file (0600), fsync, rename, fsync of its
/// directory. Either the old ledger or the new one is on disk, whatever happens.
pub fn write(work_dir: &Path, ledger: &v1::CheckpointResources) -> Result<(), LedgerError> {
    let path = work_dir.join(LEDGER_FILE);
    let err = |source| LedgerError::Write {
        path: path.clone(),
        source,
    };
    let dir = path.parent().unwrap_or(work_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    crate::checkpoint::replace_file(&path, &ledger.encode_to_vec(), true).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// What applying a ledger did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub created: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    /// Volumes no longer listed but used by a running task: left alone.
    pub kept_in_use: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// Makes the volumes' data match `ledger` (see the module docs): creates the
/// directories of new work-dir volumes, checks MOUNT roots, removes the data of the
/// volumes `previous` listed or that lie under `WORK_DIR/volumes/roles` and `ledger`
/// does not list, except those in `in_use`.
pub fn apply(
    work_dir: &Path,
    ledger: &Ledger,
    previous: &Ledger,
    in_use: &HashSet<PathBuf>,
) -> Applied {
    let mut out = Applied::default();
    let root = work_dir.join(VOLUMES_DIR);
    for v in &ledger.volumes {
        match &v.mount {
            Some(mount) => match std::fs::metadata(mount) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => out.errors.push(format!(
                    "volume '{}' of role '{}': its MOUNT disk root {} is not a directory",
                    v.id,
                    v.role,
                    mount.display()
                )),
                Err(e) => out.errors.push(format!(
                    "volume '{}' of role '{}': its MOUNT disk root {}: {e}",
                    v.id,
                    v.role,
                    mount.display()
                )),
            },
            None => {
                if std::fs::symlink_metadata(&v.path).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                match create_volume_dir(&root, &v.path) {
                    Ok(()) => out.created.push(v.path.clone()),
                    Err(e) => out.errors.push(format!(
                        "cannot create the directory of volume '{}' of role '{}' ({}): {e}",
                        v.id,
                        v.role,
                        v.path.display()
                    )),
                }
            }
        }
    }
    let listed: HashSet<&Path> = ledger.volumes.iter().map(|v| v.path.as_path()).collect();
    // Work-dir volumes: those the previous ledger listed, and any `<role>/<id>` left
    // under the tree (a ledger lost, a removal that failed), that are not listed now.
    let mut gone: Vec<PathBuf> = previous
        .volumes
        .iter()
        .filter(|v| v.mount.is_none())
        .map(|v| v.path.clone())
        .collect();
    gone.extend(leftover_dirs(&root));
    gone.sort();
    gone.dedup();
    for path in gone {
        // Listed, or above a listed volume (a hierarchical role's directory).
        if listed.iter().any(|l| l.starts_with(&path)) || !path.starts_with(&root) {
            continue;
        }
        if in_use.contains(&path) {
            out.kept_in_use.push(path);
            continue;
        }
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
            Ok(_) => {}
        }
        // `remove_dir_all` never follows a symlink: one in the volume (or the path
        // itself, were it one) is removed as a link, not what it points to.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => out.removed.push(path),
            Err(e) => out
                .errors
                .push(format!("cannot remove {}: {e}", path.display())),
        }
    }
    // MOUNT volumes no longer listed: emptied, the mount point stays.
    for v in previous.volumes.iter().filter(|v| v.mount.is_some()) {
        if listed.contains(v.path.as_path()) {
            continue;
        }
        if in_use.contains(&v.path) {
            out.kept_in_use.push(v.path.clone());
            continue;
        }
        match empty_dir(&v.path) {
            Ok(()) => out.removed.push(v.path.clone()),
            Err(e) => out.errors.push(format!(
                "cannot empty the MOUNT disk root {} of destroyed volume '{}': {e}",
                v.path.display(),
                v.id
            )),
        }
    }
    out
}

/// Creates `path` (below `root`) and the directories above it, none through a link.
fn create_volume_dir(root: &Path, path: &Path) -> std::io::Result<()> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| std::io::Error::other("not under the volumes directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(TREE_MODE)
        .create(root)?;
    let mut dir = root.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        dir.push(part);
        let mode = if i + 1 == parts.len() {
            VOLUME_MODE
        } else {
            TREE_MODE
        };
        match std::fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !std::fs::symlink_metadata(&dir)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The `<role>/<id>` directories under the volumes tree (one-part roles).
fn leftover_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(roles) = std::fs::read_dir(root) else {
        return out;
    };
    for role in roles.flatten() {
        if !role.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(ids) = std::fs::read_dir(role.path()) else {
            continue;
        };
        for id in ids.flatten() {
            if id.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(id.path());
            }
        }
    }
    out
}

/// Removes what `dir` holds (links as links), not `dir` itself.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A volume a launch mounts into its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub role: String,
    pub id: String,
    /// The volume's data on this agent.
    pub host_path: PathBuf,
    /// Relative to the task's sandbox (checked: no `..`, not absolute).
    pub container_path: String,
    pub read_only: bool,
    /// Give the volume's root to the task's user (no other task uses it now).
    pub chown: bool,
}

/// Gets the volumes of a launch ready: each must be a directory (not a link), its root
/// is given to `owner` when the mount says so, and its mount point is created in the
/// sandbox (each directory opened without following a link, created `owner`'s when
/// missing). Returns the mount points, opened `O_PATH`.
pub fn prepare_mounts(
    mounts: &[VolumeMount],
    sandbox: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Vec<OwnedFd>, String> {
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let what = || format!("volume '{}' of role '{}'", m.id, m.role);
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&m.host_path)
            .map_err(|e| format!("{} at {}: {e}", what(), m.host_path.display()))?;
        if m.chown
            && let Some((uid, gid)) = owner
        {
            std::os::unix::fs::fchown(&root, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to its task's user: {e}", what()))?;
        }
        let target =
            crate::objects::mountpoint_at(sandbox, &m.container_path, owner).map_err(|e| {
                format!(
                    "cannot create the mount point '{}' of {} in the sandbox: {e}",
                    m.container_path,
                    what()
                )
            })?;
        out.push(target);
    }
    Ok(out)
}

/// A persistent volume as `GET /volumes` shows it (`persistent`).
#[derive(Debug, Clone, Serialize)]
pub struct PersistentVolumeView {
    pub role: String,
    pub persistence_id: String,
    pub principal: String,
    pub container_path: String,
    /// `RW` or `RO`.
    pub mode: &'static str,
    pub size_mb: f64,
    /// `work_dir` or `mount`.
    pub source: &'static str,
    /// Its data on this agent.
    pub path: String,
    /// The last measurement (every `--container-disk-watch-interval`); `None` before
    /// the first, or with disk isolation off.
    pub used_bytes: Option<u64>,
    /// The running tasks that use it.
    pub tasks: Vec<VolumeTask>,
}

/// A task using a persistent volume.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VolumeTask {
    pub framework_id: String,
    pub task_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(role: &str, id: &str, path: &str, mount: Option<&str>) -> v1::Resource {
        v1::Resource {
            name: "disk".into(),
            scalar: 16.0,
            role: role.into(),
            disk: Some(v1::DiskInfo {
                persistence: Some(v1::disk_info::Persistence {
                    id: id.into(),
                    principal: "ops".into(),
                }),
                container_path: path.into(),
                mode: v1::volume::Mode::Rw as i32,
                source: mount.map(|root| v1::disk_info::Source {
                    r#type: v1::disk_info::source::Type::Mount as i32,
                    root: root.into(),
                }),
            }),
            ranges: vec![],
        }
    }

    fn ledger(work_dir: &Path, volumes: Vec<v1::Resource>) -> Ledger {
        Ledger::new(
            work_dir,
            v1::CheckpointResources {
                reserved: vec![],
                volumes,
            },
        )
    }

    #[test]
    fn the_ledger_roundtrips_and_places_its_volumes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let l = ledger(dir.path(), vec![volume("db", "v1", "data", None)]);
        write(dir.path(), &l.proto).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(l.proto.clone()));
        let v = l.volume("db", "v1").unwrap();
        assert_eq!(v.path, dir.path().join("volumes/roles/db/v1"));
        assert_eq!(v.container_path, "data");
        assert_eq!(v.size_milli, 16_000);
        std::fs::write(dir.path().join(LEDGER_FILE), b"\xff\xff").unwrap();
        assert!(matches!(read(dir.path()), Err(LedgerError::Corrupt { .. })));
    }

    #[test]
    fn volumes_are_created_and_destroyed_ones_removed_unless_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let empty = Ledger::default();
        let both = ledger(
            &work,
            vec![
                volume("db", "a", "data", None),
                volume("db", "b", "d", None),
            ],
        );
        let applied = apply(&work, &both, &empty, &HashSet::new());
        assert_eq!(applied.created.len(), 2, "{applied:?}");
        let a = volume_dir(&work, "db", "a");
        let b = volume_dir(&work, "db", "b");
        std::fs::write(a.join("file"), b"data").unwrap();
        std::os::unix::fs::symlink(&outside, a.join("link")).unwrap();

        // b is in use: kept although destroyed; a is removed, not what it links to.
        let none = ledger(&work, vec![]);
        let applied = apply(&work, &none, &both, &HashSet::from([b.clone()]));
        assert_eq!(applied.removed, std::slice::from_ref(&a), "{applied:?}");
        assert_eq!(applied.kept_in_use, std::slice::from_ref(&b));
        assert!(!a.exists());
        assert!(b.exists());
        assert!(outside.join("keep").exists());
        // A leftover of no ledger goes too, once unused.
        let applied = apply(&work, &none, &none, &HashSet::new());
        assert_eq!(applied.removed, std::slice::from_ref(&b), "{applied:?}");
    }

    #[test]
    fn a_destroyed_mount_volume_is_emptied_not_unmounted() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let disk = dir.path().join("disk1");
        std::fs::create_dir_all(disk.join("sub")).unwrap();
        std::fs::write(disk.join("sub/f"), b"x").unwrap();
        let with = ledger(
            &work,
            vec![volume("db", "m", "data", Some(disk.to_str().unwrap()))],
        );
        assert_eq!(with.volumes[0].path, disk);
        let applied = apply(&work, &with, &Ledger::default(), &HashSet::new());
        assert!(applied.errors.is_empty(), "{applied:?}");
        let applied = apply(&work, &ledger(&work, vec![]), &with, &HashSet::new());
        assert_eq!(applied.removed, std::slice::from_ref(&disk));
        assert!(disk.is_dir());
        assert_eq!(std::fs::read_dir(&disk).unwrap().count(), 0);
        // A missing MOUNT root is an error said, not created.
        let missing = ledger(
            &work,
            vec![volume("db", "m", "data", Some("/nonexistent-x"))],
        );
        let applied = apply(&work, &missing, &Ledger::default(), &HashSet::new());
        assert_eq!(applied.errors.len(), 1, "{applied:?}");
    }
}
