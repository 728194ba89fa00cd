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
