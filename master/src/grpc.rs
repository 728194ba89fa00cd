//! The gRPC services: adapters that decode a request, hand it to the driver and
//! encode the answer. No decision is made here.
//!
//! ```text
//!  Scheduler.Subscribe ─▶ Command::Subscribe{conn, events} ─▶ driver   (EventStream reads `events`;
//!                                                                       its Drop reports the disconnect)
//!  Scheduler.<call>    ─▶ Command::Call ─▶ driver ─▶ Result<(), CallError> ─▶ Status code
//!  AgentLink.Attach    ─▶ first message must be Register ─▶ Command::AgentAttach{conn, messages}
//!                         a reader task forwards later messages, then AgentDisconnected
//!  Operator.Get*       ─▶ Command::Snapshot ─▶ operator.proto messages
//! ```
//!
//! Nothing read from the network is unwrapped: a missing header, an empty id or a
//! stream that does not start with Register is `INVALID_ARGUMENT`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use strata_proto::objects;
use strata_proto::v1;
use zeroize::Zeroize;

use crate::core::{ObjectAnswer, ObjectCall, ObjectCode, ObjectError, StoredKind};
use crate::secrets::SecretsKey;
use strata_proto::v1::agent_message::Message as AgentMsg;
use strata_security::Principal;

use crate::rate::RateLimits;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::core::{
    AgentView, Call, CallError, ConnId, ErrorCode, FrameworkView, OperatorCall, RoleView,
    StateSnapshot, TaskView, grace_from_secs, volumes::OpKind,
};
use crate::driver::{AGENT_BUFFER, Command, DriverGone, DriverHandle, FRAMEWORK_BUFFER};

/// How long an agent has, after opening its stream, to send Register.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message the master sends or accepts on the scheduler and agent APIs, and
/// accepts on the operator API: the one limit of every Strata peer
/// ([`strata_proto::limits::MAX_MESSAGE_BYTES`]).
pub use strata_proto::limits::MAX_MESSAGE_BYTES;

impl From<DriverGone> for Status {
    fn from(e: DriverGone) -> Status {
        Status::unavailable(e.to_string())
    }
}

/// The gRPC code of a refused call.
pub fn call_error_status(e: &CallError) -> Status {
    let code = match e.code() {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
    };
    Status::new(code, e.to_string())
}

/// Who sent `request`, as the authentication layer found ([`Principal::Anonymous`] on
/// a listener without it).
fn principal_of<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous)
}

/// The scheduler API (`strata.v1.Scheduler`).
#[derive(Debug, Clone)]
pub struct SchedulerService {
    driver: DriverHandle,
    limits: RateLimits,
}

impl SchedulerService {
    pub fn new(driver: DriverHandle, limits: RateLimits) -> SchedulerService {
        SchedulerService { driver, limits }
    }

    /// Waits for the principal's turn under `--rate-limits`, or refuses the call.
    async fn admit(&self, principal: &Principal) -> Result<(), Status> {
        self.limits.admit(&principal.name()).await.map_err(|e| {
            strata_security::authn::audit_refused(principal, "scheduler call", "", &e.to_string());
            Status::resource_exhausted(e.to_string())
        })
    }

    async fn call<T>(
        &self,
        request: Request<T>,
        call: impl FnOnce(T) -> (Option<v1::CallHeader>, Call),
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.admit(&principal_of(&request)).await?;
        let (header, call) = call(request.into_inner());
        let header = check_header(header)?;
        match self.driver.call(header, call).await? {
            Ok(()) => Ok(Response::new(v1::CallResponse {})),
            Err(e) => Err(call_error_status(&e)),
        }
    }
}

fn check_header(header: Option<v1::CallHeader>) -> Result<v1::CallHeader, Status> {
    let header = header.ok_or_else(|| {
        Status::invalid_argument(
            "missing header: every call carries a CallHeader with the framework_id and stream_id from SUBSCRIBED",
        )
    })?;
    if header.framework_id.is_empty() {
        return Err(Status::invalid_argument(
            "header.framework_id is empty: use the framework id from SUBSCRIBED",
        ));
    }
    if header.stream_id.is_empty() {
        return Err(Status::invalid_argument(
            "header.stream_id is empty: use the stream id from SUBSCRIBED",
        ));
    }
    Ok(header)
}

/// The events of one framework subscription. Dropping it (the client went away, or
/// the server ended the response) reports the disconnect to the driver.
#[derive(Debug)]
pub struct EventStream {
    conn: ConnId,
    events: mpsc::Receiver<v1::Event>,
    driver: DriverHandle,
}

impl Stream for EventStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx).map(|e| e.map(Ok))
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.driver.framework_gone(self.conn);
    }
}

#[tonic::async_trait]
impl v1::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let principal = principal_of(&request);
        self.admit(&principal).await?;
        let mut request = request.into_inner();
        let Some(info) = request.framework_info.as_mut() else {
            return Err(Status::invalid_argument(
                "missing framework_info: Subscribe needs a FrameworkInfo (empty id on first subscription)",
            ));
        };
        // The principal is the one authenticated, never what the client says (without
        // authentication, `--insecure`, the client's word is all there is).
        if !principal.is_anonymous() {
            info.principal = principal.name();
        }
        let conn = self.driver.next_conn();
        let (events, rx) = mpsc::channel(FRAMEWORK_BUFFER);
        tracing::debug!(conn = conn.0, "framework subscribing");
        self.driver
            .send(Command::Subscribe {
                conn,
                request,
                events,
            })
            .await?;
        Ok(Response::new(EventStream {
            conn,
            events: rx,
            driver: self.driver.clone(),
        }))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Accept(r)))
            .await
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Decline(r)))
            .await
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Revive(r)))
            .await
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Suppress(r)))
            .await
    }

    async fn kill(
        &self,
        request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Kill(r)))
            .await
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Acknowledge(r)))
            .await
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Reconcile(r)))
            .await
    }

    async fn message(
        &self,
        request: Request<v1::MessageRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Message(r)))
            .await
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.call(request, |r| (r.header.clone(), Call::Teardown(r)))
            .await
    }
}

/// The agent API (`strata.v1.AgentLink`).
#[derive(Debug, Clone)]
pub struct AgentLinkService {
    driver: DriverHandle,
    /// Opens the secrets agents fetch (see [`crate::secrets`]).
    key: Arc<SecretsKey>,
}

impl AgentLinkService {
    pub fn new(driver: DriverHandle, key: Arc<SecretsKey>) -> AgentLinkService {
        AgentLinkService { driver, key }
    }
}

/// The gRPC status of a refused object operation.
fn object_status(e: ObjectError) -> Status {
    match e.code {
        ObjectCode::InvalidArgument => Status::invalid_argument(e.message),
        ObjectCode::NotFound => Status::not_found(e.message),
        ObjectCode::AlreadyExists => Status::already_exists(e.message),
        ObjectCode::PermissionDenied => Status::permission_denied(e.message),
    }
}

/// The stored kind of a request's kind; `None` for unspecified (`what` names the
/// field in the refusal).
fn stored_kind(kind: i32) -> Result<Option<StoredKind>, Status> {
    match v1::ObjectKind::try_from(kind) {
        Ok(k) => Ok(StoredKind::from_proto(k)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown object kind {kind}: 1 (secret) or 2 (config)"
        ))),
    }
}

/// The messages down one agent stream. Dropping it stops the task reading the
/// agent's side of the stream.
#[derive(Debug)]
pub struct MasterMessageStream {
    messages: mpsc::Receiver<v1::MasterMessage>,
    /// Dropped with the stream: tells the reader task to stop.
    _reader_stop: oneshot::Sender<()>,
}

impl Stream for MasterMessageStream {
    type Item = Result<v1::MasterMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.messages.poll_recv(cx).map(|m| m.map(Ok))
    }
}

#[tonic::async_trait]
impl v1::agent_link_server::AgentLink for AgentLinkService {
    type AttachStream = MasterMessageStream;

    async fn fetch_objects(
        &self,
        request: Request<v1::FetchObjectsRequest>,
    ) -> Result<Response<v1::FetchObjectsResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        for (what, id) in [
            ("agent_id", &r.agent_id),
            ("framework_id", &r.framework_id),
            ("task_id", &r.task_id),
        ] {
            strata_proto::limits::check_len(what, id, strata_proto::limits::MAX_ID_BYTES)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let call = ObjectCall::Fetch {
            principal: principal.name(),
            agent_id: r.agent_id,
            framework_id: r.framework_id,
            task_id: r.task_id.clone(),
        };
        let ObjectAnswer::Values(mut values) =
            self.driver.objects(call).await?.map_err(object_status)?
        else {
            return Err(Status::internal("unexpected answer to a fetch"));
        };
        for value in &mut values {
            if value.kind == v1::ObjectKind::Secret as i32 {
                let opened = self.key.open(&value.name, &value.data).map_err(|e| {
                    tracing::error!(secret = %value.name, error = %e, "a secret of the registry does not open");
                    Status::internal(format!("secret '{}' cannot be decrypted by this master", value.name))
                })?;
                value.data.zeroize();
                value.data = opened.to_vec();
            }
        }
        tracing::debug!(task_id = %r.task_id, objects = values.len(), "objects fetched by an agent");
        Ok(Response::new(v1::FetchObjectsResponse { objects: values }))
    }

    async fn attach(
        &self,
        request: Request<tonic::Streaming<v1::AgentMessage>>,
    ) -> Result<Response<MasterMessageStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let principal = principal_of(&request);
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "no Register within {}s: the first message on an agent stream must be Register",
                    REGISTER_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::invalid_argument(
                    "the agent stream ended before Register: the first message must be Register",
                ));
            }
            Ok(Ok(Some(m))) => m,
        };
        let register = match first.message {
            Some(AgentMsg::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on an agent stream must be Register",
                ));
            }
        };
        let mut register = register;
        let Some(info) = register.agent_info.as_mut() else {
            return Err(Status::invalid_argument("Register.agent_info is missing"));
        };
        // An agent's principal is its certificate's, never what it says.
        info.principal = principal.name();

        let conn = self.driver.next_conn();
        let (messages, rx) = mpsc::channel(AGENT_BUFFER);
        tracing::debug!(
            conn = conn.0,
            peer = peer.as_deref().unwrap_or("?"),
            "agent attaching"
        );
        self.driver
            .send(Command::AgentAttach {
                conn,
                register,
                peer,
                messages,
            })
            .await?;

        // The reader's owner is the response stream: it stops when the agent's side
        // ends or when the response stream is dropped (closed by the driver, or the
        // server shutting down).
        let (reader_stop, mut stop) = oneshot::channel::<()>();
        let driver = self.driver.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    next = inbound.message() => match next {
                        Ok(Some(v1::AgentMessage { message: None })) => {
                            tracing::debug!(conn = conn.0, "ignoring an empty agent message");
                        }
                        Ok(Some(message)) => {
                            if driver.send(Command::AgentMessage { conn, message }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(conn = conn.0, %status, "agent stream failed");
                            break;
                        }
                    },
                }
            }
            let _ = driver.send(Command::AgentDisconnected { conn }).await;
        });
        Ok(Response::new(MasterMessageStream {
            messages: rx,
            _reader_stop: reader_stop,
        }))
    }
}

/// The read-only operator API (`strata.v1.Operator`), from the driver's snapshot.
#[derive(Debug, Clone)]
pub struct OperatorService {
    driver: DriverHandle,
    authz: strata_security::Authorizer,
    /// Seals the secrets operators create (see [`crate::secrets`]).
    key: Arc<SecretsKey>,
}

impl OperatorService {
    pub fn new(
        driver: DriverHandle,
        authz: strata_security::Authorizer,
        key: Arc<SecretsKey>,
    ) -> OperatorService {
        OperatorService { driver, authz, key }
    }

    /// The state as the caller of `request` may see it ([`crate::authorize::visible`]).
    async fn visible_state<T>(&self, request: &Request<T>) -> Result<StateSnapshot, Status> {
        let snapshot = self.driver.snapshot().await?;
        Ok(crate::authorize::visible(
            &self.authz,
            &principal_of(request),
            snapshot,
        ))
    }
}

#[tonic::async_trait]
impl v1::operator_server::Operator for OperatorService {
    async fn get_state(
        &self,
        request: Request<v1::GetStateRequest>,
    ) -> Result<Response<v1::GetStateResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(state_response(&s)))
    }

    async fn reserve_resources(
        &self,
        request: Request<v1::ResourceOperationRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        self.resource_operation(request, OpKind::Reserve).await
    }

    async fn unreserve_resources(
        &self,
        request: Request<v1::ResourceOperationRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        self.resource_operation(request, OpKind::Unreserve).await
    }

    async fn create_volumes(
        &self,
        request: Request<v1::ResourceOperationRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        self.resource_operation(request, OpKind::Create).await
    }

    async fn destroy_volumes(
        &self,
        request: Request<v1::ResourceOperationRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        self.resource_operation(request, OpKind::Destroy).await
    }

    async fn get_volumes(
        &self,
        request: Request<v1::GetVolumesRequest>,
    ) -> Result<Response<v1::GetVolumesResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(v1::GetVolumesResponse {
            volumes: volume_states(&s),
        }))
    }

    async fn get_agents(
        &self,
        request: Request<v1::GetAgentsRequest>,
    ) -> Result<Response<v1::GetAgentsResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(v1::GetAgentsResponse {
            agents: s.agents.iter().map(agent_state).collect(),
        }))
    }

    async fn get_frameworks(
        &self,
        request: Request<v1::GetFrameworksRequest>,
    ) -> Result<Response<v1::GetFrameworksResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(v1::GetFrameworksResponse {
            frameworks: s.frameworks.iter().map(framework_state).collect(),
        }))
    }

    async fn get_tasks(
        &self,
        request: Request<v1::GetTasksRequest>,
    ) -> Result<Response<v1::GetTasksResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(v1::GetTasksResponse {
            tasks: s.tasks.iter().map(task_entry).collect(),
        }))
    }

    async fn get_roles(
        &self,
        request: Request<v1::GetRolesRequest>,
    ) -> Result<Response<v1::GetRolesResponse>, Status> {
        let s = self.visible_state(&request).await?;
        Ok(Response::new(v1::GetRolesResponse {
            roles: s.roles.iter().map(role_state).collect(),
        }))
    }

    async fn update_weights(
        &self,
        request: Request<v1::UpdateWeightsRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let weights = request
            .into_inner()
            .weights
            .into_iter()
            .map(|w| (w.role, w.weight))
            .collect();
        self.operate(&principal, OperatorCall::UpdateWeights(weights))
            .await
    }

    async fn deactivate_agent(
        &self,
        request: Request<v1::AgentMaintenanceRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        if r.max_grace_period_seconds.is_some() {
            return Err(Status::invalid_argument(
                "max_grace_period_seconds applies to DrainAgent only",
            ));
        }
        let call = OperatorCall::DeactivateAgent {
            agent_id: r.agent_id,
        };
        self.operate(&principal, call).await
    }

    async fn drain_agent(
        &self,
        request: Request<v1::AgentMaintenanceRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        let max_grace_period =
            grace_from_secs(r.max_grace_period_seconds).map_err(|e| call_error_status(&e))?;
        let call = OperatorCall::DrainAgent {
            agent_id: r.agent_id,
            max_grace_period,
        };
        self.operate(&principal, call).await
    }

    async fn reactivate_agent(
        &self,
        request: Request<v1::AgentMaintenanceRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        if r.max_grace_period_seconds.is_some() {
            return Err(Status::invalid_argument(
                "max_grace_period_seconds applies to DrainAgent only",
            ));
        }
        let call = OperatorCall::ReactivateAgent {
            agent_id: r.agent_id,
        };
        self.operate(&principal, call).await
    }

    async fn mark_agent_gone(
        &self,
        request: Request<v1::AgentMaintenanceRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        if r.max_grace_period_seconds.is_some() {
            return Err(Status::invalid_argument(
                "max_grace_period_seconds applies to DrainAgent only",
            ));
        }
        let call = OperatorCall::MarkAgentGone {
            agent_id: r.agent_id,
        };
        self.operate(&principal, call).await
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::OperatorEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<v1::OperatorSubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        let resume = r
            .resume_after
            .filter(|_| !r.resume_master_id.is_empty())
            .map(|seq| (r.resume_master_id, seq));
        // Agents' proxies follow the services; operators what their ACLs let them view.
        let (scope, key) = match proxy_key(&principal, &r.proxy) {
            Some(key) => (crate::events::Scope::Services, key),
            None => (crate::events::Scope::All, principal.name()),
        };
        let start = self.driver.operator_subscribe(key, scope, resume).await?;
        let (tx, rx) = mpsc::channel(OPERATOR_STREAM_BUFFER);
        let services_only = scope == crate::events::Scope::Services;
        tokio::spawn(forward_events(
            start,
            principal,
            services_only,
            self.authz.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack_events(
        &self,
        request: Request<v1::OperatorAckRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        let Some(key) = proxy_key(&principal, &r.proxy) else {
            return Err(Status::permission_denied(
                "only agents' service proxies acknowledge events",
            ));
        };
        self.driver.events_acked(key, r.master_id, r.seq).await?;
        Ok(Response::new(v1::MaintenanceResponse {}))
    }

    async fn teardown_framework(
        &self,
        request: Request<v1::TeardownFrameworkRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let call = OperatorCall::TeardownFramework {
            framework_id: request.into_inner().framework_id,
        };
        self.operate(&principal, call).await
    }

    async fn create_object(
        &self,
        request: Request<v1::CreateObjectRequest>,
    ) -> Result<Response<v1::CreateObjectResponse>, Status> {
        let principal = principal_of(&request);
        let mut r = request.into_inner();
        let Some(kind) = stored_kind(r.kind)? else {
            return Err(Status::invalid_argument(
                "CreateObject: kind is required: 1 (secret) or 2 (config)",
            ));
        };
        // The rules first (also checked by the core): nothing is sealed for nothing.
        objects::validate_name(kind.to_proto(), &r.name).map_err(Status::invalid_argument)?;
        objects::validate_size(kind.to_proto(), &r.name, r.data.len())
            .map_err(Status::invalid_argument)?;
        let size = r.data.len() as u64;
        let data = match kind {
            StoredKind::Secret => {
                let sealed = self.key.seal(&r.name, &r.data);
                r.data.zeroize();
                sealed
            }
            StoredKind::Config => std::mem::take(&mut r.data),
        };
        let call = ObjectCall::Create {
            principal: principal.name(),
            kind,
            name: r.name,
            data,
            size,
            update: r.update,
        };
        match self.driver.objects(call).await?.map_err(object_status)? {
            ObjectAnswer::Version(version) => {
                Ok(Response::new(v1::CreateObjectResponse { version }))
            }
            _ => Err(Status::internal("unexpected answer to a create")),
        }
    }

    async fn remove_object(
        &self,
        request: Request<v1::RemoveObjectRequest>,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        let Some(kind) = stored_kind(r.kind)? else {
            return Err(Status::invalid_argument(
                "RemoveObject: kind is required: 1 (secret) or 2 (config)",
            ));
        };
        strata_proto::limits::check_len("name", &r.name, strata_proto::limits::MAX_NAME_BYTES)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let call = ObjectCall::Remove {
            principal: principal.name(),
            kind,
            name: r.name,
        };
        self.driver.objects(call).await?.map_err(object_status)?;
        Ok(Response::new(v1::MaintenanceResponse {}))
    }

    async fn list_objects(
        &self,
        request: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        let principal = principal_of(&request);
        let kind = stored_kind(request.into_inner().kind)?;
        let call = ObjectCall::List {
            principal: principal.name(),
            kind,
        };
        match self.driver.objects(call).await?.map_err(object_status)? {
            ObjectAnswer::List(objects) => Ok(Response::new(v1::ListObjectsResponse { objects })),
            _ => Err(Status::internal("unexpected answer to a list")),
        }
    }

    async fn get_config(
        &self,
        request: Request<v1::GetConfigRequest>,
    ) -> Result<Response<v1::GetConfigResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        strata_proto::limits::check_len("name", &r.name, strata_proto::limits::MAX_NAME_BYTES)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let call = ObjectCall::GetConfig {
            principal: principal.name(),
            name: r.name,
            version: r.version,
        };
        match self.driver.objects(call).await?.map_err(object_status)? {
            ObjectAnswer::Config { version, data } => {
                Ok(Response::new(v1::GetConfigResponse { version, data }))
            }
            _ => Err(Status::internal("unexpected answer to a get")),
        }
    }
}

impl OperatorService {
    /// RESERVE / UNRESERVE / CREATE / DESTROY by an operator.
    async fn resource_operation(
        &self,
        request: Request<v1::ResourceOperationRequest>,
        kind: OpKind,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        let principal = principal_of(&request);
        let r = request.into_inner();
        if r.resources.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{} names no resources",
                kind.name()
            )));
        }
        let call = OperatorCall::ResourceOperation {
            agent_id: r.agent_id,
            kind,
            resources: r.resources,
            principal: principal.name(),
        };
        self.operate(&principal, call).await
    }

    async fn operate(
        &self,
        principal: &Principal,
        call: OperatorCall,
    ) -> Result<Response<v1::MaintenanceResponse>, Status> {
        crate::authorize::authorize_operator(&self.driver, &self.authz, principal, &call)
            .await?
            .map_err(|denied| Status::permission_denied(denied.to_string()))?;
        self.driver
            .operator(call)
            .await?
            .map_err(|e| call_error_status(&e))?;
        Ok(Response::new(v1::MaintenanceResponse {}))
    }
}

/// The key of a service proxy's subscription: an agent's by its certificate; on an
/// `--insecure` master (everyone anonymous) the `proxy` id it gives. `None`: not a
/// proxy (operators follow everything their ACLs let them see).
fn proxy_key(principal: &Principal, proxy: &str) -> Option<String> {
    match principal {
        Principal::Agent(_) => Some(principal.name()),
        Principal::Anonymous if !proxy.is_empty() => Some(format!("proxy:{proxy}")),
        _ => None,
    }
}

/// Events in flight to one operator stream client.
const OPERATOR_STREAM_BUFFER: usize = 1024;
/// An idle operator stream gets a HEARTBEAT this often.
const OPERATOR_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// Sends one subscriber its snapshot (or the events it missed), then the live events,
/// each only if `principal` may view it (tasks and frameworks by their framework's
/// principal, as [`crate::authorize::visible`] decides for `/state`), with a HEARTBEAT
/// when idle. Ends when the client goes away or falls behind (it may resume).
async fn forward_events(
    start: crate::events::SubscribeStart,
    principal: Principal,
    services_only: bool,
    authz: strata_security::Authorizer,
    tx: mpsc::Sender<Result<v1::OperatorEvent, Status>>,
) {
    use strata_security::Action;
    use v1::operator_event::Event;
    let crate::events::SubscribeStart {
        snapshot,
        replay,
        seq,
        master_id,
        mut owners,
        mut events,
    } = start;
    let mut last = seq;
    if let Some(snapshot) = snapshot {
        // A proxy's snapshot holds only services already (`Scope::Services`).
        let visible = if services_only {
            snapshot
        } else {
            crate::authorize::visible(&authz, &principal, snapshot)
        };
        let event = v1::OperatorEvent {
            seq,
            master_id: master_id.clone(),
            event: Some(Event::Snapshot(state_response(&visible))),
        };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
    // Whether `principal` may see `event`; keeps `owners` up to date.
    let mut permitted = |event: &v1::OperatorEvent| -> bool {
        if services_only {
            // Selected for services by the log already.
            return true;
        }
        let framework = |f: &v1::FrameworkState| {
            f.info
                .as_ref()
                .map(|i| (i.id.clone(), i.principal.clone()))
                .unwrap_or_default()
        };
        match &event.event {
            Some(Event::TaskAdded(t)) | Some(Event::TaskUpdated(t)) => {
                let owner = owners
                    .get(&t.framework_id)
                    .map(String::as_str)
                    .unwrap_or("");
                authz.permits(&principal, Action::ViewTasks, owner)
            }
            Some(Event::FrameworkAdded(f)) | Some(Event::FrameworkUpdated(f)) => {
                let (id, owner) = framework(f);
                let ok = authz.permits(&principal, Action::ViewFrameworks, &owner);
                owners.insert(id, owner);
                ok
            }
            Some(Event::FrameworkRemoved(id)) => {
                let owner = owners.remove(id).unwrap_or_default();
                authz.permits(&principal, Action::ViewFrameworks, &owner)
            }
            _ => true,
        }
    };
    for event in replay {
        last = event.seq;
        if permitted(&event) && tx.send(Ok((*event).clone())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            next = events.recv() => {
                let Some(event) = next else {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "the event stream fell behind and was dropped: resume after seq {last}"
                        ))))
                        .await;
                    return;
                };
                last = event.seq;
                if permitted(&event) && tx.send(Ok((*event).clone())).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(OPERATOR_HEARTBEAT) => {
                let heartbeat = v1::OperatorEvent {
                    seq: last,
                    master_id: master_id.clone(),
                    event: Some(Event::Heartbeat(v1::OperatorHeartbeat {})),
                };
                if tx.send(Ok(heartbeat)).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// The whole state as the operator API's `GetStateResponse`.
pub fn state_response(s: &StateSnapshot) -> v1::GetStateResponse {
    v1::GetStateResponse {
        master_id: s.master_id.clone(),
        agents: s.agents.iter().map(agent_state).collect(),
        frameworks: s.frameworks.iter().map(framework_state).collect(),
        tasks: s.tasks.iter().map(task_entry).collect(),
        roles: s.roles.iter().map(role_state).collect(),
    }
}

pub(crate) fn agent_state(a: &AgentView) -> v1::AgentState {
    v1::AgentState {
        info: Some(v1::AgentInfo {
            id: a.id.clone(),
            hostname: a.hostname.clone(),
            address: a.address.clone(),
            principal: a.principal.clone(),
            resources: a.total.to_proto(),
            attributes: a
                .attributes
                .iter()
                .map(|(name, value)| v1::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
        status: a.status.clone(),
        total: a.total.to_proto(),
        used: a.used.to_proto(),
        offered: a.offered.to_proto(),
        registered_time: a.registered_time,
        maintenance: a.maintenance.unwrap_or_default().to_string(),
    }
}

/// Every volume of a (visible) state; the task using one only when it is visible.
pub(crate) fn volume_states(s: &StateSnapshot) -> Vec<v1::VolumeState> {
    let mut out = Vec::new();
    for a in &s.agents {
        for v in &a.volumes {
            let visible = |fw: &Option<String>, task: &Option<String>| match (fw, task) {
                (Some(fw), Some(task)) => s
                    .tasks
                    .iter()
                    .any(|t| &t.framework_id == fw && &t.id == task),
                _ => false,
            };
            let shown = visible(&v.framework_id, &v.task_id);
            out.push(v1::VolumeState {
                agent_id: a.id.clone(),
                hostname: a.hostname.clone(),
                role: v.role.clone(),
                volume: Some(v.resource.clone()),
                used_bytes: v.used_bytes.unwrap_or_default(),
                framework_id: if shown {
                    v.framework_id.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                task_id: if shown {
                    v.task_id.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            });
        }
    }
    out
}

pub(crate) fn framework_state(f: &FrameworkView) -> v1::FrameworkState {
    v1::FrameworkState {
        info: Some(v1::FrameworkInfo {
            id: f.id.clone(),
            name: f.name.clone(),
            user: f.user.clone(),
            roles: f.roles.clone(),
            failover_timeout_seconds: f.failover_timeout_seconds,
            capabilities: f
                .capabilities
                .iter()
                .filter_map(|c| v1::FrameworkCapability::from_str_name(c))
                .map(|c| c as i32)
                .collect(),
            hostname: String::new(),
            principal: f.principal.clone(),
        }),
        connected: f.connected,
        active: f.active,
        suppressed_roles: f.suppressed_roles.clone(),
        used: f.used.to_proto(),
        offered: f.offered.to_proto(),
        task_count: f.task_count as u64,
    }
}

pub(crate) fn task_entry(t: &TaskView) -> v1::TaskEntry {
    let state = v1::TaskState::from_str_name(&t.state).unwrap_or(v1::TaskState::Unspecified) as i32;
    v1::TaskEntry {
        task_id: t.id.clone(),
        framework_id: t.framework_id.clone(),
        agent_id: t.agent_id.clone(),
        name: t.name.clone(),
        state,
        resources: t.resources.to_proto(),
        last_status: Some(v1::TaskStatus {
            task_id: t.id.clone(),
            state,
            message: t.message.clone(),
            reason: v1::TaskStatusReason::from_str_name(&t.reason)
                .unwrap_or(v1::TaskStatusReason::ReasonUnspecified) as i32,
            agent_id: t.agent_id.clone(),
            framework_id: t.framework_id.clone(),
            timestamp: t.updated,
            exit_status: t.exit_status,
            healthy: t.healthy,
            ..Default::default()
        }),
        discovery: t.discovery.clone(),
        health_checked: t.health_checked,
    }
}

fn role_state(r: &RoleView) -> v1::RoleState {
    v1::RoleState {
        name: r.name.clone(),
        weight: r.weight,
        allocated: r.allocated.to_proto(),
        frameworks: r.frameworks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::Resources;

    #[test]
    fn call_errors_map_to_grpc_codes() {
        let cases = [
            (
                CallError::UnknownFramework("f".into()),
                tonic::Code::NotFound,
            ),
            (CallError::NotFound("x".into()), tonic::Code::NotFound),
            (
                CallError::StaleStream {
                    framework_id: "f".into(),
                    got: "s".into(),
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                CallError::FailedPrecondition("x".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                CallError::InvalidArgument("bad cpus".into()),
                tonic::Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let s = call_error_status(&e);
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), e.to_string());
        }
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(
            check_header(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let empty = v1::CallHeader {
            framework_id: String::new(),
            stream_id: "s".into(),
        };
        assert_eq!(
            check_header(Some(empty)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let ok = v1::CallHeader {
            framework_id: "f".into(),
            stream_id: "s".into(),
        };
        assert!(check_header(Some(ok)).is_ok());
    }

    #[test]
    fn snapshot_converts_to_operator_messages() {
        let s = StateSnapshot {
            master_id: "m".into(),
            agents: vec![AgentView {
                id: "a1".into(),
                hostname: "h".into(),
                principal: String::new(),
                address: "h:5051".into(),
                status: "ACTIVE".into(),
                attributes: [("rack".to_string(), "r1".to_string())].into(),
                total: Resources::cpus_mem(4.0, 1024.0),
                used: Resources::cpus_mem(1.0, 128.0),
                offered: Resources::new(),
                registered_time: 1.0,
                maintenance: Some("DRAINING"),
                reserved: Resources::new(),
                volumes: Vec::new(),
            }],
            frameworks: vec![FrameworkView {
                id: "f1".into(),
                name: "hello".into(),
                principal: "ops".into(),
                user: "u".into(),
                roles: vec!["*".into()],
                capabilities: vec!["PARTITION_AWARE".into(), "NOT_A_CAPABILITY".into()],
                failover_timeout_seconds: 60.0,
                connected: true,
                active: true,
                suppressed_roles: vec![],
                used: Resources::cpus_mem(1.0, 128.0),
                offered: Resources::new(),
                task_count: 1,
            }],
            tasks: vec![TaskView {
                id: "t1".into(),
                name: "t".into(),
                framework_id: "f1".into(),
                agent_id: "a1".into(),
                state: "TASK_RUNNING".into(),
                resources: Resources::cpus_mem(1.0, 128.0),
                message: String::new(),
                reason: "REASON_COMMAND_EXITED".into(),
                exit_status: None,
                healthy: None,
                health_checked: false,
                updated: 2.0,
                statistics: None,
                discovery: None,
                objects: vec![],
            }],
            roles: vec![RoleView {
                name: "*".into(),
                weight: 1.0,
                allocated: Resources::cpus_mem(1.0, 128.0),
                frameworks: vec!["f1".into()],
            }],
            outstanding_offers: 0,
        };
        let r = state_response(&s);
        assert_eq!(r.master_id, "m");
        assert_eq!(r.agents[0].info.as_ref().unwrap().attributes[0].value, "r1");
        assert_eq!(
            r.frameworks[0].info.as_ref().unwrap().capabilities,
            vec![v1::FrameworkCapability::PartitionAware as i32]
        );
        assert_eq!(r.tasks[0].state, v1::TaskState::TaskRunning as i32);
        assert_eq!(
            r.tasks[0].last_status.as_ref().unwrap().reason,
            v1::TaskStatusReason::ReasonCommandExited as i32
        );
        assert_eq!(r.roles[0].frameworks, vec!["f1".to_string()]);
    }
}
