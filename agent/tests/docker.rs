//! The agent's Docker containerizer on the real Docker engine, against a fake master.
//!
//! Needs a running engine and the test image `strata-test/busybox:latest`, which
//! `scripts/docker-setup.sh` (called by `scripts/test.sh`) provides. Without them
//! these tests fail with a message saying so: they never skip.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use strata_agent::{AgentOptions, ContainerizerConfig, DockerOptions};
use strata_proto::Resources;
use strata_proto::v1::{self, TaskState, TaskStatusReason, docker_info};

const IMAGE: &str = "strata-test/busybox:latest";

fn reason_of(s: &v1::TaskStatus) -> TaskStatusReason {
    TaskStatusReason::try_from(s.reason).unwrap_or_default()
}

/// Runs the docker CLI; returns its trimmed stdout, or panics with its stderr.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the docker CLI ({e}): run scripts/docker-setup.sh first")
        });
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fails (never skips) when the engine or the test image is missing.
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

/// Ids of the containers (running or not) labelled with this agent id.
fn containers_of(agent_id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=strata.agent_id={agent_id}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// A work dir whose agent registers with a unique id (tests run in parallel and the
/// agent removes containers labelled with its own id at start).
struct Setup {
    dir: tempfile::TempDir,
    agent_id: String,
}

impl Setup {
    fn new() -> Setup {
        require_docker();
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let agent_id = format!(
            "docker-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        std::fs::write(dir.path().join("agent_id"), format!("{agent_id}\n")).unwrap();
        Setup { dir, agent_id }
    }

    fn options(&self, master: &FakeMaster, remove_delay: Duration) -> AgentOptions {
        let mut o = options(master.addr, self.dir.path());
        o.containerizer = ContainerizerConfig::Docker {
            docker: DockerOptions {
                remove_delay,
                ..DockerOptions::default()
            },
            process: true,
        };
        o
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Whatever a failed test left behind.
        for id in containers_of(&self.agent_id) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

fn docker_task(
    task_id: &str,
    resources: &str,
    command: &str,
    docker: v1::DockerInfo,
) -> v1::TaskInfo {
    let mut t = shell_task(task_id, command);
    t.resources = Resources::parse(resources).unwrap().to_proto();
    t.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(docker),
        volumes: vec![],
    });
    t
}

fn image(image: &str) -> v1::DockerInfo {
    v1::DockerInfo {
        image: image.into(),
        ..Default::default()
    }
}

async fn start(setup: &Setup, remove_delay: Duration) -> (FakeMaster, TestAgent) {
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(setup.options(&master, remove_delay)).await;
    let register = master.next_register().await;
    let info = register.agent_info.unwrap();
    assert_eq!(info.id, setup.agent_id);
    assert!(
        info.attributes
            .iter()
            .any(|a| a.name == "containerizers" && a.value == "process,docker"),
        "the agent advertises Docker: {:?}",
        info.attributes
    );
    (master, agent)
}

#[tokio::test]
async fn an_echo_container_finishes_with_its_output_in_the_sandbox() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::from_secs(4)).await;

    let script = "echo hello from docker; echo oops >&2; echo sandbox=$STRATA_SANDBOX task=$STRATA_TASK_ID; echo in-sandbox > $STRATA_SANDBOX/made-here; pwd";
    master.run_task(
        framework(),
        docker_task("echo-1", "cpus:0.2;mem:64", script, image(IMAGE)),
    );
    let updates = master.follow("echo-1").await;
    assert_eq!(
        names(&updates),
        ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"],
        "{updates:?}"
    );
    assert_eq!(updates.last().unwrap().exit_status, Some(0));
    let sandbox = agent.sandbox("echo-1");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "hello from docker\nsandbox=/mnt/sandbox task=echo-1\n/mnt/sandbox\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
        "oops\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("made-here")).unwrap(),
        "in-sandbox\n",
        "the sandbox is mounted into the container"
    );
    // The ended container is kept for the remove delay, named and labelled, then removed.
    let ids = containers_of(&setup.agent_id);
    assert_eq!(ids.len(), 1, "one container kept for a while: {ids:?}");
    let described = docker(&[
        "inspect",
        "-f",
        "{{.Name}} {{index .Config.Labels \"strata.task_id\"}} {{index .Config.Labels \"strata.framework_id\"}}",
        &ids[0],
    ]);
    assert!(
        described.starts_with(&format!("/strata-{}-", setup.agent_id))
            && described.ends_with(&format!(" echo-1 {FRAMEWORK}")),
        "{described}"
    );
    eventually("the ended container to be removed", || {
        containers_of(&setup.agent_id).is_empty()
    })
    .await;
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn exit_3_is_failed_with_status_3() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    master.run_task(
        framework(),
        docker_task("exit-3", "cpus:0.1;mem:32", "exit 3", image(IMAGE)),
    );
    let updates = master.follow("exit-3").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"));
    assert_eq!(last.exit_status, Some(3));
    assert_eq!(reason_of(last), TaskStatusReason::ReasonCommandExited);
    assert_eq!(last.message, "command exited with status 3");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_container_that_overruns_its_memory_fails_with_the_memory_reason() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    // dd fills a 256 MiB buffer; the container may have 32 MiB and no swap.
    let hog = "dd if=/dev/zero of=/dev/null bs=256M count=1; echo survived";
    master.run_task(
        framework(),
        docker_task("hog", "cpus:0.5;mem:32", hog, image(IMAGE)),
    );
    let updates = master.follow("hog").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"), "{last:?}");
    assert_eq!(
        reason_of(last),
        TaskStatusReason::ReasonContainerLimitationMemory,
        "{last:?}"
    );
    assert!(
        last.message.contains("memory limit of 32 MiB"),
        "{}",
        last.message
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn the_cpu_limit_shows_in_the_containers_cgroup_and_a_kill_ends_it_within_the_grace() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    // The container's own cgroup is mounted at /sys/fs/cgroup (v1: cpu/, v2: cpu.max).
    let script = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null; trap '' TERM; sleep 600";
    let mut task = docker_task("cpu", "cpus:0.5;mem:64", script, image(IMAGE));
    task.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(2.0),
    });
    master.run_task(framework(), task);
    master.wait_state("cpu", TaskState::TaskRunning).await;
    let stdout = agent.sandbox("cpu").join("stdout");
    let mut seen = String::new();
    eventually("the task to print its cfs quota", || {
        seen = std::fs::read_to_string(&stdout).unwrap_or_default();
        !seen.is_empty()
    })
    .await;
    assert!(seen.starts_with("50000"), "cfs quota of 0.5 cpus: {seen:?}");
    let ids = containers_of(&setup.agent_id);
    assert_eq!(ids.len(), 1);
    let host = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
        &ids[0],
    ]);
    assert_eq!(host, format!("50000 100000 512 {0} {0}", 64 * 1024 * 1024));

    // The shell ignores SIGTERM: the kill waits the grace period, then SIGKILLs.
    let asked = Instant::now();
    master.kill_task("cpu", Some(2.0));
    let updates = master.follow("cpu").await;
    let elapsed = asked.elapsed();
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_KILLED"), "{last:?}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(7),
        "killed after {elapsed:?} with a 2 s grace"
    );
    eventually("the killed container to be removed", || {
        containers_of(&setup.agent_id).is_empty()
    })
    .await;
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_kill_of_a_container_that_honours_sigterm_is_quick() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    // The marker says the command runs under the container's init: a SIGTERM sent
    // before the init has set up its signal handling would be ignored by pid 1 (the
    // kill would then take the whole grace period, which is right, but not this test).
    master.run_task(
        framework(),
        docker_task(
            "sleeper",
            "cpus:0.1;mem:32",
            "touch started && exec sleep 600",
            image(IMAGE),
        ),
    );
    master.wait_state("sleeper", TaskState::TaskRunning).await;
    let marker = agent.sandbox("sleeper").join("started");
    eventually("the command to start", || marker.exists()).await;
    let asked = Instant::now();
    master.kill_task("sleeper", Some(10.0));
    let updates = master.follow("sleeper").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_KILLED"), "{last:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "SIGTERM reached the command through the container's init: {:?}",
        asked.elapsed()
    );
    assert!(last.message.contains("SIGTERM"), "{}", last.message);
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_command_health_check_runs_inside_the_container() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    let mut task = docker_task("checked", "cpus:0.1;mem:32", "sleep 600", image(IMAGE));
    task.health_check = Some(v1::HealthCheck {
        r#type: v1::health_check::Type::Command as i32,
        // Inside the container the sandbox is /mnt/sandbox, and the check's cwd.
        command: r#"test "$STRATA_SANDBOX" = /mnt/sandbox && test ! -e flag"#.into(),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.2),
        timeout_seconds: Some(5.0),
        consecutive_failures: Some(1),
        ..Default::default()
    });
    task.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(2.0),
    });
    master.run_task(framework(), task);
    let healthy = loop {
        let s = master.next_update().await;
        master.ack(&s);
        assert!(
            !strata_proto::is_terminal(state_of(&s)),
            "task ended: {s:?}"
        );
        if s.healthy.is_some() {
            break s;
        }
    };
    assert_eq!(healthy.healthy, Some(true), "{healthy:?}");
    assert_eq!(
        reason_of(&healthy),
        TaskStatusReason::ReasonTaskHealthCheckStatusUpdated
    );
    assert!(
        healthy.message.contains("(in the container)"),
        "{}",
        healthy.message
    );

    std::fs::write(agent.sandbox("checked").join("flag"), b"down").unwrap();
    let rest = master.follow("checked").await;
    assert_eq!(names(&rest), ["TASK_RUNNING", "TASK_KILLED"], "{rest:?}");
    assert_eq!(rest[0].healthy, Some(false));
    let killed = &rest[1];
    assert_eq!(killed.healthy, Some(false));
    assert_eq!(
        reason_of(killed),
        TaskStatusReason::ReasonTaskHealthCheckFailed
    );
    assert!(
        killed.message.starts_with("health check failed: command `")
            && killed
                .message
                .contains("(in the container) exited with status 1"),
        "{}",
        killed.message
    );
    agent.stop().await;
    master.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_busybox_httpd_answers_on_its_mapped_port() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    let port = free_port();
    let docker_info = v1::DockerInfo {
        image: IMAGE.into(),
        network: docker_info::Network::Bridge as i32,
        port_mappings: vec![docker_info::PortMapping {
            host_port: u32::from(port),
            container_port: 8080,
            protocol: "tcp".into(),
        }],
        ..Default::default()
    };
    let script = "mkdir -p /tmp/www && echo hello from httpd on $PORT0 > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    master.run_task(
        framework(),
        docker_task(
            "web",
            &format!("cpus:0.1;mem:32;ports:[{port}-{port}]"),
            script,
            docker_info,
        ),
    );
    master.wait_state("web", TaskState::TaskRunning).await;
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => break r.text().await.unwrap(),
            other => {
                assert!(Instant::now() < deadline, "httpd never answered: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(body, format!("hello from httpd on {port}\n"));
    master.kill_task("web", Some(1.0));
    let updates = master.follow("web").await;
    assert_eq!(names(&updates).last(), Some(&"TASK_KILLED"));
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn an_orphaned_labelled_container_is_removed_at_agent_start() {
    let setup = Setup::new();
    let orphan = docker(&[
        "run",
        "-d",
        "--label",
        &format!("strata.agent_id={}", setup.agent_id),
        "--label",
        "strata.container_id=left-by-an-earlier-run",
        IMAGE,
        "sleep",
        "600",
    ]);
    let stranger = docker(&[
        "run",
        "-d",
        "--label",
        "strata.agent_id=some-other-agent",
        IMAGE,
        "sleep",
        "600",
    ]);
    let (master, agent) = start(&setup, Duration::ZERO).await;
    assert!(
        containers_of(&setup.agent_id).is_empty(),
        "the orphan {orphan} is gone once the agent registered"
    );
    let still = docker(&["inspect", "-f", "{{.State.Running}}", &stranger]);
    docker(&["rm", "-f", &stranger]);
    assert_eq!(still, "true", "another agent's container is left alone");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_missing_image_fails_the_task_with_the_engines_reason() {
    let setup = Setup::new();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;

    let mut never = image("strata-test/no-such-image:1");
    never.pull_policy = docker_info::PullPolicy::Never as i32;
    master.run_task(
        framework(),
        docker_task("never", "cpus:0.1;mem:32", "true", never),
    );
    let updates = master.follow("never").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"));
    assert_eq!(
        reason_of(last),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        last.message.contains(
            "image 'strata-test/no-such-image:1' is not on this agent and the pull policy is NEVER"
        ),
        "{}",
        last.message
    );

    // No registry answers here: the pull fails and the engine says why.
    let unreachable = image("127.0.0.1:1/nothing/here");
    master.run_task(
        framework(),
        docker_task("pull", "cpus:0.1;mem:32", "true", unreachable),
    );
    let updates = master.follow("pull").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"));
    assert_eq!(
        reason_of(last),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        last.message
            .contains("cannot pull image '127.0.0.1:1/nothing/here:latest'"),
        "{}",
        last.message
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn without_an_engine_docker_tasks_fail_clearly_and_process_tasks_go_on() {
    let setup = Setup::new();
    let mut master = FakeMaster::start().await;
    let mut o = setup.options(&master, Duration::ZERO);
    o.containerizer = ContainerizerConfig::Docker {
        docker: DockerOptions {
            socket: setup.dir.path().join("no-docker.sock"),
            remove_delay: Duration::ZERO,
            ..DockerOptions::default()
        },
        process: true,
    };
    let agent = TestAgent::start(o).await;
    let info = master.next_register().await.agent_info.unwrap();
    assert!(
        info.attributes
            .iter()
            .any(|a| a.name == "containerizers" && a.value == "process"),
        "Docker is not advertised: {:?}",
        info.attributes
    );
    master.run_task(
        framework(),
        docker_task("d", "cpus:0.1;mem:32", "true", image(IMAGE)),
    );
    let updates = master.follow("d").await;
    let last = updates.last().unwrap();
    assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"));
    assert_eq!(
        reason_of(last),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert!(
        last.message.contains("does not answer") && last.message.contains("no-docker.sock"),
        "{}",
        last.message
    );
    master.run_task(framework(), shell_task("p", "echo still here"));
    let updates = master.follow("p").await;
    assert_eq!(names(&updates).last(), Some(&"TASK_FINISHED"));
    agent.stop().await;
    master.stop().await;
}

fn with_volume(mut task: v1::TaskInfo, host_path: &str, container_path: &str) -> v1::TaskInfo {
    if let Some(c) = task.container.as_mut() {
        c.volumes.push(v1::Volume {
            host_path: host_path.into(),
            container_path: container_path.into(),
            mode: v1::volume::Mode::Rw as i32,
            ..Default::default()
        });
    }
    task
}

#[tokio::test]
async fn host_volumes_mount_only_from_the_allow_list_and_never_the_socket_or_root() {
    let setup = Setup::new();
    let data = setup.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("shared.txt"), "from the host\n").unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = setup.options(&master, Duration::ZERO);
    if let ContainerizerConfig::Docker { docker, .. } = &mut o.containerizer {
        docker.volume_allow = vec![data.clone()];
    }
    let agent = TestAgent::start(o).await;
    master.next_register().await;

    // The attacks: the engine's socket (root on the host) and the host's root.
    for (id, host_path) in [
        ("sock", "/var/run/docker.sock"),
        ("root", "/"),
        ("etc", "/etc"),
    ] {
        let task = docker_task(id, "cpus:0.1;mem:32", "ls /host", image(IMAGE));
        master.run_task(framework(), with_volume(task, host_path, "/host"));
        let updates = master.follow(id).await;
        let last = updates.last().unwrap();
        assert_eq!(names(&updates).last(), Some(&"TASK_FAILED"), "{id}");
        assert_eq!(
            reason_of(last),
            TaskStatusReason::ReasonContainerLaunchFailed
        );
        assert!(
            last.message
                .contains(&format!("volume host path '{host_path}' is refused"))
                && last.message.contains("--docker-volume-allow"),
            "{id}: {}",
            last.message
        );
    }
    assert!(
        containers_of(&setup.agent_id).is_empty(),
        "nothing was created"
    );

    // An allowed path mounts.
    let task = docker_task(
        "ok",
        "cpus:0.1;mem:32",
        "cat /host/shared.txt",
        image(IMAGE),
    );
    master.run_task(
        framework(),
        with_volume(task, &data.display().to_string(), "/host"),
    );
    let updates = master.follow("ok").await;
    assert_eq!(
        names(&updates).last(),
        Some(&"TASK_FINISHED"),
        "{updates:?}"
    );
    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=ok&file=stdout"
        ))
        .await;
    assert_eq!(
        (status, body["data"].as_str()),
        (200, Some("from the host\n"))
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_container_cannot_make_the_agent_write_through_its_sandbox_files() {
    let setup = Setup::new();
    let victim = setup.dir.path().join("victim");
    // Empty: a resumed copier skips as many bytes as the file holds.
    std::fs::write(&victim, "").unwrap();
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    // The container swaps its stdout for a link to a host file, then the agent
    // restarts and copies the container's output again (as after an upgrade).
    let command = format!(
        "rm -f stdout stderr; ln -s {} stdout; ln -s {} stderr; touch swapped; sleep 2; echo appended; echo oops >&2",
        victim.display(),
        victim.display()
    );
    master.run_task(
        framework(),
        docker_task("swap", "cpus:0.1;mem:32", &command, image(IMAGE)),
    );
    master.wait_state("swap", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("swap");
    eventually("the container swapped its files", || {
        sandbox.join("swapped").exists()
    })
    .await;
    agent.stop_keeping_tasks().await;
    let agent = TestAgent::start(setup.options(&master, Duration::ZERO)).await;
    let updates = master.follow("swap").await;
    assert_eq!(
        names(&updates).last(),
        Some(&"TASK_FINISHED"),
        "{updates:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "",
        "nothing written"
    );
    let (status, body) = agent
        .get_json(&format!(
            "/files/read?framework_id={FRAMEWORK}&task_id=swap&file=stdout"
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("symbolic link"),
        "{body}"
    );
    agent.stop().await;
    master.stop().await;
}

/// Named volumes made for a test; removed (with `docker volume rm -f`) when dropped,
/// whatever the test's outcome.
struct TestVolumes(Vec<String>);

impl TestVolumes {
    fn new(n: usize) -> TestVolumes {
        TestVolumes(
            (0..n)
                .map(|_| {
                    format!(
                        "strata-test-vol-{}",
                        &uuid::Uuid::new_v4().simple().to_string()[..12]
                    )
                })
                .collect(),
        )
    }
}

impl Drop for TestVolumes {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", name])
                .output();
        }
    }
}

fn with_named_volume(
    mut task: v1::TaskInfo,
    name: &str,
    container_path: &str,
    mode: v1::volume::Mode,
    driver: &str,
) -> v1::TaskInfo {
    if let Some(c) = task.container.as_mut() {
        c.volumes.push(v1::Volume {
            docker_volume: name.into(),
            container_path: container_path.into(),
            mode: mode as i32,
            driver: driver.into(),
            ..Default::default()
        });
    }
    task
}

/// Whether the engine has the volume.
fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The volume of `name` in the agent's `GET /volumes`.
async fn listed(agent: &TestAgent, name: &str) -> Option<serde_json::Value> {
    let (status, body) = agent.get_json("/volumes").await;
    assert_eq!(status, 200, "{body}");
    body["volumes"]
        .as_array()
        .expect("a list of volumes")
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

#[tokio::test]
async fn a_named_volume_outlives_its_tasks_and_is_listed_by_the_agent() {
    let setup = Setup::new();
    let volumes = TestVolumes::new(2);
    let (vol, users_vol) = (&volumes.0[0], &volumes.0[1]);
    // Ended containers are removed at once: the data must be in the volume.
    let (mut master, agent) = start(&setup, Duration::ZERO).await;
    assert!(!volume_exists(vol));

    // A task writes into the volume, which the agent creates on first use.
    master.run_task(
        framework(),
        with_named_volume(
            docker_task(
                "writer",
                "cpus:0.2;mem:64",
                "echo kept across tasks > /data/greeting",
                image(IMAGE),
            ),
            vol,
            "/data",
            v1::volume::Mode::Rw,
            "",
        ),
    );
    let updates = master.follow("writer").await;
    assert_eq!(
        names(&updates).last(),
        Some(&"TASK_FINISHED"),
        "{updates:?}"
    );
    let labels = docker(&[
        "volume",
        "inspect",
        "-f",
        "{{.Driver}} {{index .Labels \"strata.volume\"}} {{index .Labels \"strata.agent_id\"}}",
        vol,
    ]);
    assert_eq!(labels, format!("local true {}", setup.agent_id));
    eventually("the writer's container to be removed", || {
        containers_of(&setup.agent_id).is_empty()
    })
    .await;

    // A second task, in a new container, reads what the first wrote (read-only).
    master.run_task(
        framework(),
        with_named_volume(
            docker_task(
                "reader",
                "cpus:0.2;mem:64",
                "cat /data/greeting; touch /data/nope 2>/dev/null || echo read-only; sleep 60",
                image(IMAGE),
            ),
            vol,
            "/data",
            v1::volume::Mode::Ro,
            "",
        ),
    );
    master.wait_state("reader", TaskState::TaskRunning).await;
    let stdout = agent.sandbox("reader").join("stdout");
    eventually("the reader's output", || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("read-only"))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&stdout).unwrap(),
        "kept across tasks\nread-only\n"
    );

    // The agent lists the volume: its own, labelled, used by the running reader.
    let v = listed(&agent, vol).await.expect("the volume is listed");
    assert_eq!(v["driver"], "local");
    assert_eq!(v["created_by_agent"], true);
    assert_eq!(v["labels"]["strata.volume"], "true");
    assert_eq!(v["labels"]["strata.agent_id"], setup.agent_id.as_str());
    assert!(
        v["mountpoint"]
            .as_str()
            .is_some_and(|m| m.contains(vol.as_str())),
        "{v}"
    );
    assert!(
        v["created_at"].as_str().is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    assert_eq!(
        v["tasks"],
        serde_json::json!([{"framework_id": FRAMEWORK, "task_id": "reader", "container_path": "/data", "read_only": true}])
    );

    master.kill_task("reader", Some(1.0));
    let updates = master.follow("reader").await;
    assert_eq!(names(&updates).last(), Some(&"TASK_KILLED"), "{updates:?}");
    eventually("the reader's container to be removed", || {
        containers_of(&setup.agent_id).is_empty()
    })
    .await;
    // Both containers are gone; the volume and its data are not.
    assert!(
        volume_exists(vol),
        "the volume was removed with its containers"
    );
    let v = listed(&agent, vol).await.expect("still listed");
    assert_eq!(v["tasks"], serde_json::json!([]));

    // A volume the user made is used as it is: not relabelled, and a task that asks
    // for another driver fails with the reason.
    docker(&["volume", "create", "--label", "owner=user", users_vol]);
    master.run_task(
        framework(),
        with_named_volume(
            docker_task(
                "user-vol",
                "cpus:0.2;mem:64",
                "echo mine > /v/file",
                image(IMAGE),
            ),
            users_vol,
            "/v",
            v1::volume::Mode::Rw,
            "local",
        ),
    );
    let updates = master.follow("user-vol").await;
    assert_eq!(
        names(&updates).last(),
        Some(&"TASK_FINISHED"),
        "{updates:?}"
    );
    assert_eq!(
        docker(&["volume", "inspect", "-f", "{{json .Labels}}", users_vol]),
        r#"{"owner":"user"}"#
    );
    master.run_task(
        framework(),
        with_named_volume(
            docker_task("wrong-driver", "cpus:0.2;mem:64", "true", image(IMAGE)),
            users_vol,
            "/v",
            v1::volume::Mode::Rw,
            "no-such-driver",
        ),
    );
    let updates = master.follow("wrong-driver").await;
    let last = updates.last().unwrap();
    assert_eq!(state_of(last), TaskState::TaskFailed, "{updates:?}");
    assert!(
        last.message.contains(&format!(
            "Docker volume '{users_vol}' exists with driver 'local', not 'no-such-driver'"
        )),
        "{}",
        last.message
    );
    assert!(volume_exists(users_vol));
    // Not this agent's and not in use: not listed.
    assert!(listed(&agent, users_vol).await.is_none());

    agent.stop().await;
    master.stop().await;
    assert!(volume_exists(vol), "the volume outlives the agent too");
}
