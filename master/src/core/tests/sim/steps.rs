//! The step generator: one random step per call, from one `Rng`: time passing (ticks
//! that fire timers, retry updates and deliver late messages), tasks progressing,
//! in-flight messages delivered (in random order, old ones duplicated), and the agent
//! and master faults (agents paused or their streams broken, master restarts).
//! What the schedulers do is in `schedulers`.

use strata_proto::states::state_from_i32;
use strata_proto::v1::{TaskState, TaskStatusReason};

use super::agent::{MAX_DELAY, MAX_RETRY, Phase};
use super::world::{TaskKey, World, sim_config};
use crate::core::tests::*;

impl World {
    pub(super) fn step(&mut self) -> String {
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

    pub(super) fn tick(&mut self, dt: Duration) {
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
}
