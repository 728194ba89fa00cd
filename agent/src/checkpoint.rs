//! What the agent keeps in its work dir so that a restart can pick up where it left:
//!
//! - `WORK_DIR/agent_id`: the id the master gave, so a restarted agent re-registers
//!   under the same id.
//! - `WORK_DIR/checkpoint.json`: a snapshot of the tasks and their unacknowledged
//!   status updates, with its generation.
//! - `WORK_DIR/checkpoint.log`: what changed since that snapshot, one JSON line per
//!   changed task (its whole record and its whole update queue: the last line of a
//!   task wins), behind a header line naming the snapshot's generation.
//!
//! Ids and states are plain JSON for people; the protobuf messages ride along
//! hex-encoded so nothing of them is lost.
//!
//! ```text
//!  change ─▶ Log::append (one write of the batch's lines, no fsync) ─▶ checkpoint.log
//!                 │ log > max(4 MiB, 2 x snapshot)
//!                 ▼
//!            Log::compact: checkpoint.json (generation g+1, fsync, rename),
//!                          then a fresh checkpoint.log headed g+1 (rename)
//!  every checkpoint_interval: SyncJob (fdatasync of the log) on the blocking pool
//! ```
//!
//! A write costs what changed, not what the agent runs: a batch appends the lines of
//! its changed tasks, and the log is folded into a new snapshot once it is twice the
//! snapshot's size (so compaction is paid for by the appends before it). The log is
//! written ahead: before the agent starts a container or sends a status update, the
//! state that led to it is appended (no fsync: what a killed agent wrote is in the
//! page cache and survives it), so a restarted agent never forgets a task it
//! launched, nor re-opens one whose end it reported. The log is made durable with an
//! fsync at most every `checkpoint_interval` for the machine's own crashes (after
//! which process tasks are gone anyway).
//!
//! Reading: the snapshot, then the log if its header names the snapshot's generation
//! (a log of an older generation was folded into the snapshot already: compaction was
//! killed between its two renames). A last line without its newline is torn (the
//! agent was killed mid-write) and ignored; a complete line that does not parse is
//! corruption, refused with its line number. A version-1 checkpoint (one file, no
//! log) is read as it is and rewritten in this format by the first write.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containerizer::{ContainerHandle, ContainerId};

/// Version of the checkpoint format this agent writes.
pub const VERSION: u32 = 2;
/// The oldest version this agent reads (and upgrades on its first write).
const OLDEST_VERSION: u32 = 1;

const AGENT_ID_FILE: &str = "agent_id";
const SNAPSHOT_FILE: &str = "checkpoint.json";
const LOG_FILE: &str = "checkpoint.log";
/// The log is folded into a snapshot once it is larger than this and than twice the
/// snapshot.
const MIN_COMPACTION_BYTES: u64 = 4 << 20;

/// Why the work dir could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
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

/// What the agent checkpointed: the snapshot with the log applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The snapshot's generation: the log that continues it carries the same one.
    /// Version-1 checkpoints have none (0).
    #[serde(default)]
    pub generation: u64,
    pub agent_id: String,
    pub tasks: Vec<TaskRecord>,
    /// Every unacknowledged update, in queue order per task.
    pub updates: Vec<UpdateRecord>,
}

/// One task the agent has not forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: String,
    pub task_id: String,
    /// The latest state reported, e.g. `TASK_RUNNING`.
    pub state: String,
    pub sandbox: PathBuf,
    pub container_id: ContainerId,
    /// Set once the launch succeeded.
    pub container: Option<ContainerHandle>,
    /// Hex-encoded `strata.v1.FrameworkInfo`.
    pub framework_info: String,
    /// Hex-encoded `strata.v1.TaskInfo`.
    pub task_info: String,
    /// Set while a kill is in progress: a restarted agent kills the task again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<KillRecord>,
}

/// A kill in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRecord {
    pub grace_seconds: f64,
    /// `framework`, `framework_shutdown`, `agent_shutdown` or `health_check`.
    pub cause: String,
    /// What the health check found (cause `health_check`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One unacknowledged status update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub framework_id: String,
    pub task_id: String,
    pub uuid: String,
    pub state: String,
    /// Hex-encoded `strata.v1.TaskStatus`.
    pub status: String,
}

/// One task's whole checkpointed state after a change: a line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskChange {
    pub framework_id: String,
    pub task_id: String,
    /// The task's record; `None` once the agent forgot the task.
    pub task: Option<TaskRecord>,
    /// All its unacknowledged updates, in queue order.
    pub updates: Vec<UpdateRecord>,
}

/// A line of `checkpoint.log`, as read.
#[derive(Debug, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum LogLine {
    /// The first line: which snapshot the log continues.
    Header {
        version: u32,
        generation: u64,
    },
    Task(Box<TaskChange>),
}

/// A line of `checkpoint.log`, as written (the same shape as [`LogLine`]).
#[derive(Debug, Serialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum LogLineRef<'a> {
    Header { version: u32, generation: u64 },
    Task(&'a TaskChange),
}

/// The persisted agent id, if there is one.
pub fn read_agent_id(work_dir: &Path) -> Result<Option<String>, CheckpointError> {
    let path = work_dir.join(AGENT_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            Ok((!id.is_empty()).then_some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Read { path, source }),
    }
}

pub fn write_agent_id(work_dir: &Path, id: &str) -> Result<(), CheckpointError> {
    write_atomic(
        &work_dir.join(AGENT_ID_FILE),
        format!("{id}\n").as_bytes(),
        Flush::Yes,
    )
}

/// The checkpoint (snapshot and log), if there is one.
pub fn read(work_dir: &Path) -> Result<Option<State>, CheckpointError> {
    let path = work_dir.join(SNAPSHOT_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    let mut state: State =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    check_version(&path, state.version)?;
    if state.version >= 2 {
        apply_log(work_dir, &mut state)?;
    }
    Ok(Some(state))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn check_version(path: &Path, version: u32) -> Result<(), CheckpointError> {
    if (OLDEST_VERSION..=VERSION).contains(&version) {
        return Ok(());
    }
    Err(CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "checkpoint format version {version}; this agent reads versions {OLDEST_VERSION} to {VERSION} (was it written by a newer agent?)"
        ),
    })
}

/// Applies the log to its snapshot: each task line replaces that task's record and
/// update queue.
fn apply_log(work_dir: &Path, state: &mut State) -> Result<(), CheckpointError> {
    let path = work_dir.join(LOG_FILE);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(());
    };
    let corrupt = |line: usize, reason: String| CheckpointError::Corrupt {
        path: path.clone(),
        reason: format!("line {line}: {reason}"),
    };
    let mut lines = bytes.split_inclusive(|b| *b == b'\n');
    let Some(first) = lines.next().filter(|l| l.ends_with(b"\n")) else {
        // Empty, or a header cut short: it never got a task line.
        return Ok(());
    };
    match serde_json::from_slice(first).map_err(|e| corrupt(1, e.to_string()))? {
        LogLine::Header {
            version,
            generation,
        } => {
            check_version(&path, version)?;
            if generation != state.generation {
                // Folded into the snapshot already (compaction stopped between its
                // two renames).
                return Ok(());
            }
        }
        LogLine::Task(_) => return Err(corrupt(1, "no header".into())),
    }
    type Key = (String, String);
    let mut tasks: BTreeMap<Key, TaskRecord> = std::mem::take(&mut state.tasks)
        .into_iter()
        .map(|t| ((t.framework_id.clone(), t.task_id.clone()), t))
        .collect();
    let mut updates: BTreeMap<Key, Vec<UpdateRecord>> = BTreeMap::new();
    for u in std::mem::take(&mut state.updates) {
        updates
            .entry((u.framework_id.clone(), u.task_id.clone()))
            .or_default()
            .push(u);
    }
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        if !line.ends_with(b"\n") {
            tracing::warn!(path = %path.display(), line = number, "ignoring the checkpoint log's torn last line (the agent stopped while writing it)");
            break;
        }
        let change = match serde_json::from_slice(line) {
            Ok(LogLine::Task(change)) => change,
            Ok(LogLine::Header { .. }) => return Err(corrupt(number, "a second header".into())),
            Err(e) => return Err(corrupt(number, e.to_string())),
        };
        let change = *change;
        let key = (change.framework_id, change.task_id);
        match change.task {
            Some(task) => tasks.insert(key.clone(), task),
            None => tasks.remove(&key),
        };
        if change.updates.is_empty() {
            updates.remove(&key);
        } else {
            updates.insert(key, change.updates);
        }
    }
    state.tasks = tasks.into_values().collect();
    state.updates = updates.into_values().flatten().collect();
    Ok(())
}

/// The highest generation in the work dir (snapshot or log), 0 when there is none.
fn generation_on_disk(work_dir: &Path) -> u64 {
    #[derive(Deserialize)]
    struct Generation {
        #[serde(default)]
        generation: u64,
    }
    let snapshot = std::fs::read(work_dir.join(SNAPSHOT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Generation>(&b).ok())
        .map_or(0, |g| g.generation);
    let log = std::fs::read(work_dir.join(LOG_FILE))
        .ok()
        .and_then(|b| {
            let first = b.split(|c| *c == b'\n').next()?.to_vec();
            match serde_json::from_slice(&first).ok()? {
                LogLine::Header { generation, .. } => Some(generation),
                LogLine::Task(_) => None,
            }
        })
        .unwrap_or(0);
    snapshot.max(log)
}

/// Whether a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    Yes,
    No,
}

/// The writer of a work dir's checkpoint, owned by the agent's loop. Its first write
/// is a compaction, which folds what a previous run left into this run's first
/// snapshot.
#[derive(Debug)]
pub struct Log {
    work_dir: PathBuf,
    /// The open log, appended to; `None` until a compaction opens one (first write,
    /// or after a write that failed half-way).
    file: Option<File>,
    /// Generation of the current snapshot and log.
    generation: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
    /// The directory's entries changed (renames) since the last sync.
    dir_unsynced: bool,
}

impl Log {
    pub fn open(work_dir: PathBuf) -> Log {
        let generation = generation_on_disk(&work_dir);
        Log {
            work_dir,
            file: None,
            generation,
            log_bytes: 0,
            snapshot_bytes: 0,
            dir_unsynced: false,
        }
    }

    /// Whether the next write should be a snapshot: no log is open, or it outgrew
    /// its snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.file.is_none() || self.log_bytes > MIN_COMPACTION_BYTES.max(2 * self.snapshot_bytes)
    }

    /// Appends the changed tasks' lines in one write. On failure the log is cut
    /// back to where it was (or, if that fails too, the next write is a snapshot).
    pub fn append(&mut self, changes: &[TaskChange]) -> Result<(), CheckpointError> {
        let path = self.work_dir.join(LOG_FILE);
        let err = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        let Some(file) = self.file.as_mut() else {
            return Err(err(std::io::Error::other("no log is open")));
        };
        let mut buf = Vec::with_capacity(changes.len() * 1024);
        for change in changes {
            serde_json::to_writer(&mut buf, &LogLineRef::Task(change))
                .map_err(|e| err(e.into()))?;
            buf.push(b'\n');
        }
        if let Err(e) = file.write_all(&buf) {
            if file.set_len(self.log_bytes).is_err() {
                self.file = None;
            }
            return Err(err(e));
        }
        self.log_bytes += buf.len() as u64;
        Ok(())
    }

    /// Writes `state` as a new snapshot (fsync, rename) and starts a new log after it.
    pub fn compact(&mut self, mut state: State) -> Result<(), CheckpointError> {
        // Bumped first: whatever happens below, no log of an older snapshot is ever
        // applied to a newer one.
        self.generation += 1;
        self.file = None;
        state.version = VERSION;
        state.generation = self.generation;
        let snapshot = self.work_dir.join(SNAPSHOT_FILE);
        let bytes = serde_json::to_vec(&state).map_err(|e| CheckpointError::Write {
            path: snapshot.clone(),
            source: e.into(),
        })?;
        write_atomic(&snapshot, &bytes, Flush::Yes)?;
        self.dir_unsynced = true;
        let mut header = serde_json::to_vec(&LogLineRef::Header {
            version: VERSION,
            generation: self.generation,
        })
        .map_err(|e| CheckpointError::Write {
            path: snapshot.clone(),
            source: e.into(),
        })?;
        header.push(b'\n');
        let log = self.work_dir.join(LOG_FILE);
        write_atomic(&log, &header, Flush::No)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .map_err(|source| CheckpointError::Write {
                path: log.clone(),
                source,
            })?;
        self.file = Some(file);
        self.log_bytes = header.len() as u64;
        self.snapshot_bytes = bytes.len() as u64;
        Ok(())
    }

    /// What makes the writes so far durable, to run on the blocking pool.
    pub fn sync_job(&mut self) -> SyncJob {
        let file = self.file.as_ref().and_then(|f| f.try_clone().ok());
        let dir = std::mem::take(&mut self.dir_unsynced).then(|| self.work_dir.clone());
        SyncJob {
            log: self.work_dir.join(LOG_FILE),
            file,
            dir,
        }
    }
}

/// An fsync of the log (and of the work dir after a compaction's renames).
#[derive(Debug)]
pub struct SyncJob {
    log: PathBuf,
    file: Option<File>,
    dir: Option<PathBuf>,
}

impl SyncJob {
    pub fn run(self) -> Result<(), CheckpointError> {
        if let Some(file) = &self.file {
            file.sync_data().map_err(|source| CheckpointError::Write {
                path: self.log.clone(),
                source,
            })?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| CheckpointError::Write {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Moves an unreadable checkpoint (snapshot and log) aside so the agent can start
/// afresh and a person can still look at it.
pub fn set_aside(work_dir: &Path) -> Option<PathBuf> {
    let _ = std::fs::rename(
        work_dir.join(LOG_FILE),
        work_dir.join(format!("{LOG_FILE}.corrupt")),
    );
    let from = work_dir.join(SNAPSHOT_FILE);
    let to = work_dir.join(format!("{SNAPSHOT_FILE}.corrupt"));
    std::fs::rename(&from, &to).ok().map(|()| to)
}

/// Checks that the agent can create and write its work dir.
pub fn ensure_writable(work_dir: &Path) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: work_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(work_dir).map_err(err)?;
    let probe = work_dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

fn write_atomic(path: &Path, bytes: &[u8], sync: Flush) -> Result<(), CheckpointError> {
    replace_file(path, bytes, sync == Flush::Yes).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `bytes` at once: a temporary file beside it (0600, the
/// agent's only), flushed to disk when `sync`, renamed over it. The agent's
/// checkpoint and its ledger of volumes ([`crate::volumes::write`]) are written so.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    // The agent's only: a checkpoint holds the tasks' environments (secrets), and task
    // users may pass through the work dir to their sandboxes.
    let mut f = {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f
    };
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Hex of a protobuf message.
pub fn encode<M: prost::Message>(msg: &M) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = msg.encode_to_vec();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A protobuf message from its hex.
pub fn decode<M: prost::Message + Default>(hex: &str) -> Result<M, String> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or("invalid hex")?;
    M::decode(bytes.as_slice()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1;

    fn state(agent_id: &str, tasks: &[&str]) -> State {
        State {
            version: VERSION,
            generation: 0,
            agent_id: agent_id.into(),
            tasks: tasks.iter().map(|t| record(t, "TASK_RUNNING")).collect(),
            updates: vec![],
        }
    }

    fn record(task_id: &str, state: &str) -> TaskRecord {
        TaskRecord {
            framework_id: "fw".into(),
            task_id: task_id.into(),
            state: state.into(),
            sandbox: PathBuf::from("/sandbox").join(task_id),
            container_id: ContainerId::random(),
            container: None,
            framework_info: String::new(),
            task_info: String::new(),
            kill: None,
        }
    }

    fn update(task_id: &str, uuid: &str) -> UpdateRecord {
        UpdateRecord {
            framework_id: "fw".into(),
            task_id: task_id.into(),
            uuid: uuid.into(),
            state: "TASK_FINISHED".into(),
            status: String::new(),
        }
    }

    fn change(task_id: &str, task: Option<TaskRecord>, updates: Vec<UpdateRecord>) -> TaskChange {
        TaskChange {
            framework_id: "fw".into(),
            task_id: task_id.into(),
            task,
            updates,
        }
    }

    fn task_ids(state: &State) -> Vec<(&str, &str)> {
        state
            .tasks
            .iter()
            .map(|t| (t.task_id.as_str(), t.state.as_str()))
            .collect()
    }

    #[test]
    fn agent_id_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_agent_id(dir.path()).unwrap(), None);
        write_agent_id(dir.path(), "agent-7").unwrap();
        assert_eq!(read_agent_id(dir.path()).unwrap(), Some("agent-7".into()));
    }

    #[test]
    fn the_log_replays_over_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut log = Log::open(dir.path().to_path_buf());
        assert!(log.wants_compaction(), "a new run starts with a snapshot");
        log.compact(state("agent-7", &["a", "b"])).unwrap();
        assert!(!log.wants_compaction());
        log.append(&[
            change("c", Some(record("c", "TASK_STAGING")), vec![]),
            change(
                "a",
                Some(record("a", "TASK_FINISHED")),
                vec![update("a", "u1")],
            ),
        ])
        .unwrap();
        log.append(&[change("b", None, vec![])]).unwrap();
        log.sync_job().run().unwrap();

        let read_back = read(dir.path()).unwrap().unwrap();
        assert_eq!(read_back.agent_id, "agent-7");
        assert_eq!(
            task_ids(&read_back),
            [("a", "TASK_FINISHED"), ("c", "TASK_STAGING")]
        );
        assert_eq!(read_back.updates, [update("a", "u1")]);

        // The acknowledgement empties the queue; the next run's first snapshot holds
        // what the log said.
        log.append(&[change("a", Some(record("a", "TASK_FINISHED")), vec![])])
            .unwrap();
        assert!(read(dir.path()).unwrap().unwrap().updates.is_empty());
        let before = read(dir.path()).unwrap().unwrap();
        let mut next_run = Log::open(dir.path().to_path_buf());
        next_run.compact(before.clone()).unwrap();
        let after = read(dir.path()).unwrap().unwrap();
        assert_eq!(task_ids(&after), task_ids(&before));
        assert!(after.generation > before.generation);
    }

    #[test]
    fn an_append_costs_what_changed_not_what_the_agent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().to_path_buf());
        let many: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        log.compact(state("agent", &names)).unwrap();
        let size = || std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        let before = size();
        log.append(&[change("t1", Some(record("t1", "TASK_KILLING")), vec![])])
            .unwrap();
        let line = size() - before;
        assert!(line < 1024, "one change appended {line} bytes");
        assert_eq!(read(dir.path()).unwrap().unwrap().tasks.len(), 5000);
    }

    #[test]
    fn the_log_is_folded_into_a_snapshot_once_it_outgrows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().to_path_buf());
        log.compact(state("agent", &["a"])).unwrap();
        let mut appended = 0u64;
        while !log.wants_compaction() {
            log.append(&[change("a", Some(record("a", "TASK_RUNNING")), vec![])])
                .unwrap();
            appended += 1;
        }
        assert!(appended > 1000, "compaction after {appended} appends");
        log.compact(read(dir.path()).unwrap().unwrap()).unwrap();
        assert!(std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() < 100);
        assert_eq!(
            task_ids(&read(dir.path()).unwrap().unwrap()),
            [("a", "TASK_RUNNING")]
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_complete_bad_line_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().to_path_buf());
        log.compact(state("agent", &["a"])).unwrap();
        log.append(&[change("b", Some(record("b", "TASK_RUNNING")), vec![])])
            .unwrap();
        let path = dir.path().join(LOG_FILE);
        let good = std::fs::read(&path).unwrap();

        // Killed mid-write: the last line has no newline.
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"line":"task","framework_id":"fw","#);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(task_ids(&read(dir.path()).unwrap().unwrap()).len(), 2);

        // A whole line that does not parse is not a torn write: refused, with where.
        let mut bad = good.clone();
        bad.extend_from_slice(b"{\"line\":\"from_the_future\"}\n");
        std::fs::write(&path, &bad).unwrap();
        match read(dir.path()) {
            Err(CheckpointError::Corrupt { reason, .. }) => {
                assert!(reason.starts_with("line 3:"), "{reason}")
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Set aside, the agent starts afresh.
        assert!(set_aside(dir.path()).is_some());
        assert_eq!(read(dir.path()).unwrap(), None);
        assert!(dir.path().join("checkpoint.log.corrupt").exists());
    }

    #[test]
    fn a_log_older_than_its_snapshot_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().to_path_buf());
        log.compact(state("agent", &["a"])).unwrap();
        log.append(&[change("a", None, vec![])]).unwrap();
        let old_log = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        // A compaction that wrote its snapshot and stopped before its new log.
        log.compact(state("agent", &["b"])).unwrap();
        std::fs::write(dir.path().join(LOG_FILE), old_log).unwrap();
        assert_eq!(
            task_ids(&read(dir.path()).unwrap().unwrap()),
            [("b", "TASK_RUNNING")]
        );
        // And the next run's generation is past both.
        let mut next = Log::open(dir.path().to_path_buf());
        next.compact(state("agent", &[])).unwrap();
        assert!(read(dir.path()).unwrap().unwrap().generation > 2);
    }

    #[test]
    fn versions_older_are_read_and_newer_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Version 1: one file, no generation, no log.
        let v1 = serde_json::json!({
            "version": 1,
            "agent_id": "agent-1",
            "tasks": [serde_json::to_value(record("a", "TASK_RUNNING")).unwrap()],
            "updates": [],
        });
        std::fs::write(dir.path().join(SNAPSHOT_FILE), v1.to_string()).unwrap();
        let state = read(dir.path()).unwrap().unwrap();
        assert_eq!((state.version, state.generation), (1, 0));
        assert_eq!(task_ids(&state), [("a", "TASK_RUNNING")]);

        let v9 = serde_json::json!({"version": 9, "agent_id": "x", "tasks": [], "updates": []});
        std::fs::write(dir.path().join(SNAPSHOT_FILE), v9.to_string()).unwrap();
        match read(dir.path()) {
            Err(CheckpointError::Corrupt { reason, .. }) => {
                assert!(reason.contains("version 9"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::write(dir.path().join(SNAPSHOT_FILE), "{not json").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[test]
    fn protobuf_hex_roundtrip() {
        let status = v1::TaskStatus {
            task_id: "t".into(),
            uuid: "u".into(),
            exit_status: Some(3),
            ..Default::default()
        };
        assert_eq!(decode::<v1::TaskStatus>(&encode(&status)).unwrap(), status);
        assert!(decode::<v1::TaskStatus>("zz").is_err());
        assert!(decode::<v1::TaskStatus>("abc").is_err());
    }
}
