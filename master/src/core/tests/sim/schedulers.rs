//! The steps of the simulated schedulers: subscribing, disconnecting, failing over to
//! a new instance, zombie calls on an old stream, SUPPRESS/REVIVE, TEARDOWN,
//! acknowledgements (some lost), KILL, RECONCILE, and answering offers (ACCEPT with
//! good and bad launches, stale offers, DECLINE).

use super::framework::SeenTask;
use super::world::World;
use crate::core::tests::*;

impl World {
    fn connected_frameworks(&self) -> Vec<usize> {
        (0..self.frameworks.len())
            .filter(|&fi| self.frameworks[fi].sub.is_some())
            .collect()
    }

    /// Subscribes (again, with its id if it has one); a framework the master removed
    /// registers anew.
    pub(super) fn framework_subscribe(&mut self, fi: usize) -> String {
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

    pub(super) fn framework_disconnect(&mut self) -> String {
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
    pub(super) fn framework_failover(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "framework failover: none connected".into();
        };
        let what = self.framework_subscribe(fi);
        format!("failover: {what}")
    }

    /// An old scheduler instance calls on its old stream: refused, no effects.
    pub(super) fn zombie_call(&mut self) -> String {
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

    pub(super) fn suppress_or_revive(&mut self) -> String {
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

    pub(super) fn teardown(&mut self) -> String {
        let Some(fi) = self.pick(&self.connected_frameworks()) else {
            return "teardown: none connected".into();
        };
        let fw = self.frameworks[fi].sub.clone().unwrap();
        let r = self.call(&fw, Call::Teardown(v1::TeardownRequest::default()));
        self.expect_ok("TEARDOWN", r);
        format!("{} tears down", self.frameworks[fi].name())
    }

    pub(super) fn framework_acks(&mut self) -> String {
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
    pub(super) fn ack_all(&mut self, fi: usize, percent: usize) -> usize {
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

    pub(super) fn framework_kill(&mut self) -> String {
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

    pub(super) fn framework_reconcile(&mut self) -> String {
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
    pub(super) fn framework_offers(&mut self) -> String {
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
                    SeenTask {
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
}
