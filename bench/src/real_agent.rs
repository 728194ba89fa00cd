//! A real agent inside a bench's process, on a Tokio runtime and threads of its own
//! (named [`AGENT_THREAD`]) so that its CPU time can be read apart from the master's
//! and the framework's; and the CPU and load figures the benches print.

use std::time::Duration;

use anyhow::Context;

/// The name of the agent's threads (its runtime's workers and blocking pool; at most
/// 15 bytes: `comm`).
pub const AGENT_THREAD: &str = "bench-agent";
/// The unit of `utime` and `stime` in `/proc/*/stat` (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// The agent, on a runtime and threads of its own, its HTTP API on `addr`.
pub struct AgentThread {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl AgentThread {
    pub fn start(options: strata_agent::AgentOptions) -> anyhow::Result<AgentThread> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(AGENT_THREAD)
            // Threads that end take their CPU time with them: none ends mid-bench.
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .enable_all()
            .build()
            .context("cannot start the agent's runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(AGENT_THREAD.into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stopped.await;
                        strata_agent::Shutdown::KillTasks
                    };
                    strata_agent::run(listener, options, shutdown)
                        .await
                        .map_err(anyhow::Error::from)
                })
            })
            .context("cannot start the agent's thread")?;
        Ok(AgentThread { addr, stop, thread })
    }

    /// Stops the agent (killing what still runs) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        if let Ok(Ok(Err(e))) = joined {
            eprintln!("bench: the agent stopped with an error: {e:#}");
        }
    }
}

/// CPU time (user and system) of the agent's threads so far.
pub fn agent_cpu() -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let is_agent =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim_end() == AGENT_THREAD);
        if !is_agent {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After the `(comm)`: utime and stime are fields 14 and 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / USER_HZ)
}

/// User plus system CPU time of `who` so far (`RUSAGE_SELF`: this process, master,
/// agent and framework; `RUSAGE_CHILDREN`: the tasks that ended).
pub fn cpu(who: nix::sys::resource::UsageWho) -> Duration {
    let Ok(usage) = nix::sys::resource::getrusage(who) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
