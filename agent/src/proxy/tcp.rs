//! TCP ports: accept, pick a backend, connect (one retry elsewhere), copy both ways.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::balance::{BackendLease, BackendSlot, PortCount, PortShared};
use super::{OpenConnection, ProxyConfig, Tracker};

/// How long the accept loop pauses after an accept error (e.g. out of descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning this often per port about refused connections or accept errors.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A listening TCP socket with SO_REUSEPORT and SO_REUSEADDR.
pub(super) fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds `addr` and starts the port's accept loop, which runs until `stop`'s sender
/// is dropped. Must be called within a Tokio runtime.
pub(super) fn start(
    addr: SocketAddr,
    shared: Arc<PortShared>,
    tracker: Arc<Tracker>,
    config: ProxyConfig,
    stop: watch::Receiver<()>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::from_std(bind(addr, config.listen_backlog)?)?;
    Ok(tokio::spawn(accept_loop(
        listener, shared, tracker, config, stop,
    )))
}

/// Resets the connection when it is dropped (SO_LINGER 0) instead of closing it.
fn reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
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

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<PortShared>,
    tracker: Arc<Tracker>,
    config: ProxyConfig,
    mut stop: watch::Receiver<()>,
) {
    let port = shared.port;
    let mut last_warning = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                if shared.active() >= config.max_connections_per_port {
                    if may_warn(&mut last_warning) {
                        tracing::warn!(port, app = %shared.name(), limit = config.max_connections_per_port, "service proxy: too many connections on the port; resetting new ones");
                    }
                    reset_on_close(&client);
                    continue;
                }
                let counted = (PortCount::new(&shared), OpenConnection::new(&tracker));
                let kill = tracker.kill.subscribe();
                tokio::spawn(serve(
                    client,
                    peer,
                    shared.clone(),
                    counted,
                    kill,
                    config.connect_timeout,
                ));
            }
            Err(e) => {
                if may_warn(&mut last_warning) {
                    tracing::warn!(port, app = %shared.name(), error = %e, "service proxy: accept failed");
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    tracing::debug!(port, app = %shared.name(), "service proxy: TCP listener closed");
}

/// Serves one accepted connection until both sides are done.
async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<PortShared>,
    _counted: (PortCount, OpenConnection),
    mut kill: watch::Receiver<bool>,
    connect_timeout: Duration,
) {
    let port = shared.port;
    let _ = client.set_nodelay(true);
    let connected = tokio::select! {
        connected = connect(&shared, connect_timeout) => connected,
        _ = Tracker::killed(&mut kill) => None,
    };
    let Some((lease, mut upstream)) = connected else {
        tracing::debug!(port, app = %shared.name(), %peer, "service proxy: no backend to serve the connection; reset");
        reset_on_close(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let result = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => copied.map(|_| ()),
        _ = Tracker::killed(&mut kill) => Err(io::Error::other("the proxy is shutting down")),
    };
    if let Err(e) = result {
        tracing::debug!(port, app = %shared.name(), %peer, backend = %lease.slot.addr, error = %e, "service proxy: connection ended with an error; resetting both sides");
        reset_on_close(&client);
        reset_on_close(&upstream);
    }
}

/// Connects to a backend: the least loaded one, then (if that fails) one other.
async fn connect(
    shared: &PortShared,
    connect_timeout: Duration,
) -> Option<(BackendLease, TcpStream)> {
    let mut failed: Option<Arc<BackendSlot>> = None;
    for _ in 0..2 {
        let lease = shared.pick(failed.as_ref())?;
        let addr = lease.slot.addr;
        let error = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some((lease, stream)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {connect_timeout:?}"),
        };
        if lease.slot.mark_failed() {
            tracing::warn!(port = shared.port, app = %shared.name(), backend = %addr, task_id = %lease.slot.task_id, %error, "service proxy: cannot connect to a backend; avoiding it for a while");
        }
        failed = Some(lease.slot.clone());
    }
    None
}
