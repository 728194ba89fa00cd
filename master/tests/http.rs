//! An operator (or a monitoring system) reads the master over plain HTTP/1.1 on the
//! same port that serves gRPC.

mod common;

use common::*;

#[tokio::test]
async fn health_answers_ok() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.text().await.unwrap(), "ok");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn state_is_json_with_the_master_id() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/state").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers()
    );
    let state: serde_json::Value = r.json().await.unwrap();
    let id = state["master_id"].as_str().expect("master_id");
    assert!(!id.is_empty());
    for key in ["agents", "frameworks", "tasks", "roles"] {
        assert!(state[key].is_array(), "{key} in {state}");
    }
    // The gRPC operator API on the same port says the same.
    let grpc = master
        .operator()
        .await
        .get_state(strata_proto::v1::GetStateRequest {})
        .await
        .unwrap();
    assert_eq!(grpc.get_ref().master_id, id);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("# HELP strata_master_agents_active "),
        "{text}"
    );
    assert!(
        text.contains("# TYPE strata_master_agents_active gauge\n"),
        "{text}"
    );
    assert!(text.contains("\nstrata_master_agents_active 0\n"), "{text}");
    assert!(
        text.contains("# TYPE strata_master_offers_sent_total counter\n"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.split_once(' ').expect("name value");
        assert!(name.starts_with("strata_master_"), "{line}");
        assert!(value == "NaN" || value.parse::<f64>().is_ok(), "{line}");
    }
    master.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_are_404_and_unknown_grpc_methods_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/nope").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("try / (the dashboard)"));
    assert_eq!(http_get(&master, "/ui/nope").await.status(), 404);
    // A gRPC client calling a service this master does not serve.
    let mut grpc = tonic::client::Grpc::new(master.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost_codec();
    let err = grpc
        .unary::<strata_proto::v1::GetStateRequest, strata_proto::v1::GetStateResponse, _>(
            tonic::Request::new(strata_proto::v1::GetStateRequest {}),
            "/strata.v1.Nope/Get".parse().unwrap(),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    // And the master still serves.
    assert_eq!(http_get(&master, "/health").await.status(), 200);
    master.stop().await.unwrap();
}

fn tonic_prost_codec()
-> tonic_prost::ProstCodec<strata_proto::v1::GetStateRequest, strata_proto::v1::GetStateResponse> {
    tonic_prost::ProstCodec::default()
}

/// Prometheus' own linter, on the `/metrics` of a real master with an agent registered:
/// exit 0 and not one warning (counter and gauge names, base units, help texts).
#[tokio::test]
async fn metrics_pass_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    registered(&mut agent).await;
    let text = http_get(&master, "/metrics").await.text().await.unwrap();
    // The agent's cpus:4 and mem:4096 (MiB), as gauges in base units.
    assert!(
        text.contains("# TYPE strata_master_cpus_capacity gauge\nstrata_master_cpus_capacity 4\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrata_master_mem_capacity_bytes 4294967296\n"),
        "{text}"
    );
    assert!(!text.contains("strata_master_cpus_total"), "{text}");

    let out = promtool_check_metrics(&text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout: {stdout}\nstderr: {stderr}\nexposition:\n{text}",
        out.status
    );
    master.stop().await.unwrap();
}

/// `promtool check metrics` with `text` on its stdin. Fails the test when promtool is
/// missing: the check is part of the suite, never skipped.
fn promtool_check_metrics(text: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed ({e}): it checks the master's /metrics; install Debian's \
             `prometheus` package (apt-get install prometheus, as scripts/test.sh does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    child.wait_with_output().expect("wait for promtool")
}

/// README.md's weights example, run as written with curl (whose `-d` sends
/// `Content-Type: application/x-www-form-urlencoded`), against this master.
#[tokio::test]
async fn the_readme_weights_example_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let example = readme
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("PUT") && l.contains("/weights"))
        .expect("README.md shows `curl -X PUT .../weights`");
    assert!(example.contains("127.0.0.1:5050"), "{example}");
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    // The shell runs the line as a user would paste it (the `# ...` comment included).
    let command = example.replace("127.0.0.1:5050", &master.addr.to_string());
    let out = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .await
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(127),
        "curl is not installed (scripts/test.sh installs it): {stderr}"
    );
    assert!(out.status.success(), "{command}: {stdout}{stderr}");
    assert_eq!(stdout, "{}", "{command}");

    let weights: serde_json::Value = http_get(&master, "/weights").await.json().await.unwrap();
    assert!(
        weights
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"role": "web", "weight": 3.0})),
        "{weights}"
    );
    let state = state_json(&master).await;
    let web = state["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .unwrap_or_else(|| panic!("role web in {state}"));
    assert_eq!(web["weight"], 3.0, "{state}");
    master.stop().await.unwrap();
}

/// `PUT /weights` and `POST /maintenance/*` read their body as JSON whatever the
/// Content-Type says; a body that is not JSON is a 400 that shows what to send.
#[tokio::test]
async fn operator_changes_take_json_bodies_and_refuse_web_pages() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let http = reqwest::Client::new();
    let put_weight = |content_type: Option<&'static str>, origin: Option<&'static str>| {
        let mut request = http
            .put(master.url("/weights"))
            .body(r#"[{"role": "batch", "weight": 5}]"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    // The attacker: a web page the operator has open posts a "simple" request (no
    // CORS preflight): a text/plain or form body, or no content type, from its origin.
    for (content_type, origin, status) in [
        (Some("text/plain"), Some("http://evil.example"), 403),
        (Some("text/plain"), None, 415),
        (Some("application/x-www-form-urlencoded"), None, 415),
        (None, None, 415),
        (Some("application/json"), Some("http://evil.example"), 403),
    ] {
        let r = put_weight(content_type, origin).await.unwrap();
        assert_eq!(r.status(), status, "{content_type:?} {origin:?}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("Content-Type: application/json") || text.contains("cross-origin"),
            "{text}"
        );
    }
    let r = http
        .post(master.url("/maintenance/gone"))
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(r#"{"agent_id": "nope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nothing changed.
    let weights: serde_json::Value = http_get(&master, "/weights").await.json().await.unwrap();
    assert!(
        !weights.to_string().contains("batch"),
        "a refused request changed the weights: {weights}"
    );

    // The user: curl or a script with a JSON body.
    let r = put_weight(Some("application/json"), None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{}");
    let weights: serde_json::Value = http_get(&master, "/weights").await.json().await.unwrap();
    assert!(
        weights
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"role": "batch", "weight": 5.0})),
        "{weights}"
    );
    // Bad JSON gets a clear 400.
    for (path, body, wanted) in [
        ("/weights", "role=web&weight=3", "not valid JSON"),
        ("/weights", r#"{"web": 3}"#, "not what this endpoint takes"),
        ("/maintenance/drain", "agent_id=x", "not valid JSON"),
    ] {
        let request = if path == "/weights" {
            http.put(master.url(path))
        } else {
            http.post(master.url(path))
        };
        let r = request
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path} {body:?}");
        let text = r.text().await.unwrap();
        assert!(text.contains(wanted), "{path} {body:?}: {text}");
        assert!(text.contains("send JSON like"), "{path} {body:?}: {text}");
    }
    master.stop().await.unwrap();
}

/// The dashboard (issue 18): `/` is a page with the cluster's numbers, safe headers and
/// its assets served from the binary.
#[tokio::test]
async fn the_dashboard_is_served_at_the_root_with_its_assets() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/").await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["content-security-policy"], "default-src 'self'");
    assert_eq!(h["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    for id in ["agents-active", "tasks-running", "cpus-total", "live"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} in {page}");
    }
    assert!(!page.contains("<script>"), "no inline script: {page}");
    for (path, kind) in [
        ("/ui/app.css", "text/css"),
        ("/ui/app.js", "text/javascript"),
    ] {
        let r = http_get(&master, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let r = http_get(&master, "/ui/agents?page=7").await;
    assert!(r.text().await.unwrap().contains("page 1 of 1"));
    master.stop().await.unwrap();
}

/// The dashboard's frameworks page lists a subscribed framework with its role, and the
/// roles.
#[tokio::test]
async fn the_dashboard_lists_frameworks_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut info = framework_info("night-<batch>");
    info.roles = vec!["batch".into()];
    let (_stream, subscribed) = subscribe(&master, info).await;
    let r = http_get(&master, "/ui/frameworks").await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "data-framework-id=\"{}\"",
            subscribed.framework_id
        )),
        "{page}"
    );
    assert!(page.contains("night-&lt;batch&gt;"), "escaped: {page}");
    assert!(!page.contains("night-<batch>"));
    assert!(page.contains("data-role=\"batch\""), "{page}");
    assert!(page.contains("1 h"), "the failover timeout: {page}");
    master.stop().await.unwrap();
}

/// The dashboard's tasks page: its filters and an empty cluster's answer.
#[tokio::test]
async fn the_dashboard_tasks_page_filters_on_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(
        &master,
        "/ui/tasks?state=TASK_RUNNING&framework=%3Cx%3E&agent=&page=3",
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"task-count\">0 task(s)"), "{page}");
    assert!(
        page.contains("<option selected>TASK_RUNNING</option>"),
        "{page}"
    );
    assert!(page.contains("value=\"&lt;x&gt;\""), "escaped: {page}");
    assert!(page.contains("No tasks match."));
    master.stop().await.unwrap();
}

/// The task page: an unknown task's page says so with a 404; the relay answers JSON
/// reasons, never the agent's HTML or a login prompt.
#[tokio::test]
async fn the_dashboard_task_page_of_an_unknown_task_is_a_404_page() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let r = http_get(&master, "/ui/tasks/%3Cb%3Ex").await;
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"not-found\""), "{page}");
    assert!(
        page.contains("&lt;b&gt;x") && !page.contains("<b>x"),
        "escaped: {page}"
    );
    let r = http_get(&master, "/ui/tasks/x/files/read?file=stdout").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no task 'x' that you may view");
    master.stop().await.unwrap();
}
