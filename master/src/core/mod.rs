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

pub mod api;

pub use api::*;
pub mod master;

pub use master::Master;
