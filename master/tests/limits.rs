//! The message size limit over a real socket: the master takes a request of up to
//! `strata_proto::limits::MAX_MESSAGE_BYTES` and refuses a larger one at the gRPC
//! layer, and a field over its limit is refused with a message naming the field.

mod common;

use common::*;
use strata_proto::limits::{self, MAX_MESSAGE_BYTES};
use strata_proto::v1;
use tonic::Code;

fn header(s: &v1::Subscribed) -> Option<v1::CallHeader> {
    Some(v1::CallHeader {
        framework_id: s.framework_id.clone(),
        stream_id: s.stream_id.clone(),
    })
}

/// An ACCEPT of an unknown offer with tasks carrying `bytes` of data in all (each
/// task under the limit on one task).
fn accept(s: &v1::Subscribed, bytes: usize) -> v1::AcceptRequest {
    let per_task = limits::MAX_TASK_BYTES - 1024;
    let task_infos = (0..bytes.div_ceil(per_task))
        .map(|i| v1::TaskInfo {
            task_id: format!("t{i}"),
            data: vec![7; per_task.min(bytes - i * per_task)],
            ..Default::default()
        })
        .collect();
    v1::AcceptRequest {
        header: header(s),
        offer_ids: vec!["no-such-offer".into()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos })),
        }],
        filters: None,
    }
}

#[tokio::test]
async fn a_request_of_the_shared_limit_is_taken_and_a_larger_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (mut events, s) = subscribe(&master, framework_info("big")).await;

    // Just under the limit (the rest of the message takes a few KiB): the master
    // decodes it and answers each task (its offer is unknown).
    let mut client = master.scheduler().await;
    let near = accept(&s, MAX_MESSAGE_BYTES - (64 << 10));
    let tasks = match &near.operations[0].operation {
        Some(v1::operation::Operation::Launch(l)) => l.task_infos.len(),
        _ => unreachable!(),
    };
    assert!(prost::Message::encoded_len(&near) <= MAX_MESSAGE_BYTES);
    client
        .accept(near)
        .await
        .expect("an ACCEPT under the limit");
    for _ in 0..tasks {
        match next_event(&mut events).await.event {
            Some(v1::event::Event::Update(u)) => {
                let status = u.status.unwrap();
                assert!(
                    status.message.contains("no-such-offer"),
                    "{}",
                    status.message
                );
            }
            Some(v1::event::Event::Heartbeat(_)) => {}
            other => panic!("expected an update, got {other:?}"),
        }
    }

    // Over it: refused before it reaches the core, by a client that would send it.
    let mut unlimited = v1::scheduler_client::SchedulerClient::new(master.channel().await)
        .max_encoding_message_size(usize::MAX);
    let err = unlimited
        .accept(accept(&s, MAX_MESSAGE_BYTES + (64 << 10)))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::InvalidArgument, "{err:?}");
    // And the client with the shared limit does not send it at all.
    let err = client
        .accept(accept(&s, MAX_MESSAGE_BYTES + (64 << 10)))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::InvalidArgument, "{err:?}");

    // A framework message over its own limit is refused by the core.
    let err = client
        .message(v1::MessageRequest {
            header: header(&s),
            agent_id: "a".into(),
            task_id: "t".into(),
            data: vec![7; limits::MAX_MESSAGE_DATA_BYTES + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "MESSAGE: the message's data is 4194305 bytes; the limit is 4194304"
    );

    // The master keeps serving.
    client
        .revive(v1::ReviveRequest {
            header: header(&s),
            roles: vec![],
        })
        .await
        .expect("revive");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_framework_name_of_10_mb_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut client = master.scheduler().await;
    let info = framework_info(&"n".repeat(10 << 20));
    let mut stream = client
        .subscribe(subscribe_request(info))
        .await
        .expect("subscribe")
        .into_inner();
    match next_event(&mut stream).await.event {
        Some(v1::event::Event::Error(e)) => {
            assert_eq!(
                e.message,
                "framework name is 10485760 bytes; the limit is 1024"
            )
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    let state = state_json(&master).await;
    assert_eq!(
        state["frameworks"].as_array().map(Vec::len),
        Some(0),
        "{state}"
    );
    master.stop().await.unwrap();
}
