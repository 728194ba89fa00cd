//! The framework model: what each simulated scheduler holds (its subscription, offers,
//! pending acknowledgements, the tasks it launched) and what it sees of every task,
//! which is where "one terminal state per task" is checked as the events arrive.

use std::collections::{BTreeMap, VecDeque};

use strata_proto::states::state_from_i32;
use strata_proto::v1::{TaskState, TaskStatusReason, TaskStatusSource};
use strata_proto::{Resources, is_terminal};

use super::world::{FrameworkSpec, World};
use crate::core::tests::*;

/// What a framework has seen of one task (the checker of "one terminal state").
#[derive(Debug, Default)]
pub(super) struct SeenTask {
    /// Launched by an ACCEPT of this framework (not a made-up id it killed or asked
    /// about).
    pub(super) launched: bool,
    pub(super) agent_id: String,
    /// Every uuid seen, with the state it carried.
    pub(super) uuids: BTreeMap<String, TaskState>,
    pub(super) last: Option<TaskState>,
    /// The final terminal state: only it may come again.
    pub(super) ended: Option<TaskState>,
    /// The latest updates, for failure reports.
    pub(super) history: VecDeque<String>,
}

impl SeenTask {
    /// A task the framework launched and has not seen end.
    pub(super) fn believed_live(&self) -> bool {
        self.launched && self.ended.is_none() && self.last.is_none_or(|s| !is_terminal(s))
    }
}

pub(super) struct ModelFramework {
    pub(super) spec: &'static FrameworkSpec,
    pub(super) info: v1::FrameworkInfo,
    /// Empty until subscribed; a new one after the framework was removed.
    pub(super) id: String,
    pub(super) incarnation: u32,
    pub(super) sub: Option<SimFramework>,
    /// Old subscriptions, for zombie calls.
    pub(super) stale: Vec<SimFramework>,
    /// The last Subscribe was refused.
    pub(super) refused: bool,
    pub(super) reconnect_at: Option<Instant>,
    pub(super) offers: BTreeMap<String, (usize, Resources)>,
    /// Offer ids used, declined or rescinded lately: for stale ACCEPTs.
    pub(super) spent: VecDeque<String>,
    /// (agent id, task id, uuid) of updates to acknowledge.
    pub(super) acks: Vec<(String, String, String)>,
    pub(super) tasks: BTreeMap<String, SeenTask>,
    pub(super) next_task: u64,
    pub(super) suppressed: bool,
}

impl ModelFramework {
    pub(super) fn name(&self) -> String {
        format!("{}#{}", self.spec.name, self.incarnation)
    }
}

impl World {
    pub(super) fn framework_event(&mut self, conn: ConnId, ev: Event) {
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
    pub(super) fn drop_offer(&mut self, fi: usize, id: &str) -> Option<(usize, Resources)> {
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

    pub(super) fn framework_closed(&mut self, conn: ConnId) {
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
    pub(super) fn framework_lost_stream(&mut self, fi: usize) {
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
}
