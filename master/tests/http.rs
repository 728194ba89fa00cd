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
    assert_eq!(http_get(&master, "/nope").await.status(), 404);
    assert_eq!(http_get(&master, "/").await.status(), 404);
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
