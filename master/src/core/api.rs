//! The types that cross the core's boundary: inputs, effects, errors, configuration
//! and the state snapshot served to operators. The registry records that `Effect::Persist`
//! carries live in [`super::registry`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use strata_proto::Resources;
use strata_proto::v1;

use super::registry::RegistryOp;

/// A connection chosen by the driver: one framework subscription stream or one agent
/// stream. Never reused within one master process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConnId(pub u64);

/// Everything that can happen to the master.
#[derive(Debug)]
pub enum Input {
    /// A framework opened a Subscribe stream on `conn`. The core answers with
    /// `Effect::ToFramework{conn, SUBSCRIBED}` (or an ERROR event and `CloseFramework`).
    Subscribe {
        conn: ConnId,
        request: v1::SubscribeRequest,
    },
    /// A framework's event stream closed (client went away).
    FrameworkDisconnected { conn: ConnId },
    /// An agent opened a stream on `conn` and sent Register as its first message.
    /// `peer` is the remote address when known.
    AgentRegister {
        conn: ConnId,
        register: v1::Register,
        peer: Option<String>,
    },
    /// Any later message on an agent stream (status updates, heartbeats, messages).
    AgentMessage {
        conn: ConnId,
        message: v1::AgentMessage,
    },
    /// An agent stream closed.
    AgentDisconnected { conn: ConnId },
    /// A unary scheduler call. Its header is checked (framework known, stream current)
    /// before anything else; the result is returned by `handle`.
    Call { header: v1::CallHeader, call: Call },
    /// An operator's call (role weights, agent maintenance); the result is returned by
    /// `handle`.
    Operator(OperatorCall),
    /// Timers: allocation batches, heartbeats, agent and framework timeouts, filter and
    /// offer expiry. The driver sends it every 100 ms.
    Tick,
    /// Goes on with work left over from an earlier input (a large implicit
    /// reconciliation, answered in chunks so that no input holds the core long). The
    /// driver sends it while [`super::Master::has_pending_work`] and nothing else
    /// waits; a Tick goes on with it too.
    Continue,
    /// Every service proxy has applied the operator events up to `seq` (the driver
    /// follows their acknowledgements; `u64::MAX` when no proxy follows): kills held
    /// for them go on.
    ServicesSynced { seq: u64 },
}

/// The unary scheduler calls (everything but Subscribe).
#[derive(Debug)]
pub enum Call {
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Revive(v1::ReviveRequest),
    Suppress(v1::SuppressRequest),
    Kill(v1::KillRequest),
    Acknowledge(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Message(v1::MessageRequest),
    Teardown(v1::TeardownRequest),
}

impl Call {
    /// The call's name as the scheduler API spells it, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Accept(_) => "ACCEPT",
            Call::Decline(_) => "DECLINE",
            Call::Revive(_) => "REVIVE",
            Call::Suppress(_) => "SUPPRESS",
            Call::Kill(_) => "KILL",
            Call::Acknowledge(_) => "ACKNOWLEDGE",
            Call::Reconcile(_) => "RECONCILE",
            Call::Message(_) => "MESSAGE",
            Call::Teardown(_) => "TEARDOWN",
        }
    }
}

/// What operators ask of the master (HTTP `/weights` and `/maintenance/*`). What they
/// change is kept in the registry: it survives a master restart.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorCall {
    /// Sets the DRF weight of each named role (positive and finite; roles not named
    /// keep theirs). Overrides the `--weights` flag from then on.
    UpdateWeights(Vec<(String, f64)>),
    /// The agent's resources are no longer offered (outstanding offers are
    /// rescinded); its tasks keep running.
    DeactivateAgent { agent_id: String },
    /// Deactivates the agent and kills every task on it, waiting at most
    /// `max_grace_period` between SIGTERM and SIGKILL (the task's own kill policy
    /// when shorter). The agent is DRAINING while tasks remain, DRAINED after.
    DrainAgent {
        agent_id: String,
        max_grace_period: Option<Duration>,
    },
    /// Ends a deactivation or drain: the agent's resources are offered again.
    ReactivateAgent { agent_id: String },
    /// The agent is gone for good (the machine was decommissioned or wiped): its tasks
    /// are reported TASK_GONE_BY_OPERATOR (TASK_LOST to frameworks that are not
    /// partition aware), and it may never register again. Cannot be undone.
    MarkAgentGone { agent_id: String },
    /// Removes a framework as if it had torn itself down: its tasks are killed and its
    /// id may not subscribe again (Mesos' operator TEARDOWN).
    TeardownFramework { framework_id: String },
    /// RESERVE / UNRESERVE / CREATE / DESTROY on an agent's resources no task uses
    /// (its outstanding offers are rescinded first). The caller (`principal`, who
    /// creates the volumes) was authorized for every role named.
    ResourceOperation {
        agent_id: String,
        kind: super::volumes::OpKind,
        resources: Vec<v1::Resource>,
        principal: String,
    },
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // effects are moved once, straight to a channel
pub enum Effect {
    /// Send an event on a framework's subscription stream.
    ToFramework { conn: ConnId, event: v1::Event },
    /// End a framework's subscription stream (replaced by a newer one, torn down, or
    /// refused after an ERROR event).
    CloseFramework { conn: ConnId },
    /// Send a message down an agent's stream.
    ToAgent {
        conn: ConnId,
        message: v1::MasterMessage,
    },
    /// End an agent's stream (refused registration, replaced by a newer stream).
    CloseAgent { conn: ConnId },
    /// Write to the registry before acting on it further.
    Persist(RegistryOp),
}

/// Why a call was refused. Each maps to one gRPC code (see [`CallError::code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("framework '{0}' is not subscribed: call Subscribe first")]
    UnknownFramework(String),
    #[error(
        "stream id '{got}' is stale for framework '{framework_id}': use the stream id from the latest SUBSCRIBED event"
    )]
    StaleStream { framework_id: String, got: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not (an ACL the core decides, e.g. destroying another's volume).
    #[error("{0}")]
    PermissionDenied(String),
}

/// A gRPC-independent code for a [`CallError`]; the server maps it to `tonic::Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    PermissionDenied,
}

impl CallError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::UnknownFramework(_) | CallError::NotFound(_) => ErrorCode::NotFound,
            CallError::StaleStream { .. } | CallError::FailedPrecondition(_) => {
                ErrorCode::FailedPrecondition
            }
            CallError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            CallError::PermissionDenied(_) => ErrorCode::PermissionDenied,
        }
    }
}

/// Tunables of the core, set from the master's flags.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This master's id (fresh on each start), sent in SUBSCRIBED and Registered.
    pub master_id: String,
    /// Batch allocation interval (Mesos: 1 s).
    pub allocation_interval: Duration,
    /// Interval of HEARTBEAT events to frameworks (Mesos: 15 s).
    pub framework_heartbeat_interval: Duration,
    /// How often agents must send a heartbeat (sent to them in Registered) and the
    /// unit of the agent timeout (Mesos agent_ping_timeout: 15 s).
    pub agent_ping_timeout: Duration,
    /// Missed pings after which an agent is unreachable (Mesos: 5).
    pub max_agent_ping_timeouts: u32,
    /// After a master restart, how long registry agents have to re-register before
    /// they are marked unreachable (Mesos: 10 min).
    pub agent_reregister_timeout: Duration,
    /// Default refuse_seconds of DECLINE and of unused resources in ACCEPT (5 s).
    pub default_refuse: Duration,
    /// Role weights (default 1.0).
    pub weights: HashMap<String, f64>,
    /// Rescind offers not answered within this time; `None`: never (Mesos default).
    pub offer_timeout: Option<Duration>,
    /// The one authorizer: which roles a framework's principal may register, and the
    /// users, images and host paths its tasks may use.
    pub authorizer: strata_security::Authorizer,
    /// The most frameworks one principal may have registered at once.
    pub max_frameworks_per_principal: usize,
    /// The most distinct roles the frameworks of one principal may use at once.
    pub max_roles_per_principal: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            master_id: String::new(),
            allocation_interval: Duration::from_secs(1),
            framework_heartbeat_interval: Duration::from_secs(15),
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            agent_reregister_timeout: Duration::from_secs(600),
            default_refuse: Duration::from_secs(5),
            weights: HashMap::new(),
            offer_timeout: None,
            authorizer: strata_security::Authorizer::insecure(),
            max_frameworks_per_principal: 1000,
            max_roles_per_principal: 1000,
        }
    }
}

/// What `GET /state` shows; also converted to the Operator gRPC messages.
#[derive(Debug, Clone, Serialize)]
pub struct StateSnapshot {
    pub master_id: String,
    pub agents: Vec<AgentView>,
    pub frameworks: Vec<FrameworkView>,
    pub tasks: Vec<TaskView>,
    pub roles: Vec<RoleView>,
    pub outstanding_offers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    /// The principal it registered as (`agent:<node id>` of its certificate); empty
    /// when it registered without authentication.
    pub principal: String,
    /// host:port of the agent's HTTP API.
    pub address: String,
    /// `ACTIVE`, `DISCONNECTED` (stream gone, timeout running), `UNREACHABLE`, or
    /// `RECOVERING` (known from the registry after a master restart, not re-registered
    /// yet; its resources are unknown until it does), or `GONE` (marked gone by an
    /// operator: it may never register again).
    pub status: String,
    /// `DEACTIVATED`, `DRAINING` (tasks being killed), `DRAINED`, or none.
    pub maintenance: Option<&'static str>,
    pub attributes: BTreeMap<String, String>,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    /// Unix seconds of the latest (re-)registration.
    pub registered_time: f64,
    /// Its dynamic reservations (part of `total`; static ones come from its flags).
    pub reserved: Resources,
    /// Its persistent volumes.
    pub volumes: Vec<VolumeView>,
}

/// Which tasks a page of tasks shows (the dashboard): each set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// A state's Mesos name, e.g. `TASK_RUNNING`.
    pub state: Option<String>,
    pub framework_id: Option<String>,
    pub agent_id: Option<String>,
    /// The task's name (the container framework names its tasks after their app).
    pub name: Option<String>,
}

/// One entry of a task's status history (the dashboard's task page).
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// e.g. `TASK_RUNNING`.
    pub state: String,
    /// e.g. `REASON_COMMAND_EXITED`; empty when none.
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Unix seconds at which the master applied it.
    pub timestamp: f64,
}

/// A task with what its page shows beyond `/state`: its status history, where its
/// agent is, and whose it is.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    pub task: TaskView,
    /// Oldest first.
    pub statuses: Vec<StatusView>,
    /// The agent's hostname and its HTTP API's `host:port` (empty when the master no
    /// longer knows the agent).
    pub hostname: String,
    pub agent_address: String,
    /// Its framework's principal: the object of `view_tasks` and `access_sandboxes`.
    pub framework_principal: String,
    /// Whether it is live (not among the recently completed).
    pub live: bool,
}

/// One persistent volume as `/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeView {
    pub role: String,
    pub id: String,
    pub container_path: String,
    pub read_only: bool,
    /// MiB.
    pub size: f64,
    /// Who created it.
    pub principal: String,
    /// A MOUNT disk's root; absent: the agent's work-dir disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// As the agent last measured it.
    pub used_bytes: Option<u64>,
    /// The live task using it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The volume resource, as a task names it.
    #[serde(skip)]
    pub resource: v1::Resource,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    /// The principal that registered it (only it may fail over as it).
    pub principal: String,
    pub user: String,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
    pub failover_timeout_seconds: f64,
    pub connected: bool,
    pub active: bool,
    pub suppressed_roles: Vec<String>,
    pub used: Resources,
    pub offered: Resources,
    pub task_count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    /// e.g. `TASK_RUNNING`.
    pub state: String,
    pub resources: Resources,
    /// The latest status message and reason (e.g. `REASON_COMMAND_EXITED`), if any.
    pub message: String,
    pub reason: String,
    pub exit_status: Option<i32>,
    /// The latest health check result, when the task has a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Whether the task has a health check (`healthy` is unset until its first result).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub health_checked: bool,
    /// Unix seconds of the latest status.
    pub updated: f64,
    /// The latest resource usage the agent reported for the task (cgroups), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<TaskStatistics>,
    /// How the task can be discovered (`TaskInfo.discovery`), if it says.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_discovery"
    )]
    pub discovery: Option<v1::DiscoveryInfo>,
    /// The configs and secrets it uses, as references with the versions it launched
    /// with (`TaskInfo.objects`; never a value): `kind`, `name`, `version`, and `file`
    /// or `env`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_objects"
    )]
    pub objects: Vec<v1::ObjectRef>,
}

/// A task's object references as `/state` shows them.
fn serialize_objects<S: serde::Serializer>(
    objects: &[v1::ObjectRef],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(objects.len()))?;
    for r in objects {
        let kind = strata_proto::objects::kind_of(r.kind)
            .map_or("object", strata_proto::objects::kind_name);
        let mut entry = serde_json::json!({"kind": kind, "name": r.name, "version": r.version});
        match &r.target {
            Some(v1::object_ref::Target::File(path)) => entry["file"] = path.clone().into(),
            Some(v1::object_ref::Target::Env(var)) => entry["env"] = var.clone().into(),
            None => {}
        }
        seq.serialize_element(&entry)?;
    }
    seq.end()
}

/// A task's discovery info as `/state` shows it: `name`, `visibility`, `environment`,
/// `location`, `version`, `labels`, and `ports` of `number`, `name`, `protocol`,
/// `visibility`, `labels` (empty fields left out).
fn serialize_discovery<S: serde::Serializer>(
    discovery: &Option<v1::DiscoveryInfo>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde_json::{Map, Value, json};
    let Some(d) = discovery else {
        return serializer.serialize_none();
    };
    let visibility = |v: i32| {
        v1::discovery_info::Visibility::try_from(v)
            .ok()
            .filter(|v| *v != v1::discovery_info::Visibility::Unspecified)
            .map(|v| v.as_str_name().to_string())
    };
    let mut out = Map::new();
    let mut put = |key: &str, value: Value| {
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(key.to_string(), value);
        }
    };
    put("name", json!(d.name));
    put("visibility", json!(visibility(d.visibility)));
    put("environment", json!(d.environment));
    put("location", json!(d.location));
    put("version", json!(d.version));
    put("labels", json!(d.labels));
    let ports: Vec<Value> = d
        .ports
        .iter()
        .flat_map(|p| &p.ports)
        .map(|p| {
            let mut port = json!({
                "number": p.number,
                "name": p.name,
                "protocol": if p.protocol.is_empty() { "tcp" } else { p.protocol.as_str() },
            });
            if let Some(v) = visibility(p.visibility) {
                port["visibility"] = json!(v);
            }
            if !p.labels.is_empty() {
                port["labels"] = json!(p.labels);
            }
            port
        })
        .collect();
    put("ports", Value::Array(ports));
    serde::Serialize::serialize(&Value::Object(out), serializer)
}

/// A task's resource usage as `/state` shows it (Mesos' `ResourceStatistics` names).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskStatistics {
    /// Unix seconds when the agent read it.
    pub timestamp: f64,
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub cpus_user_time_secs: Option<f64>,
    pub cpus_system_time_secs: Option<f64>,
    pub cpus_total_time_secs: Option<f64>,
    pub cpus_limit: Option<f64>,
    pub cpus_nr_periods: Option<u64>,
    pub cpus_nr_throttled: Option<u64>,
    pub cpus_throttled_time_secs: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_peak_bytes: Option<u64>,
    pub mem_limit_bytes: Option<u64>,
    /// Disk used (sandbox, later volumes) and the task's disk limit (issue 17).
    pub disk_used_bytes: Option<u64>,
    pub disk_limit_bytes: Option<u64>,
}

impl From<&strata_proto::v1::ResourceStatistics> for TaskStatistics {
    fn from(s: &strata_proto::v1::ResourceStatistics) -> TaskStatistics {
        TaskStatistics {
            timestamp: s.timestamp,
            processes: s.processes,
            threads: s.threads,
            cpus_user_time_secs: s.cpus_user_time_secs,
            cpus_system_time_secs: s.cpus_system_time_secs,
            cpus_total_time_secs: s.cpus_total_time_secs,
            cpus_limit: s.cpus_limit,
            cpus_nr_periods: s.cpus_nr_periods,
            cpus_nr_throttled: s.cpus_nr_throttled,
            cpus_throttled_time_secs: s.cpus_throttled_time_secs,
            mem_total_bytes: s.mem_total_bytes,
            mem_peak_bytes: s.mem_peak_bytes,
            mem_limit_bytes: s.mem_limit_bytes,
            disk_used_bytes: s.disk_used_bytes,
            disk_limit_bytes: s.disk_limit_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleView {
    pub name: String,
    pub weight: f64,
    pub allocated: Resources,
    pub frameworks: Vec<String>,
}

/// Counters and gauges for `GET /metrics` (Prometheus text, names `strata_master_*`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub agents_active: u64,
    pub agents_disconnected: u64,
    pub agents_unreachable: u64,
    pub agents_gone: u64,
    /// Agents deactivated or draining by an operator (not gone).
    pub agents_in_maintenance: u64,
    pub frameworks_connected: u64,
    pub frameworks_disconnected: u64,
    pub tasks_staging: u64,
    pub tasks_running: u64,
    pub tasks_finished_total: u64,
    pub tasks_failed_total: u64,
    pub tasks_killed_total: u64,
    pub tasks_lost_total: u64,
    pub tasks_error_total: u64,
    pub outstanding_offers: u64,
    pub offers_sent_total: u64,
    pub offers_declined_total: u64,
    pub offers_rescinded_total: u64,
    pub calls_refused_total: u64,
    pub allocation_runs_total: u64,
    /// Duration of the latest allocation run, milliseconds.
    pub allocation_run_ms: f64,
    pub cpus_total: f64,
    pub cpus_used: f64,
    pub cpus_offered: f64,
    pub mem_total: f64,
    pub mem_used: f64,
    pub mem_offered: f64,
    /// Disk, MiB (plain and MOUNT disks, volumes included).
    pub disk_total: f64,
    pub disk_used: f64,
    /// Secrets and configs kept (issue 16), and the bytes of their kept versions'
    /// values (sealed secrets count their sealed size).
    pub secrets: u64,
    pub configs: u64,
    pub objects_stored_bytes: u64,
    /// Agents' fetches of task values answered, and refused.
    pub object_fetches_total: u64,
    pub object_fetches_refused_total: u64,
    /// Dynamically reserved resources of registered agents (issue 17), all roles.
    pub reserved_cpus: f64,
    pub reserved_mem: f64,
    pub reserved_disk: f64,
    /// Persistent volumes of registered agents, and their size (MiB).
    pub volumes: u64,
    pub volumes_disk: f64,
}
