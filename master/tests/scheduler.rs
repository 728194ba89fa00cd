//! A framework talks to the master's scheduler API over a real loopback socket.

mod common;

use common::*;
use strata_proto::v1;

fn header(framework_id: &str, stream_id: &str) -> Option<v1::CallHeader> {
    Some(v1::CallHeader {
        framework_id: framework_id.into(),
        stream_id: stream_id.into(),
    })
}

#[tokio::test]
async fn a_framework_subscribes_and_gets_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (_events, s) = subscribe(&master, framework_info("hello")).await;
    assert!(!s.framework_id.is_empty());
    assert!(!s.stream_id.is_empty());
    assert!(s.heartbeat_interval_seconds > 0.0);
    let state = state_json(&master).await;
    assert_eq!(s.master_id, state["master_id"].as_str().unwrap());
    let frameworks = state["frameworks"].as_array().unwrap();
    assert!(
        frameworks
            .iter()
            .any(|f| f["id"] == s.framework_id.as_str()),
        "{state}"
    );
    // A call with the current stream id is accepted.
    let mut client = master.scheduler().await;
    client
        .revive(v1::ReviveRequest {
            header: header(&s.framework_id, &s.stream_id),
            roles: vec![],
        })
        .await
        .expect("revive from the current stream");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_from_a_stale_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (_old_events, first) = subscribe(&master, framework_info("hello")).await;
    // The framework re-subscribes with its id: a new stream id replaces the old one.
    let mut info = framework_info("hello");
    info.id = first.framework_id.clone();
    let (_events, second) = subscribe(&master, info).await;
    assert_eq!(second.framework_id, first.framework_id);
    assert_ne!(second.stream_id, first.stream_id);

    let mut client = master.scheduler().await;
    let err = client
        .revive(v1::ReviveRequest {
            header: header(&first.framework_id, &first.stream_id),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("stale"), "{}", err.message());
    client
        .revive(v1::ReviveRequest {
            header: header(&second.framework_id, &second.stream_id),
            roles: vec![],
        })
        .await
        .expect("the current stream is accepted");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_from_an_unknown_framework_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut client = master.scheduler().await;
    let err = client
        .decline(v1::DeclineRequest {
            header: header("no-such-framework", "no-such-stream"),
            offer_ids: vec!["o1".into()],
            filters: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("no-such-framework"),
        "{}",
        err.message()
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_calls_are_invalid_argument_and_the_master_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let mut client = master.scheduler().await;

    let err = client
        .revive(v1::ReviveRequest {
            header: None,
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("header"), "{}", err.message());

    let err = client
        .accept(v1::AcceptRequest {
            header: header("", ""),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = client
        .teardown(v1::TeardownRequest { header: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = client
        .subscribe(v1::SubscribeRequest {
            framework_info: None,
            suppressed_roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Bytes that do not decode as the request message.
    let mut grpc = tonic::client::Grpc::new(master.channel().await);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<Bogus, v1::CallResponse, _>(
            tonic::Request::new(Bogus { header: 7 }),
            "/strata.v1.Scheduler/Revive".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Internal | tonic::Code::InvalidArgument
        ),
        "{err:?}"
    );

    // Same connection, same master: still serving.
    assert_eq!(http_get(&master, "/health").await.status(), 200);
    client
        .revive(v1::ReviveRequest {
            header: None,
            roles: vec![],
        })
        .await
        .expect_err("still answering");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_subscription_marks_the_framework_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (events, s) = subscribe(&master, framework_info("hello")).await;
    drop(events);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = state_json(&master).await;
        let f = state["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == s.framework_id.as_str())
            .cloned()
            .expect("framework kept for its failover timeout");
        if f["connected"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected: {f}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    master.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (mut events, _s) = subscribe(&master, framework_info("hello")).await;
    master.stop().await.unwrap();
    // The stream ends (cleanly or with an error), it does not hang.
    let end = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = events.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the subscription stream outlived the master");
}

/// A message whose field 1 is a number where ReviveRequest has a CallHeader: its
/// bytes are not a valid ReviveRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct Bogus {
    #[prost(uint64, tag = "1")]
    header: u64,
}
