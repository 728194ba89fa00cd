//! What operators watch (the operator event stream, `Operator.Subscribe`): the changes
//! of tasks, agents and frameworks, recorded as views in the order they happen, once
//! the driver has asked for them ([`Master::observe`]; nothing is recorded before, so
//! a master nobody watches pays nothing, and while only service proxies watch, only
//! agents and tasks with discovery info are recorded). The driver takes them after each input
//! ([`Master::take_observed`]), numbers them and hands them to the subscribers.

use super::allocator::{AgentKey, FrameworkKey};
use super::api::{AgentView, FrameworkView, TaskView};
use super::master::Master;
use super::state::Task;
use super::view::task_view;

/// One change, as the state showed it just after.
#[derive(Debug, Clone)]
pub enum Observed {
    TaskAdded(TaskView),
    TaskUpdated(TaskView),
    AgentAdded(AgentView),
    AgentUpdated(AgentView),
    /// The agent was marked gone: it never comes back.
    AgentRemoved(String),
    FrameworkAdded(FrameworkView),
    FrameworkUpdated(FrameworkView),
    /// The framework was torn down or its failover timeout passed.
    FrameworkRemoved(String),
}

impl Master {
    fn record(&mut self, change: Observed) {
        self.observations.push(change);
        self.observed_total += 1;
    }

    /// How many changes have been recorded since [`Master::observe`]: the event
    /// stream's seq of the latest one.
    pub fn observed_total(&self) -> u64 {
        self.observed_total
    }

    /// Starts recording changes for [`Master::take_observed`] (for good): every change
    /// when `all`, else (service proxies) agents and tasks with discovery info only.
    pub fn observe(&mut self, all: bool) {
        self.observed = true;
        self.observe_all |= all;
    }

    /// Whether changes of `task` are recorded.
    fn watched(&self, task: &Task) -> bool {
        self.observed && (self.observe_all || task.discovery.is_some())
    }

    /// This master's id (the event stream's epoch).
    pub fn master_id(&self) -> &str {
        &self.config.master_id
    }

    /// Each framework's principal, by framework id.
    pub fn framework_principals(&self) -> std::collections::HashMap<String, String> {
        self.frameworks
            .values()
            .map(|f| (f.id.clone(), f.info.principal.clone()))
            .collect()
    }

    /// The changes recorded since the last call, in order.
    pub fn take_observed(&mut self) -> Vec<Observed> {
        std::mem::take(&mut self.observations)
    }

    pub(super) fn observe_task(&mut self, task: &Task, added: bool) {
        if self.watched(task) {
            let view = task_view(task);
            self.record(if added {
                Observed::TaskAdded(view)
            } else {
                Observed::TaskUpdated(view)
            });
        }
    }

    /// A live task's change, by its framework and id.
    pub(super) fn observe_live_task(&mut self, fk: FrameworkKey, task_id: &str) {
        if !self.observed {
            return;
        }
        if let Some(view) = self
            .frameworks
            .get(&fk)
            .and_then(|f| f.tasks.get(task_id))
            .filter(|t| self.watched(t))
            .map(task_view)
        {
            self.record(Observed::TaskUpdated(view));
        }
    }

    pub(super) fn observe_agent(&mut self, key: AgentKey, added: bool) {
        if !self.observed {
            return;
        }
        if let Some(view) = self.agents.get(&key).map(|a| self.agent_view(a)) {
            self.record(if added {
                Observed::AgentAdded(view)
            } else {
                Observed::AgentUpdated(view)
            });
        }
    }

    pub(super) fn observe_agent_removed(&mut self, id: &str) {
        if self.observed {
            self.observations
                .push(Observed::AgentRemoved(id.to_string()));
        }
    }

    pub(super) fn observe_framework(&mut self, fk: FrameworkKey, added: bool) {
        if !self.observe_all {
            return;
        }
        if let Some(view) = self.frameworks.get(&fk).map(|f| self.framework_view(f)) {
            self.record(if added {
                Observed::FrameworkAdded(view)
            } else {
                Observed::FrameworkUpdated(view)
            });
        }
    }

    pub(super) fn observe_framework_removed(&mut self, id: &str) {
        if self.observe_all {
            self.observations
                .push(Observed::FrameworkRemoved(id.to_string()));
        }
    }
}
