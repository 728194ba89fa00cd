//! The master's sans-IO core: `handle(input, now) -> effects`.
//!
//! ```text
//!   Input (agent/framework connections, calls, Tick) ──▶ Master::handle(input, now)
//!                                                           │ state: agents, frameworks,
//!                                                           │ offers, tasks, allocator
//!   Effect (messages to send, records to persist)   ◀── Master::take_effects()
//! ```
//!
//! No sockets, no clock, no tokio: the driver (`crate::driver`) owns the `Master`, feeds
//! it inputs and the current `Instant`, and carries out the effects. Tests drive it
//! directly with simulated agents and frameworks.
//!
//! Modules: `master` (state, dispatch, timers), `agents`, `frameworks`, `tasks` (state
//! machine, status updates), `offers` (allocation → offers, ACCEPT, DECLINE), `calls`
//! (KILL, ACKNOWLEDGE, MESSAGE), `maintenance` (operators' weights and agent
//! maintenance), `reconcile`, `validate`, `view` (snapshot, metrics), `registry` (what
//! survives a restart), `allocator` + `drf` (hierarchical DRF), `codec` (registry
//! encoding), `rng`.

pub mod api;
pub mod registry;

pub use api::*;
pub use registry::*;
pub mod allocator;
pub mod master;

mod agents;
mod calls;
mod codec;
mod drain;
mod drf;
mod fastmap;
mod frameworks;
mod maintenance;
pub mod objects;
pub mod observe;
mod offers;
pub(crate) mod reconcile;
mod rng;
mod state;
mod tasks;
mod validate;
mod view;
pub mod volumes;

#[cfg(test)]
mod tests;

pub use maintenance::grace_from_secs;
pub use master::Master;
pub use objects::{ObjectAnswer, ObjectCall, ObjectCode, ObjectError};
pub use observe::Observed;
