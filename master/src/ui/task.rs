//! The dashboard's task page: a task's facts, its status history and health, and its
//! sandbox, browsed and its output tailed live through the master.
//!
//! ```text
//!   GET /ui/tasks/{id}?framework=F        the page (a chooser when several
//!                                         frameworks have a task of that id)
//!   GET /ui/tasks/{id}/files/browse?framework=F&path=P
//!   GET /ui/tasks/{id}/files/read?framework=F&file=stdout|stderr&offset=N&length=M
//!   GET /ui/tasks/{id}/files/read?framework=F&path=P&offset=N&length=M
//!       the agent's /files/browse and /files/read, relayed as JSON
//! ```
//!
//! The relay asks the one authorizer first (`view_tasks`, then `access_sandboxes` on
//! the task's framework's principal: a refusal never reaches the agent), then calls
//! the task's agent, at the `host:port` it registered with, on those two paths only,
//! following no redirect, trusting only the cluster CA, with the master's own
//! certificate and the caller's name (`x-strata-on-behalf-of`): the agent honours that
//! header from the master only and asks the same ACLs about the caller, so the master
//! lends nobody its rights, and the caller's credential never leaves the master.
//! Answers are relayed up to [`RELAY_MAX_ANSWER`] bytes.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strata_security::principal::ON_BEHALF_OF;
use strata_security::{Action, Authorizer, ClientTls, Principal};

use super::{esc, page, unavailable, url};
use crate::core::TaskDetail;
use crate::driver::DriverHandle;

/// How long a relayed call to an agent may take.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);
/// The most a relayed read asks of an agent.
const RELAY_MAX_READ: u64 = 1024 * 1024;
/// The longest answer relayed: a read's JSON (text escaped, at worst 6 bytes a byte)
/// or a listing of the agent's most entries; more is cut off with a 502.
const RELAY_MAX_ANSWER: usize = 8 * 1024 * 1024;

/// The master's client of agents' HTTP APIs, for the relay.
#[derive(Clone)]
pub struct Relay {
    client: Result<reqwest::Client, String>,
    tls: bool,
}

impl Relay {
    /// A client trusting what `tls` trusts (the cluster CA), with no credential.
    pub fn new(tls: &ClientTls) -> Relay {
        // No redirects: the relay asks one agent one thing, and answers only that.
        let builder = reqwest::Client::builder()
            .timeout(RELAY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let client = tls
            .reqwest(builder)
            .map_err(|e| e.to_string())
            .and_then(|b| b.build().map_err(|e| e.to_string()));
        if let Err(e) = &client {
            tracing::error!(error = %e, "the dashboard cannot relay sandbox files");
        }
        Relay {
            client,
            tls: tls.is_tls(),
        }
    }
}

/// A JSON error answer, as the agent's own.
fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        axum::Json(serde_json::json!({ "error": error.into() })),
    )
        .into_response()
}

/// `?framework=` of the task page and the relay (empty: any framework).
#[derive(Debug, Default, Deserialize)]
pub struct TaskQuery {
    #[serde(default)]
    framework: String,
}

/// The relay's query: the framework and what the agent is asked.
#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    #[serde(default)]
    framework: String,
    path: Option<String>,
    file: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
}

async fn details(
    driver: &DriverHandle,
    authz: Authorizer,
    principal: Principal,
    id: &str,
    framework: &str,
) -> Result<Vec<TaskDetail>, Response> {
    let framework = (!framework.trim().is_empty()).then(|| framework.trim().to_string());
    driver
        .task_details(id.to_string(), framework, authz, principal)
        .await
        .map_err(|_| unavailable())
}

fn health(d: &TaskDetail) -> &'static str {
    match (d.task.health_checked, d.task.healthy) {
        (_, Some(true)) => "healthy",
        (_, Some(false)) => "unhealthy",
        (true, None) => "not checked yet",
        (false, None) => "no health check",
    }
}

fn state_class(state: &str) -> String {
    esc(&state.trim_start_matches("TASK_").to_ascii_lowercase())
}

/// `GET /ui/tasks/{id}`.
pub async fn task_page(
    State(driver): State<DriverHandle>,
    State(authz): State<Authorizer>,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<TaskQuery>,
) -> Response {
    let found = match details(&driver, authz, principal, &id, &q.framework).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let title = format!("Task {id}");
    let mut body = format!("<h1>Task <code>{}</code></h1>", esc(&id));
    let distinct: std::collections::BTreeSet<&str> =
        found.iter().map(|d| d.task.framework_id.as_str()).collect();
    match (found.first(), distinct.len()) {
        (None, _) => {
            let _ = write!(
                body,
                "<p id=\"not-found\">No task <code>{}</code> that you may view: it never ran, \
ended long ago, or its framework's tasks are not yours to see. <a href=\"/ui/tasks\">All tasks</a></p>",
                esc(&id)
            );
            let mut response = page(&title, "/ui/tasks", &body);
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        (Some(_), n) if n > 1 => {
            body.push_str("<p>Tasks of several frameworks have this id:</p><ul id=\"choices\">");
            for fw in distinct {
                let _ = write!(
                    body,
                    "<li><a href=\"/ui/tasks/{}?framework={}\">framework {}</a></li>",
                    url(&id),
                    url(fw),
                    esc(fw)
                );
            }
            body.push_str("</ul>");
        }
        (Some(d), _) => task_body(&mut body, d),
    }
    page(&title, "/ui/tasks", &body)
}

fn task_body(body: &mut String, d: &TaskDetail) {
    let t = &d.task;
    let _ = write!(
        body,
        "<p><span id=\"task-state\" class=\"state state-{cls}\">{state}</span> · \
<span id=\"task-health\">{health}</span>{ended}</p><dl class=\"facts\">",
        cls = state_class(&t.state),
        state = esc(&t.state),
        health = health(d),
        ended = if d.live {
            ""
        } else {
            " · <span class=\"muted\">completed</span>"
        },
    );
    let mut fact = |name: &str, value: String| {
        let _ = write!(body, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact("Name", esc(&t.name));
    fact(
        "Framework",
        format!(
            "<a href=\"/ui/tasks?framework={}\">{}</a>",
            url(&t.framework_id),
            esc(&t.framework_id)
        ),
    );
    let host = if d.hostname.is_empty() {
        "an agent the master no longer knows".to_string()
    } else {
        esc(&d.hostname)
    };
    fact(
        "Agent",
        format!(
            "{host} <a class=\"id\" href=\"/ui/tasks?agent={}\">{}</a>",
            url(&t.agent_id),
            esc(&t.agent_id)
        ),
    );
    fact("Resources", esc(&t.resources.to_string()));
    if !t.message.is_empty() || !t.reason.is_empty() {
        fact(
            "Last message",
            format!(
                "{} <span class=\"muted\">{}</span>",
                esc(&t.message),
                esc(&t.reason)
            ),
        );
    }
    if let Some(code) = t.exit_status {
        fact("Exit status", code.to_string());
    }
    if let Some(ports) = t.discovery.as_ref().and_then(|d| d.ports.as_ref()) {
        let list: Vec<String> = ports
            .ports
            .iter()
            .map(|p| format!("{} {}", esc(&p.name), p.number))
            .collect();
        if !list.is_empty() {
            fact("Ports", list.join(", "));
        }
    }
    if !t.objects.is_empty() {
        // References and versions only: a secret's value never reaches a page.
        let list: Vec<String> = t
            .objects
            .iter()
            .map(|r| {
                let kind = strata_proto::objects::kind_of(r.kind)
                    .map_or("object", strata_proto::objects::kind_name);
                let target = match &r.target {
                    Some(strata_proto::v1::object_ref::Target::File(path)) => {
                        format!(" → file {}", esc(path))
                    }
                    Some(strata_proto::v1::object_ref::Target::Env(var)) => {
                        format!(" → ${}", esc(var))
                    }
                    None => String::new(),
                };
                format!("{kind} {} v{}{target}", esc(&r.name), r.version)
            })
            .collect();
        fact("Configs and secrets", list.join("<br>"));
    }
    fact(
        "Updated",
        format!("<time data-unix=\"{}\"></time>", t.updated),
    );
    body.push_str(
        "</dl><h2>Status history</h2><div class=\"scroll\"><table id=\"history\"><thead><tr>\
<th scope=\"col\">Time</th><th scope=\"col\">State</th><th scope=\"col\">Health</th>\
<th scope=\"col\">Reason</th><th scope=\"col\">Message</th></tr></thead><tbody>",
    );
    for s in &d.statuses {
        let healthy = match s.healthy {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "",
        };
        let _ = write!(
            body,
            "<tr><td><time data-unix=\"{}\"></time></td><td class=\"state state-{}\">{}</td>\
<td>{healthy}</td><td>{}</td><td>{}</td></tr>",
            s.timestamp,
            state_class(&s.state),
            esc(&s.state),
            esc(&s.reason),
            esc(&s.message),
        );
    }
    let base = format!("/ui/tasks/{}/files", url(&t.id));
    let _ = write!(
        body,
        "</tbody></table></div>\
<h2>Output</h2><div class=\"tail-bar\" role=\"group\" aria-label=\"Output file\">\
<button type=\"button\" class=\"tail-file\" data-file=\"stdout\" aria-pressed=\"true\">stdout</button>\
<button type=\"button\" class=\"tail-file\" data-file=\"stderr\" aria-pressed=\"false\">stderr</button>\
<span id=\"tail-name\" class=\"muted\">stdout</span>\
<label><input type=\"checkbox\" id=\"follow\" checked> follow</label></div>\
<pre id=\"tail\" tabindex=\"0\" data-base=\"{base}\" data-framework=\"{fw}\"></pre>\
<p id=\"tail-error\" class=\"bad\" role=\"alert\" hidden></p>\
<h2>Sandbox</h2><p id=\"sandbox-path\" class=\"crumbs\"></p>\
<div class=\"scroll\"><table id=\"files\"><thead><tr><th scope=\"col\">Name</th>\
<th scope=\"col\">Size</th><th scope=\"col\">Mode</th><th scope=\"col\">Modified</th></tr></thead>\
<tbody></tbody></table></div><p id=\"sandbox-error\" class=\"bad\" role=\"alert\" hidden></p>",
        fw = esc(&t.framework_id),
    );
}

/// The task the relay serves, and that the caller may read its sandbox; else the
/// answer that says why not.
async fn sandbox_task(
    driver: &DriverHandle,
    authz: &Authorizer,
    principal: &Principal,
    id: &str,
    framework: &str,
) -> Result<TaskDetail, Response> {
    let found = details(driver, authz.clone(), principal.clone(), id, framework).await?;
    let frameworks: std::collections::BTreeSet<&str> =
        found.iter().map(|d| d.task.framework_id.as_str()).collect();
    if frameworks.len() > 1 {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("tasks of several frameworks have the id '{id}': say which with ?framework="),
        ));
    }
    let Some(task) = found.into_iter().next() else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no task '{id}' that you may view"),
        ));
    };
    authz
        .authorize(
            principal,
            Action::AccessSandboxes,
            &task.framework_principal,
        )
        .map_err(|denied| refuse(StatusCode::FORBIDDEN, denied.to_string()))?;
    if task.agent_address.is_empty() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the master no longer knows agent {} of task '{id}'",
                task.task.agent_id
            ),
        ));
    }
    Ok(task)
}

/// What the relay asks an agent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    Browse,
    Read,
}

/// `GET /ui/tasks/{id}/files/browse`.
pub async fn browse(
    State(driver): State<DriverHandle>,
    State(authz): State<Authorizer>,
    State(relay): State<Relay>,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Response {
    relay_files(Files::Browse, &driver, &authz, &relay, &principal, &id, q).await
}

/// `GET /ui/tasks/{id}/files/read`.
pub async fn read(
    State(driver): State<DriverHandle>,
    State(authz): State<Authorizer>,
    State(relay): State<Relay>,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Response {
    relay_files(Files::Read, &driver, &authz, &relay, &principal, &id, q).await
}

/// The task's sandbox, if the caller may read it, asked of its agent.
async fn relay_files(
    what: Files,
    driver: &DriverHandle,
    authz: &Authorizer,
    relay: &Relay,
    principal: &Principal,
    id: &str,
    q: FilesQuery,
) -> Response {
    let task = match sandbox_task(driver, authz, principal, id, &q.framework).await {
        Ok(task) => task,
        Err(answer) => return answer,
    };
    let mut query = vec![
        ("framework_id", task.task.framework_id.clone()),
        ("task_id", task.task.id.clone()),
    ];
    if what == Files::Read {
        let length = q.length.unwrap_or(64 * 1024).min(RELAY_MAX_READ);
        query.push(("offset", q.offset.unwrap_or(0).to_string()));
        query.push(("length", length.to_string()));
        if let Some(file) = q.file {
            query.push(("file", file));
        }
    }
    if let Some(path) = q.path {
        query.push(("path", path));
    }
    let path = match what {
        Files::Browse => "/files/browse",
        Files::Read => "/files/read",
    };
    relay.call(&task, path, &query, principal).await
}

impl Relay {
    /// Calls `path` of the task's agent with `query` and the caller's credential, and
    /// answers what the agent answered (JSON), or why it could not be asked.
    async fn call(
        &self,
        task: &TaskDetail,
        path: &str,
        query: &[(&str, String)],
        principal: &Principal,
    ) -> Response {
        let client = match &self.client {
            Ok(client) => client,
            Err(e) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the master cannot reach agents: {e}"),
                );
            }
        };
        let scheme = if self.tls { "https" } else { "http" };
        let address = strata_security::tls::host_port(&task.agent_address);
        // The address an agent registered with is its word: only a bare host:port is
        // called, so that no path, query or credential of its choosing is.
        if !bare_host_port(address) {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!(
                    "agent {} registered the address '{}', which is not host:port",
                    task.task.agent_id,
                    strata_proto::limits::shown(address)
                ),
            );
        }
        let mut request = client
            .get(format!("{scheme}://{address}{path}"))
            .query(query);
        if !principal.is_anonymous() {
            // The master's certificate, and whom it reads for: the agent asks its
            // ACLs about that principal. The caller's credential stays here.
            request = request.header(ON_BEHALF_OF, principal.name());
        }
        let host = if task.hostname.is_empty() {
            address
        } else {
            &task.hostname
        };
        let mut answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach agent {host} ({address}): {e}"),
                );
            }
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_redirection() {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("agent {host} ({address}) answered a redirect, which is not followed"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // Not the browser's to answer with a login prompt: the caller is known here.
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("agent {host} ({address}) did not accept the master's certificate"),
            );
        }
        let json = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut bytes = Vec::new();
        let body = loop {
            match answer.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= RELAY_MAX_ANSWER => {
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    break Err(format!(
                        "its answer is longer than {RELAY_MAX_ANSWER} bytes"
                    ));
                }
                Ok(None) => break Ok(bytes),
                Err(e) => break Err(format!("it broke off its answer: {e}")),
            }
        };
        match body {
            Ok(bytes) if json => (
                status,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                bytes,
            )
                .into_response(),
            Ok(bytes) => refuse(
                if status.is_success() {
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                },
                format!(
                    "agent {host} ({address}) answered {status}: {}",
                    strata_proto::limits::shown(String::from_utf8_lossy(&bytes).trim())
                ),
            ),
            Err(why) => refuse(
                StatusCode::BAD_GATEWAY,
                format!("agent {host} ({address}): {why}"),
            ),
        }
    }
}

/// Whether `address` is `host:port` and nothing more (no credentials, path or query).
fn bare_host_port(address: &str) -> bool {
    !address.contains('@')
        && address
            .parse::<axum::http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == address && a.port_u16().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_host_and_port_is_called() {
        for ok in ["127.0.0.1:5051", "agent1.example:5051", "[::1]:5051"] {
            assert!(bare_host_port(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:5051/metrics?",
            "user:pw@127.0.0.1:5051",
            "127.0.0.1",
            "127.0.0.1:5051#x",
            "127.0.0.1:5051?x=1",
            "",
        ] {
            assert!(!bare_host_port(bad), "{bad}");
        }
    }
}
