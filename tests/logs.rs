//! Every binary's log on stderr (`strata-master`, `strata-agent`, `strata serve`), as an
//! operator who runs it as a service with its stderr in a file, or a log collector,
//! reads it: plain text without colour escapes, or one JSON object per line with
//! `--log-format json` (a flag of every `strata` subcommand, before or after its name)
//! or `STRATA_LOG_FORMAT=json`. All three share `strata-logging`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `binary args` with stderr in a file until it prints `listening on` and its log
/// holds `ready`, stops it with SIGTERM, and returns what it logged.
fn log_of_a_run(binary: &str, args: &[String], env: &[(&str, &str)], ready: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(bin(binary))
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}; log: {}", log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains(ready) {
        assert!(
            Instant::now() < deadline,
            "{binary}: no {ready:?} in its log: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{binary}: {status:?}; log: {}", log());
    log()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The runs to check: (binary, args before the binary's own, args after, what its log
/// says once it is up). `strata serve` needs a master: `master` is its address. All
/// `--insecure`, as the master the harness starts is.
fn runs(master: &str, work: &std::path::Path) -> Vec<(&'static str, Vec<String>, &'static str)> {
    let dir = |name: &str| work.join(name).display().to_string();
    vec![
        (
            "strata-master",
            strings(&[
                INSECURE,
                "--listen",
                "127.0.0.1:0",
                "--work-dir",
                &dir("logged-master"),
            ]),
            "master starting",
        ),
        (
            "strata-agent",
            strings(&[
                INSECURE,
                "--master",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--containerizers",
                "fake",
                "--resources",
                "cpus:1;mem:256",
                "--work-dir",
                &dir("logged-agent"),
            ]),
            "agent starting",
        ),
        (
            "strata",
            strings(&[
                "serve",
                INSECURE,
                "--master",
                master,
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                &dir("logged-apps"),
            ]),
            "subscribed",
        ),
    ]
}

#[test]
fn every_binary_logs_plain_text_without_colour_escapes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "127.0.0.1:0", &[]);
    for (binary, args, ready) in runs(&master.addr, dir.path()) {
        let log = log_of_a_run(binary, &args, &[], ready);
        assert!(
            !log.contains("\x1b["),
            "{binary}: ANSI escapes in a file: {log:?}"
        );
        assert!(log.contains(" INFO "), "{binary}: {log}");
    }
}

#[test]
fn every_binary_writes_one_json_object_per_line_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), "127.0.0.1:0", &[]);
    for (binary, args, ready) in runs(&master.addr, dir.path()) {
        let mut flag_first = strings(&["--log-format", "json"]);
        flag_first.extend(args.iter().cloned());
        let mut flag_last = args.clone();
        flag_last.extend(strings(&["--log-format", "json"]));
        for (args, env) in [
            (flag_first, &[][..]),
            (flag_last, &[][..]),
            (args.clone(), &[("STRATA_LOG_FORMAT", "json")][..]),
        ] {
            let log = log_of_a_run(binary, &args, env, ready);
            assert!(!log.contains("\x1b["), "{binary} {args:?} {env:?}: {log:?}");
            let mut up = 0;
            for line in log.lines() {
                let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{binary} {args:?} {env:?}: not JSON ({e}): {line:?}")
                });
                assert!(event["level"].is_string(), "{line}");
                if event["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(ready))
                {
                    up += 1;
                }
            }
            assert!(up >= 1, "{binary} {args:?} {env:?}: {log}");
        }
    }
}

#[test]
fn an_unknown_log_format_exits_2_and_names_the_choices() {
    for binary in ["strata-master", "strata-agent", "strata"] {
        let out = Command::new(bin(binary))
            .args(["--log-format", "xml", "--help"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{binary}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("xml") && stderr.contains("text") && stderr.contains("json"),
            "{binary}: {stderr}"
        );
    }
}
