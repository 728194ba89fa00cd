//! A deterministic simulation of the master core: thousands of simulated agents and
//! three to five frameworks, with faults, driven by a seed, checking invariants after
//! every step.
//!
//! ```text
//!   seed ─▶ Rng ─▶ step: tick (time advances) │ deliver in-flight agent messages
//!                        agent work (tasks start, end) │ frameworks answer offers
//!                        acks, kills, reconciliation │ faults ─▶ Master::handle(input, now)
//!                                                              │
//!   model agents, model frameworks ◀── effects (messages, offers, updates, registry)
//!        └──────────── invariants checked after every step ◀──┘
//! ```
//!
//! The world: `N` agents (2,000 by default) of four sizes and 3–5 frameworks (3 plus
//! the seed modulo 3) with different roles, weights, failover timeouts, and with and
//! without the PARTITION_AWARE and TASK_KILLING_STATE capabilities. The core runs with
//! short timeouts (agent ping 5 s × 3, agent re-register 30 s, offer timeout 90 s) and
//! simulated time, so heartbeat timeouts, offer timeouts, decline filters, agent
//! re-register timeouts (after a master restart) and framework failover timeouts fire.
//!
//! Agents are modelled after `strata-agent` (`agent/src/tasks.rs`, `updates.rs`): each
//! task has one queue of status updates; only its head is in flight, resent on a
//! backed-off timer and after every (re-)registration, and the next update goes out
//! once the head is acknowledged. A task is reported at registration (with its latest
//! state) until it has ended and its last update is acknowledged. A kill of an unknown
//! task is answered TASK_LOST; ShutdownFramework ends the framework's tasks at once
//! (a zero grace period: the core gives a removed framework's resources back at once).
//! Master messages reach an agent as soon as they are sent (a stream is ordered and
//! reliable while it lasts), except that a paused agent reads them when it wakes up and
//! loses them if the master closed its stream meanwhile. Agents never restart (lose
//! their tasks) and keep their resources.
//!
//! Faults: agents paused (silent: no heartbeats, no work, master messages buffered;
//! past the ping timeout the master marks them unreachable and closes their stream, so
//! they come back by re-registering with their tasks), agent streams broken and
//! re-opened, master restarts (a new master from the registry the old one persisted;
//! agents and frameworks come back at random times, some after the re-register
//! timeout), frameworks disconnecting and re-subscribing within and after their
//! failover timeout, fail-overs to a new scheduler instance while the old stream is
//! open, zombie calls on an old stream, TEARDOWN, status updates duplicated, delayed and
//! reordered (agent messages travel through an in-flight pool delivered in random
//! order; old updates are sometimes delivered again much later), accepts naming
//! rescinded or used offers, offers of two agents, tasks too big or reusing a live id,
//! kills and reconciliation of unknown tasks, lost acknowledgements.
//!
//! Invariants, after every step:
//! - the core's own `Master::check_invariants` (free + offered + used == total on
//!   every agent, every index agrees), and the checks below that are per agent: for
//!   the agents the step touched (named by its inputs and effects), and for all agents
//!   and frameworks every [`FULL_CHECK_EVERY`] steps and after a master restart;
//! - offers: no offer id is ever sent twice; a RESCIND names an offer its framework
//!   holds; events only reach a framework's current stream; each framework holds
//!   exactly the offers the master has outstanding for it; and on every agent the
//!   outstanding offers (to all frameworks, as the frameworks see them) plus what its
//!   tasks really use (the agent model) fit in its total;
//! - capacity: on every agent the master's live tasks, and the tasks the agent really
//!   runs, fit in its total;
//! - one terminal state per task, as each framework sees it: an update repeated with
//!   the same uuid carries the same state; after a terminal state only that same state
//!   may come again (retries, reconciliation). TASK_LOST too, for frameworks that
//!   are not partition aware: if the agent comes back the master kills the task and
//!   keeps its updates from the framework.
//!
//! At the end of each walk everything heals (agents resume and reconnect, frameworks
//! re-subscribe, in-flight messages arrive, kills complete, acknowledgements flow)
//! and then: no update is left unacknowledged anywhere, the master's live tasks are
//! exactly the agents' live tasks (same agent, same state), every task a framework
//! believes live is live and every task it saw end is gone.
//!
//! The same seed replays the same walk: one `Rng` drives every choice, the model
//! keeps everything in ordered maps, and time is simulated (`Sim::now`);
//! `the_same_seed_replays_the_same_walk` checks it on a digest of every effect.
//! `simulation_ten_thousand_steps` runs 5 seeds × 2,000 steps over 2,000 agents, the
//! seeds shared out over the machine's cores (each walk runs on one thread). A failure
//! prints the seed, the step, the error (with what the master and the agent model
//! hold for the agents and the task it names), the last steps, and the command that
//! replays it. Environment overrides for longer runs:
//!
//! - `STRATA_SIM_SEED=n`: run only this seed;
//! - `STRATA_SIM_SEEDS=n`: run seeds 1..=n (default 5);
//! - `STRATA_SIM_STEPS=n`: steps per seed (default 2,000);
//! - `STRATA_SIM_AGENTS=n`: agents (default 2,000).
//!
//! e.g. `STRATA_SIM_SEEDS=50 STRATA_SIM_STEPS=20000 cargo test --release -p
//! strata-master --lib core::tests::sim -- --nocapture` (`--nocapture` shows what
//! each walk did). Small worlds with long walks (`STRATA_SIM_AGENTS=5
//! STRATA_SIM_STEPS=20000`) pile the faults onto the same few agents and tasks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use strata_proto::states::state_from_i32;
use strata_proto::v1::{TaskState, TaskStatusReason, TaskStatusSource};
use strata_proto::{Resources, is_terminal};

use super::super::allocator::AgentKey;
use super::super::rng::Rng;
use super::*;

const DEFAULT_SEEDS: u64 = 5;
const DEFAULT_STEPS: usize = 2_000;
const DEFAULT_AGENTS: usize = 2_000;
/// How many of the latest steps a failure prints.
const TAIL: usize = 15;
/// Every this many steps (and after a master restart) the invariants are checked on
/// every agent and framework, not only on the agents the step touched.
const FULL_CHECK_EVERY: usize = 250;

/// The agents' heartbeat interval (the master's ping timeout).
const PING: Duration = Duration::from_secs(5);
/// First retry interval of an unacknowledged update, and its cap.
const RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// In-flight agent messages older than this are delivered at the next tick.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// How many settle rounds (one simulated second each) the end of a walk may take.
const SETTLE_ROUNDS: usize = 400;

fn sim_config(seed: u64, generation: u32) -> CoreConfig {
    let weights = [("web", 3.0), ("batch", 1.0), ("analytics", 0.5)]
        .into_iter()
        .map(|(r, w)| (r.to_string(), w))
        .collect();
    CoreConfig {
        master_id: format!("sim{seed}-m{generation}"),
        allocation_interval: Duration::from_secs(1),
        framework_heartbeat_interval: Duration::from_secs(15),
        agent_ping_timeout: PING,
        max_agent_ping_timeouts: 3,
        agent_reregister_timeout: Duration::from_secs(30),
        default_refuse: Duration::from_secs(5),
        weights,
        offer_timeout: Some(Duration::from_secs(90)),
    }
}

/// The frameworks of the world; a walk uses the first 3 + seed % 3.
struct FrameworkSpec {
    name: &'static str,
    roles: &'static [&'static str],
    partition_aware: bool,
    killing_state: bool,
    failover: f64,
}

const FRAMEWORKS: [FrameworkSpec; 5] = [
    FrameworkSpec {
        name: "web",
        roles: &["web"],
        partition_aware: true,
        killing_state: true,
        failover: 60.0,
    },
    FrameworkSpec {
        name: "batch",
        roles: &["batch"],
        partition_aware: false,
        killing_state: false,
        failover: 20.0,
    },
    FrameworkSpec {
        name: "cron",
        roles: &[],
        partition_aware: false,
        killing_state: false,
        failover: 5.0,
    },
    FrameworkSpec {
        name: "analytics",
        roles: &["analytics", "batch"],
        partition_aware: true,
        killing_state: false,
        failover: 10.0,
    },
    FrameworkSpec {
        name: "ml",
        roles: &["ml"],
        partition_aware: false,
        killing_state: true,
        failover: 0.0,
    },
];

const AGENT_SIZES: [&str; 4] = [
    "cpus:8;mem:16384",
    "cpus:4;mem:8192",
    "cpus:2;mem:4096",
    "cpus:16;mem:65536;ports:[31000-31999]",
];

type TaskKey = (String, String); // (framework id, task id)

// ---- the agent model ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Launching,
    Running,
    Killing,
    Terminated,
}

struct AgentTask {
    framework: v1::FrameworkInfo,
    info: v1::TaskInfo,
    resources: Resources,
    phase: Phase,
    /// The latest state the agent reported.
    state: TaskState,
    kill: bool,
}

struct UpdateQueue {
    pending: VecDeque<v1::TaskStatus>,
    retry_at: Instant,
    backoff: Duration,
}

struct ModelAgent {
    /// Its id is empty until the first registration.
    info: v1::AgentInfo,
    total: Resources,
    /// The stream the agent believes it has.
    conn: Option<ConnId>,
    /// Paused (silent) until then: no heartbeats, no work, master messages buffered.
    paused_until: Option<Instant>,
    inbox: Vec<v1::MasterMessage>,
    reconnect_at: Option<Instant>,
    next_heartbeat: Instant,
    tasks: BTreeMap<TaskKey, AgentTask>,
    updates: BTreeMap<TaskKey, UpdateQueue>,
    /// Tasks forgotten (ended, last update acknowledged).
    completed: BTreeSet<TaskKey>,
}

impl ModelAgent {
    fn active(&self) -> bool {
        self.conn.is_some() && self.paused_until.is_none()
    }

    fn running_tasks(&self) -> Vec<v1::RunningTask> {
        self.tasks
            .iter()
            .map(|((fw_id, _), t)| v1::RunningTask {
                framework_id: fw_id.clone(),
                task: Some(t.info.clone()),
                state: t.state as i32,
                framework: Some(t.framework.clone()),
            })
            .collect()
    }

    /// What its tasks really use (tasks of removed frameworks are being shut down and
    /// do not count: the master gave their resources back already).
    fn live_resources(&self, removed: &BTreeSet<String>) -> Resources {
        let mut sum = Resources::new();
        for ((fw_id, _), t) in &self.tasks {
            if t.phase != Phase::Terminated && !removed.contains(fw_id) {
                sum.add(&t.resources);
            }
        }
        sum
    }
}

/// An agent message on its way to the master.
#[derive(Clone)]
struct InFlight {
    conn: ConnId,
    agent: usize,
    status: v1::TaskStatus,
    sent: Instant,
}

// ---- the framework model ----

/// What a framework has seen of one task (the checker of "one terminal state").
#[derive(Debug, Default)]
struct TaskView {
    /// Launched by an ACCEPT of this framework (not a made-up id it killed or asked
    /// about).
    launched: bool,
    agent_id: String,
    /// Every uuid seen, with the state it carried.
    uuids: BTreeMap<String, TaskState>,
    last: Option<TaskState>,
    /// The final terminal state: only it may come again.
    ended: Option<TaskState>,
    /// The latest updates, for failure reports.
    history: VecDeque<String>,
}

impl TaskView {
    /// A task the framework launched and has not seen end.
    fn believed_live(&self) -> bool {
        self.launched && self.ended.is_none() && self.last.is_none_or(|s| !is_terminal(s))
    }
}

struct ModelFramework {
    spec: &'static FrameworkSpec,
    info: v1::FrameworkInfo,
    /// Empty until subscribed; a new one after the framework was removed.
    id: String,
    incarnation: u32,
    sub: Option<SimFramework>,
    /// Old subscriptions, for zombie calls.
    stale: Vec<SimFramework>,
    /// The last Subscribe was refused.
    refused: bool,
    reconnect_at: Option<Instant>,
    offers: BTreeMap<String, (usize, Resources)>,
    /// Offer ids used, declined or rescinded lately: for stale ACCEPTs.
    spent: VecDeque<String>,
    /// (agent id, task id, uuid) of updates to acknowledge.
    acks: Vec<(String, String, String)>,
    tasks: BTreeMap<String, TaskView>,
    next_task: u64,
    suppressed: bool,
}

impl ModelFramework {
    fn name(&self) -> String {
        format!("{}#{}", self.spec.name, self.incarnation)
    }
}

/// What one walk did, for the summary and to check the walks exercise every fault.
#[derive(Debug, Default, Clone)]
struct Stats {
    steps: usize,
    simulated_secs: u64,
    tasks_launched: u64,
    updates_seen: u64,
    duplicate_updates: u64,
    offers: u64,
    rescinds: u64,
    unreachable: u64,
    agents_paused: u64,
    agents_disconnected: u64,
    framework_disconnects: u64,
    frameworks_removed: u64,
    master_restarts: u64,
    stale_accepts: u64,
    settle_rounds: u64,
    agent_checks: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.simulated_secs += o.simulated_secs;
        self.tasks_launched += o.tasks_launched;
        self.updates_seen += o.updates_seen;
        self.duplicate_updates += o.duplicate_updates;
        self.offers += o.offers;
        self.rescinds += o.rescinds;
        self.unreachable += o.unreachable;
        self.agents_paused += o.agents_paused;
        self.agents_disconnected += o.agents_disconnected;
        self.framework_disconnects += o.framework_disconnects;
        self.frameworks_removed += o.frameworks_removed;
        self.master_restarts += o.master_restarts;
        self.stale_accepts += o.stale_accepts;
        self.settle_rounds += o.settle_rounds;
        self.agent_checks += o.agent_checks;
    }
}

struct World {
    seed: u64,
    rng: Rng,
    sim: Sim,
    start: Instant,
    generation: u32,
    /// The fold of everything the masters persisted.
    registry: Registry,
    agents: Vec<ModelAgent>,
    agent_by_conn: BTreeMap<ConnId, usize>,
    agent_by_id: BTreeMap<String, usize>,
    frameworks: Vec<ModelFramework>,
    fw_by_conn: BTreeMap<ConnId, usize>,
    in_flight: Vec<InFlight>,
    /// Updates sent lately, to deliver again much later (old duplicates).
    recent: VecDeque<InFlight>,
    /// Agents with tasks that have not ended.
    busy: BTreeSet<usize>,
    /// Every offer id ever sent.
    offer_ids: BTreeSet<String>,
    /// Outstanding offers per agent, as the frameworks hold them.
    offered: BTreeMap<usize, Resources>,
    /// Framework ids the master removed.
    removed: BTreeSet<String>,
    /// Agents touched by the current step.
    dirty: BTreeSet<usize>,
    full_check: bool,
    /// Task ids the current ACCEPT reuses on purpose: their refusals are not updates of
    /// the live task.
    reused_ids: BTreeSet<(usize, String)>,
    violation: Option<String>,
    next_uuid: u64,
    log: VecDeque<String>,
    stats: Stats,
    /// With `Some`, a digest of every effect (the replay test).
    trace: Option<u64>,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl World {
    fn new(seed: u64, agents: usize, trace: bool) -> World {
        let sim = Sim::with(sim_config(seed, 0), Registry::default());
        let start = sim.now;
        let mut w = World {
            seed,
            rng: Rng::new(seed),
            sim,
            start,
            generation: 0,
            registry: Registry::default(),
            agents: Vec::with_capacity(agents),
            agent_by_conn: BTreeMap::new(),
            agent_by_id: BTreeMap::new(),
            frameworks: Vec::new(),
            fw_by_conn: BTreeMap::new(),
            in_flight: Vec::new(),
            recent: VecDeque::new(),
            busy: BTreeSet::new(),
            offer_ids: BTreeSet::new(),
            offered: BTreeMap::new(),
            removed: BTreeSet::new(),
            dirty: BTreeSet::new(),
            full_check: true,
            reused_ids: BTreeSet::new(),
            violation: None,
            next_uuid: 0,
            log: VecDeque::new(),
            stats: Stats::default(),
            trace: trace.then_some(0xcbf2_9ce4_8422_2325),
        };
        for i in 0..agents {
            let hostname = format!("a{i}");
            let total = res(AGENT_SIZES[i % AGENT_SIZES.len()]);
            let info = v1::AgentInfo {
                id: String::new(),
                hostname: hostname.clone(),
                address: format!("{hostname}:5051"),
                resources: total.to_proto(),
                attributes: vec![v1::Attribute {
                    name: "rack".into(),
                    value: format!("r{}", i % 20),
                }],
            };
            w.agents.push(ModelAgent {
                info,
                total,
                conn: None,
                paused_until: None,
                inbox: Vec::new(),
                reconnect_at: None,
                next_heartbeat: start,
                tasks: BTreeMap::new(),
                updates: BTreeMap::new(),
                completed: BTreeSet::new(),
            });
            w.agent_register(i);
        }
        let count = 3 + (seed % 3) as usize;
        for spec in &FRAMEWORKS[..count] {
            let mut info = framework_info(spec.name, spec.roles, spec.partition_aware);
            if spec.killing_state {
                info.capabilities
                    .push(v1::FrameworkCapability::TaskKillingState as i32);
            }
            info.failover_timeout_seconds = spec.failover;
            w.frameworks.push(ModelFramework {
                spec,
                info,
                id: String::new(),
                incarnation: 0,
                sub: None,
                stale: Vec::new(),
                refused: false,
                reconnect_at: None,
                offers: BTreeMap::new(),
                spent: VecDeque::new(),
                acks: Vec::new(),
                tasks: BTreeMap::new(),
                next_task: 0,
                suppressed: false,
            });
            let fi = w.frameworks.len() - 1;
            w.framework_subscribe(fi);
        }
        w
    }

    // ---- plumbing ----

    fn now(&self) -> Instant {
        self.sim.now
    }

    fn unix(&self, now: Instant) -> f64 {
        1_000_000.0 + now.duration_since(self.start).as_secs_f64()
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below((hi - lo).max(1) as usize) as u64)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())])
    }

    fn violate(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    /// Feeds an input that must be accepted, then applies the effects to the model.
    fn input(&mut self, input: Input) {
        if let Err(e) = self.sim.handle(input) {
            self.violate(format!("input refused: {e}"));
        }
        self.absorb();
    }

    /// A scheduler call; its result is returned after the effects are applied.
    fn call(&mut self, fw: &SimFramework, call: Call) -> Result<(), CallError> {
        let r = self.sim.call(fw, call);
        self.absorb();
        r
    }

    fn expect_ok(&mut self, what: &str, r: Result<(), CallError>) {
        if let Err(e) = r {
            self.violate(format!("{what} refused: {e}"));
        }
    }

    // ---- effects ----

    fn absorb(&mut self) {
        for effect in self.sim.effects() {
            if let Some(h) = self.trace {
                self.trace = Some(fnv(h, format!("{effect:?}").as_bytes()));
            }
            match effect {
                Effect::ToFramework { conn, event } => {
                    if let Some(ev) = event.event {
                        self.framework_event(conn, ev);
                    }
                }
                Effect::CloseFramework { conn } => self.framework_closed(conn),
                Effect::ToAgent { conn, message } => self.master_to_agent(conn, message),
                Effect::CloseAgent { conn } => self.agent_closed(conn),
                Effect::Persist(op) => {
                    match &op {
                        RegistryOp::RemoveFramework { id } => {
                            self.removed.insert(id.clone());
                            self.stats.frameworks_removed += 1;
                            // Its tasks ended on the master: their agents changed.
                            for (i, a) in self.agents.iter().enumerate() {
                                if a.tasks.keys().any(|(f, _)| f == id) {
                                    self.dirty.insert(i);
                                }
                            }
                        }
                        RegistryOp::MarkUnreachable { .. } => self.stats.unreachable += 1,
                        _ => {}
                    }
                    self.registry.apply(&op);
                }
            }
        }
    }

    fn framework_event(&mut self, conn: ConnId, ev: Event) {
        let Some(&fi) = self.fw_by_conn.get(&conn) else {
            self.violate(format!(
                "event on a closed framework stream {conn:?}: {ev:?}"
            ));
            return;
        };
        let current = self.frameworks[fi].sub.as_ref().map(|s| s.conn) == Some(conn);
        match ev {
            Event::Subscribed(s) => {
                let f = &mut self.frameworks[fi];
                if !f.id.is_empty() && f.id != s.framework_id {
                    let msg = format!(
                        "{} re-subscribed as {} but got id {}",
                        f.name(),
                        f.id,
                        s.framework_id
                    );
                    self.violate(msg);
                    return;
                }
                f.id = s.framework_id.clone();
                f.sub = Some(SimFramework {
                    conn,
                    id: s.framework_id,
                    stream: s.stream_id,
                });
                f.reconnect_at = None;
                f.suppressed = false;
            }
            Event::Error(_) => self.frameworks[fi].refused = true,
            ev if !current => {
                let name = self.frameworks[fi].name();
                self.violate(format!(
                    "{name} got an event on a stream that is not its current one: {ev:?}"
                ));
            }
            Event::Offers(o) => {
                for offer in o.offers {
                    self.stats.offers += 1;
                    if !self.offer_ids.insert(offer.id.clone()) {
                        self.violate(format!("offer id {} sent twice", offer.id));
                    }
                    if offer.framework_id != self.frameworks[fi].id {
                        self.violate(format!("offer {} names another framework", offer.id));
                    }
                    let Some(&ai) = self.agent_by_id.get(&offer.agent_id) else {
                        self.violate(format!("offer {} of an unknown agent", offer.id));
                        continue;
                    };
                    let r = match Resources::try_from_proto(&offer.resources) {
                        Ok(r) => r,
                        Err(e) => {
                            self.violate(format!("offer {} has bad resources: {e}", offer.id));
                            continue;
                        }
                    };
                    self.offered.entry(ai).or_default().add(&r);
                    self.dirty.insert(ai);
                    self.frameworks[fi].offers.insert(offer.id, (ai, r));
                }
            }
            Event::Rescind(r) => {
                self.stats.rescinds += 1;
                if self.drop_offer(fi, &r.offer_id).is_none() {
                    let name = self.frameworks[fi].name();
                    self.violate(format!(
                        "{name}: RESCIND of offer {} it does not hold",
                        r.offer_id
                    ));
                }
            }
            Event::Update(u) => {
                if let Some(status) = u.status {
                    self.observe(fi, status);
                }
            }
            Event::Heartbeat(_) | Event::Message(_) | Event::Failure(_) => {}
        }
    }

    /// The framework no longer holds this offer (used, declined, rescinded).
    fn drop_offer(&mut self, fi: usize, id: &str) -> Option<(usize, Resources)> {
        let (ai, r) = self.frameworks[fi].offers.remove(id)?;
        if let Some(sum) = self.offered.get_mut(&ai) {
            sum.subtract(&r);
        }
        self.dirty.insert(ai);
        let spent = &mut self.frameworks[fi].spent;
        spent.push_back(id.to_string());
        if spent.len() > 32 {
            spent.pop_front();
        }
        Some((ai, r))
    }

    fn drop_all_offers(&mut self, fi: usize) {
        let ids: Vec<String> = self.frameworks[fi].offers.keys().cloned().collect();
        for id in ids {
            self.drop_offer(fi, &id);
        }
    }

    fn framework_closed(&mut self, conn: ConnId) {
        let Some(fi) = self.fw_by_conn.remove(&conn) else {
            return;
        };
        if self.frameworks[fi].sub.as_ref().map(|s| s.conn) != Some(conn) {
            return;
        }
        self.framework_lost_stream(fi);
        let at = self.now() + self.millis(500, 5_000);
        self.frameworks[fi].reconnect_at = Some(at);
    }

    /// The framework's stream is gone: its offers and unsent acknowledgements too.
    fn framework_lost_stream(&mut self, fi: usize) {
        if let Some(old) = self.frameworks[fi].sub.take() {
            self.fw_by_conn.remove(&old.conn);
            let stale = &mut self.frameworks[fi].stale;
            stale.push(old);
            if stale.len() > 4 {
                stale.remove(0);
            }
        }
        self.drop_all_offers(fi);
        self.frameworks[fi].acks.clear();
    }

    /// The checker of "one terminal state per task", on every UPDATE a framework gets.
    fn observe(&mut self, fi: usize, status: v1::TaskStatus) {
        self.stats.updates_seen += 1;
        let state = state_from_i32(status.state);
        let from_master = status.source == TaskStatusSource::SourceMaster as i32;
        let f = &mut self.frameworks[fi];
        let name = f.name();
        if status.framework_id != f.id {
            let msg = format!("{name} got an update of framework {}", status.framework_id);
            self.violate(msg);
            return;
        }
        if !status.uuid.is_empty() {
            f.acks.push((
                status.agent_id.clone(),
                status.task_id.clone(),
                status.uuid.clone(),
            ));
        }
        let refusal = [
            TaskStatusReason::ReasonDuplicateTaskId as i32,
            TaskStatusReason::ReasonInvalidOffers as i32,
        ]
        .contains(&status.reason);
        if from_master && refusal && self.reused_ids.contains(&(fi, status.task_id.clone())) {
            return; // the answer to reusing a live id, not news of the live task
        }
        let tid = status.task_id.clone();
        let view = f.tasks.entry(tid.clone()).or_default();
        view.history.push_back(format!(
            "{:?} {} {:?} {}",
            state,
            if from_master { "master" } else { "agent" },
            TaskStatusReason::try_from(status.reason).unwrap_or_default(),
            status.uuid
        ));
        if view.history.len() > 12 {
            view.history.pop_front();
        }
        let mut problem = None;
        if !status.uuid.is_empty()
            && let Some(&first) = view.uuids.get(&status.uuid)
        {
            self.stats.duplicate_updates += 1;
            if first != state {
                problem = Some(format!(
                    "{name}: task {tid}: update {} came as {first:?} and again as {state:?}; its updates: {:?}",
                    status.uuid, view.history
                ));
            }
        } else {
            if !status.uuid.is_empty() {
                view.uuids.insert(status.uuid.clone(), state);
            }
            match view.ended {
                Some(end) if end != state => {
                    problem = Some(format!(
                        "{name}: task {tid} ended {end:?} and then got {state:?} ({}: {}); its updates: {:?}",
                        if from_master { "master" } else { "agent" },
                        status.message,
                        view.history
                    ));
                }
                Some(_) => {}
                None => {
                    view.last = Some(state);
                    if is_terminal(state) {
                        view.ended = Some(state);
                    }
                }
            }
        }
        if let Some(p) = problem {
            let fw_id = self.frameworks[fi].id.clone();
            let more = self.describe_task(&fw_id, &tid);
            self.violate(format!("{p}\n{more}"));
        }
    }

    /// Where a task is: the agents that hold it and what the master knows of it.
    fn describe_task(&self, fw_id: &str, task_id: &str) -> String {
        let key = (fw_id.to_string(), task_id.to_string());
        let mut out = String::new();
        for (i, a) in self.agents.iter().enumerate() {
            let t = a.tasks.get(&key);
            let q = a.updates.get(&key);
            if t.is_none() && q.is_none() && !a.completed.contains(&key) {
                continue;
            }
            out += &format!(
                "  agent {i} ({}): task {:?}, queue {:?}, completed {}\n",
                a.info.id,
                t.map(|t| (t.phase, t.state, t.kill)),
                q.map(|q| q
                    .pending
                    .iter()
                    .map(|s| format!("{:?} {}", state_from_i32(s.state), s.uuid))
                    .collect::<Vec<_>>()),
                a.completed.contains(&key)
            );
        }
        let m = &self.sim.m;
        if let Some(fw) = m.framework_ids.get(fw_id).and_then(|k| m.frameworks.get(k)) {
            if let Some(t) = fw.tasks.get(task_id) {
                out += &format!(
                    "  master: live on {} as {:?}, kill pending {:?}, seen {:?}\n",
                    t.agent_id, t.state, t.kill_pending, t.seen_uuids
                );
            }
            if let Some(e) = fw.ended.get(task_id) {
                out += &format!(
                    "  master: ended on {} as {:?} uuid {:?}\n",
                    e.agent_id,
                    state_from_i32(e.status.state),
                    e.status.uuid
                );
            }
        }
        out
    }

    fn master_to_agent(&mut self, conn: ConnId, message: v1::MasterMessage) {
        let Some(&i) = self.agent_by_conn.get(&conn) else {
            self.violate(format!(
                "message on a closed agent stream {conn:?}: {message:?}"
            ));
            return;
        };
        self.dirty.insert(i);
        if self.agents[i].paused_until.is_some() {
            self.agents[i].inbox.push(message);
        } else if let Some(m) = message.message {
            self.agent_receive(i, m);
        }
    }

    fn agent_closed(&mut self, conn: ConnId) {
        let Some(i) = self.agent_by_conn.remove(&conn) else {
            return;
        };
        self.dirty.insert(i);
        if self.agents[i].conn != Some(conn) {
            return;
        }
        let from = self.agents[i]
            .paused_until
            .unwrap_or(self.now())
            .max(self.now());
        let at = from + self.millis(200, 5_000);
        let a = &mut self.agents[i];
        a.conn = None;
        a.inbox.clear();
        a.reconnect_at = Some(at);
    }

    // ---- the agent model ----

    fn agent_register(&mut self, i: usize) {
        let conn = self.sim.conn();
        if let Some(old) = self.agents[i].conn.take() {
            self.agent_by_conn.remove(&old);
        }
        let a = &mut self.agents[i];
        a.conn = Some(conn);
        a.reconnect_at = None;
        a.inbox.clear();
        a.next_heartbeat = self.sim.now + PING;
        let register = v1::Register {
            agent_info: Some(a.info.clone()),
            tasks: a.running_tasks(),
            version: "sim".into(),
        };
        self.agent_by_conn.insert(conn, i);
        self.dirty.insert(i);
        self.input(Input::AgentRegister {
            conn,
            register,
            peer: None,
        });
    }

    fn agent_receive(&mut self, i: usize, message: Message) {
        let now = self.now();
        match message {
            Message::Registered(r) => {
                let a = &mut self.agents[i];
                if a.info.id.is_empty() {
                    a.info.id = r.agent_id.clone();
                    self.agent_by_id.insert(r.agent_id, i);
                } else if a.info.id != r.agent_id {
                    let msg = format!(
                        "agent {} re-registered and got id {}",
                        a.info.id, r.agent_id
                    );
                    self.violate(msg);
                    return;
                }
                // Every unacknowledged head goes again, its retry interval restarts.
                let heads: Vec<v1::TaskStatus> = a
                    .updates
                    .values_mut()
                    .filter_map(|q| {
                        q.backoff = RETRY;
                        q.retry_at = now + RETRY;
                        q.pending.front().cloned()
                    })
                    .collect();
                for h in heads {
                    self.agent_send(i, h);
                }
            }
            Message::RunTask(run) => {
                let (Some(framework), Some(info)) = (run.framework, run.task) else {
                    self.violate("RunTask without framework or task".into());
                    return;
                };
                self.stats.tasks_launched += 1;
                let key = (framework.id.clone(), info.task_id.clone());
                if self.agents[i].tasks.contains_key(&key) {
                    self.agent_report_new(
                        i,
                        &key,
                        TaskState::TaskError,
                        TaskStatusReason::ReasonDuplicateTaskId,
                    );
                    return;
                }
                let resources = Resources::try_from_proto(&info.resources).unwrap_or_default();
                let a = &mut self.agents[i];
                a.completed.remove(&key);
                a.tasks.insert(
                    key,
                    AgentTask {
                        framework,
                        info,
                        resources,
                        phase: Phase::Launching,
                        state: TaskState::TaskStaging,
                        kill: false,
                    },
                );
                self.busy.insert(i);
            }
            Message::KillTask(k) => {
                let key = (k.framework_id, k.task_id);
                let a = &mut self.agents[i];
                match a.tasks.get_mut(&key) {
                    Some(t) if matches!(t.phase, Phase::Launching | Phase::Running) => {
                        t.kill = true;
                        if t.phase == Phase::Running {
                            t.phase = Phase::Killing;
                            self.report_killing(i, &key);
                        }
                    }
                    Some(_) => {} // already ending
                    None if a.completed.contains(&key) || a.updates.contains_key(&key) => {}
                    None => self.agent_report_new(
                        i,
                        &key,
                        TaskState::TaskLost,
                        TaskStatusReason::ReasonTaskUnknown,
                    ),
                }
            }
            Message::ShutdownFramework(s) => {
                let keys: Vec<TaskKey> = self.agents[i]
                    .tasks
                    .iter()
                    .filter(|(k, t)| k.0 == s.framework_id && t.phase != Phase::Terminated)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.agent_end(
                        i,
                        &key,
                        TaskState::TaskKilled,
                        TaskStatusReason::ReasonFrameworkRemoved,
                    );
                }
            }
            Message::Acknowledge(ack) => {
                let key = (ack.framework_id, ack.task_id);
                let a = &mut self.agents[i];
                let Some(q) = a.updates.get_mut(&key) else {
                    return;
                };
                if q.pending.front().map(|s| s.uuid.as_str()) != Some(ack.uuid.as_str()) {
                    return;
                }
                q.pending.pop_front();
                match q.pending.front().cloned() {
                    Some(next) => {
                        q.backoff = RETRY;
                        q.retry_at = now + RETRY;
                        self.agent_send(i, next);
                    }
                    None => {
                        a.updates.remove(&key);
                        if a.tasks
                            .get(&key)
                            .is_some_and(|t| t.phase == Phase::Terminated)
                        {
                            a.tasks.remove(&key);
                            a.completed.insert(key);
                        }
                    }
                }
            }
            Message::Ping(_) => self.heartbeat(i),
            Message::Error(_) | Message::FrameworkMessage(_) => {}
        }
    }

    fn report_killing(&mut self, i: usize, key: &TaskKey) {
        let capable = self.agents[i].tasks.get(key).is_some_and(|t| {
            t.framework
                .capabilities
                .contains(&(v1::FrameworkCapability::TaskKillingState as i32))
        });
        if capable {
            self.agent_report(
                i,
                key,
                TaskState::TaskKilling,
                TaskStatusReason::ReasonUnspecified,
                None,
            );
        }
    }

    /// Ends a task (phase Terminated) and reports it.
    fn agent_end(&mut self, i: usize, key: &TaskKey, state: TaskState, reason: TaskStatusReason) {
        if let Some(t) = self.agents[i].tasks.get_mut(key) {
            t.phase = Phase::Terminated;
        }
        if !self.agents[i]
            .tasks
            .values()
            .any(|t| t.phase != Phase::Terminated)
        {
            self.busy.remove(&i);
        }
        self.agent_report(i, key, state, reason, None);
    }

    /// An update about a task the agent does not run (a refused RunTask, a kill of
    /// an unknown task): it still goes through the task's update queue.
    fn agent_report_new(
        &mut self,
        i: usize,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
    ) {
        self.agent_report(i, key, state, reason, None);
    }

    /// Sets the task's state and queues the update that says so; sent at once when it
    /// is the head of its queue.
    fn agent_report(
        &mut self,
        i: usize,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
        healthy: Option<bool>,
    ) {
        let now = self.now();
        self.next_uuid += 1;
        let a = &mut self.agents[i];
        if let Some(t) = a.tasks.get_mut(key) {
            t.state = state;
        }
        let status = v1::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message: format!("{} on {}", state.as_str_name(), a.info.hostname),
            source: TaskStatusSource::SourceAgent as i32,
            reason: reason as i32,
            agent_id: a.info.id.clone(),
            framework_id: key.0.clone(),
            uuid: format!("s{}-u{}", self.seed, self.next_uuid),
            timestamp: 1.0,
            healthy,
            ..Default::default()
        };
        let q = a.updates.entry(key.clone()).or_insert_with(|| UpdateQueue {
            pending: VecDeque::new(),
            retry_at: now + RETRY,
            backoff: RETRY,
        });
        q.pending.push_back(status.clone());
        if q.pending.len() == 1 {
            q.retry_at = now + RETRY;
            q.backoff = RETRY;
            self.agent_send(i, status);
        }
    }

    /// Puts a status update on the wire (sometimes twice), if the agent has a stream.
    fn agent_send(&mut self, i: usize, status: v1::TaskStatus) {
        let a = &self.agents[i];
        let Some(conn) = a.conn.filter(|_| a.paused_until.is_none()) else {
            return;
        };
        let m = InFlight {
            conn,
            agent: i,
            status,
            sent: self.sim.now,
        };
        if self.chance(8) {
            self.in_flight.push(m.clone());
        }
        self.recent.push_back(m.clone());
        if self.recent.len() > 256 {
            self.recent.pop_front();
        }
        self.in_flight.push(m);
    }

    fn heartbeat(&mut self, i: usize) {
        let Some(conn) = self.agents[i].conn else {
            return;
        };
        self.agents[i].next_heartbeat = self.sim.now + PING;
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        };
        self.input(Input::AgentMessage { conn, message });
    }

    /// The agent wakes up: with its stream still open it reads what the master sent
    /// meanwhile; with it closed it re-registers.
    fn resume(&mut self, i: usize) {
        let now = self.now();
        let a = &mut self.agents[i];
        a.paused_until = None;
        a.next_heartbeat = now;
        if a.conn.is_none() {
            a.reconnect_at = Some(now);
            return;
        }
        let inbox = std::mem::take(&mut a.inbox);
        for m in inbox {
            if self.agents[i].conn.is_none() {
                break;
            }
            if let Some(m) = m.message {
                self.agent_receive(i, m);
            }
        }
    }

    /// Delivers the in-flight message at `idx`.
    fn deliver(&mut self, idx: usize) {
        let m = self.in_flight.swap_remove(idx);
        self.dirty.insert(m.agent);
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(m.status),
            })),
        };
        self.input(Input::AgentMessage {
            conn: m.conn,
            message,
        });
    }

    fn deliver_all(&mut self) {
        while !self.in_flight.is_empty() {
            let idx = self.rng.below(self.in_flight.len());
            self.deliver(idx);
        }
    }

    // ---- steps ----

    fn step(&mut self) -> String {
        let r = self.rng.below(1000);
        match r {
            0..=219 => {
                let dt = self.millis(0, 1_000);
                self.tick(dt);
                format!("tick +{}ms", dt.as_millis())
            }
            220..=339 => self.deliver_some(),
            340..=469 => self.agent_work(),
            470..=599 => self.framework_offers(),
            600..=679 => self.framework_acks(),
            680..=719 => self.framework_kill(),
            720..=759 => self.framework_reconcile(),
            760..=784 => self.agent_disconnect(),
            785..=809 => self.agent_pause(),
            810..=829 => self.framework_disconnect(),
            830..=849 => self.framework_failover(),
            850..=864 => self.zombie_call(),
            865..=874 => self.suppress_or_revive(),
            875..=939 => self.old_duplicate(),
            940..=997 => {
                let dt = self.millis(1_000, 5_000);
                self.tick(dt);
                format!("long tick +{}ms", dt.as_millis())
            }
            998 => self.teardown(),
            _ => {
                if self.chance(50) {
                    self.restart_master()
                } else {
                    let dt = self.millis(0, 1_000);
                    self.tick(dt);
                    format!("tick +{}ms", dt.as_millis())
                }
            }
        }
    }

    fn tick(&mut self, dt: Duration) {
        self.sim.advance(dt);
        self.tasks_progress(dt);
        let now = self.now();
        for i in 0..self.agents.len() {
            if self.agents[i].paused_until.is_some_and(|t| t <= now) {
                self.resume(i);
            }
            let a = &self.agents[i];
            if a.paused_until.is_none()
                && a.conn.is_none()
                && a.reconnect_at.is_some_and(|t| t <= now)
            {
                self.agent_register(i);
            }
        }
        for fi in 0..self.frameworks.len() {
            if self.frameworks[fi].sub.is_none()
                && self.frameworks[fi].reconnect_at.is_some_and(|t| t <= now)
            {
                self.framework_subscribe(fi);
            }
        }
        for i in 0..self.agents.len() {
            if !self.agents[i].active() {
                continue;
            }
            if self.agents[i].next_heartbeat <= now {
                self.heartbeat(i);
            }
            let mut due = Vec::new();
            for q in self.agents[i].updates.values_mut() {
                if q.retry_at <= now
                    && let Some(head) = q.pending.front()
                {
                    q.backoff = (q.backoff * 2).min(MAX_RETRY);
                    q.retry_at = now + q.backoff;
                    due.push(head.clone());
                }
            }
            for head in due {
                self.agent_send(i, head);
            }
        }
        let mut due = Vec::new();
        let mut idx = 0;
        while idx < self.in_flight.len() {
            if self.in_flight[idx].sent + MAX_DELAY <= now {
                due.push(self.in_flight.swap_remove(idx));
            } else {
                idx += 1;
            }
        }
        self.rng.shuffle(&mut due);
        let keep = std::mem::replace(&mut self.in_flight, due);
        self.deliver_all();
        self.in_flight = keep;
        self.input(Input::Tick);
    }

    /// Time passes on the agents that are not paused: launches complete, tasks exit
    /// now and then, kills take effect.
    fn tasks_progress(&mut self, dt: Duration) {
        let per_mille = |per_sec: f64| ((per_sec * dt.as_secs_f64() * 1000.0) as usize).min(1000);
        let (launch, exit, news, kill) = (
            per_mille(0.5),
            per_mille(0.01),
            per_mille(0.005),
            per_mille(0.4),
        );
        let busy: Vec<usize> = self.busy.iter().copied().collect();
        for i in busy {
            if self.agents[i].paused_until.is_some() {
                continue;
            }
            let tasks: Vec<(TaskKey, Phase, bool)> = self.agents[i]
                .tasks
                .iter()
                .filter(|(_, t)| t.phase != Phase::Terminated)
                .map(|(k, t)| (k.clone(), t.phase, t.kill))
                .collect();
            for (key, phase, killed) in tasks {
                let roll = self.rng.below(1000);
                match phase {
                    Phase::Launching if roll < launch => {
                        if killed {
                            if let Some(t) = self.agents[i].tasks.get_mut(&key) {
                                t.phase = Phase::Killing;
                            }
                            self.report_killing(i, &key);
                        } else {
                            if let Some(t) = self.agents[i].tasks.get_mut(&key) {
                                t.phase = Phase::Running;
                            }
                            self.agent_report(
                                i,
                                &key,
                                TaskState::TaskRunning,
                                TaskStatusReason::ReasonUnspecified,
                                None,
                            );
                        }
                    }
                    Phase::Running if roll < exit => {
                        let state = if self.chance(75) {
                            TaskState::TaskFinished
                        } else {
                            TaskState::TaskFailed
                        };
                        self.agent_end(i, &key, state, TaskStatusReason::ReasonCommandExited);
                    }
                    Phase::Running if roll < exit + news => {
                        self.agent_report(
                            i,
                            &key,
                            TaskState::TaskRunning,
                            TaskStatusReason::ReasonUnspecified,
                            Some(true),
                        );
                    }
                    Phase::Killing if roll < kill => {
                        self.agent_end(
                            i,
                            &key,
                            TaskState::TaskKilled,
                            TaskStatusReason::ReasonTaskKilled,
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    fn deliver_some(&mut self) -> String {
        if self.in_flight.is_empty() {
            return "deliver: nothing in flight".into();
        }
        let n = 1 + self.rng.below(4).min(self.in_flight.len() - 1);
        for _ in 0..n {
            let idx = self.rng.below(self.in_flight.len());
            self.deliver(idx);
        }
        format!("deliver {n} of {} in flight", self.in_flight.len() + n)
    }

    fn old_duplicate(&mut self) -> String {
        if self.recent.is_empty() {
            return "old duplicate: none".into();
        }
        let idx = self.rng.below(self.recent.len());
        let mut m = self.recent[idx].clone();
        m.sent = self.now();
        let what = format!(
            "old duplicate of {} {} {:?} from agent {}",
            m.status.task_id,
            m.status.uuid,
            state_from_i32(m.status.state),
            m.agent
        );
        self.in_flight.push(m);
        what
    }

    /// A task on a random busy agent moves on: launched, exits, killed.
    fn agent_work(&mut self) -> String {
        let busy: Vec<usize> = self
            .busy
            .iter()
            .copied()
            .filter(|&i| self.agents[i].paused_until.is_none())
            .collect();
        let Some(i) = self.pick(&busy) else {
            return "agent work: nothing".into();
        };
        let keys: Vec<TaskKey> = self.agents[i]
            .tasks
            .iter()
            .filter(|(_, t)| t.phase != Phase::Terminated)
            .map(|(k, _)| k.clone())
            .collect();
        let key = keys[self.rng.below(keys.len())].clone();
        let t = &self.agents[i].tasks[&key];
        let (phase, kill) = (t.phase, t.kill);
        let roll = self.rng.below(100);
        let what = match phase {
            Phase::Launching if kill => {
                if let Some(t) = self.agents[i].tasks.get_mut(&key) {
                    t.phase = Phase::Killing;
                }
                self.report_killing(i, &key);
                "launched while killed: killing"
            }
            Phase::Launching if roll < 95 => {
                if let Some(t) = self.agents[i].tasks.get_mut(&key) {
                    t.phase = Phase::Running;
                }
                self.agent_report(
                    i,
                    &key,
                    TaskState::TaskRunning,
                    TaskStatusReason::ReasonUnspecified,
                    None,
                );
                "running"
            }
            Phase::Launching => {
                self.agent_end(
                    i,
                    &key,
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonContainerLaunchFailed,
                );
                "launch failed"
            }
            Phase::Running if roll < 30 => {
                self.agent_end(
                    i,
                    &key,
                    TaskState::TaskFinished,
                    TaskStatusReason::ReasonCommandExited,
                );
                "finished"
            }
            Phase::Running if roll < 40 => {
                self.agent_end(
                    i,
                    &key,
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonCommandExited,
                );
                "failed"
            }
            Phase::Running if roll < 55 => {
                let healthy = self.rng.below(4) != 0;
                self.agent_report(
                    i,
                    &key,
                    TaskState::TaskRunning,
                    TaskStatusReason::ReasonUnspecified,
                    Some(healthy),
                );
                "health news"
            }
            Phase::Running => "still running",
            Phase::Killing => {
                self.agent_end(
                    i,
                    &key,
                    TaskState::TaskKilled,
                    TaskStatusReason::ReasonTaskKilled,
                );
                "killed"
            }
            Phase::Terminated => "terminated",
        };
        format!("agent {i}: task {}/{}: {what}", key.0, key.1)
    }

    fn agent_disconnect(&mut self) -> String {
        let i = self.rng.below(self.agents.len());
        let Some(conn) = self.agents[i].conn.take() else {
            return format!("agent {i} disconnect: not connected");
        };
        self.stats.agents_disconnected += 1;
        self.agent_by_conn.remove(&conn);
        let back = self.millis(100, 30_000);
        let a = &mut self.agents[i];
        a.inbox.clear();
        a.reconnect_at = Some(self.sim.now + back);
        self.dirty.insert(i);
        self.input(Input::AgentDisconnected { conn });
        format!("agent {i}: stream broken, back in {}ms", back.as_millis())
    }

    fn agent_pause(&mut self) -> String {
        let i = self.rng.below(self.agents.len());
        if self.agents[i].paused_until.is_some() {
            return format!("agent {i} pause: already paused");
        }
        self.stats.agents_paused += 1;
        let d = self.millis(1_000, 40_000);
        self.agents[i].paused_until = Some(self.sim.now + d);
        self.dirty.insert(i);
        format!("agent {i}: paused for {}ms", d.as_millis())
    }

    // ---- frameworks ----

    fn connected_frameworks(&self) -> Vec<usize> {
        (0..self.frameworks.len())
            .filter(|&fi| self.frameworks[fi].sub.is_some())
            .collect()
    }

    /// Subscribes (again, with its id if it has one); a framework the master removed
    /// registers anew.
    fn framework_subscribe(&mut self, fi: usize) -> String {
        let f = &self.frameworks[fi];
        let info = v1::FrameworkInfo {
            id: f.id.clone(),
            ..f.info.clone()
        };
        let with_id = !f.id.is_empty();
        self.subscribe_on_new_conn(fi, info);
        if !self.frameworks[fi].refused {
            return format!("{} subscribed", self.frameworks[fi].name());
        }
        if !with_id {
            self.violate("a subscription without an id was refused".into());
            return "refused".into();
        }
        // Removed (failover timeout or TEARDOWN): a new framework.
        let f = &mut self.frameworks[fi];
        f.id.clear();
        f.incarnation += 1;
        f.tasks.clear();
        f.stale.clear();
        let info = f.info.clone();
        self.subscribe_on_new_conn(fi, info);
        format!("{} registered anew", self.frameworks[fi].name())
    }

    fn subscribe_on_new_conn(&mut self, fi: usize, info: v1::FrameworkInfo) {
        let conn = self.sim.conn();
        self.fw_by_conn.insert(conn, fi);
        self.frameworks[fi].refused = false;
        let request = v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        };
        self.input(Input::Subscribe { conn, request });
    }

    fn framework_disconnect(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "framework disconnect: none connected".into();
        };
        self.stats.framework_disconnects += 1;
        let conn = self.frameworks[fi].sub.as_ref().map(|s| s.conn).unwrap();
        self.framework_lost_stream(fi);
        // Mostly back within the failover timeout; sometimes too late (removed).
        let failover = self.frameworks[fi].spec.failover;
        let ms = (failover * 1000.0) as u64;
        let away = if self.chance(75) {
            self.millis(0, ms)
        } else {
            self.millis(ms + 1, ms + 10_000)
        };
        self.frameworks[fi].reconnect_at = Some(self.sim.now + away);
        self.input(Input::FrameworkDisconnected { conn });
        format!(
            "{} disconnects for {}ms (failover {failover}s)",
            self.frameworks[fi].name(),
            away.as_millis()
        )
    }

    /// A new scheduler instance subscribes while the old stream is still open.
    fn framework_failover(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "framework failover: none connected".into();
        };
        let what = self.framework_subscribe(fi);
        format!("failover: {what}")
    }

    /// An old scheduler instance calls on its old stream: refused, no effects.
    fn zombie_call(&mut self) -> String {
        let candidates: Vec<usize> = (0..self.frameworks.len())
            .filter(|&fi| {
                !self.frameworks[fi].stale.is_empty() && !self.frameworks[fi].id.is_empty()
            })
            .collect();
        let Some(fi) = self.pick(&candidates) else {
            return "zombie call: no old stream".into();
        };
        let f = &self.frameworks[fi];
        let old = f.stale[self.rng.below(f.stale.len())].clone();
        if f.sub.as_ref().is_some_and(|s| s.stream == old.stream) || old.id != f.id {
            return "zombie call: stream still current".into();
        }
        let r = self
            .sim
            .call(&old, Call::Reconcile(v1::ReconcileRequest::default()));
        let effects = self.sim.effects();
        let refused = matches!(
            r,
            Err(CallError::StaleStream { .. } | CallError::UnknownFramework(_))
        );
        if !refused || !effects.is_empty() {
            self.violate(format!(
                "a call on an old stream gave {r:?} and {} effects",
                effects.len()
            ));
        }
        format!("zombie call of {}: {r:?}", self.frameworks[fi].name())
    }

    fn suppress_or_revive(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "suppress/revive: none connected".into();
        };
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let suppressed = self.frameworks[fi].suppressed;
        let r = if suppressed {
            self.call(&fw, Call::Revive(v1::ReviveRequest::default()))
        } else {
            self.call(&fw, Call::Suppress(v1::SuppressRequest::default()))
        };
        self.expect_ok("SUPPRESS/REVIVE", r);
        self.frameworks[fi].suppressed = !suppressed;
        format!(
            "{} {}",
            self.frameworks[fi].name(),
            if suppressed { "revives" } else { "suppresses" }
        )
    }

    fn teardown(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "teardown: none connected".into();
        };
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let r = self.call(&fw, Call::Teardown(v1::TeardownRequest::default()));
        self.expect_ok("TEARDOWN", r);
        format!("{} tears down", self.frameworks[fi].name())
    }

    fn framework_acks(&mut self) -> String {
        let candidates: Vec<usize> = self
            .connected_frameworks()
            .into_iter()
            .filter(|&fi| !self.frameworks[fi].acks.is_empty())
            .collect();
        let Some(fi) = self.pick(&candidates) else {
            return "acks: nothing to acknowledge".into();
        };
        let n = self.ack_all(fi, 85);
        format!("{} acknowledges {n}", self.frameworks[fi].name())
    }

    /// Acknowledges each pending update with this chance (the others are lost).
    fn ack_all(&mut self, fi: usize, percent: usize) -> usize {
        let Some(fw) = self.frameworks[fi].sub.clone() else {
            return 0;
        };
        let acks = std::mem::take(&mut self.frameworks[fi].acks);
        let mut n = 0;
        for (agent_id, task_id, uuid) in acks {
            if !self.chance(percent) {
                continue;
            }
            n += 1;
            let req = v1::AcknowledgeRequest {
                header: None,
                agent_id,
                task_id,
                uuid,
            };
            let r = self.call(&fw, Call::Acknowledge(req));
            self.expect_ok("ACKNOWLEDGE", r);
            if self.frameworks[fi].sub.as_ref().map(|s| &s.stream) != Some(&fw.stream) {
                break;
            }
        }
        n
    }

    fn framework_kill(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "kill: none connected".into();
        };
        let live: Vec<(String, String)> = self.frameworks[fi]
            .tasks
            .iter()
            .filter(|(_, v)| v.believed_live())
            .map(|(id, v)| (id.clone(), v.agent_id.clone()))
            .collect();
        let (task_id, agent_id) = match live.len() {
            0 => return "kill: nothing live".into(),
            _ if self.chance(8) => {
                self.frameworks[fi].next_task += 1;
                (
                    format!("ghost{}", self.frameworks[fi].next_task),
                    String::new(),
                )
            }
            n => live[self.rng.below(n)].clone(),
        };
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let req = v1::KillRequest {
            header: None,
            task_id: task_id.clone(),
            agent_id,
            kill_policy: None,
        };
        let r = self.call(&fw, Call::Kill(req));
        self.expect_ok("KILL", r);
        format!("{} kills {task_id}", self.frameworks[fi].name())
    }

    fn framework_reconcile(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "reconcile: none connected".into();
        };
        let tasks = if self.chance(40) {
            Vec::new()
        } else {
            let mut live: Vec<v1::ReconcileTask> = self.frameworks[fi]
                .tasks
                .iter()
                .filter(|(_, v)| v.believed_live())
                .map(|(id, v)| v1::ReconcileTask {
                    task_id: id.clone(),
                    agent_id: v.agent_id.clone(),
                })
                .collect();
            self.rng.shuffle(&mut live);
            live.truncate(20);
            if self.chance(20) {
                self.frameworks[fi].next_task += 1;
                let agent = self.rng.below(self.agents.len());
                live.push(v1::ReconcileTask {
                    task_id: format!("ghost{}", self.frameworks[fi].next_task),
                    agent_id: self.agents[agent].info.id.clone(),
                });
            }
            live
        };
        let n = tasks.len();
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let r = self.call(
            &fw,
            Call::Reconcile(v1::ReconcileRequest {
                header: None,
                tasks,
            }),
        );
        self.expect_ok("RECONCILE", r);
        format!("{} reconciles {n} tasks", self.frameworks[fi].name())
    }

    /// A framework answers some of its offers: launches on some, declines some with
    /// filters, keeps the rest (until the offer timeout rescinds them).
    fn framework_offers(&mut self) -> String {
        let candidates: Vec<usize> = self
            .connected_frameworks()
            .into_iter()
            .filter(|&fi| !self.frameworks[fi].offers.is_empty())
            .collect();
        let Some(fi) = self.pick(&candidates) else {
            return "offers: none held".into();
        };
        let held = self.frameworks[fi].offers.len();
        let n = 1 + self.rng.below(80);
        let skip = self.rng.below(held);
        let mut ids: Vec<String> = self.frameworks[fi]
            .offers
            .keys()
            .skip(skip)
            .take(n)
            .cloned()
            .collect();
        self.rng.shuffle(&mut ids);
        let (mut accepted, mut declined) = (Vec::new(), Vec::new());
        for id in ids {
            if !self.frameworks[fi].offers.contains_key(&id) {
                continue; // used by an earlier accept of this step
            }
            match self.rng.below(100) {
                0..=11 => {
                    let what = self.accept(fi, id);
                    accepted.push(what);
                    if self.frameworks[fi].sub.is_none() {
                        break;
                    }
                }
                12..=94 => declined.push(id),
                _ => {}
            }
        }
        let mut what = format!(
            "{}: {} accepts [{}]",
            self.frameworks[fi].name(),
            accepted.len(),
            accepted.join("; ")
        );
        if !declined.is_empty() && self.frameworks[fi].sub.is_some() {
            for id in &declined {
                self.drop_offer(fi, id);
            }
            let refuse_s = [
                None,
                Some(30.0),
                Some(120.0),
                Some(300.0),
                Some(600.0),
                Some(600.0),
            ][self.rng.below(6)];
            let fw = self.frameworks[fi].sub.clone().unwrap();
            let n = declined.len();
            let r = self.call(
                &fw,
                Call::Decline(v1::DeclineRequest {
                    header: None,
                    offer_ids: declined,
                    filters: refuse_s.and_then(refuse),
                }),
            );
            self.expect_ok("DECLINE", r);
            what += &format!(", declines {n} (refuse {refuse_s:?})");
        }
        what
    }

    /// One ACCEPT of the offer `id` (sometimes with another offer of the same agent, a
    /// stale offer, or an offer of another agent).
    fn accept(&mut self, fi: usize, id: String) -> String {
        let Some((ai, offered)) = self.drop_offer(fi, &id) else {
            return "gone".into();
        };
        let mut ids = vec![id];
        let mut left = offered;
        let mut expect_invalid = false;
        let mut stale = false;
        let same_agent: Option<String> = self.frameworks[fi]
            .offers
            .iter()
            .find(|(_, (a, _))| *a == ai)
            .map(|(id, _)| id.clone());
        if let Some(other) = same_agent
            && let Some((_, r)) = self.drop_offer(fi, &other)
        {
            left.add(&r);
            ids.push(other);
        }
        let roll = self.rng.below(100);
        if roll < 4 && !self.frameworks[fi].spent.is_empty() {
            let spent = &self.frameworks[fi].spent;
            let old = spent[self.rng.below(spent.len())].clone();
            if !ids.contains(&old) {
                ids.push(old);
                stale = true;
                self.stats.stale_accepts += 1;
            }
        } else if roll < 7 {
            let other: Option<String> = self.frameworks[fi]
                .offers
                .iter()
                .find(|(_, (a, _))| *a != ai)
                .map(|(id, _)| id.clone());
            if let Some(other) = other {
                self.drop_offer(fi, &other);
                ids.push(other);
                expect_invalid = true;
            }
        }
        // Tasks that fit (mostly).
        let f = &self.frameworks[fi];
        let fw_id = f.id.clone();
        let agent_id = self.agents[ai].info.id.clone();
        let mut tasks = Vec::new();
        let mut names = Vec::new();
        for _ in 0..self.rng.below(4) {
            let cpus = ["0.1", "0.5", "1", "2"][self.rng.below(4)];
            let mem = ["32", "128", "512", "1024"][self.rng.below(4)];
            let want = res(&format!("cpus:{cpus};mem:{mem}"));
            let oversize = self.chance(3);
            if !left.contains(&want) && !oversize {
                continue;
            }
            let resources = if oversize {
                res("cpus:64;mem:128")
            } else {
                left.subtract(&want);
                want
            };
            self.frameworks[fi].next_task += 1;
            let n = self.frameworks[fi].next_task;
            let tid = format!("{}-t{n}", self.frameworks[fi].spec.name);
            let mut info = task(&tid, "cpus:1");
            info.resources = resources.to_proto();
            tasks.push(info);
            names.push(tid);
        }
        self.reused_ids.clear();
        if self.chance(3)
            && let Some(live) = self.master_live_task(fi)
        {
            tasks.push(task(&live, "cpus:0.1;mem:32"));
            self.reused_ids.insert((fi, live.clone()));
            names.push(format!("{live}(reused)"));
        }
        for name in &names {
            if !name.ends_with("(reused)") {
                self.frameworks[fi].tasks.insert(
                    name.clone(),
                    TaskView {
                        launched: true,
                        agent_id: agent_id.clone(),
                        ..Default::default()
                    },
                );
            }
        }
        let refuse_s = [None, Some(0.0), Some(2.0), Some(10.0)][self.rng.below(4)];
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let req = v1::AcceptRequest {
            header: None,
            offer_ids: ids.clone(),
            operations: vec![launch(tasks)],
            filters: refuse_s.and_then(refuse),
        };
        let r = self.call(&fw, Call::Accept(req));
        self.reused_ids.clear();
        match (&r, expect_invalid) {
            (Ok(()), false) | (Err(CallError::InvalidArgument(_)), true) => {}
            _ => self.violate(format!(
                "ACCEPT of {ids:?} by {fw_id} gave {r:?} (offers of two agents: {expect_invalid})"
            )),
        }
        format!(
            "{}{}{} on agent {ai}: {}",
            ids.len(),
            if stale { " incl. a stale offer" } else { "" },
            if expect_invalid {
                " incl. another agent's"
            } else {
                ""
            },
            names.join(",")
        )
    }

    /// A task id of the framework the master holds live (to reuse on purpose).
    fn master_live_task(&self, fi: usize) -> Option<String> {
        let m = &self.sim.m;
        let fk = m.framework_ids.get(&self.frameworks[fi].id)?;
        m.frameworks.get(fk)?.tasks.keys().next().cloned()
    }

    fn restart_master(&mut self) -> String {
        self.stats.master_restarts += 1;
        self.generation += 1;
        let now = self.now();
        let mut m = Master::new(
            sim_config(self.seed, self.generation),
            self.registry.clone(),
            now,
        );
        m.set_unix_time(self.unix(now), now);
        self.sim.m = m;
        self.full_check = true;
        self.agent_by_conn.clear();
        for i in 0..self.agents.len() {
            let from = self.agents[i].paused_until.unwrap_or(now).max(now);
            let at = from + self.millis(0, 45_000);
            let a = &mut self.agents[i];
            a.conn = None;
            a.inbox.clear();
            a.reconnect_at = Some(at);
            self.dirty.insert(i);
        }
        for fi in 0..self.frameworks.len() {
            self.framework_lost_stream(fi);
            let at = now + self.millis(0, 40_000);
            self.frameworks[fi].reconnect_at = Some(at);
        }
        self.fw_by_conn.clear();
        format!("master restarts as generation {}", self.generation)
    }

    // ---- invariants ----

    /// The invariants after a step (see the module docs): on every agent and
    /// framework when `full` (or after a master restart), else on the agents the step
    /// touched.
    fn check(&mut self, full: bool) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        let dirty = std::mem::take(&mut self.dirty);
        let full = full || self.full_check;
        self.stats.agent_checks += if full {
            self.agents.len() as u64
        } else {
            dirty.len() as u64
        };
        if full {
            self.full_check = false;
            self.sim.m.check_invariants()?;
            for i in 0..self.agents.len() {
                self.check_agent(i)?;
            }
        } else {
            let keys: Vec<AgentKey> = dirty
                .iter()
                .filter_map(|&i| self.sim.m.agent_ids.get(&self.agents[i].info.id).copied())
                .collect();
            self.sim.m.check_agents_invariants(&keys)?;
            for &i in &dirty {
                self.check_agent(i)?;
            }
        }
        self.check_offers_agree(full)
    }

    /// Offers and capacity on one agent.
    fn check_agent(&self, i: usize) -> Result<(), String> {
        let a = &self.agents[i];
        let live = a.live_resources(&self.removed);
        if !a.total.contains(&live) {
            return Err(format!(
                "agent {i} ({}) runs {live}, more than its total {}",
                a.info.id, a.total
            ));
        }
        if let Some(offered) = self.offered.get(&i).filter(|o| !o.is_empty()) {
            let mut sum = live.clone();
            sum.add(offered);
            if !a.total.contains(&sum) {
                return Err(format!(
                    "agent {i} ({}): outstanding offers {offered} + used {live} exceed its total {}",
                    a.info.id, a.total
                ));
            }
        }
        let m = &self.sim.m;
        if let Some(agent) = m.agent_ids.get(&a.info.id).and_then(|k| m.agents.get(k))
            && !agent.total.is_empty()
            && !agent.total.contains(&agent.used)
        {
            return Err(format!(
                "agent {i} ({}): the master's live tasks use {}, more than its total {}",
                a.info.id, agent.used, agent.total
            ));
        }
        Ok(())
    }

    /// Each framework holds exactly the offers the master has outstanding for it (the
    /// ids compared on full checks, the counts on the others).
    fn check_offers_agree(&self, full: bool) -> Result<(), String> {
        let m = &self.sim.m;
        for f in &self.frameworks {
            let master = m
                .framework_ids
                .get(&f.id)
                .filter(|_| !f.id.is_empty())
                .and_then(|fk| m.frameworks.get(fk));
            let count = master.map_or(0, |fw| fw.offers.len());
            let same = count == f.offers.len()
                && (!full
                    || master.is_none_or(|fw| {
                        fw.offers
                            .iter()
                            .all(|seq| f.offers.contains_key(&m.offer_id(*seq)))
                    }));
            if !same {
                return Err(format!(
                    "{} holds {} offers but the master has {count} outstanding for it",
                    f.name(),
                    f.offers.len(),
                ));
            }
        }
        Ok(())
    }

    /// What the master and the agent model hold for each agent `text` names.
    fn describe_agents_in(&self, text: &str) -> String {
        let mut out = String::new();
        for (id, &i) in &self.agent_by_id {
            if !text.contains(id.as_str()) {
                continue;
            }
            let a = &self.agents[i];
            out += &format!(
                "agent {i} ({id}) model: total {}, conn {:?}, paused {}, tasks {:?}, update heads {:?}\n",
                a.total,
                a.conn,
                a.paused_until.is_some(),
                a.tasks
                    .iter()
                    .map(|(k, t)| format!(
                        "{}/{} {:?} {:?} {}",
                        k.0, k.1, t.phase, t.state, t.resources
                    ))
                    .collect::<Vec<_>>(),
                a.updates
                    .iter()
                    .map(|(k, q)| format!(
                        "{} {:?} (+{})",
                        k.1,
                        q.pending.front().map(|s| state_from_i32(s.state)),
                        q.pending.len() - 1
                    ))
                    .collect::<Vec<_>>(),
            );
            let m = &self.sim.m;
            if let Some(agent) = m.agent_ids.get(id).and_then(|k| m.agents.get(k)) {
                let tasks: Vec<String> = agent
                    .tasks
                    .iter()
                    .filter_map(|(fk, tid)| m.frameworks.get(fk)?.tasks.get(tid))
                    .map(|t| format!("{}/{} {:?} {}", t.framework_id, t.id, t.state, t.resources))
                    .collect();
                out += &format!(
                    "agent {i} ({id}) master: {:?}, conn {:?}, used {}, {} offers, tasks {tasks:?}, free {:?}\n",
                    agent.status,
                    agent.conn,
                    agent.used,
                    agent.offers.len(),
                    m.allocator.available(agent.key).map(|r| r.to_string()),
                );
            }
        }
        out
    }

    // ---- the end of a walk ----

    fn settled(&self) -> bool {
        self.in_flight.is_empty()
            && self
                .agents
                .iter()
                .all(|a| a.active() && a.updates.is_empty())
            && self
                .frameworks
                .iter()
                .all(|f| f.sub.is_some() && f.acks.is_empty())
    }

    /// Heals every fault and lets everything flow until nothing is pending.
    fn settle(&mut self) -> Result<(), String> {
        let now = self.now();
        for a in &mut self.agents {
            if a.paused_until.is_some() {
                a.paused_until = Some(now);
            }
            if a.conn.is_none() {
                a.reconnect_at = Some(now);
            }
        }
        for f in &mut self.frameworks {
            if f.sub.is_none() {
                f.reconnect_at = Some(now);
            }
        }
        let mut round = 0;
        loop {
            round += 1;
            self.stats.settle_rounds += 1;
            self.tick(Duration::from_secs(1));
            // Kills complete.
            for i in 0..self.agents.len() {
                if !self.agents[i].active() {
                    continue;
                }
                let killed: Vec<TaskKey> = self.agents[i]
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.kill && t.phase != Phase::Terminated)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in killed {
                    if let Some(t) = self.agents[i].tasks.get_mut(&key) {
                        t.kill = false;
                    }
                    self.agent_end(
                        i,
                        &key,
                        TaskState::TaskKilled,
                        TaskStatusReason::ReasonTaskKilled,
                    );
                }
                for t in self.agents[i].tasks.values_mut() {
                    t.kill = false;
                }
            }
            self.deliver_all();
            for fi in 0..self.frameworks.len() {
                self.ack_all(fi, 100);
            }
            self.deliver_all();
            self.check(false)
                .map_err(|e| format!("while settling: {e}"))?;
            if self.settled() {
                break;
            }
            if round >= SETTLE_ROUNDS {
                return Err(format!(
                    "the world did not settle in {SETTLE_ROUNDS} rounds: {}",
                    self.pending_summary()
                ));
            }
        }
        // Frameworks ask about every task they believe live.
        for fi in 0..self.frameworks.len() {
            let tasks: Vec<v1::ReconcileTask> = self.frameworks[fi]
                .tasks
                .iter()
                .filter(|(_, v)| v.believed_live())
                .map(|(id, v)| v1::ReconcileTask {
                    task_id: id.clone(),
                    agent_id: v.agent_id.clone(),
                })
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let fw = self.frameworks[fi].sub.clone().unwrap();
            let r = self.call(
                &fw,
                Call::Reconcile(v1::ReconcileRequest {
                    header: None,
                    tasks,
                }),
            );
            self.expect_ok("final RECONCILE", r);
        }
        self.check(true)?;
        self.final_check()
    }

    fn pending_summary(&self) -> String {
        let mut parts = vec![format!("{} in flight", self.in_flight.len())];
        for (i, a) in self.agents.iter().enumerate() {
            if !a.active() || !a.updates.is_empty() {
                let heads: Vec<String> = a
                    .updates
                    .iter()
                    .map(|(k, q)| {
                        format!(
                            "{}/{} {:?}",
                            k.0,
                            k.1,
                            q.pending.front().map(|s| state_from_i32(s.state))
                        )
                    })
                    .collect();
                parts.push(format!(
                    "agent {i} ({}) active {} pending {heads:?}",
                    a.info.id,
                    a.active()
                ));
            }
            if parts.len() > 12 {
                break;
            }
        }
        for f in &self.frameworks {
            if f.sub.is_none() || !f.acks.is_empty() {
                parts.push(format!(
                    "{} connected {} acks {}",
                    f.name(),
                    f.sub.is_some(),
                    f.acks.len()
                ));
            }
        }
        parts.join("; ")
    }

    /// After settling: the master, the agents and the frameworks agree on every task.
    fn final_check(&self) -> Result<(), String> {
        let m = &self.sim.m;
        m.check_invariants()?;
        let mut master_live: BTreeMap<TaskKey, (String, TaskState)> = BTreeMap::new();
        for fw in m.frameworks.values() {
            if let Some(t) = fw.ended.values().next() {
                return Err(format!(
                    "framework {}: task {} ended {:?} and is still unacknowledged",
                    fw.id, t.status.task_id, t.status.state
                ));
            }
            for t in fw.tasks.values() {
                master_live.insert((fw.id.clone(), t.id.clone()), (t.agent_id.clone(), t.state));
            }
        }
        let mut agent_live: BTreeMap<TaskKey, (String, TaskState)> = BTreeMap::new();
        for a in &self.agents {
            for (key, t) in &a.tasks {
                if t.phase == Phase::Terminated {
                    return Err(format!(
                        "agent {}: task {}/{} ended but is not forgotten",
                        a.info.id, key.0, key.1
                    ));
                }
                agent_live.insert(key.clone(), (a.info.id.clone(), t.state));
            }
        }
        for (key, m_view) in &master_live {
            match agent_live.get(key) {
                None => {
                    return Err(format!(
                        "the master has task {}/{} live ({m_view:?}) but no agent runs it",
                        key.0, key.1
                    ));
                }
                Some(a_view) if a_view != m_view => {
                    return Err(format!(
                        "task {}/{}: the master says {m_view:?}, the agent {a_view:?}",
                        key.0, key.1
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((key, a_view)) = agent_live
            .iter()
            .find(|(k, _)| !master_live.contains_key(*k))
        {
            return Err(format!(
                "agent {} runs task {}/{} ({:?}) the master does not know",
                a_view.0, key.0, key.1, a_view.1
            ));
        }
        for f in &self.frameworks {
            for (tid, view) in &f.tasks {
                let key = (f.id.clone(), tid.clone());
                let live = master_live.get(&key);
                match (view.believed_live(), live) {
                    (true, None) => {
                        return Err(format!(
                            "{} believes task {tid} is live ({:?}) but it is not; its updates: {:?}",
                            f.name(),
                            view.last,
                            view.history
                        ));
                    }
                    (false, Some(l)) => {
                        return Err(format!(
                            "{} saw task {tid} end ({:?}) but it is live: {l:?}; its updates: {:?}",
                            f.name(),
                            view.last,
                            view.history
                        ));
                    }
                    (true, Some((agent, state)))
                        if view.last != Some(*state) || *agent != view.agent_id =>
                    {
                        return Err(format!(
                            "{}: task {tid} is {state:?} on {agent} but the framework last saw {:?} on {}",
                            f.name(),
                            view.last,
                            view.agent_id
                        ));
                    }
                    _ => {}
                }
            }
            for (key, _) in master_live.range((f.id.clone(), String::new())..) {
                if key.0 != f.id {
                    break;
                }
                if !f.tasks.contains_key(&key.1) {
                    return Err(format!(
                        "the master has task {} of {} that the framework never launched",
                        key.1,
                        f.name()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One walk; on failure, the seed, the step, the error and the last steps.
fn walk(seed: u64, steps: usize, agents: usize, trace: bool) -> Result<(Stats, u64), String> {
    let mut w = World::new(seed, agents, trace);
    let replay = format!(
        "replay: STRATA_SIM_SEED={seed} STRATA_SIM_STEPS={steps} STRATA_SIM_AGENTS={agents} \
         cargo test -p strata-master --lib core::tests::sim -- --nocapture"
    );
    let fail = |w: &World, at: String, e: String| {
        let tail: Vec<String> = w.log.iter().map(|l| format!("  {l}")).collect();
        format!(
            "simulation seed {seed} failed {at} ({agents} agents, {} frameworks): {e}\n{}{replay}\nlast steps, oldest first:\n{}",
            w.frameworks.len(),
            w.describe_agents_in(&e),
            tail.join("\n")
        )
    };
    if let Err(e) = w.check(true) {
        return Err(fail(&w, "at the start".into(), e));
    }
    for step in 1..=steps {
        let what = catch_unwind(AssertUnwindSafe(|| w.step()));
        let what = match what {
            Ok(what) => what,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(fail(&w, format!("at step {step}"), format!("panic: {msg}")));
            }
        };
        let secs = w.now().duration_since(w.start).as_secs_f64();
        w.log.push_back(format!("#{step} t={secs:.1}s {what}"));
        if w.log.len() > TAIL {
            w.log.pop_front();
        }
        if let Some(h) = w.trace {
            w.trace = Some(fnv(h, w.log.back().unwrap().as_bytes()));
        }
        if let Err(e) = w.check(step % FULL_CHECK_EVERY == 0) {
            return Err(fail(&w, format!("at step {step}"), e));
        }
    }
    w.stats.steps = steps;
    let settled = catch_unwind(AssertUnwindSafe(|| w.settle()));
    match settled {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(fail(&w, "at the end".into(), e)),
        Err(_) => return Err(fail(&w, "at the end".into(), "panic while settling".into())),
    }
    w.stats.simulated_secs = w.now().duration_since(w.start).as_secs();
    let digest = w.trace.unwrap_or(0);
    let snapshot = serde_json::to_string(&w.sim.m.snapshot()).unwrap();
    Ok((w.stats, fnv(digest, snapshot.as_bytes())))
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

/// Runs the walks of `seeds`, spread over up to `threads` threads (each walk is
/// single-threaded and deterministic; only the seeds are shared out). Results come
/// back in seed order.
fn walks(
    seeds: &[u64],
    steps: usize,
    agents: usize,
    threads: usize,
) -> Vec<(u64, f64, Result<Stats, String>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, seeds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else {
                        break;
                    };
                    let started = std::time::Instant::now();
                    let result = catch_unwind(|| walk(seed, steps, agents, false))
                        .unwrap_or_else(|_| Err(format!("simulation seed {seed} panicked")))
                        .map(|(stats, _)| stats);
                    let secs = started.elapsed().as_secs_f64();
                    results.lock().unwrap().push((seed, secs, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    results
}

#[test]
fn simulation_ten_thousand_steps() {
    let seeds: Vec<u64> = match env_number("STRATA_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("STRATA_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let steps = env_number("STRATA_SIM_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    let agents = env_number("STRATA_SIM_AGENTS").map_or(DEFAULT_AGENTS, |n| n.max(1) as usize);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (seed, secs, result) in walks(&seeds, steps, agents, threads) {
        match result {
            Ok(stats) => {
                eprintln!("sim seed {seed}: {steps} steps, {agents} agents, {secs:.1}s: {stats:?}");
                total.add(&stats);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {} walks failed; the first:\n{first}",
            failures.len(),
            seeds.len()
        );
    }
    eprintln!("sim total: {total:?}");
    if seeds.len() as u64 == DEFAULT_SEEDS && steps >= DEFAULT_STEPS && agents >= 100 {
        // The default run exercises every fault, not only the happy path.
        let t = &total;
        for (what, n) in [
            ("tasks launched", t.tasks_launched),
            ("duplicate updates", t.duplicate_updates),
            ("rescinds", t.rescinds),
            ("agents marked unreachable", t.unreachable),
            ("framework disconnects", t.framework_disconnects),
            ("frameworks removed", t.frameworks_removed),
            ("master restarts", t.master_restarts),
            ("stale accepts", t.stale_accepts),
        ] {
            assert!(n > 0, "the default walks never saw {what}: {total:?}");
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_walk() {
    let a = walk(7, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    let b = walk(7, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.1, b.1, "two runs of seed 7 differ");
    let c = walk(8, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.1, c.1, "seeds 7 and 8 walked the same way");
}
