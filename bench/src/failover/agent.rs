//! The simulated agents: one tokio task each, holding an `AgentLink.Attach` stream over
//! an HTTP/2 connection it shares with others (see the `failover` module docs).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_proto::v1::{self, agent_link_client::AgentLinkClient, agent_message, master_message};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{DETECTOR_WAIT, MAX_BACKOFF, MAX_MESSAGE, Shared, Stage, jitter, wait_or_new_master};

/// One HTTP/2 connection shared by some agents, made afresh for each master.
pub(super) struct ConnGroup {
    pub(super) endpoint: Endpoint,
    pub(super) channel: Mutex<Option<(u64, Channel)>>,
}

impl ConnGroup {
    async fn channel(&self, epoch: u64) -> Result<Channel, tonic::transport::Error> {
        let mut slot = self.channel.lock().await;
        if let Some((e, channel)) = slot.as_ref()
            && *e == epoch
        {
            return Ok(channel.clone());
        }
        *slot = None;
        let channel = self.endpoint.connect().await?;
        *slot = Some((epoch, channel.clone()));
        Ok(channel)
    }

    /// Drops the connection to the master of `epoch` (once its agents let go of it).
    async fn forget(&self, epoch: u64) {
        let mut slot = self.channel.lock().await;
        if slot.as_ref().is_some_and(|(e, _)| *e == epoch) {
            *slot = None;
        }
    }
}

/// A simulated agent: see the module docs.
pub(super) struct SimAgent {
    pub(super) index: u32,
    pub(super) id: String,
    pub(super) resources: Vec<v1::Resource>,
    pub(super) tasks: Vec<v1::RunningTask>,
    /// The next Register, built while the agent waits for a master (a real agent
    /// builds it on its own machine: it is no load on the master's).
    pub(super) prepared: Option<v1::AgentMessage>,
    pub(super) group: Arc<ConnGroup>,
    pub(super) shared: Arc<Shared>,
}

impl SimAgent {
    pub(super) async fn run(mut self, first_delay: Duration) {
        let mut master = self.shared.master.clone();
        let mut bound = self.shared.jitter;
        let mut delay = first_delay;
        loop {
            wait_or_new_master(&mut master, delay, &mut bound, self.shared.jitter).await;
            let epoch = *master.borrow_and_update();
            match self.attach(epoch).await {
                Err(e) => {
                    tracing::debug!(agent = self.index, error = %e, "registration failed");
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    self.group.forget(epoch).await;
                    bound = (bound * 2).min(MAX_BACKOFF);
                    delay = jitter(bound);
                }
                Ok((outbound, inbound, registered)) => {
                    bound = self.shared.jitter;
                    self.id = registered.agent_id.clone();
                    let _ = self.shared.registered.send((epoch, Instant::now()));
                    self.serve(outbound, inbound, &registered).await;
                    self.group.forget(epoch).await;
                    self.prepared = Some(self.register());
                    self.shared.waiting.fetch_add(1, Ordering::Relaxed);
                    delay = DETECTOR_WAIT;
                }
            }
        }
    }

    /// Register with the agent's id (empty at first) and every task it runs.
    fn register(&self) -> v1::AgentMessage {
        let register = v1::Register {
            checkpointed: None,
            agent_info: Some(v1::AgentInfo {
                principal: String::new(),
                id: self.id.clone(),
                hostname: format!("sim-{}", self.index),
                address: format!("127.0.0.1:{}", 10_000 + self.index),
                resources: self.resources.clone(),
                attributes: vec![],
            }),
            tasks: self.tasks.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        v1::AgentMessage {
            message: Some(agent_message::Message::Register(register)),
        }
    }

    async fn attach(
        &mut self,
        epoch: u64,
    ) -> anyhow::Result<(
        mpsc::Sender<v1::AgentMessage>,
        tonic::Streaming<v1::MasterMessage>,
        v1::Registered,
    )> {
        let stage = |stage| {
            let _ = self.shared.stages.send((epoch, stage, Instant::now()));
        };
        stage(Stage::Dial);
        let channel = self.group.channel(epoch).await?;
        stage(Stage::Connected);
        let mut client = AgentLinkClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (outbound, rx) = mpsc::channel(1024);
        let register = match self.prepared.take() {
            Some(r) => r,
            None => self.register(),
        };
        outbound
            .try_send(register)
            .map_err(|_| anyhow::anyhow!("outbound queue closed"))?;
        let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
        stage(Stage::Attached);
        match inbound.message().await? {
            Some(v1::MasterMessage {
                message: Some(master_message::Message::Registered(r)),
            }) => Ok((outbound, inbound, r)),
            Some(v1::MasterMessage {
                message: Some(master_message::Message::Error(e)),
            }) => anyhow::bail!("refused: {}", e.message),
            other => anyhow::bail!("unexpected answer to Register: {other:?}"),
        }
    }

    /// Pumps one registered stream until it ends.
    async fn serve(
        &mut self,
        outbound: mpsc::Sender<v1::AgentMessage>,
        mut inbound: tonic::Streaming<v1::MasterMessage>,
        registered: &v1::Registered,
    ) {
        let period = Duration::try_from_secs_f64(registered.heartbeat_interval_seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(15))
            .max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat_msg = || v1::AgentMessage {
            message: Some(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        };
        loop {
            tokio::select! {
                next = inbound.message() => {
                    let message = match next {
                        Ok(Some(m)) => m.message,
                        Ok(None) | Err(_) => return,
                    };
                    let reply = match message {
                        Some(master_message::Message::RunTask(run)) => self.launch(run),
                        Some(master_message::Message::RunTasks(run)) => {
                            let mut updates = Vec::with_capacity(run.tasks.len());
                            for task in run.tasks {
                                updates.extend(self.launch(v1::RunTask {
                                    framework: run.framework.clone(),
                                    task: Some(task),
                                }));
                            }
                            let mut sent = true;
                            for update in updates {
                                sent = sent && outbound.send(update).await.is_ok();
                            }
                            if !sent {
                                return;
                            }
                            None
                        }
                        Some(master_message::Message::KillTask(kill)) => self.kill(&kill),
                        Some(master_message::Message::Acknowledge(_)) => {
                            self.shared.acks.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Some(master_message::Message::Ping(_)) => Some(heartbeat_msg()),
                        Some(master_message::Message::Error(e)) => {
                            tracing::warn!(agent = self.index, message = %e.message, "master error");
                            None
                        }
                        _ => None,
                    };
                    if let Some(reply) = reply
                        && outbound.send(reply).await.is_err()
                    {
                        return;
                    }
                }
                _ = heartbeat.tick() => {
                    if outbound.send(heartbeat_msg()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn status(&self, task_id: &str, framework_id: &str, state: v1::TaskState) -> v1::AgentMessage {
        let status = v1::TaskStatus {
            task_id: task_id.to_string(),
            state: state as i32,
            source: v1::TaskStatusSource::SourceExecutor as i32,
            agent_id: self.id.clone(),
            framework_id: framework_id.to_string(),
            uuid: uuid::Uuid::new_v4().to_string(),
            timestamp: strata_proto::now_unix_seconds(),
            ..Default::default()
        };
        v1::AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(status),
            })),
        }
    }

    /// Records a launched task; its TASK_RUNNING update.
    fn launch(&mut self, run: v1::RunTask) -> Option<v1::AgentMessage> {
        let task = run.task?;
        let framework = run.framework.unwrap_or_default();
        let update = self.status(&task.task_id, &framework.id, v1::TaskState::TaskRunning);
        self.tasks.push(v1::RunningTask {
            framework_id: framework.id.clone(),
            task: Some(task),
            state: v1::TaskState::TaskRunning as i32,
            framework: Some(framework),
        });
        Some(update)
    }

    fn kill(&mut self, kill: &v1::KillTask) -> Option<v1::AgentMessage> {
        let at = self.tasks.iter().position(|t| {
            t.framework_id == kill.framework_id
                && t.task.as_ref().is_some_and(|t| t.task_id == kill.task_id)
        })?;
        self.tasks.remove(at);
        Some(self.status(&kill.task_id, &kill.framework_id, v1::TaskState::TaskKilled))
    }
}
