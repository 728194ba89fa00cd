//! Disk hygiene: an agent runs for months, so what its tasks leave on disk must not
//! grow without bound.
//!
//! ```text
//!  every disk_watch_interval (agent loop) ─▶ HygieneJob (blocking pool)
//!     1. disk use of the work dir's filesystem (statvfs)
//!     2. rotate: each live task's stdout/stderr over `max_size` is copied to
//!        `stdout.1` (older copies shift to `.2` ... `.keep`) and truncated in place
//!     3. collect: sandboxes of tasks the agent no longer runs, untouched for longer
//!        than the effective delay, are removed
//!  ─▶ HygieneReport (disk use, what was removed and rotated) ─▶ the loop, /state
//! ```
//!
//! Garbage collection follows Mesos' `--gc_delay` and `--gc_disk_headroom`: a sandbox
//! is removed `gc_delay` after its last write, sooner as the disk fills (the delay is
//! `gc_delay * max(0, 1 - headroom - used)`, so at `1 - headroom` used, every finished
//! sandbox goes at the next sweep). A sandbox of a task the agent still knows (running,
//! or ended with an update not yet acknowledged) is never touched.
//!
//! Rotation is copy-then-truncate, as logrotate's `copytruncate`: the task keeps its
//! file descriptor (opened with `O_APPEND`, so it writes at the new end after the
//! truncation); a line written between the copy and the truncation can be lost, a
//! window of microseconds. The bytes dropped from the live file are counted in
//! `.NAME.rotated` so that a Docker task's log copier, resuming after an agent
//! restart, skips exactly what it already copied.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What the agent does about its disk (`--gc-delay`, `--gc-disk-headroom`,
/// `--disk-watch-interval`, `--task-log-max-size`, `--task-log-keep`).
#[derive(Debug, Clone, PartialEq)]
pub struct HygieneOptions {
    /// How long a finished task's sandbox is kept after its last write (Mesos: 1 week).
    pub gc_delay: Duration,
    /// The share of the disk to keep free: the delay shrinks to zero as use reaches
    /// `1 - headroom` (Mesos: 0.1).
    pub gc_disk_headroom: f64,
    /// How often the disk is checked, logs rotated and sandboxes collected.
    pub disk_watch_interval: Duration,
    /// A task's `stdout` or `stderr` larger than this is rotated; 0: never.
    pub task_log_max_size: u64,
    /// Rotated copies kept of each (`stdout.1` ... `stdout.N`); 0: the old output is
    /// dropped at each rotation.
    pub task_log_keep: u32,
}

impl Default for HygieneOptions {
    fn default() -> HygieneOptions {
        HygieneOptions {
            gc_delay: Duration::from_secs(7 * 24 * 3600),
            gc_disk_headroom: 0.1,
            disk_watch_interval: Duration::from_secs(10),
            task_log_max_size: 10 << 20,
            task_log_keep: 2,
        }
    }
}

/// A sandbox written more recently is never collected.
const MIN_IDLE: Duration = Duration::from_secs(60);

/// The files rotated in a sandbox.
const LOG_FILES: [&str; 2] = ["stdout", "stderr"];

/// How full the work dir's filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DiskUse {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Used share, 0 to 1.
    pub used: f64,
}

/// What a hygiene pass found and did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HygieneReport {
    /// `None` when the filesystem could not be asked.
    pub disk: Option<DiskUse>,
    /// The delay a finished sandbox was kept for in this pass, in seconds.
    pub effective_gc_delay_secs: f64,
    /// Sandboxes removed in this pass.
    pub sandboxes_removed: u64,
    /// Log files rotated in this pass.
    pub logs_rotated: u64,
    /// What went wrong (a file that could not be removed or rotated), if anything.
    pub errors: Vec<String>,
}

/// One pass, run on the blocking pool: `live` are the sandboxes of the tasks the agent
/// knows (rotated, never removed).
#[derive(Debug)]
pub(crate) struct HygieneJob {
    pub work_dir: PathBuf,
    pub live: HashSet<PathBuf>,
    pub options: HygieneOptions,
}

impl HygieneJob {
    pub(crate) fn run(self, now: SystemTime) -> HygieneReport {
        let mut report = HygieneReport {
            disk: disk_use(&self.work_dir).ok(),
            ..Default::default()
        };
        let delay = effective_delay(&self.options, report.disk.map_or(0.0, |d| d.used));
        report.effective_gc_delay_secs = delay.as_secs_f64();
        if self.options.task_log_max_size > 0 {
            for sandbox in &self.live {
                for name in LOG_FILES {
                    match rotate(
                        sandbox,
                        name,
                        self.options.task_log_max_size,
                        self.options.task_log_keep,
                    ) {
                        Ok(true) => report.logs_rotated += 1,
                        Ok(false) => {}
                        Err(e) => report.errors.push(format!(
                            "cannot rotate {}: {e}",
                            sandbox.join(name).display()
                        )),
                    }
                }
            }
        }
        collect(
            &self.work_dir,
            &self.live,
            self.options.gc_delay,
            delay,
            now,
            &mut report,
        );
        report
    }
}

/// The disk use of the filesystem that holds `path`.
pub fn disk_use(path: &Path) -> nix::Result<DiskUse> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let block = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * block;
    let available = stat.blocks_available() as u64 * block;
    let free = stat.blocks_free() as u64 * block;
    // As df counts: used over what non-root users could have (used + available).
    let used_bytes = total.saturating_sub(free);
    let usable = used_bytes + available;
    let used = if usable == 0 {
        0.0
    } else {
        used_bytes as f64 / usable as f64
    };
    Ok(DiskUse {
        total_bytes: total,
        available_bytes: available,
        used,
    })
}

/// How long finished sandboxes are kept at this disk use (Mesos' formula).
pub fn effective_delay(options: &HygieneOptions, used: f64) -> Duration {
    let share = (1.0 - options.gc_disk_headroom - used).clamp(0.0, 1.0);
    options.gc_delay.mul_f64(share)
}

/// Removes the sandboxes under `WORK_DIR/frameworks/*/tasks/*` that are not live and
/// were last written more than `delay` ago, then framework dirs left empty.
fn collect(
    work_dir: &Path,
    live: &HashSet<PathBuf>,
    gc_delay: Duration,
    delay: Duration,
    now: SystemTime,
    report: &mut HygieneReport,
) {
    let frameworks = work_dir.join("frameworks");
    let Ok(entries) = std::fs::read_dir(&frameworks) else {
        return;
    };
    for framework in entries.flatten() {
        let tasks_dir = framework.path().join("tasks");
        let Ok(tasks) = std::fs::read_dir(&tasks_dir) else {
            continue;
        };
        for task in tasks.flatten() {
            let sandbox = task.path();
            if live.contains(&sandbox) || !is_real_dir(&sandbox) {
                continue;
            }
            let idle = now
                .duration_since(last_write(&sandbox))
                .unwrap_or(Duration::ZERO);
            // Never a sandbox written in the last minute (or the configured delay,
            // when shorter), whatever the disk: a task launched since the live set
            // was taken may be preparing it.
            if idle < delay.max(MIN_IDLE.min(gc_delay)) {
                continue;
            }
            match std::fs::remove_dir_all(&sandbox) {
                Ok(()) => {
                    report.sandboxes_removed += 1;
                    tracing::debug!(sandbox = %sandbox.display(), idle = ?idle, "sandbox removed");
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot remove {}: {e}", sandbox.display())),
            }
        }
        // Gone only when empty (a new task may have arrived meanwhile: then it stays).
        let _ = std::fs::remove_dir(&tasks_dir);
        let _ = std::fs::remove_dir(framework.path());
    }
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// The latest modification of the sandbox dir and its direct entries (a task's end is
/// its last write to stdout/stderr or its files).
fn last_write(sandbox: &Path) -> SystemTime {
    let mtime = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let mut latest = mtime(sandbox);
    if let Ok(entries) = std::fs::read_dir(sandbox) {
        for entry in entries.flatten() {
            latest = latest.max(mtime(&entry.path()));
        }
    }
    latest
}

/// Rotates `sandbox/name` when it is larger than `max`: copies it to `name.1` (after
/// shifting `name.1`.. to `name.2`.., dropping the one past `keep`) and truncates it
/// in place. Refuses to follow symlinks (a task owns its sandbox). Returns whether it
/// rotated.
pub fn rotate(sandbox: &Path, name: &str, max: u64, keep: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = sandbox.join(name);
    let mut live = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = live.metadata()?;
    // A second name of another file (a hard link a task made) is never truncated.
    if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 || meta.len() <= max {
        return Ok(false);
    }
    let rotated = |i: u32| sandbox.join(format!("{name}.{i}"));
    if keep > 0 {
        let _ = std::fs::remove_file(rotated(keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(rotated(i), rotated(i + 1));
        }
        // A fresh file (never a task's symlink): create_new fails on anything there.
        let _ = std::fs::remove_file(rotated(1));
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(rotated(1))?;
        live.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut (&mut live).take(u64::MAX), &mut copy)?;
        copy.flush()?;
        if let Some((uid, gid)) = owner(&meta) {
            // Through the descriptor: the path may have been swapped for a link.
            let _ = std::os::unix::fs::fchown(&copy, Some(uid.as_raw()), Some(gid.as_raw()));
        }
    }
    // What the copy took, up to now; the task appends at the new end afterwards.
    let dropped = live.metadata()?.len();
    live.set_len(0)?;
    add_rotated_bytes(sandbox, name, dropped)?;
    Ok(true)
}

fn owner(meta: &std::fs::Metadata) -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    use std::os::unix::fs::MetadataExt;
    Some((
        nix::unistd::Uid::from_raw(meta.uid()),
        nix::unistd::Gid::from_raw(meta.gid()),
    ))
}

/// Removes the rotated copies of `sandbox/name` and their count (a new task with the
/// same id starts afresh).
pub fn forget_rotations(sandbox: &Path, name: &str) {
    let _ = std::fs::remove_file(rotated_bytes_path(sandbox, name));
    let Ok(entries) = std::fs::read_dir(sandbox) else {
        return;
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn rotated_bytes_path(sandbox: &Path, name: &str) -> PathBuf {
    sandbox.join(format!(".{name}.rotated"))
}

/// Bytes of `sandbox/name` dropped by rotations so far (0 when never rotated).
pub fn rotated_bytes(sandbox: &Path, name: &str) -> u64 {
    std::fs::read_to_string(rotated_bytes_path(sandbox, name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn add_rotated_bytes(sandbox: &Path, name: &str, more: u64) -> std::io::Result<()> {
    let total = rotated_bytes(sandbox, name).saturating_add(more);
    let path = rotated_bytes_path(sandbox, name);
    let tmp = sandbox.join(format!(".{name}.rotated.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    writeln!(f, "{total}")?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(work: &Path, framework: &str, task: &str) -> PathBuf {
        let dir = work
            .join("frameworks")
            .join(framework)
            .join("tasks")
            .join(task);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stdout"), b"out\n").unwrap();
        dir
    }

    #[test]
    fn the_delay_shrinks_as_the_disk_fills() {
        let options = HygieneOptions {
            gc_delay: Duration::from_secs(1000),
            gc_disk_headroom: 0.1,
            ..Default::default()
        };
        assert_eq!(effective_delay(&options, 0.0), Duration::from_secs(900));
        assert_eq!(effective_delay(&options, 0.5), Duration::from_secs(400));
        assert_eq!(effective_delay(&options, 0.9), Duration::ZERO);
        assert_eq!(effective_delay(&options, 1.0), Duration::ZERO);
    }

    #[test]
    fn finished_sandboxes_go_after_the_delay_and_live_ones_stay() {
        let work = tempfile::tempdir().unwrap();
        let old = sandbox(work.path(), "fw", "old");
        let live = sandbox(work.path(), "fw", "live");
        let other = sandbox(work.path(), "fw2", "done");
        let later = SystemTime::now() + Duration::from_secs(3600);
        let job = |delay: Duration| HygieneJob {
            work_dir: work.path().to_path_buf(),
            live: HashSet::from([live.clone()]),
            options: HygieneOptions {
                gc_delay: delay,
                gc_disk_headroom: 0.0,
                ..Default::default()
            },
        };
        // Within the delay: nothing goes. (The disk's own use shortens the delay, so
        // the delay here is far longer than an hour.)
        let report = job(Duration::from_secs(1_000_000_000)).run(later);
        assert_eq!(report.sandboxes_removed, 0, "{report:?}");
        assert!(old.exists());

        let report = job(Duration::from_secs(60)).run(later);
        assert_eq!(report.sandboxes_removed, 2, "{report:?}");
        assert!(!old.exists() && !other.exists());
        assert!(live.join("stdout").exists(), "a live task's sandbox stays");
        assert!(
            !work.path().join("frameworks/fw2").exists(),
            "an emptied framework dir goes too"
        );
        assert!(report.disk.is_some());
    }

    #[test]
    fn a_symlinked_sandbox_is_not_followed() {
        let work = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let tasks = work.path().join("frameworks/fw/tasks");
        std::fs::create_dir_all(&tasks).unwrap();
        std::os::unix::fs::symlink(outside.path(), tasks.join("evil")).unwrap();
        let report = HygieneJob {
            work_dir: work.path().to_path_buf(),
            live: HashSet::new(),
            options: HygieneOptions {
                gc_delay: Duration::ZERO,
                ..Default::default()
            },
        }
        .run(SystemTime::now() + Duration::from_secs(10));
        assert_eq!(report.sandboxes_removed, 0);
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn logs_rotate_past_their_size_keeping_n_copies() {
        let work = tempfile::tempdir().unwrap();
        let dir = sandbox(work.path(), "fw", "chatty");
        // The task's own descriptor, appending.
        let mut task_out = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("stdout"))
            .unwrap();
        let mut rotations = 0;
        for round in 0..4u8 {
            task_out.write_all(&[b'a' + round; 100]).unwrap();
            if rotate(&dir, "stdout", 50, 2).unwrap() {
                rotations += 1;
            }
        }
        assert_eq!(rotations, 4);
        assert!(
            !rotate(&dir, "stdout", 50, 2).unwrap(),
            "small: not rotated"
        );
        // The newest copy is .1; only two are kept.
        assert_eq!(std::fs::read(dir.join("stdout.1")).unwrap(), [b'd'; 100]);
        assert_eq!(std::fs::read(dir.join("stdout.2")).unwrap(), [b'c'; 100]);
        assert!(!dir.join("stdout.3").exists());
        // The task writes on at the start of the emptied file.
        task_out.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(dir.join("stdout")).unwrap(), b"after\n");
        assert_eq!(rotated_bytes(&dir, "stdout"), 4 + 400);
        assert_eq!(rotated_bytes(&dir, "stderr"), 0);
    }

    #[test]
    fn a_log_that_is_a_symlink_is_not_rotated() {
        let work = tempfile::tempdir().unwrap();
        let dir = sandbox(work.path(), "fw", "sly");
        let target = work.path().join("precious");
        std::fs::write(&target, vec![b'x'; 1000]).unwrap();
        std::fs::remove_file(dir.join("stdout")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("stdout")).unwrap();
        assert!(rotate(&dir, "stdout", 10, 1).is_err());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), 1000);
    }

    #[test]
    fn a_log_that_is_a_hard_link_is_not_truncated() {
        let work = tempfile::tempdir().unwrap();
        let dir = sandbox(work.path(), "fw", "linked");
        let target = work.path().join("precious");
        std::fs::write(&target, vec![b'x'; 1000]).unwrap();
        std::fs::remove_file(dir.join("stdout")).unwrap();
        std::fs::hard_link(&target, dir.join("stdout")).unwrap();
        assert!(!rotate(&dir, "stdout", 10, 1).unwrap());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), 1000);
        assert!(!dir.join("stdout.1").exists());
    }
}
