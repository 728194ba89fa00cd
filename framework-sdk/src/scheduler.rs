//! The [`Scheduler`] trait: what a framework implements to be told about offers and
//! task updates.
//!
//! The [`Driver`](crate::Driver) owns the scheduler and calls one method at a time, in
//! the order the master's events arrive; a callback that awaits holds up the next event
//! (heartbeats included are only read afterwards), so keep long work out of callbacks or
//! spawn it. Every callback receives a [`DriverHandle`] to answer with (accept, decline,
//! kill, ...).
//!
//! ```text
//! Driver::run ── Subscribe ──▶ master
//!     ◀── SUBSCRIBED ── registered / reregistered
//!     ◀── OFFERS ────── offers            ──▶ handle.launch / decline
//!     ◀── UPDATE ────── status_update     ──▶ (automatic ACKNOWLEDGE)
//!     ◀── RESCIND, MESSAGE, FAILURE, ERROR
//!     stream breaks ─── disconnected, then re-subscribe with the same framework id
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
pub trait Scheduler: Send {
    /// The first subscription of this driver succeeded. `framework_id` is the id the
    /// master assigned (or the one the `FrameworkInfo` carried, when failing over);
    /// persist it if the framework must survive its own restart.
    fn registered(
        &mut self,
        _driver: &DriverHandle,
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
        _driver: &DriverHandle,
        _framework_id: &str,
        _master_id: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The subscription was lost. Offers received so far are void; calls fail with
    /// [`SdkError::Disconnected`](crate::SdkError::Disconnected) until `reregistered`.
    fn disconnected(&mut self, _driver: &DriverHandle) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Resources offered to this framework. Accept (launch) or decline every offer:
    /// an offer left unanswered holds its resources away from everyone else.
    fn offers(
        &mut self,
        driver: &DriverHandle,
        offers: Vec<v1::Offer>,
    ) -> impl Future<Output = ()> + Send;

    /// An offer is no longer valid (its agent was lost, or the master took it back).
    fn offer_rescinded(
        &mut self,
        _driver: &DriverHandle,
        _offer_id: &str,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A task changed state. Unless automatic acknowledgements are turned off, the
    /// driver acknowledges the update (when it carries a uuid) after this returns.
    fn status_update(
        &mut self,
        driver: &DriverHandle,
        status: v1::TaskStatus,
    ) -> impl Future<Output = ()> + Send;

    /// Data a task sent to the scheduler. Delivery is not guaranteed.
    fn framework_message(
        &mut self,
        _driver: &DriverHandle,
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
        _driver: &DriverHandle,
        _failure: v1::Failure,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The master sent an ERROR (for example the framework was removed). The driver
    /// stops after this returns and [`Driver::run`](crate::Driver::run) returns
    /// [`SdkError::Master`](crate::SdkError::Master).
    fn error(&mut self, _driver: &DriverHandle, _message: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
}
