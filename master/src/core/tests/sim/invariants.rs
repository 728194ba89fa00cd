//! The invariants checked after every step (listed in the `sim` module docs): on the
//! agents the step touched, or on every agent and framework, and the description of
//! the agents an error names that a failure prints.

use strata_proto::states::state_from_i32;

use super::world::World;
use crate::core::allocator::AgentKey;

impl World {
    /// The invariants after a step (see the module docs): on every agent and
    /// framework when `full` (or after a master restart), else on the agents the step
    /// touched.
    pub(super) fn check(&mut self, full: bool) -> Result<(), String> {
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
    pub(super) fn describe_agents_in(&self, text: &str) -> String {
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
}
