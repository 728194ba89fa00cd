//! The driver against a secure master: a tonic server of the test's own serving TLS
//! with a certificate of a cluster CA, behind the same authentication layer as the
//! real master (`strata_security::authn::authenticate`). It records every call it
//! serves, with the `authorization` header it came with and the principal the layer
//! found.
//!
//! Real sockets and real time: the TLS handshake is what is tested.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use strata_framework_sdk::{
    ClientTls, Credential, Driver, DriverHandle, DriverOptions, Scheduler, SdkError, v1,
};
use strata_proto::v1::scheduler_server::{self, SchedulerServer};
use strata_security::authn::authenticate;
use strata_security::{Authenticator, ClusterCa, Credentials, MASTER_NAME, Principal, ServerTls};
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

const PRINCIPAL: &str = "fw";
const SECRET: &str = "the-framework-secret-0123";

/// A call the fake master served.
#[derive(Debug)]
struct Served {
    method: &'static str,
    /// The `authorization` header, as received.
    authorization: Option<String>,
    /// Who the authentication layer said the caller is.
    principal: Option<Principal>,
}

#[derive(Clone)]
struct Service {
    served: mpsc::UnboundedSender<Served>,
}

impl Service {
    fn record<T>(&self, method: &'static str, request: &Request<T>) {
        let _ = self.served.send(Served {
            method,
            authorization: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            principal: request.extensions().get::<Principal>().cloned(),
        });
    }

    fn answer<T>(
        &self,
        method: &'static str,
        request: Request<T>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.record(method, &request);
        Ok(Response::new(v1::CallResponse {}))
    }
}

#[tonic::async_trait]
impl scheduler_server::Scheduler for Service {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.record("subscribe", &request);
        let subscribed = v1::Event {
            event: Some(v1::event::Event::Subscribed(v1::Subscribed {
                framework_id: "fw-1".into(),
                master_id: "master-1".into(),
                stream_id: "s-1".into(),
                heartbeat_interval_seconds: 15.0,
            })),
        };
        // SUBSCRIBED, then a stream that stays open.
        let events =
            futures::stream::once(async move { Ok(subscribed) }).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(events)))
    }

    async fn accept(
        &self,
        r: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("accept", r)
    }
    async fn decline(
        &self,
        r: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("decline", r)
    }
    async fn revive(
        &self,
        r: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("revive", r)
    }
    async fn suppress(
        &self,
        r: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("suppress", r)
    }
    async fn kill(
        &self,
        r: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("kill", r)
    }
    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("acknowledge", r)
    }
    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("reconcile", r)
    }
    async fn message(
        &self,
        r: Request<v1::MessageRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("message", r)
    }
    async fn teardown(
        &self,
        r: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.answer("teardown", r)
    }
}

/// A secure fake master on 127.0.0.1, serving with a certificate of `ca` for `names`.
struct SecureMaster {
    addr: String,
    served: mpsc::UnboundedReceiver<Served>,
    server: tokio::task::JoinHandle<()>,
}

impl SecureMaster {
    async fn start(ca: &ClusterCa, names: &[&str]) -> SecureMaster {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issued = ca
            .issue("master", &names, Duration::from_secs(3600))
            .unwrap();
        let tls = ServerTls {
            cert_chain_pem: format!("{}{}", issued.cert_pem, ca.cert_pem()),
            key_pem: issued.key_pem,
            client_ca_pem: ca.cert_pem().to_string(),
        };
        let credentials = Credentials::parse(
            &format!(r#"{{"credentials":[{{"principal":"{PRINCIPAL}","secret":"{SECRET}"}}]}}"#),
            "test credentials",
        )
        .unwrap();
        let authn = Authenticator::new(credentials, &["/health"]);
        let (served_tx, served) = mpsc::unbounded_channel();
        let mut routes =
            tonic::service::Routes::new(SchedulerServer::new(Service { served: served_tx }));
        let router = std::mem::take(routes.axum_router_mut())
            .layer(axum::middleware::from_fn_with_state(authn, authenticate));
        *routes.axum_router_mut() = router;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = Server::builder()
            .tls_config(tls.tonic())
            .unwrap()
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        SecureMaster {
            addr,
            served,
            server,
        }
    }

    async fn next_served(&mut self) -> Served {
        within(self.served.recv(), "a call at the master")
            .await
            .expect("the master stopped")
    }

    fn nothing_served(&mut self) -> bool {
        self.served.try_recv().is_err()
    }
}

impl Drop for SecureMaster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn within<F: std::future::Future>(f: F, what: &str) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What the scheduler heard.
#[derive(Debug)]
enum Heard {
    /// Registered, and how the REVIVE it made right away went.
    Registered(Result<(), String>),
    Error(String),
}

/// Revives once registered, then stops the driver.
struct Reviver {
    heard: mpsc::UnboundedSender<Heard>,
}

impl Scheduler for Reviver {
    async fn registered(&mut self, driver: &DriverHandle, _framework_id: &str, _master_id: &str) {
        let revived = driver.revive().await.map_err(|e| e.to_string());
        let _ = self.heard.send(Heard::Registered(revived));
        driver.stop();
    }

    async fn offers(&mut self, _driver: &DriverHandle, _offers: Vec<v1::Offer>) {}

    async fn status_update(&mut self, _driver: &DriverHandle, _status: v1::TaskStatus) {}

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        let _ = self.heard.send(Heard::Error(message.to_string()));
    }
}

fn secure(ca: &ClusterCa, credential: Option<Credential>) -> ClientTls {
    ClientTls {
        ca_pem: Some(ca.cert_pem().to_string()),
        credential,
        ..ClientTls::default()
    }
}

fn options(tls: ClientTls) -> DriverOptions {
    DriverOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        tls,
        ..DriverOptions::default()
    }
}

fn framework() -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: "tls-test".into(),
        ..Default::default()
    }
}

type Run = tokio::task::JoinHandle<Result<Reviver, SdkError>>;

fn start(driver: Driver<Reviver>) -> Run {
    tokio::spawn(driver.run())
}

fn reviver() -> (Reviver, mpsc::UnboundedReceiver<Heard>) {
    let (heard, rx) = mpsc::unbounded_channel();
    (Reviver { heard }, rx)
}

fn good_credential() -> Credential {
    Credential::new(PRINCIPAL, SECRET)
}

#[tokio::test]
async fn a_framework_with_the_ca_and_its_credential_subscribes_and_every_call_carries_it() {
    let ca = ClusterCa::create().unwrap();
    let mut master = SecureMaster::start(&ca, &[MASTER_NAME]).await;
    let (scheduler, mut heard) = reviver();
    // The address is an IP the certificate does not name: the driver verifies the
    // master by the name strata-master, whatever it dials.
    let driver = Driver::new(master.addr.clone(), framework(), scheduler)
        .with_options(options(secure(&ca, Some(good_credential()))));
    let run = start(driver);

    let expected = good_credential().header_value();
    for method in ["subscribe", "revive"] {
        let served = master.next_served().await;
        assert_eq!(served.method, method);
        assert_eq!(served.authorization.as_deref(), Some(expected.as_str()));
        assert_eq!(served.principal, Some(Principal::User(PRINCIPAL.into())));
    }
    match within(heard.recv(), "registered").await {
        Some(Heard::Registered(Ok(()))) => {}
        other => panic!("expected a registration and a revive that worked, got {other:?}"),
    }
    within(run, "the driver to stop").await.unwrap().unwrap();
}

#[tokio::test]
async fn a_programs_own_channel_carries_the_credential_too() {
    let ca = ClusterCa::create().unwrap();
    let mut master = SecureMaster::start(&ca, &[MASTER_NAME]).await;
    let tls = secure(&ca, Some(good_credential()));
    let channel = tls
        .endpoint(&master.addr, MASTER_NAME)
        .unwrap()
        .connect_lazy();
    let (scheduler, mut heard) = reviver();
    let driver = Driver::new(master.addr.clone(), framework(), scheduler)
        .with_channel(channel)
        .with_options(options(tls));
    let run = start(driver);
    for method in ["subscribe", "revive"] {
        let served = master.next_served().await;
        assert_eq!(served.method, method);
        assert_eq!(served.principal, Some(Principal::User(PRINCIPAL.into())));
    }
    assert!(matches!(
        within(heard.recv(), "registered").await,
        Some(Heard::Registered(Ok(())))
    ));
    within(run, "the driver to stop").await.unwrap().unwrap();
}

/// A missing or wrong credential is not retried in silence: the scheduler hears the
/// master's reason and `run` returns UNAUTHENTICATED at once.
#[tokio::test]
async fn a_wrong_or_missing_credential_stops_the_driver_with_the_masters_reason() {
    let ca = ClusterCa::create().unwrap();
    let mut master = SecureMaster::start(&ca, &[MASTER_NAME]).await;
    for (credential, reason) in [
        (
            Some(Credential::new(PRINCIPAL, "not-the-secret-at-all")),
            "the credential of 'fw' is not valid",
        ),
        (None, "authentication required"),
    ] {
        let (scheduler, mut heard) = reviver();
        let driver = Driver::new(master.addr.clone(), framework(), scheduler)
            .with_options(options(secure(&ca, credential)));
        match within(start(driver), "the driver to stop").await.unwrap() {
            Err(SdkError::Rpc(status)) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                assert!(status.message().contains(reason), "{}", status.message());
            }
            other => panic!("expected UNAUTHENTICATED, got {:?}", other.err()),
        }
        match heard.try_recv() {
            Ok(Heard::Error(message)) => {
                assert!(
                    message.contains("UNAUTHENTICATED") && message.contains(reason),
                    "{message}"
                );
            }
            other => panic!("the scheduler was not told: {other:?}"),
        }
        assert!(
            master.nothing_served(),
            "nothing reaches the service unauthenticated"
        );
    }
}

/// A server whose certificate does not name strata-master (an agent's, say), or is
/// another cluster's, is refused before anything is sent: the driver stops with
/// SdkError::Certificate.
#[tokio::test]
async fn a_master_certificate_without_the_masters_name_or_from_another_ca_is_refused() {
    let ca = ClusterCa::create().unwrap();
    let other_ca = ClusterCa::create().unwrap();
    let impostors = [
        SecureMaster::start(&ca, &["strata-agent", "localhost", "127.0.0.1"]).await,
        SecureMaster::start(&other_ca, &[MASTER_NAME]).await,
    ];
    for mut impostor in impostors {
        let (scheduler, mut heard) = reviver();
        let driver = Driver::new(impostor.addr.clone(), framework(), scheduler)
            .with_options(options(secure(&ca, Some(good_credential()))));
        match within(start(driver), "the driver to stop").await.unwrap() {
            Err(e @ SdkError::Certificate { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&impostor.addr) && text.contains("CA"),
                    "{text}"
                );
            }
            other => panic!("expected a certificate error, got {:?}", other.err()),
        }
        assert!(matches!(heard.try_recv(), Ok(Heard::Error(_))));
        assert!(impostor.nothing_served(), "the credential never left");
    }
}
