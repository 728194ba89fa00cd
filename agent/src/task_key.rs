//! A task's name on an agent: its framework and its id. Its own module so that the
//! task manager, the update queues and the health checkers all depend on it, and not
//! on each other.

/// A task is named by its framework and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskKey {
    pub framework_id: String,
    pub task_id: String,
}
