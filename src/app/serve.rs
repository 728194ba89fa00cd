//! `strata serve`: runs the container framework (subscribes to the master as the
//! framework `strata`, serves the App API, keeps apps running) until SIGINT/SIGTERM.
//!
//! Secure by default:
//!
//! ```text
//!  --ca-file ca.crt ──────────── verifies the master (as strata-master)
//!  --credential-file fw.json ─── the framework's own credential: the driver's calls,
//!                                and POST /tls/issue ─▶ the App API's certificate
//!                                (strata-apps, localhost, the listen address, hostname),
//!                                renewed at two thirds of its life
//!  --credentials creds.json ──── who may call the App API (HTTPS, Basic/Bearer, or a
//!                                user certificate of the cluster; /ping is public)
//!  --acls acls.json ──────────── what each of them may do (Mesos' ACLs, the master's
//!                                file: view_apps, manage_apps, run_tasks, use_images);
//!                                without it Acls::secure_default (anyone may use the
//!                                App API, nobody may run tasks as root)
//! ```
//!
//! `--insecure` is today's plain text without authentication, for development (its
//! default ACLs, Acls::insecure_default, still refuse root; `--acls` applies to it
//! too, every caller being anonymous).
//!
//! SIGHUP reads `--acls` and `--credentials` again; a file that cannot be read or is
//! invalid keeps what was in force and is logged. A bad `--acls` at the start is an
//! error exit naming the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use strata_framework_sdk::{ClientTls, Driver, DriverOptions};
use strata_proto::v1;
use strata_security::{Acls, Authenticator, Authorizer, Credentials, Issued, ServerTls};
use tokio::net::TcpListener;

use super::engine::{Engine, KeptVersions, ObjectVersions, Persisted, ServicePortRange};
use super::service::{AppScheduler, Event, Framework, FrameworkHandle};
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
    /// Plain text to the master and on the App API, and no authentication: anyone who
    /// reaches the App API's port deploys commands on the cluster. For development
    /// against a master started with --insecure.
    #[arg(long, conflicts_with_all = ["ca_file", "credential_file", "credentials"])]
    pub insecure: bool,
    /// The cluster CA (PEM) that verifies the master: `tls/ca.crt` in the master's
    /// work dir.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The framework's credential to the master, JSON
    /// `{"principal": "...", "secret": "..."}` (a principal of the master's
    /// credentials file).
    #[arg(long, value_name = "PATH")]
    pub credential_file: Option<PathBuf>,
    /// Who may call the App API: a credentials file in Mesos' format
    /// `{"credentials": [{"principal": "...", "secret": "..."}]}` (e.g. the master's
    /// credentials.json).
    #[arg(long, value_name = "PATH")]
    pub credentials: Option<PathBuf>,
    /// What the App API's callers may do: an ACL file in Mesos' format (the master's
    /// `--acls` file; view_apps, manage_apps, run_tasks, use_images apply here).
    /// Default: anyone may view and change apps, nobody may run tasks as root.
    /// Read again on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub acls: Option<PathBuf>,
    /// The ports apps' service ports come from, FIRST-LAST: a port asking for
    /// `service_port: 0` gets a free one of them, one asking for a number must be
    /// inside. Unique in the cluster: every agent's service proxy listens on them.
    #[arg(long, value_name = "FIRST-LAST", default_value = "10000-10999")]
    pub service_ports: ServicePortRange,
}

/// How the framework reaches the master and guards the App API.
enum Security {
    /// `--insecure`: plain text, everyone is anonymous.
    Insecure {
        /// `--acls`, else [`Acls::insecure_default`].
        authz: Authorizer,
    },
    Secure {
        /// The CA and the framework's credential, for the driver and `/tls/issue`.
        client: ClientTls,
        /// Checks the App API's callers against `--credentials`.
        authn: Authenticator,
        /// `--acls`, else [`Acls::secure_default`].
        authz: Authorizer,
    },
}

/// The ACLs of `--acls`, else `default`; a bad file is an error naming it.
fn authorizer(args: &ServeArgs, default: Acls) -> anyhow::Result<Authorizer> {
    Authorizer::load(args.acls.as_deref(), default).context("--acls")
}

impl Security {
    /// Reads the files the flags name; a secure setup missing one is refused with the
    /// flags to give.
    fn from_args(args: &ServeArgs) -> anyhow::Result<Security> {
        if args.insecure {
            let ignored: Vec<&str> = [
                ("--ca-file", args.ca_file.is_some()),
                ("--credential-file", args.credential_file.is_some()),
                ("--credentials", args.credentials.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, set)| set.then_some(flag))
            .collect();
            if !ignored.is_empty() {
                anyhow::bail!(
                    "--insecure turns TLS and authentication off: {} cannot be used with it",
                    ignored.join(", ")
                );
            }
            return Ok(Security::Insecure {
                authz: authorizer(args, Acls::insecure_default())?,
            });
        }
        let (Some(ca_file), Some(credential_file), Some(credentials)) =
            (&args.ca_file, &args.credential_file, &args.credentials)
        else {
            let missing: Vec<&str> = [
                (
                    "--ca-file PATH (the cluster CA that verifies the master: tls/ca.crt in its work dir)",
                    args.ca_file.is_none(),
                ),
                (
                    "--credential-file PATH (the framework's credential to the master: {\"principal\", \"secret\"})",
                    args.credential_file.is_none(),
                ),
                (
                    "--credentials PATH (who may call the App API: a credentials file such as the master's credentials.json)",
                    args.credentials.is_none(),
                ),
            ]
            .into_iter()
            .filter_map(|(flag, missing)| missing.then_some(flag))
            .collect();
            anyhow::bail!(
                "strata serve is secure by default and needs {}; or run it with --insecure (plain text, no authentication) against a master started with --insecure",
                missing.join(", ")
            );
        };
        let ca_pem = strata_framework_sdk::secure::read_ca(ca_file).context("--ca-file")?;
        let credential = strata_framework_sdk::secure::read_credential(credential_file)
            .context("--credential-file")?;
        let credentials = Credentials::load(credentials).context("--credentials")?;
        let authz = authorizer(args, Acls::secure_default())?;
        Ok(Security::Secure {
            client: ClientTls {
                ca_pem: Some(ca_pem),
                identity: None,
                credential: Some(credential),
            },
            authn: Authenticator::new(credentials, super::api::PUBLIC),
            authz,
        })
    }
}

/// Says loudly that nothing is protected.
/// (A log line, in the chosen log format: `--log-format json` stays one object per line.)
fn warn_insecure(listen: SocketAddr) {
    tracing::warn!(
        %listen,
        "INSECURE: --insecure: plain text to the master and an App API without TLS or authentication; anyone who reaches it can deploy commands on the cluster (development only)"
    );
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    // Refuse a setup that cannot work before listening (`run` reads the files again).
    let scheme = match Security::from_args(&args)? {
        Security::Insecure { .. } => "http",
        Security::Secure { .. } => "https",
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "strata serve: master {}; App API listening on {scheme}://{}",
        args.master,
        listener.local_addr()?
    );
    run(args, listener, shutdown_signal()).await?;
    Ok(0)
}

/// Runs the framework on `listener` until `stop` resolves. Used by `strata serve`
/// and `strata local`. Secure (the default): first has the master issue the App
/// API's certificate (waiting for a master not up yet; a refusal is an error), then
/// subscribes over TLS with the credential and serves the App API over HTTPS to
/// callers with a credential of `--credentials`.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let security = Security::from_args(&args)?;
    let mut stop = Box::pin(stop);
    let listen = listener.local_addr()?;
    let certificate = match &security {
        Security::Insecure { .. } => {
            warn_insecure(listen);
            None
        }
        Security::Secure { client, .. } => {
            let names = app_api_names(listen);
            match first_certificate(&args.master, client, &names, stop.as_mut()).await? {
                Some(issued) => Some(Renewal {
                    master: args.master.clone(),
                    client: client.clone(),
                    names,
                    issued,
                }),
                // Stopped while waiting for the master.
                None => return Ok(()),
            }
        }
    };
    let (client_tls, authn, authz) = match security {
        Security::Insecure { authz } => (ClientTls::insecure(), Authenticator::insecure(), authz),
        Security::Secure {
            client,
            authn,
            authz,
        } => (client, authn, authz),
    };

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
        principal: client_tls
            .credential
            .as_ref()
            .map(|c| c.principal.clone())
            .unwrap_or_default(),
    };
    let persisted = Persisted::new(&loaded.apps, &loaded.tasks);
    let core = Engine::restore(loaded.apps, loaded.tasks, loaded.framework_id)
        .with_role(&args.role)
        .with_service_ports(args.service_ports);
    let (framework_task, framework) =
        Framework::new(core, store, persisted, args.master.clone(), args.tick);
    // Status updates are acknowledged by the scheduler, once they are durable.
    let objects_tls = client_tls.clone();
    let options = DriverOptions {
        auto_acknowledge: false,
        tls: client_tls,
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
    // SIGHUP: --acls and --credentials again, for every caller from then on.
    let reloader = reload_on_sighup(Reload {
        authn: authn.clone(),
        credentials: args.credentials.clone(),
        authz: authz.clone(),
    })?;
    let objects_framework = framework.clone();
    // The App API and, on the same port, the apps dashboard (`/`, `/ui/*`) behind the
    // same authentication.
    let api = super::ui::router(framework.clone(), authn.clone(), authz.clone())
        .merge(super::api::router_with_acls(framework, authn, authz));
    // HTTPS with the master's certificate, renewed as it ages (plain HTTP if insecure).
    let (servers, servers_rx) =
        tokio::sync::watch::channel(certificate.as_ref().map(Renewal::server_tls));
    let renewer = certificate.map(|renewal| tokio::spawn(renew_forever(renewal, servers)));
    let http = tokio::spawn({
        let stop = stopped();
        async move {
            strata_security::tls::serve(listener, api, servers_rx, stop)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    let framework_task = tokio::spawn(framework_task.run(Some(handle.clone()), stopped()));
    // Configs and secrets (issue 16): their latest versions, listed with the address
    // and credential of the scheduler's connection.
    let objects_poller = tokio::spawn(poll_objects(
        args.master.clone(),
        objects_tls,
        objects_framework,
        stopped(),
    ));
    let mut driver_task = tokio::spawn(driver.run());

    let outcome = tokio::select! {
        _ = &mut stop => None,
        r = &mut driver_task => Some(r),
    };
    // Stop without tearing down: the master keeps the tasks for the failover timeout.
    handle.stop();
    let _ = stop_tx.send(true);
    if let Some(renewer) = renewer {
        renewer.abort();
    }
    reloader.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), objects_poller).await;
    if tokio::time::timeout(Duration::from_secs(5), framework_task)
        .await
        .is_err()
    {
        tracing::warn!("the framework task did not stop within 5 s");
    }
    match tokio::time::timeout(Duration::from_secs(5), http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = format!("{e:#}"), "App API server"),
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

/// How often the master's configs and secrets are listed.
pub const OBJECTS_POLL: Duration = Duration::from_secs(2);
/// How long one listing may take (connecting included).
const OBJECTS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Lists the master's configs and secrets (`ListObjects`: names and versions, never
/// values) every [`OBJECTS_POLL`], and hands their latest
/// versions to the framework task ([`Event::Objects`]), which rolls the apps whose
/// pins are older. Connects as the scheduler does (`tls`: the CA and the framework's
/// credential) and reconnects after a failure. The master lists a secret only to a
/// principal that owns it or may `view_secrets` it: the framework's principal needs
/// that to roll apps on a secret's change (configs are listed to anyone). Runs until
/// `stop` resolves or the framework task is gone.
async fn poll_objects(
    master: String,
    tls: ClientTls,
    framework: FrameworkHandle,
    stop: impl Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(OBJECTS_POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let mut failing = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = interval.tick() => {}
        }
        // Always, not only while some app references objects: an app deployed later
        // then pins the versions listed (at most one interval old) rather than "the
        // latest", which could change between its launch and the next listing
        // without the framework noticing.
        let listed = tokio::time::timeout(
            OBJECTS_CALL_TIMEOUT,
            list_objects(&master, &tls, &mut client),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        match listed {
            Ok((latest, kept)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(%master, "configs and secrets are listed again");
                }
                if framework.event(Event::Objects(latest, kept)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                client = None;
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        %master,
                        error = %e,
                        "cannot list the master's configs and secrets: apps are not rolled on \
                         their changes until it can"
                    );
                } else {
                    tracing::debug!(error = %e, "still cannot list configs and secrets");
                }
            }
        }
    }
}

type ObjectsClient = v1::operator_client::OperatorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        strata_security::credentials::AuthInterceptor,
    >,
>;

/// One `ListObjects` call (connecting first if `client` is unset): the latest version
/// of each object listed, and every version kept of each.
async fn list_objects(
    master: &str,
    tls: &ClientTls,
    client: &mut Option<ObjectsClient>,
) -> Result<(ObjectVersions, KeptVersions), String> {
    let client = match client {
        Some(client) => client,
        None => client.insert(operator_client(master, tls).await?),
    };
    let answer = client
        .list_objects(v1::ListObjectsRequest::default())
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let kept = kept_versions(&answer);
    Ok((latest_versions(answer), kept))
}

/// Every version kept of each object of a `ListObjects` answer.
fn kept_versions(answer: &v1::ListObjectsResponse) -> KeptVersions {
    answer
        .objects
        .iter()
        .filter_map(|o| {
            let kind = strata_proto::objects::kind_of(o.kind)?;
            let kept = o.versions.iter().map(|v| v.version).collect();
            Some(((kind, o.name.clone()), kept))
        })
        .collect()
}

/// A client of the master's operator API, verifying the master and sending the
/// credential as the scheduler's connection does.
async fn operator_client(master: &str, tls: &ClientTls) -> Result<ObjectsClient, String> {
    let endpoint = tls
        .endpoint(master, strata_security::MASTER_NAME)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let interceptor = strata_security::credentials::AuthInterceptor::new(tls.credential.as_ref());
    Ok(
        v1::operator_client::OperatorClient::with_interceptor(channel, interceptor)
            .max_decoding_message_size(strata_proto::limits::MAX_OPERATOR_ANSWER_BYTES)
            .max_encoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES),
    )
}

/// The latest version of each object of a `ListObjects` answer (the last one kept).
fn latest_versions(answer: v1::ListObjectsResponse) -> ObjectVersions {
    answer
        .objects
        .into_iter()
        .filter_map(|o| {
            let kind = strata_proto::objects::kind_of(o.kind)?;
            let latest = o.versions.iter().map(|v| v.version).max()?;
            Some(((kind, o.name), latest))
        })
        .collect()
}

/// The names in the App API's certificate: the one the CLI verifies
/// ([`strata_security::APPS_NAME`]), the loopback names, the listen address when it
/// is a specific one, and the hostname.
fn app_api_names(listen: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = vec![
        strata_security::APPS_NAME.into(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    let mut add = |name: String| {
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    };
    if !listen.ip().is_unspecified() {
        add(listen.ip().to_string());
    }
    if let Some(host) = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
    {
        add(host.to_ascii_lowercase());
    }
    names
}

/// What renewing the App API's certificate needs, and the certificate it has.
struct Renewal {
    master: String,
    client: ClientTls,
    names: Vec<String>,
    issued: Issued,
}

impl Renewal {
    /// The App API's listener settings with the current certificate. User certificates
    /// of the cluster are accepted as credentials too.
    fn server_tls(&self) -> ServerTls {
        let ca_pem = self.client.ca_pem.as_deref().unwrap_or_default();
        ServerTls::new(&self.issued.cert_pem, &self.issued.key_pem, ca_pem)
    }
}

/// Whether the master answered `/tls/issue` with a refusal (as opposed to not being
/// reachable yet).
fn refused_by_master(e: &strata_security::SecurityError) -> bool {
    e.is_refusal()
}

/// The App API's first certificate. A master that cannot be reached (not started
/// yet) is waited for, with backoff, until `stop`; a refusal (a wrong credential) is
/// an error at once. `None`: stopped first.
async fn first_certificate(
    master: &str,
    client: &ClientTls,
    names: &[String],
    mut stop: std::pin::Pin<&mut (impl Future<Output = ()> + ?Sized)>,
) -> anyhow::Result<Option<Issued>> {
    let mut delay = Duration::from_millis(250);
    loop {
        match strata_security::join::issue(master, client, names).await {
            Ok(issued) => return Ok(Some(issued)),
            Err(e) if refused_by_master(&e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "the master at {master} refused to issue the App API's certificate (is --credential-file a principal of the master's credentials?)"
                )));
            }
            Err(e) => {
                tracing::warn!(%master, error = %e, retry_in = ?delay, "cannot get the App API's certificate from the master yet");
            }
        }
        tokio::select! {
            _ = stop.as_mut() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

/// Renews the App API's certificate at two thirds of its life, for as long as the
/// App API runs; each new one goes to `servers` (the listener re-serves with it).
async fn renew_forever(
    mut renewal: Renewal,
    servers: tokio::sync::watch::Sender<Option<ServerTls>>,
) {
    const RETRY: Duration = Duration::from_secs(60);
    loop {
        let wait = match strata_security::ca::renew_at(&renewal.issued.cert_pem) {
            Ok(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "the App API's certificate does not parse");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
        match strata_security::join::issue(&renewal.master, &renewal.client, &renewal.names).await {
            Ok(issued) => {
                renewal.issued = issued;
                let _ = servers.send(Some(renewal.server_tls()));
                tracing::info!("the App API's certificate was renewed");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry = ?RETRY, "cannot renew the App API's certificate");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// What SIGHUP reads again: the ACL file and the App API's credentials file.
#[derive(Clone)]
struct Reload {
    authn: Authenticator,
    /// `--credentials` (none when insecure).
    credentials: Option<PathBuf>,
    authz: Authorizer,
}

impl Reload {
    /// Reads the files again. One that cannot be read or is invalid keeps what was in
    /// force; its error is logged and returned.
    fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.authz.reload() {
            Ok(_) => {}
            Err(e) => errors.push(format!("--acls: {e}")),
        }
        if let Some(path) = &self.credentials {
            match reload_credentials(&self.authn, path) {
                Ok(()) => tracing::info!(
                    target: "strata::audit",
                    path = %path.display(),
                    "App API credentials reloaded"
                ),
                Err(e) => errors.push(format!("--credentials: {e:#}")),
            }
        }
        for error in &errors {
            tracing::error!(
                error = %error,
                "SIGHUP: cannot reload; the ones in force are kept"
            );
        }
        errors
    }
}

fn reload_credentials(authn: &Authenticator, path: &Path) -> anyhow::Result<()> {
    authn.set_credentials(Credentials::load(path)?);
    Ok(())
}

/// Reloads on every SIGHUP until aborted.
fn reload_on_sighup(reload: Reload) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading --acls and --credentials again");
            reload.reload();
        }
    }))
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use strata_framework_sdk::Credential;
    use strata_security::{APPS_NAME, Action, ClusterCa};

    use super::*;

    const OPS_SECRET: &str = "the-operators-secret-0123";

    fn args() -> ServeArgs {
        ServeArgs {
            master: "127.0.0.1:5050".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: PathBuf::from("/nonexistent"),
            role: "*".into(),
            name: "strata".into(),
            failover_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            insecure: false,
            ca_file: None,
            credential_file: None,
            credentials: None,
            acls: None,
            service_ports: ServicePortRange::default(),
        }
    }

    /// What the framework learns from `ListObjects`: the latest version of each object
    /// (the last kept), by kind and name; nothing of an object without versions or of
    /// an unknown kind.
    #[test]
    fn the_latest_version_of_each_listed_object() {
        let info = |kind: v1::ObjectKind, name: &str, versions: &[u64]| v1::ObjectInfo {
            kind: kind as i32,
            name: name.into(),
            versions: versions
                .iter()
                .map(|v| v1::ObjectVersionInfo {
                    version: *v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let answer = v1::ListObjectsResponse {
            objects: vec![
                info(v1::ObjectKind::Secret, "db-pass", &[2, 3, 4]),
                info(v1::ObjectKind::Config, "db-pass", &[1]),
                info(v1::ObjectKind::Config, "empty", &[]),
                info(v1::ObjectKind::Unspecified, "odd", &[1]),
            ],
        };
        let kept = kept_versions(&answer);
        assert_eq!(
            kept[&(v1::ObjectKind::Secret, "db-pass".to_string())],
            [2, 3, 4].into_iter().collect()
        );
        assert!(kept[&(v1::ObjectKind::Config, "empty".to_string())].is_empty());
        let latest = latest_versions(answer);
        assert_eq!(
            latest.into_iter().collect::<Vec<_>>(),
            [
                ((v1::ObjectKind::Secret, "db-pass".to_string()), 4),
                ((v1::ObjectKind::Config, "db-pass".to_string()), 1),
            ]
        );
    }

    #[test]
    fn service_ports_default_to_10000_10999_and_a_bad_range_is_refused() {
        use clap::Parser;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from(["strata"]).unwrap();
        assert_eq!(cli.serve.service_ports, ServicePortRange::default());
        assert_eq!(cli.serve.service_ports.to_string(), "10000-10999");
        let cli = Cli::try_parse_from(["strata", "--service-ports", "20000-20009"]).unwrap();
        assert_eq!(cli.serve.service_ports.to_string(), "20000-20009");
        let err = Cli::try_parse_from(["strata", "--service-ports", "20-10"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--service-ports") && err.contains("is empty"),
            "{err}"
        );
    }

    fn error_of(args: &ServeArgs) -> String {
        match Security::from_args(args) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A secure `strata serve` without its files says which flags to give, and that
    /// --insecure exists; bad files are named by their flag.
    #[test]
    fn secure_serve_names_the_flags_it_misses() {
        let e = error_of(&args());
        for flag in [
            "--ca-file",
            "--credential-file",
            "--credentials",
            "--insecure",
        ] {
            assert!(e.contains(flag), "{flag} not in: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create().unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let credential_file = dir.path().join("fw.json");
        std::fs::write(&credential_file, r#"{"principal": "strata"}"#).unwrap();
        let credentials = dir.path().join("credentials.json");
        std::fs::write(
            &credentials,
            format!(r#"{{"credentials":[{{"principal":"ops","secret":"{OPS_SECRET}"}}]}}"#),
        )
        .unwrap();
        let only_ca = ServeArgs {
            ca_file: Some(ca_file.clone()),
            ..args()
        };
        let e = error_of(&only_ca);
        assert!(
            !e.contains("--ca-file") && e.contains("--credential-file"),
            "{e}"
        );
        let bad_credential = ServeArgs {
            ca_file: Some(ca_file.clone()),
            credential_file: Some(credential_file.clone()),
            credentials: Some(credentials.clone()),
            ..args()
        };
        let e = error_of(&bad_credential);
        assert!(
            e.contains("--credential-file") && e.contains("fw.json"),
            "{e}"
        );
        std::fs::write(
            &credential_file,
            r#"{"principal": "strata", "secret": "s3cret-s3cret-s3cret"}"#,
        )
        .unwrap();
        assert!(matches!(
            Security::from_args(&bad_credential),
            Ok(Security::Secure { .. })
        ));
        let both = ServeArgs {
            insecure: true,
            ca_file: Some(ca_file),
            ..args()
        };
        assert!(error_of(&both).contains("--ca-file"));
        assert!(matches!(
            Security::from_args(&ServeArgs {
                insecure: true,
                ..args()
            }),
            Ok(Security::Insecure { .. })
        ));
    }

    /// `--acls`: a file that cannot be read or is invalid stops `strata serve` at the
    /// start with an error naming it (secure or not); a valid one is what the App API
    /// asks, in place of the defaults.
    #[test]
    fn a_bad_acl_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let acls = dir.path().join("acls.json");
        std::fs::write(&acls, r#"{"manage_app": []}"#).unwrap();
        let insecure = |acls: &Path| ServeArgs {
            insecure: true,
            acls: Some(acls.to_path_buf()),
            ..args()
        };
        let e = error_of(&insecure(&acls));
        assert!(
            e.contains("--acls") && e.contains("acls.json") && e.contains("'manage_app'"),
            "{e}"
        );
        let e = error_of(&insecure(&dir.path().join("missing.json")));
        assert!(e.contains("--acls") && e.contains("missing.json"), "{e}");

        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ClusterCa::create().unwrap().cert_pem()).unwrap();
        let credential_file = dir.path().join("fw.json");
        std::fs::write(
            &credential_file,
            r#"{"principal": "strata", "secret": "s3cret-s3cret-s3cret"}"#,
        )
        .unwrap();
        let credentials = dir.path().join("credentials.json");
        std::fs::write(
            &credentials,
            format!(r#"{{"credentials":[{{"principal":"ops","secret":"{OPS_SECRET}"}}]}}"#),
        )
        .unwrap();
        let secure = ServeArgs {
            ca_file: Some(ca_file),
            credential_file: Some(credential_file),
            credentials: Some(credentials),
            acls: Some(acls.clone()),
            ..args()
        };
        let e = error_of(&secure);
        assert!(e.contains("--acls") && e.contains("acls.json"), "{e}");

        // Valid: applied instead of the defaults.
        std::fs::write(
            &acls,
            r#"{"permissive": false,
                "view_apps": [{"principals": {"values": ["ops"]}, "apps": {"type": "ANY"}}]}"#,
        )
        .unwrap();
        let ops = strata_security::Principal::User("ops".into());
        let dev = strata_security::Principal::User("dev".into());
        let Ok(Security::Secure { authz, .. }) = Security::from_args(&secure) else {
            panic!("refused");
        };
        assert!(authz.permits(&ops, Action::ViewApps, "web"));
        assert!(!authz.permits(&dev, Action::ViewApps, "web"));
        assert!(!authz.permits(&ops, Action::ManageApps, "web"));
        // Without --acls: the defaults of the mode.
        let Ok(Security::Secure { authz, .. }) = Security::from_args(&ServeArgs {
            acls: None,
            ..secure.clone()
        }) else {
            panic!("refused");
        };
        assert!(authz.permits(&dev, Action::ManageApps, "web"));
        assert!(!authz.permits(&dev, Action::RunTasks, "root"));
        let Ok(Security::Insecure { authz }) = Security::from_args(&ServeArgs {
            insecure: true,
            ..args()
        }) else {
            panic!("refused");
        };
        let anonymous = strata_security::Principal::Anonymous;
        assert!(authz.permits(&anonymous, Action::ManageApps, "web"));
        assert!(!authz.permits(&anonymous, Action::RunTasks, "root"));
    }

    /// SIGHUP reads `--acls` and `--credentials` again; files that became invalid keep
    /// the ones in force, and their errors name them.
    #[tokio::test]
    async fn sighup_reloads_the_acls_and_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let acls = dir.path().join("acls.json");
        let credentials = dir.path().join("credentials.json");
        let view = |who: &str| {
            format!(
                r#"{{"permissive": false,
                    "view_apps": [{{"principals": {{"values": [{who}]}}, "apps": {{"type": "ANY"}}}}]}}"#
            )
        };
        let ops = format!(r#"{{"principal": "ops", "secret": "{OPS_SECRET}"}}"#);
        let dev = r#"{"principal": "dev", "secret": "the-developers-secret-0123"}"#;
        std::fs::write(&acls, view(r#""ops""#)).unwrap();
        std::fs::write(&credentials, format!(r#"{{"credentials": [{ops}]}}"#)).unwrap();
        let authz = Authorizer::load(Some(&acls), Acls::secure_default()).unwrap();
        let authn = Authenticator::new(
            Credentials::load(&credentials).unwrap(),
            super::super::api::PUBLIC,
        );
        let reload = Reload {
            authn: authn.clone(),
            credentials: Some(credentials.clone()),
            authz: authz.clone(),
        };
        let reloader = reload_on_sighup(reload.clone()).unwrap();
        let principal = strata_security::Principal::User("dev".into());
        let knows_dev = || {
            authn
                .credentials()
                .unwrap()
                .principals()
                .any(|p| p == "dev")
        };
        assert!(!authz.permits(&principal, Action::ViewApps, "web") && !knows_dev());

        std::fs::write(&acls, view(r#""ops", "dev""#)).unwrap();
        std::fs::write(
            &credentials,
            format!(r#"{{"credentials": [{ops}, {dev}]}}"#),
        )
        .unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        let mut reloaded = false;
        for _ in 0..100 {
            if authz.permits(&principal, Action::ViewApps, "web") && knows_dev() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(reloaded, "SIGHUP reloads both files");

        // Broken files: the ones in force stay.
        std::fs::write(&acls, r#"{"view_apps": "#).unwrap();
        std::fs::write(&credentials, r#"{"credentials": [{"principal": "dev"}]}"#).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(authz.permits(&principal, Action::ViewApps, "web") && knows_dev());
        let errors = reload.reload();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("--acls") && errors[0].contains("acls.json"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("--credentials") && errors[1].contains("credentials.json"),
            "{errors:?}"
        );
        reloader.abort();
    }

    /// The App API of a secure `strata serve`, over HTTPS with a certificate of the
    /// cluster CA for strata-apps: a caller without a credential, or with a wrong
    /// one, is refused 401 and deploys nothing; the right credential works (and the
    /// CSRF guard still applies); /ping is public; an agent's certificate is refused;
    /// a client trusting another CA does not talk to it at all.
    #[tokio::test]
    async fn the_app_api_over_https_wants_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let names = app_api_names(addr);
        assert!(names.contains(&APPS_NAME.to_string()) && names.contains(&"127.0.0.1".into()));
        let issued = ca
            .issue("user:strata", &names, Duration::from_secs(3600))
            .unwrap();

        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let (framework, handle) = Framework::new(
            Engine::default(),
            store,
            Persisted::default(),
            "127.0.0.1:5050".into(),
            Duration::from_secs(1),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let framework_task = tokio::spawn(framework.run(None, stopped()));
        let credentials = Credentials::parse(
            &format!(r#"{{"credentials":[{{"principal":"ops","secret":"{OPS_SECRET}"}}]}}"#),
            "test",
        )
        .unwrap();
        let router = super::super::api::router(
            handle,
            Authenticator::new(credentials, super::super::api::PUBLIC),
        );
        let client_tls = ClientTls {
            ca_pem: Some(ca.cert_pem().to_string()),
            identity: None,
            credential: None,
        };
        let renewal = Renewal {
            master: "127.0.0.1:1".into(),
            client: client_tls.clone(),
            names,
            issued,
        };
        let (_servers, servers_rx) = tokio::sync::watch::channel(Some(renewal.server_tls()));
        let server = tokio::spawn(strata_security::tls::serve(
            listener,
            router,
            servers_rx,
            stopped(),
        ));

        // What the CLI does: trust the cluster CA, verify the App API as strata-apps.
        let client = |tls: ClientTls| {
            tls.reqwest(reqwest::Client::builder().resolve(APPS_NAME, addr))
                .unwrap()
                .build()
                .unwrap()
        };
        let base = format!("https://{APPS_NAME}:{}", addr.port());
        let with = |credential: Option<Credential>| {
            client(ClientTls {
                credential,
                ..client_tls.clone()
            })
        };
        let anonymous = with(None);
        let wrong = with(Some(Credential::new("ops", "not-the-secret-at-all")));
        let right = with(Some(Credential::new("ops", OPS_SECRET)));
        let spec = json!({"id": "web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1});

        let r = anonymous.get(format!("{base}/ping")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "/ping is public");
        for (who, http, reason) in [
            ("no credential", &anonymous, "authentication required"),
            ("a wrong secret", &wrong, "is not valid"),
        ] {
            let r = http.get(format!("{base}/v1/apps")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{who}");
            assert!(r.headers().contains_key("www-authenticate"), "{who}");
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains(reason),
                "{who}: {body}"
            );
            let r = http
                .put(format!("{base}/v1/apps/web"))
                .json(&spec)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{who} deploys nothing");
        }
        let r = right.get(format!("{base}/v1/apps")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!([]),
            "nothing deployed"
        );
        // The CSRF guard is still there behind authentication.
        let r = right
            .post(format!("{base}/v1/apps"))
            .header("content-type", "text/plain")
            .body(spec.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415);
        let r = right
            .put(format!("{base}/v1/apps/web"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

        // An agent's certificate is an identity of the cluster, not a user.
        let agent = ca
            .issue(
                "agent:n1",
                &["strata-agent".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let as_agent = client(ClientTls {
            identity: Some((agent.cert_pem, agent.key_pem)),
            ..client_tls.clone()
        });
        let r = as_agent
            .get(format!("{base}/v1/apps"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);

        // A client of another cluster does not get through the handshake.
        let other = client(ClientTls {
            ca_pem: Some(ClusterCa::create().unwrap().cert_pem().to_string()),
            identity: None,
            credential: Some(Credential::new("ops", OPS_SECRET)),
        });
        assert!(other.get(format!("{base}/v1/apps")).send().await.is_err());

        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the App API stops")
            .unwrap()
            .unwrap();
        framework_task.await.unwrap();
    }

    /// A real master in its secure mode on a free port, for the tests that run
    /// `strata serve` against it: its CA, and a framework credential file of its admin.
    struct SecureMaster {
        addr: std::net::SocketAddr,
        ca_file: PathBuf,
        /// The master's credentials file.
        credentials: PathBuf,
        credential_file: PathBuf,
        admin: String,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), strata_master::MasterError>>,
    }

    impl SecureMaster {
        async fn start(dir: &Path) -> SecureMaster {
            let master_dir = dir.join("master");
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let options = strata_master::MasterOptions {
                security: strata_master::Security::Tls(strata_master::TlsOptions::default()),
                ..strata_master::MasterOptions::new(&master_dir)
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(strata_master::serve(listener, options, async move {
                let _ = stopped.await;
            }));
            let ca_file = master_dir.join("tls/ca.crt");
            let credentials = master_dir.join("credentials.json");
            for _ in 0..200 {
                if ca_file.exists() && credentials.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let admin =
                strata_security::credentials::secret_in_file(&credentials, "admin").unwrap();
            let credential_file = dir.join("framework.json");
            std::fs::write(
                &credential_file,
                json!({"principal": "admin", "secret": admin}).to_string(),
            )
            .unwrap();
            SecureMaster {
                addr,
                ca_file,
                credentials,
                credential_file,
                admin,
                stop,
                task,
            }
        }
    }

    /// Issue 16 from end to end: `strata serve` against the real master in its secure
    /// mode, and an app that uses a config. The framework lists the master's objects
    /// with its own credential: it learns the config's version (the app does not roll),
    /// then a new version of the config rolls the app, and the App API says why.
    #[tokio::test]
    async fn a_new_version_of_a_config_rolls_the_apps_that_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let SecureMaster {
            addr: master_addr,
            ca_file,
            credentials,
            credential_file,
            admin,
            stop: master_stop,
            task: master,
        } = SecureMaster::start(dir.path()).await;
        let master_addr = master_addr.to_string();
        let tls = ClientTls {
            ca_pem: Some(std::fs::read_to_string(&ca_file).unwrap()),
            identity: None,
            credential: Some(Credential::new("admin", admin.clone())),
        };
        let mut operator = None;
        for _ in 0..100 {
            if let Ok(client) = operator_client(&master_addr, &tls).await {
                operator = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut operator = operator.expect("the master answers");
        let create = |update: bool, data: &str| v1::CreateObjectRequest {
            kind: v1::ObjectKind::Config as i32,
            name: "log-level".into(),
            data: data.as_bytes().to_vec(),
            update,
        };
        let v1 = operator.create_object(create(false, "info")).await.unwrap();
        assert_eq!(v1.into_inner().version, 1);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_args = ServeArgs {
            master: master_addr.clone(),
            state_dir: dir.path().join("apps"),
            ca_file: Some(ca_file.clone()),
            credential_file: Some(credential_file.clone()),
            credentials: Some(credentials.clone()),
            ..args()
        };
        let serve = tokio::spawn(run(serve_args, listener, async move {
            let _ = stopped.await;
        }));
        let http = tls
            .reqwest(reqwest::Client::builder().resolve(APPS_NAME, addr))
            .unwrap()
            .build()
            .unwrap();
        let url = format!("https://{APPS_NAME}:{}/v1/apps/web", addr.port());
        let spec = json!({"id": "web", "cmd": "sleep 1000", "cpus": 0.1,
                          "env": {"LEVEL": {"config": "log-level"}}});
        let mut deployed = false;
        for _ in 0..100 {
            if let Ok(r) = http.put(&url).json(&spec).send().await
                && r.status().is_success()
            {
                deployed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(deployed, "the App API takes the app");
        // Polls until the app's view satisfies `done` (at most 15 s).
        let until = |done: fn(&Value) -> bool| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let mut view = Value::Null;
                for _ in 0..150 {
                    view = http.get(&url).send().await.unwrap().json().await.unwrap();
                    if done(&view) {
                        return view;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("not reached: {view}");
            }
        };
        let learned = until(|v| v["objects"]["config/log-level"] == json!(1)).await;
        assert!(learned.get("version_cause").is_none(), "no roll: {learned}");
        let version = learned["version"].clone();

        let v2 = operator.create_object(create(true, "debug")).await.unwrap();
        assert_eq!(v2.into_inner().version, 2);
        let rolled = until(|v| v["objects"]["config/log-level"] == json!(2)).await;
        assert_ne!(rolled["version"], version, "a new version: {rolled}");
        assert_eq!(rolled["version_cause"], json!("config log-level version 2"));
        assert_eq!(rolled["deployment"]["kind"], json!("update"));
        assert_eq!(
            rolled["deployment"]["cause"],
            json!("config log-level version 2")
        );

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), serve)
            .await
            .expect("strata serve stops")
            .unwrap()
            .unwrap();
        let _ = master_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), master).await;
    }

    /// `strata serve` as `strata local` runs it, against the real master in its secure
    /// mode: the App API's certificate comes from the master, the framework
    /// subscribes over TLS with its credential, and the App API answers HTTPS to the
    /// master's admin. With a credential the master does not know, it stops at once
    /// with the master's refusal.
    #[tokio::test]
    async fn secure_serve_against_the_real_master() {
        let dir = tempfile::tempdir().unwrap();
        let SecureMaster {
            addr: master_addr,
            ca_file,
            credentials,
            credential_file,
            admin,
            stop: master_stop,
            task: master,
        } = SecureMaster::start(dir.path()).await;
        let serve_args = |state: &str| ServeArgs {
            master: master_addr.to_string(),
            state_dir: dir.path().join(state),
            ca_file: Some(ca_file.clone()),
            credential_file: Some(credential_file.clone()),
            credentials: Some(credentials.clone()),
            ..args()
        };

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(run(serve_args("apps"), listener, async move {
            let _ = stopped.await;
        }));
        let http = ClientTls {
            ca_pem: Some(std::fs::read_to_string(&ca_file).unwrap()),
            identity: None,
            credential: Some(Credential::new("admin", admin)),
        }
        .reqwest(reqwest::Client::builder().resolve(APPS_NAME, addr))
        .unwrap()
        .build()
        .unwrap();
        let url = format!("https://{APPS_NAME}:{}/v1/info", addr.port());
        let mut info = Value::Null;
        for _ in 0..100 {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                info = r.json().await.unwrap();
                if info["connected"] == json!(true) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(info["connected"], json!(true), "subscribed: {info}");
        assert!(info["framework_id"].is_string(), "{info}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), serve)
            .await
            .expect("strata serve stops")
            .unwrap()
            .unwrap();

        // A credential the master does not know: refused at the first call.
        std::fs::write(
            &credential_file,
            json!({"principal": "admin", "secret": "not-the-secret-at-all"}).to_string(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(15),
            run(serve_args("apps-2"), listener, std::future::pending()),
        )
        .await
        .expect("a refusal is not retried");
        let e = format!("{:#}", refused.unwrap_err());
        assert!(
            e.contains("refused") && e.contains("--credential-file"),
            "{e}"
        );

        let _ = master_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), master).await;
    }
}
