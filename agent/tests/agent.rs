//! The agent against a fake master, over real sockets, running real processes.

mod common;

use std::time::Duration;

use common::*;
use strata_agent::ContainerizerConfig;
use strata_proto::v1::{self, TaskState, TaskStatusReason, master_message};

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

#[tokio::test]
async fn registers_and_keeps_its_id_across_restarts() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;

    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    let register = master.next_register().await;
    let info = register.agent_info.expect("agent info");
    assert_eq!(info.id, "", "a new agent registers without an id");
    assert_eq!(info.address, agent.addr.to_string());
    assert!(
        info.resources
            .iter()
            .any(|r| r.name == "cpus" && r.scalar == 2.0)
    );
    assert_eq!(
        info.attributes,
        vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into()
        }]
    );
    assert!(register.tasks.is_empty());
    assert!(!register.version.is_empty());
    // Heartbeats follow at the interval the master asked for.
    loop {
        if let Seen::Message(v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(_)),
        }) = master.next().await
        {
            break;
        }
    }

    eventually("the agent id to be persisted", || {
        std::fs::read_to_string(dir.path().join("agent_id"))
            .is_ok_and(|s| s.trim() == "agent-from-fake-master")
    })
    .await;
    let (status, state) = agent.get_json("/state").await;
    assert_eq!(status, 200);
    assert_eq!(state["id"], "agent-from-fake-master");
    assert_eq!(state["resources"]["cpus"], 2.0);
    assert_eq!(state["attributes"]["rack"], "r1");
    agent.stop().await;

    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    let register = master.next_register().await;
    assert_eq!(
        register.agent_info.unwrap().id,
        "agent-from-fake-master",
        "a restarted agent re-registers with its id"
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_refused_registration_is_retried() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    master.refuse_registrations(2);
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    for _ in 0..3 {
        assert_eq!(master.next_register().await.agent_info.unwrap().id, "");
    }
    eventually("the agent id to be persisted", || {
        dir.path().join("agent_id").exists()
    })
    .await;
    let (_, state) = agent.get_json("/state").await;
    assert_eq!(state["registered"], true);
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn echo_finishes_and_its_output_is_readable() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    master.run_task(framework(), shell_task("hello-1", "echo hello"));
    let updates = master.follow("hello-1").await;
    assert_eq!(
        names(&updates),
        ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    );
    let finished = updates.last().unwrap();
    assert_eq!(finished.exit_status, Some(0));
    assert_eq!(finished.framework_id, FRAMEWORK);
    assert_eq!(finished.agent_id, "agent-from-fake-master");
    assert_eq!(finished.source, v1::TaskStatusSource::SourceAgent as i32);
    assert!(finished.timestamp > 0.0);
    let uuids: std::collections::HashSet<_> = updates.iter().map(|u| u.uuid.clone()).collect();
    assert_eq!(uuids.len(), 3, "every update has its own uuid");

    assert_eq!(
        std::fs::read_to_string(agent.sandbox("hello-1").join("stdout")).unwrap(),
        "hello\n"
    );
    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=hello-1&file=stdout"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], "hello\n");
    assert_eq!(body["offset"], 0);
    assert_eq!(body["eof"], true);
    assert_eq!(body["state"], "TASK_FINISHED");
    let (_, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=hello-1&file=stdout&offset=2&length=2"
        ))
        .await;
    assert_eq!(body["data"], "ll");
    assert_eq!(body["eof"], false);

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_status() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    master.run_task(framework(), shell_task("fail-1", "echo oops >&2; exit 3"));
    let updates = master.follow("fail-1").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed);
    assert_eq!(last.exit_status, Some(3));
    assert_eq!(last.message, "command exited with status 3");
    assert_eq!(reason_of(last), TaskStatusReason::ReasonCommandExited);
    let (_, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=fail-1&file=stderr"
        ))
        .await;
    assert_eq!(body["data"], "oops\n");

    // A program that does not exist cannot start.
    let mut task = shell_task("missing-1", "");
    task.command = Some(v1::CommandInfo {
        value: "/no/such/program".into(),
        ..Default::default()
    });
    master.run_task(framework(), task);
    let last = master.follow("missing-1").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFailed);
    assert_eq!(
        reason_of(&last),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        last.message.contains("/no/such/program"),
        "{}",
        last.message
    );

    agent.stop().await;
    master.stop().await;
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped: a disk that
/// can fill up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test mounts a tmpfs: run it as root (as scripts/test.sh and CI do)");
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("cannot run mount");
        assert!(status.success(), "mount of a tmpfs failed");
        SmallDisk { dir }
    }

    /// Fills the disk to the last byte; returns the file that holds the space.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_task_is_not_started_when_the_checkpoint_cannot_be_written() {
    init_tracing();
    let disk = SmallDisk::mount("4m");
    let work_dir = disk.dir.path().join("agent");
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, &work_dir)).await;
    master.next_register().await;

    // Lines longer than a page, so that a full disk cannot take them in the slack
    // of the log's last page.
    let padding = "x".repeat(8192);
    let task = |id: &str, marker: &std::path::Path| {
        shell_task(id, &format!("touch {} # {padding}", marker.display()))
    };
    let marker = disk.dir.path().join("started-1");
    master.run_task(framework(), task("written-1", &marker));
    let last = master.follow("written-1").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFinished);
    master.ack(&last);

    // The disk fills up: the launch cannot be recorded, so it does not start.
    let filler = disk.fill();
    let marker = disk.dir.path().join("started-2");
    master.run_task(framework(), task("unwritten-2", &marker));
    // Not acknowledged yet: nothing is written after the failed write.
    let last = loop {
        let update = master.next_update().await;
        if strata_proto::is_terminal(state_of(&update)) {
            break update;
        }
        master.ack(&update);
    };
    assert_eq!(state_of(&last), TaskState::TaskFailed);
    assert!(
        last.message.contains("cannot write its checkpoint"),
        "{}",
        last.message
    );
    assert!(!marker.exists(), "the command must not have run");
    // The agent says why, for an operator looking at it.
    let (_, state) = agent.get_json("/state").await;
    let why = state["checkpoint_error"].as_str().unwrap_or_default();
    assert!(why.contains("No space left on device"), "{state}");
    master.ack(&last);

    // Once there is room again, tasks start, and what was written is whole: a
    // restarted agent reads it back (a half-written line would be corrupt).
    std::fs::remove_file(filler).unwrap();
    let marker = disk.dir.path().join("started-3");
    master.run_task(
        framework(),
        shell_task(
            "written-3",
            &format!("touch {}; exec sleep 1000", marker.display()),
        ),
    );
    master.wait_state("written-3", TaskState::TaskRunning).await;
    eventually("the third task runs", || marker.exists()).await;
    let (_, state) = agent.get_json("/state").await;
    assert!(state["checkpoint_error"].is_null(), "{state}");
    agent.stop().await;
    let state = strata_agent::checkpoint::read(&work_dir)
        .expect("the checkpoint reads back after a full disk")
        .expect("there is a checkpoint");
    let tasks: Vec<&str> = state.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert!(tasks.contains(&"written-3"), "{tasks:?}");
    master.stop().await;
}

#[tokio::test]
async fn environment_arguments_and_sandbox_reach_the_process() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let mut task = shell_task(
        "env-1",
        r#"echo "$GREETING|$STRATA_TASK_ID|$STRATA_FRAMEWORK_ID|$STRATA_AGENT_ID|$PORT0|$PORTS|$(pwd)|$STRATA_SANDBOX""#,
    );
    task.resources = strata_proto::Resources::parse("cpus:0.1;ports:[31002-31003]")
        .unwrap()
        .to_proto();
    if let Some(c) = task.command.as_mut() {
        c.environment.insert("GREETING".into(), "hi there".into());
    }
    master.run_task(framework(), task);
    assert_eq!(
        state_of(master.follow("env-1").await.last().unwrap()),
        TaskState::TaskFinished
    );
    let sandbox = agent.sandbox("env-1");
    let sandbox = sandbox.display();
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("env-1").join("stdout")).unwrap(),
        format!(
            "hi there|env-1|{FRAMEWORK}|agent-from-fake-master|31002|31002,31003|{sandbox}|{sandbox}\n"
        )
    );

    // shell = false: the value is exec'd with the arguments, no shell splitting.
    let mut task = shell_task("args-1", "");
    task.command = Some(v1::CommandInfo {
        shell: false,
        value: "/usr/bin/printf".into(),
        arguments: vec!["%s|%s\n".into(), "a b".into(), "$HOME".into()],
        ..Default::default()
    });
    master.run_task(framework(), task);
    assert_eq!(
        state_of(master.follow("args-1").await.last().unwrap()),
        TaskState::TaskFinished
    );
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("args-1").join("stdout")).unwrap(),
        "a b|$HOME\n"
    );

    // An agent running as root runs a task as the user it names.
    if nix::unistd::geteuid().is_root() {
        let mut task = shell_task("user-1", "id -un; touch created-by-task");
        if let Some(c) = task.command.as_mut() {
            c.user = "nobody".into();
        }
        master.run_task(framework(), task);
        let last = master.follow("user-1").await.pop().unwrap();
        assert_eq!(state_of(&last), TaskState::TaskFinished, "{}", last.message);
        assert_eq!(
            std::fs::read_to_string(agent.sandbox("user-1").join("stdout")).unwrap(),
            "nobody\n"
        );
    }

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn kill_reports_killed_and_escalates_to_sigkill() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    // A framework that understands TASK_KILLING sees it first.
    let mut fw = framework();
    fw.capabilities
        .push(v1::FrameworkCapability::TaskKillingState as i32);
    master.run_task(fw, shell_task("sleep-1", "sleep 100"));
    master.wait_state("sleep-1", TaskState::TaskRunning).await;
    master.kill_task("sleep-1", Some(5.0));
    let updates = master.follow("sleep-1").await;
    assert_eq!(names(&updates), ["TASK_KILLING", "TASK_KILLED"]);
    assert_eq!(reason_of(&updates[1]), TaskStatusReason::ReasonTaskKilled);

    // A task that ignores SIGTERM is SIGKILLed once the grace period is over.
    master.run_task(
        framework(),
        shell_task(
            "stubborn-1",
            "trap 'echo got TERM' TERM; echo $$ > pid; while true; do sleep 0.1; done",
        ),
    );
    master
        .wait_state("stubborn-1", TaskState::TaskRunning)
        .await;
    let pid = read_pid(&agent.sandbox("stubborn-1").join("pid")).await;
    master.kill_task("stubborn-1", Some(1.0));
    let updates = master.follow("stubborn-1").await;
    assert_eq!(
        names(&updates),
        ["TASK_KILLED"],
        "no TASK_KILLING for a framework without the capability"
    );
    assert!(
        updates[0].message.contains("SIGKILL"),
        "{}",
        updates[0].message
    );
    assert_eq!(updates[0].exit_status, Some(128 + 9));
    assert!(
        std::fs::read_to_string(agent.sandbox("stubborn-1").join("stdout"))
            .unwrap()
            .contains("got TERM")
    );
    assert!(!process_alive(pid));

    // Shutting a framework down kills all its tasks.
    for id in ["fw-a", "fw-b"] {
        master.run_task(framework(), shell_task(id, "sleep 100"));
        master.wait_state(id, TaskState::TaskRunning).await;
    }
    master.send(master_message::Message::ShutdownFramework(
        v1::ShutdownFramework {
            framework_id: FRAMEWORK.into(),
        },
    ));
    let mut killed = Vec::new();
    while killed.len() < 2 {
        let s = master.next_update().await;
        master.ack(&s);
        assert_eq!(state_of(&s), TaskState::TaskKilled, "{s:?}");
        assert_eq!(reason_of(&s), TaskStatusReason::ReasonFrameworkRemoved);
        killed.push(s.task_id);
    }
    killed.sort();
    assert_eq!(killed, ["fw-a", "fw-b"]);

    // Killing a task the agent does not know answers TASK_LOST.
    master.kill_task("never-ran", None);
    let lost = master.next_update().await;
    assert_eq!(
        (lost.task_id.as_str(), state_of(&lost)),
        ("never-ran", TaskState::TaskLost)
    );
    assert_eq!(reason_of(&lost), TaskStatusReason::ReasonTaskUnknown);
    master.ack(&lost);

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn nothing_a_task_started_outlives_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    // Killed: the background grandchild dies with the task.
    master.run_task(
        framework(),
        shell_task("tree-1", "sleep 1000 & echo $! > grandchild; wait"),
    );
    master.wait_state("tree-1", TaskState::TaskRunning).await;
    let grandchild = read_pid(&agent.sandbox("tree-1").join("grandchild")).await;
    assert!(process_alive(grandchild));
    master.kill_task("tree-1", Some(2.0));
    assert_eq!(
        state_of(master.follow("tree-1").await.last().unwrap()),
        TaskState::TaskKilled
    );
    assert!(
        !process_alive(grandchild),
        "the grandchild survived the kill"
    );

    // Exited: what it left running in the background is killed too.
    master.run_task(
        framework(),
        shell_task("tree-2", "sleep 1000 & echo $! > grandchild; exit 0"),
    );
    assert_eq!(
        state_of(master.follow("tree-2").await.last().unwrap()),
        TaskState::TaskFinished
    );
    let grandchild = read_pid(&agent.sandbox("tree-2").join("grandchild")).await;
    assert!(
        !process_alive(grandchild),
        "the grandchild survived its parent's exit"
    );

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn unacknowledged_updates_are_retried_until_acknowledged() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut opts = options(master.addr, dir.path());
    opts.status_retry_interval = Duration::from_millis(200);
    opts.status_retry_max = Duration::from_millis(400);
    let agent = TestAgent::start(opts).await;
    master.next_register().await;

    master.run_task(framework(), shell_task("retry-1", "sleep 100"));
    let first = master.next_update().await;
    assert_eq!(state_of(&first), TaskState::TaskStarting);
    // Not acknowledged: the same update (same uuid) comes again, and only it.
    for _ in 0..2 {
        let again = master.next_update().await;
        assert_eq!(again.uuid, first.uuid);
    }
    master.ack(&first);
    let running = loop {
        let s = master.next_update().await;
        if s.uuid != first.uuid {
            break s;
        }
    };
    assert_eq!(state_of(&running), TaskState::TaskRunning);
    master.ack(&running);
    // Once acknowledged, nothing more is sent for the task while it runs.
    let quiet = tokio::time::timeout(Duration::from_secs(1), master.next_update()).await;
    assert!(quiet.is_err(), "unexpected update after the ack: {quiet:?}");

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn the_fake_containerizer_finishes_and_kills_tasks() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut opts = options(master.addr, dir.path());
    opts.containerizer = ContainerizerConfig::Fake {
        task_duration: Duration::from_millis(100),
    };
    let agent = TestAgent::start(opts).await;
    master.next_register().await;

    for i in 0..50 {
        master.run_task(
            framework(),
            shell_task(&format!("fake-{i}"), "this never runs"),
        );
    }
    let mut finished = 0;
    while finished < 50 {
        let s = master.next_update().await;
        master.ack(&s);
        assert!(
            matches!(
                state_of(&s),
                TaskState::TaskRunning | TaskState::TaskFinished
            ),
            "{s:?}"
        );
        if state_of(&s) == TaskState::TaskFinished {
            finished += 1;
        }
    }
    let (_, state) = agent.get_json("/state").await;
    assert_eq!(state["containerizer"], "fake");
    agent.stop().await;

    // A fresh work dir: the first agent may have stopped before the last acks arrived,
    // and would rightly send those updates again.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(master.addr, dir.path());
    opts.containerizer = ContainerizerConfig::Fake {
        task_duration: Duration::from_secs(3600),
    };
    let agent = TestAgent::start(opts).await;
    master.next_register().await;
    master.run_task(framework(), shell_task("fake-long", "x"));
    master.wait_state("fake-long", TaskState::TaskRunning).await;
    master.kill_task("fake-long", None);
    assert_eq!(names(&master.follow("fake-long").await), ["TASK_KILLED"]);
    agent.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_runs_thousands_of_fake_tasks() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut opts = options(master.addr, dir.path());
    opts.containerizer = ContainerizerConfig::Fake {
        task_duration: Duration::from_millis(200),
    };
    let agent = TestAgent::start(opts).await;
    master.next_register().await;

    const TASKS: usize = 3000;
    for i in 0..TASKS {
        master.run_task(framework(), shell_task(&format!("scale-{i}"), "x"));
    }
    let mut finished = std::collections::HashSet::new();
    while finished.len() < TASKS {
        let s = master.next_update().await;
        master.ack(&s);
        if state_of(&s) == TaskState::TaskFinished {
            finished.insert(s.task_id);
        }
    }
    let mut forgotten = false;
    for _ in 0..200 {
        let (_, state) = agent.get_json("/state").await;
        if state["tasks"].as_array().is_some_and(|t| t.is_empty()) {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(forgotten, "every acknowledged task is forgotten");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn reregisters_with_its_tasks_after_the_master_restarts() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let addr = master.addr;
    let agent = TestAgent::start(options(addr, dir.path())).await;
    master.next_register().await;
    master.run_task(framework(), shell_task("long-1", "sleep 100"));
    master.wait_state("long-1", TaskState::TaskRunning).await;

    let mut master = master.restart().await;
    let register = master.next_register().await;
    assert_eq!(register.agent_info.unwrap().id, "agent-from-fake-master");
    assert_eq!(register.tasks.len(), 1);
    let running = &register.tasks[0];
    assert_eq!(running.framework_id, FRAMEWORK);
    assert_eq!(running.task.as_ref().unwrap().task_id, "long-1");
    assert_eq!(running.state, TaskState::TaskRunning as i32);
    assert_eq!(running.framework.as_ref().unwrap().id, FRAMEWORK);

    // The new master can drive the task.
    master.kill_task("long-1", Some(1.0));
    assert_eq!(
        state_of(master.follow("long-1").await.last().unwrap()),
        TaskState::TaskKilled
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn updates_not_acknowledged_before_a_master_restart_are_resent() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let addr = master.addr;
    let agent = TestAgent::start(options(addr, dir.path())).await;
    master.next_register().await;
    master.run_task(framework(), shell_task("quick-1", "true"));
    let starting = master.next_update().await; // never acknowledged
    let mut master = master.restart().await;
    let register = master.next_register().await;
    assert_eq!(
        register.tasks.len(),
        1,
        "a task with unacknowledged updates is still reported"
    );
    let resent = master.next_update().await;
    assert_eq!(resent.uuid, starting.uuid);
    master.ack(&resent);
    let updates = master.follow("quick-1").await;
    assert_eq!(names(&updates), ["TASK_RUNNING", "TASK_FINISHED"]);
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn bad_run_tasks_are_refused_and_the_agent_keeps_working() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    for bad_id in ["../escape", "a/b", ".."] {
        master.run_task(framework(), shell_task(bad_id, "echo should not run"));
        let s = master.next_update().await;
        assert_eq!(
            (s.task_id.as_str(), state_of(&s)),
            (bad_id, TaskState::TaskError)
        );
        assert_eq!(reason_of(&s), TaskStatusReason::ReasonTaskInvalid);
        master.ack(&s);
    }
    assert!(!dir.path().join("escape").exists());
    // `..` inside one id is an ordinary directory name: the master lets it through
    // (the same rule, strata_proto::validate), so the agent runs it in its sandbox.
    master.run_task(framework(), shell_task("a..b", "echo dots"));
    let s = master.follow("a..b").await.pop().unwrap();
    assert_eq!(state_of(&s), TaskState::TaskFinished, "{}", s.message);
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("a..b").join("stdout")).unwrap(),
        "dots\n"
    );

    let mut bad_resources = shell_task("bad-res", "true");
    bad_resources.resources = vec![v1::Resource {
        name: "cpus".into(),
        scalar: f64::NAN,
        ..Default::default()
    }];
    master.run_task(framework(), bad_resources);
    let s = master.follow("bad-res").await.pop().unwrap();
    assert_eq!(state_of(&s), TaskState::TaskError);
    assert!(s.message.contains("cpus"), "{}", s.message);

    let mut no_command = shell_task("no-cmd", "");
    no_command.command = None;
    master.run_task(framework(), no_command);
    assert_eq!(
        state_of(&master.follow("no-cmd").await.pop().unwrap()),
        TaskState::TaskError
    );

    // A RunTask without a task, and one for an unknown user: no crash.
    master.send(master_message::Message::RunTask(v1::RunTask {
        framework: Some(framework()),
        task: None,
    }));
    let mut stranger = shell_task("stranger", "true");
    if let Some(c) = stranger.command.as_mut() {
        c.user = "no-such-user-here".into();
    }
    master.run_task(framework(), stranger);
    let s = master.follow("stranger").await.pop().unwrap();
    assert_eq!(state_of(&s), TaskState::TaskFailed);
    if nix::unistd::geteuid().is_root() {
        assert!(s.message.contains("no-such-user-here"), "{}", s.message);
    }

    // A duplicate task id is refused while the first runs.
    master.run_task(framework(), shell_task("dup", "sleep 100"));
    master.wait_state("dup", TaskState::TaskRunning).await;
    master.run_task(framework(), shell_task("dup", "sleep 100"));
    let s = master.next_update().await;
    assert_eq!(state_of(&s), TaskState::TaskError);
    assert_eq!(reason_of(&s), TaskStatusReason::ReasonDuplicateTaskId);
    master.ack(&s);

    // Still serving.
    master.run_task(framework(), shell_task("good", "echo fine"));
    assert_eq!(
        state_of(master.follow("good").await.last().unwrap()),
        TaskState::TaskFinished
    );
    let resp = reqwest::get(agent.url("/health")).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn the_files_api_refuses_unknown_tasks_and_files() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    master.run_task(framework(), shell_task("files-1", "echo out"));
    master.follow("files-1").await;

    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=nope&file=stdout"
        ))
        .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (status, _) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=files-1&file=../../agent_id"
        ))
        .await;
    assert_eq!(status, 400);
    let (status, _) = agent
        .get_json("/files/read?framework_id=..&task_id=..&file=stdout")
        .await;
    assert_eq!(status, 404);
    let (status, _) = agent.get_json("/files/read?task_id=files-1").await;
    assert_eq!(status, 400);

    // A task that swaps its stdout for a symlink cannot make the agent read elsewhere.
    master.run_task(
        framework(),
        shell_task("sneaky", "rm stdout; ln -s /etc/passwd stdout"),
    );
    master.follow("sneaky").await;
    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=sneaky&file=stdout"
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("it is a symbolic link"),
        "{body}"
    );

    let (_, state) = agent.get_json("/state").await;
    let completed = state["completed_tasks"].as_array().unwrap();
    assert!(
        completed
            .iter()
            .any(|t| t["task_id"] == "files-1" && t["state"] == "TASK_FINISHED")
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_shutdown_that_keeps_tasks_leaves_them_running_and_the_next_run_adopts_them() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    master.run_task(
        framework(),
        shell_task("stay-1", "echo $$ > pid; exec sleep 1000"),
    );
    master.wait_state("stay-1", TaskState::TaskRunning).await;
    let pid = read_pid(&agent.sandbox("stay-1").join("pid")).await;

    agent.stop_keeping_tasks().await;
    assert!(process_alive(pid), "the task runs on without its agent");

    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    let register = master.next_register().await;
    assert_eq!(register.tasks.len(), 1);
    assert_eq!(register.tasks[0].state, TaskState::TaskRunning as i32);
    let (_, state) = agent.get_json("/state").await;
    assert_eq!(state["tasks"][0]["task_id"], "stay-1", "{state}");
    assert_eq!(state["tasks"][0]["state"], "TASK_RUNNING", "{state}");
    agent.stop().await;
    assert!(!process_alive(pid));
    master.stop().await;
}

#[tokio::test]
async fn a_shutdown_that_kills_tasks_checkpoints_their_updates() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    master.run_task(
        framework(),
        shell_task("bye-1", "echo $$ > pid; exec sleep 1000"),
    );
    master.wait_state("bye-1", TaskState::TaskRunning).await;
    let pid = read_pid(&agent.sandbox("bye-1").join("pid")).await;
    let (_, state) = agent.get_json("/state").await;
    assert_eq!(state["tasks"][0]["task_id"], "bye-1");
    assert_eq!(state["tasks"][0]["state"], "TASK_RUNNING");

    agent.stop().await;
    assert!(
        !process_alive(pid),
        "a shutdown with KillTasks kills the tasks"
    );
    let killed = master.next_update().await;
    assert_eq!(state_of(&killed), TaskState::TaskKilled);
    let checkpoint = strata_agent::checkpoint::read(dir.path()).unwrap().unwrap();
    assert!(
        checkpoint.updates.iter().any(|u| u.uuid == killed.uuid),
        "the unacknowledged update is checkpointed"
    );

    // The next run re-sends it.
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    let register = master.next_register().await;
    assert_eq!(register.tasks.len(), 1);
    assert_eq!(register.tasks[0].state, TaskState::TaskKilled as i32);
    let resent = master.next_update().await;
    assert_eq!(resent.uuid, killed.uuid);
    master.ack(&resent);
    let mut forgotten = false;
    for _ in 0..100 {
        let (_, state) = agent.get_json("/state").await;
        if state["tasks"].as_array().is_some_and(|t| t.is_empty()) {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        forgotten,
        "a task whose terminal update is acknowledged is forgotten"
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn task_logs_rotate_and_finished_sandboxes_are_collected() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut opts = options(master.addr, dir.path());
    opts.hygiene = strata_agent::hygiene::HygieneOptions {
        gc_delay: Duration::from_secs(1),
        gc_disk_headroom: 0.0,
        disk_watch_interval: Duration::from_millis(100),
        task_log_max_size: 4096,
        task_log_keep: 1,
    };
    let agent = TestAgent::start(opts).await;
    master.next_register().await;

    // A running task that writes 20 KB, then a line after its log was rotated.
    master.run_task(
        framework(),
        shell_task(
            "chatty",
            "head -c 20000 /dev/zero | tr '\\0' x; echo; while [ ! -s stdout.1 ]; do sleep 0.05; done; echo after; exec sleep 1000",
        ),
    );
    master.wait_state("chatty", TaskState::TaskRunning).await;
    let chatty = agent.sandbox("chatty");
    eventually("the running task's stdout is rotated", || {
        std::fs::read_to_string(chatty.join("stdout")).is_ok_and(|s| s.contains("after"))
    })
    .await;
    let rotated = std::fs::read_to_string(chatty.join("stdout.1")).unwrap();
    assert!(
        rotated.starts_with("xxxx") && rotated.len() >= 4096,
        "{}",
        rotated.len()
    );
    let live = std::fs::read_to_string(chatty.join("stdout")).unwrap();
    assert!(
        live.len() < 4096,
        "the live file was truncated: {} bytes",
        live.len()
    );

    // A task that ends: once its last update is acknowledged and it was idle for
    // the delay, its sandbox goes; the running task's stays.
    master.run_task(framework(), shell_task("brief", "echo bye"));
    let updates = master.follow("brief").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskFinished);
    let brief = agent.sandbox("brief");
    assert!(brief.join("stdout").exists());
    eventually("the finished sandbox is collected", || !brief.exists()).await;
    assert!(
        chatty.join("stdout").exists(),
        "a running task's sandbox stays"
    );
    let (status, _) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=brief&file=stdout"
        ))
        .await;
    assert_eq!(status, 404);
    let (_, state) = agent.get_json("/state").await;
    let used = state["disk"]["disk"]["used"]
        .as_f64()
        .expect("disk use in /state");
    assert!((0.0..=1.0).contains(&used), "{state}");
    assert!(state["checkpoint_error"].is_null(), "{state}");
    agent.stop().await;
    master.stop().await;
}

/// These tests switch users: the agent must be root (as scripts/test.sh and CI run it).
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches users: run it as root (as scripts/test.sh and CI do)"
    );
}

fn with_user(mut task: v1::TaskInfo, user: &str) -> v1::TaskInfo {
    if let Some(c) = task.command.as_mut() {
        c.user = user.into();
    }
    task
}

async fn stdout_of(agent: &TestAgent, task_id: &str) -> (u16, serde_json::Value) {
    agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id={task_id}&file=stdout"
        ))
        .await
}

#[tokio::test]
async fn a_task_that_names_no_user_runs_as_the_default_user_not_root() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    // The attack of issue 14: `strata run -- 'id; head /etc/shadow'` ran as uid 0.
    master.run_task(
        framework(),
        shell_task("who", "id -un; head -1 /etc/shadow"),
    );
    let last = master.follow("who").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFailed, "{}", last.message);
    let sandbox = agent.sandbox("who");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "nobody\n"
    );
    assert!(
        std::fs::read_to_string(sandbox.join("stderr"))
            .unwrap()
            .contains("Permission denied")
    );

    // The framework's user comes before the default, the command's before both.
    let mut fw = framework();
    fw.user = "daemon".into();
    master.run_task(fw.clone(), shell_task("fw-user", "id -un"));
    master.follow("fw-user").await;
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("fw-user").join("stdout")).unwrap(),
        "daemon\n"
    );
    master.run_task(fw, with_user(shell_task("cmd-user", "id -un"), "root"));
    master.follow("cmd-user").await;
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("cmd-user").join("stdout")).unwrap(),
        "root\n"
    );
    agent.stop().await;

    // --default-user '' : the agent's own user, as before.
    let mut o = options(master.addr, &dir.path().join("second"));
    o.default_user = Some(String::new());
    let agent = TestAgent::start(o).await;
    master.next_register().await;
    master.run_task(framework(), shell_task("own", "id -un"));
    master.follow("own").await;
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("own").join("stdout")).unwrap(),
        "root\n"
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn an_unknown_default_user_stops_the_agent_before_it_starts() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options("127.0.0.1:1".parse().unwrap(), dir.path());
    o.default_user = Some("no-such-user-here".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = strata_agent::run(listener, o, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid --default-user 'no-such-user-here': no such user on this machine"),
        "{e}"
    );
    assert!(
        !dir.path().join("frameworks").exists() && !dir.path().join("agent_id").exists(),
        "nothing started"
    );
}

#[tokio::test]
async fn a_nobody_task_of_another_framework_cannot_read_or_list_other_sandboxes() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    // A task of user daemon keeps a secret in its sandbox.
    master.run_task(
        framework(),
        with_user(
            shell_task("victim", "echo s3cret; echo s3cret > notes"),
            "daemon",
        ),
    );
    master.follow("victim").await;
    let victim = agent.sandbox("victim");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o700, 1));
    for file in ["stdout", "stderr"] {
        let meta = std::fs::metadata(victim.join(file)).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 1), "{file}");
    }

    // Another framework's task, as nobody (it names no user), goes looking.
    let other = v1::FrameworkInfo {
        id: "fw-other".into(),
        name: "other".into(),
        ..Default::default()
    };
    let snoop = format!(
        "cat {v}/stdout {v}/notes; ls {w}/frameworks; ls {w}/frameworks/{FRAMEWORK}/tasks; ls $STRATA_SANDBOX; echo done",
        v = victim.display(),
        w = dir.path().display()
    );
    master.run_task(other, shell_task("snoop", &snoop));
    master.follow("snoop").await;
    let snooped = dir.path().join("frameworks/fw-other/tasks/snoop");
    let out = std::fs::read_to_string(snooped.join("stdout")).unwrap();
    let err = std::fs::read_to_string(snooped.join("stderr")).unwrap();
    assert!(!out.contains("s3cret"), "{out}");
    assert_eq!(
        out, "stderr\nstdout\ndone\n",
        "only its own sandbox is listable"
    );
    assert_eq!(err.matches("Permission denied").count(), 4, "{err}");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn the_files_api_never_serves_a_hard_link_to_a_file_outside_the_sandbox() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // A root-only file outside the sandbox, standing in for /etc/shadow.
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret-hash\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let work = dir.path().join("agent");
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, &work)).await;
    master.next_register().await;

    // A root task (it names root) swaps its stdout for a hard link to the secret,
    // and its stderr for a symlink to it.
    let swap = format!(
        "echo visible; rm stdout stderr; ln {s} stdout; ln -s {s} stderr",
        s = secret.display()
    );
    master.run_task(framework(), with_user(shell_task("thief", &swap), "root"));
    master.follow("thief").await;
    let (status, body) = stdout_of(&agent, "thief").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "refusing to serve 'stdout' of the task: it has 2 links (a hard link to a file outside the sandbox is never served)"
    );
    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=thief&file=stderr"
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("secret-hash"), "{body}");

    // A nobody task cannot even make the link (the kernel's protected_hardlinks), and
    // a file of its own linked twice is refused all the same.
    let swap = format!(
        "ln {s} stolen; echo mine > mine; rm stdout; ln mine stdout",
        s = secret.display()
    );
    master.run_task(framework(), shell_task("thief-2", &swap));
    master.follow("thief-2").await;
    assert!(!agent.sandbox("thief-2").join("stolen").exists());
    let (status, body) = stdout_of(&agent, "thief-2").await;
    assert_eq!(status, 403, "{body}");

    // Ordinary output is served as ever.
    master.run_task(framework(), shell_task("honest", "echo plain output"));
    master.follow("honest").await;
    let (status, body) = stdout_of(&agent, "honest").await;
    assert_eq!(
        (status, body["data"].as_str()),
        (200, Some("plain output\n"))
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "root:$6$secret-hash\n"
    );
    agent.stop().await;
    master.stop().await;
}
