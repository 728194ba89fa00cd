//! Dynamic reservations and persistent volumes (issue 17) from the operator's side:
//! the real master and an agent, driven with `strata agent reserve|unreserve`,
//! `strata volume create|list|destroy` and `strata agent list`, and what the user sees,
//! refusals included (a clear message, a non-zero exit, nothing changed).

mod common;

use std::time::Duration;

use common::{Cluster, run_with_timeout, wait_until};
use serde_json::Value;

/// Runs `strata ARGS --master <the cluster's>`: (exit code, stdout, stderr).
fn strata(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let mut cmd = common::cli();
    cmd.args(args).args(["--master", &cluster.master.addr]);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// `strata ARGS`, which must succeed: its stdout.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = strata(cluster, args);
    assert_eq!(
        code, 0,
        "strata {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// The line of `strata agent list` for the agent `id`, split into its columns
/// (the RESERVED cell, the last, may hold spaces: it is kept whole).
fn agent_row(cluster: &Cluster, id: &str) -> Vec<String> {
    let out = ok(cluster, &["agent", "list"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "HOSTNAME", "ADDRESS", "CPUS", "MEM", "TASKS", "STATE", "VOLUMES", "RESERVED"
        ],
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no agent {id} in:\n{out}"));
    let mut cells: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let reserved = cells.split_off(8).join(" ");
    cells.push(reserved);
    cells
}

/// The `strata volume list -o json` answer.
fn volumes(cluster: &Cluster) -> Vec<Value> {
    let out = ok(cluster, &["volume", "list", "-o", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("volume list -o json: {e}: {out}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn reserve_create_list_destroy_unreserve() {
    let cluster = Cluster::start(1);
    let agent = cluster.state()["agents"][0]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    // Nothing reserved yet.
    let row = agent_row(&cluster, &agent);
    assert_eq!((row[7].as_str(), row[8].as_str()), ("0", "-"), "{row:?}");

    // Reserve part of the agent for role db.
    let out = ok(
        &cluster,
        &[
            "agent",
            "reserve",
            &agent,
            "cpus:1;mem:256;disk:600",
            "--role",
            "db",
        ],
    );
    assert_eq!(
        out,
        format!("agent {agent}: reserved cpus:1;disk:600;mem:256 for role db\n")
    );
    wait_until(
        Duration::from_secs(10),
        "the reservation in agent list",
        || agent_row(&cluster, &agent)[8] == "db(cpus:1,mem:256M,disk:600M)",
    );
    let before = ok(&cluster, &["agent", "list"]);
    // The agent's total is the same: a reservation moves resources to a role.
    let row = agent_row(&cluster, &agent);
    assert_eq!(
        (row[3].as_str(), row[4].as_str()),
        ("0/2", "0M/1G"),
        "{row:?}"
    );

    // A refused UNRESERVE (nothing of role web is reserved): the master's reason,
    // a non-zero exit, nothing printed on stdout, nothing changed.
    let (code, out, err) = strata(
        &cluster,
        &["agent", "unreserve", &agent, "cpus:1", "--role", "web"],
    );
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("UNRESERVE"), "{err}");
    assert!(err.contains(&agent), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Bad input is refused before anything is sent.
    let (code, _, err) = strata(
        &cluster,
        &["agent", "reserve", &agent, "cpus(web):1", "--role", "db"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("names role 'web' but --role is 'db'"), "{err}");
    assert_eq!(ok(&cluster, &["agent", "list"]), before);

    // A volume out of the reserved disk.
    let out = ok(
        &cluster,
        &[
            "volume", "create", &agent, "--role", "db", "--id", "pg_0_0", "--path", "data",
            "--size", "512",
        ],
    );
    assert_eq!(
        out,
        format!("agent {agent}: created volume pg_0_0 of role db (512M at data)\n")
    );
    // More than is left of the reservation: refused, with the reason.
    let (code, _, err) = strata(
        &cluster,
        &[
            "volume", "create", &agent, "--role", "db", "--id", "other", "--path", "x", "--size",
            "512",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("CREATE"), "{err}");
    assert!(err.contains("reserved for role 'db'"), "{err}");
    // The same id again: refused.
    let (code, _, err) = strata(
        &cluster,
        &[
            "volume", "create", &agent, "--role", "db", "--id", "pg_0_0", "--path", "data",
            "--size", "8",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");

    wait_until(Duration::from_secs(10), "the volume in volume list", || {
        volumes(&cluster).len() == 1
    });
    let listed = ok(&cluster, &["volume", "list"]);
    let lines: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "ID", "ROLE", "AGENT", "SIZE", "USED", "TASK", "APP", "INSTANCE"
        ],
        "{listed}"
    );
    assert_eq!(lines.len(), 2, "{listed}");
    let row = &lines[1];
    assert_eq!(
        (row[0], row[1], row[2], row[3], row[5], row[6], row[7]),
        ("pg_0_0", "db", agent.as_str(), "512M", "-", "pg", "0"),
        "{listed}"
    );
    let v = &volumes(&cluster)[0];
    assert_eq!(v["id"], "pg_0_0");
    assert_eq!(v["role"], "db");
    assert_eq!(v["agent_id"], agent.as_str());
    assert_eq!(v["hostname"], "agent0.test");
    assert_eq!(v["container_path"], "data");
    assert_eq!(v["size_mb"], 512.0);
    assert_eq!(v["read_only"], false);
    assert_eq!(
        (v["app"].as_str(), v["instance"].as_str()),
        (Some("pg"), Some("0"))
    );
    // The agent list counts it; the role's disk is still 600M, 512M of it the volume.
    let row = agent_row(&cluster, &agent);
    assert_eq!(row[7], "1", "{row:?}");
    assert_eq!(row[8], "db(cpus:1,mem:256M,disk:600M)", "{row:?}");

    // The disk of a volume cannot be released.
    let (code, _, err) = strata(
        &cluster,
        &[
            "agent",
            "unreserve",
            &agent,
            "cpus:1;mem:256;disk:600",
            "--role",
            "db",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("UNRESERVE"), "{err}");

    // Destroy: an unknown volume is named; the real one goes.
    let (code, _, err) = strata(
        &cluster,
        &["volume", "destroy", &agent, "--role", "db", "--id", "nope"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("no volume 'nope' of role 'db' on agent '{agent}'")),
        "{err}"
    );
    let out = ok(
        &cluster,
        &[
            "volume", "destroy", &agent, "--role", "db", "--id", "pg_0_0",
        ],
    );
    assert!(
        out.starts_with(&format!(
            "agent {agent}: destroyed volume pg_0_0 of role db"
        )),
        "{out}"
    );
    wait_until(Duration::from_secs(10), "no volumes", || {
        volumes(&cluster).is_empty()
    });
    let (code, out, err) = strata(&cluster, &["volume", "list"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", "No volumes.\n"));

    // Unreserve what was reserved: the agent is back as it started.
    let out = ok(
        &cluster,
        &[
            "agent",
            "unreserve",
            &agent,
            "cpus:1;mem:256;disk:600",
            "--role",
            "db",
        ],
    );
    assert_eq!(
        out,
        format!(
            "agent {agent}: released cpus:1;disk:600;mem:256 reserved for role db (now unreserved)\n"
        )
    );
    wait_until(Duration::from_secs(10), "no reservations", || {
        agent_row(&cluster, &agent)[8] == "-"
    });
    let row = agent_row(&cluster, &agent);
    assert_eq!(
        (row[3].as_str(), row[4].as_str(), row[7].as_str()),
        ("0/2", "0M/1G", "0")
    );
}
