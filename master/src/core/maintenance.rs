//! Operator calls: role weights and agent maintenance, both persisted in the registry.
//!
//! ```text
//!   UpdateWeights ──▶ allocator weights, Persist(SetWeight) per role
//!   DeactivateAgent ─▶ rescind the agent's offers, allocator skips it ── Persist(SetMaintenance)
//!   DrainAgent ──────▶ as Deactivate, and KillTask for every task on it (grace capped)
//!                      DRAINING while tasks remain, DRAINED when none is left
//!   ReactivateAgent ─▶ offered again ── Persist(SetMaintenance None)
//!   MarkAgentGone ───▶ its stream closed, offers rescinded, tasks TASK_GONE_BY_OPERATOR,
//!                      GONE for good (refused when it registers) ── Persist(MarkAgentGone)
//!   agent re-registers under maintenance ─▶ kept out of the allocator; a draining
//!                      agent's reported tasks are killed (see `agents.rs`)
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

use strata_proto::v1;

use super::allocator::AgentKey;
use super::api::{CallError, OperatorCall};
use super::master::Master;
use super::registry::{Maintenance, RegistryOp};
use super::state::{AgentStatus, OfferSeq};
use super::validate::{check_operator_limits, validate_role};

impl Master {
    /// An operator's call: see the module docs.
    pub(super) fn operator(&mut self, call: OperatorCall, now: Instant) -> Result<(), CallError> {
        check_operator_limits(&call)?;
        match call {
            OperatorCall::UpdateWeights(weights) => self.update_weights(weights),
            OperatorCall::DeactivateAgent { agent_id } => {
                let key = self.maintained_agent(&agent_id)?;
                self.set_maintenance(key, Some(Maintenance::Deactivated), now);
                Ok(())
            }
            OperatorCall::DrainAgent {
                agent_id,
                max_grace_period,
            } => {
                let key = self.maintained_agent(&agent_id)?;
                let maintenance = Maintenance::Draining {
                    max_grace_period_seconds: max_grace_period.map(|d| d.as_secs_f64()),
                };
                self.set_maintenance(key, Some(maintenance), now);
                self.drain_tasks(key, now);
                Ok(())
            }
            OperatorCall::TeardownFramework { framework_id } => {
                let Some(&fk) = self.framework_ids.get(&framework_id) else {
                    return Err(CallError::NotFound(format!(
                        "no framework '{framework_id}' is registered"
                    )));
                };
                tracing::info!(%framework_id, "framework torn down by an operator");
                self.remove_framework(fk, now, true);
                Ok(())
            }
            OperatorCall::MarkAgentGone { agent_id } => {
                let key = self.maintained_agent(&agent_id)?;
                self.mark_gone(key, now);
                Ok(())
            }
            OperatorCall::ResourceOperation {
                agent_id,
                kind,
                resources,
                principal,
            } => self.operator_resource_op(&agent_id, kind, &resources, &principal, now),
            OperatorCall::ReactivateAgent { agent_id } => {
                let key = self.maintained_agent(&agent_id)?;
                if self.agents.get(&key).and_then(|a| a.maintenance).is_none() {
                    return Err(CallError::FailedPrecondition(format!(
                        "agent '{agent_id}' is neither deactivated nor draining: nothing to reactivate"
                    )));
                }
                self.set_maintenance(key, None, now);
                Ok(())
            }
        }
    }

    fn update_weights(&mut self, weights: Vec<(String, f64)>) -> Result<(), CallError> {
        if weights.is_empty() {
            return Err(CallError::InvalidArgument(
                "no weights given: name at least one role and its weight".into(),
            ));
        }
        // All or nothing: check every entry before changing anything.
        let mut seen: HashSet<&str> = HashSet::with_capacity(weights.len());
        for (role, weight) in &weights {
            validate_role(role).map_err(CallError::InvalidArgument)?;
            if !weight.is_finite() || *weight <= 0.0 {
                return Err(CallError::InvalidArgument(format!(
                    "the weight of role '{role}' must be a positive finite number, not {weight}"
                )));
            }
            if !seen.insert(role) {
                return Err(CallError::InvalidArgument(format!(
                    "role '{role}' is listed twice"
                )));
            }
        }
        for (role, weight) in weights {
            self.set_weight(&role, weight);
            self.emit(super::api::Effect::Persist(RegistryOp::SetWeight {
                role,
                weight,
            }));
        }
        // Shares changed: the next allocation looks at every agent.
        self.allocate_all = true;
        Ok(())
    }

    /// Sets a role's weight in the config (shown in `/state`) and the allocator.
    pub(super) fn set_weight(&mut self, role: &str, weight: f64) {
        self.config.weights.insert(role.to_string(), weight);
        self.allocator.set_weight(role, weight);
    }

    /// The agent an operator call names (not one marked gone: nothing more can be
    /// done to it).
    fn maintained_agent(&self, agent_id: &str) -> Result<AgentKey, CallError> {
        if agent_id.is_empty() {
            return Err(CallError::InvalidArgument("no agent_id given".into()));
        }
        let key = self.agent_ids.get(agent_id).copied().ok_or_else(|| {
            CallError::NotFound(format!(
                "agent '{agent_id}' is unknown to this master: see /state for its agents"
            ))
        })?;
        if self
            .agents
            .get(&key)
            .is_some_and(|a| a.status == AgentStatus::Gone)
        {
            return Err(CallError::FailedPrecondition(format!(
                "agent '{agent_id}' was marked gone"
            )));
        }
        Ok(key)
    }

    /// Puts an agent under maintenance or ends it, in the registry and the allocator.
    fn set_maintenance(&mut self, key: AgentKey, maintenance: Option<Maintenance>, now: Instant) {
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        agent.maintenance = maintenance;
        let id = agent.id.clone();
        let connected = agent.is_connected();
        self.observe_agent(key, false);
        tracing::info!(agent_id = %id, ?maintenance, "agent maintenance");
        self.emit(super::api::Effect::Persist(RegistryOp::SetMaintenance {
            id,
            maintenance,
        }));
        if maintenance.is_some() {
            let offers: Vec<OfferSeq> = self
                .agents
                .get(&key)
                .map(|a| a.offers.iter().copied().collect())
                .unwrap_or_default();
            for offer_id in offers {
                self.rescind_offer(offer_id, true, now);
            }
            self.allocator.deactivate_agent(key);
            self.pending_agents.remove(&key);
        } else if connected {
            self.allocator.activate_agent(key);
            self.pending_agents.insert(key);
        }
    }

    /// Kills every task on a draining agent, with the grace period capped by the
    /// drain's. An agent that is away gets the kills when it re-registers (this runs
    /// again then, for the tasks it reports).
    pub(super) fn drain_tasks(&mut self, key: AgentKey, now: Instant) {
        let Some(agent) = self.agents.get(&key).filter(|a| a.is_connected()) else {
            return;
        };
        let Some(Maintenance::Draining {
            max_grace_period_seconds,
        }) = agent.maintenance
        else {
            return;
        };
        let tasks: Vec<_> = agent.tasks.iter().cloned().collect();
        for (fk, task_id) in tasks {
            let Some(task) = self.frameworks.get(&fk).and_then(|f| f.tasks.get(&task_id)) else {
                continue;
            };
            let kill = v1::KillTask {
                framework_id: self.framework_id(fk),
                task_id,
                kill_policy: capped_policy(task.kill_policy, max_grace_period_seconds),
            };
            if let Some(kill) = self.hold_kill(fk, key, kill, now) {
                self.message_to(key, v1::master_message::Message::KillTask(kill));
            }
        }
    }
}

/// The task's kill policy with its grace period capped at `max_secs` (a drain's).
fn capped_policy(policy: Option<v1::KillPolicy>, max_secs: Option<f64>) -> Option<v1::KillPolicy> {
    let Some(max) = max_secs else {
        return policy;
    };
    let own = policy.and_then(|p| p.grace_period_seconds);
    Some(v1::KillPolicy {
        grace_period_seconds: Some(own.map_or(max, |g| g.min(max))),
    })
}

/// How `/state` names an agent's maintenance: a draining agent with no task left is
/// DRAINED.
pub(super) fn maintenance_name(
    maintenance: Option<Maintenance>,
    tasks: usize,
) -> Option<&'static str> {
    match maintenance? {
        Maintenance::Deactivated => Some("DEACTIVATED"),
        Maintenance::Draining { .. } if tasks > 0 => Some("DRAINING"),
        Maintenance::Draining { .. } => Some("DRAINED"),
    }
}

/// A drain's longest grace period from the operator's seconds (none when absent).
pub fn grace_from_secs(secs: Option<f64>) -> Result<Option<Duration>, CallError> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(super::validate::duration_from_secs(s))),
        Some(s) => Err(CallError::InvalidArgument(format!(
            "max_grace_period_seconds must be a non-negative number of seconds, not {s}"
        ))),
    }
}
