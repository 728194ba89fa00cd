//! The bench's framework on the raw gRPC scheduler API: launches the tasks through
//! offers in the setup, acknowledges every update, re-subscribes with its id after
//! each restart and reconciles when asked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_proto::v1::{self, scheduler_client::SchedulerClient};
use strata_security::credentials::AuthInterceptor;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{
    DETECTOR_WAIT, MAX_BACKOFF, MAX_MESSAGE, Shared, TASK_CPUS, endpoint, jitter,
    wait_or_new_master,
};

const TASK_MEM: f64 = 64.0;
/// ACCEPT calls in flight at once during the setup.
const ACCEPTS_IN_FLIGHT: usize = 32;
/// Workers sending ACKNOWLEDGE calls during the setup.
const ACKERS: usize = 16;

/// The scheduler API's client, with the framework's credential on every call (none
/// when insecure).
type Scheduler = SchedulerClient<InterceptedService<Channel, AuthInterceptor>>;

/// What the framework tells the bench.
#[derive(Debug)]
pub(super) enum FwReport {
    /// Every task launched in the setup is RUNNING.
    SetupDone,
    /// SUBSCRIBED from the master of this epoch.
    Subscribed(u64, Instant),
    /// After a re-subscription, every task was confirmed RUNNING (by the master's
    /// updates as agents re-registered, or by the answers to a reconciliation).
    AllConfirmed(u64, Instant),
    /// An explicit implicit reconciliation was answered for every task.
    Reconciled(Instant),
    /// An update the bench does not expect (a task LOST, GONE, ...).
    Unexpected(String),
}

/// The bench's framework: raw gRPC scheduler API.
pub(super) struct Framework {
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: u32,
    pub(super) per_agent: u32,
    pub(super) reports: mpsc::UnboundedSender<FwReport>,
    /// Requests for an implicit reconciliation: answers are the RUNNING updates
    /// stamped at or after this Unix time.
    pub(super) reconcile: mpsc::UnboundedReceiver<f64>,
    /// Reconcile (implicitly) as soon as SUBSCRIBED arrives after a failover.
    pub(super) reconcile_on_subscribe: bool,
}

/// One subscription's state.
struct FwStream {
    header: v1::CallHeader,
    epoch: u64,
    confirmed: HashSet<String>,
    /// A reconciliation asked for: answers are stamped at or after this Unix time
    /// (the master's own updates for tasks coming back are all older); and how many
    /// are still expected.
    reconciling: Option<(f64, usize)>,
}

impl Framework {
    pub(super) async fn run(mut self) -> anyhow::Result<()> {
        let mut master = self.shared.master.clone();
        let mut framework_id = String::new();
        // Setup state: tasks launched per agent, the next task number, RUNNING seen.
        let mut launched: HashMap<String, u32> = HashMap::new();
        let mut next_task = 0u32;
        let mut running: HashSet<String> = HashSet::new();
        let mut setup_done = false;
        let accepts = Arc::new(Semaphore::new(ACCEPTS_IN_FLIGHT));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<v1::AcknowledgeRequest>();
        let ack_rx = Arc::new(Mutex::new(ack_rx));
        let mut ackers = JoinSet::new();
        let mut bound = self.shared.jitter;
        let mut delay = Duration::ZERO;

        loop {
            wait_or_new_master(&mut master, delay, &mut bound, self.shared.jitter).await;
            let epoch = *master.borrow_and_update();
            let channel = match endpoint(&self.shared.tls, &self.shared.addr)?
                .connect()
                .await
            {
                Ok(c) => c,
                Err(_) => {
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    bound = (bound * 2).min(MAX_BACKOFF);
                    delay = jitter(bound);
                    continue;
                }
            };
            let interceptor = AuthInterceptor::new(self.shared.tls.credential.as_ref());
            let mut client: Scheduler = SchedulerClient::with_interceptor(channel, interceptor)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            if ackers.is_empty() {
                for _ in 0..ACKERS {
                    let rx = ack_rx.clone();
                    let mut c = client.clone();
                    ackers.spawn(async move {
                        loop {
                            let next = { rx.lock().await.recv().await };
                            let Some(req) = next else { break };
                            let _ = c.acknowledge(req).await;
                        }
                    });
                }
            }
            let info = v1::FrameworkInfo {
                id: framework_id.clone(),
                name: "strata-bench-failover".into(),
                roles: vec!["*".into()],
                failover_timeout_seconds: 3600.0,
                ..Default::default()
            };
            let subscribed = client
                .subscribe(v1::SubscribeRequest {
                    framework_info: Some(info),
                    suppressed_roles: vec![],
                })
                .await;
            let mut events = match subscribed {
                Ok(r) => r.into_inner(),
                Err(_) => {
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    bound = (bound * 2).min(MAX_BACKOFF);
                    delay = jitter(bound);
                    continue;
                }
            };
            bound = self.shared.jitter;
            let mut stream = FwStream {
                header: v1::CallHeader::default(),
                epoch,
                confirmed: HashSet::new(),
                reconciling: None,
            };
            loop {
                tokio::select! {
                    event = events.next() => {
                        let Some(Ok(event)) = event else { break };
                        match event.event {
                            Some(v1::event::Event::Subscribed(s)) => {
                                framework_id = s.framework_id.clone();
                                stream.header = v1::CallHeader {
                                    framework_id: s.framework_id,
                                    stream_id: s.stream_id,
                                };
                                let _ = self.reports.send(FwReport::Subscribed(epoch, Instant::now()));
                                if setup_done && self.reconcile_on_subscribe {
                                    // Failover: ask for the state of every task at once.
                                    spawn_reconcile(&client, &stream.header);
                                }
                            }
                            Some(v1::event::Event::Offers(offers)) => {
                                if setup_done || next_task >= self.tasks {
                                    let ids = offers.offers.into_iter().map(|o| o.id).collect();
                                    let mut c = client.clone();
                                    let header = stream.header.clone();
                                    tokio::spawn(async move {
                                        let _ = c.decline(v1::DeclineRequest {
                                            header: Some(header),
                                            offer_ids: ids,
                                            filters: Some(v1::Filters { refuse_seconds: Some(3600.0) }),
                                        }).await;
                                    });
                                    continue;
                                }
                                for offer in offers.offers {
                                    let done = launched.entry(offer.agent_id.clone()).or_insert(0);
                                    let mut tasks = Vec::new();
                                    while *done < self.per_agent && next_task < self.tasks {
                                        *done += 1;
                                        let id = format!("t-{next_task}");
                                        next_task += 1;
                                        tasks.push(task_info(id, &offer.agent_id));
                                    }
                                    let req = v1::AcceptRequest {
                                        header: Some(stream.header.clone()),
                                        offer_ids: vec![offer.id],
                                        operations: if tasks.is_empty() { vec![] } else {
                                            vec![v1::Operation {
                                                operation: Some(v1::operation::Operation::Launch(
                                                    v1::Launch { task_infos: tasks },
                                                )),
                                            }]
                                        },
                                        filters: Some(v1::Filters { refuse_seconds: Some(3600.0) }),
                                    };
                                    // The event loop never waits: a full event buffer
                                    // costs the framework its subscription.
                                    let accepts = accepts.clone();
                                    let mut c = client.clone();
                                    tokio::spawn(async move {
                                        let Ok(_permit) = accepts.acquire_owned().await else {
                                            return;
                                        };
                                        if let Err(e) = c.accept(req).await {
                                            tracing::warn!(error = %e, "accept failed");
                                        }
                                    });
                                }
                                if next_task >= self.tasks {
                                    let mut c = client.clone();
                                    let header = stream.header.clone();
                                    tokio::spawn(async move {
                                        let _ = c.suppress(v1::SuppressRequest {
                                            header: Some(header),
                                            roles: vec![],
                                        }).await;
                                    });
                                }
                            }
                            Some(v1::event::Event::Update(u)) => {
                                let Some(status) = u.status else { continue };
                                if !status.uuid.is_empty() {
                                    let _ = ack_tx.send(v1::AcknowledgeRequest {
                                        header: Some(stream.header.clone()),
                                        agent_id: status.agent_id.clone(),
                                        task_id: status.task_id.clone(),
                                        uuid: status.uuid.clone(),
                                    });
                                }
                                self.on_update(status, &mut stream, &mut running, &mut setup_done);
                            }
                            Some(v1::event::Event::Error(e)) => {
                                anyhow::bail!("master error to the framework: {}", e.message)
                            }
                            _ => {}
                        }
                    }
                    Some(since) = self.reconcile.recv() => {
                        stream.reconciling = Some((since, self.tasks as usize));
                        spawn_reconcile(&client, &stream.header);
                    }
                }
            }
            // The stream broke: wait for the detector (or retry after a while).
            delay = DETECTOR_WAIT;
        }
    }

    fn on_update(
        &self,
        status: v1::TaskStatus,
        stream: &mut FwStream,
        running: &mut HashSet<String>,
        setup_done: &mut bool,
    ) {
        let state = status.state();
        if matches!(
            state,
            v1::TaskState::TaskStaging | v1::TaskState::TaskStarting
        ) {
            return;
        }
        if state != v1::TaskState::TaskRunning {
            let _ = self.reports.send(FwReport::Unexpected(format!(
                "{} {} ({})",
                status.task_id,
                state.as_str_name(),
                status.message
            )));
            return;
        }
        if !*setup_done {
            running.insert(status.task_id);
            if running.len() == self.tasks as usize {
                *setup_done = true;
                let _ = self.reports.send(FwReport::SetupDone);
            }
            return;
        }
        if let Some((since, left)) = stream.reconciling.as_mut()
            && status.timestamp >= *since
        {
            *left -= 1;
            if *left == 0 {
                stream.reconciling = None;
                let _ = self.reports.send(FwReport::Reconciled(Instant::now()));
            }
        }
        let before = stream.confirmed.len();
        stream.confirmed.insert(status.task_id);
        if stream.confirmed.len() == self.tasks as usize && before < stream.confirmed.len() {
            let _ = self
                .reports
                .send(FwReport::AllConfirmed(stream.epoch, Instant::now()));
        }
    }
}

fn spawn_reconcile(client: &Scheduler, header: &v1::CallHeader) {
    let mut c = client.clone();
    let header = header.clone();
    tokio::spawn(async move {
        if let Err(e) = c
            .reconcile(v1::ReconcileRequest {
                header: Some(header),
                tasks: vec![],
            })
            .await
        {
            tracing::warn!(error = %e, "reconcile failed");
        }
    });
}

fn task_info(id: String, agent_id: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.clone(),
        task_id: id,
        agent_id: agent_id.to_string(),
        resources: strata_proto::Resources::cpus_mem(TASK_CPUS, TASK_MEM).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 3600".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
