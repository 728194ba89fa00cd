//! Bad input from a framework, over the real gRPC API of a real master: each call is
//! answered with a clear error (or a TASK_ERROR update naming the problem) and the
//! master keeps serving with its state intact.

mod common;

use std::time::Duration;

use strata_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

struct Fw {
    client: SchedulerClient<Channel>,
    events: tonic::Streaming<v1::Event>,
    header: v1::CallHeader,
}

async fn subscribe(url: &str, name: &str) -> Fw {
    let mut client = SchedulerClient::connect(url.to_string())
        .await
        .expect("connect");
    let info = v1::FrameworkInfo {
        name: name.into(),
        ..Default::default()
    };
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = next_event(&mut events).await;
    let Some(v1::event::Event::Subscribed(s)) = first.event else {
        panic!("expected SUBSCRIBED, got {first:?}")
    };
    assert!(!s.framework_id.is_empty() && !s.stream_id.is_empty());
    Fw {
        client,
        events,
        header: v1::CallHeader {
            framework_id: s.framework_id,
            stream_id: s.stream_id,
        },
    }
}

async fn next_event(events: &mut tonic::Streaming<v1::Event>) -> v1::Event {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event within 20 s")
        .expect("stream open")
        .expect("event")
}

/// The next event that is not a heartbeat.
async fn next_useful(events: &mut tonic::Streaming<v1::Event>) -> v1::event::Event {
    loop {
        match next_event(events).await.event {
            Some(v1::event::Event::Heartbeat(_)) | None => continue,
            Some(e) => return e,
        }
    }
}

async fn next_offers(fw: &mut Fw) -> Vec<v1::Offer> {
    loop {
        if let v1::event::Event::Offers(o) = next_useful(&mut fw.events).await {
            return o.offers;
        }
    }
}

/// The next status update, acknowledged as a scheduler must (the agent sends a task's
/// next update only after the previous one is acknowledged).
async fn next_update(fw: &mut Fw) -> v1::TaskStatus {
    loop {
        if let v1::event::Event::Update(u) = next_useful(&mut fw.events).await {
            let status = u.status.expect("status");
            if !status.uuid.is_empty() {
                let ack = v1::AcknowledgeRequest {
                    header: Some(fw.header.clone()),
                    agent_id: status.agent_id.clone(),
                    task_id: status.task_id.clone(),
                    uuid: status.uuid.clone(),
                };
                fw.client.acknowledge(ack).await.expect("acknowledge");
            }
            return status;
        }
    }
}

fn task(id: &str, agent: &str, cpus: f64, mem: f64) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        agent_id: agent.into(),
        resources: vec![
            v1::Resource {
                name: "cpus".into(),
                scalar: cpus,
                ..Default::default()
            },
            v1::Resource {
                name: "mem".into(),
                scalar: mem,
                ..Default::default()
            },
        ],
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 30".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn launch(
    header: &v1::CallHeader,
    offer: &v1::Offer,
    tasks: Vec<v1::TaskInfo>,
) -> v1::AcceptRequest {
    v1::AcceptRequest {
        header: Some(header.clone()),
        offer_ids: vec![offer.id.clone()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: tasks,
            })),
        }],
        // Let the resources come back at once so the next case gets an offer.
        filters: Some(v1::Filters {
            refuse_seconds: Some(0.0),
        }),
    }
}

/// Used cpus summed over every agent in /state.
fn used_cpus(state: &serde_json::Value) -> f64 {
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["used"]["cpus"].as_f64().unwrap_or(0.0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_clear_errors_and_change_nothing() {
    let cluster = common::Cluster::start(1);
    let url = cluster.grpc_url();
    let mut a = subscribe(&url, "a").await;
    let mut b = subscribe(&url, "b").await;

    // One agent, two frameworks: whoever gets the offer, the other one has none.
    let (holder, got) = tokio::select! {
        o = next_offers(&mut a) => (o, "a"),
        o = next_offers(&mut b) => (o, "b"),
    };
    let (owner, thief) = if got == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let offer = holder[0].clone();
    let agent = offer.agent_id.clone();

    // An unknown offer (as after a rescind): the call succeeds, as in Mesos, and the
    // task gets TASK_LOST (the framework is not partition aware) naming the offer.
    let mut bogus = offer.clone();
    bogus.id = "no-such-offer".into();
    owner
        .client
        .accept(launch(
            &owner.header,
            &bogus,
            vec![task("t0", &agent, 0.1, 32.0)],
        ))
        .await
        .expect("an ACCEPT of a gone offer succeeds");
    let status = next_update(owner).await;
    assert_eq!(
        (status.task_id.as_str(), status.state(), status.reason()),
        (
            "t0",
            v1::TaskState::TaskLost,
            v1::TaskStatusReason::ReasonInvalidOffers
        ),
        "{status:?}"
    );
    assert!(
        status.message.contains("no-such-offer"),
        "message names the offer: {}",
        status.message
    );
    assert_eq!(used_cpus(&cluster.state()), 0.0, "nothing is used");

    // Another framework's offer.
    let err = thief
        .client
        .accept(launch(
            &thief.header,
            &offer,
            vec![task("t1", &agent, 0.1, 32.0)],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
        ),
        "{err:?}"
    );

    // From here on only the owner takes offers.
    thief
        .client
        .suppress(v1::SuppressRequest {
            header: Some(thief.header.clone()),
            roles: vec![],
        })
        .await
        .expect("suppress");

    // A call with a stale stream id.
    let mut stale = owner.header.clone();
    stale.stream_id = "stale-stream".into();
    let err = owner
        .client
        .decline(v1::DeclineRequest {
            header: Some(stale),
            offer_ids: vec![offer.id.clone()],
            filters: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // A call with no header at all.
    let err = owner
        .client
        .revive(v1::ReviveRequest {
            header: None,
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The offer is still the owner's: nothing above consumed it. Now tasks that are
    // bad on their own: each becomes TASK_ERROR with a reason, and its resources return.
    let cases: Vec<(&str, v1::TaskInfo, &str)> = vec![
        (
            "more cpus than offered",
            task("big", &agent, 64.0, 32.0),
            "cpus",
        ),
        ("negative cpus", task("neg", &agent, -1.0, 32.0), "negative"),
        ("NaN cpus", task("nan", &agent, f64::NAN, 32.0), "finite"),
    ];
    let mut offer = offer;
    for (what, t, needle) in cases {
        owner
            .client
            .accept(launch(&owner.header, &offer, vec![t]))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = next_update(owner).await;
        assert_eq!(
            status.state(),
            v1::TaskState::TaskError,
            "{what}: {status:?}"
        );
        assert!(
            status.message.to_lowercase().contains(needle),
            "{what}: message '{}' should mention '{needle}'",
            status.message
        );
        assert_eq!(used_cpus(&cluster.state()), 0.0, "{what}: nothing is used");
        offer = next_offers(owner).await.remove(0);
    }

    // A duplicate task id: the first runs, the second (same id) is refused.
    owner
        .client
        .accept(launch(
            &owner.header,
            &offer,
            vec![
                task("dup", &agent, 0.1, 32.0),
                task("dup", &agent, 0.1, 32.0),
            ],
        ))
        .await
        .expect("accept");
    let mut states = Vec::new();
    while !states
        .iter()
        .any(|s: &v1::TaskStatus| s.state() == v1::TaskState::TaskError)
    {
        states.push(next_update(owner).await);
    }
    let error = states
        .iter()
        .find(|s| s.state() == v1::TaskState::TaskError)
        .unwrap();
    assert!(
        error.message.to_lowercase().contains("dup"),
        "duplicate id named: {}",
        error.message
    );

    // The master still serves, with its state intact: one agent, one task running.
    let state = cluster.state();
    assert_eq!(common::active_agents(&state), 1);
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 2);
    while states.last().map(|s| s.state()) != Some(v1::TaskState::TaskRunning) {
        states.push(next_update(owner).await);
    }
    assert!(states.iter().all(|s| s.task_id == "dup"), "{states:?}");
    let s = cluster.state();
    assert!(
        s["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "dup" && t["state"] == "TASK_RUNNING"),
        "{s}"
    );
    assert!(
        (used_cpus(&cluster.state()) - 0.1).abs() < 1e-9,
        "exactly the one good task's cpus are used"
    );
}
