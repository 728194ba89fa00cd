//! RECONCILE: the master tells a framework what it knows about its tasks.
//!
//! Implicit (no task ids): the state of every live task of the framework, and of
//! every ended task whose terminal update it has not acknowledged yet (as Mesos
//! does: the framework may have missed that update). Explicit: the state of each
//! named task, live or ended-unacknowledged; for a task the master does not know, the
//! answer depends on its agent, as in Mesos:
//!
//! ```text
//!   agent recovering (master restarted, agent not back yet) ─▶ no answer yet
//!   agent registered                                         ─▶ TASK_GONE
//!   agent unreachable                                        ─▶ TASK_UNREACHABLE
//!   agent unknown or not given                               ─▶ TASK_UNKNOWN
//! ```
//!
//! Frameworks that are not partition aware get TASK_LOST for the last three, and for
//! a task they were told is LOST that came back with its agent (the master is killing
//! it: `LostTasks`). Every answer carries REASON_RECONCILIATION and no uuid.
//!
//! A large implicit reconciliation is answered [`RECONCILE_CHUNK`] tasks at a time, the
//! rest on the driver's next `Continue` (or Tick), so that other callers do not wait
//! behind it; a new implicit RECONCILE of the same framework starts over.

use std::time::Instant;

use strata_proto::states::state_from_i32;
use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::allocator::FrameworkKey;
use super::api::CallError;
use super::master::Master;
use super::state::{AgentStatus, EndedTask, Task};
use super::tasks::{TaskIds, visible_state};

/// The most tasks one input answers of an implicit reconciliation; the rest follow on
/// [`super::api::Input::Continue`] (20,480 answers held the driver 15 ms,
/// `strata-bench stall`).
pub const RECONCILE_CHUNK: usize = 4096;

/// Where an implicit reconciliation stands: the live tasks are answered first (then
/// `live_done`), then the ended ones, each in id order, after `after`.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    live_done: bool,
    after: Option<String>,
}

impl Master {
    pub(super) fn reconcile(
        &mut self,
        fk: FrameworkKey,
        req: v1::ReconcileRequest,
        now: Instant,
    ) -> Result<(), CallError> {
        if req.tasks.iter().any(|t| t.task_id.is_empty()) {
            return Err(CallError::InvalidArgument(
                "RECONCILE lists a task with an empty task_id".into(),
            ));
        }
        let Some(fw) = self.frameworks.get(&fk) else {
            return Ok(());
        };
        let mut answers = Vec::new();
        if req.tasks.is_empty() {
            // A new implicit reconciliation starts over.
            self.reconciling.insert(fk, Cursor::default());
            self.continue_reconciliation(fk, now);
            return Ok(());
        } else {
            for wanted in &req.tasks {
                if let Some(task) = fw.tasks.get(&wanted.task_id) {
                    answers.push(self.known_task_status(task, now));
                    continue;
                }
                if let Some(ended) = fw.ended.get(&wanted.task_id) {
                    answers.push(self.ended_task_status(ended, now));
                    continue;
                }
                let agent = self
                    .agent_ids
                    .get(&wanted.agent_id)
                    .and_then(|k| self.agents.get(k));
                let (state, why) = match agent {
                    _ if wanted.agent_id.is_empty() => {
                        (TaskState::TaskUnknown, "the master does not know this task")
                    }
                    None => (
                        TaskState::TaskUnknown,
                        "the master knows neither this task nor its agent",
                    ),
                    Some(a) => match a.status {
                        AgentStatus::Recovering => continue,
                        AgentStatus::Active | AgentStatus::Disconnected => (
                            TaskState::TaskGone,
                            "the task's agent is registered and does not run it",
                        ),
                        AgentStatus::Unreachable => (
                            TaskState::TaskUnreachable,
                            "the task's agent is unreachable",
                        ),
                        AgentStatus::Gone => (
                            TaskState::TaskGoneByOperator,
                            "the task's agent was marked gone by an operator",
                        ),
                    },
                };
                let ids = TaskIds {
                    task: &wanted.task_id,
                    agent: &wanted.agent_id,
                    framework: &fw.id,
                };
                let state = visible_state(state, fw.partition_aware);
                answers.push(self.master_status(
                    ids,
                    state,
                    TaskStatusReason::ReasonReconciliation,
                    why.into(),
                    now,
                ));
            }
        }
        for status in answers {
            self.send_update(fk, status);
        }
        Ok(())
    }

    /// Answers the next [`RECONCILE_CHUNK`] tasks of the implicit reconciliation of
    /// every framework that has one going (see [`Cursor`]).
    pub(super) fn continue_reconciliations(&mut self, now: Instant) {
        let going: Vec<FrameworkKey> = self.reconciling.keys().copied().collect();
        for fk in going {
            self.continue_reconciliation(fk, now);
        }
    }

    /// Answers the next [`RECONCILE_CHUNK`] tasks of `fk`'s implicit reconciliation:
    /// its live tasks, then its ended unacknowledged ones, in id order.
    fn continue_reconciliation(&mut self, fk: FrameworkKey, now: Instant) {
        let (Some(cursor), Some(fw)) = (self.reconciling.remove(&fk), self.frameworks.get(&fk))
        else {
            return;
        };
        use std::ops::Bound;
        let mut answers = Vec::new();
        let mut next = cursor.clone();
        if !cursor.live_done {
            let start = match cursor.after.as_deref() {
                Some(id) => Bound::Excluded(id),
                None => Bound::Unbounded,
            };
            let mut live = fw.tasks.range::<str, _>((start, Bound::Unbounded));
            for (id, task) in live.by_ref().take(RECONCILE_CHUNK) {
                answers.push(self.known_task_status(task, now));
                next.after = Some(id.clone());
            }
            if live.next().is_none() {
                next = Cursor {
                    live_done: true,
                    after: None,
                };
            }
        }
        let mut finished = false;
        if next.live_done && answers.len() < RECONCILE_CHUNK {
            let room = RECONCILE_CHUNK - answers.len();
            let after = next.after.take();
            let mut ended = fw.ended.after(after.as_deref());
            let mut last = after.clone();
            for (id, task) in ended.by_ref().take(room) {
                answers.push(self.ended_task_status(task, now));
                last = Some(id.clone());
            }
            finished = ended.next().is_none();
            next.after = last;
        }
        if !finished {
            self.reconciling.insert(fk, next);
        }
        for status in answers {
            self.send_update(fk, status);
        }
    }

    /// The latest state of a live task, as a reconciliation answer.
    fn known_task_status(&self, task: &Task, now: Instant) -> v1::TaskStatus {
        let ids = TaskIds {
            task: &task.id,
            agent: &task.agent_id,
            framework: &task.framework_id,
        };
        let last = task.last_status.as_ref();
        let message = last.map(|s| s.message.clone()).unwrap_or_default();
        let told_lost = self
            .frameworks
            .get(&task.framework)
            .is_some_and(|f| f.lost.holds(&task.id, task.agent));
        let mut status = self.master_status(
            ids,
            if told_lost {
                TaskState::TaskLost
            } else {
                task.state
            },
            TaskStatusReason::ReasonReconciliation,
            message,
            now,
        );
        if let Some(last) = last {
            status.exit_status = last.exit_status;
            status.healthy = last.healthy;
        }
        status
    }

    /// The terminal state of an ended, unacknowledged task, as a master answer
    /// (reconciliation, or a KILL that came too late).
    pub(super) fn ended_task_status(&self, ended: &EndedTask, now: Instant) -> v1::TaskStatus {
        let last = &ended.status;
        let ids = TaskIds {
            task: &last.task_id,
            agent: &ended.agent_id,
            framework: &last.framework_id,
        };
        let mut status = self.master_status(
            ids,
            state_from_i32(last.state),
            TaskStatusReason::ReasonReconciliation,
            last.message.clone(),
            now,
        );
        status.exit_status = last.exit_status;
        status.healthy = last.healthy;
        status
    }
}
