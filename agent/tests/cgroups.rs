//! Cgroup isolation of process tasks, enforced by the kernel (issue 3): memory limit,
//! cpu cap, the cgroup as the unit of a kill, orphan cleanup, pid namespaces, usage.
//!
//! These need root and cgroup v1 (this project's CI machine). Without them every test
//! fails, saying what is missing: none is ever skipped.
//! cgroup v2 enforcement cannot run here (the v2 controllers are bound to v1); v2 file
//! names and values are covered by the unit tests of `strata_agent::cgroups::limits`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use strata_agent::AgentOptions;
use strata_agent::cgroups::{Cgroups, CgroupsOptions, Limits, dynmods};
use strata_agent::isolation::{IsolationMode, IsolationOptions, Isolator};
use strata_proto::Resources;
use strata_proto::v1::{self, TaskState, TaskStatusReason};

/// These tests watch the kernel enforce limits: without root and cgroup v1 they fail
/// loudly (never skip), saying what is missing.
fn require_cgroups() {
    if !nix::unistd::geteuid().is_root() {
        panic!("cgroup tests need root: run them as root (as scripts/test.sh and CI do)");
    }
    if !Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
        || !Path::new("/sys/fs/cgroup/cpuacct/cgroup.procs").exists()
            && !Path::new("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs").exists()
    {
        panic!("cgroup tests need the cgroup v1 memory and cpuacct controllers mounted");
    }
}

/// A cgroups root of its own per test, so tests running side by side never meet.
fn root_for(test: &str) -> String {
    format!("strata-test-{test}-{}", std::process::id())
}

fn isolated_options(
    master: std::net::SocketAddr,
    work_dir: &Path,
    root: &str,
    isolators: Vec<Isolator>,
) -> AgentOptions {
    let mut o = options(master, work_dir);
    o.isolation = IsolationOptions {
        mode: IsolationMode::Explicit(isolators),
        cgroups: CgroupsOptions {
            root: root.to_string(),
            ..CgroupsOptions::default()
        },
    };
    o.default_kill_grace = Duration::from_secs(1);
    o
}

fn task(task_id: &str, command: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        resources: Resources::parse(resources).unwrap().to_proto(),
        ..shell_task(task_id, command)
    }
}

/// The directory of a container's cgroup in one v1 controller, found under `root`.
fn cgroup_dir(controller: &str, root: &str, container: &str) -> Option<PathBuf> {
    let base = Path::new("/sys/fs/cgroup").join(controller).join(root);
    std::fs::read_dir(&base)
        .ok()?
        .flatten()
        .map(|slot| slot.path().join(container))
        .find(|p| p.is_dir())
}

/// The container id of a task, from the agent's `/state`.
async fn container_of(agent: &TestAgent, task_id: &str) -> String {
    let (_, state) = agent.get_json("/state").await;
    state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == task_id)
        .and_then(|t| t["container_id"].as_str())
        .expect("the task in /state")
        .to_string()
}

/// Removes what is left of a test's cgroups root (its agents removed their slots).
fn remove_root(root: &str) {
    for controller in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(controller).join(root));
    }
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_killed_by_the_kernel() {
    require_cgroups();
    init_tracing();
    let root = root_for("mem");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;

    // 128 MiB of real (written) bytes against a 64 MiB limit, no swap.
    master.run_task(
        framework(),
        task(
            "hog",
            "python3 -c \"import time; x = b'x' * (128 * 1024 * 1024); time.sleep(30)\"",
            "cpus:0.5;mem:64",
        ),
    );
    let updates = master.follow("hog").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed, "{last:?}");
    assert_eq!(
        TaskStatusReason::try_from(last.reason).unwrap(),
        TaskStatusReason::ReasonContainerLimitationMemory
    );
    assert_eq!(
        last.message,
        "task used more than its memory limit of 64 MiB and was killed by the kernel"
    );

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

/// A child the kernel kills for memory ends the whole task (as Mesos' memory isolator
/// does), even though the task's own process would run on.
#[tokio::test]
async fn a_child_killed_for_memory_ends_the_task() {
    require_cgroups();
    init_tracing();
    let root = root_for("memchild");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;

    master.run_task(
        framework(),
        task(
            "parent",
            "python3 -c \"x = b'x' * (128 * 1024 * 1024)\"; sleep 600",
            "cpus:0.5;mem:64",
        ),
    );
    let updates = tokio::time::timeout(Duration::from_secs(60), master.follow("parent"))
        .await
        .expect("the task still runs a minute after its child was killed for memory");
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed, "{last:?}");
    assert_eq!(
        TaskStatusReason::try_from(last.reason).unwrap(),
        TaskStatusReason::ReasonContainerLimitationMemory
    );
    assert!(last.message.contains("64 MiB"), "{}", last.message);

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

#[tokio::test]
async fn half_a_cpu_is_at_most_half_a_core_by_the_kernels_accounting() {
    require_cgroups();
    init_tracing();
    let root = root_for("cpu");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;

    master.run_task(
        framework(),
        task("spin", "while :; do :; done", "cpus:0.5;mem:32"),
    );
    master.wait_state("spin", TaskState::TaskRunning).await;
    let container = container_of(&agent, "spin").await;
    let acct = cgroup_dir("cpuacct", &root, &container).expect("the task's cpuacct cgroup");
    let quota = std::fs::read_to_string(
        cgroup_dir("cpu", &root, &container)
            .unwrap()
            .join("cpu.cfs_quota_us"),
    )
    .unwrap();
    assert_eq!(quota.trim(), "50000");
    let usage = || -> u64 {
        std::fs::read_to_string(acct.join("cpuacct.usage"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // The kernel's own accounting over a window: the share of one core used.
    let (u0, t0) = (usage(), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (u1, t1) = (usage(), std::time::Instant::now());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    assert!(share > 0.0, "the task did not run at all");
    assert!(
        share <= 0.55,
        "cpus 0.5 used {:.1}% of a core",
        share * 100.0
    );

    master.kill_task("spin", Some(1.0));
    let updates = master.follow("spin").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskKilled);
    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

#[tokio::test]
async fn a_double_forked_daemon_dies_with_its_task_and_the_cgroup_goes() {
    require_cgroups();
    init_tracing();
    let root = root_for("daemon");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;
    // setsid: a new session and process group, reparented to init: out of reach of
    // the task's process group, not of its cgroup.
    let daemon = "(setsid sh -c 'sleep 1000 & echo $! > daemon.pid' &)";

    // Killed.
    master.run_task(
        framework(),
        task(
            "killed",
            &format!("{daemon}; sleep 1000"),
            "cpus:0.1;mem:32",
        ),
    );
    master.wait_state("killed", TaskState::TaskRunning).await;
    let container = container_of(&agent, "killed").await;
    let pid = read_pid(&agent.sandbox("killed").join("daemon.pid")).await;
    assert!(process_alive(pid));
    master.kill_task("killed", Some(1.0));
    let updates = master.follow("killed").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskKilled);
    assert!(!process_alive(pid), "the daemon outlived its killed task");
    assert_eq!(
        cgroup_dir("memory", &root, &container),
        None,
        "cgroup left behind"
    );

    // Exited on its own.
    master.run_task(
        framework(),
        task(
            "exits",
            &format!("{daemon}; while [ ! -s daemon.pid ]; do sleep 0.05; done; exit 0"),
            "cpus:0.1;mem:32",
        ),
    );
    let updates = master.follow("exits").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskFinished);
    let pid = read_pid(&agent.sandbox("exits").join("daemon.pid")).await;
    assert!(!process_alive(pid), "the daemon outlived its finished task");
    for controller in ["memory", "cpu", "cpuacct", "freezer", "pids"] {
        let base = Path::new("/sys/fs/cgroup").join(controller).join(&root);
        let left: Vec<_> = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|slot| {
                std::fs::read_dir(slot.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

/// `--cgroups-favor-dynmods` sets the kernel's option on the cgroup2 mount and keeps
/// the mount's other options; the test puts the host's setting back.
#[test]
fn favor_dynmods_is_set_on_the_cgroup2_mount() {
    require_cgroups();
    let before =
        dynmods::cgroup2_mount().expect("a cgroup2 mount (on a v1 host: /sys/fs/cgroup/unified)");
    let root = root_for("dynmods");
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::detect(
        CgroupsOptions {
            root: root.clone(),
            favor_dynmods: true,
            ..CgroupsOptions::default()
        },
        dir.path(),
    )
    .expect("cgroups");
    let after = dynmods::cgroup2_mount().unwrap();
    let was_on = before.super_options.iter().any(|o| o == "favordynmods");
    dynmods::set(was_on).unwrap();
    assert!(
        cgroups.describe().contains("favordynmods on"),
        "{}",
        cgroups.describe()
    );
    assert!(
        after.super_options.iter().any(|o| o == "favordynmods"),
        "{after:?}"
    );
    let others = |m: &dynmods::MountLine| {
        m.super_options
            .iter()
            .filter(|o| *o != "favordynmods")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&after), others(&before));
    assert_eq!(after.mount_options, before.mount_options);
    assert_eq!(
        dynmods::cgroup2_mount().unwrap(),
        before,
        "put back as it was"
    );
    drop(cgroups);
    remove_root(&root);
}

#[tokio::test]
async fn orphan_cgroups_are_removed_at_start() {
    require_cgroups();
    init_tracing();
    let root = root_for("orphans");
    let dir = tempfile::tempdir().unwrap();
    // A previous run of this agent left a cgroup with a process in it.
    let cgroups = Cgroups::detect(
        CgroupsOptions {
            root: root.clone(),
            ..CgroupsOptions::default()
        },
        dir.path(),
    )
    .expect("cgroups");
    cgroups.create("left-behind", &Limits::default()).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    cgroups.add_process("left-behind", sleeper.id()).unwrap();
    assert_eq!(cgroups.procs("left-behind"), vec![u64::from(sleeper.id())]);
    // Another agent's cgroup under the same root is not this agent's business.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Cgroups::detect(cgroups.options().clone(), other_dir.path()).unwrap();
    other.create("someone-elses", &Limits::default()).unwrap();

    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;
    let status = tokio::time::timeout(TIMEOUT, tokio::task::spawn_blocking(move || sleeper.wait()))
        .await
        .expect("the orphan's process was not killed")
        .unwrap()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    assert!(!cgroups.exists("left-behind"));
    assert!(other.exists("someone-elses"));

    agent.stop().await;
    master.stop().await;
    other.destroy("someone-elses").unwrap();
    drop((cgroups, other));
    remove_root(&root);
}

#[tokio::test]
async fn a_pid_namespace_shows_the_task_only_its_own_processes() {
    require_cgroups();
    init_tracing();
    let root = root_for("pidns");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups, Isolator::Pid],
    ))
    .await;
    master.next_register().await;

    master.run_task(
        framework(),
        task(
            "ns",
            "echo $$ > mypid; ls /proc | grep -c '^[0-9]' > count; exit 3",
            "cpus:0.1;mem:32",
        ),
    );
    let updates = master.follow("ns").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed);
    assert_eq!(
        last.exit_status,
        Some(3),
        "the exit status crosses the namespace"
    );
    let read = |f: &str| std::fs::read_to_string(agent.sandbox("ns").join(f)).unwrap();
    assert_eq!(
        read("mypid").trim(),
        "1",
        "the task is pid 1 of its namespace"
    );
    let count: usize = read("count").trim().parse().unwrap();
    assert!(
        count <= 4,
        "the task sees {count} processes (itself, ls, grep)"
    );

    // Kill: pid 1 that does not handle SIGTERM ends at the SIGKILL after the grace.
    master.run_task(
        framework(),
        task("ns-kill", "sleep 1000", "cpus:0.1;mem:32"),
    );
    master.wait_state("ns-kill", TaskState::TaskRunning).await;
    master.kill_task("ns-kill", Some(0.5));
    let updates = master.follow("ns-kill").await;
    assert_eq!(state_of(updates.last().unwrap()), TaskState::TaskKilled);

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

#[tokio::test]
async fn usage_is_at_monitor_statistics_and_reported_to_the_master() {
    require_cgroups();
    init_tracing();
    let root = root_for("usage");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = isolated_options(master.addr, dir.path(), &root, vec![Isolator::Cgroups]);
    o.usage_report_interval = Duration::from_millis(200);
    let agent = TestAgent::start(o).await;
    master.next_register().await;

    master.run_task(
        framework(),
        task("busy", "sleep 1000 & sleep 1000", "cpus:0.5;mem:64"),
    );
    master.wait_state("busy", TaskState::TaskRunning).await;
    let mut entry = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while entry.is_null() || entry["statistics"]["processes"].as_u64() < Some(3) {
        assert!(tokio::time::Instant::now() < deadline, "no usage: {entry}");
        let (status, body) = agent.get_json("/monitor/statistics").await;
        assert_eq!(status, 200);
        entry = body[0].clone();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entry["task_id"], "busy");
    assert_eq!(entry["framework_id"], FRAMEWORK);
    let stats = &entry["statistics"];
    assert_eq!(stats["cpus_limit"], 0.5);
    assert_eq!(stats["mem_limit_bytes"], 64 * 1024 * 1024);
    assert!(stats["mem_total_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["cpus_total_time_secs"].as_f64().is_some(), "{stats}");

    // The master gets the same, every --usage-report-interval.
    let report = loop {
        if let Seen::Message(v1::AgentMessage {
            message: Some(v1::agent_message::Message::UsageReport(r)),
        }) = master.next().await
        {
            break r;
        }
    };
    assert_eq!(report.tasks[0].task_id, "busy");
    let stats = report.tasks[0].statistics.as_ref().unwrap();
    assert_eq!(stats.mem_limit_bytes, Some(64 * 1024 * 1024));

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}

#[tokio::test]
async fn required_cgroups_that_cannot_be_used_fail_launches_clearly() {
    // Runs anywhere: an invalid root makes cgroups unusable whatever the machine.
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        "../not-ours",
        vec![Isolator::Cgroups],
    ))
    .await;
    master.next_register().await;
    master.run_task(framework(), task("t", "true", "cpus:0.1;mem:32"));
    let updates = master.follow("t").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed);
    assert_eq!(
        TaskStatusReason::try_from(last.reason).unwrap(),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        last.message
            .contains("cgroups are not available: invalid cgroups root"),
        "{}",
        last.message
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_task_that_names_a_user_runs_as_that_user_in_its_cgroup() {
    require_cgroups();
    init_tracing();
    let root = root_for("user");
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(isolated_options(
        master.addr,
        dir.path(),
        &root,
        vec![Isolator::Cgroups, Isolator::Pid],
    ))
    .await;
    master.next_register().await;
    let mut t = task(
        "as-nobody",
        "id -u > uid; grep memory /proc/self/cgroup > cg",
        "cpus:0.1;mem:32",
    );
    t.command.as_mut().unwrap().user = "nobody".into();
    master.run_task(framework(), t);
    let updates = master.follow("as-nobody").await;
    assert_eq!(
        state_of(updates.last().unwrap()),
        TaskState::TaskFinished,
        "{updates:?}"
    );
    let read = |f: &str| std::fs::read_to_string(agent.sandbox("as-nobody").join(f)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(read("uid").trim(), nobody.uid.to_string());
    assert!(read("cg").contains(&format!("/{root}/")), "{}", read("cg"));

    agent.stop().await;
    master.stop().await;
    remove_root(&root);
}
