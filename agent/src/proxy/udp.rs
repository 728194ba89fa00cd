//! UDP ports: one socket per port; each client address is a flow pinned to one
//! backend through a socket of its own, connected to the backend, whose replies go
//! back to the client from the port's socket.
//!
//! A flow ends after `udp_idle_timeout` with no datagram either way, when its backend
//! answers with an error (ICMP port unreachable: the instance is gone; the client's
//! next datagram starts a new flow to a current backend), and when the port stops. A
//! flow whose backend left the table keeps going until one of those, as an open TCP
//! connection does. At most `max_connections_per_port` flows live at once; datagrams
//! that would start another are dropped. Datagrams are never queued: one that cannot
//! be sent at once (full socket buffer) is dropped, as a network would.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use super::balance::{BackendLease, PortCount, PortShared, now_ms};
use super::{ProxyConfig, lock};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;
/// Replies relayed per wake-up of a flow before it yields.
const REPLIES_PER_WAKE: usize = 64;
/// At most one warning this often per port about dropped datagrams.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

/// One client address's flow.
#[derive(Debug)]
struct Flow {
    /// Connected to the backend.
    socket: UdpSocket,
    /// [`now_ms`] of the last datagram either way.
    last: AtomicU64,
    lease: BackendLease,
    _counted: PortCount,
    /// Ends the flow's reply task (the receive loop saw the backend fail).
    end: Notify,
}

impl Flow {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

/// A UDP socket with SO_REUSEPORT and SO_REUSEADDR bound to `addr`.
pub(super) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `addr` and starts the port's receive loop, which runs (with the flows)
/// until `stop`'s sender is dropped. Must be called within a Tokio runtime.
pub(super) fn start(
    addr: SocketAddr,
    shared: Arc<PortShared>,
    config: ProxyConfig,
    stop: watch::Receiver<()>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let socket = Arc::new(UdpSocket::from_std(bind(addr)?)?);
    Ok(tokio::spawn(receive_loop(socket, shared, config, stop)))
}

/// Whether a rate-limited warning may be logged now.
fn may_warn(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < WARNING_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

async fn receive_loop(
    socket: Arc<UdpSocket>,
    shared: Arc<PortShared>,
    config: ProxyConfig,
    mut stop: watch::Receiver<()>,
) {
    let port = shared.port;
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_warning = None;
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(port, error = %e, "service proxy: UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let existing = lock(&flows).get(&client).cloned();
        let flow = match existing {
            Some(flow) => flow,
            None => {
                if shared.active() >= config.max_connections_per_port {
                    if may_warn(&mut last_warning) {
                        tracing::warn!(port, app = %shared.name(), limit = config.max_connections_per_port, "service proxy: too many UDP flows on the port; dropping datagrams of new ones");
                    }
                    continue;
                }
                match new_flow(&shared) {
                    Ok(Some(flow)) => {
                        lock(&flows).insert(client, flow.clone());
                        tokio::spawn(reply_loop(
                            flow.clone(),
                            client,
                            socket.clone(),
                            flows.clone(),
                            config.udp_idle_timeout,
                            stop.clone(),
                        ));
                        flow
                    }
                    Ok(None) => {
                        tracing::debug!(port, app = %shared.name(), %client, "service proxy: no backend for a UDP datagram; dropped");
                        continue;
                    }
                    Err(e) => {
                        if may_warn(&mut last_warning) {
                            tracing::warn!(port, app = %shared.name(), error = %e, "service proxy: cannot open a UDP flow; datagram dropped");
                        }
                        continue;
                    }
                }
            }
        };
        match send(&flow.socket, &buf[..len], None) {
            Ok(_) => flow.touch(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // The backend is gone (an ICMP error): the next datagram opens a new flow.
                tracing::debug!(port, %client, backend = %flow.lease.slot.addr, error = %e, "service proxy: UDP flow ended");
                remove(&flows, client, &flow);
                flow.end.notify_one();
            }
        }
    }
    tracing::debug!(port, app = %shared.name(), "service proxy: UDP socket closed");
}

/// A flow to the least loaded backend; None without backend.
fn new_flow(shared: &Arc<PortShared>) -> io::Result<Option<Arc<Flow>>> {
    let Some(lease) = shared.pick(None) else {
        return Ok(None);
    };
    let addr = lease.slot.addr;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    Ok(Some(Arc::new(Flow {
        socket,
        last: AtomicU64::new(now_ms()),
        lease,
        _counted: PortCount::new(shared),
        end: Notify::new(),
    })))
}

/// Removes `client`'s flow if it is still `flow`.
fn remove(flows: &Flows, client: SocketAddr, flow: &Arc<Flow>) {
    let mut flows = lock(flows);
    if flows.get(&client).is_some_and(|f| Arc::ptr_eq(f, flow)) {
        flows.remove(&client);
    }
}

/// Relays the backend's replies to the client until the flow ends.
async fn reply_loop(
    flow: Arc<Flow>,
    client: SocketAddr,
    listener: Arc<UdpSocket>,
    flows: Flows,
    idle_timeout: Duration,
    mut stop: watch::Receiver<()>,
) {
    let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let idle_for = now_ms().saturating_sub(flow.last.load(Ordering::Relaxed));
        if idle_for >= idle_ms {
            tracing::debug!(%client, backend = %flow.lease.slot.addr, "service proxy: idle UDP flow ended");
            break;
        }
        let left = Duration::from_millis(idle_ms - idle_for);
        let readable = tokio::select! {
            _ = stop.changed() => break,
            _ = flow.end.notified() => break,
            readable = tokio::time::timeout(left, flow.socket.readable()) => readable,
        };
        match readable {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "service proxy: UDP flow failed");
                break;
            }
            Ok(Ok(())) => match relay(&flow.socket, &listener, client) {
                Ok(0) => {}
                Ok(_) => flow.touch(),
                Err(e) => {
                    tracing::debug!(%client, backend = %flow.lease.slot.addr, error = %e, "service proxy: UDP flow ended");
                    break;
                }
            },
        }
        // Yield between batches so one busy flow does not hold the worker.
        tokio::task::yield_now().await;
    }
    remove(&flows, client, &flow);
}

/// Sends a datagram now or never (non-blocking, a full buffer drops it), with the
/// system call itself: Tokio's `try_send` refuses to try before the runtime has seen
/// the socket writable once, which drops the first datagrams of a new flow.
fn send(socket: &UdpSocket, datagram: &[u8], to: Option<SocketAddr>) -> io::Result<usize> {
    let socket = SockRef::from(socket);
    match to {
        Some(to) => socket.send_to(datagram, &to.into()),
        None => socket.send(datagram),
    }
}

/// Sends the replies waiting on `from` to `client` through `to`; how many. An error
/// is the backend's (the flow ends); a reply that cannot reach the client is dropped.
fn relay(from: &UdpSocket, to: &UdpSocket, client: SocketAddr) -> io::Result<usize> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut relayed = 0;
    while relayed < REPLIES_PER_WAKE {
        let len = match from.try_recv(&mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        };
        if let Err(e) = send(to, &buf[..len], Some(client))
            && e.kind() != io::ErrorKind::WouldBlock
        {
            tracing::debug!(%client, error = %e, "service proxy: UDP reply not delivered");
        }
        relayed += 1;
    }
    Ok(relayed)
}
