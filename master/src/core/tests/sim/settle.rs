//! The end of a walk: every fault heals and everything flows until nothing is pending,
//! then the final check (nothing unacknowledged, the master's live tasks are exactly
//! the agents', every framework's view agrees).

use std::collections::BTreeMap;

use strata_proto::states::state_from_i32;
use strata_proto::v1::{TaskState, TaskStatusReason};

use super::agent::Phase;
use super::world::{TaskKey, World};
use crate::core::tests::*;

/// How many settle rounds (one simulated second each) the end of a walk may take.
const SETTLE_ROUNDS: usize = 400;

impl World {
    pub(super) fn settled(&self) -> bool {
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
    pub(super) fn settle(&mut self) -> Result<(), String> {
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
            if let Some((_, t)) = fw.ended.after(None).next() {
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
