//! Disk isolation (issue 17): real tasks write into their sandboxes; the agent
//! measures them every 200 ms, kills the one over its `disk` with the disk reason, and
//! shows every task's usage in `/monitor/statistics`.

mod common;

use std::time::Duration;

use common::*;
use strata_proto::Resources;
use strata_proto::v1::{self, TaskState, TaskStatusReason};

const MIB: u64 = 1024 * 1024;

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

/// A task with `disk` MB that writes `write_mb` MB into its sandbox, then sleeps.
fn writer(task_id: &str, disk: u32, write_mb: u32) -> v1::TaskInfo {
    let mut task = shell_task(
        task_id,
        &format!("dd if=/dev/zero of=big bs=1M count={write_mb} 2>/dev/null; sleep 60"),
    );
    task.resources = Resources::parse(&format!("cpus:0.1;mem:32;disk:{disk}"))
        .unwrap()
        .to_proto();
    task.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(1.0),
    });
    task
}

fn agent_options(
    master: &FakeMaster,
    dir: &std::path::Path,
    enforce: bool,
) -> strata_agent::AgentOptions {
    let mut o = options(master.addr, dir);
    o.disk_isolation = strata_agent::disk::DiskIsolationOptions {
        watch_interval: Duration::from_millis(200),
        enforce,
        ..Default::default()
    };
    o
}

/// Acknowledges updates until `task_id` is in a terminal state; returns its last
/// update, and fails if another task ends meanwhile.
async fn until_ended(master: &mut FakeMaster, task_id: &str) -> v1::TaskStatus {
    loop {
        let s = master.next_update().await;
        master.ack(&s);
        let terminal = strata_proto::is_terminal(state_of(&s));
        if s.task_id == task_id && terminal {
            return s;
        }
        assert!(!terminal, "another task ended: {s:?}");
    }
}

/// Acknowledges updates until both tasks run.
async fn until_running(master: &mut FakeMaster, tasks: &[&str]) {
    let mut left: Vec<&str> = tasks.to_vec();
    while !left.is_empty() {
        let s = master.next_update().await;
        master.ack(&s);
        assert!(
            !strata_proto::is_terminal(state_of(&s)),
            "a task ended: {s:?}"
        );
        if state_of(&s) == TaskState::TaskRunning {
            left.retain(|t| *t != s.task_id);
        }
    }
}

/// Fails if a task ends within the next 300 ms.
async fn no_task_ends(master: &mut FakeMaster) {
    while let Ok(s) = tokio::time::timeout(Duration::from_millis(300), master.next_update()).await {
        master.ack(&s);
        assert!(
            !strata_proto::is_terminal(state_of(&s)),
            "a task ended: {s:?}"
        );
    }
}

/// The `statistics` of `task_id` in `/monitor/statistics` once `ready` holds of them.
async fn statistics_of(
    agent: &TestAgent,
    task_id: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = agent.get_json("/monitor/statistics").await;
        assert_eq!(status, 200, "{body}");
        let stats = body
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["task_id"] == task_id))
            .map(|e| e["statistics"].clone());
        if let Some(stats) = stats
            && ready(&stats)
        {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no statistics of {task_id} as expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn task_state(agent: &TestAgent, task_id: &str) -> String {
    let (_, state) = agent.get_json("/state").await;
    state["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == task_id))
        .map(|t| t["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_task_over_its_disk_is_killed_and_its_neighbour_runs_on() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(agent_options(&master, dir.path(), true)).await;
    master.next_register().await;

    master.run_task(framework(), writer("small", 10, 1));
    master.run_task(framework(), writer("big", 10, 20));
    let failed = until_ended(&mut master, "big").await;
    assert_eq!(state_of(&failed), TaskState::TaskFailed, "{failed:?}");
    assert_eq!(
        reason_of(&failed),
        TaskStatusReason::ReasonContainerLimitationDisk
    );
    // Over its limit, by what it had written when measured (dd may still be writing).
    let used: f64 = failed
        .message
        .strip_prefix("disk limit exceeded: the task uses ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no usage in {:?}", failed.message));
    assert!(used > 10.0 && used <= 21.0, "{}", failed.message);
    assert!(
        failed.message.contains(" MB of its 10 MB (sandbox)"),
        "{}",
        failed.message
    );

    // The other task, under its limit, runs on, and its usage shows.
    let stats = statistics_of(&agent, "small", |s| {
        s["disk_used_bytes"].as_u64() >= Some(MIB)
    })
    .await;
    assert_eq!(stats["disk_limit_bytes"], 10 * MIB, "{stats}");
    assert!(stats["disk_used_bytes"].as_u64() < Some(2 * MIB), "{stats}");
    assert_eq!(task_state(&agent, "small").await, "TASK_RUNNING");
    // Still running several measurements later, and the big one was killed once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(task_state(&agent, "small").await, "TASK_RUNNING");
    no_task_ends(&mut master).await;

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn with_enforcement_off_a_task_over_its_disk_runs_on_and_its_usage_shows() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(agent_options(&master, dir.path(), false)).await;
    master.next_register().await;

    master.run_task(framework(), writer("big", 10, 20));
    // A task without `disk`: no limit, measured all the same.
    master.run_task(
        framework(),
        shell_task("unlimited", "echo hello > greeting; sleep 60"),
    );
    until_running(&mut master, &["big", "unlimited"]).await;
    let stats = statistics_of(&agent, "big", |s| {
        s["disk_used_bytes"].as_u64() >= Some(20 * MIB)
    })
    .await;
    assert_eq!(stats["disk_limit_bytes"], 10 * MIB, "{stats}");
    let unlimited = statistics_of(&agent, "unlimited", |s| {
        s["disk_used_bytes"].as_u64() > Some(0)
    })
    .await;
    assert!(
        unlimited.get("disk_limit_bytes").is_none(),
        "no disk, no limit: {unlimited}"
    );

    // Measured again and again, never killed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(task_state(&agent, "big").await, "TASK_RUNNING");
    no_task_ends(&mut master).await;

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn with_disk_isolation_off_nothing_is_measured() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut options = agent_options(&master, dir.path(), true);
    options.disk_isolation.watch_interval = Duration::ZERO;
    let agent = TestAgent::start(options).await;
    master.next_register().await;

    master.run_task(framework(), writer("big", 10, 20));
    until_running(&mut master, &["big"]).await;
    eventually("the task to write its 20 MB", || {
        std::fs::metadata(agent.sandbox("big").join("big")).is_ok_and(|m| m.len() >= 20 * MIB)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(task_state(&agent, "big").await, "TASK_RUNNING");
    let (_, body) = agent.get_json("/monitor/statistics").await;
    for entry in body.as_array().cloned().unwrap_or_default() {
        assert!(
            entry["statistics"].get("disk_used_bytes").is_none(),
            "{entry}"
        );
    }

    agent.stop().await;
    master.stop().await;
}
