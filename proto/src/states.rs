//! Task-state helpers shared by master, agent and SDK.

use crate::v1::TaskState;

/// A terminal state never changes again (FINISHED, FAILED, KILLED, ERROR, LOST,
/// DROPPED, GONE, GONE_BY_OPERATOR). UNREACHABLE and UNKNOWN are not terminal: the
/// task may come back.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

/// The Mesos-style name of a state, e.g. `TASK_RUNNING`.
pub fn state_name(state: TaskState) -> &'static str {
    state.as_str_name()
}

/// The state named by an i32 on the wire, or UNSPECIFIED for unknown values.
pub fn state_from_i32(v: i32) -> TaskState {
    TaskState::try_from(v).unwrap_or(TaskState::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states() {
        assert!(is_terminal(TaskState::TaskFinished));
        assert!(is_terminal(TaskState::TaskLost));
        assert!(!is_terminal(TaskState::TaskRunning));
        assert!(!is_terminal(TaskState::TaskUnreachable));
        assert_eq!(state_name(TaskState::TaskRunning), "TASK_RUNNING");
        assert_eq!(state_from_i32(9999), TaskState::Unspecified);
    }
}
