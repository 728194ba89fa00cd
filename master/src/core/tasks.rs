//! Tasks: the state machine, the indices that hold them, and status updates from
//! agents.
//!
//! ```text
//!   STAGING ─▶ STARTING ─▶ RUNNING ─▶ KILLING ─▶ terminal (FINISHED FAILED KILLED ERROR
//!      │           │          │          │                LOST DROPPED GONE ...)
//!      └───────────┴──────────┴──────────┴─▶ UNREACHABLE / UNKNOWN ─▶ any (it came back)
//! ```
//!
//! An update moves a task only along these arrows; anything else (a retry, a stale
//! update, an update after a terminal one) leaves the task as it is but is still
//! forwarded so the framework can acknowledge it and the agent stops retrying. The
//! exception: a non-terminal update of a task its framework knows as ended (below), or
//! no longer knows, is older than the end; the master acknowledges it itself instead of
//! showing the framework a task going back from an ended state. A
//! terminal state gives the task's resources back to the allocator exactly once and
//! moves the task to the bounded list of completed tasks.
//!
//! A task that ended with an agent's update (one with a uuid) also stays known to its
//! framework (`Framework::ended`) until that uuid is acknowledged, as in Mesos: a
//! framework that was away when the update passed still gets the terminal state from
//! reconciliation, and the agent's retry of the update reaches it.

use std::time::Instant;

use strata_proto::states::state_from_i32;
use strata_proto::v1::{self, TaskState, TaskStatusReason, TaskStatusSource};
use strata_proto::{Resources, is_terminal};

use super::allocator::{AgentKey, FrameworkKey};
use super::master::{COMPLETED_TASKS, Master};
use super::state::{SEEN_UUIDS, Task};

/// What an update does to a task in state `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The state changes.
    Changed,
    /// Same state again (e.g. a health change): refresh the status only.
    Same,
    /// Not allowed from here: ignored.
    Illegal,
}

/// Whether an agent may report a task in `state` (in an update or at re-registration).
/// No state, and the states only the master sets (as in Mesos: UNREACHABLE, UNKNOWN,
/// GONE_BY_OPERATOR), are not: an agent that sends one is wrong, and the master does
/// not let it change its books.
pub fn an_agent_may_report(state: TaskState) -> bool {
    !matches!(
        state,
        TaskState::Unspecified
            | TaskState::TaskUnreachable
            | TaskState::TaskUnknown
            | TaskState::TaskGoneByOperator
    )
}

/// The task state machine. See the module docs.
pub fn transition(from: TaskState, to: TaskState) -> Transition {
    use TaskState::*;
    if to == Unspecified || is_terminal(from) {
        return Transition::Illegal;
    }
    if from == to {
        return Transition::Same;
    }
    let legal = match from {
        Unspecified => false,
        TaskStaging => true,
        TaskStarting => to != TaskStaging,
        TaskRunning => !matches!(to, TaskStaging | TaskStarting),
        TaskKilling => !matches!(to, TaskStaging | TaskStarting | TaskRunning),
        TaskUnreachable | TaskUnknown => true,
        // Terminal states returned above.
        _ => false,
    };
    if legal {
        Transition::Changed
    } else {
        Transition::Illegal
    }
}

/// The state a framework sees: frameworks that are not partition aware know only
/// TASK_LOST for the partition states.
pub fn visible_state(state: TaskState, partition_aware: bool) -> TaskState {
    use TaskState::*;
    match state {
        TaskUnreachable | TaskGone | TaskGoneByOperator | TaskUnknown | TaskDropped
            if !partition_aware =>
        {
            TaskLost
        }
        s => s,
    }
}

/// Which task a master-written status is about.
#[derive(Debug, Clone, Copy)]
pub struct TaskIds<'a> {
    pub task: &'a str,
    pub agent: &'a str,
    pub framework: &'a str,
}

impl Master {
    /// A status the master writes itself: source master, no uuid (no acknowledgement).
    pub(super) fn master_status(
        &self,
        ids: TaskIds<'_>,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        now: Instant,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: ids.task.to_string(),
            state: state as i32,
            message,
            source: TaskStatusSource::SourceMaster as i32,
            reason: reason as i32,
            agent_id: ids.agent.to_string(),
            framework_id: ids.framework.to_string(),
            uuid: String::new(),
            timestamp: self.unix(now),
            ..Default::default()
        }
    }

    pub(super) fn send_update(&mut self, fk: FrameworkKey, status: v1::TaskStatus) {
        self.event_to(
            fk,
            v1::event::Event::Update(v1::Update {
                status: Some(status),
            }),
        );
    }

    /// Puts a live task in the indices (framework, agent, used sums).
    pub(super) fn add_task(&mut self, task: Task) {
        self.observe_task(&task, true);
        if let Some(agent) = self.agents.get_mut(&task.agent) {
            agent.tasks.insert((task.framework, task.id.clone()));
            agent.used.add(&task.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&task.framework) {
            fw.used.add(&task.resources);
            fw.tasks.insert(task.id.clone(), task);
        }
    }

    /// Takes a live task out of the indices.
    pub(super) fn remove_task(&mut self, fk: FrameworkKey, task_id: &str) -> Option<Task> {
        let fw = self.frameworks.get_mut(&fk)?;
        let task = fw.tasks.remove(task_id)?;
        fw.used.subtract(&task.resources);
        if let Some(agent) = self.agents.get_mut(&task.agent) {
            agent.tasks.remove(&(fk, task.id.clone()));
            agent.used.subtract(&task.resources);
        }
        Some(task)
    }

    /// Ends a live task with a terminal `status`: resources back to the allocator
    /// (once: the task leaves the live indices), counters, completed list; an agent's
    /// update (with a uuid) also keeps the task in `Framework::ended` until the
    /// framework acknowledges it.
    pub(super) fn finish_task(
        &mut self,
        fk: FrameworkKey,
        task_id: &str,
        status: v1::TaskStatus,
        now: Instant,
    ) {
        let Some(mut task) = self.remove_task(fk, task_id) else {
            return;
        };
        let state = state_from_i32(status.state);
        self.allocator.recover(
            task.agent,
            fk,
            &task.role,
            task.resources.clone(),
            None,
            now,
        );
        self.pending_agents.insert(task.agent);
        self.counters.count_terminal(state);
        task.state = state;
        task.updated_unix = self.unix(now);
        task.kill_pending = None;
        if !status.uuid.is_empty()
            && let Some(fw) = self.frameworks.get_mut(&fk)
        {
            fw.ended
                .insert(task.agent, task.agent_id.clone(), status.clone());
        }
        task.record(&status, task.updated_unix);
        task.last_status = Some(status);
        self.observe_task(&task, false);
        self.completed.push_back(task);
        while self.completed.len() > COMPLETED_TASKS {
            self.completed.pop_front();
        }
    }

    /// Moves a live task to a non-terminal `status` (master-side: UNREACHABLE, or
    /// restored after its agent came back).
    pub(super) fn set_task_status(
        &mut self,
        fk: FrameworkKey,
        task_id: &str,
        status: v1::TaskStatus,
        now: Instant,
    ) {
        let unix = self.unix(now);
        if let Some(task) = self
            .frameworks
            .get_mut(&fk)
            .and_then(|f| f.tasks.get_mut(task_id))
        {
            let state = state_from_i32(status.state);
            task.state = if task.leaving && state == TaskState::TaskRunning {
                TaskState::TaskKilling
            } else {
                state
            };
            task.record(&status, unix);
            task.last_status = Some(status);
            task.updated_unix = unix;
        }
        self.observe_live_task(fk, task_id);
    }

    /// Master-side state change of a live task, reported to the framework: terminal
    /// states end the task, others update it.
    pub(super) fn master_transition(
        &mut self,
        fk: FrameworkKey,
        task_id: &str,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        now: Instant,
    ) {
        let Some(fw) = self.frameworks.get(&fk) else {
            return;
        };
        let Some(task) = fw.tasks.get(task_id) else {
            return;
        };
        let state = visible_state(state, fw.partition_aware);
        let ids = TaskIds {
            task: task_id,
            agent: &task.agent_id,
            framework: &fw.id,
        };
        let status = self.master_status(ids, state, reason, message, now);
        if is_terminal(state) {
            self.finish_task(fk, task_id, status.clone(), now);
        } else {
            self.set_task_status(fk, task_id, status.clone(), now);
        }
        self.send_update(fk, status);
    }

    /// A status update from the agent `ak`.
    pub(super) fn status_update(&mut self, ak: AgentKey, mut status: v1::TaskStatus, now: Instant) {
        // Kept and forwarded: a long message is cut rather than the update refused
        // (the agent would retry it forever).
        strata_proto::limits::truncate(&mut status.message, strata_proto::limits::MAX_REASON_BYTES);
        let Some(agent) = self.agents.get(&ak) else {
            return;
        };
        if status.agent_id.is_empty() {
            status.agent_id = agent.id.clone();
        }
        let Some(&fk) = self.framework_ids.get(&status.framework_id) else {
            if self.removed_frameworks.contains(&status.framework_id) {
                // Nobody will acknowledge it: stop the agent's retries.
                self.acknowledge_here(ak, &status);
            } else {
                tracing::debug!(framework_id = %status.framework_id, task_id = %status.task_id,
                    "status update for an unknown framework dropped");
            }
            return;
        };
        if self
            .frameworks
            .get(&fk)
            .is_some_and(|f| f.lost.holds(&status.task_id, ak))
        {
            self.lost_task_update(fk, ak, status, now);
            return;
        }
        let new_state = state_from_i32(status.state);
        if !an_agent_may_report(new_state) {
            // An agent is wrong to send this: it changes nothing, and is acknowledged
            // here so the agent stops retrying it.
            tracing::warn!(task_id = %status.task_id, state = ?new_state,
                "status update in a state an agent never reports; acknowledged and ignored");
            self.acknowledge_here(ak, &status);
            return;
        }
        let mut step = Transition::Illegal;
        let mut stale = false;
        if let Some(task) = self
            .frameworks
            .get_mut(&fk)
            .and_then(|f| f.tasks.get_mut(&status.task_id))
            && task.agent == ak
        {
            let duplicate = !status.uuid.is_empty() && task.seen_uuids.contains(&status.uuid);
            if !duplicate {
                step = transition(task.state, new_state);
                if !status.uuid.is_empty() {
                    task.seen_uuids.push(status.uuid.clone());
                    if task.seen_uuids.len() > SEEN_UUIDS {
                        task.seen_uuids.remove(0);
                    }
                }
            }
            if step == Transition::Illegal && !duplicate {
                tracing::debug!(task_id = %status.task_id, from = ?task.state, to = ?new_state,
                    "illegal task state transition ignored");
            }
        } else if let Some(ended) = self
            .frameworks
            .get_mut(&fk)
            .and_then(|f| f.ended.get_mut(&status.task_id))
            && ended.agent == ak
        {
            if !is_terminal(new_state) {
                stale = true;
            } else if ended.status.uuid.is_empty() && !status.uuid.is_empty() {
                // The update of a task the agent reported ended when it re-registered:
                // now its uuid is known, and acknowledging it forgets the task.
                ended.status = status.clone();
            }
        } else if !is_terminal(new_state)
            || self
                .frameworks
                .get(&fk)
                .and_then(|f| f.tasks.get(&status.task_id))
                .is_some_and(|t| t.agent != ak)
        {
            // Also a terminal update from an agent that does not hold the task while
            // the framework's live task of that id runs on another agent (an old
            // retry of a reused task id): forwarding it would tell the framework its
            // live task ended.
            stale = true;
        }
        if stale {
            // Non-terminal news of a task its framework knows as ended, or no longer
            // knows: older than the end, since an agent sends a task's next update only
            // once the previous one is acknowledged. It is a retry queued before the
            // terminal update the agent reported when it re-registered, or a stale
            // duplicate. The framework is not told the task went back; the master
            // acknowledges the update itself so that the agent moves on.
            self.acknowledge_here(ak, &status);
            return;
        }
        match step {
            Transition::Changed if is_terminal(new_state) => {
                self.finish_task(fk, &status.task_id, status.clone(), now);
            }
            Transition::Changed | Transition::Same => {
                let task_id = status.task_id.clone();
                self.set_task_status(fk, &task_id, status.clone(), now);
            }
            Transition::Illegal => {}
        }
        // Forward everything, retries included: the framework's acknowledgement is
        // what stops the agent from retrying.
        self.send_update(fk, status);
    }

    /// The master acknowledges an agent's update itself (one no framework will
    /// acknowledge), so that the agent stops retrying it.
    fn acknowledge_here(&mut self, ak: AgentKey, status: &v1::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        let ack = v1::AcknowledgeUpdate {
            framework_id: status.framework_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        };
        self.message_to(ak, v1::master_message::Message::Acknowledge(ack));
    }

    /// An update of a task its framework was told is LOST (see [`super::state::LostTasks`]):
    /// it ends the task here, and the master acknowledges it itself; the framework
    /// hears nothing more of the task.
    fn lost_task_update(
        &mut self,
        fk: FrameworkKey,
        ak: AgentKey,
        mut status: v1::TaskStatus,
        now: Instant,
    ) {
        let new_state = state_from_i32(status.state);
        let live = self
            .frameworks
            .get(&fk)
            .and_then(|f| f.tasks.get(&status.task_id))
            .filter(|t| t.agent == ak)
            .map(|t| t.state);
        self.acknowledge_here(ak, &status);
        status.uuid.clear();
        if let Some(from) = live
            && is_terminal(new_state)
            && transition(from, new_state) == Transition::Changed
        {
            // Without its uuid: nobody acknowledges it, so it is not kept as ended.
            let task_id = status.task_id.clone();
            self.finish_task(fk, &task_id, status, now);
        }
    }

    /// The role a task reported by an agent is accounted under: the reservation role
    /// of its resources when the framework has it, else the framework's first role.
    pub(super) fn task_role(roles: &[String], resources: &Resources) -> String {
        resources
            .entries()
            .iter()
            .filter_map(|e| e.role.as_ref())
            .find(|r| roles.contains(r))
            .cloned()
            .or_else(|| roles.first().cloned())
            .unwrap_or_else(|| "*".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn legal_and_illegal_transitions() {
        assert_eq!(transition(TaskStaging, TaskRunning), Transition::Changed);
        assert_eq!(transition(TaskRunning, TaskRunning), Transition::Same);
        assert_eq!(transition(TaskRunning, TaskStaging), Transition::Illegal);
        assert_eq!(transition(TaskKilling, TaskRunning), Transition::Illegal);
        assert_eq!(transition(TaskKilling, TaskKilled), Transition::Changed);
        assert_eq!(transition(TaskFinished, TaskRunning), Transition::Illegal);
        assert_eq!(transition(TaskFinished, TaskFinished), Transition::Illegal);
        assert_eq!(
            transition(TaskUnreachable, TaskRunning),
            Transition::Changed
        );
        assert_eq!(transition(TaskRunning, Unspecified), Transition::Illegal);
    }

    #[test]
    fn partition_states_are_lost_for_others() {
        assert_eq!(visible_state(TaskUnreachable, false), TaskLost);
        assert_eq!(visible_state(TaskUnreachable, true), TaskUnreachable);
        assert_eq!(visible_state(TaskGone, false), TaskLost);
        assert_eq!(visible_state(TaskRunning, false), TaskRunning);
    }
}
