//! Property test of the core: arbitrary sequences of well-formed inputs — agents
//! registering with random resources and attributes, frameworks subscribing with random
//! roles, ACCEPTs of random tasks against random (own, foreign, stale or made-up) offer
//! ids, declines, kills, acknowledgements, reconciles, status updates, disconnects and
//! re-registrations, operators' weights and maintenance with any number (NaN, infinite,
//! huge) — each with an advancing clock. `handle` must never panic, and after every step
//! the books balance (`Master::check_invariants`: free + offered + used == total on
//! every agent, so nothing is offered twice, and every index agrees with the others).
//!
//! Default: 96 walks of up to 150 steps; `PROPTEST_CASES=N` raises the number of walks.

use proptest::prelude::*;
use proptest::sample::Index;
use strata_proto::v1::{self, TaskState, event::Event, master_message::Message};

use super::*;

// ---- the inputs ----

/// An id a peer sends: one the master gave out (picked by index), or any string.
#[derive(Clone, Debug)]
enum Pick {
    Known(Index),
    Raw(String),
}

/// Which offer an ACCEPT or DECLINE names.
#[derive(Clone, Debug)]
enum OfferPick {
    /// One the framework holds.
    Own(Index),
    /// One another framework holds.
    Foreign(Index),
    /// Any offer ever made (most are used, declined or rescinded by now).
    Stale(Index),
    Raw(String),
}

#[derive(Clone, Debug)]
struct TaskSpec {
    id: Pick,
    resources: Vec<v1::Resource>,
    /// Names a known agent in `agent_id` (often not the offers' one), or none.
    agent: Option<Index>,
    command: bool,
    grace: Option<f64>,
}

#[derive(Clone, Debug)]
enum Op {
    /// Advances the clock and ticks; connected agents heartbeat unless `silent`.
    Tick {
        ms: u64,
        silent: bool,
    },
    AddAgent {
        host: u8,
        resources: Vec<v1::Resource>,
        attributes: Vec<(String, String)>,
        /// Registers under a known agent's id (a restarted agent, or a forgery).
        id: Option<Pick>,
    },
    Subscribe {
        roles: Vec<String>,
        suppressed: Vec<String>,
        partition_aware: bool,
        failover: f64,
        /// Subscribes with a known framework's id (failover), or a made-up one.
        id: Option<Pick>,
    },
    Accept {
        fw: Index,
        offers: Vec<OfferPick>,
        tasks: Vec<TaskSpec>,
        refuse: Option<f64>,
    },
    Decline {
        fw: Index,
        offers: Vec<OfferPick>,
        refuse: Option<f64>,
    },
    Kill {
        fw: Index,
        task: Pick,
        grace: Option<f64>,
    },
    Acknowledge {
        fw: Index,
        update: Pick,
    },
    Reconcile {
        fw: Index,
        tasks: Vec<(Pick, Pick)>,
    },
    SuppressRevive {
        fw: Index,
        roles: Vec<String>,
        suppress: bool,
    },
    Update {
        agent: Index,
        task: Pick,
        state: i32,
        /// Resends the latest uuid (a retry) instead of a fresh one.
        retry: bool,
    },
    Usage {
        agent: Index,
        task: Pick,
        cpus: f64,
    },
    /// A framework's message to a task, and an executor's message back.
    Message {
        fw: Index,
        agent: Pick,
        task: Pick,
        bytes: usize,
    },
    AgentDisconnect {
        agent: Index,
    },
    AgentReregister {
        agent: Index,
        extra: Option<TaskSpec>,
    },
    FrameworkDisconnect {
        fw: Index,
    },
    Teardown {
        fw: Index,
    },
    Weights(Vec<(String, f64)>),
    Maintenance {
        kind: u8,
        agent: Pick,
        grace: Option<f64>,
    },
}

/// Numbers a peer may send, the nasty ones often.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0.0, -0.0, 0.001, 0.5, 1.0, 2.5, 5.0, 30.0, -1.0, 1e9, 9.0e12, 1e300,
            f64::MAX, f64::MIN_POSITIVE, f64::NAN, f64::INFINITY, f64::NEG_INFINITY,
        ]),
        1 => any::<f64>(),
    ]
}

fn role() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "*", "web", "batch", "web/x", "", " ", "a b", ".", "..", "é",
    ])
    .prop_map(String::from)
}

fn raw_id() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["", "nope", ".", "..", "a/b", "x\0", "t1", "o-1"])
            .prop_map(String::from),
        "\\PC{0,8}",
        (250usize..260).prop_map(|n| "i".repeat(n)),
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        4 => any::<Index>().prop_map(Pick::Known),
        1 => raw_id().prop_map(Pick::Raw),
    ]
}

fn offer_pick() -> impl Strategy<Value = OfferPick> {
    prop_oneof![
        12 => any::<Index>().prop_map(OfferPick::Own),
        1 => any::<Index>().prop_map(OfferPick::Foreign),
        2 => any::<Index>().prop_map(OfferPick::Stale),
        1 => raw_id().prop_map(OfferPick::Raw),
    ]
}

/// Resources: mostly valid, reserved now and then, sometimes not valid at all.
fn resources(scale: u64) -> impl Strategy<Value = Vec<v1::Resource>> {
    let scalar = (
        prop::sample::select(vec!["cpus", "mem", "disk", "gpus"]),
        0..scale * 1000,
        prop::sample::select(vec!["", "", "", "*", "web", "batch"]),
    )
        .prop_map(|(name, milli, role)| v1::Resource {
            name: name.into(),
            scalar: milli as f64 / 1000.0,
            role: role.into(),
            ..Default::default()
        });
    let ports = (
        31_000u64..31_020,
        0u64..10,
        prop::sample::select(vec!["", "web"]),
    )
        .prop_map(|(b, l, role)| v1::Resource {
            name: "ports".into(),
            ranges: vec![v1::Range {
                begin: b,
                end: b + l,
            }],
            role: role.into(),
            ..Default::default()
        });
    let odd = (
        prop::sample::select(vec!["cpus", "ports", "bogus", ""]),
        number(),
    )
        .prop_map(|(name, scalar)| v1::Resource {
            name: name.into(),
            scalar,
            ..Default::default()
        });
    prop::collection::vec(prop_oneof![8 => scalar, 2 => ports, 1 => odd], 0..5)
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    // Mostly a task that fits a seed agent's offer, so walks launch and run tasks.
    let small = (1u64..1000, 1u64..512)
        .prop_map(|(cpus, mem)| Resources::cpus_mem(cpus as f64 / 1000.0, mem as f64).to_proto());
    (
        pick(),
        prop_oneof![3 => small, 1 => resources(4)],
        prop::option::weighted(0.1, any::<Index>()),
        prop::bool::weighted(0.95),
        prop::option::weighted(0.2, number()),
    )
        .prop_map(|(id, resources, agent, command, grace)| TaskSpec {
            id,
            resources,
            agent,
            command,
            grace,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let fw = any::<Index>;
    prop_oneof![
        10 => (prop_oneof![12 => 0u64..3000, 3 => 10_000u64..100_000, 1 => Just(700_000u64)], prop::bool::weighted(0.05))
            .prop_map(|(ms, silent)| Op::Tick { ms, silent }),
        2 => (
            any::<u8>(),
            resources(16),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["rack", "zone", "containerizers", ""]),
                    prop::sample::select(vec!["r1", "r2", "process,docker", ""]),
                )
                    .prop_map(|(n, v)| (n.to_string(), v.to_string())),
                0..3,
            ),
            prop::option::weighted(0.2, pick()),
        )
            .prop_map(|(host, resources, attributes, id)| Op::AddAgent {
                host,
                resources,
                attributes,
                id,
            }),
        3 => (
            prop_oneof![
                3 => prop::sample::subsequence(vec!["*".to_string(), "web".into(), "batch".into()], 0..=3),
                1 => prop::collection::vec(role(), 0..3),
            ],
            prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(role(), 0..2)],
            any::<bool>(),
            prop_oneof![3 => (0u32..120).prop_map(f64::from), 1 => number()],
            prop::option::weighted(0.4, pick()),
        )
            .prop_map(|(roles, suppressed, partition_aware, failover, id)| Op::Subscribe {
                roles,
                suppressed,
                partition_aware,
                failover,
                id,
            }),
        8 => (
            fw(),
            prop_oneof![9 => prop::collection::vec(offer_pick(), 1..=2), 1 => Just(vec![])],
            prop_oneof![9 => prop::collection::vec(task_spec(), 1..4), 1 => Just(vec![])],
            prop::option::weighted(0.3, number()),
        )
            .prop_map(|(fw, offers, tasks, refuse)| Op::Accept {
                fw,
                offers,
                tasks,
                refuse,
            }),
        3 => (fw(), prop::collection::vec(offer_pick(), 0..3), prop::option::of(number()))
            .prop_map(|(fw, offers, refuse)| Op::Decline { fw, offers, refuse }),
        2 => (fw(), pick(), prop::option::of(number()))
            .prop_map(|(fw, task, grace)| Op::Kill { fw, task, grace }),
        2 => (fw(), pick()).prop_map(|(fw, update)| Op::Acknowledge { fw, update }),
        1 => (fw(), prop::collection::vec((pick(), pick()), 0..3))
            .prop_map(|(fw, tasks)| Op::Reconcile { fw, tasks }),
        1 => (fw(), prop::collection::vec(role(), 0..2), any::<bool>())
            .prop_map(|(fw, roles, suppress)| Op::SuppressRevive { fw, roles, suppress }),
        6 => (any::<Index>(), pick(), prop_oneof![
                6 => Just(3),
                // Every state, the master-only ones included (an agent that sends
                // them is refused: `an_agent_reporting_its_task_unreachable_is_ignored`).
                6 => 0i32..=14,
                1 => Just(99)
            ], prop::bool::weighted(0.2))
            .prop_map(|(agent, task, state, retry)| Op::Update {
                agent,
                task,
                state,
                retry,
            }),
        1 => (any::<Index>(), pick(), number())
            .prop_map(|(agent, task, cpus)| Op::Usage { agent, task, cpus }),
        1 => (fw(), pick(), pick(), 0usize..2048)
            .prop_map(|(fw, agent, task, bytes)| Op::Message { fw, agent, task, bytes }),
        1 => any::<Index>().prop_map(|agent| Op::AgentDisconnect { agent }),
        2 => (any::<Index>(), prop::option::weighted(0.2, task_spec()))
            .prop_map(|(agent, extra)| Op::AgentReregister { agent, extra }),
        1 => fw().prop_map(|fw| Op::FrameworkDisconnect { fw }),
        1 => fw().prop_map(|fw| Op::Teardown { fw }),
        1 => prop::collection::vec((role(), number()), 0..3).prop_map(Op::Weights),
        2 => (0u8..4, pick(), prop::option::of(number()))
            .prop_map(|(kind, agent, grace)| Op::Maintenance { kind, agent, grace }),
    ]
}

// ---- the world the inputs act on ----

struct ModelAgent {
    conn: ConnId,
    info: v1::AgentInfo,
    connected: bool,
    /// Tasks the master sent it: (framework id, task, latest state sent).
    tasks: Vec<(String, v1::TaskInfo, TaskState)>,
}

struct ModelFramework {
    fw: SimFramework,
    offers: Vec<String>,
}

#[derive(Default)]
struct Walk {
    agents: Vec<ModelAgent>,
    frameworks: Vec<ModelFramework>,
    /// Every offer id ever sent.
    all_offers: Vec<String>,
    /// Every task id ever launched.
    task_ids: Vec<String>,
    /// Every update sent to a framework: (framework index, agent id, task id, uuid).
    updates: Vec<(usize, String, String, String)>,
    next: u64,
}

fn at<T>(v: &[T], i: &Index) -> Option<usize> {
    (!v.is_empty()).then(|| i.index(v.len()))
}

impl Walk {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn id_of(&self, p: &Pick, known: &[String]) -> String {
        match p {
            Pick::Known(i) => at(known, i).map(|i| known[i].clone()).unwrap_or_default(),
            Pick::Raw(s) => s.clone(),
        }
    }

    fn agent_ids(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.info.id.clone()).collect()
    }

    fn framework_ids(&self) -> Vec<String> {
        self.frameworks.iter().map(|f| f.fw.id.clone()).collect()
    }

    fn offer_id(&self, fw: usize, p: &OfferPick) -> String {
        match p {
            OfferPick::Own(i) => {
                let o = &self.frameworks[fw].offers;
                at(o, i).map(|i| o[i].clone()).unwrap_or_default()
            }
            OfferPick::Foreign(i) => {
                let foreign: Vec<&String> = self
                    .frameworks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != fw)
                    .flat_map(|(_, f)| f.offers.iter())
                    .collect();
                at(&foreign, i)
                    .map(|i| foreign[i].clone())
                    .unwrap_or_default()
            }
            OfferPick::Stale(i) => at(&self.all_offers, i)
                .map(|i| self.all_offers[i].clone())
                .unwrap_or_default(),
            OfferPick::Raw(s) => s.clone(),
        }
    }

    fn task_info(&mut self, spec: &TaskSpec, agent_id: &str) -> v1::TaskInfo {
        let id = match &spec.id {
            // Mostly fresh ids; a known one now and then.
            Pick::Known(i) if i.index(8) == 0 => {
                let ids = self.task_ids.clone();
                self.id_of(&spec.id, &ids)
            }
            Pick::Known(_) => self.fresh("t"),
            Pick::Raw(s) => s.clone(),
        };
        self.task_ids.push(id.clone());
        v1::TaskInfo {
            task_id: id.clone(),
            name: format!("task {id}"),
            agent_id: if spec.agent.is_some() {
                agent_id.to_string()
            } else {
                String::new()
            },
            resources: spec.resources.clone(),
            command: spec.command.then(|| v1::CommandInfo {
                shell: true,
                value: "sleep 10".into(),
                ..Default::default()
            }),
            kill_policy: spec.grace.map(|g| v1::KillPolicy {
                grace_period_seconds: Some(g),
            }),
            ..Default::default()
        }
    }

    /// Applies what the master sent to the model.
    fn absorb(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::ToFramework {
                    conn,
                    event: v1::Event { event: Some(ev) },
                } => {
                    let Some(fi) = self.frameworks.iter().position(|f| f.fw.conn == conn) else {
                        continue;
                    };
                    match ev {
                        Event::Offers(o) => {
                            for offer in o.offers {
                                self.all_offers.push(offer.id.clone());
                                self.frameworks[fi].offers.push(offer.id);
                            }
                        }
                        Event::Rescind(r) => {
                            self.frameworks[fi].offers.retain(|id| *id != r.offer_id)
                        }
                        Event::Update(u) => {
                            if let Some(s) = u.status
                                && !s.uuid.is_empty()
                            {
                                self.updates.push((fi, s.agent_id, s.task_id, s.uuid));
                            }
                        }
                        _ => {}
                    }
                }
                Effect::CloseFramework { conn } => {
                    if let Some(f) = self.frameworks.iter_mut().find(|f| f.fw.conn == conn) {
                        f.offers.clear();
                    }
                }
                Effect::ToAgent {
                    conn,
                    message: v1::MasterMessage { message: Some(m) },
                } => {
                    let Some(a) = self.agents.iter_mut().find(|a| a.conn == conn) else {
                        continue;
                    };
                    for m in split_run_tasks(m) {
                        match m {
                            Message::RunTask(r) => {
                                let fw_id = r.framework.map(|f| f.id).unwrap_or_default();
                                if let Some(t) = r.task {
                                    a.tasks.push((fw_id, t, TaskState::TaskStaging));
                                }
                            }
                            Message::ShutdownFramework(s) => {
                                a.tasks.retain(|t| t.0 != s.framework_id)
                            }
                            _ => {}
                        }
                    }
                }
                Effect::CloseAgent { conn } => {
                    if let Some(a) = self.agents.iter_mut().find(|a| a.conn == conn) {
                        a.connected = false;
                    }
                }
                _ => {}
            }
        }
    }

    /// Carries out one input; returns what was done, for the failure message.
    fn step(&mut self, sim: &mut Sim, op: &Op) -> String {
        match op {
            Op::Tick { ms, silent } => {
                sim.advance(Duration::from_millis(*ms));
                if !silent {
                    for a in self.agents.iter().filter(|a| a.connected) {
                        let message = v1::AgentMessage {
                            message: Some(v1::agent_message::Message::Heartbeat(
                                v1::AgentHeartbeat {},
                            )),
                        };
                        // Agent messages have no answer: the result is always Ok.
                        let _ = sim.handle(Input::AgentMessage {
                            conn: a.conn,
                            message,
                        });
                    }
                }
                format!(
                    "tick +{ms}ms silent={silent}: {:?}",
                    sim.handle(Input::Tick)
                )
            }
            Op::AddAgent {
                host,
                resources,
                attributes,
                id,
            } => {
                let known = self.agent_ids();
                let id = id
                    .as_ref()
                    .map(|p| self.id_of(p, &known))
                    .unwrap_or_default();
                let info = v1::AgentInfo {
                    principal: String::new(),
                    id,
                    hostname: format!("h{host}"),
                    address: format!("h{host}:5051"),
                    resources: resources.clone(),
                    attributes: attributes
                        .iter()
                        .map(|(name, value)| v1::Attribute {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                };
                let conn = sim.conn();
                let register = v1::Register {
                    checkpointed: None,
                    agent_info: Some(info.clone()),
                    tasks: vec![],
                    version: "test".into(),
                };
                let r = sim.handle(Input::AgentRegister {
                    conn,
                    register,
                    peer: None,
                });
                let effects = sim.effects();
                let registered = agent_messages(&effects, conn)
                    .into_iter()
                    .find_map(|m| match m {
                        Message::Registered(r) => Some(r.agent_id),
                        _ => None,
                    });
                if let Some(agent_id) = &registered {
                    // A known id registering anew replaces that agent's stream.
                    if let Some(a) = self.agents.iter_mut().find(|a| a.info.id == *agent_id) {
                        a.conn = conn;
                        a.connected = true;
                        a.tasks.clear();
                    } else {
                        self.agents.push(ModelAgent {
                            conn,
                            info: v1::AgentInfo {
                                id: agent_id.clone(),
                                ..info
                            },
                            connected: true,
                            tasks: vec![],
                        });
                    }
                }
                self.absorb(effects);
                format!("agent registers {r:?}: {registered:?}")
            }
            Op::Subscribe {
                roles,
                suppressed,
                partition_aware,
                failover,
                id,
            } => {
                let known = self.framework_ids();
                let id = id
                    .as_ref()
                    .map(|p| self.id_of(p, &known))
                    .unwrap_or_default();
                let mut info = framework_info("fw", &[], *partition_aware);
                info.id = id;
                info.roles = roles.clone();
                info.failover_timeout_seconds = *failover;
                let conn = sim.conn();
                let request = v1::SubscribeRequest {
                    framework_info: Some(info),
                    suppressed_roles: suppressed.clone(),
                };
                let r = sim.handle(Input::Subscribe { conn, request });
                let effects = sim.effects();
                let sub = events_for(&effects, conn)
                    .into_iter()
                    .find_map(|e| match e {
                        Event::Subscribed(s) => Some(s),
                        _ => None,
                    });
                if let Some(s) = &sub {
                    let fw = SimFramework {
                        conn,
                        id: s.framework_id.clone(),
                        stream: s.stream_id.clone(),
                    };
                    match self
                        .frameworks
                        .iter_mut()
                        .find(|f| f.fw.id == s.framework_id)
                    {
                        Some(f) => {
                            f.fw = fw;
                            f.offers.clear();
                        }
                        None => self.frameworks.push(ModelFramework { fw, offers: vec![] }),
                    }
                }
                self.absorb(effects);
                format!("subscribe {r:?}: {:?}", sub.map(|s| s.framework_id))
            }
            Op::Accept {
                fw,
                offers,
                tasks,
                refuse,
            } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "accept: no framework".into();
                };
                let offer_ids: Vec<String> = offers.iter().map(|p| self.offer_id(fi, p)).collect();
                let agent_ids = self.agent_ids();
                let tasks: Vec<v1::TaskInfo> = tasks
                    .iter()
                    .map(|spec| {
                        let agent = spec
                            .agent
                            .as_ref()
                            .and_then(|i| at(&agent_ids, i))
                            .map(|i| agent_ids[i].clone())
                            .unwrap_or_default();
                        self.task_info(spec, &agent)
                    })
                    .collect();
                self.frameworks[fi]
                    .offers
                    .retain(|o| !offer_ids.contains(o));
                let f = self.frameworks[fi].fw.clone();
                let r = sim.accept(&f, offer_ids.clone(), tasks, refuse.and_then(refuse_filter));
                format!("framework {fi} accepts {offer_ids:?}: {r:?}")
            }
            Op::Decline { fw, offers, refuse } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "decline: no framework".into();
                };
                let offer_ids: Vec<String> = offers.iter().map(|p| self.offer_id(fi, p)).collect();
                self.frameworks[fi]
                    .offers
                    .retain(|o| !offer_ids.contains(o));
                let f = self.frameworks[fi].fw.clone();
                let r = sim.decline(&f, offer_ids.clone(), refuse.and_then(refuse_filter));
                format!("framework {fi} declines {offer_ids:?}: {r:?}")
            }
            Op::Kill { fw, task, grace } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "kill: no framework".into();
                };
                let task_id = self.id_of(task, &self.task_ids.clone());
                let f = self.frameworks[fi].fw.clone();
                let r = sim.call(
                    &f,
                    Call::Kill(v1::KillRequest {
                        header: Some(f.header()),
                        task_id: task_id.clone(),
                        agent_id: String::new(),
                        kill_policy: grace.map(|g| v1::KillPolicy {
                            grace_period_seconds: Some(g),
                        }),
                    }),
                );
                format!("framework {fi} kills {task_id:?}: {r:?}")
            }
            Op::Acknowledge { fw, update } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "ack: no framework".into();
                };
                let (agent_id, task_id, uuid) = match update {
                    Pick::Known(i) if !self.updates.is_empty() => {
                        let (_, a, t, u) = self.updates[i.index(self.updates.len())].clone();
                        (a, t, u)
                    }
                    Pick::Known(_) => Default::default(),
                    Pick::Raw(s) => (s.clone(), s.clone(), s.clone()),
                };
                let f = self.frameworks[fi].fw.clone();
                let r = sim.call(
                    &f,
                    Call::Acknowledge(v1::AcknowledgeRequest {
                        header: Some(f.header()),
                        agent_id,
                        task_id: task_id.clone(),
                        uuid,
                    }),
                );
                format!("framework {fi} acknowledges {task_id:?}: {r:?}")
            }
            Op::Reconcile { fw, tasks } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "reconcile: no framework".into();
                };
                let (task_ids, agent_ids) = (self.task_ids.clone(), self.agent_ids());
                let tasks = tasks
                    .iter()
                    .map(|(t, a)| v1::ReconcileTask {
                        task_id: self.id_of(t, &task_ids),
                        agent_id: self.id_of(a, &agent_ids),
                    })
                    .collect();
                let f = self.frameworks[fi].fw.clone();
                let r = sim.call(
                    &f,
                    Call::Reconcile(v1::ReconcileRequest {
                        header: Some(f.header()),
                        tasks,
                    }),
                );
                format!("framework {fi} reconciles: {r:?}")
            }
            Op::SuppressRevive {
                fw,
                roles,
                suppress,
            } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "suppress: no framework".into();
                };
                let f = self.frameworks[fi].fw.clone();
                let header = Some(f.header());
                let roles = roles.clone();
                let call = if *suppress {
                    Call::Suppress(v1::SuppressRequest { header, roles })
                } else {
                    Call::Revive(v1::ReviveRequest { header, roles })
                };
                let r = sim.call(&f, call);
                format!("framework {fi} suppress={suppress}: {r:?}")
            }
            Op::Update {
                agent,
                task,
                state,
                retry,
            } => {
                let Some(ai) = at(&self.agents, agent) else {
                    return "update: no agent".into();
                };
                let a = &self.agents[ai];
                let (fw_id, task_id) = match task {
                    Pick::Known(i) if !a.tasks.is_empty() => {
                        let t = &a.tasks[i.index(a.tasks.len())];
                        (t.0.clone(), t.1.task_id.clone())
                    }
                    Pick::Known(_) => return "update: no task".into(),
                    Pick::Raw(s) => (
                        self.frameworks
                            .first()
                            .map(|f| f.fw.id.clone())
                            .unwrap_or_default(),
                        s.clone(),
                    ),
                };
                if !*retry {
                    self.next += 1;
                }
                let status = v1::TaskStatus {
                    task_id: task_id.clone(),
                    state: *state,
                    source: v1::TaskStatusSource::SourceAgent as i32,
                    agent_id: a.info.id.clone(),
                    framework_id: fw_id,
                    uuid: format!("u{}", self.next),
                    timestamp: 1.0,
                    ..Default::default()
                };
                let message = v1::AgentMessage {
                    message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                        status: Some(status),
                    })),
                };
                let r = sim.handle(Input::AgentMessage {
                    conn: a.conn,
                    message,
                });
                let s = TaskState::try_from(*state).unwrap_or(TaskState::Unspecified);
                let a = &mut self.agents[ai];
                if strata_proto::is_terminal(s) {
                    a.tasks.retain(|t| t.1.task_id != task_id);
                } else {
                    // Reported in that state when it re-registers, whatever it is (see
                    // `an_agent_back_from_unreachable_reporting_state_zero_is_killed`).
                    for t in a.tasks.iter_mut().filter(|t| t.1.task_id == task_id) {
                        t.2 = s;
                    }
                }
                format!("agent {ai}: {task_id:?} -> {state}: {r:?}")
            }
            Op::Message {
                fw,
                agent,
                task,
                bytes,
            } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "message: no framework".into();
                };
                let (agent_ids, task_ids) = (self.agent_ids(), self.task_ids.clone());
                let (agent_id, task_id) =
                    (self.id_of(agent, &agent_ids), self.id_of(task, &task_ids));
                let f = self.frameworks[fi].fw.clone();
                let r = sim.call(
                    &f,
                    Call::Message(v1::MessageRequest {
                        header: Some(f.header()),
                        agent_id: agent_id.clone(),
                        task_id: task_id.clone(),
                        data: vec![7; *bytes],
                    }),
                );
                let back = self.agents.iter().find(|a| a.info.id == agent_id).map(|a| {
                    let message = v1::AgentMessage {
                        message: Some(v1::agent_message::Message::ExecutorMessage(
                            v1::ExecutorMessage {
                                framework_id: f.id.clone(),
                                task_id: task_id.clone(),
                                data: vec![8; *bytes],
                            },
                        )),
                    };
                    sim.handle(Input::AgentMessage {
                        conn: a.conn,
                        message,
                    })
                });
                format!("framework {fi} messages {task_id:?}: {r:?}, back {back:?}")
            }
            Op::Usage { agent, task, cpus } => {
                let Some(ai) = at(&self.agents, agent) else {
                    return "usage: no agent".into();
                };
                let a = &self.agents[ai];
                let ids: Vec<String> = a.tasks.iter().map(|t| t.1.task_id.clone()).collect();
                let fws: Vec<String> = a.tasks.iter().map(|t| t.0.clone()).collect();
                let message = v1::AgentMessage {
                    message: Some(v1::agent_message::Message::UsageReport(v1::UsageReport {
                        volumes: Vec::new(),
                        tasks: vec![v1::TaskUsage {
                            framework_id: self.id_of(task, &fws),
                            task_id: self.id_of(task, &ids),
                            statistics: Some(v1::ResourceStatistics {
                                timestamp: *cpus,
                                cpus_limit: Some(*cpus),
                                cpus_user_time_secs: Some(*cpus),
                                ..Default::default()
                            }),
                        }],
                    })),
                };
                let r = sim.handle(Input::AgentMessage {
                    conn: a.conn,
                    message,
                });
                format!("agent {ai} reports usage: {r:?}")
            }
            Op::AgentDisconnect { agent } => {
                let Some(ai) = at(&self.agents, agent) else {
                    return "disconnect: no agent".into();
                };
                self.agents[ai].connected = false;
                let conn = self.agents[ai].conn;
                format!(
                    "agent {ai} disconnects: {:?}",
                    sim.handle(Input::AgentDisconnected { conn })
                )
            }
            Op::AgentReregister { agent, extra } => {
                let Some(ai) = at(&self.agents, agent) else {
                    return "reregister: no agent".into();
                };
                let extra = extra.as_ref().map(|spec| {
                    let id = self.agents[ai].info.id.clone();
                    let fw_id = self
                        .frameworks
                        .first()
                        .map(|f| f.fw.id.clone())
                        .unwrap_or_default();
                    // A task the master never placed here, with resources that may
                    // exceed what the agent has free (then it is killed: see
                    // `an_agent_reporting_a_task_beyond_its_resources_has_it_killed`).
                    let task = self.task_info(spec, &id);
                    (fw_id, task, TaskState::TaskRunning)
                });
                let a = &mut self.agents[ai];
                a.tasks.extend(extra);
                let tasks = a
                    .tasks
                    .iter()
                    .map(|(fw_id, t, state)| v1::RunningTask {
                        framework_id: fw_id.clone(),
                        task: Some(t.clone()),
                        state: *state as i32,
                        framework: None,
                    })
                    .collect();
                let conn = sim.conn();
                let register = v1::Register {
                    checkpointed: None,
                    agent_info: Some(a.info.clone()),
                    tasks,
                    version: "test".into(),
                };
                a.conn = conn;
                a.connected = true;
                let r = sim.handle(Input::AgentRegister {
                    conn,
                    register,
                    peer: None,
                });
                format!("agent {ai} re-registers: {r:?}")
            }
            Op::FrameworkDisconnect { fw } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "fw disconnect: none".into();
                };
                let f = &mut self.frameworks[fi];
                f.offers.clear();
                let conn = f.fw.conn;
                format!(
                    "framework {fi} disconnects: {:?}",
                    sim.handle(Input::FrameworkDisconnected { conn })
                )
            }
            Op::Teardown { fw } => {
                let Some(fi) = at(&self.frameworks, fw) else {
                    return "teardown: none".into();
                };
                let f = self.frameworks[fi].fw.clone();
                let r = sim.call(
                    &f,
                    Call::Teardown(v1::TeardownRequest {
                        header: Some(f.header()),
                    }),
                );
                format!("framework {fi} tears down: {r:?}")
            }
            Op::Weights(weights) => {
                let r = sim.handle(Input::Operator(OperatorCall::UpdateWeights(
                    weights.clone(),
                )));
                format!("weights {weights:?}: {r:?}")
            }
            Op::Maintenance { kind, agent, grace } => {
                let agent_id = self.id_of(agent, &self.agent_ids());
                // What the HTTP and gRPC adapters do with the operator's number.
                let call = match kind {
                    0 => OperatorCall::DeactivateAgent { agent_id },
                    1 => match grace_from_secs(*grace) {
                        Ok(max_grace_period) => OperatorCall::DrainAgent {
                            agent_id,
                            max_grace_period,
                        },
                        Err(e) => return format!("drain refused by the adapter: {e}"),
                    },
                    2 => OperatorCall::ReactivateAgent { agent_id },
                    _ => OperatorCall::MarkAgentGone { agent_id },
                };
                let what = format!("{call:?}");
                format!("{what}: {:?}", sim.handle(Input::Operator(call)))
            }
        }
    }
}

/// `refuse` of the shared helpers, under a name the `refuse` fields do not shadow.
fn refuse_filter(seconds: f64) -> Option<v1::Filters> {
    refuse(seconds)
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Checks what must hold after every step.
fn check(sim: &Sim, step: usize, log: &[String]) -> Result<(), TestCaseError> {
    let fail = |what: String| {
        let tail: Vec<&String> = log.iter().rev().take(12).collect();
        TestCaseError::fail(format!(
            "step {step}: {what}\nlast steps (newest first): {tail:#?}"
        ))
    };
    sim.m.check_invariants().map_err(fail)?;
    let snap = sim.m.snapshot();
    for r in &snap.roles {
        if !(r.weight.is_finite() && r.weight > 0.0) {
            return Err(fail(format!("role {} has weight {}", r.name, r.weight)));
        }
    }
    serde_json::to_string(&snap).map_err(|e| fail(e.to_string()))?;
    let _ = sim.m.metrics();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(96),
        // Shrinking a walk replays it many times; a failure is readable without all of it.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_walks_never_panic_and_keep_the_books_balanced(
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new();
        let mut walk = Walk::default();
        // A small cluster to start from, so most walks get offers.
        for i in 0..3 {
            let a = sim.add_agent(&format!("seed{i}"), "cpus:4;mem:4096;ports:[31000-31009]");
            walk.agents.push(ModelAgent {
                conn: a.conn,
                info: a.info,
                connected: true,
                tasks: vec![],
            });
        }
        for roles in [&[][..], &["web"][..]] {
            let fw = sim.subscribe_info(v1::FrameworkInfo {
                failover_timeout_seconds: 60.0,
                ..framework_info("seed", roles, true)
            });
            walk.frameworks.push(ModelFramework { fw, offers: vec![] });
        }
        let mut log = Vec::with_capacity(ops.len());
        for (step, op) in ops.iter().enumerate() {
            sim.advance(Duration::from_millis(50));
            let what = walk.step(&mut sim, op);
            let effects = sim.effects();
            walk.absorb(effects);
            log.push(what);
            check(&sim, step, &log)?;
        }
    }
}

/// Found by the walk above: an agent that re-registered reporting a task the master
/// never placed on it was believed about the task's resources, even beyond what the
/// agent registered (used beyond total, the role's share skewed). Now such a task is
/// taken only within the agent's free resources; a larger one is killed.
#[test]
fn an_agent_reporting_a_task_beyond_its_resources_has_it_killed() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:4096");
    let fw = sim.subscribe("fw");
    sim.m.check_invariants().unwrap();
    sim.reregister(&agent, vec![running(&fw, "ghost", "cpus:8;mem:64")]);
    assert_eq!(
        sim.task_state("ghost"),
        None,
        "not taken on the agent's word"
    );
    let view = sim.agent_view(&agent.id);
    assert!(
        view.total.contains(&view.used),
        "used {} is beyond total {}",
        view.used,
        view.total
    );
    sim.m.check_invariants().unwrap();
}

/// Found by the walk above: an agent could send TASK_UNREACHABLE for one of its own
/// tasks and the master took it (an UNREACHABLE task on an ACTIVE agent, its
/// resources counted twice). States only the master sets are now refused from agents.
#[test]
fn an_agent_reporting_its_task_unreachable_is_ignored() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:4096", "cpus:1;mem:128", "t1");
    sim.agent_update(&agent, &fw.id, "t1", v1::TaskState::TaskRunning, "u1");
    sim.m.check_invariants().unwrap();
    sim.agent_update(&agent, &fw.id, "t1", v1::TaskState::TaskUnreachable, "u2");
    let unreachable = sim.m.check_invariants();
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_RUNNING"));
    sim.agent_update(&agent, &fw.id, "t1", v1::TaskState::TaskFinished, "u3");
    let finished = sim.m.check_invariants();
    assert_eq!(
        (unreachable, finished),
        (Ok(()), Ok(())),
        "task state {:?}",
        sim.task_state("t1")
    );
}

/// Found by the walk above: an agent back from UNREACHABLE that reported one of its
/// tasks with state TASK_STATE_UNSPECIFIED (0) left that task UNREACHABLE on an ACTIVE
/// agent, its resources in use twice. Now a task reported in a state an agent never
/// reports is not taken as seen (it ends GONE) and the agent is told to kill it.
#[test]
fn an_agent_back_from_unreachable_reporting_state_zero_is_killed() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:4096");
    let fw = sim.subscribe_info(framework_info("fw", &[], true));
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:128")],
        None,
    )
    .unwrap();
    sim.agent_update(&agent, &fw.id, "t1", v1::TaskState::TaskRunning, "u1");
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    sim.tick_after(76.0);
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_UNREACHABLE"));
    sim.m.check_invariants().unwrap();
    let mut reported = running(&fw, "t1", "cpus:1;mem:128");
    reported.state = v1::TaskState::Unspecified as i32;
    sim.reregister(&agent, vec![reported]);
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_GONE"));
    assert_eq!(
        sim.m.check_invariants(),
        Ok(()),
        "task state {:?}",
        sim.task_state("t1")
    );
}
