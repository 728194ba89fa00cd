//! `strata-bench failover`: master failover at scale. One process holds a master
//! (`strata_master::serve` on a loopback listener, the real file-backed registry in a
//! temporary work dir; or its own process, see `--master-process` below), N simulated
//! agents and one framework, all speaking the real gRPC protocols over loopback.
//!
//! ```text
//!  setup    agents Register ─▶ master ─▶ offers ─▶ framework ACCEPTs (LAUNCH) ─▶ RunTask
//!           ─▶ agent TASK_RUNNING (with a uuid) ─▶ framework ACKNOWLEDGEs ─▶ agent
//!  restart  master stopped (graceful) ─▶ agents and framework see their streams end
//!           ─▶ new master on the same address and work dir
//!           t0 = the new master serves (/health answers)
//!           "detector": agents and framework learn of it ─▶ each waits U[0, jitter]
//!           ─▶ agents re-register with their id and tasks; framework re-subscribes
//!              with its id
//!           until /metrics shows N agents ACTIVE and T tasks RUNNING  (the figure)
//!           then the framework reconciles (implicit) and counts T answers
//! ```
//!
//! - Simulated agents are not `strata_agent` instances: each is one tokio task holding
//!   an `AgentLink.Attach` stream. It registers with its resources, answers RunTask
//!   with TASK_RUNNING (uuid, as an agent does), counts acknowledgements, sends a
//!   heartbeat every interval the master asks (Registered), and answers Ping. When its
//!   stream breaks it builds its next Register (its id and every task it runs, as
//!   `RunningTask` TASK_RUNNING) and waits for the new master (retrying the address
//!   after 10 s without news); told of one, it re-registers after a random delay in
//!   `[0, --jitter-ms]` (default 100 ms); a failed attempt doubles the bound, up to
//!   1 s, as a real agent's backoff does (the real agent starts from 1 s).
//! - Every agent has its own stream. A real agent also has its own TCP connection,
//!   which with the master in this process costs two sockets in this one process
//!   (client and master side), so agents share HTTP/2 connections K at a time, K the
//!   smallest the open-files limit allows (`--agents-per-conn` to choose; 1 is one
//!   connection per agent). The client side of those connections (connect, HTTP/2
//!   handshake, encoding) runs on the same cores as the master and counts against it:
//!   the fewer connections, the less of the figure is the harness.
//! - `--master-process` runs the master as a process of its own (this binary's hidden
//!   `failover-master` command, see master.rs): each process then holds one side of
//!   the connections under its own open-files limit, so one connection per agent fits,
//!   and the master's CPU time is printed apart from the bench's.
//! - `--secure` runs it as a secure cluster does: the master with TLS and
//!   authentication (its own process, the credentials file the bench writes), every
//!   simulated agent with its own client certificate `CN=agent:<node id>` issued by
//!   the cluster CA (made in the master's work dir before it first starts) over its
//!   own connection (a connection carries one client certificate, and one certificate
//!   registers one agent), the framework and the /metrics reader with the credential
//!   of the principal `bench`. If the open-files limit does not allow one connection
//!   per agent, the run takes as many agents as fit and says so.
//! - The tasks are real: the framework launches them through offers (ACCEPT with
//!   LAUNCH, T/N per agent), the agents report them RUNNING and the framework
//!   acknowledges every update before the restart. The master persists no tasks, so
//!   after the restart it learns and reconciles all T from the agents' re-registration
//!   (`RunningTask`s), exactly as after a real restart.
//! - The agents learn of the new master from the bench (the "detector", as Mesos agents
//!   learn of a new leader), once it serves: connecting before that would only queue
//!   in the listener's backlog (or be refused), which measures the kernel, not the
//!   master. The bench also waits, before starting the new master, until every agent
//!   has noticed the stop and built its Register: agents are other machines, their
//!   work is no load on the master. Time is measured from t0, so
//!   `time_to_all_agents_back` includes the jitter (at most `--jitter-ms`).
//! - The framework re-subscribes with its id (3600 s failover timeout, kept in the
//!   registry) and declines the offers made afresh. The master sends it an update for
//!   every task as agents bring them back; once all agents are back it reconciles
//!   implicitly and the bench times the T answers. `--reconcile-on-subscribe` makes
//!   it reconcile as soon as it has re-subscribed instead, in the middle of the storm.
//! - Completion is read from the new master's `/metrics` (`agents_active`,
//!   `tasks_running`), polled every `--poll-ms` (20 ms: the metrics walk every agent
//!   and task, so polling much faster would load the master being measured; the
//!   polls' own latency is printed).
//! - The open-files limit is raised at start (`setrlimit(RLIMIT_NOFILE)`, see
//!   `crate::rlimit`) as far as the hard limit allows (raising the hard limit needs
//!   CAP_SYS_RESOURCE).
//!
//! Output is `name: value unit` lines; per restart, the stages of the agents'
//! re-registration (dialled, connected, attached: percentiles from t0) and a histogram
//! of re-registrations per 100 ms. The last line printed is
//! `time_to_all_agents_back: X ms` (the median over `--restarts`).
//!
//! ```text
//! mod.rs        arguments, the open-files limit, what the parts share
//! agent.rs      the simulated agents and their shared connections
//! framework.rs  the framework: launches the tasks, re-subscribes, reconciles
//! master.rs     a master incarnation on the loopback address, its /health and /metrics
//! measure.rs    setup, restarts, and the report
//! ```

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use rand::Rng;
use strata_security::ClientTls;
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use crate::Outcome;
use crate::cluster::work_dir;
use crate::rlimit::raise_nofile_limit;

mod agent;
mod framework;
pub mod master;
mod measure;

#[derive(clap::Args, Debug)]
pub struct FailoverBenchArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: u32,
    /// Tasks, spread evenly over the agents and launched through offers.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Give up on a phase (setup, one restart) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Master restarts to measure, one sample each.
    #[arg(long, default_value_t = 1)]
    pub restarts: u32,
    /// Agents sharing one HTTP/2 connection (1: one TCP connection per agent, as real
    /// agents; at most 100, the server allows 200 streams per connection). Default:
    /// the fewest that the open-files limit allows (each connection is two sockets in
    /// this process).
    #[arg(long)]
    pub agents_per_conn: Option<u32>,
    /// Bound of the first (re-)registration delay in ms: after learning of the new
    /// master each agent (and the framework) waits a random time in [0, jitter].
    #[arg(long, default_value_t = 100)]
    pub jitter_ms: u64,
    /// How often the new master's /metrics is polled while agents come back, in ms.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Have the framework reconcile (implicitly) as soon as it has re-subscribed,
    /// while agents are still coming back, instead of once they all are. The master
    /// then answers for every task it knows at that moment in the middle of the storm.
    #[arg(long)]
    pub reconcile_on_subscribe: bool,
    /// Run the master as a process of its own (one side of the connections each, under
    /// its own open-files limit; its CPU time printed apart).
    #[arg(long)]
    pub master_process: bool,
    /// TLS and authentication: the master secure (its own process), each agent with its
    /// own certificate and connection, the framework with a credential.
    #[arg(long)]
    pub secure: bool,
}

/// A failover run's headline figures.
#[derive(Debug, Clone, Copy)]
pub struct FailoverFigures {
    /// The agents simulated (fewer than asked when the open-files limit is short).
    pub agents: u32,
    /// `time_to_all_agents_back`, the median over the restarts, ms.
    pub median_ms: f64,
    /// The master process's CPU time while the agents came back (median), ms.
    pub master_cpu_ms: Option<f64>,
    /// This process's CPU time (the simulated agents and framework) meanwhile, ms.
    pub bench_cpu_ms: f64,
}

const AGENT_RESOURCES: &str = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]";
const TASK_CPUS: f64 = 0.1;
/// Longest backoff bound of a simulated agent or the framework.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a broken stream waits for news of a new master before retrying the
/// address anyway (long enough for a restart: the bench's detector names the new
/// master when it serves).
const DETECTOR_WAIT: Duration = Duration::from_secs(10);
/// The message limit every Strata peer shares.
const MAX_MESSAGE: usize = strata_proto::limits::MAX_MESSAGE_BYTES;
/// File descriptors kept for what is not an agent connection.
const FD_SLACK: u64 = 2048;

pub async fn bench_failover(args: FailoverBenchArgs) -> anyhow::Result<Outcome> {
    Ok(measure_failover(&args).await?.0)
}

/// One failover run: prints its lines; its outcome and figures.
pub async fn measure_failover(
    args: &FailoverBenchArgs,
) -> anyhow::Result<(Outcome, FailoverFigures)> {
    let (setup, agent_res) = plan(args)?;
    let work = work_dir("strata-bench-failover")?;
    let result = measure::run(args, &setup, &work, agent_res).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A cluster as the failover bench sets it up (`args`: agents, tasks, `--master-process`,
/// `--secure`, ...) before its first restart, kept running for another bench
/// (`strata-bench dashboard`): the master serving, every simulated agent registered
/// and heartbeating, every task RUNNING.
pub struct Cluster {
    inner: measure::Cluster,
    work: std::path::PathBuf,
}

impl Cluster {
    /// Sets it up (printing the setup's lines, as `strata-bench failover` does).
    pub async fn start(args: &FailoverBenchArgs, name: &str) -> anyhow::Result<Cluster> {
        let (setup, agent_res) = plan(args)?;
        let work = work_dir(name)?;
        match measure::start(args, &setup, &work, agent_res).await {
            Ok(inner) => Ok(Cluster { inner, work }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                Err(e)
            }
        }
    }

    /// The master's base URL (`http://127.0.0.1:PORT`, `https://` when secure).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A client of the master's HTTP endpoints (its CA and credential when secure).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The master process's id (`None` when it runs in this process).
    pub fn master_pid(&self) -> Option<u32> {
        self.inner.master.pid()
    }

    /// From the first agent started to every task RUNNING and acknowledged.
    pub fn setup_time(&self) -> Duration {
        self.inner.setup_time
    }

    /// Stops the master, the agents and the framework, and removes the work dir.
    pub async fn stop(self) -> anyhow::Result<()> {
        let result = self.inner.stop().await;
        let _ = std::fs::remove_dir_all(&self.work);
        result
    }
}

/// What a run's setup is, from `args` and the open-files limit (raised as far as
/// allowed); prints the lines saying so.
fn plan(args: &FailoverBenchArgs) -> anyhow::Result<(measure::Setup, strata_proto::Resources)> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(args.restarts >= 1, "--restarts must be at least 1");
    let agent_res = strata_proto::Resources::parse(AGENT_RESOURCES)?;
    let master_process = args.master_process || args.secure;
    // Each connection is a socket on each side: both in this process unless the master
    // runs apart (the old master's are closed before the new one starts). Plus room
    // for the rest.
    let sides = if master_process { 1 } else { 2 };
    let fds = |agents: u32, per_conn: u32| sides * u64::from(agents.div_ceil(per_conn)) + FD_SLACK;
    let fd_limit = raise_nofile_limit(fds(args.agents, 1));
    let mut agents = args.agents;
    let per_conn = if args.secure {
        anyhow::ensure!(
            args.agents_per_conn.is_none_or(|k| k == 1),
            "--secure: every agent has its own certificate, so its own connection (--agents-per-conn 1)"
        );
        if fds(agents, 1) > fd_limit {
            agents = u32::try_from(fd_limit.saturating_sub(FD_SLACK) / sides)
                .unwrap_or(u32::MAX)
                .max(1);
            eprintln!(
                "bench: warning: the open-files limit is {fd_limit} (the hard limit): with one connection per agent only {agents} of the {} agents fit",
                args.agents
            );
        }
        1
    } else {
        match args.agents_per_conn {
            Some(k) => k,
            None => (1..=100)
                .find(|k| fds(agents, *k) <= fd_limit)
                .unwrap_or(100),
        }
    };
    anyhow::ensure!(
        (1..=100).contains(&per_conn),
        "--agents-per-conn must be within 1..=100"
    );
    let per_agent = args.tasks.div_ceil(agents);
    anyhow::ensure!(
        f64::from(per_agent) * TASK_CPUS <= agent_res.cpus().as_f64(),
        "{} tasks per agent do not fit an agent's {AGENT_RESOURCES}",
        per_agent
    );
    let connections = agents.div_ceil(per_conn);
    println!("agents: {agents}");
    println!("tasks: {}", args.tasks);
    println!(
        "security: {}",
        if args.secure {
            "tls (agent certificates, credentials, ACLs)"
        } else {
            "insecure"
        }
    );
    println!(
        "master: {}",
        if master_process {
            "own process"
        } else {
            "in this process"
        }
    );
    println!("rlimit_nofile: {fd_limit}");
    println!("agents_per_connection: {per_conn}");
    println!("connections: {connections}");
    if fd_limit < fds(agents, per_conn) {
        eprintln!(
            "bench: warning: the open-files limit is {fd_limit}, below the {} this run may need",
            fds(agents, per_conn)
        );
    }

    let setup = measure::Setup {
        agents,
        per_conn,
        master_process,
        nofile: fds(agents, 1),
    };
    Ok((setup, agent_res))
}

/// What the agents and the framework share with the bench.
struct Shared {
    /// The master's address, `host:port`.
    addr: String,
    /// The framework's settings (the CA and its credential when secure).
    tls: ClientTls,
    /// The "detector": the epoch of the master to talk to (bumped when a new one serves).
    master: watch::Receiver<u64>,
    jitter: Duration,
    /// Acknowledgements the agents received (setup).
    acks: AtomicUsize,
    /// Failed registration and subscription attempts.
    failures: AtomicUsize,
    /// Agents whose stream ended and that wait for a master, their Register built.
    waiting: AtomicUsize,
    /// Registrations confirmed to agents, with the master's epoch.
    registered: mpsc::UnboundedSender<(u64, Instant)>,
    /// Stages of each (re-)registration: the connection made, the stream opened.
    stages: mpsc::UnboundedSender<(u64, Stage, Instant)>,
}

/// Waits `delay`, unless the detector names a new master first: then the backoff
/// starts afresh and the wait is a random time in `[0, jitter]` from then.
async fn wait_or_new_master(
    master: &mut watch::Receiver<u64>,
    delay: Duration,
    bound: &mut Duration,
    initial: Duration,
) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        Ok(()) = master.changed() => {
            *bound = initial;
            tokio::time::sleep(jitter(initial)).await;
        }
    }
}

/// A stage of an agent's (re-)registration, timed for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// About to dial (after the jitter).
    Dial,
    /// The HTTP/2 connection is up.
    Connected,
    /// The master answered the Attach call (its handler sent Register to the driver).
    Attached,
}

/// A random delay in `[0, bound]`.
fn jitter(bound: Duration) -> Duration {
    let nanos = bound.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// An endpoint for the master at `addr` with `tls` (verified as `strata-master`).
fn endpoint(tls: &ClientTls, addr: &str) -> anyhow::Result<Endpoint> {
    Ok(tls
        .endpoint(addr, strata_security::MASTER_NAME)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true))
}

/// How many of `agents` fit with one connection each and the master in its own
/// process (each process one side), given the open-files limit (raised as far as
/// allowed).
pub fn agents_with_own_connections(agents: u32) -> u32 {
    let limit = raise_nofile_limit(u64::from(agents) + FD_SLACK);
    let fit = u32::try_from(limit.saturating_sub(FD_SLACK)).unwrap_or(u32::MAX);
    agents.min(fit).max(1)
}
