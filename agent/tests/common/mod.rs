//! Test harness: a fake master (a tonic server implementing the generated `AgentLink`
//! trait, so the agent is tested alone over a real socket) and an in-process agent.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use strata_agent::{AgentError, AgentOptions, Shutdown};
use strata_proto::v1::{
    self, TaskState, agent_link_server::AgentLink, agent_link_server::AgentLinkServer,
    agent_message, master_message,
};
use strata_proto::{Resources, state_name};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Generous upper bound for anything a test waits for.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// What the fake master saw from the agent.
#[derive(Debug)]
pub enum Seen {
    Register(v1::Register),
    Message(v1::AgentMessage),
    StreamClosed,
}

type ToAgent = mpsc::UnboundedSender<Result<v1::MasterMessage, Status>>;

/// What the fake master answers to `FetchObjects`, by (framework id, task id): the
/// values, or an error status. Tasks not in it: NotFound.
pub type Objects =
    Arc<Mutex<std::collections::HashMap<(String, String), Result<Vec<v1::ObjectValue>, Status>>>>;

struct Link {
    seen: mpsc::UnboundedSender<Seen>,
    to_agent: Arc<Mutex<Option<ToAgent>>>,
    /// The id handed to agents that register without one.
    new_agent_id: String,
    heartbeat_seconds: f64,
    /// How many registrations to refuse with an AgentError before accepting one.
    refusals: Arc<std::sync::atomic::AtomicUsize>,
    objects: Objects,
    /// Every FetchObjects request received.
    fetches: Arc<Mutex<Vec<v1::FetchObjectsRequest>>>,
    /// How many fetches to answer Unavailable before answering.
    unavailable_fetches: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl AgentLink for Link {
    type AttachStream = Pin<Box<dyn Stream<Item = Result<v1::MasterMessage, Status>> + Send>>;

    async fn fetch_objects(
        &self,
        request: Request<v1::FetchObjectsRequest>,
    ) -> Result<Response<v1::FetchObjectsResponse>, Status> {
        let request = request.into_inner();
        self.fetches.lock().unwrap().push(request.clone());
        if self
            .unavailable_fetches
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("the master is busy"));
        }
        let key = (request.framework_id.clone(), request.task_id.clone());
        match self.objects.lock().unwrap().get(&key) {
            Some(Ok(values)) => Ok(Response::new(v1::FetchObjectsResponse {
                objects: values.clone(),
            })),
            Some(Err(status)) => Err(Status::new(status.code(), status.message())),
            None => Err(Status::not_found(format!(
                "no configs or secrets for task '{}'",
                request.task_id
            ))),
        }
    }

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no Register"))?;
        let Some(agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument("first message must be Register"));
        };
        let id = register
            .agent_info
            .as_ref()
            .map(|i| i.id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| self.new_agent_id.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let refuse = self
            .refusals
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            let error = v1::AgentError {
                message: "not now, try again later".into(),
                gone: false,
            };
            let _ = tx.send(Ok(v1::MasterMessage {
                message: Some(master_message::Message::Error(error)),
            }));
            let _ = self.seen.send(Seen::Register(register));
            return Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))));
        }
        let registered = v1::Registered {
            agent_id: id,
            master_id: "fake-master".into(),
            heartbeat_interval_seconds: self.heartbeat_seconds,
        };
        let _ = tx.send(Ok(v1::MasterMessage {
            message: Some(master_message::Message::Registered(registered)),
        }));
        *self.to_agent.lock().unwrap() = Some(tx);
        let _ = self.seen.send(Seen::Register(register));
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if seen.send(Seen::Message(msg)).is_err() {
                    break;
                }
            }
            let _ = seen.send(Seen::StreamClosed);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// A master that registers agents and records what they send.
pub struct FakeMaster {
    pub addr: SocketAddr,
    /// Kept across a restart ([`FakeMaster::restart`]) so no other socket can take the
    /// port meanwhile; connections made while the master is down wait in the backlog.
    listener: Arc<tokio::net::TcpListener>,
    seen: mpsc::UnboundedReceiver<Seen>,
    to_agent: Arc<Mutex<Option<ToAgent>>>,
    refusals: Arc<std::sync::atomic::AtomicUsize>,
    /// What `FetchObjects` answers (see [`FakeMaster::serve_objects`]).
    pub objects: Objects,
    /// The `FetchObjects` requests received.
    pub fetches: Arc<Mutex<Vec<v1::FetchObjectsRequest>>>,
    /// How many of the next fetches are answered Unavailable.
    pub unavailable_fetches: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl FakeMaster {
    pub async fn start() -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake master");
        FakeMaster::serve(Arc::new(listener))
    }

    /// Plays a master restart: the agent's stream fails, the master is down for a
    /// moment, and a new master (which knows nothing) serves the same port.
    pub async fn restart(self) -> FakeMaster {
        let listener = self.listener.clone();
        self.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        FakeMaster::serve(listener)
    }

    fn serve(listener: Arc<tokio::net::TcpListener>) -> FakeMaster {
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let to_agent = Arc::new(Mutex::new(None));
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let objects: Objects = Arc::default();
        let fetches: Arc<Mutex<Vec<v1::FetchObjectsRequest>>> = Arc::default();
        let unavailable_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let link = Link {
            objects: objects.clone(),
            fetches: fetches.clone(),
            unavailable_fetches: unavailable_fetches.clone(),
            refusals: refusals.clone(),
            seen: seen_tx,
            to_agent: to_agent.clone(),
            new_agent_id: "agent-from-fake-master".into(),
            heartbeat_seconds: 0.2,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming = futures::stream::unfold(listener.clone(), |l| async move {
            let conn = l.accept().await.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                stream
            });
            Some((conn, l))
        });
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(
                    AgentLinkServer::new(link)
                        .max_decoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES),
                )
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        FakeMaster {
            addr,
            listener,
            seen,
            to_agent,
            refusals,
            objects,
            fetches,
            unavailable_fetches,
            stop: Some(stop_tx),
            server: Some(server),
        }
    }

    /// Plays a master crash: the agent's stream fails.
    pub async fn stop(mut self) {
        if let Some(tx) = self.to_agent.lock().unwrap().take() {
            let _ = tx.send(Err(Status::unavailable("master going away")));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }

    /// Answers `FetchObjects` for `task_id` (of [`FRAMEWORK`]) with `values`.
    pub fn serve_objects(&self, task_id: &str, values: Vec<v1::ObjectValue>) {
        self.objects
            .lock()
            .unwrap()
            .insert((FRAMEWORK.to_string(), task_id.to_string()), Ok(values));
    }

    /// Answers `FetchObjects` for `task_id` (of [`FRAMEWORK`]) with `status`.
    pub fn refuse_objects(&self, task_id: &str, status: Status) {
        self.objects
            .lock()
            .unwrap()
            .insert((FRAMEWORK.to_string(), task_id.to_string()), Err(status));
    }

    /// Refuses the next `n` registrations with an AgentError.
    pub fn refuse_registrations(&self, n: usize) {
        self.refusals.store(n, SeqCst);
    }

    pub fn send(&self, message: master_message::Message) {
        let guard = self.to_agent.lock().unwrap();
        let tx = guard.as_ref().expect("an agent is attached");
        tx.send(Ok(v1::MasterMessage {
            message: Some(message),
        }))
        .expect("agent stream open");
    }

    pub fn run_task(&self, framework: v1::FrameworkInfo, task: v1::TaskInfo) {
        self.send(master_message::Message::RunTask(v1::RunTask {
            framework: Some(framework),
            task: Some(task),
        }));
    }

    pub fn kill_task(&self, task_id: &str, grace_seconds: Option<f64>) {
        self.send(master_message::Message::KillTask(v1::KillTask {
            framework_id: FRAMEWORK.into(),
            task_id: task_id.into(),
            kill_policy: grace_seconds.map(|g| v1::KillPolicy {
                grace_period_seconds: Some(g),
            }),
        }));
    }

    pub fn ack(&self, status: &v1::TaskStatus) {
        self.send(master_message::Message::Acknowledge(
            v1::AcknowledgeUpdate {
                framework_id: status.framework_id.clone(),
                task_id: status.task_id.clone(),
                uuid: status.uuid.clone(),
            },
        ));
    }

    /// The next thing the agent did, or panics after [`TIMEOUT`].
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(TIMEOUT, self.seen.recv())
            .await
            .expect("timed out waiting for the agent")
            .expect("fake master channel closed")
    }

    pub async fn next_register(&mut self) -> v1::Register {
        loop {
            if let Seen::Register(r) = self.next().await {
                return r;
            }
        }
    }

    /// The next status update (heartbeats skipped).
    pub async fn next_update(&mut self) -> v1::TaskStatus {
        loop {
            if let Seen::Message(v1::AgentMessage {
                message:
                    Some(agent_message::Message::StatusUpdate(v1::StatusUpdate { status: Some(s) })),
            }) = self.next().await
            {
                return s;
            }
        }
    }

    /// Receives updates for `task_id`, acknowledging each, until one in a terminal
    /// state; returns them all. Fails on an update of another task.
    pub async fn follow(&mut self, task_id: &str) -> Vec<v1::TaskStatus> {
        let mut out = Vec::new();
        loop {
            let s = self.next_update().await;
            assert_eq!(s.task_id, task_id, "unexpected update {s:?}");
            self.ack(&s);
            let terminal = strata_proto::is_terminal(state_of(&s));
            out.push(s);
            if terminal {
                return out;
            }
        }
    }

    /// Receives (and acknowledges) updates of `task_id` until it is in `state`.
    pub async fn wait_state(&mut self, task_id: &str, state: TaskState) -> v1::TaskStatus {
        loop {
            let s = self.next_update().await;
            assert_eq!(s.task_id, task_id, "unexpected update {s:?}");
            self.ack(&s);
            if state_of(&s) == state {
                return s;
            }
            assert!(
                !strata_proto::is_terminal(state_of(&s)),
                "task ended in {}: {}",
                state_name(state_of(&s)),
                s.message
            );
        }
    }
}

pub fn state_of(s: &v1::TaskStatus) -> TaskState {
    strata_proto::states::state_from_i32(s.state)
}

pub fn names(updates: &[v1::TaskStatus]) -> Vec<&'static str> {
    updates.iter().map(|s| state_name(state_of(s))).collect()
}

pub const FRAMEWORK: &str = "fw-1";

pub fn framework() -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        id: FRAMEWORK.into(),
        name: "test".into(),
        ..Default::default()
    }
}

pub fn shell_task(task_id: &str, command: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: task_id.into(),
        name: task_id.into(),
        resources: Resources::parse("cpus:0.1;mem:32").unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: command.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Options for a test agent: fixed resources, fast registration backoff.
pub fn options(master: SocketAddr, work_dir: &Path) -> AgentOptions {
    let mut o = AgentOptions::new(master.to_string(), work_dir);
    o.resources = Resources::parse("cpus:2;mem:1024;disk:1024;ports:[31000-31010]").unwrap();
    o.attributes = vec![("rack".into(), "r1".into())];
    o.registration_backoff = Duration::from_millis(50);
    o.registration_backoff_max = Duration::from_millis(200);
    o.executor_shutdown_grace_period = Duration::from_secs(2);
    o
}

/// An agent running in this process.
pub struct TestAgent {
    pub addr: SocketAddr,
    pub work_dir: PathBuf,
    stop: Option<oneshot::Sender<Shutdown>>,
    handle: Option<JoinHandle<Result<(), AgentError>>>,
}

impl TestAgent {
    pub async fn start(options: AgentOptions) -> TestAgent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let work_dir = options.work_dir.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<Shutdown>();
        let handle = tokio::spawn(strata_agent::run(listener, options, async {
            stop_rx.await.unwrap_or(Shutdown::KeepTasks)
        }));
        TestAgent {
            addr,
            work_dir,
            stop: Some(stop_tx),
            handle: Some(handle),
        }
    }

    /// Graceful shutdown that kills every task first, as on SIGUSR1 (tests end with
    /// this, so that nothing they started runs on).
    pub async fn stop(self) {
        self.stop_with(Shutdown::KillTasks).await
    }

    /// Graceful shutdown as on SIGTERM: the tasks keep running.
    pub async fn stop_keeping_tasks(self) {
        self.stop_with(Shutdown::KeepTasks).await
    }

    async fn stop_with(mut self, mode: Shutdown) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(mode);
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(TIMEOUT, handle)
                .await
                .expect("agent did not stop in time")
                .expect("agent panicked")
                .expect("agent failed");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.work_dir
            .join("frameworks")
            .join(FRAMEWORK)
            .join("tasks")
            .join(task_id)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(self.url(path)).await.expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Waits until `f` is true, polling; panics after [`TIMEOUT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a live (not zombie) process has this pid.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
    }
}

/// Reads a pid a task wrote into its sandbox.
pub async fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    eventually("the task to write its pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}
