//! `strata agent list` and `strata framework list`: the cluster as the master's
//! operator API (`GetState`, `GetFrameworks`) shows it; `strata framework teardown`
//! (`TeardownFramework`); `strata agent
//! deactivate|drain|reactivate|gone`: maintenance through the same API
//! (`DeactivateAgent`, `DrainAgent`, `ReactivateAgent`, `MarkAgentGone`).

use strata_proto::{Resources, Scalar};

use super::Global;
use super::master_client::{AgentAction, AgentStatus, Framework, State};
use super::output::{Output, Table, format_mb, format_number, print_json};

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
    /// Remove a framework: its tasks are killed and its id may never subscribe again
    /// (Mesos' teardown). Needs the `teardown_frameworks` ACL, or to be its principal.
    Teardown {
        /// The framework's id (`strata framework list`).
        framework_id: String,
    },
}

impl AgentCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        let (action, agent_id, max_grace_period) = match self {
            AgentCommand::List => {
                let state = global.master_client()?.state().await?;
                match global.output {
                    Output::Json => print_json(&state.agents)?,
                    Output::Table => agents_table(&state).print_or("No agents."),
                }
                return Ok(0);
            }
            AgentCommand::Deactivate { agent_id } => (AgentAction::Deactivate, agent_id, None),
            AgentCommand::Drain {
                agent_id,
                max_grace_period,
            } => (AgentAction::Drain, agent_id, max_grace_period),
            AgentCommand::Reactivate { agent_id } => (AgentAction::Reactivate, agent_id, None),
            AgentCommand::Gone { agent_id } => (AgentAction::Gone, agent_id, None),
        };
        maintain(global, action, &agent_id, max_grace_period).await
    }
}

/// One maintenance call on the master, then a line saying what it did.
async fn maintain(
    global: &Global,
    action: AgentAction,
    agent_id: &str,
    max_grace_period: Option<std::time::Duration>,
) -> anyhow::Result<u8> {
    global
        .master_client()?
        .maintain(action, agent_id, max_grace_period)
        .await?;
    match global.output {
        Output::Json => {
            print_json(&serde_json::json!({ "agent_id": agent_id, "action": action.as_str() }))?
        }
        Output::Table => println!(
            "agent {agent_id}: {}",
            match action {
                AgentAction::Deactivate => "deactivated (its tasks keep running)",
                AgentAction::Drain => "draining (its tasks are being killed)",
                AgentAction::Gone => "marked gone (its tasks ended; it may not register again)",
                AgentAction::Reactivate => "reactivated",
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
                let frameworks = global.master_client()?.frameworks().await?;
                match global.output {
                    Output::Json => print_json(&frameworks)?,
                    Output::Table => frameworks_table(&frameworks).print_or("No frameworks."),
                }
                Ok(0)
            }
            FrameworkCommand::Teardown { framework_id } => {
                global.master_client()?.teardown(&framework_id).await?;
                match global.output {
                    Output::Json => print_json(
                        &serde_json::json!({ "framework_id": framework_id, "action": "teardown" }),
                    )?,
                    Output::Table => {
                        println!("framework {framework_id}: torn down (its tasks are being killed)")
                    }
                }
                Ok(0)
            }
        }
    }
}

/// `used/total` of one scalar, summed over its reservations (`cpus` and every
/// reserved `cpus`) by the fixed-point [`Resources`] maths.
fn used_of_total(
    used: &Resources,
    total: &Resources,
    name: &str,
    format: fn(f64) -> String,
) -> String {
    let text = |s: Scalar| format(s.as_f64());
    format!("{}/{}", text(used.scalar(name)), text(total.scalar(name)))
}

/// `ID HOSTNAME ADDRESS CPUS MEM TASKS STATE`, resources as used/total (`-` for an
/// agent whose resources the master does not know yet: RECOVERING after a master
/// restart), tasks counting those that have not ended.
pub fn agents_table(state: &State) -> Table {
    let mut table = Table::new(&["id", "hostname", "address", "cpus", "mem", "tasks", "state"]);
    for a in &state.agents {
        let tasks = state
            .tasks
            .iter()
            .filter(|t| t.agent_id == a.id && !t.is_terminal())
            .count();
        let (cpus, mem) = if a.status == AgentStatus::Recovering && a.total.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                used_of_total(&a.used, &a.total, "cpus", format_number),
                used_of_total(&a.used, &a.total, "mem", format_mb),
            )
        };
        table.row([
            a.id.clone(),
            a.hostname.clone(),
            a.address.clone(),
            cpus,
            mem,
            tasks.to_string(),
            match &a.maintenance {
                Some(m) => format!("{} ({m})", a.status),
                None => a.status.to_string(),
            },
        ]);
    }
    table
}

/// `ID NAME ROLES TASKS CONNECTED`, by name.
pub fn frameworks_table(frameworks: &[Framework]) -> Table {
    let mut table = Table::new(&["id", "name", "roles", "tasks", "connected"]);
    let mut frameworks: Vec<&Framework> = frameworks.iter().collect();
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
    use strata_proto::v1;
    use strata_proto::v1::TaskState::{TaskFinished, TaskRunning, TaskStaging};

    use super::*;
    use crate::cli::master_client::tests::{agent, framework, task, wire};

    /// What the master's `GetState` answers: two agents (one with reserved cpus in
    /// use, one unreachable and draining) and three tasks, one ended.
    fn state() -> State {
        let mut a1 = agent("a1", "node1", "10.0.0.1:5051", "ACTIVE");
        a1.total = wire("cpus:4;mem:8192;disk:10000;ports:[31000-32000]");
        a1.used = wire("cpus:1;cpus(web):0.5;mem:512");
        let mut a2 = agent("a2", "node2", "10.0.0.2:5051", "UNREACHABLE");
        a2.maintenance = "DRAINING".into();
        State::try_from(v1::GetStateResponse {
            master_id: "m1".into(),
            agents: vec![a1, a2],
            tasks: vec![
                task("t1", "f2", "a1", TaskRunning),
                task("t2", "f2", "a1", TaskStaging),
                task("t3", "f2", "a1", TaskFinished),
            ],
            ..Default::default()
        })
        .unwrap()
    }

    /// What the master's `GetFrameworks` answers.
    fn frameworks() -> Vec<Framework> {
        let mut f2 = framework("f2", "strata-apps", &["*", "web"]);
        f2.connected = true;
        f2.task_count = 3;
        [f2, framework("f1", "batch", &[])]
            .into_iter()
            .map(|f| Framework::try_from(f).unwrap())
            .collect()
    }

    #[test]
    fn agents_show_used_over_total_and_live_tasks() {
        assert_eq!(
            agents_table(&state()).render(),
            "ID   HOSTNAME   ADDRESS         CPUS    MEM       TASKS   STATE\n\
             a1   node1      10.0.0.1:5051   1.5/4   512M/8G   2       ACTIVE\n\
             a2   node2      10.0.0.2:5051   0/0     0M/0M     0       UNREACHABLE (DRAINING)\n"
        );
    }

    #[test]
    fn sums_have_no_float_drift() {
        let mut a = agent("a1", "node1", "x:1", "ACTIVE");
        a.total = wire("cpus:1;mem:1024");
        a.used = wire("cpus(x):0.1;cpus(y):0.2;mem(x):100.1;mem(y):100.2");
        let state = State::try_from(v1::GetStateResponse {
            agents: vec![a],
            ..Default::default()
        })
        .unwrap();
        assert!(
            agents_table(&state)
                .render()
                .contains("   0.3/1   200M/1G   "),
            "{}",
            agents_table(&state).render()
        );
    }

    #[test]
    fn a_recovering_agent_has_no_resources_to_show_yet() {
        let state = State::try_from(v1::GetStateResponse {
            agents: vec![agent("a1", "node1", "x:1", "RECOVERING")],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            agents_table(&state).render(),
            "ID   HOSTNAME   ADDRESS   CPUS   MEM   TASKS   STATE\n\
             a1   node1      x:1       -      -     0       RECOVERING\n"
        );
    }

    #[test]
    fn frameworks_sorted_by_name() {
        assert_eq!(
            frameworks_table(&frameworks()).render(),
            "ID   NAME          ROLES   TASKS   CONNECTED\n\
             f1   batch         -       0       no\n\
             f2   strata-apps   *,web   3       yes\n"
        );
        assert!(agents_table(&State::default()).is_empty());
    }
}
