//! The `strata-agent` binary: flag checking, the listening line, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata-agent");

fn run_expecting_usage_error(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run strata-agent");
    assert_eq!(out.status.code(), Some(2), "args {args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "nothing starts: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().to_str().unwrap();

    let err = run_expecting_usage_error(&["--work-dir", wd, "--resources", "cpus:lots"]);
    assert!(err.contains("--resources") && err.contains("lots"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--resources", "bananas:3"]);
    assert!(err.contains("bananas"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--attributes", "rack"]);
    assert!(err.contains("rack") && err.contains("name:value"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--status-retry-interval", "soon"]);
    assert!(err.contains("soon"), "{err}");
    // One duration syntax for every binary: a number needs its unit.
    let err = run_expecting_usage_error(&["--work-dir", wd, "--status-retry-interval", "10"]);
    assert!(
        err.contains("--status-retry-interval")
            && err.contains("invalid duration '10': '10' has no unit")
            && err.contains("e.g. 30s, 500ms, 2m or 1h30m"),
        "{err}"
    );
    let err = run_expecting_usage_error(&["--work-dir", wd, "--task-log-max-size", "ten"]);
    assert!(
        err.contains("'ten' is not a size") && err.contains("10MiB"),
        "{err}"
    );
    let err = run_expecting_usage_error(&["--work-dir", wd, "--gc-disk-headroom", "2"]);
    assert!(err.contains("'2' is not a share of the disk"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--master", "nowhere"]);
    assert!(err.contains("nowhere"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--containerizer", "lxc"]);
    assert!(err.contains("lxc"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--containerizers", "fake,docker"]);
    assert!(err.contains("cannot be combined"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", "/proc/strata-agent-cannot-write-here"]);
    assert!(err.contains("--work-dir"), "{err}");
    let err = run_expecting_usage_error(&["--work-dir", wd, "--listen", "not-an-address"]);
    assert!(err.contains("--listen"), "{err}");
    run_expecting_usage_error(&[]);
}

#[test]
fn no_root_by_default_flags_refuse_what_would_be_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().to_str().unwrap();

    let err = run_expecting_usage_error(&["--work-dir", wd, "--default-user", "no-such-user-x"]);
    assert!(
        err.contains("invalid --default-user 'no-such-user-x': no such user on this machine"),
        "{err}"
    );
    let docker = ["--work-dir", wd, "--containerizers", "process,docker"];
    for (allow, why) in [
        ("/", "'/' is never allowed: it is the host's root"),
        (
            "/srv,/var/run/docker.sock",
            "'/var/run/docker.sock' is never allowed: it is the Docker engine's socket",
        ),
        ("/srv/../etc", "'/srv/../etc' contains '..'"),
        ("srv", "'srv' is not an absolute path"),
    ] {
        let mut args = docker.to_vec();
        args.extend(["--docker-volume-allow", allow]);
        let err = run_expecting_usage_error(&args);
        assert!(
            err.contains(&format!("invalid --docker-volume-allow: {why}")),
            "{allow}: {err}"
        );
    }
}

#[test]
fn prints_where_it_listens_serves_http_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--master",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
        ])
        .arg(dir.path())
        .args(["--resources", "cpus:1;mem:256", "--hostname", "test-host"])
        .arg("--insecure")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("strata-agent listening on ")
        .expect(&line)
        .to_string();
    assert!(!addr.ends_with(":0"), "the bound port is printed: {addr}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state: serde_json::Value = runtime.block_on(async {
        let health = reqwest::get(format!("http://{addr}/health"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(health, "ok");
        reqwest::get(format!("http://{addr}/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(state["hostname"], "test-host");
    assert_eq!(state["resources"]["cpus"], 1.0);
    assert_eq!(
        state["resources"]["ports"], "[31000-32000]",
        "resources not named are detected"
    );
    assert_eq!(state["registered"], false);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "strata-agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
