//! The `strata-master` binary's log on stderr, as an operator who sends it to a file or
//! a log collector reads it: plain text without colour escapes, or one JSON object per
//! line with `--log-format json` (or `STRATA_LOG_FORMAT=json`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata-master");

/// Runs the master with stderr in a file until it listens, stops it with SIGTERM, and
/// returns what it logged.
fn log_of_a_run(flags: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("master.log");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--work-dir"])
        .arg(dir.path().join("work"))
        .args(flags)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start strata-master");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("strata-master listening on "),
        "{line:?}; log: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{status:?}; log: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            break;
        }
        assert!(Instant::now() < deadline, "strata-master did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("SIGTERM received"),
        "the run logged its stop: {log}"
    );
    log
}

#[test]
fn a_log_file_gets_plain_text_without_colour_escapes() {
    let log = log_of_a_run(&[], &[]);
    assert!(!log.contains("\x1b["), "ANSI escapes in a file: {log:?}");
    assert!(log.contains(" INFO "), "{log}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    for (flags, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("STRATA_LOG_FORMAT", "json")][..]),
    ] {
        let log = log_of_a_run(flags, env);
        assert!(!log.contains("\x1b["), "{flags:?} {env:?}: {log:?}");
        let mut messages = Vec::new();
        for line in log.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{flags:?} {env:?}: not JSON ({e}): {line:?}"));
            assert!(event["level"].is_string(), "{line}");
            messages.push(
                event["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        assert!(
            messages.iter().any(|m| m == "SIGTERM received"),
            "{messages:?}"
        );
    }
}

#[test]
fn an_unknown_log_format_exits_2_and_names_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--work-dir"])
        .arg(dir.path())
        .args(["--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("xml") && stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
