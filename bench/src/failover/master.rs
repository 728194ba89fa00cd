//! A master incarnation on the bench's loopback address (the real file-backed
//! registry in the work dir), and what the bench reads from it: /health, /metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

/// A master incarnation: its serve task and its stop switch.
pub(super) struct RunningMaster {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: tokio::task::JoinHandle<Result<(), strata_master::MasterError>>,
}

/// A loopback listener on `addr` with the largest accept backlog the kernel allows,
/// so that a registration storm is not cut short by SYN drops.
pub(super) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
}

pub(super) fn start_master(listener: TcpListener, work_dir: &std::path::Path) -> RunningMaster {
    let options = strata_master::MasterOptions::new(work_dir);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = strata_master::serve(listener, options, async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = &result {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            eprintln!("bench: the master stopped: {message}");
        }
        result
    });
    RunningMaster { stop, task }
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
