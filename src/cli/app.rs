//! `strata app ...`: deploy, list, show, scale, restart, roll back and remove apps,
//! optionally waiting for the deployment with a progress bar; list an app's versions.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Global;
use super::client::{ApiClient, ApiError};
use super::output::{
    Fields, Output, Table, age_since, emit, emit_line, format_mb, format_number, now_unix,
    print_json, short_state,
};
use super::task::{sort_tasks, tasks_table};
use crate::app::spec::{AppSpec, Constraint, HealthCheckSpec, Operator, PortSpec};
use crate::app::view::{AppTaskView, AppVersionsView, AppView, EndpointView, RollbackRequest};

/// `strata app ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AppCommand {
    /// Create or update an app from a YAML or JSON spec file (starts a deployment).
    Deploy(DeployArgs),
    /// List apps.
    #[command(visible_alias = "ls")]
    List,
    /// Show an app: its spec, task counts, deployment, last failure and tasks.
    Show {
        /// The app's id.
        id: String,
    },
    /// Change an app's number of instances.
    Scale {
        /// The app's id.
        id: String,
        /// The new number of instances.
        instances: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace all of an app's tasks, following its upgrade strategy.
    Restart {
        /// The app's id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List an app's versions (the last 20), newest first: each one's cause and
    /// whether it is the current one.
    Versions {
        /// The app's id.
        id: String,
    },
    /// Deploy an earlier version of an app again, as a new version (a rolling update
    /// like any deploy); the number of instances stays as it is.
    Rollback {
        /// The app's id.
        id: String,
        /// The version to go back to (as `strata app versions` lists it); default: the
        /// one before the current one.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an app: its tasks are killed, then the app is forgotten. A resident
    /// app's volumes (and reservations) are kept: the app deployed again comes back on
    /// its data.
    #[command(visible_alias = "remove")]
    Rm {
        /// The app's id.
        id: String,
        /// Also destroy a resident app's persistent volumes (the data is gone) and
        /// release its reservations.
        #[arg(long)]
        wipe: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `strata app deploy`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// The app spec, YAML or JSON (`-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--wait` and `--timeout`, shared by the commands that start a deployment.
#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until the deployment has finished (for rm: until the app is gone).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up (exit 1) after this long, e.g. `5m` or `90s` (a bare
    /// number is seconds).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = strata_proto::duration::parse_or_seconds,
        requires = "wait"
    )]
    pub timeout: Duration,
}

impl AppCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        let client = global.client()?;
        let output = global.output;
        match self {
            AppCommand::Deploy(args) => {
                let spec = read_spec(&args.file)?;
                let view = client.put_app(&spec).await?;
                if output == Output::Table {
                    emit_line(&started_line(&view, "deploy"));
                }
                finish_change(&client, view, &args.wait, output).await
            }
            AppCommand::List => {
                let mut apps = client.apps().await?;
                apps.sort_by(|a, b| a.id.cmp(&b.id));
                match output {
                    Output::Json => print_json(&apps)?,
                    Output::Table => apps_table(&apps).print_or("No apps."),
                }
                Ok(0)
            }
            AppCommand::Show { id } => {
                let (view, mut tasks) = tokio::try_join!(client.app(&id), client.app_tasks(&id))?;
                match output {
                    Output::Json => print_json(&view)?,
                    Output::Table => {
                        sort_tasks(&mut tasks);
                        emit(&describe(&view, &tasks, now_unix()));
                    }
                }
                Ok(0)
            }
            AppCommand::Scale {
                id,
                instances,
                wait,
            } => {
                let view = client.scale_app(&id, instances).await?;
                if output == Output::Table {
                    emit_line(&started_line(&view, "scale"));
                }
                finish_change(&client, view, &wait, output).await
            }
            AppCommand::Restart { id, wait } => {
                let view = client.restart_app(&id).await?;
                if output == Output::Table {
                    emit_line(&started_line(&view, "restart"));
                }
                finish_change(&client, view, &wait, output).await
            }
            AppCommand::Versions { id } => {
                let versions = app_versions(&client, &id).await?;
                match output {
                    Output::Json => print_json(&versions)?,
                    Output::Table => versions_table(&versions).print_or("No versions."),
                }
                Ok(0)
            }
            AppCommand::Rollback { id, to, wait } => {
                let view = rollback(&client, &id, to).await?;
                if output == Output::Table {
                    emit_line(&started_line(&view, "rollback"));
                }
                finish_change(&client, view, &wait, output).await
            }
            AppCommand::Rm { id, wipe, wait } => {
                let view = client.delete_app(&id, wipe).await?;
                if output == Output::Table {
                    let what = if wipe {
                        "removing, and wiping its volumes"
                    } else {
                        "removing"
                    };
                    emit_line(&format!("app \"{id}\": {what}"));
                }
                if wait.wait {
                    let mut progress = Progress::for_output(output);
                    let waited =
                        wait_gone(&client, view.clone(), &wait.options(), &mut progress).await?;
                    if let Waited::Interrupted = waited {
                        interrupted(&id);
                        return Ok(130);
                    }
                }
                if output == Output::Json {
                    print_json(&view)?;
                }
                Ok(0)
            }
        }
    }
}

impl WaitArgs {
    fn options(&self) -> WaitOptions {
        WaitOptions {
            timeout: self.timeout,
            poll: POLL,
        }
    }
}

/// How often a waiting command asks the server again.
const POLL: Duration = Duration::from_millis(500);

/// After a change was accepted: wait for it if asked, then print the app as JSON
/// (`-o json`; the final state when waiting).
async fn finish_change(
    client: &ApiClient,
    view: AppView,
    wait: &WaitArgs,
    output: Output,
) -> anyhow::Result<u8> {
    let id = view.id.clone();
    let view = if wait.wait {
        let mut progress = Progress::for_output(output);
        match wait_converged(client, view, &wait.options(), &mut progress).await? {
            Waited::Done(view) => view,
            Waited::Interrupted => {
                interrupted(&id);
                return Ok(130);
            }
        }
    } else {
        view
    };
    if output == Output::Json {
        print_json(&view)?;
    }
    Ok(0)
}

fn interrupted(id: &str) {
    eprintln!(
        "interrupted: the change goes on on the server; follow it with `strata app show {id}`"
    );
}

/// Reads and parses a spec file (`-` = standard input); a bad spec is refused here,
/// naming the file, the field and the reason.
fn read_spec(path: &Path) -> anyhow::Result<AppSpec> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the spec from standard input")?;
        ("<stdin>".to_string(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (path.display().to_string(), text)
    };
    AppSpec::parse(&text).map_err(|e| anyhow!("{name}: {e}"))
}

/// `GET /v1/apps/{id}/versions`.
async fn app_versions(client: &ApiClient, id: &str) -> Result<AppVersionsView, ApiError> {
    client
        .get(&format!("/v1/apps/{}/versions", super::client::segment(id)))
        .await
}

/// `POST /v1/apps/{id}/rollback` with `{"version": to}` (`{}`: the version before the
/// current one).
async fn rollback(client: &ApiClient, id: &str, to: Option<String>) -> Result<AppView, ApiError> {
    let path = format!("/v1/apps/{}/rollback", super::client::segment(id));
    client
        .call(
            reqwest::Method::POST,
            &path,
            Some(&RollbackRequest { version: to }),
        )
        .await
}

/// `VERSION CURRENT OBJECTS CAUSE`, newest first: OBJECTS are the config and secret
/// versions a rollback to it launches again (`secret/db-pass:3`; `-` for none).
pub fn versions_table(versions: &AppVersionsView) -> Table {
    let mut table = Table::new(&["version", "current", "objects", "cause"]);
    for v in &versions.versions {
        let objects = if v.objects.is_empty() {
            "-".to_string()
        } else {
            v.objects
                .iter()
                .map(|(name, version)| match version {
                    0 => format!("{name}:latest"),
                    n => format!("{name}:{n}"),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        table.row([
            v.version.clone(),
            if v.current { "yes" } else { "" }.to_string(),
            objects,
            v.cause.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

/// The line printed when the server accepted a change.
fn started_line(view: &AppView, verb: &str) -> String {
    match &view.deployment {
        Some(d) => format!(
            "app \"{}\": {} started, {} instance(s) (deployment {})",
            view.id, d.kind, d.target_instances, d.id
        ),
        None => format!("app \"{}\": {verb}: nothing to change", view.id),
    }
}

/// `ID INSTANCES RUNNING HEALTHY DEPLOYMENT`.
pub fn apps_table(apps: &[AppView]) -> Table {
    let mut table = Table::new(&["id", "instances", "running", "healthy", "deployment"]);
    for app in apps {
        let deployment = app.deployment.as_ref().map_or("-".to_string(), |d| {
            format!("{} {}/{}", d.kind, d.ready_instances, d.target_instances)
        });
        table.row([
            app.id.clone(),
            app.instances.to_string(),
            app.tasks_running.to_string(),
            app.tasks_healthy.to_string(),
            deployment,
        ]);
    }
    table
}

/// `strata app show`: the app as `Label: value` lines, then its tasks.
pub fn describe(view: &AppView, tasks: &[AppTaskView], now: f64) -> String {
    let spec = &view.spec;
    let mut f = Fields::new();
    f.add("ID", &view.id);
    match &view.version_cause {
        Some(cause) => f.add("Version", format!("{} ({cause})", view.version)),
        None => f.add("Version", &view.version),
    }
    f.add("Command", spec.cmd.clone().unwrap_or_default());
    f.add("Args", shell_words(&spec.args));
    if let Some(image) = &spec.image {
        let mut text = image.clone();
        let extra: Vec<String> = [("network", &spec.network), ("pull", &spec.pull)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
        if !extra.is_empty() {
            text.push_str(&format!(" ({})", extra.join(", ")));
        }
        f.add("Image", text);
    }
    f.add(
        "Resources",
        format!(
            "cpus {}, mem {}, disk {}",
            format_number(spec.cpus),
            format_mb(spec.mem),
            format_mb(spec.disk)
        ),
    );
    f.add(
        "Ports",
        spec.ports
            .iter()
            .map(port_text)
            .collect::<Vec<_>>()
            .join(", "),
    );
    // References (`{secret: NAME}`), never values: the spec holds none.
    f.add(
        "Env",
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (label, files) in [("Secrets", &spec.secrets), ("Configs", &spec.configs)] {
        f.add(
            label,
            files
                .iter()
                .map(|o| match &o.target {
                    Some(target) => format!("{} as {target}", o.source),
                    None => o.source.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    f.add(
        "Object versions",
        view.objects
            .iter()
            .map(|(key, v)| match v {
                0 => format!("{key} latest"),
                v => format!("{key} {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    f.add(
        "Constraints",
        spec.constraints
            .iter()
            .map(constraint_text)
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (i, hc) in spec.health_checks.iter().enumerate() {
        let label = if spec.health_checks.len() == 1 {
            "Health check".to_string()
        } else {
            format!("Health check {i}")
        };
        f.add(&label, health_check_text(hc));
    }
    f.add("User", spec.user.clone().unwrap_or_default());
    f.add("Labels", key_values(spec.labels.iter()));
    let mut counts = format!(
        "{} desired: {} running, {} healthy",
        view.instances, view.tasks_running, view.tasks_healthy
    );
    for (n, what) in [
        (view.tasks_unhealthy, "unhealthy"),
        (view.tasks_staged, "staging"),
        (view.tasks_old_version, "of an old version"),
    ] {
        if n > 0 {
            counts.push_str(&format!(", {n} {what}"));
        }
    }
    f.add("Instances", counts);
    f.add(
        "Volumes",
        spec.volumes
            .iter()
            .map(|v| match (&v.docker_volume, &v.persistent) {
                (Some(name), _) => format!("{name} at {}", v.container_path),
                (None, Some(p)) => {
                    format!("persistent {} at {}", format_mb(p.size), v.container_path)
                }
                (None, None) => v.container_path.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    // A resident app's instances: where each keeps its data.
    for r in &view.residents {
        let mut text = format!("on {} (volumes {})", r.hostname, r.volumes.join(", "));
        match (&r.task_id, &r.note) {
            (_, Some(note)) => text.push_str(&format!(": LOST: {note}")),
            (Some(task), None) => text.push_str(&format!(", task {task}")),
            (None, None) => text.push_str(", no task"),
        }
        f.add(&format!("Instance {}", r.instance), text);
    }
    if !view.ports.is_empty() {
        f.add("Endpoints", endpoints_text(&view.endpoints));
    }
    match &view.deployment {
        Some(d) => {
            f.add(
                "Deployment",
                format!(
                    "{} {}/{} ready, started {} ago (id {})",
                    d.kind,
                    d.ready_instances,
                    d.target_instances,
                    age_since(&d.started_at, now),
                    d.id
                ),
            );
            f.add("Waiting", d.waiting.clone());
        }
        None => f.add("Deployment", "none (converged)"),
    }
    if let Some(secs) = view.backoff_seconds {
        f.add("Backoff", format!("next launch in {secs:.1}s"));
    }
    if let Some(fail) = &view.last_failure {
        f.add(
            "Last failure",
            format!(
                "task {} {} {} ago: {}",
                fail.task_id,
                short_state(&fail.state),
                age_since(&fail.timestamp, now),
                fail.message
            ),
        );
    }
    let mut out = f.render();
    out.push('\n');
    if tasks.is_empty() {
        out.push_str("No tasks.\n");
    } else {
        out.push_str(&tasks_table(tasks, now, false).render());
    }
    out
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_values<'a>(items: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    items
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn port_text(port: &PortSpec) -> String {
    let host = |p: u16| {
        if p == 0 {
            "any".to_string()
        } else {
            p.to_string()
        }
    };
    match port {
        PortSpec::Host(p) => host(*p),
        PortSpec::Mapping(m) => {
            let mut text = host(m.host_port);
            if let Some(c) = m.container_port {
                text.push_str(&format!("->{c}"));
            }
            if let Some(proto) = &m.protocol {
                text.push_str(&format!("/{proto}"));
            }
            if let Some(name) = &m.name {
                text.push_str(&format!(" ({name})"));
            }
            match m.service_port {
                Some(0) => text.push_str(" service any"),
                Some(n) => text.push_str(&format!(" service {n}")),
                None => {}
            }
            text
        }
    }
}

/// `node1:31000 ready, node2:31002 unhealthy`: each running instance's host and ports
/// and whether the service proxies route to it.
pub fn endpoints_text(endpoints: &[EndpointView]) -> String {
    if endpoints.is_empty() {
        return "none running".to_string();
    }
    endpoints
        .iter()
        .map(|e| {
            let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
            format!("{}:{} {}", e.host, ports.join(","), endpoint_status(e))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// ready (in the service proxies' rotation), killing, unhealthy or not ready.
pub fn endpoint_status(e: &EndpointView) -> &'static str {
    if e.ready {
        "ready"
    } else if e.state == "TASK_KILLING" {
        "killing"
    } else if e.healthy == Some(false) {
        "unhealthy"
    } else {
        "not ready"
    }
}

fn constraint_text(c: &Constraint) -> String {
    let op = match &c.operator {
        Operator::Unique => "UNIQUE".to_string(),
        Operator::Cluster(v) => format!("CLUSTER {v}"),
        Operator::MaxPer(n) => format!("MAX_PER {n}"),
        Operator::Like(r) => format!("LIKE {r}"),
        Operator::Unlike(r) => format!("UNLIKE {r}"),
    };
    format!("{} {op}", c.field)
}

fn health_check_text(hc: &HealthCheckSpec) -> String {
    let what = match hc.protocol.as_str() {
        "http" => format!(
            "http {} on port index {}",
            hc.path.as_deref().unwrap_or("/"),
            hc.port_index
        ),
        "command" => format!("command `{}`", hc.command.as_deref().unwrap_or_default()),
        other => format!("{other} on port index {}", hc.port_index),
    };
    format!(
        "{what}, every {}s (timeout {}s, grace {}s, replace after {} failures)",
        format_number(hc.interval_seconds),
        format_number(hc.timeout_seconds),
        format_number(hc.grace_period_seconds),
        hc.max_consecutive_failures
    )
}

/// How long to wait, and how often to look.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitOptions {
    pub timeout: Duration,
    pub poll: Duration,
}

/// How a wait ended (a timeout is an error).
#[derive(Debug)]
pub(crate) enum Waited<T> {
    Done(T),
    /// Ctrl-C.
    Interrupted,
}

/// `web: 3/5 running, 2/5 healthy`, plus staging, unhealthy and old-version counts
/// when there are any.
pub fn status_line(v: &AppView) -> String {
    let n = v.instances;
    let mut line = format!(
        "{}: {}/{n} running, {}/{n} healthy",
        v.id, v.tasks_running, v.tasks_healthy
    );
    for (count, what) in [
        (v.tasks_staged, "staging"),
        (v.tasks_unhealthy, "unhealthy"),
        (v.tasks_old_version, "old version"),
    ] {
        if count > 0 {
            line.push_str(&format!(", {count} {what}"));
        }
    }
    line
}

/// Why the app is not progressing, when the server says: the deployment's `waiting`,
/// or the restart backoff and the last failure.
pub fn waiting_reason(v: &AppView) -> Option<String> {
    let failure = v.last_failure.as_ref().map(|f| {
        format!(
            "task {} {}: {}",
            f.task_id,
            short_state(&f.state),
            f.message
        )
    });
    if let Some(d) = &v.deployment
        && !d.waiting.is_empty()
    {
        // In a restart backoff the failure that caused it is the reason to show (a
        // launch refused for a missing secret, a command that exits at once).
        return Some(match (v.backoff_seconds, failure) {
            (Some(_), Some(failure)) => format!("{} (last failure: {failure})", d.waiting),
            _ => d.waiting.clone(),
        });
    }
    match (v.backoff_seconds, failure) {
        (Some(secs), Some(failure)) => Some(format!(
            "backoff, next launch in {secs:.0}s (last failure: {failure})"
        )),
        (Some(secs), None) => Some(format!("backoff, next launch in {secs:.0}s")),
        _ => None,
    }
}

/// The status line with the waiting reason, if any.
fn progress_text(v: &AppView) -> String {
    match waiting_reason(v) {
        Some(reason) => format!("{}; waiting: {reason}", status_line(v)),
        None => status_line(v),
    }
}

/// Polls the app until its deployment is over (`deployment` is None). Prints
/// progress, and the final state line either way. A timeout is an error that
/// says where the app stood and why.
pub(crate) async fn wait_converged(
    client: &ApiClient,
    mut view: AppView,
    options: &WaitOptions,
    progress: &mut Progress,
) -> anyhow::Result<Waited<AppView>> {
    let deadline = Instant::now() + options.timeout;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut trouble: Option<String> = None;
    loop {
        let n = u64::from(view.instances);
        let ready = view
            .deployment
            .as_ref()
            .map_or(u64::from(view.tasks_healthy), |d| {
                u64::from(d.ready_instances)
            });
        let mut text = progress_text(&view);
        if let Some(t) = &trouble {
            text.push_str(&format!(" ({t})"));
        }
        progress.update(&text, ready.min(n), n);
        if view.deployment.is_none() {
            progress.finish(&format!("{}; deployment finished", status_line(&view)));
            return Ok(Waited::Done(view));
        }
        if Instant::now() >= deadline {
            progress.abandon();
            let mut reason = progress_text(&view);
            // The last failure, unless the waiting reason says it already (a launch
            // refused for a missing secret keeps the app between backoff and
            // "reviving offers": either way the failure is why it did not converge).
            if let Some(f) = &view.last_failure
                && !reason.contains(&f.message)
            {
                reason.push_str(&format!(
                    "; last failure: task {} {}: {}",
                    f.task_id,
                    short_state(&f.state),
                    f.message
                ));
            }
            return Err(anyhow!(
                "timed out after {}s: {reason}",
                options.timeout.as_secs()
            ));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                progress.abandon();
                return Ok(Waited::Interrupted);
            }
            _ = tokio::time::sleep(options.poll) => {}
        }
        match client.app(&view.id).await {
            Ok(v) => {
                view = v;
                trouble = None;
            }
            // The server restarting is no reason to give up waiting.
            Err(e) if e.is_unreachable() => trouble = Some("server unreachable, retrying".into()),
            Err(e) => {
                progress.abandon();
                return Err(e.into());
            }
        }
    }
}

/// Polls the app until the server no longer knows it (GET answers 404).
pub(crate) async fn wait_gone(
    client: &ApiClient,
    mut view: AppView,
    options: &WaitOptions,
    progress: &mut Progress,
) -> anyhow::Result<Waited<()>> {
    let deadline = Instant::now() + options.timeout;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let first = u64::from(view.tasks_running + view.tasks_staged);
    let mut trouble: Option<String> = None;
    loop {
        let left = u64::from(view.tasks_running + view.tasks_staged);
        let mut text = format!("{}: removing, {left} task(s) left", view.id);
        if let Some(t) = &trouble {
            text.push_str(&format!(" ({t})"));
        }
        progress.update(&text, first.saturating_sub(left), first.max(left));
        if Instant::now() >= deadline {
            progress.abandon();
            return Err(anyhow!(
                "timed out after {}s: {}: {left} task(s) left",
                options.timeout.as_secs(),
                view.id
            ));
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                progress.abandon();
                return Ok(Waited::Interrupted);
            }
            _ = tokio::time::sleep(options.poll) => {}
        }
        match client.app(&view.id).await {
            Ok(v) => {
                view = v;
                trouble = None;
            }
            Err(e) if e.is_not_found() => {
                progress.finish(&format!("{}: removed", view.id));
                return Ok(Waited::Done(()));
            }
            Err(e) if e.is_unreachable() => trouble = Some("server unreachable, retrying".into()),
            Err(e) => {
                progress.abandon();
                return Err(e.into());
            }
        }
    }
}

/// Progress while waiting: an indicatif bar on a terminal, otherwise a plain line
/// each time the text changes. The final line is printed either way.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Where plain lines and the final line go.
    out: Box<dyn Write + Send>,
    last: String,
}

impl Progress {
    /// For a command's output mode: the table output goes to stdout, so progress does
    /// too; with `-o json` stdout is kept for the JSON and progress goes to stderr.
    pub fn for_output(output: Output) -> Progress {
        let (tty, target, out): (bool, ProgressDrawTarget, Box<dyn Write + Send>) = match output {
            Output::Table => (
                std::io::stdout().is_terminal(),
                ProgressDrawTarget::stdout(),
                Box::new(std::io::stdout()),
            ),
            Output::Json => (
                std::io::stderr().is_terminal(),
                ProgressDrawTarget::stderr(),
                Box::new(std::io::stderr()),
            ),
        };
        let mut progress = Progress::lines(out);
        if tty {
            let bar = ProgressBar::with_draw_target(Some(0), target);
            let style = ProgressStyle::with_template("{spinner} [{bar:20}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            progress.bar = Some(bar);
        }
        progress
    }

    /// Plain lines to `out`, no bar (non-terminals, tests).
    pub fn lines(out: Box<dyn Write + Send>) -> Progress {
        Progress {
            bar: None,
            out,
            last: String::new(),
        }
    }

    pub fn update(&mut self, text: &str, position: u64, length: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(length);
                bar.set_position(position);
                bar.set_message(text.to_string());
            }
            None if text != self.last => {
                let _ = writeln!(self.out, "{text}");
                let _ = self.out.flush();
            }
            None => {}
        }
        self.last = text.to_string();
    }

    /// Removes the bar and prints `text` as the final line.
    pub fn finish(&mut self, text: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Leaves the bar as it stands (for a timeout or an error, said afterwards).
    pub fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::app::view::{DeploymentView, TaskFailureView};
    use crate::cli::client::tests::{app_json, fake_server};
    use crate::cli::output::parse_rfc3339;

    /// A `Write` whose text a test can read afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn app(id: &str, instances: u32, running: u32, healthy: u32) -> AppView {
        let spec = AppSpec::parse(&format!("id: {id}\ncmd: sleep 100\n")).unwrap();
        AppView {
            id: id.into(),
            spec,
            version: "2026-01-01T00:00:00Z".into(),
            instances,
            tasks_staged: 0,
            tasks_running: running,
            tasks_healthy: healthy,
            tasks_unhealthy: 0,
            tasks_old_version: 0,
            deployment: None,
            last_failure: None,
            backoff_seconds: None,
            ports: vec![],
            endpoints: vec![],
            objects: Default::default(),
            version_cause: None,
            residents: Vec::new(),
        }
    }

    fn deployment(kind: &str, target: u32, ready: u32, waiting: &str) -> DeploymentView {
        DeploymentView {
            id: "d-1".into(),
            app_id: "web".into(),
            kind: kind.into(),
            version: "2026-01-01T00:00:00Z".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            target_instances: target,
            ready_instances: ready,
            waiting: waiting.into(),
            cause: None,
        }
    }

    fn fast(timeout_ms: u64) -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_millis(timeout_ms),
            poll: Duration::from_millis(10),
        }
    }

    #[test]
    fn versions_table_lists_newest_first_with_current_and_cause() {
        let versions: AppVersionsView = serde_json::from_value(serde_json::json!({
            "app_id": "web",
            "versions": [
                {"version": "2026-12-07T10:02:00.000Z", "cause": "rollback to 2026-12-07T10:00:00.000Z",
                 "current": true, "spec": {"id": "web", "cmd": "sleep 1"}},
                {"version": "2026-12-07T10:01:00.000Z", "cause": null, "current": false,
                 "objects": {"secret/db-pass": 3, "config/nginx": 2},
                 "spec": {"id": "web", "cmd": "sleep 2"}},
                {"version": "2026-12-07T10:00:00.000Z", "cause": null, "current": false,
                 "spec": {"id": "web", "cmd": "sleep 1"}}
            ]
        }))
        .unwrap();
        assert_eq!(
            versions_table(&versions).render(),
            "VERSION                    CURRENT   OBJECTS                           CAUSE\n\
             2026-12-07T10:02:00.000Z   yes       -                                 rollback to 2026-12-07T10:00:00.000Z\n\
             2026-12-07T10:01:00.000Z             config/nginx:2,secret/db-pass:3   -\n\
             2026-12-07T10:00:00.000Z             -                                 -\n"
        );
    }

    /// `strata app versions` and `strata app rollback [--to V]` call the App API's
    /// endpoints; a rollback prints what a deploy prints.
    #[tokio::test]
    async fn versions_and_rollback_call_the_api() {
        let (addr, seen) = fake_server(Arc::new(|req| match req.path.as_str() {
            "/v1/apps/web/versions" => (
                200,
                r#"{"app_id": "web", "versions": [{"version": "v2", "cause": null,
                    "current": true, "spec": {"id": "web", "cmd": "sleep 1"}}]}"#
                    .into(),
            ),
            "/v1/apps/web/rollback" => (200, app_json("web", 3, 3, Some(""))),
            "/v1/apps/old/rollback" => (
                409,
                r#"{"error": "app \"old\" has no earlier version to roll back to"}"#.into(),
            ),
            _ => (404, r#"{"error": "not found"}"#.into()),
        }))
        .await;
        let client = ApiClient::new(&addr);
        let versions = app_versions(&client, "web").await.unwrap();
        assert_eq!(versions.versions[0].version, "v2");
        let view = rollback(&client, "web", None).await.unwrap();
        assert_eq!(
            started_line(&view, "rollback"),
            "app \"web\": update started, 3 instance(s) (deployment d1)"
        );
        rollback(&client, "web", Some("v1".into())).await.unwrap();
        let err = rollback(&client, "old", None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"app "old" has no earlier version to roll back to"#
        );
        let seen: Vec<(String, String, String)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.method.clone(), s.path.clone(), s.body.clone()))
            .collect();
        assert_eq!(
            seen[..3],
            [
                ("GET".into(), "/v1/apps/web/versions".into(), String::new()),
                ("POST".into(), "/v1/apps/web/rollback".into(), "{}".into()),
                (
                    "POST".into(),
                    "/v1/apps/web/rollback".into(),
                    r#"{"version":"v1"}"#.into()
                ),
            ]
        );
    }

    #[test]
    fn rollback_takes_a_version_and_the_wait_flags() {
        use clap::Parser;
        match App::try_parse_from(["app", "rollback", "web", "--to", "v1", "--wait"])
            .unwrap()
            .command
        {
            AppCommand::Rollback { id, to, wait } => {
                assert_eq!(
                    (id.as_str(), to.as_deref(), wait.wait),
                    ("web", Some("v1"), true)
                );
            }
            other => panic!("{other:?}"),
        }
        match App::try_parse_from(["app", "rollback", "web"])
            .unwrap()
            .command
        {
            AppCommand::Rollback { to, wait, .. } => assert!(to.is_none() && !wait.wait),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            App::try_parse_from(["app", "versions", "web"]).unwrap().command,
            AppCommand::Versions { id } if id == "web"
        ));
    }

    #[test]
    fn app_list_table() {
        let mut web = app("web", 5, 3, 2);
        web.deployment = Some(deployment("update", 5, 2, ""));
        let apps = [web, app("db", 1, 1, 1)];
        assert_eq!(
            apps_table(&apps).render(),
            "ID    INSTANCES   RUNNING   HEALTHY   DEPLOYMENT\n\
             web   5           3         2         update 2/5\n\
             db    1           1         1         -\n"
        );
    }

    #[test]
    fn status_and_waiting_lines() {
        let mut web = app("web", 5, 3, 2);
        assert_eq!(status_line(&web), "web: 3/5 running, 2/5 healthy");
        assert_eq!(waiting_reason(&web), None);
        web.tasks_staged = 2;
        web.tasks_old_version = 1;
        assert_eq!(
            status_line(&web),
            "web: 3/5 running, 2/5 healthy, 2 staging, 1 old version"
        );
        web.deployment = Some(deployment(
            "update",
            5,
            2,
            "no offer fits: needs cpus 2, largest offer has cpus 1.5",
        ));
        assert_eq!(
            progress_text(&web),
            "web: 3/5 running, 2/5 healthy, 2 staging, 1 old version; \
             waiting: no offer fits: needs cpus 2, largest offer has cpus 1.5"
        );
        web.deployment = Some(deployment("update", 5, 2, ""));
        web.backoff_seconds = Some(4.4);
        web.last_failure = Some(TaskFailureView {
            task_id: "web.1".into(),
            state: "TASK_FAILED".into(),
            message: "exited with status 1".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
        });
        assert_eq!(
            waiting_reason(&web).unwrap(),
            "backoff, next launch in 4s (last failure: task web.1 FAILED: exited with status 1)"
        );
        // The server's own backoff reason keeps the failure that caused it.
        web.deployment = Some(deployment(
            "update",
            5,
            2,
            "restart backoff: next launch in 0.4 s",
        ));
        assert_eq!(
            waiting_reason(&web).unwrap(),
            "restart backoff: next launch in 0.4 s (last failure: task web.1 FAILED: exited \
             with status 1)"
        );
        web.backoff_seconds = None;
        assert_eq!(
            waiting_reason(&web).unwrap(),
            "restart backoff: next launch in 0.4 s"
        );
    }

    #[test]
    fn started_lines() {
        let mut web = app("web", 3, 0, 0);
        assert_eq!(
            started_line(&web, "deploy"),
            "app \"web\": deploy: nothing to change"
        );
        web.deployment = Some(deployment("create", 3, 0, ""));
        assert_eq!(
            started_line(&web, "deploy"),
            "app \"web\": create started, 3 instance(s) (deployment d-1)"
        );
    }

    #[test]
    fn describe_shows_spec_counts_deployment_failure_and_tasks() {
        // Not a valid spec (bridge ports need container ports): describe shows any.
        let spec = serde_yaml::from_str::<AppSpec>(
            r#"
id: web
instances: 2
image: nginx:1.27
network: bridge
args: ["nginx", "-g", "daemon off;"]
cpus: 0.5
mem: 1536
ports: [0, {host_port: 8080, container_port: 80, protocol: tcp, name: http}]
env: {A: "1", B: two}
constraints: ["hostname UNIQUE"]
health_checks:
  - {protocol: http, path: /health, port_index: 1}
"#,
        )
        .unwrap();
        let mut view = app("web", 2, 1, 1);
        view.spec = spec;
        view.tasks_staged = 1;
        view.deployment = Some(deployment("update", 2, 1, "no offer fits"));
        view.last_failure = Some(TaskFailureView {
            task_id: "web.0".into(),
            state: "TASK_FAILED".into(),
            message: "exited with status 1".into(),
            timestamp: "2026-01-01T00:03:00Z".into(),
        });
        let task = AppTaskView {
            id: "web.1".into(),
            app_id: "web".into(),
            version: view.version.clone(),
            agent_id: "a1".into(),
            hostname: "node1".into(),
            agent_address: "node1:5051".into(),
            state: "TASK_RUNNING".into(),
            healthy: Some(true),
            ports: vec![31000, 8080],
            staged_at: "2026-01-01T00:04:00Z".into(),
            started_at: Some("2026-01-01T00:04:30Z".into()),
            message: String::new(),
        };
        let now = parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let text = describe(&view, &[task], now);
        let want = "\
ID:            web
Version:       2026-01-01T00:00:00Z
Args:          nginx -g 'daemon off;'
Image:         nginx:1.27 (network bridge)
Resources:     cpus 0.5, mem 1.5G, disk 0M
Ports:         any, 8080->80/tcp (http)
Env:           A=1, B=two
Constraints:   hostname UNIQUE
Health check:  http /health on port index 1, every 10s (timeout 20s, grace 300s, replace after 3 failures)
Instances:     2 desired: 1 running, 1 healthy, 1 staging
Deployment:    update 1/2 ready, started 5m ago (id d-1)
Waiting:       no offer fits
Last failure:  task web.0 FAILED 2m ago: exited with status 1

ID      STATE     HEALTH    HOST    PORTS        AGE
web.1   RUNNING   healthy   node1   31000,8080   30s
";
        assert_eq!(text, want);
    }

    /// Issue 16: the spec's references and the versions the app pins, never values.
    #[test]
    fn describe_shows_secret_and_config_references_and_their_versions() {
        let mut view = app("web", 1, 1, 1);
        view.spec = AppSpec::parse(
            "id: web\ncmd: x\nsecrets: [{source: db-pass}, {source: tls.key, target: tls/key}]\n\
             configs: [{source: nginx-conf}]\nenv: {PLAIN: v, DB_PASS: {secret: db-pass}}\n",
        )
        .unwrap();
        view.objects = [
            ("config/nginx-conf", 0),
            ("secret/db-pass", 4),
            ("secret/tls.key", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        view.version_cause = Some("secret db-pass version 4".into());
        let text = describe(&view, &[], 0.0);
        for line in [
            "Version:          2026-01-01T00:00:00Z (secret db-pass version 4)\n",
            "Env:              DB_PASS={secret: db-pass}, PLAIN=v\n",
            "Secrets:          db-pass, tls.key as tls/key\n",
            "Configs:          nginx-conf\n",
            "Object versions:  config/nginx-conf latest, secret/db-pass 4, secret/tls.key 1\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn describe_shows_service_ports_and_endpoints() {
        use crate::app::view::PortView;

        let spec = AppSpec::parse(
            "id: web\ncmd: x\nports: [{host_port: 0, name: http, service_port: 10000}, 0]\n",
        )
        .unwrap();
        let mut view = app("web", 3, 3, 2);
        view.spec = spec;
        view.ports = vec![
            PortView {
                index: 0,
                name: "http".into(),
                protocol: "tcp".into(),
                service_port: Some(10000),
            },
            PortView {
                index: 1,
                name: "port1".into(),
                protocol: "tcp".into(),
                service_port: None,
            },
        ];
        let endpoint = |host: &str, ready: bool, healthy: Option<bool>, state: &str| EndpointView {
            task_id: format!("web.{host}"),
            host: host.into(),
            ports: vec![31000, 31001],
            state: state.into(),
            healthy,
            ready,
        };
        view.endpoints = vec![
            endpoint("n1", true, Some(true), "TASK_RUNNING"),
            endpoint("n2", false, Some(false), "TASK_RUNNING"),
            endpoint("n3", false, Some(true), "TASK_KILLING"),
        ];
        let text = describe(&view, &[], 0.0);
        assert!(
            text.contains("Ports:       any (http) service 10000, any\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Endpoints:   n1:31000,31001 ready, n2:31000,31001 unhealthy, \
                 n3:31000,31001 killing\n"
            ),
            "{text}"
        );
        view.endpoints.clear();
        let text = describe(&view, &[], 0.0);
        assert!(text.contains("Endpoints:   none running\n"), "{text}");
        // An app without ports says nothing of endpoints.
        assert!(!describe(&app("db", 1, 1, 1), &[], 0.0).contains("Endpoints"));
    }

    #[test]
    fn describe_a_converged_app_without_tasks() {
        let text = describe(&app("db", 0, 0, 0), &[], 0.0);
        assert!(text.contains("Command:     sleep 100\n"), "{text}");
        assert!(text.contains("Deployment:  none (converged)\n"), "{text}");
        assert!(text.ends_with("\nNo tasks.\n"), "{text}");
    }

    #[tokio::test]
    async fn waits_until_the_deployment_is_over_and_prints_the_last_line() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let (addr, _) = fake_server(Arc::new(move |req| {
            assert_eq!(req.path, "/v1/apps/web");
            match counter.fetch_add(1, Ordering::SeqCst) {
                0 => (
                    200,
                    app_json("web", 3, 1, Some("no offer fits: needs cpus 2")),
                ),
                1 => (200, app_json("web", 3, 2, Some(""))),
                _ => (200, app_json("web", 3, 3, None)),
            }
        }))
        .await;
        let client = ApiClient::new(&addr);
        let mut first = app("web", 3, 0, 0);
        first.deployment = Some(deployment("create", 3, 0, ""));
        let out = Captured::default();
        let mut progress = Progress::lines(Box::new(out.clone()));
        let waited = wait_converged(&client, first, &fast(5000), &mut progress)
            .await
            .unwrap();
        let Waited::Done(view) = waited else {
            panic!("interrupted")
        };
        assert_eq!(view.tasks_running, 3);
        assert_eq!(
            out.text(),
            "web: 0/3 running, 0/3 healthy\n\
             web: 1/3 running, 1/3 healthy; waiting: no offer fits: needs cpus 2\n\
             web: 2/3 running, 2/3 healthy\n\
             web: 3/3 running, 3/3 healthy\n\
             web: 3/3 running, 3/3 healthy; deployment finished\n"
        );
    }

    #[tokio::test]
    async fn a_timeout_says_the_last_reason() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (
                200,
                app_json(
                    "web",
                    5,
                    3,
                    Some("no offer fits: needs cpus 2, largest offer has cpus 1.5"),
                ),
            )
        }))
        .await;
        let client = ApiClient::new(&addr);
        let mut first = app("web", 5, 3, 3);
        first.deployment = Some(deployment("update", 5, 3, ""));
        let out = Captured::default();
        let mut progress = Progress::lines(Box::new(out.clone()));
        let err = wait_converged(&client, first, &fast(200), &mut progress)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s: web: 3/5 running, 3/5 healthy; \
             waiting: no offer fits: needs cpus 2, largest offer has cpus 1.5"
        );
        // Each distinct state once, however many polls.
        assert_eq!(out.text().lines().count(), 2, "{}", out.text());
    }

    /// A launch that keeps failing (here a missing secret) leaves the app between
    /// backoff and "reviving offers": the timeout names the failure either way.
    #[tokio::test]
    async fn a_timeout_names_the_last_failure() {
        let mut view = app("web", 1, 0, 0);
        view.deployment = Some(deployment("create", 1, 0, "reviving offers"));
        view.last_failure = Some(TaskFailureView {
            task_id: "web.1".into(),
            state: "TASK_ERROR".into(),
            message: "task 'web.1': secret 'db-pass' does not exist".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
        });
        let body = serde_json::to_string(&view).unwrap();
        let (addr, _) = fake_server(Arc::new(move |_| (200, body.clone()))).await;
        let client = ApiClient::new(&addr);
        let mut progress = Progress::lines(Box::new(Captured::default()));
        let err = wait_converged(&client, view.clone(), &fast(200), &mut progress)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s: web: 0/1 running, 0/1 healthy; waiting: reviving offers; \
             last failure: task web.1 ERROR: task 'web.1': secret 'db-pass' does not exist"
        );
    }

    #[tokio::test]
    async fn no_deployment_means_done_at_once() {
        let client = ApiClient::new("127.0.0.1:1");
        let out = Captured::default();
        let mut progress = Progress::lines(Box::new(out.clone()));
        let waited = wait_converged(&client, app("web", 1, 1, 1), &fast(1000), &mut progress)
            .await
            .unwrap();
        assert!(matches!(waited, Waited::Done(_)));
        assert!(
            out.text()
                .ends_with("web: 1/1 running, 1/1 healthy; deployment finished\n")
        );
    }

    #[tokio::test]
    async fn rm_waits_for_a_404() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let (addr, _) = fake_server(Arc::new(move |_| {
            match counter.fetch_add(1, Ordering::SeqCst) {
                0 => (200, app_json("web", 0, 1, Some(""))),
                _ => (404, r#"{"error": "app \"web\" not found"}"#.into()),
            }
        }))
        .await;
        let client = ApiClient::new(&addr);
        let out = Captured::default();
        let mut progress = Progress::lines(Box::new(out.clone()));
        let waited = wait_gone(&client, app("web", 0, 2, 2), &fast(5000), &mut progress)
            .await
            .unwrap();
        assert!(matches!(waited, Waited::Done(())));
        assert_eq!(
            out.text(),
            "web: removing, 2 task(s) left\nweb: removing, 1 task(s) left\nweb: removed\n"
        );
    }

    #[tokio::test]
    async fn a_server_error_while_waiting_is_reported() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (404, r#"{"error": "app \"web\" not found"}"#.into())
        }))
        .await;
        let client = ApiClient::new(&addr);
        let mut first = app("web", 1, 0, 0);
        first.deployment = Some(deployment("update", 1, 0, ""));
        let mut progress = Progress::lines(Box::new(Captured::default()));
        let err = wait_converged(&client, first, &fast(5000), &mut progress)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), r#"app "web" not found"#);
    }

    #[test]
    fn a_bad_spec_file_names_file_field_and_reason() {
        let dir = std::env::temp_dir().join(format!("strata-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yaml");
        std::fs::write(
            &path,
            "id: web\ncmd: sleep 1\nports: [0]\nhealth_checks:\n  - {protocol: tcp, port_index: 1}\n",
        )
        .unwrap();
        let err = read_spec(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: health_checks[0].port_index: port_index 1 but the app has 1 port(s)",
                path.display()
            )
        );
        let missing = dir.join("missing.yaml");
        let err = read_spec(&missing).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `strata app ...` as clap parses it.
    #[derive(clap::Parser, Debug)]
    struct App {
        #[command(subcommand)]
        command: AppCommand,
    }

    fn scale_timeout(extra: &[&str]) -> Result<Duration, clap::Error> {
        use clap::Parser;
        let mut argv = vec!["app", "scale", "web", "3", "--wait"];
        argv.extend_from_slice(extra);
        match App::try_parse_from(argv)?.command {
            AppCommand::Scale { wait, .. } => Ok(wait.options().timeout),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_timeout_takes_a_duration_and_still_a_number_of_seconds() {
        assert_eq!(scale_timeout(&[]).unwrap(), Duration::from_secs(300));
        assert_eq!(
            scale_timeout(&["--timeout", "2m"]).unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            scale_timeout(&["--timeout", "500ms"]).unwrap(),
            Duration::from_millis(500)
        );
        // The docs showed `--timeout SECS`: what people wrote keeps working.
        assert_eq!(
            scale_timeout(&["--timeout", "120"]).unwrap(),
            Duration::from_secs(120)
        );
        let err = scale_timeout(&["--timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--timeout") && err.contains("invalid duration 'soon'"),
            "{err}"
        );
    }
}
