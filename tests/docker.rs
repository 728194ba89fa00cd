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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
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
