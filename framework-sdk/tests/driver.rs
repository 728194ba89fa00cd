//! The driver against a fake master: a tonic server implementing the generated
//! `Scheduler` service. The test plays the master's part by hand: it receives each
//! SUBSCRIBE (with a sender for that stream's events) and every unary call the driver
//! makes, and asserts on them.
//!
//! Most tests run on tokio's paused clock (`start_paused = true`): heartbeat
//! intervals, backoff, timeouts and "no call for a while" cost no wall time, and a
//! loaded machine cannot make a heartbeat look missed. For that, the fake master runs
//! on the test's own runtime and the driver reaches it over in-memory pipes
//! (`Driver::with_channel`, a connector handing out `tokio::io::duplex` halves):
//! nothing outside the runtime moves bytes, so the runtime goes idle, and the paused
//! clock jumps to the next timer, only when every party is really waiting.
//!
//! A few tests need a real socket: the driver dialling an address, a port nobody
//! listens on, a master killed and restarted on its port. They run on real time (the
//! kernel moving bytes looks idle to a paused runtime) with the master on 127.0.0.1,
//! on its own thread and runtime so that the test can kill it like a crashed process.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};

use hyper_util::rt::TokioIo;
use strata_framework_sdk::{
    Driver, DriverHandle, DriverOptions, OfferPool, Scheduler, SdkError, TaskBuilder, state_of, v1,
};
use strata_proto::v1::scheduler_server::{self, SchedulerServer};
use tokio::io::DuplexStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status};

// ---------------------------------------------------------------------------------
// The fake master.

/// One SUBSCRIBE the fake master received; `events` feeds that subscription's stream
/// (dropping it ends the stream).
struct Subscription {
    request: v1::SubscribeRequest,
    events: mpsc::Sender<Result<v1::Event, Status>>,
}

impl Subscription {
    async fn send(&self, event: v1::event::Event) {
        self.events
            .send(Ok(v1::Event { event: Some(event) }))
            .await
            .expect("the driver hung up on the stream");
    }
}

/// A unary call the fake master received.
#[derive(Debug)]
enum Call {
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

#[derive(Clone)]
struct Service {
    subscriptions: mpsc::Sender<Subscription>,
    calls: mpsc::Sender<Call>,
    /// Refuse every SUBSCRIBE with this code.
    refuse: Option<Code>,
    /// Ends every open event stream; TEARDOWN fires them before answering, as a real
    /// master closes the framework's stream when it removes the framework.
    closers: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
    /// Set by TEARDOWN: later calls are recorded and refused with NOT_FOUND, as the
    /// real master refuses calls of a framework it removed.
    torn_down: Arc<AtomicBool>,
    /// When set, TEARDOWN (once the framework is removed and the call recorded) waits
    /// for this before answering: a teardown still in flight, held open by the test.
    hold_teardown: Option<Arc<Notify>>,
}

impl Service {
    async fn record(&self, call: Call) -> Result<Response<v1::CallResponse>, Status> {
        self.record_as(call, self.torn_down.load(Ordering::SeqCst))
            .await
    }

    async fn record_as(
        &self,
        call: Call,
        removed: bool,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.calls
            .send(call)
            .await
            .map_err(|_| Status::internal("the test is gone"))?;
        if removed {
            return Err(Status::not_found("unknown framework 'fw-1'"));
        }
        Ok(Response::new(v1::CallResponse {}))
    }
}

#[tonic::async_trait]
impl scheduler_server::Scheduler for Service {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "refused by the fake master"));
        }
        let (events, rx) = mpsc::channel(16);
        let (close, closed) = oneshot::channel();
        self.closers.lock().unwrap().push(close);
        let subscription = Subscription {
            request: request.into_inner(),
            events,
        };
        self.subscriptions
            .send(subscription)
            .await
            .map_err(|_| Status::internal("the test is gone"))?;
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).take_until(closed),
        )))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Accept(r.into_inner())).await
    }

    async fn decline(
        &self,
        r: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Decline(r.into_inner())).await
    }

    async fn revive(
        &self,
        r: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Revive(r.into_inner())).await
    }

    async fn suppress(
        &self,
        r: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Suppress(r.into_inner())).await
    }

    async fn kill(
        &self,
        r: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Kill(r.into_inner())).await
    }

    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Acknowledge(r.into_inner())).await
    }

    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Reconcile(r.into_inner())).await
    }

    async fn message(
        &self,
        r: Request<v1::MessageRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(Call::Message(r.into_inner())).await
    }

    async fn teardown(
        &self,
        r: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.torn_down.store(true, Ordering::SeqCst);
        let closers: Vec<_> = self.closers.lock().unwrap().drain(..).collect();
        for close in closers {
            let _ = close.send(());
        }
        // Let the driver see its stream end before the call returns.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = self.record_as(Call::Teardown(r.into_inner()), false).await;
        if let Some(hold) = &self.hold_teardown {
            hold.notified().await;
        }
        answer
    }
}

/// A fake master, in memory or on a real socket (see the module docs).
struct FakeMaster {
    subscriptions: mpsc::Receiver<Subscription>,
    calls: mpsc::Receiver<Call>,
    /// Lets a held TEARDOWN answer (see [`FakeMaster::holding_teardown`]).
    release_teardown: Arc<Notify>,
    place: Place,
}

/// Where a fake master runs.
enum Place {
    /// On the test's runtime, reached over in-memory pipes: for tests on paused time.
    Memory {
        /// Where the master listens; a restarted master listens at the same one.
        addr: MemoryAddr,
        /// The driver's way in, to whichever master listens at `addr`.
        channel: Channel,
        /// The tonic server, aborted when the master dies.
        server: tokio::task::JoinHandle<()>,
        /// Dropped when the master dies, which cuts every connection to it.
        alive: Option<watch::Sender<()>>,
    },
    /// On 127.0.0.1, on its own thread and runtime: for tests on real sockets.
    Tcp {
        addr: SocketAddr,
        /// Dropping or firing it kills the master: its runtime, connections included,
        /// goes away.
        kill: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

/// How a test's driver reaches the master.
#[derive(Clone)]
enum Dial {
    /// Over a channel the test made ([`Driver::with_channel`]).
    Channel(Channel),
    /// By dialling this address, as a program does.
    Address(SocketAddr),
}

impl Dial {
    fn driver<S: Scheduler<M>, M: Send + 'static>(
        &self,
        framework: v1::FrameworkInfo,
        scheduler: S,
    ) -> Driver<S, M> {
        match self {
            Dial::Channel(channel) => {
                Driver::new(IN_MEMORY_MASTER, framework, scheduler).with_channel(channel.clone())
            }
            Dial::Address(addr) => Driver::new(addr.to_string(), framework, scheduler),
        }
    }
}

/// What a driver on an in-memory channel calls its master in logs and errors.
const IN_MEMORY_MASTER: &str = "in-memory-master";

impl FakeMaster {
    /// A master in memory, on the test's runtime.
    fn start() -> FakeMaster {
        Self::in_memory(None, false)
    }

    /// A master in memory that refuses every SUBSCRIBE with `code`.
    fn refusing(code: Code) -> FakeMaster {
        Self::in_memory(Some(code), false)
    }

    /// A master in memory whose TEARDOWN removes the framework at once but answers
    /// only after `release_teardown`.
    fn holding_teardown() -> FakeMaster {
        Self::in_memory(None, true)
    }

    fn in_memory(refuse: Option<Code>, hold_teardown: bool) -> FakeMaster {
        let addr = MemoryAddr::default();
        let channel = addr.channel();
        Self::listen_in_memory(addr, channel, refuse, hold_teardown)
    }

    /// Starts a master listening at `addr`, which `channel` reaches.
    fn listen_in_memory(
        addr: MemoryAddr,
        channel: Channel,
        refuse: Option<Code>,
        hold_teardown: bool,
    ) -> FakeMaster {
        let (service, parts) = Service::new(refuse, hold_teardown);
        let (accept, accepted) = mpsc::channel::<DuplexStream>(4);
        let (alive, alive_rx) = watch::channel(());
        let server = tokio::spawn(async move {
            let incoming = ReceiverStream::new(accepted).map(Ok::<_, io::Error>);
            let _ = Server::builder()
                .add_service(SchedulerServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        addr.listen(Some(Listener {
            accept,
            alive: alive_rx,
        }));
        parts.at(Place::Memory {
            addr,
            channel,
            server,
            alive: Some(alive),
        })
    }

    /// A new in-memory master where this one listened (it is killed first), reached by
    /// the same channel: a master restarted on its address.
    fn restarted(mut self) -> FakeMaster {
        self.kill();
        let Place::Memory { addr, channel, .. } = &self.place else {
            panic!("restart a master on a real socket with FakeMaster::on_tcp(addr)")
        };
        Self::listen_in_memory(addr.clone(), channel.clone(), None, false)
    }

    /// A master on 127.0.0.1 at `addr` (port 0: any free port), on its own thread and
    /// runtime.
    fn on_tcp(addr: SocketAddr) -> FakeMaster {
        let (service, parts) = Service::new(None, false);
        let (kill, killed) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let server = Server::builder()
                    .add_service(SchedulerServer::new(service))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime cancels every connection task: like a process exit.
            drop(runtime);
        });
        let addr = ready_rx.recv().unwrap();
        parts.at(Place::Tcp {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        })
    }

    /// How a driver reaches this master.
    fn dial(&self) -> Dial {
        match &self.place {
            Place::Memory { channel, .. } => Dial::Channel(channel.clone()),
            Place::Tcp { addr, .. } => Dial::Address(*addr),
        }
    }

    /// The address of a master on a real socket.
    fn addr(&self) -> SocketAddr {
        match &self.place {
            Place::Tcp { addr, .. } => *addr,
            Place::Memory { .. } => panic!("an in-memory master has no address"),
        }
    }

    /// The next SUBSCRIBE.
    async fn subscription(&mut self) -> Subscription {
        within(self.subscriptions.recv(), "a SUBSCRIBE")
            .await
            .expect("fake master stopped")
    }

    /// The next unary call.
    async fn call(&mut self) -> Call {
        within(self.calls.recv(), "a call")
            .await
            .expect("fake master stopped")
    }

    /// Asserts that no call arrives for a little while (on paused time: until every
    /// party is idle and 200 ms more have passed).
    async fn no_call(&mut self) {
        if let Ok(Some(call)) =
            tokio::time::timeout(Duration::from_millis(200), self.calls.recv()).await
        {
            panic!("unexpected call {call:?}");
        }
    }

    /// Kills the master like a crashed process: it stops listening and every
    /// connection to it is cut.
    fn kill(&mut self) {
        match &mut self.place {
            Place::Memory {
                addr,
                server,
                alive,
                ..
            } => {
                // Only once: a master restarted at `addr` may be listening by now.
                if let Some(alive) = alive.take() {
                    addr.listen(None);
                    server.abort();
                    drop(alive);
                }
            }
            Place::Tcp { kill, thread, .. } => {
                if let Some(kill) = kill.take() {
                    let _ = kill.send(());
                }
                if let Some(thread) = thread.take() {
                    thread.join().unwrap();
                }
            }
        }
    }
}

/// An in-memory address: the master listening there, if any.
#[derive(Clone, Default)]
struct MemoryAddr(Arc<Mutex<Option<Listener>>>);

/// A master listening in memory.
#[derive(Clone)]
struct Listener {
    /// Hands the master's end of a new connection to its server.
    accept: mpsc::Sender<DuplexStream>,
    /// Changes never; its sender is dropped when the master dies.
    alive: watch::Receiver<()>,
}

impl MemoryAddr {
    fn listen(&self, listener: Option<Listener>) {
        *self.0.lock().unwrap() = listener;
    }

    /// A channel to whichever master listens here (refused while none does). Each
    /// connection the channel opens is two `duplex` pairs, the driver's end and the
    /// master's end joined by a relay task; the relay ends when either end closes or
    /// the master dies, cutting the connection as a crash would.
    fn channel(&self) -> Channel {
        let addr = self.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let listener = addr.0.lock().unwrap().clone();
            async move {
                let refused =
                    || io::Error::new(io::ErrorKind::ConnectionRefused, "no fake master listens");
                let Listener { accept, mut alive } = listener.ok_or_else(refused)?;
                let (driver_end, mut near) = tokio::io::duplex(64 * 1024);
                let (mut far, master_end) = tokio::io::duplex(64 * 1024);
                accept.send(master_end).await.map_err(|_| refused())?;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                        _ = alive.changed() => {}
                    }
                });
                Ok::<_, io::Error>(TokioIo::new(driver_end))
            }
        });
        // The connector ignores the URI: nothing is resolved or dialled.
        Endpoint::from_static("http://in-memory-master.test").connect_with_connector_lazy(connector)
    }
}

/// The test's ends of a new fake master's channels, before it has a [`Place`].
struct Parts {
    subscriptions: mpsc::Receiver<Subscription>,
    calls: mpsc::Receiver<Call>,
    release_teardown: Arc<Notify>,
}

impl Parts {
    fn at(self, place: Place) -> FakeMaster {
        FakeMaster {
            subscriptions: self.subscriptions,
            calls: self.calls,
            release_teardown: self.release_teardown,
            place,
        }
    }
}

impl Service {
    /// A service, and the test's ends of its channels.
    fn new(refuse: Option<Code>, hold_teardown: bool) -> (Service, Parts) {
        let (sub_tx, subscriptions) = mpsc::channel(16);
        let (call_tx, calls) = mpsc::channel(64);
        let release_teardown = Arc::new(Notify::new());
        let service = Service {
            subscriptions: sub_tx,
            calls: call_tx,
            refuse,
            closers: Arc::default(),
            torn_down: Arc::default(),
            hold_teardown: hold_teardown.then(|| release_teardown.clone()),
        };
        let parts = Parts {
            subscriptions,
            calls,
            release_teardown,
        };
        (service, parts)
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn within<F: std::future::Future>(f: F, what: &str) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn subscribed(framework_id: &str, stream_id: &str, heartbeat: f64) -> v1::event::Event {
    v1::event::Event::Subscribed(v1::Subscribed {
        framework_id: framework_id.into(),
        stream_id: stream_id.into(),
        heartbeat_interval_seconds: heartbeat,
        master_id: "master-1".into(),
    })
}

fn header(framework_id: &str, stream_id: &str) -> Option<v1::CallHeader> {
    Some(v1::CallHeader {
        framework_id: framework_id.into(),
        stream_id: stream_id.into(),
    })
}

fn offer(id: &str, agent: &str, resources: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        framework_id: "fw-1".into(),
        agent_id: agent.into(),
        hostname: format!("{agent}.example"),
        agent_address: "127.0.0.1:5051".into(),
        resources: strata_framework_sdk::Resources::parse(resources)
            .unwrap()
            .to_proto(),
        ..Default::default()
    }
}

fn update(task_id: &str, state: v1::TaskState, uuid: &str) -> v1::event::Event {
    v1::event::Event::Update(v1::Update {
        status: Some(v1::TaskStatus {
            task_id: task_id.into(),
            state: state as i32,
            agent_id: "agent-1".into(),
            uuid: uuid.into(),
            ..Default::default()
        }),
    })
}

// ---------------------------------------------------------------------------------
// A scheduler that reports what it sees.

#[derive(Debug)]
enum Seen {
    Registered(String, String),
    Reregistered(String),
    /// `disconnected`, with the result of a REVIVE attempted from inside it.
    Disconnected(Result<(), SdkError>),
    Offers(Vec<v1::Offer>),
    Rescinded(String),
    Update(v1::TaskStatus),
    Message(String, String, Vec<u8>),
    Failure(v1::Failure),
    Error(String),
}

struct Recorder {
    seen: mpsc::Sender<Seen>,
    /// Pack these tasks into the offers and launch them.
    to_launch: Vec<TaskBuilder>,
}

impl Recorder {
    async fn tell(&self, seen: Seen) {
        let _ = self.seen.send(seen).await;
    }
}

impl Scheduler for Recorder {
    async fn registered(&mut self, _driver: &DriverHandle, framework_id: &str, master_id: &str) {
        self.tell(Seen::Registered(framework_id.into(), master_id.into()))
            .await;
    }

    async fn reregistered(&mut self, _driver: &DriverHandle, framework_id: &str, _master_id: &str) {
        self.tell(Seen::Reregistered(framework_id.into())).await;
    }

    async fn disconnected(&mut self, driver: &DriverHandle) {
        let attempt = driver.revive().await;
        self.tell(Seen::Disconnected(attempt)).await;
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        if !self.to_launch.is_empty() {
            let mut pool = OfferPool::new(offers.clone());
            for task in self.to_launch.drain(..) {
                assert!(
                    pool.place(&task).unwrap().is_some(),
                    "test offers are big enough"
                );
            }
            for launch in pool.into_placement().launches {
                driver
                    .launch(vec![launch.offer.id.clone()], launch.tasks)
                    .await
                    .unwrap();
            }
        }
        self.tell(Seen::Offers(offers)).await;
    }

    async fn offer_rescinded(&mut self, _driver: &DriverHandle, offer_id: &str) {
        self.tell(Seen::Rescinded(offer_id.into())).await;
    }

    async fn status_update(&mut self, _driver: &DriverHandle, status: v1::TaskStatus) {
        self.tell(Seen::Update(status)).await;
    }

    async fn framework_message(
        &mut self,
        _driver: &DriverHandle,
        agent_id: &str,
        task_id: &str,
        data: Vec<u8>,
    ) {
        self.tell(Seen::Message(agent_id.into(), task_id.into(), data))
            .await;
    }

    async fn failure(&mut self, _driver: &DriverHandle, failure: v1::Failure) {
        self.tell(Seen::Failure(failure)).await;
    }

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        self.tell(Seen::Error(message.into())).await;
    }
}

fn fast_options() -> DriverOptions {
    DriverOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..DriverOptions::default()
    }
}

type RunResult = Result<Recorder, SdkError>;

/// Starts a driver for a `Recorder` against the master `dial` reaches.
fn start_driver(
    dial: Dial,
    options: DriverOptions,
    to_launch: Vec<TaskBuilder>,
) -> (
    DriverHandle,
    mpsc::Receiver<Seen>,
    tokio::task::JoinHandle<RunResult>,
) {
    let (seen_tx, seen) = mpsc::channel(64);
    let framework = v1::FrameworkInfo {
        name: "recorder".into(),
        ..Default::default()
    };
    let recorder = Recorder {
        seen: seen_tx,
        to_launch,
    };
    let driver = dial.driver(framework, recorder).with_options(options);
    let handle = driver.handle();
    (handle, seen, tokio::spawn(driver.run()))
}

async fn next_seen(seen: &mut mpsc::Receiver<Seen>) -> Seen {
    within(seen.recv(), "a scheduler callback")
        .await
        .expect("the driver ended")
}

/// Subscribes a new driver as fw-1 on stream s-1 and waits for `registered`.
async fn subscribed_driver(
    master: &mut FakeMaster,
    options: DriverOptions,
    to_launch: Vec<TaskBuilder>,
) -> (
    DriverHandle,
    mpsc::Receiver<Seen>,
    tokio::task::JoinHandle<RunResult>,
    Subscription,
) {
    let (handle, mut seen, run) = start_driver(master.dial(), options, to_launch);
    let sub = master.subscription().await;
    sub.send(subscribed("fw-1", "s-1", 15.0)).await;
    match next_seen(&mut seen).await {
        Seen::Registered(fid, mid) => {
            assert_eq!((fid.as_str(), mid.as_str()), ("fw-1", "master-1"))
        }
        other => panic!("expected registered, saw {other:?}"),
    }
    (handle, seen, run, sub)
}

// ---------------------------------------------------------------------------------
// The stories.

#[tokio::test(start_paused = true)]
async fn subscribing_reports_registered_with_the_framework_id() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, run) = start_driver(master.dial(), fast_options(), vec![]);
    assert_eq!(handle.framework_id(), None);

    let sub = master.subscription().await;
    let info = sub.request.framework_info.clone().unwrap();
    assert_eq!(info.name, "recorder");
    assert_eq!(info.id, "", "a new framework subscribes without an id");

    sub.send(subscribed("fw-1", "s-1", 15.0)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Registered(f, _) if f == "fw-1"));
    assert_eq!(handle.framework_id().as_deref(), Some("fw-1"));
    assert_eq!(handle.master_id().as_deref(), Some("master-1"));
    assert!(handle.is_connected());

    handle.stop();
    let result = within(run, "run to return").await.unwrap();
    assert!(
        result.is_ok(),
        "stop makes run return Ok: {:?}",
        result.err()
    );
    assert!(matches!(handle.revive().await, Err(SdkError::Stopped)));
}

#[tokio::test(start_paused = true)]
async fn a_launch_on_an_offer_becomes_an_accept_with_the_stream_header() {
    let mut master = FakeMaster::start();
    let tasks = vec![
        TaskBuilder::new("t-1")
            .shell("echo one")
            .cpus(0.4)
            .mem(32.0)
            .ports(1),
        TaskBuilder::new("t-2")
            .shell("echo two")
            .cpus(0.4)
            .mem(32.0)
            .ports(1),
    ];
    let (handle, mut seen, _run, sub) = subscribed_driver(&mut master, fast_options(), tasks).await;

    sub.send(v1::event::Event::Offers(v1::Offers {
        offers: vec![offer(
            "o-1",
            "agent-1",
            "cpus:1;mem:128;ports:[31000-31005]",
        )],
    }))
    .await;

    let Call::Accept(accept) = master.call().await else {
        panic!("expected ACCEPT")
    };
    assert_eq!(accept.header, header("fw-1", "s-1"));
    assert_eq!(accept.offer_ids, vec!["o-1".to_string()]);
    assert_eq!(accept.operations.len(), 1);
    let Some(v1::operation::Operation::Launch(launch)) = &accept.operations[0].operation else {
        panic!("expected a LAUNCH operation")
    };
    let ids: Vec<&str> = launch
        .task_infos
        .iter()
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(ids, ["t-1", "t-2"]);
    let ports: Vec<&str> = launch
        .task_infos
        .iter()
        .map(|t| t.command.as_ref().unwrap().environment["PORT0"].as_str())
        .collect();
    assert_eq!(ports, ["31000", "31001"], "each task gets its own port");
    assert!(launch.task_infos.iter().all(|t| t.agent_id == "agent-1"));

    match next_seen(&mut seen).await {
        Seen::Offers(offers) => assert_eq!(offers[0].id, "o-1"),
        other => panic!("expected offers, saw {other:?}"),
    }
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn status_updates_are_acknowledged_after_the_callback() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run, sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;

    // Master-generated updates carry no uuid and need no acknowledgement.
    sub.send(update("t-1", v1::TaskState::TaskStaging, ""))
        .await;
    sub.send(update("t-1", v1::TaskState::TaskRunning, "uuid-1"))
        .await;

    assert!(
        matches!(next_seen(&mut seen).await, Seen::Update(s) if s.state == v1::TaskState::TaskStaging as i32)
    );
    assert!(matches!(next_seen(&mut seen).await, Seen::Update(s) if s.uuid == "uuid-1"));
    let Call::Acknowledge(ack) = master.call().await else {
        panic!("expected ACKNOWLEDGE")
    };
    assert_eq!(ack.header, header("fw-1", "s-1"));
    assert_eq!(
        (
            ack.agent_id.as_str(),
            ack.task_id.as_str(),
            ack.uuid.as_str()
        ),
        ("agent-1", "t-1", "uuid-1")
    );
    master.no_call().await;
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn acknowledgements_can_be_left_to_the_scheduler() {
    let mut master = FakeMaster::start();
    let options = DriverOptions {
        auto_acknowledge: false,
        ..fast_options()
    };
    let (handle, mut seen, _run, sub) = subscribed_driver(&mut master, options, vec![]).await;

    sub.send(update("t-1", v1::TaskState::TaskFinished, "uuid-9"))
        .await;
    let Seen::Update(status) = next_seen(&mut seen).await else {
        panic!("expected an update")
    };
    master.no_call().await;

    handle.acknowledge(&status).await.unwrap();
    let Call::Acknowledge(ack) = master.call().await else {
        panic!("expected ACKNOWLEDGE")
    };
    assert_eq!(ack.uuid, "uuid-9");
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn when_the_stream_ends_the_driver_resubscribes_with_the_same_framework_id() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run, sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;

    drop(sub); // the master ends the stream
    match next_seen(&mut seen).await {
        Seen::Disconnected(attempt) => {
            assert!(
                matches!(attempt, Err(SdkError::Disconnected)),
                "calls fail fast: {attempt:?}"
            )
        }
        other => panic!("expected disconnected, saw {other:?}"),
    }

    let again = master.subscription().await;
    assert_eq!(again.request.framework_info.as_ref().unwrap().id, "fw-1");
    again.send(subscribed("fw-1", "s-2", 15.0)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Reregistered(f) if f == "fw-1"));

    handle.revive().await.unwrap();
    let Call::Revive(revive) = master.call().await else {
        panic!("expected REVIVE")
    };
    assert_eq!(
        revive.header,
        header("fw-1", "s-2"),
        "calls carry the new stream id"
    );
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn a_runtime_suppress_survives_a_resubscription_and_a_revive_lifts_it() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run, sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;
    assert!(sub.request.suppressed_roles.is_empty());

    handle.suppress().await.unwrap();
    assert!(matches!(master.call().await, Call::Suppress(_)));
    assert_eq!(handle.suppressed_roles(), ["*"]);

    drop(sub); // the master ends the stream (say, it restarted)
    // The recorder's REVIVE from `disconnected` is never sent: it changes nothing.
    assert!(matches!(
        next_seen(&mut seen).await,
        Seen::Disconnected(Err(SdkError::Disconnected))
    ));
    let again = master.subscription().await;
    assert_eq!(
        again.request.suppressed_roles,
        ["*"],
        "still suppressed after reconnecting"
    );
    again.send(subscribed("fw-1", "s-2", 15.0)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Reregistered(_)));

    handle.revive().await.unwrap();
    assert!(matches!(master.call().await, Call::Revive(_)));
    drop(again);
    assert!(matches!(next_seen(&mut seen).await, Seen::Disconnected(_)));
    let third = master.subscription().await;
    assert!(third.request.suppressed_roles.is_empty());
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn a_master_restart_is_survived_over_a_channel_of_the_programs_own() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run, _sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;

    master.kill();
    assert!(matches!(next_seen(&mut seen).await, Seen::Disconnected(_)));

    // Let the driver fail against the dead master a few times first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut master = master.restarted();
    let sub = master.subscription().await;
    assert_eq!(sub.request.framework_info.as_ref().unwrap().id, "fw-1");
    sub.send(subscribed("fw-1", "s-9", 15.0)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Reregistered(f) if f == "fw-1"));
    handle.revive().await.unwrap();
    assert!(
        matches!(master.call().await, Call::Revive(r) if r.header == header("fw-1", "s-9")),
        "calls reach the new master"
    );
    handle.stop();
}

/// On real time and a real socket: the driver dials the address again after the
/// master died, as it does in production.
#[tokio::test]
async fn a_master_restart_on_the_same_address_is_survived() {
    let mut master = FakeMaster::on_tcp("127.0.0.1:0".parse().unwrap());
    let addr = master.addr();
    let (handle, mut seen, _run, _sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;

    master.kill();
    assert!(matches!(next_seen(&mut seen).await, Seen::Disconnected(_)));

    // Let the driver fail against the dead address a few times first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut master = FakeMaster::on_tcp(addr);
    let sub = master.subscription().await;
    assert_eq!(sub.request.framework_info.as_ref().unwrap().id, "fw-1");
    sub.send(subscribed("fw-1", "s-9", 15.0)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Reregistered(f) if f == "fw-1"));
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn missed_heartbeats_make_the_driver_resubscribe() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, run) = start_driver(master.dial(), fast_options(), vec![]);
    let sub = master.subscription().await;
    // 50 ms heartbeats, then silence while keeping the stream open.
    sub.send(subscribed("fw-1", "s-1", 0.05)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Registered(..)));
    let registered = Instant::now();
    assert!(matches!(next_seen(&mut seen).await, Seen::Disconnected(_)));
    let silence = registered.elapsed();
    assert!(
        silence >= Duration::from_millis(250) && silence < Duration::from_millis(300),
        "five missed heartbeats, and not fewer, end the subscription: {silence:?}"
    );
    let again = master.subscription().await;
    assert_eq!(again.request.framework_info.as_ref().unwrap().id, "fw-1");
    drop(sub);
    handle.stop();
    assert!(within(run, "run to return").await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_subscription_alive() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run) = start_driver(master.dial(), fast_options(), vec![]);
    let sub = master.subscription().await;
    sub.send(subscribed("fw-1", "s-1", 0.05)).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Registered(..)));
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        sub.send(v1::event::Event::Heartbeat(v1::Heartbeat {}))
            .await;
    }
    assert!(handle.is_connected());
    assert!(
        seen.try_recv().is_err(),
        "no disconnect while heartbeats flow"
    );
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn every_call_carries_the_header_and_its_arguments() {
    let mut master = FakeMaster::start();
    let (handle, _seen, _run, _sub) = subscribed_driver(&mut master, fast_options(), vec![]).await;
    let h = header("fw-1", "s-1");

    handle
        .decline(vec!["o-1".into(), "o-2".into()], Some(60.0))
        .await
        .unwrap();
    let Call::Decline(d) = master.call().await else {
        panic!("expected DECLINE")
    };
    assert_eq!((d.header.clone(), d.offer_ids.len()), (h.clone(), 2));
    assert_eq!(d.filters.unwrap().refuse_seconds, Some(60.0));

    handle.suppress().await.unwrap();
    assert!(
        matches!(master.call().await, Call::Suppress(s) if s.header == h && s.roles.is_empty())
    );

    handle.revive_roles(vec!["web".into()]).await.unwrap();
    assert!(matches!(master.call().await, Call::Revive(r) if r.header == h && r.roles == ["web"]));

    handle
        .kill("t-1", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let Call::Kill(k) = master.call().await else {
        panic!("expected KILL")
    };
    assert_eq!(k.task_id, "t-1");
    assert_eq!(k.kill_policy.unwrap().grace_period_seconds, Some(2.0));

    handle.reconcile(vec![]).await.unwrap();
    assert!(
        matches!(master.call().await, Call::Reconcile(r) if r.header == h && r.tasks.is_empty())
    );
    // More tasks than the master takes in one call: several calls, in order.
    let many: Vec<v1::ReconcileTask> = (0..5000)
        .map(|i| v1::ReconcileTask {
            task_id: format!("t-{i}"),
            ..Default::default()
        })
        .collect();
    handle.reconcile(many).await.unwrap();
    let Call::Reconcile(first) = master.call().await else {
        panic!("expected RECONCILE")
    };
    let Call::Reconcile(second) = master.call().await else {
        panic!("expected a second RECONCILE")
    };
    assert_eq!(
        (first.tasks.len(), second.tasks.len()),
        (strata_proto::limits::MAX_TASKS_PER_RECONCILE, 5000 - 4096)
    );
    assert_eq!(second.tasks[0].task_id, "t-4096");

    handle
        .message("agent-1", "t-1", b"ping".to_vec())
        .await
        .unwrap();
    assert!(
        matches!(master.call().await, Call::Message(m) if m.data == b"ping" && m.agent_id == "agent-1")
    );

    // Refused before reaching the master.
    assert!(matches!(
        handle.decline(vec![], None).await,
        Err(SdkError::InvalidArgument(_))
    ));
    assert!(matches!(
        handle.decline(vec!["o".into()], Some(f64::NAN)).await,
        Err(SdkError::InvalidArgument(_))
    ));
    assert!(matches!(
        handle.kill("", None).await,
        Err(SdkError::InvalidArgument(_))
    ));
    master.no_call().await;
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn teardown_tells_the_master_and_ends_the_run() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, run, _sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;
    // The fake master ends the stream before it answers, as the real one may.
    handle.teardown().await.unwrap();
    assert!(matches!(master.call().await, Call::Teardown(t) if t.header == header("fw-1", "s-1")));
    assert!(within(run, "run to return").await.unwrap().is_ok());
    assert!(
        seen.try_recv().is_err(),
        "the closed stream is not taken for a lost master"
    );
}

#[tokio::test(start_paused = true)]
async fn abort_ends_the_run_with_the_reason() {
    let mut master = FakeMaster::start();
    let (handle, _seen, run, _sub) = subscribed_driver(&mut master, fast_options(), vec![]).await;
    handle.abort("task t-3 failed");
    handle.stop(); // the first request wins
    match within(run, "run to return").await.unwrap() {
        Err(SdkError::Aborted(reason)) => assert_eq!(reason, "task t-3 failed"),
        other => panic!("expected Aborted, got {:?}", other.err()),
    }
}

#[tokio::test(start_paused = true)]
async fn other_events_reach_their_callbacks() {
    let mut master = FakeMaster::start();
    let (handle, mut seen, _run, sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;
    sub.send(v1::event::Event::Rescind(v1::Rescind {
        offer_id: "o-7".into(),
    }))
    .await;
    sub.send(v1::event::Event::Message(v1::FrameworkMessage {
        agent_id: "agent-1".into(),
        task_id: "t-1".into(),
        data: b"hi".to_vec(),
    }))
    .await;
    sub.send(v1::event::Event::Failure(v1::Failure {
        agent_id: "agent-2".into(),
        ..Default::default()
    }))
    .await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Rescinded(o) if o == "o-7"));
    assert!(
        matches!(next_seen(&mut seen).await, Seen::Message(a, t, d) if a == "agent-1" && t == "t-1" && d == b"hi")
    );
    assert!(matches!(next_seen(&mut seen).await, Seen::Failure(f) if f.agent_id == "agent-2"));
    handle.stop();
}

#[tokio::test(start_paused = true)]
async fn an_error_event_is_fatal() {
    let mut master = FakeMaster::start();
    let (_handle, mut seen, run, sub) =
        subscribed_driver(&mut master, fast_options(), vec![]).await;
    sub.send(v1::event::Event::Error(v1::Error {
        message: "framework removed".into(),
    }))
    .await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Error(m) if m == "framework removed"));
    match within(run, "run to return").await.unwrap() {
        Err(SdkError::Master(m)) => assert_eq!(m, "framework removed"),
        other => panic!("expected a master error, got {:?}", other.err()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscription_refused_as_invalid_is_fatal() {
    let master = FakeMaster::refusing(Code::InvalidArgument);
    let (_handle, _seen, run) = start_driver(master.dial(), fast_options(), vec![]);
    match within(run, "run to return").await.unwrap() {
        Err(SdkError::Rpc(status)) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("expected the refusal, got {:?}", other.err()),
    }
}

/// On real time and a real socket: the kernel refusing the connection is what is
/// tested, and a paused clock would run out the timeouts while the kernel answers.
#[tokio::test]
async fn no_master_gives_up_after_the_subscribe_timeout() {
    // A port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = DriverOptions {
        subscribe_timeout: Some(Duration::from_millis(400)),
        ..fast_options()
    };
    let (_handle, _seen, run) = start_driver(Dial::Address(addr), options, vec![]);
    match within(run, "run to return").await.unwrap() {
        Err(e @ SdkError::SubscribeTimeout { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&addr.to_string()) && text.contains("strata-master"),
                "{text}"
            );
        }
        other => panic!("expected SubscribeTimeout, got {:?}", other.err()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_master_that_keeps_refusing_is_given_up_at_the_subscribe_timeout() {
    // UNAVAILABLE is worth retrying (a master still starting, say): the driver backs
    // off and tries again until the deadline, then gives up with the last reason.
    let master = FakeMaster::refusing(Code::Unavailable);
    let options = DriverOptions {
        subscribe_timeout: Some(Duration::from_millis(400)),
        ..fast_options()
    };
    let started = Instant::now();
    let (_handle, _seen, run) = start_driver(master.dial(), options, vec![]);
    match within(run, "run to return").await.unwrap() {
        Err(SdkError::SubscribeTimeout {
            master,
            waited,
            last_error,
        }) => {
            assert_eq!(master, IN_MEMORY_MASTER);
            assert!(
                last_error.contains("refused by the fake master"),
                "{last_error}"
            );
            assert!(waited >= Duration::from_millis(400), "{waited:?}");
            let gave_up = started.elapsed();
            assert!(
                gave_up < Duration::from_millis(450),
                "the last attempt is made at the deadline, not a backoff later: {gave_up:?}"
            );
        }
        other => panic!("expected SubscribeTimeout, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_bad_master_address_is_refused() {
    let (seen_tx, _seen) = mpsc::channel(1);
    let recorder = Recorder {
        seen: seen_tx,
        to_launch: vec![],
    };
    let driver = Driver::new("not a host:port", v1::FrameworkInfo::default(), recorder);
    assert!(matches!(
        driver.run().await,
        Err(SdkError::InvalidArgument(_))
    ));
}

// ---------------------------------------------------------------------------------
// Messages from the scheduler's own work: `DriverHandle::send` -> `Scheduler::message`.

/// What a [`Gatherer`] saw.
#[derive(Debug, PartialEq)]
enum Heard {
    Update(String),
    Disconnected,
    /// A message, and whether the driver was subscribed when it arrived.
    Output(String, bool),
}

/// A batch scheduler in miniature: on TASK_FINISHED it spawns a "fetch" of the
/// task's output that hands its result back with `DriverHandle::send`; once all
/// `expected` outputs are in, it tears the framework down.
struct Gatherer {
    heard: mpsc::Sender<Heard>,
    /// How many outputs end the run; 0: never.
    expected: usize,
    /// What `message` received, in order.
    outputs: Vec<String>,
}

impl Scheduler<String> for Gatherer {
    async fn disconnected(&mut self, _driver: &DriverHandle<String>) {
        let _ = self.heard.send(Heard::Disconnected).await;
    }

    async fn offers(&mut self, _driver: &DriverHandle<String>, _offers: Vec<v1::Offer>) {}

    async fn status_update(&mut self, driver: &DriverHandle<String>, status: v1::TaskStatus) {
        if state_of(&status) == v1::TaskState::TaskFinished {
            let driver = driver.clone();
            let task_id = status.task_id.clone();
            tokio::spawn(async move {
                // The fetch takes a while; the driver handles other events meanwhile.
                tokio::time::sleep(Duration::from_millis(50)).await;
                for line in ["one", "two", "three"] {
                    driver.send(format!("{task_id}: {line}")).unwrap();
                }
            });
        }
        let _ = self.heard.send(Heard::Update(status.task_id)).await;
    }

    async fn message(&mut self, driver: &DriverHandle<String>, output: String) {
        self.outputs.push(output.clone());
        let _ = self
            .heard
            .send(Heard::Output(output, driver.is_connected()))
            .await;
        if self.outputs.len() == self.expected {
            driver.teardown().await.unwrap();
        }
    }
}

/// Starts a driver for a `Gatherer` and subscribes it as fw-1 on stream s-1.
async fn gathering_driver(
    master: &mut FakeMaster,
    expected: usize,
    heartbeat: f64,
) -> (
    DriverHandle<String>,
    mpsc::Receiver<Heard>,
    tokio::task::JoinHandle<Result<Gatherer, SdkError>>,
    Subscription,
) {
    let (heard_tx, heard) = mpsc::channel(64);
    let gatherer = Gatherer {
        heard: heard_tx,
        expected,
        outputs: Vec::new(),
    };
    let driver = master
        .dial()
        .driver(v1::FrameworkInfo::default(), gatherer)
        .with_options(fast_options());
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    let sub = master.subscription().await;
    sub.send(subscribed("fw-1", "s-1", heartbeat)).await;
    within(
        async {
            while !handle.is_connected() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
        "the driver to subscribe",
    )
    .await;
    (handle, heard, run, sub)
}

async fn next_heard(heard: &mut mpsc::Receiver<Heard>) -> Heard {
    within(heard.recv(), "a scheduler callback")
        .await
        .expect("the driver ended")
}

#[tokio::test(start_paused = true)]
async fn a_message_sent_from_a_spawned_task_reaches_the_message_callback_in_order() {
    let mut master = FakeMaster::start();
    let (_handle, mut heard, run, sub) = gathering_driver(&mut master, 3, 15.0).await;

    sub.send(update("t-1", v1::TaskState::TaskFinished, "uuid-1"))
        .await;
    assert_eq!(next_heard(&mut heard).await, Heard::Update("t-1".into()));
    // The driver went on (acknowledged the update) while the fetch was running.
    let Call::Acknowledge(ack) = master.call().await else {
        panic!("expected ACKNOWLEDGE")
    };
    assert_eq!(ack.uuid, "uuid-1");

    for line in ["one", "two", "three"] {
        assert_eq!(
            next_heard(&mut heard).await,
            Heard::Output(format!("t-1: {line}"), true),
            "messages arrive in the order they were sent"
        );
    }
    // The last output made the scheduler tear down, from inside `message`.
    assert!(matches!(master.call().await, Call::Teardown(t) if t.header == header("fw-1", "s-1")));
    let gatherer = within(run, "run to return")
        .await
        .unwrap()
        .expect("teardown makes run return Ok");
    assert_eq!(
        gatherer.outputs,
        ["t-1: one", "t-1: two", "t-1: three"],
        "the scheduler's own state holds every output"
    );
}

#[tokio::test(start_paused = true)]
async fn messages_are_delivered_while_the_driver_is_resubscribing() {
    let mut master = FakeMaster::start();
    let (handle, mut heard, run, sub) = gathering_driver(&mut master, 0, 15.0).await;

    drop(sub); // the master ends the stream
    assert_eq!(next_heard(&mut heard).await, Heard::Disconnected);
    // The driver subscribes again; the master does not answer yet.
    let again = master.subscription().await;
    handle.send("while away".into()).unwrap();
    assert_eq!(
        next_heard(&mut heard).await,
        Heard::Output("while away".into(), false)
    );

    handle.stop();
    within(run, "run to return").await.unwrap().unwrap();
    drop(again);
    assert!(
        matches!(handle.send("too late".into()), Err(SdkError::Stopped)),
        "a stopped driver takes no more messages"
    );
}

#[tokio::test(start_paused = true)]
async fn the_schedulers_messages_do_not_hide_a_silent_master() {
    let mut master = FakeMaster::start();
    let started = Instant::now();
    // 50 ms heartbeats: silence for 250 ms means the subscription is dead.
    let (handle, mut heard, run, _sub) = gathering_driver(&mut master, 0, 0.05).await;
    let ticker = {
        let handle = handle.clone();
        tokio::spawn(async move {
            while handle.send("tick".into()).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let disconnected = within(
        async {
            loop {
                match heard.recv().await {
                    Some(Heard::Disconnected) => return true,
                    Some(_) => continue,
                    None => return false,
                }
            }
        },
        "the driver to give the silent master up",
    )
    .await;
    assert!(disconnected);
    let silence = started.elapsed();
    assert!(
        silence >= Duration::from_millis(250) && silence < Duration::from_millis(300),
        "given up on time, ticks or not: {silence:?}"
    );
    handle.stop();
    within(run, "run to return").await.unwrap().unwrap();
    within(ticker, "the ticker to stop").await.unwrap();
}

// ---------------------------------------------------------------------------------
// What a log subscriber shows.

/// Everything the SDK logs on this thread, formatted as `tracing_subscriber::fmt`
/// prints it for a user who installed it. Tests run the driver on a current-thread
/// runtime, so the thread's subscriber sees the driver's events.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(String::from)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_to_a_scheduler_without_a_message_callback_is_dropped_with_a_warning() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let mut master = FakeMaster::start();
    let (handle, _seen, _run, _sub) = subscribed_driver(&mut master, fast_options(), vec![]).await;
    handle.send(()).unwrap();
    within(
        async {
            while logs.warnings().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
        "a warning",
    )
    .await;
    let warnings = logs.warnings();
    assert!(
        warnings[0].contains("does not implement Scheduler::message"),
        "{warnings:?}"
    );
    handle.stop();
}

/// A scheduler whose `status_update` tells the test it is running, then waits for the
/// test to let it return.
struct Gated {
    entered: mpsc::Sender<String>,
    gate: Arc<Notify>,
}

impl Scheduler for Gated {
    async fn offers(&mut self, _driver: &DriverHandle, _offers: Vec<v1::Offer>) {}

    async fn status_update(&mut self, _driver: &DriverHandle, status: v1::TaskStatus) {
        let _ = self.entered.send(status.task_id).await;
        self.gate.notified().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_teardown_racing_the_automatic_acknowledgement_is_quiet() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let mut master = FakeMaster::holding_teardown();
    let (entered_tx, mut entered) = mpsc::channel(4);
    let gate = Arc::new(Notify::new());
    let scheduler = Gated {
        entered: entered_tx,
        gate: gate.clone(),
    };
    let driver = master
        .dial()
        .driver(v1::FrameworkInfo::default(), scheduler)
        .with_options(fast_options());
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());
    let sub = master.subscription().await;
    sub.send(subscribed("fw-1", "s-1", 15.0)).await;

    // An update is in the scheduler's hands when a Ctrl-C handler tears down...
    sub.send(update("t-1", v1::TaskState::TaskRunning, "uuid-1"))
        .await;
    assert_eq!(
        within(entered.recv(), "status_update").await.as_deref(),
        Some("t-1")
    );
    let teardown = tokio::spawn({
        let handle = handle.clone();
        async move { handle.teardown().await }
    });
    // ... and the master has removed the framework (the answer is still on its way)
    // when the callback returns.
    assert!(matches!(master.call().await, Call::Teardown(_)));
    gate.notify_one();

    // The acknowledgement the master would refuse is not sent.
    master.no_call().await;
    master.release_teardown.notify_one();
    within(teardown, "teardown to return")
        .await
        .unwrap()
        .unwrap();
    within(run, "run to return")
        .await
        .unwrap()
        .expect("teardown makes run return Ok");
    assert_eq!(
        logs.warnings(),
        Vec::<String>::new(),
        "a clean teardown logs no warning"
    );
}
