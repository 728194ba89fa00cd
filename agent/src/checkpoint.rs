//! What the agent keeps in its work dir so that a restart can pick up where it left:
//!
//! - `WORK_DIR/agent_id`: the id the master gave, so a restarted agent re-registers
//!   under the same id.
//! - `WORK_DIR/checkpoint.json`: the tasks and their unacknowledged status updates.
//!   Ids and states are plain JSON for people; the protobuf messages ride along
//!   hex-encoded so nothing of them is lost.
//!
//! Both are replaced atomically (temp file, rename). The checkpoint is written ahead:
//! before the agent starts a container or sends a status update, the state that led
//! to it is in the file ([`Writer::write_ahead`], no fsync: what a killed agent wrote
//! is in the page cache and survives it), so a restarted agent never forgets a task it
//! launched, nor re-opens one whose end it reported. At most every
//! `checkpoint_interval` (500 ms) the file is rewritten with an fsync
//! ([`Writer::write_durable`]) for the machine's own crashes (after which process
//! tasks are gone anyway). A restarted agent recovers its tasks from it (see
//! [`crate::containerizer::Containerizer::recover`]). A per-task append-only log would
//! scale better than rewriting one file, and can replace it behind these functions.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containerizer::{ContainerHandle, ContainerId};

/// Version of the checkpoint format.
pub const VERSION: u32 = 1;

const AGENT_ID_FILE: &str = "agent_id";
const CHECKPOINT_FILE: &str = "checkpoint.json";

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

/// The checkpoint file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
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

/// The checkpoint, if there is one.
pub fn read(work_dir: &Path) -> Result<Option<State>, CheckpointError> {
    let path = work_dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path, source }),
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if state.version != VERSION {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!("unknown version {}", state.version),
        });
    }
    Ok(Some(state))
}

fn write_state(work_dir: &Path, state: &State, sync: Flush) -> Result<(), CheckpointError> {
    let path = work_dir.join(CHECKPOINT_FILE);
    let bytes = serde_json::to_vec(state).map_err(|e| CheckpointError::Write {
        path: path.clone(),
        source: e.into(),
    })?;
    write_atomic(&path, &bytes, sync)
}

/// Whether a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    Yes,
    No,
}

/// The one writer of a work dir's checkpoint, shared by the agent's loop (writes
/// ahead, on its own thread) and the blocking pool (durable rewrites). Every state
/// carries the sequence number it was taken at; a state older than the one on disk is
/// never written, so a slow durable rewrite cannot undo a newer write ahead.
#[derive(Debug)]
pub struct Writer {
    work_dir: PathBuf,
    /// Sequence number of the state on disk.
    written: std::sync::Mutex<u64>,
}

impl Writer {
    pub fn new(work_dir: PathBuf) -> Writer {
        Writer {
            work_dir,
            written: std::sync::Mutex::new(0),
        }
    }

    /// Writes `state` (taken at `seq`) without an fsync, unless a newer one is on disk.
    pub fn write_ahead(&self, seq: u64, state: &State) -> Result<bool, CheckpointError> {
        self.write_if_newer(seq, state, Flush::No)
    }

    /// Writes `state` (taken at `seq`) with an fsync, unless a newer one is on disk.
    pub fn write_durable(&self, seq: u64, state: &State) -> Result<bool, CheckpointError> {
        self.write_if_newer(seq, state, Flush::Yes)
    }

    fn write_if_newer(
        &self,
        seq: u64,
        state: &State,
        sync: Flush,
    ) -> Result<bool, CheckpointError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written > seq || (*written == seq && sync == Flush::No) {
            return Ok(false);
        }
        write_state(&self.work_dir, state, sync)?;
        *written = seq;
        Ok(true)
    }
}

/// Moves an unreadable checkpoint aside so the agent can start afresh and a person
/// can still look at it.
pub fn set_aside(work_dir: &Path) -> Option<PathBuf> {
    let from = work_dir.join(CHECKPOINT_FILE);
    let to = work_dir.join(format!("{CHECKPOINT_FILE}.corrupt"));
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
    let err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    if sync == Flush::Yes {
        f.sync_data().map_err(err)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Hex of a protobuf message.
pub fn encode<M: prost::Message>(msg: &M) -> String {
    use std::fmt::Write as _;
    let bytes = msg.encode_to_vec();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
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

    #[test]
    fn agent_id_and_state_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_agent_id(dir.path()).unwrap(), None);
        write_agent_id(dir.path(), "agent-7").unwrap();
        assert_eq!(read_agent_id(dir.path()).unwrap(), Some("agent-7".into()));

        assert_eq!(read(dir.path()).unwrap(), None);
        let state = State {
            version: VERSION,
            agent_id: "agent-7".into(),
            tasks: vec![],
            updates: vec![],
        };
        write_state(dir.path(), &state, Flush::Yes).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(state));

        std::fs::write(dir.path().join(CHECKPOINT_FILE), "{not json").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(CheckpointError::Corrupt { .. })
        ));
        assert!(set_aside(dir.path()).is_some());
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_stale_state_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::new(dir.path().to_path_buf());
        let state = |agent_id: &str| State {
            version: VERSION,
            agent_id: agent_id.into(),
            tasks: vec![],
            updates: vec![],
        };
        assert!(writer.write_ahead(2, &state("two")).unwrap());
        // A durable rewrite of an older state, finishing late, is dropped.
        assert!(!writer.write_durable(1, &state("one")).unwrap());
        assert_eq!(read(dir.path()).unwrap().unwrap().agent_id, "two");
        // The same state made durable is written again; ahead of it, it is not.
        assert!(writer.write_durable(2, &state("two")).unwrap());
        assert!(!writer.write_ahead(2, &state("two")).unwrap());
        assert!(writer.write_ahead(3, &state("three")).unwrap());
        assert_eq!(read(dir.path()).unwrap().unwrap().agent_id, "three");
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
