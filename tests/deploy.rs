//! The systemd units in `deploy/systemd/`, as an operator installs them: systemd reads
//! them without a complaint, and the binaries run with exactly their command lines
//! (only the paths, the listen addresses and the master's address are this test's).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/systemd")
        .join(name)
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(unit_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The value of `Key=` in the unit (the first one).
fn key<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

/// The ExecStart line's arguments after the program, with `${VAR}` from `Environment=`
/// and the test's own values for addresses and directories.
fn exec_args(unit: &str, replace: &[(&str, &str)]) -> Vec<String> {
    let line = key(unit, "ExecStart").expect("an ExecStart line");
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (format!("${{{k}}}"), v.to_string()))
        .collect();
    let lookup = |pairs: &[(String, String)], word: String| {
        pairs
            .iter()
            .find(|(k, _)| *k == word)
            .map_or(word, |(_, v)| v.clone())
    };
    let replace: Vec<(String, String)> = replace
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    line.split_whitespace()
        .skip(1)
        .map(|word| lookup(&replace, lookup(&env, word.to_string())))
        .collect()
}

#[test]
fn systemd_reads_the_units_without_a_complaint() {
    let dir = tempfile::tempdir().unwrap();
    for (name, binary) in [
        ("strata-master.service", "strata-master"),
        ("strata-agent.service", "strata-agent"),
    ] {
        // As installed: the binary where ExecStart says (here, the one just built).
        let text = unit(name).replace(
            &format!("/usr/local/bin/{binary}"),
            &bin(binary).display().to_string(),
        );
        let copy = dir.path().join(name);
        std::fs::write(&copy, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run systemd-analyze ({e}): install Debian's systemd package (scripts/test.sh does)")
            });
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {said}");
        assert!(
            said.trim().is_empty(),
            "systemd complains about {name}:\n{said}"
        );
    }
}

#[test]
fn the_units_command_lines_run_and_sigterm_stops_the_agent_leaving_tasks() {
    let agent_unit = unit("strata-agent.service");
    assert_eq!(
        key(&agent_unit, "KillMode"),
        Some("process"),
        "systemd must signal only the agent, not its tasks' monitors"
    );
    assert_eq!(key(&agent_unit, "KillSignal"), Some("SIGTERM"));

    let dir = tempfile::tempdir().unwrap();
    let master_dir = dir.path().join("master").display().to_string();
    let master_args = exec_args(
        &unit("strata-master.service"),
        &[
            ("0.0.0.0:5050", "127.0.0.1:0"),
            ("/var/lib/strata/master", &master_dir),
        ],
    );
    let mut master = Proc::spawn(
        "master",
        &bin("strata-master"),
        &master_args,
        &dir.path().join("master.log"),
    );
    // The units are secure unless they say --insecure: the agent joins with the
    // master's token (its file, wherever the unit keeps it, is this master's), and the
    // test reads /state with the master's CA and admin credential.
    let secure = !master_args.iter().any(|a| a == INSECURE);
    let agent_dir = dir.path().join("agent").display().to_string();
    let mut agent_args = exec_args(
        &agent_unit,
        &[
            ("127.0.0.1:5050", &master.addr),
            ("0.0.0.0:5051", "127.0.0.1:0"),
            ("/var/lib/strata/agent", &agent_dir),
        ],
    );
    assert!(
        agent_args.contains(&master.addr),
        "the unit's ${{MASTER}} reaches --master: {agent_args:?}"
    );
    if let Some(i) = agent_args.iter().position(|a| a == "--join-token-file") {
        let token = Path::new(&master_dir).join("tls/join-token");
        agent_args[i + 1] = token.display().to_string();
    } else {
        assert!(
            !secure,
            "a secure master's agent unit needs --join-token-file: {agent_args:?}"
        );
    }
    let mut agent = Proc::spawn(
        "agent",
        &bin("strata-agent"),
        &agent_args,
        &dir.path().join("agent.log"),
    );
    let state = || {
        if secure {
            Tls::of_master(Path::new(&master_dir)).json(&format!("https://{}/state", master.addr))
        } else {
            http_json(&format!("http://{}/state", master.addr))
        }
    };
    wait_until(Duration::from_secs(30), "the agent registers", || {
        active_agents(&state()) == 1
    });

    // `systemctl restart strata-agent` sends SIGTERM to the agent alone.
    let status = agent.terminate();
    assert!(status.success(), "the agent stopped with {status}");
    assert!(
        agent.log_text().contains("its tasks keep running"),
        "{}",
        agent.log_text()
    );
    let status = master.terminate();
    assert!(status.success(), "the master stopped with {status}");
}
