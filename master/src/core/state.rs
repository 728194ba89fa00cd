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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use strata_proto::Resources;
use strata_proto::states::state_from_i32;
use strata_proto::v1::{self, TaskState};

use super::allocator::{AgentKey, FrameworkKey};
use super::api::ConnId;
use super::registry::{LOST_TASKS, Maintenance};

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
    /// Marked gone by an operator: its tasks were reported TASK_GONE_BY_OPERATOR and
    /// it may never register again. Kept (in the registry too) to refuse it.
    Gone,
}

impl AgentStatus {
    pub fn name(self) -> &'static str {
        match self {
            AgentStatus::Active => "ACTIVE",
            AgentStatus::Disconnected => "DISCONNECTED",
            AgentStatus::Unreachable => "UNREACHABLE",
            AgentStatus::Recovering => "RECOVERING",
            AgentStatus::Gone => "GONE",
        }
    }
}

#[derive(Debug)]
pub struct Agent {
    pub key: AgentKey,
    pub id: String,
    pub hostname: String,
    /// The principal the agent registered as; its id is bound to it ("" when it
    /// registered without authentication: the next authenticated agent claims it).
    pub principal: String,
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
    /// Set by an operator (kept in the registry): its resources are not offered.
    pub maintenance: Option<Maintenance>,
    /// Its dynamic reservations and persistent volumes (kept in the registry), part
    /// of `total`.
    pub checkpointed: super::volumes::Checkpointed,
    /// The bytes each of its volumes holds, by (role, persistence id), as it last
    /// reported them.
    pub volume_usage: std::collections::BTreeMap<(String, String), u64>,
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
    /// Tasks that ended but whose terminal update the framework has not acknowledged.
    pub ended: EndedTasks,
    /// Tasks it was told are TASK_LOST that came back with their agent (frameworks
    /// that are not partition aware).
    pub lost: LostTasks,
    pub offers: BTreeSet<OfferSeq>,
    pub used: Resources,
    pub next_heartbeat: Instant,
}

impl Framework {
    pub fn conn(&self) -> Option<ConnId> {
        self.subscription.as_ref().map(|s| s.conn)
    }
}

/// A task that reached a terminal state whose update the framework has not
/// acknowledged yet. As in Mesos, the framework still knows it: reconciliation answers
/// with its terminal state (not GONE or LOST), and the agent's retries of the update
/// are forwarded until one is acknowledged. Its resources were released when it ended.
#[derive(Debug, Clone)]
pub struct EndedTask {
    pub agent: AgentKey,
    pub agent_id: String,
    /// The terminal status. Its uuid is the one whose acknowledgement forgets the
    /// task; empty when the master learned of the end from a re-registering agent and
    /// the agent's update has not arrived yet.
    pub status: v1::TaskStatus,
    /// Insertion number: the oldest are forgotten first when there are too many.
    seq: u64,
}

/// The tasks of a framework that is not partition aware that it was told are
/// TASK_LOST (their agent was unreachable) and that came back with their agent. The
/// master kills them; LOST stays their one end for the framework: the master
/// acknowledges their updates itself and answers reconciliation with LOST. Keyed by
/// task id, with the agent that holds the task; bounded by [`LOST_TASKS`], oldest
/// forgotten first.
#[derive(Debug, Default)]
pub struct LostTasks {
    by_id: BTreeMap<String, AgentKey>,
    order: VecDeque<String>,
}

impl LostTasks {
    pub fn insert(&mut self, task_id: &str, agent: AgentKey) {
        if self.by_id.insert(task_id.to_string(), agent).is_none() {
            self.order.push_back(task_id.to_string());
        }
        while self.by_id.len() > LOST_TASKS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    /// Whether `task_id` on `agent` is one of them.
    pub fn holds(&self, task_id: &str, agent: AgentKey) -> bool {
        self.by_id.get(task_id) == Some(&agent)
    }

    /// Forgets `task_id` (the framework launched a new task with that id); whether
    /// it was one.
    pub fn remove(&mut self, task_id: &str) -> bool {
        let was = self.by_id.remove(task_id).is_some();
        if was {
            self.order.retain(|t| t != task_id);
        }
        was
    }
}

/// How many ended, unacknowledged tasks a framework keeps; beyond that the oldest
/// are forgotten (reconciliation then answers for them as for unknown tasks). A
/// framework that acknowledges its updates keeps next to none.
pub const ENDED_TASKS: usize = 10_000;

/// The ended, unacknowledged tasks of one framework, bounded by [`ENDED_TASKS`].
#[derive(Debug, Default)]
pub struct EndedTasks {
    by_id: BTreeMap<String, EndedTask>,
    /// (seq, task id), oldest first; entries whose task was forgotten or replaced
    /// since are skipped (and compacted away when they pile up).
    order: VecDeque<(u64, String)>,
    next_seq: u64,
}

impl EndedTasks {
    pub fn get(&self, task_id: &str) -> Option<&EndedTask> {
        self.by_id.get(task_id)
    }

    pub fn get_mut(&mut self, task_id: &str) -> Option<&mut EndedTask> {
        self.by_id.get_mut(task_id)
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.by_id.contains_key(task_id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    #[cfg(test)]
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    /// The ended tasks by id, from the first id after `after` (all with `None`).
    pub fn after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a EndedTask)> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        self.by_id.range::<str, _>((start, Bound::Unbounded))
    }

    /// Remembers an ended task (replacing an earlier entry of the same id).
    pub fn insert(&mut self, agent: AgentKey, agent_id: String, status: v1::TaskStatus) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let task_id = status.task_id.clone();
        self.order.push_back((seq, task_id.clone()));
        self.by_id.insert(
            task_id,
            EndedTask {
                agent,
                agent_id,
                status,
                seq,
            },
        );
        while self.by_id.len() > ENDED_TASKS {
            let Some((seq, id)) = self.order.pop_front() else {
                break;
            };
            if self.by_id.get(&id).is_some_and(|t| t.seq == seq) {
                self.by_id.remove(&id);
            }
        }
        self.compact();
    }

    /// Forgets `task_id` if its terminal update has this `uuid`; returns whether it did.
    pub fn acknowledge(&mut self, task_id: &str, uuid: &str) -> bool {
        let matches = self
            .by_id
            .get(task_id)
            .is_some_and(|t| !uuid.is_empty() && t.status.uuid == uuid);
        if matches {
            self.by_id.remove(task_id);
            self.compact();
        }
        matches
    }

    /// Forgets the tasks `drop` picks.
    pub fn forget_where(&mut self, mut drop: impl FnMut(&EndedTask) -> bool) {
        self.by_id.retain(|_, t| !drop(t));
        self.compact();
    }

    /// Drops stale order entries at the front, and rebuilds the order when stale
    /// entries elsewhere outnumber the live ones: memory stays proportional to the
    /// tasks kept.
    fn compact(&mut self) {
        while let Some((seq, id)) = self.order.front() {
            if self.by_id.get(id).is_some_and(|t| t.seq == *seq) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.by_id.len() + 16 {
            let by_id = &self.by_id;
            self.order
                .retain(|(seq, id)| by_id.get(id).is_some_and(|t| t.seq == *seq));
        }
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
    /// The latest resource usage its agent reported (`UsageReport`), for `/state`.
    pub statistics: Option<v1::ResourceStatistics>,
    /// How it can be discovered (`TaskInfo.discovery`), for `/state`, the operator API
    /// and its event stream.
    pub discovery: Option<v1::DiscoveryInfo>,
    /// Whether it has a health check (`TaskInfo.health_check`).
    pub health_checked: bool,
    /// Being killed after leaving the service proxies' rotation: it stays
    /// TASK_KILLING whatever TASK_RUNNING update comes (a health result) until it ends.
    pub leaving: bool,
    /// The configs and secrets it references, versions pinned (`TaskInfo.objects`):
    /// what its agent may fetch for it.
    pub objects: Vec<v1::ObjectRef>,
    /// Its status history since this master knew it (the dashboard's task page): the
    /// first entry and the latest [`HISTORY`] - 1 changes of state, reason, health or
    /// message.
    pub history: Vec<StatusEntry>,
}

/// How many status uuids a task remembers.
pub const SEEN_UUIDS: usize = 8;

/// How many entries a task's status history keeps.
pub const HISTORY: usize = 16;

/// The longest status message a history entry keeps, in bytes.
const HISTORY_MESSAGE: usize = 256;

/// One status of a task's history.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEntry {
    pub state: TaskState,
    /// `TaskStatus.reason` (0: none).
    pub reason: i32,
    pub message: String,
    pub healthy: Option<bool>,
    /// Unix seconds at which the master applied it.
    pub unix: f64,
}

/// At most [`HISTORY_MESSAGE`] bytes of `message`, cut at a character boundary.
fn kept_message(message: &str) -> &str {
    if message.len() <= HISTORY_MESSAGE {
        return message;
    }
    let mut end = HISTORY_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl StatusEntry {
    /// A task's entry for `status`, applied at `unix`.
    pub fn of(status: &v1::TaskStatus, unix: f64) -> StatusEntry {
        StatusEntry {
            state: state_from_i32(status.state),
            reason: status.reason,
            message: kept_message(&status.message).to_string(),
            healthy: status.healthy,
            unix,
        }
    }
}

impl Task {
    /// Adds `status` to the history unless it repeats the latest entry (a retried
    /// update, a health result that did not change): the first entry is kept, then the
    /// latest ones. A repeat costs no allocation (this runs for every update).
    pub fn record(&mut self, status: &v1::TaskStatus, unix: f64) {
        if let Some(last) = self.history.last()
            && last.state == state_from_i32(status.state)
            && last.reason == status.reason
            && last.healthy == status.healthy
            && last.message == kept_message(&status.message)
        {
            return;
        }
        if self.history.len() >= HISTORY {
            self.history.remove(1);
        }
        self.history.push(StatusEntry::of(status, unix));
    }
}

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
    pub object_fetches: u64,
    pub object_fetches_refused: u64,
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
