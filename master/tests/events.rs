//! The operator event stream (`Operator.Subscribe`, issue 15): a snapshot, then every
//! change of agents, frameworks and tasks in order; a client that drops and resumes
//! gets exactly the events it missed, once each.

mod common;

use common::*;
use strata_proto::v1;
use strata_proto::v1::event::Event as Ev;
use strata_proto::v1::operator_event::Event;

async fn events(
    master: &TestMaster,
    resume: Option<(&str, u64)>,
) -> tonic::Streaming<v1::OperatorEvent> {
    let request = v1::OperatorSubscribeRequest {
        resume_master_id: resume.map(|(m, _)| m.to_string()).unwrap_or_default(),
        resume_after: resume.map(|(_, s)| s),
        proxy: String::new(),
    };
    master
        .operator()
        .await
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner()
}

/// The next event that is not a heartbeat.
async fn next(stream: &mut tonic::Streaming<v1::OperatorEvent>) -> v1::OperatorEvent {
    loop {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event within the wait")
            .expect("stream healthy")
            .expect("stream open");
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            return event;
        }
    }
}

async fn send_status(
    agent: &TestAgent,
    agent_id: &str,
    framework_id: &str,
    state: v1::TaskState,
    uuid: &str,
) {
    let status = v1::TaskStatus {
        task_id: "t1".into(),
        state: state as i32,
        source: v1::TaskStatusSource::SourceAgent as i32,
        agent_id: agent_id.into(),
        framework_id: framework_id.into(),
        uuid: uuid.into(),
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
}

#[tokio::test]
async fn a_client_sees_every_change_in_order_and_resumes_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;

    // First the state as it is: nothing yet.
    let mut stream = events(&master, None).await;
    let snapshot = next(&mut stream).await;
    let Some(Event::Snapshot(state)) = &snapshot.event else {
        panic!("{snapshot:?}")
    };
    assert!(state.agents.is_empty() && state.frameworks.is_empty());
    let master_id = snapshot.master_id.clone();
    assert_eq!(master_id, state.master_id);

    // An agent registers, a framework subscribes and launches a task, which runs.
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .unwrap();
    let reg = registered(&mut agent).await;
    let added = next(&mut stream).await;
    match &added.event {
        Some(Event::AgentAdded(a)) => {
            assert_eq!(a.info.as_ref().unwrap().id, reg.agent_id);
            assert_eq!(a.status, "ACTIVE");
        }
        other => panic!("{other:?}"),
    }
    let (mut fw_events, s) = subscribe(&master, framework_info("watched")).await;
    match next(&mut stream).await.event {
        Some(Event::FrameworkAdded(f)) => assert_eq!(f.info.unwrap().id, s.framework_id),
        other => panic!("{other:?}"),
    }
    let offer = loop {
        if let Some(Ev::Offers(o)) = next_event(&mut fw_events).await.event {
            break o.offers.into_iter().next().unwrap();
        }
    };
    let task = v1::TaskInfo {
        task_id: "t1".into(),
        name: "sleep".into(),
        resources: strata_proto::Resources::cpus_mem(0.5, 64.0).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 1".into(),
            ..Default::default()
        }),
        discovery: Some(v1::DiscoveryInfo {
            name: "web".into(),
            ports: Some(v1::Ports {
                ports: vec![v1::Port {
                    number: 31000,
                    name: "http".into(),
                    protocol: "tcp".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    master
        .scheduler()
        .await
        .accept(v1::AcceptRequest {
            header: Some(v1::CallHeader {
                framework_id: s.framework_id.clone(),
                stream_id: s.stream_id.clone(),
            }),
            offer_ids: vec![offer.id],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    task_infos: vec![task],
                })),
            }],
            filters: None,
        })
        .await
        .unwrap();
    let added = loop {
        if let Some(Event::TaskAdded(t)) = next(&mut stream).await.event {
            break t;
        }
    };
    assert_eq!(
        (added.task_id.as_str(), added.state),
        ("t1", v1::TaskState::TaskStaging as i32)
    );
    // Its discovery info is kept: in the event, and in /state.
    let discovery = added.discovery.expect("discovery info");
    assert_eq!(discovery.name, "web");
    assert_eq!(discovery.ports.unwrap().ports[0].name, "http");
    let state = state_json(&master).await;
    assert_eq!(
        state["tasks"][0]["discovery"],
        serde_json::json!({"name": "web", "ports": [{"number": 31000, "name": "http", "protocol": "tcp"}]})
    );
    send_status(
        &agent,
        &reg.agent_id,
        &s.framework_id,
        v1::TaskState::TaskRunning,
        "u1",
    )
    .await;
    let running = loop {
        let e = next(&mut stream).await;
        if let Some(Event::TaskUpdated(t)) = &e.event {
            assert_eq!(t.state, v1::TaskState::TaskRunning as i32);
            break e;
        }
    };

    // The client goes away; the task finishes meanwhile.
    drop(stream);
    send_status(
        &agent,
        &reg.agent_id,
        &s.framework_id,
        v1::TaskState::TaskFinished,
        "u2",
    )
    .await;
    // (Wait for it to be through the master: the framework gets its update.)
    loop {
        if let Some(Ev::Update(u)) = next_event(&mut fw_events).await.event
            && u.status.unwrap().state == v1::TaskState::TaskFinished as i32
        {
            break;
        }
    }

    // It resumes after the last event it saw: the missed event, once, no snapshot.
    let mut resumed = events(&master, Some((&master_id, running.seq))).await;
    let missed = next(&mut resumed).await;
    assert_eq!(missed.seq, running.seq + 1);
    match &missed.event {
        Some(Event::TaskUpdated(t)) => {
            assert_eq!(
                (t.task_id.as_str(), t.state),
                ("t1", v1::TaskState::TaskFinished as i32)
            )
        }
        other => panic!("{other:?}"),
    }

    // From the start: every event once, numbered without gaps.
    let mut replay = events(&master, Some((&master_id, 0))).await;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&missed.seq) {
        seqs.push(next(&mut replay).await.seq);
    }
    assert_eq!(seqs, (1..=missed.seq).collect::<Vec<_>>());

    // Another master's resume point (a restarted master): a fresh snapshot.
    let mut fresh = events(&master, Some(("another-master", 3))).await;
    let Some(Event::Snapshot(state)) = next(&mut fresh).await.event else {
        panic!("no snapshot")
    };
    assert_eq!(state.agents.len(), 1);
    assert_eq!(
        state.tasks.len(),
        1,
        "the finished task is among the completed"
    );
    master.stop().await.unwrap();
}
