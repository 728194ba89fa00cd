//! The [`Scheduler`] trait: what a framework implements to be told about offers and
//! task updates, and to hear back from work it spawned.
//!
//! The [`Driver`](crate::Driver) owns the scheduler and calls one method at a time, in
//! the order the master's events arrive; a callback that awaits holds up the next event
//! (heartbeats included are only read afterwards), so keep long work out of callbacks:
//! spawn it, and have it [`send`](DriverHandle::send) its result back, which the driver
//! hands to [`Scheduler::message`] in turn with the events. Every callback receives a
//! [`DriverHandle`] to answer with (accept, decline, kill, ...).
//!
//! ```text
//! Driver::run ── Subscribe ──▶ master
//!     ◀── SUBSCRIBED ── registered / reregistered
//!     ◀── OFFERS ────── offers            ──▶ handle.launch / decline
//!     ◀── UPDATE ────── status_update     ──▶ (automatic ACKNOWLEDGE)
//!     ◀── RESCIND, MESSAGE, FAILURE, ERROR
//!     stream breaks ─── disconnected, then re-subscribe with the same framework id
//! spawned work ── handle.send(m) ──▶ message(m)   (in send order, between events)
//! ```

use std::future::Future;

use strata_proto::v1;

use crate::DriverHandle;

/// A framework's scheduler. Only [`offers`](Scheduler::offers) and
/// [`status_update`](Scheduler::status_update) must be written; the other callbacks do
/// nothing by default.
///
/// Implement the methods with `async fn`; the futures must be `Send` so that the
/// driver can run on any tokio runtime thread (do not hold a `std::sync::MutexGuard`
/// or an `Rc` across an `.await` inside them).
///
/// # Messages from spawned work
///
/// `M` is the type of the messages the scheduler's own spawned work sends back to it
/// (`()` by default: `impl Scheduler for X` takes none). A scheduler that reads task
/// output, calls a database or waits for a timer implements `Scheduler<M>` for a type
/// of its own, spawns that work with a clone of its [`DriverHandle<M>`], and has it
/// call [`DriverHandle::send`]; the driver then calls [`message`](Scheduler::message)
/// with `&mut self`, in send order, between two events, like any other callback:
///
/// ```no_run
/// use strata_framework_sdk::{DriverHandle, SandboxClient, Scheduler, SdkError, state_of, v1};
///
/// /// What a spawned read sends back.
/// struct Output {
///     task_id: String,
///     stdout: Result<String, SdkError>,
/// }
///
/// struct Batch {
///     /// Where each launched task runs (`offer.agent_address`).
///     agents: std::collections::HashMap<String, String>,
///     outputs: Vec<String>,
/// }
///
/// impl Scheduler<Output> for Batch {
///     async fn offers(&mut self, driver: &DriverHandle<Output>, offers: Vec<v1::Offer>) {
///         // ... launch tasks, remember each one's offer.agent_address ...
/// #       let _ = (driver, offers);
///     }
///
///     async fn status_update(&mut self, driver: &DriverHandle<Output>, status: v1::TaskStatus) {
///         if state_of(&status) != v1::TaskState::TaskFinished {
///             return;
///         }
///         let Some(agent) = self.agents.remove(&status.task_id) else { return };
///         let driver = driver.clone();
///         // Read the output off the driver's loop: events keep flowing meanwhile.
///         tokio::spawn(async move {
///             let framework_id = driver.framework_id().unwrap_or_default();
///             let stdout = SandboxClient::new()
///                 .read_to_end(&agent, &framework_id, &status.task_id, "stdout")
///                 .await;
///             let _ = driver.send(Output { task_id: status.task_id, stdout });
///         });
///     }
///
///     async fn message(&mut self, _driver: &DriverHandle<Output>, output: Output) {
///         match output.stdout {
///             Ok(text) => self.outputs.push(text),
///             Err(e) => eprintln!("no output from {}: {e}", output.task_id),
///         }
///     }
/// }
/// ```
pub trait Scheduler<M: Send + 'static = ()>: Send {
    /// The first subscription of this driver succeeded. `framework_id` is the id the
    /// master assigned (or the one the `FrameworkInfo` carried, when failing over);
    /// persist it if the framework must survive its own restart.
    fn registered(
        &mut self,
        _driver: &DriverHandle<M>,
        _framework_id: &str,
        _master_id: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The driver re-subscribed (with the same framework id) after the stream broke,
    /// typically because the master restarted. Outstanding offers are gone; a good
    /// scheduler reconciles its tasks here (`driver.reconcile(vec![])`).
    fn reregistered(
        &mut self,
        _driver: &DriverHandle<M>,
        _framework_id: &str,
        _master_id: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The subscription was lost. Offers received so far are void; calls fail with
    /// [`SdkError::Disconnected`](crate::SdkError::Disconnected) until `reregistered`.
    fn disconnected(&mut self, _driver: &DriverHandle<M>) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Resources offered to this framework. Accept (launch) or decline every offer:
    /// an offer left unanswered holds its resources away from everyone else.
    fn offers(
        &mut self,
        driver: &DriverHandle<M>,
        offers: Vec<v1::Offer>,
    ) -> impl Future<Output = ()> + Send;

    /// An offer is no longer valid (its agent was lost, or the master took it back).
    fn offer_rescinded(
        &mut self,
        _driver: &DriverHandle<M>,
        _offer_id: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A task changed state. Unless automatic acknowledgements are turned off, the
    /// driver acknowledges the update (when it carries a uuid) after this returns.
    fn status_update(
        &mut self,
        driver: &DriverHandle<M>,
        status: v1::TaskStatus,
    ) -> impl Future<Output = ()> + Send;

    /// Data a task sent to the scheduler. Delivery is not guaranteed.
    fn framework_message(
        &mut self,
        _driver: &DriverHandle<M>,
        _agent_id: &str,
        _task_id: &str,
        _data: Vec<u8>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// An agent was lost (`task_id` empty) or a task's executor terminated
    /// (`status` is its exit status when known). The affected tasks' own status
    /// updates arrive separately.
    fn failure(
        &mut self,
        _driver: &DriverHandle<M>,
        _failure: v1::Failure,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The master sent an ERROR (for example the framework was removed), or refused
    /// the subscription for good: a missing or wrong credential (`UNAUTHENTICATED`),
    /// a principal not allowed to subscribe (`PERMISSION_DENIED`), an invalid
    /// framework; or its certificate did not verify. `message` says which, with the
    /// master's own words. The driver stops after this returns and
    /// [`Driver::run`](crate::Driver::run) returns the error
    /// ([`SdkError::Master`](crate::SdkError::Master),
    /// [`SdkError::Rpc`](crate::SdkError::Rpc) with the master's status, or
    /// [`SdkError::Certificate`](crate::SdkError::Certificate)).
    fn error(
        &mut self,
        _driver: &DriverHandle<M>,
        _message: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A message the scheduler's own work sent with [`DriverHandle::send`]. Messages
    /// arrive in the order they were sent, one at a time between the master's events,
    /// whether or not the driver is subscribed at that moment; those still queued when
    /// the driver stops are dropped. The default drops the message with a warning:
    /// a scheduler that sends messages implements this.
    fn message(
        &mut self,
        _driver: &DriverHandle<M>,
        _message: M,
    ) -> impl Future<Output = ()> + Send {
        async {
            tracing::warn!(
                message_type = std::any::type_name::<M>(),
                "a message was sent to a scheduler that does not implement Scheduler::message; dropped"
            );
        }
    }
}
