//! Write a Strata scheduler in a page of Rust.
//!
//! A framework implements [`Scheduler`]; a [`Driver`] subscribes it to the master,
//! delivers offers and task updates to it, acknowledges the updates, and keeps the
//! subscription alive across master restarts (re-subscribing with the same framework
//! id, with backoff). Callbacks answer through a [`DriverHandle`]: launch, decline,
//! kill, revive, suppress, reconcile, message, teardown, stop.
//!
//! The helpers every scheduler needs come along: fixed-point [`Resources`] maths
//! (re-exported from `strata-proto`), a [`TaskBuilder`], [`offer_fits`] and an
//! [`OfferPool`] that packs tasks into offers, and a [`SandboxClient`] that reads a
//! task's output from its agent.
//!
//! # Example: run three `echo` tasks, then leave
//!
//! ```no_run
//! use strata_framework_sdk::{
//!     Driver, DriverHandle, OfferPool, Scheduler, TaskBuilder, is_terminal, state_of, v1,
//! };
//!
//! struct Echo {
//!     /// Tasks not launched yet.
//!     pending: Vec<TaskBuilder>,
//!     /// Tasks launched and not finished yet.
//!     running: usize,
//! }
//!
//! impl Scheduler for Echo {
//!     async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
//!         let mut pool = OfferPool::new(offers);
//!         while let Some(task) = self.pending.last() {
//!             match pool.place(task) {
//!                 Ok(Some(_offer)) => {
//!                     self.pending.pop();
//!                     self.running += 1;
//!                 }
//!                 Ok(None) => break, // no room left in these offers
//!                 Err(e) => return driver.abort(e.to_string()),
//!             }
//!         }
//!         let placement = pool.into_placement();
//!         for launch in placement.launches {
//!             if let Err(e) = driver.launch(vec![launch.offer.id], launch.tasks).await {
//!                 eprintln!("launch failed: {e}");
//!             }
//!         }
//!         let unused = placement.unused.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
//!         if !unused.is_empty() {
//!             let _ = driver.decline(unused, Some(30.0)).await;
//!         }
//!         if self.pending.is_empty() {
//!             let _ = driver.suppress().await; // nothing more to place: no more offers
//!         }
//!     }
//!
//!     async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
//!         let state = state_of(&status);
//!         println!("{}: {}", status.task_id, state.as_str_name());
//!         if state == v1::TaskState::TaskFinished {
//!             self.running -= 1;
//!             if self.running == 0 && self.pending.is_empty() {
//!                 let _ = driver.teardown().await; // done: run() returns Ok
//!             }
//!         } else if is_terminal(state) {
//!             driver.abort(format!("task {} ended {}: {}", status.task_id, state.as_str_name(), status.message));
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pending = (0..3)
//!         .map(|i| TaskBuilder::new(format!("echo-{i}")).shell(format!("echo hello {i}")).cpus(0.1).mem(32.0))
//!         .collect();
//!     let framework = v1::FrameworkInfo { name: "echo".into(), ..Default::default() };
//!     let driver = Driver::new("127.0.0.1:5050", framework, Echo { pending, running: 0 });
//!     driver.run().await?; // returns once the scheduler tears down
//!     Ok(())
//! }
//! ```
//!
//! # Failover
//!
//! When the event stream ends or stays silent for `missed_heartbeats` heartbeat
//! intervals, the driver calls [`Scheduler::disconnected`], waits (exponential backoff
//! with jitter, from [`DriverOptions::backoff_initial`] up to
//! [`DriverOptions::backoff_max`]) and subscribes again with the framework id it was
//! given, then calls [`Scheduler::reregistered`]. To survive a restart of the
//! *scheduler*, persist [`DriverHandle::framework_id`] and put it in
//! `FrameworkInfo.id` next time (with a `failover_timeout_seconds` long enough).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod error;
mod offers;
mod sandbox;
mod scheduler;
mod tasks;

pub use driver::{Driver, DriverHandle, DriverOptions};
pub use error::SdkError;
pub use offers::{OfferLaunch, OfferPool, Placement, offer_fits, offer_ids, offer_resources};
pub use sandbox::{FileChunk, SandboxClient};
pub use scheduler::Scheduler;
pub use tasks::TaskBuilder;

pub use strata_proto::{RangeSet, Resources, Scalar, is_terminal, state_name, v1};

/// The state of a status update (`TASK_STATE_UNSPECIFIED` for values this SDK does not know).
pub fn state_of(status: &v1::TaskStatus) -> v1::TaskState {
    strata_proto::states::state_from_i32(status.state)
}

/// The reason of a status update (`REASON_UNSPECIFIED` for values this SDK does not know).
pub fn reason_of(status: &v1::TaskStatus) -> v1::TaskStatusReason {
    v1::TaskStatusReason::try_from(status.reason).unwrap_or(v1::TaskStatusReason::ReasonUnspecified)
}
