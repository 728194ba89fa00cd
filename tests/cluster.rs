//! The whole loop over loopback with real processes: a master, agents, and schedulers
//! built on the SDK (`hello`, `strata run`), including agent and master failures.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, run_with_timeout, wait_until};

/// The `strata` CLI, for this insecure cluster.
fn strata() -> Command {
    common::cli()
}

fn tasks(state: &serde_json::Value) -> Vec<serde_json::Value> {
    state["tasks"].as_array().cloned().unwrap_or_default()
}

fn agent_by_host<'a>(state: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    state["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["hostname"] == host))
        .unwrap_or_else(|| panic!("agent {host} not in /state: {state}"))
}

#[test]
fn hello_runs_50_tasks_across_two_agents() {
    let cluster = Cluster::start(2);
    let mut cmd = common::insecure_example("hello");
    cmd.args(["--master", &cluster.master.addr, "--tasks", "50"]);
    let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(180));
    assert_eq!(code, 0, "hello failed\nstdout:\n{out}\nstderr:\n{err}");

    let state = cluster.state();
    let finished: Vec<_> = tasks(&state)
        .into_iter()
        .filter(|t| t["state"] == "TASK_FINISHED")
        .collect();
    assert_eq!(finished.len(), 50, "50 finished tasks in /state");
    let mut agents: Vec<_> = finished
        .iter()
        .map(|t| t["agent_id"].as_str().unwrap().to_string())
        .collect();
    agents.sort();
    agents.dedup();
    assert_eq!(agents.len(), 2, "the tasks ran on both agents");
    // Everything was given back.
    for a in state["agents"].as_array().unwrap() {
        assert_eq!(
            a["used"]["cpus"].as_f64().unwrap_or(0.0),
            0.0,
            "agent {} has nothing used",
            a["hostname"]
        );
    }
}

#[test]
fn sweep_runs_30_tasks_at_most_4_at_once_retries_failures_and_gathers_every_output() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    std::fs::create_dir(&running).unwrap();
    // The tasks run as the agent's default user (nobody), not root.
    for writable in [dir.path(), running.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let peaks = dir.path().join("peaks");
    // Each try marks itself running while it sleeps and notes how many tries are;
    // even parameters fail their first try, odd ones their first two.
    let command = format!(
        "mkdir {r}/$P.$ATTEMPT; ls {r} | wc -l >> {p}; sleep 0.3; rmdir {r}/$P.$ATTEMPT; \
         [ $ATTEMPT -gt $((P % 2)) ] || exit 3; echo $P squared is $((P * P))",
        r = running.display(),
        p = peaks.display()
    );
    let mut cmd = common::insecure_example("sweep");
    cmd.args(["--master", &cluster.master.addr, "--tasks", "30"]);
    cmd.args(["--max-running", "4", "--retries", "2"]);
    cmd.args(["--command", &command]);
    let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(240));
    assert_eq!(code, 0, "sweep failed\nstdout:\n{out}\nstderr:\n{err}");

    let expected: String = (0..30)
        .map(|p| format!("{p}\t{p} squared is {}\n", p * p))
        .collect();
    assert_eq!(out, expected, "every output, in parameter order");
    assert_eq!(
        err.matches("trying again").count(),
        45,
        "30 first tries and 15 second tries failed and were retried\n{err}"
    );
    let peaks: Vec<usize> = std::fs::read_to_string(&peaks)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(peaks.len(), 75, "75 tries ran");
    let peak = peaks.iter().max().copied().unwrap_or_default();
    assert!(peak <= 4, "at most 4 tries ran at once, saw {peak}");
    assert!(peak >= 2, "tries ran side by side, at most {peak} at once");

    // Every try ran under a task id of its own; the framework is gone.
    let state = cluster.state();
    let in_state = |s: &str| tasks(&state).iter().filter(|t| t["state"] == s).count();
    assert_eq!(
        (in_state("TASK_FINISHED"), in_state("TASK_FAILED")),
        (30, 45)
    );
    assert!(
        tasks(&state).iter().any(|t| t["id"] == "sweep-1-2"),
        "an odd parameter's third try"
    );
    assert_eq!(state["frameworks"].as_array().map(Vec::len), Some(0));
}

#[test]
fn strata_run_prints_output_and_exits_with_the_task_status() {
    let cluster = Cluster::start(1);
    let mut cmd = strata();
    cmd.args([
        "run",
        "--master",
        &cluster.master.addr,
        "--",
        "echo hello from strata run",
    ]);
    let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("hello from strata run"),
        "the task's output is shown: {out}"
    );
    assert!(
        err.contains("TASK_FINISHED"),
        "state changes are shown: {err}"
    );

    let mut cmd = strata();
    cmd.args([
        "run",
        "--master",
        &cluster.master.addr,
        "--",
        "echo oops >&2; exit 3",
    ]);
    let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(
        code, 3,
        "exit status of the task\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains("TASK_FAILED"), "{err}");
    assert!(err.contains("oops"), "the task's stderr is shown: {err}");

    // exec form: several words are argv, not a shell line.
    let mut cmd = strata();
    cmd.args([
        "run",
        "--master",
        &cluster.master.addr,
        "--",
        "/bin/echo",
        "a b",
        "$HOME",
    ]);
    let (code, out, _) = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(code, 0);
    assert!(
        out.contains("a b $HOME"),
        "arguments reach the process unchanged: {out}"
    );
}

#[test]
fn ctrl_c_on_strata_run_kills_the_task() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let mut child = strata()
        .args([
            "run",
            "--master",
            &cluster.master.addr,
            "--name",
            "sleeper",
            "--",
            "sleep 300",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the task to run", || {
        tasks(&cluster.state())
            .iter()
            .any(|t| t["state"] == "TASK_RUNNING")
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0), "a killed task is not a success");
    wait_until(Duration::from_secs(30), "TASK_KILLED in /state", || {
        tasks(&cluster.state())
            .iter()
            .any(|t| t["state"] == "TASK_KILLED")
    });
    // No `sleep 300` survives. The update can come a moment before the last process
    // of the group is gone (the shell's child dies of the group's SIGTERM on its own
    // schedule): waited for, not sampled once.
    let survivors = || {
        let out = Command::new("pgrep")
            .args(["-f", "^sleep 300$"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_until(
        Duration::from_secs(10),
        "the task's process to be gone",
        || survivors().is_empty(),
    );
}

#[test]
fn an_agent_killed_with_9_becomes_unreachable_and_leaves_the_pool() {
    let mut cluster = Cluster::start(2);
    let before = cluster.state();
    let id = agent_by_host(&before, "agent1.test")["id"]
        .as_str()
        .unwrap()
        .to_string();

    cluster.agents[1].kill9();
    wait_until(Duration::from_secs(30), "agent1 unreachable", || {
        agent_by_host(&cluster.state(), "agent1.test")["status"] == "UNREACHABLE"
    });
    let metrics = common::http_get(&cluster.master_url("/metrics")).unwrap();
    assert!(
        metrics.contains("strata_master_agents_unreachable 1"),
        "{metrics}"
    );

    // A task asking for more than the remaining agent has cannot be placed; one that
    // fits runs on the survivor.
    let mut cmd = strata();
    cmd.args(["run", "--master", &cluster.master.addr, "--", "true"]);
    let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}{err}");
    let state = cluster.state();
    let ran_on: Vec<_> = tasks(&state)
        .iter()
        .map(|t| t["agent_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !ran_on.contains(&id),
        "nothing runs on the unreachable agent"
    );

    // The agent comes back with the same id and is offered again.
    cluster.add_agent(1, "cpus:2;mem:1024;disk:1000;ports:[31000-31100]");
    wait_until(Duration::from_secs(30), "agent1 active again", || {
        agent_by_host(&cluster.state(), "agent1.test")["status"] == "ACTIVE"
    });
    assert_eq!(
        agent_by_host(&cluster.state(), "agent1.test")["id"],
        id.as_str(),
        "same agent id after restart"
    );
}

#[test]
fn master_restart_agents_and_framework_reconnect() {
    let mut cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.out");
    let err = dir.path().join("run.err");
    let mut run = strata()
        .args([
            "run",
            "--master",
            &cluster.master.addr,
            "--name",
            "survivor",
            "--",
            "sleep 6; echo survived",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the task to run", || {
        tasks(&cluster.state())
            .iter()
            .any(|t| t["state"] == "TASK_RUNNING")
    });
    let framework_id = cluster.state()["frameworks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    cluster.restart_master();
    cluster.wait_for_agents(1);
    wait_until(
        Duration::from_secs(30),
        "the framework to re-subscribe with its id",
        || {
            let s = cluster.state();
            s["frameworks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["id"] == framework_id.as_str() && f["connected"] == true)
        },
    );
    wait_until(
        Duration::from_secs(30),
        "the task known to the new master",
        || {
            tasks(&cluster.state())
                .iter()
                .any(|t| t["framework_id"] == framework_id.as_str())
        },
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strata run did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("survived"), "{stdout}");
}
