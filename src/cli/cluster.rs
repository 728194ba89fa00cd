//! `strata agent list` and `strata framework list`: the cluster as the master's
//! `GET /state` shows it; `strata agent deactivate|drain|reactivate|gone`: maintenance
//! through the master's `POST /maintenance/*`.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

use super::Global;
use super::output::{Output, Table, format_mb, format_number, print_json};
use super::task::is_terminal_state;

/// `strata agent ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AgentCommand {
    /// List the agents the master knows, with their resources.
    #[command(visible_alias = "ls")]
    List,
    /// Stop offering an agent's resources; its tasks keep running.
    Deactivate {
        /// The agent's id (`strata agent list`).
        agent_id: String,
    },
    /// Stop offering an agent's resources and kill its tasks (the container framework
    /// puts them elsewhere); the agent is DRAINED once none is left.
    Drain {
        /// The agent's id (`strata agent list`).
        agent_id: String,
        /// The longest grace period between SIGTERM and SIGKILL, e.g. `30s` (the
        /// task's own when shorter; default: the task's own).
        #[arg(long, value_parser = strata_proto::duration::parse)]
        max_grace_period: Option<std::time::Duration>,
    },
    /// End a deactivation or a drain: the agent's resources are offered again.
    Reactivate {
        /// The agent's id (`strata agent list`).
        agent_id: String,
    },
    /// Mark an agent gone for good (decommissioned, wiped): its tasks end
    /// TASK_GONE_BY_OPERATOR and it may never register again. Cannot be undone.
    Gone {
        /// The agent's id (`strata agent list`).
        agent_id: String,
    },
}

/// `strata framework ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum FrameworkCommand {
    /// List the frameworks registered with the master.
    #[command(visible_alias = "ls")]
    List,
}

impl AgentCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        match self {
            AgentCommand::List => {
                let raw = global.master_client().state().await?;
                match global.output {
                    Output::Json => print_json(&raw["agents"])?,
                    Output::Table => {
                        agents_table(&MasterState::from_json(raw)?).print_or("No agents.")
                    }
                }
                Ok(0)
            }
            AgentCommand::Deactivate { agent_id } => {
                maintain(global, "deactivate", &agent_id, None).await
            }
            AgentCommand::Drain {
                agent_id,
                max_grace_period,
            } => maintain(global, "drain", &agent_id, max_grace_period).await,
            AgentCommand::Reactivate { agent_id } => {
                maintain(global, "reactivate", &agent_id, None).await
            }
            AgentCommand::Gone { agent_id } => maintain(global, "gone", &agent_id, None).await,
        }
    }
}

/// `POST /maintenance/<action>` on the master, then a line saying what it did.
async fn maintain(
    global: &Global,
    action: &str,
    agent_id: &str,
    max_grace_period: Option<std::time::Duration>,
) -> anyhow::Result<u8> {
    let mut body = serde_json::json!({ "agent_id": agent_id });
    if let Some(grace) = max_grace_period {
        body["max_grace_period_seconds"] = grace.as_secs_f64().into();
    }
    let client = global.master_client();
    let _: serde_json::Value = client
        .call(
            reqwest::Method::POST,
            &format!("/maintenance/{action}"),
            Some(&body),
        )
        .await?;
    match global.output {
        Output::Json => print_json(&serde_json::json!({ "agent_id": agent_id, "action": action }))?,
        Output::Table => println!(
            "agent {agent_id}: {}",
            match action {
                "deactivate" => "deactivated (its tasks keep running)",
                "drain" => "draining (its tasks are being killed)",
                "gone" => "marked gone (its tasks ended; it may not register again)",
                _ => "reactivated",
            }
        ),
    }
    Ok(0)
}

impl FrameworkCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        match self {
            FrameworkCommand::List => {
                let raw = global.master_client().state().await?;
                match global.output {
                    Output::Json => print_json(&raw["frameworks"])?,
                    Output::Table => {
                        frameworks_table(&MasterState::from_json(raw)?).print_or("No frameworks.")
                    }
                }
                Ok(0)
            }
        }
    }
}

/// The parts of the master's `StateSnapshot` (`GET /state`) the CLI shows. Fields it
/// does not know are ignored, missing ones default.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MasterState {
    pub agents: Vec<MasterAgent>,
    pub frameworks: Vec<MasterFramework>,
    pub tasks: Vec<MasterTask>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MasterAgent {
    pub id: String,
    pub hostname: String,
    pub address: String,
    /// ACTIVE, DISCONNECTED, UNREACHABLE or RECOVERING.
    pub status: String,
    /// DEACTIVATED, DRAINING, DRAINED, or none.
    pub maintenance: Option<String>,
    /// Resources as `{"cpus": 4.0, "mem": 4096.0, "cpus(role)": 1.0, "ports": "[...]"}`.
    pub total: BTreeMap<String, serde_json::Value>,
    pub used: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MasterFramework {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub connected: bool,
    pub task_count: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MasterTask {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub state: String,
}

impl MasterState {
    pub fn from_json(raw: serde_json::Value) -> anyhow::Result<MasterState> {
        serde_json::from_value(raw).context("the master's /state has an unexpected shape")
    }
}

/// A scalar resource summed over its reservations: `cpus` and every `cpus(role)`.
fn scalar(resources: &BTreeMap<String, serde_json::Value>, name: &str) -> f64 {
    resources
        .iter()
        .filter(|(key, _)| {
            key.as_str() == name
                || key
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('('))
        })
        .filter_map(|(_, v)| v.as_f64())
        .sum()
}

/// `ID HOSTNAME ADDRESS CPUS MEM TASKS STATE`, resources as used/total.
pub fn agents_table(state: &MasterState) -> Table {
    let mut table = Table::new(&["id", "hostname", "address", "cpus", "mem", "tasks", "state"]);
    for a in &state.agents {
        let tasks = state
            .tasks
            .iter()
            .filter(|t| t.agent_id == a.id && !is_terminal_state(&t.state))
            .count();
        table.row([
            a.id.clone(),
            a.hostname.clone(),
            a.address.clone(),
            format!(
                "{}/{}",
                format_number(scalar(&a.used, "cpus")),
                format_number(scalar(&a.total, "cpus"))
            ),
            format!(
                "{}/{}",
                format_mb(scalar(&a.used, "mem")),
                format_mb(scalar(&a.total, "mem"))
            ),
            tasks.to_string(),
            match &a.maintenance {
                Some(m) => format!("{} ({})", a.status, m),
                None => a.status.clone(),
            },
        ]);
    }
    table
}

/// `ID NAME ROLES TASKS CONNECTED`.
pub fn frameworks_table(state: &MasterState) -> Table {
    let mut table = Table::new(&["id", "name", "roles", "tasks", "connected"]);
    let mut frameworks: Vec<&MasterFramework> = state.frameworks.iter().collect();
    frameworks.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    for f in frameworks {
        let roles = if f.roles.is_empty() {
            "-".to_string()
        } else {
            f.roles.join(",")
        };
        table.row([
            f.id.clone(),
            f.name.clone(),
            roles,
            f.task_count.to_string(),
            if f.connected { "yes" } else { "no" }.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/state` body as the master's `StateSnapshot` serializes it.
    fn state_json() -> serde_json::Value {
        serde_json::json!({
            "master_id": "m1",
            "agents": [
                {"id": "a1", "hostname": "node1", "address": "10.0.0.1:5051", "status": "ACTIVE",
                 "attributes": {"rack": "r1"},
                 "total": {"cpus": 4.0, "mem": 8192.0, "disk": 10000.0, "ports": "[31000-32000]"},
                 "used": {"cpus": 1.0, "cpus(web)": 0.5, "mem": 512.0},
                 "offered": {}, "registered_time": 1.7e9},
                {"id": "a2", "hostname": "node2", "address": "10.0.0.2:5051",
                 "status": "UNREACHABLE", "maintenance": "DRAINING",
                 "attributes": {}, "total": {}, "used": {},
                 "offered": {}, "registered_time": 1.7e9}
            ],
            "frameworks": [
                {"id": "f2", "name": "strata-apps", "user": "root", "roles": ["*", "web"],
                 "capabilities": [], "failover_timeout_seconds": 0.0, "connected": true,
                 "active": true, "suppressed_roles": [], "used": {}, "offered": {},
                 "task_count": 3},
                {"id": "f1", "name": "batch", "user": "root", "roles": [],
                 "capabilities": [], "failover_timeout_seconds": 0.0, "connected": false,
                 "active": false, "suppressed_roles": [], "used": {}, "offered": {},
                 "task_count": 0}
            ],
            "tasks": [
                {"id": "t1", "name": "t1", "framework_id": "f2", "agent_id": "a1",
                 "state": "TASK_RUNNING", "resources": {}, "message": "", "reason": "",
                 "exit_status": null, "updated": 1.7e9},
                {"id": "t2", "name": "t2", "framework_id": "f2", "agent_id": "a1",
                 "state": "TASK_STAGING", "resources": {}, "message": "", "reason": "",
                 "exit_status": null, "updated": 1.7e9},
                {"id": "t3", "name": "t3", "framework_id": "f2", "agent_id": "a1",
                 "state": "TASK_FINISHED", "resources": {}, "message": "", "reason": "",
                 "exit_status": 0, "updated": 1.7e9}
            ],
            "roles": [],
            "outstanding_offers": 0
        })
    }

    #[test]
    fn agents_show_used_over_total_and_live_tasks() {
        let state = MasterState::from_json(state_json()).unwrap();
        assert_eq!(
            agents_table(&state).render(),
            "ID   HOSTNAME   ADDRESS         CPUS    MEM       TASKS   STATE\n\
             a1   node1      10.0.0.1:5051   1.5/4   512M/8G   2       ACTIVE\n\
             a2   node2      10.0.0.2:5051   0/0     0M/0M     0       UNREACHABLE (DRAINING)\n"
        );
    }

    #[test]
    fn frameworks_sorted_by_name() {
        let state = MasterState::from_json(state_json()).unwrap();
        assert_eq!(
            frameworks_table(&state).render(),
            "ID   NAME          ROLES   TASKS   CONNECTED\n\
             f1   batch         -       0       no\n\
             f2   strata-apps   *,web   3       yes\n"
        );
    }

    #[test]
    fn a_state_of_another_shape_is_an_error() {
        let err = MasterState::from_json(serde_json::json!({"agents": 3})).unwrap_err();
        assert!(err.to_string().contains("unexpected shape"), "{err}");
        let empty = MasterState::from_json(serde_json::json!({})).unwrap();
        assert!(agents_table(&empty).is_empty());
    }
}
