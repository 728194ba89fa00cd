//! The one error type of the SDK.
//!
//! Calls on a [`DriverHandle`](crate::DriverHandle) and [`Driver::run`](crate::Driver::run)
//! return [`SdkError`]; the task and offer helpers return it too when what they were
//! asked to build is invalid or does not fit.

use std::time::Duration;

use strata_proto::{ResourceError, Resources};

/// What went wrong in the SDK, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The driver holds no subscription right now (the master restarted or the stream
    /// broke); it is re-subscribing. Retry the call after `reregistered`.
    #[error("not connected to the master (the driver is re-subscribing); retry after reregistered")]
    Disconnected,
    /// The driver was stopped or aborted; no more calls can be made through it.
    #[error("the driver has stopped")]
    Stopped,
    /// The master answered the call with an error.
    #[error("the master refused the call: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    /// The master did not answer within the call timeout.
    #[error("the master did not answer the {call} call within {timeout:?}")]
    Timeout {
        /// The call that timed out.
        call: &'static str,
        /// How long the driver waited.
        timeout: Duration,
    },
    /// The caller passed something the SDK refuses before it reaches the master.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Resources read from an offer or given to a builder were malformed.
    #[error("invalid resources: {0}")]
    Resources(#[from] ResourceError),
    /// A task does not fit in the resources it was built against.
    #[error("task '{task_id}' needs {needs} but only {available} is available")]
    DoesNotFit {
        /// The task that did not fit.
        task_id: String,
        /// What it asked for, e.g. `cpus:0.5;mem:64 and 2 ports`.
        needs: String,
        /// What was left in the offer.
        available: Resources,
    },
    /// The first subscription did not succeed within `DriverOptions::subscribe_timeout`.
    #[error(
        "could not subscribe to the master at {master} within {waited:.1?} (last error: {last_error}); \
         is strata-master running there?"
    )]
    SubscribeTimeout {
        /// The master address the driver dialled.
        master: String,
        /// How long it tried.
        waited: Duration,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// The master's certificate does not verify against the CA of
    /// [`DriverOptions::tls`](crate::DriverOptions::tls) (another cluster's CA, a
    /// certificate that does not name `strata-master`, an expired one). Fatal: the
    /// driver sent nothing to that server.
    #[error(
        "the master at {master} is not the one the CA vouches for: {reason}; check the CA file (and that the address is the master's)"
    )]
    Certificate {
        /// The master address the driver dialled.
        master: String,
        /// What the TLS handshake said.
        reason: String,
    },
    /// The master sent an ERROR event (for instance: the framework was removed). Fatal.
    #[error("the master reported an error: {0}")]
    Master(String),
    /// The scheduler called [`DriverHandle::abort`](crate::DriverHandle::abort).
    #[error("aborted: {0}")]
    Aborted(String),
    /// Reading a task's sandbox file from its agent failed.
    #[error("reading {file} of task '{task_id}' from the agent at {agent}: {reason}")]
    Sandbox {
        /// The agent's `host:port`.
        agent: String,
        /// The task whose sandbox was read.
        task_id: String,
        /// `stdout` or `stderr`.
        file: String,
        /// What went wrong.
        reason: String,
    },
}

/// An error and its sources on one line (tonic's transport errors say little alone).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    let mut last = out.clone();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and tonic often wrap an error in one that says the same thing.
        if text != last {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = s.source();
    }
    out
}
