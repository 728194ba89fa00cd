//! `strata-bench failover`: master failover at scale. One process holds a master
//! (`strata_master::serve` on a loopback listener, the real file-backed registry in a
//! temporary work dir), N simulated agents and one framework, all speaking the real
//! gRPC protocols over loopback.
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
//!   which here costs two sockets in this one process (client and master side), so
//!   agents share HTTP/2 connections K at a time, K the smallest the open-files limit
//!   allows (`--agents-per-conn` to choose; 1 is one connection per agent). The
//!   client side of those connections (connect, HTTP/2 handshake, encoding) runs on
//!   the same cores as the master and counts against it: the fewer connections, the
//!   less of the figure is the harness.
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
use tokio::sync::{mpsc, watch};
use tonic::transport::Endpoint;

use crate::Outcome;
use crate::cluster::work_dir;
use crate::rlimit::raise_nofile_limit;

mod agent;
mod framework;
mod master;
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
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(args.restarts >= 1, "--restarts must be at least 1");
    let per_agent = args.tasks.div_ceil(args.agents);
    let agent_res = strata_proto::Resources::parse(AGENT_RESOURCES)?;
    anyhow::ensure!(
        f64::from(per_agent) * TASK_CPUS <= agent_res.cpus().as_f64(),
        "{} tasks per agent do not fit an agent's {AGENT_RESOURCES}",
        per_agent
    );
    // Each connection is two sockets in this process (client and server side); the
    // old master's are closed before the new one starts. Plus room for the rest.
    let fds = |per_conn: u32| 2 * u64::from(args.agents.div_ceil(per_conn)) + FD_SLACK;
    let fd_limit = raise_nofile_limit(fds(1));
    let per_conn = match args.agents_per_conn {
        Some(k) => k,
        None => (1..=100).find(|k| fds(*k) <= fd_limit).unwrap_or(100),
    };
    anyhow::ensure!(
        (1..=100).contains(&per_conn),
        "--agents-per-conn must be within 1..=100"
    );
    let connections = args.agents.div_ceil(per_conn);
    println!("agents: {}", args.agents);
    println!("tasks: {}", args.tasks);
    println!("rlimit_nofile: {fd_limit}");
    println!("agents_per_connection: {per_conn}");
    println!("connections: {connections}");
    if fd_limit < fds(per_conn) {
        eprintln!(
            "bench: warning: the open-files limit is {fd_limit}, below the {} this run may need",
            fds(per_conn)
        );
    }

    let work = work_dir("strata-bench-failover")?;
    let result = measure::run(&args, &work, per_conn, agent_res).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// What the agents and the framework share with the bench.
struct Shared {
    url: String,
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

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true))
}
