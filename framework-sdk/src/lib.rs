//! Write a Strata scheduler in a page of Rust.
//!
//! A framework implements [`Scheduler`]; a [`Driver`] subscribes it to the master,
//! delivers offers and task updates to it, acknowledges the updates, and keeps the
//! subscription alive across master restarts (re-subscribing with the same framework
//! id, with backoff). Callbacks answer through a [`DriverHandle`]: launch, decline,
//! kill, revive, suppress, reconcile, message, teardown, stop; work a callback spawns
//! hands its result back with [`DriverHandle::send`] (see [`Scheduler`]).
//!
//! The helpers every scheduler needs come along: fixed-point [`Resources`] maths
//! (re-exported from `strata-proto`), a [`TaskBuilder`], [`offer_fits`] and an
//! [`OfferPool`] that packs tasks into offers, and a [`SandboxClient`] that reads a
//! task's output from its agent. [`ops`] builds the other offer operations, dynamic
//! reservations and persistent volumes (RESERVE, UNRESERVE, CREATE, DESTROY), for
//! [`DriverHandle::accept`], and [`TaskBuilder::persistent_volume`] mounts a volume
//! into a task.
//!
//! The SDK needs Rust 1.95 or newer (the workspace's `rust-version`; edition 2024).
//! `docs/writing-a-scheduler.md` walks through a complete scheduler;
//! `examples/sweep.rs` is a parameter sweep with a concurrency cap, retries and
//! gathered outputs.
//!
//! # Example: run three `echo` tasks, then leave
//!
//! ```no_run
//! use std::collections::{HashMap, HashSet};
//!
//! use strata_framework_sdk::{
//!     Driver, DriverHandle, OfferPool, Scheduler, SdkError, TaskBuilder, is_terminal, state_of,
//!     v1,
//! };
//!
//! struct Echo {
//!     /// Tasks not launched yet.
//!     pending: Vec<TaskBuilder>,
//!     /// Ids of the tasks that finished: a set, since an update can arrive twice.
//!     finished: HashSet<String>,
//!     total: usize,
//! }
//!
//! impl Scheduler for Echo {
//!     async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
//!         let mut pool = OfferPool::new(offers);
//!         let mut placed = HashMap::new(); // task id → task, for this round
//!         while let Some(task) = self.pending.pop() {
//!             match pool.place(&task) {
//!                 Ok(Some(_offer)) => {
//!                     placed.insert(task.task_id().to_string(), task);
//!                 }
//!                 Ok(None) => {
//!                     self.pending.push(task); // no room left in these offers
//!                     break;
//!                 }
//!                 Err(e) => return driver.abort(e.to_string()),
//!             }
//!         }
//!         let placement = pool.into_placement();
//!         let unused = placement.unused_ids();
//!         for launch in placement.launches {
//!             let ids: Vec<String> = launch.tasks.iter().map(|t| t.task_id.clone()).collect();
//!             match driver.launch(vec![launch.offer.id], launch.tasks).await {
//!                 Ok(()) => {}
//!                 // The master never saw the call: these tasks wait for the next offers.
//!                 Err(SdkError::Disconnected) => {
//!                     self.pending.extend(ids.iter().filter_map(|id| placed.remove(id)));
//!                 }
//!                 Err(e) => return driver.abort(format!("launch failed: {e}")),
//!             }
//!         }
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
//!             self.finished.insert(status.task_id);
//!             if self.finished.len() == self.total {
//!                 let _ = driver.teardown().await; // done: run() returns Ok
//!             }
//!         } else if is_terminal(state) {
//!             let why = format!("{} ended {}: {}", status.task_id, state.as_str_name(), status.message);
//!             driver.abort(why);
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pending: Vec<TaskBuilder> = (0..3)
//!         .map(|i| TaskBuilder::new(format!("echo-{i}")).shell(format!("echo hello {i}")).cpus(0.1).mem(32.0))
//!         .collect();
//!     let total = pending.len();
//!     let echo = Echo { pending, finished: HashSet::new(), total };
//!     let framework = v1::FrameworkInfo { name: "echo".into(), ..Default::default() };
//!     let driver = Driver::new("127.0.0.1:5050", framework, echo);
//!     driver.run().await?; // returns once the scheduler tears down
//!     Ok(())
//! }
//! ```
//!
//! # A secure master
//!
//! A master not started with `--insecure` serves TLS and wants a credential: set
//! [`DriverOptions::tls`] to a [`ClientTls`] with the cluster CA (`tls/ca.crt` in the
//! master's work dir) and the framework's [`Credential`] ([`secure::secure_from_files`]
//! reads both from files). A refused credential stops
//! the driver ([`Scheduler::error`], then [`SdkError::Rpc`] `UNAUTHENTICATED`); a
//! master whose certificate the CA does not vouch for, too ([`SdkError::Certificate`]).
//! The SDK's README shows the code.
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
//!
//! # A concurrency cap
//!
//! Count the tasks launched and not ended, and place at most `cap - running` tasks
//! per round of offers. With nothing to launch now (at the cap, or nothing pending),
//! decline the offers with a long `refuse_seconds` and [`DriverHandle::suppress`]; when
//! a task ends and work waits, [`DriverHandle::revive`] (which also clears the
//! decline filters). The driver remembers a suppress across re-subscriptions.
//!
//! # Retries
//!
//! On a terminal state other than TASK_FINISHED, put the work back in the pending
//! queue (and revive) until it has failed N times. TASK_ERROR means the task itself is
//! invalid (or its id was a duplicate): retrying the same description fails again.
//! Give every try a task id of its own (`job-7-1`, `job-7-2`); see the next section.
//!
//! # Reusing a task id
//!
//! The master refuses (TASK_ERROR, `REASON_DUPLICATE_TASK_ID`) a launch whose task id
//! belongs to a live task of the framework, or to an ended task whose terminal update
//! the framework has not acknowledged yet. Automatic acknowledgements are sent after
//! [`Scheduler::status_update`] returns, so a relaunch under the same id from inside
//! that callback is refused, and one from a later callback is accepted (unless the
//! acknowledgement failed: the agent then retries the update, and the id stays taken
//! until it is acknowledged). On the agent, a task reusing an id reuses its sandbox
//! directory, and its `stdout` and `stderr` start empty: the earlier task's output is
//! gone. Hence: one id per try.
//!
//! # Reading task output
//!
//! [`SandboxClient`] reads `stdout` / `stderr` from the agent at the launching offer's
//! `agent_address`. Read it off the driver's loop (spawn, then
//! [`DriverHandle::send`] the result) so events keep flowing.
//!
//! - **Complete at TASK_FINISHED.** A process task writes its sandbox files itself, and
//!   the agent reports the end only after the task's last process is gone (the rest
//!   of its cgroup or process group is killed first), so everything the task wrote is
//!   in the file by the time the update arrives. What a process held in its own
//!   buffers when it was killed is lost, as anywhere. A Docker task's output is copied
//!   from the engine's log into the sandbox; the agent waits up to 5 s for the copy to
//!   finish before it reports the end (and logs a warning on the agent if it did not).
//! - **Readable for as long as the sandbox exists.** The agent keeps
//!   `WORK_DIR/frameworks/<framework id>/tasks/<task id>/` on disk after the task ends
//!   and never deletes it (clean the work dir yourself); its memory of the last 1,000
//!   completed tasks only feeds `state` in the answer (`TASK_UNKNOWN` for older ones,
//!   and after an agent restart). A new task with the same id empties the files.
//!
//! # Logs
//!
//! The SDK reports what it cannot hand to a callback (a lost subscription, a failed
//! acknowledgement, a malformed offer) through [`tracing`](https://docs.rs/tracing)
//! and, being a library, installs no subscriber: without one those warnings go
//! nowhere. In `main`, with `tracing-subscriber = { version = "0.3", features =
//! ["env-filter"] }`:
//!
//! ```no_run
//! let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
//! tracing_subscriber::fmt()
//!     .with_env_filter(filter) // RUST_LOG=strata_framework_sdk=debug shows more
//!     .with_writer(std::io::stderr)
//!     .init();
//! ```
//!
//! # The master's `/state`
//!
//! `GET http://MASTER/state` answers JSON, handy in tests and scripts:
//!
//! ```text
//! { "master_id": "...",
//!   "agents": [ { "id", "hostname", "address" (host:port of its HTTP API),
//!                 "status" (ACTIVE, DISCONNECTED, UNREACHABLE, RECOVERING, GONE),
//!                 "maintenance" (null, DEACTIVATED, DRAINING, DRAINED), "attributes": {},
//!                 "total", "used", "offered" (resources), "registered_time" (unix s) } ],
//!   "frameworks": [ { "id", "name", "user", "roles", "capabilities",
//!                     "failover_timeout_seconds", "connected", "active",
//!                     "suppressed_roles", "used", "offered", "task_count" } ],
//!   "tasks": [ { "id", "name", "framework_id", "agent_id", "state" ("TASK_RUNNING"),
//!                "resources", "message", "reason" ("REASON_COMMAND_EXITED"),
//!                "exit_status" (null or a number), "updated" (unix s),
//!                "statistics" (only when the agent reported usage) } ],
//!   "roles": [ { "name", "weight", "allocated", "frameworks" } ],
//!   "outstanding_offers": 0 }
//! ```
//!
//! Resources are objects like `{"cpus": 0.5, "mem": 64.0, "ports": "[31000-31002]"}`
//! (a reserved resource is keyed `cpus(role)`). `tasks` lists the live tasks of every
//! framework, then the last 1,000 ended tasks of all frameworks; `frameworks` lists
//! only the frameworks still registered (not torn-down ones).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod error;
mod offers;
pub mod ops;
mod sandbox;
mod scheduler;
pub mod secure;
mod tasks;

pub use driver::{Driver, DriverHandle, DriverOptions};
pub use error::SdkError;
pub use offers::{OfferLaunch, OfferPool, Placement, offer_fits, offer_ids, offer_resources};
pub use ops::{offer_volume, offer_volumes};
pub use sandbox::{FileChunk, SandboxClient};
pub use scheduler::Scheduler;
pub use tasks::TaskBuilder;

pub use strata_proto::{RangeSet, Resources, Scalar, is_terminal, state_name, v1};
/// How a framework reaches a secure master: the cluster CA and its credential (see
/// [`DriverOptions::tls`]).
pub use strata_security::{ClientTls, Credential};

/// The Rust code blocks of the README, compiled (not run: they need a master) as
/// doctests by `cargo test -p strata-framework-sdk --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The Rust code blocks of the SDK's own README (connecting to a secure master),
/// compiled as doctests like the workspace's.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct SdkReadmeDoctests;

/// The state of a status update (`TASK_STATE_UNSPECIFIED` for values this SDK does not know).
pub fn state_of(status: &v1::TaskStatus) -> v1::TaskState {
    strata_proto::states::state_from_i32(status.state)
}

/// The reason of a status update (`REASON_UNSPECIFIED` for values this SDK does not know).
pub fn reason_of(status: &v1::TaskStatus) -> v1::TaskStatusReason {
    v1::TaskStatusReason::try_from(status.reason).unwrap_or(v1::TaskStatusReason::ReasonUnspecified)
}
