//! The [`Driver`]: keeps a framework subscribed to the master and feeds its
//! [`Scheduler`]; the [`DriverHandle`]: the calls a scheduler makes back.
//!
//! ```text
//!            ┌──────────────────────── Driver::run ────────────────────────┐
//!            │ connect ─▶ Subscribe(FrameworkInfo{id}) ─▶ SUBSCRIBED       │
//!            │   ▲            (id, stream id, heartbeat interval)          │
//!            │   │                         │                               │
//!            │ backoff  ◀── stream ends, ──┤ events ─▶ Scheduler callbacks │
//!            │ (jitter,     error, or      │           (one at a time)     │
//!            │  doubling,   ~5 missed      │ UPDATE ─▶ auto ACKNOWLEDGE    │
//!            │  capped)     heartbeats     │                               │
//!            └─────────────────────────────┼───────────────────────────────┘
//!   DriverHandle (cloneable) ── Accept/Decline/Kill/... with CallHeader{framework id, stream id}
//!                          ├── send(message) ─▶ Scheduler::message, between events
//!                          └── stop / abort / teardown ─▶ run() returns
//! ```
//!
//! The framework id handed out by the first SUBSCRIBED is kept and sent again on every
//! re-subscription, so a master restart is a failover, not a new framework; so are the
//! roles suppressed at that moment (`DriverOptions::suppressed_roles`, then every
//! SUPPRESS and REVIVE), so a reconnect does not undo a suppress. While no
//! subscription is live, calls fail fast with [`SdkError::Disconnected`].
//!
//! Messages sent with [`DriverHandle::send`] are delivered by the same loop, in every
//! phase (subscribed, subscribing, backing off), so a scheduler hears from its own work
//! even while the master is away. Once a stop or a teardown is under way, the
//! automatic acknowledgement of an update is skipped (and one already in flight may
//! fail quietly): the framework is going away, and the agent's retries of the update
//! go to whoever takes it over (after a stop) or are acknowledged by the master (after
//! a teardown).
//!
//! The driver dials the master's address afresh for every subscription attempt, with
//! TLS when [`DriverOptions::tls`] names the cluster CA (the master is verified by the
//! name [`strata_security::MASTER_NAME`], whatever address is dialled). A program that
//! needs a connection of its own making (its own HTTP/2 settings, a Unix socket, a
//! master in the same process) hands the driver a ready tonic `Channel` with
//! [`Driver::with_channel`] instead. Either way every call, SUBSCRIBE included,
//! carries the credential of [`DriverOptions::tls`] in its `authorization` header.
//!
//! A master that refuses the SUBSCRIBE for good (a missing or wrong credential:
//! `UNAUTHENTICATED`; a principal not allowed to register the framework:
//! `PERMISSION_DENIED`; an invalid framework: `INVALID_ARGUMENT`), and a master whose
//! certificate does not verify against the CA, are not retried: the driver calls
//! [`Scheduler::error`] with the reason and [`Driver::run`] returns the error
//! ([`SdkError::Rpc`] with the master's status, or [`SdkError::Certificate`]).
//!
//! Every timer and deadline the driver keeps (backoff, heartbeat silence, call and
//! subscribe timeouts) is a `tokio::time` one, so a test on tokio's paused clock
//! drives them all.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use strata_proto::v1::{self, event, scheduler_client::SchedulerClient};
use strata_security::credentials::AuthInterceptor;
use strata_security::{ClientTls, MASTER_NAME};
use tokio::sync::{mpsc, watch};
use tonic::Code;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::chain;
use crate::{Scheduler, SdkError};

/// Tunables of a [`Driver`]. `DriverOptions::default()` suits most schedulers.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// Acknowledge every status update that carries a uuid after
    /// [`Scheduler::status_update`] returns. Turn off to acknowledge yourself with
    /// [`DriverHandle::acknowledge`] (for example after persisting the update).
    pub auto_acknowledge: bool,
    /// Roles to subscribe suppressed (no offers until a revive). Later SUPPRESS and
    /// REVIVE calls change what re-subscriptions send.
    pub suppressed_roles: Vec<String>,
    /// First delay before re-subscribing after a failure; doubles on each failure.
    pub backoff_initial: Duration,
    /// The cap of the re-subscription delay. Each delay is drawn at random from
    /// `[d/2, d]` so that many frameworks do not come back in lock step.
    pub backoff_max: Duration,
    /// The subscription is considered dead when nothing (not even a heartbeat) arrives
    /// for this many heartbeat intervals.
    pub missed_heartbeats: u32,
    /// How long a unary call (and the SUBSCRIBE handshake) may take.
    pub call_timeout: Duration,
    /// How long to wait for the TCP/HTTP2 connection to the master (not used with
    /// [`Driver::with_channel`], where the channel's own settings apply).
    pub connect_timeout: Duration,
    /// Give up when the *first* subscription has not succeeded within this time
    /// ([`SdkError::SubscribeTimeout`]). `None` retries forever. Once subscribed the
    /// driver always keeps re-subscribing, since tasks keep running meanwhile.
    pub subscribe_timeout: Option<Duration>,
    /// How to reach the master securely: the cluster CA that verifies it (`ca_pem`;
    /// `None`: plain text) and the framework's [`Credential`](crate::Credential), sent
    /// with every call. The default, [`ClientTls::insecure`], is plain text without a
    /// credential, which a secure master refuses (`UNAUTHENTICATED`). With
    /// [`Driver::with_channel`] the CA is the channel's business, but the credential
    /// is still sent.
    pub tls: ClientTls,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            auto_acknowledge: true,
            suppressed_roles: Vec::new(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            missed_heartbeats: 5,
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            subscribe_timeout: None,
            tls: ClientTls::insecure(),
        }
    }
}

/// The heartbeat interval assumed until (or when) SUBSCRIBED names none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The client every call goes through: the generated one, with the credential added
/// to each request by an interceptor.
type Client = SchedulerClient<InterceptedService<Channel, AuthInterceptor>>;

/// Runs a [`Scheduler`] against a master. See the module docs for the life cycle.
///
/// `M` is the scheduler's message type ([`Scheduler<M>`]); it is inferred from the
/// scheduler and is `()` for schedulers that take no messages.
pub struct Driver<S, M = ()> {
    /// `host:port` (or an `http://` URI) of the master; only its name in logs and
    /// errors when `channel` is set.
    master: String,
    /// A connection made by the program ([`Driver::with_channel`]), used instead of
    /// dialling `master`.
    channel: Option<Channel>,
    /// Sent on every SUBSCRIBE; its `id` is updated from SUBSCRIBED so re-subscriptions
    /// carry the same framework id.
    framework: v1::FrameworkInfo,
    options: DriverOptions,
    scheduler: S,
    /// The handle given to callbacks; the driver shares its state.
    handle: DriverHandle<M>,
    /// Messages from [`DriverHandle::send`], for [`Scheduler::message`].
    inbox: mpsc::UnboundedReceiver<M>,
}

impl<S: Scheduler<M>, M: Send + 'static> Driver<S, M> {
    /// A driver for `scheduler`, subscribing to the master at `master` (`host:port`)
    /// as `framework`. Set `framework.id` to fail over an existing framework. Nothing
    /// happens until [`run`](Driver::run). To connect in a way of your own (TLS, a Unix
    /// socket, an in-process master), add [`with_channel`](Driver::with_channel).
    pub fn new(master: impl Into<String>, framework: v1::FrameworkInfo, scheduler: S) -> Self {
        let options = DriverOptions::default();
        let framework_id = (!framework.id.is_empty()).then(|| framework.id.clone());
        let roles = if framework.roles.is_empty() {
            vec!["*".to_string()]
        } else {
            framework.roles.clone()
        };
        let (control, _) = watch::channel(None);
        let (outbox, inbox) = mpsc::unbounded_channel();
        let handle = DriverHandle {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    session: None,
                    framework_id,
                    master_id: None,
                    call_timeout: options.call_timeout,
                    roles,
                    suppressed: options.suppressed_roles.iter().cloned().collect(),
                    tearing_down: false,
                    stopped: false,
                }),
                control,
                outbox,
            }),
        };
        Driver {
            master: master.into(),
            channel: None,
            framework,
            options,
            scheduler,
            handle,
            inbox,
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: DriverOptions) -> Self {
        {
            let mut state = self.handle.lock();
            state.call_timeout = options.call_timeout;
            state.suppressed = options.suppressed_roles.iter().cloned().collect();
        }
        self.options = options;
        self
    }

    /// Subscribes and calls over `channel`, a tonic [`Channel`] to the master that the
    /// program made, instead of dialling the address given to [`new`](Driver::new),
    /// which then only names the master in logs and errors (it is not parsed). For a
    /// connection the driver cannot make itself: TLS or other settings of your own
    /// [`Endpoint`], a Unix socket, a master in the same process (the SDK's own tests
    /// reach their fake master over in-memory pipes this way, with
    /// [`Endpoint::connect_with_connector_lazy`]).
    ///
    /// Every subscription attempt and every call then goes over clones of `channel`,
    /// so the channel's settings apply and [`DriverOptions::connect_timeout`] and the
    /// CA of [`DriverOptions::tls`] do not; its credential does (every call carries it).
    /// A tonic `Channel` reconnects by itself when its connection breaks, but where the
    /// driver would dial a new connection after a silent master, it now re-subscribes
    /// on the channel's current one: give the endpoint an HTTP/2 keep-alive so that a
    /// half-open connection is noticed and replaced.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use strata_framework_sdk::{Driver, Scheduler, v1};
    /// use tonic::transport::Endpoint;
    ///
    /// async fn run(scheduler: impl Scheduler) -> Result<(), Box<dyn std::error::Error>> {
    ///     let channel = Endpoint::from_static("http://master.example:5050")
    ///         .connect_timeout(Duration::from_secs(5))
    ///         .http2_keep_alive_interval(Duration::from_secs(30))
    ///         .keep_alive_timeout(Duration::from_secs(10))
    ///         .connect_lazy();
    ///     let framework = v1::FrameworkInfo {
    ///         name: "example".into(),
    ///         ..Default::default()
    ///     };
    ///     Driver::new("master.example:5050", framework, scheduler)
    ///         .with_channel(channel)
    ///         .run()
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub fn with_channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Turns automatic acknowledgement of status updates on or off (on by default).
    pub fn auto_acknowledge(mut self, on: bool) -> Self {
        self.options.auto_acknowledge = on;
        self
    }

    /// A handle for use outside the callbacks (a Ctrl-C handler, a timer). The same
    /// handle is passed to every callback.
    pub fn handle(&self) -> DriverHandle<M> {
        self.handle.clone()
    }

    /// The scheduler, for inspection before or between runs.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }

    /// Subscribes and delivers events to the scheduler until it calls
    /// [`DriverHandle::stop`] or [`DriverHandle::teardown`] (then returns the
    /// scheduler), [`DriverHandle::abort`] ([`SdkError::Aborted`]), or a fatal error
    /// happens: an ERROR event, a subscription the master refuses as invalid, or no
    /// first subscription within `subscribe_timeout`.
    pub async fn run(mut self) -> Result<S, SdkError> {
        let result = self.run_inner().await;
        {
            let mut state = self.handle.lock();
            state.session = None;
            state.stopped = true;
        }
        result.map(|()| self.scheduler)
    }

    async fn run_inner(&mut self) -> Result<(), SdkError> {
        let connect = match &self.channel {
            Some(channel) => Connect::Channel(channel.clone()),
            None => {
                if !self.options.tls.is_tls() && self.options.tls.credential.is_some() {
                    tracing::warn!(
                        master = %self.master,
                        "DriverOptions::tls has a credential but no CA: the credential goes to the master in plain text"
                    );
                }
                Connect::Dial(Box::new(endpoint_for(&self.master, &self.options)?))
            }
        };
        let mut control = self.handle.shared.control.subscribe();
        let mut backoff = Backoff::new(self.options.backoff_initial, self.options.backoff_max);
        let started = tokio::time::Instant::now();
        let mut subscribed_before = false;
        loop {
            if let Some(request) = control.borrow_and_update().clone() {
                return request.into_result();
            }
            let subscribing = subscribe_once(
                &self.master,
                &self.framework,
                &self.options,
                self.handle.suppressed_roles(),
                &connect,
            );
            let attempt = deliver_until(
                &mut self.scheduler,
                &self.handle,
                &mut self.inbox,
                &mut control,
                subscribing,
            )
            .await;
            let Some(attempt) = attempt else { continue };
            match attempt {
                Ok((client, stream, subscribed)) => {
                    backoff.reset();
                    let silence = silence_limit(&subscribed, self.options.missed_heartbeats);
                    self.install_session(client, &subscribed);
                    tracing::info!(
                        framework_id = %subscribed.framework_id,
                        master_id = %subscribed.master_id,
                        resubscribed = subscribed_before,
                        "subscribed to the master"
                    );
                    let (fid, mid) = (
                        subscribed.framework_id.as_str(),
                        subscribed.master_id.as_str(),
                    );
                    if subscribed_before {
                        self.scheduler.reregistered(&self.handle, fid, mid).await;
                    } else {
                        self.scheduler.registered(&self.handle, fid, mid).await;
                    }
                    subscribed_before = true;
                    match self.pump(stream, &mut control, silence).await {
                        Pump::Stop(request) => return request.into_result(),
                        Pump::Fatal(e) => return Err(e),
                        Pump::Broken(reason) => {
                            let tearing_down = {
                                let mut state = self.handle.lock();
                                state.session = None;
                                state.tearing_down
                            };
                            if tearing_down {
                                // TEARDOWN closed the stream before its stop request arrived.
                                let request = control.borrow_and_update().clone();
                                return request.map_or(Ok(()), StopRequest::into_result);
                            }
                            tracing::warn!(%reason, "lost the subscription; re-subscribing");
                            self.scheduler.disconnected(&self.handle).await;
                        }
                    }
                }
                Err(Attempt::Fatal(e)) => {
                    let message = refusal_message(&e);
                    tracing::error!(master = %self.master, %message, "the subscription was refused; stopping");
                    self.scheduler.error(&self.handle, &message).await;
                    return Err(e);
                }
                Err(Attempt::Retry(reason)) => {
                    if !subscribed_before
                        && let Some(limit) = self.options.subscribe_timeout
                        && started.elapsed() >= limit
                    {
                        return Err(SdkError::SubscribeTimeout {
                            master: self.master.clone(),
                            waited: started.elapsed(),
                            last_error: reason,
                        });
                    }
                    tracing::debug!(%reason, "subscription attempt failed");
                }
            }
            let mut delay = backoff.next_delay();
            if !subscribed_before && let Some(limit) = self.options.subscribe_timeout {
                // Make the last attempt at the deadline rather than sleeping past it.
                delay = delay.min(limit.saturating_sub(started.elapsed()));
            }
            deliver_until(
                &mut self.scheduler,
                &self.handle,
                &mut self.inbox,
                &mut control,
                tokio::time::sleep(delay),
            )
            .await;
        }
    }

    fn install_session(&mut self, client: Client, s: &v1::Subscribed) {
        if !self.framework.id.is_empty() && self.framework.id != s.framework_id {
            tracing::warn!(
                asked = %self.framework.id,
                given = %s.framework_id,
                "the master assigned a different framework id than the one re-subscribed with"
            );
        }
        self.framework.id = s.framework_id.clone();
        let mut state = self.handle.lock();
        state.framework_id = Some(s.framework_id.clone());
        state.master_id = Some(s.master_id.clone());
        state.session = Some(Session {
            client,
            header: v1::CallHeader {
                framework_id: s.framework_id.clone(),
                stream_id: s.stream_id.clone(),
            },
        });
    }

    /// Reads events until the stream breaks, the scheduler stops the driver, or a
    /// fatal event arrives; delivers the scheduler's messages between events.
    async fn pump(
        &mut self,
        mut stream: Streaming<v1::Event>,
        control: &mut watch::Receiver<Option<StopRequest>>,
        silence: Duration,
    ) -> Pump {
        // Only the master's events (heartbeats included) push the deadline back, not
        // the scheduler's own messages.
        let mut deadline = tokio::time::Instant::now() + silence;
        loop {
            let next = tokio::select! {
                biased;
                changed = control.changed() => {
                    if changed.is_err() {
                        // Cannot happen while the driver holds the sender; stop rather than spin.
                        return Pump::Stop(StopRequest::Stop);
                    }
                    Next::Control
                }
                event = tokio::time::timeout_at(deadline, stream.message()) => Next::Event(event),
                // Never `None`: the driver's own handle holds a sender.
                Some(message) = self.inbox.recv() => Next::Message(message),
            };
            let event = match next {
                Next::Control => {
                    if let Some(request) = control.borrow_and_update().clone() {
                        return Pump::Stop(request);
                    }
                    continue;
                }
                Next::Message(message) => {
                    self.scheduler.message(&self.handle, message).await;
                    continue;
                }
                Next::Event(Err(_)) => {
                    return Pump::Broken(format!(
                        "nothing (not even a heartbeat) from the master for {silence:?}"
                    ));
                }
                Next::Event(Ok(Err(status))) => {
                    return Pump::Broken(format!(
                        "the event stream failed: {}: {}",
                        status.code(),
                        status.message()
                    ));
                }
                Next::Event(Ok(Ok(None))) => {
                    return Pump::Broken("the master closed the event stream".into());
                }
                Next::Event(Ok(Ok(Some(event)))) => event,
            };
            deadline = tokio::time::Instant::now() + silence;
            if let Some(fatal) = self.dispatch(event).await {
                return Pump::Fatal(fatal);
            }
        }
    }

    /// Hands one event to the scheduler. Returns the error that ends the driver, if any.
    async fn dispatch(&mut self, event: v1::Event) -> Option<SdkError> {
        let handle = &self.handle;
        match event.event {
            // An event kind from a newer master: nothing to do with it.
            None => {}
            Some(event::Event::Heartbeat(_)) => {}
            Some(event::Event::Subscribed(s)) => {
                // Not expected mid-stream; follow the master's word on the stream id.
                if let Some(session) = handle.lock().session.as_mut() {
                    session.header.stream_id = s.stream_id;
                }
            }
            Some(event::Event::Offers(o)) => self.scheduler.offers(handle, o.offers).await,
            Some(event::Event::Rescind(r)) => {
                self.scheduler.offer_rescinded(handle, &r.offer_id).await
            }
            // An UPDATE without a status carries nothing to act on.
            Some(event::Event::Update(v1::Update { status: None })) => {}
            Some(event::Event::Update(v1::Update {
                status: Some(status),
            })) => {
                let ack = (self.options.auto_acknowledge && !status.uuid.is_empty()).then(|| {
                    (
                        status.agent_id.clone(),
                        status.task_id.clone(),
                        status.uuid.clone(),
                    )
                });
                self.scheduler.status_update(handle, status).await;
                // After a stop or during a teardown (from this callback or from another
                // task) the acknowledgement is moot: a torn-down framework has nothing to
                // acknowledge (the master acknowledges for it), and after a stop the
                // update is redelivered to whoever takes the framework over.
                if let Some((agent_id, task_id, uuid)) = ack
                    && !handle.ending()
                    && let Err(e) = handle.acknowledge_ids(&agent_id, &task_id, &uuid).await
                {
                    if handle.ending() {
                        // A teardown or stop began while the call was in flight.
                        tracing::debug!(%task_id, error = %e, "acknowledgement dropped: the driver is stopping");
                    } else {
                        // The agent retries unacknowledged updates, so this one comes again.
                        tracing::warn!(%task_id, error = %e, "could not acknowledge a status update");
                    }
                }
            }
            Some(event::Event::Message(m)) => {
                self.scheduler
                    .framework_message(handle, &m.agent_id, &m.task_id, m.data)
                    .await;
            }
            Some(event::Event::Failure(f)) => self.scheduler.failure(handle, f).await,
            Some(event::Event::Error(e)) => {
                tracing::error!(message = %e.message, "the master sent ERROR");
                self.scheduler.error(handle, &e.message).await;
                return Some(SdkError::Master(e.message));
            }
        }
        None
    }
}

/// Waits for `until`, handing the scheduler the messages sent to it meanwhile (the
/// driver's loop outside a live subscription). `None` when a stop request came first.
async fn deliver_until<S, M, F>(
    scheduler: &mut S,
    handle: &DriverHandle<M>,
    inbox: &mut mpsc::UnboundedReceiver<M>,
    control: &mut watch::Receiver<Option<StopRequest>>,
    until: F,
) -> Option<F::Output>
where
    S: Scheduler<M>,
    M: Send + 'static,
    F: Future,
{
    let mut until = std::pin::pin!(until);
    loop {
        tokio::select! {
            biased;
            _ = control.changed() => return None,
            out = &mut until => return Some(out),
            // Never `None`: the driver's own handle holds a sender.
            Some(message) = inbox.recv() => scheduler.message(handle, message).await,
        }
    }
}

/// One connect + SUBSCRIBE + wait for SUBSCRIBED.
async fn subscribe_once(
    master: &str,
    framework: &v1::FrameworkInfo,
    options: &DriverOptions,
    suppressed_roles: Vec<String>,
    connect: &Connect,
) -> Result<Subscription, Attempt> {
    let timeout = options.call_timeout;
    let channel = match connect {
        Connect::Dial(endpoint) => endpoint.connect().await.map_err(|e| {
            let reason = chain(&e);
            if is_certificate_error(&reason) {
                Attempt::Fatal(SdkError::Certificate {
                    master: master.to_string(),
                    reason,
                })
            } else {
                Attempt::Retry(format!(
                    "cannot connect to the master at {master}: {reason}"
                ))
            }
        })?,
        // Connection failures show as the SUBSCRIBE failing with UNAVAILABLE.
        Connect::Channel(channel) => channel.clone(),
    };
    let credential = AuthInterceptor::new(options.tls.credential.as_ref());
    let mut client = SchedulerClient::with_interceptor(channel, credential)
        .max_decoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(strata_proto::limits::MAX_MESSAGE_BYTES);
    let request = v1::SubscribeRequest {
        framework_info: Some(framework.clone()),
        suppressed_roles,
    };
    let mut stream = match tokio::time::timeout(timeout, client.subscribe(request)).await {
        Err(_) => {
            return Err(Attempt::Retry(format!(
                "no answer to SUBSCRIBE within {timeout:?}"
            )));
        }
        Ok(Err(status)) => return Err(Attempt::from_status(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    let first = match tokio::time::timeout(timeout, stream.message()).await {
        Err(_) => {
            return Err(Attempt::Retry(format!(
                "no SUBSCRIBED event within {timeout:?}"
            )));
        }
        Ok(Err(status)) => return Err(Attempt::from_status(status)),
        Ok(Ok(None)) => {
            return Err(Attempt::Retry(
                "the master closed the stream before SUBSCRIBED".into(),
            ));
        }
        Ok(Ok(Some(event))) => event.event,
    };
    match first {
        Some(event::Event::Subscribed(s))
            if !s.framework_id.is_empty() && !s.stream_id.is_empty() =>
        {
            Ok((client, stream, s))
        }
        Some(event::Event::Subscribed(_)) => Err(Attempt::Retry(
            "SUBSCRIBED carried no framework id or stream id".into(),
        )),
        Some(event::Event::Error(e)) => Err(Attempt::Fatal(SdkError::Master(e.message))),
        _ => Err(Attempt::Retry("the first event was not SUBSCRIBED".into())),
    }
}

/// How the driver reaches the master.
enum Connect {
    /// A new connection to this endpoint for every subscription attempt (boxed: an
    /// `Endpoint` is large, a `Channel` a handle).
    Dial(Box<Endpoint>),
    /// The program's channel ([`Driver::with_channel`]), cloned for every attempt.
    Channel(Channel),
}

/// What woke the event loop of a live subscription.
enum Next<M> {
    /// A stop request (or a spurious wake-up of the control channel).
    Control,
    /// The next item of the event stream, or the silence deadline passing.
    Event(Result<Result<Option<v1::Event>, tonic::Status>, tokio::time::error::Elapsed>),
    /// A message for [`Scheduler::message`].
    Message(M),
}

/// A connected client, its event stream and the SUBSCRIBED that opened it.
type Subscription = (Client, Streaming<v1::Event>, v1::Subscribed);

/// Why a subscription attempt failed.
enum Attempt {
    /// Worth trying again after a backoff (master down, restarting, overloaded).
    Retry(String),
    /// The master refused the framework itself; retrying cannot help.
    Fatal(SdkError),
}

impl Attempt {
    fn from_status(status: tonic::Status) -> Attempt {
        match status.code() {
            Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
            | Code::Unimplemented => Attempt::Fatal(SdkError::Rpc(status)),
            code => Attempt::Retry(format!("SUBSCRIBE failed: {code}: {}", status.message())),
        }
    }
}

/// How a live subscription ended.
enum Pump {
    Stop(StopRequest),
    Fatal(SdkError),
    Broken(String),
}

/// What the scheduler asked the driver to do.
#[derive(Clone, Debug)]
enum StopRequest {
    /// Return `Ok` from `run`.
    Stop,
    /// Return `Err(Aborted)` from `run`.
    Abort(String),
}

impl StopRequest {
    fn into_result(self) -> Result<(), SdkError> {
        match self {
            StopRequest::Stop => Ok(()),
            StopRequest::Abort(reason) => Err(SdkError::Aborted(reason)),
        }
    }
}

/// What the scheduler's [`Scheduler::error`] is told when the master refuses the
/// subscription for good.
fn refusal_message(e: &SdkError) -> String {
    match e {
        // An ERROR event: the master's own words, as when one arrives mid-stream.
        SdkError::Master(message) => message.clone(),
        SdkError::Rpc(status) if status.code() == Code::Unauthenticated => format!(
            "the master refused the framework's credential (UNAUTHENTICATED): {}; check DriverOptions::tls.credential",
            status.message()
        ),
        SdkError::Rpc(status) if status.code() == Code::PermissionDenied => format!(
            "the master does not allow this principal to subscribe (PERMISSION_DENIED): {}",
            status.message()
        ),
        other => other.to_string(),
    }
}

/// Whether a failed connection is the master's certificate not verifying (wrong CA,
/// a certificate without [`MASTER_NAME`], expired): retrying cannot help. Matched on
/// rustls' message, which tonic's transport error carries only as text in its chain.
fn is_certificate_error(reason: &str) -> bool {
    reason.contains("invalid peer certificate")
}

fn silence_limit(s: &v1::Subscribed, missed: u32) -> Duration {
    let secs = s.heartbeat_interval_seconds;
    let interval = if secs.is_finite() && secs > 0.0 {
        Duration::from_secs_f64(secs.min(3600.0))
    } else {
        DEFAULT_HEARTBEAT
    };
    interval * missed.max(1)
}

fn endpoint_for(master: &str, options: &DriverOptions) -> Result<Endpoint, SdkError> {
    let master = master.trim();
    if master.is_empty() {
        return Err(SdkError::InvalidArgument(
            "the master address is empty; give host:port".into(),
        ));
    }
    // The scheme follows the TLS settings (`https` with a CA), whatever the address says.
    let endpoint = options
        .tls
        .endpoint(master, MASTER_NAME)
        .map_err(|e| SdkError::InvalidArgument(format!("the master address: {e}")))?;
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true))
}

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]`, `d` doubling
/// from `initial` up to `max`.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    fn next_delay(&mut self) -> Duration {
        use rand::Rng;
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let low = d / 2;
        let jitter_ms = rand::rng().random_range(0..=(d - low).as_millis() as u64);
        low + Duration::from_millis(jitter_ms)
    }
}

/// One live subscription: what every call needs.
#[derive(Clone)]
struct Session {
    client: Client,
    header: v1::CallHeader,
}

/// State shared between the driver and its handles. Locked only for short, sync
/// sections: a call clones the session out and releases the lock before awaiting.
struct State {
    session: Option<Session>,
    framework_id: Option<String>,
    master_id: Option<String>,
    call_timeout: Duration,
    /// The framework's roles (`*` when its info names none): what an empty SUPPRESS
    /// or REVIVE means.
    roles: Vec<String>,
    /// The roles suppressed now, sent with every re-subscription.
    suppressed: BTreeSet<String>,
    /// A TEARDOWN is under way: the master closing the stream is expected.
    tearing_down: bool,
    stopped: bool,
}

struct Shared<M> {
    state: Mutex<State>,
    /// Stop requests; `run` watches it between events and while backing off.
    control: watch::Sender<Option<StopRequest>>,
    /// Messages for [`Scheduler::message`]. Unbounded, on purpose: the scheduler is
    /// the only consumer and its own spawned work the only producer, so what is queued
    /// is what the scheduler chose to start; a bound would make `send` wait, and a
    /// callback that sends to its own scheduler when the queue is full would wait for
    /// itself forever. Work that can outrun the scheduler (a feed rather than a result)
    /// is bounded by the scheduler (a semaphore, or a channel of its own).
    outbox: mpsc::UnboundedSender<M>,
}

/// The scheduler's way to talk to the master, and to itself: cheap to clone, usable
/// from callbacks and from other tasks. Every call carries the framework id and the
/// current stream id; while the driver is re-subscribing calls fail with
/// [`SdkError::Disconnected`]. `M` is the scheduler's message type
/// ([`send`](DriverHandle::send)); `()` unless the scheduler implements
/// [`Scheduler<M>`] for another.
pub struct DriverHandle<M = ()> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for DriverHandle<M> {
    fn clone(&self) -> Self {
        DriverHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> std::fmt::Debug for DriverHandle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("DriverHandle")
            .field("framework_id", &state.framework_id)
            .field("connected", &state.session.is_some())
            .field("stopped", &state.stopped)
            .finish()
    }
}

impl<M> DriverHandle<M> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave this small state inconsistent; keep going.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The framework id: the one SUBSCRIBED handed out, or the one the driver was
    /// created with; `None` before the first subscription of a new framework.
    pub fn framework_id(&self) -> Option<String> {
        self.lock().framework_id.clone()
    }

    /// The id of the master the driver last subscribed to.
    pub fn master_id(&self) -> Option<String> {
        self.lock().master_id.clone()
    }

    /// Whether a subscription is live right now.
    pub fn is_connected(&self) -> bool {
        self.lock().session.is_some()
    }

    /// Sends `message` to the scheduler: the driver calls [`Scheduler::message`] with
    /// it after the callback running now (if any) returns, between two events, in the
    /// order messages were sent. The way for work spawned from a callback (reading a
    /// task's output, a timer, a call to another service) to hand its result back to
    /// the scheduler's `&mut self`. Never waits. Fails with [`SdkError::Stopped`] once
    /// the driver is stopping or has stopped (the message is dropped).
    pub fn send(&self, message: M) -> Result<(), SdkError> {
        let stopping = self.shared.control.borrow().is_some();
        if stopping || self.lock().stopped {
            return Err(SdkError::Stopped);
        }
        self.shared
            .outbox
            .send(message)
            .map_err(|_| SdkError::Stopped)
    }

    /// Whether the driver is on its way out: a stop, abort or teardown was asked for.
    fn ending(&self) -> bool {
        let stopping = self.shared.control.borrow().is_some();
        stopping || self.lock().tearing_down
    }

    /// The roles the framework has suppressed (options, then SUPPRESS and REVIVE),
    /// which a re-subscription sends again.
    pub fn suppressed_roles(&self) -> Vec<String> {
        self.lock().suppressed.iter().cloned().collect()
    }

    /// Records a SUPPRESS (`suppress`) or REVIVE of `roles` (empty: all) that the
    /// master may have applied: one it accepted, or one whose answer was lost (timed
    /// out, connection failed). A call refused by the master or never sent (not
    /// connected) changes nothing. Roles that are not the framework's are never
    /// recorded (the master would refuse the subscription).
    fn record_suppression(&self, roles: &[String], suppress: bool, result: &Result<(), SdkError>) {
        let applies = match result {
            Ok(()) | Err(SdkError::Timeout { .. }) => true,
            Err(SdkError::Rpc(status)) => status.code() == Code::Unavailable,
            Err(_) => false,
        };
        if !applies {
            return;
        }
        let mut state = self.lock();
        let named: Vec<String> = if roles.is_empty() {
            state.roles.clone()
        } else {
            roles
                .iter()
                .filter(|r| state.roles.contains(r))
                .cloned()
                .collect()
        };
        for role in named {
            if suppress {
                state.suppressed.insert(role);
            } else {
                state.suppressed.remove(&role);
            }
        }
    }

    fn session(&self) -> Result<(Session, Duration), SdkError> {
        let state = self.lock();
        if state.stopped {
            return Err(SdkError::Stopped);
        }
        match &state.session {
            Some(session) => Ok((session.clone(), state.call_timeout)),
            None => Err(SdkError::Disconnected),
        }
    }

    /// Runs one unary call on the live session with the call timeout.
    async fn call<F, Fut>(&self, name: &'static str, f: F) -> Result<(), SdkError>
    where
        F: FnOnce(Client, v1::CallHeader) -> Fut,
        Fut: Future<Output = Result<tonic::Response<v1::CallResponse>, tonic::Status>>,
    {
        let (session, timeout) = self.session()?;
        match tokio::time::timeout(timeout, f(session.client, session.header)).await {
            Err(_) => Err(SdkError::Timeout {
                call: name,
                timeout,
            }),
            Ok(Err(status)) => Err(SdkError::Rpc(status)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Accepts offers (all from one agent) and applies `operations` to them in order;
    /// what the operations leave unused goes back to the pool under `filters`
    /// (`None`: the master's default refusal of 5 s).
    pub async fn accept(
        &self,
        offer_ids: Vec<String>,
        operations: Vec<v1::Operation>,
        filters: Option<v1::Filters>,
    ) -> Result<(), SdkError> {
        check_offer_ids(&offer_ids)?;
        for op in &operations {
            if let Some(v1::operation::Operation::Launch(launch)) = &op.operation {
                check_tasks(&launch.task_infos)?;
            }
        }
        self.call("ACCEPT", |mut client, header| async move {
            client
                .accept(v1::AcceptRequest {
                    header: Some(header),
                    offer_ids,
                    operations,
                    filters,
                })
                .await
        })
        .await
    }

    /// Launches `tasks` on the offers (one LAUNCH operation). The usual way to use an
    /// offer; build the tasks with [`TaskBuilder`](crate::TaskBuilder).
    pub async fn launch(
        &self,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<(), SdkError> {
        let launch = v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: tasks,
            })),
        };
        self.accept(offer_ids, vec![launch], None).await
    }

    /// Declines offers. `refuse_seconds` keeps these resources away from this framework
    /// for that long (`None`: the master's default of 5 s). Decline with a long
    /// refusal, or [`suppress`](DriverHandle::suppress), when nothing is pending.
    pub async fn decline(
        &self,
        offer_ids: Vec<String>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        check_offer_ids(&offer_ids)?;
        let filters = filters(refuse_seconds)?;
        self.call("DECLINE", |mut client, header| async move {
            client
                .decline(v1::DeclineRequest {
                    header: Some(header),
                    offer_ids,
                    filters,
                })
                .await
        })
        .await
    }

    /// Asks for offers again in all the framework's roles, clearing decline filters.
    pub async fn revive(&self) -> Result<(), SdkError> {
        self.revive_roles(Vec::new()).await
    }

    /// Asks for offers again in `roles` (empty: all roles).
    pub async fn revive_roles(&self, roles: Vec<String>) -> Result<(), SdkError> {
        let named = roles.clone();
        let result = self
            .call("REVIVE", |mut client, header| async move {
                client
                    .revive(v1::ReviveRequest {
                        header: Some(header),
                        roles,
                    })
                    .await
            })
            .await;
        self.record_suppression(&named, false, &result);
        result
    }

    /// Stops offers in all the framework's roles until [`revive`](DriverHandle::revive).
    pub async fn suppress(&self) -> Result<(), SdkError> {
        self.suppress_roles(Vec::new()).await
    }

    /// Stops offers in `roles` (empty: all roles).
    pub async fn suppress_roles(&self, roles: Vec<String>) -> Result<(), SdkError> {
        let named = roles.clone();
        let result = self
            .call("SUPPRESS", |mut client, header| async move {
                client
                    .suppress(v1::SuppressRequest {
                        header: Some(header),
                        roles,
                    })
                    .await
            })
            .await;
        self.record_suppression(&named, true, &result);
        result
    }

    /// Kills a task: SIGTERM, `grace` (`None`: the task's kill policy, default 3 s),
    /// then SIGKILL. The outcome arrives as a status update (TASK_KILLED).
    pub async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), SdkError> {
        self.kill_on(task_id, "", grace).await
    }

    /// Like [`kill`](DriverHandle::kill), naming the agent the task runs on (empty: not
    /// known). With the agent named, a master that does not know the task yet (it
    /// restarted and the agent has not re-registered) waits for the agent instead of
    /// answering TASK_LOST.
    pub async fn kill_on(
        &self,
        task_id: &str,
        agent_id: &str,
        grace: Option<Duration>,
    ) -> Result<(), SdkError> {
        if task_id.is_empty() {
            return Err(SdkError::InvalidArgument("kill needs a task id".into()));
        }
        let request = |header| v1::KillRequest {
            header: Some(header),
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            kill_policy: grace.map(|g| v1::KillPolicy {
                grace_period_seconds: Some(g.as_secs_f64()),
            }),
        };
        self.call("KILL", |mut client, header| async move {
            client.kill(request(header)).await
        })
        .await
    }

    /// Acknowledges a status update (needed only with automatic acknowledgements
    /// off). Updates without a uuid need none; this returns `Ok` for them.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        self.acknowledge_ids(&status.agent_id, &status.task_id, &status.uuid)
            .await
    }

    async fn acknowledge_ids(
        &self,
        agent_id: &str,
        task_id: &str,
        uuid: &str,
    ) -> Result<(), SdkError> {
        let request = |header| v1::AcknowledgeRequest {
            header: Some(header),
            agent_id: agent_id.to_string(),
            task_id: task_id.to_string(),
            uuid: uuid.to_string(),
        };
        self.call("ACKNOWLEDGE", |mut client, header| async move {
            client.acknowledge(request(header)).await
        })
        .await
    }

    /// Asks the master for the state of `tasks` (each answered by a status update
    /// with REASON_RECONCILIATION); an empty list asks for every non-terminal task of
    /// the framework. A list longer than the master takes in one call
    /// ([`strata_proto::limits::MAX_TASKS_PER_RECONCILE`]) goes in several calls.
    pub async fn reconcile(&self, tasks: Vec<v1::ReconcileTask>) -> Result<(), SdkError> {
        let mut rest = tasks;
        loop {
            let tail = rest.split_off(
                rest.len()
                    .min(strata_proto::limits::MAX_TASKS_PER_RECONCILE),
            );
            let batch = std::mem::replace(&mut rest, tail);
            self.call("RECONCILE", |mut client, header| async move {
                client
                    .reconcile(v1::ReconcileRequest {
                        header: Some(header),
                        tasks: batch,
                    })
                    .await
            })
            .await?;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends opaque data to a task (no delivery guarantee). To hand something to your
    /// own scheduler instead, use [`send`](DriverHandle::send).
    pub async fn message(
        &self,
        agent_id: &str,
        task_id: &str,
        data: Vec<u8>,
    ) -> Result<(), SdkError> {
        let request = |header| v1::MessageRequest {
            header: Some(header),
            agent_id: agent_id.to_string(),
            task_id: task_id.to_string(),
            data,
        };
        self.call("MESSAGE", |mut client, header| async move {
            client.message(request(header)).await
        })
        .await
    }

    /// Removes the framework from the master (its tasks are killed) and stops the
    /// driver: [`Driver::run`] returns `Ok`. The driver stops even when the call fails.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        self.lock().tearing_down = true;
        let result = self
            .call("TEARDOWN", |mut client, header| async move {
                client
                    .teardown(v1::TeardownRequest {
                        header: Some(header),
                    })
                    .await
            })
            .await;
        self.stop();
        result
    }

    /// Stops the driver; [`Driver::run`] returns `Ok`. The framework stays registered
    /// (its tasks keep running) for its failover timeout, so a new driver with the same
    /// framework id can take over.
    pub fn stop(&self) {
        self.request_stop(StopRequest::Stop);
    }

    /// Stops the driver; [`Driver::run`] returns [`SdkError::Aborted`] with `reason`.
    pub fn abort(&self, reason: impl Into<String>) {
        self.request_stop(StopRequest::Abort(reason.into()));
    }

    fn request_stop(&self, request: StopRequest) {
        // The first request wins: an abort is not turned into a clean stop later.
        self.shared.control.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(request);
                true
            } else {
                false
            }
        });
    }
}

fn check_offer_ids(offer_ids: &[String]) -> Result<(), SdkError> {
    if offer_ids.is_empty() {
        return Err(SdkError::InvalidArgument("no offer ids given".into()));
    }
    if offer_ids.iter().any(|id| id.is_empty()) {
        return Err(SdkError::InvalidArgument("an offer id is empty".into()));
    }
    Ok(())
}

fn check_tasks(tasks: &[v1::TaskInfo]) -> Result<(), SdkError> {
    for task in tasks {
        if task.task_id.is_empty() {
            return Err(SdkError::InvalidArgument(format!(
                "a task (name '{}') has no task id",
                task.name
            )));
        }
    }
    Ok(())
}

fn filters(refuse_seconds: Option<f64>) -> Result<Option<v1::Filters>, SdkError> {
    match refuse_seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(v1::Filters {
            refuse_seconds: Some(s),
        })),
        Some(s) => Err(SdkError::InvalidArgument(format!(
            "refuse_seconds must be a finite number >= 0, not {s}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let expected_caps = [100, 200, 400, 800, 1000, 1000];
        for cap in expected_caps {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(cap / 2) && d <= Duration::from_millis(cap),
                "{d:?} not in [{}, {cap}] ms",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn heartbeat_silence_limit() {
        let s = |secs| v1::Subscribed {
            heartbeat_interval_seconds: secs,
            ..Default::default()
        };
        assert_eq!(silence_limit(&s(2.0), 5), Duration::from_secs(10));
        assert_eq!(silence_limit(&s(0.0), 5), Duration::from_secs(75));
        assert_eq!(silence_limit(&s(f64::NAN), 5), Duration::from_secs(75));
        assert_eq!(silence_limit(&s(1.0), 0), Duration::from_secs(1));
    }

    #[test]
    fn master_addresses() {
        let o = DriverOptions::default();
        assert!(endpoint_for("127.0.0.1:5050", &o).is_ok());
        assert!(endpoint_for("http://master:5050", &o).is_ok());
        assert!(matches!(
            endpoint_for(" ", &o),
            Err(SdkError::InvalidArgument(_))
        ));
        assert!(matches!(
            endpoint_for("bad host:x", &o),
            Err(SdkError::InvalidArgument(_))
        ));
    }

    #[test]
    fn with_a_ca_the_master_is_dialled_over_https() {
        let ca = strata_security::ClusterCa::create().unwrap();
        let o = DriverOptions {
            tls: ClientTls {
                ca_pem: Some(ca.cert_pem().to_string()),
                ..ClientTls::default()
            },
            ..DriverOptions::default()
        };
        for addr in ["127.0.0.1:5050", "http://127.0.0.1:5050"] {
            let endpoint = endpoint_for(addr, &o).unwrap();
            assert_eq!(endpoint.uri().scheme_str(), Some("https"), "{addr}");
        }
        let plain = endpoint_for("127.0.0.1:5050", &DriverOptions::default()).unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
    }

    #[test]
    fn refuse_seconds_are_checked() {
        assert!(filters(Some(f64::NAN)).is_err());
        assert!(filters(Some(-1.0)).is_err());
        assert_eq!(
            filters(Some(3.0)).unwrap().unwrap().refuse_seconds,
            Some(3.0)
        );
        assert!(filters(None).unwrap().is_none());
    }
}
