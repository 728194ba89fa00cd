//! The container framework end to end: `strata serve` with a real master and agents,
//! driven through the App API (and the CLI where the user would use it).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Cluster, Proc, http_request, start_serve, start_serve_with, wait_until};
use serde_json::{Value, json};

/// A cluster with the container framework running on it.
struct Apps {
    cluster: Cluster,
    serve: Proc,
    state_dir: PathBuf,
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
    fn start(agents: usize) -> Apps {
        Self::on(Cluster::start(agents), &[])
    }

    /// The framework (started with `serve_flags`) on a cluster already up.
    fn on(cluster: Cluster, serve_flags: &[&str]) -> Apps {
        let state_dir = cluster.dir.path().join("apps-state");
        let serve = start_serve_with(
            cluster.dir.path(),
            &cluster.master.addr,
            &state_dir,
            "127.0.0.1:0",
            serve_flags,
        );
        let apps = Apps {
            cluster,
            serve,
            state_dir,
        };
        wait_until(
            Duration::from_secs(30),
            "the framework to subscribe",
            || apps.get("/v1/info")["connected"] == true,
        );
        apps
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.serve.addr, path)
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = http_request("GET", &self.url(path), None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (code, body) = http_request(method, &self.url(path), text.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (code, v)
    }

    fn deploy(&self, spec: Value) -> Value {
        let id = spec["id"].as_str().unwrap().to_string();
        let (code, v) = self.call("PUT", &format!("/v1/apps/{id}"), Some(spec));
        assert_eq!(code, 200, "deploy: {v}");
        v
    }

    fn tasks(&self, app: &str) -> Vec<Value> {
        self.get(&format!("/v1/tasks?app={app}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn running(&self, app: &str) -> Vec<Value> {
        self.tasks(app)
            .into_iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .collect()
    }

    /// Waits until the app has converged (no deployment) with `n` running tasks.
    fn wait_converged(&self, app: &str, n: usize, timeout: Duration) {
        wait_until(timeout, &format!("app {app} to run {n} instances"), || {
            let a = self.get(&format!("/v1/apps/{app}"));
            a["deployment"].is_null() && a["tasks_running"] == n && self.tasks(app).len() == n
        });
    }

    /// Non-terminal tasks of the framework at the master.
    fn master_live_tasks(&self) -> Vec<Value> {
        self.cluster.state()["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                let s = t["state"].as_str().unwrap_or("");
                matches!(
                    s,
                    "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING"
                )
            })
            .collect()
    }
}

/// A directory the tasks write to: they run as the agent's default user (nobody),
/// not root, so it is writable by all.
fn pid_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod the pid dir");
    dir
}

#[test]
fn five_instances_run_a_killed_one_is_replaced_and_scale_down_kills_the_newest() {
    let apps = Apps::start(2);
    let pids = pid_dir();
    let dir = pids.path().display().to_string();
    apps.deploy(json!({
        "id": "sleeper",
        "instances": 5,
        "cmd": format!("echo $$ > {dir}/$STRATA_TASK_ID; exec sleep 1000"),
        "cpus": 0.1,
        "mem": 32,
        "backoff": {"seconds": 0.2},
    }));
    apps.wait_converged("sleeper", 5, Duration::from_secs(60));
    let before: Vec<String> = apps
        .running("sleeper")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    // Kill one task's process from outside the cluster.
    let victim = before[0].clone();
    let pid: i32 = std::fs::read_to_string(pids.path().join(&victim))
        .expect("the task wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the task's process");
    wait_until(Duration::from_secs(60), "a replacement", || {
        let ids: Vec<String> = apps
            .running("sleeper")
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.len() == 5 && !ids.contains(&victim)
    });
    let app = apps.get("/v1/apps/sleeper");
    assert_eq!(app["last_failure"]["task_id"], victim.as_str(), "{app}");
    assert_eq!(app["last_failure"]["state"], "TASK_FAILED", "{app}");

    // Scale to 2: the three youngest go.
    let mut by_age = apps.running("sleeper");
    by_age.sort_by(|a, b| {
        a["staged_at"]
            .as_str()
            .cmp(&b["staged_at"].as_str())
            .then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    let oldest: Vec<String> = by_age[..2]
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let (code, v) = apps.call(
        "POST",
        "/v1/apps/sleeper/scale",
        Some(json!({"instances": 2})),
    );
    assert_eq!(code, 200, "{v}");
    apps.wait_converged("sleeper", 2, Duration::from_secs(60));
    let mut left: Vec<String> = apps
        .running("sleeper")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    let mut want = oldest.clone();
    want.sort();
    // Staged within the same millisecond, two tasks tie on age; the survivors must
    // still be among the oldest.
    assert_eq!(left, want, "the two oldest tasks stay");
    wait_until(
        Duration::from_secs(30),
        "the master to show 2 tasks",
        || apps.master_live_tasks().len() == 2,
    );

    // Destroy: everything goes, the app disappears.
    let (code, _) = apps.call("DELETE", "/v1/apps/sleeper", None);
    assert_eq!(code, 200);
    wait_until(Duration::from_secs(60), "the app to be gone", || {
        apps.call("GET", "/v1/apps/sleeper", None).0 == 404
    });
    wait_until(Duration::from_secs(30), "no task at the master", || {
        apps.master_live_tasks().is_empty()
    });
}

/// The path of busybox (installed by scripts/docker-setup.sh); its httpd serves
/// health checks.
fn busybox() -> String {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("busybox is missing: scripts/test.sh installs busybox-static");
}

#[test]
fn a_rolling_update_never_drops_below_the_healthy_instances_asked_for() {
    let apps = Apps::start(2);
    let bb = busybox();
    let spec = |version: &str| {
        json!({
            "id": "web",
            "instances": 3,
            // Each instance takes a second to come up, so the update is seen in progress.
            "cmd": format!("mkdir -p www && echo {version} > www/index.html && sleep 1 && exec {bb} httpd -f -p 127.0.0.1:$PORT0 -h www"),
            "cpus": 0.1,
            "mem": 32,
            "ports": [0],
            "env": {"VERSION": version},
            "health_checks": [{
                "protocol": "http", "path": "/", "port_index": 0,
                "delay_seconds": 0, "interval_seconds": 0.3, "timeout_seconds": 2,
                "grace_period_seconds": 10, "max_consecutive_failures": 3
            }],
            "upgrade_strategy": {"minimum_health_capacity": 1.0, "maximum_over_capacity": 0.34},
        })
    };
    apps.deploy(spec("v1"));
    wait_until(Duration::from_secs(60), "3 healthy v1 tasks", || {
        let a = apps.get("/v1/apps/web");
        a["deployment"].is_null() && a["tasks_healthy"] == 3
    });
    let v1_ids: Vec<String> = apps
        .tasks("web")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    apps.deploy(spec("v2"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    loop {
        let tasks = apps.tasks("web");
        let healthy = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING" && t["healthy"] == true)
            .count();
        assert!(
            healthy >= 3,
            "only {healthy} healthy instances during the update: {tasks:#?}"
        );
        // And what a client sees: at least 3 instances answer. Every running task of
        // the sample is asked (a kill between the sample and the probe comes only
        // after a newer task, already running in the sample, became healthy).
        let answering = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["ports"][0].as_u64())
            .filter(|port| {
                // A probe may time out on a loaded machine: asked up to three times.
                let url = format!("http://127.0.0.1:{port}/index.html");
                (0..3).any(|i| {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    common::http_get(&url).is_ok()
                })
            })
            .count();
        assert!(
            answering >= 3,
            "only {answering} instances answered during the update: {tasks:#?}"
        );
        samples += 1;
        let app = apps.get("/v1/apps/web");
        if app["deployment"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update did not finish: {app}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(samples > 3, "sampled during the update");
    let tasks = apps.tasks("web");
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    for t in &tasks {
        assert!(!v1_ids.contains(&t["id"].as_str().unwrap().to_string()));
        assert_eq!(t["healthy"], true);
        // The new version answers on its port.
        let port = t["ports"][0].as_u64().unwrap();
        let body = common::http_get(&format!("http://127.0.0.1:{port}/index.html")).unwrap();
        assert_eq!(body.trim(), "v2");
    }
}

#[test]
fn with_a_role_the_framework_runs_tasks_on_that_roles_reservation() {
    // One agent: 1 cpu reserved for role web, 0.5 shared. A task of 1.2 cpus fits
    // only with the reservation.
    let mut cluster = Cluster::start_with(0, common::fast_master_flags());
    cluster.add_agent(
        0,
        "cpus(web):1;cpus:0.5;mem:512;disk:1000;ports:[31000-31100]",
    );
    cluster.wait_for_agents(1);
    let apps = Apps::on(cluster, &["--role", "web"]);
    apps.deploy(
        json!({"id": "reserved", "instances": 1, "cmd": "sleep 1000", "cpus": 1.2, "mem": 32}),
    );
    apps.wait_converged("reserved", 1, Duration::from_secs(60));
    // The master accounts it under the reservation and the shared pool.
    let task = apps
        .master_live_tasks()
        .into_iter()
        .next()
        .expect("the task at the master");
    let text = task["resources"].to_string();
    assert!(text.contains("web"), "{text}");
    // A second instance does not fit (0.3 cpus left) and the deployment says so.
    apps.call(
        "POST",
        "/v1/apps/reserved/scale",
        Some(json!({"instances": 2})),
    );
    wait_until(Duration::from_secs(30), "the reason it waits", || {
        apps.get("/v1/apps/reserved")["deployment"]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("needs cpus 1.2"))
    });
    assert_eq!(apps.running("reserved").len(), 1);
}

#[test]
fn hostname_unique_on_two_agents_runs_two_and_names_the_constraint() {
    let apps = Apps::start(2);
    apps.deploy(json!({
        "id": "spread",
        "instances": 3,
        "cmd": "sleep 1000",
        "cpus": 0.1,
        "mem": 32,
        "constraints": ["hostname UNIQUE"],
    }));
    wait_until(Duration::from_secs(60), "two running and a reason", || {
        let a = apps.get("/v1/apps/spread");
        a["tasks_running"] == 2
            && a["deployment"]["waiting"]
                .as_str()
                .is_some_and(|w| w.contains("hostname UNIQUE"))
    });
    let hosts: std::collections::BTreeSet<String> = apps
        .running("spread")
        .iter()
        .map(|t| t["hostname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), 2, "one per host");
    // It stays that way.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(apps.tasks("spread").len(), 2);
}

/// Instances per agent id, of the app's running tasks.
fn per_agent(apps: &Apps, app: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for t in apps.running(app) {
        *out.entry(t["agent_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn four_instances_on_two_agents_are_spread_two_and_two_and_pack_keeps_first_fit() {
    let apps = Apps::start(2);
    let app = |id: &str, instances: u32, placement: &str| {
        json!({
            "id": id,
            "instances": instances,
            "cmd": "exec sleep 1000",
            "cpus": 0.1,
            "mem": 32,
            "placement": placement,
        })
    };
    // No placement named: spread.
    let mut spread = app("hello", 4, "spread");
    spread.as_object_mut().unwrap().remove("placement");
    let view = apps.deploy(spread);
    assert_eq!(view["spec"]["placement"], "spread", "{view}");
    apps.wait_converged("hello", 4, Duration::from_secs(60));
    let counts: Vec<usize> = per_agent(&apps, "hello").into_values().collect();
    assert_eq!(counts, vec![2, 2], "2 per agent");

    // A scale to 6 keeps them even.
    let (code, v) = apps.call(
        "POST",
        "/v1/apps/hello/scale",
        Some(json!({"instances": 6})),
    );
    assert_eq!(code, 200, "{v}");
    apps.wait_converged("hello", 6, Duration::from_secs(60));
    let counts: Vec<usize> = per_agent(&apps, "hello").into_values().collect();
    assert_eq!(counts, vec![3, 3], "3 per agent");

    // Pack: first fit, all on one agent (each has room for far more).
    let view = apps.deploy(app("packed", 3, "pack"));
    assert_eq!(view["spec"]["placement"], "pack", "{view}");
    apps.wait_converged("packed", 3, Duration::from_secs(60));
    let counts: Vec<usize> = per_agent(&apps, "packed").into_values().collect();
    assert_eq!(counts, vec![3], "all on one agent");

    // Bad values are refused, naming the field, and change nothing.
    for (bad, field) in [
        (json!({"placement": "binpack"}), "placement"),
        (json!({"placement": "pack", "spread": "zone"}), "spread"),
        (json!({"spread": ""}), "spread"),
    ] {
        let mut spec = app("hello", 6, "spread");
        for (k, v) in bad.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let (code, v) = apps.call("PUT", "/v1/apps/hello", Some(spec));
        assert_eq!(code, 422, "{bad}: {v}");
        assert_eq!(v["field"], field, "{bad}: {v}");
    }
    assert_eq!(apps.get("/v1/apps/hello")["spec"]["placement"], "spread");
}

#[test]
fn a_framework_restarted_mid_deployment_completes_it_without_duplicates() {
    let mut apps = Apps::start(2);
    apps.deploy(json!({
        "id": "steady",
        "instances": 6,
        "cmd": "sleep 1000",
        "cpus": 0.1,
        "mem": 32,
    }));
    // Kill the framework as soon as the first tasks are known.
    wait_until(Duration::from_secs(30), "a first task", || {
        !apps.tasks("steady").is_empty()
    });
    let framework_id = apps.get("/v1/info")["framework_id"].clone();
    let addr = apps.serve.addr.clone();
    apps.serve.kill9();
    std::thread::sleep(Duration::from_millis(500));
    apps.serve = start_serve(
        apps.cluster.dir.path(),
        &apps.cluster.master.addr,
        &apps.state_dir,
        &addr,
    );
    wait_until(Duration::from_secs(30), "re-subscription", || {
        apps.call("GET", "/v1/info", None).1["connected"] == true
    });
    assert_eq!(
        apps.get("/v1/info")["framework_id"],
        framework_id,
        "the same framework id"
    );
    apps.wait_converged("steady", 6, Duration::from_secs(60));
    // Exactly the framework's 6 tasks run at the master: no duplicate, no orphan.
    std::thread::sleep(Duration::from_secs(1));
    let at_master = apps.master_live_tasks();
    assert_eq!(at_master.len(), 6, "{at_master:#?}");
    let mut ours: Vec<String> = apps
        .tasks("steady")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let mut theirs: Vec<String> = at_master
        .iter()
        .map(|t| {
            t["task_id"]
                .as_str()
                .or(t["id"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn bad_specs_are_refused_with_the_field_named_and_change_nothing() {
    let apps = Apps::start(1);
    let cases = [
        (json!({"id": "Bad_Id", "cmd": "true"}), "id"),
        (json!({"id": "a", "cmd": "true", "cpus": -1}), "cpus"),
        (
            json!({"id": "a", "cmd": "true", "instances": "three"}),
            "instances",
        ),
        (json!({"id": "a"}), "cmd"),
        (
            json!({"id": "a", "cmd": "true", "helth_checks": []}),
            "helth_checks",
        ),
        (
            json!({"id": "a", "cmd": "true", "health_checks": [{"protocol": "http", "port_index": 1}]}),
            "health_checks[0].port_index",
        ),
        (
            json!({"id": "a", "cmd": "true", "constraints": ["hostname SOMETIMES"]}),
            "constraints[0]",
        ),
    ];
    for (spec, field) in cases {
        let (code, body) = apps.call("POST", "/v1/apps", Some(spec.clone()));
        assert_eq!(code, 422, "{spec} → {body}");
        assert!(
            body["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{spec}: expected field {field}, got {body}"
        );
    }
    let (code, body) = apps.call("POST", "/v1/apps/nope/scale", Some(json!({"instances": 2})));
    assert_eq!(code, 404, "{body}");
    assert_eq!(apps.get("/v1/apps"), json!([]), "nothing was created");
}

/// Runs the `strata` CLI against this cluster: (exit code, stdout, stderr).
fn cli(apps: &Apps, args: &[&str]) -> (i32, String, String) {
    let mut cmd = common::cli();
    cmd.args(args)
        .env("STRATA_SERVER", &apps.serve.addr)
        .env("STRATA_MASTER", &apps.cluster.master.addr);
    common::run_with_timeout(cmd, Duration::from_secs(120))
}

#[test]
fn the_cli_deploys_the_example_lists_scales_kills_and_refuses_bad_files() {
    let apps = Apps::start(2);
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/hello.yaml");
    let (code, out, err) = cli(&apps, &["app", "deploy", "-f", hello, "--wait"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("2/2 running"), "{out}");

    let (code, out, _) = cli(&apps, &["app", "list"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("hello")).expect(&out);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..4], ["hello", "2", "2", "2"], "{out}");

    let (code, out, _) = cli(&apps, &["task", "list", "--app", "hello", "-o", "json"]);
    assert_eq!(code, 0);
    let tasks: Value = serde_json::from_str(&out).unwrap();
    let first = tasks[0]["id"].as_str().unwrap().to_string();

    // The task's output, read from its agent.
    wait_until(Duration::from_secs(20), "the task's output", || {
        let (code, out, _) = cli(&apps, &["task", "logs", &first]);
        code == 0 && out.contains(&format!("hello from {first}"))
    });

    // Killing a task gets it replaced.
    let (code, _, err) = cli(&apps, &["task", "kill", &first]);
    assert_eq!(code, 0, "{err}");
    wait_until(Duration::from_secs(30), "a replacement", || {
        let ids: Vec<String> = apps
            .running("hello")
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        ids.len() == 2 && !ids.contains(&first)
    });
    // The killed task's output can still be read: the app server forgets a replaced
    // task, the master (its operator API) still knows where it ran.
    // (It forgets it once the kill's terminal update arrives, which may come after
    // the replacement runs.)
    wait_until(
        Duration::from_secs(30),
        "the app server forgets the replaced task",
        || apps.call("GET", &format!("/v1/tasks/{first}"), None).0 == 404,
    );
    let (code, out, err) = cli(&apps, &["task", "logs", &first]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("hello from {first}")), "{out}");

    // `strata events`: the state, then (with --follow) the changes as they happen.
    let (code, out, err) = cli(&apps, &["events", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let snapshot: Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(snapshot["type"], "SNAPSHOT", "{out}");
    assert_eq!(snapshot["agents"], 2, "{out}");
    let mut follow = common::cli()
        .args(["events", "--follow", "-o", "json"])
        .env("STRATA_MASTER", &apps.cluster.master.addr)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<Value>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(30)).unwrap()["type"],
        "SNAPSHOT"
    );

    let before: Vec<String> = apps
        .running("hello")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let (code, _, err) = cli(&apps, &["app", "scale", "hello", "3", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(apps.running("hello").len(), 3);
    // The new instance: added, then running, as the stream shows it.
    let new = apps
        .running("hello")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .find(|id| !before.contains(id))
        .expect("the new instance");
    let mut seen = Vec::new();
    while !seen.contains(&"TASK_RUNNING".to_string()) {
        let event = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the new instance's events");
        if event["task_id"] == new.as_str() {
            seen.push(event["state"].as_str().unwrap().to_string());
            if seen.len() == 1 {
                assert_eq!(event["type"], "TASK_ADDED", "{event}");
            }
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("TASK_STAGING"),
        "{seen:?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    // Bad files: refused before anything is sent, with the field named.
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        ("id: hello\ncmd: x\ninstances: -1\n", "instances"),
        (
            "id: hello\ncmd: x\nhealth_checks: [{protocol: http, port_index: 0}]\n",
            "health_checks[0].port_index",
        ),
        (
            "id: hello\ncmd: x\nconstraints: [\"hostname OFTEN\"]\n",
            "constraints[0]",
        ),
        ("id: hello\ncmd: x\nmem: lots\n", "mem"),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = cli(&apps, &["app", "deploy", "-f", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}: {out}{err}");
        assert!(err.contains(field), "{text}: expected {field} in: {err}");
    }
    // Nothing changed.
    assert_eq!(apps.get("/v1/apps/hello")["instances"], 3);

    // Unknown app: the server's reason.
    let (code, _, err) = cli(&apps, &["app", "show", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("app \"nope\" not found"), "{err}");

    let (code, _, err) = cli(&apps, &["app", "rm", "hello", "--wait"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&apps, &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("strata"), "a completion script");
}

#[test]
fn a_task_failing_its_health_check_is_killed_and_replaced() {
    let apps = Apps::start(1);
    let flags = pid_dir();
    let dir = flags.path().display().to_string();
    apps.deploy(json!({
        "id": "checked",
        "cmd": "exec sleep 1000",
        "cpus": 0.1,
        "mem": 32,
        "health_checks": [{
            "protocol": "command",
            "command": format!("test ! -e {dir}/$STRATA_TASK_ID"),
            "delay_seconds": 0, "interval_seconds": 0.2, "grace_period_seconds": 0,
            "max_consecutive_failures": 2
        }],
        "backoff": {"seconds": 0.1},
    }));
    apps.wait_converged("checked", 1, Duration::from_secs(30));
    let first = apps.running("checked")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(apps.running("checked")[0]["healthy"], true);
    std::fs::write(flags.path().join(&first), "").unwrap();
    wait_until(Duration::from_secs(30), "a healthy replacement", || {
        let running = apps.running("checked");
        running.len() == 1 && running[0]["id"] != first.as_str() && running[0]["healthy"] == true
    });
    let app = apps.get("/v1/apps/checked");
    assert_eq!(app["last_failure"]["task_id"], first.as_str(), "{app}");
    assert_eq!(app["last_failure"]["state"], "TASK_KILLED", "{app}");
}

#[test]
fn tasks_on_an_agent_that_stays_unreachable_are_replaced_elsewhere() {
    let mut apps = Apps::start(2);
    apps.deploy(json!({
        "id": "survivor",
        "instances": 2,
        "cmd": "exec sleep 1000",
        "cpus": 0.1,
        "mem": 32,
        "constraints": ["hostname UNIQUE"],
        "unreachable_replace_seconds": 1,
    }));
    apps.wait_converged("survivor", 2, Duration::from_secs(30));
    // Lose agent 1 for good (its tasks keep running, unreachable to the master).
    apps.cluster.agents[1].kill9();
    wait_until(
        Duration::from_secs(30),
        "the task to be unreachable",
        || {
            apps.tasks("survivor")
                .iter()
                .any(|t| t["state"] == "TASK_UNREACHABLE")
        },
    );
    // UNIQUE and one agent left: the replacement waits, saying why; a new agent gets it.
    apps.cluster
        .add_agent(2, "cpus:2;mem:1024;disk:1000;ports:[31400-31500]");
    wait_until(
        Duration::from_secs(60),
        "a replacement on the new agent",
        || {
            let running = apps.running("survivor");
            running.len() == 2 && running.iter().any(|t| t["hostname"] == "agent2.test")
        },
    );
    // The unreachable task is no longer counted.
    wait_until(Duration::from_secs(30), "the app to converge", || {
        apps.get("/v1/apps/survivor")["deployment"].is_null()
    });
}

#[test]
fn draining_an_agent_moves_its_instances_to_the_other_and_survives_reactivation() {
    let apps = Apps::start(2);
    apps.deploy(json!({
        "id": "movable",
        "instances": 4,
        "cmd": "sleep 1000",
        "cpus": 0.1,
        "mem": 32,
    }));
    apps.wait_converged("movable", 4, Duration::from_secs(60));
    let agents: Vec<String> = apps.cluster.state()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    // Drain the agent that runs the most instances.
    let on = |id: &str| {
        apps.running("movable")
            .iter()
            .filter(|t| t["agent_id"] == id)
            .count()
    };
    let drained = agents.iter().max_by_key(|a| on(a)).unwrap().clone();
    let other = agents.iter().find(|a| **a != drained).unwrap().clone();
    assert!(on(&drained) > 0);

    let (code, out, err) = cli(
        &apps,
        &["agent", "drain", &drained, "--max-grace-period", "1s"],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("draining"), "{out}");
    wait_until(
        Duration::from_secs(60),
        "all 4 instances on the other agent and the agent DRAINED",
        || {
            let state = apps.cluster.state();
            let drained_state = state["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == drained.as_str())
                .map(|a| a["maintenance"].clone());
            on(&other) == 4
                && apps.running("movable").len() == 4
                && drained_state == Some(json!("DRAINED"))
        },
    );
    let (code, out, _) = cli(&apps, &["agent", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("(DRAINED)"), "{out}");
    // The JSON keeps the shape of the master's /state agents.
    let (code, out, _) = cli(&apps, &["agent", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let listed = listed.as_array().expect(&out);
    assert_eq!(listed.len(), 2, "{out}");
    let drained_json = listed
        .iter()
        .find(|a| a["id"] == drained.as_str())
        .expect(&out);
    assert_eq!(drained_json["maintenance"], "DRAINED", "{out}");
    assert!(drained_json["total"]["cpus"].as_f64() > Some(0.0), "{out}");
    let (code, out, _) = cli(&apps, &["framework", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let frameworks: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(frameworks[0]["connected"], true, "{out}");
    assert!(frameworks[0]["task_count"].as_u64() >= Some(4), "{out}");
    // Teardown goes through the same API; an unknown id is the master's clear refusal.
    let (code, _, err) = cli(&apps, &["framework", "teardown", "no-such-framework"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no framework 'no-such-framework' is registered"),
        "{err}"
    );
    // Nothing goes back to a drained agent, even when asked for more.
    let (code, v) = apps.call(
        "POST",
        "/v1/apps/movable/scale",
        Some(json!({"instances": 5})),
    );
    assert_eq!(code, 200, "scale: {v}");
    apps.wait_converged("movable", 5, Duration::from_secs(60));
    assert_eq!(on(&drained), 0);

    // Reactivated: offered again, and a later scale-up may use it.
    let (code, out, err) = cli(&apps, &["agent", "reactivate", &drained]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let (code, _, err) = cli(&apps, &["agent", "reactivate", &drained]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing to reactivate"), "{err}");
    let state = apps.cluster.state();
    let maintenance = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == drained.as_str())
        .map(|a| a["maintenance"].clone());
    assert_eq!(maintenance, Some(Value::Null));
}

/// A partition: the agent is frozen (SIGSTOP) past the master's ping timeout, then
/// thawed. The partition-aware framework sees TASK_UNREACHABLE, then TASK_RUNNING
/// again for the same task; the task's process was never killed or replaced.
#[test]
fn an_agent_marked_gone_kills_its_tasks_and_stops_and_its_instances_move() {
    let mut apps = Apps::start(2);
    let pids = pid_dir();
    let dir = pids.path().display().to_string();
    apps.deploy(json!({
        "id": "doomed",
        "instances": 4,
        "cmd": format!("echo $$ > {dir}/$STRATA_TASK_ID; exec sleep 1000"),
        "cpus": 0.1,
        "mem": 32,
        "backoff": {"seconds": 0.2},
    }));
    apps.wait_converged("doomed", 4, Duration::from_secs(60));
    let state = apps.cluster.state();
    let agents = state["agents"].as_array().unwrap().clone();
    let on = |id: &str| -> Vec<String> {
        apps.running("doomed")
            .iter()
            .filter(|t| t["agent_id"] == id)
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let gone = agents
        .iter()
        .max_by_key(|a| on(a["id"].as_str().unwrap()).len())
        .unwrap();
    let gone_id = gone["id"].as_str().unwrap().to_string();
    let gone_addr = gone["address"].as_str().unwrap().to_string();
    let other_id = agents
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .find(|id| *id != gone_id)
        .unwrap();
    let victims: Vec<i32> = on(&gone_id)
        .iter()
        .map(|t| {
            std::fs::read_to_string(pids.path().join(t))
                .expect("the task wrote its pid")
                .trim()
                .parse()
                .expect("a pid")
        })
        .collect();
    assert!(!victims.is_empty());

    let (code, out, err) = cli(&apps, &["agent", "gone", &gone_id]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("marked gone"), "{out}");
    wait_until(
        Duration::from_secs(60),
        "the agent GONE and all 4 instances on the other agent",
        || {
            let status = apps.cluster.state()["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == gone_id.as_str())
                .map(|a| a["status"].clone());
            status == Some(json!("GONE"))
                && on(&other_id).len() == 4
                && apps.running("doomed").len() == 4
        },
    );
    // The agent was refused when it tried to come back: it killed its tasks and
    // stopped with an error.
    let index = apps
        .cluster
        .agents
        .iter()
        .position(|a| a.addr == gone_addr)
        .expect("the gone agent's process");
    let agent = &mut apps.cluster.agents[index];
    wait_until(Duration::from_secs(30), "the gone agent to exit", || {
        agent.child.try_wait().ok().flatten().is_some()
    });
    let status = agent.child.try_wait().unwrap().unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        agent.log_text().contains("marked this agent gone"),
        "{}",
        agent.log_text()
    );
    for pid in victims {
        let alive = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            None::<nix::sys::signal::Signal>,
        )
        .is_ok();
        assert!(!alive, "task process {pid} of the gone agent still runs");
    }
    // Operator calls on it are refused with the reason.
    let (code, _, err) = cli(&apps, &["agent", "reactivate", &gone_id]);
    assert_ne!(code, 0);
    assert!(err.contains("marked gone"), "{err}");
}

#[test]
fn a_partitioned_agent_comes_back_and_its_task_was_never_killed() {
    let apps = Apps::start(1);
    apps.deploy(json!({
        "id": "steady",
        "instances": 1,
        "cmd": "exec sleep 1000",
        "cpus": 0.1,
        "mem": 32,
        "unreachable_replace_seconds": 3600,
    }));
    apps.wait_converged("steady", 1, Duration::from_secs(60));
    let task = task_id_of_app(&apps, "steady");
    let pid_before = task_pid(&task).expect("the task's process");

    let agent_pid = nix::unistd::Pid::from_raw(apps.cluster.agents[0].child.id() as i32);
    nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let thaw = Thaw(agent_pid);
    wait_until(Duration::from_secs(30), "the agent unreachable", || {
        apps.cluster.state()["agents"][0]["status"] == "UNREACHABLE"
    });
    wait_until(
        Duration::from_secs(30),
        "TASK_UNREACHABLE at the framework",
        || updates_of(&apps, &task).contains(&"TASK_UNREACHABLE".to_string()),
    );
    drop(thaw);
    wait_until(
        Duration::from_secs(60),
        "the agent back and the task RUNNING",
        || {
            let states = updates_of(&apps, &task);
            apps.cluster.state()["agents"][0]["status"] == "ACTIVE"
                && states
                    .iter()
                    .rposition(|s| s == "TASK_RUNNING")
                    .zip(states.iter().position(|s| s == "TASK_UNREACHABLE"))
                    .is_some_and(|(running, unreachable)| running > unreachable)
        },
    );
    apps.wait_converged("steady", 1, Duration::from_secs(30));
    assert_eq!(task_id_of_app(&apps, "steady"), task, "not replaced");
    assert_eq!(
        task_pid(&task),
        Some(pid_before),
        "the same process ran throughout"
    );
    let states = updates_of(&apps, &task);
    assert!(
        !states
            .iter()
            .any(|s| matches!(s.as_str(), "TASK_KILLED" | "TASK_LOST" | "TASK_FAILED")),
        "{states:?}"
    );
}

/// Sends SIGCONT when dropped, so a failing test never leaves the agent frozen.
struct Thaw(nix::unistd::Pid);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn task_id_of_app(apps: &Apps, app: &str) -> String {
    let tasks = apps.tasks(app);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    tasks[0]["id"]
        .as_str()
        .or(tasks[0]["task_id"].as_str())
        .unwrap()
        .to_string()
}

/// The states of the status updates for `task` the framework logged, in order.
fn updates_of(apps: &Apps, task: &str) -> Vec<String> {
    common::strip_ansi(&apps.serve.log_text())
        .lines()
        .filter(|l| l.contains("status update") && l.contains(task))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("state="))
                .map(|s| s.trim_matches('"').to_string())
        })
        .collect()
}

/// The pid of the process whose environment names `task` (the task's own, not its
/// monitor: that one is the agent's fork and carries no task environment).
fn task_pid(task: &str) -> Option<i32> {
    let wanted = format!("STRATA_TASK_ID={task}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|v| v == wanted.as_bytes())
                .then_some(pid)
        })
}

/// Issue 15: a port asking for `service_port: 0` gets one of `--service-ports`, shown
/// by the App API and the CLI and carried by the running tasks' discovery info at the
/// master; another app asking for it is refused with the field named, until the first
/// app is removed.
#[test]
fn service_ports_are_assigned_published_on_the_tasks_and_refused_when_taken() {
    let apps = Apps::on(Cluster::start(1), &["--service-ports", "20000-20009"]);
    let view = apps.deploy(json!({
        "id": "svc",
        "instances": 2,
        "cmd": "sleep 1000",
        "cpus": 0.1,
        "mem": 32,
        "ports": [{"host_port": 0, "name": "http", "service_port": 0}, 0],
    }));
    let port = view["ports"][0]["service_port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no service port: {view}"));
    assert!((20000..=20009).contains(&port), "{view}");
    assert_eq!(view["spec"]["ports"][0]["service_port"], port, "{view}");
    assert!(view["ports"][1].get("service_port").is_none(), "{view}");
    apps.wait_converged("svc", 2, Duration::from_secs(60));

    // The App API: both instances, ready, at their host ports.
    let view = apps.get("/v1/apps/svc");
    let endpoints = view["endpoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(endpoints.len(), 2, "{view}");
    let mut host_ports: Vec<u64> = endpoints
        .iter()
        .map(|e| {
            assert_eq!(e["ready"], true, "{view}");
            e["ports"][0].as_u64().unwrap()
        })
        .collect();
    host_ports.sort();

    // The master's /state: every running task carries the label on its first port.
    let state = apps.cluster.state();
    let mut labelled: Vec<u64> = Vec::new();
    for t in state["tasks"].as_array().unwrap() {
        if t["state"] != "TASK_RUNNING" || t["discovery"]["name"] != "svc" {
            continue;
        }
        let ports = &t["discovery"]["ports"];
        assert_eq!(ports[0]["name"], "http", "{t}");
        assert_eq!(ports[0]["labels"]["service_port"], port.to_string(), "{t}");
        assert!(ports[1].get("labels").is_none(), "{t}");
        labelled.push(ports[0]["number"].as_u64().unwrap());
    }
    labelled.sort();
    assert_eq!(labelled, host_ports, "{state}");

    // The CLI.
    let (code, out, err) = cli(&apps, &["service", "list"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("svc")).expect(&out);
    let cols: Vec<&str> = line.split_whitespace().collect();
    let port_text = port.to_string();
    assert_eq!(
        &cols[..4],
        ["svc", port_text.as_str(), "tcp", "2/2"],
        "{out}"
    );
    let (code, out, _) = cli(&apps, &["service", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["service_port"], port, "{out}");
    assert_eq!(
        listed[0]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{out}"
    );
    let (code, out, _) = cli(&apps, &["app", "show", "svc"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("(http) service {port}")), "{out}");
    assert!(
        out.contains("Endpoints:") && out.contains(" ready"),
        "{out}"
    );

    // Taken, or outside the range: refused with the field named, nothing created.
    for (asked, why) in [(port, "is taken by app \"svc\""), (10000, "outside")] {
        let (code, body) = apps.call(
            "PUT",
            "/v1/apps/other",
            Some(
                json!({"id": "other", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
                "ports": [{"service_port": asked}]}),
            ),
        );
        assert_eq!(code, 422, "{body}");
        assert_eq!(body["field"], "ports[0].service_port", "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(apps.call("GET", "/v1/apps/other", None).0, 404);

    // Removed: its port is free again.
    let (code, body) = apps.call("DELETE", "/v1/apps/svc", None);
    assert_eq!(code, 200, "{body}");
    wait_until(Duration::from_secs(60), "svc to be removed", || {
        apps.call("GET", "/v1/apps/svc", None).0 == 404
    });
    let view = apps.deploy(json!({"id": "other", "cmd": "sleep 1000", "cpus": 0.1,
        "mem": 32, "ports": [{"service_port": port}]}));
    assert_eq!(view["ports"][0]["service_port"], port, "{view}");
}

/// A cluster of two agents whose host ports (`from`..) are this test's alone: the
/// tests of this file run two at a time on one machine.
fn cluster_with_ports(from: u32) -> Cluster {
    cluster_with(from, |_| Vec::new())
}

/// The same, agent `i` started with `flags(i)` too.
fn cluster_with(from: u32, flags: impl Fn(usize) -> Vec<String>) -> Cluster {
    let mut cluster = Cluster::start(0);
    for i in 0..2 {
        let first = from + 200 * i as u32;
        let flags = flags(i);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        cluster.add_agent_with(
            i,
            &format!("cpus:2;mem:1024;disk:1000;ports:[{first}-{}]", first + 100),
            &flags,
        );
    }
    cluster.wait_for_agents(2);
    cluster
}

/// The routing mesh (issue 15): every agent's service proxy serves the app's service
/// port (both agents of this machine share it, SO_REUSEPORT), spreads connections
/// over its healthy instances anywhere in the cluster, and drops a killed instance
/// from the rotation.
#[test]
fn a_service_port_reaches_every_instance_and_a_killed_one_leaves_the_rotation() {
    // Each agent's proxy on an address of its own, so that each can be asked.
    let proxy_ip = |i: usize| format!("127.0.0.{}", i + 2);
    let cluster = cluster_with(34000, |i| vec!["--service-proxy".into(), proxy_ip(i)]);
    let apps = Apps::on(cluster, &["--service-ports", "21000-21009"]);
    let bb = busybox();
    let view = apps.deploy(json!({
        "id": "mesh",
        "instances": 3,
        "cmd": format!("mkdir -p www && echo $STRATA_TASK_ID > www/index.html && exec {bb} httpd -f -p 127.0.0.1:$PORT0 -h www"),
        "cpus": 0.1,
        "mem": 32,
        "ports": [{"host_port": 0, "name": "http", "service_port": 0}],
        "health_checks": [{
            "protocol": "http", "path": "/", "port_index": 0,
            "delay_seconds": 0, "interval_seconds": 0.3, "timeout_seconds": 2,
            "grace_period_seconds": 10, "max_consecutive_failures": 3
        }],
    }));
    let port = view["ports"][0]["service_port"]
        .as_u64()
        .expect("a service port");
    wait_until(Duration::from_secs(60), "3 healthy instances", || {
        apps.get("/v1/apps/mesh")["tasks_healthy"] == 3
    });
    let ids: std::collections::BTreeSet<String> = apps
        .running("mesh")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let urls: Vec<String> = (0..2)
        .map(|i| format!("http://{}:{port}/", proxy_ip(i)))
        .collect();
    let answers = |n: usize| -> std::collections::BTreeSet<String> {
        urls.iter()
            .flat_map(|url| (0..n).filter_map(|_| common::http_get(url).ok()))
            .map(|body| body.trim().to_string())
            .collect()
    };
    // Through each agent's service port, every instance answers.
    for url in &urls {
        let mut seen = std::collections::BTreeSet::new();
        wait_until(
            Duration::from_secs(30),
            "every instance answers on each agent's service port",
            || {
                seen.extend(
                    (0..20)
                        .filter_map(|_| common::http_get(url).ok())
                        .map(|body| body.trim().to_string()),
                );
                seen == ids
            },
        );
    }

    // Each agent's proxy listens on the port, with the three instances.
    let state = apps.cluster.state();
    for agent in state["agents"].as_array().unwrap() {
        let address = agent["address"].as_str().unwrap();
        wait_until(Duration::from_secs(10), "the agent's proxy table", || {
            let agent_state = common::http_json(&format!("http://{address}/state"));
            let ports = agent_state["service_proxy"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ports
                .iter()
                .any(|p| p["port"] == port && p["listening"] == true && p["backends"] == 3)
        });
    }

    // A killed instance leaves every proxy's rotation.
    let killed = ids.iter().next().unwrap().clone();
    let (code, _) = apps.call("POST", &format!("/v1/tasks/{killed}/kill"), None);
    assert_eq!(code, 200);
    wait_until(
        Duration::from_secs(30),
        "the killed instance is out",
        || {
            let running: Vec<String> = apps
                .running("mesh")
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect();
            !running.contains(&killed)
        },
    );
    wait_until(
        Duration::from_secs(30),
        "no answer from the killed instance",
        || !answers(20).contains(&killed),
    );
    for _ in 0..3 {
        assert!(!answers(20).contains(&killed));
    }
}

/// Zero-downtime changes (issue 15): a client sending requests to the service port
/// all along sees no failed request and no reset connection through a rolling update,
/// a scale from 4 to 1 and a restart: an instance is killed only after every proxy
/// has taken it out of rotation. (The count is asserted; the rate is not.)
#[test]
fn no_request_fails_through_a_rolling_update_a_scale_down_and_a_restart() {
    let apps = Apps::on(
        cluster_with_ports(35000),
        &["--service-ports", "21010-21019"],
    );
    let bb = busybox();
    let spec = |version: &str, instances: u64| {
        json!({
            "id": "steady",
            "instances": instances,
            "cmd": format!("mkdir -p www && echo {version} > www/index.html && exec {bb} httpd -f -p 127.0.0.1:$PORT0 -h www"),
            "cpus": 0.1,
            "mem": 32,
            "ports": [{"host_port": 0, "name": "http", "service_port": 21010}],
            "health_checks": [{
                "protocol": "http", "path": "/", "port_index": 0,
                "delay_seconds": 0, "interval_seconds": 0.3, "timeout_seconds": 2,
                "grace_period_seconds": 10, "max_consecutive_failures": 3
            }],
            "upgrade_strategy": {"minimum_health_capacity": 1.0, "maximum_over_capacity": 0.5},
        })
    };
    let ids = || -> Vec<String> {
        apps.running("steady")
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Settled at `n` healthy instances, none of them one of `old`.
    let settled = |n: u64, old: &[String]| {
        wait_until(Duration::from_secs(90), "the app settles", || {
            let a = apps.get("/v1/apps/steady");
            a["deployment"].is_null()
                && a["tasks_healthy"] == n
                && a["tasks_running"] == n
                && ids().iter().all(|id| !old.contains(id))
        })
    };
    apps.deploy(spec("v1", 4));
    settled(4, &[]);
    let url = "http://127.0.0.1:21010/";
    wait_until(Duration::from_secs(30), "the service port answers", || {
        common::http_get(url).is_ok()
    });

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = std::thread::spawn({
        let stop = stop.clone();
        let phase = phase.clone();
        move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match common::http_get(url) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!(
                        "{} (during {})",
                        e,
                        ["the rolling update", "the scale-down", "the restart"]
                            [phase.load(std::sync::atomic::Ordering::Relaxed) as usize]
                    )),
                }
            }
            (ok, failed)
        }
    });
    let v1 = ids();
    apps.deploy(spec("v2", 4));
    settled(4, &v1);
    phase.store(1, std::sync::atomic::Ordering::Relaxed);
    let (code, v) = apps.call(
        "POST",
        "/v1/apps/steady/scale",
        Some(json!({"instances": 1})),
    );
    assert_eq!(code, 200, "{v}");
    settled(1, &[]);
    phase.store(2, std::sync::atomic::Ordering::Relaxed);
    let before = ids();
    let (code, v) = apps.call("POST", "/v1/apps/steady/restart", None);
    assert!(code == 200 || code == 201, "{code} {v}");
    settled(1, &before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    assert!(ok > 100, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(10)],
        apps.cluster
            .agents
            .iter()
            .flat_map(|a| a
                .log_text()
                .lines()
                .filter(|l| l.contains("services") || l.contains("WARN"))
                .map(String::from)
                .collect::<Vec<_>>())
            .take(60)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The counter file of a resident instance's volume on its agent's disk.
fn volume_dir(apps: &Apps, agent_index: usize, id: &str) -> PathBuf {
    apps.cluster
        .dir
        .path()
        .join(format!("agent{agent_index}/volumes/roles/apps/{id}"))
}

/// The index (in `apps.cluster.agents`) of the agent running the app's only task.
fn agent_index_of(apps: &Apps, app: &str) -> (usize, String) {
    let task = apps
        .running(app)
        .into_iter()
        .next()
        .expect("a running task");
    let agent_id = task["agent_id"].as_str().unwrap().to_string();
    let state = apps.cluster.state();
    let hostname = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agent_id.as_str())
        .map(|a| a["hostname"].as_str().unwrap().to_string())
        .expect("the agent in /state");
    let index = hostname
        .trim_start_matches("agent")
        .trim_end_matches(".test")
        .parse()
        .expect("agentN.test");
    (index, agent_id)
}

/// Waits until the app runs one task (a new one, not `old`) and its counter reads `n`.
fn wait_count(apps: &Apps, dir: &std::path::Path, old: Option<&str>, n: u32) -> String {
    let mut task = String::new();
    wait_until(
        Duration::from_secs(60),
        &format!("a running instance that counted to {n}"),
        || {
            let running = apps.running("counter");
            let Some(t) = running.first() else {
                return false;
            };
            task = t["id"].as_str().unwrap().to_string();
            let count = std::fs::read_to_string(dir.join("count")).unwrap_or_default();
            Some(task.as_str()) != old && count.trim() == n.to_string()
        },
    );
    task
}

#[test]
fn a_resident_app_keeps_counting_on_its_volume_through_kills_restarts_and_updates() {
    let mut apps = Apps::on(Cluster::start(2), &["--role", "apps"]);
    let spec = |version: &str| {
        json!({
            "id": "counter",
            "instances": 1,
            // The count lives in the volume, at `data` in the sandbox.
            "cmd": "n=$(cat data/count 2>/dev/null || echo 0); echo $((n+1)) > data/count; exec sleep 1000",
            "env": {"VERSION": version},
            "cpus": 0.1,
            "mem": 32,
            "disk": 10,
            "volumes": [{"container_path": "data", "persistent": {"size": 64}}],
            "backoff": {"seconds": 0.2},
        })
    };
    apps.deploy(spec("1"));
    apps.wait_converged("counter", 1, Duration::from_secs(60));
    let (index, agent_id) = agent_index_of(&apps, "counter");
    let dir = volume_dir(&apps, index, "counter_0_0");
    let first = wait_count(&apps, &dir, None, 1);
    // The master shows the reservation and the volume with the task using it.
    let state = apps.cluster.state();
    let agent = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agent_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(agent["volumes"][0]["id"], "counter_0_0", "{agent}");
    assert_eq!(agent["volumes"][0]["task_id"], first.as_str());
    assert_eq!(agent["reserved"]["disk(apps)"], 74.0, "{agent}");
    let view = apps.get("/v1/apps/counter");
    assert_eq!(view["residents"][0]["instance"], "counter_0", "{view}");

    // Killed: it comes back on the same agent, with its data.
    let (code, _) = apps.call("POST", &format!("/v1/tasks/{first}/kill"), None);
    assert_eq!(code, 200);
    let second = wait_count(&apps, &dir, Some(&first), 2);
    assert_eq!(agent_index_of(&apps, "counter").0, index);

    // Its agent killed -9 and restarted: the task runs on, nothing is counted again.
    apps.cluster.agents[index].kill9();
    apps.cluster.add_agent(
        index,
        &format!(
            "cpus:2;mem:1024;disk:1000;ports:[{}-{}]",
            31000 + 200 * index,
            31100 + 200 * index
        ),
    );
    apps.cluster.wait_for_agents(2);
    wait_until(Duration::from_secs(30), "the task still running", || {
        apps.running("counter").first().map(|t| t["id"].clone()) == Some(json!(second))
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("count")).unwrap().trim(),
        "2"
    );

    // The master restarted, then a rolling update: the new version counts on.
    apps.cluster.restart_master();
    apps.cluster.wait_for_agents(2);
    apps.deploy(spec("2"));
    let third = wait_count(&apps, &dir, Some(&second), 3);
    assert_eq!(agent_index_of(&apps, "counter").0, index);
    apps.wait_converged("counter", 1, Duration::from_secs(60));

    // `app rm` keeps the data; deployed again, the instance comes back on it.
    let (code, _) = apps.call("DELETE", "/v1/apps/counter", None);
    assert_eq!(code, 200);
    wait_until(Duration::from_secs(60), "the app gone", || {
        apps.call("GET", "/v1/apps/counter", None).0 == 404
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("count")).unwrap().trim(),
        "3"
    );
    apps.deploy(spec("2"));
    wait_count(&apps, &dir, Some(&third), 4);
    assert_eq!(agent_index_of(&apps, "counter").0, index);

    // `app rm --wipe` destroys the volume (checked on the agent's disk) and releases
    // the reservation.
    let (code, body) = apps.call("DELETE", "/v1/apps/counter?wipe=true", None);
    assert_eq!(code, 200, "{body}");
    wait_until(Duration::from_secs(60), "the app wiped", || {
        apps.call("GET", "/v1/apps/counter", None).0 == 404
    });
    wait_until(Duration::from_secs(30), "the volume's data gone", || {
        !dir.exists()
    });
    let state = apps.cluster.state();
    for a in state["agents"].as_array().unwrap() {
        assert_eq!(a["volumes"], json!([]), "{a}");
        assert_eq!(a["reserved"], json!({}), "{a}");
    }
}
