//! The dashboard the master serves on its own port (issue 18): server-rendered HTML
//! pages with a little JavaScript, its assets embedded in the binary, behind the same
//! authentication layer and authorizer as every other endpoint.
//!
//! ```text
//!   GET /                the overview: agents, frameworks, tasks, offers, capacity;
//!                        the first agents
//!   GET /ui/agents?page= every agent, PAGE_SIZE a page, with capacity and use
//!   GET /ui/frameworks   the frameworks the caller may view, and the roles
//!   GET /ui/tasks?state=&framework=&agent=&app=&page=
//!                        the tasks the caller may view, filtered and paged by the
//!                        master (`view_tasks` asked before paging)
//!   GET /ui/tasks/{id}   a task: status history, health, its sandbox browsed and
//!                        its output tailed through the master ([`task`])
//!   GET /ui/events       server-sent events: `overview` (the numbers of `/`) once a
//!                        second while they change; one feed shared by every page open
//!   GET /ui/app.css, /ui/app.js, /ui/favicon.svg (also /favicon.ico)
//! ```
//!
//! Pages are built from the driver's metrics (one pass, no copy of the state) and one
//! page of agents ([`DriverHandle::agents_page`]), never from a whole `/state`
//! snapshot, so that they stay cheap with 10,000 agents. Every page carries a
//! Content-Security-Policy of `default-src 'self'` (no inline script or style: bars
//! are `<meter>`s), and refuses to be framed. Times are `<time data-unix>`, shown in
//! the viewer's zone by app.js.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::core::{AgentView, Metrics};
use crate::driver::DriverHandle;

mod task;
pub use task::{Relay, browse as task_browse, read as task_read, task_page};

/// Agents on one page of `/ui/agents` (and on the overview).
pub const PAGE_SIZE: usize = 50;
/// How often the live feed looks at the numbers (it sends only changes).
const FEED_INTERVAL: Duration = Duration::from_secs(1);

const CSS: &str = include_str!("ui/app.css");
const JS: &str = include_str!("ui/app.js");
const ICON: &str = include_str!("ui/favicon.svg");

/// A live feed every open page shares: a value refreshed by one task (started by the
/// first page that listens) every [`FEED_INTERVAL`] while anyone listens, and sent only
/// when it changed: one pass over the state a second, whatever the number of pages.
/// The master's overview numbers (JSON); the apps dashboard's numbers too.
pub struct Feed<T> {
    tx: watch::Sender<T>,
    started: Arc<OnceLock<()>>,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Feed<T> {
        Feed {
            tx: self.tx.clone(),
            started: self.started.clone(),
        }
    }
}

impl<T: PartialEq + Send + Sync + 'static> Feed<T> {
    pub fn new(initial: T) -> Feed<T> {
        Feed {
            tx: watch::channel(initial).0,
            started: Arc::new(OnceLock::new()),
        }
    }

    /// A receiver of the feed. The first call starts the task that fills it with what
    /// `next` answers (later calls' `next` is dropped); it ends when `next` answers
    /// `None` (its source is stopping). Subscribe before reading a page's first
    /// value, so that a change between the two is not lost.
    pub fn subscribe<F, Fut>(&self, next: F) -> watch::Receiver<T>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<T>> + Send + 'static,
    {
        self.started.get_or_init(|| {
            let tx = self.tx.clone();
            let mut next = next;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FEED_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.receiver_count() == 0 {
                        continue;
                    }
                    let Some(new) = next().await else {
                        return;
                    };
                    tx.send_if_modified(|old| {
                        if *old == new {
                            false
                        } else {
                            *old = new;
                            true
                        }
                    });
                }
            });
        });
        self.tx.subscribe()
    }
}

/// The master's feed: the overview's numbers as JSON.
pub type OverviewFeed = Feed<String>;

impl Default for OverviewFeed {
    fn default() -> OverviewFeed {
        Feed::new(String::new())
    }
}

/// The overview's numbers as the feed and the `overview` events send them.
fn overview_json(m: &Metrics) -> String {
    serde_json::to_string(&Numbers::of(m)).unwrap_or_default()
}

/// The overview's numbers, by the ids of their elements (`_` for `-`).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Numbers {
    agents_active: u64,
    agents_total: u64,
    agents_disconnected: u64,
    agents_unreachable: u64,
    agents_maintenance: u64,
    frameworks_connected: u64,
    frameworks_disconnected: u64,
    tasks_running: u64,
    tasks_staging: u64,
    tasks_failed: u64,
    offers_outstanding: u64,
    allocation_ms: String,
    cpus_used: String,
    cpus_total: String,
    mem_used: String,
    mem_total: String,
    disk_used: String,
    disk_total: String,
    tasks_finished: u64,
    tasks_killed: u64,
    tasks_lost: u64,
}

impl Numbers {
    fn of(m: &Metrics) -> Numbers {
        Numbers {
            agents_active: m.agents_active,
            agents_total: m.agents_active + m.agents_disconnected + m.agents_unreachable,
            agents_disconnected: m.agents_disconnected,
            agents_unreachable: m.agents_unreachable,
            agents_maintenance: m.agents_in_maintenance,
            frameworks_connected: m.frameworks_connected,
            frameworks_disconnected: m.frameworks_disconnected,
            tasks_running: m.tasks_running,
            tasks_staging: m.tasks_staging,
            tasks_failed: m.tasks_failed_total,
            offers_outstanding: m.outstanding_offers,
            allocation_ms: format!("{:.1}", m.allocation_run_ms),
            cpus_used: number(m.cpus_used),
            cpus_total: number(m.cpus_total),
            mem_used: mib(m.mem_used),
            mem_total: mib(m.mem_total),
            disk_used: mib(m.disk_used),
            disk_total: mib(m.disk_total),
            tasks_finished: m.tasks_finished_total,
            tasks_killed: m.tasks_killed_total,
            tasks_lost: m.tasks_lost_total,
        }
    }
}

/// `2`, `0.5`: at most three decimals, no trailing zeros.
pub fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// MiB as people read them: `512 MiB`, `1.5 GiB`.
pub fn mib(v: f64) -> String {
    if v >= 1024.0 {
        format!("{} GiB", number(v / 1024.0))
    } else {
        format!("{} MiB", number(v))
    }
}

/// Text made safe for a URL's path segment or query value (then for HTML: the result
/// has no character HTML treats specially).
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Text made safe for HTML, in elements and attribute values alike.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The master's navigation: (href, name).
const NAV: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/ui/agents", "Agents"),
    ("/ui/frameworks", "Frameworks"),
    ("/ui/tasks", "Tasks"),
];

/// A whole page of the master's dashboard.
fn page(title: &str, current: &str, body: &str) -> Response {
    shell(title, &NAV, current, &[], body)
}

/// A whole page: the header with `nav` (`current` marked) and the live indicator,
/// `body`; the shared stylesheet and script (`/ui/app.css`, `/ui/app.js`, served by
/// [`css`] and [`js`]) and `scripts` after them. Also the container framework's
/// dashboard (`strata serve`), with its own navigation and script.
pub fn shell(
    title: &str,
    nav: &[(&str, &str)],
    current: &str,
    scripts: &[&str],
    body: &str,
) -> Response {
    let scripts: String = scripts
        .iter()
        .map(|src| format!("<script src=\"{}\" defer></script>", esc(src)))
        .collect();
    let nav = nav
        .iter()
        .map(|(href, name)| {
            let here = if *href == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{here}>{name}</a>")
        })
        .collect::<Vec<_>>()
        .join("");
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Strata</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
<link rel=\"icon\" href=\"/ui/favicon.svg\" type=\"image/svg+xml\">\
<script src=\"/ui/app.js\" defer></script>{scripts}</head><body>\
<header><span class=\"brand\">Strata</span><nav>{nav}</nav>\
<span id=\"live\" class=\"offline\" role=\"status\">connecting</span></header>\
<main><p id=\"message\" role=\"alert\" hidden></p>{body}</main></body></html>",
        title = esc(title),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the master is stopping\n".to_string(),
    )
        .into_response()
}

/// One labelled number of the overview, its element id from its name.
fn stat(out: &mut String, label: &str, id: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "<div class=\"stat\"><span class=\"label\">{label}</span><span class=\"value\" id=\"{id}\">{value}</span></div>"
    );
}

/// One resource's use of the total on the overview: `{id}-used` of `{id}-total` (the
/// shown texts) and a bar of the raw amounts.
fn capacity(
    out: &mut String,
    label: &str,
    id: &str,
    shown: (&str, &str),
    (used, total): (f64, f64),
) {
    let _ = write!(
        out,
        "<div class=\"stat wide\"><span class=\"label\">{label} used</span><span class=\"value\">\
<span id=\"{id}-used\">{}</span> of <span id=\"{id}-total\">{}</span></span>\
<meter min=\"0\" max=\"{total}\" value=\"{used}\"></meter></div>",
        shown.0, shown.1
    );
}

/// `GET /`.
pub async fn overview(State(driver): State<DriverHandle>) -> Response {
    let (Ok(m), Ok((total, agents))) = (
        driver.metrics().await,
        driver.agents_page(0, PAGE_SIZE).await,
    ) else {
        return unavailable();
    };
    let n = Numbers::of(&m);
    let mut body = String::from("<h1>Cluster</h1><section class=\"stats\" aria-label=\"Totals\">");
    stat(&mut body, "Agents active", "agents-active", n.agents_active);
    stat(&mut body, "Agents", "agents-total", n.agents_total);
    stat(
        &mut body,
        "Disconnected",
        "agents-disconnected",
        n.agents_disconnected,
    );
    stat(
        &mut body,
        "Unreachable",
        "agents-unreachable",
        n.agents_unreachable,
    );
    stat(
        &mut body,
        "In maintenance",
        "agents-maintenance",
        n.agents_maintenance,
    );
    stat(
        &mut body,
        "Frameworks",
        "frameworks-connected",
        n.frameworks_connected,
    );
    stat(&mut body, "Tasks running", "tasks-running", n.tasks_running);
    stat(&mut body, "Tasks staging", "tasks-staging", n.tasks_staging);
    stat(
        &mut body,
        "Tasks finished",
        "tasks-finished",
        n.tasks_finished,
    );
    stat(&mut body, "Tasks failed", "tasks-failed", n.tasks_failed);
    stat(&mut body, "Tasks killed", "tasks-killed", n.tasks_killed);
    stat(&mut body, "Tasks lost", "tasks-lost", n.tasks_lost);
    stat(
        &mut body,
        "Offers out",
        "offers-outstanding",
        n.offers_outstanding,
    );
    stat(
        &mut body,
        "Allocation (ms)",
        "allocation-ms",
        &n.allocation_ms,
    );
    body.push_str("</section><section class=\"stats\" aria-label=\"Capacity\">");
    capacity(
        &mut body,
        "CPUs",
        "cpus",
        (&n.cpus_used, &n.cpus_total),
        (m.cpus_used, m.cpus_total),
    );
    capacity(
        &mut body,
        "Memory",
        "mem",
        (&n.mem_used, &n.mem_total),
        (m.mem_used, m.mem_total),
    );
    capacity(
        &mut body,
        "Disk",
        "disk",
        (&n.disk_used, &n.disk_total),
        (m.disk_used, m.disk_total),
    );
    body.push_str("</section>");
    let _ = write!(body, "<h2>Agents</h2>");
    agents_table(&mut body, &agents, 1);
    if total > agents.len() {
        let _ = write!(
            body,
            "<p><a href=\"/ui/agents?page=2\">All {total} agents</a></p>"
        );
    }
    page("Cluster", "/", &body)
}

/// `?page=N` (from 1).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// `GET /ui/agents?page=N`: a page past the last shows the last.
pub async fn agents(State(driver): State<DriverHandle>, Query(q): Query<PageQuery>) -> Response {
    let mut n = q.page.unwrap_or(1).max(1);
    let Ok((total, mut agents)) = driver.agents_page((n - 1) * PAGE_SIZE, PAGE_SIZE).await else {
        return unavailable();
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    if n > pages {
        // Past the last page (agents went away, or a hand-written URL): the last one.
        n = pages;
        let Ok((_, last)) = driver.agents_page((n - 1) * PAGE_SIZE, PAGE_SIZE).await else {
            return unavailable();
        };
        agents = last;
    }
    let mut body = format!("<h1>Agents</h1><p class=\"muted\">{total} agent(s)</p>");
    agents_table(&mut body, &agents, n);
    let _ = write!(body, "<nav class=\"pages\" aria-label=\"Pages\">");
    if n > 1 {
        let _ = write!(
            body,
            "<a href=\"/ui/agents?page={}\" rel=\"prev\">previous</a>",
            n - 1
        );
    }
    let _ = write!(body, "<span id=\"page\">page {n} of {pages}</span>");
    if n < pages {
        let _ = write!(
            body,
            "<a href=\"/ui/agents?page={}\" rel=\"next\">next</a>",
            n + 1
        );
    }
    body.push_str("</nav>");
    page("Agents", "/ui/agents", &body)
}

/// `GET /ui/agents/rows?page=N`: the rows of that page of the agents table, which
/// app.js puts in place when the live feed says something changed.
pub async fn agent_rows(
    State(driver): State<DriverHandle>,
    Query(q): Query<PageQuery>,
) -> Response {
    let n = q.page.unwrap_or(1).max(1);
    let Ok((_, agents)) = driver.agents_page((n - 1) * PAGE_SIZE, PAGE_SIZE).await else {
        return unavailable();
    };
    let mut rows = String::new();
    agent_rows_html(&mut rows, &agents);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        rows,
    )
        .into_response()
}

/// The agents as a table: hostname, state, cpus and memory used of their total (bars),
/// attributes, when they registered, maintenance buttons. `page` is the page it
/// shows (app.js refreshes its rows from `/ui/agents/rows?page=`).
fn agents_table(out: &mut String, agents: &[AgentView], page: usize) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"agents\" data-page=\"{page}\"><thead><tr><th scope=\"col\">Host</th>\
<th scope=\"col\">State</th><th scope=\"col\">CPUs</th><th scope=\"col\">Memory</th>\
<th scope=\"col\">Disk</th><th scope=\"col\">Attributes</th><th scope=\"col\">Registered</th>\
<th scope=\"col\">Actions</th></tr></thead><tbody>",
    );
    agent_rows_html(out, agents);
    out.push_str("</tbody></table></div>");
}

/// The `<tr>`s of `agents`.
fn agent_rows_html(out: &mut String, agents: &[AgentView]) {
    for a in agents {
        let state = match a.maintenance {
            Some(m) => format!("{} ({})", a.status, m),
            None => a.status.clone(),
        };
        let (cu, ct) = (a.used.cpus().as_f64(), a.total.cpus().as_f64());
        let (mu, mt) = (a.used.mem().as_f64(), a.total.mem().as_f64());
        let (du, dt) = (a.used.disk().as_f64(), a.total.disk().as_f64());
        let volumes = match a.volumes.len() {
            0 => String::new(),
            1 => "<br><span class=\"muted\">1 volume</span>".to_string(),
            n => format!("<br><span class=\"muted\">{n} volumes</span>"),
        };
        let attributes = a
            .attributes
            .iter()
            .map(|(k, v)| format!("{}:{}", esc(k), esc(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            out,
            "<tr data-agent-id=\"{id}\"><td><span class=\"host\">{host}</span><br><span class=\"muted id\">{id}</span></td>\
<td class=\"state state-{state_class}\">{state}</td>\
<td>{cu} / {ct}<br><meter min=\"0\" max=\"{ct_raw}\" value=\"{cu_raw}\"></meter></td>\
<td>{mu} / {mt}<br><meter min=\"0\" max=\"{mt_raw}\" value=\"{mu_raw}\"></meter></td>\
<td>{du} / {dt}<br><meter min=\"0\" max=\"{dt_raw}\" value=\"{du_raw}\"></meter>{volumes}</td>\
<td>{attributes}</td><td><time data-unix=\"{registered}\"></time></td><td>{actions}</td></tr>",
            id = esc(&a.id),
            host = esc(&a.hostname),
            state_class = esc(&a.status.to_ascii_lowercase()),
            state = esc(&state),
            cu = number(cu),
            ct = number(ct),
            ct_raw = ct,
            cu_raw = cu,
            mu = mib(mu),
            mt = mib(mt),
            mt_raw = mt,
            mu_raw = mu,
            du = mib(du),
            dt = mib(dt),
            dt_raw = dt,
            du_raw = du,
            registered = a.registered_time,
            actions = agent_actions(a),
        );
    }
    if agents.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No agents yet.</td></tr>");
    }
}

/// The maintenance buttons of an agent: what `POST /maintenance/*` (the same calls as
/// `strata agent ...`, under the same ACLs) can do to it now. app.js sends them and
/// shows the answer, a refusal's reason included.
fn agent_actions(a: &AgentView) -> String {
    if a.status == "GONE" {
        return String::new();
    }
    let actions: &[(&str, &str)] = match a.maintenance {
        None => &[("deactivate", "Deactivate"), ("drain", "Drain")],
        Some(_) => &[("reactivate", "Reactivate")],
    };
    actions
        .iter()
        .map(|(action, label)| {
            format!(
                "<button type=\"button\" class=\"action\" data-action=\"{action}\" data-agent-id=\"{}\">{label}</button>",
                esc(&a.id)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET /ui/frameworks`: the frameworks the caller may view (role, DRF share,
/// tasks, connection, failover timeout) and the roles (weight, allocation).
pub async fn frameworks(
    State(driver): State<DriverHandle>,
    State(authz): State<strata_security::Authorizer>,
    axum::Extension(principal): axum::Extension<strata_security::Principal>,
) -> Response {
    let (Ok((frameworks, roles)), Ok(m)) =
        (driver.frameworks_and_roles().await, driver.metrics().await)
    else {
        return unavailable();
    };
    // The same filter as /state: frameworks of principals the caller may view.
    let visible = crate::authorize::visible(
        &authz,
        &principal,
        crate::core::StateSnapshot {
            master_id: String::new(),
            agents: Vec::new(),
            frameworks,
            tasks: Vec::new(),
            roles,
            outstanding_offers: 0,
        },
    );
    let total = strata_proto::Resources::cpus_mem(m.cpus_total, m.mem_total);
    let mut body = format!(
        "<h1>Frameworks</h1><p class=\"muted\">{} framework(s)</p>",
        visible.frameworks.len()
    );
    body.push_str(
        "<div class=\"scroll\"><table id=\"frameworks\"><thead><tr><th scope=\"col\">Name</th>\
<th scope=\"col\">Roles</th><th scope=\"col\">Principal</th><th scope=\"col\">Connected</th>\
<th scope=\"col\">DRF share</th><th scope=\"col\">Tasks</th><th scope=\"col\">CPUs</th>\
<th scope=\"col\">Memory</th><th scope=\"col\">Failover timeout</th></tr></thead><tbody>",
    );
    let mut list = visible.frameworks;
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for f in &list {
        let suppressed = if f.suppressed_roles.is_empty() {
            String::new()
        } else {
            format!(" (suppressed: {})", esc(&f.suppressed_roles.join(", ")))
        };
        let _ = write!(
            body,
            "<tr data-framework-id=\"{id}\"><td>{name}<br><span class=\"muted id\">{id}</span></td>\
<td>{roles}{suppressed}</td><td>{principal}</td><td class=\"{cls}\">{connected}</td>\
<td>{share:.1}%</td><td>{tasks}</td><td>{cpus}</td><td>{mem}</td><td>{failover}</td></tr>",
            id = esc(&f.id),
            name = esc(&f.name),
            roles = esc(&f.roles.join(", ")),
            principal = esc(&f.principal),
            cls = if f.connected {
                "state-active"
            } else {
                "state-disconnected"
            },
            connected = if f.connected { "yes" } else { "no" },
            share = f.used.dominant_share(&total) * 100.0,
            tasks = f.task_count,
            cpus = number(f.used.cpus().as_f64()),
            mem = mib(f.used.mem().as_f64()),
            failover = seconds(f.failover_timeout_seconds),
        );
    }
    if list.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">No frameworks you may see.</td></tr>");
    }
    body.push_str("</tbody></table></div><h2>Roles</h2>");
    body.push_str(
        "<div class=\"scroll\"><table id=\"roles\"><thead><tr><th scope=\"col\">Role</th>\
<th scope=\"col\">Weight</th><th scope=\"col\">Allocated</th><th scope=\"col\">Frameworks</th>\
</tr></thead><tbody>",
    );
    for r in &visible.roles {
        let _ = write!(
            body,
            "<tr data-role=\"{name}\"><td>{name}</td><td><form class=\"weight\" data-role=\"{name}\">\
<input type=\"number\" name=\"weight\" min=\"0\" step=\"any\" required value=\"{weight}\" aria-label=\"Weight of role {name}\">\
<button type=\"submit\" class=\"set-weight\">Set</button></form></td><td>{allocated}</td><td>{n}</td></tr>",
            name = esc(&r.name),
            weight = number(r.weight),
            allocated = esc(&r.allocated.to_string()),
            n = r.frameworks.len(),
        );
    }
    body.push_str("</tbody></table></div>");
    page("Frameworks", "/ui/frameworks", &body)
}

/// `GET /ui/tasks`'s query: filters (empty: any) and the page.
#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    framework: String,
    #[serde(default)]
    agent: String,
    /// The task's name: the container framework names its tasks after their app.
    #[serde(default)]
    app: String,
    #[serde(default)]
    page: Option<usize>,
}

/// The task states a filter offers.
const STATES: [&str; 9] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_UNREACHABLE",
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
];

/// `GET /ui/tasks`: the tasks the caller may view, PAGE_SIZE a page, filtered by
/// state, framework and agent on the master.
pub async fn tasks(
    State(driver): State<DriverHandle>,
    State(authz): State<strata_security::Authorizer>,
    axum::Extension(principal): axum::Extension<strata_security::Principal>,
    Query(q): Query<TasksQuery>,
) -> Response {
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let filter = crate::core::TaskFilter {
        state: nonempty(&q.state),
        framework_id: nonempty(&q.framework),
        agent_id: nonempty(&q.agent),
        name: nonempty(&q.app),
    };
    let n = q.page.unwrap_or(1).max(1);
    let Ok((total, tasks)) = driver
        .tasks_page(
            filter.clone(),
            authz,
            principal,
            (n - 1) * PAGE_SIZE,
            PAGE_SIZE,
        )
        .await
    else {
        return unavailable();
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let mut body =
        String::from("<h1>Tasks</h1><form class=\"filters\" method=\"get\" action=\"/ui/tasks\">");
    let _ = write!(
        body,
        "<label>State <select name=\"state\"><option value=\"\">any</option>{}</select></label>",
        STATES
            .iter()
            .map(|s| {
                let selected = if filter.state.as_deref() == Some(*s) {
                    " selected"
                } else {
                    ""
                };
                format!("<option{selected}>{s}</option>")
            })
            .collect::<String>()
    );
    let _ = write!(
        body,
        "<label>Framework <input name=\"framework\" value=\"{}\" placeholder=\"framework id\"></label>\
<label>Agent <input name=\"agent\" value=\"{}\" placeholder=\"agent id\"></label>\
<label>App <input name=\"app\" value=\"{}\" placeholder=\"app id (task name)\"></label>\
<button type=\"submit\">Filter</button></form><p class=\"muted\" id=\"task-count\">{total} task(s)</p>",
        esc(&q.framework),
        esc(&q.agent),
        esc(&q.app),
    );
    body.push_str(
        "<div class=\"scroll\"><table id=\"tasks\"><thead><tr><th scope=\"col\">Task</th>\
<th scope=\"col\">State</th><th scope=\"col\">Framework</th><th scope=\"col\">Agent</th>\
<th scope=\"col\">Resources</th><th scope=\"col\">Updated</th></tr></thead><tbody>",
    );
    for t in &tasks {
        let health = match t.healthy {
            Some(true) => " (healthy)",
            Some(false) => " (unhealthy)",
            None => "",
        };
        let _ = write!(
            body,
            "<tr data-task-id=\"{id}\"><td><a href=\"/ui/tasks/{id_url}?framework={fw_url}\">{id}</a><br>\
<a class=\"muted\" href=\"/ui/tasks?app={name_url}\">{name}</a></td>\
<td class=\"state state-{cls}\">{state}{health}<br><span class=\"muted\">{message}</span></td>\
<td><a href=\"/ui/tasks?framework={fw_url}\">{fw}</a></td><td><a href=\"/ui/tasks?agent={agent_url}\">{agent}</a></td>\
<td>{resources}</td><td><time data-unix=\"{updated}\"></time></td></tr>",
            id = esc(&t.id),
            id_url = url(&t.id),
            fw_url = url(&t.framework_id),
            agent_url = url(&t.agent_id),
            name_url = url(&t.name),
            name = esc(&t.name),
            cls = esc(&t.state.trim_start_matches("TASK_").to_ascii_lowercase()),
            state = esc(&t.state),
            message = esc(&t.message),
            fw = esc(&t.framework_id),
            agent = esc(&t.agent_id),
            resources = esc(&t.resources.to_string()),
            updated = t.updated,
        );
    }
    if tasks.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No tasks match.</td></tr>");
    }
    body.push_str("</tbody></table></div>");
    let query = |page: usize| {
        format!(
            "/ui/tasks?state={}&amp;framework={}&amp;agent={}&amp;app={}&amp;page={page}",
            url(&q.state),
            url(&q.framework),
            url(&q.agent),
            url(&q.app)
        )
    };
    let _ = write!(body, "<nav class=\"pages\" aria-label=\"Pages\">");
    if n > 1 {
        let _ = write!(
            body,
            "<a href=\"{}\" rel=\"prev\">previous</a>",
            query(n - 1)
        );
    }
    let _ = write!(body, "<span id=\"page\">page {n} of {pages}</span>");
    if n < pages {
        let _ = write!(body, "<a href=\"{}\" rel=\"next\">next</a>", query(n + 1));
    }
    body.push_str("</nav>");
    page("Tasks", "/ui/tasks", &body)
}

/// `90 s`, `1 h`, `7 d`: a duration as people say it.
fn seconds(s: f64) -> String {
    if s >= 86_400.0 && s % 86_400.0 == 0.0 {
        format!("{} d", s / 86_400.0)
    } else if s >= 3_600.0 && s % 3_600.0 == 0.0 {
        format!("{} h", s / 3_600.0)
    } else {
        format!("{} s", number(s))
    }
}

/// `GET /ui/events`: the overview's numbers as `overview` events, first at once and
/// then on each change.
pub async fn events(
    State(driver): State<DriverHandle>,
    State(feed): State<OverviewFeed>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = feed.subscribe({
        let driver = driver.clone();
        move || {
            let driver = driver.clone();
            // Err: the master is stopping.
            async move { driver.metrics().await.ok().map(|m| overview_json(&m)) }
        }
    });
    let first = driver.metrics().await.ok().map(|m| overview_json(&m));
    let stream = futures::stream::unfold((first, rx), |(first, mut rx)| async move {
        if let Some(json) = first {
            return Some((
                Ok(Event::default().event("overview").data(json)),
                (None, rx),
            ));
        }
        rx.changed().await.ok()?;
        let json = rx.borrow_and_update().clone();
        Some((
            Ok(Event::default().event("overview").data(json)),
            (None, rx),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /ui/app.css`.
pub async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

/// `GET /ui/favicon.svg` (and `/favicon.ico`, which browsers ask for by themselves).
pub async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        ICON,
    )
        .into_response()
}

/// `GET /ui/app.js`.
pub async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1.25), "1.25");
        assert_eq!(mib(512.0), "512 MiB");
        assert_eq!(mib(1536.0), "1.5 GiB");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(seconds(90.0), "90 s");
        assert_eq!(seconds(3600.0), "1 h");
        assert_eq!(seconds(7.0 * 86_400.0), "7 d");
        assert_eq!(seconds(0.5), "0.5 s");
    }

    #[test]
    fn the_assets_hold_no_remote_reference() {
        for text in [CSS, JS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // The icon's only URL is its XML namespace.
        assert_eq!(ICON.matches("http").count(), 1);
    }
}
