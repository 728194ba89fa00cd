//! The CLI's client of the master's operator API (`strata.v1.Operator`, gRPC on the
//! master's one port): the cluster's agents, frameworks and tasks as typed values, agent
//! maintenance, and errors that say which address failed and what to do.
//!
//! ```text
//!   strata agent ...      ─┐
//!   strata framework ...  ─┼─▶ MasterClient ──gRPC──▶ master (Operator service)
//!   strata task logs      ─┘        │
//!    (a task the app server forgot) └─ v1::GetStateResponse ─TryFrom─▶ State
//! ```
//!
//! Wire data goes through `TryFrom` ([`Resources::try_from_proto`] for resources), so a
//! resource the CLI cannot read is an error naming the agent or framework, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use strata_proto::states::state_from_i32;
use strata_proto::{Resources, is_terminal, v1};
use strata_security::ClientTls;
use strata_security::credentials::AuthInterceptor;
use tokio::sync::OnceCell;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use v1::operator_client::OperatorClient;

use super::client::innermost;

/// The operator client with the credential added to every call.
type Operator = OperatorClient<InterceptedService<Channel, AuthInterceptor>>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer accepted: the master's limit on operator answers. tonic's default
/// (4 MiB) is too small for the state of a large cluster (10,000 agents and their tasks).
const MAX_ANSWER: usize = strata_proto::limits::MAX_OPERATOR_ANSWER_BYTES;
/// The message of the status tonic makes up when `CALL_TIMEOUT` passes
/// (`tonic::TimeoutExpired`).
const TIMEOUT_EXPIRED: &str = "Timeout expired";

/// What a call to the master's operator API failed on.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// `--master` is not an address.
    #[error("the master address '{addr}' is not host:port: {reason}")]
    BadAddress { addr: String, reason: String },
    /// Nothing answered at the address (refused, timed out, DNS, ...).
    #[error(
        "cannot reach the Strata master at {addr}: {reason} (is strata-master running there? \
         Point the CLI at it with --master ADDR or STRATA_MASTER)"
    )]
    Unreachable { addr: String, reason: String },
    /// The connection broke during a call without an answer: the master went away
    /// mid-call, or what listens at the address does not speak gRPC.
    #[error(
        "the call to the Strata master at {addr} failed: {reason} (is that the master's \
         address? Point the CLI at it with --master ADDR or STRATA_MASTER)"
    )]
    Broken { addr: String, reason: String },
    /// The TLS settings cannot be used (a CA that does not parse).
    #[error("cannot set up TLS to the Strata master at {addr}: {reason}")]
    Tls { addr: String, reason: String },
    /// The master answered the call with an error status.
    #[error("{}", refusal_text(.addr, .principal.as_deref(), *.code, .message))]
    Refused {
        addr: String,
        /// Whose credential was sent.
        principal: Option<String>,
        code: tonic::Code,
        message: String,
    },
    /// The master answered with data the CLI cannot read.
    #[error("unreadable answer from the master at {addr} to {call}: {reason}")]
    Decode {
        addr: String,
        call: &'static str,
        reason: String,
    },
}

/// The text of a refused call, by gRPC code. The master words its `NotFound`,
/// `FailedPrecondition` and `InvalidArgument` answers for people (`agent 'a1' is neither
/// deactivated nor draining: nothing to reactivate`): those are shown as they are.
fn refusal_text(addr: &str, principal: Option<&str>, code: tonic::Code, message: &str) -> String {
    use tonic::Code;
    match code {
        Code::NotFound
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::OutOfRange
            if !message.is_empty() =>
        {
            message.to_string()
        }
        Code::Unavailable => format!(
            "the Strata master at {addr} is unavailable: {message} (it may be starting or \
             stopping; try again shortly)"
        ),
        Code::DeadlineExceeded => format!(
            "no answer from the Strata master at {addr} within {}s; is it overloaded?",
            CALL_TIMEOUT.as_secs()
        ),
        Code::Unimplemented => format!(
            "the server at {addr} does not serve the Strata operator API (strata.v1.Operator): \
             is it a strata-master of this version? Point the CLI at the master with \
             --master ADDR or STRATA_MASTER"
        ),
        Code::Unauthenticated => match principal {
            Some(principal) => format!(
                "the Strata master at {addr} refused the credential of '{principal}': {message} \
                 (check principal and secret in the CLI config)"
            ),
            None => format!(
                "the Strata master at {addr} wants a credential: {message} (put principal and \
                 secret in the CLI config; `strata local` writes one)"
            ),
        },
        Code::PermissionDenied => format!(
            "the Strata master at {addr} does not permit this call to '{}': {message}",
            principal.unwrap_or("anonymous")
        ),
        _ if message.is_empty() => format!("the Strata master at {addr} failed ({code:?})"),
        _ => format!("the Strata master at {addr} failed ({code:?}): {message}"),
    }
}

/// A maintenance action on one agent (`strata agent deactivate|drain|reactivate|gone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    Deactivate,
    Drain,
    Reactivate,
    Gone,
}

impl AgentAction {
    /// The subcommand's name: `deactivate`, `drain`, `reactivate`, `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAction::Deactivate => "deactivate",
            AgentAction::Drain => "drain",
            AgentAction::Reactivate => "reactivate",
            AgentAction::Gone => "gone",
        }
    }
}

/// An operation on an agent's resources (`strata agent reserve|unreserve`, `strata
/// volume create|destroy`): the operator API's RESERVE_RESOURCES, UNRESERVE_RESOURCES,
/// CREATE_VOLUMES and DESTROY_VOLUMES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceAction {
    Reserve,
    Unreserve,
    Create,
    Destroy,
}

impl ResourceAction {
    /// `reserve`, `unreserve`, `create`, `destroy`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceAction::Reserve => "reserve",
            ResourceAction::Unreserve => "unreserve",
            ResourceAction::Create => "create",
            ResourceAction::Destroy => "destroy",
        }
    }
}

/// A client of the master's operator API at `--master`. Connects on the first call and
/// keeps the connection for the next ones (`strata task logs --follow` polls).
#[derive(Debug)]
pub struct MasterClient {
    /// The address as given, for messages.
    addr: String,
    /// The cluster CA (the master is verified as [`strata_security::MASTER_NAME`]) and
    /// the credential; plain text without a CA.
    tls: ClientTls,
    channel: OnceCell<Channel>,
}

impl MasterClient {
    /// A client of the master at `addr` (`host:port` or `http://host:port`), plain
    /// text, no credential (`--insecure`).
    #[cfg(test)]
    pub fn new(addr: &str) -> MasterClient {
        MasterClient::with_tls(addr, ClientTls::insecure())
    }

    /// A client of the master at `addr` with `tls`.
    pub fn with_tls(addr: &str, tls: ClientTls) -> MasterClient {
        MasterClient {
            addr: addr.trim().to_string(),
            tls,
            channel: OnceCell::new(),
        }
    }

    /// `GetState`: agents, frameworks and tasks from one snapshot of the master.
    pub async fn state(&self) -> Result<State, MasterError> {
        let answer = self
            .client()
            .await?
            .get_state(v1::GetStateRequest {})
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        State::try_from(answer).map_err(|e| self.decode("GetState", e))
    }

    /// `GetFrameworks`.
    pub async fn frameworks(&self) -> Result<Vec<Framework>, MasterError> {
        let answer = self
            .client()
            .await?
            .get_frameworks(v1::GetFrameworksRequest {})
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        answer
            .frameworks
            .into_iter()
            .map(Framework::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| self.decode("GetFrameworks", e))
    }

    /// `DeactivateAgent`, `DrainAgent` (with the longest grace period, if given),
    /// `ReactivateAgent` or `MarkAgentGone`.
    pub async fn maintain(
        &self,
        action: AgentAction,
        agent_id: &str,
        max_grace_period: Option<Duration>,
    ) -> Result<(), MasterError> {
        let request = v1::AgentMaintenanceRequest {
            agent_id: agent_id.to_string(),
            max_grace_period_seconds: max_grace_period.map(|d| d.as_secs_f64()),
        };
        let mut client = self.client().await?;
        let answer = match action {
            AgentAction::Deactivate => client.deactivate_agent(request).await,
            AgentAction::Drain => client.drain_agent(request).await,
            AgentAction::Reactivate => client.reactivate_agent(request).await,
            AgentAction::Gone => client.mark_agent_gone(request).await,
        };
        answer.map_err(|s| self.refused(s))?;
        Ok(())
    }

    /// `Subscribe`: the operator event stream, after `resume` (master id and seq) when
    /// the master still has it.
    pub async fn events(
        &self,
        resume: Option<(String, u64)>,
    ) -> Result<tonic::Streaming<v1::OperatorEvent>, MasterError> {
        let (resume_master_id, resume_after) = match resume {
            Some((m, s)) => (m, Some(s)),
            None => (String::new(), None),
        };
        let request = v1::OperatorSubscribeRequest {
            resume_master_id,
            resume_after,
            proxy: String::new(),
        };
        Ok(self
            .client()
            .await?
            .subscribe(request)
            .await
            .map_err(|s| self.refused(s))?
            .into_inner())
    }

    /// `TeardownFramework`: the framework is removed and its tasks killed.
    pub async fn teardown(&self, framework_id: &str) -> Result<(), MasterError> {
        let request = v1::TeardownFrameworkRequest {
            framework_id: framework_id.to_string(),
        };
        self.client()
            .await?
            .teardown_framework(request)
            .await
            .map_err(|s| self.refused(s))?;
        Ok(())
    }

    /// `ReserveResources`, `UnreserveResources`, `CreateVolumes` or `DestroyVolumes` on
    /// the agent `agent_id`.
    pub async fn resource_operation(
        &self,
        action: ResourceAction,
        agent_id: &str,
        resources: Vec<v1::Resource>,
    ) -> Result<(), MasterError> {
        let request = v1::ResourceOperationRequest {
            agent_id: agent_id.to_string(),
            resources,
        };
        let mut client = self.client().await?;
        let answer = match action {
            ResourceAction::Reserve => client.reserve_resources(request).await,
            ResourceAction::Unreserve => client.unreserve_resources(request).await,
            ResourceAction::Create => client.create_volumes(request).await,
            ResourceAction::Destroy => client.destroy_volumes(request).await,
        };
        answer.map_err(|s| self.refused(s))?;
        Ok(())
    }

    /// `GetVolumes`: every persistent volume of the cluster the caller may see.
    pub async fn volumes(&self) -> Result<Vec<Volume>, MasterError> {
        let answer = self
            .client()
            .await?
            .get_volumes(v1::GetVolumesRequest {})
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        answer
            .volumes
            .into_iter()
            .map(Volume::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| self.decode("GetVolumes", e))
    }

    /// `CreateObject`: a new config or secret (version 1), or with `update` the next
    /// version of an existing one; answers the version. `data` is sent as it is and
    /// appears in no error.
    pub async fn create_object(
        &self,
        kind: v1::ObjectKind,
        name: &str,
        data: Vec<u8>,
        update: bool,
    ) -> Result<u64, MasterError> {
        let request = v1::CreateObjectRequest {
            kind: kind as i32,
            name: name.to_string(),
            data,
            update,
        };
        let answer = self
            .client()
            .await?
            .create_object(request)
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        Ok(answer.version)
    }

    /// `RemoveObject`: the object and all its versions.
    pub async fn remove_object(&self, kind: v1::ObjectKind, name: &str) -> Result<(), MasterError> {
        let request = v1::RemoveObjectRequest {
            kind: kind as i32,
            name: name.to_string(),
        };
        self.client()
            .await?
            .remove_object(request)
            .await
            .map_err(|s| self.refused(s))?;
        Ok(())
    }

    /// `ListObjects`: the objects of `kind` the caller may see (never their values).
    pub async fn list_objects(&self, kind: v1::ObjectKind) -> Result<Vec<ObjectInfo>, MasterError> {
        let answer = self
            .client()
            .await?
            .list_objects(v1::ListObjectsRequest { kind: kind as i32 })
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        Ok(answer
            .objects
            .into_iter()
            .map(ObjectInfo::from)
            .filter(|o| kind == v1::ObjectKind::Unspecified || o.kind == kind)
            .collect())
    }

    /// `GetConfig`: a config's value, of `version` (`None`: the latest), and the
    /// version it is.
    pub async fn get_config(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<(u64, Vec<u8>), MasterError> {
        let request = v1::GetConfigRequest {
            name: name.to_string(),
            version: version.unwrap_or(0),
        };
        let answer = self
            .client()
            .await?
            .get_config(request)
            .await
            .map_err(|s| self.refused(s))?
            .into_inner();
        Ok((answer.version, answer.data))
    }

    async fn client(&self) -> Result<Operator, MasterError> {
        let channel = self
            .channel
            .get_or_try_init(|| async {
                let endpoint = self.endpoint()?;
                endpoint
                    .connect()
                    .await
                    .map_err(|e| self.unreachable(innermost(&e)))
            })
            .await?
            .clone();
        let interceptor = AuthInterceptor::new(self.tls.credential.as_ref());
        Ok(OperatorClient::with_interceptor(channel, interceptor)
            .max_decoding_message_size(MAX_ANSWER)
            .max_encoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES))
    }

    fn endpoint(&self) -> Result<Endpoint, MasterError> {
        let addr = self.addr.trim_end_matches('/');
        if addr.is_empty() {
            return Err(MasterError::BadAddress {
                addr: self.addr.clone(),
                reason: "it is empty".into(),
            });
        }
        // https with TLS (the scheme given is replaced), http without.
        let uri = self.tls.uri(addr);
        let mut endpoint = Endpoint::from_shared(uri).map_err(|e| MasterError::BadAddress {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        if let Some(tls) = self.tls.tonic(strata_security::MASTER_NAME) {
            endpoint = endpoint.tls_config(tls).map_err(|e| MasterError::Tls {
                addr: self.addr.clone(),
                reason: innermost(&e),
            })?;
        }
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true))
    }

    fn unreachable(&self, reason: String) -> MasterError {
        MasterError::Unreachable {
            addr: self.addr.clone(),
            reason: self.with_tls_hint(reason),
        }
    }

    /// A failure's reason, with what to check when it looks like a TLS one.
    fn with_tls_hint(&self, reason: String) -> String {
        let lower = reason.to_ascii_lowercase();
        let tls_like = [
            "certificate",
            "tls",
            "handshake",
            "corrupt message",
            "invalidcontenttype",
        ]
        .iter()
        .any(|w| lower.contains(w));
        if !self.tls.is_tls()
            && ["connection closed", "connection reset"]
                .iter()
                .any(|w| lower.contains(w))
        {
            return format!(
                "{reason}; a master with TLS closes plain-text connections: without --insecure \
                 the CLI uses TLS and its config"
            );
        }
        if !tls_like {
            return reason;
        }
        if self.tls.is_tls() {
            format!(
                "{reason}; a TLS failure: the master's certificate must come from the CA in the \
                 CLI config's ca_file, and a master started with --insecure needs --insecure here"
            )
        } else {
            format!(
                "{reason}; a TLS failure: a master with TLS needs the CLI config, not --insecure"
            )
        }
    }

    /// A call's error status. tonic makes one up for a call that timed out
    /// (`Cancelled`, "Timeout expired"), and for a transport failure (with the I/O
    /// or HTTP/2 error as its source): those are no answer of the master.
    fn refused(&self, status: tonic::Status) -> MasterError {
        let mut code = status.code();
        if code == tonic::Code::Cancelled && status.message() == TIMEOUT_EXPIRED {
            code = tonic::Code::DeadlineExceeded;
        } else if let Some(source) = std::error::Error::source(&status) {
            let reason = innermost(source);
            return if code == tonic::Code::Unavailable {
                self.unreachable(reason)
            } else {
                MasterError::Broken {
                    addr: self.addr.clone(),
                    reason: self.with_tls_hint(reason),
                }
            };
        }
        MasterError::Refused {
            addr: self.addr.clone(),
            principal: self.tls.credential.as_ref().map(|c| c.principal.clone()),
            code,
            message: status.message().to_string(),
        }
    }

    fn decode(&self, call: &'static str, e: Unreadable) -> MasterError {
        MasterError::Decode {
            addr: self.addr.clone(),
            call,
            reason: e.0,
        }
    }
}

/// Why an answer of the master could not be read; the text names the part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

/// The agents and tasks of one `GetState` snapshot (what the CLI shows of it).
#[derive(Debug, Clone, Default)]
pub struct State {
    pub agents: Vec<Agent>,
    pub tasks: Vec<Task>,
}

impl TryFrom<v1::GetStateResponse> for State {
    type Error = Unreadable;

    fn try_from(s: v1::GetStateResponse) -> Result<State, Unreadable> {
        Ok(State {
            agents: s
                .agents
                .into_iter()
                .map(Agent::try_from)
                .collect::<Result<_, _>>()?,
            tasks: s
                .tasks
                .into_iter()
                .map(Task::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Resources from the wire, or an error naming whose they are.
fn resources(
    list: &[v1::Resource],
    whose: impl FnOnce() -> String,
) -> Result<Resources, Unreadable> {
    Resources::try_from_proto(list).map_err(|e| Unreadable(format!("{}: {e}", whose())))
}

/// An agent. Serialized as the master's `GET /state` shows agents, so
/// `strata agent list -o json` keeps its shape.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    /// The principal it registered as (`agent:<node id>`; empty when insecure).
    pub principal: String,
    /// host:port of the agent's HTTP API (its sandbox files).
    pub address: String,
    pub status: AgentStatus,
    pub maintenance: Option<Maintenance>,
    pub attributes: BTreeMap<String, String>,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    /// Unix seconds of the latest (re-)registration.
    pub registered_time: f64,
}

impl TryFrom<v1::AgentState> for Agent {
    type Error = Unreadable;

    fn try_from(a: v1::AgentState) -> Result<Agent, Unreadable> {
        let info = a
            .info
            .ok_or_else(|| Unreadable("an agent without its info".into()))?;
        let id = info.id;
        let of = |part: &str| {
            let id = id.clone();
            let part = part.to_string();
            move || format!("agent '{id}' {part}")
        };
        Ok(Agent {
            total: resources(&a.total, of("total"))?,
            used: resources(&a.used, of("used"))?,
            offered: resources(&a.offered, of("offered"))?,
            id,
            hostname: info.hostname,
            principal: info.principal,
            address: info.address,
            status: AgentStatus::from_wire(&a.status),
            maintenance: Maintenance::from_wire(&a.maintenance),
            attributes: info
                .attributes
                .into_iter()
                .map(|at| (at.name, at.value))
                .collect(),
            registered_time: a.registered_time,
        })
    }
}

/// An agent's connection to the master (the operator API's `AgentState.status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum AgentStatus {
    Active,
    /// Its stream is gone; the master waits for it to come back.
    Disconnected,
    Unreachable,
    /// Known from the registry after a master restart, not re-registered yet: its
    /// resources are unknown until it does.
    Recovering,
    /// Marked gone by an operator.
    Gone,
    /// A status this CLI does not know (a newer master), as the master named it.
    Other(String),
}

impl AgentStatus {
    pub fn from_wire(text: &str) -> AgentStatus {
        match text {
            "ACTIVE" => AgentStatus::Active,
            "DISCONNECTED" => AgentStatus::Disconnected,
            "UNREACHABLE" => AgentStatus::Unreachable,
            "RECOVERING" => AgentStatus::Recovering,
            "GONE" => AgentStatus::Gone,
            other => AgentStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AgentStatus::Active => "ACTIVE",
            AgentStatus::Disconnected => "DISCONNECTED",
            AgentStatus::Unreachable => "UNREACHABLE",
            AgentStatus::Recovering => "RECOVERING",
            AgentStatus::Gone => "GONE",
            AgentStatus::Other(text) => text,
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<AgentStatus> for String {
    fn from(s: AgentStatus) -> String {
        s.as_str().to_string()
    }
}

/// An agent's maintenance (the operator API's `AgentState.maintenance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Maintenance {
    /// Not offered; its tasks keep running.
    Deactivated,
    /// Not offered; its tasks are being killed.
    Draining,
    /// Not offered; no task left.
    Drained,
    /// A maintenance this CLI does not know (a newer master), as the master named it.
    Other(String),
}

impl Maintenance {
    /// `None` for the empty string (no maintenance).
    pub fn from_wire(text: &str) -> Option<Maintenance> {
        Some(match text {
            "" => return None,
            "DEACTIVATED" => Maintenance::Deactivated,
            "DRAINING" => Maintenance::Draining,
            "DRAINED" => Maintenance::Drained,
            other => Maintenance::Other(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Maintenance::Deactivated => "DEACTIVATED",
            Maintenance::Draining => "DRAINING",
            Maintenance::Drained => "DRAINED",
            Maintenance::Other(text) => text,
        }
    }
}

impl fmt::Display for Maintenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Maintenance> for String {
    fn from(m: Maintenance) -> String {
        m.as_str().to_string()
    }
}

/// A framework. Serialized as the master's `GET /state` shows frameworks, so
/// `strata framework list -o json` keeps its shape.
#[derive(Debug, Clone, Serialize)]
pub struct Framework {
    pub id: String,
    pub name: String,
    /// The principal that registered it.
    pub principal: String,
    pub user: String,
    pub roles: Vec<String>,
    /// Capability names, e.g. `PARTITION_AWARE`.
    pub capabilities: Vec<String>,
    pub failover_timeout_seconds: f64,
    pub connected: bool,
    pub active: bool,
    pub suppressed_roles: Vec<String>,
    pub used: Resources,
    pub offered: Resources,
    pub task_count: u64,
}

impl TryFrom<v1::FrameworkState> for Framework {
    type Error = Unreadable;

    fn try_from(f: v1::FrameworkState) -> Result<Framework, Unreadable> {
        let info = f
            .info
            .ok_or_else(|| Unreadable("a framework without its info".into()))?;
        let id = info.id;
        let of = |part: &str| {
            let id = id.clone();
            let part = part.to_string();
            move || format!("framework '{id}' {part}")
        };
        Ok(Framework {
            used: resources(&f.used, of("used"))?,
            offered: resources(&f.offered, of("offered"))?,
            id,
            name: info.name,
            principal: info.principal,
            user: info.user,
            roles: info.roles,
            capabilities: info
                .capabilities
                .into_iter()
                .map(|c| match v1::FrameworkCapability::try_from(c) {
                    Ok(c) => c.as_str_name().to_string(),
                    Err(_) => c.to_string(),
                })
                .collect(),
            failover_timeout_seconds: info.failover_timeout_seconds,
            connected: f.connected,
            active: f.active,
            suppressed_roles: f.suppressed_roles,
            task_count: f.task_count,
        })
    }
}

/// A config or secret as `ListObjects` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectInfo {
    /// `secret` or `config`.
    #[serde(serialize_with = "serialize_kind")]
    pub kind: v1::ObjectKind,
    pub name: String,
    /// The principal that created it (empty on an --insecure master).
    pub owner: String,
    /// Kept versions, oldest first; the last is the latest.
    pub versions: Vec<ObjectVersion>,
    /// Who may use it in tasks besides anyone (`anyone`): the owner and the
    /// principals the ACLs name (`prefix*` patterns as written).
    pub principals: Vec<String>,
    pub anyone: bool,
    /// Tasks the master knows that reference it.
    pub tasks: u64,
}

/// One kept version of an object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectVersion {
    pub version: u64,
    /// Bytes of the value.
    pub size: u64,
    /// Unix seconds.
    pub created_unix: f64,
}

fn serialize_kind<S: serde::Serializer>(kind: &v1::ObjectKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(strata_proto::objects::kind_name(*kind))
}

impl ObjectInfo {
    /// The latest version, if the master sent any.
    pub fn latest(&self) -> Option<&ObjectVersion> {
        self.versions.last()
    }
}

impl From<v1::ObjectInfo> for ObjectInfo {
    fn from(o: v1::ObjectInfo) -> ObjectInfo {
        ObjectInfo {
            kind: strata_proto::objects::kind_of(o.kind).unwrap_or(v1::ObjectKind::Unspecified),
            name: o.name,
            owner: o.owner,
            versions: o
                .versions
                .into_iter()
                .map(|v| ObjectVersion {
                    version: v.version,
                    size: v.size,
                    created_unix: v.created_unix,
                })
                .collect(),
            principals: o.principals,
            anyone: o.anyone,
            tasks: o.tasks,
        }
    }
}

/// A persistent volume as `GetVolumes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// The persistence id, unique per agent and role.
    pub id: String,
    pub role: String,
    pub agent_id: String,
    pub hostname: String,
    /// Who created it.
    pub principal: String,
    /// Where tasks see it, relative to their sandbox.
    pub container_path: String,
    pub read_only: bool,
    /// The MOUNT disk it is on (its root on the agent); `None`: the agent's work dir.
    pub mount: Option<String>,
    /// Its size in MiB.
    pub size_mb: f64,
    /// Bytes used, as the agent last measured them.
    pub used_bytes: u64,
    /// The live task using it (empty when none).
    pub framework_id: String,
    pub task_id: String,
    /// The volume itself, as the master sent it: what a DESTROY names.
    #[serde(skip)]
    pub resource: v1::Resource,
}

impl TryFrom<v1::VolumeState> for Volume {
    type Error = Unreadable;

    fn try_from(v: v1::VolumeState) -> Result<Volume, Unreadable> {
        let whose = || format!("a volume of agent '{}'", v.agent_id);
        let resource = v
            .volume
            .clone()
            .ok_or_else(|| Unreadable(format!("{} without its resource", whose())))?;
        let parsed = resources(std::slice::from_ref(&resource), whose)?;
        let Some((entry, persistence)) = (match parsed.entries() {
            [one] => one.persistence().map(|p| (one, p.clone())),
            _ => None,
        }) else {
            return Err(Unreadable(format!(
                "{}: '{parsed}' is not a persistent volume",
                whose()
            )));
        };
        let mount = entry.disk.as_ref().and_then(|d| d.mount.clone());
        Ok(Volume {
            id: persistence.id,
            role: if v.role.is_empty() {
                entry.role.clone().unwrap_or_default()
            } else {
                v.role
            },
            agent_id: v.agent_id,
            hostname: v.hostname,
            principal: persistence.principal,
            container_path: persistence.container_path,
            read_only: persistence.read_only,
            mount,
            size_mb: parsed.disk().as_f64(),
            used_bytes: v.used_bytes,
            framework_id: v.framework_id,
            task_id: v.task_id,
            resource,
        })
    }
}

/// A task the master knows (it keeps ended ones for a while).
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    /// UNSPECIFIED for a state this CLI does not know.
    pub state: v1::TaskState,
}

impl Task {
    /// Whether the task ended for good.
    pub fn is_terminal(&self) -> bool {
        is_terminal(self.state)
    }
}

impl TryFrom<v1::TaskEntry> for Task {
    type Error = Unreadable;

    fn try_from(t: v1::TaskEntry) -> Result<Task, Unreadable> {
        Ok(Task {
            id: t.task_id,
            framework_id: t.framework_id,
            agent_id: t.agent_id,
            state: state_from_i32(t.state),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use tonic::{Request, Response, Status};
    use v1::operator_server::{Operator, OperatorServer};

    use super::*;

    /// A fake master: serves `state` to every Get* call and records maintenance calls,
    /// answering them with `refuse` when set. Objects: records every call in
    /// `object_calls`, answers `ListObjects` with `objects` and `GetConfig` with
    /// `configs` (name, version, value), `CreateObject` with the next version of the
    /// name (from `objects`' versions and the creates so far), and all of them with
    /// `refuse` when set.
    #[derive(Clone, Default)]
    pub struct FakeMaster {
        pub state: Arc<Mutex<v1::GetStateResponse>>,
        pub calls: Arc<Mutex<Vec<(&'static str, v1::AgentMaintenanceRequest)>>>,
        pub refuse: Arc<Mutex<Option<Status>>>,
        pub objects: Arc<Mutex<Vec<v1::ObjectInfo>>>,
        pub configs: Arc<Mutex<Vec<StoredConfig>>>,
        pub object_calls: Arc<Mutex<Vec<ObjectCall>>>,
        /// What `GetVolumes` answers.
        pub volumes: Arc<Mutex<Vec<v1::VolumeState>>>,
        /// The resource operations received (answered with `refuse` when set).
        pub resource_calls: Arc<Mutex<Vec<(&'static str, v1::ResourceOperationRequest)>>>,
    }

    /// A config the fake master has: name, version, value.
    pub type StoredConfig = (String, u64, Vec<u8>);

    /// An object call the fake master received.
    #[derive(Debug, Clone, PartialEq)]
    pub enum ObjectCall {
        Create(v1::CreateObjectRequest),
        Remove(v1::RemoveObjectRequest),
        List(v1::ListObjectsRequest),
        GetConfig(v1::GetConfigRequest),
    }

    impl FakeMaster {
        /// Serves on 127.0.0.1:0 until the test's runtime ends; returns the address.
        pub async fn serve(self) -> String {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(OperatorServer::new(self))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            addr.to_string()
        }

        fn state(&self) -> v1::GetStateResponse {
            self.state.lock().unwrap().clone()
        }

        fn object_call(&self, call: ObjectCall) -> Result<(), Status> {
            self.object_calls.lock().unwrap().push(call);
            match self.refuse.lock().unwrap().clone() {
                Some(status) => Err(status),
                None => Ok(()),
            }
        }

        fn resource_call(
            &self,
            call: &'static str,
            r: Request<v1::ResourceOperationRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.resource_calls
                .lock()
                .unwrap()
                .push((call, r.into_inner()));
            match self.refuse.lock().unwrap().clone() {
                Some(status) => Err(status),
                None => Ok(Response::new(v1::MaintenanceResponse {})),
            }
        }

        fn maintain(
            &self,
            call: &'static str,
            r: Request<v1::AgentMaintenanceRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.calls.lock().unwrap().push((call, r.into_inner()));
            match self.refuse.lock().unwrap().clone() {
                Some(status) => Err(status),
                None => Ok(Response::new(v1::MaintenanceResponse {})),
            }
        }
    }

    #[tonic::async_trait]
    impl Operator for FakeMaster {
        async fn get_state(
            &self,
            _: Request<v1::GetStateRequest>,
        ) -> Result<Response<v1::GetStateResponse>, Status> {
            Ok(Response::new(self.state()))
        }
        async fn get_agents(
            &self,
            _: Request<v1::GetAgentsRequest>,
        ) -> Result<Response<v1::GetAgentsResponse>, Status> {
            let agents = self.state().agents;
            Ok(Response::new(v1::GetAgentsResponse { agents }))
        }
        async fn get_frameworks(
            &self,
            _: Request<v1::GetFrameworksRequest>,
        ) -> Result<Response<v1::GetFrameworksResponse>, Status> {
            let frameworks = self.state().frameworks;
            Ok(Response::new(v1::GetFrameworksResponse { frameworks }))
        }
        async fn get_tasks(
            &self,
            _: Request<v1::GetTasksRequest>,
        ) -> Result<Response<v1::GetTasksResponse>, Status> {
            let tasks = self.state().tasks;
            Ok(Response::new(v1::GetTasksResponse { tasks }))
        }
        async fn get_roles(
            &self,
            _: Request<v1::GetRolesRequest>,
        ) -> Result<Response<v1::GetRolesResponse>, Status> {
            let roles = self.state().roles;
            Ok(Response::new(v1::GetRolesResponse { roles }))
        }
        async fn update_weights(
            &self,
            _: Request<v1::UpdateWeightsRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
        async fn deactivate_agent(
            &self,
            r: Request<v1::AgentMaintenanceRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.maintain("DeactivateAgent", r)
        }
        async fn drain_agent(
            &self,
            r: Request<v1::AgentMaintenanceRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.maintain("DrainAgent", r)
        }
        async fn reactivate_agent(
            &self,
            r: Request<v1::AgentMaintenanceRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.maintain("ReactivateAgent", r)
        }
        async fn mark_agent_gone(
            &self,
            r: Request<v1::AgentMaintenanceRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.maintain("MarkAgentGone", r)
        }
        async fn teardown_framework(
            &self,
            _: Request<v1::TeardownFrameworkRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
        async fn reserve_resources(
            &self,
            r: Request<v1::ResourceOperationRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.resource_call("ReserveResources", r)
        }
        async fn unreserve_resources(
            &self,
            r: Request<v1::ResourceOperationRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.resource_call("UnreserveResources", r)
        }
        async fn create_volumes(
            &self,
            r: Request<v1::ResourceOperationRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.resource_call("CreateVolumes", r)
        }
        async fn destroy_volumes(
            &self,
            r: Request<v1::ResourceOperationRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.resource_call("DestroyVolumes", r)
        }
        async fn get_volumes(
            &self,
            _: Request<v1::GetVolumesRequest>,
        ) -> Result<Response<v1::GetVolumesResponse>, Status> {
            let volumes = self.volumes.lock().unwrap().clone();
            Ok(Response::new(v1::GetVolumesResponse { volumes }))
        }
        async fn ack_events(
            &self,
            _: Request<v1::OperatorAckRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
        async fn create_object(
            &self,
            r: Request<v1::CreateObjectRequest>,
        ) -> Result<Response<v1::CreateObjectResponse>, Status> {
            let r = r.into_inner();
            let before = self
                .object_calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| matches!(c, ObjectCall::Create(c) if c.name == r.name))
                .count() as u64;
            let listed = self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.name == r.name)
                .filter_map(|o| o.versions.last().map(|v| v.version))
                .max()
                .unwrap_or(0);
            self.object_call(ObjectCall::Create(r))?;
            Ok(Response::new(v1::CreateObjectResponse {
                version: listed + before + 1,
            }))
        }
        async fn remove_object(
            &self,
            r: Request<v1::RemoveObjectRequest>,
        ) -> Result<Response<v1::MaintenanceResponse>, Status> {
            self.object_call(ObjectCall::Remove(r.into_inner()))?;
            Ok(Response::new(v1::MaintenanceResponse {}))
        }
        async fn list_objects(
            &self,
            r: Request<v1::ListObjectsRequest>,
        ) -> Result<Response<v1::ListObjectsResponse>, Status> {
            let kind = r.get_ref().kind;
            self.object_call(ObjectCall::List(r.into_inner()))?;
            let objects = self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter(|o| kind == 0 || o.kind == kind)
                .cloned()
                .collect();
            Ok(Response::new(v1::ListObjectsResponse { objects }))
        }
        async fn get_config(
            &self,
            r: Request<v1::GetConfigRequest>,
        ) -> Result<Response<v1::GetConfigResponse>, Status> {
            let r = r.into_inner();
            self.object_call(ObjectCall::GetConfig(r.clone()))?;
            let configs = self.configs.lock().unwrap();
            let found = configs
                .iter()
                .filter(|(name, version, _)| {
                    *name == r.name && (r.version == 0 || *version == r.version)
                })
                .max_by_key(|(_, version, _)| *version);
            match found {
                Some((_, version, data)) => Ok(Response::new(v1::GetConfigResponse {
                    version: *version,
                    data: data.clone(),
                })),
                None => Err(Status::not_found(format!("no config '{}'", r.name))),
            }
        }
        type SubscribeStream = std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<v1::OperatorEvent, Status>> + Send>,
        >;
        async fn subscribe(
            &self,
            _: Request<v1::OperatorSubscribeRequest>,
        ) -> Result<Response<Self::SubscribeStream>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
    }

    /// Resources in the flag form, `cpus:1;cpus(web):0.5`, on the wire.
    pub fn wire(text: &str) -> Vec<v1::Resource> {
        Resources::parse(text).unwrap().to_proto()
    }

    pub fn agent(id: &str, host: &str, address: &str, status: &str) -> v1::AgentState {
        v1::AgentState {
            info: Some(v1::AgentInfo {
                id: id.into(),
                hostname: host.into(),
                address: address.into(),
                ..Default::default()
            }),
            status: status.into(),
            ..Default::default()
        }
    }

    pub fn framework(id: &str, name: &str, roles: &[&str]) -> v1::FrameworkState {
        v1::FrameworkState {
            info: Some(v1::FrameworkInfo {
                id: id.into(),
                name: name.into(),
                user: "root".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn task(id: &str, framework: &str, agent: &str, state: v1::TaskState) -> v1::TaskEntry {
        v1::TaskEntry {
            task_id: id.into(),
            framework_id: framework.into(),
            agent_id: agent.into(),
            name: id.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn agents_and_frameworks_serialize_as_the_masters_state_json_does() {
        let mut a = agent("a1", "node1", "10.0.0.1:5051", "ACTIVE");
        a.info.as_mut().unwrap().attributes = vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into(),
        }];
        a.total = wire("cpus:4;mem:8192;ports:[31000-32000]");
        a.used = wire("cpus:1;cpus(web):0.5");
        a.registered_time = 1.5;
        a.info.as_mut().unwrap().principal = "agent:n1".into();
        let a = Agent::try_from(a).unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({
                "id": "a1", "hostname": "node1", "principal": "agent:n1",
                "address": "10.0.0.1:5051",
                "status": "ACTIVE", "maintenance": null, "attributes": {"rack": "r1"},
                "total": {"cpus": 4.0, "mem": 8192.0, "ports": "[31000-32000]"},
                "used": {"cpus": 1.0, "cpus(web)": 0.5}, "offered": {},
                "registered_time": 1.5,
            })
        );
        let mut d = agent("a2", "node2", "x:1", "SOMETHING_NEW");
        d.maintenance = "DRAINING".into();
        let d = Agent::try_from(d).unwrap();
        assert_eq!(d.status, AgentStatus::Other("SOMETHING_NEW".into()));
        assert_eq!(serde_json::to_value(&d).unwrap()["maintenance"], "DRAINING");

        let mut f = framework("f1", "apps", &["*", "web"]);
        f.info.as_mut().unwrap().capabilities =
            vec![v1::FrameworkCapability::PartitionAware as i32];
        f.connected = true;
        f.task_count = 3;
        f.info.as_mut().unwrap().principal = "ops".into();
        let f = Framework::try_from(f).unwrap();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({
                "id": "f1", "name": "apps", "principal": "ops", "user": "root",
                "roles": ["*", "web"],
                "capabilities": ["PARTITION_AWARE"], "failover_timeout_seconds": 0.0,
                "connected": true, "active": false, "suppressed_roles": [],
                "used": {}, "offered": {}, "task_count": 3,
            })
        );
    }

    #[test]
    fn unreadable_wire_data_names_its_owner() {
        let mut a = agent("a1", "n", "x:1", "ACTIVE");
        a.used = vec![v1::Resource {
            name: "cpus".into(),
            scalar: -1.0,
            ..Default::default()
        }];
        let err = Agent::try_from(a).unwrap_err();
        assert_eq!(err.0, "agent 'a1' used: resource 'cpus' is negative (-1)");
        let err = Framework::try_from(v1::FrameworkState::default()).unwrap_err();
        assert_eq!(err.0, "a framework without its info");
        let t = task("t1", "f", "a", v1::TaskState::TaskRunning);
        let state = State::try_from(v1::GetStateResponse {
            tasks: vec![
                t,
                v1::TaskEntry {
                    task_id: "t2".into(),
                    state: 999,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(state.tasks[1].state, v1::TaskState::Unspecified);
        assert!(!state.tasks[0].is_terminal());
    }

    #[tokio::test]
    async fn reads_the_state_and_sends_maintenance_calls() {
        let fake = FakeMaster::default();
        fake.state.lock().unwrap().agents = vec![agent("a1", "node1", "x:1", "ACTIVE")];
        fake.state.lock().unwrap().frameworks = vec![framework("f1", "apps", &[])];
        let addr = fake.clone().serve().await;
        let master = MasterClient::new(&format!("http://{addr}/"));
        let state = master.state().await.unwrap();
        assert_eq!(state.agents[0].id, "a1");
        assert_eq!(master.frameworks().await.unwrap()[0].name, "apps");
        master
            .maintain(AgentAction::Drain, "a1", Some(Duration::from_millis(1500)))
            .await
            .unwrap();
        master
            .maintain(AgentAction::Gone, "a1", None)
            .await
            .unwrap();
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "DrainAgent");
        assert_eq!(calls[0].1.agent_id, "a1");
        assert_eq!(calls[0].1.max_grace_period_seconds, Some(1.5));
        assert_eq!(calls[1].0, "MarkAgentGone");
        assert_eq!(calls[1].1.max_grace_period_seconds, None);
    }

    #[tokio::test]
    async fn refusals_are_shown_in_the_masters_words_or_explained() {
        let fake = FakeMaster::default();
        let addr = fake.clone().serve().await;
        let master = MasterClient::new(&addr);
        let refuse = |status: Status| *fake.refuse.lock().unwrap() = Some(status);
        let reactivate = || master.maintain(AgentAction::Reactivate, "a1", None);

        refuse(Status::failed_precondition(
            "agent 'a1' is neither deactivated nor draining: nothing to reactivate",
        ));
        assert_eq!(
            reactivate().await.unwrap_err().to_string(),
            "agent 'a1' is neither deactivated nor draining: nothing to reactivate"
        );
        refuse(Status::not_found("unknown agent 'a1'"));
        assert_eq!(
            reactivate().await.unwrap_err().to_string(),
            "unknown agent 'a1'"
        );
        refuse(Status::unavailable("the master is shutting down"));
        let text = reactivate().await.unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "the Strata master at {addr} is unavailable: the master is shutting down \
                 (it may be starting or stopping; try again shortly)"
            )
        );
        refuse(Status::internal("boom"));
        assert_eq!(
            reactivate().await.unwrap_err().to_string(),
            format!("the Strata master at {addr} failed (Internal): boom")
        );
        refuse(Status::unimplemented(""));
        let text = reactivate().await.unwrap_err().to_string();
        assert!(
            text.starts_with(&format!(
                "the server at {addr} does not serve the Strata operator API"
            )),
            "{text}"
        );
        assert!(text.contains("--master"), "{text}");
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_grpc_is_named_with_a_hint() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let err = MasterClient::new(&addr).state().await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("the call to the Strata master at {addr} failed: ")),
            "{text}"
        );
        assert!(text.contains("--master ADDR"), "{text}");
    }

    /// A fake master serving TLS with a certificate for `names` from a new CA; returns
    /// its address and the CA.
    async fn tls_master(fake: FakeMaster, names: &[&str]) -> (String, String) {
        let ca = strata_security::ClusterCa::create().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issued = ca
            .issue("test-master", &names, Duration::from_secs(3600))
            .unwrap();
        let server = strata_security::ServerTls {
            cert_chain_pem: format!("{}{}", issued.cert_pem, ca.cert_pem()),
            key_pem: issued.key_pem,
            client_ca_pem: ca.cert_pem().to_string(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(server.tonic())
                .unwrap()
                .add_service(OperatorServer::new(fake))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, ca.cert_pem().to_string())
    }

    fn tls(ca: &str, secret: &str) -> ClientTls {
        ClientTls {
            ca_pem: Some(ca.to_string()),
            identity: None,
            credential: Some(strata_security::Credential::new("admin", secret)),
        }
    }

    #[tokio::test]
    async fn the_master_is_verified_as_strata_master_whatever_address_is_dialled() {
        let fake = FakeMaster::default();
        fake.state.lock().unwrap().agents = vec![agent("a1", "node1", "x:1", "ACTIVE")];
        let (addr, ca) = tls_master(fake.clone(), &[strata_security::MASTER_NAME]).await;
        let master = MasterClient::with_tls(&addr, tls(&ca, "0123456789abcdef"));
        assert_eq!(master.state().await.unwrap().agents[0].id, "a1");

        // A certificate of the same CA for another name (an agent's) is no master.
        let (addr, ca) = tls_master(fake.clone(), &["127.0.0.1", "strata-agent"]).await;
        let err = MasterClient::with_tls(&addr, tls(&ca, "0123456789abcdef"))
            .state()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("ca_file"), "{text}");

        // Plain text to a TLS master: the hint says the config is needed.
        let err = MasterClient::new(&addr).state().await.unwrap_err();
        assert!(
            matches!(
                err,
                MasterError::Broken { .. } | MasterError::Unreachable { .. }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_credential_names_its_principal() {
        let fake = FakeMaster::default();
        *fake.refuse.lock().unwrap() = Some(Status::unauthenticated(
            "the credential of 'admin' is not valid",
        ));
        let (addr, ca) = tls_master(fake, &[strata_security::MASTER_NAME]).await;
        let err = MasterClient::with_tls(&addr, tls(&ca, "wrong-wrong-wrong"))
            .maintain(AgentAction::Drain, "a1", None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the Strata master at {addr} refused the credential of 'admin': the credential \
                 of 'admin' is not valid (check principal and secret in the CLI config)"
            )
        );
        assert_eq!(
            refusal_text(
                "m:1",
                None,
                tonic::Code::Unauthenticated,
                "authentication required"
            ),
            "the Strata master at m:1 wants a credential: authentication required (put \
             principal and secret in the CLI config; `strata local` writes one)"
        );
    }

    #[test]
    fn a_timeout_says_how_long_it_waited() {
        assert_eq!(
            refusal_text(
                "m:5050",
                None,
                tonic::Code::DeadlineExceeded,
                "Timeout expired"
            ),
            "no answer from the Strata master at m:5050 within 30s; is it overloaded?"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_with_a_hint() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = MasterClient::new(&addr).state().await.unwrap_err();
        assert!(matches!(err, MasterError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the Strata master at {addr}: ")),
            "{text}"
        );
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("--master ADDR or STRATA_MASTER"), "{text}");
        assert!(!text.contains('\n'), "{text}");

        let err = MasterClient::new("not an address")
            .state()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the master address 'not an address' is not host:port: "),
            "{err}"
        );
    }
}
