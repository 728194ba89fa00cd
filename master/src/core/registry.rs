//! The registry records: what the core persists through the `Store` trait and loads
//! back after a master restart (admitted agents, frameworks, maintenance, weights,
//! removed frameworks, tasks told LOST), and the bounds on what it keeps.
//!
//! ```text
//!   Master ──Effect::Persist(RegistryOp)──▶ driver ──▶ Store::append
//!   Store::load ──▶ Registry (the fold of every RegistryOp, `Registry::apply`) ──▶ Master::new
//! ```
//!
//! It depends on nothing else in the core: `api` (the `Persist` effect) and `state`
//! (the in-memory records) build on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An agent under maintenance, as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Maintenance {
    /// Not offered; tasks keep running.
    Deactivated,
    /// Not offered; its tasks are killed (also those it reports when it re-registers).
    Draining {
        /// The longest grace period between SIGTERM and SIGKILL, seconds.
        max_grace_period_seconds: Option<f64>,
    },
}

/// A change to the registry: what must survive a master restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegistryOp {
    /// An agent was admitted (first registration) or re-admitted.
    AdmitAgent {
        id: String,
        hostname: String,
        /// The principal the agent registered as (its certificate's); its id is bound
        /// to it. Empty: registered without authentication.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        principal: String,
    },
    /// An agent was marked unreachable at `unix_time` seconds.
    MarkUnreachable { id: String, unix_time: f64 },
    /// An agent was removed for good.
    RemoveAgent { id: String },
    /// A framework subscribed; `info` is its latest FrameworkInfo, prost-encoded.
    AddFramework { id: String, info: Vec<u8> },
    /// A framework was torn down or its failover timeout passed.
    RemoveFramework { id: String },
    /// An operator marked an agent gone.
    MarkAgentGone { id: String },
    /// An operator set a role's weight.
    SetWeight { role: String, weight: f64 },
    /// An operator put an agent under maintenance (`Some`) or ended it (`None`).
    SetMaintenance {
        id: String,
        maintenance: Option<Maintenance>,
    },
    /// A task its framework (not partition aware) was told is TASK_LOST came back
    /// with its agent: LOST stays its end for that framework (`LostTasks`).
    MarkTaskLost {
        framework_id: String,
        task_id: String,
        agent_id: String,
    },
    /// The framework launched a new task with the id of a task it was told is LOST.
    ForgetLostTask {
        framework_id: String,
        task_id: String,
    },
}

/// How many tasks told TASK_LOST that came back a framework remembers, in memory
/// (`LostTasks`) and in the registry.
pub const LOST_TASKS: usize = 10_000;

/// A task its framework was told is LOST, in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostTaskRecord {
    pub framework_id: String,
    pub task_id: String,
    pub agent_id: String,
}

/// How many removed framework ids are remembered, in memory and in the registry (to
/// refuse their re-subscription, kill their tasks agents still report, and acknowledge
/// their stray updates, across master restarts too).
pub const REMOVED_FRAMEWORKS: usize = 10_000;

/// The registry as loaded at start (the fold of every `RegistryOp` persisted so far).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Admitted agents: id → hostname.
    pub agents: BTreeMap<String, String>,
    /// Unreachable agents: id → unix time they were marked.
    pub unreachable: BTreeMap<String, f64>,
    /// Frameworks: id → prost-encoded FrameworkInfo.
    pub frameworks: BTreeMap<String, Vec<u8>>,
    /// Role weights operators set (they override the `--weights` flag).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Agents under maintenance: id → what.
    #[serde(default)]
    pub maintenance: BTreeMap<String, Maintenance>,
    /// Frameworks removed (torn down, or their failover timeout passed), oldest first,
    /// the last [`REMOVED_FRAMEWORKS`] of them.
    #[serde(default)]
    pub removed_frameworks: Vec<String>,
    /// Agents an operator marked gone: never admitted again.
    #[serde(default)]
    pub gone: BTreeSet<String>,
    /// Tasks told LOST that came back with their agent, oldest first, the last
    /// [`LOST_TASKS`] of them.
    #[serde(default)]
    pub lost_tasks: Vec<LostTaskRecord>,
    /// The principal each agent registered as (agents registered without
    /// authentication have none).
    #[serde(default)]
    pub agent_principals: BTreeMap<String, String>,
}

impl Registry {
    /// Applies one operation.
    pub fn apply(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::AdmitAgent {
                id,
                hostname,
                principal,
            } => {
                self.unreachable.remove(id);
                self.agents.insert(id.clone(), hostname.clone());
                if !principal.is_empty() {
                    self.agent_principals.insert(id.clone(), principal.clone());
                }
            }
            RegistryOp::MarkUnreachable { id, unix_time } => {
                self.unreachable.insert(id.clone(), *unix_time);
            }
            RegistryOp::RemoveAgent { id } => {
                self.agents.remove(id);
                self.unreachable.remove(id);
                self.maintenance.remove(id);
                self.agent_principals.remove(id);
            }
            RegistryOp::AddFramework { id, info } => {
                self.frameworks.insert(id.clone(), info.clone());
            }
            RegistryOp::RemoveFramework { id } => {
                self.frameworks.remove(id);
                self.lost_tasks.retain(|t| &t.framework_id != id);
                if !self.removed_frameworks.contains(id) {
                    self.removed_frameworks.push(id.clone());
                    let over = self
                        .removed_frameworks
                        .len()
                        .saturating_sub(REMOVED_FRAMEWORKS);
                    self.removed_frameworks.drain(..over);
                }
            }
            RegistryOp::MarkAgentGone { id } => {
                self.agents.remove(id);
                self.unreachable.remove(id);
                self.maintenance.remove(id);
                self.gone.insert(id.clone());
            }
            RegistryOp::SetWeight { role, weight } => {
                self.weights.insert(role.clone(), *weight);
            }
            RegistryOp::SetMaintenance { id, maintenance } => match maintenance {
                Some(m) => {
                    self.maintenance.insert(id.clone(), *m);
                }
                None => {
                    self.maintenance.remove(id);
                }
            },
            RegistryOp::MarkTaskLost {
                framework_id,
                task_id,
                agent_id,
            } => {
                self.lost_tasks
                    .retain(|t| !(&t.framework_id == framework_id && &t.task_id == task_id));
                self.lost_tasks.push(LostTaskRecord {
                    framework_id: framework_id.clone(),
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                });
                let over = self.lost_tasks.len().saturating_sub(LOST_TASKS);
                self.lost_tasks.drain(..over);
            }
            RegistryOp::ForgetLostTask {
                framework_id,
                task_id,
            } => {
                self.lost_tasks
                    .retain(|t| !(&t.framework_id == framework_id && &t.task_id == task_id));
            }
        }
    }
}
