//! What the DNS server answers, kept from the operator event stream: a task table (the
//! running, healthy tasks with discovery info others may see), an agent table (their
//! addresses) and the framework names, from which a [`Zone`] of names is built.
//!
//! Names (DOMAIN is `--dns-domain`, `strata` by default; every label lower-cased and
//! made DNS-safe by [`label`]):
//!
//! | name | type | answer |
//! | --- | --- | --- |
//! | `SERVICE.DOMAIN` | A / AAAA | the agents running an instance of SERVICE |
//! | `TASK.FRAMEWORK.DOMAIN` | A / AAAA | the agent of each task with that service or task name |
//! | `INSTANCE.SERVICE.DOMAIN` | A / AAAA | the agent of the one instance (INSTANCE: its task id) |
//! | `_PORT._PROTO.SERVICE.DOMAIN` | SRV | one per instance: `0 0 HOSTPORT INSTANCE.SERVICE.DOMAIN` |
//! | `_PORT._PROTO.SERVICE.FRAMEWORK.DOMAIN` | SRV | the same, for that framework's instances |
//!
//! SERVICE is the discovery info's name, else the task's name; PORT a port's name, or
//! `portN` for an unnamed port (N: its index in the discovery info's ports, as the
//! container framework names them); PROTO `tcp` or `udp`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strata_proto::discovery;
use strata_proto::v1::{self, discovery_info::Visibility, operator_event::Event};

/// One SRV record's data (priority and weight are always 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Srv {
    /// The host port.
    pub port: u16,
    /// The instance's name, without the trailing dot.
    pub target: String,
}

/// The records of one name. A name with none exists all the same (NODATA, not
/// NXDOMAIN): the domain itself, and the names between it and the records' names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub v4: BTreeSet<Ipv4Addr>,
    pub v6: BTreeSet<Ipv6Addr>,
    pub srv: BTreeSet<Srv>,
}

impl Node {
    fn add_ips(&mut self, ips: &[IpAddr]) {
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => self.v4.insert(*v4),
                IpAddr::V6(v6) => self.v6.insert(*v6),
            };
        }
    }
}

/// Where a name stands in the zone.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// It exists, with these records (maybe none).
    Found(&'a Node),
    /// Inside the domain, but no such name.
    NxDomain,
    /// Not inside the domain: not ours to answer.
    Outside,
}

/// Every name the server knows, built by [`Tables::zone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Node>,
    /// The SOA serial: one more at every change of the names served.
    pub serial: u32,
}

impl Zone {
    /// An empty zone for `domain` (lower case, no trailing dot).
    pub fn new(domain: &str) -> Zone {
        let mut names = HashMap::new();
        names.insert(domain.to_string(), Node::default());
        Zone {
            domain: domain.to_string(),
            names,
            serial: 0,
        }
    }

    /// The domain, lower case, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many names the zone has (the domain included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone has only its domain.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 1
    }

    /// Looks `name` up (any case, with or without the trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let inside = name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'));
        if !inside {
            return Lookup::Outside;
        }
        match self.names.get(&name) {
            Some(node) => Lookup::Found(node),
            None => Lookup::NxDomain,
        }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        // The names between the record's name and the domain exist too (RFC 8020).
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.len() <= self.domain.len() {
                break;
            }
            self.names.entry(parent.to_string()).or_default();
            rest = parent;
        }
        self.names.entry(name.to_string()).or_default()
    }
}

/// An agent as the DNS server needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentEntry {
    /// The host part of its address (else its hostname): what is resolved.
    pub host: String,
    /// Its addresses: `host` when it is one, else what `host` resolved to.
    pub ips: Vec<IpAddr>,
}

/// An agent whose host name must be resolved: [`Tables::resolved`] takes the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    pub agent_id: String,
    pub host: String,
}

/// The agents, frameworks and published tasks, as of the last event applied.
#[derive(Debug, Default)]
pub struct Tables {
    agents: HashMap<String, AgentEntry>,
    frameworks: HashMap<String, String>,
    /// By (framework id, task id): only the tasks [`published`] keeps.
    tasks: HashMap<(String, String), v1::TaskEntry>,
}

impl Tables {
    /// Applies one event of the stream (a snapshot replaces everything); returns the
    /// agents whose host name must now be resolved.
    pub fn apply(&mut self, event: &Event) -> Vec<Resolve> {
        match event {
            Event::Snapshot(state) => {
                *self = Tables::default();
                let mut resolve = Vec::new();
                for agent in &state.agents {
                    resolve.extend(self.agent(agent));
                }
                for framework in &state.frameworks {
                    self.framework(framework);
                }
                for task in &state.tasks {
                    self.task(task);
                }
                resolve
            }
            Event::TaskAdded(task) | Event::TaskUpdated(task) => {
                self.task(task);
                Vec::new()
            }
            Event::AgentAdded(agent) | Event::AgentUpdated(agent) => {
                self.agent(agent).into_iter().collect()
            }
            Event::AgentRemoved(id) => {
                // Marked gone: its tasks are gone with it.
                self.agents.remove(id);
                self.tasks.retain(|_, task| &task.agent_id != id);
                Vec::new()
            }
            Event::FrameworkAdded(framework) | Event::FrameworkUpdated(framework) => {
                self.framework(framework);
                Vec::new()
            }
            Event::FrameworkRemoved(id) => {
                self.frameworks.remove(id);
                self.tasks.retain(|(framework, _), _| framework != id);
                Vec::new()
            }
            Event::Heartbeat(_) => Vec::new(),
        }
    }

    /// Takes what `host` of `agent_id` resolved to (ignored when the agent has moved
    /// to another host meanwhile or is gone). Returns whether anything changed.
    pub fn resolved(&mut self, agent_id: &str, host: &str, ips: Vec<IpAddr>) -> bool {
        match self.agents.get_mut(agent_id) {
            Some(agent) if agent.host == host && agent.ips != ips => {
                agent.ips = ips;
                true
            }
            _ => false,
        }
    }

    /// How many tasks are published.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    fn task(&mut self, task: &v1::TaskEntry) {
        let key = (task.framework_id.clone(), task.task_id.clone());
        if published(task) {
            self.tasks.insert(key, task.clone());
        } else {
            self.tasks.remove(&key);
        }
    }

    fn framework(&mut self, framework: &v1::FrameworkState) {
        if let Some(info) = &framework.info {
            self.frameworks.insert(info.id.clone(), info.name.clone());
        }
    }

    /// Keeps the agent; the host to resolve when it is a name not resolved yet.
    fn agent(&mut self, agent: &v1::AgentState) -> Option<Resolve> {
        let info = agent.info.as_ref()?;
        if agent.status == "GONE" {
            self.agents.remove(&info.id);
            return None;
        }
        let host = agent_host(info);
        // Known, and resolved (a name that did not resolve is tried again).
        if let Some(known) = self.agents.get(&info.id)
            && known.host == host
            && !known.ips.is_empty()
        {
            return None;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                self.agents.insert(
                    info.id.clone(),
                    AgentEntry {
                        host,
                        ips: vec![ip],
                    },
                );
                None
            }
            Err(_) => {
                self.agents.insert(
                    info.id.clone(),
                    AgentEntry {
                        host: host.clone(),
                        ips: Vec::new(),
                    },
                );
                (!host.is_empty()).then(|| Resolve {
                    agent_id: info.id.clone(),
                    host,
                })
            }
        }
    }

    /// The names of every published task, under `domain` (lower case, no trailing
    /// dot).
    pub fn zone(&self, domain: &str) -> Zone {
        let mut zone = Zone::new(domain);
        // Sorted, so that two builds of the same tables are the same zone.
        let mut tasks: Vec<&v1::TaskEntry> = self.tasks.values().collect();
        tasks.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
        for task in tasks {
            let Some(info) = &task.discovery else {
                continue;
            };
            let Some(service) = label(service_name(task)) else {
                continue;
            };
            let Some(instance) = label(&task.task_id) else {
                continue;
            };
            let ips: &[IpAddr] = self
                .agents
                .get(&task.agent_id)
                .map(|a| a.ips.as_slice())
                .unwrap_or_default();
            let service_fqdn = format!("{service}.{domain}");
            let instance_fqdn = format!("{instance}.{service_fqdn}");
            zone.node(&service_fqdn).add_ips(ips);
            zone.node(&instance_fqdn).add_ips(ips);
            let framework = self
                .frameworks
                .get(&task.framework_id)
                .and_then(|name| label(name));
            if let Some(framework) = &framework {
                zone.node(&format!("{service}.{framework}.{domain}"))
                    .add_ips(ips);
                if let Some(name) = label(&task.name)
                    && name != service
                {
                    zone.node(&format!("{name}.{framework}.{domain}"))
                        .add_ips(ips);
                }
            }
            for (i, port) in discovery::ports(info).iter().enumerate() {
                if discovery::port_visibility(info, port) == Visibility::Framework {
                    continue;
                }
                let Ok(number) = u16::try_from(port.number) else {
                    continue;
                };
                let name = if port.name.is_empty() {
                    Some(format!("port{i}"))
                } else {
                    label(&port.name)
                };
                let (Some(name), Some(protocol)) = (name, label(discovery::protocol(port))) else {
                    continue;
                };
                if number == 0 {
                    continue;
                }
                let srv = Srv {
                    port: number,
                    target: instance_fqdn.clone(),
                };
                zone.node(&format!("_{name}._{protocol}.{service_fqdn}"))
                    .srv
                    .insert(srv.clone());
                if let Some(framework) = &framework {
                    zone.node(&format!(
                        "_{name}._{protocol}.{service}.{framework}.{domain}"
                    ))
                    .srv
                    .insert(srv);
                }
            }
        }
        zone
    }
}

/// Whether the DNS server publishes `task`: it runs (TASK_RUNNING), has discovery info
/// others may see (visibility CLUSTER, EXTERNAL or unset), and is not known to be
/// unhealthy.
pub fn published(task: &v1::TaskEntry) -> bool {
    let running = task.state == v1::TaskState::TaskRunning as i32;
    let visible = task
        .discovery
        .as_ref()
        .is_some_and(|d| discovery::visibility(d) != Visibility::Framework);
    let unhealthy = task
        .last_status
        .as_ref()
        .is_some_and(|s| s.healthy == Some(false));
    running && visible && !unhealthy
}

/// The service of a task: its discovery name, else its name.
fn service_name(task: &v1::TaskEntry) -> &str {
    match &task.discovery {
        Some(d) if !d.name.is_empty() => &d.name,
        _ => &task.name,
    }
}

/// The host an agent is reached at: the host part of its address, else its hostname.
fn agent_host(info: &v1::AgentInfo) -> String {
    let host = match info.address.rsplit_once(':') {
        // [v6]:port
        Some((host, _)) if host.starts_with('[') && host.ends_with(']') => &host[1..host.len() - 1],
        // A bare IPv6 address has more than one ':'.
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => info.address.as_str(),
    };
    let host = if host.is_empty() {
        info.hostname.as_str()
    } else {
        host
    };
    host.to_string()
}

/// `s` as one DNS label: lower case, every character but `a-z`, `0-9` and `-`
/// replaced by `-` (runs of them by one), no `-` at either end, at most 63 bytes.
/// `None` when nothing is left.
pub fn label(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len().min(63));
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
        if out.len() == 63 {
            break;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// Whether `domain` can be the DNS domain: dot-separated DNS labels (lower-case
/// letters, digits and '-', not at either end of a label), at most 200 bytes, no
/// trailing dot.
pub fn is_domain(domain: &str) -> bool {
    !domain.is_empty() && domain.len() <= 200 && domain.split('.').all(discovery::is_port_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, address: &str) -> v1::AgentState {
        v1::AgentState {
            info: Some(v1::AgentInfo {
                id: id.into(),
                hostname: "host".into(),
                address: address.into(),
                ..Default::default()
            }),
            status: "ACTIVE".into(),
            ..Default::default()
        }
    }

    fn framework(id: &str, name: &str) -> v1::FrameworkState {
        v1::FrameworkState {
            info: Some(v1::FrameworkInfo {
                id: id.into(),
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(number: u32, name: &str) -> v1::Port {
        v1::Port {
            number,
            name: name.into(),
            protocol: "tcp".into(),
            ..Default::default()
        }
    }

    fn task(id: &str, agent: &str, service: &str, ports: Vec<v1::Port>) -> v1::TaskEntry {
        v1::TaskEntry {
            task_id: id.into(),
            framework_id: "f1".into(),
            agent_id: agent.into(),
            name: format!("{service}-task"),
            state: v1::TaskState::TaskRunning as i32,
            last_status: Some(v1::TaskStatus::default()),
            discovery: Some(v1::DiscoveryInfo {
                name: service.into(),
                ports: Some(v1::Ports { ports }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ips(zone: &Zone, name: &str) -> Vec<String> {
        match zone.lookup(name) {
            Lookup::Found(node) => node
                .v4
                .iter()
                .map(ToString::to_string)
                .chain(node.v6.iter().map(ToString::to_string))
                .collect(),
            other => panic!("{name}: {other:?}"),
        }
    }

    fn srv(zone: &Zone, name: &str) -> Vec<(u16, String)> {
        match zone.lookup(name) {
            Lookup::Found(node) => node
                .srv
                .iter()
                .map(|s| (s.port, s.target.clone()))
                .collect(),
            other => panic!("{name}: {other:?}"),
        }
    }

    fn cluster() -> Tables {
        let mut t = Tables::default();
        let state = v1::GetStateResponse {
            agents: vec![agent("a1", "10.0.0.1:5051"), agent("a2", "[fd00::2]:5051")],
            frameworks: vec![framework("f1", "Strata Apps")],
            tasks: vec![
                task(
                    "web.1",
                    "a1",
                    "Web",
                    vec![port(31000, "http"), port(31001, "")],
                ),
                task(
                    "web.2",
                    "a2",
                    "Web",
                    vec![port(31005, "http"), port(31006, "")],
                ),
            ],
            ..Default::default()
        };
        assert!(t.apply(&Event::Snapshot(state)).is_empty());
        t
    }

    #[test]
    fn services_tasks_and_ports_have_their_names() {
        let zone = cluster().zone("strata");
        assert_eq!(ips(&zone, "web.strata"), ["10.0.0.1", "fd00::2"]);
        assert_eq!(ips(&zone, "WEB.Strata."), ["10.0.0.1", "fd00::2"]);
        assert_eq!(ips(&zone, "web-1.web.strata"), ["10.0.0.1"]);
        assert_eq!(
            ips(&zone, "web.strata-apps.strata"),
            ["10.0.0.1", "fd00::2"]
        );
        assert_eq!(
            ips(&zone, "web-task.strata-apps.strata"),
            ["10.0.0.1", "fd00::2"]
        );
        let want = vec![
            (31000, "web-1.web.strata".to_string()),
            (31005, "web-2.web.strata".to_string()),
        ];
        assert_eq!(srv(&zone, "_http._tcp.web.strata"), want);
        assert_eq!(srv(&zone, "_http._tcp.web.strata-apps.strata"), want);
        assert_eq!(
            srv(&zone, "_port1._tcp.web.strata"),
            [
                (31001, "web-1.web.strata".to_string()),
                (31006, "web-2.web.strata".to_string())
            ]
        );
        // The names in between exist, with no records; others do not.
        assert_eq!(ips(&zone, "_tcp.web.strata"), Vec::<String>::new());
        assert_eq!(ips(&zone, "strata"), Vec::<String>::new());
        assert_eq!(zone.lookup("nope.strata"), Lookup::NxDomain);
        assert_eq!(zone.lookup("_udp.web.strata"), Lookup::NxDomain);
        assert_eq!(zone.lookup("web.example.com"), Lookup::Outside);
        assert_eq!(zone.lookup("xstrata"), Lookup::Outside);
        assert_eq!(zone.lookup("."), Lookup::Outside);
    }

    #[test]
    fn only_running_healthy_visible_tasks_are_published() {
        let mut t = cluster();
        let mut killed = task("web.1", "a1", "web", vec![port(31000, "http")]);
        killed.state = v1::TaskState::TaskKilling as i32;
        t.apply(&Event::TaskUpdated(killed));
        let zone = t.zone("strata");
        assert_eq!(ips(&zone, "web.strata"), ["fd00::2"]);
        assert_eq!(zone.lookup("web-1.web.strata"), Lookup::NxDomain);

        let mut sick = task("web.2", "a2", "web", vec![port(31005, "http")]);
        sick.last_status.as_mut().unwrap().healthy = Some(false);
        t.apply(&Event::TaskUpdated(sick.clone()));
        assert_eq!(t.zone("strata").lookup("web.strata"), Lookup::NxDomain);
        sick.last_status.as_mut().unwrap().healthy = Some(true);
        t.apply(&Event::TaskUpdated(sick));
        assert_eq!(ips(&t.zone("strata"), "web.strata"), ["fd00::2"]);

        let mut private = task("db.1", "a1", "db", vec![port(5432, "pg")]);
        private.discovery.as_mut().unwrap().visibility = Visibility::Framework as i32;
        t.apply(&Event::TaskAdded(private));
        let mut hidden_port = task("db.2", "a1", "db2", vec![port(5432, "pg")]);
        hidden_port
            .discovery
            .as_mut()
            .unwrap()
            .ports
            .as_mut()
            .unwrap()
            .ports[0]
            .visibility = Visibility::Framework as i32;
        t.apply(&Event::TaskAdded(hidden_port));
        let mut no_info = task("x.1", "a1", "x", vec![]);
        no_info.discovery = None;
        t.apply(&Event::TaskAdded(no_info));
        let zone = t.zone("strata");
        assert_eq!(zone.lookup("db.strata"), Lookup::NxDomain);
        assert_eq!(ips(&zone, "db2.strata"), ["10.0.0.1"]);
        assert_eq!(zone.lookup("_pg._tcp.db2.strata"), Lookup::NxDomain);
        assert_eq!(zone.lookup("x.strata"), Lookup::NxDomain);

        // A framework removed takes its tasks along.
        t.apply(&Event::FrameworkRemoved("f1".into()));
        assert!(t.zone("strata").is_empty());
    }

    #[test]
    fn agents_by_name_are_resolved_and_removed_agents_take_their_tasks_along() {
        let mut t = Tables::default();
        let asks = t.apply(&Event::AgentAdded(agent("a1", "node1.example:5051")));
        assert_eq!(
            asks,
            [Resolve {
                agent_id: "a1".into(),
                host: "node1.example".into()
            }]
        );
        t.apply(&Event::TaskAdded(task("w1", "a1", "web", vec![])));
        assert_eq!(ips(&t.zone("strata"), "web.strata"), Vec::<String>::new());
        assert!(t.resolved("a1", "node1.example", vec!["10.1.1.1".parse().unwrap()]));
        assert!(!t.resolved("a1", "other", vec!["10.9.9.9".parse().unwrap()]));
        assert_eq!(ips(&t.zone("strata"), "web.strata"), ["10.1.1.1"]);
        // The same host again: nothing to resolve.
        assert!(
            t.apply(&Event::AgentUpdated(agent("a1", "node1.example:5051")))
                .is_empty()
        );
        t.apply(&Event::AgentRemoved("a1".into()));
        assert!(t.zone("strata").is_empty());
    }

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(label("Web").as_deref(), Some("web"));
        assert_eq!(label("/group/my_app").as_deref(), Some("group-my-app"));
        assert_eq!(label("a..b--c").as_deref(), Some("a-b-c"));
        assert_eq!(label("--x--").as_deref(), Some("x"));
        assert_eq!(label("ünï").as_deref(), Some("n"));
        assert_eq!(label("__"), None);
        assert_eq!(label(&"a".repeat(100)).unwrap().len(), 63);
        assert!(is_domain("strata"));
        assert!(is_domain("svc.cluster-1.example"));
        assert!(is_domain("xn--bcher-kva.example"));
        for bad in [
            "", "Strata", "a..b", ".strata", "strata.", "-a", "a_b", "a b",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }

    #[test]
    fn agent_hosts_come_from_the_address() {
        let info = |address: &str| v1::AgentInfo {
            hostname: "h".into(),
            address: address.into(),
            ..Default::default()
        };
        assert_eq!(agent_host(&info("10.0.0.1:5051")), "10.0.0.1");
        assert_eq!(agent_host(&info("[::1]:5051")), "::1");
        assert_eq!(agent_host(&info("fd00::1")), "fd00::1");
        assert_eq!(agent_host(&info("node:5051")), "node");
        assert_eq!(agent_host(&info("")), "h");
    }
}
