//! The running container framework: the core behind a lock, the store, the SDK
//! driver that talks to the master, and the loop that ticks the core. API calls,
//! offers and status updates all go through `Service::step`: under the core's lock it
//! runs the core, persists what changed, and queues the resulting actions; one
//! executor carries the actions out in that same order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_framework_sdk::{DriverHandle, Scheduler, SdkError};
use strata_proto::v1;
use tokio::sync::{OnceCell, mpsc};

use super::core::{Action, Core};
use super::records::now;
use super::store::Store;

pub struct Service {
    core: Mutex<Core>,
    store: Store,
    driver: OnceCell<DriverHandle>,
    queue: mpsc::UnboundedSender<Vec<Action>>,
    pub master: String,
}

impl Service {
    /// The service and the receiving end of its action queue (for [`Service::executor`]).
    pub fn new(
        core: Core,
        store: Store,
        master: String,
    ) -> (Arc<Service>, mpsc::UnboundedReceiver<Vec<Action>>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let service = Arc::new(Service {
            core: Mutex::new(core),
            store,
            driver: OnceCell::new(),
            queue,
            master,
        });
        (service, rx)
    }

    pub fn set_driver(&self, handle: DriverHandle) {
        let _ = self.driver.set(handle);
    }

    pub fn connected(&self) -> bool {
        self.driver.get().is_some_and(|d| d.is_connected())
    }

    /// Runs `f` on the core under the lock, persists what it changed, and queues its
    /// actions, in the order the core produced them.
    ///
    /// A store that cannot be written leaves memory ahead of disk; the process exits
    /// (what is on disk is consistent, and a restart reconciles from it).
    pub fn step<T>(&self, f: impl FnOnce(&mut Core) -> (T, Vec<Action>)) -> T {
        let mut core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        let (out, actions) = f(&mut core);
        let writes = core.take_writes();
        if let Err(e) = self.store.apply(&writes) {
            tracing::error!(error = %e, "cannot persist the framework's state; exiting so that a restart recovers from the store");
            eprintln!("strata serve: {e}; exiting");
            std::process::exit(70);
        }
        if !actions.is_empty() {
            let _ = self.queue.send(actions);
        }
        out
    }

    /// Reads the core under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&Core) -> T) -> T {
        let core = self.core.lock().unwrap_or_else(|p| p.into_inner());
        f(&core)
    }

    /// Carries out queued actions, one batch after another, until the queue closes.
    pub async fn executor(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Vec<Action>>) {
        while let Some(actions) = rx.recv().await {
            let Some(driver) = self.driver.get() else {
                continue;
            };
            for action in actions {
                self.carry_out(driver, action).await;
            }
        }
    }

    async fn carry_out(&self, driver: &DriverHandle, action: Action) {
        match action {
            Action::Launch { offer_id, tasks } => {
                let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
                if let Err(e) = driver.launch(vec![offer_id], tasks).await {
                    let refused = matches!(
                        &e,
                        SdkError::Disconnected
                            | SdkError::Stopped
                            | SdkError::InvalidArgument(_)
                            | SdkError::Resources(_)
                            | SdkError::DoesNotFit { .. }
                    ) || matches!(&e, SdkError::Rpc(s) if matches!(
                        s.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::NotFound
                            | tonic::Code::PermissionDenied
                    ));
                    if refused {
                        tracing::warn!(error = %e, "launch not made; the tasks will be launched again");
                        self.step(|c| ((), c.launch_failed(&ids, now())));
                    } else {
                        tracing::warn!(error = %e, "launch outcome unknown; reconciliation will tell");
                    }
                }
            }
            Action::Decline {
                offer_ids,
                refuse_seconds,
            } => {
                if let Err(e) = driver.decline(offer_ids, Some(refuse_seconds)).await {
                    tracing::debug!(error = %e, "decline failed");
                }
            }
            Action::Kill {
                task_id,
                agent_id,
                grace_seconds,
            } => {
                let grace = Duration::try_from_secs_f64(grace_seconds.max(0.0))
                    .unwrap_or(Duration::from_secs(3));
                if let Err(e) = driver.kill_on(&task_id, &agent_id, Some(grace)).await {
                    tracing::debug!(task = %task_id, error = %e, "kill failed; retried later");
                }
            }
            Action::Revive => {
                if let Err(e) = driver.revive().await {
                    tracing::debug!(error = %e, "revive failed; retried on the next tick");
                    self.step(|c| {
                        c.revive_failed();
                        ((), vec![])
                    });
                }
            }
            Action::Suppress => {
                if let Err(e) = driver.suppress().await {
                    tracing::debug!(error = %e, "suppress failed");
                }
            }
            Action::Reconcile(tasks) => {
                if !tasks.is_empty()
                    && let Err(e) = driver.reconcile(tasks).await
                {
                    tracing::warn!(error = %e, "explicit reconciliation failed");
                }
                if let Err(e) = driver.reconcile(vec![]).await {
                    tracing::warn!(error = %e, "implicit reconciliation failed");
                }
            }
            Action::ReconcileTasks(tasks) => {
                if let Err(e) = driver.reconcile(tasks).await {
                    tracing::debug!(error = %e, "reconciliation failed");
                }
            }
        }
    }

    /// Ticks the core every `period` until `stop` resolves.
    pub async fn tick_loop(self: Arc<Self>, period: Duration, stop: impl Future<Output = ()>) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => {
                    if self.connected() {
                        self.step(|c| ((), c.tick(now())));
                    }
                }
            }
        }
    }
}

/// The SDK scheduler: forwards the master's events to the core.
pub struct AppScheduler {
    pub service: Arc<Service>,
}

impl Scheduler for AppScheduler {
    async fn registered(&mut self, driver: &DriverHandle, framework_id: &str, _master: &str) {
        tracing::info!(framework_id, "subscribed");
        self.service.set_driver(driver.clone());
        self.service
            .step(|c| ((), c.subscribed(framework_id, now())));
    }

    async fn reregistered(&mut self, driver: &DriverHandle, framework_id: &str, _master: &str) {
        tracing::info!(framework_id, "re-subscribed");
        self.service.set_driver(driver.clone());
        self.service
            .step(|c| ((), c.subscribed(framework_id, now())));
    }

    async fn offers(&mut self, _driver: &DriverHandle, offers: Vec<v1::Offer>) {
        self.service.step(|c| ((), c.offers(offers, now())));
    }

    async fn status_update(&mut self, _driver: &DriverHandle, status: v1::TaskStatus) {
        // Persisted before this returns, and so before the driver acknowledges it.
        self.service.step(|c| ((), c.status(&status, now())));
    }

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        tracing::error!(message, "the master refused the framework");
    }
}
