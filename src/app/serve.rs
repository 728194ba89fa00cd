//! `strata serve`: runs the container framework (subscribes to the master as the
//! framework `strata`, serves the App API, keeps apps running) until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strata_framework_sdk::{Driver, DriverOptions};
use strata_proto::v1;
use tokio::net::TcpListener;

use super::engine::{Engine, Persisted};
use super::service::{AppScheduler, Framework};
use super::store::StateStore;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The master's address.
    #[arg(long, default_value = "127.0.0.1:5050", env = "STRATA_MASTER")]
    pub master: String,
    /// Where the App API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the framework keeps its state (apps, tasks, its framework id).
    #[arg(long, default_value = "/var/lib/strata/apps")]
    pub state_dir: PathBuf,
    /// The role the framework subscribes with; tasks take the resources reserved for
    /// it first, then unreserved ones.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// The framework's name at the master.
    #[arg(long, default_value = "strata")]
    pub name: String,
    /// How long the master keeps the framework's tasks while it is away (Marathon: a week).
    #[arg(long, default_value = "7d", value_parser = strata_proto::duration::parse)]
    pub failover_timeout: Duration,
    /// How often deployments are re-evaluated.
    #[arg(long, default_value = "1s", value_parser = strata_proto::duration::parse)]
    pub tick: Duration,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "strata serve: master {}; App API listening on {}",
        args.master,
        listener.local_addr()?
    );
    run(args, listener, shutdown_signal()).await?;
    Ok(0)
}

/// Runs the framework on `listener` until `stop` resolves. Used by `strata serve`
/// and `strata local`.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut store = StateStore::open(&args.state_dir)?;
    let loaded = store.load()?;
    tracing::info!(
        apps = loaded.apps.len(),
        tasks = loaded.tasks.len(),
        framework_id = ?loaded.framework_id,
        "state loaded"
    );
    let framework_info = v1::FrameworkInfo {
        id: loaded.framework_id.clone().unwrap_or_default(),
        name: args.name.clone(),
        user: String::new(),
        roles: vec![args.role.clone()],
        failover_timeout_seconds: args.failover_timeout.as_secs_f64(),
        capabilities: vec![
            v1::FrameworkCapability::PartitionAware as i32,
            v1::FrameworkCapability::TaskKillingState as i32,
        ],
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        principal: String::new(),
    };
    let persisted = Persisted::new(&loaded.apps, &loaded.tasks);
    let core =
        Engine::restore(loaded.apps, loaded.tasks, loaded.framework_id).with_role(&args.role);
    let (framework_task, framework) =
        Framework::new(core, store, persisted, args.master.clone(), args.tick);
    // Status updates are acknowledged by the scheduler, once they are durable.
    let options = DriverOptions {
        auto_acknowledge: false,
        ..DriverOptions::default()
    };
    let driver = Driver::new(
        args.master.clone(),
        framework_info,
        AppScheduler {
            framework: framework.clone(),
        },
    )
    .with_options(options);
    let handle = driver.handle();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let api = super::api::router(framework);
    let http = tokio::spawn({
        let stop = stopped();
        async move {
            axum::serve(listener, api)
                .with_graceful_shutdown(stop)
                .await
        }
    });
    let framework_task = tokio::spawn(framework_task.run(Some(handle.clone()), stopped()));
    let mut driver_task = tokio::spawn(driver.run());

    tokio::pin!(stop);
    let outcome = tokio::select! {
        _ = &mut stop => None,
        r = &mut driver_task => Some(r),
    };
    // Stop without tearing down: the master keeps the tasks for the failover timeout.
    handle.stop();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(5), framework_task)
        .await
        .is_err()
    {
        tracing::warn!("the framework task did not stop within 5 s");
    }
    match tokio::time::timeout(Duration::from_secs(5), http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "App API server"),
        Err(_) => tracing::warn!("App API server did not stop within 5 s"),
        _ => {}
    }
    match outcome {
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(5), driver_task).await;
            Ok(())
        }
        Some(Ok(Ok(_))) => Ok(()),
        Some(Ok(Err(e))) => Err(anyhow::anyhow!(e).context("the framework stopped")),
        Some(Err(e)) => Err(anyhow::anyhow!("the framework driver panicked: {e}")),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
