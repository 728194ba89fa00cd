//! The master's state machine: owns agents, frameworks, tasks, offers and the
//! allocator, and turns each [`Input`] into [`Effect`]s.
//!
//! ```text
//!   handle(input, now)
//!     Subscribe / FrameworkDisconnected ──▶ frameworks.rs
//!     AgentRegister / AgentMessage / AgentDisconnected ──▶ agents.rs, tasks.rs
//!     Call ──header check──▶ offers.rs (ACCEPT, DECLINE), calls.rs, reconcile.rs
//!     Tick ──▶ agent health, framework failover, filter and offer expiry,
//!              heartbeats, allocation (batch every interval, prompt for new resources)
//!   take_effects() ──▶ messages to send and registry records, in order
//! ```
//!
//! The behaviour lives in the sibling modules as further `impl Master` blocks; this
//! file holds the state, the dispatch and the timers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use strata_proto::v1;

use super::allocator::{AgentKey, Allocator, DrfAllocator, FrameworkKey};
use super::api::*;
use super::codec::decode_framework_info;
use super::fastmap::FastMap;
use super::registry::{REMOVED_FRAMEWORKS, Registry, RegistryOp};
use super::rng::Rng;
use super::state::{Agent, AgentStatus, Counters, Framework, Offer, OfferSeq, Task};
use super::validate::{check_call_limits, duration_from_secs, validate_roles};

/// `now + d`, saturating far in the future instead of panicking on overflow (for
/// absurdly large configured or requested durations).
pub(super) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(1 << 32)))
        .unwrap_or(now)
}

/// How many terminal tasks are kept for `/state`.
pub const COMPLETED_TASKS: usize = 1000;
/// Agent health is checked at most this often.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The master's state machine. See the module docs of `core`.
pub struct Master {
    pub(super) config: CoreConfig,
    pub(super) effects: Vec<Effect>,
    pub(super) rng: Rng,
    pub(super) allocator: Box<dyn Allocator>,
    /// `now` at construction and the Unix time it stands for: the core's only idea
    /// of wall-clock time (status timestamps, registration times).
    pub(super) clock_start: Instant,
    pub(super) unix_at_start: f64,

    /// By key; iterate in key order (sorted) wherever order reaches the effects.
    pub(super) agents: FastMap<AgentKey, Agent>,
    pub(super) agent_ids: HashMap<String, AgentKey>,
    pub(super) agent_conns: HashMap<ConnId, AgentKey>,
    next_agent_key: u32,

    pub(super) frameworks: BTreeMap<FrameworkKey, Framework>,
    pub(super) framework_ids: HashMap<String, FrameworkKey>,
    pub(super) framework_conns: HashMap<ConnId, FrameworkKey>,
    next_framework_key: u32,
    pub(super) removed_frameworks: HashSet<String>,
    /// Principals of agents an operator marked gone: they register no more.
    pub(super) revoked_principals: HashSet<String>,
    /// The agent id each authenticated agent principal registered: one certificate,
    /// one agent.
    pub(super) principal_agents: HashMap<String, String>,
    /// Implicit reconciliations still being answered, by framework.
    pub(super) reconciling: BTreeMap<FrameworkKey, super::reconcile::Cursor>,
    /// Whether changes are recorded for the operator event stream, and those not
    /// taken yet (see [`super::observe`]).
    pub(super) observed: bool,
    pub(super) observe_all: bool,
    pub(super) observations: Vec<super::observe::Observed>,
    pub(super) observed_total: u64,
    /// Kills of service instances held until every service proxy has taken the
    /// instance out of rotation (see [`super::drain`]).
    pub(super) held_kills: Vec<super::drain::HeldKill>,
    /// Configs and secrets (secrets sealed), by registry key (see [`super::objects`]).
    pub(super) objects: BTreeMap<String, super::registry::ObjectRecord>,
    /// The last version of each removed object (see `Registry::object_tombstones`).
    pub(super) object_tombstones: BTreeMap<String, u64>,
    removed_order: VecDeque<String>,

    pub(super) offers: FastMap<OfferSeq, Offer>,
    /// Offer ids are `<offer_prefix><seq>`.
    pub(super) offer_prefix: String,
    pub(super) next_offer: OfferSeq,
    /// Offer creation times, oldest first (only with an offer timeout).
    pub(super) offer_expiry: VecDeque<(Instant, OfferSeq)>,
    /// Recent terminal tasks, oldest first.
    pub(super) completed: VecDeque<Task>,
    pub(super) counters: Counters,

    /// When the next batch allocation runs.
    pub(super) next_allocation: Instant,
    /// Run a full allocation at the next Tick (a framework subscribed or revived).
    pub(super) allocate_all: bool,
    /// Agents whose free resources grew: allocated at the next Tick.
    pub(super) pending_agents: BTreeSet<AgentKey>,
    next_health_check: Instant,
}

impl Master {
    /// A master that starts from `registry` (what the previous run persisted).
    pub fn new(config: CoreConfig, registry: Registry, now: Instant) -> Master {
        let mut rng = Rng::from_seed_str(&config.master_id);
        let allocator = Box::new(DrfAllocator::new(config.weights.clone(), rng.next_u64()));
        Master::with_allocator(config, registry, now, allocator)
    }

    /// Like [`Master::new`], with another allocator implementation.
    pub fn with_allocator(
        config: CoreConfig,
        registry: Registry,
        now: Instant,
        allocator: Box<dyn Allocator>,
    ) -> Master {
        let mut rng = Rng::from_seed_str(&config.master_id);
        rng.next_u64(); // the allocator's seed
        let next_allocation = after(now, config.allocation_interval);
        let offer_prefix = if config.master_id.is_empty() {
            "O".to_string()
        } else {
            format!("{}-O", config.master_id)
        };
        let mut master = Master {
            config,
            effects: Vec::new(),
            rng,
            allocator,
            clock_start: now,
            unix_at_start: strata_proto::now_unix_seconds(),
            agents: FastMap::default(),
            agent_ids: HashMap::new(),
            agent_conns: HashMap::new(),
            next_agent_key: 0,
            frameworks: BTreeMap::new(),
            framework_ids: HashMap::new(),
            framework_conns: HashMap::new(),
            next_framework_key: 0,
            removed_frameworks: HashSet::new(),
            revoked_principals: HashSet::new(),
            principal_agents: HashMap::new(),
            reconciling: BTreeMap::new(),
            observed: false,
            observe_all: false,
            observations: Vec::new(),
            observed_total: 0,
            held_kills: Vec::new(),
            objects: BTreeMap::new(),
            object_tombstones: BTreeMap::new(),
            removed_order: VecDeque::new(),
            offers: FastMap::default(),
            offer_prefix,
            next_offer: 0,
            offer_expiry: VecDeque::new(),
            completed: VecDeque::new(),
            counters: Counters::default(),
            next_allocation,
            allocate_all: false,
            pending_agents: BTreeSet::new(),
            next_health_check: now,
        };
        master.recover_registry(registry, now);
        master
    }

    /// Anchors the core's wall clock: `now` stands for `unix` seconds. The driver need
    /// not call it (construction reads the system clock once); tests do, to get
    /// reproducible timestamps.
    pub fn set_unix_time(&mut self, unix: f64, now: Instant) {
        self.clock_start = now;
        self.unix_at_start = unix;
    }

    /// Feeds one input; effects accumulate until [`Master::take_effects`].
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), CallError> {
        match input {
            Input::Subscribe { conn, request } => self.subscribe(conn, request, now),
            Input::FrameworkDisconnected { conn } => self.framework_disconnected(conn, now),
            Input::AgentRegister {
                conn,
                register,
                peer,
            } => self.agent_register(conn, register, peer, now),
            Input::AgentMessage { conn, message } => self.agent_message(conn, message, now),
            Input::AgentDisconnected { conn } => self.agent_disconnected(conn, now),
            Input::Call { header, call } => {
                let result = self.call(&header, call, now);
                if let Err(e) = &result {
                    self.counters.calls_refused += 1;
                    tracing::debug!(framework_id = %strata_proto::limits::shown(&header.framework_id), error = %e, "call refused");
                }
                return result;
            }
            Input::Operator(call) => {
                let result = self.operator(call, now);
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "operator call refused");
                }
                return result;
            }
            Input::Tick => {
                self.tick(now);
                self.continue_reconciliations(now);
                self.release_kills(None, now);
            }
            Input::ServicesSynced { seq } => self.release_kills(Some(seq), now),
            Input::Continue => self.continue_reconciliations(now),
        }
        Ok(())
    }

    /// Whether an input left work for [`Input::Continue`].
    pub fn has_pending_work(&self) -> bool {
        !self.reconciling.is_empty()
    }

    /// The effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        // Start the next batch with room for as many: busy masters emit in bulk.
        let room = self.effects.len().min(4096);
        std::mem::replace(&mut self.effects, Vec::with_capacity(room))
    }

    /// The allocator, for inspection.
    pub fn allocator(&self) -> &dyn Allocator {
        self.allocator.as_ref()
    }

    fn call(&mut self, header: &v1::CallHeader, call: Call, now: Instant) -> Result<(), CallError> {
        check_call_limits(header, &call)?;
        let fk = self.check_header(header)?;
        match call {
            Call::Accept(r) => self.accept(fk, r, now),
            Call::Decline(r) => self.decline(fk, r, now),
            Call::Revive(r) => self.revive(fk, r),
            Call::Suppress(r) => self.suppress(fk, r),
            Call::Kill(r) => self.kill(fk, r, now),
            Call::Acknowledge(r) => self.acknowledge(fk, r),
            Call::Reconcile(r) => self.reconcile(fk, r, now),
            Call::Message(r) => self.message(fk, r),
            Call::Teardown(_) => {
                self.remove_framework(fk, now, true);
                Ok(())
            }
        }
    }

    /// The framework a call comes from, if it names a subscribed framework and its
    /// current stream.
    fn check_header(&self, header: &v1::CallHeader) -> Result<FrameworkKey, CallError> {
        let fk = self
            .framework_ids
            .get(&header.framework_id)
            .copied()
            .ok_or_else(|| CallError::UnknownFramework(header.framework_id.clone()))?;
        let fw = self
            .frameworks
            .get(&fk)
            .ok_or_else(|| CallError::UnknownFramework(header.framework_id.clone()))?;
        match &fw.subscription {
            Some(s) if s.stream_id == header.stream_id => Ok(fk),
            _ => Err(CallError::StaleStream {
                framework_id: header.framework_id.clone(),
                got: header.stream_id.clone(),
            }),
        }
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.next_health_check {
            self.next_health_check = now + HEALTH_CHECK_EVERY;
            self.check_agent_health(now);
        }
        self.check_failovers(now);
        self.allocator.expire_filters(now);
        self.expire_offers(now);
        self.send_heartbeats(now);
        self.maybe_allocate(now);
    }

    fn send_heartbeats(&mut self, now: Instant) {
        let interval = self.config.framework_heartbeat_interval;
        let mut due = Vec::new();
        for fw in self.frameworks.values_mut() {
            if let Some(sub) = &fw.subscription
                && now >= fw.next_heartbeat
            {
                fw.next_heartbeat = after(now, interval);
                due.push(sub.conn);
            }
        }
        for conn in due {
            self.event_on(conn, v1::event::Event::Heartbeat(v1::Heartbeat {}));
        }
    }

    // ---- small shared helpers ----

    pub(super) fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub(super) fn event_on(&mut self, conn: ConnId, event: v1::event::Event) {
        self.effects.push(Effect::ToFramework {
            conn,
            event: v1::Event { event: Some(event) },
        });
    }

    /// Sends an event to a framework if it is connected; otherwise drops it.
    pub(super) fn event_to(&mut self, fk: FrameworkKey, event: v1::event::Event) {
        if let Some(conn) = self.frameworks.get(&fk).and_then(Framework::conn) {
            self.event_on(conn, event);
        }
    }

    pub(super) fn message_on(&mut self, conn: ConnId, message: v1::master_message::Message) {
        self.effects.push(Effect::ToAgent {
            conn,
            message: v1::MasterMessage {
                message: Some(message),
            },
        });
    }

    /// Sends a message to an agent if it is connected; returns whether it was sent.
    pub(super) fn message_to(
        &mut self,
        ak: AgentKey,
        message: v1::master_message::Message,
    ) -> bool {
        match self
            .agents
            .get(&ak)
            .filter(|a| a.is_connected())
            .and_then(|a| a.conn)
        {
            Some(conn) => {
                self.message_on(conn, message);
                true
            }
            None => false,
        }
    }

    pub(super) fn unix(&self, now: Instant) -> f64 {
        self.unix_at_start
            + now
                .saturating_duration_since(self.clock_start)
                .as_secs_f64()
    }

    pub(super) fn new_agent_key(&mut self) -> AgentKey {
        self.next_agent_key += 1;
        AgentKey(self.next_agent_key)
    }

    pub(super) fn new_framework_key(&mut self) -> FrameworkKey {
        self.next_framework_key += 1;
        FrameworkKey(self.next_framework_key)
    }

    pub(super) fn remember_removed(&mut self, id: String) {
        if self.removed_frameworks.insert(id.clone()) {
            self.removed_order.push_back(id);
            while self.removed_order.len() > REMOVED_FRAMEWORKS {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed_frameworks.remove(&old);
                }
            }
        }
    }

    /// How long a recovered framework (from the registry or from an agent's tasks) has
    /// to re-subscribe before it is removed.
    pub(super) fn recovered_failover(&self, info: &v1::FrameworkInfo) -> Duration {
        duration_from_secs(info.failover_timeout_seconds).max(self.config.agent_reregister_timeout)
    }

    /// Loads what the previous run persisted: agents to wait for, unreachable agents,
    /// frameworks to wait for, operators' weights and maintenance.
    fn recover_registry(&mut self, mut registry: Registry, now: Instant) {
        self.objects = std::mem::take(&mut registry.objects);
        self.object_tombstones = std::mem::take(&mut registry.object_tombstones);
        // Set at runtime after the flag was: they win over `--weights`.
        for (role, weight) in &registry.weights {
            self.set_weight(role, *weight);
        }
        for (id, hostname) in &registry.agents {
            let unreachable = registry.unreachable.contains_key(id);
            let key = self.new_agent_key();
            let status = if unreachable {
                AgentStatus::Unreachable
            } else {
                AgentStatus::Recovering
            };
            let deadline = (!unreachable).then(|| after(now, self.config.agent_reregister_timeout));
            self.agents.insert(
                key,
                Agent::placeholder(key, id.clone(), hostname.clone(), status, now, deadline),
            );
            self.agent_ids.insert(id.clone(), key);
        }
        for id in registry
            .unreachable
            .keys()
            .filter(|id| !registry.agents.contains_key(*id))
        {
            let key = self.new_agent_key();
            let agent = Agent::placeholder(
                key,
                id.clone(),
                String::new(),
                AgentStatus::Unreachable,
                now,
                None,
            );
            self.agents.insert(key, agent);
            self.agent_ids.insert(id.clone(), key);
        }
        for id in &registry.gone {
            let key = self.new_agent_key();
            let agent =
                Agent::placeholder(key, id.clone(), String::new(), AgentStatus::Gone, now, None);
            self.agents.insert(key, agent);
            self.agent_ids.insert(id.clone(), key);
        }
        for (id, principal) in &registry.agent_principals {
            if let Some(agent) = self.agent_ids.get(id).and_then(|k| self.agents.get_mut(k)) {
                agent.principal = principal.clone();
                self.principal_agents.insert(principal.clone(), id.clone());
                if agent.status == AgentStatus::Gone {
                    self.revoked_principals.insert(principal.clone());
                }
            }
        }
        for (id, bytes) in &registry.agent_resources {
            let Some(agent) = self.agent_ids.get(id).and_then(|k| self.agents.get_mut(k)) else {
                continue;
            };
            match super::volumes::Checkpointed::decode(bytes) {
                Ok(ledger) => agent.checkpointed = ledger,
                Err(e) => {
                    tracing::error!(agent_id = %id, error = %e,
                        "the registry's reservations and volumes of this agent are unreadable; it keeps its own copy when it registers")
                }
            }
        }
        for (id, maintenance) in &registry.maintenance {
            if let Some(agent) = self.agent_ids.get(id).and_then(|k| self.agents.get_mut(k)) {
                agent.maintenance = Some(*maintenance);
            }
        }
        for id in &registry.removed_frameworks {
            self.remember_removed(id.clone());
        }
        for (id, bytes) in &registry.frameworks {
            let mut info = match decode_framework_info(bytes) {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(framework_id = %id, error = %e, "skipping unreadable framework in the registry");
                    v1::FrameworkInfo::default()
                }
            };
            info.id = id.clone();
            self.add_recovered_framework(info, now);
        }
        for lost in &registry.lost_tasks {
            let (Some(&fk), Some(&ak)) = (
                self.framework_ids.get(&lost.framework_id),
                self.agent_ids.get(&lost.agent_id),
            ) else {
                continue;
            };
            if let Some(fw) = self.frameworks.get_mut(&fk) {
                fw.lost.insert(&lost.task_id, ak);
            }
        }
    }

    /// Notes that `task_id` of `fk`, on `ak`, is one its framework was told is LOST
    /// (see [`super::state::LostTasks`]), in memory and in the registry.
    pub(super) fn mark_task_lost(&mut self, fk: FrameworkKey, task_id: &str, ak: AgentKey) {
        let Some(fw) = self.frameworks.get_mut(&fk) else {
            return;
        };
        fw.lost.insert(task_id, ak);
        let framework_id = fw.id.clone();
        if let Some(agent) = self.agents.get(&ak) {
            let op = RegistryOp::MarkTaskLost {
                framework_id,
                task_id: task_id.to_string(),
                agent_id: agent.id.clone(),
            };
            self.emit(Effect::Persist(op));
        }
    }

    /// Adds a framework this master knows of but that has not subscribed to it.
    pub(super) fn add_recovered_framework(
        &mut self,
        mut info: v1::FrameworkInfo,
        now: Instant,
    ) -> FrameworkKey {
        let roles = validate_roles(&info.roles).unwrap_or_else(|_| vec!["*".to_string()]);
        info.roles = roles.clone();
        let key = self.new_framework_key();
        let deadline = after(now, self.recovered_failover(&info));
        let fw = Framework::new(key, info, roles.clone(), None, Some(deadline), now);
        self.framework_ids.insert(fw.id.clone(), key);
        self.frameworks.insert(key, fw);
        self.allocator.add_framework(key, &roles, &[], false);
        key
    }
}

impl Agent {
    pub(super) fn placeholder(
        key: AgentKey,
        id: String,
        hostname: String,
        status: AgentStatus,
        now: Instant,
        reregister_deadline: Option<Instant>,
    ) -> Agent {
        Agent {
            key,
            id,
            hostname,
            principal: String::new(),
            address: String::new(),
            attributes: Vec::new(),
            total: Default::default(),
            status,
            conn: None,
            last_seen: now,
            reregister_deadline,
            registered_unix: 0.0,
            offers: BTreeSet::new(),
            tasks: BTreeSet::new(),
            used: Default::default(),
            maintenance: None,
            checkpointed: Default::default(),
            volume_usage: Default::default(),
        }
    }
}

impl Framework {
    pub(super) fn new(
        key: FrameworkKey,
        info: v1::FrameworkInfo,
        roles: Vec<String>,
        subscription: Option<super::state::Subscription>,
        failover_deadline: Option<Instant>,
        now: Instant,
    ) -> Framework {
        let partition_aware = info
            .capabilities
            .contains(&(v1::FrameworkCapability::PartitionAware as i32));
        Framework {
            key,
            id: info.id.clone(),
            info,
            roles,
            partition_aware,
            subscription,
            failover_deadline,
            suppressed: BTreeSet::new(),
            tasks: BTreeMap::new(),
            ended: Default::default(),
            lost: Default::default(),
            offers: BTreeSet::new(),
            used: Default::default(),
            next_heartbeat: now,
        }
    }
}
