//! `strata task ...`: list tasks, read or follow a task's stdout/stderr from its
//! agent's sandbox, and kill a task (its app replaces it).

use std::io::Write;
use std::time::Duration;

use anyhow::anyhow;
use strata_framework_sdk::{SandboxClient, is_terminal, v1};

use super::Global;
use super::client::ApiClient;
use super::master_client::MasterClient;
use super::output::{Output, Table, age_since, emit_line, now_unix, print_json, short_state};
use crate::app::view::AppTaskView;

/// `strata task ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TaskCommand {
    /// List tasks, of every app or of one.
    #[command(visible_alias = "ls")]
    List {
        /// Only the tasks of this app.
        #[arg(long, value_name = "ID")]
        app: Option<String>,
    },
    /// Print a task's stdout (or stderr), read from its agent.
    Logs {
        /// The task's id.
        task: String,
        /// Keep printing what the task writes until it ends (Ctrl-C stops).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Read stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Kill a task; its app starts a replacement.
    Kill {
        /// The task's id.
        task: String,
    },
}

/// How often `task logs --follow` looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

impl TaskCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        let settings = global.settings()?;
        let client = settings.apps_client()?;
        match self {
            TaskCommand::List { app } => {
                let mut tasks = client.tasks(app.as_deref()).await?;
                sort_tasks(&mut tasks);
                match global.output {
                    Output::Json => print_json(&tasks)?,
                    Output::Table => tasks_table(&tasks, now_unix(), true).print_or("No tasks."),
                }
                Ok(0)
            }
            TaskCommand::Logs {
                task,
                follow,
                stderr,
            } => {
                let file = if stderr { "stderr" } else { "stdout" };
                let mut out = std::io::stdout();
                let poll = follow.then_some(FOLLOW_POLL);
                let sources = Sources {
                    apps: client,
                    master: settings.master_client(),
                };
                let sandbox = settings.sandbox_client()?;
                copy_logs(&sources, &sandbox, &task, file, poll, &mut out).await
            }
            TaskCommand::Kill { task } => {
                let view = client.kill_task(&task).await?;
                match global.output {
                    Output::Json => print_json(&view)?,
                    Output::Table => emit_line(&format!(
                        "task \"{}\": kill requested ({}); app \"{}\" replaces it",
                        view.id,
                        short_state(&view.state),
                        view.app_id
                    )),
                }
                Ok(0)
            }
        }
    }
}

/// Orders tasks by app, then oldest first.
pub fn sort_tasks(tasks: &mut [AppTaskView]) {
    tasks.sort_by(|a, b| (&a.app_id, &a.staged_at, &a.id).cmp(&(&b.app_id, &b.staged_at, &b.id)));
}

/// `ID [APP] STATE HEALTH HOST PORTS AGE`; the age counts from the start, or from
/// staging for a task not started yet.
pub fn tasks_table(tasks: &[AppTaskView], now: f64, with_app: bool) -> Table {
    let mut header = vec!["id", "app", "state", "health", "host", "ports", "age"];
    if !with_app {
        header.remove(1);
    }
    let mut table = Table::new(&header);
    for t in tasks {
        let health = match t.healthy {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "-",
        };
        let ports = if t.ports.is_empty() {
            "-".to_string()
        } else {
            t.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let since = t.started_at.as_deref().unwrap_or(&t.staged_at);
        let mut row = vec![
            t.id.clone(),
            t.app_id.clone(),
            short_state(&t.state).to_string(),
            health.to_string(),
            or_dash(&t.hostname),
            ports,
            age_since(since, now),
        ];
        if !with_app {
            row.remove(1);
        }
        table.row(row);
    }
    table
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// Whether a state name (`TASK_FINISHED`) is terminal. Unknown names are not.
pub fn is_terminal_state(state: &str) -> bool {
    v1::TaskState::from_str_name(state).is_some_and(is_terminal)
}

/// Where a task's whereabouts are asked: the App API first; the master's operator API,
/// which keeps finished tasks, for a task the app server no longer knows.
pub(crate) struct Sources {
    pub apps: ApiClient,
    pub master: MasterClient,
}

/// A task's sandbox: its agent, framework and current state.
#[derive(Debug)]
struct Located {
    agent_address: String,
    framework_id: String,
    task_id: String,
    state: String,
    /// Found through the master rather than the App API.
    on_master: bool,
}

impl Sources {
    /// Finds the task through the App API (`GET /v1/tasks/{id}`, `GET /v1/info`), or,
    /// when the server answers 404 (a task that ended and was replaced), through the
    /// master. The App API's error stands when neither knows the task.
    async fn locate(&self, task_id: &str) -> anyhow::Result<Located> {
        match self.apps.task(task_id).await {
            Ok(task) => {
                let info = self.apps.info().await?;
                let framework_id = info.framework_id.ok_or_else(|| {
                    anyhow!(
                        "the app server has no framework id yet (it has not registered with the master at {})",
                        info.master
                    )
                })?;
                Ok(Located {
                    agent_address: task.agent_address,
                    framework_id,
                    task_id: task.id,
                    state: task.state,
                    on_master: false,
                })
            }
            Err(e) if e.is_not_found() => self.on_master(task_id).await.ok_or_else(|| e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The task as the master's `GetState` shows it, if the master answers and knows it.
    async fn on_master(&self, task_id: &str) -> Option<Located> {
        let state = self.master.state().await.ok()?;
        let task = state.tasks.iter().find(|t| t.id == task_id)?;
        let agent = state.agents.iter().find(|a| a.id == task.agent_id)?;
        Some(Located {
            agent_address: agent.address.clone(),
            framework_id: task.framework_id.clone(),
            task_id: task.id.clone(),
            state: task.state.as_str_name().to_string(),
            on_master: true,
        })
    }

    /// The task's state now, asked where it was found; `None` on a passing failure.
    async fn state(&self, located: &Located) -> Option<String> {
        if located.on_master {
            return self.on_master(&located.task_id).await.map(|l| l.state);
        }
        match self.apps.task(&located.task_id).await {
            Ok(t) => Some(t.state),
            // Forgotten by the server: it ended and was replaced.
            Err(e) if e.is_not_found() => Some("TASK_GONE".to_string()),
            Err(_) => None,
        }
    }
}

/// Copies a task's `file` to `out`: what is there now, or with `follow` (the poll
/// interval) everything until the task is terminal and the file is read to its end.
/// Ctrl-C stops following (exit code 130).
pub(crate) async fn copy_logs(
    sources: &Sources,
    sandbox: &SandboxClient,
    task_id: &str,
    file: &str,
    follow: Option<Duration>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let located = sources.locate(task_id).await?;
    let ids = (
        located.agent_address.as_str(),
        located.framework_id.as_str(),
        located.task_id.as_str(),
    );
    let mut offset = 0;
    let Some(poll) = follow else {
        return match read_available(sandbox, ids, file, &mut offset, out).await {
            Ok(_) | Err(Copy::Closed) => Ok(0),
            Err(Copy::Read(e)) => Err(anyhow!(e)),
        };
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut state = located.state.clone();
    let mut warned = false;
    loop {
        // Terminal before this read: the file is complete, so reading it to its end
        // finishes the job.
        let terminal = is_terminal_state(&state);
        match read_available(sandbox, ids, file, &mut offset, out).await {
            Ok(agent_state) => {
                warned = false;
                if terminal {
                    return Ok(0);
                }
                if let Some(s) = agent_state.filter(|s| is_terminal_state(s)) {
                    // The agent says it ended: one more read to the end, then stop.
                    state = s;
                    continue;
                }
            }
            Err(Copy::Closed) => return Ok(0),
            Err(Copy::Read(e)) if terminal => return Err(anyhow!(e)),
            Err(Copy::Read(e)) => {
                // Early on the agent may not know the task yet; say so once, retry.
                if !warned {
                    eprintln!("warning: {e} (retrying)");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(130),
            _ = tokio::time::sleep(poll) => {}
        }
        // On a passing failure keep the last state and try again.
        if let Some(now) = sources.state(&located).await {
            state = now;
        }
    }
}

/// Why [`read_available`] stopped early.
enum Copy {
    /// Reading from the agent failed; the text says why.
    Read(String),
    /// `out` is gone (a closed pipe).
    Closed,
}

/// Copies `file` from `offset` to its current end, moving `offset` along. Returns the
/// task state the agent reported last, if any.
async fn read_available(
    sandbox: &SandboxClient,
    (agent, framework_id, task_id): (&str, &str, &str),
    file: &str,
    offset: &mut u64,
    out: &mut dyn Write,
) -> Result<Option<String>, Copy> {
    loop {
        let chunk = sandbox
            .read(agent, framework_id, task_id, file, *offset)
            .await
            .map_err(|e| Copy::Read(e.to_string()))?;
        if chunk.truncated_before(*offset) {
            eprintln!(
                "strata: the {file} of task '{task_id}' was truncated; following it from its start"
            );
            *offset = 0;
            continue;
        }
        if chunk.data.is_empty() {
            return Ok(chunk.state);
        }
        let Some(next) = chunk.advance_from(*offset) else {
            return Err(Copy::Read(format!(
                "the agent's {file} of task '{task_id}' does not advance past offset {offset}"
            )));
        };
        out.write_all(chunk.data.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|_| Copy::Closed)?;
        *offset = next;
        if chunk.eof == Some(true) {
            return Ok(chunk.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::cli::client::tests::fake_server;
    use crate::cli::master_client::tests::{FakeMaster, agent, task as master_task};
    use crate::cli::output::parse_rfc3339;

    fn task(id: &str, state: &str, healthy: Option<bool>, ports: Vec<u16>) -> AppTaskView {
        AppTaskView {
            id: id.into(),
            app_id: "web".into(),
            version: "v".into(),
            agent_id: "a1".into(),
            hostname: "node1".into(),
            agent_address: "node1:5051".into(),
            state: state.into(),
            healthy,
            ports,
            staged_at: "2026-01-01T00:00:00Z".into(),
            started_at: None,
            message: String::new(),
        }
    }

    #[test]
    fn task_table() {
        let now = parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let mut running = task("web.1", "TASK_RUNNING", Some(false), vec![31000, 31001]);
        running.started_at = Some("2026-01-01T00:59:00Z".into());
        let mut staging = task("web.2", "TASK_STAGING", None, vec![]);
        staging.hostname = String::new();
        let tasks = [running, staging];
        assert_eq!(
            tasks_table(&tasks, now, true).render(),
            "ID      APP   STATE     HEALTH      HOST    PORTS         AGE\n\
             web.1   web   RUNNING   unhealthy   node1   31000,31001   1m\n\
             web.2   web   STAGING   -           -       -             60m\n"
        );
        assert!(
            tasks_table(&tasks, now, false)
                .render()
                .starts_with("ID      STATE     HEALTH")
        );
    }

    #[test]
    fn terminal_states() {
        assert!(is_terminal_state("TASK_FINISHED"));
        assert!(is_terminal_state("TASK_GONE"));
        assert!(!is_terminal_state("TASK_RUNNING"));
        assert!(!is_terminal_state("TASK_UNREACHABLE"));
        assert!(!is_terminal_state("nonsense"));
    }

    fn query(path: &str, key: &str) -> Option<String> {
        let (_, q) = path.split_once('?')?;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }

    /// One fake server playing both the App API and the agent: the task's output
    /// grows by one line per read until `lines`, then the task finishes.
    async fn logs_server(
        lines: usize,
    ) -> (String, Arc<Mutex<Vec<crate::cli::client::tests::Seen>>>) {
        logs_server_with(lines, false).await
    }

    /// [`logs_server`]; with `truncate`, the file is truncated to `x\n` when the task
    /// finishes (the agent says its size).
    async fn logs_server_with(
        lines: usize,
        truncate: bool,
    ) -> (String, Arc<Mutex<Vec<crate::cli::client::tests::Seen>>>) {
        let addr_cell: Arc<Mutex<String>> = Arc::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let cell = addr_cell.clone();
        let (addr, seen) = fake_server(Arc::new(move |req| {
            let path = req.path.as_str();
            if path == "/v1/info" {
                return (
                    200,
                    r#"{"framework_id": "fw-1", "master": "m:5050", "connected": true,
                        "apps": 1, "tasks": 1, "deployments": 0}"#
                        .into(),
                );
            }
            let written = reads.load(Ordering::SeqCst).min(lines);
            let state = if written == lines {
                "TASK_FINISHED"
            } else {
                "TASK_RUNNING"
            };
            if path == "/v1/tasks/web.1" {
                let mut t = task("web.1", state, None, vec![]);
                t.agent_address = cell.lock().unwrap().clone();
                return (200, serde_json::to_string(&t).unwrap());
            }
            if path.starts_with("/files/read?") {
                assert_eq!(query(path, "framework_id").as_deref(), Some("fw-1"));
                assert_eq!(query(path, "task_id").as_deref(), Some("web.1"));
                let file = query(path, "file").unwrap();
                let content: String = if truncate && written == lines {
                    "x\n".into()
                } else {
                    (0..written).map(|i| format!("{file} {i}\n")).collect()
                };
                let offset: usize = query(path, "offset").unwrap().parse().unwrap();
                reads.fetch_add(1, Ordering::SeqCst);
                let data = &content[offset.min(content.len())..];
                let mut body = serde_json::json!({
                    "data": data, "offset": offset, "next_offset": offset + data.len(),
                    "eof": true, "state": state,
                });
                if truncate {
                    body["size"] = content.len().into();
                }
                return (200, body.to_string());
            }
            (404, r#"{"error": "no such thing"}"#.into())
        }))
        .await;
        *addr_cell.lock().unwrap() = addr.clone();
        (addr, seen)
    }

    #[tokio::test]
    async fn follow_stops_when_the_task_ended_and_the_file_is_read() {
        let (addr, _) = logs_server(4).await;
        let client = sources(&addr, NO_MASTER);
        let mut out = Vec::new();
        let code = copy_logs(
            &client,
            &SandboxClient::new(),
            "web.1",
            "stdout",
            Some(Duration::from_millis(5)),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "stdout 0\nstdout 1\nstdout 2\nstdout 3\n"
        );
    }

    /// A file truncated while followed is followed again from its start (as `tail -f`
    /// does), not left waiting past its end.
    #[tokio::test]
    async fn follow_starts_again_after_a_truncation() {
        let (addr, _) = logs_server_with(2, true).await;
        let client = sources(&addr, NO_MASTER);
        let mut out = Vec::new();
        let code = copy_logs(
            &client,
            &SandboxClient::new(),
            "web.1",
            "stdout",
            Some(Duration::from_millis(5)),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(code, 0);
        assert_eq!(String::from_utf8(out).unwrap(), "stdout 0\nx\n");
    }

    #[tokio::test]
    async fn without_follow_prints_what_is_there_now() {
        let (addr, seen) = logs_server(1000).await;
        let client = sources(&addr, NO_MASTER);
        let mut out = Vec::new();
        // The first read sees nothing written; the server counts reads, so read once
        // to make one line appear, then read what is there.
        let sandbox = SandboxClient::new();
        copy_logs(&client, &sandbox, "web.1", "stderr", None, &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "");
        copy_logs(&client, &sandbox, "web.1", "stderr", None, &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "stderr 0\n");
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .any(|s| s.path.contains("file=stderr"))
        );
    }

    /// The App API at `apps`, the master's operator API at `master`.
    fn sources(apps: &str, master: &str) -> Sources {
        Sources {
            apps: ApiClient::new(apps),
            master: MasterClient::new(master),
        }
    }

    /// Where nothing listens: the master is not asked in these tests.
    const NO_MASTER: &str = "127.0.0.1:1";

    #[tokio::test]
    async fn logs_of_an_unknown_task_say_so() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (404, r#"{"error": "task \"nope\" not found"}"#.into())
        }))
        .await;
        let master = FakeMaster::default().serve().await;
        let err = copy_logs(
            &sources(&addr, &master),
            &SandboxClient::new(),
            "nope",
            "stdout",
            None,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), r#"task "nope" not found"#);
        // The master unreachable too: still the App API's answer.
        let err = copy_logs(
            &sources(&addr, NO_MASTER),
            &SandboxClient::new(),
            "nope",
            "stdout",
            None,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), r#"task "nope" not found"#);
    }

    #[tokio::test]
    async fn a_task_the_server_forgot_is_found_on_the_master() {
        let (addr, seen) = fake_server(Arc::new(move |req| {
            let path = req.path.as_str();
            if path.starts_with("/files/read?") {
                assert_eq!(query(path, "framework_id").as_deref(), Some("fw-9"));
                let offset: usize = query(path, "offset").unwrap().parse().unwrap();
                let content = "boom\n";
                let data = &content[offset.min(content.len())..];
                let body = serde_json::json!({
                    "data": data, "offset": offset, "next_offset": offset + data.len(),
                    "eof": true, "state": "TASK_FAILED",
                });
                return (200, body.to_string());
            }
            (404, r#"{"error": "task \"web.0\" not found"}"#.into())
        }))
        .await;
        // The master knows the ended task and its agent (the fake above).
        let master = FakeMaster::default();
        *master.state.lock().unwrap() = v1::GetStateResponse {
            agents: vec![agent("a1", "node1", &addr, "ACTIVE")],
            tasks: vec![master_task(
                "web.0",
                "fw-9",
                "a1",
                v1::TaskState::TaskFailed,
            )],
            ..Default::default()
        };
        let master = master.serve().await;
        let mut out = Vec::new();
        let code = copy_logs(
            &sources(&addr, &master),
            &SandboxClient::new(),
            "web.0",
            "stderr",
            Some(Duration::from_millis(5)),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(code, 0);
        assert_eq!(String::from_utf8(out).unwrap(), "boom\n");
        assert!(seen.lock().unwrap().iter().all(|s| s.path != "/v1/info"));
    }
}
