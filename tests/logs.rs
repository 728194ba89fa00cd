//! The `strata` binary's log on stderr, as an operator who runs `strata serve` as a
//! service with its stderr in a file or a log collector reads it: plain text without
//! colour escapes, or one JSON object per line with `--log-format json` (a flag of every
//! subcommand, before or after its name) or `STRATA_LOG_FORMAT=json`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `strata ARGS serve ...` (the container framework) against `master` with stderr
/// in a file until it has subscribed, stops it with SIGTERM, and returns what it logged.
fn log_of_serve(master: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let mut child = Command::new(bin("strata"))
        .args(args)
        .args(["--master", master, "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start strata serve");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}; log: {}", log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains("subscribed") {
        assert!(
            Instant::now() < deadline,
            "strata serve did not subscribe: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}; log: {}", log());
    log()
}

#[test]
fn strata_logs_plain_text_without_colour_escapes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "127.0.0.1:0", &[]);
    let log = log_of_serve(&master.addr, &["serve"], &[]);
    assert!(!log.contains("\x1b["), "ANSI escapes in a file: {log:?}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(log.contains("subscribed framework_id="), "{log}");
}

#[test]
fn strata_log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "127.0.0.1:0", &[]);
    for (args, env) in [
        (&["--log-format", "json", "serve"][..], &[][..]),
        (&["serve", "--log-format", "json"][..], &[][..]),
        (&["serve"][..], &[("STRATA_LOG_FORMAT", "json")][..]),
    ] {
        let log = log_of_serve(&master.addr, args, env);
        assert!(!log.contains("\x1b["), "{args:?} {env:?}: {log:?}");
        let mut subscribed = 0;
        for line in log.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?} {env:?}: not JSON ({e}): {line:?}"));
            assert!(event["level"].is_string(), "{line}");
            if event["fields"]["message"] == "subscribed" {
                assert!(event["fields"]["framework_id"].is_string(), "{line}");
                subscribed += 1;
            }
        }
        assert_eq!(subscribed, 1, "{args:?} {env:?}: {log}");
    }
}
