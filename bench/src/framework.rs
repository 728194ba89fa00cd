//! The benches' framework on the raw scheduler gRPC API (no SDK, so that a bench
//! measures the master and agents, not a library): subscribe, keep offers, acknowledge
//! updates. Each bench adds its own launch logic in an `impl Framework` of its module.

use anyhow::{Context, bail};
use strata_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio_stream::StreamExt;

/// A subscribed framework.
pub struct Framework {
    pub client: SchedulerClient<tonic::transport::Channel>,
    pub events: tonic::Streaming<v1::Event>,
    /// Set by SUBSCRIBED.
    pub header: v1::CallHeader,
    /// Offers not answered yet.
    pub offers: Vec<v1::Offer>,
    /// Running tasks: (task id, agent id).
    pub running: Vec<(String, String)>,
}

impl Framework {
    /// Subscribes to the (insecure) master at `master` as `name`, in role `*`.
    pub async fn subscribe(master: &str, name: &str) -> anyhow::Result<Framework> {
        let mut client = SchedulerClient::connect(format!("http://{master}"))
            .await
            .context("connect to the master")?;
        let info = v1::FrameworkInfo {
            name: name.into(),
            roles: vec!["*".into()],
            ..Default::default()
        };
        let events = client
            .subscribe(v1::SubscribeRequest {
                framework_info: Some(info),
                suppressed_roles: vec![],
            })
            .await?
            .into_inner();
        Ok(Framework {
            client,
            events,
            header: v1::CallHeader::default(),
            offers: Vec::new(),
            running: Vec::new(),
        })
    }

    /// The next event, with offers kept; a status update is acknowledged (without
    /// waiting for the answer) and returned.
    pub async fn next(&mut self) -> anyhow::Result<Option<v1::TaskStatus>> {
        let event = self
            .events
            .next()
            .await
            .context("the master closed the event stream")?
            .context("event stream")?;
        match event.event {
            Some(v1::event::Event::Subscribed(s)) => {
                self.header = v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                };
            }
            Some(v1::event::Event::Offers(o)) => self.offers.extend(o.offers),
            Some(v1::event::Event::Rescind(r)) => self.offers.retain(|o| o.id != r.offer_id),
            Some(v1::event::Event::Update(u)) => {
                let Some(status) = u.status else {
                    return Ok(None);
                };
                if !status.uuid.is_empty() {
                    let mut client = self.client.clone();
                    let ack = v1::AcknowledgeRequest {
                        header: Some(self.header.clone()),
                        agent_id: status.agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone(),
                    };
                    tokio::spawn(async move {
                        let _ = client.acknowledge(ack).await;
                    });
                }
                return Ok(Some(status));
            }
            Some(v1::event::Event::Error(e)) => bail!("master error: {}", e.message),
            _ => {}
        }
        Ok(None)
    }

    /// Kills every running task at once (no grace) and waits until all have ended.
    pub async fn kill_all(&mut self) -> anyhow::Result<()> {
        let running = std::mem::take(&mut self.running);
        let mut left = std::collections::HashSet::new();
        for (task_id, agent_id) in running {
            self.client
                .kill(v1::KillRequest {
                    header: Some(self.header.clone()),
                    task_id: task_id.clone(),
                    agent_id,
                    kill_policy: Some(v1::KillPolicy {
                        grace_period_seconds: Some(0.0),
                    }),
                })
                .await
                .context("kill")?;
            left.insert(task_id);
        }
        while !left.is_empty() {
            if let Some(status) = self.next().await?
                && strata_proto::is_terminal(status.state())
            {
                left.remove(&status.task_id);
            }
        }
        Ok(())
    }

    /// Tears the framework down (its tasks are killed), ignoring errors.
    pub async fn teardown(&mut self) {
        let _ = self
            .client
            .teardown(v1::TeardownRequest {
                header: Some(self.header.clone()),
            })
            .await;
    }
}
