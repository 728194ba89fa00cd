//! A seeded random walk through everything peers can do — accept, decline, status
//! updates, kills, agents and frameworks dropping and coming back, agents going
//! silent — checking after every step that the master's books balance
//! (`Master::check_invariants`): free + offered + used == total on every agent, and
//! every index agrees with every other.

use strata_proto::v1::{self, TaskState, event::Event, master_message::Message};

use super::super::rng::Rng;
use super::*;

struct ModelAgent {
    agent: SimAgent,
    connected: bool,
    silent: bool,
    /// (framework id, task, state, kill requested)
    tasks: Vec<(String, v1::TaskInfo, TaskState, bool)>,
}

struct ModelFramework {
    fw: SimFramework,
    connected: bool,
    info: v1::FrameworkInfo,
    offers: Vec<String>,
    suppressed: bool,
}

struct World {
    sim: Sim,
    rng: Rng,
    agents: Vec<ModelAgent>,
    frameworks: Vec<ModelFramework>,
    next_task: u64,
    next_uuid: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let mut sim = Sim::new();
        let mut agents = Vec::new();
        for i in 0..8 {
            let resources = if i % 3 == 0 {
                "cpus:4;mem:4096;ports:[31000-31099]"
            } else {
                "cpus:2;mem:1024"
            };
            let agent = sim.add_agent(&format!("h{i}"), resources);
            agents.push(ModelAgent {
                agent,
                connected: true,
                silent: false,
                tasks: vec![],
            });
        }
        let mut frameworks = Vec::new();
        for i in 0..4 {
            let info = v1::FrameworkInfo {
                failover_timeout_seconds: 20.0,
                ..framework_info(
                    &format!("f{i}"),
                    if i == 3 { &["other"] } else { &[] },
                    i % 2 == 0,
                )
            };
            let fw = sim.subscribe_info(info.clone());
            frameworks.push(ModelFramework {
                fw,
                connected: true,
                info,
                offers: vec![],
                suppressed: false,
            });
        }
        World {
            sim,
            rng: Rng::new(seed),
            agents,
            frameworks,
            next_task: 0,
            next_uuid: 0,
        }
    }

    fn pick(&mut self, len: usize) -> Option<usize> {
        (len > 0).then(|| self.rng.below(len))
    }

    /// Applies what the master sent to the model.
    fn absorb(&mut self) {
        for effect in self.sim.effects() {
            match effect {
                Effect::ToFramework {
                    conn,
                    event: v1::Event { event: Some(ev) },
                } => {
                    let Some(f) = self.frameworks.iter_mut().find(|f| f.fw.conn == conn) else {
                        continue;
                    };
                    match ev {
                        Event::Offers(o) => f.offers.extend(o.offers.into_iter().map(|o| o.id)),
                        Event::Rescind(r) => f.offers.retain(|id| *id != r.offer_id),
                        _ => {}
                    }
                }
                Effect::CloseFramework { conn } => {
                    if let Some(f) = self.frameworks.iter_mut().find(|f| f.fw.conn == conn) {
                        f.connected = false;
                        f.offers.clear();
                    }
                }
                Effect::ToAgent {
                    conn,
                    message: v1::MasterMessage { message: Some(m) },
                } => {
                    let Some(a) = self.agents.iter_mut().find(|a| a.agent.conn == conn) else {
                        continue;
                    };
                    for m in split_run_tasks(m) {
                        match m {
                            Message::RunTask(r) => {
                                let fw_id = r.framework.map(|f| f.id).unwrap_or_default();
                                if let Some(t) = r.task {
                                    a.tasks.push((fw_id, t, TaskState::TaskStaging, false));
                                }
                            }
                            Message::KillTask(k) => {
                                for t in a
                                    .tasks
                                    .iter_mut()
                                    .filter(|t| t.0 == k.framework_id && t.1.task_id == k.task_id)
                                {
                                    t.3 = true;
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
                    if let Some(a) = self.agents.iter_mut().find(|a| a.agent.conn == conn) {
                        a.connected = false;
                        a.silent = false;
                    }
                }
                _ => {}
            }
        }
    }

    fn step(&mut self) -> String {
        match self.rng.below(20) {
            0..=3 => {
                let ms = self.rng.below(2500) as u64;
                self.sim.advance(Duration::from_millis(ms));
                for a in self.agents.iter().filter(|a| a.connected && !a.silent) {
                    let message = v1::AgentMessage {
                        message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
                    };
                    self.sim
                        .m
                        .handle(
                            Input::AgentMessage {
                                conn: a.agent.conn,
                                message,
                            },
                            self.sim.now,
                        )
                        .unwrap();
                }
                self.sim.handle(Input::Tick).unwrap();
                format!("tick +{ms}ms")
            }
            4..=6 => self.accept(),
            7 => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                let f = &mut self.frameworks[i];
                if !f.connected || f.offers.is_empty() {
                    return "decline: nothing".into();
                }
                let ids = std::mem::take(&mut f.offers);
                let fw = f.fw.clone();
                let refuse_s = [0.0, 1.0, 3.0][self.rng.below(3)];
                let r = self.sim.decline(&fw, ids, refuse(refuse_s));
                format!("decline {r:?}")
            }
            8..=10 => self.agent_update(),
            11 => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                let fw = self.frameworks[i].fw.clone();
                let live: Vec<String> = self
                    .agents
                    .iter()
                    .flat_map(|a| a.tasks.iter())
                    .filter(|t| t.0 == fw.id)
                    .map(|t| t.1.task_id.clone())
                    .collect();
                let task_id = match self.pick(live.len()) {
                    Some(j) => live[j].clone(),
                    None => "nope".into(),
                };
                let r = self.sim.call(
                    &fw,
                    Call::Kill(v1::KillRequest {
                        task_id: task_id.clone(),
                        ..Default::default()
                    }),
                );
                format!("kill {task_id} {r:?}")
            }
            12 => {
                let Some(i) = self.pick(self.agents.len()) else {
                    return "-".into();
                };
                if !self.agents[i].connected {
                    return "disconnect: already".into();
                }
                self.agents[i].connected = false;
                let conn = self.agents[i].agent.conn;
                self.sim.handle(Input::AgentDisconnected { conn }).unwrap();
                format!("agent {i} disconnects")
            }
            13 | 14 => {
                let Some(i) = self.pick(self.agents.len()) else {
                    return "-".into();
                };
                if self.agents[i].connected {
                    return "reregister: connected".into();
                }
                let tasks: Vec<v1::RunningTask> = self.agents[i]
                    .tasks
                    .iter()
                    .map(|(fw_id, t, state, _)| v1::RunningTask {
                        framework_id: fw_id.clone(),
                        task: Some(t.clone()),
                        state: *state as i32,
                        framework: None,
                    })
                    .collect();
                let conn = self.sim.conn();
                let register = v1::Register {
                    checkpointed: None,
                    agent_info: Some(self.agents[i].agent.info.clone()),
                    tasks,
                    version: String::new(),
                };
                self.agents[i].agent.conn = conn;
                self.agents[i].connected = true;
                self.agents[i].silent = false;
                self.sim
                    .handle(Input::AgentRegister {
                        conn,
                        register,
                        peer: None,
                    })
                    .unwrap();
                format!("agent {i} re-registers")
            }
            15 => {
                let Some(i) = self.pick(self.agents.len()) else {
                    return "-".into();
                };
                self.agents[i].silent = true;
                format!("agent {i} goes silent")
            }
            16 => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                if !self.frameworks[i].connected {
                    return "fw disconnect: already".into();
                }
                self.frameworks[i].connected = false;
                self.frameworks[i].offers.clear();
                let conn = self.frameworks[i].fw.conn;
                self.sim
                    .handle(Input::FrameworkDisconnected { conn })
                    .unwrap();
                format!("framework {i} disconnects")
            }
            17 => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                if self.frameworks[i].connected {
                    return "resubscribe: connected".into();
                }
                let info = v1::FrameworkInfo {
                    id: self.frameworks[i].fw.id.clone(),
                    ..self.frameworks[i].info.clone()
                };
                let conn = self.sim.conn();
                let request = v1::SubscribeRequest {
                    framework_info: Some(info.clone()),
                    suppressed_roles: vec![],
                };
                self.sim.handle(Input::Subscribe { conn, request }).unwrap();
                let effects = self.sim.effects();
                let sub = events_for(&effects, conn)
                    .into_iter()
                    .find_map(|e| match e {
                        Event::Subscribed(s) => Some(s),
                        _ => None,
                    });
                // Removed meanwhile (failover timeout): register anew.
                let fw = match sub {
                    Some(s) => SimFramework {
                        conn,
                        id: s.framework_id,
                        stream: s.stream_id,
                    },
                    None => self.sim.subscribe_info(self.frameworks[i].info.clone()),
                };
                let f = &mut self.frameworks[i];
                f.fw = fw;
                f.connected = true;
                f.suppressed = false;
                format!("framework {i} re-subscribes")
            }
            18 => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                let fw = self.frameworks[i].fw.clone();
                let r = self
                    .sim
                    .call(&fw, Call::Reconcile(v1::ReconcileRequest::default()));
                format!("reconcile {r:?}")
            }
            _ => {
                let Some(i) = self.pick(self.frameworks.len()) else {
                    return "-".into();
                };
                let fw = self.frameworks[i].fw.clone();
                let suppressed = self.frameworks[i].suppressed;
                let r = if suppressed {
                    self.sim
                        .call(&fw, Call::Revive(v1::ReviveRequest::default()))
                } else {
                    self.sim
                        .call(&fw, Call::Suppress(v1::SuppressRequest::default()))
                };
                if r.is_ok() {
                    self.frameworks[i].suppressed = !suppressed;
                }
                format!("suppress/revive {r:?}")
            }
        }
    }

    fn accept(&mut self) -> String {
        let Some(i) = self.pick(self.frameworks.len()) else {
            return "-".into();
        };
        if !self.frameworks[i].connected || self.frameworks[i].offers.is_empty() {
            return "accept: nothing".into();
        }
        let n = 1 + self.rng.below(2).min(self.frameworks[i].offers.len() - 1);
        let ids: Vec<String> = self.frameworks[i].offers.drain(..n).collect();
        let mut tasks = Vec::new();
        for _ in 0..self.rng.below(4) {
            self.next_task += 1;
            let mut id = format!("t{}", self.next_task);
            if self.rng.below(10) == 0 {
                // Sometimes reuse a live id.
                if let Some(t) = self.agents.iter().flat_map(|a| a.tasks.iter()).next() {
                    id = t.1.task_id.clone();
                }
            }
            let cpus = ["0.5", "1", "2", "8"][self.rng.below(4)];
            let mem = ["32", "128", "2048"][self.rng.below(3)];
            tasks.push(task(&id, &format!("cpus:{cpus};mem:{mem}")));
        }
        let fw = self.frameworks[i].fw.clone();
        let refuse_s = [None, Some(0.0), Some(1.0), Some(5.0)][self.rng.below(4)];
        let r = self.sim.accept(&fw, ids, tasks, refuse_s.and_then(refuse));
        format!("accept {r:?}")
    }

    fn agent_update(&mut self) -> String {
        let candidates: Vec<usize> = (0..self.agents.len())
            .filter(|&i| self.agents[i].connected && !self.agents[i].tasks.is_empty())
            .collect();
        let Some(c) = self.pick(candidates.len()) else {
            return "update: nothing".into();
        };
        let i = candidates[c];
        let j = self.rng.below(self.agents[i].tasks.len());
        let (fw_id, info, state, killed) = self.agents[i].tasks[j].clone();
        let next = if killed {
            TaskState::TaskKilled
        } else {
            match state {
                TaskState::TaskStaging => TaskState::TaskRunning,
                _ => [
                    TaskState::TaskFinished,
                    TaskState::TaskFailed,
                    TaskState::TaskRunning,
                ][self.rng.below(3)],
            }
        };
        self.next_uuid += 1;
        let uuid = format!("u{}", self.next_uuid);
        let agent = self.agents[i].agent.clone();
        self.sim
            .agent_update(&agent, &fw_id, &info.task_id, next, &uuid);
        if strata_proto::is_terminal(next) {
            self.agents[i].tasks.remove(j);
        } else {
            self.agents[i].tasks[j].2 = next;
        }
        // Retries happen: send some updates twice.
        if self.rng.below(4) == 0 {
            self.sim
                .agent_update(&agent, &fw_id, &info.task_id, next, &uuid);
        }
        format!("agent {i}: {} -> {next:?}", info.task_id)
    }
}

#[test]
fn random_walks_keep_the_books_balanced() {
    let (mut tasks_seen, mut offers_sent) = (0, 0);
    for seed in 0..24 {
        let mut w = World::new(seed);
        let mut log: Vec<String> = Vec::new();
        for step in 0..400 {
            let what = w.step();
            w.absorb();
            log.push(what);
            if let Err(e) = w.sim.m.check_invariants() {
                let tail: Vec<&String> = log.iter().rev().take(12).collect();
                panic!("seed {seed} step {step}: {e}\nlast steps (newest first): {tail:#?}");
            }
        }
        let snap = w.sim.m.snapshot();
        serde_json::to_string(&snap).unwrap();
        tasks_seen += snap.tasks.len();
        offers_sent += w.sim.m.metrics().offers_sent_total;
    }
    assert!(
        tasks_seen > 100 && offers_sent > 1000,
        "the walks did something: {tasks_seen} tasks, {offers_sent} offers"
    );
}
