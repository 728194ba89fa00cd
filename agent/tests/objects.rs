//! Configs and secrets delivered into tasks (issue 16), against a fake master that
//! serves their values: a process task and a Docker task each read a secret file, a
//! config file and variables; the planted secret value is nowhere on the agent's disk,
//! in the host's mounts or in the engine's view of the container.
//!
//! Needs root (the agent mounts a tmpfs and switches users) and, for the Docker test,
//! a running engine with the test image `strata-test/busybox:latest`
//! (`scripts/docker-setup.sh`). Without them these tests fail saying so: they never
//! skip.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use strata_agent::isolation::{IsolationMode, Isolator};
use strata_agent::{ContainerizerConfig, DockerOptions};
use strata_proto::v1::{self, ObjectKind, TaskState, TaskStatusReason, object_ref::Target};

const IMAGE: &str = "strata-test/busybox:latest";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests mount a tmpfs and switch users: run them as root (as scripts/test.sh and CI do)"
    );
}

/// A value no test prints: only its hash ever appears in a task's output.
fn planted() -> String {
    format!("planted-{}-'quote", uuid::Uuid::new_v4().simple())
}

/// The sha256 of `data` as `sha256sum` prints it (fed on stdin, never an argument).
fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn reference(kind: ObjectKind, name: &str, target: Target) -> v1::ObjectRef {
    v1::ObjectRef {
        kind: kind as i32,
        name: name.into(),
        version: 2,
        target: Some(target),
    }
}

fn value(kind: ObjectKind, name: &str, data: &[u8]) -> v1::ObjectValue {
    v1::ObjectValue {
        kind: kind as i32,
        name: name.into(),
        version: 2,
        data: data.to_vec(),
    }
}

/// Every regular file under `dir` that holds `needle` (symlinks not followed).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
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

/// Waits until the sandbox's stdout holds `marker`; returns it.
async fn output_until(sandbox: &Path, marker: &str) -> String {
    let mut seen = String::new();
    eventually(&format!("the task to print '{marker}'"), || {
        seen = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
        seen.contains(marker)
    })
    .await;
    seen
}

#[tokio::test]
async fn a_process_task_reads_its_secret_file_config_file_and_secret_variable() {
    process_task_reads_its_objects(IsolationMode::Explicit(vec![])).await;
}

#[tokio::test]
async fn a_process_task_in_its_own_pid_namespace_reads_them_too() {
    process_task_reads_its_objects(IsolationMode::Explicit(vec![Isolator::Pid])).await;
}

async fn process_task_reads_its_objects(isolation: IsolationMode) {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.isolation.mode = isolation;
    let agent = TestAgent::start(o).await;
    master.next_register().await;

    let secret = planted();
    let config = b"listen = 8080\n".to_vec();
    let script = "sha256sum secrets/db-pass configs/app.conf; \
         printf %s \"$DB_PASS\" | sha256sum; \
         echo \"mode=$APP_MODE\"; \
         stat -c 'secret %a %U' secrets/db-pass; stat -c 'config %a %U' configs/app.conf; \
         stat -c 'dir %a %U' secrets; \
         grep ' - tmpfs ' /proc/self/mountinfo | grep /secrets; \
         touch secrets/new 2>/dev/null && echo writable || echo read-only; \
         echo ready; while [ ! -e go ]; do sleep 0.05; done";
    let mut task = shell_task("p1", script);
    task.command.as_mut().unwrap().user = "nobody".into();
    task.objects = vec![
        reference(
            ObjectKind::Secret,
            "db-pass",
            Target::File("db-pass".into()),
        ),
        reference(ObjectKind::Secret, "db-pass", Target::Env("DB_PASS".into())),
        reference(
            ObjectKind::Config,
            "app",
            Target::File("configs/app.conf".into()),
        ),
        reference(ObjectKind::Config, "mode", Target::Env("APP_MODE".into())),
    ];
    master.serve_objects(
        "p1",
        vec![
            value(ObjectKind::Secret, "db-pass", secret.as_bytes()),
            value(ObjectKind::Config, "app", &config),
            value(ObjectKind::Config, "mode", b"blue"),
        ],
    );
    master.run_task(framework(), task);
    master.wait_state("p1", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("p1");
    let out = output_until(&sandbox, "ready\n").await;

    let secret_hash = sha256(secret.as_bytes());
    assert!(
        out.contains(&format!("{secret_hash}  secrets/db-pass\n")),
        "the task reads the secret file: {out}"
    );
    assert!(
        out.contains(&format!("{}  configs/app.conf\n", sha256(&config))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{secret_hash}  -\n")),
        "the variable holds the secret: {out}"
    );
    assert!(out.contains("mode=blue\n"), "{out}");
    assert!(out.contains("secret 400 nobody\n"), "{out}");
    assert!(out.contains("config 444 nobody\n"), "{out}");
    assert!(out.contains("dir 500 nobody\n"), "{out}");
    let mount = out
        .lines()
        .find(|l| l.contains(" - tmpfs "))
        .unwrap_or_else(|| panic!("no tmpfs at secrets in the task's mounts: {out}"));
    assert!(
        mount.contains(&format!("{}/secrets ro,", sandbox.display())),
        "read-only, at the sandbox's secrets: {mount}"
    );
    assert!(out.contains("read-only\n"), "{out}");

    // While it runs, the host sees nothing of it.
    assert_eq!(host_mounts_under(&sandbox), Vec::<String>::new());
    let runtime = dir.path().join("runtime");
    assert_eq!(host_mounts_under(&runtime), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(sandbox.join("secrets")).unwrap().count(),
        0,
        "the sandbox's secrets directory is an empty mountpoint on the host"
    );
    assert_eq!(
        std::fs::read_dir(runtime.join("objects")).unwrap().count(),
        0,
        "no staging directory is left"
    );
    assert_eq!(
        files_holding(dir.path(), secret.as_bytes()),
        Vec::<PathBuf>::new(),
        "the planted value is in these files of the work dir"
    );

    std::fs::write(sandbox.join("go"), "").unwrap();
    let last = master.follow("p1").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFinished, "{}", last.message);
    assert_eq!(
        files_holding(dir.path(), secret.as_bytes()),
        Vec::<PathBuf>::new(),
        "the planted value is in these files of the work dir"
    );
    let fetches = master.fetches.lock().unwrap().clone();
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert_eq!(
        (
            fetches[0].framework_id.as_str(),
            fetches[0].task_id.as_str()
        ),
        (FRAMEWORK, "p1")
    );
    assert_eq!(fetches[0].agent_id, "agent-from-fake-master");
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_secret_the_master_does_not_give_fails_the_launch_naming_it() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let mut task = shell_task("refused", "echo must not run > ran");
    task.objects = vec![reference(
        ObjectKind::Secret,
        "db-pass",
        Target::File("db-pass".into()),
    )];
    master.refuse_objects(
        "refused",
        tonic::Status::not_found("version 2 of this secret was removed"),
    );
    master.run_task(framework(), task);
    let last = master.follow("refused").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFailed, "{}", last.message);
    assert_eq!(
        TaskStatusReason::try_from(last.reason).unwrap(),
        TaskStatusReason::ReasonContainerLaunchFailed
    );
    assert_eq!(
        last.message,
        "cannot launch the task: cannot fetch secret 'db-pass': version 2 of this secret was removed"
    );
    assert!(!agent.sandbox("refused").join("ran").exists());

    // A value that cannot be a variable (a NUL byte) fails too, naming it, not showing it.
    let mut task = shell_task("nul", "echo must not run > ran");
    task.objects = vec![reference(
        ObjectKind::Secret,
        "blob",
        Target::Env("BLOB".into()),
    )];
    master.serve_objects(
        "nul",
        vec![value(ObjectKind::Secret, "blob", b"pl4nted\0value")],
    );
    master.run_task(framework(), task);
    let last = master.follow("nul").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFailed, "{}", last.message);
    assert!(
        last.message
            .contains("secret 'blob' cannot be the variable BLOB"),
        "{}",
        last.message
    );
    assert!(!last.message.contains("pl4nted"));
    assert!(!agent.sandbox("nul").join("ran").exists());

    // The agent checks the references again: a path out of the sandbox is refused.
    let mut task = shell_task("escape", "echo must not run > ran");
    task.objects = vec![reference(
        ObjectKind::Config,
        "app",
        Target::File("../../escape".into()),
    )];
    master.serve_objects("escape", vec![value(ObjectKind::Config, "app", b"x")]);
    master.run_task(framework(), task);
    let last = master.follow("escape").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFailed, "{}", last.message);
    assert!(
        last.message
            .starts_with("cannot launch the task: invalid configs and secrets: config 'app'"),
        "{}",
        last.message
    );
    assert!(
        !master
            .fetches
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.task_id == "escape"),
        "nothing is fetched for a task with a bad reference"
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn secrets_staged_by_an_agent_that_died_before_its_launch_are_removed_at_start() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // What a run killed between mounting a staging tmpfs and starting its task left.
    let staged = dir.path().join("runtime/objects/0b1d-container");
    std::fs::create_dir_all(&staged).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&staged)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs");
    std::fs::write(staged.join("db-pass"), "left-behind").unwrap();
    assert_eq!(host_mounts_under(&staged).len(), 1);

    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    assert_eq!(host_mounts_under(&staged), Vec::<String>::new());
    assert!(!staged.exists(), "the staging directory is removed");
    assert_eq!(
        files_holding(dir.path(), b"left-behind"),
        Vec::<PathBuf>::new()
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_task_keeps_its_secrets_across_an_agent_restart_and_nothing_is_fetched_again() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let secret = planted();
    let script = "sha256sum secrets/db-pass; echo ready; \
         while [ ! -e go ]; do sleep 0.05; done; sha256sum secrets/db-pass";
    let mut task = shell_task("kept", script);
    task.command.as_mut().unwrap().user = "nobody".into();
    task.objects = vec![reference(
        ObjectKind::Secret,
        "db-pass",
        Target::File("db-pass".into()),
    )];
    master.serve_objects(
        "kept",
        vec![value(ObjectKind::Secret, "db-pass", secret.as_bytes())],
    );
    master.run_task(framework(), task);
    master.wait_state("kept", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("kept");
    output_until(&sandbox, "ready\n").await;

    agent.stop_keeping_tasks().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    let register = master.next_register().await;
    assert_eq!(register.tasks.len(), 1);
    std::fs::write(sandbox.join("go"), "").unwrap();
    let last = master.follow("kept").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFinished, "{}", last.message);
    let line = format!("{}  secrets/db-pass\n", sha256(secret.as_bytes()));
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        format!("{line}ready\n{line}"),
        "the task reads its secret before and after the agent's restart"
    );
    assert_eq!(master.fetches.lock().unwrap().len(), 1);
    assert_eq!(
        files_holding(dir.path(), secret.as_bytes()),
        Vec::<PathBuf>::new(),
        "the planted value is in these files of the work dir"
    );
    agent.stop().await;
    master.stop().await;
}

#[tokio::test]
async fn a_busy_master_is_asked_again() {
    init_tracing();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;

    let mut task = shell_task("retried", "echo \"$GREETING\"");
    task.objects = vec![reference(
        ObjectKind::Config,
        "greeting",
        Target::Env("GREETING".into()),
    )];
    master.serve_objects(
        "retried",
        vec![value(ObjectKind::Config, "greeting", b"hi")],
    );
    master
        .unavailable_fetches
        .store(2, std::sync::atomic::Ordering::SeqCst);
    master.run_task(framework(), task);
    let last = master.follow("retried").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFinished, "{}", last.message);
    assert_eq!(
        std::fs::read_to_string(agent.sandbox("retried").join("stdout")).unwrap(),
        "hi\n"
    );
    assert_eq!(master.fetches.lock().unwrap().len(), 3);
    agent.stop().await;
    master.stop().await;
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

/// Removes the containers labelled with an agent id when dropped.
struct Containers(String);

impl Containers {
    fn ids(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=strata.agent_id={}", self.0),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

#[tokio::test]
async fn a_docker_task_reads_run_secrets_a_config_and_a_secret_variable() {
    init_tracing();
    require_root();
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let agent_id = format!(
        "objects-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    std::fs::write(dir.path().join("agent_id"), format!("{agent_id}\n")).unwrap();
    let containers = Containers(agent_id);
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.containerizer = ContainerizerConfig::Docker {
        docker: DockerOptions {
            remove_delay: Duration::from_secs(60),
            ..DockerOptions::default()
        },
        process: true,
    };
    let agent = TestAgent::start(o).await;
    master.next_register().await;

    let secret = planted();
    let config = b"listen = 8080\n".to_vec();
    let script = "sha256sum /run/secrets/db-pass configs/app.conf /etc/app/abs.conf; \
         printf %s \"$DB_PASS\" | sha256sum; \
         echo \"mode=$APP_MODE\"; \
         stat -c 'secret %a %u' /run/secrets/db-pass; \
         grep ' /run/secrets ' /proc/self/mountinfo; \
         touch /run/secrets/new 2>/dev/null && echo writable || echo read-only; \
         echo ready; while [ ! -e go ]; do sleep 0.05; done; \
         sha256sum /run/secrets/db-pass; echo done";
    let mut task = shell_task("d1", script);
    task.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(v1::DockerInfo {
            image: IMAGE.into(),
            ..Default::default()
        }),
        volumes: vec![],
    });
    task.objects = vec![
        reference(
            ObjectKind::Secret,
            "db-pass",
            Target::File("db-pass".into()),
        ),
        reference(ObjectKind::Secret, "db-pass", Target::Env("DB_PASS".into())),
        reference(
            ObjectKind::Config,
            "app",
            Target::File("configs/app.conf".into()),
        ),
        reference(
            ObjectKind::Config,
            "app",
            Target::File("/etc/app/abs.conf".into()),
        ),
        reference(ObjectKind::Config, "mode", Target::Env("APP_MODE".into())),
    ];
    master.serve_objects(
        "d1",
        vec![
            value(ObjectKind::Secret, "db-pass", secret.as_bytes()),
            value(ObjectKind::Config, "app", &config),
            value(ObjectKind::Config, "mode", b"blue"),
        ],
    );
    master.run_task(framework(), task);
    master.wait_state("d1", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("d1");
    let out = output_until(&sandbox, "ready\n").await;

    let secret_hash = sha256(secret.as_bytes());
    let config_hash = sha256(&config);
    assert!(
        out.contains(&format!("{secret_hash}  /run/secrets/db-pass\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{config_hash}  configs/app.conf\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{config_hash}  /etc/app/abs.conf\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{secret_hash}  -\n")),
        "the variable holds the secret: {out}"
    );
    assert!(out.contains("mode=blue\n"), "{out}");
    assert!(out.contains("secret 400 0\n"), "{out}");
    let mount = out
        .lines()
        .find(|l| l.contains(" /run/secrets "))
        .unwrap_or_else(|| panic!("/run/secrets is not a mount in the container: {out}"));
    assert!(
        mount.contains(" /run/secrets ro,") && mount.contains(" - tmpfs "),
        "{mount}"
    );
    assert!(out.contains("read-only\n"), "{out}");

    // The host has let go of the tmpfs; the engine has no secret in its view.
    let runtime = dir.path().join("runtime");
    assert_eq!(host_mounts_under(&runtime), Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(runtime.join("objects")).unwrap().count(),
        0,
        "no staging directory is left"
    );
    let ids = containers.ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let inspect = Command::new("docker")
        .args(["inspect", &ids[0]])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    assert!(
        !inspect
            .stdout
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the planted value is in `docker inspect` of the container"
    );
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("APP_MODE=blue"),
        "config variables are in the container's Env"
    );
    assert_eq!(
        files_holding(dir.path(), secret.as_bytes()),
        Vec::<PathBuf>::new(),
        "the planted value is in these files of the work dir"
    );

    // After the host's unmount, the container still reads its secret.
    std::fs::write(sandbox.join("go"), "").unwrap();
    let last = master.follow("d1").await.pop().unwrap();
    assert_eq!(state_of(&last), TaskState::TaskFinished, "{}", last.message);
    let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    let after = out.split("ready\n").nth(1).unwrap_or_default();
    assert_eq!(
        after,
        format!("{secret_hash}  /run/secrets/db-pass\ndone\n"),
        "the secret stays readable in the container"
    );
    assert_eq!(
        files_holding(dir.path(), secret.as_bytes()),
        Vec::<PathBuf>::new(),
        "the planted value is in these files of the work dir"
    );
    assert!(
        !runtime.join("docker-configs").join("x").exists()
            && std::fs::read_dir(runtime.join("docker-configs"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0,
        "the config files of absolute paths are removed with the container's end"
    );
    agent.stop().await;
    master.stop().await;
    drop(containers);
}
