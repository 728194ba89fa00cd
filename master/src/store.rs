//! The registry store: what must survive a master restart (admitted and unreachable
//! agents, frameworks) goes through the [`Store`] trait.
//!
//! The embedded default is [`FileStore`], a file-backed store in the master's work dir:
//!
//! ```text
//!   WORK_DIR/registry.lock   held (flock) while a master uses the dir
//!   WORK_DIR/registry.json   snapshot: {"version":1,"seq":N,"registry":{...}}
//!   WORK_DIR/registry.log    JSON lines {"seq":N+1,"op":{...}} appended, fsynced per batch
//! ```
//!
//! **Format version.** The snapshot's `version` ([`REGISTRY_VERSION`]) says how to read
//! the snapshot and the log after it. A new registry gets a snapshot at once (empty,
//! `seq` 0), and every compaction writes one, so every registry this master wrote
//! carries its version. A registry without one (a snapshot without `version`, or only
//! a log, as masters before versioning left it when they stopped before their first
//! compaction) is read as version 1: a missing snapshot is written at open, a snapshot
//! without `version` gains it at the next compaction. A registry of a newer version is
//! refused at start ([`StoreError::NewerVersion`]), never guessed at. A master that
//! changes the format bumps the version and compacts at open, before it appends
//! anything in the new format, so that an older master finds the newer version in the
//! snapshot rather than log lines it cannot read.
//!
//! Group commit: the driver [`Store::append`]s every operation of a batch of inputs and
//! then calls [`Store::sync`] once, and holds back every effect that followed an
//! operation until that `sync` returns (see `crate::driver`). `append` only buffers
//! the line; `sync` writes the buffered lines with one `write` and one `fdatasync`, so
//! a storm of N registrations costs one fsync per batch instead of N. `apply` is
//! `append` + `sync`. An operation that would not change the registry (an agent
//! re-admitted with the hostname the registry already holds, a framework
//! re-subscribing with the FrameworkInfo it already holds) is not written at all: the
//! registry it recovers to is the same, so there is nothing to make durable (it is
//! durable at the latest by the `sync` that covers the operation that made it true).
//!
//! Every [`COMPACT_EVERY`] operations, or as many as the registry has entries if that
//! is more (so that compacting stays linear in the operations), and on `flush` at
//! shutdown, the registry is written to `registry.json.tmp`, fsynced, renamed over
//! `registry.json` and the directory fsynced; then the log is emptied. A crash between
//! the rename and the truncation is harmless: log lines whose `seq` the snapshot
//! already covers are skipped on load.
//!
//! A torn last line (no trailing newline: the master died mid-write, before the `sync`
//! that would have made it durable, so nothing acted on it) is dropped with a warning,
//! even if what is there parses. A complete line that does not parse is not torn: it
//! was written whole, by a newer master or by something that damaged the file, and
//! dropping it could lose what a framework or agent was told was durable. It is an
//! error at start ([`StoreError::UnreadableLogLine`]) naming the file and line, as is
//! an unreadable snapshot.
//!
//! [`MemoryStore`] keeps nothing across restarts, for tests and benchmarks.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::{Registry, RegistryOp};

/// Where the registry is kept. Owned by the driver task; every call is synchronous.
/// `apply` and `sync` make what they cover durable before they return `Ok`.
pub trait Store: Send {
    /// The registry as persisted so far.
    fn load(&mut self) -> Result<Registry, StoreError>;
    /// Persists one operation durably.
    fn apply(&mut self, op: &RegistryOp) -> Result<(), StoreError>;
    /// Records one operation, after those appended before it; it is durable once the
    /// next [`Store::sync`] returns `Ok`. Returns whether a sync is needed before
    /// acting on it (false: it is durable already). The default persists it at once.
    fn append(&mut self, op: &RegistryOp) -> Result<bool, StoreError> {
        self.apply(op)?;
        Ok(false)
    }
    /// Makes every operation appended so far durable (group commit: one fsync for
    /// all of them). The default has nothing to do, `append` being durable.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Makes everything compact and durable (called at shutdown).
    fn flush(&mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

/// Whether applying `op` to `registry` changes it. An operation that does not is not
/// worth a write: the registry recovers to the same either way.
pub fn changes_registry(registry: &Registry, op: &RegistryOp) -> bool {
    match op {
        RegistryOp::AdmitAgent {
            id,
            hostname,
            principal,
        } => {
            registry.agents.get(id) != Some(hostname)
                || registry.unreachable.contains_key(id)
                || (!principal.is_empty() && registry.agent_principals.get(id) != Some(principal))
        }
        RegistryOp::MarkUnreachable { id, unix_time } => {
            registry.unreachable.get(id) != Some(unix_time)
        }
        RegistryOp::RemoveAgent { id } => {
            registry.agents.contains_key(id)
                || registry.unreachable.contains_key(id)
                || registry.maintenance.contains_key(id)
                || registry.agent_principals.contains_key(id)
                || registry.agent_resources.contains_key(id)
        }
        RegistryOp::AddFramework { id, info } => registry.frameworks.get(id) != Some(info),
        RegistryOp::CheckpointResources { id, resources } => registry
            .agent_resources
            .get(id)
            .map_or(!resources.is_empty(), |r| r != resources),
        RegistryOp::MarkAgentGone { id } => {
            !registry.gone.contains(id)
                || registry.agents.contains_key(id)
                || registry.unreachable.contains_key(id)
                || registry.maintenance.contains_key(id)
                || registry.agent_resources.contains_key(id)
        }
        RegistryOp::RemoveFramework { id } => {
            registry.frameworks.contains_key(id)
                || !registry.removed_frameworks.contains(id)
                || registry.lost_tasks.iter().any(|t| &t.framework_id == id)
        }
        RegistryOp::SetWeight { role, weight } => registry.weights.get(role) != Some(weight),
        RegistryOp::SetMaintenance { id, maintenance } => {
            registry.maintenance.get(id) != maintenance.as_ref()
        }
        RegistryOp::MarkTaskLost {
            framework_id,
            task_id,
            agent_id,
        } => !registry.lost_tasks.iter().any(|t| {
            &t.framework_id == framework_id && &t.task_id == task_id && &t.agent_id == agent_id
        }),
        // Every put is a new version.
        RegistryOp::PutObject { .. } => true,
        RegistryOp::RemoveObject { kind, name } => registry
            .objects
            .contains_key(&crate::core::registry::object_key(*kind, name)),
        RegistryOp::ForgetLostTask {
            framework_id,
            task_id,
        } => registry
            .lost_tasks
            .iter()
            .any(|t| &t.framework_id == framework_id && &t.task_id == task_id),
    }
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry I/O on {path} failed (check that the work dir exists and is writable)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "work dir {path} is in use by another strata-master (its lock is held); stop it or choose another --work-dir"
    )]
    Locked { path: PathBuf },
    #[error(
        "registry log {path} is corrupt at line {line}: {reason}; restore it from a backup or move the work dir away to start empty"
    )]
    CorruptLog {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "registry log {path} line {line} cannot be read: {reason}. The line is complete, so it is not a torn write: if a newer strata-master wrote it, run that one on this work dir; otherwise the file is damaged: restore it from a backup, or move the work dir away to start empty"
    )]
    UnreadableLogLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "registry {path} is format version {version}, written by a newer strata-master; this strata-master reads version {supported} and older: run the newer strata-master on this work dir (or move the work dir away to start empty)"
    )]
    NewerVersion {
        path: PathBuf,
        version: u64,
        supported: u32,
    },
    #[error(
        "registry snapshot {path} is corrupt: {reason}; restore it from a backup or move the work dir away to start empty"
    )]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("cannot encode registry operation: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A store that keeps the registry in memory only (nothing survives a restart).
#[derive(Debug, Default)]
pub struct MemoryStore {
    registry: Registry,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Registry, StoreError> {
        Ok(self.registry.clone())
    }

    fn apply(&mut self, op: &RegistryOp) -> Result<(), StoreError> {
        self.registry.apply(op);
        Ok(())
    }
}

/// Operations appended to the log before it is compacted into the snapshot.
pub const COMPACT_EVERY: u64 = 1000;

const LOCK_FILE: &str = "registry.lock";
const SNAPSHOT_FILE: &str = "registry.json";
const SNAPSHOT_TMP: &str = "registry.json.tmp";
const LOG_FILE: &str = "registry.log";

/// The registry format this master writes, and the newest it reads (see the module
/// docs). Version 1: the snapshot `{"version","seq","registry"}` and log lines
/// `{"seq","op"}`. Version 2: the same, and configs and secrets (`objects` in the
/// registry, `PutObject` / `RemoveObject` in the log: issue 16). Version 3: agents'
/// dynamic reservations and persistent volumes (`agent_resources`,
/// `CheckpointResources`: issue 17). An older registry is read as it is and compacted
/// at open, so that it says version 3 before any line an older master could not read
/// is appended.
pub const REGISTRY_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// Absent in a snapshot written before versioning: version 1.
    #[serde(default = "version_1")]
    version: u32,
    /// The last log sequence number folded into `registry`.
    seq: u64,
    registry: Registry,
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    seq: u64,
    op: RegistryOp,
}

/// The file-backed registry (see the module docs for the layout).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Held for the store's lifetime: the OS lock that keeps a second master out.
    _lock: File,
    /// `registry.log`, opened for appending.
    log: File,
    /// The registry as of the last applied op (what the next snapshot will hold).
    registry: Registry,
    /// The sequence number of the last op applied.
    seq: u64,
    /// Ops written to the log since the last compaction.
    since_compaction: u64,
    /// Lines appended and not yet written (see [`Store::sync`]).
    pending: Vec<u8>,
    /// How many ops `pending` holds.
    pending_ops: u64,
}

impl FileStore {
    /// Opens (creating if needed) the registry in `dir`, takes its lock and reads it.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: dir });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }

        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let current = snapshot
            .as_ref()
            .is_some_and(|(_, _, version)| *version == u64::from(REGISTRY_VERSION));
        let (registry, snapshot_seq) = snapshot
            .map(|(registry, seq, _)| (registry, seq))
            .unwrap_or_default();
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let mut store = FileStore {
            dir,
            _lock: lock,
            log: log.try_clone().map_err(io(&log_path))?,
            registry,
            seq: snapshot_seq,
            since_compaction: 0,
            pending: Vec::new(),
            pending_ops: 0,
        };
        store.replay(&mut log, &log_path)?;
        if !current {
            // A new registry (or one a master before versioning left without a
            // snapshot, or an older format): written now, so that it carries its
            // format version.
            store.compact()?;
        }
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn replay(&mut self, log: &mut File, path: &Path) -> Result<(), StoreError> {
        log.seek(SeekFrom::Start(0)).map_err(io(path))?;
        let mut reader = BufReader::new(&*log);
        let mut offset: u64 = 0;
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                // The last line, torn: its write never completed, so neither did the
                // sync that would have let anything act on it.
                tracing::warn!(
                    path = %path.display(),
                    line = line_no,
                    bytes = n,
                    "dropping a torn last line of the registry log (the master stopped mid-write)"
                );
                log.set_len(offset).map_err(io(path))?;
                log.sync_all().map_err(io(path))?;
                break;
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim();
            if !text.is_empty() {
                let entry = serde_json::from_str::<LogLine>(text).map_err(|e| {
                    StoreError::UnreadableLogLine {
                        path: path.to_path_buf(),
                        line: line_no,
                        reason: e.to_string(),
                    }
                })?;
                if entry.seq <= self.seq {
                    // Already folded into the snapshot (a crash after compaction
                    // but before the log was emptied), or out of order.
                    if self.since_compaction > 0 {
                        return Err(StoreError::CorruptLog {
                            path: path.to_path_buf(),
                            line: line_no,
                            reason: format!(
                                "sequence number {} does not follow {}",
                                entry.seq, self.seq
                            ),
                        });
                    }
                } else {
                    self.registry.apply(&entry.op);
                    self.seq = entry.seq;
                    self.since_compaction += 1;
                }
            }
            offset += n as u64;
        }
        Ok(())
    }

    /// Writes the registry to `registry.json` atomically and empties the log (after
    /// writing what is appended: the snapshot covers it).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let dest = self.dir.join(SNAPSHOT_FILE);
        let snapshot = Snapshot {
            version: REGISTRY_VERSION,
            seq: self.seq,
            registry: self.registry.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&snapshot)?;
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        let log_path = self.dir.join(LOG_FILE);
        self.log.set_len(0).map_err(io(&log_path))?;
        self.log.sync_all().map_err(io(&log_path))?;
        self.since_compaction = 0;
        Ok(())
    }
}

impl FileStore {
    /// Writes the appended lines to the log and fsyncs it, if there are any.
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let log_path = self.dir.join(LOG_FILE);
        self.log.write_all(&self.pending).map_err(io(&log_path))?;
        self.log.sync_data().map_err(io(&log_path))?;
        self.since_compaction += self.pending_ops;
        self.pending.clear();
        self.pending_ops = 0;
        Ok(())
    }

    /// Ops after which the log is folded into the snapshot: [`COMPACT_EVERY`], or the
    /// registry's size when larger, so that a snapshot's cost (proportional to the
    /// registry) is spread over at least as many ops.
    fn compact_after(&self) -> u64 {
        let size = self.registry.agents.len()
            + self.registry.unreachable.len()
            + self.registry.frameworks.len();
        COMPACT_EVERY.max(size as u64)
    }
}

impl Store for FileStore {
    fn load(&mut self) -> Result<Registry, StoreError> {
        Ok(self.registry.clone())
    }

    fn apply(&mut self, op: &RegistryOp) -> Result<(), StoreError> {
        self.append(op)?;
        self.sync()
    }

    fn append(&mut self, op: &RegistryOp) -> Result<bool, StoreError> {
        if !changes_registry(&self.registry, op) {
            // Nothing to write. It is durable once what is pending is (the registry
            // in memory is the durable one plus the pending ops).
            return Ok(!self.pending.is_empty());
        }
        let entry = LogLine {
            seq: self.seq + 1,
            op: op.clone(),
        };
        let line = serde_json::to_vec(&entry)?;
        self.pending.extend_from_slice(&line);
        self.pending.push(b'\n');
        self.pending_ops += 1;
        self.seq = entry.seq;
        self.registry.apply(op);
        Ok(true)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        if self.since_compaction >= self.compact_after() {
            self.compact()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        if self.since_compaction > 0 {
            self.compact()
        } else {
            Ok(())
        }
    }
}

/// The version of a registry that does not say.
fn version_1<T: From<u8>>() -> T {
    T::from(1)
}

/// The snapshot's registry and the last sequence number it covers; `None` when there
/// is no snapshot yet.
/// The snapshot's registry, sequence number and format version.
fn read_snapshot(path: &Path) -> Result<Option<(Registry, u64, u64)>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let corrupt = |e: serde_json::Error| StoreError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // The version first: a newer layout must be refused for its version, not for
    // whatever in it this master cannot parse.
    #[derive(Deserialize)]
    struct Version {
        #[serde(default = "version_1")]
        version: u64,
    }
    let Version { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if version > u64::from(REGISTRY_VERSION) {
        return Err(StoreError::NewerVersion {
            path: path.to_path_buf(),
            version,
            supported: REGISTRY_VERSION,
        });
    }
    if version == 0 {
        return Err(StoreError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: "format version 0 does not exist".to_string(),
        });
    }
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Ok(Some((snapshot.registry, snapshot.seq, version)))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(id: &str) -> RegistryOp {
        RegistryOp::AdmitAgent {
            id: id.into(),
            hostname: format!("{id}.example"),
            principal: String::new(),
        }
    }

    #[test]
    fn ops_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            assert!(s.load().unwrap().agents.is_empty());
            s.apply(&admit("a1")).unwrap();
            s.apply(&RegistryOp::AddFramework {
                id: "f1".into(),
                info: vec![1, 2, 3],
            })
            .unwrap();
            s.apply(&RegistryOp::MarkUnreachable {
                id: "a1".into(),
                unix_time: 12.5,
            })
            .unwrap();
        }
        let mut s = FileStore::open(dir.path()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.agents.get("a1").map(String::as_str), Some("a1.example"));
        assert_eq!(r.unreachable.get("a1"), Some(&12.5));
        assert_eq!(r.frameworks.get("f1"), Some(&vec![1, 2, 3]));
    }

    #[test]
    fn tasks_told_lost_survive_reopen_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let lost = |fw: &str, task: &str| RegistryOp::MarkTaskLost {
            framework_id: fw.into(),
            task_id: task.into(),
            agent_id: "a1".into(),
        };
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            for op in [lost("f1", "t1"), lost("f1", "t2"), lost("f2", "t1")] {
                s.apply(&op).unwrap();
            }
            // The same again changes nothing and is not written.
            assert!(!changes_registry(&s.load().unwrap(), &lost("f1", "t1")));
            s.apply(&RegistryOp::ForgetLostTask {
                framework_id: "f1".into(),
                task_id: "t2".into(),
            })
            .unwrap();
            s.apply(&RegistryOp::RemoveFramework { id: "f2".into() })
                .unwrap();
        }
        let mut s = FileStore::open(dir.path()).unwrap();
        let r = s.load().unwrap();
        let kept: Vec<_> = r
            .lost_tasks
            .iter()
            .map(|t| {
                (
                    t.framework_id.as_str(),
                    t.task_id.as_str(),
                    t.agent_id.as_str(),
                )
            })
            .collect();
        assert_eq!(kept, [("f1", "t1", "a1")]);
    }

    #[test]
    fn a_second_store_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = FileStore::open(dir.path()).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn compaction_keeps_the_registry_and_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            for i in 0..(COMPACT_EVERY + 5) {
                s.apply(&admit(&format!("a{i}"))).unwrap();
            }
            s.apply(&RegistryOp::RemoveAgent { id: "a0".into() })
                .unwrap();
            // The log holds only what came after the compaction.
            let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
            assert_eq!(log.lines().count(), 6);
            s.flush().unwrap();
            let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
            assert!(log.is_empty());
        }
        let mut s = FileStore::open(dir.path()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.agents.len() as u64, COMPACT_EVERY + 4);
        assert!(!r.agents.contains_key("a0"));
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
    }

    #[test]
    fn a_crash_between_snapshot_and_log_truncation_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log_copy;
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
            s.apply(&RegistryOp::RemoveAgent { id: "a1".into() })
                .unwrap();
            log_copy = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
            s.flush().unwrap();
        }
        // Put the already-compacted lines back, as if the truncation never happened.
        std::fs::write(dir.path().join(LOG_FILE), &log_copy).unwrap();
        let mut s = FileStore::open(dir.path()).unwrap();
        assert!(s.load().unwrap().agents.is_empty());
        s.apply(&admit("a2")).unwrap();
        drop(s);
        let mut s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().agents.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":2,"op":{"AdmitAg"#).unwrap();
        drop(f);
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().agents.len(), 1);
            // Appending after the repair yields a readable log.
            s.apply(&admit("a2")).unwrap();
        }
        let mut s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().agents.len(), 2);
    }

    #[test]
    fn corruption_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
            s.apply(&admit("a2")).unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(1, "garbage");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        match &err {
            StoreError::UnreadableLogLine { line, .. } => assert_eq!(*line, 2),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("registry.log"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_dropped_even_when_it_parses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
        }
        // The whole line made it, its newline did not: the write (and so the sync the
        // master waited for before acting on it) never completed.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":2,"op":{"AdmitAgent":{"id":"a2","hostname":"a2.example"}}}"#)
            .unwrap();
        drop(f);
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            let agents = s.load().unwrap().agents;
            assert_eq!(agents.keys().collect::<Vec<_>>(), ["a1"]);
            s.apply(&admit("a3")).unwrap();
        }
        let r = FileStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(r.agents.keys().collect::<Vec<_>>(), ["a1", "a3"]);
    }

    #[test]
    fn a_complete_last_line_that_does_not_parse_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
        }
        // As a newer master with an operation this one does not know would write it.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"op\":{\"SetQuota\":{\"role\":\"web\"}}}\n")
            .unwrap();
        drop(f);
        let before = std::fs::read(&path).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        match &err {
            StoreError::UnreadableLogLine { line, .. } => assert_eq!(*line, 2),
            other => panic!("unexpected {other}"),
        }
        let message = err.to_string();
        for wanted in [
            path.display().to_string().as_str(),
            "line 2",
            "SetQuota",
            "not a torn write",
            "newer strata-master",
            "restore it from a backup",
        ] {
            assert!(message.contains(wanted), "{wanted:?} in {message}");
        }
        // Nothing was truncated: the newer master can still read it.
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_new_registry_carries_its_format_version_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let _s = FileStore::open(dir.path()).unwrap();
        let snapshot: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap())
                .unwrap();
        assert_eq!(snapshot["version"], REGISTRY_VERSION);
        assert_eq!(snapshot["seq"], 0);
    }

    /// A registry a version-1 master wrote (issue 16 made version 2, issue 17 version
    /// 3) is read as it is and compacted at open, so that it says the current version
    /// before anything a version-1 master could not read is appended.
    #[test]
    fn a_version_1_registry_is_read_and_rewritten_as_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(
            &snapshot,
            r#"{"version": 1, "seq": 1, "registry": {"agents": {"a1": "h1"}, "unreachable": {}, "frameworks": {}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(LOG_FILE),
            "{\"seq\":2,\"op\":{\"SetWeight\":{\"role\":\"web\",\"weight\":2.0}}}\n",
        )
        .unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        let registry = store.load().unwrap();
        assert_eq!(registry.agents.get("a1").map(String::as_str), Some("h1"));
        assert_eq!(registry.weights.get("web"), Some(&2.0));
        assert!(registry.objects.is_empty());
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
        assert_eq!(written["version"], REGISTRY_VERSION);
        assert_eq!(written["seq"], 2);
    }

    #[test]
    fn a_registry_of_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        // A layout this master cannot parse: refused for its version, not its shape.
        std::fs::write(&snapshot, r#"{"version": 4, "registry": {"shards": []}}"#).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerVersion {
                    version: 4,
                    supported: 3,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        for wanted in [
            snapshot.display().to_string().as_str(),
            "format version 4",
            "reads version 3 and older",
            "run the newer strata-master",
        ] {
            assert!(message.contains(wanted), "{wanted:?} in {message}");
        }
        // Left as it was.
        assert!(
            std::fs::read_to_string(&snapshot)
                .unwrap()
                .contains("shards")
        );
    }

    #[test]
    fn a_log_left_without_a_snapshot_by_an_older_master_is_read_as_version_1() {
        let dir = tempfile::tempdir().unwrap();
        // What a master before versioning left when it died before its first compaction.
        std::fs::write(
            dir.path().join(LOG_FILE),
            concat!(
                r#"{"seq":1,"op":{"AdmitAgent":{"id":"a1","hostname":"a1.example"}}}"#,
                "\n",
                r#"{"seq":2,"op":{"SetWeight":{"role":"web","weight":3.0}}}"#,
                "\n",
            ),
        )
        .unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            let r = s.load().unwrap();
            assert_eq!(r.agents.get("a1").map(String::as_str), Some("a1.example"));
            assert_eq!(r.weights.get("web"), Some(&3.0));
            // Upgraded: a versioned snapshot holds it all now.
            let snapshot: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap())
                    .unwrap();
            assert_eq!(snapshot["version"], REGISTRY_VERSION);
            assert_eq!(snapshot["seq"], 2);
            s.apply(&admit("a2")).unwrap();
        }
        let r = FileStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(r.agents.len(), 2);
        assert_eq!(r.weights.get("web"), Some(&3.0));
    }

    #[test]
    fn a_snapshot_without_a_version_is_read_as_version_1_and_upgraded_on_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.apply(&admit("a1")).unwrap();
            s.flush().unwrap();
        }
        let mut snapshot: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        snapshot.as_object_mut().unwrap().remove("version");
        std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().agents.len(), 1);
            s.apply(&admit("a2")).unwrap();
            s.flush().unwrap();
        }
        let snapshot: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(snapshot["version"], REGISTRY_VERSION);
        assert_eq!(
            FileStore::open(dir.path())
                .unwrap()
                .load()
                .unwrap()
                .agents
                .len(),
            2
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), "{not json").unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::CorruptSnapshot { .. }), "{err}");
    }

    #[test]
    fn ops_that_change_nothing_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::open(dir.path()).unwrap();
        s.apply(&admit("a1")).unwrap();
        let info = RegistryOp::AddFramework {
            id: "f1".into(),
            info: vec![1],
        };
        s.apply(&info).unwrap();
        // Re-admitted with the same hostname, re-subscribed with the same info.
        s.apply(&admit("a1")).unwrap();
        s.apply(&info).unwrap();
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
        // What changes something is written: a new hostname, back from unreachable.
        s.apply(&RegistryOp::AdmitAgent {
            id: "a1".into(),
            hostname: "moved".into(),
            principal: String::new(),
        })
        .unwrap();
        s.apply(&RegistryOp::MarkUnreachable {
            id: "a1".into(),
            unix_time: 1.0,
        })
        .unwrap();
        s.apply(&RegistryOp::AdmitAgent {
            id: "a1".into(),
            hostname: "moved".into(),
            principal: String::new(),
        })
        .unwrap();
        // A removal is remembered once (the id is refused after a restart too).
        s.apply(&RegistryOp::RemoveFramework { id: "f9".into() })
            .unwrap();
        s.apply(&RegistryOp::RemoveFramework { id: "f9".into() })
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(log.lines().count(), 6, "{log}");
        drop(s);
        let r = FileStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(r.agents.get("a1").map(String::as_str), Some("moved"));
        assert!(r.unreachable.is_empty());
        assert_eq!(r.frameworks.len(), 1);
        assert_eq!(r.removed_frameworks, vec!["f9".to_string()]);
    }

    #[test]
    fn appended_ops_are_written_by_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            for i in 0..10 {
                assert!(s.append(&admit(&format!("a{i}"))).unwrap(), "needs a sync");
            }
            // Changes nothing, but what makes it true is not durable yet.
            assert!(s.append(&admit("a0")).unwrap());
            let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
            assert!(log.is_empty(), "appended ops are not written before sync");
            s.sync().unwrap();
            let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
            assert_eq!(log.lines().count(), 10);
            // Changes nothing and nothing is pending: durable already.
            assert!(!s.append(&admit("a0")).unwrap());
            // Appended and never synced: as if the master died before the fsync.
            s.append(&admit("lost")).unwrap();
        }
        let r = FileStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(r.agents.len(), 10);
        assert!(!r.agents.contains_key("lost"));
    }

    #[test]
    fn compaction_waits_for_as_many_ops_as_the_registry_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::open(dir.path()).unwrap();
        let n = COMPACT_EVERY + 500;
        for i in 0..n {
            s.append(&admit(&format!("a{i}"))).unwrap();
        }
        s.sync().unwrap();
        // One sync of n ops into a registry of n entries: compacted.
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert!(log.is_empty());
        // The next COMPACT_EVERY ops do not compact a registry larger than that.
        for i in 0..COMPACT_EVERY {
            s.apply(&RegistryOp::MarkUnreachable {
                id: format!("a{i}"),
                unix_time: 1.0,
            })
            .unwrap();
        }
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(log.lines().count() as u64, COMPACT_EVERY);
        drop(s);
        let r = FileStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(r.agents.len() as u64, n);
        assert_eq!(r.unreachable.len() as u64, COMPACT_EVERY);
    }

    #[test]
    fn memory_store_folds_ops() {
        let mut s = MemoryStore::new();
        s.apply(&admit("a1")).unwrap();
        assert_eq!(s.load().unwrap().agents.len(), 1);
    }
}
