//! Health checks (HTTP, TCP, COMMAND) of real processes run by the agent, against a
//! fake master: what a framework sees in its status updates, and what happens to the
//! task. Needs busybox (for `busybox httpd`), at /bin/busybox: fails, never skips,
//! without it.

mod common;

use std::time::Duration;

use common::*;
use strata_proto::v1::{self, TaskState, TaskStatusReason, health_check};
use strata_proto::{Resources, state_name};

const BUSYBOX: &str = "/bin/busybox";

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A quick check: first at once, then every 0.2 s, each bounded by 1 s.
fn check(kind: health_check::Type) -> v1::HealthCheck {
    v1::HealthCheck {
        r#type: kind as i32,
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(1.0),
        ..Default::default()
    }
}

/// A shell task that owns `port` (exported to it as PORT0).
fn task_with_port(task_id: &str, command: &str, port: u16) -> v1::TaskInfo {
    let mut task = shell_task(task_id, command);
    task.resources = Resources::parse(&format!("cpus:0.1;mem:32;ports:[{port}-{port}]"))
        .expect("resources")
        .to_proto();
    task
}

/// Acknowledges updates of `task_id` until a health update (TASK_RUNNING with
/// `healthy` set); fails on anything terminal.
async fn next_health_update(master: &mut FakeMaster, task_id: &str) -> v1::TaskStatus {
    loop {
        let s = master.next_update().await;
        assert_eq!(s.task_id, task_id, "unexpected update {s:?}");
        master.ack(&s);
        assert!(
            !strata_proto::is_terminal(state_of(&s)),
            "task ended in {}: {}",
            state_name(state_of(&s)),
            s.message
        );
        if reason_of(&s) == TaskStatusReason::ReasonTaskHealthCheckStatusUpdated {
            assert_eq!(state_of(&s), TaskState::TaskRunning, "{s:?}");
            assert!(
                s.healthy.is_some(),
                "a health update says the health: {s:?}"
            );
            return s;
        }
        assert_eq!(
            s.healthy, None,
            "only health updates carry `healthy`: {s:?}"
        );
    }
}

/// The task's entry in the agent's `/state`.
async fn task_state(agent: &TestAgent, task_id: &str) -> serde_json::Value {
    let (status, state) = agent.get_json("/state").await;
    assert_eq!(status, 200);
    state["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == task_id).cloned())
        .unwrap_or_else(|| panic!("task {task_id} not in /state: {state}"))
}

fn require_busybox() {
    assert!(
        std::path::Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (scripts/docker-setup.sh does)"
    );
}

#[tokio::test]
async fn an_http_check_of_a_serving_task_reports_it_healthy() {
    require_busybox();
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let port = free_port();
    let mut task = task_with_port(
        "web-1",
        &format!("echo ok > index.html; exec {BUSYBOX} httpd -f -p 127.0.0.1:$PORT0 -h ."),
        port,
    );
    let mut hc = check(health_check::Type::Http);
    hc.port = u32::from(port);
    // The server needs a moment to listen: refusals until then do not count.
    hc.grace_period_seconds = Some(10.0);
    task.health_check = Some(hc);
    master.run_task(framework(), task);

    let update = next_health_update(&mut master, "web-1").await;
    assert_eq!(update.healthy, Some(true), "{update:?}");
    assert_eq!(
        update.message,
        format!("health check passed: HTTP GET http://127.0.0.1:{port}/ returned 200")
    );
    assert_eq!(update.source, v1::TaskStatusSource::SourceAgent as i32);
    assert!(!update.uuid.is_empty(), "health updates are acknowledged");
    let view = task_state(&agent, "web-1").await;
    assert_eq!(view["state"], "TASK_RUNNING");
    assert_eq!(view["healthy"], true);

    // Healthy it stays: no more health updates; a kill by the framework is an ordinary one.
    master.kill_task("web-1", Some(1.0));
    let rest = master.follow("web-1").await;
    assert_eq!(names(&rest), ["TASK_KILLED"], "{rest:?}");
    assert_eq!(reason_of(&rest[0]), TaskStatusReason::ReasonTaskKilled);
    assert_eq!(rest[0].healthy, None);

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_failing_tcp_check_kills_the_task_after_consecutive_failures() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let port = free_port();
    let mut task = task_with_port("tcp-1", "echo $$ > pid; exec sleep 600", port);
    let mut hc = check(health_check::Type::Tcp);
    hc.port = u32::from(port);
    hc.consecutive_failures = Some(2);
    task.health_check = Some(hc);
    task.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(1.0),
    });
    master.run_task(framework(), task);
    let pid = read_pid(&agent.sandbox("tcp-1").join("pid")).await;

    let updates = master.follow("tcp-1").await;
    assert_eq!(
        names(&updates),
        [
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_RUNNING",
            "TASK_KILLED"
        ],
        "{updates:?}"
    );
    let unhealthy = &updates[2];
    assert_eq!(unhealthy.healthy, Some(false));
    assert_eq!(
        reason_of(unhealthy),
        TaskStatusReason::ReasonTaskHealthCheckStatusUpdated
    );
    let refused = format!("health check failed: TCP connection to 127.0.0.1:{port} failed: ");
    assert!(
        unhealthy.message.starts_with(&refused),
        "{}",
        unhealthy.message
    );

    let killed = &updates[3];
    assert_eq!(killed.healthy, Some(false));
    assert_eq!(
        reason_of(killed),
        TaskStatusReason::ReasonTaskHealthCheckFailed
    );
    let why = format!(
        "health check failed 2 times in a row: TCP connection to 127.0.0.1:{port} failed: "
    );
    assert!(killed.message.starts_with(&why), "{}", killed.message);
    assert!(
        killed.message.contains("SIGTERM"),
        "the kill policy's SIGTERM ended it: {}",
        killed.message
    );
    assert!(!process_alive(pid), "the task's process {pid} is gone");

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_command_check_follows_the_task_without_killing_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let mut task = shell_task("cmd-1", "exec sleep 600");
    let mut hc = check(health_check::Type::Command);
    // Runs in the sandbox, with the task's environment, as the task's user (the
    // sandbox's owner: nobody, the agent's default, as the task names no user).
    hc.command =
        r#"test "$STRATA_TASK_ID" = cmd-1 && test "$(id -u)" = "$(stat -c %u .)" && test ! -e flag"#
            .into();
    hc.consecutive_failures = Some(0);
    task.health_check = Some(hc);
    master.run_task(framework(), task);

    let healthy = next_health_update(&mut master, "cmd-1").await;
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(agent.sandbox("cmd-1")).unwrap().uid();
        assert_eq!(owner, 65534, "the sandbox is nobody's, and so is the check");
    }
    assert!(
        healthy
            .message
            .starts_with("health check passed: command `"),
        "{}",
        healthy.message
    );

    let flag = agent.sandbox("cmd-1").join("flag");
    std::fs::write(&flag, b"down").unwrap();
    let unhealthy = next_health_update(&mut master, "cmd-1").await;
    assert_eq!(unhealthy.healthy, Some(false), "{unhealthy:?}");
    assert!(
        unhealthy
            .message
            .starts_with("health check failed: command `")
            && unhealthy.message.ends_with("` exited with status 1"),
        "{}",
        unhealthy.message
    );

    // consecutive_failures 0: never killed, and a health that does not change is not
    // reported again.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), master.next_update()).await;
    assert!(quiet.is_err(), "no update while unhealthy: {quiet:?}");
    let view = task_state(&agent, "cmd-1").await;
    assert_eq!(view["state"], "TASK_RUNNING");
    assert_eq!(view["healthy"], false);

    std::fs::remove_file(&flag).unwrap();
    let again = next_health_update(&mut master, "cmd-1").await;
    assert_eq!(again.healthy, Some(true), "{again:?}");

    master.kill_task("cmd-1", Some(1.0));
    let rest = master.follow("cmd-1").await;
    assert_eq!(names(&rest), ["TASK_KILLED"], "{rest:?}");
    assert_eq!(reason_of(&rest[0]), TaskStatusReason::ReasonTaskKilled);

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_bad_health_check_is_a_task_error() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let mut task = shell_task("bad-1", "sleep 600");
    task.health_check = Some(check(health_check::Type::Http)); // port 0
    master.run_task(framework(), task);
    let updates = master.follow("bad-1").await;
    assert_eq!(names(&updates), ["TASK_ERROR"], "{updates:?}");
    assert_eq!(reason_of(&updates[0]), TaskStatusReason::ReasonTaskInvalid);
    assert_eq!(
        updates[0].message,
        "invalid health check: health_check.port 0 is not a port: HTTP checks need a port in 1-65535"
    );
    assert!(
        !agent.sandbox("bad-1").exists(),
        "nothing ran for the refused task"
    );

    let mut task = shell_task("bad-2", "sleep 600");
    let mut hc = check(health_check::Type::Command);
    hc.command = "true".into();
    hc.interval_seconds = Some(-1.0);
    task.health_check = Some(hc);
    master.run_task(framework(), task);
    let updates = master.follow("bad-2").await;
    assert_eq!(names(&updates), ["TASK_ERROR"], "{updates:?}");
    assert!(
        updates[0]
            .message
            .contains("health_check.interval_seconds must be a number of seconds > 0"),
        "{}",
        updates[0].message
    );

    // The agent keeps working.
    master.run_task(framework(), shell_task("ok-1", "true"));
    let updates = master.follow("ok-1").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskFinished);

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn checks_stop_when_the_agent_shuts_down() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    // A check that leaves a trace of every run in the sandbox.
    let mut task = shell_task("trace-1", "exec sleep 600");
    let mut hc = check(health_check::Type::Command);
    hc.command = "echo x >> checks".into();
    task.health_check = Some(hc);
    master.run_task(framework(), task);
    assert_eq!(
        next_health_update(&mut master, "trace-1").await.healthy,
        Some(true)
    );
    agent.stop().await;

    let checks = agent_sandbox_file(dir.path(), "trace-1", "checks");
    let before = std::fs::read_to_string(&checks).expect("the checks left their trace");
    assert!(before.starts_with("x\n"), "{before:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = std::fs::read_to_string(&checks).expect("the trace is still there");
    assert_eq!(before, after, "no check ran after the agent stopped");
    master.stop().await;
}

fn agent_sandbox_file(work_dir: &std::path::Path, task_id: &str, file: &str) -> std::path::PathBuf {
    work_dir
        .join("frameworks")
        .join(FRAMEWORK)
        .join("tasks")
        .join(task_id)
        .join(file)
}
