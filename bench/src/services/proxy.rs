//! `strata-bench proxy`: the service proxy's throughput and latency against a direct
//! connection to one backend and against HAProxy with the same backends, with the same
//! load generator, in the same run.
//!
//! ```text
//! load generator (C clients, this process) ─┬─▶ backend 0                         (direct)
//!                                           ├─▶ strata proxy (child) ─▶ backends  (proxy)
//!                                           └─▶ haproxy (child)      ─▶ backends  (haproxy)
//! ```
//!
//! - The backends are N tiny HTTP/1.1 servers in this process (`http.rs`), each
//!   answering a 13-byte body.
//! - The Strata proxy is the agent's `ServiceProxy` (`strata_agent::proxy`), run in a
//!   process of its own (`strata-bench proxy-child`, a multi-threaded Tokio runtime
//!   with one worker per core) so that it does not share a scheduler with the load
//!   generator, as HAProxy does not (HAProxy 2.6 also runs one thread per core).
//! - HAProxy runs `mode tcp`, `balance leastconn`, the same backends, no health
//!   checks (the service proxy has none either): like for like, a layer-4 proxy with
//!   least connections. Without `haproxy` on the PATH its column is skipped (said so).
//! - Both connection modes are measured: `keepalive` (one connection per client,
//!   requests one after the other: the proxies' per-request forwarding cost) and
//!   `close` (a new connection per request: accept, pick, connect to a backend, copy,
//!   close; the latency counts the client's connect).
//! - The targets alternate: every round runs each target for `--duration` in a
//!   rotated order; the figures pool all rounds. Added latency is the target's p50
//!   minus the direct p50 of the same mode. Each proxy's CPU time (user and system,
//!   from /proc) per request is printed too: it does not depend on the machine's load
//!   as much as the latencies do.
//! - `STRATA_BENCH_PROXY_WORKERS=N` runs the Strata proxy child with N Tokio workers
//!   (an experiment; the agent runs one per core).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::http::{self, ConnMode, LoadResult};
use crate::Outcome;
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct ProxyBenchArgs {
    /// Backend servers behind the proxies.
    #[arg(long, default_value_t = 3)]
    pub backends: u32,
    /// Concurrent clients of the load generator.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// How long each target is loaded in each round.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rounds; each runs every target once, in a rotated order.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Connection modes to measure: `keepalive`, `close` or `both`.
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// The HAProxy binary; an empty value skips HAProxy.
    #[arg(long, default_value = "haproxy")]
    pub haproxy: String,
}

/// The proxy child's arguments (`strata-bench proxy-child`, started by the bench).
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    /// Where the service port listens.
    #[arg(long)]
    pub listen: SocketAddr,
    /// A backend's address (repeated).
    #[arg(long = "backend")]
    pub backends: Vec<SocketAddr>,
}

/// The proxy child: a `ServiceProxy` with one service, until its stdin closes.
pub async fn run_child(args: ChildArgs) -> anyhow::Result<Outcome> {
    use strata_agent::proxy::{Backend, Protocol, Service, ServiceProxy};
    let proxy = ServiceProxy::new(args.listen.ip());
    proxy.update(vec![Service {
        port: args.listen.port(),
        protocol: Protocol::Tcp,
        name: "bench".into(),
        backends: args
            .backends
            .iter()
            .enumerate()
            .map(|(i, addr)| Backend {
                addr: *addr,
                task_id: format!("backend-{i}"),
            })
            .collect(),
    }]);
    let status = proxy.status();
    let port = status.first().context("the proxy has no port")?;
    anyhow::ensure!(
        port.listening,
        "the proxy does not listen on {}: {}",
        args.listen,
        port.error.as_deref().unwrap_or("?")
    );
    println!("listening on {}", args.listen);
    // Until the bench closes our stdin (or ends).
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    proxy.shutdown(Duration::ZERO).await;
    Ok(Outcome {
        code: 0,
        figure: String::new(),
    })
}

/// A free TCP port on 127.0.0.1 (bound and released: another process could take it
/// meanwhile, which the bench would report as a start failure).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `addr` accepts a connection.
async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} ended before it listened on {addr}: {status}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {addr} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the Strata proxy child on `listen`.
async fn start_strata(listen: SocketAddr, backends: &[SocketAddr]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the strata-bench binary")?;
    let mut command = Command::new(exe);
    command
        .arg("proxy-child")
        .arg("--listen")
        .arg(listen.to_string());
    for b in backends {
        command.arg("--backend").arg(b.to_string());
    }
    // An experiment's knob: the child's Tokio worker threads (default: one per core,
    // as the agent runs); the bench's own runtime keeps its default.
    if let Ok(workers) = std::env::var("STRATA_BENCH_PROXY_WORKERS") {
        command.env("TOKIO_WORKER_THREADS", workers);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the proxy child")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout of the proxy child")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .context("the proxy child did not start within 10 s")??;
    anyhow::ensure!(
        line.starts_with("listening"),
        "the proxy child did not start (said {line:?})"
    );
    wait_listening(listen, &mut child, "the Strata proxy").await?;
    Ok(child)
}

/// HAProxy's configuration: layer 4, least connections, the same backends.
fn haproxy_config(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n    maxconn 9000\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\nfrontend bench\n    bind {listen}\n    default_backend instances\n\nbackend instances\n    balance leastconn\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server b{i} {b}\n"));
    }
    cfg
}

/// Starts HAProxy on `listen` (foreground, `-db`); `Ok(None)` when it is not
/// installed.
async fn start_haproxy(
    binary: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    dir: &Path,
) -> anyhow::Result<Option<(Child, String)>> {
    if binary.is_empty() {
        return Ok(None);
    }
    let version = match Command::new(binary).arg("-v").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot run {binary}")),
    };
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(listen, backends))?;
    let log = std::fs::File::create(dir.join("haproxy.log"))?;
    let mut child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {binary}"))?;
    if let Err(e) = wait_listening(listen, &mut child, "haproxy").await {
        let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
        anyhow::bail!("{e}; its output:\n{log}");
    }
    Ok(Some((child, version)))
}

/// A target's pooled figures in one mode.
#[derive(Default)]
struct Pooled {
    latencies: Vec<Duration>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time (user and system) of the proxy's process meanwhile.
    cpu: Option<Duration>,
}

/// A process's CPU time so far (user and system, all threads), from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux whatever the kernel's HZ.
    Some(Duration::from_millis((utime + stime) * 10))
}

impl Pooled {
    fn add(&mut self, r: LoadResult) {
        self.requests += r.latencies.len() as u64;
        self.latencies.extend(r.latencies);
        self.errors += r.errors;
        self.elapsed += r.elapsed;
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one mode measured, per target.
struct ModeFigures {
    mode: ConnMode,
    targets: Vec<(&'static str, Pooled)>,
}

pub async fn bench_proxy(args: ProxyBenchArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.backends >= 1, "--backends must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let modes = match args.mode.as_str() {
        "both" => vec![ConnMode::KeepAlive, ConnMode::Close],
        "keepalive" => vec![ConnMode::KeepAlive],
        "close" => vec![ConnMode::Close],
        other => anyhow::bail!("--mode {other}: use keepalive, close or both"),
    };
    let work = crate::cluster::work_dir("strata-bench-proxy")?;
    let result = run(&args, &modes, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(args: &ProxyBenchArgs, modes: &[ConnMode], work: &Path) -> anyhow::Result<Outcome> {
    let mut backends = Vec::new();
    let mut backend_tasks = Vec::new();
    for _ in 0..args.backends {
        let (addr, task) = http::backend().await?;
        backends.push(addr);
        backend_tasks.push(task);
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let strata_addr = SocketAddr::new(localhost, free_port()?);
    let mut strata = start_strata(strata_addr, &backends).await?;
    // Each target, and the process that proxies it (for its CPU time).
    let mut targets: Vec<(&'static str, SocketAddr, Option<u32>)> = vec![
        ("direct", backends[0], None),
        ("proxy", strata_addr, strata.id()),
    ];
    let haproxy_addr = SocketAddr::new(localhost, free_port()?);
    let mut haproxy = match start_haproxy(&args.haproxy, haproxy_addr, &backends, work).await? {
        Some((child, version)) => {
            eprintln!("bench: {version}");
            targets.push(("haproxy", haproxy_addr, child.id()));
            Some(child)
        }
        None => {
            if args.haproxy.is_empty() {
                println!("haproxy: not measured (--haproxy '')");
            } else {
                println!(
                    "haproxy: not measured ({} not found; `apt-get install haproxy` for that column)",
                    args.haproxy
                );
            }
            None
        }
    };
    eprintln!(
        "bench: {} backends {:?}, strata proxy on {strata_addr}{}, {} clients, {} rounds of {:?} per target and mode, {} cores",
        backends.len(),
        backends,
        if haproxy.is_some() {
            format!(", haproxy on {haproxy_addr}")
        } else {
            String::new()
        },
        args.concurrency,
        args.rounds,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut figures = Vec::new();
    for &mode in modes {
        // A short warm-up of every target (connections, caches, the proxies' threads).
        for (_, addr, _) in &targets {
            let _ = http::load(*addr, mode, args.concurrency, Duration::from_millis(200)).await;
        }
        let mut pooled: Vec<(&'static str, Pooled)> = targets
            .iter()
            .map(|(n, _, _)| (*n, Pooled::default()))
            .collect();
        for round in 0..args.rounds as usize {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                let (name, addr, pid) = targets[i];
                let cpu_before = pid.and_then(cpu_time);
                let r = http::load(addr, mode, args.concurrency, args.duration).await;
                if let (Some(before), Some(after)) = (cpu_before, pid.and_then(cpu_time)) {
                    pooled[i].1.cpu = Some(pooled[i].1.cpu.unwrap_or_default() + (after - before));
                }
                let s = Samples::new(r.latencies.clone());
                eprintln!(
                    "bench: {} round {} {name}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
                    mode.name(),
                    round + 1,
                    r.latencies.len() as f64 / r.elapsed.as_secs_f64().max(1e-9),
                    ms(s.percentile(0.5)),
                    ms(s.percentile(0.99)),
                    r.errors
                );
                pooled[i].1.add(r);
            }
        }
        figures.push(ModeFigures {
            mode,
            targets: pooled,
        });
    }

    drop(strata.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), strata.wait()).await;
    let _ = strata.kill().await;
    if let Some(h) = haproxy.as_mut() {
        let _ = h.kill().await;
    }
    for t in backend_tasks {
        t.abort();
    }
    Ok(report(figures))
}

/// Prints the figures; the outcome (non-zero when a request failed).
fn report(figures: Vec<ModeFigures>) -> Outcome {
    let mut errors = 0;
    let mut headline = Vec::new();
    for f in figures {
        let mode = f.mode.name();
        let mut p50s = Vec::new();
        for (name, pooled) in &f.targets {
            errors += pooled.errors;
            let s = Samples::new(pooled.latencies.clone());
            let cpu = pooled.cpu.map_or(String::new(), |cpu| {
                format!(
                    ", proxy CPU {:.1} us/request",
                    cpu.as_secs_f64() * 1e6 / pooled.requests.max(1) as f64
                )
            });
            println!(
                "{mode}_{name}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} requests, {} errors{cpu}",
                pooled.throughput(),
                ms(s.percentile(0.5)),
                ms(s.percentile(0.99)),
                pooled.requests,
                pooled.errors
            );
            p50s.push((*name, ms(s.percentile(0.5)), pooled.throughput()));
        }
        let get = |n: &str| p50s.iter().find(|(name, _, _)| *name == n).copied();
        let (Some(direct), Some(proxy)) = (get("direct"), get("proxy")) else {
            continue;
        };
        let proxy_added = proxy.1 - direct.1;
        println!("proxy_p50_added_ms_{mode}: {proxy_added:.3} ms");
        let mut line = format!(
            "{mode}: proxy +{proxy_added:.3} ms p50, {:.0} req/s",
            proxy.2
        );
        if let Some(haproxy) = get("haproxy") {
            let haproxy_added = haproxy.1 - direct.1;
            let ratio = proxy.2 / haproxy.2.max(1e-9);
            println!("haproxy_p50_added_ms_{mode}: {haproxy_added:.3} ms");
            println!("proxy_throughput_ratio_vs_haproxy_{mode}: {ratio:.2}");
            let met = proxy_added <= haproxy_added && ratio >= 0.9;
            println!(
                "goal_{mode} (added p50 <= haproxy's, throughput >= 0.9x): {}",
                if met { "met" } else { "NOT met" }
            );
            line.push_str(&format!(
                " vs haproxy +{haproxy_added:.3} ms, {:.0} req/s (ratio {ratio:.2})",
                haproxy.2
            ));
        }
        headline.push(line);
    }
    if errors > 0 {
        println!("errors: {errors} failed requests");
    }
    Outcome {
        code: u8::from(errors > 0),
        figure: headline.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_config_lists_every_backend() {
        let cfg = haproxy_config(
            "127.0.0.1:9000".parse().unwrap(),
            &[
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
        );
        assert!(cfg.contains("mode tcp"), "{cfg}");
        assert!(cfg.contains("balance leastconn"), "{cfg}");
        assert!(cfg.contains("bind 127.0.0.1:9000"), "{cfg}");
        assert!(cfg.contains("server b0 127.0.0.1:1\n"), "{cfg}");
        assert!(cfg.contains("server b1 127.0.0.1:2\n"), "{cfg}");
    }
}
