//! The proxy on real sockets (127.0.0.1): backends are echo servers that first answer
//! with their own id.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long any one step of a test may take.
const STEP: Duration = Duration::from_secs(5);

/// A TCP backend: sends `ID\n`, then echoes until EOF, then closes.
struct EchoServer {
    addr: SocketAddr,
    id: String,
    accepted: Arc<AtomicUsize>,
}

impl EchoServer {
    async fn start(id: &str) -> EchoServer {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let hello = format!("{id}\n");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let hello = hello.clone();
                tokio::spawn(async move {
                    if stream.write_all(hello.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoServer {
            addr,
            id: id.to_string(),
            accepted,
        }
    }

    fn backend(&self) -> Backend {
        Backend {
            addr: self.addr,
            task_id: self.id.clone(),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A UDP backend: answers every datagram with `ID:payload`.
async fn udp_echo(id: &str) -> Backend {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let prefix = format!("{id}:");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let mut reply = prefix.as_bytes().to_vec();
            reply.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Backend {
        addr,
        task_id: id.to_string(),
    }
}

/// A port nothing listens on now (TCP and UDP).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

fn tcp_service(port: u16, backends: &[&EchoServer]) -> Service {
    Service {
        port,
        protocol: Protocol::Tcp,
        name: "web".to_string(),
        backends: backends.iter().map(|b| b.backend()).collect(),
    }
}

fn port_status(proxy: &ServiceProxy, port: u16, protocol: Protocol) -> PortStatus {
    proxy
        .status()
        .into_iter()
        .find(|s| s.port == port && s.protocol == protocol)
        .unwrap_or_else(|| panic!("no status for {port}/{protocol}"))
}

/// A connection through the proxy and the id of the backend it reached.
async fn connect(port: u16) -> (BufReader<TcpStream>, String) {
    let stream = tokio::time::timeout(STEP, TcpStream::connect((LOCALHOST, port)))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    let mut stream = BufReader::new(stream);
    let mut id = String::new();
    tokio::time::timeout(STEP, stream.read_line(&mut id))
        .await
        .expect("no id from the backend")
        .expect("reading the id failed");
    assert!(
        id.ends_with('\n'),
        "the connection closed before the id: {id:?}"
    );
    id.pop();
    (stream, id)
}

/// Sends a line and expects it back.
async fn echo(stream: &mut BufReader<TcpStream>, line: &str) {
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut back = String::new();
    tokio::time::timeout(STEP, stream.read_line(&mut back))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(back, format!("{line}\n"));
}

/// Expects the proxy to reset a connection at once, with no data. (The reset may come
/// before the client's connect has returned: then the connect reports it.)
async fn expect_reset(port: u16) {
    let mut stream = match TcpStream::connect((LOCALHOST, port)).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("connect failed: {e}"),
    };
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, stream.read(&mut buf))
        .await
        .expect("the connection stayed open");
    match read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
}

/// Waits until connecting to `port` is refused.
async fn wait_refused(port: u16) {
    let deadline = Instant::now() + STEP;
    loop {
        match TcpStream::connect((LOCALHOST, port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => panic!("port {port} still accepts connections"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until the port's active connections are `n`.
async fn wait_active(proxy: &ServiceProxy, port: u16, protocol: Protocol, n: u64) {
    let deadline = Instant::now() + STEP;
    while port_status(proxy, port, protocol).active_connections != n {
        assert!(
            Instant::now() < deadline,
            "active connections stay at {} (want {n})",
            port_status(proxy, port, protocol).active_connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reach_every_backend() {
    let servers = [
        EchoServer::start("a").await,
        EchoServer::start("b").await,
        EchoServer::start("c").await,
    ];
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &servers.iter().collect::<Vec<_>>())]);
    let status = port_status(&proxy, port, Protocol::Tcp);
    assert!(status.listening, "{status:?}");
    assert_eq!(status.error, None);
    assert_eq!(status.backends, 3);
    assert_eq!(status.name, "web");

    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        let (mut stream, id) = connect(port).await;
        echo(&mut stream, &format!("request {i}")).await;
        *seen.entry(id).or_default() += 1;
    }
    let mut ids: Vec<&String> = seen.keys().collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"], "{seen:?}");
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_backend() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a, &b])]);

    let mut held = Vec::new();
    let mut per_backend: HashMap<String, i64> = HashMap::new();
    for _ in 0..8 {
        let (stream, id) = connect(port).await;
        *per_backend.entry(id.clone()).or_default() += 1;
        held.push((id, stream));
        let counts: Vec<i64> = ["a", "b"]
            .iter()
            .map(|id| per_backend.get(*id).copied().unwrap_or(0))
            .collect();
        assert!(
            (counts[0] - counts[1]).abs() <= 1,
            "held connections: {per_backend:?}"
        );
    }
    assert_eq!(
        port_status(&proxy, port, Protocol::Tcp).active_connections,
        8
    );
    // Backend a's connections end (4 each before): the next 4 go to a.
    held.retain(|(id, _)| id == "b");
    assert_eq!(held.len(), 4);
    wait_active(&proxy, port, Protocol::Tcp, 4).await;
    for _ in 0..4 {
        let (stream, id) = connect(port).await;
        assert_eq!(id, "a", "b has 4 connections, a fewer");
        held.push((id, stream));
    }
    drop(held);
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_gets_no_new_connections_but_open_ones_keep_working() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a, &b])]);

    let (mut open, id) = connect(port).await;
    let (removed, kept) = if id == "a" { (&a, &b) } else { (&b, &a) };
    proxy.update(vec![tcp_service(port, &[kept])]);
    assert_eq!(port_status(&proxy, port, Protocol::Tcp).backends, 1);
    let accepted_before = removed.accepted();
    for _ in 0..10 {
        let (mut stream, id) = connect(port).await;
        assert_eq!(id, kept.id);
        echo(&mut stream, "new").await;
    }
    assert_eq!(
        removed.accepted(),
        accepted_before,
        "the removed backend got a new connection"
    );
    // The open connection through the removed backend still works, both ways.
    echo(&mut open, "still here").await;
    echo(&mut open, "and again").await;
    assert_eq!(
        port_status(&proxy, port, Protocol::Tcp).active_connections,
        1
    );
    drop(open);
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_forwarded() {
    let a = EchoServer::start("a").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a])]);
    let (mut stream, _) = connect(port).await;
    stream.get_mut().write_all(b"last words").await.unwrap();
    // The client stops writing; the backend sees EOF, echoes what it got and closes.
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
        .await
        .expect("the backend's side was not closed")
        .unwrap();
    assert_eq!(rest, b"last words");
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backends_connections_are_reset() {
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[])]);
    let status = port_status(&proxy, port, Protocol::Tcp);
    assert!(status.listening);
    assert_eq!(status.backends, 0);
    expect_reset(port).await;

    // Only dead backends: the same after one retry.
    let dead = free_port();
    let dead2 = free_port();
    proxy.update(vec![Service {
        backends: [dead, dead2]
            .iter()
            .map(|&p| Backend {
                addr: (LOCALHOST, p).into(),
                task_id: format!("dead-{p}"),
            })
            .collect(),
        ..tcp_service(port, &[])
    }]);
    expect_reset(port).await;
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_skipped() {
    let alive = EchoServer::start("alive").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    let mut service = tcp_service(port, &[&alive]);
    service.backends.push(Backend {
        addr: (LOCALHOST, free_port()).into(),
        task_id: "dead".to_string(),
    });
    proxy.update(vec![service]);
    for _ in 0..10 {
        let (_, id) = connect(port).await;
        assert_eq!(id, "alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_port_stops_listening() {
    let a = EchoServer::start("a").await;
    let port = free_port();
    let other = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a]), tcp_service(other, &[&a])]);
    let (mut open, _) = connect(port).await;
    connect(other).await;

    proxy.update(vec![tcp_service(other, &[&a])]);
    wait_refused(port).await;
    let ports: Vec<u16> = proxy.status().iter().map(|s| s.port).collect();
    assert_eq!(ports, [other]);
    connect(other).await;
    // Its open connection may finish.
    echo(&mut open, "after the port went").await;
    drop(open);

    // Back in the table: listening again.
    proxy.update(vec![tcp_service(port, &[&a]), tcp_service(other, &[&a])]);
    assert!(port_status(&proxy, port, Protocol::Tcp).listening);
    connect(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_a_port() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let port = free_port();
    let first = ServiceProxy::new(LOCALHOST);
    let second = ServiceProxy::new(LOCALHOST);
    first.update(vec![tcp_service(port, &[&a, &b])]);
    second.update(vec![tcp_service(port, &[&a, &b])]);
    assert!(port_status(&first, port, Protocol::Tcp).listening);
    assert!(port_status(&second, port, Protocol::Tcp).listening);

    let mut held = Vec::new();
    for _ in 0..24 {
        held.push(connect(port).await.0);
    }
    let on_first = port_status(&first, port, Protocol::Tcp).active_connections;
    let on_second = port_status(&second, port, Protocol::Tcp).active_connections;
    assert_eq!(on_first + on_second, 24);
    assert!(on_first > 0 && on_second > 0, "{on_first} + {on_second}");
    for stream in &mut held {
        echo(stream, "shared").await;
    }
    drop(held);

    // One proxy stops: the other serves the port alone.
    first.shutdown(Duration::from_secs(1)).await;
    assert!(first.status().is_empty());
    for _ in 0..10 {
        connect(port).await;
    }
    wait_active(&second, port, Protocol::Tcp, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_be_bound_is_reported_and_the_others_serve() {
    let a = EchoServer::start("a").await;
    // A plain listener, without SO_REUSEPORT, holds the port.
    let blocker = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let free = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(taken, &[&a]), tcp_service(free, &[&a])]);

    let status = port_status(&proxy, taken, Protocol::Tcp);
    assert!(!status.listening);
    let error = status.error.expect("no error shown");
    assert!(error.contains(&taken.to_string()), "{error}");
    assert!(error.to_lowercase().contains("in use"), "{error}");
    assert!(port_status(&proxy, free, Protocol::Tcp).listening);
    connect(free).await;

    // Retried on the next update, once the port is free.
    proxy.update(vec![tcp_service(taken, &[&a]), tcp_service(free, &[&a])]);
    assert!(!port_status(&proxy, taken, Protocol::Tcp).listening);
    drop(blocker);
    proxy.update(vec![tcp_service(taken, &[&a]), tcp_service(free, &[&a])]);
    let status = port_status(&proxy, taken, Protocol::Tcp);
    assert!(status.listening, "{status:?}");
    assert_eq!(status.error, None);
    connect(taken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_go_through_per_client_flows() {
    let a = udp_echo("a").await;
    let b = udp_echo("b").await;
    let port = free_port();
    let proxy = ServiceProxy::with_config(
        LOCALHOST,
        ProxyConfig {
            udp_idle_timeout: Duration::from_secs(1),
            ..ProxyConfig::default()
        },
    );
    proxy.update(vec![Service {
        port,
        protocol: Protocol::Udp,
        name: "dns".to_string(),
        backends: vec![a, b],
    }]);
    assert!(port_status(&proxy, port, Protocol::Udp).listening);

    async fn ask(client: &UdpSocket, port: u16, payload: &str) -> String {
        client
            .send_to(payload.as_bytes(), (LOCALHOST, port))
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let (len, from) = tokio::time::timeout(STEP, client.recv_from(&mut buf))
            .await
            .expect("no UDP reply")
            .unwrap();
        assert_eq!(
            from,
            SocketAddr::from((LOCALHOST, port)),
            "the reply comes from the service port"
        );
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }
    let first = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let second = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let reply = ask(&first, port, "hello").await;
    let (first_backend, payload) = reply.split_once(':').unwrap();
    assert_eq!(payload, "hello");
    // A client stays on its backend; another client goes to the idle backend.
    for i in 0..5 {
        assert_eq!(
            ask(&first, port, &format!("again {i}")).await,
            format!("{first_backend}:again {i}")
        );
    }
    let reply = ask(&second, port, "hi").await;
    let (second_backend, _) = reply.split_once(':').unwrap();
    assert_ne!(first_backend, second_backend);
    assert_eq!(
        port_status(&proxy, port, Protocol::Udp).active_connections,
        2
    );
    // Idle flows expire.
    wait_active(&proxy, port, Protocol::Udp, 0).await;
    assert!(ask(&first, port, "back").await.ends_with(":back"));

    // TCP and UDP on one port number are two entries.
    let a = EchoServer::start("tcp").await;
    proxy.update(vec![
        Service {
            port,
            protocol: Protocol::Udp,
            name: "dns".to_string(),
            backends: vec![udp_echo("c").await],
        },
        tcp_service(port, &[&a]),
    ]);
    assert_eq!(proxy.status().len(), 2);
    assert_eq!(connect(port).await.1, "tcp");
    let third = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    assert_eq!(ask(&third, port, "x").await, "c:x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_open_connections_finish() {
    let a = EchoServer::start("a").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a])]);
    let (mut open, _) = connect(port).await;

    let stopping = proxy.clone();
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(30)).await });
    wait_refused(port).await;
    echo(&mut open, "finishing").await;
    assert!(!shutdown.is_finished());
    drop(open);
    tokio::time::timeout(STEP, shutdown)
        .await
        .expect("shutdown waits after the last connection ended")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // Updates after shutdown change nothing.
    proxy.update(vec![tcp_service(port, &[&a])]);
    assert!(proxy.status().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_what_outlives_the_grace_period() {
    let a = EchoServer::start("a").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![tcp_service(port, &[&a])]);
    let (mut open, _) = connect(port).await;
    let started = Instant::now();
    proxy.shutdown(Duration::from_millis(200)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, open.read(&mut buf))
        .await
        .expect("the connection outlived the shutdown");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_reset() {
    let a = EchoServer::start("a").await;
    let port = free_port();
    let proxy = ServiceProxy::with_config(
        LOCALHOST,
        ProxyConfig {
            max_connections_per_port: 2,
            ..ProxyConfig::default()
        },
    );
    proxy.update(vec![tcp_service(port, &[&a])]);
    let held = [connect(port).await.0, connect(port).await.0];
    expect_reset(port).await;
    assert_eq!(
        port_status(&proxy, port, Protocol::Tcp).active_connections,
        2
    );
    drop(held);
    wait_active(&proxy, port, Protocol::Tcp, 0).await;
    connect(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_are_survived() {
    let a = EchoServer::start("a").await;
    let b = EchoServer::start("b").await;
    let port = free_port();
    let proxy = ServiceProxy::new(LOCALHOST);
    let mut looped = tcp_service(port, &[&a]);
    looped.backends.push(Backend {
        addr: (LOCALHOST, port).into(),
        task_id: "itself".to_string(),
    });
    proxy.update(vec![
        tcp_service(0, &[&a]),
        looped,
        Service {
            name: "duplicate".to_string(),
            ..tcp_service(port, &[&b])
        },
    ]);
    let status = proxy.status();
    assert_eq!(status.len(), 2, "{status:?}");
    assert!(!status[0].listening && status[0].port == 0);
    assert!(
        status[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("port 0"))
    );
    assert_eq!(status[1].name, "web", "the first entry of a port counts");
    assert_eq!(status[1].backends, 1, "the proxy's own port is no backend");
    for _ in 0..5 {
        assert_eq!(connect(port).await.1, "a");
    }
}

#[test]
fn update_outside_a_runtime_changes_nothing() {
    let proxy = ServiceProxy::new(LOCALHOST);
    proxy.update(vec![Service {
        port: free_port(),
        protocol: Protocol::Tcp,
        name: "web".to_string(),
        backends: Vec::new(),
    }]);
    assert!(proxy.status().is_empty());
}

#[test]
fn status_serializes_for_state() {
    let status = PortStatus {
        port: 10000,
        protocol: Protocol::Udp,
        name: "dns".to_string(),
        listening: false,
        error: Some("in use".to_string()),
        backends: 2,
        active_connections: 0,
    };
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["protocol"], "udp");
    assert_eq!(json["listening"], false);
}
