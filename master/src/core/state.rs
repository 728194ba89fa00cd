//! The records the master keeps: agents, frameworks, tasks and outstanding offers,
//! with their status enums.
//!
//! ```text
//!   Agent ──tasks──▶ (FrameworkKey, task id) ──▶ Framework.tasks[task id]: Task
//!     │                                            │
//!     └──offers──▶ offer id ◀────────offers────────┘   Master.offers[offer id]: Offer
//! ```
//!
//! Indices in both directions are kept in step by the helpers in `tasks.rs` and
//! `offers.rs`. `used` sums are maintained incrementally, so snapshots and metrics
//! never rescan tasks; `offered` sums are added up from the outstanding offers when a
//! snapshot asks, which keeps the offer hot path free of resource arithmetic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use strata_proto::Resources;
use strata_proto::v1::{self, TaskState};

use super::allocator::{AgentKey, FrameworkKey};
use super::api::ConnId;

/// Where an agent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    /// Registered and connected: its resources are offered.
    Active,
    /// Its stream closed; its tasks are kept until the ping timeout makes it unreachable.
    Disconnected,
    /// Silent for too long: its resources left the pool and its tasks were reported
    /// UNREACHABLE or LOST. It may come back.
    Unreachable,
    /// Known from the registry after a master restart and not re-registered yet.
    Recovering,
}

impl AgentStatus {
    pub fn name(self) -> &'static str {
        match self {
            AgentStatus::Active => "ACTIVE",
            AgentStatus::Disconnected => "DISCONNECTED",
            AgentStatus::Unreachable => "UNREACHABLE",
            AgentStatus::Recovering => "RECOVERING",
        }
    }
}

#[derive(Debug)]
pub struct Agent {
    pub key: AgentKey,
    pub id: String,
    pub hostname: String,
    pub address: String,
    pub attributes: Vec<v1::Attribute>,
    pub total: Resources,
    pub status: AgentStatus,
    /// The agent's current stream, when connected.
    pub conn: Option<ConnId>,
    /// The latest message from the agent: the unreachable timeout runs from here.
    pub last_seen: Instant,
    /// For `Recovering` agents: when they are marked unreachable.
    pub reregister_deadline: Option<Instant>,
    pub registered_unix: f64,
    pub offers: BTreeSet<OfferSeq>,
    /// Tasks the master believes are on this agent (non-terminal, including
    /// UNREACHABLE ones).
    pub tasks: BTreeSet<(FrameworkKey, String)>,
    pub used: Resources,
}

impl Agent {
    pub fn is_connected(&self) -> bool {
        self.conn.is_some() && self.status == AgentStatus::Active
    }
}

/// The current subscription of a framework.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub conn: ConnId,
    pub stream_id: String,
}

#[derive(Debug)]
pub struct Framework {
    pub key: FrameworkKey,
    pub id: String,
    /// The latest FrameworkInfo, with `id` filled in.
    pub info: v1::FrameworkInfo,
    /// Validated roles (`["*"]` when the info named none).
    pub roles: Vec<String>,
    pub partition_aware: bool,
    /// Connected and active while `Some`.
    pub subscription: Option<Subscription>,
    /// While disconnected (or recovered and not re-subscribed): when the framework
    /// is removed and its tasks killed.
    pub failover_deadline: Option<Instant>,
    pub suppressed: BTreeSet<String>,
    pub tasks: BTreeMap<String, Task>,
    pub offers: BTreeSet<OfferSeq>,
    pub used: Resources,
    pub next_heartbeat: Instant,
}

impl Framework {
    pub fn conn(&self) -> Option<ConnId> {
        self.subscription.as_ref().map(|s| s.conn)
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub framework: FrameworkKey,
    pub framework_id: String,
    pub agent: AgentKey,
    pub agent_id: String,
    /// The role its resources are allocated under.
    pub role: String,
    pub resources: Resources,
    pub kill_policy: Option<v1::KillPolicy>,
    pub state: TaskState,
    pub last_status: Option<v1::TaskStatus>,
    /// Recent status update uuids applied, to recognise retries.
    pub seen_uuids: Vec<String>,
    /// A KILL that could not be delivered (agent disconnected): sent again when the
    /// agent re-registers with the task.
    pub kill_pending: Option<Option<v1::KillPolicy>>,
    pub updated_unix: f64,
}

/// How many status uuids a task remembers.
pub const SEEN_UUIDS: usize = 8;

/// The master's number for an offer; its id on the wire is `<master id>-O<seq>`.
pub type OfferSeq = u64;

#[derive(Debug, Clone)]
pub struct Offer {
    /// Its id is `Master::offer_id(seq)`.
    pub seq: OfferSeq,
    pub framework: FrameworkKey,
    pub agent: AgentKey,
    pub role: String,
    pub resources: Resources,
}

/// Monotonic counters behind `Metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub tasks_finished: u64,
    pub tasks_failed: u64,
    pub tasks_killed: u64,
    pub tasks_lost: u64,
    pub tasks_error: u64,
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub calls_refused: u64,
    pub allocation_runs: u64,
}

impl Counters {
    /// Counts a task reaching a terminal state.
    pub fn count_terminal(&mut self, state: TaskState) {
        match state {
            TaskState::TaskFinished => self.tasks_finished += 1,
            TaskState::TaskFailed => self.tasks_failed += 1,
            TaskState::TaskKilled => self.tasks_killed += 1,
            TaskState::TaskError => self.tasks_error += 1,
            TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator => self.tasks_lost += 1,
            _ => {}
        }
    }
}
