//! The SDK takes every message the master may send: an OFFERS event of (nearly)
//! `strata_proto::limits::MAX_MESSAGE_BYTES`, the limit the master's server shares,
//! arrives whole at the scheduler instead of breaking the stream (tonic's default
//! decoding limit is 4 MiB).
//!
//! The fake master here serves on a real loopback socket, on real time.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use strata_framework_sdk::{Driver, DriverHandle, Scheduler, v1};
use strata_proto::limits::MAX_MESSAGE_BYTES;
use strata_proto::v1::scheduler_server::{self, SchedulerServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// A master that answers SUBSCRIBE with SUBSCRIBED and then one OFFERS event of
/// `offers`, and every call with success.
struct BigOffersMaster {
    offers: v1::Offers,
}

type Answer = Result<Response<v1::CallResponse>, Status>;

#[tonic::async_trait]
impl scheduler_server::Scheduler for BigOffersMaster {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        _request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let subscribed = v1::event::Event::Subscribed(v1::Subscribed {
            framework_id: "fw-1".into(),
            stream_id: "s-1".into(),
            heartbeat_interval_seconds: 15.0,
            master_id: "master-1".into(),
        });
        let offers = v1::event::Event::Offers(self.offers.clone());
        tokio::spawn(async move {
            for event in [subscribed, offers] {
                if tx.send(Ok(v1::Event { event: Some(event) })).await.is_err() {
                    return;
                }
            }
            // Keep the stream open until the driver goes.
            tx.closed().await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn accept(&self, _r: Request<v1::AcceptRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn decline(&self, _r: Request<v1::DeclineRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn revive(&self, _r: Request<v1::ReviveRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn suppress(&self, _r: Request<v1::SuppressRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn kill(&self, _r: Request<v1::KillRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn acknowledge(&self, _r: Request<v1::AcknowledgeRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn reconcile(&self, _r: Request<v1::ReconcileRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn message(&self, _r: Request<v1::MessageRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
    async fn teardown(&self, _r: Request<v1::TeardownRequest>) -> Answer {
        Ok(Response::new(v1::CallResponse {}))
    }
}

/// Tells the test what arrived: the offers of each `offers` callback, or a
/// disconnection.
struct Seen(mpsc::Sender<Option<Vec<v1::Offer>>>);

impl Scheduler for Seen {
    async fn offers(&mut self, _driver: &DriverHandle, offers: Vec<v1::Offer>) {
        let _ = self.0.send(Some(offers)).await;
    }

    async fn status_update(&mut self, _driver: &DriverHandle, _status: v1::TaskStatus) {}

    async fn disconnected(&mut self, _driver: &DriverHandle) {
        let _ = self.0.send(None).await;
    }
}

/// Offers from distinct agents, each with a 64 KiB attribute, making an event of
/// at least `bytes`... but never more than the shared limit.
fn offers_of(bytes: usize) -> v1::Offers {
    let offer = |i: usize| v1::Offer {
        id: format!("o-{i}"),
        framework_id: "fw-1".into(),
        agent_id: format!("agent-{i}"),
        hostname: format!("h{i}"),
        role: "*".into(),
        resources: vec![],
        attributes: vec![v1::Attribute {
            name: "blob".into(),
            value: "v".repeat(64 << 10),
        }],
        agent_address: String::new(),
    };
    let mut offers = v1::Offers { offers: vec![] };
    loop {
        let event = v1::Event {
            event: Some(v1::event::Event::Offers(offers.clone())),
        };
        let next = prost::Message::encoded_len(&offer(offers.offers.len())) + 16;
        if prost::Message::encoded_len(&event) + next > bytes {
            return offers;
        }
        offers.offers.push(offer(offers.offers.len()));
    }
}

#[tokio::test]
async fn an_offers_event_of_the_shared_message_limit_reaches_the_scheduler() {
    let offers = offers_of(MAX_MESSAGE_BYTES);
    let size = prost::Message::encoded_len(&v1::Event {
        event: Some(v1::event::Event::Offers(offers.clone())),
    });
    assert!(
        size > MAX_MESSAGE_BYTES - (128 << 10) && size <= MAX_MESSAGE_BYTES,
        "{size}"
    );
    assert!(size > 4 << 20, "larger than tonic's default limit");
    let count = offers.offers.len();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .add_service(
                SchedulerServer::new(BigOffersMaster { offers })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let (tx, mut seen) = mpsc::channel(4);
    let framework = v1::FrameworkInfo {
        name: "big".into(),
        ..Default::default()
    };
    let driver = Driver::new(addr.to_string(), framework, Seen(tx));
    let handle = driver.handle();
    let run = tokio::spawn(driver.run());

    let first = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("offers within 30 s")
        .expect("the driver runs");
    let got = first.expect("offers, not a disconnection (the stream broke)");
    assert_eq!(got.len(), count);

    handle.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    server.abort();
}
