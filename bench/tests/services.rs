//! Issue 15's benches, tiny, so that they cannot rot: the proxy bench (with or without
//! HAProxy on the machine) and the propagation bench with one kill.

use std::process::Command;

#[test]
fn a_tiny_proxy_run_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "proxy",
            "--backends",
            "2",
            "--concurrency",
            "4",
            "--duration",
            "200ms",
            "--rounds",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for mode in ["keepalive", "close"] {
        for target in ["direct", "proxy"] {
            assert!(
                stdout.contains(&format!("{mode}_{target}: ")),
                "{mode}_{target}: {stdout}"
            );
        }
        assert!(
            stdout.contains(&format!("proxy_p50_added_ms_{mode}: ")),
            "{stdout}"
        );
    }
    // HAProxy is measured when installed, and said to be skipped when not.
    assert!(
        stdout.contains("proxy_throughput_ratio_vs_haproxy_close: ")
            || stdout.contains("haproxy: not measured"),
        "{stdout}"
    );
    assert!(!stdout.contains("errors: "), "{stdout}");
}

#[test]
fn the_proxy_bench_says_when_haproxy_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "proxy",
            "--backends",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "100ms",
            "--rounds",
            "1",
            "--mode",
            "keepalive",
            "--haproxy",
            "/nonexistent/haproxy",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("haproxy: not measured (/nonexistent/haproxy not found"),
        "{stdout}"
    );
    assert!(stdout.contains("keepalive_proxy: "), "{stdout}");
    assert!(!stdout.contains("close_proxy"), "{stdout}");
}

#[test]
fn a_propagation_run_with_one_kill_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args(["propagation", "--kills", "1", "--timeout", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("kills: 1\n"), "{stdout}");
    assert!(stdout.contains("propagation_p50: "), "{stdout}");
    assert!(stdout.contains("propagation_p99: "), "{stdout}");
}
