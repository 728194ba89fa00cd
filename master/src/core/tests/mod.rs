//! Tests of the core driven through `Master::handle`, with simulated agents and
//! frameworks: each test is a short story of what peers do and what they would see.

use std::time::{Duration, Instant};

use strata_proto::Resources;
use strata_proto::v1::{self, event::Event, master_message::Message};

use super::*;

mod agents;
mod allocation;
mod authz;
mod calls;
mod chaos;
mod dashboard;
mod docker_volumes;
mod drain;
mod frameworks;
mod limits;
mod maintenance;
mod objects;
mod props;
mod sim;
mod validation;
mod volumes;

/// A master under test with its own clock and connection numbers.
pub struct Sim {
    pub m: Master,
    pub now: Instant,
    next_conn: u64,
}

/// A simulated agent: its stream and the id the master gave it.
#[derive(Clone, Debug)]
pub struct SimAgent {
    pub conn: ConnId,
    pub id: String,
    pub info: v1::AgentInfo,
}

/// A simulated framework subscription.
#[derive(Clone, Debug)]
pub struct SimFramework {
    pub conn: ConnId,
    pub id: String,
    pub stream: String,
}

impl SimFramework {
    pub fn header(&self) -> v1::CallHeader {
        v1::CallHeader {
            framework_id: self.id.clone(),
            stream_id: self.stream.clone(),
        }
    }
}

pub fn config() -> CoreConfig {
    CoreConfig {
        master_id: "master-test".into(),
        ..CoreConfig::default()
    }
}

pub fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

pub fn framework_info(name: &str, roles: &[&str], partition_aware: bool) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: name.into(),
        user: "alice".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        capabilities: if partition_aware {
            vec![v1::FrameworkCapability::PartitionAware as i32]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

pub fn task(id: &str, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.into(),
        name: format!("task {id}"),
        resources: res(resources).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 10".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn launch(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::Launch(v1::Launch {
            task_infos: tasks,
        })),
    }
}

pub fn refuse(seconds: f64) -> Option<v1::Filters> {
    Some(v1::Filters {
        refuse_seconds: Some(seconds),
    })
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with(config(), Registry::default())
    }

    pub fn with(config: CoreConfig, registry: Registry) -> Sim {
        let now = Instant::now();
        let mut m = Master::new(config, registry, now);
        m.set_unix_time(1_000_000.0, now);
        Sim {
            m,
            now,
            next_conn: 0,
        }
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub fn handle(&mut self, input: Input) -> Result<(), CallError> {
        self.m.handle(input, self.now)
    }

    pub fn effects(&mut self) -> Vec<Effect> {
        self.m.take_effects()
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Advances by `secs` and ticks once; returns the effects.
    pub fn tick_after(&mut self, secs: f64) -> Vec<Effect> {
        self.advance(Duration::from_secs_f64(secs));
        self.tick()
    }

    pub fn tick(&mut self) -> Vec<Effect> {
        self.handle(Input::Tick).unwrap();
        self.effects()
    }

    pub fn agent_info(hostname: &str, resources: &str) -> v1::AgentInfo {
        v1::AgentInfo {
            principal: String::new(),
            id: String::new(),
            hostname: hostname.into(),
            address: format!("{hostname}:5051"),
            resources: res(resources).to_proto(),
            attributes: vec![v1::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
        }
    }

    /// Registers a new agent and returns it; the effects are consumed.
    pub fn add_agent(&mut self, hostname: &str, resources: &str) -> SimAgent {
        let conn = self.conn();
        let info = Sim::agent_info(hostname, resources);
        let register = v1::Register {
            agent_info: Some(info.clone()),
            tasks: vec![],
            version: "test".into(),
            checkpointed: None,
        };
        self.handle(Input::AgentRegister {
            conn,
            register,
            peer: None,
        })
        .unwrap();
        let id = self
            .effects()
            .into_iter()
            .find_map(|e| match e {
                Effect::ToAgent {
                    message:
                        v1::MasterMessage {
                            message: Some(Message::Registered(r)),
                        },
                    ..
                } => Some(r.agent_id),
                _ => None,
            })
            .expect("Registered");
        SimAgent {
            conn,
            id: id.clone(),
            info: v1::AgentInfo { id, ..info },
        }
    }

    /// Re-registers `agent` on a new stream, reporting `tasks`; returns the new agent
    /// handle and the effects.
    pub fn reregister(
        &mut self,
        agent: &SimAgent,
        tasks: Vec<v1::RunningTask>,
    ) -> (SimAgent, Vec<Effect>) {
        let conn = self.conn();
        let register = v1::Register {
            agent_info: Some(agent.info.clone()),
            tasks,
            version: "test".into(),
            checkpointed: None,
        };
        self.handle(Input::AgentRegister {
            conn,
            register,
            peer: None,
        })
        .unwrap();
        (
            SimAgent {
                conn,
                ..agent.clone()
            },
            self.effects(),
        )
    }

    pub fn subscribe_info(&mut self, info: v1::FrameworkInfo) -> SimFramework {
        let conn = self.conn();
        let request = v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        };
        self.handle(Input::Subscribe { conn, request }).unwrap();
        let sub = self
            .effects()
            .into_iter()
            .find_map(|e| match e {
                Effect::ToFramework {
                    event:
                        v1::Event {
                            event: Some(Event::Subscribed(s)),
                        },
                    ..
                } => Some(s),
                _ => None,
            })
            .expect("SUBSCRIBED");
        SimFramework {
            conn,
            id: sub.framework_id,
            stream: sub.stream_id,
        }
    }

    pub fn subscribe(&mut self, name: &str) -> SimFramework {
        self.subscribe_info(framework_info(name, &[], false))
    }

    pub fn call(&mut self, fw: &SimFramework, call: Call) -> Result<(), CallError> {
        self.handle(Input::Call {
            header: fw.header(),
            call,
        })
    }

    pub fn accept(
        &mut self,
        fw: &SimFramework,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskInfo>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        let req = v1::AcceptRequest {
            header: Some(fw.header()),
            offer_ids,
            operations: vec![launch(tasks)],
            filters,
        };
        self.call(fw, Call::Accept(req))
    }

    pub fn decline(
        &mut self,
        fw: &SimFramework,
        offer_ids: Vec<String>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        self.call(
            fw,
            Call::Decline(v1::DeclineRequest {
                header: Some(fw.header()),
                offer_ids,
                filters,
            }),
        )
    }

    /// The agent sends a status update.
    pub fn agent_update(
        &mut self,
        agent: &SimAgent,
        fw_id: &str,
        task_id: &str,
        state: v1::TaskState,
        uuid: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: task_id.into(),
            state: state as i32,
            source: v1::TaskStatusSource::SourceAgent as i32,
            agent_id: agent.id.clone(),
            framework_id: fw_id.into(),
            uuid: uuid.into(),
            timestamp: 1.0,
            ..Default::default()
        };
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(status),
            })),
        };
        self.handle(Input::AgentMessage {
            conn: agent.conn,
            message,
        })
        .unwrap();
    }

    pub fn agent_heartbeat(&mut self, agent: &SimAgent) {
        let message = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        };
        self.handle(Input::AgentMessage {
            conn: agent.conn,
            message,
        })
        .unwrap();
    }

    /// The task state the snapshot shows (live tasks come before completed ones).
    pub fn task_state(&self, task_id: &str) -> Option<String> {
        self.m
            .snapshot()
            .tasks
            .iter()
            .find(|t| t.id == task_id)
            .map(|t| t.state.clone())
    }

    pub fn agent_view(&self, id: &str) -> AgentView {
        self.m
            .snapshot()
            .agents
            .into_iter()
            .find(|a| a.id == id)
            .expect("agent in snapshot")
    }

    /// The snapshot as JSON, for before/after comparisons.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::to_value(self.m.snapshot()).unwrap()
    }

    /// Registers an agent, subscribes a framework, offers, and launches one task
    /// using `task_res` (the rest is declined without a filter).
    pub fn running_task(
        &mut self,
        agent_res: &str,
        task_res: &str,
        task_id: &str,
    ) -> (SimAgent, SimFramework) {
        let agent = self.add_agent("h1", agent_res);
        let fw = self.subscribe("fw");
        let offers = offers_for(&self.tick(), fw.conn);
        self.accept(
            &fw,
            vec![offers[0].id.clone()],
            vec![task(task_id, task_res)],
            refuse(0.0),
        )
        .unwrap();
        self.effects();
        (agent, fw)
    }
}

// ---- effect filters ----

pub fn events_for(effects: &[Effect], conn: ConnId) -> Vec<Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToFramework {
                conn: c,
                event: v1::Event { event: Some(ev) },
            } if *c == conn => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

pub fn offers_for(effects: &[Effect], conn: ConnId) -> Vec<v1::Offer> {
    events_for(effects, conn)
        .into_iter()
        .flat_map(|e| match e {
            Event::Offers(o) => o.offers,
            _ => vec![],
        })
        .collect()
}

pub fn offer_ids(offers: &[v1::Offer]) -> Vec<String> {
    offers.iter().map(|o| o.id.clone()).collect()
}

pub fn updates_for(effects: &[Effect], conn: ConnId) -> Vec<v1::TaskStatus> {
    events_for(effects, conn)
        .into_iter()
        .filter_map(|e| match e {
            Event::Update(u) => u.status,
            _ => None,
        })
        .collect()
}

pub fn rescinds_for(effects: &[Effect], conn: ConnId) -> Vec<String> {
    events_for(effects, conn)
        .into_iter()
        .filter_map(|e| match e {
            Event::Rescind(r) => Some(r.offer_id),
            _ => None,
        })
        .collect()
}

/// The messages sent to the agent on `conn`, a RunTasks as one RunTask per task (what
/// an agent handles).
pub fn agent_messages(effects: &[Effect], conn: ConnId) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToAgent {
                conn: c,
                message: v1::MasterMessage { message: Some(m) },
            } if *c == conn => Some(split_run_tasks(m.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A RunTasks as one RunTask per task; any other message as itself.
pub fn split_run_tasks(m: Message) -> Vec<Message> {
    match m {
        Message::RunTasks(r) => r
            .tasks
            .into_iter()
            .map(|t| {
                Message::RunTask(v1::RunTask {
                    framework: r.framework.clone(),
                    task: Some(t),
                })
            })
            .collect(),
        other => vec![other],
    }
}

/// A task an agent reports when it re-registers.
pub fn running(fw: &SimFramework, task_id: &str, resources: &str) -> v1::RunningTask {
    v1::RunningTask {
        framework_id: fw.id.clone(),
        task: Some(task(task_id, resources)),
        state: v1::TaskState::TaskRunning as i32,
        framework: Some(v1::FrameworkInfo {
            id: fw.id.clone(),
            ..framework_info("fw", &[], true)
        }),
    }
}

/// The registry the persisted ops of `effects` fold into, on top of `registry`.
pub fn fold(mut registry: Registry, effects: &[Effect]) -> Registry {
    for op in persisted(effects) {
        registry.apply(&op);
    }
    registry
}

pub fn persisted(effects: &[Effect]) -> Vec<RegistryOp> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

pub fn state_of(s: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(s.state).unwrap()
}

pub fn reason_of(s: &v1::TaskStatus) -> v1::TaskStatusReason {
    v1::TaskStatusReason::try_from(s.reason).unwrap()
}

/// The only element of `v`.
pub fn one<T: std::fmt::Debug>(v: Vec<T>) -> T {
    assert_eq!(v.len(), 1, "expected exactly one: {v:?}");
    v.into_iter().next().unwrap()
}
