//! The HTTP/1.1 parts of the proxy bench: tiny backend servers that answer every
//! request with one fixed small body, and a load generator of C clients that send
//! requests for a fixed time and record each one's latency.
//!
//! Both are written against raw sockets (no HTTP library): the bench measures the
//! proxies, so the ends should cost as little and vary as little as possible. The
//! client reads an answer by its `Content-Length`, as a browser or `wrk` does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What every backend answers: 13 bytes of body.
const RESPONSE_KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";
const RESPONSE_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world\n";

/// The request of a client that keeps its connection for the next request.
const REQUEST_KEEP_ALIVE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: strata-bench\r\n\r\n";
/// The request of a client that opens a connection per request.
const REQUEST_CLOSE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: strata-bench\r\nConnection: close\r\n\r\n";

/// The largest request head a backend reads, and the largest answer head a client does.
const MAX_HEAD: usize = 8192;

/// How the load generator's clients use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// One connection per client for the whole run; a request is written when the
    /// previous answer has arrived (HTTP/1.1 keep-alive without pipelining).
    KeepAlive,
    /// A new connection per request (`Connection: close`), as a client without a
    /// connection pool: the latency counts connect, request and answer.
    Close,
}

impl ConnMode {
    pub fn name(self) -> &'static str {
        match self {
            ConnMode::KeepAlive => "keepalive",
            ConnMode::Close => "close",
        }
    }
}

/// Starts a backend on an ephemeral port of 127.0.0.1; it serves until the runtime
/// ends (or the returned task is aborted).
pub async fn backend() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok((addr, task))
}

/// Where `\r\n\r\n` ends in `buf`, if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Whether a request head asks to close the connection after the answer.
fn asks_close(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n').any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with(b"connection:") && line.windows(5).any(|w| w == b"close")
    })
}

/// Answers every request on the connection until the client closes it or asks to.
async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        while let Some(end) = head_end(&buf[..filled]) {
            let close = asks_close(&buf[..end]);
            let answer = if close {
                RESPONSE_CLOSE
            } else {
                RESPONSE_KEEP_ALIVE
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
            buf.copy_within(end..filled, 0);
            filled -= end;
            if close {
                let _ = stream.shutdown().await;
                return;
            }
        }
        if filled == buf.len() {
            return;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}

/// Reads one answer (head, then `Content-Length` bytes of body); its status code.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        anyhow::ensure!(buf.len() < MAX_HEAD, "answer head too long");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end])?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in the answer"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf.len() - end;
    while body < length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed in the body");
        body += n;
    }
    Ok(status)
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Each successful request's latency.
    pub latencies: Vec<Duration>,
    /// Failed requests (connect, I/O or a status other than 200).
    pub errors: u64,
    /// How long the clients ran.
    pub elapsed: Duration,
}

/// `concurrency` clients send requests to `target` for `duration`.
pub async fn load(
    target: SocketAddr,
    mode: ConnMode,
    concurrency: u32,
    duration: Duration,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        clients.spawn(client(target, mode, deadline));
    }
    let mut result = LoadResult::default();
    while let Some(done) = clients.join_next().await {
        if let Ok((latencies, errors)) = done {
            result.latencies.extend(latencies);
            result.errors += errors;
        }
    }
    result.elapsed = started.elapsed();
    result
}

/// One client: requests one after the other until `deadline`.
async fn client(target: SocketAddr, mode: ConnMode, deadline: Instant) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(65_536);
    let mut errors = 0u64;
    let mut buf = Vec::with_capacity(MAX_HEAD);
    let mut kept: Option<TcpStream> = None;
    while Instant::now() < deadline {
        let started = Instant::now();
        let outcome = async {
            let mut stream = match kept.take() {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(target).await?;
                    s.set_nodelay(true)?;
                    s
                }
            };
            let request = match mode {
                ConnMode::KeepAlive => REQUEST_KEEP_ALIVE,
                ConnMode::Close => REQUEST_CLOSE,
            };
            stream.write_all(request).await?;
            let status = read_answer(&mut stream, &mut buf).await?;
            anyhow::ensure!(status == 200, "status {status}");
            Ok::<_, anyhow::Error>(stream)
        }
        .await;
        match outcome {
            Ok(stream) => {
                // A keep-alive client's first request counts its connect too.
                latencies.push(started.elapsed());
                if mode == ConnMode::KeepAlive {
                    kept = Some(stream);
                }
            }
            Err(_) => {
                errors += 1;
                // Do not spin on a target that refuses everything.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    (latencies, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_close() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert!(asks_close(REQUEST_CLOSE));
        assert!(!asks_close(REQUEST_KEEP_ALIVE));
    }

    #[tokio::test]
    async fn a_backend_answers_both_kinds_of_client() {
        let (addr, task) = backend().await.unwrap();
        for mode in [ConnMode::KeepAlive, ConnMode::Close] {
            let r = load(addr, mode, 2, Duration::from_millis(100)).await;
            assert_eq!(r.errors, 0, "{mode:?}");
            assert!(r.latencies.len() > 10, "{mode:?}: {}", r.latencies.len());
        }
        task.abort();
    }
}
