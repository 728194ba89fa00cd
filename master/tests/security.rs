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
    secure_master_with(dir, agent_cert_ttl, None).await
}

async fn secure_master_with(
    dir: &std::path::Path,
    agent_cert_ttl: Duration,
    acls: Option<std::path::PathBuf>,
) -> TestMaster {
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
    options.acls = acls;
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
        // The dashboard is behind the same door: a browser is asked for its login.
        let page = https(&master, &client_tls(&master, credential.clone()))
            .get(url(&master, "/"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 401, "{credential:?}");
        assert!(
            page.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Basic")),
            "{:?}",
            page.headers()
        );
        assert!(!page.text().await.unwrap().contains("agents-active"));
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
    // An agent's id is its certificate's node id, and one certificate is one agent: A's
    // certificate cannot add a second agent (to be offered, and sent others' tasks).
    assert_eq!(agent_id, a.node_id);
    let mut second = agent_info("a2.example");
    second.id = "another-agent".into();
    let mut agent_a2 = attach_with(channel(&master, &a.client_tls()).await.unwrap(), second)
        .await
        .unwrap();
    let e = refusal(&mut agent_a2).await;
    assert!(
        e.message.contains("one certificate registers one agent"),
        "{e:?}"
    );
    assert_eq!(
        admin_state(&master).await["agents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

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
    // Nor does it read the credentials' digests or the ACLs any more.
    let client = join::MasterClient::new(&master.addr.to_string(), &a.client_tls())
        .await
        .unwrap();
    let e = client.credentials().await.unwrap_err();
    assert!(e.is_refusal() && e.to_string().contains("revoked"), "{e}");
    let e = client.acls().await.unwrap_err();
    assert!(e.is_refusal() && e.to_string().contains("revoked"), "{e}");
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

/// A request by `credential` to `path` (`body`: a POST or PUT of JSON); status and body.
async fn call(
    master: &TestMaster,
    credential: Credential,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = https(master, &client_tls(master, Some(credential)));
    let mut request = client.request(method, url(master, path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Subscribes a framework with `credential`; its id.
async fn subscribe_as(
    master: &TestMaster,
    credential: Credential,
) -> (tonic::Streaming<v1::Event>, String) {
    let mut client = v1::scheduler_client::SchedulerClient::with_interceptor(
        channel(master, &client_tls(master, None)).await.unwrap(),
        credential.interceptor(),
    );
    let mut stream = client
        .subscribe(subscribe_request(framework_info("fw")))
        .await
        .unwrap()
        .into_inner();
    let id = subscribed(&mut stream).await.framework_id;
    (stream, id)
}

#[tokio::test]
async fn operator_calls_and_views_are_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let (put, post, get) = (
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::GET,
    );
    let (_admin_stream, admin_fw) = subscribe_as(&master, admin()).await;
    let (_eve_stream, eve_fw) = subscribe_as(&master, eve()).await;

    // Operator actions are the operator's (the built-in ACLs: `admin`): eve is refused,
    // with who may not do what, and nothing changes.
    let weights = serde_json::json!([{"role": "web", "weight": 2}]);
    let (status, body) = call(
        &master,
        eve(),
        put.clone(),
        "/weights",
        Some(weights.clone()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "eve is not authorized to update the weight of role 'web': no rule of update_weights allows it and the ACLs are not permissive"
    );
    let (_, w) = call(&master, admin(), get.clone(), "/weights", None).await;
    assert!(!w.to_string().contains("web"), "{w}");
    let (status, _) = call(&master, admin(), put, "/weights", Some(weights)).await;
    assert_eq!(status, 200);
    for path in [
        "/maintenance/deactivate",
        "/maintenance/drain",
        "/maintenance/gone",
    ] {
        let body = serde_json::json!({"agent_id": "a1"});
        let (status, e) = call(&master, eve(), post.clone(), path, Some(body.clone())).await;
        assert_eq!(status, 403, "{path}: {e}");
        // The admin is allowed; the agent does not exist.
        let (status, _) = call(&master, admin(), post.clone(), path, Some(body)).await;
        assert_eq!(status, 404, "{path}");
    }
    let mut operator = v1::operator_client::OperatorClient::with_interceptor(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        eve().interceptor(),
    );
    let status = operator
        .update_weights(v1::UpdateWeightsRequest {
            weights: vec![v1::update_weights_request::RoleWeight {
                role: "web".into(),
                weight: 9.0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");

    // Each principal sees its own frameworks; the admin sees all, over HTTP and gRPC.
    let (_, state) = call(&master, eve(), get.clone(), "/state", None).await;
    let ids: Vec<&str> = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![eve_fw.as_str()]);
    let frameworks = operator
        .get_frameworks(v1::GetFrameworksRequest {})
        .await
        .unwrap()
        .into_inner()
        .frameworks;
    assert_eq!(frameworks.len(), 1);
    assert_eq!(
        admin_state(&master).await["frameworks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Teardown: eve may not tear down the admin's framework (over gRPC either), but
    // may her own.
    let status = operator
        .teardown_framework(v1::TeardownFrameworkRequest {
            framework_id: admin_fw.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    let (status, e) = call(
        &master,
        eve(),
        post.clone(),
        "/teardown",
        Some(serde_json::json!({"framework_id": admin_fw})),
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("tear down frameworks of 'admin'"),
        "{e}"
    );
    let (status, e) = call(
        &master,
        eve(),
        post.clone(),
        "/teardown",
        Some(serde_json::json!({"framework_id": eve_fw})),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    let state = admin_state(&master).await;
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(state["frameworks"][0]["id"], admin_fw.as_str());

    // Reloading is the operator's too.
    let (status, _) = call(&master, eve(), post.clone(), "/security/reload", None).await;
    assert_eq!(status, 403);
    let (status, body) = call(&master, admin(), post, "/security/reload", None).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"reloaded": ["credentials"]}))
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn an_acl_file_is_applied_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let acls = dir.path().join("acls.json");
    let write = |json: &str| std::fs::write(&acls, json).unwrap();
    write(
        r#"{"permissive": false,
            "register_frameworks": [{"principals": {"type": "ANY"}, "roles": {"type": "ANY"}}],
            "reload_security": [{"principals": {"values": ["admin"]}}],
            "update_weights": [{"principals": {"values": ["eve"]}, "roles": {"values": ["eve-*"]}}]}"#,
    );
    let master =
        secure_master_with(dir.path(), Duration::from_secs(3600), Some(acls.clone())).await;
    let (put, post) = (reqwest::Method::PUT, reqwest::Method::POST);
    let weights = |role: &str| Some(serde_json::json!([{"role": role, "weight": 2}]));
    assert_eq!(
        call(
            &master,
            eve(),
            put.clone(),
            "/weights",
            weights("eve-batch")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&master, eve(), put.clone(), "/weights", weights("web"))
            .await
            .0,
        403
    );
    // Not even the admin, by this file.
    assert_eq!(
        call(&master, admin(), put.clone(), "/weights", weights("web"))
            .await
            .0,
        403
    );

    // The file changes; a reload applies it.
    write(
        r#"{"permissive": false,
            "reload_security": [{"principals": {"values": ["admin"]}}],
            "update_weights": [{"principals": {"type": "ANY"}, "roles": {"type": "ANY"}}]}"#,
    );
    let (status, body) = call(&master, admin(), post.clone(), "/security/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], serde_json::json!(["credentials", "acls"]));
    assert_eq!(
        call(&master, eve(), put.clone(), "/weights", weights("web"))
            .await
            .0,
        200
    );

    // A broken file is refused with the reason; the ACLs in force stay.
    write(r#"{"update_weight": []}"#);
    let (status, body) = call(&master, admin(), post, "/security/reload", None).await;
    assert_eq!(status, 400, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(
        e.contains("nothing reloaded") && e.contains("unknown action 'update_weight'"),
        "{e}"
    );
    assert_eq!(
        call(&master, eve(), put, "/weights", weights("db")).await.0,
        200
    );
    master.stop().await.unwrap();
}

/// docs/security.md as written: its credentials and ACL examples parse, its built-in
/// ACLs are the master's, and its reload command works against a secure master.
#[tokio::test]
async fn the_security_guide_is_what_the_master_does() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"))
            .expect("docs/security.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        match (&mut current, line) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(
        blocks.len(),
        4,
        "a credentials example, the built-in ACLs, an ACL example and rate limits"
    );
    strata_master::rate::RateLimitsConfig::parse(&blocks[3]).expect("the rate limits example");
    strata_security::Credentials::parse(&blocks[0], "docs/security.md")
        .expect("credentials example");
    let builtin = strata_security::Acls::parse(&blocks[1]).expect("built-in ACLs");
    assert_eq!(
        builtin,
        strata_security::Acls::secure_default(),
        "the guide's built-in ACLs are the code's"
    );
    strata_security::Acls::parse(&blocks[2]).expect("the example ACLs");

    let example = guide
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/security/reload"))
        .expect("the reload example");
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let command = example
        .replace(
            "ca.crt",
            &master.work_dir.join("tls/ca.crt").display().to_string(),
        )
        .replace("SECRET", ADMIN_SECRET)
        .replace(
            "master.example.com:5050",
            &format!("localhost:{}", master.addr.port()),
        );
    let out = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .await
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{command}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, r#"{"reloaded":["credentials"]}"#);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn one_principals_flood_is_rate_limited_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials.json");
    std::fs::write(
        &credentials,
        format!(
            r#"{{"credentials":[{{"principal":"admin","secret":"{ADMIN_SECRET}"}},{{"principal":"eve","secret":"{EVE_SECRET}"}}]}}"#
        ),
    )
    .unwrap();
    let mut options = MasterOptions::new(dir.path().join("master"));
    options.security = Security::Tls(TlsOptions {
        credentials: Some(credentials),
        ..TlsOptions::default()
    });
    options.rate_limits = Some(
        strata_master::rate::RateLimitsConfig::parse(
            r#"{"limits": [{"principal": "eve", "qps": 0.2, "capacity": 1}]}"#,
        )
        .unwrap(),
    );
    let master = TestMaster::start_with(options).await;
    let token = master.work_dir.join("tls/master.crt");
    while !token.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scheduler = |credential: Credential| {
        let master = &master;
        async move {
            v1::scheduler_client::SchedulerClient::with_interceptor(
                channel(master, &client_tls(master, None)).await.unwrap(),
                credential.interceptor(),
            )
        }
    };
    let reconcile = || v1::ReconcileRequest {
        header: Some(v1::CallHeader {
            framework_id: "nope".into(),
            stream_id: "nope".into(),
        }),
        tasks: vec![],
    };
    // Eve's first call goes through (to the master's answer about the unknown
    // framework); the second waits its turn; the third is refused at once.
    let mut eve = scheduler(eve()).await;
    let first = eve.reconcile(reconcile()).await.unwrap_err();
    assert_ne!(first.code(), tonic::Code::ResourceExhausted, "{first}");
    let mut waiting = eve.clone();
    let second = tokio::spawn(async move { waiting.reconcile(reconcile()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = eve.reconcile(reconcile()).await.unwrap_err();
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third}");
    assert!(
        third
            .message()
            .contains("rate limit exceeded for principal 'eve'"),
        "{third}"
    );
    // The admin is not held up by eve's flood: its calls are answered while eve's
    // second call still waits its turn (5 s at 0.2 calls per second).
    let mut admin = scheduler(admin()).await;
    for _ in 0..5 {
        let e = admin.reconcile(reconcile()).await.unwrap_err();
        assert_ne!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    }
    assert!(!second.is_finished(), "eve's second call was not held back");
    let second = second.await.unwrap().unwrap_err();
    assert_ne!(second.code(), tonic::Code::ResourceExhausted, "{second}");
    master.stop().await.unwrap();
}

/// The operator event stream shows each principal what `/state` shows it: eve sees
/// her own framework's changes, not the admin's; the admin sees both.
#[tokio::test]
async fn the_event_stream_shows_only_what_the_caller_may_view() {
    use v1::operator_event::Event;
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let stream = |credential: Credential| {
        let master = &master;
        async move {
            v1::operator_client::OperatorClient::with_interceptor(
                channel(master, &client_tls(master, None)).await.unwrap(),
                credential.interceptor(),
            )
            .subscribe(v1::OperatorSubscribeRequest::default())
            .await
            .unwrap()
            .into_inner()
        }
    };
    let mut eves = stream(eve()).await;
    let mut admins = stream(admin()).await;
    let (_admin_fw, admin_id) = subscribe_as(&master, admin()).await;
    let (_eve_fw, eve_id) = subscribe_as(&master, eve()).await;
    // The frameworks each stream shows, in order, until eve's appears.
    let frameworks_until = |mut s: tonic::Streaming<v1::OperatorEvent>, last: String| async move {
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout(WAIT, s.message())
                .await
                .expect("an event")
                .unwrap()
                .unwrap();
            if let Some(Event::FrameworkAdded(f)) = event.event {
                let id = f.info.unwrap().id;
                seen.push(id.clone());
                if id == last {
                    return seen;
                }
            }
        }
    };
    assert_eq!(
        frameworks_until(eves, eve_id.clone()).await,
        vec![eve_id.clone()]
    );
    assert_eq!(
        frameworks_until(admins, eve_id.clone()).await,
        vec![admin_id, eve_id]
    );
    eves = stream(eve()).await;
    admins = stream(admin()).await;
    let frameworks_in_snapshot = |mut s: tonic::Streaming<v1::OperatorEvent>| async move {
        let event = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        match event.event {
            Some(Event::Snapshot(state)) => state.frameworks.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(frameworks_in_snapshot(eves).await, 1);
    assert_eq!(frameworks_in_snapshot(admins).await, 2);
    master.stop().await.unwrap();
}

/// An agent's certificate may follow the event stream (its service proxy needs it),
/// and sees services only: agents and discoverable tasks, no frameworks; the rest of
/// the operator API stays closed to it.
#[tokio::test]
async fn an_agent_follows_the_services_and_nothing_else() {
    use v1::operator_event::Event;
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let a = join_agent(&master).await;
    let mut agent = attach_with(
        channel(&master, &a.client_tls()).await.unwrap(),
        agent_info("a.example"),
    )
    .await
    .unwrap();
    registered(&mut agent).await;
    let (_fw, _) = subscribe_as(&master, admin()).await;
    let mut operator =
        v1::operator_client::OperatorClient::new(channel(&master, &a.client_tls()).await.unwrap());
    let mut events = operator
        .subscribe(v1::OperatorSubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    match events.message().await.unwrap().unwrap().event {
        Some(Event::Snapshot(state)) => {
            assert_eq!(state.agents.len(), 1);
            assert!(state.frameworks.is_empty(), "{:?}", state.frameworks);
        }
        other => panic!("{other:?}"),
    }
    let status = operator
        .get_state(v1::GetStateRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    master.stop().await.unwrap();
}

/// Configs and secrets under the built-in ACLs (issue 16): managing them is the
/// operator's, a secret is seen only by who may, agents cannot manage them and users
/// cannot fetch values; configs are readable by any authenticated caller. The
/// attacker's calls change nothing and learn nothing.
#[tokio::test]
async fn secrets_are_managed_by_the_operator_and_fetched_only_by_agents() {
    let dir = tempfile::tempdir().unwrap();
    let master = secure_master(dir.path(), Duration::from_secs(3600)).await;
    let operator = |credential: Credential| {
        let master = &master;
        async move {
            v1::operator_client::OperatorClient::with_interceptor(
                channel(master, &client_tls(master, None)).await.unwrap(),
                credential.interceptor(),
            )
        }
    };
    let create = |kind: v1::ObjectKind, name: &str, update: bool| v1::CreateObjectRequest {
        kind: kind as i32,
        name: name.into(),
        data: b"value".to_vec(),
        update,
    };
    let mut admin_op = operator(admin()).await;
    let version = admin_op
        .create_object(create(v1::ObjectKind::Secret, "db-pass", false))
        .await
        .unwrap()
        .into_inner()
        .version;
    assert_eq!(version, 1);
    admin_op
        .create_object(create(v1::ObjectKind::Config, "app-conf", false))
        .await
        .unwrap();

    // eve: may not create, update or remove; the same answer for a name that exists
    // and one that does not.
    let mut eve_op = operator(eve()).await;
    for (request, message) in [
        (
            create(v1::ObjectKind::Secret, "eve-secret", false),
            "principal 'eve' is not authorized to create secret 'eve-secret'",
        ),
        (
            create(v1::ObjectKind::Secret, "db-pass", true),
            "principal 'eve' is not authorized to update secret 'db-pass'",
        ),
        (
            create(v1::ObjectKind::Secret, "no-such", true),
            "principal 'eve' is not authorized to update secret 'no-such'",
        ),
        (
            create(v1::ObjectKind::Config, "app-conf", true),
            "principal 'eve' is not authorized to update config 'app-conf'",
        ),
    ] {
        let e = eve_op.create_object(request).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert_eq!(e.message(), message);
    }
    let e = eve_op
        .remove_object(v1::RemoveObjectRequest {
            kind: v1::ObjectKind::Secret as i32,
            name: "db-pass".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // eve sees the config, not the secret; she reads the config's value.
    let listed = eve_op
        .list_objects(v1::ListObjectsRequest { kind: 0 })
        .await
        .unwrap()
        .into_inner()
        .objects;
    assert_eq!(
        listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["app-conf"]
    );
    let config = eve_op
        .get_config(v1::GetConfigRequest {
            name: "app-conf".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(config.data, b"value");
    // admin sees both, and who may use the secret.
    let listed = admin_op
        .list_objects(v1::ListObjectsRequest {
            kind: v1::ObjectKind::Secret as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .objects;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner, "admin");
    assert_eq!(listed[0].principals, ["admin"]);
    assert!(!listed[0].anyone);

    // A user may not call the agents' fetch; an agent may not manage objects.
    let fetch = v1::FetchObjectsRequest {
        agent_id: "a".into(),
        framework_id: "f".into(),
        task_id: "t".into(),
    };
    let e = v1::agent_link_client::AgentLinkClient::with_interceptor(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        admin().interceptor(),
    )
    .fetch_objects(fetch.clone())
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let agent = join_agent(&master).await;
    let agent_channel = channel(&master, &agent.client_tls()).await.unwrap();
    let e = v1::operator_client::OperatorClient::new(agent_channel.clone())
        .create_object(create(v1::ObjectKind::Secret, "x", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // An agent asking for a task it was not sent: refused, nothing revealed.
    let e = v1::agent_link_client::AgentLinkClient::new(agent_channel)
        .fetch_objects(fetch)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(!e.message().contains("db-pass"));
}

/// The dashboard's task page relays the agent's sandbox files (issue 18) as the master
/// (its certificate) on behalf of the caller, and only after the master's authorizer
/// said yes: a user who may view the task but not read its sandbox is refused by the
/// master, and the agent never hears of it; the caller's secret never reaches the
/// agent.
#[tokio::test]
async fn the_dashboard_relays_sandbox_reads_only_for_those_who_may_read_them() {
    use axum::extract::Query;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let acls = dir.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{"permissive": true,
            "view_tasks": [{"principals": {"type": "ANY"}, "framework_principals": {"type": "ANY"}}],
            "access_sandboxes": [
              {"principals": {"values": ["admin"]}, "framework_principals": {"type": "ANY"}},
              {"principals": {"type": "ANY"}, "framework_principals": {"type": "NONE"}}]}"#,
    )
    .unwrap();
    let master = secure_master_with(dir.path(), Duration::from_secs(3600), Some(acls)).await;

    // An agent whose HTTPS API (its cluster certificate) records what it is asked.
    let identity = join::join(
        &master.addr.to_string(),
        &token(&master),
        &["127.0.0.1".to_string()],
    )
    .await
    .expect("join");
    // (query, Authorization, x-strata-on-behalf-of, the caller the agent's
    // authentication layer found)
    type Asked = Arc<Mutex<Vec<(String, Option<String>, Option<String>, String)>>>;
    let asked: Asked = Arc::default();
    let credentials =
        strata_security::Credentials::parse(r#"{"credentials": []}"#, "test").unwrap();
    let router = axum::Router::new()
        .route(
            "/files/read",
            axum::routing::get(
                |axum::extract::State(asked): axum::extract::State<Asked>,
                 axum::Extension(caller): axum::Extension<strata_security::Principal>,
                 headers: axum::http::HeaderMap,
                 Query(q): Query<std::collections::BTreeMap<String, String>>| async move {
                    let header =
                        |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                    asked.lock().unwrap().push((
                        format!("{q:?}"),
                        header("authorization"),
                        header("x-strata-on-behalf-of"),
                        format!("{caller:?}"),
                    ));
                    axum::Json(serde_json::json!({
                        "data": "hello from the task\n", "offset": 0, "next_offset": 20,
                        "eof": true, "state": "TASK_RUNNING"}))
                },
            ),
        )
        // A rogue agent's redirect elsewhere is not followed.
        .route(
            "/files/browse",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        )
        .with_state(asked.clone())
        .layer(axum::middleware::from_fn_with_state(
            strata_security::Authenticator::new(credentials, &[]),
            strata_security::authn::authenticate,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = listener.local_addr().unwrap();
    let server =
        strata_security::ServerTls::new(&identity.cert_pem, &identity.key_pem, &identity.ca_pem);
    let (_keep, servers) = tokio::sync::watch::channel(Some(server));
    tokio::spawn(strata_security::tls::serve(
        listener,
        router,
        servers,
        std::future::pending(),
    ));
    let mut info = agent_info("h1");
    info.address = agent_addr.to_string();
    let mut agent = attach_with(
        channel(&master, &identity.client_tls()).await.unwrap(),
        info,
    )
    .await
    .unwrap();
    let agent_id = registered(&mut agent).await.agent_id;

    // The admin's framework runs a task there.
    let mut scheduler = v1::scheduler_client::SchedulerClient::with_interceptor(
        channel(&master, &client_tls(&master, None)).await.unwrap(),
        admin().interceptor(),
    );
    let mut events = scheduler
        .subscribe(subscribe_request(framework_info("fw")))
        .await
        .unwrap()
        .into_inner();
    let s = subscribed(&mut events).await;
    let offer = loop {
        if let Some(v1::event::Event::Offers(o)) = next_event(&mut events).await.event {
            break o.offers.into_iter().next().unwrap();
        }
    };
    scheduler
        .accept(v1::AcceptRequest {
            header: Some(v1::CallHeader {
                framework_id: s.framework_id.clone(),
                stream_id: s.stream_id.clone(),
            }),
            offer_ids: vec![offer.id],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    task_infos: vec![v1::TaskInfo {
                        task_id: "t1".into(),
                        name: "web".into(),
                        agent_id: agent_id.clone(),
                        resources: strata_proto::Resources::cpus_mem(0.5, 64.0).to_proto(),
                        command: Some(v1::CommandInfo {
                            shell: true,
                            value: "echo hello from the task; sleep 100".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                })),
            }],
            filters: None,
        })
        .await
        .unwrap();

    let get = |credential: Credential, path: &str| {
        let client = https(&master, &client_tls(&master, Some(credential)));
        let url = url(&master, path);
        async move { client.get(url).send().await.unwrap() }
    };
    // Eve may view the task: its page, with its history.
    let page = get(eve(), "/ui/tasks/t1").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("TASK_STAGING"), "{page}");
    assert!(page.contains("id=\"tail\""), "{page}");
    // The attacker: eve may not read its sandbox. The master refuses, saying why, and
    // the agent is never asked.
    let refused = get(eve(), "/ui/tasks/t1/files/read?file=stdout").await;
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("eve"),
        "the reason names the caller: {body}"
    );
    let refused = get(eve(), "/ui/tasks/t1/files/browse").await;
    assert_eq!(refused.status(), 403);
    assert!(asked.lock().unwrap().is_empty(), "the agent was asked");
    // No such task: 404, the agent not asked either.
    assert_eq!(
        get(admin(), "/ui/tasks/nope/files/read?file=stdout")
            .await
            .status(),
        404
    );
    assert!(asked.lock().unwrap().is_empty());

    // The user: the admin reads it, through the master, over the cluster CA's TLS.
    let read = get(
        admin(),
        "/ui/tasks/t1/files/read?file=stdout&offset=0&length=99999999",
    )
    .await;
    assert_eq!(read.status(), 200);
    let body: serde_json::Value = read.json().await.unwrap();
    assert_eq!(body["data"], "hello from the task\n");
    // The master's own certificate is for agents: the master refuses it.
    let master_tls = ClientTls {
        ca_pem: Some(std::fs::read_to_string(master.work_dir.join("tls/ca.crt")).unwrap()),
        identity: Some((
            std::fs::read_to_string(master.work_dir.join("tls/master.crt")).unwrap(),
            std::fs::read_to_string(master.work_dir.join("tls/master.key")).unwrap(),
        )),
        credential: None,
    };
    let as_master = https(&master, &master_tls)
        .get(url(&master, "/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_master.status(), 403);
    let redirected = get(admin(), "/ui/tasks/t1/files/browse").await;
    assert_eq!(redirected.status(), 502);
    let body: serde_json::Value = redirected.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("redirect"),
        "{body}"
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let (query, auth, on_behalf, caller) = &asked[0];
    assert!(
        query.contains(&format!("\"framework_id\": \"{}\"", s.framework_id)),
        "{query}"
    );
    assert!(query.contains("\"task_id\": \"t1\""), "{query}");
    assert!(query.contains("\"file\": \"stdout\""), "{query}");
    assert!(query.contains("\"length\": \"1048576\""), "capped: {query}");
    // The master's own certificate, on behalf of the admin; the admin's secret never
    // leaves the master.
    assert_eq!(caller, "Master");
    assert_eq!(on_behalf.as_deref(), Some("admin"));
    assert_eq!(auth, &None, "the caller's credential was sent to the agent");
    master.stop().await.unwrap();
}
