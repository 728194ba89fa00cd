//! Versions and rollback end to end: `strata serve` with a real master and agent,
//! driven through the App API and the CLI. v1, then v2, then `strata app rollback`:
//! the tasks run v1's command again, as a third version. And a rollback from the
//! version a newer config made: the tasks get the config's older version again.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cluster, Proc, http_request, start_serve, wait_until};
use serde_json::{Value, json};

struct Apps {
    cluster: Cluster,
    serve: Proc,
}

impl Drop for Apps {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.serve.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- last lines of strata serve ----\n{}", tail.join("\n"));
        }
    }
}

impl Apps {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("http://{}{path}", self.serve.addr);
        let text = body.map(|b| b.to_string());
        let (code, body) = http_request(method, &url, text.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = self.call("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Runs the `strata` CLI against this cluster: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = common::cli();
        cmd.args(args)
            .env("STRATA_SERVER", &self.serve.addr)
            .env("STRATA_MASTER", &self.cluster.master.addr);
        common::run_with_timeout(cmd, Duration::from_secs(120))
    }

    /// Waits until the app has converged with `n` running tasks, all of `version`.
    fn wait_converged(&self, version: &str, n: usize) {
        wait_until(
            Duration::from_secs(60),
            &format!("web to run {n} tasks of {version}"),
            || {
                let app = self.get("/v1/apps/web");
                let tasks = self.get("/v1/tasks?app=web");
                let tasks = tasks.as_array().cloned().unwrap_or_default();
                app["deployment"].is_null()
                    && tasks.len() == n
                    && tasks
                        .iter()
                        .all(|t| t["state"] == "TASK_RUNNING" && t["version"] == version)
            },
        );
    }

    /// What each running task of web wrote when it started.
    fn written(&self, dir: &Path) -> Vec<String> {
        let tasks = self.get("/v1/tasks?app=web");
        let mut out: Vec<String> = tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let id = t["id"].as_str().unwrap();
                let mut text = String::new();
                wait_until(Duration::from_secs(10), "the task to write", || {
                    text = std::fs::read_to_string(dir.join(id)).unwrap_or_default();
                    !text.is_empty()
                });
                text.trim().to_string()
            })
            .collect();
        out.sort();
        out
    }
}

fn spec(dir: &Path, name: &str) -> Value {
    json!({
        "id": "web",
        "instances": 2,
        "cmd": format!("echo {name} > {}/$STRATA_TASK_ID; exec sleep 1000", dir.display()),
        "cpus": 0.1,
        "mem": 32,
    })
}

#[test]
fn a_rollback_runs_the_earlier_command_again_as_a_third_version() {
    let cluster = Cluster::start(1);
    let state_dir = cluster.dir.path().join("apps-state");
    let serve = start_serve(
        cluster.dir.path(),
        &cluster.master.addr,
        &state_dir,
        "127.0.0.1:0",
    );
    let apps = Apps { cluster, serve };
    wait_until(
        Duration::from_secs(30),
        "the framework to subscribe",
        || apps.get("/v1/info")["connected"] == true,
    );
    // The tasks run as nobody: a directory anyone may write.
    let out = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }

    let (code, v1) = apps.call("PUT", "/v1/apps/web", Some(spec(out.path(), "v1")));
    assert_eq!(code, 200, "{v1}");
    let v1 = v1["version"].as_str().unwrap().to_string();
    apps.wait_converged(&v1, 2);
    assert_eq!(apps.written(out.path()), ["v1", "v1"]);
    let (code, v2) = apps.call("PUT", "/v1/apps/web", Some(spec(out.path(), "v2")));
    assert_eq!(code, 200, "{v2}");
    let v2 = v2["version"].as_str().unwrap().to_string();
    apps.wait_converged(&v2, 2);
    assert_eq!(apps.written(out.path()), ["v2", "v2"]);

    // The CLI rolls back to the version before, and waits for it.
    let (code, stdout, stderr) = apps.cli(&["app", "rollback", "web", "--wait"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("app \"web\": update started, 2 instance(s)"),
        "{stdout}"
    );
    let app = apps.get("/v1/apps/web");
    let v3 = app["version"].as_str().unwrap().to_string();
    assert_eq!(app["version_cause"], format!("rollback to {v1}"), "{app}");
    apps.wait_converged(&v3, 2);
    assert_eq!(apps.written(out.path()), ["v1", "v1"], "v1's command again");

    let versions = apps.get("/v1/apps/web/versions");
    let listed: Vec<(&str, bool)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap(), v["current"] == true))
        .collect();
    assert_eq!(
        listed,
        [
            (v3.as_str(), true),
            (v2.as_str(), false),
            (v1.as_str(), false)
        ]
    );
    // Each version with its config and secret pins (none here).
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["objects"] == serde_json::json!({})),
        "{versions}"
    );
    let (code, stdout, stderr) = apps.cli(&["app", "versions", "web"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("VERSION"), "{stdout}");
    assert!(
        lines[1].starts_with(&v3) && lines[1].contains("yes") && lines[1].contains("rollback to"),
        "{stdout}"
    );
    // Back to v2 by name: the CLI's --to.
    let (code, stdout, stderr) = apps.cli(&["app", "rollback", "web", "--to", &v2, "-o", "json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["version_cause"], format!("rollback to {v2}"), "{view}");
}

/// A rollback from a version made by a newer config launches the config's older
/// version again (not the same config under a new version), and the framework does not
/// roll the app forward to the newer one again.
#[test]
fn a_rollback_from_a_newer_config_launches_the_older_config_again() {
    let cluster = Cluster::start(1);
    let state_dir = cluster.dir.path().join("apps-state");
    let serve = start_serve(
        cluster.dir.path(),
        &cluster.master.addr,
        &state_dir,
        "127.0.0.1:0",
    );
    let apps = Apps { cluster, serve };
    wait_until(
        Duration::from_secs(30),
        "the framework to subscribe",
        || apps.get("/v1/info")["connected"] == true,
    );
    let out = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let cli_ok = |args: &[&str]| {
        let (code, stdout, stderr) = apps.cli(args);
        assert_eq!(
            code, 0,
            "strata {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    };
    cli_ok(&["config", "create", "web.conf", "--from-literal", "one"]);
    let spec = json!({
        "id": "web",
        "instances": 1,
        "cmd": format!(
            "cat configs/web.conf > {}/$STRATA_TASK_ID; exec sleep 1000",
            out.path().display()
        ),
        "cpus": 0.1,
        "mem": 32,
        "configs": [{"source": "web.conf"}],
    });
    let (code, v1) = apps.call("PUT", "/v1/apps/web", Some(spec));
    assert_eq!(code, 200, "{v1}");
    let v1 = v1["version"].as_str().unwrap().to_string();
    apps.wait_converged(&v1, 1);
    wait_until(Duration::from_secs(15), "web to pin web.conf 1", || {
        apps.get("/v1/apps/web")["objects"]["config/web.conf"] == 1
    });
    assert_eq!(apps.written(out.path()), ["one"]);

    // Version 2 of the config rolls the app.
    cli_ok(&["config", "update", "web.conf", "--from-literal", "two"]);
    let mut v2 = String::new();
    wait_until(Duration::from_secs(30), "web to roll to web.conf 2", || {
        let app = apps.get("/v1/apps/web");
        v2 = app["version"].as_str().unwrap_or_default().to_string();
        app["version_cause"] == "config web.conf version 2"
    });
    apps.wait_converged(&v2, 1);
    assert_eq!(apps.written(out.path()), ["two"]);

    // Back to v1: web.conf version 1 again.
    let (code, back) = apps.call("POST", "/v1/apps/web/rollback", None);
    assert_eq!(code, 200, "{back}");
    assert_eq!(back["version_cause"], format!("rollback to {v1}"), "{back}");
    assert_eq!(back["objects"]["config/web.conf"], 1, "{back}");
    let v3 = back["version"].as_str().unwrap().to_string();
    apps.wait_converged(&v3, 1);
    assert_eq!(apps.written(out.path()), ["one"], "the old config's value");
    // Listings of version 2 go on (every 2 s): the app stays where it was rolled back.
    std::thread::sleep(Duration::from_secs(5));
    let app = apps.get("/v1/apps/web");
    assert_eq!(app["version"], v3.as_str(), "not rolled forward: {app}");
    let versions = apps.get("/v1/apps/web/versions");
    let pins: Vec<(String, Value)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["objects"]["config/web.conf"].clone(),
            )
        })
        .collect();
    assert_eq!(
        pins,
        [(v3, json!(1)), (v2, json!(2)), (v1, json!(1))],
        "{versions}"
    );
}
