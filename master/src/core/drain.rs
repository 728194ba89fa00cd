//! Zero-downtime kills (issue 15): a task that serves a service port leaves every
//! service proxy's rotation before it is killed.
//!
//! ```text
//! KILL (framework, or a drain) of a running task with a service port, while proxies follow
//!   ─▶ the task is TASK_KILLING in the master (an operator event: proxies drop it;
//!      frameworks with TASK_KILLING_STATE hear of it too), the KillTask is held
//!   ─▶ ServicesSynced{seq ≥ that event's} (every proxy applied it) or DRAIN_WAIT passed
//!   ─▶ KillTask to the agent: SIGTERM, the kill policy's grace for open connections
//! ```
//!
//! Nobody following the event stream (no proxies): kills go at once, as before.

use std::time::{Duration, Instant};

use strata_proto::discovery::SERVICE_PORT_LABEL;
use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::allocator::{AgentKey, FrameworkKey};
use super::master::Master;
use super::tasks::TaskIds;

/// The longest a kill waits for the proxies.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// A kill waiting for the proxies.
#[derive(Debug, Clone)]
pub struct HeldKill {
    framework: FrameworkKey,
    agent: AgentKey,
    kill: v1::KillTask,
    /// The event that took the task out of rotation.
    seq: u64,
    deadline: Instant,
}

impl Master {
    /// Holds `kill` (of a task on `agent`) when the task serves a service port and
    /// proxies follow the events; `Some(kill)`: send it now.
    pub(super) fn hold_kill(
        &mut self,
        fk: FrameworkKey,
        agent: AgentKey,
        kill: v1::KillTask,
        now: Instant,
    ) -> Option<v1::KillTask> {
        if !self.observed {
            return Some(kill);
        }
        let Some(fw) = self.frameworks.get(&fk) else {
            return Some(kill);
        };
        let Some(task) = fw.tasks.get(&kill.task_id) else {
            return Some(kill);
        };
        let serves = task.discovery.as_ref().is_some_and(|d| {
            strata_proto::discovery::ports(d)
                .iter()
                .any(|p| p.labels.contains_key(SERVICE_PORT_LABEL))
        });
        if self
            .held_kills
            .iter()
            .any(|h| h.framework == fk && h.kill.task_id == kill.task_id)
        {
            // Already waiting for the proxies (a retried KILL).
            return None;
        }
        if !serves || task.state != TaskState::TaskRunning {
            // Not in any rotation (or already left it): nothing to wait for.
            return Some(kill);
        }
        let tells_killing = fw
            .info
            .capabilities
            .contains(&(v1::FrameworkCapability::TaskKillingState as i32));
        let ids = TaskIds {
            task: &task.id,
            agent: &task.agent_id,
            framework: &task.framework_id,
        };
        let status = self.master_status(
            ids,
            TaskState::TaskKilling,
            TaskStatusReason::ReasonUnspecified,
            "leaving the service proxies' rotation before the kill".into(),
            now,
        );
        self.set_task_status(fk, &kill.task_id, status.clone(), now);
        if let Some(task) = self
            .frameworks
            .get_mut(&fk)
            .and_then(|f| f.tasks.get_mut(&kill.task_id))
        {
            task.leaving = true;
        }
        if tells_killing {
            self.send_update(fk, status);
        }
        tracing::info!(task_id = %kill.task_id, seq = self.observed_total, "kill held until the service proxies drop the task");
        self.held_kills.push(HeldKill {
            framework: fk,
            agent,
            kill,
            seq: self.observed_total,
            deadline: now + DRAIN_WAIT,
        });
        None
    }

    /// The event seq of the oldest kill held for the proxies, if any.
    pub fn oldest_held_kill(&self) -> Option<u64> {
        self.held_kills.iter().map(|h| h.seq).min()
    }

    /// Sends the held kills whose event every proxy has applied (`synced`), or whose
    /// wait is over.
    pub(super) fn release_kills(&mut self, synced: Option<u64>, now: Instant) {
        if self.held_kills.is_empty() {
            return;
        }
        let (go, keep): (Vec<HeldKill>, Vec<HeldKill>) = std::mem::take(&mut self.held_kills)
            .into_iter()
            .partition(|h| synced.is_some_and(|s| s >= h.seq) || now >= h.deadline);
        self.held_kills = keep;
        for held in go {
            let HeldKill {
                framework,
                agent,
                kill,
                ..
            } = held;
            let task_id = kill.task_id.clone();
            tracing::info!(%task_id, ?synced, "kill released: the service proxies dropped the task");
            let policy = kill.kill_policy;
            if !self.message_to(agent, v1::master_message::Message::KillTask(kill))
                && let Some(task) = self
                    .frameworks
                    .get_mut(&framework)
                    .and_then(|f| f.tasks.get_mut(&task_id))
            {
                task.kill_pending = Some(policy);
            }
        }
    }
}
