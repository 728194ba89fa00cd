//! In-process cluster parts for the benches: a master and agents on loopback
//! listeners, all stopped by one switch, and the work directory they keep state in.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A fresh directory `<tmp>/<prefix>-<uuid>`; the bench removes it when done.
pub fn work_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The master and agents a bench runs in its own process.
pub struct Parts {
    /// Flipped to `true` once to stop every part.
    stop: watch::Sender<bool>,
    /// Every part's serve loop, awaited by [`Parts::stop`].
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Parts {
    pub fn new() -> Parts {
        Parts {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }

    /// Resolves when [`Parts::stop`] is called.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Starts a master on an ephemeral loopback port; its address.
    pub async fn master(
        &mut self,
        options: strata_master::MasterOptions,
    ) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = self.stopped();
        self.tasks.spawn(async move {
            strata_master::serve(listener, options, stop)
                .await
                .map_err(anyhow::Error::from)
        });
        Ok(addr)
    }

    /// Starts an agent whose HTTP API listens on an ephemeral loopback port.
    pub async fn agent(&mut self, options: strata_agent::AgentOptions) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let stopped = self.stopped();
        let stop = async move {
            stopped.await;
            strata_agent::Shutdown::KillTasks
        };
        self.tasks.spawn(async move {
            strata_agent::run(listener, options, stop)
                .await
                .map_err(anyhow::Error::from)
        });
        Ok(())
    }

    /// Stops every part and waits until all have ended.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
