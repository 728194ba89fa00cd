//! The apps dashboard `strata serve` serves on the App API's own port (issue 18):
//! server-rendered pages built from the framework's state, with a little JavaScript
//! (`ui/apps.js`) for the live numbers, the YAML editor and the actions, which are
//! the App API's own calls (the same as the CLI's, under the same ACLs). It shares
//! the master dashboard's shell, stylesheet and script ([`strata_master::ui`]).
//!
//! ```text
//!   GET /                the apps the caller may view (view_apps): table #apps
//!   GET /ui/apps/{id}    one app: counts, deployment, actions, versions, tasks,
//!                        last failure, endpoints, residents, spec (YAML)
//!   GET /ui/deploy       the YAML editor (a new app: POST /v1/apps)
//!   GET /ui/deploy?app=ID  the editor holding the app's spec (PUT /v1/apps/ID)
//!   GET /ui/events       server-sent events: `overview` ({}: the shared app.js's
//!                        live indicator) then `apps` on each change, filtered per
//!                        viewer by view_apps; one feed task per server
//!   GET /ui/apps.js, /ui/apps.css, and the shared /ui/app.css, /ui/app.js,
//!       /ui/favicon.svg, /favicon.ico
//! ```
//!
//! Every path is behind the App API's authentication layer (401 with
//! `WWW-Authenticate: Basic` without a credential) and refuses agents; pages are
//! GET-only, changes are the App API's POST/PUT/DELETE (CSRF-guarded there).
//!
//! The elements the tests and apps.js rely on (`ID` is an app id, which is always
//! made of `[a-z0-9.-]`):
//!
//! ```text
//!   #apps tbody tr[data-app-id=ID]       a row of the apps table
//!   #count-ID                            "running/desired" (#running-ID, #desired-ID
//!                                        inside it), on both pages
//!   #healthy-ID, #version-ID             healthy tasks, current version
//!   #deployment-ID                       the deployment in progress ("update 0/2"), or "—"
//!   #waiting-ID (class waiting)          its waiting reason; hidden when it has none
//!   #deploy-link                         "Deploy an app" (to /ui/deploy)
//!   app page: #app[data-app-id=ID], #edit (to /ui/deploy?app=ID), #scale-form
//!     (#scale-instances, #scale), #restart, #rollback-version (select), #rollback,
//!     #remove, #versions (filled from GET /v1/apps/ID/versions), #tasks
//!     (tr[data-task-id], ids link to the master's /ui/tasks/{id}), #last-failure,
//!     #endpoints, #residents, #spec (the spec as YAML)
//!   deploy page: #deploy-form[data-app-id] (absent: a new app), #spec-editor
//!     (textarea), #deploy, #field-error[data-field] (the API's error at its field)
//!   #message (the shell's): every action's answer, a refusal's status and reason
//! ```
//!
//! Live numbers: one task per server reads every app's numbers once a second while
//! anyone listens and puts them in a watch channel (all apps); each viewer's stream
//! filters them by its principal's view_apps and sends an `apps` event only when what
//! it may see changed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use strata_master::ui::{esc, mib, number, shell};
use strata_security::{Action, Authenticator, Authorizer, Principal};
use tokio::sync::watch;

use super::records::now;
use super::service::FrameworkHandle;
use super::view::{AppNumbers, AppTaskView, AppView};

const APPS_JS: &str = include_str!("ui/apps.js");
const APPS_CSS: &str = include_str!("ui/apps.css");

/// The navigation of the apps dashboard.
const NAV: [(&str, &str); 2] = [("/", "Apps"), ("/ui/deploy", "Deploy")];

/// What the editor holds for a new app.
const EXAMPLE_SPEC: &str = "id: hello\ninstances: 2\ncmd: \"while true; do echo hello; sleep 5; done\"\ncpus: 0.1\nmem: 32\n";

/// What every page has: the framework, the authorizer, the live feed, and how the
/// master's dashboard is reached.
#[derive(Clone)]
struct Ui {
    framework: FrameworkHandle,
    authz: Authorizer,
    feed: Feed,
    /// `http` or `https`: how the master (and this server) are spoken to.
    scheme: &'static str,
}

/// The dashboard's routes, behind `authn` (the App API's authentication) with agents
/// refused; merged by `strata serve` with the App API's router (no path in common).
pub fn router(framework: FrameworkHandle, authn: Authenticator, authz: Authorizer) -> Router {
    let scheme = if authn.is_secure() { "https" } else { "http" };
    Router::new()
        .route("/", get(apps_page))
        .route("/ui/apps/{id}", get(app_page))
        .route("/ui/deploy", get(deploy_page))
        .route("/ui/events", get(events))
        .route("/ui/apps.js", get(apps_js))
        .route("/ui/apps.css", get(apps_css))
        .route("/ui/app.css", get(strata_master::ui::css))
        .route("/ui/app.js", get(strata_master::ui::js))
        .route("/ui/favicon.svg", get(strata_master::ui::icon))
        .route("/favicon.ico", get(strata_master::ui::icon))
        .with_state(Ui {
            framework,
            authz,
            feed: Feed::new(Snapshot::default()),
            scheme,
        })
        // Agents are refused, as by the App API: the dashboard is for people.
        .layer(axum::middleware::from_fn(super::api::users_only))
        .layer(axum::middleware::from_fn_with_state(
            authn,
            strata_security::authn::authenticate,
        ))
}

/// The caller, as the authentication layer put it in the request.
fn caller(request_principal: Option<axum::Extension<Principal>>) -> Principal {
    request_principal
        .map(|axum::Extension(p)| p)
        .unwrap_or(Principal::Anonymous)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the container framework is stopping\n".to_string(),
    )
        .into_response()
}

/// A page of the apps dashboard: the shared shell, apps.js, and apps.css.
fn page(title: &str, current: &str, body: &str) -> Response {
    let body = format!("<link rel=\"stylesheet\" href=\"/ui/apps.css\">{body}");
    shell(title, &NAV, current, &["/ui/apps.js"], &body)
}

/// A page saying why there is nothing to show, with its status.
fn refusal(status: StatusCode, title: &str, text: &str) -> Response {
    let mut response = page(
        title,
        "",
        &format!(
            "<h1>{}</h1><p class=\"waiting banner\" id=\"refused\">{}</p><p><a href=\"/\">All apps</a></p>",
            esc(title),
            esc(text)
        ),
    );
    *response.status_mut() = status;
    response
}

/// The apps `principal` may view (view_apps on their id), in their order.
fn visible(authz: &Authorizer, principal: &Principal, mut apps: Vec<AppView>) -> Vec<AppView> {
    apps.retain(|a| authz.permits(principal, Action::ViewApps, &a.id));
    apps
}

/// `GET /`.
async fn apps_page(
    State(ui): State<Ui>,
    principal: Option<axum::Extension<Principal>>,
) -> Response {
    let principal = caller(principal);
    let Ok(apps) = ui.framework.read(|c, _| c.apps(now())).await else {
        return unavailable();
    };
    let apps = visible(&ui.authz, &principal, apps);
    page("Apps", "/", &apps_body(&apps))
}

/// The apps page's body: the table of `apps` (already filtered).
fn apps_body(apps: &[AppView]) -> String {
    let mut body = String::from(
        "<div class=\"titlebar\"><h1>Apps</h1><a class=\"button\" id=\"deploy-link\" href=\"/ui/deploy\">Deploy an app</a></div>",
    );
    let waiting = apps
        .iter()
        .filter(|a| a.deployment.as_ref().is_some_and(|d| !d.waiting.is_empty()))
        .count();
    let _ = write!(
        body,
        "<p class=\"waiting banner\" id=\"waiting-banner\"{}>{} deployment(s) waiting: see below</p>",
        if waiting == 0 { " hidden" } else { "" },
        waiting
    );
    let _ = write!(
        body,
        "<p class=\"muted\" id=\"app-count\">{} app(s)</p>",
        apps.len()
    );
    body.push_str(
        "<div class=\"scroll\"><table id=\"apps\"><thead><tr><th scope=\"col\">App</th>\
<th scope=\"col\">Instances</th><th scope=\"col\">Healthy</th><th scope=\"col\">Version</th>\
<th scope=\"col\">Deployment</th></tr></thead><tbody>",
    );
    for a in apps {
        let n = Numbers::of(a);
        let _ = write!(
            body,
            "<tr data-app-id=\"{id}\"><td><a href=\"/ui/apps/{id}\">{id}</a>{labels}</td>\
<td>{count}</td><td id=\"healthy-{id}\">{healthy}</td>\
<td><span class=\"id\" id=\"version-{id}\">{version}</span></td><td>{deployment}</td></tr>",
            id = esc(&a.id),
            labels = labels(a),
            count = count_html(&a.id, &n),
            healthy = n.healthy,
            version = esc(&n.version),
            deployment = deployment_html(&a.id, &n),
        );
    }
    if apps.is_empty() {
        body.push_str(
            "<tr class=\"empty\"><td colspan=\"5\" class=\"muted\">No apps you may see. <a href=\"/ui/deploy\">Deploy one</a>.</td></tr>",
        );
    }
    body.push_str("</tbody></table></div>");
    body
}

/// An app's labels as small tags.
fn labels(a: &AppView) -> String {
    a.spec
        .labels
        .iter()
        .map(|(k, v)| format!(" <span class=\"label-tag\">{}={}</span>", esc(k), esc(v)))
        .collect()
}

/// `running/desired`, each number with its id.
fn count_html(id: &str, n: &Numbers) -> String {
    format!(
        "<span class=\"count\" id=\"count-{id}\"><span id=\"running-{id}\">{}</span>/<span id=\"desired-{id}\">{}</span></span>",
        n.running,
        n.desired,
        id = esc(id)
    )
}

/// The deployment in progress and its waiting reason (hidden when there is none).
fn deployment_html(id: &str, n: &Numbers) -> String {
    format!(
        "<span id=\"deployment-{id}\">{}</span><div class=\"waiting\" id=\"waiting-{id}\"{}>{}</div>",
        esc(&n.deployment),
        if n.waiting.is_empty() { " hidden" } else { "" },
        esc(&n.waiting),
        id = esc(id)
    )
}

/// `GET /ui/apps/{id}`.
async fn app_page(
    State(ui): State<Ui>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let principal = caller(principal);
    if let Err(denied) = ui.authz.authorize(&principal, Action::ViewApps, &id) {
        return refusal(StatusCode::FORBIDDEN, "Not allowed", &denied.to_string());
    }
    let read = id.clone();
    let Ok((view, tasks)) = ui
        .framework
        .read(move |c, _| {
            (
                c.app_view(&read, now()),
                c.tasks(Some(&read)).unwrap_or_default(),
            )
        })
        .await
    else {
        return unavailable();
    };
    let Some(view) = view else {
        return refusal(
            StatusCode::NOT_FOUND,
            "No such app",
            &format!("there is no app {id:?}"),
        );
    };
    let master = master_base(ui.scheme, &ui.framework.master);
    page(&view.id, "", &app_body(&view, &tasks, &master))
}

/// `scheme://host:port` of the master's dashboard, from the framework's `--master`.
fn master_base(scheme: &str, master: &str) -> String {
    let master = master.trim_end_matches('/');
    if master.contains("://") {
        master.to_string()
    } else {
        format!("{scheme}://{master}")
    }
}

/// Seconds since the epoch of an RFC 3339 time (0 if it is not one).
fn unix(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339_weak(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn time_html(rfc3339: &str) -> String {
    format!(
        "<time data-unix=\"{}\">{}</time>",
        unix(rfc3339),
        esc(rfc3339)
    )
}

fn health(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "—",
    }
}

/// The app page's body. `master` is the master dashboard's base URL.
fn app_body(a: &AppView, tasks: &[AppTaskView], master: &str) -> String {
    let n = Numbers::of(a);
    let id = esc(&a.id);
    let mut body = format!(
        "<div class=\"titlebar\" id=\"app\" data-app-id=\"{id}\"><h1>{id}</h1>{labels}\
<a class=\"button\" id=\"edit\" href=\"/ui/deploy?app={id}\">Edit</a></div>",
        labels = labels(a)
    );
    let _ = write!(
        body,
        "<p class=\"muted\" id=\"resources\">Each instance: cpus {}, mem {}{}</p>",
        number(a.spec.cpus),
        mib(a.spec.mem),
        if a.spec.disk > 0.0 {
            format!(", disk {}", mib(a.spec.disk))
        } else {
            String::new()
        }
    );
    // The numbers, live.
    let _ = write!(
        body,
        "<section class=\"stats\" aria-label=\"Instances\">\
<div class=\"stat\"><span class=\"label\">Running / desired</span><span class=\"value\">{count}</span></div>\
<div class=\"stat\"><span class=\"label\">Healthy</span><span class=\"value\" id=\"healthy-{id}\">{healthy}</span></div>\
<div class=\"stat\"><span class=\"label\">Staged</span><span class=\"value\" id=\"staged-{id}\">{staged}</span></div>\
<div class=\"stat wide\"><span class=\"label\">Version</span><span class=\"value id\" id=\"version-{id}\">{version}</span>{cause}</div>\
</section>",
        count = count_html(&a.id, &n),
        healthy = n.healthy,
        staged = n.staged,
        version = esc(&a.version),
        cause = a
            .version_cause
            .as_ref()
            .map(|c| format!("<span class=\"muted\"> made by {}</span>", esc(c)))
            .unwrap_or_default(),
    );
    // The deployment, its waiting reason prominent.
    let _ = write!(
        body,
        "<section class=\"deployment\" aria-label=\"Deployment\"><span class=\"label\">Deployment:</span> {}</section>",
        deployment_html(&a.id, &n)
    );
    if let Some(s) = a.backoff_seconds {
        let _ = write!(
            body,
            "<p class=\"muted\" id=\"backoff\">Next launch in {} s (restart backoff)</p>",
            number(s)
        );
    }
    // The actions: the App API's calls, sent by apps.js.
    let _ = write!(
        body,
        "<h2>Actions</h2><div class=\"actions\">\
<form id=\"scale-form\" data-app-id=\"{id}\"><label for=\"scale-instances\">Instances</label> \
<input id=\"scale-instances\" name=\"instances\" type=\"number\" min=\"0\" max=\"10000\" value=\"{desired}\" required> \
<button type=\"submit\" id=\"scale\">Scale</button></form>\
<button type=\"button\" class=\"app-button\" id=\"restart\" data-app-id=\"{id}\">Restart</button>\
<form id=\"rollback-form\" data-app-id=\"{id}\" data-version=\"{version}\"><label for=\"rollback-version\">Roll back to</label> \
<select id=\"rollback-version\"><option value=\"\">the previous version</option></select> \
<button type=\"submit\" id=\"rollback\">Roll back</button></form>\
<button type=\"button\" class=\"app-button danger\" id=\"remove\" data-app-id=\"{id}\">Remove</button>\
</div>",
        desired = a.spec.instances,
        version = esc(&a.version),
    );
    // Versions: from GET /v1/apps/{id}/versions (apps.js).
    body.push_str(
        "<h2>Versions</h2><div class=\"scroll\"><table id=\"versions\"><thead><tr>\
<th scope=\"col\">Version</th><th scope=\"col\">Cause</th><th scope=\"col\">Instances</th>\
<th scope=\"col\">Command / image</th></tr></thead><tbody>\
<tr><td colspan=\"4\" class=\"muted\">Loading…</td></tr></tbody></table></div>",
    );
    // Tasks, refreshed by apps.js when the numbers change.
    body.push_str("<div id=\"live-sections\">");
    let _ = write!(body, "<h2>Tasks</h2>");
    tasks_table(&mut body, tasks, master);
    body.push_str("<h2>Last failure</h2><div id=\"last-failure\">");
    match &a.last_failure {
        Some(f) => {
            let _ = write!(
                body,
                "<p><span class=\"state state-failed\">{}</span> {} {} <span class=\"id\">{}</span></p>",
                esc(&f.state),
                time_html(&f.timestamp),
                esc(&f.message),
                esc(&f.task_id)
            );
        }
        None => body.push_str("<p class=\"muted\">None.</p>"),
    }
    body.push_str("</div><h2>Endpoints</h2>");
    body.push_str(
        "<div class=\"scroll\"><table id=\"endpoints\"><thead><tr><th scope=\"col\">Task</th>\
<th scope=\"col\">Address</th><th scope=\"col\">State</th><th scope=\"col\">Health</th>\
<th scope=\"col\">Ready</th></tr></thead><tbody>",
    );
    for e in &a.endpoints {
        let addresses = if e.ports.is_empty() {
            esc(&e.host)
        } else {
            (0..e.ports.len())
                .filter_map(|i| e.address(i))
                .map(|a| esc(&a))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            body,
            "<tr><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.task_id),
            addresses,
            esc(&e.state),
            health(e.healthy),
            if e.ready { "yes" } else { "no" }
        );
    }
    if a.endpoints.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No endpoints.</td></tr>");
    }
    body.push_str("</tbody></table></div>");
    if !a.ports.is_empty() {
        let ports = a
            .ports
            .iter()
            .map(|p| {
                format!(
                    "{} ({}{})",
                    esc(&p.name),
                    esc(&p.protocol),
                    p.service_port
                        .map(|s| format!(", service port {s}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(body, "<p class=\"muted\" id=\"ports\">Ports: {ports}</p>");
    }
    body.push_str("<h2>Residents</h2>");
    body.push_str(
        "<div class=\"scroll\"><table id=\"residents\"><thead><tr><th scope=\"col\">Instance</th>\
<th scope=\"col\">Agent</th><th scope=\"col\">Volumes</th><th scope=\"col\">Task</th>\
<th scope=\"col\">Note</th></tr></thead><tbody>",
    );
    for r in &a.residents {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}<br><span class=\"muted id\">{}</span></td><td class=\"id\">{}</td><td class=\"id\">{}</td><td>{}{}</td></tr>",
            esc(&r.instance),
            esc(&r.hostname),
            esc(&r.agent_id),
            esc(&r.volumes.join(", ")),
            esc(r.task_id.as_deref().unwrap_or("—")),
            if r.lost { "lost " } else { "" },
            esc(r.note.as_deref().unwrap_or("")),
        );
    }
    if a.residents.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">No persistent volumes.</td></tr>");
    }
    body.push_str("</tbody></table></div></div>");
    // The spec.
    let yaml = serde_yaml::to_string(&a.spec).unwrap_or_default();
    let _ = write!(body, "<h2>Spec</h2><pre id=\"spec\">{}</pre>", esc(&yaml));
    body
}

/// The app's tasks; ids link to the master's dashboard.
fn tasks_table(out: &mut String, tasks: &[AppTaskView], master: &str) {
    out.push_str(
        "<div class=\"scroll\"><table id=\"tasks\"><thead><tr><th scope=\"col\">Task</th>\
<th scope=\"col\">State</th><th scope=\"col\">Health</th><th scope=\"col\">Agent</th>\
<th scope=\"col\">Ports</th><th scope=\"col\">Started</th></tr></thead><tbody>",
    );
    for t in tasks {
        let ports = t
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let started = t.started_at.as_deref().unwrap_or(&t.staged_at);
        let _ = write!(
            out,
            "<tr data-task-id=\"{id}\"><td><a class=\"id\" href=\"{master}/ui/tasks/{id}\">{id}</a>\
<br><span class=\"muted id\">version {version}</span></td>\
<td class=\"state state-{cls}\">{state}<br><span class=\"muted\">{message}</span></td>\
<td>{health}</td><td>{host}</td><td>{ports}</td><td>{started}</td></tr>",
            id = esc(&t.id),
            master = esc(master),
            version = esc(&t.version),
            cls = esc(&t.state.trim_start_matches("TASK_").to_ascii_lowercase()),
            state = esc(&t.state),
            message = esc(&t.message),
            health = health(t.healthy),
            host = esc(&t.hostname),
            started = time_html(started),
        );
    }
    if tasks.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"muted\">No tasks.</td></tr>");
    }
    out.push_str("</tbody></table></div>");
}

/// `GET /ui/deploy?app=ID`.
#[derive(Debug, Default, Deserialize)]
struct DeployQuery {
    #[serde(default)]
    app: Option<String>,
}

/// `GET /ui/deploy`: the YAML editor, holding the app's spec when one is named.
async fn deploy_page(
    State(ui): State<Ui>,
    principal: Option<axum::Extension<Principal>>,
    Query(q): Query<DeployQuery>,
) -> Response {
    let principal = caller(principal);
    let app = q.app.filter(|a| !a.trim().is_empty());
    let (text, editing) = match &app {
        Some(id) => {
            if let Err(denied) = ui.authz.authorize(&principal, Action::ViewApps, id) {
                return refusal(StatusCode::FORBIDDEN, "Not allowed", &denied.to_string());
            }
            let read = id.clone();
            let Ok(view) = ui
                .framework
                .read(move |c, _| c.app_view(&read, now()))
                .await
            else {
                return unavailable();
            };
            let Some(view) = view else {
                return refusal(
                    StatusCode::NOT_FOUND,
                    "No such app",
                    &format!("there is no app {id:?}"),
                );
            };
            (serde_yaml::to_string(&view.spec).unwrap_or_default(), true)
        }
        None => (EXAMPLE_SPEC.to_string(), false),
    };
    let body = deploy_body(app.as_deref().filter(|_| editing), &text);
    page(
        if editing { "Edit app" } else { "Deploy an app" },
        if editing { "" } else { "/ui/deploy" },
        &body,
    )
}

fn deploy_body(app: Option<&str>, text: &str) -> String {
    let (title, target, hint) = match app {
        Some(id) => (
            format!("Edit {}", esc(id)),
            format!(" data-app-id=\"{}\"", esc(id)),
            format!(
                "Deploying sends the spec to <code>PUT /v1/apps/{}</code>, as <code>strata app deploy</code> does.",
                esc(id)
            ),
        ),
        None => (
            "Deploy an app".to_string(),
            String::new(),
            "Deploying sends the spec to <code>POST /v1/apps</code>: a new app.".to_string(),
        ),
    };
    format!(
        "<h1>{title}</h1><form id=\"deploy-form\"{target}>\
<label for=\"spec-editor\">Spec (YAML)</label>\
<p class=\"field-error waiting\" id=\"field-error\" role=\"alert\" hidden></p>\
<textarea id=\"spec-editor\" name=\"spec\" rows=\"22\" spellcheck=\"false\" autocapitalize=\"off\" autocomplete=\"off\">{text}</textarea>\
<p class=\"muted\">{hint}</p>\
<button type=\"submit\" id=\"deploy\">Deploy</button></form>",
        text = esc(text),
    )
}

/// One app's live numbers (the `apps` event's values, by app id).
type Numbers = AppNumbers;

impl Numbers {
    fn of(a: &AppView) -> Numbers {
        let (deployment, waiting) = match &a.deployment {
            Some(d) => (
                format!("{} {}/{}", d.kind, d.ready_instances, d.target_instances),
                d.waiting.clone(),
            ),
            None => ("—".to_string(), String::new()),
        };
        Numbers {
            running: a.tasks_running,
            healthy: a.tasks_healthy,
            desired: a.instances,
            staged: a.tasks_staged,
            version: a.version.clone(),
            deployment,
            waiting,
        }
    }
}

/// Every app's numbers, by id.
type Snapshot = Arc<BTreeMap<String, Numbers>>;

#[cfg(test)]
fn snapshot(apps: &[AppView]) -> BTreeMap<String, Numbers> {
    apps.iter()
        .map(|a| (a.id.clone(), Numbers::of(a)))
        .collect()
}

/// The numbers of the apps `principal` may view.
fn filtered(
    all: &BTreeMap<String, Numbers>,
    authz: &Authorizer,
    principal: &Principal,
) -> BTreeMap<String, Numbers> {
    all.iter()
        .filter(|(id, _)| authz.permits(principal, Action::ViewApps, id))
        .map(|(id, n)| (id.clone(), n.clone()))
        .collect()
}

/// The live feed every open page shares (one pass over the apps a second while
/// anyone listens): every app's numbers, filtered per viewer.
type Feed = strata_master::ui::Feed<Snapshot>;

/// The feed's subscription: its task reads the apps' numbers from the framework.
fn subscribe(feed: &Feed, framework: &FrameworkHandle) -> watch::Receiver<Snapshot> {
    let framework = framework.clone();
    feed.subscribe(move || {
        let framework = framework.clone();
        // Err: the framework is stopping.
        async move {
            framework
                .read(|c, _| c.app_numbers(now()))
                .await
                .ok()
                .map(Arc::new)
        }
    })
}

/// `GET /ui/events`: `overview` (`{}`, for the shared live indicator), then the
/// numbers of the apps the caller may view as `apps` events, at once and on each
/// change of them.
async fn events(
    State(ui): State<Ui>,
    principal: Option<axum::Extension<Principal>>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    use futures::StreamExt as _;
    let principal = caller(principal);
    let framework = ui.framework.clone();
    let read = async move {
        framework
            .read(|c, _| c.app_numbers(now()))
            .await
            .unwrap_or_default()
    };
    let (rx, first) = subscribe_then_read(|| subscribe(&ui.feed, &ui.framework), read).await;
    let first = filtered(&first, &ui.authz, &principal);
    let hello = futures::stream::iter([
        Ok(Event::default().event("overview").data("{}")),
        Ok(Event::default()
            .event("apps")
            .data(serde_json::to_string(&first).unwrap_or_default())),
    ]);
    let updates = viewer_updates(rx, first, ui.authz.clone(), principal).map(|mine| {
        let json = serde_json::to_string(&mine).unwrap_or_default();
        Ok(Event::default().event("apps").data(json))
    });
    Sse::new(hello.chain(updates)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Subscribes to the feed, then reads the first numbers: in that order, so that a
/// change the feed publishes while (or after) they are read is still seen as one.
/// (Subscribing marks the feed's value of that moment as seen: read before it, the
/// first numbers could be older than that value, never sent to this viewer.)
async fn subscribe_then_read<T>(
    subscribe: impl FnOnce() -> watch::Receiver<Snapshot>,
    read: impl Future<Output = T>,
) -> (watch::Receiver<Snapshot>, T) {
    let rx = subscribe();
    let first = read.await;
    (rx, first)
}

/// The numbers of the apps `principal` may view, each time they differ from what
/// this viewer was sent last (`first`, to begin with).
fn viewer_updates(
    rx: watch::Receiver<Snapshot>,
    first: BTreeMap<String, Numbers>,
    authz: Authorizer,
    principal: Principal,
) -> impl futures::Stream<Item = BTreeMap<String, Numbers>> {
    futures::stream::unfold(
        (rx, first, authz, principal),
        |(mut rx, mut last, authz, principal)| async move {
            loop {
                rx.changed().await.ok()?;
                let all = rx.borrow_and_update().clone();
                let mine = filtered(&all, &authz, &principal);
                if mine != last {
                    last = mine.clone();
                    return Some((mine, (rx, last, authz, principal)));
                }
            }
        },
    )
}

/// `GET /ui/apps.js`.
async fn apps_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        APPS_JS,
    )
        .into_response()
}

/// `GET /ui/apps.css`.
async fn apps_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        APPS_CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_security::Acls;

    use super::*;
    use crate::app::spec::AppSpec;
    use crate::app::view::DeploymentView;

    /// An app view as the engine would show it, its spec not validated (so that an id
    /// the spec would refuse can be shown).
    fn view(id: &str, labels: serde_json::Value) -> AppView {
        let spec: AppSpec =
            serde_json::from_value(json!({"id": id, "cmd": "sleep 1000", "labels": labels}))
                .unwrap();
        AppView {
            id: id.into(),
            spec,
            version: "2026-12-07T18:00:00Z".into(),
            instances: 2,
            tasks_staged: 0,
            tasks_running: 1,
            tasks_healthy: 1,
            tasks_unhealthy: 0,
            tasks_old_version: 0,
            deployment: Some(DeploymentView {
                id: "d1".into(),
                app_id: id.into(),
                kind: "scale".into(),
                version: "v".into(),
                started_at: "2026-12-07T18:00:00Z".into(),
                target_instances: 2,
                ready_instances: 1,
                waiting: "no offer fits: needs cpus 64 <i>".into(),
                cause: None,
            }),
            last_failure: None,
            backoff_seconds: None,
            ports: vec![],
            endpoints: vec![],
            objects: Default::default(),
            version_cause: None,
            residents: vec![],
        }
    }

    /// `dev` may view the `web*` apps only; `ops` every app.
    fn authz() -> Authorizer {
        Authorizer::new(
            Acls::parse(
                r#"{"permissive": false,
                    "view_apps": [
                      {"principals": {"values": ["ops"]}, "apps": {"type": "ANY"}},
                      {"principals": {"values": ["dev"]}, "apps": {"values": ["web-1", "web-2"]}}
                    ]}"#,
            )
            .unwrap(),
        )
    }

    #[test]
    fn user_text_is_escaped() {
        let a = view("<b>x</b>", json!({"team": "<b>ops</b>", "<b>k": "v"}));
        let n = Numbers::of(&a);
        let html = apps_body(std::slice::from_ref(&a));
        let page = app_body(&a, &[], "http://127.0.0.1:5050");
        let deploy = deploy_body(Some(&a.id), "id: <b>x</b>\n");
        for text in [&html, &page, &deploy] {
            assert!(!text.contains("<b>"), "unescaped: {text}");
            assert!(!text.contains("<i>"), "unescaped: {text}");
            assert!(text.contains("&lt;b&gt;x&lt;/b&gt;"), "{text}");
        }
        assert!(html.contains("&lt;b&gt;ops&lt;/b&gt;"), "the label: {html}");
        assert!(
            html.contains("needs cpus 64 &lt;i&gt;"),
            "the waiting reason: {html}"
        );
        assert_eq!(n.deployment, "scale 1/2");
        // The waiting reason is shown, not hidden.
        assert!(html.contains("class=\"waiting\" id=\"waiting-&lt;b&gt;x&lt;/b&gt;\">"));
    }

    #[test]
    fn the_apps_page_shows_only_the_apps_the_caller_may_view() {
        let apps: Vec<AppView> = ["web-1", "web-2", "db-1"]
            .iter()
            .map(|id| view(id, json!({})))
            .collect();
        let authz = authz();
        let ids = |p: &Principal| {
            visible(&authz, p, apps.clone())
                .iter()
                .map(|a| a.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&Principal::User("ops".into())),
            ["web-1", "web-2", "db-1"]
        );
        assert_eq!(ids(&Principal::User("dev".into())), ["web-1", "web-2"]);
        assert!(ids(&Principal::User("eve".into())).is_empty());
        assert!(ids(&Principal::Anonymous).is_empty());
        let page = apps_body(&visible(
            &authz,
            &Principal::User("dev".into()),
            apps.clone(),
        ));
        assert!(page.contains("data-app-id=\"web-1\"") && page.contains("data-app-id=\"web-2\""));
        assert!(!page.contains("db-1"), "{page}");
        let empty = apps_body(&[]);
        assert!(empty.contains("No apps you may see"));
    }

    #[test]
    fn the_event_feed_is_filtered_per_viewer() {
        let apps: Vec<AppView> = ["web-1", "db-1"]
            .iter()
            .map(|id| view(id, json!({})))
            .collect();
        let all = snapshot(&apps);
        let authz = authz();
        let dev = filtered(&all, &authz, &Principal::User("dev".into()));
        assert_eq!(dev.keys().collect::<Vec<_>>(), ["web-1"]);
        let json = serde_json::to_value(&dev).unwrap();
        assert_eq!(
            json,
            json!({"web-1": {"running": 1, "healthy": 1, "desired": 2, "staged": 0,
                "version": "2026-12-07T18:00:00Z", "deployment": "scale 1/2",
                "waiting": "no offer fits: needs cpus 64 <i>"}})
        );
        assert_eq!(
            filtered(&all, &authz, &Principal::User("ops".into())).len(),
            2
        );
        assert!(filtered(&all, &authz, &Principal::User("eve".into())).is_empty());
    }

    /// A change the feed publishes while a new viewer's first numbers are read is
    /// sent to that viewer (the page does not stay at `update 1/2`).
    #[tokio::test]
    async fn a_change_published_while_a_viewer_connects_is_sent_to_it() {
        use futures::StreamExt as _;

        let mut app = view("web-1", json!({}));
        let before = snapshot(std::slice::from_ref(&app));
        let (tx, _) = watch::channel(Arc::new(before.clone()));
        app.tasks_running = 2;
        app.deployment.as_mut().unwrap().ready_instances = 2;
        let after = snapshot(std::slice::from_ref(&app));
        // The read sees the numbers before the change; the feed publishes the change
        // before the read is answered.
        let read = async {
            tx.send_replace(Arc::new(after.clone()));
            before.clone()
        };
        let (rx, first) = subscribe_then_read(|| tx.subscribe(), read).await;
        assert_eq!(first["web-1"].deployment, "scale 1/2");
        let ops = Principal::User("ops".into());
        let mut updates = Box::pin(viewer_updates(rx, first, authz(), ops));
        let next = tokio::time::timeout(Duration::from_secs(5), updates.next())
            .await
            .expect("the change is sent")
            .expect("an update");
        assert_eq!(next["web-1"].deployment, "scale 2/2");
        assert_eq!(next["web-1"].running, 2);
        // The same numbers again are not sent.
        tx.send_replace(Arc::new(after.clone()));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), updates.next())
                .await
                .is_err()
        );
    }

    #[test]
    fn task_ids_link_to_the_masters_dashboard() {
        assert_eq!(
            master_base("https", "10.0.0.1:5050"),
            "https://10.0.0.1:5050"
        );
        assert_eq!(master_base("https", "http://m:5050/"), "http://m:5050");
        let task = AppTaskView {
            id: "web.1".into(),
            app_id: "web".into(),
            version: "v".into(),
            agent_id: "a".into(),
            hostname: "agent0.test".into(),
            agent_address: "a:5051".into(),
            state: "TASK_RUNNING".into(),
            healthy: Some(true),
            ports: vec![31000],
            staged_at: "2026-12-07T18:00:00Z".into(),
            started_at: Some("2026-12-07T18:00:01Z".into()),
            message: String::new(),
        };
        let mut html = String::new();
        tasks_table(&mut html, &[task], "http://m:5050");
        assert!(
            html.contains("href=\"http://m:5050/ui/tasks/web.1\""),
            "{html}"
        );
        assert!(html.contains(&format!("data-unix=\"{}\"", unix("2026-12-07T18:00:01Z"))));
        assert!(unix("2026-12-07T18:00:01Z") > 1_700_000_000);
    }

    /// The router on a real framework (no master) and a listener, behind credentials
    /// and the ACLs of [`authz`]: a browser without a credential is asked for Basic;
    /// `dev` sees web-1 only, on the page and in the event feed; `eve` nothing.
    #[tokio::test]
    async fn pages_and_events_are_authenticated_and_filtered_by_view_apps() {
        use crate::app::engine::{Engine, Persisted};
        use crate::app::service::{AppCall, Framework};
        use crate::app::store::StateStore;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let (framework, handle) = Framework::new(
            Engine::default(),
            store,
            Persisted::default(),
            "127.0.0.1:5050".into(),
            Duration::from_secs(1),
        );
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(framework.run(None, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        for id in ["web-1", "db-1"] {
            let spec =
                AppSpec::from_json(json!({"id": id, "cmd": "sleep 1", "cpus": 0.1})).unwrap();
            handle
                .call(AppCall::Deploy {
                    spec: Box::new(spec),
                    create_only: true,
                })
                .await
                .unwrap();
        }
        let users = [
            ("ops", "the-operators-secret-0123"),
            ("dev", "the-developers-secret-0123"),
            ("eve", "somebody-elses-secret-0123"),
        ];
        let entries: Vec<serde_json::Value> = users
            .iter()
            .map(|(p, s)| json!({"principal": p, "secret": s}))
            .collect();
        let credentials = strata_security::Credentials::parse(
            &json!({ "credentials": entries }).to_string(),
            "test",
        )
        .unwrap();
        let authn = Authenticator::new(credentials, &["/ping"]);
        let app = router(handle.clone(), authn, authz());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let get = |who: Option<&str>, path: &str| {
            let mut request = client.get(format!("{base}{path}"));
            if let Some(who) = who {
                let (_, secret) = users.iter().find(|(p, _)| *p == who).unwrap();
                request = request.basic_auth(who, Some(secret));
            }
            request.send()
        };

        for path in [
            "/",
            "/ui/apps/web-1",
            "/ui/deploy",
            "/ui/events",
            "/ui/apps.js",
            "/ui/app.css",
            "/favicon.ico",
        ] {
            let r = get(None, path).await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"strata\"",
                "{path}"
            );
        }
        let r = get(Some("dev"), "/").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        let page = r.text().await.unwrap();
        assert!(page.contains("data-app-id=\"web-1\""), "{page}");
        assert!(!page.contains("db-1"), "{page}");
        let page = get(Some("ops"), "/").await.unwrap().text().await.unwrap();
        assert!(page.contains("data-app-id=\"web-1\"") && page.contains("data-app-id=\"db-1\""));
        assert_eq!(
            get(Some("dev"), "/ui/apps/db-1").await.unwrap().status(),
            403
        );
        assert_eq!(
            get(Some("dev"), "/ui/deploy?app=db-1")
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(
            get(Some("dev"), "/ui/apps/web-1").await.unwrap().status(),
            200
        );
        assert_eq!(
            get(Some("ops"), "/ui/apps/nope").await.unwrap().status(),
            404
        );

        // The feed: `overview` then `apps` with what the viewer may see.
        let first_events = |who: &'static str| {
            let r = get(Some(who), "/ui/events");
            async move {
                let r = r.await.unwrap();
                assert_eq!(r.status(), 200);
                let mut r = r;
                let mut text = String::new();
                while text.matches("\n\n").count() < 2 {
                    let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
                        .await
                        .expect("an event within 10 s")
                        .unwrap()
                        .expect("the stream goes on");
                    text.push_str(&String::from_utf8_lossy(&chunk));
                }
                text
            }
        };
        let dev = first_events("dev").await;
        assert!(dev.starts_with("event: overview\ndata: {}\n\n"), "{dev}");
        assert!(dev.contains("event: apps\ndata: {\"web-1\":"), "{dev}");
        assert!(!dev.contains("db-1"), "{dev}");
        let eve = first_events("eve").await;
        assert!(eve.contains("event: apps\ndata: {}\n"), "{eve}");
        let ops = first_events("ops").await;
        assert!(ops.contains("db-1") && ops.contains("web-1"), "{ops}");

        let _ = stop.send(true);
        task.await.unwrap();
    }

    #[test]
    fn the_assets_hold_no_remote_reference() {
        for text in [APPS_JS, APPS_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
