//! The `strata-agent` binary's log on stderr, as an operator who sends it to a file or
//! a log collector reads it: plain text without colour escapes, or one JSON object per
//! line with `--log-format json` (or `STRATA_LOG_FORMAT=json`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata-agent");

/// Runs the agent (its master unreachable) with stderr in a file until it listens, stops
/// it with SIGTERM, and returns what it logged.
fn log_of_a_run(flags: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("agent.log");
    let mut child = Command::new(BIN)
        .args(["--master", "127.0.0.1:1", "--listen", "127.0.0.1:0"])
        .args(["--containerizers", "fake", "--resources", "cpus:1;mem:256"])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .args(flags)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start strata-agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("strata-agent listening on "),
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
        assert!(Instant::now() < deadline, "strata-agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("shutting down"),
        "the run logged its stop: {log}"
    );
    log
}

#[test]
fn a_log_file_gets_plain_text_without_colour_escapes() {
    let log = log_of_a_run(&[], &[]);
    assert!(!log.contains("\x1b["), "ANSI escapes in a file: {log:?}");
    assert!(log.contains(" INFO "), "{log}");
    // Fields are plain `key=value` too.
    assert!(log.contains("signal=\"SIGTERM\""), "{log}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    for (flags, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("STRATA_LOG_FORMAT", "json")][..]),
    ] {
        let log = log_of_a_run(flags, env);
        assert!(!log.contains("\x1b["), "{flags:?} {env:?}: {log:?}");
        let mut stops = 0;
        for line in log.lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{flags:?} {env:?}: not JSON ({e}): {line:?}"));
            assert!(event["level"].is_string(), "{line}");
            if event["fields"]["message"] == "shutting down" {
                assert_eq!(event["fields"]["signal"], "SIGTERM", "{line}");
                stops += 1;
            }
        }
        assert_eq!(stops, 1, "{log}");
    }
}
