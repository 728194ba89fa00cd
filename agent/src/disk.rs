//! Disk isolation (issue 17): how much disk each running task uses, and the kill of a
//! task that uses more than its `disk` resource.
//!
//! ```text
//!  every container_disk_watch_interval (agent loop) ─▶ DiskJob (blocking pool)
//!     per running task: du of its paths (the sandbox, then its persistent volumes):
//!       lstat walk, no symlink followed, never off each path's filesystem,
//!       allocated blocks (st_blocks * 512), a hard-linked file once per task
//!     per persistent volume of the agent's ledger: du of its data
//!  ─▶ DiskPass ─▶ the loop: kept for /monitor/statistics, GET /volumes and usage
//!       reports (disk_used_bytes, disk_limit_bytes; UsageReport.volumes)
//!                          └─▶ over the limit and enforcing: TaskManager::disk_limit
//!                              ─▶ Kill (kill policy grace, then SIGKILL) ─▶ TASK_FAILED,
//!                                 REASON_CONTAINER_LIMITATION_DISK
//! ```
//!
//! This is Mesos' `disk/du` isolator (`--container_disk_watch_interval`, 15 s, and
//! `--enforce_container_disk_quota`), done in-process instead of by forking `du`. It
//! is used on every filesystem for now: XFS and ext4 project quotas (Mesos'
//! `disk/xfs`, an exact and instant limit enforced by the kernel) are not used, and
//! the filesystem of the work dir, detected at start ([`Filesystem::of`]), is only
//! said in the log. With du, a task can write past its limit for up to one interval
//! (plus the walk) before it is killed.
//!
//! The walk opens each directory with `O_NOFOLLOW` and checks that it is the very
//! inode its parent listed (device and inode number), so a task that swaps a
//! directory for a symlink mid-walk cannot send it elsewhere. It is bounded: after
//! [`DiskIsolationOptions::max_entries`] entries (a million by default) a task's walk
//! stops and what it counted so far is its usage, marked partial: a lower bound, so a
//! task over its limit on it is over its limit for sure, while a task of more files
//! than that under its limit is not measured further (it is said in the log, once per
//! pass). A sandbox of millions of files thus costs at most that many `fstatat`s per
//! interval, and a pass starts only once the last one ended.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::containerizer::ContainerId;
use crate::task_key::TaskKey;

/// One MiB: `disk` is given in MB (MiB), as `mem` is.
pub const MIB: u64 = 1024 * 1024;

/// What the agent does about its tasks' disk (`--container-disk-watch-interval`,
/// `--enforce-container-disk-quota`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIsolationOptions {
    /// How often every running task's disk is measured (Mesos: 15 s); zero: never
    /// (disk isolation off: neither measured nor enforced).
    pub watch_interval: Duration,
    /// Kill a task whose usage exceeds its `disk`; `false`: measure and report only.
    pub enforce: bool,
    /// Most directory entries one task's walk looks at per pass (see the module docs).
    pub max_entries: u64,
}

impl Default for DiskIsolationOptions {
    fn default() -> DiskIsolationOptions {
        DiskIsolationOptions {
            watch_interval: Duration::from_secs(15),
            enforce: true,
            max_entries: 1_000_000,
        }
    }
}

impl DiskIsolationOptions {
    pub fn enabled(&self) -> bool {
        !self.watch_interval.is_zero()
    }

    /// What the agent says at start, e.g. `du every 15s on ext4 (project quotas not
    /// used)`.
    pub fn describe(&self, work_dir: &Path) -> String {
        if !self.enabled() {
            return "off (--container-disk-watch-interval 0): task disk is neither measured nor enforced".into();
        }
        let fs = Filesystem::of(work_dir)
            .map(|f| f.to_string())
            .unwrap_or_else(|e| format!("an unknown filesystem ({e})"));
        let how = if self.enforce {
            "(project quotas not used)"
        } else {
            "measuring only (--enforce-container-disk-quota=false; project quotas not used)"
        };
        format!("du every {} on {fs} {how}", humanize(self.watch_interval))
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The filesystem a path is on, as `statfs` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    /// ext2, ext3 and ext4 share one magic number.
    Ext4,
    Xfs,
    Btrfs,
    Tmpfs,
    Overlay,
    Zfs,
    Nfs,
    Other(i64),
}

impl Filesystem {
    pub fn of(path: &Path) -> nix::Result<Filesystem> {
        let fs = nix::sys::statfs::statfs(path)?;
        Ok(Filesystem::from_magic(fs.filesystem_type().0 as i64))
    }

    fn from_magic(magic: i64) -> Filesystem {
        match magic {
            0xEF53 => Filesystem::Ext4,
            0x5846_5342 => Filesystem::Xfs,
            0x9123_683E => Filesystem::Btrfs,
            0x0102_1994 => Filesystem::Tmpfs,
            0x794C_7630 => Filesystem::Overlay,
            0x2FC1_2FC1 => Filesystem::Zfs,
            0x6969 => Filesystem::Nfs,
            other => Filesystem::Other(other),
        }
    }
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filesystem::Ext4 => write!(f, "ext4"),
            Filesystem::Xfs => write!(f, "xfs"),
            Filesystem::Btrfs => write!(f, "btrfs"),
            Filesystem::Tmpfs => write!(f, "tmpfs"),
            Filesystem::Overlay => write!(f, "overlay"),
            Filesystem::Zfs => write!(f, "zfs"),
            Filesystem::Nfs => write!(f, "nfs"),
            Filesystem::Other(magic) => write!(f, "a filesystem of type {magic:#x}"),
        }
    }
}

/// The bytes of a task's `disk` resource (MB, thousandths allowed); `None` without one.
pub fn limit_bytes(resources: &strata_proto::Resources) -> Option<u64> {
    let milli = resources.disk().milli();
    (milli > 0).then(|| (milli as u64).saturating_mul(MIB) / 1000)
}

/// One running task to measure.
#[derive(Debug, Clone)]
pub(crate) struct DiskTarget {
    pub key: TaskKey,
    pub container: ContainerId,
    /// Its sandbox first, then its persistent volumes' data. A volume is bound into
    /// the task in the task's own mount namespace, so the sandbox seen here holds
    /// only its empty mount point: nothing is counted twice.
    pub paths: Vec<PathBuf>,
    /// Its `disk`, bytes; `None`: no limit (measured all the same).
    pub limit_bytes: Option<u64>,
}

/// What a pass found for one task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DiskMeasurement {
    pub key: TaskKey,
    pub container: ContainerId,
    pub used_bytes: u64,
    pub limit_bytes: Option<u64>,
    /// The walk stopped at the entry bound: `used_bytes` is a lower bound.
    pub partial: bool,
    /// How many paths were measured (the sandbox, then volumes).
    pub paths: usize,
    /// What could not be read (an unreadable directory, ...), if anything.
    pub errors: Vec<String>,
}

impl DiskMeasurement {
    /// `Some(message)` when the task uses more than its limit: e.g. `disk limit
    /// exceeded: the task uses 21.3 MB of its 10 MB (sandbox)`.
    pub(crate) fn exceeded(&self) -> Option<String> {
        let limit = self.limit_bytes?;
        if self.used_bytes <= limit {
            return None;
        }
        let at_least = if self.partial { "at least " } else { "" };
        let what = match self.paths.saturating_sub(1) {
            0 => "sandbox".to_string(),
            1 => "sandbox and 1 volume".to_string(),
            n => format!("sandbox and {n} volumes"),
        };
        Some(format!(
            "disk limit exceeded: the task uses {at_least}{:.1} MB of its {} MB ({what})",
            self.used_bytes as f64 / MIB as f64,
            megabytes(limit)
        ))
    }
}

/// `10`, `10.5`: MB as a task gives them.
fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / MIB as f64;
    let s = format!("{mb:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What a persistent volume holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VolumeMeasurement {
    pub role: String,
    pub id: String,
    pub used_bytes: u64,
}

/// What one pass found: the running tasks, and the persistent volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DiskPass {
    pub tasks: Vec<DiskMeasurement>,
    pub volumes: Vec<VolumeMeasurement>,
}

/// One pass over the running tasks and the persistent volumes, run on the blocking
/// pool.
#[derive(Debug)]
pub(crate) struct DiskJob {
    pub targets: Vec<DiskTarget>,
    /// The ledger's volumes: (role, id, data).
    pub volumes: Vec<(String, String, PathBuf)>,
    pub max_entries: u64,
}

impl DiskJob {
    pub(crate) fn run(self) -> DiskPass {
        let max_entries = self.max_entries;
        let volumes = self
            .volumes
            .into_iter()
            .map(|(role, id, path)| VolumeMeasurement {
                role,
                id,
                used_bytes: du(&[path], max_entries).bytes,
            })
            .collect();
        let tasks = self
            .targets
            .into_iter()
            .map(|t| {
                let du = du(&t.paths, self.max_entries);
                DiskMeasurement {
                    key: t.key,
                    container: t.container,
                    used_bytes: du.bytes,
                    limit_bytes: t.limit_bytes,
                    partial: du.partial,
                    paths: t.paths.len(),
                    errors: du.errors,
                }
            })
            .collect();
        DiskPass { tasks, volumes }
    }
}

/// What a walk counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Du {
    /// Allocated bytes (`st_blocks * 512`) of everything found.
    pub bytes: u64,
    /// Entries looked at.
    pub entries: u64,
    /// Stopped at the entry bound.
    pub partial: bool,
    pub errors: Vec<String>,
}

/// Mesos' `du` of `paths` as one task's usage: the allocated blocks of every file and
/// directory under each path, symlinks counted as themselves (never followed), never
/// leaving each path's own filesystem (a mount inside is skipped), a file with several
/// names counted once over all `paths`, at most `max_entries` entries in all. A path
/// that does not exist counts 0.
pub fn du(paths: &[PathBuf], max_entries: u64) -> Du {
    let mut out = Du::default();
    // Files with more than one link, seen in this walk.
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    for root in paths {
        if out.partial {
            break;
        }
        walk(root, max_entries, &mut linked, &mut out);
    }
    out
}

fn walk(root: &Path, max_entries: u64, linked: &mut HashSet<(u64, u64)>, out: &mut Du) {
    let st = match nix::sys::stat::lstat(root) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return,
        Err(e) => {
            out.errors.push(format!("{}: {e}", root.display()));
            return;
        }
    };
    out.entries += 1;
    count(&st, linked, out);
    if !is_dir(&st) {
        return;
    }
    let dev = st.st_dev;
    // Directories to list: their path and the inode their parent listed.
    let mut stack: Vec<(PathBuf, u64)> = vec![(root.to_path_buf(), st.st_ino)];
    while let Some((dir, ino)) = stack.pop() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(&dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Gone since it was listed (or swapped for a symlink: ELOOP).
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP) => continue,
            Err(e) => {
                out.errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        // The very directory its parent listed, not one a rename put there since
        // (through a symlinked parent, say).
        match nix::sys::stat::fstat(&fd) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {}
            _ => continue,
        }
        let stat_fd = match fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                out.errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let mut listing = match nix::dir::Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                out.errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in listing.iter() {
            let Ok(entry) = entry else {
                out.errors
                    .push(format!("{}: cannot be listed", dir.display()));
                break;
            };
            let name = entry.file_name();
            let name_bytes = name.to_bytes();
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            if out.entries >= max_entries {
                out.partial = true;
                return;
            }
            out.entries += 1;
            let st = match nix::sys::stat::fstatat(&stat_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => {
                    out.errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            // Another filesystem mounted here: not the task's disk.
            if st.st_dev != dev {
                continue;
            }
            count(&st, linked, out);
            if is_dir(&st) {
                stack.push((dir.join(OsStr::from_bytes(name_bytes)), st.st_ino));
            }
        }
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn count(st: &FileStat, linked: &mut HashSet<(u64, u64)>, out: &mut Du) {
    if !is_dir(st) && st.st_nlink > 1 && !linked.insert((st.st_dev, st.st_ino)) {
        return;
    }
    out.bytes = out
        .bytes
        .saturating_add((st.st_blocks.max(0) as u64).saturating_mul(512));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: usize) {
        std::fs::write(path, vec![7u8; bytes]).unwrap();
    }

    fn blocks(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn the_walk_sums_allocated_blocks_of_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        write(&root.join("one"), 100_000);
        write(&root.join("a/b/two"), 1 << 20);
        // A sparse file counts what it allocated, not its length.
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let expected: u64 = ["", "a", "a/b", "one", "a/b/two", "sparse"]
            .iter()
            .map(|p| blocks(&root.join(p)))
            .sum();
        let du = du(std::slice::from_ref(&root), 1000);
        assert_eq!(du.bytes, expected);
        assert!(
            du.bytes >= (1 << 20) + 100_000 && du.bytes < 1 << 22,
            "{du:?}"
        );
        assert_eq!(du.entries, 6);
        assert!(!du.partial && du.errors.is_empty(), "{du:?}");
    }

    #[test]
    fn symlinks_are_counted_as_themselves_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        write(&outside.join("big"), 4 << 20);
        let root = dir.path().join("sandbox");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("big"), root.join("to-file")).unwrap();
        let du = du(std::slice::from_ref(&root), 1000);
        assert!(
            du.bytes < 1 << 20,
            "the 4 MB outside is not counted: {du:?}"
        );
        assert_eq!(du.entries, 3);
        // A root that is itself a symlink is not followed either.
        let linked_root = dir.path().join("linked-root");
        std::os::unix::fs::symlink(&outside, &linked_root).unwrap();
        assert!(super::du(&[linked_root], 1000).bytes < 1 << 20);
    }

    #[test]
    fn a_file_with_several_names_counts_once_over_all_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&sandbox).unwrap();
        std::fs::create_dir(&volume).unwrap();
        write(&sandbox.join("data"), 2 << 20);
        std::fs::hard_link(sandbox.join("data"), sandbox.join("again")).unwrap();
        std::fs::hard_link(sandbox.join("data"), volume.join("and-again")).unwrap();
        let once = blocks(&sandbox.join("data"));
        let du = du(&[sandbox.clone(), volume.clone()], 1000);
        let dirs = blocks(&sandbox) + blocks(&volume);
        assert_eq!(du.bytes, once + dirs, "{du:?}");
    }

    #[test]
    fn the_walk_stops_at_its_bound_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("many");
        std::fs::create_dir(&root).unwrap();
        for i in 0..50 {
            write(&root.join(format!("f{i}")), 5000);
        }
        let du = du(std::slice::from_ref(&root), 10);
        assert!(du.partial);
        assert_eq!(du.entries, 10);
        let all = super::du(std::slice::from_ref(&root), 1000);
        assert!(!all.partial && du.bytes < all.bytes);
        assert_eq!(super::du(&[dir.path().join("absent")], 10), Du::default());
    }

    /// As root (CI is): a tmpfs mounted inside the sandbox is another filesystem, not
    /// counted.
    #[test]
    fn another_filesystem_inside_is_not_crossed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        let mount = root.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &mount,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=16m"),
        )
        .expect("mount a tmpfs");
        write(&mount.join("inside"), 8 << 20);
        let du = du(std::slice::from_ref(&root), 1000);
        let _ = nix::mount::umount(&mount);
        assert!(
            du.bytes < 1 << 20,
            "the tmpfs's 8 MB is not counted: {du:?}"
        );
        assert_eq!(Filesystem::of(dir.path()).map(|_| ()), Ok(()));
    }

    #[test]
    fn a_task_over_its_limit_is_told_by_how_much() {
        let m = DiskMeasurement {
            key: TaskKey {
                framework_id: "fw".into(),
                task_id: "t".into(),
            },
            container: ContainerId("c".into()),
            used_bytes: 22_334_669,
            limit_bytes: Some(10 * MIB),
            partial: false,
            paths: 1,
            errors: vec![],
        };
        assert_eq!(
            m.exceeded().as_deref(),
            Some("disk limit exceeded: the task uses 21.3 MB of its 10 MB (sandbox)")
        );
        let under = DiskMeasurement {
            used_bytes: 10 * MIB,
            ..m.clone()
        };
        assert_eq!(under.exceeded(), None);
        let unlimited = DiskMeasurement {
            limit_bytes: None,
            ..m.clone()
        };
        assert_eq!(unlimited.exceeded(), None);
        let partial = DiskMeasurement {
            partial: true,
            paths: 3,
            limit_bytes: Some(10 * MIB + MIB / 2),
            ..m
        };
        assert_eq!(
            partial.exceeded().as_deref(),
            Some(
                "disk limit exceeded: the task uses at least 21.3 MB of its 10.5 MB (sandbox and 2 volumes)"
            )
        );
    }

    #[test]
    fn limits_are_megabytes_of_1024_squared() {
        let r = strata_proto::Resources::parse("cpus:1;disk:10").unwrap();
        assert_eq!(limit_bytes(&r), Some(10 * MIB));
        let none = strata_proto::Resources::parse("cpus:1").unwrap();
        assert_eq!(limit_bytes(&none), None);
    }

    #[test]
    fn the_start_line_names_the_filesystem() {
        let options = DiskIsolationOptions::default();
        let line = options.describe(Path::new("/tmp"));
        assert!(line.starts_with("du every 15s on "), "{line}");
        assert!(line.ends_with("(project quotas not used)"), "{line}");
        let off = DiskIsolationOptions {
            watch_interval: Duration::ZERO,
            ..options
        };
        assert!(off.describe(Path::new("/tmp")).starts_with("off"));
        assert_eq!(Filesystem::from_magic(0xEF53).to_string(), "ext4");
        assert_eq!(Filesystem::from_magic(0x5846_5342).to_string(), "xfs");
    }
}
