//! A secure master (TLS, credentials, agent certificates) against the attacks of issue
//! 14: no credential, a wrong one, a fake agent under a real agent's id, a framework
//! impostor, a gone agent's certificate, an expired certificate, a user on the agent
//! API and an agent on the operator API. Each attacker's test sits beside the user's.

mod common;

use std::time::Duration;

use common::*;
use strata_master::{MasterOptions, Security, TlsOptions};
use strata_proto::v1;
use strata_security::join::{self, AgentIdentity, JoinToken};
use strata_security::{ClientTls, Credential, MASTER_NAME};
use tonic::transport::Channel;

const ADMIN_SECRET: &str = "admin-secret-0123456789";
const EVE_SECRET: &str = "eve-secret-0123456789ab";

fn admin() -> Credential {
    Credential::new("admin", ADMIN_SECRET)
}

fn eve() -> Credential {
    Credential::new("eve", EVE_SECRET)
}

async fn secure_master(dir: &std::path::Path, agent_cert_ttl: Duration) -> TestMaster {
    let credentials = dir.join("credentials.json");
    std::fs::write(
        &credentials,
        format!(
            r#"{{"credentials":[{{"principal":"admin","secret":"{ADMIN_SECRET}"}},{{"principal":"eve","secret":"{EVE_SECRET}"}}]}}"#
        ),
    )
    .unwrap();
    let mut options = MasterOptions::new(dir.join("master"));
    options.allocation_interval = Duration::from_millis(200);
    options.security = Security::Tls(TlsOptions {
        names: vec![],
        credentials: Some(credentials),
        agent_cert_ttl,
    });
    let master = TestMaster::start_with(options).await;
    // The master writes its CA and token as it starts.
    let token = master.work_dir.join("tls/join-token");
    let deadline = std::time::Instant::now() + WAIT;
    while !(token.exists() && master.work_dir.join("tls/master.crt").exists()) {
        assert!(std::time::Instant::now() < deadline, "no {token:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Serving: /health answers over TLS.
    let tls = client_tls(&master, None);
    for _ in 0..200 {
        if let Ok(r) = https(&master, &tls)
            .get(url(&master, "/health"))
            .send()
            .await
            && r.status() == 200
        {
            return master;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the secure master did not come up");
}

fn client_tls(master: &TestMaster, credential: Option<Credential>) -> ClientTls {
    ClientTls {
        ca_pem: Some(std::fs::read_to_string(master.work_dir.join("tls/ca.crt")).unwrap()),
        identity: None,
        credential,
    }
}

fn https(master: &TestMaster, tls: &ClientTls) -> reqwest::Client {
    tls.reqwest(reqwest::Client::builder().resolve(MASTER_NAME, master.addr))
        .unwrap()
        .build()
        .unwrap()
}

fn url(master: &TestMaster, path: &str) -> String {
    format!("https://{MASTER_NAME}:{}{path}", master.addr.port())
}

async fn channel(master: &TestMaster, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    tls.endpoint(&master.addr.to_string(), MASTER_NAME)
        .unwrap()
        .connect()
        .await
}

/// `/state` as the admin reads it.
async fn admin_state(master: &TestMaster) -> serde_json::Value {
    https(master, &client_tls(master, Some(admin())))
        .get(url(master, "/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn token(master: &TestMaster) -> JoinToken {
    JoinToken::parse(&std::fs::read_to_string(master.work_dir.join("tls/join-token")).unwrap())
        .unwrap()
}

async fn join_agent(master: &TestMaster) -> AgentIdentity {
    join::join(
        &master.addr.to_string(),
        &token(master),
        &["node.example".to_string()],
    )
    .await
    .expect("join")
}

/// Opens an agent stream over `channel` whose first message registers `info`.
async fn attach_with(channel: Channel, info: v1::AgentInfo) -> Result<TestAgent, tonic::Status> {
    let (up, rx) = tokio::sync::mpsc::channel(16);
    up.send(register(info)).await.unwrap();
    let down = v1::agent_link_client::AgentLinkClient::new(channel)
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(TestAgent { up, down })
}

async fn refusal(agent: &mut TestAgent) -> v1::AgentError {
    loop {
        match next_master_message(agent).await {
            v1::master_message::Message::Error(e) => return e,
            v1::master_message::Message::Registered(r) => {
                panic!("registered as {} where a refusal was due", r.agent_id)
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn every_call_needs_a_valid_credential() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;

    // The user: the admin reads the state over HTTPS and gRPC.
    let ok = https(&master, &client_tls(&master, Some(admin())))
        .get(url(&master, "/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let mut operator = v1::operator_client::OperatorClient::with_interceptor(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        admin().interceptor(),
    );
    operator
        .get_state(v1::GetStateRequest {})
        .await
        .expect("the admin reads the state");

    // The attackers: no credential, a wrong secret, a principal that does not exist.
    for (credential, why) in [
        (None, "authentication required"),
        (
            Some(Credential::new("admin", "not-the-admin-secret")),
            "credential of 'admin' is not valid",
        ),
        (
            Some(Credential::new("mallory", ADMIN_SECRET)),
            "credential of 'mallory' is not valid",
        ),
    ] {
        let r = https(&master, &client_tls(&master, credential.clone()))
            .get(url(&master, "/state"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{credential:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{credential:?}: {body}"
        );
        let mut operator = v1::operator_client::OperatorClient::with_interceptor(
            channel(&master, &client_tls(&master, None)).await.unwrap(),
            strata_security::credentials::AuthInterceptor::new(credential.as_ref()),
        );
        let status = operator
            .get_state(v1::GetStateRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
        assert!(status.message().contains(why), "{status}");
        // A change is refused the same way, and changes nothing.
        let r = https(&master, &client_tls(&master, credential.clone()))
            .put(url(&master, "/weights"))
            .json(&serde_json::json!([{"role": "web", "weight": 1e308}]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let state: serde_json::Value = https(&master, &client_tls(&master, Some(admin())))
        .get(url(&master, "/weights"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!state.to_string().contains("web"), "{state}");

    // Plain text is not served at all.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/state", master.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP answered"
    );
    // A client that does not trust the cluster CA does not connect.
    let stranger = strata_security::ClusterCa::create().unwrap();
    let wrong_ca = ClientTls {
        ca_pem: Some(stranger.cert_pem().to_string()),
        identity: None,
        credential: Some(admin()),
    };
    assert!(
        https(&master, &wrong_ca)
            .get(url(&master, "/state"))
            .send()
            .await
            .is_err()
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_joins_and_its_id_is_bound_to_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;

    // The attacker without the token is refused.
    let ca = strata_security::ClusterCa::load_or_create(&master.work_dir.join("tls"))
        .unwrap()
        .0;
    let forged = JoinToken::new(&ca);
    let e = join::join(&master.addr.to_string(), &forged, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not this cluster's"), "{e}");

    // The user: two machines join, one registers.
    let a = join_agent(&master).await;
    let b = join_agent(&master).await;
    assert_ne!(a.node_id, b.node_id);
    let mut agent_a = attach_with(
        channel(&master, &a.client_tls()).await.unwrap(),
        agent_info("a.example"),
    )
    .await
    .unwrap();
    let agent_id = registered(&mut agent_a).await.agent_id;
    let state = admin_state(&master).await;
    assert_eq!(
        state["agents"][0]["principal"],
        format!("agent:{}", a.node_id)
    );

    // The attacker: another cluster member registers under A's id, and is refused.
    let mut impostor_info = agent_info("b.example");
    impostor_info.id = agent_id.clone();
    impostor_info.principal = format!("agent:{}", a.node_id); // claimed, not believed
    let mut agent_b = attach_with(
        channel(&master, &b.client_tls()).await.unwrap(),
        impostor_info,
    )
    .await
    .unwrap();
    let e = refusal(&mut agent_b).await;
    assert!(e.message.contains("belongs to another agent"), "{e:?}");
    assert!(!e.gone);

    // A framework's credential does not open the agent API, nor an agent's
    // certificate the operator API.
    let user_link = attach_with(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        agent_info("c.example"),
    )
    .await;
    assert_eq!(
        user_link.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let mut as_user = v1::agent_link_client::AgentLinkClient::with_interceptor(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        admin().interceptor(),
    );
    let (up, rx) = tokio::sync::mpsc::channel(1);
    up.send(register(agent_info("c.example"))).await.unwrap();
    let status = as_user
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    let status =
        v1::operator_client::OperatorClient::new(channel(&master, &a.client_tls()).await.unwrap())
            .get_state(v1::GetStateRequest {})
            .await
            .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");

    // Renewal keeps the node: the renewed certificate registers under the same id.
    let renewed = join::renew(&master.addr.to_string(), &a, &[])
        .await
        .unwrap();
    assert_eq!(renewed.node_id, a.node_id);
    assert_ne!(renewed.cert_pem, a.cert_pem);
    drop(agent_a);
    let mut info = agent_info("a.example");
    info.id = agent_id.clone();
    let mut again = attach_with(channel(&master, &renewed.client_tls()).await.unwrap(), info)
        .await
        .unwrap();
    assert_eq!(registered(&mut again).await.agent_id, agent_id);
    // Nobody renews without a certificate.
    let r = https(&master, &client_tls(&master, Some(admin())))
        .post(url(&master, "/tls/renew"))
        .json(&serde_json::json!({"csr": "x", "names": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_framework_id_is_bound_to_the_principal_that_registered_it() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let scheduler = |credential: Credential| {
        let master = &master;
        async move {
            v1::scheduler_client::SchedulerClient::with_interceptor(
                channel(master, &client_tls(master, None)).await.unwrap(),
                credential.interceptor(),
            )
        }
    };
    // The user subscribes; the master records its authenticated principal, whatever
    // the FrameworkInfo claims.
    let mut info = framework_info("apps");
    info.principal = "somebody-else".into();
    let mut stream = scheduler(admin())
        .await
        .subscribe(subscribe_request(info.clone()))
        .await
        .unwrap()
        .into_inner();
    let id = subscribed(&mut stream).await.framework_id;
    let state = admin_state(&master).await;
    assert_eq!(state["frameworks"][0]["principal"], "admin");

    // The impostor, with credentials of its own and the id read from /state, is refused
    // and the real framework keeps its subscription.
    info.id = id.clone();
    let mut impostor = scheduler(eve())
        .await
        .subscribe(subscribe_request(info.clone()))
        .await
        .unwrap()
        .into_inner();
    match next_event(&mut impostor).await.event {
        Some(v1::event::Event::Error(e)) => {
            assert!(
                e.message
                    .contains("registered by principal 'admin', not 'eve'"),
                "{}",
                e.message
            )
        }
        other => panic!("the impostor got {other:?}"),
    }
    let state = admin_state(&master).await;
    assert_eq!(state["frameworks"][0]["connected"], true, "{state}");

    // The real framework fails over with its own credentials.
    let mut failover = scheduler(admin())
        .await
        .subscribe(subscribe_request(info))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subscribed(&mut failover).await.framework_id, id);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_gone_agents_certificate_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let a = join_agent(&master).await;
    let mut agent = attach_with(
        channel(&master, &a.client_tls()).await.unwrap(),
        agent_info("a.example"),
    )
    .await
    .unwrap();
    let agent_id = registered(&mut agent).await.agent_id;
    let r = https(&master, &client_tls(&master, Some(admin())))
        .post(url(&master, "/maintenance/gone"))
        .json(&serde_json::json!({ "agent_id": agent_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The machine tries to come back as a new agent with the same certificate.
    let mut back = attach_with(
        channel(&master, &a.client_tls()).await.unwrap(),
        agent_info("a.example"),
    )
    .await
    .unwrap();
    let e = refusal(&mut back).await;
    assert!(e.gone && e.message.contains("revoked"), "{e:?}");
    let e = join::renew(&master.addr.to_string(), &a, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_agent_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(1)).await;
    let a = join_agent(&master).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refused = match channel(&master, &a.client_tls()).await {
        Err(_) => true,
        Ok(channel) => attach_with(channel, agent_info("a.example")).await.is_err(),
    };
    assert!(refused, "an expired certificate was accepted");
    master.stop().await.unwrap();
}
