//! The failover bench, small and secure: the master in its own process, every
//! simulated agent with its own certificate and connection, one restart.

use std::process::Command;

#[test]
fn a_small_secure_failover_run_brings_every_agent_back() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "failover",
            "--agents",
            "20",
            "--tasks",
            "100",
            "--timeout",
            "30",
            "--secure",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "agents: 20\n",
        "master: own process\n",
        "agents_per_connection: 1\n",
        "secure_agent_certificates_issued: 20 in ",
        "restart_1_agents_reregistered: 20\n",
        "restart_1_unexpected_updates: 0\n",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("time_to_all_agents_back: ")),
        "{stdout}"
    );
    assert!(!stderr.contains("INSECURE"), "{stderr}");
}
