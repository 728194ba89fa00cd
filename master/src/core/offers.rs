//! Offers: turning allocations into OFFERS events, and the calls that answer them
//! (ACCEPT with LAUNCH operations, DECLINE), rescinds and the offer timeout.
//!
//! ```text
//!   Tick ─▶ allocator.allocate ─▶ Offer records + one OFFERS event per framework
//!           (several when its offers exceed half the message limit)
//!   ACCEPT(offer ids, LAUNCH tasks, filters)
//!     over a size limit (ids, offers, tasks)?         ── yes ─▶ InvalidArgument
//!     the caller's? listed once? one agent?           ── no ─▶ InvalidArgument
//!     all outstanding?  ── no ─▶ per task UPDATE TASK_DROPPED (TASK_LOST if not partition
//!                                aware), REASON_INVALID_OFFERS; the valid offers return
//!     per task: valid? unique id? fits what is left? ── no ─▶ UPDATE TASK_ERROR
//!                                                    ── yes ─▶ STAGING + RunTask to agent
//!     what is left ─▶ allocator.recover(filter = refuse_seconds)
//!   DECLINE(offer ids, filters) ─▶ allocator.recover(filter); another framework's
//!                                  offer ─▶ InvalidArgument
//! ```
//!
//! An offer that is no longer outstanding (rescinded, expired, already accepted or
//! declined) is a race the framework cannot avoid, so it is not a call error in
//! either call: the call succeeds; ACCEPT answers each of its tasks with an update
//! naming the offer (as Mesos does: the first unknown id, cut to 64 bytes, and how
//! many others) and DECLINE has nothing left to decline.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use strata_proto::Resources;
use strata_proto::limits::shown;
use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::allocator::{AgentKey, Allocation, FrameworkKey};
use super::api::{CallError, Effect};
use super::fastmap::FastMap;
use super::master::{Master, after};
use super::registry::RegistryOp;
use super::state::{Offer, OfferSeq, StatusEntry, Task};
use super::tasks::{TaskIds, visible_state};
use super::validate::{TaskProblem, authorize_task, fit_problem, refuse_duration, validate_task};
use super::volumes::OpKind;

/// Recognises repeated ids in a call: a linear scan for the usual handful, a hash
/// set beyond that.
#[derive(Default)]
struct Dedup<'a> {
    few: Vec<&'a str>,
    many: HashSet<&'a str>,
}

impl<'a> Dedup<'a> {
    /// Whether `id` is new.
    fn insert(&mut self, id: &'a str) -> bool {
        if self.few.len() < 32 {
            if self.few.contains(&id) {
                return false;
            }
            self.few.push(id);
            return true;
        }
        !self.few.contains(&id) && self.many.insert(id)
    }
}

/// The most bytes of offers in one OFFERS event: half the message limit, so that an
/// event always decodes in the SDK (whose limit is the same) however many agents a
/// framework is offered at once. A larger batch becomes several events.
const OFFERS_EVENT_BYTES: usize = strata_proto::limits::MAX_MESSAGE_BYTES / 2;

/// `offers` in consecutive groups of at most `max` encoded bytes each (a single offer
/// larger than `max`, which the limits on agents rule out, goes alone).
fn split_by_size(offers: Vec<v1::Offer>, max: usize) -> Vec<Vec<v1::Offer>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut bytes = 0;
    for offer in offers {
        // The offer's field in `Offers`: tag, length and body.
        let len = prost::Message::encoded_len(&offer);
        let len = len + prost::length_delimiter_len(len) + 1;
        if !group.is_empty() && bytes + len > max {
            groups.push(std::mem::take(&mut group));
            bytes = 0;
        }
        bytes += len;
        group.push(offer);
    }
    if !group.is_empty() || groups.is_empty() {
        groups.push(group);
    }
    groups
}

/// How an offer id named in a call stands.
enum Named {
    Mine(OfferSeq),
    Foreign,
    Unknown,
}

impl Master {
    /// Runs the allocation the timers ask for: the batch every allocation interval (or
    /// right away after a subscription or revive), else the agents whose free
    /// resources grew since the last Tick.
    pub(super) fn maybe_allocate(&mut self, now: Instant) {
        if now >= self.next_allocation || self.allocate_all {
            if now >= self.next_allocation {
                self.next_allocation = after(now, self.config.allocation_interval);
            }
            self.allocate_all = false;
            self.pending_agents.clear();
            self.run_allocation(None, now);
        } else if !self.pending_agents.is_empty() {
            let agents: Vec<AgentKey> = std::mem::take(&mut self.pending_agents)
                .into_iter()
                .collect();
            self.run_allocation(Some(&agents), now);
        }
    }

    fn run_allocation(&mut self, agents: Option<&[AgentKey]>, now: Instant) {
        let allocations = self.allocator.allocate(now, agents);
        self.counters.allocation_runs += 1;
        // One OFFERS event per framework, in order of first allocation; sized up front
        // (offers are large: growing many vectors by doubling is costly).
        let mut index: FastMap<FrameworkKey, (usize, usize)> = FastMap::default();
        for a in &allocations {
            let next = index.len();
            index.entry(a.framework).or_insert((next, 0)).1 += 1;
        }
        let mut batches: Vec<(FrameworkKey, Vec<v1::Offer>)> = Vec::with_capacity(index.len());
        for a in &allocations {
            let (i, n) = index[&a.framework];
            if i == batches.len() {
                batches.push((a.framework, Vec::with_capacity(n)));
            }
        }
        for a in allocations {
            let i = index[&a.framework].0;
            if let Some(offer) = self.make_offer(a, now) {
                batches[i].1.push(offer);
            }
        }
        for (fk, offers) in batches {
            self.counters.offers_sent += offers.len() as u64;
            for offers in split_by_size(offers, OFFERS_EVENT_BYTES) {
                self.event_to(fk, v1::event::Event::Offers(v1::Offers { offers }));
            }
        }
    }

    /// Records an allocation as an outstanding offer, or hands it straight back when
    /// its framework or agent cannot take it.
    fn make_offer(&mut self, a: Allocation, now: Instant) -> Option<v1::Offer> {
        let fw_ok = self
            .frameworks
            .get(&a.framework)
            .is_some_and(|f| f.subscription.is_some());
        let agent_ok = self.agents.get(&a.agent).is_some_and(|x| x.is_connected());
        if !fw_ok || !agent_ok {
            tracing::debug!(framework = ?a.framework, agent = ?a.agent,
                "allocation to a gone framework or agent returned");
            self.allocator
                .recover(a.agent, a.framework, &a.role, a.resources, None, now);
            return None;
        }
        self.next_offer += 1;
        let seq = self.next_offer;
        let id = format!("{}{seq}", self.offer_prefix);
        let fw = self.frameworks.get_mut(&a.framework)?;
        fw.offers.insert(seq);
        let framework_id = fw.id.clone();
        let agent = self.agents.get_mut(&a.agent)?;
        agent.offers.insert(seq);
        let offer = v1::Offer {
            id,
            framework_id,
            agent_id: agent.id.clone(),
            hostname: agent.hostname.clone(),
            role: a.role.clone(),
            resources: a.resources.to_proto(),
            attributes: agent.attributes.clone(),
            agent_address: agent.address.clone(),
        };
        if let Some(timeout) = self.config.offer_timeout {
            self.offer_expiry.push_back((after(now, timeout), seq));
        }
        let record = Offer {
            seq,
            framework: a.framework,
            agent: a.agent,
            role: a.role,
            resources: a.resources,
        };
        self.offers.insert(seq, record);
        Some(offer)
    }

    /// The wire id of an offer.
    pub(super) fn offer_id(&self, seq: OfferSeq) -> String {
        format!("{}{seq}", self.offer_prefix)
    }

    /// The offer an id names, if it is one of this master's outstanding offers.
    fn offer_seq(&self, id: &str) -> Option<OfferSeq> {
        let digits = id.strip_prefix(self.offer_prefix.as_str())?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits.len() == 1 || !digits.starts_with('0'));
        let seq = digits.parse::<OfferSeq>().ok().filter(|_| canonical)?;
        self.offers.contains_key(&seq).then_some(seq)
    }

    fn named(&self, fk: FrameworkKey, id: &str) -> Named {
        match self.offer_seq(id).and_then(|seq| self.offers.get(&seq)) {
            None => Named::Unknown,
            Some(o) if o.framework != fk => Named::Foreign,
            Some(o) => Named::Mine(o.seq),
        }
    }

    /// Takes an offer out of every index, without touching the allocator.
    pub(super) fn remove_offer(&mut self, seq: OfferSeq) -> Option<Offer> {
        let offer = self.offers.remove(&seq)?;
        if let Some(fw) = self.frameworks.get_mut(&offer.framework) {
            fw.offers.remove(&seq);
        }
        if let Some(agent) = self.agents.get_mut(&offer.agent) {
            agent.offers.remove(&seq);
        }
        Some(offer)
    }

    /// Withdraws an offer: its resources return (no filter); with `notify`, the
    /// framework gets RESCIND.
    pub(super) fn rescind_offer(&mut self, seq: OfferSeq, notify: bool, now: Instant) {
        let Some(offer) = self.remove_offer(seq) else {
            return;
        };
        self.allocator.recover(
            offer.agent,
            offer.framework,
            &offer.role,
            offer.resources,
            None,
            now,
        );
        self.counters.offers_rescinded += 1;
        if notify {
            let offer_id = self.offer_id(seq);
            let event = v1::event::Event::Rescind(v1::Rescind { offer_id });
            self.event_to(offer.framework, event);
        }
    }

    /// Rescinds offers older than the offer timeout.
    pub(super) fn expire_offers(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.offer_expiry.front() {
            if at > now {
                break;
            }
            self.offer_expiry.pop_front();
            if self.offers.contains_key(&seq) {
                self.rescind_offer(seq, true, now);
            }
        }
    }

    /// DECLINE: the offers' resources return under the filter. Offers that are no
    /// longer outstanding are skipped (see the module docs); another framework's
    /// offers are InvalidArgument, and the caller's valid ones are declined anyway.
    pub(super) fn decline(
        &mut self,
        fk: FrameworkKey,
        req: v1::DeclineRequest,
        now: Instant,
    ) -> Result<(), CallError> {
        let refuse = refuse_duration(req.filters.as_ref(), self.config.default_refuse)?;
        if req.offer_ids.is_empty() {
            return Err(CallError::InvalidArgument(
                "DECLINE names no offers: list the offer ids to decline".into(),
            ));
        }
        let (mut unknown, mut foreign, mut declined) = (0usize, Vec::new(), 0usize);
        let mut seen = Dedup::default();
        for id in &req.offer_ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            match self.named(fk, id) {
                Named::Unknown => unknown += 1,
                Named::Foreign => foreign.push(id.clone()),
                Named::Mine(seq) => {
                    if let Some(o) = self.remove_offer(seq) {
                        self.allocator
                            .recover(o.agent, fk, &o.role, o.resources, refuse, now);
                        self.counters.offers_declined += 1;
                        declined += 1;
                    }
                }
            }
        }
        let rest = if declined > 0 {
            format!("; the other {declined} offer(s) were declined")
        } else {
            String::new()
        };
        if let Some(first) = foreign.first() {
            // The client's ids, named by a short prefix and a count.
            let more = match foreign.len() - 1 {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            return Err(CallError::InvalidArgument(format!(
                "offer(s) {}{more} were made to another framework{rest}",
                shown(first)
            )));
        }
        if unknown > 0 {
            tracing::debug!(
                unknown,
                declined,
                "DECLINE named offers that are no longer outstanding; skipped"
            );
        }
        Ok(())
    }

    /// ACCEPT: see the module docs.
    pub(super) fn accept(
        &mut self,
        fk: FrameworkKey,
        req: v1::AcceptRequest,
        now: Instant,
    ) -> Result<(), CallError> {
        let refuse = refuse_duration(req.filters.as_ref(), self.config.default_refuse)?;
        if req.offer_ids.is_empty() {
            return Err(CallError::InvalidArgument(
                "ACCEPT names no offers: list the offer ids the operations use".into(),
            ));
        }
        let mut problem: Option<String> = None;
        let mut mine: Vec<OfferSeq> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        let mut seen = Dedup::default();
        for id in &req.offer_ids {
            if !seen.insert(id.as_str()) {
                problem.get_or_insert_with(|| format!("offer '{id}' is listed twice"));
                continue;
            }
            match self.named(fk, id) {
                Named::Unknown => unknown.push(id),
                Named::Foreign => {
                    problem.get_or_insert_with(|| {
                        format!("offer '{id}' was made to another framework")
                    });
                }
                Named::Mine(seq) => mine.push(seq),
            }
        }
        let agents: BTreeSet<AgentKey> = mine
            .iter()
            .filter_map(|seq| self.offers.get(seq))
            .map(|o| o.agent)
            .collect();
        if problem.is_none() && agents.len() > 1 {
            let ids: Vec<String> = agents
                .iter()
                .filter_map(|k| self.agents.get(k))
                .map(|a| a.id.clone())
                .collect();
            problem = Some(format!(
                "the offers come from {} agents ({}): accept offers of one agent per call",
                ids.len(),
                ids.join(", ")
            ));
        }
        if let Some(problem) = problem {
            // As in Mesos, an invalid ACCEPT uses up the caller's offers in it: their
            // resources return to the pool (without a filter).
            for seq in mine {
                if let Some(o) = self.remove_offer(seq) {
                    self.allocator
                        .recover(o.agent, fk, &o.role, o.resources, None, now);
                }
            }
            return Err(CallError::InvalidArgument(problem));
        }
        if !unknown.is_empty() {
            // Sent once per task: names the client's ids only by a short prefix.
            let why = match unknown.as_slice() {
                [one] => format!("offer '{}' is", shown(one)),
                [first, rest @ ..] => format!(
                    "offer '{}' and {} other offer(s) of this call are",
                    shown(first),
                    rest.len()
                ),
                [] => String::new(),
            };
            let why = format!(
                "{why} no longer outstanding (unknown, rescinded, or already accepted or declined)"
            );
            self.refuse_launches(fk, &req.operations, &why, now);
            // The caller's valid offers in the call return, without a filter.
            for seq in mine {
                if let Some(o) = self.remove_offer(seq) {
                    self.allocator
                        .recover(o.agent, fk, &o.role, o.resources, None, now);
                }
            }
            return Ok(());
        }

        let offers: Vec<Offer> = mine
            .into_iter()
            .filter_map(|seq| self.remove_offer(seq))
            .collect();
        let Some(ak) = offers.first().map(|o| o.agent) else {
            return Ok(());
        };
        let agent_id = self
            .agents
            .get(&ak)
            .map(|a| a.id.clone())
            .unwrap_or_default();
        let mut pools: Vec<(String, Resources)> = Vec::new();
        for o in offers {
            match pools.iter_mut().find(|(r, _)| *r == o.role) {
                Some((_, left)) => left.add(&o.resources),
                None => pools.push((o.role, o.resources)),
            }
        }
        let mut launch = Launch {
            fk,
            ak,
            agent_id,
            pools,
            launched: HashSet::new(),
            run: Vec::new(),
        };
        let mut skipped: Vec<String> = Vec::new();
        for (i, op) in req.operations.into_iter().enumerate() {
            match op.operation {
                Some(v1::operation::Operation::Launch(l)) => {
                    for task in l.task_infos {
                        self.launch_task(&mut launch, task, now);
                    }
                    self.send_launched(&mut launch);
                }
                Some(other) => {
                    let Some((kind, wire)) = OpKind::of(&other) else {
                        continue;
                    };
                    if let Err(why) = self.accept_resource_op(fk, ak, &mut launch.pools, kind, wire)
                    {
                        tracing::info!(operation = kind.name(), index = i, %why,
                            "ACCEPT operation refused");
                        skipped.push(format!("operation {} ({}): {why}", i + 1, kind.name()));
                    }
                }
                None => tracing::debug!("ACCEPT operation without a kind ignored"),
            }
        }
        for (role, left) in launch.pools {
            if !left.is_empty() {
                self.allocator.recover(ak, fk, &role, left, refuse, now);
            }
        }
        if skipped.is_empty() {
            Ok(())
        } else {
            Err(CallError::InvalidArgument(format!(
                "{} refused, the others applied: {}",
                if skipped.len() == 1 {
                    "one operation was".to_string()
                } else {
                    format!("{} operations were", skipped.len())
                },
                skipped.join("; ")
            )))
        }
    }

    /// Answers every task of an ACCEPT whose offers are invalid with TASK_DROPPED
    /// (TASK_LOST for frameworks that are not partition aware), REASON_INVALID_OFFERS.
    fn refuse_launches(
        &mut self,
        fk: FrameworkKey,
        operations: &[v1::Operation],
        why: &str,
        now: Instant,
    ) {
        let Some(fw) = self.frameworks.get(&fk) else {
            return;
        };
        let state = visible_state(TaskState::TaskDropped, fw.partition_aware);
        let framework_id = fw.id.clone();
        let mut statuses = Vec::new();
        for op in operations {
            let Some(v1::operation::Operation::Launch(l)) = &op.operation else {
                continue;
            };
            for task in &l.task_infos {
                let ids = TaskIds {
                    task: &task.task_id,
                    agent: &task.agent_id,
                    framework: &framework_id,
                };
                let message = format!("task '{}' was not launched: {why}", shown(&task.task_id));
                statuses.push(self.master_status(
                    ids,
                    state,
                    TaskStatusReason::ReasonInvalidOffers,
                    message,
                    now,
                ));
            }
        }
        for status in statuses {
            self.counters.count_terminal(state);
            self.send_update(fk, status);
        }
    }

    /// Validates one task of an ACCEPT and launches it, or answers TASK_ERROR.
    fn launch_task(&mut self, l: &mut Launch, mut task: v1::TaskInfo, now: Instant) {
        match self.check_task(l, &task) {
            Err(problem) => {
                let framework_id = self
                    .frameworks
                    .get(&l.fk)
                    .map(|f| f.id.clone())
                    .unwrap_or_default();
                let ids = TaskIds {
                    task: &task.task_id,
                    agent: &l.agent_id,
                    framework: &framework_id,
                };
                tracing::debug!(task_id = %task.task_id, message = %problem.message, "task refused");
                let status = self.master_status(
                    ids,
                    TaskState::TaskError,
                    problem.reason,
                    problem.message,
                    now,
                );
                self.counters.tasks_error += 1;
                self.send_update(l.fk, status);
            }
            Ok((resources, pool, pins)) => {
                super::objects::pin(&mut task, &pins);
                let Some(fw) = self.frameworks.get_mut(&l.fk) else {
                    return;
                };
                let framework_id = fw.info.id.clone();
                if fw.lost.remove(&task.task_id) {
                    self.emit(Effect::Persist(RegistryOp::ForgetLostTask {
                        framework_id: framework_id.clone(),
                        task_id: task.task_id.clone(),
                    }));
                }
                l.pools[pool].1.subtract(&resources);
                if resources.volumes().next().is_some() {
                    // The agent mounts each volume as the offer has it.
                    task.resources = resources.to_proto();
                }
                l.launched.insert(task.task_id.clone());
                task.agent_id = l.agent_id.clone();
                let record = Task {
                    id: task.task_id.clone(),
                    name: task.name.clone(),
                    framework: l.fk,
                    framework_id,
                    agent: l.ak,
                    agent_id: l.agent_id.clone(),
                    role: l.pools[pool].0.clone(),
                    resources,
                    kill_policy: task.kill_policy,
                    state: TaskState::TaskStaging,
                    last_status: None,
                    seen_uuids: Vec::new(),
                    kill_pending: None,
                    updated_unix: self.unix(now),
                    statistics: None,
                    discovery: task.discovery.clone(),
                    health_checked: task.health_check.is_some(),
                    leaving: false,
                    objects: task.objects.clone(),
                    history: vec![StatusEntry {
                        state: TaskState::TaskStaging,
                        reason: 0,
                        message: String::new(),
                        healthy: None,
                        unix: self.unix(now),
                    }],
                };
                self.add_task(record);
                l.run.push(task);
            }
        }
    }

    /// Sends the tasks launched so far to their agent: one RunTasks per
    /// [`RUN_TASKS_BYTES`] of tasks, each with the framework's info once.
    fn send_launched(&mut self, l: &mut Launch) {
        if l.run.is_empty() {
            return;
        }
        let Some(framework) = self.frameworks.get(&l.fk).map(|f| f.info.clone()) else {
            l.run.clear();
            return;
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        let tasks = std::mem::take(&mut l.run);
        let last = tasks.len() - 1;
        for (i, task) in tasks.into_iter().enumerate() {
            bytes += prost::Message::encoded_len(&task);
            batch.push(task);
            if bytes >= RUN_TASKS_BYTES || i == last {
                let run = v1::RunTasks {
                    framework: Some(framework.clone()),
                    tasks: std::mem::take(&mut batch),
                };
                self.message_to(l.ak, v1::master_message::Message::RunTasks(run));
                bytes = 0;
            }
        }
    }

    /// The task's resources and the pool (role) they come from, or why it cannot run.
    fn check_task(
        &self,
        l: &Launch,
        task: &v1::TaskInfo,
    ) -> Result<(Resources, usize, Vec<u64>), TaskProblem> {
        let resources = validate_task(task, &l.agent_id)?;
        let mut pins = Vec::new();
        if let Some(fw) = self.frameworks.get(&l.fk) {
            authorize_task(&self.config.authorizer, &fw.info, task)?;
            pins = self.resolve_objects(&fw.info, task)?;
        }
        let id = &task.task_id;
        let duplicate = |message: String| TaskProblem {
            reason: TaskStatusReason::ReasonDuplicateTaskId,
            message,
        };
        if l.launched.contains(id) {
            return Err(duplicate(format!(
                "task id '{id}' is used twice in this ACCEPT"
            )));
        }
        if self
            .frameworks
            .get(&l.fk)
            .is_some_and(|f| f.tasks.contains_key(id))
        {
            return Err(duplicate(format!(
                "task id '{id}' is already used by a live task of this framework: task ids must be unique"
            )));
        }
        if self
            .frameworks
            .get(&l.fk)
            .is_some_and(|f| f.ended.contains(id))
        {
            return Err(duplicate(format!(
                "task id '{id}' belongs to a task that ended and whose terminal update is not acknowledged yet: task ids must be unique"
            )));
        }
        if let Some(i) = l
            .pools
            .iter()
            .position(|(_, left)| left.contains(&resources))
        {
            // A volume as the offer has it (with its creator).
            let resources = resources.with_details_of(&l.pools[i].1);
            return Ok((resources, i, pins));
        }
        let mut left = Resources::new();
        for (_, p) in &l.pools {
            left.add(p);
        }
        let message = fit_problem(id, &resources, &left)
            .unwrap_or_else(|| format!("task '{id}' must fit in the offers of a single role"));
        Err(TaskProblem::invalid(message))
    }
}

/// The working state of one ACCEPT.
struct Launch {
    fk: FrameworkKey,
    ak: AgentKey,
    agent_id: String,
    /// What is left of the offers, by role.
    pools: Vec<(String, Resources)>,
    /// Task ids launched by this call.
    launched: HashSet<String>,
    /// Tasks launched by the current operation, not sent to the agent yet.
    run: Vec<v1::TaskInfo>,
}

/// The size of the tasks one RunTasks message carries at most (well below the agent
/// link's message limit, whatever the FrameworkInfo's size).
const RUN_TASKS_BYTES: usize = 4 << 20;
