//! The service proxy's data plane (issue 15): listens on every service port of the
//! cluster and forwards TCP connections and UDP datagrams to the app's instances.
//!
//! ```text
//!   client ──▶ agent:SERVICE_PORT ──▶ ServiceProxy ──▶ instance host:port (any agent)
//!                (tcp.rs: accept, pick, connect, copy both ways)
//!                (udp.rs: one flow per client address, replies back to it)
//! ```
//!
//! The control plane (the master's event stream) is not here: its owner calls
//! [`ServiceProxy::update`] with the whole desired table whenever it changes, shows
//! [`ServiceProxy::status`] in `/state`, and calls [`ServiceProxy::shutdown`] when the
//! agent stops.
//!
//! # Balancing
//!
//! Least outstanding connections (UDP: flows), ties broken at random; a backend whose
//! connect failed in the last 2 s is skipped while another is available (see
//! `balance.rs`). A TCP connect has [`ProxyConfig::connect_timeout`];
//! when it fails the proxy tries one other backend, then gives up.
//!
//! # What a client sees
//!
//! - A connection the proxy cannot serve (no backend, every backend tried failed, the
//!   port's [`ProxyConfig::max_connections_per_port`] reached) is accepted and then
//!   closed at once with a **RST** (SO_LINGER 0): the client gets "connection reset"
//!   rather than an empty answer it could take for a complete one.
//! - Half-close is forwarded: when one side shuts its writing down, the other side gets
//!   EOF and the opposite direction keeps flowing (`copy_bidirectional`).
//! - An I/O error on either side (e.g. a reset) resets the other side too.
//!
//! # Table changes
//!
//! [`ServiceProxy::update`] takes effect before it returns: a new connection or flow
//! never goes to a backend that is not in the last table. Connections already open
//! to a removed backend keep going until either side closes them (the kill grace
//! period bounds that: the instance is killed after it). A port removed from the
//! table stops listening (within moments: its listener task closes the socket); its
//! open TCP connections may finish, its UDP flows end at once (their replies could
//! not be sent from a closed socket).
//!
//! # Several agents on one machine: SO_REUSEPORT
//!
//! Every listening socket (TCP and UDP) has SO_REUSEPORT (and SO_REUSEADDR), so the
//! agents of `strata local` (one process) or several agent processes of one user on
//! one machine all bind the same service ports. The kernel then spreads new TCP
//! connections (and UDP client addresses, by their 4-tuple hash) between the sockets
//! of the group, i.e. between the agents' proxies. That is harmless because every
//! proxy has the same table (up to the propagation delay of an update). Consequences:
//! - `127.0.0.1:SERVICE_PORT` reaches the app whichever agent's proxy takes it.
//! - When one agent stops, the connections still waiting in its accept queue (not
//!   yet accepted) are reset by the kernel; the other agents' proxies keep serving.
//! - Linux lets only sockets of the same effective user join a group; a socket bound
//!   without SO_REUSEPORT (any other program) makes binding fail, which is reported.
//!   Conversely, any process of the agent's user could join a port's group and take a
//!   share of its connections.
//!
//! # Failures and limits
//!
//! A port that cannot be bound is shown in [`ServiceProxy::status`] (`listening:
//! false`, the error) and logged at warn the first time (debug when it repeats); the
//! bind is retried on every [`ServiceProxy::update`] (calling it with an unchanged
//! table is cheap, so a periodic call retries too). Other ports are not affected.
//! Each port serves at most [`ProxyConfig::max_connections_per_port`] TCP
//! connections or UDP flows; beyond, new connections are reset and datagrams of new
//! flows dropped. A UDP flow holds a socket (a file descriptor) and ends after
//! [`ProxyConfig::udp_idle_timeout`] without datagrams either way.

mod balance;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use self::balance::PortShared;

/// How long shutdown waits for a listener task to close its socket.
const LISTENER_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A service port's transport protocol.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One instance of an app: where the proxy sends its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    /// For logs.
    pub task_id: String,
}

/// A service port and the instances behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub port: u16,
    pub protocol: Protocol,
    /// The app, for logs and the status.
    pub name: String,
    pub backends: Vec<Backend>,
}

/// What one port of the proxy does now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortStatus {
    pub port: u16,
    pub protocol: Protocol,
    pub name: String,
    /// The port is bound and accepting.
    pub listening: bool,
    /// Why it is not (the bind error, or why the entry was refused).
    pub error: Option<String>,
    /// How many backends new connections can go to.
    pub backends: usize,
    /// Open TCP connections, or live UDP flows.
    pub active_connections: u64,
}

/// Limits and timeouts of a [`ServiceProxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// TCP connections (UDP flows) one port serves at once; beyond, new connections
    /// are reset (new flows' datagrams dropped).
    pub max_connections_per_port: u64,
    /// How long a connect to a backend may take before the proxy tries another.
    pub connect_timeout: Duration,
    /// A UDP flow with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// The listen backlog of TCP ports.
    pub listen_backlog: i32,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            max_connections_per_port: 10_000,
            connect_timeout: Duration::from_secs(2),
            udp_idle_timeout: Duration::from_secs(30),
            listen_backlog: 1024,
        }
    }
}

/// The service proxy of one agent. Cheap to clone: clones share the proxy.
#[derive(Clone)]
pub struct ServiceProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProxy")
            .field("bind_ip", &self.inner.bind_ip)
            .field("ports", &self.status())
            .finish()
    }
}

struct Inner {
    bind_ip: IpAddr,
    config: ProxyConfig,
    ports: Mutex<BTreeMap<(u16, Protocol), PortEntry>>,
    shutting_down: AtomicBool,
    tracker: Arc<Tracker>,
}

/// One port of the table.
struct PortEntry {
    shared: Arc<PortShared>,
    /// Set while the port listens.
    listener: Option<Listener>,
    error: Option<String>,
}

/// A port's listener task.
struct Listener {
    /// Dropping it stops the listener (and the port's UDP flows).
    _stop: watch::Sender<()>,
    /// Ends once the listening socket is closed (TCP; UDP: once no new flow starts).
    task: tokio::task::JoinHandle<()>,
}

/// The TCP connections open over every port, removed ports included, for shutdown.
#[derive(Debug)]
pub(crate) struct Tracker {
    open: AtomicU64,
    drained: Notify,
    /// Set when the shutdown grace period is over: connections still open close.
    kill: watch::Sender<bool>,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            open: AtomicU64::new(0),
            drained: Notify::new(),
            kill: watch::Sender::new(false),
        }
    }

    /// Resolves when no connection is open.
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the connections must close (never if the tracker is gone).
    pub(crate) async fn killed(kill: &mut watch::Receiver<bool>) {
        if kill.wait_for(|k| *k).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Counts an open TCP connection in the [`Tracker`] while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    tracker: Arc<Tracker>,
}

impl OpenConnection {
    pub(crate) fn new(tracker: &Arc<Tracker>) -> OpenConnection {
        tracker.open.fetch_add(1, Ordering::SeqCst);
        OpenConnection {
            tracker: tracker.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.tracker.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.tracker.drained.notify_waiters();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServiceProxy {
    /// A proxy with no port, binding its ports on `bind_ip` (0.0.0.0 in production,
    /// `::` for IPv4 and IPv6, 127.0.0.1 in tests), with the default [`ProxyConfig`].
    pub fn new(bind_ip: IpAddr) -> ServiceProxy {
        ServiceProxy::with_config(bind_ip, ProxyConfig::default())
    }

    pub fn with_config(bind_ip: IpAddr, config: ProxyConfig) -> ServiceProxy {
        ServiceProxy {
            inner: Arc::new(Inner {
                bind_ip,
                config,
                ports: Mutex::new(BTreeMap::new()),
                shutting_down: AtomicBool::new(false),
                tracker: Arc::new(Tracker::new()),
            }),
        }
    }

    /// Sets the whole desired table: ports not listed stop listening (their open TCP
    /// connections may finish), new ports start listening, ports that failed to bind
    /// are tried again, and each port's backends are replaced at once (new
    /// connections go only to the listed backends; open ones keep going).
    ///
    /// Must be called within a Tokio runtime (the listeners are tasks); outside one,
    /// or after [`shutdown`](Self::shutdown), it changes nothing. Several entries with
    /// one port and protocol: the first counts. Port 0 is refused (shown in the
    /// status). A backend that is the proxy's own port on this machine is dropped (it
    /// would loop).
    pub fn update(&self, services: Vec<Service>) {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::SeqCst) {
            tracing::debug!("service proxy: update after shutdown ignored");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("service proxy: update outside a Tokio runtime ignored");
            return;
        };
        let mut desired: BTreeMap<(u16, Protocol), Service> = BTreeMap::new();
        for service in services {
            match desired.entry((service.port, service.protocol)) {
                Entry::Vacant(v) => {
                    v.insert(service);
                }
                Entry::Occupied(o) => tracing::warn!(
                    port = service.port,
                    protocol = %service.protocol,
                    app = %service.name,
                    kept = %o.get().name,
                    "service proxy: two services on one port; keeping the first"
                ),
            }
        }

        let mut ports = lock(&inner.ports);
        ports.retain(|(port, protocol), entry| {
            let keep = desired.contains_key(&(*port, *protocol));
            if !keep && entry.listener.is_some() {
                tracing::info!(port, %protocol, app = %entry.shared.name(), "service proxy: port removed, no longer listening");
            }
            keep
        });
        for ((port, protocol), service) in desired {
            let entry = ports.entry((port, protocol)).or_insert_with(|| PortEntry {
                shared: Arc::new(PortShared::new(port, protocol, &service.name)),
                listener: None,
                error: None,
            });
            entry.shared.set_name(&service.name);
            let backends = service
                .backends
                .into_iter()
                .filter(|b| {
                    let looped = self.is_self(b.addr, port);
                    if looped {
                        tracing::warn!(port, %protocol, app = %service.name, backend = %b.addr, task_id = %b.task_id, "service proxy: a backend that is the service port itself is ignored");
                    }
                    !looped
                })
                .collect();
            entry.shared.set_backends(backends);
            if entry.listener.is_none() {
                self.start(&runtime, entry);
            }
        }
    }

    /// Whether `addr` is this proxy's own `port` (a backend there would loop).
    fn is_self(&self, addr: SocketAddr, port: u16) -> bool {
        let ip = addr.ip();
        addr.port() == port && (ip.is_loopback() || ip.is_unspecified() || ip == self.inner.bind_ip)
    }

    /// Binds the entry's port and starts its listener, or records why not.
    fn start(&self, runtime: &tokio::runtime::Handle, entry: &mut PortEntry) {
        let shared = entry.shared.clone();
        let (port, protocol) = (shared.port, shared.protocol);
        let addr = SocketAddr::new(self.inner.bind_ip, port);
        let result = if port == 0 {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port 0 is not a service port",
            ))
        } else {
            let (stop, stopped) = watch::channel(());
            let _entered = runtime.enter();
            let started = match protocol {
                Protocol::Tcp => tcp::start(
                    addr,
                    shared.clone(),
                    self.inner.tracker.clone(),
                    self.inner.config,
                    stopped,
                ),
                Protocol::Udp => udp::start(addr, shared.clone(), self.inner.config, stopped),
            };
            started.map(|task| Listener { _stop: stop, task })
        };
        match result {
            Ok(listener) => {
                tracing::info!(
                    port,
                    %protocol,
                    app = %shared.name(),
                    backends = shared.backends().len(),
                    "service proxy: listening"
                );
                entry.listener = Some(listener);
                entry.error = None;
            }
            Err(e) => {
                let error = format!("cannot listen on {addr}/{protocol}: {e}");
                if entry.error.as_deref() == Some(error.as_str()) {
                    tracing::debug!(port, %protocol, app = %shared.name(), %error, "service proxy: port still unavailable");
                } else {
                    tracing::warn!(port, %protocol, app = %shared.name(), %error, "service proxy: port unavailable; serving the other ports, retrying on the next update");
                }
                entry.error = Some(error);
            }
        }
    }

    /// Connections (and UDP flows) still open to backends taken out of the table: 0
    /// once every instance that left the rotation has no traffic from this proxy.
    pub fn draining(&self) -> u64 {
        lock(&self.inner.ports)
            .values()
            .map(|entry| entry.shared.draining())
            .sum()
    }

    /// Every port of the table, by port and protocol.
    pub fn status(&self) -> Vec<PortStatus> {
        lock(&self.inner.ports)
            .iter()
            .map(|(&(port, protocol), entry)| PortStatus {
                port,
                protocol,
                name: entry.shared.name().to_string(),
                listening: entry.listener.is_some(),
                error: entry.error.clone(),
                backends: entry.shared.backends().len(),
                active_connections: entry.shared.active(),
            })
            .collect()
    }

    /// Stops listening on every port (the sockets are closed when it returns or
    /// sooner; UDP flows end), lets open TCP connections finish for at most `grace`,
    /// then resets those still open. Later updates are ignored.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        let ports = std::mem::take(&mut *lock(&inner.ports));
        // Stop every listener, then wait for their sockets to close.
        let tasks: Vec<_> = ports
            .into_values()
            .filter_map(|entry| entry.listener.map(|l| l.task))
            .collect();
        for task in tasks {
            let _ = tokio::time::timeout(LISTENER_CLOSE_TIMEOUT, task).await;
        }
        let tracker = &inner.tracker;
        if tokio::time::timeout(grace, tracker.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.open.load(Ordering::SeqCst),
                "service proxy: connections still open at the end of the grace period; closing them"
            );
            tracker.kill.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(1), tracker.drained()).await;
        }
    }
}
