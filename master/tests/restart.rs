//! A master restarted on the same work dir remembers the frameworks and agents it
//! admitted.

mod common;

use common::*;
use strata_master::{FileStore, Store};

#[tokio::test]
async fn the_registry_survives_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let first_id = state_json(&master).await["master_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (events, s) = subscribe(&master, framework_info("survivor")).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let r = registered(&mut agent).await;
    master.stop().await.unwrap();
    drop((events, agent));

    // What the store holds on disk.
    {
        let mut store = FileStore::open(dir.path()).expect("registry readable");
        let registry = store.load().unwrap();
        assert!(
            registry.frameworks.contains_key(&s.framework_id),
            "{registry:?}"
        );
        assert_eq!(
            registry.agents.get(&r.agent_id).map(String::as_str),
            Some("node1")
        );
    }

    // A new master on the same work dir: a fresh master id, the same registry.
    let master = TestMaster::start(dir.path()).await;
    let state = state_json(&master).await;
    assert_ne!(state["master_id"].as_str().unwrap(), first_id);
    assert!(
        state["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == s.framework_id.as_str()),
        "{state}"
    );
    assert!(
        state["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == r.agent_id.as_str()),
        "{state}"
    );

    // The framework fails over to the new master with its id.
    let mut info = framework_info("survivor");
    info.id = s.framework_id.clone();
    let (_events, again) = subscribe(&master, info).await;
    assert_eq!(again.framework_id, s.framework_id);

    // The agent re-registers with its id.
    let mut info = agent_info("node1");
    info.id = r.agent_id.clone();
    let mut agent = attach(&master, register(info)).await.expect("attach");
    let again = registered(&mut agent).await;
    assert_eq!(again.agent_id, r.agent_id);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn two_masters_cannot_share_a_work_dir() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    // Wait until the first master holds the lock.
    state_json(&master).await;
    let second = TestMaster::start(dir.path()).await;
    let err = second.stop().await.unwrap_err();
    assert!(
        err.to_string().contains("in use by another strata-master"),
        "{err}"
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_registry_stops_the_master_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.json"), "{ not json").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = strata_master::serve(
        listener,
        strata_master::MasterOptions::new(dir.path()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, strata_master::MasterError::Store(_)), "{err}");
    assert!(err.to_string().contains("registry.json"), "{err}");
}

/// `PUT /weights` and `POST /maintenance/*`: refused with a reason when wrong, and what
/// they set survives a restart on the same work dir.
#[tokio::test]
async fn weights_and_maintenance_set_over_http_and_grpc_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let agent_id = registered(&mut agent).await.agent_id;
    let http = reqwest::Client::new();

    let r = http
        .put(master.url("/weights"))
        .body(r#"[{"role": "web", "weight": 3}, {"role": "batch", "weight": 0.5}]"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .post(master.url("/maintenance/drain"))
        .json(&serde_json::json!({"agent_id": agent_id, "max_grace_period_seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Wrong calls: the status and the reason; nothing changes.
    for (path, body, status, wanted) in [
        (
            "/weights",
            r#"[{"role": "web", "weight": -2}]"#,
            400,
            "positive finite",
        ),
        ("/weights", r#"{"web": 2}"#, 400, "send JSON like"),
        (
            "/maintenance/drain",
            r#"{"agent_id": "nope"}"#,
            404,
            "unknown to this master",
        ),
        (
            "/maintenance/deactivate",
            r#"{"agent": "x"}"#,
            400,
            "unknown field",
        ),
        (
            "/maintenance/deactivate",
            &format!(r#"{{"agent_id": "{agent_id}", "max_grace_period_seconds": 1}}"#),
            400,
            "drain only",
        ),
    ] {
        let request = if path == "/weights" {
            http.put(master.url(path))
        } else {
            http.post(master.url(path))
        };
        let r = request
            .body(body.to_string())
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path} {body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(wanted), "{path} {body}: {text}");
    }
    // The same through the gRPC operator API.
    let err = master
        .operator()
        .await
        .reactivate_agent(strata_proto::v1::AgentMaintenanceRequest {
            agent_id: "nope".into(),
            max_grace_period_seconds: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    master
        .operator()
        .await
        .update_weights(strata_proto::v1::UpdateWeightsRequest {
            weights: vec![strata_proto::v1::update_weights_request::RoleWeight {
                role: "ops".into(),
                weight: 2.0,
            }],
        })
        .await
        .unwrap();

    let agent_of = |state: &serde_json::Value| {
        state["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == agent_id.as_str())
            .cloned()
            .unwrap()
    };
    let weights_of = |w: serde_json::Value| {
        let mut w: Vec<(String, f64)> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["role"].as_str().unwrap().to_string(),
                    r["weight"].as_f64().unwrap(),
                )
            })
            .filter(|(_, w)| *w != 1.0)
            .collect();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    };
    let expected = vec![
        ("batch".to_string(), 0.5),
        ("ops".to_string(), 2.0),
        ("web".to_string(), 3.0),
    ];
    let state = state_json(&master).await;
    assert_eq!(agent_of(&state)["maintenance"], "DRAINED", "{state}");
    let weights: serde_json::Value = http_get(&master, "/weights").await.json().await.unwrap();
    assert_eq!(weights_of(weights), expected);

    master.stop().await.unwrap();
    drop(agent);
    let master = TestMaster::start(dir.path()).await;
    let state = state_json(&master).await;
    assert_eq!(agent_of(&state)["maintenance"], "DRAINED", "{state}");
    assert_eq!(agent_of(&state)["status"], "RECOVERING", "{state}");
    let weights: serde_json::Value = http_get(&master, "/weights").await.json().await.unwrap();
    assert_eq!(weights_of(weights), expected);
    let r = http
        .post(master.url("/maintenance/reactivate"))
        .json(&serde_json::json!({ "agent_id": agent_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        agent_of(&state_json(&master).await)["maintenance"],
        serde_json::Value::Null
    );
    master.stop().await.unwrap();
}
