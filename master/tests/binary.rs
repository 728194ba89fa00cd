//! The `strata-master` binary: flags checked before anything starts, the listening
//! line, and a graceful exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata-master");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run strata-master")
}

#[test]
fn bad_flags_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--weights",
                "role=-1",
            ],
            "greater than 0",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--weights",
                "role=abc",
            ],
            "not a number",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--allocation-interval",
                "5x",
            ],
            "unknown unit 'x'",
        ),
        (
            // One duration syntax for every binary: a number needs its unit.
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--default-refuse",
                "30",
            ],
            "invalid duration '30': '30' has no unit; write a number and a unit, e.g. 30s",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--allocation-interval",
                "0s",
            ],
            "greater than zero",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--acls",
                "/no/such/acls.json",
            ],
            "--acls: cannot read the ACL file /no/such/acls.json",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--rate-limits",
                r#"{"limits": [{"principal": "a", "qps": 0}]}"#,
            ],
            "the qps of a must be a number above 0",
        ),
        (
            &[
                "--work-dir",
                wd,
                "--listen",
                "127.0.0.1:0",
                "--max-frameworks-per-principal",
                "0",
            ],
            "at least 1",
        ),
        (&["--work-dir", wd, "--listen", "nowhere"], "--listen"),
        (&["--listen", "127.0.0.1:0"], "--work-dir"),
    ];
    for (args, reason) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_port_in_use_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&[
        "--work-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn an_unusable_work_dir_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let wd = file.join("sub");
    let out = run(&[
        "--work-dir",
        wd.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("registry"), "{stderr}");
}

#[test]
fn it_prints_the_bound_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--work-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--weights", "prod=2,dev=1", "--offer-timeout", "30s"])
        .arg("--insecure")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("strata-master listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    assert_ne!(addr.port(), 0);

    // It answers HTTP on that address.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok"), "{reply}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strata-master did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("registry.lock").exists());
}

#[test]
fn by_default_it_serves_tls_and_keeps_its_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--work-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("strata-master listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let mut tls_line = String::new();
    out.read_line(&mut tls_line).unwrap();
    assert!(
        tls_line.contains("TLS on") && tls_line.contains("join-token"),
        "{tls_line}"
    );
    // Keys and secrets are readable by the master's user only. (The master's own
    // certificate is issued as it starts serving, just after the lines above.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("tls/master.key").exists() {
        assert!(Instant::now() < deadline, "no tls/master.key");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (file, mode) in [
        ("tls/ca.key", 0o600),
        ("tls/master.key", 0o600),
        ("tls/join-token", 0o600),
        ("credentials.json", 0o600),
        ("tls/ca.crt", 0o644),
    ] {
        let meta = std::fs::metadata(dir.path().join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    // Plain HTTP gets no answer a client could mistake for the API.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("master_id"),
        "plain HTTP was served"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// SIGHUP reads the ACL file again (what `systemctl reload` sends).
#[test]
fn sighup_reloads_the_acls() {
    let dir = tempfile::tempdir().unwrap();
    let acls = dir.path().join("acls.json");
    std::fs::write(&acls, r#"{"permissive": false}"#).unwrap();
    let work = dir.path().join("master");
    let mut child = Command::new(BIN)
        .args([
            "--work-dir",
            work.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--acls", acls.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("strata-master listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let secret =
        strata_security::credentials::secret_in_file(&work.join("credentials.json"), "admin")
            .unwrap();
    let ca = work.join("tls/ca.crt");
    // PUT /weights as the admin, with curl; the HTTP status.
    let put_weights = || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .args(["-u", &format!("admin:{secret}"), "-X", "PUT"])
            .args(["-H", "content-type: application/json"])
            .args(["-d", r#"[{"role": "web", "weight": 2}]"#])
            .arg(format!("https://localhost:{}/weights", addr.port()))
            .output()
            .expect("curl (scripts/test.sh installs it)");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = put_weights();
    while status == "000" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        status = put_weights();
    }
    assert_eq!(status, "403", "the file allows nothing");
    std::fs::write(
        &acls,
        r#"{"permissive": false, "update_weights": [{"principals": {"values": ["admin"]}, "roles": {"type": "ANY"}}]}"#,
    )
    .unwrap();
    let kill = |signal: &str| {
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(kill("-HUP").success());
    while status != "200" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        status = put_weights();
    }
    assert_eq!(status, "200", "SIGHUP applied the new file");
    kill("-TERM");
    assert!(
        child.wait().unwrap().success(),
        "SIGHUP did not stop the master"
    );
}

/// Runs `script` under `sh` in `dir` with core dumps allowed (`ulimit -c unlimited`),
/// waits for its first line of output, kills it with SIGABRT (a core-dumping signal Rust does not catch, unlike SIGSEGV) and returns the files
/// named `core*` it left in `dir` (the kernel's `core_pattern` here is `core`, relative
/// to the process's working directory, as on a fresh Debian machine).
fn cores_after_a_crash(dir: &std::path::Path, script: &str) -> Vec<String> {
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit -c unlimited; exec {script}")])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = Command::new("kill")
        .args(["-ABRT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect()
}

#[test]
fn a_crashed_master_leaves_no_core_file_secrets_could_be_read_from() {
    // The control: an ordinary process that crashes leaves a core file here; without
    // it this test could not tell anything.
    let control = tempfile::tempdir().unwrap();
    let cores = cores_after_a_crash(control.path(), "sh -c 'echo ready; exec sleep 60'");
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    assert!(
        !cores.is_empty(),
        "a crashing process leaves no core file on this machine (core_pattern {pattern:?}): cannot check that the master leaves none"
    );

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let cores = cores_after_a_crash(
        dir.path(),
        &format!(
            "{BIN} --work-dir {} --listen 127.0.0.1:0 --insecure",
            work.display()
        ),
    );
    assert!(
        cores.is_empty(),
        "the master left {cores:?}: a core dump may hold secret values"
    );
}
