//! Read-only views of the master: the state snapshot served at `GET /state` and the
//! metrics served at `GET /metrics`. Both are built from the incrementally kept
//! indices and sums; nothing here changes state.

use std::collections::{BTreeMap, BTreeSet};

use strata_proto::v1::{FrameworkCapability, TaskState, TaskStatusReason};
use strata_proto::{Resources, Scalar, state_name};

use super::api::*;
use super::master::Master;
use super::state::{Agent, AgentStatus, Framework, OfferSeq, StatusEntry, Task};

pub(super) fn task_view(t: &Task) -> TaskView {
    let last = t.last_status.as_ref();
    let reason = last
        .map(|s| s.reason)
        .filter(|r| *r != 0)
        .and_then(|r| TaskStatusReason::try_from(r).ok())
        .map(|r| r.as_str_name().to_string())
        .unwrap_or_default();
    TaskView {
        id: t.id.clone(),
        name: t.name.clone(),
        framework_id: t.framework_id.clone(),
        agent_id: t.agent_id.clone(),
        state: state_name(t.state).to_string(),
        resources: t.resources.clone(),
        message: last.map(|s| s.message.clone()).unwrap_or_default(),
        reason,
        exit_status: last.and_then(|s| s.exit_status),
        healthy: last.and_then(|s| s.healthy),
        health_checked: t.health_checked,
        updated: t.updated_unix,
        statistics: t.statistics.as_ref().map(TaskStatistics::from),
        discovery: t.discovery.clone(),
        objects: t.objects.clone(),
    }
}

/// A history entry as the task page shows it.
fn status_view(e: &StatusEntry) -> StatusView {
    StatusView {
        state: state_name(e.state).to_string(),
        reason: Some(e.reason)
            .filter(|r| *r != 0)
            .and_then(|r| TaskStatusReason::try_from(r).ok())
            .map(|r| r.as_str_name().to_string())
            .unwrap_or_default(),
        message: e.message.clone(),
        healthy: e.healthy,
        timestamp: e.unix,
    }
}

impl Master {
    /// The resources of some outstanding offers, added up.
    pub(super) fn offered_sum(&self, offers: &BTreeSet<OfferSeq>) -> Resources {
        let mut sum = Resources::new();
        for o in offers.iter().filter_map(|seq| self.offers.get(seq)) {
            sum.add(&o.resources);
        }
        sum
    }

    /// One agent as `/state` shows it.
    pub(super) fn agent_view(&self, a: &Agent) -> AgentView {
        AgentView {
            id: a.id.clone(),
            hostname: a.hostname.clone(),
            principal: a.principal.clone(),
            address: a.address.clone(),
            status: a.status.name().to_string(),
            maintenance: super::maintenance::maintenance_name(a.maintenance, a.tasks.len()),
            attributes: a
                .attributes
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
            total: a.total.clone(),
            used: a.used.clone(),
            offered: self.offered_sum(&a.offers),
            registered_time: a.registered_unix,
            reserved: a.checkpointed.reserved.clone(),
            volumes: self.volume_views(a),
        }
    }

    /// An agent's persistent volumes, with the task using each.
    fn volume_views(&self, a: &Agent) -> Vec<super::api::VolumeView> {
        let mut out = Vec::new();
        for v in a.checkpointed.volumes.volumes() {
            let (Some(p), Some(role)) = (v.persistence(), v.role.as_deref()) else {
                continue;
            };
            let user = a.tasks.iter().find_map(|(fk, tid)| {
                let task = self.frameworks.get(fk)?.tasks.get(tid)?;
                let uses = task.resources.volumes().any(|t| {
                    t.role.as_deref() == Some(role) && t.persistence().is_some_and(|q| q.id == p.id)
                });
                uses.then(|| (task.framework_id.clone(), tid.clone()))
            });
            let single = strata_proto::Resources::of_entry(v.clone());
            out.push(super::api::VolumeView {
                role: role.to_string(),
                id: p.id.clone(),
                container_path: p.container_path.clone(),
                read_only: p.read_only,
                size: single.disk().as_f64(),
                principal: p.principal.clone(),
                mount: v.disk.as_ref().and_then(|d| d.mount.clone()),
                used_bytes: a
                    .volume_usage
                    .get(&(role.to_string(), p.id.clone()))
                    .copied(),
                framework_id: user.as_ref().map(|u| u.0.clone()),
                task_id: user.map(|u| u.1),
                resource: single.to_proto().into_iter().next().unwrap_or_default(),
            });
        }
        out
    }

    /// One framework as `/state` shows it.
    pub(super) fn framework_view(&self, f: &Framework) -> FrameworkView {
        FrameworkView {
            id: f.id.clone(),
            name: f.info.name.clone(),
            principal: f.info.principal.clone(),
            user: f.info.user.clone(),
            roles: f.roles.clone(),
            capabilities: f
                .info
                .capabilities
                .iter()
                .map(|c| {
                    FrameworkCapability::try_from(*c)
                        .map(|c| c.as_str_name().to_string())
                        .unwrap_or_else(|_| c.to_string())
                })
                .collect(),
            failover_timeout_seconds: f.info.failover_timeout_seconds,
            connected: f.subscription.is_some(),
            active: f.subscription.is_some(),
            suppressed_roles: f.suppressed.iter().cloned().collect(),
            used: f.used.clone(),
            offered: self.offered_sum(&f.offers),
            task_count: f.tasks.len(),
        }
    }

    /// Whether an agent principal's certificate is revoked (its agent marked gone).
    pub fn is_revoked(&self, principal: &str) -> bool {
        self.revoked_principals.contains(principal)
    }

    /// A consistent view of agents, frameworks, tasks and roles.
    /// One page of the agents in id order, and how many there are: the cost of a
    /// sort of the ids plus the page's views, not of a whole snapshot.
    pub fn agents_page(&self, offset: usize, limit: usize) -> (usize, Vec<AgentView>) {
        let mut ids: Vec<(&str, super::allocator::AgentKey)> = self
            .agents
            .iter()
            .map(|(k, a)| (a.id.as_str(), *k))
            .collect();
        ids.sort_unstable();
        let page = ids
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, k)| self.agents.get(k))
            .map(|a| self.agent_view(a))
            .collect();
        (ids.len(), page)
    }

    pub fn snapshot(&self) -> StateSnapshot {
        let mut keys: Vec<_> = self.agents.keys().copied().collect();
        keys.sort_unstable();
        let agents = keys
            .iter()
            .filter_map(|k| self.agents.get(k))
            .map(|a| self.agent_view(a))
            .collect();
        let frameworks = self
            .frameworks
            .values()
            .map(|f| self.framework_view(f))
            .collect();
        let mut tasks: Vec<TaskView> = self
            .frameworks
            .values()
            .flat_map(|f| f.tasks.values())
            .map(task_view)
            .collect();
        tasks.extend(self.completed.iter().map(task_view));
        StateSnapshot {
            master_id: self.config.master_id.clone(),
            agents,
            frameworks,
            tasks,
            roles: self.role_views(),
            outstanding_offers: self.offers.len(),
        }
    }

    /// One page of the tasks that match `filter` and whose framework's principal
    /// `may_view` allows (the caller's `view_tasks`, asked before paging so that
    /// neither the page nor the count shows another's tasks), and how many match: live
    /// tasks by framework id then task id, then the recently completed ones. One pass
    /// over the tasks; only the page's views are built.
    pub fn tasks_page<'a>(
        &'a self,
        filter: &TaskFilter,
        may_view: &dyn Fn(&str) -> bool,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<TaskView>) {
        let mut frameworks: Vec<&Framework> = self
            .frameworks
            .values()
            .filter(|f| filter.framework_id.as_deref().is_none_or(|id| f.id == id))
            .collect();
        frameworks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        // Asked once per framework principal.
        let mut allowed: BTreeMap<&str, bool> = BTreeMap::new();
        let mut owner_ok =
            |owner: &'a str| -> bool { *allowed.entry(owner).or_insert_with(|| may_view(owner)) };
        let owners: BTreeMap<&str, &str> = self
            .frameworks
            .values()
            .map(|f| (f.id.as_str(), f.info.principal.as_str()))
            .collect();
        let matches = |t: &Task| {
            filter.agent_id.as_deref().is_none_or(|a| t.agent_id == a)
                && filter.name.as_deref().is_none_or(|n| t.name == n)
                && filter
                    .state
                    .as_deref()
                    .is_none_or(|s| state_name(t.state) == s)
        };
        let mut total = 0;
        let mut page = Vec::new();
        let mut take = |t: &Task, total: &mut usize| {
            if *total >= offset && page.len() < limit {
                page.push(task_view(t));
            }
            *total += 1;
        };
        for f in frameworks {
            if !owner_ok(f.info.principal.as_str()) {
                continue;
            }
            for t in f.tasks.values().filter(|t| matches(t)) {
                take(t, &mut total);
            }
        }
        for t in self.completed.iter().rev() {
            if filter
                .framework_id
                .as_deref()
                .is_some_and(|id| t.framework_id != id)
                || !matches(t)
            {
                continue;
            }
            let owner = owners.get(t.framework_id.as_str()).copied().unwrap_or("");
            if owner_ok(owner) {
                take(t, &mut total);
            }
        }
        (total, page)
    }

    /// The tasks with id `task_id` (of framework `framework_id` if given) whose
    /// framework's principal `may_view` allows, live ones first, each with its status
    /// history and agent (the dashboard's task page). Ids are unique only within a
    /// framework, and a completed task may share its id with a live one.
    pub fn task_details(
        &self,
        task_id: &str,
        framework_id: Option<&str>,
        may_view: &dyn Fn(&str) -> bool,
    ) -> Vec<TaskDetail> {
        let principal_of = |id: &str| {
            self.frameworks
                .values()
                .find(|f| f.id == id)
                .map(|f| f.info.principal.clone())
                .unwrap_or_default()
        };
        let detail = |t: &Task, live: bool| {
            let agent = self.agents.get(&t.agent).filter(|a| a.id == t.agent_id);
            TaskDetail {
                task: task_view(t),
                statuses: t.history.iter().map(status_view).collect(),
                hostname: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
                agent_address: agent.map(|a| a.address.clone()).unwrap_or_default(),
                framework_principal: principal_of(&t.framework_id),
                live,
            }
        };
        let wanted = |t: &Task| framework_id.is_none_or(|id| t.framework_id == id);
        let mut found: Vec<TaskDetail> = Vec::new();
        let mut frameworks: Vec<&Framework> = self.frameworks.values().collect();
        frameworks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        for f in frameworks {
            if let Some(t) = f.tasks.get(task_id).filter(|t| wanted(t)) {
                found.push(detail(t, true));
            }
        }
        for t in self.completed.iter().rev() {
            if t.id == task_id && wanted(t) {
                found.push(detail(t, false));
            }
        }
        found.retain(|d| may_view(&d.framework_principal));
        found
    }

    /// The frameworks and the roles (the dashboard's frameworks page): no agent, no
    /// task view, one pass over the tasks for the roles' allocations.
    pub fn frameworks_and_roles(&self) -> (Vec<FrameworkView>, Vec<RoleView>) {
        let frameworks = self
            .frameworks
            .values()
            .map(|f| self.framework_view(f))
            .collect();
        (frameworks, self.role_views())
    }

    /// Every role a framework subscribes to, has a weight, or holds resources in.
    fn role_views(&self) -> Vec<RoleView> {
        let mut allocated: BTreeMap<String, Resources> = BTreeMap::new();
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for role in self.config.weights.keys() {
            allocated.entry(role.clone()).or_default();
        }
        for f in self.frameworks.values() {
            for role in &f.roles {
                allocated.entry(role.clone()).or_default();
                members
                    .entry(role.clone())
                    .or_default()
                    .insert(f.id.clone());
            }
            for t in f.tasks.values() {
                if t.state != TaskState::TaskUnreachable {
                    allocated
                        .entry(t.role.clone())
                        .or_default()
                        .add(&t.resources);
                }
            }
        }
        for o in self.offers.values() {
            allocated
                .entry(o.role.clone())
                .or_default()
                .add(&o.resources);
        }
        allocated
            .into_iter()
            .map(|(name, allocated)| RoleView {
                weight: self.config.weights.get(&name).copied().unwrap_or(1.0),
                frameworks: members
                    .remove(&name)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                name,
                allocated,
            })
            .collect()
    }

    /// Counters and gauges; `allocation_run_ms` is filled in by the driver, which
    /// owns the clock.
    pub fn metrics(&self) -> Metrics {
        let c = &self.counters;
        let mut m = Metrics {
            tasks_finished_total: c.tasks_finished,
            tasks_failed_total: c.tasks_failed,
            tasks_killed_total: c.tasks_killed,
            tasks_lost_total: c.tasks_lost,
            tasks_error_total: c.tasks_error,
            outstanding_offers: self.offers.len() as u64,
            offers_sent_total: c.offers_sent,
            offers_declined_total: c.offers_declined,
            offers_rescinded_total: c.offers_rescinded,
            calls_refused_total: c.calls_refused,
            allocation_runs_total: c.allocation_runs,
            object_fetches_total: c.object_fetches,
            object_fetches_refused_total: c.object_fetches_refused,
            ..Metrics::default()
        };
        for o in self.objects.values() {
            match o.kind {
                super::registry::StoredKind::Secret => m.secrets += 1,
                super::registry::StoredKind::Config => m.configs += 1,
            }
            m.objects_stored_bytes += o.versions.iter().map(|v| v.data.len() as u64).sum::<u64>();
        }
        // Plain sums of the three scalars: adding whole `Resources` would copy every
        // entry (names, roles, port ranges) of every agent, each pass.
        let sum = |acc: &mut [Scalar; 3], r: &Resources| {
            acc[0] += r.cpus();
            acc[1] += r.mem();
            acc[2] += r.disk();
        };
        let (mut total, mut used, mut offered) =
            ([Scalar::ZERO; 3], [Scalar::ZERO; 3], [Scalar::ZERO; 3]);
        for a in self.agents.values() {
            match a.status {
                AgentStatus::Active => m.agents_active += 1,
                AgentStatus::Disconnected | AgentStatus::Recovering => m.agents_disconnected += 1,
                AgentStatus::Unreachable => m.agents_unreachable += 1,
                AgentStatus::Gone => m.agents_gone += 1,
            }
            if a.maintenance.is_some() && a.status != AgentStatus::Gone {
                m.agents_in_maintenance += 1;
            }
            if matches!(a.status, AgentStatus::Active | AgentStatus::Disconnected) {
                sum(&mut total, &a.total);
                sum(&mut used, &a.used);
            }
            if a.status != AgentStatus::Gone {
                let r = &a.checkpointed.reserved;
                m.reserved_cpus += r.cpus().as_f64();
                m.reserved_mem += r.mem().as_f64();
                m.reserved_disk += r.disk().as_f64();
                m.volumes += a.checkpointed.volumes.volumes().count() as u64;
                m.volumes_disk += a.checkpointed.volumes.disk().as_f64();
            }
        }
        for o in self.offers.values() {
            sum(&mut offered, &o.resources);
        }
        for f in self.frameworks.values() {
            if f.subscription.is_some() {
                m.frameworks_connected += 1;
            } else {
                m.frameworks_disconnected += 1;
            }
            for t in f.tasks.values() {
                match t.state {
                    TaskState::TaskStaging => m.tasks_staging += 1,
                    TaskState::TaskRunning => m.tasks_running += 1,
                    _ => {}
                }
            }
        }
        m.cpus_total = total[0].as_f64();
        m.cpus_used = used[0].as_f64();
        m.cpus_offered = offered[0].as_f64();
        m.mem_total = total[1].as_f64();
        m.mem_used = used[1].as_f64();
        m.mem_offered = offered[1].as_f64();
        m.disk_total = total[2].as_f64();
        m.disk_used = used[2].as_f64();
        m
    }
}

#[cfg(test)]
impl Master {
    /// Checks that the indices agree with each other and that every agent's resources
    /// add up: free (allocator) + offered + used by tasks == total.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        let mut keys: Vec<super::allocator::AgentKey> = self.agents.keys().copied().collect();
        keys.sort_unstable();
        self.check_agents_invariants(&keys)?;
        self.check_frameworks_invariants()
    }

    /// The per-agent part of [`Master::check_invariants`], for these agents (unknown
    /// keys are skipped): the simulation checks the agents each step touched.
    pub(super) fn check_agents_invariants(
        &self,
        keys: &[super::allocator::AgentKey],
    ) -> Result<(), String> {
        for key in keys {
            let Some(agent) = self.agents.get(key) else {
                continue;
            };
            let mut offered = Resources::new();
            for seq in &agent.offers {
                let o = self
                    .offers
                    .get(seq)
                    .ok_or_else(|| format!("agent {} lists unknown offer {seq}", agent.id))?;
                if o.agent != *key {
                    return Err(format!("offer {seq} is listed on the wrong agent"));
                }
                let fw_lists = self
                    .frameworks
                    .get(&o.framework)
                    .is_some_and(|f| f.offers.contains(seq));
                if !fw_lists {
                    return Err(format!("offer {seq} is missing from its framework"));
                }
                offered.add(&o.resources);
            }
            let (mut used, mut counted) = (Resources::new(), Resources::new());
            for (fk, tid) in &agent.tasks {
                let t = self
                    .frameworks
                    .get(fk)
                    .and_then(|f| f.tasks.get(tid))
                    .ok_or_else(|| format!("agent {} lists unknown task {tid}", agent.id))?;
                if t.agent != *key {
                    return Err(format!("task {tid} is listed on the wrong agent"));
                }
                used.add(&t.resources);
                if t.state != TaskState::TaskUnreachable {
                    counted.add(&t.resources);
                }
            }
            if used != agent.used {
                return Err(format!(
                    "agent {} used {} but its tasks sum to {used}",
                    agent.id, agent.used
                ));
            }
            match (self.allocator.available(*key), agent.status) {
                (Some(free), AgentStatus::Active | AgentStatus::Disconnected) => {
                    let mut sum = free.clone();
                    sum.add(&offered);
                    sum.add(&counted);
                    if sum != agent.total {
                        return Err(format!(
                            "agent {}: free {free} + offered {offered} + used {counted} != total {}",
                            agent.id, agent.total
                        ));
                    }
                }
                (None, AgentStatus::Active | AgentStatus::Disconnected) => {
                    return Err(format!("agent {} is missing from the allocator", agent.id));
                }
                (Some(_), _) => {
                    return Err(format!("agent {} should not be in the allocator", agent.id));
                }
                (None, _) => {
                    if !agent.offers.is_empty() {
                        return Err(format!("unreachable agent {} has offers", agent.id));
                    }
                }
            }
        }
        Ok(())
    }

    /// The per-framework part of [`Master::check_invariants`].
    fn check_frameworks_invariants(&self) -> Result<(), String> {
        for (fk, fw) in &self.frameworks {
            let mut used = Resources::new();
            for (tid, t) in &fw.tasks {
                let listed = self
                    .agents
                    .get(&t.agent)
                    .is_some_and(|a| a.tasks.contains(&(*fk, tid.clone())));
                if !listed {
                    return Err(format!("task {tid} is missing from its agent"));
                }
                used.add(&t.resources);
            }
            if used != fw.used {
                return Err(format!(
                    "framework {} used {} but its tasks sum to {used}",
                    fw.id, fw.used
                ));
            }
            for seq in &fw.offers {
                if self.offers.get(seq).is_none_or(|o| o.framework != *fk) {
                    return Err(format!("framework {} lists a wrong offer {seq}", fw.id));
                }
            }
            if fw.subscription.is_none() && !fw.offers.is_empty() {
                return Err(format!("disconnected framework {} holds offers", fw.id));
            }
        }
        Ok(())
    }
}
