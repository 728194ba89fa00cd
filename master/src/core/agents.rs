//! Agents: registration and re-registration, their streams, health, and what
//! happens to their offers and tasks when they disconnect, go silent or come back.
//!
//! ```text
//!   (new) ──Register──▶ ACTIVE ──stream closed──▶ DISCONNECTED ──silent ping_timeout
//!                         ▲  ▲                        │          × max_pings──▶ UNREACHABLE
//!                         │  └──────re-Register───────┘                          │
//!                         └──────────────re-Register (tasks restored)────────────┘
//!   RECOVERING (in the registry after a master restart) ──re-Register──▶ ACTIVE
//!                                     └──agent_reregister_timeout──▶ UNREACHABLE
//! ```
//!
//! Disconnecting rescinds the agent's offers and stops offering it but keeps its
//! tasks. Unreachable takes its resources out of the pool; its tasks become
//! TASK_UNREACHABLE (partition-aware frameworks) or TASK_LOST. On re-registration the
//! tasks the agent reports are the truth: they come back, and the ones it no longer
//! runs become TASK_GONE (or TASK_LOST). A KILL that waited for the agent is sent
//! once. A task a framework that is not partition aware was told is LOST (its agent
//! went unreachable) is killed when the agent brings it back: that framework already
//! considers it gone. Tasks reported ended stay known to their framework until it
//! acknowledges their terminal update (see `tasks.rs`).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use strata_proto::states::state_from_i32;
use strata_proto::v1::{self, TaskState, TaskStatusReason};
use strata_proto::{Resources, is_terminal};

use super::allocator::{AgentKey, FrameworkKey, UsedResources};
use super::api::{ConnId, Effect};
use super::master::Master;
use super::registry::RegistryOp;
use super::state::{AgentStatus, OfferSeq, StatusEntry, Task};
use super::tasks::TaskIds;

impl Master {
    /// Refuses a registration on `conn` and closes it. When the stream belongs to a
    /// registered agent (a second Register on it), that agent loses its stream: it is
    /// disconnected first, so its offers are rescinded and the unreachable timer runs
    /// (the driver drops the stream at once and reports no disconnect later).
    fn refuse_agent(&mut self, conn: ConnId, message: String, now: Instant) {
        self.refuse_agent_with(
            conn,
            v1::AgentError {
                message,
                gone: false,
            },
            now,
        );
    }

    /// Refuses a registration for good: the agent kills its tasks and stops.
    fn refuse_gone_agent(&mut self, conn: ConnId, message: String, now: Instant) {
        self.refuse_agent_with(
            conn,
            v1::AgentError {
                message,
                gone: true,
            },
            now,
        );
    }

    fn refuse_agent_with(&mut self, conn: ConnId, error: v1::AgentError, now: Instant) {
        tracing::info!(?conn, message = %error.message, gone = error.gone, "agent registration refused");
        if self.agent_conns.contains_key(&conn) {
            self.agent_disconnected(conn, now);
        }
        self.message_on(conn, v1::master_message::Message::Error(error));
        self.emit(Effect::CloseAgent { conn });
    }

    /// Register or re-register on `conn`.
    pub(super) fn agent_register(
        &mut self,
        conn: ConnId,
        register: v1::Register,
        peer: Option<String>,
        now: Instant,
    ) {
        let Some(info) = register.agent_info else {
            self.refuse_agent(
                conn,
                "Register has no agent_info: send the agent's id, hostname and resources".into(),
                now,
            );
            return;
        };
        if let Err(e) = strata_proto::limits::check_agent_info(&info) {
            self.refuse_agent(conn, format!("invalid agent registration: {e}"), now);
            return;
        }
        if info.hostname.trim().is_empty() {
            self.refuse_agent(
                conn,
                "the agent's hostname is empty: set --hostname".into(),
                now,
            );
            return;
        }
        let static_total = match Resources::try_from_proto(&info.resources) {
            Ok(r) => r,
            Err(e) => {
                self.refuse_agent(conn, format!("invalid agent resources: {e}"), now);
                return;
            }
        };
        // A stream that registered as another agent before: that agent lost it.
        if let Some(&other) = self.agent_conns.get(&conn)
            && self.agents.get(&other).is_some_and(|a| a.id != info.id)
        {
            self.agent_disconnected(conn, now);
        }

        // An authenticated agent's id is its certificate's node id (`agent:<node>`),
        // unless it registered an older id before it had a certificate.
        let node = info
            .principal
            .strip_prefix(strata_security::principal::AGENT_CN_PREFIX)
            .filter(|n| !n.is_empty());
        let id = match (info.id.is_empty(), node) {
            (false, _) => info.id.clone(),
            (true, Some(node)) => self
                .principal_agents
                .get(&info.principal)
                .cloned()
                .unwrap_or_else(|| node.to_string()),
            (true, None) => self.rng.uuid(),
        };
        // A principal whose agent an operator marked gone is revoked: it registers
        // under no id, not even as a new agent.
        if !info.principal.is_empty() && self.revoked_principals.contains(&info.principal) {
            let message = format!(
                "the certificate of '{}' is revoked: its agent was marked gone by an operator; the machine must join again with a new work dir",
                info.principal
            );
            self.refuse_gone_agent(conn, message, now);
            return;
        }
        let known = self.agent_ids.get(&id).and_then(|k| self.agents.get(k));
        if let Some(agent) = known.filter(|a| a.status == AgentStatus::Gone) {
            let message = format!(
                "agent '{}' was marked gone by an operator and may not register again: start it with an empty --work-dir to join as a new agent",
                agent.id
            );
            self.refuse_gone_agent(conn, message, now);
            return;
        }
        // An agent id is bound to the principal (certificate) that registered it; an
        // id registered without authentication is claimed by the first that comes.
        if let Some(agent) = known
            && !agent.principal.is_empty()
            && agent.principal != info.principal
        {
            let message = format!(
                "agent id '{id}' belongs to another agent (principal '{}'): an agent registers only under the id its own certificate registered",
                agent.principal
            );
            self.refuse_agent(conn, message, now);
            return;
        }
        // One certificate, one agent: a principal that registered an agent registers
        // only as that agent (a stolen or copied certificate cannot add agents).
        if let Some(bound) = self.principal_agents.get(&info.principal)
            && *bound != id
        {
            let message = format!(
                "the certificate of '{}' belongs to agent '{bound}': one certificate registers one agent (join with a fresh work dir to add an agent)",
                info.principal
            );
            self.refuse_agent(conn, message, now);
            return;
        }
        // A new authenticated agent registers under its certificate's node id (or
        // claims an id registered without authentication).
        if let Some(node) = node
            && id != node
            && known.is_none_or(|a| !a.principal.is_empty())
        {
            let message = format!(
                "agent id '{id}' is not the id of the certificate of '{}': register without an id, or as '{node}'",
                info.principal
            );
            self.refuse_agent(conn, message, now);
            return;
        }
        // Its dynamic reservations and volumes must still fit in its resources.
        let (ledger, adopted) = self.registering_ledger(&id, register.checkpointed.as_ref());
        let total = match ledger.apply(&static_total) {
            Ok(total) => total,
            Err(e) => {
                let message = format!(
                    "agent '{id}' cannot register: {e}; start it with the resources it had (--resources), or mark it gone (strata agent gone) and join the machine afresh with an empty --work-dir (its reservations and volumes are then lost)"
                );
                self.refuse_agent(conn, message, now);
                return;
            }
        };
        let (key, previous) = match self.agent_ids.get(&id) {
            Some(&key) => (
                key,
                self.agents
                    .get(&key)
                    .map(|a| (a.status, a.hostname.clone(), a.principal.clone())),
            ),
            None => {
                let key = self.new_agent_key();
                let agent = super::state::Agent::placeholder(
                    key,
                    id.clone(),
                    info.hostname.clone(),
                    AgentStatus::Recovering,
                    now,
                    None,
                );
                self.agents.insert(key, agent);
                self.agent_ids.insert(id.clone(), key);
                (key, None)
            }
        };

        // The old stream, if any, is replaced.
        if let Some(old) = self.agents.get_mut(&key).and_then(|a| a.conn.take()) {
            self.agent_conns.remove(&old);
            if old != conn {
                self.emit(Effect::CloseAgent { conn: old });
            }
        }
        // Offers made from the old registration are void.
        let offers: Vec<OfferSeq> = self
            .agents
            .get(&key)
            .map(|a| a.offers.iter().copied().collect())
            .unwrap_or_default();
        for offer_id in offers {
            self.rescind_offer(offer_id, true, now);
        }
        self.allocator.remove_agent(key);

        // Readmitted (written to the registry) when new, back, moved, or claimed by
        // its first authenticated principal.
        let readmit = match &previous {
            None => true,
            Some((status, hostname, principal)) => {
                matches!(status, AgentStatus::Unreachable | AgentStatus::Recovering)
                    || *hostname != info.hostname
                    || *principal != info.principal
            }
        };
        if !info.principal.is_empty() {
            self.principal_agents
                .insert(info.principal.clone(), id.clone());
        }
        if readmit {
            self.emit(Effect::Persist(RegistryOp::AdmitAgent {
                id: id.clone(),
                hostname: info.hostname.clone(),
                principal: info.principal.clone(),
            }));
        }
        if adopted {
            self.emit(Effect::Persist(RegistryOp::CheckpointResources {
                id: id.clone(),
                resources: ledger.encode(),
            }));
        }
        let unix = self.unix(now);
        if let Some(agent) = self.agents.get_mut(&key) {
            agent.hostname = info.hostname.clone();
            agent.principal = info.principal.clone();
            agent.address = info.address.clone();
            agent.attributes = info.attributes.clone();
            agent.total = total.clone();
            agent.checkpointed = ledger;
            agent.status = AgentStatus::Active;
            agent.conn = Some(conn);
            agent.last_seen = now;
            agent.reregister_deadline = None;
            agent.registered_unix = unix;
        }
        self.observe_agent(key, previous.is_none());
        self.agent_conns.insert(conn, key);
        tracing::info!(agent_id = %id, hostname = %info.hostname, ?peer, resources = %total,
            reregistered = previous.is_some(), "agent registered");
        self.message_on(
            conn,
            v1::master_message::Message::Registered(v1::Registered {
                agent_id: id,
                master_id: self.config.master_id.clone(),
                heartbeat_interval_seconds: self.config.agent_ping_timeout.as_secs_f64(),
            }),
        );

        let was_unreachable = matches!(previous, Some((AgentStatus::Unreachable, _, _)));
        // The agent's copy of its ledger follows the master's (sent when they differ).
        let theirs = register
            .checkpointed
            .as_ref()
            .and_then(|c| super::volumes::Checkpointed::from_proto(c).ok())
            .unwrap_or_default();
        if self
            .agents
            .get(&key)
            .is_some_and(|a| a.checkpointed != theirs)
        {
            self.send_checkpointed(key);
        }
        self.reconcile_agent_tasks(key, register.tasks, was_unreachable, now);

        let used: Vec<UsedResources> = self
            .agents
            .get(&key)
            .map(|a| a.tasks.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(fk, tid)| {
                let task = self.frameworks.get(&fk)?.tasks.get(&tid)?;
                Some(UsedResources {
                    framework: fk,
                    role: task.role.clone(),
                    resources: task.resources.clone(),
                })
            })
            .collect();
        self.allocator.add_agent(key, total, &used);
        if self
            .agents
            .get(&key)
            .is_some_and(|a| a.maintenance.is_some())
        {
            // Under maintenance: known, not offered; a draining agent's tasks go.
            self.allocator.deactivate_agent(key);
            self.drain_tasks(key, now);
        } else {
            self.pending_agents.insert(key);
        }
    }

    /// Brings the master's view of the agent's tasks in line with what it reports.
    /// `was_unreachable`: the agent comes back from UNREACHABLE (its tasks of
    /// frameworks that are not partition aware were reported LOST).
    fn reconcile_agent_tasks(
        &mut self,
        key: AgentKey,
        reported: Vec<v1::RunningTask>,
        was_unreachable: bool,
        now: Instant,
    ) {
        let Some(agent_id) = self.agents.get(&key).map(|a| a.id.clone()) else {
            return;
        };
        let mut seen: HashSet<(FrameworkKey, String)> = HashSet::new();
        let mut shutdown: BTreeSet<String> = BTreeSet::new();
        for rt in reported {
            let Some(info) = rt.task else {
                continue;
            };
            let framework_id = if rt.framework_id.is_empty() {
                rt.framework
                    .as_ref()
                    .map(|f| f.id.clone())
                    .unwrap_or_default()
            } else {
                rt.framework_id.clone()
            };
            if framework_id.is_empty() || info.task_id.is_empty() {
                tracing::debug!(agent_id = %agent_id, "reported task without framework or task id ignored");
                continue;
            }
            // The same limits as at ACCEPT: a task over them (from before they existed,
            // or an agent making things up) is not taken; it is killed.
            if let Err(e) = strata_proto::limits::check_len(
                "framework id",
                &framework_id,
                strata_proto::limits::MAX_ID_BYTES,
            )
            .and_then(|()| strata_proto::limits::check_task_info(&info))
            {
                tracing::warn!(agent_id = %agent_id, error = %e,
                    "re-registering agent reported a task over the limits; killing it");
                let kill = v1::KillTask {
                    framework_id,
                    task_id: info.task_id.clone(),
                    kill_policy: info.kill_policy,
                };
                self.message_to(key, v1::master_message::Message::KillTask(kill));
                continue;
            }
            if self.removed_frameworks.contains(&framework_id) {
                shutdown.insert(framework_id);
                continue;
            }
            let fk = match self.framework_ids.get(&framework_id) {
                Some(&fk) => fk,
                None => {
                    let mut fi = rt
                        .framework
                        .clone()
                        .filter(|f| strata_proto::limits::check_framework_info(f).is_ok())
                        .unwrap_or_default();
                    fi.id = framework_id.clone();
                    tracing::info!(framework_id = %framework_id, agent_id = %agent_id,
                        "framework recovered from an agent's tasks");
                    self.add_recovered_framework(fi, now)
                }
            };
            let state = state_from_i32(rt.state);
            if !super::tasks::an_agent_may_report(state) {
                // No state, or one only the master sets: the agent is wrong about
                // the task. It is not taken as seen (a task the master placed here
                // ends GONE below) and the agent is told to kill it.
                tracing::warn!(task_id = %info.task_id, agent_id = %agent_id, ?state,
                    "re-registering agent reported a task in a state an agent never reports; killing it");
                let kill = v1::KillTask {
                    framework_id: framework_id.clone(),
                    task_id: info.task_id.clone(),
                    kill_policy: info.kill_policy,
                };
                self.message_to(key, v1::master_message::Message::KillTask(kill));
                continue;
            }
            seen.insert((fk, info.task_id.clone()));
            if is_terminal(state) {
                // Its update is still queued on the agent and will come; until it is
                // acknowledged the framework knows the task as ended.
                self.remember_reported_end(
                    key,
                    &agent_id,
                    fk,
                    &info.task_id,
                    state,
                    was_unreachable,
                    now,
                );
                continue;
            }
            self.restore_task(key, &agent_id, fk, info, state, was_unreachable, now);
        }
        // Ended tasks whose update the agent no longer holds: no update will come.
        for fw in self.frameworks.values_mut() {
            let fk = fw.key;
            fw.ended.forget_where(|t| {
                t.agent == key && !seen.contains(&(fk, t.status.task_id.clone()))
            });
        }

        // Tasks the master placed here that the agent no longer runs.
        let missing: Vec<(FrameworkKey, String)> = self
            .agents
            .get(&key)
            .map(|a| {
                a.tasks
                    .iter()
                    .filter(|t| !seen.contains(*t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for (fk, task_id) in missing {
            self.master_transition(
                fk,
                &task_id,
                TaskState::TaskGone,
                TaskStatusReason::ReasonAgentRestarted,
                format!("agent '{agent_id}' re-registered without this task"),
                now,
            );
        }
        for framework_id in shutdown {
            let msg = v1::ShutdownFramework { framework_id };
            self.message_to(key, v1::master_message::Message::ShutdownFramework(msg));
        }
    }

    /// A task the re-registering agent reports ended, with its update still to come:
    /// the framework knows it as ended (unless the master still holds it live, which
    /// the update will end). A live task that was UNREACHABLE (its agent was away) is
    /// ended now: its agent is back, so it is no longer unreachable, and its resources
    /// are free (the agent is added back to the allocator without them).
    #[allow(clippy::too_many_arguments)]
    fn remember_reported_end(
        &mut self,
        key: AgentKey,
        agent_id: &str,
        fk: FrameworkKey,
        task_id: &str,
        state: TaskState,
        was_unreachable: bool,
        now: Instant,
    ) {
        let Some(fw) = self.frameworks.get_mut(&fk) else {
            return;
        };
        let came_back = match fw.tasks.get(task_id) {
            Some(t) if t.agent == key => {
                matches!(t.state, TaskState::TaskUnreachable | TaskState::TaskUnknown)
            }
            Some(_) => return,
            None => false,
        };
        if (fw.tasks.contains_key(task_id) && !came_back) || fw.ended.contains(task_id) {
            return;
        }
        if fw.lost.holds(task_id, key) {
            return; // known: its update is acknowledged here, not forwarded
        }
        if was_unreachable && !fw.partition_aware && !came_back {
            // Its framework was told it is LOST: that stays its end (`LostTasks`).
            self.mark_task_lost(fk, task_id, key);
            return;
        }
        let fw = &self.frameworks[&fk];
        let ids = TaskIds {
            task: task_id,
            agent: agent_id,
            framework: &fw.id,
        };
        let status = self.master_status(
            ids,
            state,
            TaskStatusReason::ReasonReconciliation,
            format!("agent '{agent_id}' re-registered with this task ended; its update follows"),
            now,
        );
        if came_back {
            // No uuid: `finish_task` does not remember it; it is remembered below.
            self.finish_task(fk, task_id, status.clone(), now);
        }
        if let Some(fw) = self.frameworks.get_mut(&fk) {
            fw.ended.insert(key, agent_id.to_string(), status);
        }
    }

    /// One task the re-registering agent reports running. A pending KILL is sent
    /// (once). A task the master does not know, of a framework that is not partition
    /// aware, on an agent back from UNREACHABLE was reported TASK_LOST to that
    /// framework, which considers it gone: it is killed (and accounted, as KILLING,
    /// until the agent reports it ended).
    #[allow(clippy::too_many_arguments)]
    fn restore_task(
        &mut self,
        key: AgentKey,
        agent_id: &str,
        fk: FrameworkKey,
        info: v1::TaskInfo,
        state: TaskState,
        was_unreachable: bool,
        now: Instant,
    ) {
        let Some(fw) = self.frameworks.get(&fk) else {
            return;
        };
        let framework_id = fw.id.clone();
        let existing = fw
            .tasks
            .get(&info.task_id)
            .map(|t| (t.agent, t.state, t.kill_pending));
        let message = format!("agent '{agent_id}' re-registered with this task");
        let ids = TaskIds {
            task: &info.task_id,
            agent: agent_id,
            framework: &framework_id,
        };
        let status = self.master_status(
            ids,
            state,
            TaskStatusReason::ReasonReconciliation,
            message,
            now,
        );
        match existing {
            Some((ak, _, _)) if ak != key => {
                tracing::warn!(task_id = %info.task_id, agent_id, "task reported by an agent the master did not place it on; ignored");
            }
            Some((_, was, kill_pending)) => {
                let came_back = matches!(was, TaskState::TaskUnreachable | TaskState::TaskUnknown);
                if came_back {
                    self.set_task_status(fk, &info.task_id, status.clone(), now);
                    self.send_update(fk, status);
                } else if was != state
                    && super::tasks::transition(was, state) == super::tasks::Transition::Changed
                {
                    // The agent's own update for this change is on its way.
                    self.set_task_status(fk, &info.task_id, status, now);
                }
                if let Some(policy) = kill_pending {
                    let kill = v1::KillTask {
                        framework_id,
                        task_id: info.task_id.clone(),
                        kill_policy: policy,
                    };
                    if self.message_to(key, v1::master_message::Message::KillTask(kill))
                        && let Some(task) = self
                            .frameworks
                            .get_mut(&fk)
                            .and_then(|f| f.tasks.get_mut(&info.task_id))
                    {
                        task.kill_pending = None;
                    }
                }
            }
            None => {
                // Also when the agent re-registers again before the task has ended.
                let told_lost =
                    (was_unreachable && !fw.partition_aware) || fw.lost.holds(&info.task_id, key);
                let resources = Resources::try_from_proto(&info.resources).unwrap_or_else(|e| {
                    tracing::warn!(task_id = %info.task_id, error = %e, "reported task has invalid resources; counted as none");
                    Resources::new()
                });
                // A task the master never placed is taken on the agent's word only
                // within what the agent has free: more would unbalance the books
                // (used beyond total) and the role's share. It is killed instead.
                let fits = self.agents.get(&key).is_some_and(|a| {
                    a.total
                        .checked_sub(&a.used)
                        .is_some_and(|free| free.contains(&resources))
                });
                if !fits {
                    tracing::warn!(task_id = %info.task_id, agent_id, resources = %resources,
                        "re-registering agent reported an unknown task larger than its free resources; killing it");
                    let kill = v1::KillTask {
                        framework_id,
                        task_id: info.task_id.clone(),
                        kill_policy: info.kill_policy,
                    };
                    self.message_to(key, v1::master_message::Message::KillTask(kill));
                    return;
                }
                let role = Master::task_role(&fw.roles, &resources);
                let (state, status) = if told_lost {
                    let message = format!(
                        "agent '{agent_id}' came back with a task its framework was told is lost: killing it"
                    );
                    let status = self.master_status(
                        ids,
                        TaskState::TaskKilling,
                        TaskStatusReason::ReasonReconciliation,
                        message,
                        now,
                    );
                    (TaskState::TaskKilling, status)
                } else {
                    (state, status)
                };
                let task = Task {
                    id: info.task_id.clone(),
                    name: info.name.clone(),
                    framework: fk,
                    framework_id: framework_id.clone(),
                    agent: key,
                    agent_id: agent_id.to_string(),
                    role,
                    resources,
                    kill_policy: info.kill_policy,
                    state,
                    last_status: Some(status.clone()),
                    seen_uuids: Vec::new(),
                    kill_pending: None,
                    updated_unix: self.unix(now),
                    statistics: None,
                    discovery: info.discovery.clone(),
                    health_checked: info.health_check.is_some(),
                    leaving: false,
                    objects: info.objects.clone(),
                    history: vec![StatusEntry::of(&status, self.unix(now))],
                };
                self.add_task(task);
                if told_lost {
                    self.mark_task_lost(fk, &info.task_id, key);
                    tracing::info!(task_id = %info.task_id, agent_id,
                        "killing a task reported LOST to its framework while its agent was unreachable");
                    let kill = v1::KillTask {
                        framework_id,
                        task_id: info.task_id.clone(),
                        kill_policy: info.kill_policy,
                    };
                    self.message_to(key, v1::master_message::Message::KillTask(kill));
                } else {
                    self.send_update(fk, status);
                }
            }
        }
    }

    /// Any message after registration on an agent stream.
    pub(super) fn agent_message(&mut self, conn: ConnId, message: v1::AgentMessage, now: Instant) {
        let Some(&key) = self.agent_conns.get(&conn) else {
            match message.message {
                Some(v1::agent_message::Message::Register(r)) => {
                    self.agent_register(conn, r, None, now)
                }
                _ => tracing::debug!(?conn, "message from an unregistered agent stream ignored"),
            }
            return;
        };
        if let Some(agent) = self.agents.get_mut(&key) {
            agent.last_seen = now;
        }
        match message.message {
            Some(v1::agent_message::Message::Register(r)) => {
                self.agent_register(conn, r, None, now)
            }
            Some(v1::agent_message::Message::StatusUpdate(u)) => match u.status {
                Some(status) => self.status_update(key, status, now),
                None => tracing::debug!(?conn, "status update without a status ignored"),
            },
            Some(v1::agent_message::Message::Heartbeat(_)) | None => {}
            Some(v1::agent_message::Message::UsageReport(report)) => self.usage_report(key, report),
            Some(v1::agent_message::Message::ExecutorMessage(m)) => {
                if m.data.len() > strata_proto::limits::MAX_MESSAGE_DATA_BYTES {
                    tracing::debug!(
                        bytes = m.data.len(),
                        "framework message over the limit dropped"
                    );
                    return;
                }
                let Some(&fk) = self.framework_ids.get(&m.framework_id) else {
                    return;
                };
                let agent_id = self
                    .agents
                    .get(&key)
                    .map(|a| a.id.clone())
                    .unwrap_or_default();
                let event = v1::FrameworkMessage {
                    agent_id,
                    task_id: m.task_id,
                    data: m.data,
                };
                self.event_to(fk, v1::event::Event::Message(event));
            }
        }
    }

    /// The latest resource usage of an agent's tasks: kept per task for `/state`.
    /// Tasks the agent does not run (or no longer runs) are ignored.
    fn usage_report(&mut self, key: AgentKey, report: v1::UsageReport) {
        for usage in report.tasks {
            let Some(&fk) = self.framework_ids.get(&usage.framework_id) else {
                continue;
            };
            if let Some(task) = self
                .frameworks
                .get_mut(&fk)
                .and_then(|f| f.tasks.get_mut(&usage.task_id))
                .filter(|t| t.agent == key && !strata_proto::is_terminal(t.state))
            {
                task.statistics = usage.statistics;
            }
        }
        if let Some(agent) = self.agents.get_mut(&key) {
            for v in report.volumes {
                let k = (v.role, v.persistence_id);
                if agent.checkpointed.volumes.volumes().any(|e| {
                    e.role.as_deref() == Some(k.0.as_str())
                        && e.persistence().is_some_and(|p| p.id == k.1)
                }) {
                    agent.volume_usage.insert(k, v.used_bytes);
                }
            }
        }
    }

    /// The agent's stream closed: keep its tasks, stop offering it.
    pub(super) fn agent_disconnected(&mut self, conn: ConnId, now: Instant) {
        let Some(key) = self.agent_conns.remove(&conn) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        if agent.conn != Some(conn) {
            return;
        }
        agent.conn = None;
        if agent.status == AgentStatus::Active {
            agent.status = AgentStatus::Disconnected;
        }
        tracing::info!(agent_id = %agent.id, "agent disconnected");
        let offers: Vec<OfferSeq> = agent.offers.iter().copied().collect();
        self.observe_agent(key, false);
        for offer_id in offers {
            self.rescind_offer(offer_id, true, now);
        }
        self.allocator.deactivate_agent(key);
        self.pending_agents.remove(&key);
    }

    /// Marks silent agents, and registry agents that never came back, unreachable.
    pub(super) fn check_agent_health(&mut self, now: Instant) {
        let limit = self
            .config
            .agent_ping_timeout
            .checked_mul(self.config.max_agent_ping_timeouts.max(1))
            .unwrap_or(Duration::MAX);
        let mut lost = Vec::new();
        for agent in self.agents.values() {
            let expired = match agent.status {
                AgentStatus::Active | AgentStatus::Disconnected => {
                    now.saturating_duration_since(agent.last_seen) >= limit
                }
                AgentStatus::Recovering => agent.reregister_deadline.is_some_and(|d| now >= d),
                AgentStatus::Unreachable | AgentStatus::Gone => false,
            };
            if expired {
                lost.push(agent.key);
            }
        }
        lost.sort_unstable();
        for key in lost {
            self.mark_unreachable(key, now);
        }
    }

    /// Takes an agent out of the pool: offers rescinded, tasks UNREACHABLE or LOST.
    pub(super) fn mark_unreachable(&mut self, key: AgentKey, now: Instant) {
        let unix = self.unix(now);
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        let was = agent.status;
        agent.status = AgentStatus::Unreachable;
        agent.reregister_deadline = None;
        let id = agent.id.clone();
        let conn = agent.conn.take();
        let offers: Vec<OfferSeq> = agent.offers.iter().copied().collect();
        let tasks: Vec<(FrameworkKey, String)> = agent.tasks.iter().cloned().collect();
        self.observe_agent(key, false);
        tracing::warn!(agent_id = %id, previous = was.name(), tasks = tasks.len(), "agent unreachable");
        self.emit(Effect::Persist(RegistryOp::MarkUnreachable {
            id: id.clone(),
            unix_time: unix,
        }));
        if let Some(conn) = conn {
            self.agent_conns.remove(&conn);
            self.emit(Effect::CloseAgent { conn });
        }
        for offer_id in offers {
            self.rescind_offer(offer_id, true, now);
        }
        self.allocator.remove_agent(key);
        self.pending_agents.remove(&key);
        let message = if was == AgentStatus::Recovering {
            format!("agent '{id}' did not re-register after the master restarted")
        } else {
            format!("agent '{id}' is unreachable: no heartbeat within the ping timeout")
        };
        for (fk, task_id) in tasks {
            self.master_transition(
                fk,
                &task_id,
                TaskState::TaskUnreachable,
                TaskStatusReason::ReasonAgentUnreachable,
                message.clone(),
                now,
            );
        }
    }

    /// An operator marked the agent gone: its stream is closed, its offers are
    /// rescinded, its tasks end TASK_GONE_BY_OPERATOR, and it never comes back.
    pub(super) fn mark_gone(&mut self, key: AgentKey, now: Instant) {
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        agent.status = AgentStatus::Gone;
        agent.reregister_deadline = None;
        // Its reservations and volumes went with it (the registry forgets them too).
        agent.checkpointed = Default::default();
        agent.volume_usage.clear();
        if !agent.principal.is_empty() {
            self.revoked_principals.insert(agent.principal.clone());
        }
        agent.maintenance = None;
        let id = agent.id.clone();
        let conn = agent.conn.take();
        let offers: Vec<OfferSeq> = agent.offers.iter().copied().collect();
        let tasks: Vec<(FrameworkKey, String)> = agent.tasks.iter().cloned().collect();
        self.observe_agent_removed(&id);
        tracing::warn!(agent_id = %id, tasks = tasks.len(), "agent marked gone by an operator");
        self.emit(Effect::Persist(RegistryOp::MarkAgentGone {
            id: id.clone(),
        }));
        if let Some(conn) = conn {
            self.agent_conns.remove(&conn);
            self.emit(Effect::CloseAgent { conn });
        }
        for offer_id in offers {
            self.rescind_offer(offer_id, true, now);
        }
        let message = format!("agent '{id}' was marked gone by an operator");
        for (fk, task_id) in tasks {
            self.master_transition(
                fk,
                &task_id,
                TaskState::TaskGoneByOperator,
                TaskStatusReason::ReasonAgentRemoved,
                message.clone(),
                now,
            );
        }
        self.allocator.remove_agent(key);
        self.pending_agents.remove(&key);
        // Every framework hears that the agent is gone (Mesos' FAILURE without a task),
        // e.g. to give up what it kept there (a resident app's volumes).
        let connected: Vec<FrameworkKey> = self
            .frameworks
            .values()
            .filter(|f| f.subscription.is_some())
            .map(|f| f.key)
            .collect();
        for fk in connected {
            self.event_to(
                fk,
                v1::event::Event::Failure(v1::Failure {
                    agent_id: id.clone(),
                    task_id: String::new(),
                    status: None,
                }),
            );
        }
    }
}
