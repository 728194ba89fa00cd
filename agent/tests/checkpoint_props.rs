//! Property tests of the agent's checkpoint reader: whatever a crash, a full disk or a
//! person left in the work dir (`checkpoint.json`, `checkpoint.log`, `agent_id`), a
//! restarted agent reads a state or an error, never a panic; and a log cut short at any
//! byte (the agent killed mid-write) reads as the log up to its last whole line.
//!
//! Default: 256 cases per property (proptest's default); `PROPTEST_CASES=N` raises it.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_agent::checkpoint::{self, Log, State, TaskChange, TaskRecord, UpdateRecord};
use strata_agent::containerizer::ContainerId;
use strata_proto::v1;

const SNAPSHOT: &str = "checkpoint.json";
const LOG: &str = "checkpoint.log";

fn record(task_id: &str, state: &str) -> TaskRecord {
    let task = v1::TaskInfo {
        task_id: task_id.into(),
        name: "t".into(),
        ..Default::default()
    };
    TaskRecord {
        framework_id: "fw".into(),
        task_id: task_id.into(),
        state: state.into(),
        sandbox: PathBuf::from("/sandbox").join(task_id),
        container_id: ContainerId(format!("c-{task_id}")),
        container: None,
        framework_info: checkpoint::encode(&v1::FrameworkInfo::default()),
        task_info: checkpoint::encode(&task),
        kill: None,
    }
}

fn update(task_id: &str, uuid: &str) -> UpdateRecord {
    let status = v1::TaskStatus {
        task_id: task_id.into(),
        state: v1::TaskState::TaskFinished as i32,
        uuid: uuid.into(),
        ..Default::default()
    };
    UpdateRecord {
        framework_id: "fw".into(),
        task_id: task_id.into(),
        uuid: uuid.into(),
        state: "TASK_FINISHED".into(),
        status: checkpoint::encode(&status),
    }
}

/// A work dir as a running agent leaves it: a snapshot and a log of a few changes.
fn valid_work_dir(dir: &Path) {
    let mut log = Log::open(dir.to_path_buf());
    log.compact(State {
        version: checkpoint::VERSION,
        generation: 0,
        agent_id: "agent-1".into(),
        tasks: vec![record("a", "TASK_RUNNING"), record("b", "TASK_STAGING")],
        updates: vec![update("a", "u0")],
    })
    .unwrap();
    log.append(&[
        TaskChange {
            framework_id: "fw".into(),
            task_id: "c".into(),
            task: Some(record("c", "TASK_RUNNING")),
            updates: vec![],
        },
        TaskChange {
            framework_id: "fw".into(),
            task_id: "a".into(),
            task: Some(record("a", "TASK_FINISHED")),
            updates: vec![update("a", "u1")],
        },
    ])
    .unwrap();
    log.append(&[TaskChange {
        framework_id: "fw".into(),
        task_id: "b".into(),
        task: None,
        updates: vec![],
    }])
    .unwrap();
}

/// What the agent does with a state it read: decode the protobuf riding along.
fn use_state(state: &State) {
    for t in &state.tasks {
        if let Ok(info) = checkpoint::decode::<v1::TaskInfo>(&t.task_info) {
            let _ = strata_proto::validate::task_id(&info.task_id);
            let _ = strata_proto::Resources::try_from_proto(&info.resources);
        }
        let _ = checkpoint::decode::<v1::FrameworkInfo>(&t.framework_info);
    }
    for u in &state.updates {
        let _ = checkpoint::decode::<v1::TaskStatus>(&u.status);
    }
}

/// Reads the work dir: a state, nothing, or an error that can be shown.
fn read(dir: &Path) -> Result<Option<State>, String> {
    match checkpoint::read(dir) {
        Ok(state) => {
            if let Some(s) = &state {
                use_state(s);
            }
            Ok(state)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes of a file: absent, arbitrary, or JSON-shaped.
fn file() -> impl Strategy<Value = Option<Vec<u8>>> {
    let json_line = prop_oneof![
        Just(r#"{"line":"header","version":2,"generation":0}"#.to_string()),
        (any::<u32>(), any::<u64>()).prop_map(|(v, g)| format!(
            r#"{{"line":"header","version":{v},"generation":{g}}}"#
        )),
        "[a-z0-9]{0,6}".prop_map(|hex| format!(
            r#"{{"line":"task","framework_id":"fw","task_id":"x","task":{{"framework_id":"fw","task_id":"x","state":"S","sandbox":"/s","container_id":"c","container":null,"framework_info":"{hex}","task_info":"{hex}"}},"updates":[{{"framework_id":"fw","task_id":"x","uuid":"u","state":"S","status":"{hex}"}}]}}"#
        )),
        (any::<u32>(), any::<u64>()).prop_map(|(v, g)| format!(
            r#"{{"version":{v},"generation":{g},"agent_id":"a","tasks":[],"updates":[]}}"#
        )),
        Just(r#"{"line":"task"}"#.to_string()),
        Just("null".to_string()),
        Just(String::new()),
    ];
    prop::option::of(prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(json_line, 0..4).prop_map(|lines| {
            let mut s = lines.join("\n");
            s.push('\n');
            s.into_bytes()
        }),
    ])
}

/// Byte edits: (where, byte, overwrite / insert / delete).
fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)
}

fn edit(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, kind) in edits {
        if bytes.is_empty() {
            bytes.push(*byte);
            continue;
        }
        let i = at.index(bytes.len());
        match kind {
            0 => bytes[i] = *byte,
            1 => bytes.insert(i, *byte),
            _ => {
                bytes.remove(i);
            }
        }
    }
}

proptest! {
    #[test]
    fn any_files_read_as_a_state_or_an_error(
        snapshot in file(),
        log in file(),
        agent_id in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(b) = &snapshot {
            std::fs::write(dir.path().join(SNAPSHOT), b).unwrap();
        }
        if let Some(b) = &log {
            std::fs::write(dir.path().join(LOG), b).unwrap();
        }
        if let Some(b) = &agent_id {
            std::fs::write(dir.path().join("agent_id"), b).unwrap();
        }
        let _ = read(dir.path());
        let _ = checkpoint::read_agent_id(dir.path()).map_err(|e| e.to_string());
        // The next run's writer opens whatever is there.
        let _ = Log::open(dir.path().to_path_buf());
    }

    #[test]
    fn edited_checkpoints_read_as_a_state_or_an_error(
        which in 0u8..3,
        snapshot_edits in edits(),
        log_edits in edits(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        valid_work_dir(dir.path());
        for (file, edits, on) in [
            (SNAPSHOT, &snapshot_edits, which != 1),
            (LOG, &log_edits, which != 0),
        ] {
            if on {
                let path = dir.path().join(file);
                let mut bytes = std::fs::read(&path).unwrap();
                edit(&mut bytes, edits);
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let _ = read(dir.path());
    }

    #[test]
    fn a_log_cut_at_any_byte_reads_as_its_whole_lines(cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        valid_work_dir(dir.path());
        let path = dir.path().join(LOG);
        let full = std::fs::read(&path).unwrap();
        let at = cut.index(full.len() + 1);
        std::fs::write(&path, &full[..at]).unwrap();
        let torn = read(dir.path());
        prop_assert!(torn.is_ok(), "cut at {}: {:?}", at, torn);
        let whole = full[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        std::fs::write(&path, &full[..whole]).unwrap();
        prop_assert_eq!(torn, read(dir.path()));
    }

    #[test]
    fn any_hex_decodes_to_a_message_or_an_error(hex in prop_oneof![
        "[0-9a-f]{0,80}",
        "\\PC{0,20}",
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        }),
    ]) {
        let _ = checkpoint::decode::<v1::TaskInfo>(&hex);
        let _ = checkpoint::decode::<v1::TaskStatus>(&hex);
        let _ = checkpoint::decode::<v1::FrameworkInfo>(&hex);
    }
}
