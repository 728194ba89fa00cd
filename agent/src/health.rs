//! Health checks next to a task (Mesos semantics): once a task with a `health_check` is
//! TASK_RUNNING, a tokio task checks it and tells the agent loop when its health changes.
//!
//! ```text
//! TASK_RUNNING ─▶ run(): sleep delay ─▶ every interval: one check, bounded by timeout
//!                   HTTP    GET http://127.0.0.1:PORT/path, 200-399 healthy
//!                   TCP     connect 127.0.0.1:PORT
//!                   COMMAND /bin/sh -c CMD in the sandbox with the task's environment
//!                           (Docker tasks: inside the container, Containerizer::exec)
//!                 ─▶ HealthState::observe (pure) ─▶ Verdict ─▶ HealthEvent to the loop
//! agent loop ─▶ TaskManager::health: TASK_RUNNING update with `healthy` and reason
//!               REASON_TASK_HEALTH_CHECK_STATUS_UPDATED (first result, every change);
//!               kill (the task's kill policy) after `consecutive_failures` in a row
//! ```
//!
//! Failures during the grace period (from TASK_RUNNING until it has passed or a check
//! succeeded) do not count. The checker ends after asking for a kill; the loop aborts it
//! when the task is being killed or has ended, and at shutdown. A COMMAND check that
//! runs out of time is killed with its whole process group.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use strata_proto::health::{CheckKind, HealthCheckSpec};
use tokio::sync::mpsc;

use crate::containerizer::process::resolve_user;
use crate::containerizer::{ContainerId, Containerizer, ExitKind};
use crate::task_key::TaskKey;

/// Everything a checker needs to check one task, built by the task manager when the
/// task becomes TASK_RUNNING.
#[derive(Debug, Clone)]
pub(crate) struct Checker {
    pub spec: HealthCheckSpec,
    /// COMMAND checks on the host run here.
    pub sandbox: PathBuf,
    /// The task's environment, for COMMAND checks on the host.
    pub env: Vec<(String, String)>,
    /// The task's user: COMMAND checks on the host run as it when the agent is root.
    pub user: Option<String>,
    /// A Docker task: COMMAND checks run inside its container.
    pub in_container: bool,
    /// The task's persistent volumes (data on the host, mount point, read-only):
    /// COMMAND checks on the host see them where the task does.
    pub volumes: Vec<(PathBuf, PathBuf, bool)>,
}

/// What a checker tells the agent loop: a verdict that needs an update or a kill.
#[derive(Debug, Clone)]
pub(crate) struct HealthEvent {
    pub key: TaskKey,
    pub container: ContainerId,
    pub verdict: Verdict,
}

/// What one check result means for the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Report this health in a TASK_RUNNING update (the first counted result, and every
    /// change).
    pub report: Option<bool>,
    /// Kill the task: `consecutive_failures` checks failed in a row.
    pub kill: bool,
    /// What happened, for the update's message, e.g. "health check failed 3 times in a
    /// row: HTTP GET http://127.0.0.1:31000/ returned 500".
    pub message: String,
}

impl Verdict {
    /// Nothing to tell the agent loop.
    pub(crate) fn is_quiet(&self) -> bool {
        self.report.is_none() && !self.kill
    }
}

/// The counting of a task's check results: grace period, failures in a row, and what
/// was reported last. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub(crate) struct HealthState {
    grace_period: Duration,
    /// 0: never kill.
    max_failures: u32,
    /// When the task became TASK_RUNNING.
    running_since: Instant,
    /// Until the grace period has passed or a check succeeded.
    in_grace: bool,
    failures: u32,
    /// The health last reported; `None` before the first counted result.
    reported: Option<bool>,
}

impl HealthState {
    pub(crate) fn new(
        grace_period: Duration,
        max_failures: u32,
        running_since: Instant,
    ) -> HealthState {
        HealthState {
            grace_period,
            max_failures,
            running_since,
            in_grace: !grace_period.is_zero(),
            failures: 0,
            reported: None,
        }
    }

    /// Counts one check result. `detail` says what the check saw, e.g. "HTTP GET
    /// http://127.0.0.1:31000/ returned 500".
    pub(crate) fn observe(&mut self, healthy: bool, detail: &str, now: Instant) -> Verdict {
        if healthy {
            self.in_grace = false;
            self.failures = 0;
            let report = (self.reported != Some(true)).then_some(true);
            self.reported = Some(true);
            return Verdict {
                report,
                kill: false,
                message: format!("health check passed: {detail}"),
            };
        }
        if self.in_grace {
            if now.saturating_duration_since(self.running_since) < self.grace_period {
                return Verdict {
                    report: None,
                    kill: false,
                    message: format!(
                        "health check failed during the grace period (not counted): {detail}"
                    ),
                };
            }
            self.in_grace = false;
        }
        self.failures = self.failures.saturating_add(1);
        let kill = self.max_failures > 0 && self.failures >= self.max_failures;
        let message = if self.failures > 1 {
            format!(
                "health check failed {} times in a row: {detail}",
                self.failures
            )
        } else {
            format!("health check failed: {detail}")
        };
        let report = (self.reported != Some(false)).then_some(false);
        self.reported = Some(false);
        Verdict {
            report,
            kill,
            message,
        }
    }
}

/// Why one check failed; the message is what the user reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CheckFailure {
    #[error("{what} did not answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{what} returned {status}")]
    HttpStatus { what: String, status: u16 },
    #[error("{what} {}", describe_exit(*exit))]
    Exited { what: String, exit: ExitKind },
    #[error("{what} failed: {reason}")]
    Failed { what: String, reason: String },
}

fn describe_exit(exit: ExitKind) -> String {
    match exit {
        ExitKind::Exited(code) => format!("exited with status {code}"),
        ExitKind::Signaled(_) => format!("was {}", exit.describe()),
    }
}

/// Runs `checker` for the task until it asks for a kill or the agent loop is gone. The
/// loop aborts it when the task stops running.
pub(crate) async fn run(
    checker: Checker,
    key: TaskKey,
    container: ContainerId,
    containerizer: Arc<dyn Containerizer>,
    events: mpsc::Sender<HealthEvent>,
) {
    let spec = checker.spec.clone();
    let mut state = HealthState::new(spec.grace_period, spec.consecutive_failures, Instant::now());
    let probe = Probe::new(checker, container.clone(), containerizer);
    tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, check = %probe.what(), ?spec, "health checker started");
    tokio::time::sleep(spec.delay).await;
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = match tokio::time::timeout(spec.timeout, probe.check()).await {
            Ok(r) => r,
            Err(_) => Err(CheckFailure::Timeout {
                what: probe.what(),
                timeout: spec.timeout,
            }),
        };
        let verdict = match &result {
            Ok(detail) => state.observe(true, detail, Instant::now()),
            Err(failure) => state.observe(false, &failure.to_string(), Instant::now()),
        };
        if verdict.is_quiet() {
            tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, message = %verdict.message, "health check");
            continue;
        }
        if verdict.kill {
            tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, message = %verdict.message, "health check failed; killing the task");
        } else {
            tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, healthy = ?verdict.report, message = %verdict.message, "task health changed");
        }
        let kill = verdict.kill;
        let event = HealthEvent {
            key: key.clone(),
            container: container.clone(),
            verdict,
        };
        if events.send(event).await.is_err() || kill {
            return;
        }
    }
}

/// One kind of check, ready to run again and again.
struct Probe {
    checker: Checker,
    container: ContainerId,
    containerizer: Arc<dyn Containerizer>,
    /// HTTP checks; the error says why no client could be made.
    http: Option<Result<reqwest::Client, String>>,
}

impl Probe {
    fn new(
        checker: Checker,
        container: ContainerId,
        containerizer: Arc<dyn Containerizer>,
    ) -> Probe {
        let http = matches!(checker.spec.kind, CheckKind::Http { .. }).then(|| {
            reqwest::Client::builder()
                // A check asks the task itself, never a proxy from the agent's environment.
                .no_proxy()
                // 3xx is healthy as it is; a redirect may lead off the task.
                .redirect(reqwest::redirect::Policy::none())
                // Every check makes a new connection, as a new client would.
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("cannot make an HTTP client: {}", root_cause(&e)))
        });
        Probe {
            checker,
            container,
            containerizer,
            http,
        }
    }

    /// What the check does, for messages: "HTTP GET http://127.0.0.1:31000/",
    /// "TCP connection to 127.0.0.1:31000", "command `test -e ready`".
    fn what(&self) -> String {
        match &self.checker.spec.kind {
            CheckKind::Http { port, path } => format!("HTTP GET {}", http_url(*port, path)),
            CheckKind::Tcp { port } => format!("TCP connection to 127.0.0.1:{port}"),
            CheckKind::Command { command } if self.checker.in_container => {
                format!("command `{command}` (in the container)")
            }
            CheckKind::Command { command } => format!("command `{command}`"),
        }
    }

    /// One check: `Ok` with what it saw when healthy.
    async fn check(&self) -> Result<String, CheckFailure> {
        let what = self.what();
        match &self.checker.spec.kind {
            CheckKind::Http { port, path } => {
                let client = match &self.http {
                    Some(Ok(client)) => client,
                    Some(Err(reason)) => {
                        return Err(CheckFailure::Failed {
                            what,
                            reason: reason.clone(),
                        });
                    }
                    None => {
                        return Err(CheckFailure::Failed {
                            what,
                            reason: "no HTTP client".into(),
                        });
                    }
                };
                let response = client
                    .get(http_url(*port, path))
                    .send()
                    .await
                    .map_err(|e| CheckFailure::Failed {
                        what: what.clone(),
                        reason: root_cause(&e),
                    })?;
                let status = response.status().as_u16();
                if (200..400).contains(&status) {
                    Ok(format!("{what} returned {status}"))
                } else {
                    Err(CheckFailure::HttpStatus { what, status })
                }
            }
            CheckKind::Tcp { port } => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => Ok(format!("{what} accepted")),
                    Err(e) => Err(CheckFailure::Failed {
                        what,
                        reason: e.to_string(),
                    }),
                }
            }
            CheckKind::Command { command } => {
                let exit = if self.checker.in_container {
                    self.containerizer
                        .exec(self.container.clone(), command.clone())
                        .await
                        .map_err(|e| CheckFailure::Failed {
                            what: what.clone(),
                            reason: e.to_string(),
                        })?
                } else {
                    self.host_command(command)
                        .await
                        .map_err(|reason| CheckFailure::Failed {
                            what: what.clone(),
                            reason,
                        })?
                };
                match exit {
                    ExitKind::Exited(0) => Ok(format!("{what} exited with status 0")),
                    exit => Err(CheckFailure::Exited { what, exit }),
                }
            }
        }
    }

    /// Runs a COMMAND check on the agent's host: `/bin/sh -c command` in the sandbox,
    /// with the task's environment and user, in a process group of its own that is
    /// killed when the check is dropped (its timeout passed, or the checker stopped).
    async fn host_command(&self, command: &str) -> Result<ExitKind, String> {
        let user =
            resolve_user(self.checker.user.as_deref()).map_err(|e| format!("cannot run: {e}"))?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.checker.sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // As for the task: the agent's own configuration is not the check's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &user {
            cmd.env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.dir);
        }
        cmd.envs(self.checker.env.iter().map(|(k, v)| (k, v)));
        // The user is switched after the chdir into the sandbox (as the task's is):
        // std's `uid()` would switch first, and a task user may not be able to pass
        // through the directories above the work dir.
        // The task's persistent volumes, bound where the task has them (in the check's
        // own mount namespace, as the task's are).
        let mut volumes = Vec::with_capacity(self.checker.volumes.len());
        for (source, target_path, read_only) in &self.checker.volumes {
            let target = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(target_path)
                .map_err(|e| {
                    format!(
                        "cannot open the volume mount point {}: {e}",
                        target_path.display()
                    )
                })?;
            volumes.push(crate::isolation::child::VolumeBind {
                source: source.clone(),
                target: target.into(),
                target_path: target_path.clone(),
                read_only: *read_only,
            });
        }
        crate::isolation::child::ChildSetup {
            credentials: user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw())),
            volumes,
            ..Default::default()
        }
        .install(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
        let mut group = GroupGuard(child.id().map(|pid| Pid::from_raw(pid as i32)));
        let status = child
            .wait()
            .await
            .map_err(|e| format!("cannot wait: {e}"))?;
        group.0 = None; // reaped: the group id may be reused
        Ok(exit_kind(status))
    }
}

/// Kills a check's process group when dropped before it was disarmed.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

fn exit_kind(status: std::process::ExitStatus) -> ExitKind {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitKind::Exited(code),
        (None, Some(sig)) => ExitKind::Signaled(sig),
        (None, None) => ExitKind::Exited(-1),
    }
}

fn http_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// The innermost cause of an error ("Connection refused (os error 111)" rather than
/// "error sending request for url (...)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_result_and_every_change_are_reported() {
        let t0 = Instant::now();
        let mut h = HealthState::new(Duration::ZERO, 3, t0);
        let v = h.observe(true, "ok", t0);
        assert_eq!(v.report, Some(true));
        assert!(!v.kill);
        assert_eq!(v.message, "health check passed: ok");
        assert!(h.observe(true, "ok", t0 + S).is_quiet());
        let v = h.observe(false, "HTTP GET x returned 500", t0 + 2 * S);
        assert_eq!(v.report, Some(false));
        assert!(!v.kill);
        assert_eq!(v.message, "health check failed: HTTP GET x returned 500");
        assert!(h.observe(false, "again", t0 + 3 * S).is_quiet());
        assert_eq!(h.observe(true, "ok", t0 + 4 * S).report, Some(true));

        // An unhealthy first result is reported too.
        let mut h = HealthState::new(Duration::ZERO, 3, t0);
        assert_eq!(h.observe(false, "no", t0).report, Some(false));
    }

    #[test]
    fn consecutive_failures_kill_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut h = HealthState::new(Duration::ZERO, 3, t0);
        assert!(!h.observe(false, "a", t0).kill);
        assert!(!h.observe(false, "b", t0).kill);
        assert!(h.observe(true, "ok", t0).report == Some(true));
        assert!(!h.observe(false, "c", t0).kill);
        assert!(!h.observe(false, "d", t0).kill);
        let v = h.observe(false, "HTTP GET x returned 500", t0);
        assert!(v.kill);
        assert_eq!(v.report, None, "unhealthy was already reported");
        assert_eq!(
            v.message,
            "health check failed 3 times in a row: HTTP GET x returned 500"
        );

        // One failure is enough with consecutive_failures 1, and it is reported.
        let mut h = HealthState::new(Duration::ZERO, 1, t0);
        let v = h.observe(false, "refused", t0);
        assert_eq!((v.report, v.kill), (Some(false), true));
        assert_eq!(v.message, "health check failed: refused");

        // 0 never kills.
        let mut h = HealthState::new(Duration::ZERO, 0, t0);
        for i in 0..1000 {
            assert!(!h.observe(false, "x", t0 + i * S).kill);
        }
    }

    #[test]
    fn failures_in_the_grace_period_do_not_count() {
        let t0 = Instant::now();
        let grace = 10 * S;
        let mut h = HealthState::new(grace, 1, t0);
        let v = h.observe(false, "starting", t0 + S);
        assert!(v.is_quiet(), "{v:?}");
        assert!(h.observe(false, "starting", t0 + 9 * S).is_quiet());
        // The grace period has passed: this one counts (and kills, at 1).
        let v = h.observe(false, "down", t0 + grace);
        assert_eq!((v.report, v.kill), (Some(false), true));

        // A success ends the grace period early.
        let mut h = HealthState::new(grace, 2, t0);
        assert!(h.observe(false, "starting", t0).is_quiet());
        assert_eq!(h.observe(true, "up", t0 + S).report, Some(true));
        let v = h.observe(false, "down", t0 + 2 * S);
        assert_eq!((v.report, v.kill), (Some(false), false));
        let v = h.observe(false, "down", t0 + 3 * S);
        assert!(v.kill);
        assert_eq!(v.message, "health check failed 2 times in a row: down");
    }

    fn checker(kind: CheckKind) -> Checker {
        Checker {
            spec: HealthCheckSpec {
                kind,
                delay: Duration::ZERO,
                interval: Duration::from_millis(50),
                timeout: S,
                grace_period: Duration::ZERO,
                consecutive_failures: 1,
            },
            sandbox: std::env::temp_dir(),
            env: vec![("CHECK_VAR".into(), "yes".into())],
            user: None,
            in_container: false,
            volumes: Vec::new(),
        }
    }

    fn probe(kind: CheckKind) -> Probe {
        Probe::new(
            checker(kind),
            ContainerId("c".into()),
            Arc::new(crate::FakeContainerizer::new(Duration::from_secs(1))),
        )
    }

    /// A port nothing listens on (bound, then released).
    async fn free_port() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn tcp_and_command_probes_say_what_they_saw() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ok = probe(CheckKind::Tcp { port }).check().await.unwrap();
        assert_eq!(ok, format!("TCP connection to 127.0.0.1:{port} accepted"));
        drop(listener);
        let port = free_port().await;
        let err = probe(CheckKind::Tcp { port })
            .check()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("TCP connection to 127.0.0.1:{port} failed: ")),
            "{err}"
        );

        let ok = probe(CheckKind::Command {
            command: r#"test "$CHECK_VAR" = yes"#.into(),
        })
        .check()
        .await;
        assert!(
            ok.is_ok(),
            "the task's environment reaches the command: {ok:?}"
        );
        let err = probe(CheckKind::Command {
            command: "exit 3".into(),
        })
        .check()
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "command `exit 3` exited with status 3");
    }

    #[tokio::test]
    async fn http_probes_judge_the_status_code() {
        let port = free_port().await;
        let err = probe(CheckKind::Http {
            port,
            path: "/".into(),
        })
        .check()
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!("HTTP GET http://127.0.0.1:{port}/ failed: ")),
            "{err}"
        );

        // A one-shot server answering each connection with the next status.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for status in ["204 No Content", "302 Found", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let p = probe(CheckKind::Http {
            port,
            path: "/ready".into(),
        });
        let url = format!("http://127.0.0.1:{port}/ready");
        assert_eq!(p.check().await, Ok(format!("HTTP GET {url} returned 204")));
        assert_eq!(p.check().await, Ok(format!("HTTP GET {url} returned 302")));
        assert_eq!(
            p.check().await.unwrap_err().to_string(),
            format!("HTTP GET {url} returned 500")
        );
    }

    #[tokio::test]
    async fn a_command_that_runs_out_of_time_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut c = checker(CheckKind::Command {
            command: "sleep 30 & echo $! > pid; wait".into(),
        });
        c.sandbox = dir.path().to_path_buf();
        let p = Probe::new(
            c,
            ContainerId("c".into()),
            Arc::new(crate::FakeContainerizer::new(S)),
        );
        let timed_out = tokio::time::timeout(Duration::from_millis(500), p.check()).await;
        assert!(timed_out.is_err());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("the command wrote its child's pid")
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + 5 * S;
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the check's child {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        })
    }

    #[tokio::test]
    async fn the_checker_reports_changes_and_stops_after_a_kill() {
        let port = free_port().await;
        let mut c = checker(CheckKind::Tcp { port });
        c.spec.consecutive_failures = 2;
        let (tx, mut rx) = mpsc::channel(8);
        let key = TaskKey {
            framework_id: "f".into(),
            task_id: "t".into(),
        };
        let handle = tokio::spawn(run(
            c,
            key.clone(),
            ContainerId("c".into()),
            Arc::new(crate::FakeContainerizer::new(S)),
            tx,
        ));
        let first = rx.recv().await.unwrap();
        assert_eq!(first.key, key);
        assert_eq!(
            (first.verdict.report, first.verdict.kill),
            (Some(false), false)
        );
        let second = rx.recv().await.unwrap();
        assert_eq!((second.verdict.report, second.verdict.kill), (None, true));
        assert!(
            second
                .verdict
                .message
                .starts_with("health check failed 2 times in a row: TCP connection to"),
            "{}",
            second.verdict.message
        );
        tokio::time::timeout(5 * S, handle)
            .await
            .expect("the checker ends after asking for a kill")
            .unwrap();
        assert!(rx.recv().await.is_none());
    }
}
