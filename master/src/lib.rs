//! The Strata master: the sans-IO core (`core`), its driver, and the gRPC and HTTP
//! servers that feed it.
//!
//! ```text
//!   TcpListener ─▶ tonic server (HTTP/2 h2c + HTTP/1.1)
//!                    ├─ gRPC Scheduler / AgentLink / Operator ─┐
//!                    └─ HTTP /state /health /metrics ──────────┤ Command
//!                                                              ▼
//!                    driver task (owns core::Master) ──Persist──▶ Store (registry in --work-dir)
//! ```
//!
//! With `dns_listen` set, a DNS server ([`dns`]) answers beside them from the operator
//! event stream.
//!
//! [`serve`] is the entry point used by the `strata-master` binary, `strata local`,
//! `strata bench` and the tests.
#![forbid(unsafe_code)]

pub mod authorize;
pub mod core;
pub mod dns;
pub mod driver;
pub mod events;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod options;
pub mod rate;
pub mod secrets;
pub mod security;
pub mod store;
pub mod ui;

use std::future::Future;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use options::{MasterOptions, OptionsError, parse_duration, parse_weights};
pub use security::{MasterSecurity, Security, TlsOptions};
pub use store::{FileStore, MemoryStore, Store, StoreError};

/// Why the master could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot use the listener")]
    Listener(#[source] std::io::Error),
    #[error("cannot serve DNS on {addr} (UDP and TCP; is the port in use?)")]
    Dns {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed")]
    Server(#[from] tonic::transport::Error),
    #[error("TLS setup: {0}")]
    Security(#[from] strata_security::SecurityError),
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    #[error("the driver task panicked: {0}")]
    DriverPanicked(String),
    #[error(transparent)]
    Secrets(#[from] secrets::KeyError),
}

/// Runs a master on `listener` until `shutdown` completes: opens the registry in
/// `options.work_dir` (see [`FileStore`]), then serves as [`serve_with_store`] does.
pub async fn serve(
    listener: TcpListener,
    options: MasterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    options.validate()?;
    let store = FileStore::open(&options.work_dir)?;
    serve_with_store(listener, options, Box::new(store), shutdown).await
}

/// Runs a master on `listener` with the registry in `store` until `shutdown`
/// completes. `options.work_dir` is not used.
///
/// Builds the core with a fresh master id from what `store` holds, starts the driver
/// task, and serves gRPC and HTTP on the one listener. On shutdown it stops accepting
/// connections, closes every framework and agent stream, flushes the store, and waits
/// up to `options.shutdown_grace` for open connections to finish.
pub async fn serve_with_store(
    listener: TcpListener,
    options: MasterOptions,
    store: Box<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    options.validate_tunables()?;
    let dns = match options.dns_listen {
        Some(addr) => Some(
            dns::DnsServer::bind(addr)
                .await
                .map_err(|source| MasterError::Dns { addr, source })?,
        ),
        None => None,
    };
    serve_with_dns(listener, dns, options, store, shutdown).await
}

/// [`serve_with_store`] with the DNS server's sockets bound by the caller
/// ([`dns::DnsServer::bind`], so that it knows the port before the master runs);
/// `options.dns_listen` is not used. `None`: no DNS server.
pub async fn serve_with_dns(
    listener: TcpListener,
    dns: Option<dns::DnsServer>,
    options: MasterOptions,
    mut store: Box<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    options.validate_tunables()?;
    let local = listener.local_addr().map_err(MasterError::Listener)?;
    let registry = store.load()?;
    let master_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(
        %master_id,
        address = %local,
        agents = registry.agents.len(),
        frameworks = registry.frameworks.len(),
        "master starting"
    );
    let security = match &options.security {
        security::Security::Insecure => {
            tracing::warn!(
                "INSECURE: no TLS and no authentication on {local}: anyone who reaches this port controls the cluster (--insecure is for development only)"
            );
            MasterSecurity::insecure()
        }
        security::Security::Tls(tls) => {
            if options.work_dir.as_os_str().is_empty() {
                return Err(OptionsError::EmptyWorkDir.into());
            }
            MasterSecurity::setup(&options.work_dir, tls, local)?
        }
    };
    let authz =
        strata_security::Authorizer::load(options.acls.as_deref(), security.default_acls())?;
    if let Some(path) = authz.path() {
        tracing::info!(acls = %path.display(), "ACLs loaded");
    }
    let security = security.with_authorizer(authz.clone());
    let limits = options
        .rate_limits
        .as_ref()
        .map(rate::RateLimits::new)
        .unwrap_or_default();
    let key = std::sync::Arc::new(load_secrets_key(&options, &registry)?);
    let mut config = options.core_config(master_id);
    config.authorizer = authz;
    let master = core::Master::new(config, registry, Instant::now());
    let (driver, handle) = driver::CoreDriver::new(master, store, options.allocation_interval);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut driver_task = tokio::spawn(driver.run(stop_rx.clone()));
    let reloader = tokio::spawn(reload_on_sighup(security.clone(), stop_rx.clone()));
    let dns_task = dns.map(|dns| {
        tracing::info!(address = %dns.local_addr(), domain = %options.dns_domain, "DNS server listening");
        tokio::spawn(dns.run(handle.clone(), options.dns_domain.clone(), stop_rx.clone()))
    });

    let mut server_stop = stop_rx;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls() {
        builder = builder.tls_config(tls.tonic())?;
    }
    let server = builder
        .accept_http1(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_routes(http::router(handle, &security, limits, key))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = server_stop.wait_for(|s| *s).await;
            },
        );
    let mut server = std::pin::pin!(server);
    let mut shutdown = std::pin::pin!(shutdown);

    // Run until shutdown, or until the server or the driver stops on its own.
    let mut driver_result = None;
    let mut server_result = None;
    tokio::select! {
        () = &mut shutdown => tracing::info!("shutting down"),
        r = &mut driver_task => driver_result = Some(r),
        r = &mut server => server_result = Some(r),
    }
    let _ = stop_tx.send(true);

    let driver_result = match driver_result {
        Some(r) => r,
        None => (&mut driver_task).await,
    };
    if server_result.is_none() {
        match tokio::time::timeout(options.shutdown_grace, &mut server).await {
            Ok(r) => server_result = Some(r),
            Err(_) => tracing::warn!(
                grace = ?options.shutdown_grace,
                "connections still open after the shutdown grace period; leaving them"
            ),
        }
    }
    reloader.abort();
    if let Some(mut dns_task) = dns_task
        && tokio::time::timeout(options.shutdown_grace, &mut dns_task)
            .await
            .is_err()
    {
        tracing::warn!("the DNS server did not stop within the shutdown grace period");
        dns_task.abort();
    }
    tracing::info!("master stopped");

    match driver_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(MasterError::DriverPanicked(e.to_string())),
    }
    if let Some(Err(e)) = server_result {
        return Err(e.into());
    }
    Ok(())
}

/// The key that seals secrets (see [`secrets`]): `options.secrets_key_file`, else
/// `WORK_DIR/secrets.key`, created at the first start; a key in memory only when there
/// is neither (a master without a work dir keeps no registry either). A registry with
/// secrets needs the key that sealed them.
fn load_secrets_key(
    options: &MasterOptions,
    registry: &core::Registry,
) -> Result<secrets::SecretsKey, MasterError> {
    let sealed: Vec<(&str, &[u8])> = registry
        .objects
        .values()
        .filter(|o| o.kind == core::StoredKind::Secret)
        .filter_map(|o| o.latest().map(|v| (o.name.as_str(), v.data.as_slice())))
        .collect();
    let path = options.secrets_key_file.clone().or_else(|| {
        (!options.work_dir.as_os_str().is_empty()).then(|| options.work_dir.join("secrets.key"))
    });
    let Some(path) = path else {
        if !sealed.is_empty() {
            return Err(MasterError::Secrets(secrets::KeyError::Missing {
                path: std::path::PathBuf::new(),
                count: sealed.len(),
            }));
        }
        return Ok(secrets::SecretsKey::ephemeral());
    };
    let key = secrets::SecretsKey::load_or_create(&path, sealed.len())?;
    if let Some((name, data)) = sealed.first() {
        key.verify(name, data)?;
    }
    Ok(key)
}

/// Reloads the credentials and the ACLs on every SIGHUP until `stop`; a bad file keeps
/// what is in force and is logged.
async fn reload_on_sighup(security: MasterSecurity, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP: reload with POST /security/reload");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => match security.reload() {
                Ok(reloaded) => tracing::info!(?reloaded, "SIGHUP: reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: nothing reloaded"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
