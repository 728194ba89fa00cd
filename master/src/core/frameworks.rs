//! Frameworks: subscription (new, failover, after a master restart), disconnection
//! and the failover timeout, and removal (TEARDOWN or timeout).
//!
//! ```text
//!   Subscribe(no id) ──▶ new id ─┐
//!   Subscribe(id)    ──▶ known, recovered or unknown id: accepted (failover) ─┐
//!                                ▼                                            ▼
//!                 CONNECTED (stream id S, offers flow) ◀──────────────────────┘
//!                     │ stream closed                 ▲ Subscribe(id): new stream id,
//!                     ▼                               │ old stream closed
//!                 DISCONNECTED ──failover_timeout──▶ removed: tasks killed, RemoveFramework
//! ```
//!
//! A Subscribe whose id is not a safe path component ([`strata_proto::validate`]:
//! it names the framework's sandbox directory on agents) gets ERROR and is closed.

use std::collections::BTreeSet;
use std::time::Instant;

use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::allocator::{AgentKey, FrameworkKey};
use super::api::{CallError, ConnId, Effect};
use super::codec::encode_framework_info;
use super::master::{Master, after};
use super::registry::RegistryOp;
use super::state::{Framework, OfferSeq, Subscription};
use super::tasks::TaskIds;
use super::validate::{duration_from_secs, validate_roles};

impl Master {
    fn refuse_subscription(&mut self, conn: ConnId, message: String) {
        tracing::info!(?conn, %message, "subscription refused");
        self.counters.calls_refused += 1;
        self.event_on(conn, v1::event::Event::Error(v1::Error { message }));
        self.emit(Effect::CloseFramework { conn });
    }

    /// The per-principal caps: how many frameworks one principal has registered at once
    /// (a failover does not count twice) and how many distinct roles they use.
    fn check_principal_caps(
        &self,
        info: &v1::FrameworkInfo,
        roles: &[String],
    ) -> Result<(), String> {
        let this = self.framework_ids.get(&info.id).copied();
        let mut frameworks = 1usize;
        let mut used: BTreeSet<&str> = roles.iter().map(String::as_str).collect();
        for (fk, fw) in &self.frameworks {
            if fw.info.principal == info.principal && Some(*fk) != this {
                frameworks += 1;
                used.extend(fw.roles.iter().map(String::as_str));
            }
        }
        let who = if info.principal.is_empty() {
            "callers without a principal".to_string()
        } else {
            format!("principal '{}'", info.principal)
        };
        let max = self.config.max_frameworks_per_principal;
        if frameworks > max {
            return Err(format!(
                "{who} has {} frameworks registered, the most one principal may have (--max-frameworks-per-principal {max}): tear one down first",
                frameworks - 1
            ));
        }
        let max = self.config.max_roles_per_principal;
        if used.len() > max {
            return Err(format!(
                "the frameworks of {who} would use {} roles, more than one principal may use (--max-roles-per-principal {max})",
                used.len()
            ));
        }
        Ok(())
    }

    /// A framework opened a Subscribe stream on `conn`.
    pub(super) fn subscribe(&mut self, conn: ConnId, request: v1::SubscribeRequest, now: Instant) {
        let Some(mut info) = request.framework_info else {
            self.refuse_subscription(conn, "SubscribeRequest has no framework_info".into());
            return;
        };
        let limited = strata_proto::limits::check_framework_info(&info).and_then(|()| {
            strata_proto::limits::check_roles(
                "the list of suppressed roles",
                &request.suppressed_roles,
            )
        });
        if let Err(e) = limited {
            self.refuse_subscription(conn, e.to_string());
            return;
        }
        let roles = match validate_roles(&info.roles) {
            Ok(r) => r,
            Err(m) => {
                self.refuse_subscription(conn, format!("invalid framework roles: {m}"));
                return;
            }
        };
        let principal = strata_security::Principal::from_name(&info.principal);
        for role in &roles {
            if let Err(denied) = self.config.authorizer.authorize(
                &principal,
                strata_security::Action::RegisterFrameworks,
                role,
            ) {
                self.refuse_subscription(conn, denied.to_string());
                return;
            }
        }
        let failover = info.failover_timeout_seconds;
        if failover.is_nan() || failover < 0.0 {
            self.refuse_subscription(
                conn,
                format!("failover_timeout_seconds must be zero or a positive number of seconds, got {failover}"),
            );
            return;
        }
        let mut suppressed = BTreeSet::new();
        for role in &request.suppressed_roles {
            if !roles.contains(role) {
                self.refuse_subscription(
                    conn,
                    format!(
                        "suppressed role '{role}' is not one of the framework's roles {roles:?}"
                    ),
                );
                return;
            }
            suppressed.insert(role.clone());
        }
        // A framework id names a sandbox directory on every agent: one that the
        // agents would refuse is refused here, not task by task after each ACCEPT.
        if !info.id.is_empty()
            && let Err(e) = strata_proto::validate::framework_id(&info.id)
        {
            self.refuse_subscription(conn, e.to_string());
            return;
        }
        if !info.id.is_empty() && self.removed_frameworks.contains(&info.id) {
            let message = format!(
                "framework '{}' was removed (torn down or its failover timeout passed): subscribe without an id to register anew",
                info.id
            );
            self.refuse_subscription(conn, message);
            return;
        }

        // A framework id is bound to the principal that registered it: a failover needs
        // the same credentials. (One registered without authentication is claimed by
        // the first authenticated principal that subscribes with its id.)
        if let Some(fw) = self
            .framework_ids
            .get(&info.id)
            .and_then(|fk| self.frameworks.get(fk))
            && !fw.info.principal.is_empty()
            && fw.info.principal != info.principal
        {
            let message = format!(
                "framework '{}' is registered by principal '{}', not '{}': only the principal that registered a framework may subscribe as it (fail over)",
                info.id, fw.info.principal, info.principal
            );
            self.refuse_subscription(conn, message);
            return;
        }
        if let Err(message) = self.check_principal_caps(&info, &roles) {
            self.refuse_subscription(conn, message);
            return;
        }
        let id = if info.id.is_empty() {
            self.rng.uuid()
        } else {
            info.id.clone()
        };
        info.id = id.clone();
        info.roles = roles.clone();
        let stream_id = self.rng.uuid();
        let suppressed_list: Vec<String> = suppressed.iter().cloned().collect();
        self.emit(Effect::Persist(RegistryOp::AddFramework {
            id: id.clone(),
            info: encode_framework_info(&info),
        }));

        let subscription = Subscription {
            conn,
            stream_id: stream_id.clone(),
        };
        let next_heartbeat = after(now, self.config.framework_heartbeat_interval);
        let added = !self.framework_ids.contains_key(&id);
        let fk = match self.framework_ids.get(&id).copied() {
            Some(fk) => {
                // Failover (or first subscription of a recovered framework): the new
                // instance never saw the old stream's offers.
                let (old, offers) = match self.frameworks.get_mut(&fk) {
                    Some(fw) => (
                        fw.subscription.take(),
                        fw.offers.iter().copied().collect::<Vec<_>>(),
                    ),
                    None => (None, Vec::new()),
                };
                if let Some(old) = old {
                    self.framework_conns.remove(&old.conn);
                    self.emit(Effect::CloseFramework { conn: old.conn });
                }
                for offer_id in offers {
                    self.rescind_offer(offer_id, false, now);
                }
                if let Some(fw) = self.frameworks.get_mut(&fk) {
                    fw.partition_aware = info
                        .capabilities
                        .contains(&(v1::FrameworkCapability::PartitionAware as i32));
                    fw.info = info;
                    fw.roles = roles.clone();
                    fw.suppressed = suppressed;
                    fw.subscription = Some(subscription);
                    fw.failover_deadline = None;
                    fw.next_heartbeat = next_heartbeat;
                }
                self.allocator
                    .update_framework(fk, &roles, &suppressed_list);
                self.allocator.activate_framework(fk);
                tracing::info!(framework_id = %id, "framework re-subscribed");
                fk
            }
            None => {
                let fk = self.new_framework_key();
                let mut fw = Framework::new(fk, info, roles.clone(), Some(subscription), None, now);
                fw.suppressed = suppressed;
                fw.next_heartbeat = next_heartbeat;
                self.frameworks.insert(fk, fw);
                self.framework_ids.insert(id.clone(), fk);
                self.allocator
                    .add_framework(fk, &roles, &suppressed_list, true);
                tracing::info!(framework_id = %id, ?roles, "framework subscribed");
                fk
            }
        };
        self.framework_conns.insert(conn, fk);
        self.observe_framework(fk, added);
        let subscribed = v1::Subscribed {
            framework_id: id,
            stream_id,
            heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
            master_id: self.config.master_id.clone(),
        };
        self.event_on(conn, v1::event::Event::Subscribed(subscribed));
        self.allocate_all = true;
    }

    /// A framework's event stream closed.
    pub(super) fn framework_disconnected(&mut self, conn: ConnId, now: Instant) {
        let Some(fk) = self.framework_conns.remove(&conn) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(&fk) else {
            return;
        };
        if fw.conn() != Some(conn) {
            return;
        }
        fw.subscription = None;
        let timeout = duration_from_secs(fw.info.failover_timeout_seconds);
        fw.failover_deadline = Some(after(now, timeout));
        let offers: Vec<OfferSeq> = fw.offers.iter().copied().collect();
        tracing::info!(framework_id = %fw.id, failover_timeout = ?timeout, "framework disconnected");
        self.observe_framework(fk, false);
        self.allocator.deactivate_framework(fk);
        for offer_id in offers {
            self.rescind_offer(offer_id, false, now);
        }
        if timeout.is_zero() {
            self.remove_framework(fk, now, false);
        }
    }

    /// Removes frameworks whose failover timeout passed.
    pub(super) fn check_failovers(&mut self, now: Instant) {
        let due: Vec<FrameworkKey> = self
            .frameworks
            .values()
            .filter(|f| f.subscription.is_none() && f.failover_deadline.is_some_and(|d| now >= d))
            .map(|f| f.key)
            .collect();
        for fk in due {
            tracing::info!(framework = ?fk, "framework failover timeout passed");
            self.remove_framework(fk, now, false);
        }
    }

    /// Removes a framework for good: offers back, tasks killed, agents told, registry
    /// updated; with `close`, its stream is ended too (TEARDOWN).
    pub(super) fn remove_framework(&mut self, fk: FrameworkKey, now: Instant, close: bool) {
        let Some(fw) = self.frameworks.get(&fk) else {
            return;
        };
        let id = fw.id.clone();
        let offers: Vec<OfferSeq> = fw.offers.iter().copied().collect();
        let tasks: Vec<(String, AgentKey, String)> = fw
            .tasks
            .values()
            .map(|t| (t.id.clone(), t.agent, t.agent_id.clone()))
            .collect();
        let conn = fw.conn();
        tracing::info!(framework_id = %id, tasks = tasks.len(), "removing framework");
        self.emit(Effect::Persist(RegistryOp::RemoveFramework {
            id: id.clone(),
        }));
        for offer_id in offers {
            self.rescind_offer(offer_id, false, now);
        }
        let mut agents: BTreeSet<AgentKey> = BTreeSet::new();
        for (task_id, ak, agent_id) in tasks {
            agents.insert(ak);
            let ids = TaskIds {
                task: &task_id,
                agent: &agent_id,
                framework: &id,
            };
            let status = self.master_status(
                ids,
                TaskState::TaskKilled,
                TaskStatusReason::ReasonFrameworkRemoved,
                "the framework was removed".into(),
                now,
            );
            self.finish_task(fk, &task_id, status, now);
        }
        for ak in agents {
            let msg = v1::ShutdownFramework {
                framework_id: id.clone(),
            };
            self.message_to(ak, v1::master_message::Message::ShutdownFramework(msg));
        }
        self.allocator.remove_framework(fk);
        if let Some(conn) = conn {
            self.framework_conns.remove(&conn);
            if close {
                self.emit(Effect::CloseFramework { conn });
            }
        }
        self.frameworks.remove(&fk);
        self.framework_ids.remove(&id);
        self.observe_framework_removed(&id);
        self.remember_removed(id);
    }

    /// REVIVE: clear filters and resume offers for the roles (all when empty).
    pub(super) fn revive(
        &mut self,
        fk: FrameworkKey,
        req: v1::ReviveRequest,
    ) -> Result<(), CallError> {
        let roles = self.call_roles(fk, &req.roles)?;
        if let Some(fw) = self.frameworks.get_mut(&fk) {
            for r in &roles {
                fw.suppressed.remove(r);
            }
        }
        self.allocator.revive(fk, &roles);
        self.allocate_all = true;
        Ok(())
    }

    /// SUPPRESS: no offers for the roles (all when empty) until REVIVE.
    pub(super) fn suppress(
        &mut self,
        fk: FrameworkKey,
        req: v1::SuppressRequest,
    ) -> Result<(), CallError> {
        let roles = self.call_roles(fk, &req.roles)?;
        if let Some(fw) = self.frameworks.get_mut(&fk) {
            fw.suppressed.extend(roles.iter().cloned());
        }
        self.allocator.suppress(fk, &roles);
        Ok(())
    }

    /// The roles a REVIVE or SUPPRESS names: all the framework's when empty, else each
    /// must be one of them.
    fn call_roles(&self, fk: FrameworkKey, roles: &[String]) -> Result<Vec<String>, CallError> {
        let fw = self
            .frameworks
            .get(&fk)
            .ok_or_else(|| CallError::UnknownFramework(String::new()))?;
        if roles.is_empty() {
            return Ok(fw.roles.clone());
        }
        for r in roles {
            if !fw.roles.contains(r) {
                return Err(CallError::InvalidArgument(format!(
                    "role '{r}' is not one of the framework's roles {:?}",
                    fw.roles
                )));
            }
        }
        Ok(roles.to_vec())
    }
}
