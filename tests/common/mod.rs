//! Test harness for cluster-level tests: starts the real `strata-master` and
//! `strata-agent` binaries on loopback ports chosen by the kernel, and reads their state.
//!
//! The binaries are secure by default (TLS, credentials, join tokens). These tests are
//! about other things, so the harness starts every part with `--insecure` and runs the
//! CLI with `STRATA_INSECURE=1` ([`cli`]); tests of the secure setup (`tests/local.rs`,
//! `tests/deploy.rs`) read what they need with [`Tls`].

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where cargo put the workspace's binaries (next to this test's own executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins --examples`, as scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn example(name: &str) -> PathBuf {
    bin(&format!("examples/{name}"))
}

/// An example scheduler, talking plain text to a master started with `--insecure`
/// (`STRATA_INSECURE=1`, which the examples read as the CLI does).
pub fn insecure_example(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.env("STRATA_INSECURE", "1");
    cmd
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args`, logging stderr to `log`, and waits for the line on stdout
    /// that ends with `listening on ADDR` (or `listening on SCHEME://ADDR`).
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Proc {
        let logfile = std::fs::File::create(log).expect("create log");
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logfile))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains("listening on") {
                    // `... listening on ADDR` or `... listening on http://ADDR`.
                    let last = line.split_whitespace().last().unwrap_or_default();
                    let addr = last
                        .split_once("://")
                        .map_or(last, |(_, addr)| addr)
                        .to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not start listening; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        Proc {
            child,
            addr,
            name: name.to_string(),
            log: log.to_path_buf(),
        }
    }

    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master and its agents, each a real process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub master: Proc,
    pub agents: Vec<Proc>,
    pub master_flags: Vec<String>,
}

/// Short timeouts so that agent loss shows within seconds in tests.
pub fn fast_master_flags() -> Vec<String> {
    [
        "--allocation-interval",
        "100ms",
        "--agent-ping-timeout",
        "300ms",
        "--max-agent-ping-timeouts",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// When a test fails, the tail of every log of the cluster is printed beside the
/// failure, so that a failure on CI can be understood from its output alone.
impl Drop for Cluster {
    fn drop(&mut self) {
        // The agents die with kill -9 (Proc's drop); their tasks would outlive them,
        // as they are meant to for a restarted agent, but not beyond the test.
        for a in &mut self.agents {
            a.kill9();
            reap_agent_cgroups(&a.log_text());
        }
        if !std::thread::panicking() {
            return;
        }
        for p in std::iter::once(&self.master).chain(self.agents.iter()) {
            let text = p.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- last {} lines of {} ({}) ----\n{}",
                tail.len(),
                p.name,
                p.log.display(),
                tail.join("\n")
            );
        }
    }
}

impl Cluster {
    pub fn start(agents: usize) -> Cluster {
        Self::start_with(agents, fast_master_flags())
    }

    pub fn start_with(agents: usize, master_flags: Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = start_master(dir.path(), "127.0.0.1:0", &master_flags);
        let mut cluster = Cluster {
            dir,
            master,
            agents: Vec::new(),
            master_flags,
        };
        for i in 0..agents {
            // Distinct port ranges: the agents share this machine's network.
            let from = 31000 + 200 * i;
            cluster.add_agent(
                i,
                &format!("cpus:2;mem:1024;disk:1000;ports:[{from}-{}]", from + 100),
            );
        }
        cluster.wait_for_agents(agents);
        cluster
    }

    pub fn add_agent(&mut self, index: usize, resources: &str) {
        self.add_agent_with(index, resources, &[]);
    }

    /// Adds (or replaces) agent `index` started with `extra_flags` besides the usual
    /// ones, e.g. `["--containerizers", "process,docker"]`.
    pub fn add_agent_with(&mut self, index: usize, resources: &str, extra_flags: &[&str]) {
        let agent = start_agent_with(
            self.dir.path(),
            index,
            &self.master.addr,
            resources,
            extra_flags,
        );
        if index < self.agents.len() {
            self.agents[index] = agent;
        } else {
            self.agents.push(agent);
        }
    }

    pub fn master_url(&self, path: &str) -> String {
        format!("http://{}{}", self.master.addr, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.master.addr)
    }

    pub fn state(&self) -> serde_json::Value {
        http_json(&self.master_url("/state"))
    }

    /// Waits until `n` agents are ACTIVE.
    pub fn wait_for_agents(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} active agents"),
            || active_agents(&self.state()) >= n,
        );
    }

    /// Restarts the master (after kill -9) on the same port and work dir.
    pub fn restart_master(&mut self) {
        self.master.kill9();
        let addr = self.master.addr.clone();
        // The port was ours a moment ago; retry briefly while the kernel releases it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                start_master(self.dir.path(), &addr, &self.master_flags)
            }));
            match p {
                Ok(m) => {
                    self.master = m;
                    return;
                }
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// The flag that turns TLS and authentication off in every binary.
pub const INSECURE: &str = "--insecure";

/// The `strata` CLI, talking plain text to a cluster started with `--insecure`.
pub fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.env("STRATA_INSECURE", "1");
    cmd
}

/// A master started with `--insecure` (see the module's doc).
pub fn start_master(dir: &Path, listen: &str, flags: &[String]) -> Proc {
    let work = dir.join("master");
    let mut args = vec![
        INSECURE.to_string(),
        "--listen".to_string(),
        listen.to_string(),
        "--work-dir".into(),
        work.display().to_string(),
    ];
    args.extend(flags.iter().cloned());
    Proc::spawn(
        "master",
        &bin("strata-master"),
        &args,
        &dir.join(format!("master-{}.log", unique())),
    )
}

pub fn start_agent(dir: &Path, index: usize, master: &str, resources: &str) -> Proc {
    start_agent_with(dir, index, master, resources, &[])
}

pub fn start_agent_with(
    dir: &Path,
    index: usize,
    master: &str,
    resources: &str,
    extra_flags: &[&str],
) -> Proc {
    let work = dir.join(format!("agent{index}"));
    let mut args: Vec<String> = vec![
        INSECURE.into(),
        "--master".into(),
        master.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--work-dir".into(),
        work.display().to_string(),
        "--resources".into(),
        resources.into(),
        "--hostname".into(),
        format!("agent{index}.test"),
        "--attributes".into(),
        format!("rack:r{index}"),
        "--registration-backoff".into(),
        "200ms".into(),
    ];
    args.extend(extra_flags.iter().map(|f| f.to_string()));
    Proc::spawn(
        &format!("agent{index}"),
        &bin("strata-agent"),
        &args,
        &dir.join(format!("agent{index}-{}.log", unique())),
    )
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn http_json(url: &str) -> serde_json::Value {
    let body = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: bad JSON ({e}): {body}"))
}

/// A plain HTTP/1.1 GET with no client library, returning the body of a 200.
pub fn http_get(url: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{}: {body}", head.lines().next().unwrap_or("")));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn active_agents(state: &serde_json::Value) -> usize {
    state["agents"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["status"] == "ACTIVE").count())
        .unwrap_or(0)
}

pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Runs a command to completion with a timeout, returning (exit code, stdout, stderr).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (i32, String, String) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("out");
    let err = out_dir.path().join("err");
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(&out).expect("out")))
        .stderr(Stdio::from(std::fs::File::create(&err).expect("err")))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// A plain HTTP/1.1 request with an optional JSON body: (status code, body).
pub fn http_request(method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status code")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// Starts `strata serve` (the container framework) against `master`, with its state
/// in `state_dir`; `addr` is "127.0.0.1:0" or the address it had before a restart.
pub fn start_serve(dir: &Path, master: &str, state_dir: &Path, addr: &str) -> Proc {
    start_serve_with(dir, master, state_dir, addr, &[])
}

/// [`start_serve`] with `extra` flags besides the usual ones, e.g. `["--role", "web"]`.
pub fn start_serve_with(
    dir: &Path,
    master: &str,
    state_dir: &Path,
    addr: &str,
    extra: &[&str],
) -> Proc {
    let mut args: Vec<String> = vec![
        "serve".into(),
        INSECURE.into(),
        "--master".into(),
        master.into(),
        "--listen".into(),
        addr.into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--tick".into(),
        "200ms".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Proc::spawn(
        "strata-serve",
        &bin("strata"),
        &args,
        &dir.join(format!("serve-{}.log", unique())),
    )
}

/// How a test reaches a secure server over HTTPS: the cluster CA and a credential.
#[derive(Clone)]
pub struct Tls {
    pub client: strata_security::ClientTls,
}

impl Tls {
    /// Trusts the CA in `ca_file` and sends `principal`'s `secret`.
    pub fn new(ca_file: &Path, principal: &str, secret: &str) -> Tls {
        let ca = std::fs::read_to_string(ca_file)
            .unwrap_or_else(|e| panic!("read the CA {}: {e}", ca_file.display()));
        Tls {
            client: strata_security::ClientTls {
                ca_pem: Some(ca),
                identity: None,
                credential: Some(strata_security::Credential::new(principal, secret)),
            },
        }
    }

    /// The CA and the admin's credential of a master whose work dir is `master_dir`
    /// (`tls/ca.crt`, `credentials.json`).
    pub fn of_master(master_dir: &Path) -> Tls {
        let secret = strata_security::credentials::secret_in_file(
            &master_dir.join("credentials.json"),
            strata_security::credentials::ADMIN,
        )
        .unwrap_or_else(|e| panic!("the admin's secret: {e}"));
        Tls::new(&master_dir.join("tls/ca.crt"), "admin", &secret)
    }

    /// `GET url` (https) with the CA and the credential: (status code, body).
    pub fn get(&self, url: &str) -> Result<(u16, String), String> {
        let client = self
            .client
            .reqwest(reqwest::Client::builder().timeout(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let response = client.get(url).send().await.map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            })?;
            let code = response.status().as_u16();
            let body = response.text().await.map_err(|e| e.to_string())?;
            Ok((code, body))
        })
    }

    /// `GET url` (https), a 200's JSON body.
    pub fn json(&self, url: &str) -> serde_json::Value {
        match self.get(url) {
            Ok((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("GET {url}: bad JSON ({e}): {body}")),
            Ok((code, body)) => panic!("GET {url}: {code}: {body}"),
            Err(e) => panic!("GET {url}: {e}"),
        }
    }
}

/// Kills every process left in the cgroups of an agent (its root is named in the
/// agent's log: "... under strata/agent-XXXX, ...") and removes the cgroups.
pub fn reap_agent_cgroups(agent_log: &str) {
    let Some(root) = agent_log
        .split("under strata/")
        .nth(1)
        .and_then(|s| s.split([',', ' ', '\n', '\u{1b}']).next())
        .map(|leaf| format!("strata/{leaf}"))
    else {
        return;
    };
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let bases: Vec<PathBuf> = hierarchies
        .filter_map(Result::ok)
        .map(|e| e.path())
        .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
        .collect();
    for base in bases {
        let top = base.join(&root);
        if top.is_dir() {
            collect_dirs(&top, &mut dirs);
        }
    }
    for _ in 0..50 {
        let mut left = false;
        for d in &dirs {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    left = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if !left {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Deepest first.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// `s` without the terminal colour codes tracing writes into logs.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A fenced block of a guide under `docs/`: its info string (`sh`, `text`, ...), the
/// `<!-- file: NAME -->` line just before it (the guide asks the reader to save it
/// as NAME), its text.
pub struct GuideBlock {
    pub info: String,
    pub file: Option<String>,
    pub text: String,
}

/// The fenced blocks of `docs/NAME`, in order (the guides run by the tests).
pub fn guide_blocks(name: &str) -> Vec<GuideBlock> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    let guide = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut open: Option<GuideBlock> = None;
    let mut last_text = "";
    for line in guide.lines() {
        let trimmed = line.trim();
        match open.as_mut() {
            Some(_) if trimmed == "```" => {
                blocks.extend(open.take());
                // A `<!-- file: -->` line names the block right after it only.
                last_text = "";
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None if trimmed.starts_with("```") => {
                let file = last_text
                    .strip_prefix("<!-- file:")
                    .and_then(|r| r.strip_suffix("-->"))
                    .map(|f| f.trim().to_string());
                open = Some(GuideBlock {
                    info: trimmed.trim_start_matches('`').to_string(),
                    file,
                    text: String::new(),
                });
            }
            None if !trimmed.is_empty() => last_text = trimmed,
            None => {}
        }
    }
    assert!(open.is_none(), "a block of docs/{name} is never closed");
    blocks
}
