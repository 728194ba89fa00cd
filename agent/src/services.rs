//! The cluster's services as this agent's service proxy needs them: the agent follows
//! the master's operator event stream (`Operator.Subscribe`, with its own certificate,
//! which the master answers with agents and discoverable tasks only), keeps the
//! instances that publish a service port (a discovery port labelled
//! [`SERVICE_PORT_LABEL`]) and the agents' addresses, and hands the proxy the whole
//! table whenever it changes.
//!
//! ```text
//! master ─Subscribe (snapshot, then events; resumed after a drop)─▶ Table
//!   ─ running, not unhealthy, agent known ─▶ Service{port, protocol, backends} ─▶ ServiceProxy::update
//! ```
//!
//! An instance leaves the rotation as soon as an event says it is no longer running
//! (TASK_KILLING, unreachable, ended), unhealthy, or its agent is gone. After each
//! batch of events the follower acknowledges the last one it applied
//! (`Operator.AckEvents`): the master holds the kill of a service instance until
//! every proxy has taken it out of rotation (bounded), so no connection reaches an
//! instance that is going away.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use strata_proto::discovery::SERVICE_PORT_LABEL;
use strata_proto::states::state_from_i32;
use strata_proto::v1::{self, operator_event::Event};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::proxy::{Backend, Protocol, Service, ServiceProxy};

/// How long the follower waits before it resumes a dropped stream.
const RESUME_AFTER: Duration = Duration::from_secs(1);
/// The longest an acknowledgement waits for the connections to instances that left
/// the rotation to finish (the master goes on after its own bound anyway).
const ACK_DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How often the acknowledger looks at the draining connections.
const DRAIN_POLL: Duration = Duration::from_millis(5);

type Operator = v1::operator_client::OperatorClient<tonic::transport::Channel>;

/// What the proxy applied last: where to acknowledge it, and the event.
type Applied = Option<(Operator, String, u64)>;

/// One published port of a running instance.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    service_port: u16,
    protocol: Protocol,
    host_port: u16,
}

/// What the follower knows of one task.
#[derive(Debug, Clone)]
struct Instance {
    service: String,
    agent_id: String,
    in_rotation: bool,
    ports: Vec<Published>,
}

/// The tasks that publish service ports and the agents' addresses.
#[derive(Debug, Default)]
pub(crate) struct Table {
    instances: HashMap<(String, String), Instance>,
    agents: HashMap<String, IpAddr>,
}

impl Table {
    fn reset(&mut self, state: &v1::GetStateResponse) {
        self.instances.clear();
        self.agents.clear();
        for agent in &state.agents {
            self.agent(agent);
        }
        for task in &state.tasks {
            self.task(task);
        }
    }

    fn agent(&mut self, agent: &v1::AgentState) {
        let Some(info) = &agent.info else {
            return;
        };
        let usable = matches!(agent.status.as_str(), "ACTIVE" | "DISCONNECTED");
        match (usable, address_ip(&info.address)) {
            (true, Some(ip)) => {
                self.agents.insert(info.id.clone(), ip);
            }
            _ => {
                self.agents.remove(&info.id);
            }
        }
    }

    fn task(&mut self, task: &v1::TaskEntry) {
        let key = (task.framework_id.clone(), task.task_id.clone());
        let Some(discovery) = &task.discovery else {
            self.instances.remove(&key);
            return;
        };
        let ports: Vec<Published> = strata_proto::discovery::ports(discovery)
            .iter()
            .filter_map(|p| {
                let service_port = p.labels.get(SERVICE_PORT_LABEL)?.parse::<u16>().ok()?;
                let host_port = u16::try_from(p.number).ok()?;
                let protocol = match strata_proto::discovery::protocol(p) {
                    "udp" => Protocol::Udp,
                    _ => Protocol::Tcp,
                };
                (service_port != 0 && host_port != 0).then_some(Published {
                    service_port,
                    protocol,
                    host_port,
                })
            })
            .collect();
        let running = task.state == v1::TaskState::TaskRunning as i32;
        // With a health check, only once it passed; without, unless it says otherwise.
        let health = task.last_status.as_ref().and_then(|s| s.healthy);
        let healthy = if task.health_checked {
            health == Some(true)
        } else {
            health != Some(false)
        };
        if ports.is_empty() || strata_proto::is_terminal(state_from_i32(task.state)) {
            self.instances.remove(&key);
            return;
        }
        self.instances.insert(
            key,
            Instance {
                service: if discovery.name.is_empty() {
                    task.name.clone()
                } else {
                    discovery.name.clone()
                },
                agent_id: task.agent_id.clone(),
                in_rotation: running && healthy,
                ports,
            },
        );
    }

    /// Applies one event; whether the table may have changed.
    fn apply(&mut self, event: &v1::OperatorEvent) -> bool {
        match &event.event {
            Some(Event::Snapshot(state)) => self.reset(state),
            Some(Event::TaskAdded(t)) | Some(Event::TaskUpdated(t)) => self.task(t),
            Some(Event::AgentAdded(a)) | Some(Event::AgentUpdated(a)) => self.agent(a),
            Some(Event::AgentRemoved(id)) => {
                self.agents.remove(id);
            }
            _ => return false,
        }
        true
    }

    /// The proxy's table: each service port with the instances in rotation.
    pub(crate) fn services(&self) -> Vec<Service> {
        let mut by_port: BTreeMap<(u16, bool), Service> = BTreeMap::new();
        let mut keys: Vec<_> = self.instances.keys().collect();
        keys.sort();
        for key in keys {
            let instance = &self.instances[key];
            for p in &instance.ports {
                let service = by_port
                    .entry((p.service_port, matches!(p.protocol, Protocol::Udp)))
                    .or_insert_with(|| Service {
                        port: p.service_port,
                        protocol: p.protocol,
                        name: instance.service.clone(),
                        backends: Vec::new(),
                    });
                if !instance.in_rotation {
                    continue;
                }
                if let Some(ip) = self.agents.get(&instance.agent_id) {
                    service.backends.push(Backend {
                        addr: SocketAddr::new(*ip, p.host_port),
                        task_id: key.1.clone(),
                    });
                }
            }
        }
        by_port.into_values().collect()
    }
}

/// The IP of an agent's `host:port` address (names are not resolved: an agent's
/// address is what its peers dial, normally an IP).
fn address_ip(address: &str) -> Option<IpAddr> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    host.parse().ok()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Acknowledges the latest applied event, once the proxy has no connection left to
/// an instance that left the rotation (or [`ACK_DRAIN_WAIT`] passed).
async fn acknowledge(mut applied: watch::Receiver<Applied>, proxy: ServiceProxy, proxy_id: String) {
    let mut acked: Option<(String, u64)> = None;
    while applied.changed().await.is_ok() {
        let Some((mut client, master_id, seq)) = applied.borrow_and_update().clone() else {
            continue;
        };
        if acked.as_ref() == Some(&(master_id.clone(), seq)) {
            continue;
        }
        let deadline = tokio::time::Instant::now() + ACK_DRAIN_WAIT;
        while proxy.draining() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let ack = v1::OperatorAckRequest {
            master_id: master_id.clone(),
            seq,
            proxy: proxy_id.clone(),
        };
        match client.ack_events(ack).await {
            Ok(_) => acked = Some((master_id, seq)),
            Err(e) => tracing::debug!(error = %e, "cannot acknowledge the services events"),
        }
    }
}

/// Resolves when the master's endpoint changes (a renewed certificate); never when
/// it cannot change (an insecure agent drops the sender at once).
async fn endpoint_changed(endpoint: &mut watch::Receiver<Endpoint>) {
    if endpoint.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Follows the master's event stream and keeps `proxy`'s table current, until the
/// task is aborted.
pub(crate) async fn follow(mut endpoint: watch::Receiver<Endpoint>, proxy: ServiceProxy) {
    let mut table = Table::default();
    let mut resume: Option<(String, u64)> = None;
    // Who this proxy is to the master (an insecure master knows agents by nothing else).
    let proxy_id = uuid::Uuid::new_v4().to_string();
    let (applied_tx, applied_rx) = watch::channel::<Applied>(None);
    let acker = tokio::spawn(acknowledge(applied_rx, proxy.clone(), proxy_id.clone()));
    let _stop_acker = AbortOnDrop(acker);
    loop {
        let current = endpoint.borrow_and_update().clone();
        let channel = current.connect().await;
        let mut client = None;
        let stream = match channel {
            Ok(channel) => {
                let request = v1::OperatorSubscribeRequest {
                    resume_master_id: resume.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
                    resume_after: resume.as_ref().map(|r| r.1),
                    proxy: proxy_id.clone(),
                };
                let mut operator = Operator::new(channel)
                    .max_decoding_message_size(strata_proto::limits::MAX_OPERATOR_ANSWER_BYTES);
                let stream = operator.subscribe(request).await;
                client = Some(operator);
                stream
            }
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) => {
                tracing::debug!(error = %status, "cannot follow the services yet");
                tokio::select! {
                    () = tokio::time::sleep(RESUME_AFTER) => {}
                    () = endpoint_changed(&mut endpoint) => {}
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                () = endpoint_changed(&mut endpoint) => break,
            };
            match next {
                Ok(Some(event)) => {
                    resume = Some((event.master_id.clone(), event.seq));
                    let mut changed = table.apply(&event);
                    // Take what else has arrived before rebuilding the table.
                    while let Some(Ok(Some(more))) =
                        futures::FutureExt::now_or_never(stream.message())
                    {
                        resume = Some((more.master_id.clone(), more.seq));
                        changed |= table.apply(&more);
                    }
                    if changed {
                        proxy.update(table.services());
                    }
                    // Tell the master the proxy has it (once the connections to the
                    // instances that left have finished): kills held for the proxies
                    // go on once every proxy has said so.
                    if let (Some(client), Some((master_id, seq))) = (client.as_ref(), &resume) {
                        applied_tx.send_replace(Some((client.clone(), master_id.clone(), *seq)));
                    }
                }
                Ok(None) => {
                    tracing::debug!("the services stream ended (closed); resuming");
                    break;
                }
                Err(status) => {
                    tracing::debug!(error = %status, "the services stream ended; resuming");
                    break;
                }
            }
        }
        tokio::time::sleep(RESUME_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, agent: &str, state: v1::TaskState, healthy: Option<bool>) -> v1::TaskEntry {
        let mut labels = std::collections::HashMap::new();
        labels.insert(SERVICE_PORT_LABEL.to_string(), "10001".to_string());
        v1::TaskEntry {
            task_id: id.into(),
            framework_id: "f".into(),
            agent_id: agent.into(),
            name: id.into(),
            state: state as i32,
            last_status: Some(v1::TaskStatus {
                healthy,
                ..Default::default()
            }),
            discovery: Some(v1::DiscoveryInfo {
                name: "web".into(),
                ports: Some(v1::Ports {
                    ports: vec![v1::Port {
                        number: 31000,
                        name: "http".into(),
                        labels,
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn agent(id: &str, address: &str, status: &str) -> v1::AgentState {
        v1::AgentState {
            info: Some(v1::AgentInfo {
                id: id.into(),
                address: address.into(),
                ..Default::default()
            }),
            status: status.into(),
            ..Default::default()
        }
    }

    fn event(event: Event) -> v1::OperatorEvent {
        v1::OperatorEvent {
            seq: 1,
            master_id: "m".into(),
            event: Some(event),
        }
    }

    fn backends(table: &Table) -> Vec<String> {
        table
            .services()
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| format!("{}={}", s.port, b.addr)))
            .collect()
    }

    #[test]
    fn only_running_healthy_instances_on_known_agents_are_in_rotation() {
        let mut t = Table::default();
        t.apply(&event(Event::Snapshot(v1::GetStateResponse {
            agents: vec![
                agent("a1", "10.0.0.1:5051", "ACTIVE"),
                agent("a2", "10.0.0.2:5051", "ACTIVE"),
            ],
            tasks: vec![
                task("t1", "a1", v1::TaskState::TaskRunning, None),
                task("t2", "a2", v1::TaskState::TaskStaging, None),
            ],
            ..Default::default()
        })));
        assert_eq!(backends(&t), ["10001=10.0.0.1:31000"]);
        t.apply(&event(Event::TaskUpdated(task(
            "t2",
            "a2",
            v1::TaskState::TaskRunning,
            Some(true),
        ))));
        assert_eq!(
            backends(&t),
            ["10001=10.0.0.1:31000", "10001=10.0.0.2:31000"]
        );
        // Killing, unhealthy, ended, agent gone: out of rotation at once.
        t.apply(&event(Event::TaskUpdated(task(
            "t1",
            "a1",
            v1::TaskState::TaskKilling,
            None,
        ))));
        assert_eq!(backends(&t), ["10001=10.0.0.2:31000"]);
        t.apply(&event(Event::TaskUpdated(task(
            "t2",
            "a2",
            v1::TaskState::TaskRunning,
            Some(false),
        ))));
        assert!(backends(&t).is_empty());
        // The port stays in the table (its listener keeps going) while instances exist.
        assert_eq!(t.services().len(), 1);
        t.apply(&event(Event::TaskUpdated(task(
            "t2",
            "a2",
            v1::TaskState::TaskRunning,
            Some(true),
        ))));
        t.apply(&event(Event::AgentRemoved("a2".into())));
        assert!(backends(&t).is_empty());
        t.apply(&event(Event::TaskUpdated(task(
            "t1",
            "a1",
            v1::TaskState::TaskKilled,
            None,
        ))));
        t.apply(&event(Event::TaskUpdated(task(
            "t2",
            "a2",
            v1::TaskState::TaskLost,
            None,
        ))));
        assert!(t.services().is_empty());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address_ip("10.0.0.1:5051"),
            Some(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(address_ip("[::1]:5051"), Some("::1".parse().unwrap()));
        assert_eq!(
            address_ip("localhost:5051"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(address_ip("some.host:5051"), None);
    }
}
