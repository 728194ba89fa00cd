//! The agent model, after `strata-agent` (`agent/src/tasks.rs`, `updates.rs`): each
//! task's queue of status updates with only its head in flight, registration with the
//! tasks it still reports, what an agent does with each master message, heartbeats,
//! and the pool of agent messages on their way to the master.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use strata_proto::Resources;
use strata_proto::v1::{TaskState, TaskStatusReason, TaskStatusSource};

use super::world::{TaskKey, World};
use crate::core::tests::*;

/// The agents' heartbeat interval (the master's ping timeout).
pub(super) const PING: Duration = Duration::from_secs(5);

/// First retry interval of an unacknowledged update, and its cap.
const RETRY: Duration = Duration::from_secs(10);
pub(super) const MAX_RETRY: Duration = Duration::from_secs(60);

/// In-flight agent messages older than this are delivered at the next tick.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Launching,
    Running,
    Killing,
    Terminated,
}

pub(super) struct AgentTask {
    pub(super) framework: v1::FrameworkInfo,
    pub(super) info: v1::TaskInfo,
    pub(super) resources: Resources,
    pub(super) phase: Phase,
    /// The latest state the agent reported.
    pub(super) state: TaskState,
    pub(super) kill: bool,
}

pub(super) struct UpdateQueue {
    pub(super) pending: VecDeque<v1::TaskStatus>,
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
}

pub(super) struct ModelAgent {
    /// Its id is empty until the first registration.
    pub(super) info: v1::AgentInfo,
    pub(super) total: Resources,
    /// The stream the agent believes it has.
    pub(super) conn: Option<ConnId>,
    /// Paused (silent) until then: no heartbeats, no work, master messages buffered.
    pub(super) paused_until: Option<Instant>,
    pub(super) inbox: Vec<v1::MasterMessage>,
    pub(super) reconnect_at: Option<Instant>,
    pub(super) next_heartbeat: Instant,
    pub(super) tasks: BTreeMap<TaskKey, AgentTask>,
    pub(super) updates: BTreeMap<TaskKey, UpdateQueue>,
    /// Tasks forgotten (ended, last update acknowledged).
    pub(super) completed: BTreeSet<TaskKey>,
}

impl ModelAgent {
    pub(super) fn active(&self) -> bool {
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
    pub(super) fn live_resources(&self, removed: &BTreeSet<String>) -> Resources {
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
pub(super) struct InFlight {
    pub(super) conn: ConnId,
    pub(super) agent: usize,
    pub(super) status: v1::TaskStatus,
    pub(super) sent: Instant,
}

impl World {
    pub(super) fn master_to_agent(&mut self, conn: ConnId, message: v1::MasterMessage) {
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

    pub(super) fn agent_closed(&mut self, conn: ConnId) {
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

    pub(super) fn agent_register(&mut self, i: usize) {
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
            checkpointed: None,
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
            Message::RunTasks(run) => {
                for one in crate::core::tests::split_run_tasks(Message::RunTasks(run)) {
                    self.agent_receive(i, one);
                }
            }
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
            Message::Error(_) | Message::FrameworkMessage(_) | Message::CheckpointResources(_) => {}
        }
    }

    pub(super) fn report_killing(&mut self, i: usize, key: &TaskKey) {
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
    pub(super) fn agent_end(
        &mut self,
        i: usize,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
    ) {
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
    pub(super) fn agent_report(
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
    pub(super) fn agent_send(&mut self, i: usize, status: v1::TaskStatus) {
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

    pub(super) fn heartbeat(&mut self, i: usize) {
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
    pub(super) fn resume(&mut self, i: usize) {
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
    pub(super) fn deliver(&mut self, idx: usize) {
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

    pub(super) fn deliver_all(&mut self) {
        while !self.in_flight.is_empty() {
            let idx = self.rng.below(self.in_flight.len());
            self.deliver(idx);
        }
    }
}
