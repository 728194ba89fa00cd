//! An agent attaches to the master over a real loopback socket.

mod common;

use common::*;
use strata_proto::v1;

#[tokio::test]
async fn an_agent_registering_gets_registered() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let r = registered(&mut agent).await;
    assert!(!r.agent_id.is_empty());
    assert!(r.heartbeat_interval_seconds > 0.0);
    let state = state_json(&master).await;
    assert_eq!(r.master_id, state["master_id"].as_str().unwrap());
    let agents = state["agents"].as_array().unwrap();
    let a = agents
        .iter()
        .find(|a| a["id"] == r.agent_id.as_str())
        .expect("agent in /state");
    assert_eq!(a["hostname"], "node1");
    assert_eq!(a["status"], "ACTIVE");
    assert_eq!(a["total"]["cpus"], 4.0);
    // Heartbeats are accepted on the same stream.
    agent
        .up
        .send(v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        })
        .await
        .unwrap();
    // The operator API lists it too.
    let agents = master
        .operator()
        .await
        .get_agents(v1::GetAgentsRequest {})
        .await
        .unwrap();
    assert!(
        agents
            .get_ref()
            .agents
            .iter()
            .any(|a| a.info.as_ref().unwrap().id == r.agent_id)
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_that_does_not_start_with_register_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let heartbeat = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
    };
    let err = match attach(&master, heartbeat).await {
        Err(status) => status,
        Ok(mut agent) => agent.down.message().await.expect_err("refused"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("Register"), "{}", err.message());

    let empty = v1::AgentMessage { message: None };
    let err = match attach(&master, empty).await {
        Err(status) => status,
        Ok(mut agent) => agent.down.message().await.expect_err("refused"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let no_info = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register::default())),
    };
    let err = match attach(&master, no_info).await {
        Err(status) => status,
        Ok(mut agent) => agent.down.message().await.expect_err("refused"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    assert_eq!(http_get(&master, "/health").await.status(), 200);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_whose_stream_closes_is_no_longer_active() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let r = registered(&mut agent).await;
    drop(agent);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = state_json(&master).await;
        let status = state["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == r.agent_id.as_str())
            .map(|a| a["status"].clone());
        if status.as_ref().and_then(|s| s.as_str()) != Some("ACTIVE") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "agent still ACTIVE");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    master.stop().await.unwrap();
}
