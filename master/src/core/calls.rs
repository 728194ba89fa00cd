//! The small scheduler calls: KILL, ACKNOWLEDGE and MESSAGE, which the master mostly
//! forwards to the agent that holds the task.
//!
//! ```text
//!   KILL(task)         known ─▶ KillTask to its agent (kept pending while the agent is away)
//!                      ended, unacknowledged ─▶ UPDATE with its terminal state
//!                      unknown ─▶ UPDATE TASK_LOST (REASON_TASK_UNKNOWN), no error; but
//!                        its agent not re-registered since a master restart ─▶ no answer
//!                        its agent unreachable ─▶ TASK_UNREACHABLE (LOST if not partition
//!                        aware), as reconciliation answers: the task may still run
//!   ACKNOWLEDGE(agent) ─▶ AcknowledgeUpdate to the agent (NotFound for unknown agents);
//!                         the terminal update's uuid forgets an ended task
//!   MESSAGE(agent)     ─▶ FrameworkToTask to the agent (no delivery guarantee)
//! ```

use std::time::Instant;

use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::allocator::{AgentKey, FrameworkKey};
use super::api::CallError;
use super::master::Master;
use super::state::AgentStatus;
use super::tasks::{TaskIds, visible_state};
use super::validate::validate_kill_policy;

impl Master {
    pub(super) fn framework_id(&self, fk: FrameworkKey) -> String {
        self.frameworks
            .get(&fk)
            .map(|f| f.id.clone())
            .unwrap_or_default()
    }

    fn known_agent(&self, agent_id: &str) -> Result<AgentKey, CallError> {
        if agent_id.is_empty() {
            return Err(CallError::InvalidArgument(
                "the call names no agent_id".into(),
            ));
        }
        self.agent_ids.get(agent_id).copied().ok_or_else(|| {
            CallError::NotFound(format!("agent '{agent_id}' is unknown to this master"))
        })
    }

    /// KILL: see the module docs.
    pub(super) fn kill(
        &mut self,
        fk: FrameworkKey,
        req: v1::KillRequest,
        now: Instant,
    ) -> Result<(), CallError> {
        if req.task_id.is_empty() {
            return Err(CallError::InvalidArgument("KILL names no task_id".into()));
        }
        validate_kill_policy(req.kill_policy.as_ref()).map_err(CallError::InvalidArgument)?;
        let framework_id = self.framework_id(fk);
        let known = self
            .frameworks
            .get(&fk)
            .and_then(|f| f.tasks.get(&req.task_id))
            .map(|t| (t.agent, req.kill_policy.or(t.kill_policy)));
        match known {
            Some((ak, policy)) => {
                let kill = v1::KillTask {
                    framework_id,
                    task_id: req.task_id.clone(),
                    kill_policy: policy,
                };
                // A service instance leaves every proxy's rotation first.
                let Some(kill) = self.hold_kill(fk, ak, kill, now) else {
                    return Ok(());
                };
                if !self.message_to(ak, v1::master_message::Message::KillTask(kill)) {
                    tracing::info!(task_id = %req.task_id, "agent not connected: kill delivered when it re-registers");
                    if let Some(task) = self
                        .frameworks
                        .get_mut(&fk)
                        .and_then(|f| f.tasks.get_mut(&req.task_id))
                    {
                        task.kill_pending = Some(policy);
                    }
                }
            }
            None => {
                let ended = self
                    .frameworks
                    .get(&fk)
                    .and_then(|f| f.ended.get(&req.task_id))
                    .map(|ended| self.ended_task_status(ended, now));
                if let Some(status) = ended {
                    // Already over: tell the framework how it ended.
                    self.send_update(fk, status);
                    return Ok(());
                }
                let ids = TaskIds {
                    task: &req.task_id,
                    agent: &req.agent_id,
                    framework: &framework_id,
                };
                // A terminal answer only when the task's agent could not still run it
                // unbeknown to this master (as reconciliation answers).
                let agent = self
                    .agent_ids
                    .get(&req.agent_id)
                    .and_then(|k| self.agents.get(k))
                    .map(|a| a.status);
                // No agent named, and agents still to re-register after a master
                // restart: one of them may run it. Their re-registration tells.
                let any_recovering = || {
                    self.agents
                        .values()
                        .any(|a| a.status == AgentStatus::Recovering)
                };
                if req.agent_id.is_empty() && any_recovering() {
                    tracing::debug!(task_id = %req.task_id,
                        "kill of an unknown task naming no agent while agents re-register: no answer");
                    return Ok(());
                }
                let (state, reason, why) = match agent {
                    Some(AgentStatus::Recovering) => {
                        tracing::debug!(task_id = %req.task_id, agent_id = %req.agent_id,
                            "kill of a task whose agent has not re-registered yet: no answer");
                        return Ok(());
                    }
                    Some(AgentStatus::Unreachable) => (
                        TaskState::TaskUnreachable,
                        TaskStatusReason::ReasonAgentUnreachable,
                        "its agent is unreachable",
                    ),
                    Some(AgentStatus::Gone) => (
                        TaskState::TaskGoneByOperator,
                        TaskStatusReason::ReasonAgentRemoved,
                        "its agent was marked gone by an operator",
                    ),
                    _ => (
                        TaskState::TaskLost,
                        TaskStatusReason::ReasonTaskUnknown,
                        "the master knows no live task with this id",
                    ),
                };
                let partition_aware = self.frameworks.get(&fk).is_some_and(|f| f.partition_aware);
                let message = format!("cannot kill task '{}': {why}", req.task_id);
                let status = self.master_status(
                    ids,
                    visible_state(state, partition_aware),
                    reason,
                    message,
                    now,
                );
                self.send_update(fk, status);
            }
        }
        Ok(())
    }

    /// ACKNOWLEDGE: forwarded to the agent that sent the update.
    pub(super) fn acknowledge(
        &mut self,
        fk: FrameworkKey,
        req: v1::AcknowledgeRequest,
    ) -> Result<(), CallError> {
        if req.uuid.is_empty() {
            return Err(CallError::InvalidArgument(
                "ACKNOWLEDGE has no uuid: only updates that carry a uuid need acknowledging".into(),
            ));
        }
        if req.task_id.is_empty() {
            return Err(CallError::InvalidArgument(
                "ACKNOWLEDGE names no task_id".into(),
            ));
        }
        if let Some(fw) = self.frameworks.get_mut(&fk)
            && fw.ended.acknowledge(&req.task_id, &req.uuid)
        {
            tracing::debug!(task_id = %req.task_id, "terminal update acknowledged; task forgotten");
        }
        let ak = self.known_agent(&req.agent_id)?;
        let ack = v1::AcknowledgeUpdate {
            framework_id: self.framework_id(fk),
            task_id: req.task_id,
            uuid: req.uuid,
        };
        if !self.message_to(ak, v1::master_message::Message::Acknowledge(ack)) {
            // The agent resends the update after it re-registers; it is acknowledged then.
            tracing::debug!(agent_id = %req.agent_id, "acknowledgement for a disconnected agent dropped");
        }
        Ok(())
    }

    /// MESSAGE: forwarded to the agent, best effort.
    pub(super) fn message(
        &mut self,
        fk: FrameworkKey,
        req: v1::MessageRequest,
    ) -> Result<(), CallError> {
        let ak = self.known_agent(&req.agent_id)?;
        let msg = v1::FrameworkToTask {
            framework_id: self.framework_id(fk),
            task_id: req.task_id,
            data: req.data,
        };
        if !self.message_to(ak, v1::master_message::Message::FrameworkMessage(msg)) {
            tracing::debug!(agent_id = %req.agent_id, "framework message for a disconnected agent dropped");
        }
        Ok(())
    }
}
