//! PLACEHOLDER: the core's state machine. Being written; the signatures are the contract.

use std::time::Instant;

use super::api::*;

/// The master's state machine. See the module docs of `core`.
pub struct Master {
    config: CoreConfig,
    effects: Vec<Effect>,
}

impl Master {
    /// A master that starts from `registry` (what the previous run persisted).
    pub fn new(config: CoreConfig, registry: Registry, now: Instant) -> Master {
        let _ = (registry, now);
        Master { config, effects: Vec::new() }
    }

    /// Feeds one input; effects accumulate until [`Master::take_effects`].
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), CallError> {
        let _ = (input, now);
        Ok(())
    }

    /// The effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// A consistent view of agents, frameworks, tasks and roles.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            master_id: self.config.master_id.clone(),
            agents: vec![],
            frameworks: vec![],
            tasks: vec![],
            roles: vec![],
            outstanding_offers: 0,
        }
    }

    /// Counters and gauges; `allocation_run_ms` is filled in by the driver, which
    /// owns the clock.
    pub fn metrics(&self) -> Metrics {
        Metrics::default()
    }
}
