//! Resource usage of the running tasks: served at `GET /monitor/statistics` and sent
//! to the master every `--usage-report-interval` (a `UsageReport`).
//!
//! ```text
//! reporter (every 5 s) / HTTP handler ─ Query::Containers ─▶ AgentLoop ─▶ (task, container)s
//!       └─ Containerizer::usage(container) for each (cgroup files, off the loop)
//!       └─ reporter: Query::ReportUsage ─▶ AgentLoop (adds each persistent volume's
//!          usage, its last measurement) ─▶ master (if connected)
//! ```
//!
//! Neither the loop nor a lock waits on the cgroup reads; a container whose
//! containerizer cannot tell (no cgroups, fake, ended meanwhile) is left out, unless
//! disk isolation has measured its task ([`crate::disk`]): then its entry holds the
//! disk figures only. `disk_used_bytes` is the last measurement (every
//! `--container-disk-watch-interval`), `disk_limit_bytes` the task's `disk`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use strata_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{Query, RunningContainer};
use crate::containerizer::{Containerizer, ResourceUsage};

/// One entry of `/monitor/statistics` (Mesos' shape: the executor is the task).
#[derive(Debug, Clone, Serialize)]
pub struct MonitorEntry {
    pub framework_id: String,
    pub executor_id: String,
    pub task_id: String,
    pub container_id: String,
    pub statistics: Statistics,
}

/// Mesos' `ResourceStatistics` names; see `ResourceStatistics` in common.proto.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Statistics {
    pub timestamp: f64,
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub cpus_user_time_secs: Option<f64>,
    pub cpus_system_time_secs: Option<f64>,
    pub cpus_total_time_secs: Option<f64>,
    pub cpus_limit: Option<f64>,
    pub cpus_nr_periods: Option<u64>,
    pub cpus_nr_throttled: Option<u64>,
    pub cpus_throttled_time_secs: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_peak_bytes: Option<u64>,
    pub mem_limit_bytes: Option<u64>,
    /// Disk the task uses and its limit (disk isolation, issue 17).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_limit_bytes: Option<u64>,
}

impl Statistics {
    pub fn new(u: &ResourceUsage, timestamp: f64) -> Statistics {
        Statistics {
            timestamp,
            processes: u.processes,
            threads: u.threads,
            cpus_user_time_secs: u.cpu_user_seconds,
            cpus_system_time_secs: u.cpu_system_seconds,
            cpus_total_time_secs: u.cpu_time_seconds,
            cpus_limit: u.cpus_limit,
            cpus_nr_periods: u.cpus_nr_periods,
            cpus_nr_throttled: u.cpus_nr_throttled,
            cpus_throttled_time_secs: u.cpus_throttled_seconds,
            mem_total_bytes: u.mem_bytes,
            mem_peak_bytes: u.mem_peak_bytes,
            mem_limit_bytes: u.mem_limit_bytes,
            disk_used_bytes: None,
            disk_limit_bytes: None,
        }
    }

    pub fn to_proto(&self) -> v1::ResourceStatistics {
        v1::ResourceStatistics {
            timestamp: self.timestamp,
            processes: self.processes,
            threads: self.threads,
            cpus_user_time_secs: self.cpus_user_time_secs,
            cpus_system_time_secs: self.cpus_system_time_secs,
            cpus_total_time_secs: self.cpus_total_time_secs,
            cpus_limit: self.cpus_limit,
            cpus_nr_periods: self.cpus_nr_periods,
            cpus_nr_throttled: self.cpus_nr_throttled,
            cpus_throttled_time_secs: self.cpus_throttled_time_secs,
            mem_total_bytes: self.mem_total_bytes,
            mem_peak_bytes: self.mem_peak_bytes,
            mem_limit_bytes: self.mem_limit_bytes,
            disk_used_bytes: self.disk_used_bytes,
            disk_limit_bytes: self.disk_limit_bytes,
        }
    }
}

/// The usage of every running task whose containerizer can tell; `None` when the
/// agent loop is gone (shutting down).
pub(crate) async fn collect(
    queries: &mpsc::Sender<Query>,
    containerizer: &dyn Containerizer,
) -> Option<Vec<MonitorEntry>> {
    let (tx, rx) = oneshot::channel();
    queries.send(Query::Containers(tx)).await.ok()?;
    let containers = rx.await.ok()?;
    let mut out = Vec::with_capacity(containers.len());
    for RunningContainer {
        key,
        container,
        disk,
    } in containers
    {
        let now = strata_proto::now_unix_seconds();
        // A container the containerizer cannot tell about still has its disk.
        let mut statistics = match (containerizer.usage(container.clone()).await, disk) {
            (Ok(usage), _) => Statistics::new(&usage, now),
            (Err(_), Some(_)) => Statistics {
                timestamp: now,
                ..Default::default()
            },
            (Err(_), None) => continue,
        };
        if let Some((used, limit)) = disk {
            statistics.disk_used_bytes = Some(used);
            statistics.disk_limit_bytes = limit;
        }
        out.push(MonitorEntry {
            framework_id: key.framework_id,
            executor_id: key.task_id.clone(),
            task_id: key.task_id,
            container_id: container.0,
            statistics,
        });
    }
    Some(out)
}

/// Sends a `UsageReport` every `interval` until `stop` resolves or the loop is gone.
pub(crate) async fn report(
    queries: mpsc::Sender<Query>,
    containerizer: Arc<dyn Containerizer>,
    interval: Duration,
    stop: oneshot::Receiver<()>,
) {
    let interval = interval.max(Duration::from_millis(100));
    let mut stop = std::pin::pin!(stop);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let Some(entries) = collect(&queries, containerizer.as_ref()).await else {
            return;
        };
        // Sent even without tasks: the loop adds the persistent volumes' usage, and
        // drops a report that is empty after all.
        let report = v1::UsageReport {
            tasks: entries
                .into_iter()
                .map(|e| v1::TaskUsage {
                    framework_id: e.framework_id,
                    task_id: e.task_id,
                    statistics: Some(e.statistics.to_proto()),
                })
                .collect(),
            volumes: Vec::new(),
        };
        if queries.send(Query::ReportUsage(report)).await.is_err() {
            return;
        }
    }
}
