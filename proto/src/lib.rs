//! Strata's wire contract: the generated tonic/prost code for the scheduler, agent and
//! operator APIs (`v1`), plus the pieces every crate needs to read that wire data
//! safely: fixed-point [`Resources`] maths and validation, the [`limits`] on every
//! message and field, validation of containers, health checks and discovery info, the one rule for
//! task and framework ids ([`validate`]), the one duration syntax of flags and config
//! ([`duration`]), and task-state helpers.
#![forbid(unsafe_code)]

pub mod container;
pub mod discovery;
pub mod duration;
pub mod health;
pub mod limits;
pub mod objects;
pub mod resources;
pub mod states;
pub mod validate;

/// Generated protobuf messages and gRPC services, package `strata.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

pub use resources::{RangeSet, ResourceError, Resources, Scalar};
pub use states::{is_terminal, state_name};

/// The Strata version, reported by agents when they register.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Seconds since the Unix epoch, as carried in `TaskStatus.timestamp`.
pub fn now_unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
