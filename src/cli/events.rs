//! `strata events [--follow]`: the master's operator event stream (`Operator.Subscribe`)
//! as lines: first the state (a SNAPSHOT summary), then, with `--follow`, every change
//! of a task, agent or framework as it happens. A dropped connection is resumed after
//! the last event seen, so nothing is missed or printed twice (the master sends a
//! fresh SNAPSHOT when it no longer has those events, e.g. after its restart).
//!
//! ```text
//! 0     SNAPSHOT            2 agents, 1 frameworks, 3 tasks
//! 14    TASK_UPDATED        web.1 TASK_RUNNING (framework 5f.., agent 9c..)
//! ```

use std::time::Duration;

use strata_proto::v1::{self, operator_event::Event};

use super::Global;
use super::output::Output;

/// How long `--follow` waits before it resumes a dropped stream.
const RESUME_AFTER: Duration = Duration::from_secs(1);

/// `strata events`.
#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    pub global: Global,
    /// Keep printing the changes as they happen (resuming after a dropped connection)
    /// until interrupted.
    #[arg(long, short)]
    pub follow: bool,
}

impl EventsArgs {
    /// Runs the command; the result is the exit code.
    pub async fn run(self) -> anyhow::Result<u8> {
        let master = self.global.master_client()?;
        let mut resume: Option<(String, u64)> = None;
        loop {
            let mut stream = match master.events(resume.clone()).await {
                Ok(s) => s,
                Err(e) if self.follow && resume.is_some() => {
                    eprintln!("strata events: {e}; retrying");
                    tokio::time::sleep(RESUME_AFTER).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        resume = Some((event.master_id.clone(), event.seq));
                        print_event(&event, self.global.output);
                        if !self.follow && matches!(event.event, Some(Event::Snapshot(_))) {
                            return Ok(0);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        if !self.follow {
                            anyhow::bail!("the event stream ended: {}", status.message());
                        }
                        eprintln!(
                            "strata events: the stream ended ({}); resuming",
                            status.message()
                        );
                        break;
                    }
                }
            }
            if !self.follow {
                return Ok(0);
            }
            tokio::time::sleep(RESUME_AFTER).await;
        }
    }
}

/// The event's kind as the stream names it.
pub fn kind(event: &v1::OperatorEvent) -> &'static str {
    match &event.event {
        Some(Event::Snapshot(_)) => "SNAPSHOT",
        Some(Event::TaskAdded(_)) => "TASK_ADDED",
        Some(Event::TaskUpdated(_)) => "TASK_UPDATED",
        Some(Event::AgentAdded(_)) => "AGENT_ADDED",
        Some(Event::AgentUpdated(_)) => "AGENT_UPDATED",
        Some(Event::AgentRemoved(_)) => "AGENT_REMOVED",
        Some(Event::FrameworkAdded(_)) => "FRAMEWORK_ADDED",
        Some(Event::FrameworkUpdated(_)) => "FRAMEWORK_UPDATED",
        Some(Event::FrameworkRemoved(_)) => "FRAMEWORK_REMOVED",
        Some(Event::Heartbeat(_)) => "HEARTBEAT",
        None => "UNKNOWN",
    }
}

fn state_name(state: i32) -> String {
    v1::TaskState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| state.to_string())
}

/// The event as JSON: `seq`, `master_id`, `type`, and what it is about.
pub fn json(event: &v1::OperatorEvent) -> serde_json::Value {
    use serde_json::json;
    let about = match &event.event {
        Some(Event::Snapshot(s)) => json!({
            "agents": s.agents.len(),
            "frameworks": s.frameworks.len(),
            "tasks": s.tasks.len(),
        }),
        Some(Event::TaskAdded(t)) | Some(Event::TaskUpdated(t)) => json!({
            "task_id": t.task_id,
            "name": t.name,
            "framework_id": t.framework_id,
            "agent_id": t.agent_id,
            "state": state_name(t.state),
            "healthy": t.last_status.as_ref().and_then(|s| s.healthy),
        }),
        Some(Event::AgentAdded(a)) | Some(Event::AgentUpdated(a)) => {
            let info = a.info.clone().unwrap_or_default();
            json!({
                "agent_id": info.id,
                "hostname": info.hostname,
                "status": a.status,
                "maintenance": a.maintenance,
            })
        }
        Some(Event::AgentRemoved(id)) => json!({ "agent_id": id }),
        Some(Event::FrameworkAdded(f)) | Some(Event::FrameworkUpdated(f)) => {
            let info = f.info.clone().unwrap_or_default();
            json!({
                "framework_id": info.id,
                "name": info.name,
                "principal": info.principal,
                "connected": f.connected,
            })
        }
        Some(Event::FrameworkRemoved(id)) => json!({ "framework_id": id }),
        Some(Event::Heartbeat(_)) | None => json!({}),
    };
    let mut value = json!({
        "seq": event.seq,
        "master_id": event.master_id,
        "type": kind(event),
    });
    if let (Some(out), Some(about)) = (value.as_object_mut(), about.as_object()) {
        out.extend(about.clone());
    }
    value
}

/// One line for a person: seq, type, and what changed.
pub fn line(event: &v1::OperatorEvent) -> String {
    let what = match &event.event {
        Some(Event::Snapshot(s)) => format!(
            "{} agents, {} frameworks, {} tasks",
            s.agents.len(),
            s.frameworks.len(),
            s.tasks.len()
        ),
        Some(Event::TaskAdded(t)) | Some(Event::TaskUpdated(t)) => format!(
            "{} {} (framework {}, agent {})",
            t.task_id,
            state_name(t.state),
            t.framework_id,
            t.agent_id
        ),
        Some(Event::AgentAdded(a)) | Some(Event::AgentUpdated(a)) => {
            let info = a.info.clone().unwrap_or_default();
            let maintenance = if a.maintenance.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.maintenance)
            };
            format!("{} {} {}{maintenance}", info.id, info.hostname, a.status)
        }
        Some(Event::AgentRemoved(id)) | Some(Event::FrameworkRemoved(id)) => id.clone(),
        Some(Event::FrameworkAdded(f)) | Some(Event::FrameworkUpdated(f)) => {
            let info = f.info.clone().unwrap_or_default();
            let connected = if f.connected {
                "connected"
            } else {
                "disconnected"
            };
            format!("{} {} ({connected})", info.id, info.name)
        }
        Some(Event::Heartbeat(_)) | None => String::new(),
    };
    format!("{:<6}{:<20}{what}", event.seq, kind(event))
}

fn print_event(event: &v1::OperatorEvent, output: Output) {
    if matches!(event.event, Some(Event::Heartbeat(_))) {
        return;
    }
    let text = match output {
        Output::Json => json(event).to_string(),
        Output::Table => line(event),
    };
    super::output::emit_line(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_as_lines_and_json() {
        let event = v1::OperatorEvent {
            seq: 14,
            master_id: "m".into(),
            event: Some(Event::TaskUpdated(v1::TaskEntry {
                task_id: "web.1".into(),
                framework_id: "f".into(),
                agent_id: "a".into(),
                state: v1::TaskState::TaskRunning as i32,
                ..Default::default()
            })),
        };
        assert_eq!(
            line(&event),
            "14    TASK_UPDATED        web.1 TASK_RUNNING (framework f, agent a)"
        );
        let json = json(&event);
        assert_eq!(json["type"], "TASK_UPDATED");
        assert_eq!(json["state"], "TASK_RUNNING");
        assert_eq!(json["seq"], 14);
    }
}
