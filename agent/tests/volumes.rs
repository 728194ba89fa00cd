//! Persistent volumes on the agent (issue 17), against a fake master that sends the
//! agent's ledger (`CheckpointResources`): the agent creates the volumes' directories
//! under `WORK_DIR/volumes/roles/<role>/<id>`, binds them into the tasks that use them
//! (in the task's own mount namespace, read-only when RO), gives them to the task's
//! user, keeps their data across tasks and agent restarts, counts them in the tasks'
//! disk, reports their usage, and removes their data only when the ledger drops them.
//!
//! Needs root (the agent mounts and switches users) and, for the Docker test, a
//! running engine with the test image `strata-test/busybox:latest`
//! (`scripts/docker-setup.sh`). Without root these tests fail saying so; without
//! Docker the Docker test fails under CI (`CI=true`) and says it did not run
//! elsewhere.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use strata_agent::{ContainerizerConfig, DockerOptions};
use strata_proto::Resources;
use strata_proto::v1::{
    self, TaskState, TaskStatusReason, agent_message, docker_info, master_message,
};

const MIB: u64 = 1024 * 1024;
const ROLE: &str = "db";
const IMAGE: &str = "strata-test/busybox:latest";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests bind mounts and switch users: run them as root (as scripts/test.sh and CI do)"
    );
}

/// A persistent volume of `ROLE`, `size` MB, seen by tasks at `container_path`.
fn volume(id: &str, container_path: &str, size: f64, read_only: bool) -> v1::Resource {
    let mode = if read_only {
        v1::volume::Mode::Ro
    } else {
        v1::volume::Mode::Rw
    };
    v1::Resource {
        name: "disk".into(),
        scalar: size,
        ranges: vec![],
        role: ROLE.into(),
        disk: Some(v1::DiskInfo {
            persistence: Some(v1::disk_info::Persistence {
                id: id.into(),
                principal: "ops".into(),
            }),
            container_path: container_path.into(),
            mode: mode as i32,
            source: None,
        }),
    }
}

/// The agent's whole ledger: `ROLE`'s reserved cpus, and `volumes`.
fn ledger(volumes: Vec<v1::Resource>) -> v1::CheckpointResources {
    v1::CheckpointResources {
        reserved: Resources::parse(&format!("cpus({ROLE}):1"))
            .unwrap()
            .to_proto(),
        volumes,
    }
}

fn checkpoint(master: &FakeMaster, ledger: v1::CheckpointResources) {
    master.send(master_message::Message::CheckpointResources(ledger));
}

fn volume_dir(agent: &TestAgent, id: &str) -> PathBuf {
    agent.work_dir.join("volumes/roles").join(ROLE).join(id)
}

/// A shell task with `resources` and `volumes`, run as `user`.
fn task_with(
    task_id: &str,
    command: &str,
    user: &str,
    resources: &str,
    volumes: &[v1::Resource],
) -> v1::TaskInfo {
    let mut t = shell_task(task_id, command);
    let mut r = Resources::parse(resources).unwrap().to_proto();
    r.extend(volumes.iter().cloned());
    t.resources = r;
    t.command.as_mut().unwrap().user = user.into();
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(1.0),
    });
    t
}

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

/// The host's (this process's) mounts whose mount point starts with `prefix`.
fn host_mounts_under(prefix: &Path) -> Vec<String> {
    let prefix = prefix.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .map(str::to_string)
        .collect()
}

/// Waits until `path` holds `text` (trimmed); returns it.
async fn file_holds(path: &Path, text: &str) {
    let mut seen = String::new();
    eventually(&format!("{} to hold '{text}'", path.display()), || {
        seen = std::fs::read_to_string(path).unwrap_or_default();
        seen.trim() == text
    })
    .await;
}

fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody").unwrap().unwrap()
}

#[tokio::test]
async fn a_volume_keeps_its_data_across_tasks_and_belongs_to_its_user() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    let data = volume("counter-1", "data", 64.0, false);
    checkpoint(&master, ledger(vec![data.clone()]));
    let host = volume_dir(&agent, "counter-1");
    eventually("the volume's directory", || host.is_dir()).await;

    // The first task, as nobody, starts the counter in its volume.
    master.run_task(
        framework(),
        task_with(
            "writer",
            "echo 1 > data/counter && echo written > ready; sleep 60",
            "nobody",
            "cpus:0.1;mem:32",
            std::slice::from_ref(&data),
        ),
    );
    master.wait_state("writer", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("writer");
    file_holds(&sandbox.join("ready"), "written").await;
    // The file is in the volume on the host, the task user's, as is the volume.
    file_holds(&host.join("counter"), "1").await;
    let user = nobody();
    let meta = std::fs::metadata(host.join("counter")).unwrap();
    assert_eq!(meta.uid(), user.uid.as_raw(), "the file is nobody's");
    assert_eq!(std::fs::metadata(&host).unwrap().uid(), user.uid.as_raw());
    // The host's sandbox has an empty mount point: the bind is the task's only.
    let mount_point = sandbox.join("data");
    assert!(mount_point.is_dir());
    assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0);
    assert!(
        host_mounts_under(&agent.work_dir).is_empty(),
        "no mount of the task's on the host: {:?}",
        host_mounts_under(&agent.work_dir)
    );

    // GET /volumes lists it, with the task using it.
    let (status, body) = agent.get_json("/volumes").await;
    assert_eq!(status, 200, "{body}");
    let persistent = body["persistent"].as_array().expect("persistent volumes");
    assert_eq!(persistent.len(), 1, "{body}");
    let v = &persistent[0];
    assert_eq!(v["role"], ROLE);
    assert_eq!(v["persistence_id"], "counter-1");
    assert_eq!(v["container_path"], "data");
    assert_eq!(v["mode"], "RW");
    assert_eq!(v["size_mb"], 64.0);
    assert_eq!(v["path"], host.display().to_string());
    assert_eq!(v["tasks"][0]["task_id"], "writer", "{body}");

    master.kill_task("writer", Some(1.0));
    master.wait_state("writer", TaskState::TaskKilled).await;

    // A second task on the same volume reads what the first wrote, and counts on.
    master.run_task(
        framework(),
        task_with(
            "reader",
            "n=$(cat data/counter) && echo read $n && echo $((n + 1)) > data/counter",
            "nobody",
            "cpus:0.1;mem:32",
            std::slice::from_ref(&data),
        ),
    );
    let updates = master.follow("reader").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFinished, "{updates:?}");
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("reader").join("stdout")).unwrap(),
        "read 1\n"
    );
    file_holds(&host.join("counter"), "2").await;

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_read_only_volume_can_be_read_and_not_written() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    let ro = volume("ro-1", "conf/shared", 16.0, true);
    checkpoint(&master, ledger(vec![ro.clone()]));
    let host = volume_dir(&agent, "ro-1");
    eventually("the volume's directory", || host.is_dir()).await;
    std::fs::write(host.join("hello"), "hello from the volume\n").unwrap();

    // As nobody, to whom the volume is given: only the read-only mount refuses.
    master.run_task(
        framework(),
        task_with(
            "ro-reader",
            "cat conf/shared/hello; if echo x > conf/shared/new; then echo WROTE; else echo REFUSED; fi",
            "nobody",
            "cpus:0.1;mem:32",
            &[ro],
        ),
    );
    let updates = master.follow("ro-reader").await;
    assert_eq!(
        state_of(updates.last().unwrap()),
        TaskState::TaskFinished,
        "{updates:?}"
    );
    let sandbox = agent.sandbox("ro-reader");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "hello from the volume\nREFUSED\n"
    );
    let stderr = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!host.join("new").exists());
    assert_eq!(
        std::fs::metadata(&host).unwrap().uid(),
        nobody().uid.as_raw()
    );

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_task_naming_a_volume_not_on_the_agent_fails_saying_which() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    checkpoint(&master, ledger(vec![volume("real", "data", 16.0, false)]));
    eventually("the volume's directory", || {
        volume_dir(&agent, "real").is_dir()
    })
    .await;

    master.run_task(
        framework(),
        task_with(
            "ghostly",
            "echo never > ran",
            "",
            "cpus:0.1;mem:32",
            &[volume("ghost", "data", 16.0, false)],
        ),
    );
    let updates = master.follow("ghostly").await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    let failed = &updates[0];
    assert_eq!(state_of(failed), TaskState::TaskFailed);
    assert_eq!(
        reason_of(failed),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        failed
            .message
            .contains("volume 'ghost' of role 'db' is not on this agent"),
        "{}",
        failed.message
    );
    assert!(!agent.sandbox("ghostly").join("ran").exists());

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_destroyed_volume_loses_its_data_but_not_what_it_links_to_nor_a_used_one() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep me").unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    let (a, b, c) = (
        volume("a", "data", 16.0, false),
        volume("b", "data", 16.0, false),
        volume("c", "data", 16.0, false),
    );
    checkpoint(&master, ledger(vec![a.clone(), b.clone(), c.clone()]));
    let (host_a, host_b, host_c) = (
        volume_dir(&agent, "a"),
        volume_dir(&agent, "b"),
        volume_dir(&agent, "c"),
    );
    eventually("the volumes' directories", || {
        host_a.is_dir() && host_b.is_dir() && host_c.is_dir()
    })
    .await;
    std::fs::create_dir_all(host_a.join("sub")).unwrap();
    std::fs::write(host_a.join("sub/file"), "data").unwrap();
    std::os::unix::fs::symlink(outside.path(), host_a.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), host_a.join("sub/escape")).unwrap();

    // b is in use by a running task.
    master.run_task(
        framework(),
        task_with(
            "user-of-b",
            "echo kept > data/mine; sleep 60",
            "nobody",
            "cpus:0.1;mem:32",
            std::slice::from_ref(&b),
        ),
    );
    master.wait_state("user-of-b", TaskState::TaskRunning).await;
    file_holds(&host_b.join("mine"), "kept").await;

    // a and b destroyed: a's data goes, not what its links point to; b is kept.
    checkpoint(&master, ledger(vec![c.clone()]));
    eventually("the destroyed volume's data to go", || !host_a.exists()).await;
    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep me"
    );
    assert!(outside.path().is_dir());
    // A later ledger was handled after that one: b, in use, was kept all along.
    checkpoint(&master, ledger(vec![]));
    eventually("c to go", || !host_c.exists()).await;
    assert_eq!(
        std::fs::read_to_string(host_b.join("mine")).unwrap().trim(),
        "kept"
    );
    // Once its task has ended, the next ledger removes it.
    master.kill_task("user-of-b", Some(1.0));
    master.wait_state("user-of-b", TaskState::TaskKilled).await;
    checkpoint(&master, ledger(vec![]));
    eventually("b to go once unused", || !host_b.exists()).await;

    agent.stop().await;
    master.stop().await;
}

/// The real `strata-agent` binary on a work dir, killed with SIGKILL at will.
struct BinaryAgent {
    work: tempfile::TempDir,
    logs: tempfile::TempDir,
    runs: usize,
    child: Option<std::process::Child>,
}

impl BinaryAgent {
    fn new() -> BinaryAgent {
        BinaryAgent {
            work: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            runs: 0,
            child: None,
        }
    }

    /// Starts the agent against `master` and waits until it listens.
    async fn start(&mut self, master: &FakeMaster) {
        self.runs += 1;
        let out = self.logs.path().join(format!("run-{}.out", self.runs));
        let err = self.logs.path().join(format!("run-{}.log", self.runs));
        let child = Command::new(env!("CARGO_BIN_EXE_strata-agent"))
            .args(["--master", &master.addr.to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--work-dir", &self.work.path().display().to_string()])
            .args(["--resources", "cpus:4;mem:2048;disk:1024"])
            .args(["--isolation", "none"])
            .args(["--registration-backoff", "50ms"])
            .args(["--registration-backoff-max", "200ms"])
            .args(["--executor-shutdown-grace-period", "2s"])
            .arg("--insecure")
            .env("RUST_LOG", "info,strata_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start strata-agent");
        self.child = Some(child);
        eventually("the agent to listen", || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.contains("strata-agent listening on "))
        })
        .await;
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("a running agent");
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
    }

    /// SIGUSR1: the agent kills its tasks and stops.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        let status =
            tokio::time::timeout(TIMEOUT, tokio::task::spawn_blocking(move || child.wait()))
                .await
                .expect("the agent did not stop in time")
                .unwrap()
                .unwrap();
        assert!(status.success(), "the agent stopped with {status}");
    }
}

impl Drop for BinaryAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for run in 1..=self.runs {
                let log = self.logs.path().join(format!("run-{run}.log"));
                eprintln!(
                    "---- strata-agent run {run} ----\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        // The tasks left behind: processes working in the work dir.
        let work = std::fs::canonicalize(self.work.path()).unwrap_or_default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&work))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[tokio::test]
async fn after_a_kill_9_the_agent_registers_with_its_ledger_and_its_task_keeps_the_volume() {
    init_tracing();
    require_root();
    let mut agent = BinaryAgent::new();
    let mut master = FakeMaster::start().await;
    agent.start(&master).await;
    let first = master.next_register().await;
    assert_eq!(first.checkpointed, None, "nothing checkpointed yet");
    let data = volume("ticks", "data", 16.0, false);
    let sent = ledger(vec![data.clone()]);
    checkpoint(&master, sent.clone());
    let host = agent
        .work
        .path()
        .join("volumes/roles")
        .join(ROLE)
        .join("ticks");
    eventually("the volume's directory", || host.is_dir()).await;
    master.run_task(
        framework(),
        task_with(
            "ticker",
            "i=0; while true; do i=$((i + 1)); echo $i > data/tick; sleep 0.05; done",
            "nobody",
            "cpus:0.1;mem:32",
            &[data],
        ),
    );
    master.wait_state("ticker", TaskState::TaskRunning).await;
    eventually("the task to tick", || host.join("tick").exists()).await;

    // SIGKILL: the task runs on with its volume; a new run takes over.
    agent.kill9();
    agent.start(&master).await;
    let again = master.next_register().await;
    assert_eq!(again.checkpointed.as_ref(), Some(&sent));
    assert!(
        again.tasks.iter().any(|t| {
            t.task.as_ref().is_some_and(|t| t.task_id == "ticker") && state_of_running(t.state)
        }),
        "{again:?}"
    );
    // The task still writes into its volume.
    let tick = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = tick(&host.join("tick"));
    eventually("the task to tick on after the restart", || {
        tick(&host.join("tick")) > before + 2
    })
    .await;

    agent.stop().await;
    master.stop().await;
}

fn state_of_running(state: i32) -> bool {
    strata_proto::states::state_from_i32(state) == TaskState::TaskRunning
}

#[tokio::test]
async fn a_task_over_its_disk_in_its_volume_is_killed_and_the_volume_usage_reported() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.disk_isolation = strata_agent::disk::DiskIsolationOptions {
        watch_interval: Duration::from_millis(200),
        enforce: true,
        ..Default::default()
    };
    o.usage_report_interval = Duration::from_millis(200);
    let agent = TestAgent::start(o).await;
    master.next_register().await;
    let data = volume("big", "data", 10.0, false);
    checkpoint(&master, ledger(vec![data.clone()]));
    let host = volume_dir(&agent, "big");
    eventually("the volume's directory", || host.is_dir()).await;

    // 10 MB of disk and the 10 MB volume: 20 MB in all; it writes 30 into the volume.
    master.run_task(
        framework(),
        task_with(
            "filler",
            "dd if=/dev/zero of=data/big bs=1M count=30 2>/dev/null; sleep 60",
            "nobody",
            "cpus:0.1;mem:32;disk:10",
            &[data],
        ),
    );
    let updates = master.follow("filler").await;
    let failed = updates.last().unwrap();
    assert_eq!(state_of(failed), TaskState::TaskFailed, "{updates:?}");
    assert_eq!(
        reason_of(failed),
        TaskStatusReason::ReasonContainerLimitationDisk
    );
    assert!(
        failed
            .message
            .contains(" MB of its 20 MB (sandbox and 1 volume)"),
        "{}",
        failed.message
    );
    // The data outlives the task; its usage is reported (with no task running).
    assert!(std::fs::metadata(host.join("big")).unwrap().len() >= 20 * MIB);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let usage = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no usage report of the volume"
        );
        if let Seen::Message(v1::AgentMessage {
            message: Some(agent_message::Message::UsageReport(report)),
        }) = master.next().await
            && let Some(v) = report
                .volumes
                .iter()
                .find(|v| v.persistence_id == "big" && v.role == ROLE)
            && v.used_bytes >= 20 * MIB
        {
            break v.clone();
        }
    };
    assert!(usage.used_bytes < 40 * MIB, "{usage:?}");
    let (_, body) = agent.get_json("/volumes").await;
    assert!(
        body["persistent"][0]["used_bytes"].as_u64() >= Some(20 * MIB),
        "{body}"
    );

    agent.stop().await;
    master.stop().await;
}

/// Whether the Docker engine and the test image are here; under CI their absence
/// fails the test.
fn docker_ready() -> bool {
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ready = ok(&["info"]) && ok(&["image", "inspect", IMAGE]);
    if !ready {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Docker engine or the test image {IMAGE} is missing: run scripts/docker-setup.sh (as root)"
        );
        eprintln!(
            "NOT RUN: the Docker engine or the test image {IMAGE} is missing (scripts/docker-setup.sh); under CI=true this fails"
        );
    }
    ready
}

#[tokio::test]
async fn a_docker_task_writes_into_its_volume_at_both_paths() {
    init_tracing();
    require_root();
    if !docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent_id = format!(
        "volume-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    std::fs::write(dir.path().join("agent_id"), format!("{agent_id}\n")).unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.containerizer = ContainerizerConfig::Docker {
        docker: DockerOptions {
            remove_delay: Duration::ZERO,
            ..DockerOptions::default()
        },
        process: true,
    };
    let agent = TestAgent::start(o).await;
    master.next_register().await;
    let data = volume("dock", "data", 16.0, false);
    checkpoint(&master, ledger(vec![data.clone()]));
    let host = volume_dir(&agent, "dock");
    eventually("the volume's directory", || host.is_dir()).await;

    let mut t = task_with(
        "docked",
        "echo at-root > /data/root && echo in-sandbox > $STRATA_SANDBOX/data/sandboxed && cat /data/sandboxed",
        "",
        "cpus:0.2;mem:64",
        &[data],
    );
    t.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(v1::DockerInfo {
            image: IMAGE.into(),
            network: docker_info::Network::None as i32,
            ..Default::default()
        }),
        volumes: vec![],
    });
    master.run_task(framework(), t);
    let updates = master.follow("docked").await;
    assert_eq!(
        state_of(updates.last().unwrap()),
        TaskState::TaskFinished,
        "{updates:?}"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("root")).unwrap(),
        "at-root\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("sandboxed")).unwrap(),
        "in-sandbox\n"
    );
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("docked").join("stdout")).unwrap(),
        "in-sandbox\n"
    );
    // The host's sandbox keeps only the empty mount point.
    assert_eq!(
        std::fs::read_dir(agent.sandbox("docked").join("data"))
            .unwrap()
            .count(),
        0
    );

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_task_in_its_own_pid_namespace_gets_its_volume_too() {
    use strata_agent::isolation::{IsolationMode, Isolator};
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.isolation.mode = IsolationMode::Explicit(vec![Isolator::Pid]);
    let agent = TestAgent::start(o).await;
    master.next_register().await;
    let data = volume("pid-ns", "deep/in/here", 16.0, false);
    checkpoint(&master, ledger(vec![data.clone()]));
    let host = volume_dir(&agent, "pid-ns");
    eventually("the volume's directory", || host.is_dir()).await;

    master.run_task(
        framework(),
        task_with(
            "pid-one",
            "echo pid $$ > deep/in/here/whoami",
            "nobody",
            "cpus:0.1;mem:32",
            &[data],
        ),
    );
    let updates = master.follow("pid-one").await;
    assert_eq!(
        state_of(updates.last().unwrap()),
        TaskState::TaskFinished,
        "{updates:?}"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("whoami")).unwrap(),
        "pid 1\n"
    );
    assert_eq!(
        std::fs::read_dir(agent.sandbox("pid-one").join("deep/in/here"))
            .unwrap()
            .count(),
        0
    );

    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_command_health_check_sees_the_volume_where_its_task_does() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    let data = volume("checked", "data", 16.0, false);
    checkpoint(&master, ledger(vec![data.clone()]));
    let host = volume_dir(&agent, "checked");
    eventually("the volume's directory", || host.is_dir()).await;
    std::fs::write(host.join("alive"), "yes\n").unwrap();

    let mut t = task_with(
        "checked-1",
        "exec sleep 600",
        "nobody",
        "cpus:0.1;mem:32",
        &[data],
    );
    t.health_check = Some(v1::HealthCheck {
        r#type: v1::health_check::Type::Command as i32,
        command: "test \"$(cat data/alive)\" = yes".into(),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(2.0),
        consecutive_failures: Some(0),
        ..Default::default()
    });
    master.run_task(framework(), t);
    let healthy = loop {
        let s = master.next_update().await;
        master.ack(&s);
        assert!(
            !strata_proto::is_terminal(state_of(&s)),
            "the task ended: {s:?}"
        );
        if s.healthy.is_some() {
            break s;
        }
    };
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");

    agent.stop().await;
    master.stop().await;
}
