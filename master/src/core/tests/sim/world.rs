//! The world of a walk: its configuration (frameworks, agent sizes, the core's short
//! timeouts), the `World` that holds the master under test and the models of every
//! agent and framework, and the plumbing that feeds the master an input and applies
//! the effects it returns to the models.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use strata_proto::Resources;

use super::agent::{InFlight, ModelAgent, PING};
use super::framework::ModelFramework;
use crate::core::rng::Rng;
use crate::core::tests::*;

pub(super) fn sim_config(seed: u64, generation: u32) -> CoreConfig {
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
        ..CoreConfig::default()
    }
}

/// The frameworks of the world; a walk uses the first 3 + seed % 3.
pub(super) struct FrameworkSpec {
    pub(super) name: &'static str,
    pub(super) roles: &'static [&'static str],
    pub(super) partition_aware: bool,
    pub(super) killing_state: bool,
    pub(super) failover: f64,
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

pub(super) type TaskKey = (String, String); // (framework id, task id)

/// What one walk did, for the summary and to check the walks exercise every fault.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) steps: usize,
    pub(super) simulated_secs: u64,
    pub(super) tasks_launched: u64,
    pub(super) updates_seen: u64,
    pub(super) duplicate_updates: u64,
    pub(super) offers: u64,
    pub(super) rescinds: u64,
    pub(super) unreachable: u64,
    pub(super) agents_paused: u64,
    pub(super) agents_disconnected: u64,
    pub(super) framework_disconnects: u64,
    pub(super) frameworks_removed: u64,
    pub(super) master_restarts: u64,
    pub(super) stale_accepts: u64,
    pub(super) settle_rounds: u64,
    pub(super) agent_checks: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
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

pub(super) struct World {
    pub(super) seed: u64,
    pub(super) rng: Rng,
    pub(super) sim: Sim,
    pub(super) start: Instant,
    pub(super) generation: u32,
    /// The fold of everything the masters persisted.
    pub(super) registry: Registry,
    pub(super) agents: Vec<ModelAgent>,
    pub(super) agent_by_conn: BTreeMap<ConnId, usize>,
    pub(super) agent_by_id: BTreeMap<String, usize>,
    pub(super) frameworks: Vec<ModelFramework>,
    pub(super) fw_by_conn: BTreeMap<ConnId, usize>,
    pub(super) in_flight: Vec<InFlight>,
    /// Updates sent lately, to deliver again much later (old duplicates).
    pub(super) recent: VecDeque<InFlight>,
    /// Agents with tasks that have not ended.
    pub(super) busy: BTreeSet<usize>,
    /// Every offer id ever sent.
    pub(super) offer_ids: BTreeSet<String>,
    /// Outstanding offers per agent, as the frameworks hold them.
    pub(super) offered: BTreeMap<usize, Resources>,
    /// Framework ids the master removed.
    pub(super) removed: BTreeSet<String>,
    /// Agents touched by the current step.
    pub(super) dirty: BTreeSet<usize>,
    pub(super) full_check: bool,
    /// Task ids the current ACCEPT reuses on purpose: their refusals are not updates of
    /// the live task.
    pub(super) reused_ids: BTreeSet<(usize, String)>,
    pub(super) violation: Option<String>,
    pub(super) next_uuid: u64,
    pub(super) log: VecDeque<String>,
    pub(super) stats: Stats,
    /// With `Some`, a digest of every effect (the replay test).
    pub(super) trace: Option<u64>,
}

pub(super) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl World {
    pub(super) fn new(seed: u64, agents: usize, trace: bool) -> World {
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
                principal: String::new(),
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

    pub(super) fn now(&self) -> Instant {
        self.sim.now
    }

    pub(super) fn unix(&self, now: Instant) -> f64 {
        1_000_000.0 + now.duration_since(self.start).as_secs_f64()
    }

    pub(super) fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    pub(super) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below((hi - lo).max(1) as usize) as u64)
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())])
    }

    pub(super) fn violate(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    /// Feeds an input that must be accepted, then applies the effects to the model.
    pub(super) fn input(&mut self, input: Input) {
        if let Err(e) = self.sim.handle(input) {
            self.violate(format!("input refused: {e}"));
        }
        self.absorb();
    }

    /// A scheduler call; its result is returned after the effects are applied.
    pub(super) fn call(&mut self, fw: &SimFramework, call: Call) -> Result<(), CallError> {
        let r = self.sim.call(fw, call);
        self.absorb();
        r
    }

    pub(super) fn expect_ok(&mut self, what: &str, r: Result<(), CallError>) {
        if let Err(e) = r {
            self.violate(format!("{what} refused: {e}"));
        }
    }

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
}
