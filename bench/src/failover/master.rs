//! A master incarnation on the bench's loopback address (the real file-backed
//! registry in the work dir), and what the bench reads from it: /health, /metrics.
//!
//! The master runs in the bench's process, or (`--master-process`, and always with
//! `--secure`) as a process of its own: `strata-bench failover-master`, this same
//! binary, which binds the address, says where it listens on its stdout and serves
//! until its stdin closes. Its own process has its own open-files limit, so that one
//! TCP connection per agent fits (10,000 sockets on each side), and its CPU time is
//! read apart from the simulated agents' (`/proc/PID/stat`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::rlimit::raise_nofile_limit;

/// How the bench runs its master.
#[derive(Debug, Clone)]
pub(super) struct MasterSpec {
    pub(super) work_dir: PathBuf,
    /// Run it as its own process (see the module docs).
    pub(super) process: bool,
    /// TLS and authentication with this credentials file (`None`: insecure).
    pub(super) credentials: Option<PathBuf>,
    /// The open-files limit the master process asks for.
    pub(super) nofile: u64,
}

/// A master incarnation.
pub(super) enum RunningMaster {
    /// In this process: its serve task and its stop switch.
    InProcess {
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), strata_master::MasterError>>,
    },
    /// A `strata-bench failover-master` process: it stops when its stdin closes.
    Process {
        child: Child,
        stdin: Option<ChildStdin>,
        /// The open-files limit in force in it.
        nofile: u64,
    },
}

impl RunningMaster {
    /// Starts a master on `addr` (port 0: any); its address.
    pub(super) async fn start(
        spec: &MasterSpec,
        addr: SocketAddr,
    ) -> anyhow::Result<(RunningMaster, SocketAddr)> {
        if !spec.process {
            let listener = listen_retrying(addr).await?;
            let addr = listener.local_addr()?;
            return Ok((start_in_process(listener, spec), addr));
        }
        let exe = std::env::current_exe().context("cannot find the strata-bench binary")?;
        let mut command = Command::new(exe);
        command
            .arg("failover-master")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--work-dir")
            .arg(&spec.work_dir)
            .arg("--nofile")
            .arg(spec.nofile.to_string());
        if let Some(credentials) = &spec.credentials {
            command.arg("--credentials").arg(credentials);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the master process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout of the master")?;
        // Its first line: `listening ADDR nofile N`.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await??;
        let mut words = line.split_whitespace();
        let (Some("listening"), Some(bound), Some("nofile"), Some(nofile)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the master process did not start (it said {line:?})");
        };
        let master = RunningMaster::Process {
            child,
            stdin,
            nofile: nofile.parse().unwrap_or(0),
        };
        Ok((master, bound.parse()?))
    }

    /// The master process's id (`None` in this process).
    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            RunningMaster::InProcess { .. } => None,
            RunningMaster::Process { child, .. } => Some(child.id()),
        }
    }

    /// The master process's open-files limit (`None` in this process).
    pub(super) fn nofile(&self) -> Option<u64> {
        match self {
            RunningMaster::InProcess { .. } => None,
            RunningMaster::Process { nofile, .. } => Some(*nofile),
        }
    }

    /// Stops it (graceful) and waits until it has.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        match self {
            RunningMaster::InProcess { stop, task } => {
                let _ = stop.send(());
                task.await
                    .context("the master task panicked")?
                    .context("the master stopped with an error")?;
                Ok(())
            }
            RunningMaster::Process {
                mut child, stdin, ..
            } => {
                drop(stdin);
                let status = tokio::task::spawn_blocking(move || child.wait()).await??;
                anyhow::ensure!(status.success(), "the master process ended with {status}");
                Ok(())
            }
        }
    }
}

/// A loopback listener on `addr` with the largest accept backlog the kernel allows,
/// so that a registration storm is not cut short by SYN drops.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
}

/// [`listen`], retried for a second while the address is still in use (the previous
/// master's sockets closing).
async fn listen_retrying(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::debug!(error = %e, "address still in use");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e).context("cannot listen on the master's address"),
        }
    }
}

fn options(spec_work_dir: &Path, credentials: Option<&Path>) -> strata_master::MasterOptions {
    let mut options = strata_master::MasterOptions::new(spec_work_dir);
    if let Some(credentials) = credentials {
        options.security = strata_master::Security::Tls(crate::secure::tls_options(credentials));
    }
    options
}

fn start_in_process(listener: TcpListener, spec: &MasterSpec) -> RunningMaster {
    let options = options(&spec.work_dir, spec.credentials.as_deref());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = strata_master::serve(listener, options, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = &result {
            eprintln!("bench: the master stopped: {}", chain(e));
        }
        result
    });
    RunningMaster::InProcess { stop, task }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// `strata-bench failover-master`: the failover bench's master as its own process.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    work_dir: PathBuf,
    /// TLS and authentication with this credentials file (else insecure).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// The open-files limit to ask for.
    #[arg(long, default_value_t = 65_536)]
    nofile: u64,
}

/// Binds, prints `listening ADDR nofile N`, and serves until stdin closes.
pub async fn run_child(args: ChildArgs) -> anyhow::Result<crate::Outcome> {
    let nofile = raise_nofile_limit(args.nofile);
    let listener = listen_retrying(args.listen).await?;
    let addr = listener.local_addr()?;
    let options = options(&args.work_dir, args.credentials.as_deref());
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr} nofile {nofile}")?;
        out.flush()?;
    }
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink)
        })
        .await;
    };
    strata_master::serve(listener, options, stdin_closed)
        .await
        .map_err(|e| anyhow::anyhow!("the master stopped: {}", chain(&e)))?;
    Ok(crate::Outcome {
        code: 0,
        figure: String::new(),
    })
}

/// Waits until the master at `url` answers /health.
pub(super) async fn wait_serving(
    http: &reqwest::Client,
    url: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let ok = http
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the master did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `agents_active`, `tasks_running` and `frameworks_connected` from /metrics.
pub(super) async fn progress(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, u64, u64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = (0, 0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        match name {
            "strata_master_agents_active" => out.0 = value,
            "strata_master_tasks_running" => out.1 = value,
            "strata_master_frameworks_connected" => out.2 = value,
            _ => {}
        }
    }
    Ok(out)
}

/// CPU time (user + system) of process `pid` so far (`None`: this process), from
/// `/proc/PID/stat`; zero when it cannot be read.
pub fn cpu_time(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // The fields after the command name (which may hold spaces), from field 3 on.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}
