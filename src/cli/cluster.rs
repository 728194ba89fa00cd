//! `strata agent list` and `strata framework list`: the cluster as the master's
//! operator API (`GetState`, `GetFrameworks`) shows it; `strata framework teardown`
//! (`TeardownFramework`); `strata agent
//! deactivate|drain|reactivate|gone`: maintenance through the same API
//! (`DeactivateAgent`, `DrainAgent`, `ReactivateAgent`, `MarkAgentGone`).

use std::collections::BTreeMap;
use std::io::Write;

use strata_proto::resources::Value;
use strata_proto::{Resources, Scalar};

use super::Global;
use super::master_client::{
    AgentAction, AgentStatus, Framework, MasterClient, ResourceAction, State,
};
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
    /// Reserve unused resources of an agent for a role (a dynamic reservation): they
    /// are offered only to that role until unreserved, across agent and master
    /// restarts. Needs the `reserve_resources` ACL for the role.
    Reserve {
        /// The agent's id (`strata agent list`).
        agent_id: String,
        /// What to reserve, in the flag form: `cpus:1;mem:512;disk:2048`, a MOUNT disk
        /// whole as `disk[MOUNT:/mnt/d1]:1000`.
        resources: String,
        /// The role to reserve them for.
        #[arg(long)]
        role: String,
    },
    /// Release a dynamic reservation of an agent: the resources become unreserved
    /// again. Disk that volumes are made of cannot be released (destroy the volumes
    /// first), nor an agent's static reservation (its --resources). Needs the
    /// `unreserve_resources` ACL for the role.
    Unreserve {
        /// The agent's id (`strata agent list`).
        agent_id: String,
        /// What to release, in the flag form: `cpus:1;mem:512;disk:2048`.
        resources: String,
        /// The role they are reserved for.
        #[arg(long)]
        role: String,
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
            AgentCommand::Reserve {
                agent_id,
                resources,
                role,
            } => {
                let action = ResourceAction::Reserve;
                return reserve_on(global, action, &agent_id, &resources, &role).await;
            }
            AgentCommand::Unreserve {
                agent_id,
                resources,
                role,
            } => {
                let action = ResourceAction::Unreserve;
                return reserve_on(global, action, &agent_id, &resources, &role).await;
            }
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

/// The resources of `strata agent reserve|unreserve`, reserved for `role`. Refused
/// before anything is sent: text that does not parse, no resources, a role that is
/// empty or `*`, a role in the text other than `role`, a persistent volume.
pub fn reservation(text: &str, role: &str) -> anyhow::Result<Resources> {
    let role = role.trim();
    if role.is_empty() || role == "*" {
        anyhow::bail!(
            "--role must name a role ('{role}' is none): resources are reserved for a role"
        );
    }
    let parsed = Resources::parse(text)?;
    if parsed.is_empty() {
        anyhow::bail!("no resources in '{text}': give e.g. 'cpus:1;mem:512;disk:2048'");
    }
    if let Some(e) = parsed
        .entries()
        .iter()
        .find(|e| e.role.as_deref().is_some_and(|r| r != role))
    {
        anyhow::bail!(
            "'{}' names role '{}' but --role is '{role}'",
            Resources::of_entry(e.clone()),
            e.role.as_deref().unwrap_or_default()
        );
    }
    if parsed.volumes().next().is_some() {
        anyhow::bail!("'{parsed}' holds a persistent volume: use `strata volume` for volumes");
    }
    Ok(parsed.with_role(Some(role)))
}

/// `strata agent reserve|unreserve`: checks the resources, then [`reserve`] on the
/// master of `global`, printing to stdout.
async fn reserve_on(
    global: &Global,
    action: ResourceAction,
    agent_id: &str,
    resources: &str,
    role: &str,
) -> anyhow::Result<u8> {
    let resources = reservation(resources, role)?;
    let master = global.master_client()?;
    let mut out = std::io::stdout();
    reserve(
        &master,
        action,
        agent_id,
        role,
        &resources,
        global.output,
        &mut out,
    )
    .await
}

/// `ReserveResources` or `UnreserveResources` on one agent, then a line saying what
/// it did (on `out`).
pub async fn reserve(
    master: &MasterClient,
    action: ResourceAction,
    agent_id: &str,
    role: &str,
    resources: &Resources,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    master
        .resource_operation(action, agent_id, resources.to_proto())
        .await?;
    let plain = resources.with_role(None);
    match output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "agent_id": agent_id,
                "action": action.as_str(),
                "role": role,
                "resources": plain,
            }))?
        )?,
        Output::Table => match action {
            ResourceAction::Unreserve => writeln!(
                out,
                "agent {agent_id}: released {plain} reserved for role {role} (now unreserved)"
            )?,
            _ => writeln!(out, "agent {agent_id}: reserved {plain} for role {role}")?,
        },
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

/// An agent's reservations by role: `db(cpus:1,mem:512M,disk:2G) web(cpus:0.5)`, the
/// disk of its volumes included; `-` when it has none.
pub fn reservations(total: &Resources) -> String {
    let mut by_role: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
    let mut scalars: BTreeMap<(&str, &str), Scalar> = BTreeMap::new();
    for e in total.entries() {
        let Some(role) = e.role.as_deref() else {
            continue;
        };
        match &e.value {
            Value::Scalar(v) => *scalars.entry((role, e.name.as_str())).or_default() += *v,
            Value::Ranges(r) => {
                let ranges: Vec<String> = r
                    .ranges()
                    .iter()
                    .map(|&(b, e)| {
                        if b == e {
                            b.to_string()
                        } else {
                            format!("{b}-{e}")
                        }
                    })
                    .collect();
                by_role
                    .entry(role)
                    .or_default()
                    .push((e.name.as_str(), format!("[{}]", ranges.join(","))));
            }
        }
    }
    for ((role, name), v) in scalars {
        let text = match name {
            "mem" | "disk" => format_mb(v.as_f64()),
            _ => format_number(v.as_f64()),
        };
        by_role.entry(role).or_default().push((name, text));
    }
    if by_role.is_empty() {
        return "-".to_string();
    }
    /// cpus, mem, disk, gpus, then the rest (ports) by name.
    fn rank(name: &str) -> (usize, &str) {
        let known = ["cpus", "mem", "disk", "gpus"];
        (
            known.iter().position(|k| *k == name).unwrap_or(known.len()),
            name,
        )
    }
    by_role
        .into_iter()
        .map(|(role, mut parts)| {
            parts.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)));
            let parts: Vec<String> = parts.into_iter().map(|(n, v)| format!("{n}:{v}")).collect();
            format!("{role}({})", parts.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ID HOSTNAME ADDRESS CPUS MEM TASKS STATE VOLUMES RESERVED`, resources as
/// used/total (`-` for an agent whose resources the master does not know yet:
/// RECOVERING after a master restart), tasks counting those that have not ended,
/// reservations by role ([`reservations`]) last as their cell may hold spaces.
pub fn agents_table(state: &State) -> Table {
    let mut table = Table::new(&[
        "id", "hostname", "address", "cpus", "mem", "tasks", "state", "volumes", "reserved",
    ]);
    for a in &state.agents {
        let tasks = state
            .tasks
            .iter()
            .filter(|t| t.agent_id == a.id && !t.is_terminal())
            .count();
        let unknown = a.status == AgentStatus::Recovering && a.total.is_empty();
        let (cpus, mem, volumes, reserved) = if unknown {
            ("-".into(), "-".into(), "-".into(), "-".into())
        } else {
            (
                used_of_total(&a.used, &a.total, "cpus", format_number),
                used_of_total(&a.used, &a.total, "mem", format_mb),
                a.total.volumes().count().to_string(),
                reservations(&a.total),
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
            volumes,
            reserved,
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
            "ID   HOSTNAME   ADDRESS         CPUS    MEM       TASKS   STATE                    VOLUMES   RESERVED\n\
             a1   node1      10.0.0.1:5051   1.5/4   512M/8G   2       ACTIVE                   0         -\n\
             a2   node2      10.0.0.2:5051   0/0     0M/0M     0       UNREACHABLE (DRAINING)   0         -\n"
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
            "ID   HOSTNAME   ADDRESS   CPUS   MEM   TASKS   STATE        VOLUMES   RESERVED\n\
             a1   node1      x:1       -      -     0       RECOVERING   -         -\n"
        );
    }

    #[test]
    fn agents_show_their_reservations_by_role_and_their_volumes() {
        let mut a = agent("a1", "node1", "x:1", "ACTIVE");
        a.total = wire(
            "cpus:0.5;cpus(db):2;cpus(web):0.5;mem:1024;mem(db):512;disk:100;disk(db):1024;\
             ports(db):[80-80,8000-8009]",
        );
        for (id, size) in [("pg_0_0", 1024.0), ("data", 512.0)] {
            let v = strata_framework_sdk::ops::persistent_volume("db", id, "data", size, false)
                .unwrap();
            a.total.extend(v.to_proto());
        }
        let state = State::try_from(v1::GetStateResponse {
            agents: vec![a],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            agents_table(&state).render(),
            "ID   HOSTNAME   ADDRESS   CPUS   MEM       TASKS   STATE    VOLUMES   RESERVED\n\
             a1   node1      x:1       0/3    0M/1.5G   0       ACTIVE   2         \
             db(cpus:2,mem:512M,disk:2.5G,ports:[80,8000-8009]) web(cpus:0.5)\n"
        );
        assert_eq!(reservations(&Resources::parse("cpus:1").unwrap()), "-");
    }

    #[test]
    fn reservations_are_checked_before_anything_is_sent() {
        let r = reservation("cpus:1;mem:512;disk:2048", "db").unwrap();
        assert_eq!(r.to_string(), "cpus(db):1;disk(db):2048;mem(db):512");
        // The role may be written in the text too, if it is the same.
        assert_eq!(
            reservation("cpus(db):1", "db").unwrap().to_string(),
            "cpus(db):1"
        );
        let mount = reservation("disk[MOUNT:/mnt/d1]:1000", "db").unwrap();
        assert_eq!(mount.to_string(), "disk(db)[MOUNT:/mnt/d1]:1000");
        let err = |text: &str, role: &str| reservation(text, role).unwrap_err().to_string();
        assert!(err("cpus(web):1", "db").contains("names role 'web' but --role is 'db'"));
        assert!(err("cpus:1", "*").contains("--role must name a role"));
        assert!(err("cpus:1", " ").contains("--role must name a role"));
        assert!(err("", "db").contains("no resources"));
        assert!(err("cpus:x", "db").contains("not a number"));
        assert!(err("bananas:1", "db").contains("unknown resource"));
    }

    #[test]
    fn reserve_and_unreserve_parse() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: AgentCommand,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
                .map(|c| c.command)
        };
        match parse(&["reserve", "a1", "cpus:1;disk:2048", "--role", "db"]).unwrap() {
            AgentCommand::Reserve {
                agent_id,
                resources,
                role,
            } => assert_eq!(
                (agent_id.as_str(), resources.as_str(), role.as_str()),
                ("a1", "cpus:1;disk:2048", "db")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["unreserve", "a1", "cpus:1", "--role", "db"]).unwrap(),
            AgentCommand::Unreserve { .. }
        ));
        // The role is required.
        assert!(parse(&["reserve", "a1", "cpus:1"]).is_err());
    }

    #[tokio::test]
    async fn reserve_and_unreserve_say_what_they_did_or_why_not() {
        use crate::cli::master_client::tests::FakeMaster;
        let fake = FakeMaster::default();
        let addr = fake.clone().serve().await;
        let master = MasterClient::new(&addr);
        let r = reservation("cpus:1;mem:512;disk:2048", "db").unwrap();
        let run = |action, output| {
            let master = &master;
            let r = &r;
            async move {
                let mut out = Vec::new();
                let result = reserve(master, action, "a1", "db", r, output, &mut out).await;
                (result, String::from_utf8(out).unwrap())
            }
        };
        let (result, out) = run(ResourceAction::Reserve, Output::Table).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            out,
            "agent a1: reserved cpus:1;disk:2048;mem:512 for role db\n"
        );
        let (result, out) = run(ResourceAction::Unreserve, Output::Table).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            out,
            "agent a1: released cpus:1;disk:2048;mem:512 reserved for role db (now unreserved)\n"
        );
        let (result, out) = run(ResourceAction::Reserve, Output::Json).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::json!({
                "agent_id": "a1", "action": "reserve", "role": "db",
                "resources": {"cpus": 1.0, "disk": 2048.0, "mem": 512.0},
            })
        );
        let calls = fake.resource_calls.lock().unwrap().clone();
        let names: Vec<&str> = calls.iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            ["ReserveResources", "UnreserveResources", "ReserveResources"]
        );
        assert_eq!(calls[0].1.agent_id, "a1");
        assert_eq!(Resources::try_from_proto(&calls[0].1.resources).unwrap(), r);

        // Refusals: the master's reason as it is; a denied ACL says whose.
        let refused = "UNRESERVE on agent 'a1' refused: 'cpus(db):1' is not dynamically reserved";
        *fake.refuse.lock().unwrap() = Some(tonic::Status::failed_precondition(refused));
        let (result, out) = run(ResourceAction::Unreserve, Output::Table).await;
        assert_eq!(result.unwrap_err().to_string(), refused);
        assert_eq!(out, "");
        *fake.refuse.lock().unwrap() = Some(tonic::Status::permission_denied(
            "'anonymous' may not reserve_resources for role 'db'",
        ));
        let (result, _) = run(ResourceAction::Reserve, Output::Table).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "the Strata master at {addr} does not permit this call to 'anonymous': \
                 'anonymous' may not reserve_resources for role 'db'"
            )
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
