//! One whole resource-offer cycle through the gRPC layer and the driver: an agent
//! registers, a framework gets an offer, launches a task on it, the agent reports it
//! running, and the acknowledgement travels back to the agent.

mod common;

use common::*;
use strata_proto::v1;
use strata_proto::v1::event::Event as Ev;
use strata_proto::v1::master_message::Message as Down;

async fn next_offers(events: &mut tonic::Streaming<v1::Event>) -> Vec<v1::Offer> {
    loop {
        if let Some(Ev::Offers(o)) = next_event(events).await.event {
            return o.offers;
        }
    }
}

async fn next_update(events: &mut tonic::Streaming<v1::Event>) -> v1::TaskStatus {
    loop {
        if let Some(Ev::Update(u)) = next_event(events).await.event {
            return u.status.expect("status in UPDATE");
        }
    }
}

#[tokio::test]
async fn offer_launch_update_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let reg = registered(&mut agent).await;
    let (mut events, s) = subscribe(&master, framework_info("e2e")).await;
    let header = Some(v1::CallHeader {
        framework_id: s.framework_id.clone(),
        stream_id: s.stream_id.clone(),
    });

    let offers = next_offers(&mut events).await;
    let offer = offers
        .iter()
        .find(|o| o.agent_id == reg.agent_id)
        .expect("an offer for node1");
    assert_eq!(offer.framework_id, s.framework_id);

    let task = v1::TaskInfo {
        task_id: "t1".into(),
        name: "sleep".into(),
        agent_id: reg.agent_id.clone(),
        resources: strata_proto::Resources::cpus_mem(0.5, 64.0).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut client = master.scheduler().await;
    client
        .accept(v1::AcceptRequest {
            header: header.clone(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    task_infos: vec![task],
                })),
            }],
            filters: None,
        })
        .await
        .expect("accept");

    // The agent is told to run it (the tasks of one ACCEPT come in one RunTasks, with
    // the framework's info once).
    let run = loop {
        if let Down::RunTasks(r) = next_master_message(&mut agent).await {
            break r;
        }
    };
    let ids: Vec<&str> = run.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t1"]);
    assert_eq!(run.framework.as_ref().unwrap().id, s.framework_id);

    // The agent reports it running; the framework sees the update.
    let status = v1::TaskStatus {
        task_id: "t1".into(),
        state: v1::TaskState::TaskRunning as i32,
        source: v1::TaskStatusSource::SourceAgent as i32,
        agent_id: reg.agent_id.clone(),
        framework_id: s.framework_id.clone(),
        uuid: "u-1".into(),
        timestamp: strata_proto::now_unix_seconds(),
        ..Default::default()
    };
    agent
        .up
        .send(v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(status),
            })),
        })
        .await
        .unwrap();
    let update = loop {
        let u = next_update(&mut events).await;
        if u.state == v1::TaskState::TaskRunning as i32 {
            break u;
        }
    };
    assert_eq!(update.task_id, "t1");
    assert_eq!(update.uuid, "u-1");

    // The framework acknowledges; the agent hears of it.
    client
        .acknowledge(v1::AcknowledgeRequest {
            header: header.clone(),
            agent_id: reg.agent_id.clone(),
            task_id: "t1".into(),
            uuid: "u-1".into(),
        })
        .await
        .expect("acknowledge");
    let ack = loop {
        if let Down::Acknowledge(a) = next_master_message(&mut agent).await {
            break a;
        }
    };
    assert_eq!((ack.task_id.as_str(), ack.uuid.as_str()), ("t1", "u-1"));

    // Operators see the running task, over gRPC and HTTP.
    let tasks = master
        .operator()
        .await
        .get_tasks(v1::GetTasksRequest {})
        .await
        .unwrap();
    let t = tasks
        .get_ref()
        .tasks
        .iter()
        .find(|t| t.task_id == "t1")
        .expect("task listed");
    assert_eq!(t.state, v1::TaskState::TaskRunning as i32);
    let state = state_json(&master).await;
    let t = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "t1")
        .unwrap()
        .clone();
    assert_eq!(t["state"], "TASK_RUNNING");
    let metrics = http_get(&master, "/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("\nstrata_master_tasks_running 1\n"),
        "{metrics}"
    );

    master.stop().await.unwrap();
    // Shutdown ends the agent's stream as well.
    let end = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = agent.down.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the agent stream outlived the master");
}
