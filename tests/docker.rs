//! `strata run --image` end to end: a real master, an agent started with
//! `--containerizers process,docker`, and the local Docker engine.
//!
//! Needs the engine and the test image `strata-test/busybox:latest`
//! (`scripts/docker-setup.sh`, which `scripts/test.sh` calls); fails, never skips,
//! without them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, run_with_timeout};

const IMAGE: &str = "strata-test/busybox:latest";

fn require_docker() {
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        ok(&["info"]),
        "the Docker engine does not answer: run scripts/docker-setup.sh (as root)"
    );
    assert!(
        ok(&["image", "inspect", IMAGE]),
        "the test image {IMAGE} is missing: run scripts/docker-setup.sh"
    );
}

fn docker_cluster() -> Cluster {
    require_docker();
    let mut cluster = Cluster::start(0);
    cluster.add_agent_with(
        0,
        "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
        &[
            "--containerizers",
            "process,docker",
            "--docker-remove-delay",
            "0s",
        ],
    );
    cluster.wait_for_agents(1);
    cluster
}

fn strata_run(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut cmd = common::cli();
    cmd.args(["run", "--master", &cluster.master.addr]);
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(90))
}

#[test]
fn strata_run_image_runs_one_docker_task_like_a_process_task() {
    let cluster = docker_cluster();
    let state = cluster.state();
    let attributes = &state["agents"][0]["attributes"];
    assert!(
        attributes.to_string().contains("process,docker"),
        "the agent advertises Docker: {attributes}"
    );

    let (code, out, err) = strata_run(
        &cluster,
        &[
            "--image",
            IMAGE,
            "--mem",
            "32",
            "--",
            "echo hello from a container in $STRATA_SANDBOX; echo to-stderr >&2",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("hello from a container in /mnt/sandbox"),
        "the container's output is shown: {out}"
    );
    assert!(err.contains("to-stderr"), "{err}");
    assert!(err.contains("TASK_FINISHED"), "{err}");

    // Several arguments are executed directly; the exit status comes back.
    let (code, _out, err) = strata_run(&cluster, &["--image", IMAGE, "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("TASK_FAILED"), "{err}");

    // A missing image fails the task with the engine's reason.
    let (code, _out, err) = strata_run(
        &cluster,
        &[
            "--image",
            "strata-test/not-here:1",
            "--pull",
            "never",
            "--",
            "true",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not on this agent") && err.contains("REASON_CONTAINER_LAUNCH_FAILED"),
        "{err}"
    );
}

#[test]
fn strata_run_image_without_a_docker_agent_says_so() {
    require_docker();
    let cluster = Cluster::start(1);
    let (code, _out, err) = strata_run(
        &cluster,
        &["--image", IMAGE, "--offer-timeout", "2s", "--", "true"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("runs Docker containers"),
        "the timeout names the missing capability: {err}"
    );
}

/// The container framework with a Docker app: the example `examples/apps/web-docker.yaml`
/// (busybox httpd, bridge network, an HTTP health check) deployed with the CLI.
#[test]
fn a_docker_app_from_the_examples_answers_on_its_ports() {
    let cluster = docker_cluster();
    let state_dir = cluster.dir.path().join("apps-state");
    let serve = common::start_serve(
        cluster.dir.path(),
        &cluster.master.addr,
        &state_dir,
        "127.0.0.1:0",
    );
    let strata = |args: &[&str]| {
        let mut cmd = common::cli();
        cmd.args(args)
            .env("STRATA_SERVER", &serve.addr)
            .env("STRATA_MASTER", &cluster.master.addr);
        run_with_timeout(cmd, Duration::from_secs(150))
    };
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/web-docker.yaml");
    let (code, out, err) = strata(&["app", "deploy", "-f", spec, "--wait", "--timeout", "120"]);
    assert_eq!(
        code,
        0,
        "deploy failed\nstdout:\n{out}\nstderr:\n{err}\nserve log:\n{}",
        serve.log_text()
    );

    let (code, out, err) = strata(&["task", "list", "--app", "web-docker", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let tasks: serde_json::Value = serde_json::from_str(&out).expect("task list JSON");
    let tasks = tasks.as_array().expect("a list");
    assert_eq!(tasks.len(), 2, "{out}");
    for t in tasks {
        assert_eq!(t["state"], "TASK_RUNNING", "{t}");
        assert_eq!(t["healthy"], true, "{t}");
        let port = t["ports"][0].as_u64().expect("a host port");
        let body = common::http_get(&format!("http://127.0.0.1:{port}/"))
            .unwrap_or_else(|e| panic!("GET port {port}: {e}"));
        assert!(
            body.contains(&format!("hello from {}", t["id"].as_str().unwrap())),
            "{body}"
        );
    }

    let (code, _, err) = strata(&["app", "rm", "web-docker", "--wait", "--timeout", "60"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    common::wait_until(
        Duration::from_secs(30),
        "the app's containers to go",
        || {
            ids.iter().all(|id| {
                let out = Command::new("docker")
                    .args([
                        "ps",
                        "-aq",
                        "--filter",
                        &format!("label=strata.task_id={id}"),
                    ])
                    .output()
                    .expect("docker ps");
                out.stdout.is_empty()
            })
        },
    );
}
