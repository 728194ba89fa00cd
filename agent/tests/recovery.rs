//! Agent recovery: the real `strata-agent` binary is killed with SIGKILL and started
//! again on the same work dir, against a fake master. Its tasks keep running without
//! it; the new run re-attaches to them (processes in their cgroups, Docker containers),
//! reports how those that ended meanwhile ended, and sends again what the master had
//! not acknowledged.
//!
//! These need root and cgroup v1 (the process tests), and the Docker engine with the
//! test image `strata-test/busybox:latest` (the Docker tests, see
//! `scripts/docker-setup.sh`): without them they fail saying what is missing, never skip.
//! Every process, cgroup and container a test makes is removed when it ends, even when
//! it fails (the agent's logs are printed then, and always with `RECOVERY_TEST_LOGS=1`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use strata_agent::cgroups::{Cgroups, CgroupsOptions};
use strata_proto::Resources;
use strata_proto::v1::{self, TaskState, TaskStatusReason, docker_info, health_check};

const AGENT_BIN: &str = env!("CARGO_BIN_EXE_strata-agent");
const IMAGE: &str = "strata-test/busybox:latest";
const CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

/// Fails loudly (never skips) without root and the cgroup v1 controllers.
fn require_cgroups() {
    if !nix::unistd::geteuid().is_root() {
        panic!("recovery tests need root: run them as root (as scripts/test.sh and CI do)");
    }
    if !Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
        || !Path::new("/sys/fs/cgroup/cpuacct/cgroup.procs").exists()
            && !Path::new("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs").exists()
    {
        panic!("recovery tests need the cgroup v1 memory and cpuacct controllers mounted");
    }
}

/// Fails (never skips) when the Docker engine or the test image is missing.
fn require_docker() {
    let info = Command::new("docker").args(["info"]).output();
    assert!(
        info.as_ref().is_ok_and(|o| o.status.success()),
        "the Docker engine does not answer: run scripts/docker-setup.sh (as root) to install and start it"
    );
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    assert!(
        image.as_ref().is_ok_and(|o| o.status.success()),
        "the test image {IMAGE} is missing: run scripts/docker-setup.sh to build it"
    );
}

/// Runs the docker CLI; returns its trimmed stdout, or panics with its stderr.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e})"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One test's agent: its work dir (kept across restarts), its cgroups root, the
/// running `strata-agent` process. Dropping it kills the agent and removes every
/// process, cgroup and container the test made.
struct Harness {
    work: tempfile::TempDir,
    /// The agent's stdout and stderr, one pair per run.
    logs: tempfile::TempDir,
    runs: usize,
    cgroups_root: String,
    /// `--isolation` of process tasks.
    isolation: &'static str,
    /// Set for Docker tests: the agent's id, on every container it makes.
    docker_agent_id: Option<String>,
    agent: Option<std::process::Child>,
    /// The HTTP address of the running agent.
    addr: Option<SocketAddr>,
}

impl Harness {
    fn new(test: &str) -> Harness {
        require_cgroups();
        init_tracing();
        Harness {
            work: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            runs: 0,
            cgroups_root: format!("strata-test-rec-{test}-{}", std::process::id()),
            isolation: "cgroups",
            docker_agent_id: None,
            agent: None,
            addr: None,
        }
    }

    /// With the Docker containerizer too, under an agent id of its own (the agent
    /// removes the containers labelled with its id that no task claims).
    fn with_docker(test: &str) -> Harness {
        require_docker();
        let mut h = Harness::new(test);
        let id = format!(
            "rec-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        std::fs::write(h.work.path().join("agent_id"), format!("{id}\n")).unwrap();
        h.docker_agent_id = Some(id);
        h
    }

    fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Starts `strata-agent` against `master` and waits until it listens.
    async fn start(&mut self, master: &FakeMaster) {
        assert!(self.agent.is_none(), "an agent is already running");
        self.runs += 1;
        let out = self.logs.path().join(format!("run-{}.out", self.runs));
        let err = self.logs.path().join(format!("run-{}.log", self.runs));
        let mut args: Vec<String> = [
            "--master",
            &master.addr.to_string(),
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            &self.work_dir().display().to_string(),
            "--resources",
            "cpus:4;mem:2048;disk:1024;ports:[31000-31010]",
            "--isolation",
            self.isolation,
            "--cgroups-root",
            &self.cgroups_root,
            "--registration-backoff",
            "50ms",
            "--registration-backoff-max",
            "200ms",
            "--default-kill-grace",
            "1s",
            "--executor-shutdown-grace-period",
            "2s",
            "--usage-report-interval",
            "1h",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.docker_agent_id.is_some() {
            args.extend(
                [
                    "--containerizers",
                    "process,docker",
                    "--docker-remove-delay",
                    "0s",
                ]
                .map(String::from),
            );
        }
        let child = Command::new(AGENT_BIN)
            .args(&args)
            // The fake master speaks plain text.
            .arg("--insecure")
            .env("RUST_LOG", "info,strata_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start strata-agent");
        self.agent = Some(child);
        let mut addr = None;
        eventually("the agent to listen", || {
            addr = std::fs::read_to_string(&out).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("strata-agent listening on "))
                    .and_then(|a| a.trim().parse().ok())
            });
            addr.is_some()
        })
        .await;
        self.addr = addr;
    }

    /// SIGKILL to the agent (its tasks stay).
    fn kill9(&mut self) {
        let mut child = self.agent.take().expect("a running agent");
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
        self.addr = None;
    }

    /// SIGUSR1 to the agent, which kills its tasks and stops (tests end with it).
    async fn stop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGUSR1)
            .await
    }

    /// Sends `signal` to the agent and waits for it to exit successfully.
    async fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) {
        let Some(mut child) = self.agent.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status =
            tokio::time::timeout(TIMEOUT, tokio::task::spawn_blocking(move || child.wait()))
                .await
                .expect("the agent did not stop in time")
                .unwrap()
                .unwrap();
        assert!(status.success(), "the agent stopped with {status}");
        self.addr = None;
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{path}", self.addr.expect("a running agent"));
        let resp = reqwest::get(url).await.expect("HTTP request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// The container id of a task, from the agent's `/state`.
    async fn container_of(&self, task_id: &str) -> String {
        let state = self.get_json("/state").await;
        state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == task_id)
            .unwrap_or_else(|| panic!("{task_id} not in /state: {state}"))["container_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn sandbox(&self, task_id: &str) -> PathBuf {
        self.work_dir()
            .join("frameworks")
            .join(FRAMEWORK)
            .join("tasks")
            .join(task_id)
    }

    /// The task's cgroup directory in the memory hierarchy, if it exists.
    fn cgroup_dir(&self, container: &str) -> Option<PathBuf> {
        let base = Path::new("/sys/fs/cgroup/memory").join(&self.cgroups_root);
        std::fs::read_dir(&base)
            .ok()?
            .flatten()
            .map(|slot| slot.path().join(container))
            .find(|p| p.is_dir())
    }

    /// The checkpoint as JSON (empty object when there is none yet).
    fn checkpoint(&self) -> serde_json::Value {
        strata_agent::checkpoint::read(self.work_dir())
            .ok()
            .flatten()
            .and_then(|state| serde_json::to_value(state).ok())
            .unwrap_or(serde_json::json!({}))
    }

    /// Waits until the checkpoint satisfies `f` (it is written at most every 500 ms).
    async fn checkpointed(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        eventually(what, || f(&self.checkpoint())).await;
    }

    /// Waits until the checkpoint holds `task_id` launched (its container handle)
    /// and no update of it is pending, unless `pending` says how many are.
    async fn checkpointed_running(&self, task_id: &str, pending: usize) {
        self.checkpointed(&format!("{task_id} in the checkpoint"), |c| {
            let launched = c["tasks"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["task_id"] == task_id && t["container"]["recovery"].is_object())
            });
            let updates = c["updates"].as_array().map_or(0, |us| {
                us.iter().filter(|u| u["task_id"] == task_id).count()
            });
            launched && updates == pending
        })
        .await;
    }

    fn status_file(&self, container: &str) -> PathBuf {
        self.work_dir()
            .join("runtime")
            .join(format!("{container}.status"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("RECOVERY_TEST_LOGS").is_some() {
            for run in 1..=self.runs {
                let log = self.logs.path().join(format!("run-{run}.log"));
                eprintln!(
                    "---- strata-agent run {run} ----\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        // Whatever the tasks left: processes working in the work dir (the tasks and
        // their monitors run in their sandboxes), then their cgroups.
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
        if let Ok(cgroups) = Cgroups::detect(
            CgroupsOptions {
                root: self.cgroups_root.clone(),
                ..CgroupsOptions::default()
            },
            self.work.path(),
        ) {
            for name in cgroups.containers() {
                let _ = cgroups.destroy(&name);
            }
        }
        for c in CONTROLLERS {
            let _ =
                std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(c).join(&self.cgroups_root));
        }
        if let Some(id) = &self.docker_agent_id {
            let ids = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=strata.agent_id={id}"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            for c in ids.lines().filter(|l| !l.is_empty()) {
                let _ = Command::new("docker").args(["rm", "-f", c]).output();
            }
        }
    }
}

/// A process task: records its pid, then runs `then` once `go` exists in its sandbox.
fn gated_task(task_id: &str, then: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        resources: Resources::parse(resources).unwrap().to_proto(),
        ..shell_task(
            task_id,
            &format!("echo $$ > pid; while [ ! -e go ]; do sleep 0.05; done; {then}"),
        )
    }
}

fn docker_task(task_id: &str, command: &str) -> v1::TaskInfo {
    let mut t = shell_task(task_id, command);
    t.resources = Resources::parse("cpus:0.2;mem:64").unwrap().to_proto();
    t.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(v1::DockerInfo {
            image: IMAGE.into(),
            pull_policy: docker_info::PullPolicy::Never as i32,
            ..Default::default()
        }),
        volumes: vec![],
    });
    t
}

/// The processes in a cgroup directory.
fn procs_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The recovered tasks a registration carries, by task id, with their state.
fn registered_tasks(register: &v1::Register) -> HashMap<String, TaskState> {
    register
        .tasks
        .iter()
        .map(|t| {
            (
                t.task.as_ref().unwrap().task_id.clone(),
                strata_proto::states::state_from_i32(t.state),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_running_task_survives_a_kill_9_of_its_agent_and_is_killed_normally_after() {
    let mut h = Harness::new("survive");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    master.run_task(
        framework(),
        shell_task("sleeper", "echo $$ > pid; exec sleep 1000"),
    );
    master.wait_state("sleeper", TaskState::TaskRunning).await;
    let pid = read_pid(&h.sandbox("sleeper").join("pid")).await;
    let container = h.container_of("sleeper").await;
    let cgroup = h.cgroup_dir(&container).expect("the task's cgroup");
    assert!(procs_of(&cgroup).contains(&pid));
    h.checkpointed_running("sleeper", 0).await;

    h.kill9();
    assert!(process_alive(pid), "the task outlives its agent");
    assert!(procs_of(&cgroup).contains(&pid), "in its cgroup");

    h.start(&master).await;
    let register = master.next_register().await;
    assert_eq!(
        register.agent_info.as_ref().unwrap().id,
        "agent-from-fake-master"
    );
    assert_eq!(
        registered_tasks(&register),
        HashMap::from([("sleeper".to_string(), TaskState::TaskRunning)]),
        "the restarted agent tells the master its recovered task runs"
    );
    assert!(process_alive(pid), "the same process still runs");
    assert!(procs_of(&cgroup).contains(&pid), "still in its cgroup");
    let state = h.get_json("/state").await;
    assert_eq!(state["tasks"][0]["state"], "TASK_RUNNING", "{state}");
    assert_eq!(state["tasks"][0]["container_id"], container.as_str());
    // Its cgroup is still the agent's: usage is served for it.
    let mut stats = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while stats.is_null() {
        assert!(tokio::time::Instant::now() < deadline, "no usage");
        let body = h.get_json("/monitor/statistics").await;
        if body[0]["task_id"] == "sleeper" {
            stats = body[0]["statistics"].clone();
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(stats["mem_limit_bytes"], 32 * 1024 * 1024, "{stats}");
    assert!(stats["processes"].as_u64() >= Some(1), "{stats}");

    master.kill_task("sleeper", Some(1.0));
    let updates = master.follow("sleeper").await;
    let killed = updates.last().unwrap();
    assert_eq!(state_of(killed), TaskState::TaskKilled, "{killed:?}");
    assert_eq!(reason_of(killed), TaskStatusReason::ReasonTaskKilled);
    assert_eq!(
        killed.message,
        "task killed (killed by signal 15 (SIGTERM))"
    );
    assert!(!process_alive(pid), "the kill ended the task");
    assert!(h.cgroup_dir(&container).is_none(), "its cgroup is removed");
    assert!(
        !h.status_file(&container).exists(),
        "its status file is removed"
    );

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn sigterm_stops_the_agent_and_leaves_its_tasks_running_for_the_next_run() {
    let mut h = Harness::new("sigterm");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    master.run_task(
        framework(),
        shell_task("upgrade", "echo $$ > pid; exec sleep 1000"),
    );
    master.wait_state("upgrade", TaskState::TaskRunning).await;
    let pid = read_pid(&h.sandbox("upgrade").join("pid")).await;

    // What `systemctl restart strata-agent` sends.
    h.signal_and_wait(nix::sys::signal::Signal::SIGTERM).await;
    assert!(
        process_alive(pid),
        "SIGTERM to the agent leaves its task running"
    );

    h.start(&master).await;
    let register = master.next_register().await;
    assert_eq!(
        registered_tasks(&register),
        HashMap::from([("upgrade".to_string(), TaskState::TaskRunning)]),
        "the next run recovers the task"
    );
    assert!(process_alive(pid), "the same process still runs");

    // SIGUSR1 kills the tasks, then stops the agent. Its TASK_KILLED may still wait
    // behind an update the master has not acknowledged: it is in the checkpoint, for
    // the next run to send.
    h.stop().await;
    assert!(!process_alive(pid), "SIGUSR1 kills the agent's tasks");
    let checkpoint = h.checkpoint();
    let task = &checkpoint["tasks"][0];
    assert_eq!(task["task_id"], "upgrade", "{checkpoint}");
    assert_eq!(task["state"], "TASK_KILLED", "{checkpoint}");
    master.stop().await;
}

#[tokio::test]
async fn tasks_that_end_while_the_agent_is_down_are_reported_with_their_exit_status() {
    let mut h = Harness::new("ended");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    let tasks = [("fails", "exit 3"), ("succeeds", "exit 0")];
    let mut containers = HashMap::new();
    for (id, then) in tasks {
        master.run_task(framework(), gated_task(id, then, "cpus:0.1;mem:32"));
        master.wait_state(id, TaskState::TaskRunning).await;
        containers.insert(id, h.container_of(id).await);
    }
    for (id, _) in tasks {
        h.checkpointed_running(id, 0).await;
    }
    h.kill9();

    // Both end while no agent runs; their monitors record how.
    for (id, _) in tasks {
        let pid = read_pid(&h.sandbox(id).join("pid")).await;
        std::fs::write(h.sandbox(id).join("go"), "").unwrap();
        eventually("the task to end", || !process_alive(pid)).await;
        let status = h.status_file(&containers[id]);
        eventually("its monitor to record its end", || {
            std::fs::read_to_string(&status).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
    }
    assert_eq!(
        std::fs::read_to_string(h.status_file(&containers["fails"])).unwrap(),
        "exit 3\n"
    );

    h.start(&master).await;
    master.next_register().await;
    let mut ends = HashMap::new();
    while ends.len() < 2 {
        let s = master.next_update().await;
        master.ack(&s);
        if strata_proto::is_terminal(state_of(&s)) {
            ends.insert(s.task_id.clone(), s);
        }
    }
    let failed = &ends["fails"];
    assert_eq!(state_of(failed), TaskState::TaskFailed, "{failed:?}");
    assert_eq!(failed.exit_status, Some(3));
    assert_eq!(reason_of(failed), TaskStatusReason::ReasonCommandExited);
    assert_eq!(failed.message, "command exited with status 3");
    let finished = &ends["succeeds"];
    assert_eq!(state_of(finished), TaskState::TaskFinished, "{finished:?}");
    assert_eq!(finished.exit_status, Some(0));
    for (id, _) in tasks {
        assert!(
            h.cgroup_dir(&containers[id]).is_none(),
            "{id}: cgroup removed"
        );
        assert!(
            !h.status_file(&containers[id]).exists(),
            "{id}: status file removed"
        );
    }

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_task_killed_for_memory_while_the_agent_is_down_fails_with_the_memory_reason() {
    let mut h = Harness::new("oom");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    // 128 MiB of real (written) bytes against a 32 MiB limit, once the gate opens.
    let hog = "python3 -c \"import time; x = b'x' * (128 * 1024 * 1024); time.sleep(30)\"";
    master.run_task(framework(), gated_task("hog", hog, "cpus:0.5;mem:32"));
    master.wait_state("hog", TaskState::TaskRunning).await;
    let container = h.container_of("hog").await;
    h.checkpointed_running("hog", 0).await;
    h.kill9();

    std::fs::write(h.sandbox("hog").join("go"), "").unwrap();
    let status = h.status_file(&container);
    eventually("the kernel to kill the task", || {
        std::fs::read_to_string(&status).is_ok_and(|s| !s.is_empty())
    })
    .await;

    h.start(&master).await;
    master.next_register().await;
    let updates = master.follow("hog").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed, "{last:?}");
    assert_eq!(
        reason_of(last),
        TaskStatusReason::ReasonContainerLimitationMemory
    );
    assert_eq!(
        last.message,
        "task used more than its memory limit of 32 MiB and was killed by the kernel"
    );
    assert!(h.cgroup_dir(&container).is_none(), "cgroup removed");

    h.stop().await;
    master.stop().await;
}

/// The uuids of the updates pending in the checkpoint, by task.
fn pending_uuids(checkpoint: &serde_json::Value, task_id: &str) -> Vec<String> {
    checkpoint["updates"]
        .as_array()
        .map(|us| {
            us.iter()
                .filter(|u| u["task_id"] == task_id)
                .filter_map(|u| u["uuid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_update_is_checkpointed_before_it_is_sent_so_an_ended_task_stays_ended() {
    let mut h = Harness::new("ahead");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    master.run_task(framework(), shell_task("brief", "exec sleep 1000"));
    // The checkpoint is read the moment an update arrives, never waited for.
    loop {
        let s = master.next_update().await;
        let c = h.checkpoint();
        assert!(
            pending_uuids(&c, "brief").contains(&s.uuid),
            "{} reached the master before the checkpoint: {c}",
            strata_proto::state_name(state_of(&s))
        );
        if state_of(&s) == TaskState::TaskRunning {
            let task = &c["tasks"][0];
            assert!(
                task["container"]["recovery"].is_object(),
                "RUNNING sent before the container was checkpointed: {c}"
            );
            master.ack(&s);
            break;
        }
        master.ack(&s);
    }

    master.kill_task("brief", Some(1.0));
    let killed = loop {
        let s = master.next_update().await;
        let c = h.checkpoint();
        assert!(
            pending_uuids(&c, "brief").contains(&s.uuid),
            "{} reached the master before the checkpoint: {c}",
            strata_proto::state_name(state_of(&s))
        );
        if strata_proto::is_terminal(state_of(&s)) {
            break s;
        }
        master.ack(&s);
    };
    assert_eq!(state_of(&killed), TaskState::TaskKilled, "{killed:?}");
    // Killed the moment TASK_KILLED left, before it was acknowledged.
    h.kill9();

    h.start(&master).await;
    let register = master.next_register().await;
    let registered = registered_tasks(&register);
    assert!(
        registered
            .get("brief")
            .is_none_or(|s| *s == TaskState::TaskKilled),
        "the restarted agent re-opened a task whose end it had reported: {registered:?}"
    );
    let again = master.next_update().await;
    assert_eq!(state_of(&again), TaskState::TaskKilled, "{again:?}");
    assert_eq!(again.uuid, killed.uuid, "the same update, by its uuid");
    master.ack(&again);

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn updates_not_acknowledged_before_a_kill_9_are_sent_again_in_order() {
    let mut h = Harness::new("resend");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    master.run_task(
        framework(),
        gated_task("quiet", "exit 0", "cpus:0.1;mem:32"),
    );
    let starting = master.next_update().await;
    assert_eq!(state_of(&starting), TaskState::TaskStarting);
    master.ack(&starting);
    // TASK_RUNNING is never acknowledged; the task finishes behind it.
    let running = master.next_update().await;
    assert_eq!(state_of(&running), TaskState::TaskRunning);
    std::fs::write(h.sandbox("quiet").join("go"), "").unwrap();
    h.checkpointed("RUNNING and FINISHED pending in the checkpoint", |c| {
        let states: Vec<&str> = c["updates"]
            .as_array()
            .map(|us| us.iter().filter_map(|u| u["state"].as_str()).collect())
            .unwrap_or_default();
        states == ["TASK_RUNNING", "TASK_FINISHED"]
    })
    .await;
    let finished_uuid = h.checkpoint()["updates"][1]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    h.kill9();

    h.start(&master).await;
    master.next_register().await;
    let again = master.next_update().await;
    assert_eq!(state_of(&again), TaskState::TaskRunning);
    assert_eq!(again.uuid, running.uuid, "the same update, by its uuid");
    master.ack(&again);
    let finished = master.next_update().await;
    assert_eq!(state_of(&finished), TaskState::TaskFinished);
    assert_eq!(finished.uuid, finished_uuid);
    assert_eq!(finished.exit_status, Some(0));
    master.ack(&finished);

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_kill_in_progress_when_the_agent_dies_is_carried_out_after_the_restart() {
    let mut h = Harness::new("rekill");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    // Ignores SIGTERM: only the SIGKILL at the end of the grace period ends it.
    master.run_task(
        framework(),
        shell_task(
            "stubborn",
            "trap '' TERM; echo $$ > pid; while true; do sleep 0.1; done",
        ),
    );
    master.wait_state("stubborn", TaskState::TaskRunning).await;
    let pid = read_pid(&h.sandbox("stubborn").join("pid")).await;
    h.checkpointed_running("stubborn", 0).await;
    master.kill_task("stubborn", Some(3.0));
    h.checkpointed("the kill in the checkpoint", |c| {
        c["tasks"][0]["kill"]["grace_seconds"] == 3.0
    })
    .await;
    h.kill9();
    assert!(
        process_alive(pid),
        "the kill was cut short by the agent's death"
    );

    h.start(&master).await;
    master.next_register().await;
    let updates = master.follow("stubborn").await;
    let killed = updates.last().unwrap();
    assert_eq!(state_of(killed), TaskState::TaskKilled, "{killed:?}");
    assert_eq!(killed.message, "task killed (killed by signal 9 (SIGKILL))");
    assert!(!process_alive(pid));

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_docker_task_survives_a_kill_9_of_its_agent_and_its_output_is_not_duplicated() {
    let mut h = Harness::with_docker("docker-survive");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    let script = "echo before; echo err-before >&2; while [ ! -e /mnt/sandbox/go ]; do sleep 0.1; done; echo after; exec sleep 1000";
    master.run_task(framework(), docker_task("web", script));
    master.wait_state("web", TaskState::TaskRunning).await;
    let stdout = h.sandbox("web").join("stdout");
    eventually("the output before the restart", || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s == "before\n")
    })
    .await;
    h.checkpointed_running("web", 0).await;
    let name = h.checkpoint()["tasks"][0]["container"]["recovery"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    h.kill9();
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &name]),
        "true",
        "the container outlives its agent"
    );

    h.start(&master).await;
    let register = master.next_register().await;
    assert_eq!(
        registered_tasks(&register),
        HashMap::from([("web".to_string(), TaskState::TaskRunning)])
    );
    std::fs::write(h.sandbox("web").join("go"), "").unwrap();
    eventually("the output after the restart, once", || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s == "before\nafter\n")
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(h.sandbox("web").join("stderr")).unwrap(),
        "err-before\n"
    );

    master.kill_task("web", Some(1.0));
    let updates = master.follow("web").await;
    let killed = updates.last().unwrap();
    assert_eq!(state_of(killed), TaskState::TaskKilled, "{killed:?}");
    eventually("the container to be removed", || {
        !Command::new("docker")
            .args(["inspect", &name])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&stdout).unwrap(),
        "before\nafter\n",
        "nothing copied twice"
    );

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_docker_task_that_exits_while_the_agent_is_down_is_reported_with_its_code() {
    let mut h = Harness::with_docker("docker-exit");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    let script =
        "echo started; while [ ! -e /mnt/sandbox/go ]; do sleep 0.1; done; echo ending; exit 4";
    master.run_task(framework(), docker_task("exits", script));
    master.wait_state("exits", TaskState::TaskRunning).await;
    h.checkpointed_running("exits", 0).await;
    let name = h.checkpoint()["tasks"][0]["container"]["recovery"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    h.kill9();
    std::fs::write(h.sandbox("exits").join("go"), "").unwrap();
    eventually("the container to exit", || {
        docker(&["inspect", "-f", "{{.State.Running}}", &name]) == "false"
    })
    .await;

    h.start(&master).await;
    master.next_register().await;
    let updates = master.follow("exits").await;
    let failed = updates.last().unwrap();
    assert_eq!(state_of(failed), TaskState::TaskFailed, "{failed:?}");
    assert_eq!(failed.exit_status, Some(4));
    assert_eq!(failed.message, "command exited with status 4");
    assert_eq!(
        std::fs::read_to_string(h.sandbox("exits").join("stdout")).unwrap(),
        "started\nending\n",
        "what it wrote while the agent was down is in the sandbox too"
    );

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn without_cgroups_tasks_are_recovered_by_their_process_group() {
    let mut h = Harness::new("nocgroups");
    h.isolation = "none";
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    master.run_task(
        framework(),
        shell_task("sleeper", "echo $$ > pid; exec sleep 1000"),
    );
    master.wait_state("sleeper", TaskState::TaskRunning).await;
    master.run_task(
        framework(),
        gated_task("exits", "exit 5", "cpus:0.1;mem:32"),
    );
    master.wait_state("exits", TaskState::TaskRunning).await;
    let sleeper = read_pid(&h.sandbox("sleeper").join("pid")).await;
    let exits = read_pid(&h.sandbox("exits").join("pid")).await;
    h.checkpointed_running("sleeper", 0).await;
    h.checkpointed_running("exits", 0).await;
    h.kill9();
    std::fs::write(h.sandbox("exits").join("go"), "").unwrap();
    eventually("the task to end", || !process_alive(exits)).await;

    h.start(&master).await;
    let register = master.next_register().await;
    assert_eq!(
        registered_tasks(&register).get("sleeper"),
        Some(&TaskState::TaskRunning)
    );
    let updates = master.follow("exits").await;
    let failed = updates.last().unwrap();
    assert_eq!(state_of(failed), TaskState::TaskFailed, "{failed:?}");
    assert_eq!(failed.exit_status, Some(5));
    assert!(process_alive(sleeper));

    master.kill_task("sleeper", Some(1.0));
    let updates = master.follow("sleeper").await;
    let killed = updates.last().unwrap();
    assert_eq!(state_of(killed), TaskState::TaskKilled, "{killed:?}");
    assert_eq!(
        killed.message,
        "task killed (killed by signal 15 (SIGTERM))"
    );
    assert!(!process_alive(sleeper));

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn in_a_pid_namespace_the_namespaces_shim_is_the_monitor() {
    let mut h = Harness::new("pidns");
    h.isolation = "cgroups,pid";
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    // pid 1 of its namespace does not get the SIGTERM it does not handle: the kill
    // ends it with SIGKILL when the grace is over.
    master.run_task(framework(), shell_task("init", "exec sleep 1000"));
    master.wait_state("init", TaskState::TaskRunning).await;
    master.run_task(
        framework(),
        gated_task("exits", "exit 6", "cpus:0.1;mem:32"),
    );
    master.wait_state("exits", TaskState::TaskRunning).await;
    let init = h.container_of("init").await;
    let exits = h.container_of("exits").await;
    let init_cgroup = h.cgroup_dir(&init).unwrap();
    h.checkpointed_running("init", 0).await;
    h.checkpointed_running("exits", 0).await;
    h.kill9();
    std::fs::write(h.sandbox("exits").join("go"), "").unwrap();
    eventually("the pid 1 of a namespace to record its end", || {
        std::fs::read_to_string(h.status_file(&exits)).is_ok_and(|s| s == "exit 6\n")
    })
    .await;
    let before = procs_of(&init_cgroup);
    assert!(!before.is_empty());

    h.start(&master).await;
    master.next_register().await;
    let updates = master.follow("exits").await;
    let failed = updates.last().unwrap();
    assert_eq!(state_of(failed), TaskState::TaskFailed, "{failed:?}");
    assert_eq!(failed.exit_status, Some(6));
    assert_eq!(
        procs_of(&init_cgroup),
        before,
        "the same processes still run"
    );

    master.kill_task("init", Some(0.5));
    let updates = master.follow("init").await;
    let killed = updates.last().unwrap();
    assert_eq!(state_of(killed), TaskState::TaskKilled, "{killed:?}");
    assert_eq!(killed.message, "task killed (killed by signal 9 (SIGKILL))");
    assert!(h.cgroup_dir(&init).is_none(), "cgroup removed");

    h.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn the_health_checks_of_a_recovered_task_start_again() {
    let mut h = Harness::new("health");
    let mut master = FakeMaster::start().await;
    h.start(&master).await;
    master.next_register().await;

    let mut task = shell_task("checked", "exec sleep 1000");
    task.health_check = Some(v1::HealthCheck {
        r#type: health_check::Type::Command as i32,
        command: "test -e pid || echo $$ > pid".into(),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(1.0),
        ..Default::default()
    });
    master.run_task(framework(), task);
    let healthy = |s: &v1::TaskStatus| {
        reason_of(s) == TaskStatusReason::ReasonTaskHealthCheckStatusUpdated
            && s.healthy == Some(true)
    };
    loop {
        let s = master.next_update().await;
        master.ack(&s);
        assert!(!strata_proto::is_terminal(state_of(&s)), "{s:?}");
        if healthy(&s) {
            break;
        }
    }
    h.checkpointed_running("checked", 0).await;
    h.kill9();

    h.start(&master).await;
    master.next_register().await;
    let s = master.next_update().await;
    master.ack(&s);
    assert!(healthy(&s), "the new run checks the task again: {s:?}");
    assert_eq!(state_of(&s), TaskState::TaskRunning);

    master.kill_task("checked", Some(1.0));
    let updates = master.follow("checked").await;
    assert_eq!(names(&updates).last(), Some(&"TASK_KILLED"));

    h.stop().await;
    master.stop().await;
}
