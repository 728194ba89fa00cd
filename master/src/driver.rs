//! The driver: one tokio task ([`CoreDriver`]) that owns the sans-IO [`core::Master`],
//! feeds it inputs and the clock, and carries out the effects it returns.
//!
//! ```text
//!  gRPC/HTTP handlers ──Command (bounded)──────────▶ ┌──────────────┐ ─ToFramework─▶ per-conn mpsc ─▶ Subscribe stream
//!  stream wrappers' Drop ──Disconnect (unbounded)──▶ │ driver task  │ ─ToAgent─────▶ per-conn mpsc ─▶ Attach stream
//!  interval (100 ms) ──Tick────────────────────────▶ │ core::Master │ ─Persist─────▶ Store (append; one sync per batch)
//!  shutdown ───────────────────────────────────────▶ └──────────────┘ ─Close*──────▶ drop the conn's sender
//! ```
//!
//! Effects are carried out in order, right after the `handle` that produced them,
//! with one exception that keeps the rule "a `Persist` is durable before anything
//! that follows it is carried out": group commit. The driver takes the commands that
//! are already queued as one batch (up to [`MAX_BATCH`]); each `Persist` is appended
//! to the store, and every effect after the first appended `Persist` that the store
//! has yet to make durable (and every call's reply) is held, in order, until the
//! batch ends with one [`Store::sync`]; then the held effects go out. A registration
//! storm of N agents costs one fsync per batch, not N, and nobody hears of a change
//! before it is durable. A read (snapshot, metrics) ends the batch first: operators
//! never see what is not durable.
//!
//! A connection whose buffer is full or whose receiver is gone is dropped, and the
//! core is told it disconnected (a framework re-subscribes, an agent re-registers). A
//! store failure is fatal: the driver stops and [`crate::serve`] returns the error, as
//! a Mesos master aborts when its registry fails; held effects are never sent.
//!
//! Snapshot and metrics reads go through the same command channel, so operators see
//! the state between two inputs, never in the middle of one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{self, Call, CallError, ConnId, Input, Metrics, OperatorCall, StateSnapshot};
use crate::store::{Store, StoreError};

/// How often the driver sends `Input::Tick`.
pub const TICK: Duration = Duration::from_millis(100);
/// Capacity of the command channel from the handlers to the driver. When it is full,
/// handlers wait: back-pressure on clients instead of unbounded memory.
pub const COMMAND_BUFFER: usize = 4096;
/// Events buffered per framework stream before the framework counts as too slow and
/// its stream is dropped (it re-subscribes). Generous: the largest legitimate burst
/// is one implicit RECONCILE, answered at once with an update per task (100,000 tasks
/// after a master failover at the scale of `strata bench failover`), plus the offers
/// and updates around it; a smaller bound drops such a framework on every
/// reconciliation, for good. A tokio channel allocates its slots as they fill, so an
/// idle stream costs nothing for its capacity; a framework that stops reading holds
/// at most this many events (some 100 MB) before it is dropped.
pub const FRAMEWORK_BUFFER: usize = 262_144;
/// Messages buffered per agent stream before the agent counts as stuck and its stream
/// is dropped (it re-registers). Covers one accept launching thousands of tasks there.
pub const AGENT_BUFFER: usize = 16_384;
/// Most commands handled as one batch, between two store syncs. Bounds how long an
/// effect can be held behind the batch's sync.
pub const MAX_BATCH: usize = 256;

/// What a handler asks of the driver.
#[derive(Debug)]
pub enum Command {
    /// A framework opened a Subscribe stream; `events` feeds it.
    Subscribe {
        conn: ConnId,
        request: v1::SubscribeRequest,
        events: mpsc::Sender<v1::Event>,
    },
    /// An agent opened an Attach stream and sent Register; `messages` feeds it.
    AgentAttach {
        conn: ConnId,
        register: v1::Register,
        peer: Option<String>,
        messages: mpsc::Sender<v1::MasterMessage>,
    },
    /// A later message on an agent stream.
    AgentMessage {
        conn: ConnId,
        message: v1::AgentMessage,
    },
    /// An agent stream's inbound side ended.
    AgentDisconnected { conn: ConnId },
    /// A unary scheduler call; the core's verdict goes to `reply`.
    Call {
        header: v1::CallHeader,
        call: Call,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// An operator call (weights, maintenance); the core's verdict goes to `reply`.
    Operator {
        call: OperatorCall,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// A consistent view of the state.
    Snapshot(oneshot::Sender<StateSnapshot>),
    /// The counters and gauges, `allocation_run_ms` filled in.
    Metrics(oneshot::Sender<Metrics>),
    /// One page of the tasks `principal` may view that match `filter` (the dashboard).
    TasksPage {
        filter: crate::core::TaskFilter,
        authz: strata_security::Authorizer,
        principal: strata_security::Principal,
        offset: usize,
        limit: usize,
        reply: oneshot::Sender<(usize, Vec<crate::core::TaskView>)>,
    },
    /// The tasks with an id (of a framework, if given) that `principal` may view,
    /// with their status history (the dashboard's task page).
    TaskDetails {
        task_id: String,
        framework_id: Option<String>,
        authz: strata_security::Authorizer,
        principal: strata_security::Principal,
        reply: oneshot::Sender<Vec<crate::core::TaskDetail>>,
    },
    /// The frameworks and roles (the dashboard).
    FrameworksAndRoles(
        oneshot::Sender<(Vec<crate::core::FrameworkView>, Vec<crate::core::RoleView>)>,
    ),
    /// One page of the agents, by id (the dashboard): `limit` from `offset`, and how
    /// many there are.
    AgentsPage {
        offset: usize,
        limit: usize,
        reply: oneshot::Sender<(usize, Vec<crate::core::AgentView>)>,
    },
    /// A new operator event stream subscriber (after `resume`, master id and seq, when
    /// possible).
    OperatorSubscribe {
        principal: String,
        scope: crate::events::Scope,
        resume: Option<(String, u64)>,
        reply: oneshot::Sender<crate::events::SubscribeStart>,
    },
    /// A service proxy (`principal`) has applied the operator events up to `seq`.
    EventsAcked {
        principal: String,
        master_id: String,
        seq: u64,
    },
    /// Whether an agent principal's certificate is revoked (its agent marked gone).
    Revoked {
        principal: String,
        reply: oneshot::Sender<bool>,
    },
    /// A config or secret operation (issue 16); answered once what it changed is
    /// durable.
    Objects {
        call: core::ObjectCall,
        reply: oneshot::Sender<Result<core::ObjectAnswer, core::ObjectError>>,
    },
}

/// A stream that closed on the client's side, reported from a `Drop` (which cannot
/// wait for room in a bounded channel).
#[derive(Debug, Clone, Copy)]
pub enum Disconnect {
    Framework(ConnId),
}

/// The driver has stopped (shutdown, or a fatal store error).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the master is shutting down")]
pub struct DriverGone;

/// The handlers' side of the driver: cheap to clone, one per service.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
    /// Unbounded on purpose: a stream wrapper reports its end from `Drop`, where it
    /// cannot wait. At most one message is ever sent per connection, and the driver
    /// reads this channel before anything else, so it holds at most one entry per
    /// connection closed since the driver last ran.
    disconnects: mpsc::UnboundedSender<Disconnect>,
    /// Connection ids: a counter, never reused within a process.
    next_conn: Arc<AtomicU64>,
}

impl DriverHandle {
    /// A fresh connection id.
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a command, waiting for room.
    /// Sends the command `make` builds around a reply channel, and waits for the
    /// reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| DriverGone)
    }

    pub async fn send(&self, command: Command) -> Result<(), DriverGone> {
        self.commands.send(command).await.map_err(|_| DriverGone)
    }

    /// Reports, without waiting, that a framework stream ended.
    pub fn framework_gone(&self, conn: ConnId) {
        let _ = self.disconnects.send(Disconnect::Framework(conn));
    }

    /// Runs a scheduler call through the core.
    pub async fn call(
        &self,
        header: v1::CallHeader,
        call: Call,
    ) -> Result<Result<(), CallError>, DriverGone> {
        self.ask(|reply| Command::Call {
            header,
            call,
            reply,
        })
        .await
    }

    /// Runs an operator call through the core; answered once what it changed is
    /// durable.
    pub async fn operator(&self, call: OperatorCall) -> Result<Result<(), CallError>, DriverGone> {
        self.ask(|reply| Command::Operator { call, reply }).await
    }

    /// The state between two inputs.
    pub async fn snapshot(&self) -> Result<StateSnapshot, DriverGone> {
        self.ask(Command::Snapshot).await
    }

    /// Subscribes to the operator event stream (see [`crate::events`]).
    pub async fn operator_subscribe(
        &self,
        principal: String,
        scope: crate::events::Scope,
        resume: Option<(String, u64)>,
    ) -> Result<crate::events::SubscribeStart, DriverGone> {
        self.ask(|reply| Command::OperatorSubscribe {
            principal,
            scope,
            resume,
            reply,
        })
        .await
    }

    /// A service proxy's acknowledgement of the events up to `seq`.
    pub async fn events_acked(
        &self,
        principal: String,
        master_id: String,
        seq: u64,
    ) -> Result<(), DriverGone> {
        self.send(Command::EventsAcked {
            principal,
            master_id,
            seq,
        })
        .await
    }

    /// Whether the certificate of the agent principal `principal` is revoked (its agent
    /// was marked gone): cheap, unlike a snapshot.
    pub async fn revoked(&self, principal: &str) -> Result<bool, DriverGone> {
        self.ask(|reply| Command::Revoked {
            principal: principal.to_string(),
            reply,
        })
        .await
    }

    /// Runs a config or secret operation through the core; answered once what it
    /// changed is durable.
    pub async fn objects(
        &self,
        call: core::ObjectCall,
    ) -> Result<Result<core::ObjectAnswer, core::ObjectError>, DriverGone> {
        self.ask(|reply| Command::Objects { call, reply }).await
    }

    /// The metrics between two inputs.
    pub async fn metrics(&self) -> Result<Metrics, DriverGone> {
        self.ask(Command::Metrics).await
    }

    /// One page of the agents by id, and how many there are (see
    /// [`Command::AgentsPage`]).
    pub async fn agents_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<crate::core::AgentView>), DriverGone> {
        self.ask(|reply| Command::AgentsPage {
            offset,
            limit,
            reply,
        })
        .await
    }

    /// One page of the tasks (see [`Command::TasksPage`]).
    pub async fn tasks_page(
        &self,
        filter: crate::core::TaskFilter,
        authz: strata_security::Authorizer,
        principal: strata_security::Principal,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<crate::core::TaskView>), DriverGone> {
        self.ask(|reply| Command::TasksPage {
            filter,
            authz,
            principal,
            offset,
            limit,
            reply,
        })
        .await
    }

    /// A task's details (see [`Command::TaskDetails`]).
    pub async fn task_details(
        &self,
        task_id: String,
        framework_id: Option<String>,
        authz: strata_security::Authorizer,
        principal: strata_security::Principal,
    ) -> Result<Vec<crate::core::TaskDetail>, DriverGone> {
        self.ask(|reply| Command::TaskDetails {
            task_id,
            framework_id,
            authz,
            principal,
            reply,
        })
        .await
    }

    /// The frameworks and roles (see [`Command::FrameworksAndRoles`]).
    pub async fn frameworks_and_roles(
        &self,
    ) -> Result<(Vec<crate::core::FrameworkView>, Vec<crate::core::RoleView>), DriverGone> {
        self.ask(Command::FrameworksAndRoles).await
    }

    /// False once the driver has stopped.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// Why the driver stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("registry write failed; the master stops")]
    Store(#[from] StoreError),
}

/// The driver task's state. Create with [`CoreDriver::new`], run with
/// [`CoreDriver::run`]. (`CoreDriver`, not `Driver`: the framework SDK's `Driver` is the
/// scheduler side's.)
pub struct CoreDriver {
    core: core::Master,
    store: Box<dyn Store>,
    commands: mpsc::Receiver<Command>,
    disconnects: mpsc::UnboundedReceiver<Disconnect>,
    /// Senders feeding each open framework stream; dropping one ends its stream.
    frameworks: HashMap<ConnId, mpsc::Sender<v1::Event>>,
    /// Senders feeding each open agent stream.
    agents: HashMap<ConnId, mpsc::Sender<v1::MasterMessage>>,
    /// Inputs produced by carrying out effects (a dropped conn). [`CoreDriver::carry_out`]
    /// feeds them to the core before it returns, on every path (commands, calls,
    /// Ticks, disconnects), so the core learns of a dropped conn at once.
    pending: VecDeque<Input>,
    /// Durations of the latest Ticks, one allocation interval's worth. The core has
    /// no clock and does not say which Tick ran the batch allocation, so
    /// `allocation_run_ms` reports the longest of these: the batch allocation runs in
    /// one of them and dominates the others (which only check timers).
    recent_ticks: VecDeque<Duration>,
    /// How many Ticks `recent_ticks` keeps.
    ticks_per_allocation: usize,
    /// Ops appended to the store since its last sync.
    unsynced: bool,
    /// What waits for the store's next sync, in order (see the module docs).
    held: Vec<Held>,
    /// The operator event stream (see [`crate::events`]).
    events: crate::events::EventLog,
}

/// Something the driver does only once the ops persisted before it are durable.
#[allow(clippy::large_enum_variant)] // as `core::Effect`: moved once, straight out
enum Held {
    Effect(core::Effect),
    Reply(
        oneshot::Sender<Result<(), CallError>>,
        Result<(), CallError>,
    ),
}

impl CoreDriver {
    /// A driver owning `core` and `store`, and the handle the handlers use.
    /// `allocation_interval` is the core's, for the `allocation_run_ms` metric.
    pub fn new(
        core: core::Master,
        store: Box<dyn Store>,
        allocation_interval: Duration,
    ) -> (CoreDriver, DriverHandle) {
        let ticks_per_allocation =
            (allocation_interval.as_nanos().div_ceil(TICK.as_nanos())).clamp(1, 10_000) as usize;
        let core_master_id = core.master_id().to_string();
        let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let (disconnects_tx, disconnects) = mpsc::unbounded_channel();
        let handle = DriverHandle {
            commands: commands_tx,
            disconnects: disconnects_tx,
            next_conn: Arc::new(AtomicU64::new(1)),
        };
        let driver = CoreDriver {
            core,
            store,
            commands,
            disconnects,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            pending: VecDeque::new(),
            recent_ticks: VecDeque::with_capacity(ticks_per_allocation),
            ticks_per_allocation,
            unsynced: false,
            held: Vec::new(),
            events: crate::events::EventLog::new(core_master_id),
        };
        (driver, handle)
    }

    /// Runs until `stop` turns true (or every handle is gone), then closes every
    /// stream and flushes the store.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), DriverError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                changed = stop.wait_for(|s| *s) => {
                    let _ = changed;
                    break Ok(());
                }
                // Before the commands: under a steady stream of commands the timers
                // (allocation, heartbeats, timeouts) must still run. A Tick is ready at
                // most once per TICK, so it cannot starve the commands either.
                _ = tick.tick() => {
                    if let Err(e) = self.on_tick() {
                        break Err(e);
                    }
                }
                Some(gone) = self.disconnects.recv() => {
                    if let Err(e) = self.on_disconnect(gone) {
                        break Err(e);
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break Ok(()) };
                    if let Err(e) = self.on_batch(command) {
                        break Err(e);
                    }
                }
                // Last: work an input left over (a large implicit reconciliation, in
                // chunks), once nothing else waits.
                () = std::future::ready(()), if self.core.has_pending_work() => {
                    if let Err(e) = self.feed(Input::Continue).and_then(|()| self.commit()) {
                        break Err(e);
                    }
                }
            }
        };
        // Stop accepting: later commands fail with DriverGone.
        self.commands.close();
        let open = self.frameworks.len() + self.agents.len();
        self.frameworks.clear();
        self.agents.clear();
        tracing::info!(
            closed_streams = open,
            "driver stopped; flushing the registry"
        );
        let flushed = self.store.flush();
        result?;
        flushed?;
        Ok(())
    }

    fn on_disconnect(&mut self, gone: Disconnect) -> Result<(), DriverError> {
        match gone {
            Disconnect::Framework(conn) => {
                // Only conns the core still has open; a conn the core closed (or the
                // driver dropped) is already known to be gone.
                if self.frameworks.remove(&conn).is_some() {
                    self.feed(Input::FrameworkDisconnected { conn })?;
                }
            }
        }
        self.commit()
    }

    /// `first` and the commands queued behind it (up to [`MAX_BATCH`] in all), then
    /// one store sync for all of them (see the module docs).
    fn on_batch(&mut self, first: Command) -> Result<(), DriverError> {
        self.handle_command(first)?;
        for _ in 1..MAX_BATCH {
            match self.commands.try_recv() {
                Ok(command) => self.handle_command(command)?,
                Err(_) => break,
            }
        }
        self.commit()
    }

    /// One command, committed at once (no batching).
    #[cfg(test)]
    fn on_command(&mut self, command: Command) -> Result<(), DriverError> {
        self.handle_command(command)?;
        self.commit()
    }

    /// One command; what it persists is appended, not yet synced (see
    /// [`CoreDriver::commit`]).
    fn handle_command(&mut self, command: Command) -> Result<(), DriverError> {
        match command {
            Command::Subscribe {
                conn,
                request,
                events,
            } => {
                self.frameworks.insert(conn, events);
                self.feed(Input::Subscribe { conn, request })?;
            }
            Command::AgentAttach {
                conn,
                register,
                peer,
                messages,
            } => {
                self.agents.insert(conn, messages);
                self.feed(Input::AgentRegister {
                    conn,
                    register,
                    peer,
                })?;
            }
            Command::AgentMessage { conn, message } => {
                if self.agents.contains_key(&conn) {
                    self.feed(Input::AgentMessage { conn, message })?;
                }
            }
            Command::AgentDisconnected { conn } => {
                if self.agents.remove(&conn).is_some() {
                    self.feed(Input::AgentDisconnected { conn })?;
                }
            }
            Command::Call {
                header,
                call,
                reply,
            } => {
                let result = self
                    .core
                    .handle(Input::Call { header, call }, Instant::now());
                self.answer(reply, result)?;
            }
            Command::Operator { call, reply } => {
                let result = self.core.handle(Input::Operator(call), Instant::now());
                self.answer(reply, result)?;
            }
            Command::Snapshot(reply) => {
                self.commit()?;
                let _ = reply.send(self.core.snapshot());
            }
            Command::OperatorSubscribe {
                principal,
                scope,
                resume,
                reply,
            } => {
                self.commit()?;
                self.core.observe(scope == crate::events::Scope::All);
                let core = &self.core;
                let resume = resume.as_ref().map(|(m, s)| (m.as_str(), *s));
                let start = self.events.subscribe(
                    &principal,
                    scope,
                    resume,
                    || core.snapshot(),
                    core.framework_principals(),
                );
                let _ = reply.send(start);
            }
            Command::EventsAcked {
                principal,
                master_id,
                seq,
            } => {
                self.events.ack(&principal, &master_id, seq);
                self.commit()?;
            }
            Command::Revoked { principal, reply } => {
                let _ = reply.send(self.core.is_revoked(&principal));
            }
            Command::Objects { call, reply } => {
                let result = self.core.object_call(call, Instant::now());
                self.carry_out()?;
                self.commit()?;
                let _ = reply.send(result);
            }
            Command::Metrics(reply) => {
                self.commit()?;
                let mut metrics = self.core.metrics();
                metrics.allocation_run_ms = self.allocation_run_ms();
                let _ = reply.send(metrics);
            }
            Command::TasksPage {
                filter,
                authz,
                principal,
                offset,
                limit,
                reply,
            } => {
                self.commit()?;
                let may = |owner: &str| {
                    authz.permits(&principal, strata_security::Action::ViewTasks, owner)
                };
                let _ = reply.send(self.core.tasks_page(&filter, &may, offset, limit));
            }
            Command::TaskDetails {
                task_id,
                framework_id,
                authz,
                principal,
                reply,
            } => {
                self.commit()?;
                let may = |owner: &str| {
                    authz.permits(&principal, strata_security::Action::ViewTasks, owner)
                };
                let _ = reply.send(
                    self.core
                        .task_details(&task_id, framework_id.as_deref(), &may),
                );
            }
            Command::FrameworksAndRoles(reply) => {
                self.commit()?;
                let _ = reply.send(self.core.frameworks_and_roles());
            }
            Command::AgentsPage {
                offset,
                limit,
                reply,
            } => {
                self.commit()?;
                let _ = reply.send(self.core.agents_page(offset, limit));
            }
        }
        Ok(())
    }

    /// Carries out a call's effects; the caller hears of its outcome once what it
    /// changed is durable.
    fn answer(
        &mut self,
        reply: oneshot::Sender<Result<(), CallError>>,
        result: Result<(), CallError>,
    ) -> Result<(), DriverError> {
        self.carry_out()?;
        if self.unsynced {
            self.held.push(Held::Reply(reply, result));
        } else {
            let _ = reply.send(result);
        }
        Ok(())
    }

    fn on_tick(&mut self) -> Result<(), DriverError> {
        let started = Instant::now();
        if let Err(e) = self.core.handle(Input::Tick, started) {
            tracing::warn!(error = %e, "the core refused a Tick");
        }
        if self.recent_ticks.len() == self.ticks_per_allocation {
            self.recent_ticks.pop_front();
        }
        self.recent_ticks.push_back(started.elapsed());
        self.carry_out()?;
        self.commit()
    }

    /// The longest Tick of the latest allocation interval, in milliseconds.
    fn allocation_run_ms(&self) -> f64 {
        self.recent_ticks
            .iter()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Feeds one input (and any it causes) and carries out the effects (holding those
    /// behind an unsynced `Persist`).
    fn feed(&mut self, input: Input) -> Result<(), DriverError> {
        self.pending.push_back(input);
        self.carry_out()
    }

    /// Makes the appended ops durable with one sync, then carries out what waited for
    /// it, in order, and the inputs that caused (a dropped conn), until nothing waits.
    fn commit(&mut self) -> Result<(), DriverError> {
        while self.unsynced || !self.held.is_empty() {
            if self.unsynced {
                self.store.sync()?;
                self.unsynced = false;
            }
            for held in std::mem::take(&mut self.held) {
                match held {
                    Held::Effect(effect) => self.carry_out_effect(effect)?,
                    Held::Reply(reply, result) => {
                        let _ = reply.send(result);
                    }
                }
            }
            self.carry_out()?;
        }
        // What operators watch, once what caused it is durable.
        let observed = self.core.take_observed();
        self.events.publish(observed);
        // Kills held for the service proxies go on once every proxy has the event.
        if let Some(oldest) = self.core.oldest_held_kill() {
            let seq = self.events.synced();
            if seq >= oldest {
                self.feed(Input::ServicesSynced { seq })?;
                return self.commit();
            }
        }
        Ok(())
    }

    /// Carries out the effects of the latest `handle`, in order, then feeds the core
    /// the inputs that carrying them out queued (a conn dropped because its buffer
    /// was full or its receiver gone) and carries out theirs, until none is left.
    fn carry_out(&mut self) -> Result<(), DriverError> {
        loop {
            let effects = self.core.take_effects();
            self.carry_out_effects(effects)?;
            let Some(input) = self.pending.pop_front() else {
                return Ok(());
            };
            if let Err(e) = self.core.handle(input, Instant::now()) {
                // Only calls have a caller to tell; for other inputs the core says why
                // through effects (an ERROR event) and this is just a trace.
                tracing::debug!(error = %e, "input refused by the core");
            }
        }
    }

    /// Appends each `Persist` to the store; carries out the other effects, or holds
    /// them if an appended `Persist` is not synced yet.
    fn carry_out_effects(&mut self, effects: Vec<core::Effect>) -> Result<(), DriverError> {
        for effect in effects {
            if self.unsynced && !matches!(effect, core::Effect::Persist(_)) {
                self.held.push(Held::Effect(effect));
            } else {
                self.carry_out_effect(effect)?;
            }
        }
        Ok(())
    }

    /// Carries out one effect; a `Persist` is appended to the store (durable at the
    /// next [`CoreDriver::commit`]).
    fn carry_out_effect(&mut self, effect: core::Effect) -> Result<(), DriverError> {
        match effect {
            core::Effect::ToFramework { conn, event } => {
                let Some(tx) = self.frameworks.get(&conn) else {
                    tracing::trace!(conn = conn.0, "event for a closed framework stream");
                    return Ok(());
                };
                if let Err(e) = tx.try_send(event) {
                    tracing::warn!(
                        conn = conn.0,
                        reason = if matches!(e, mpsc::error::TrySendError::Full(_)) {
                            "buffer full"
                        } else {
                            "stream closed"
                        },
                        "dropping framework stream; the framework will re-subscribe"
                    );
                    self.frameworks.remove(&conn);
                    self.pending
                        .push_back(Input::FrameworkDisconnected { conn });
                }
            }
            core::Effect::CloseFramework { conn } => {
                self.frameworks.remove(&conn);
            }
            core::Effect::ToAgent { conn, message } => {
                let Some(tx) = self.agents.get(&conn) else {
                    tracing::trace!(conn = conn.0, "message for a closed agent stream");
                    return Ok(());
                };
                if let Err(e) = tx.try_send(message) {
                    tracing::warn!(
                        conn = conn.0,
                        reason = if matches!(e, mpsc::error::TrySendError::Full(_)) {
                            "buffer full"
                        } else {
                            "stream closed"
                        },
                        "dropping agent stream; the agent will re-register"
                    );
                    self.agents.remove(&conn);
                    self.pending.push_back(Input::AgentDisconnected { conn });
                }
            }
            core::Effect::CloseAgent { conn } => {
                self.agents.remove(&conn);
            }
            core::Effect::Persist(op) => {
                if self.store.append(&op)? {
                    self.unsynced = true;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CoreConfig, Registry};
    use crate::store::MemoryStore;

    fn driver() -> (CoreDriver, DriverHandle) {
        let core = core::Master::new(
            CoreConfig {
                master_id: "m1".into(),
                ..CoreConfig::default()
            },
            Registry::default(),
            Instant::now(),
        );
        CoreDriver::new(core, Box::new(MemoryStore::new()), Duration::from_secs(1))
    }

    #[tokio::test]
    async fn snapshot_and_metrics_go_through_the_driver() {
        let (driver, handle) = driver();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(driver.run(stop));
        let snap = handle.snapshot().await.unwrap();
        assert_eq!(snap.master_id, "m1");
        handle.metrics().await.unwrap();
        assert!(handle.is_running());
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(handle.snapshot().await.is_err());
        assert!(!handle.is_running());
    }

    #[tokio::test]
    async fn conn_ids_are_never_reused() {
        let (_driver, handle) = driver();
        let a = handle.next_conn();
        let b = handle.clone().next_conn();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_full_framework_buffer_drops_the_conn() {
        let (mut driver, _handle) = driver();
        let (tx, _rx) = mpsc::channel(1);
        let conn = ConnId(7);
        driver.frameworks.insert(conn, tx.clone());
        tx.try_send(v1::Event::default()).unwrap();
        driver
            .carry_out_effects(vec![core::Effect::ToFramework {
                conn,
                event: v1::Event::default(),
            }])
            .unwrap();
        assert!(!driver.frameworks.contains_key(&conn));
        assert!(matches!(
            driver.pending.front(),
            Some(Input::FrameworkDisconnected { conn: c }) if *c == conn
        ));
    }

    /// Subscribes a framework through the driver; returns its header and the
    /// receiving end of its event stream (SUBSCRIBED already read).
    fn subscribe(driver: &mut CoreDriver) -> (v1::CallHeader, mpsc::Receiver<v1::Event>) {
        let (events, mut rx) = mpsc::channel(16);
        let request = v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                name: "fw".into(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            }),
            suppressed_roles: vec![],
        };
        driver
            .on_command(Command::Subscribe {
                conn: ConnId(1),
                request,
                events,
            })
            .unwrap();
        let Some(v1::Event {
            event: Some(v1::event::Event::Subscribed(s)),
        }) = rx.try_recv().ok()
        else {
            panic!("expected SUBSCRIBED")
        };
        let header = v1::CallHeader {
            framework_id: s.framework_id,
            stream_id: s.stream_id,
        };
        (header, rx)
    }

    fn framework_connected(driver: &CoreDriver) -> bool {
        driver.core.snapshot().frameworks[0].connected
    }

    #[tokio::test]
    async fn a_stream_dropped_while_answering_a_call_is_reported_to_the_core_at_once() {
        let (mut driver, _handle) = driver();
        let (header, rx) = subscribe(&mut driver);
        drop(rx); // the framework's stream is gone, its Drop report not yet in
        let (reply, result) = oneshot::channel();
        let call = Call::Reconcile(v1::ReconcileRequest {
            header: Some(header.clone()),
            tasks: vec![v1::ReconcileTask {
                task_id: "t1".into(),
                agent_id: String::new(),
            }],
        });
        driver
            .on_command(Command::Call {
                header,
                call,
                reply,
            })
            .unwrap();
        assert_eq!(result.await.unwrap(), Ok(()));
        assert!(driver.pending.is_empty(), "{:?}", driver.pending);
        assert!(
            !framework_connected(&driver),
            "the core knows the framework is gone"
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_on_a_tick_is_reported_to_the_core_at_once() {
        let core = core::Master::new(
            CoreConfig {
                master_id: "m1".into(),
                framework_heartbeat_interval: Duration::ZERO,
                ..CoreConfig::default()
            },
            Registry::default(),
            Instant::now(),
        );
        let (mut driver, _handle) =
            CoreDriver::new(core, Box::new(MemoryStore::new()), Duration::from_secs(1));
        let (_header, rx) = subscribe(&mut driver);
        drop(rx);
        driver.on_tick().unwrap(); // a HEARTBEAT finds the stream closed
        assert!(driver.pending.is_empty(), "{:?}", driver.pending);
        assert!(!framework_connected(&driver));
    }

    #[test]
    fn allocation_run_ms_is_the_longest_tick_of_one_interval() {
        let (mut driver, _handle) = driver();
        assert_eq!(driver.ticks_per_allocation, 10);
        assert_eq!(driver.allocation_run_ms(), 0.0);
        driver
            .recent_ticks
            .extend([Duration::from_millis(3), Duration::from_micros(10)]);
        assert_eq!(driver.allocation_run_ms(), 3.0);
        for _ in 0..10 {
            driver.on_tick().unwrap();
        }
        assert_eq!(driver.recent_ticks.len(), 10);
        assert!(driver.allocation_run_ms() < 3.0);
    }

    /// A store whose disk is gone.
    struct BrokenStore;

    impl Store for BrokenStore {
        fn load(&mut self) -> Result<crate::core::Registry, StoreError> {
            Ok(Default::default())
        }
        fn apply(&mut self, _: &crate::core::RegistryOp) -> Result<(), StoreError> {
            Err(StoreError::Io {
                path: "registry.log".into(),
                source: std::io::Error::other("disk gone"),
            })
        }
    }

    /// A store that counts what it is asked to do; its syncs fail when `broken`.
    #[derive(Clone, Default)]
    struct CountingStore {
        appended: Arc<std::sync::Mutex<Vec<crate::core::RegistryOp>>>,
        syncs: Arc<AtomicU64>,
        broken: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Store for CountingStore {
        fn load(&mut self) -> Result<crate::core::Registry, StoreError> {
            Ok(Default::default())
        }
        fn apply(&mut self, op: &crate::core::RegistryOp) -> Result<(), StoreError> {
            self.append(op)?;
            self.sync()
        }
        fn append(&mut self, op: &crate::core::RegistryOp) -> Result<bool, StoreError> {
            self.appended.lock().unwrap().push(op.clone());
            Ok(true)
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Io {
                    path: "registry.log".into(),
                    source: std::io::Error::other("disk gone"),
                });
            }
            Ok(())
        }
    }

    /// Queues `n` new agents' registrations; returns their streams' receivers.
    async fn queue_registrations(
        handle: &DriverHandle,
        n: usize,
    ) -> Vec<mpsc::Receiver<v1::MasterMessage>> {
        let resources = strata_proto::Resources::parse("cpus:1;mem:128")
            .unwrap()
            .to_proto();
        let mut streams = Vec::new();
        for i in 0..n {
            let (messages, rx) = mpsc::channel(16);
            let register = v1::Register {
                agent_info: Some(v1::AgentInfo {
                    hostname: format!("node{i}"),
                    resources: resources.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            handle
                .send(Command::AgentAttach {
                    conn: handle.next_conn(),
                    register,
                    peer: None,
                    messages,
                })
                .await
                .unwrap();
            streams.push(rx);
        }
        streams
    }

    fn is_registered(m: &v1::MasterMessage) -> bool {
        matches!(m.message, Some(v1::master_message::Message::Registered(_)))
    }

    #[tokio::test]
    async fn a_batch_of_registrations_costs_one_sync() {
        let store = CountingStore::default();
        let core = core::Master::new(
            CoreConfig {
                master_id: "m1".into(),
                ..CoreConfig::default()
            },
            Registry::default(),
            Instant::now(),
        );
        let (mut driver, handle) =
            CoreDriver::new(core, Box::new(store.clone()), Duration::from_secs(1));
        let mut streams = queue_registrations(&handle, 10).await;
        let first = driver.commands.recv().await.unwrap();
        driver.on_batch(first).unwrap();
        assert_eq!(store.appended.lock().unwrap().len(), 10);
        assert_eq!(store.syncs.load(Ordering::SeqCst), 1);
        for rx in &mut streams {
            assert!(is_registered(&rx.try_recv().unwrap()));
        }
        assert!(driver.held.is_empty() && !driver.unsynced);
    }

    #[tokio::test]
    async fn nothing_that_follows_an_op_goes_out_before_the_op_is_durable() {
        let store = CountingStore::default();
        store.broken.store(true, Ordering::SeqCst);
        let core = core::Master::new(
            CoreConfig {
                master_id: "m1".into(),
                ..CoreConfig::default()
            },
            Registry::default(),
            Instant::now(),
        );
        let (mut driver, handle) =
            CoreDriver::new(core, Box::new(store.clone()), Duration::from_secs(1));
        let mut streams = queue_registrations(&handle, 3).await;
        let first = driver.commands.recv().await.unwrap();
        let err = driver.on_batch(first).unwrap_err();
        assert!(matches!(err, DriverError::Store(_)), "{err}");
        assert_eq!(store.appended.lock().unwrap().len(), 3);
        for rx in &mut streams {
            assert!(
                rx.try_recv().is_err(),
                "Registered sent before its op was durable"
            );
        }
    }

    #[tokio::test]
    async fn a_call_is_answered_once_what_it_persisted_is_durable() {
        let store = CountingStore::default();
        let core = core::Master::new(
            CoreConfig {
                master_id: "m1".into(),
                ..CoreConfig::default()
            },
            Registry::default(),
            Instant::now(),
        );
        let (mut driver, _handle) =
            CoreDriver::new(core, Box::new(store.clone()), Duration::from_secs(1));
        let (header, _events) = subscribe(&mut driver);
        assert_eq!(store.syncs.load(Ordering::SeqCst), 1, "AddFramework synced");
        // TEARDOWN persists RemoveFramework; its sync fails: no answer goes out.
        store.broken.store(true, Ordering::SeqCst);
        let (reply, result) = oneshot::channel();
        let call = Call::Teardown(v1::TeardownRequest {
            header: Some(header.clone()),
        });
        let err = driver
            .on_command(Command::Call {
                header,
                call,
                reply,
            })
            .unwrap_err();
        assert!(matches!(err, DriverError::Store(_)), "{err}");
        assert!(matches!(
            store.appended.lock().unwrap().last(),
            Some(crate::core::RegistryOp::RemoveFramework { .. })
        ));
        drop(driver);
        assert!(result.await.is_err(), "answered before the op was durable");
    }

    #[test]
    fn a_failed_registry_write_stops_the_driver() {
        let (mut driver, _handle) = driver();
        driver.store = Box::new(BrokenStore);
        let op = crate::core::RegistryOp::RemoveAgent { id: "a1".into() };
        let err = driver
            .carry_out_effects(vec![core::Effect::Persist(op)])
            .unwrap_err();
        assert!(
            matches!(err, DriverError::Store(StoreError::Io { .. })),
            "{err}"
        );
    }
}
