//! A master on a loopback port for tests, and small helpers to talk to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_master::{MasterError, MasterOptions};
use strata_proto::limits::MAX_MESSAGE_BYTES;
use strata_proto::v1;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a test waits for something the master should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A master serving on `127.0.0.1:0` until [`TestMaster::stop`].
pub struct TestMaster {
    pub addr: SocketAddr,
    pub work_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MasterError>>>,
}

impl TestMaster {
    /// Starts a master with default options in `work_dir`.
    pub async fn start(work_dir: &Path) -> TestMaster {
        let mut options = MasterOptions::new(work_dir);
        options.allocation_interval = Duration::from_millis(200);
        TestMaster::start_with(options).await
    }

    pub async fn start_with(options: MasterOptions) -> TestMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let work_dir = options.work_dir.clone();
        let task = tokio::spawn(strata_master::serve(listener, options, async move {
            let _ = stopped.await;
        }));
        TestMaster {
            addr,
            work_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to master")
    }

    pub async fn scheduler(&self) -> v1::scheduler_client::SchedulerClient<Channel> {
        v1::scheduler_client::SchedulerClient::new(self.channel().await)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub async fn agent_link(&self) -> v1::agent_link_client::AgentLinkClient<Channel> {
        v1::agent_link_client::AgentLinkClient::new(self.channel().await)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub async fn operator(&self) -> v1::operator_client::OperatorClient<Channel> {
        v1::operator_client::OperatorClient::new(self.channel().await)
            .max_decoding_message_size(strata_proto::limits::MAX_OPERATOR_ANSWER_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Shuts the master down and returns what `serve` returned.
    pub async fn stop(mut self) -> Result<(), MasterError> {
        self.stop.take().map(|s| s.send(()));
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("master stops within 20 s")
            .expect("serve task did not panic")
    }
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn framework_info(name: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: name.to_string(),
        user: "tester".to_string(),
        roles: vec!["*".to_string()],
        failover_timeout_seconds: 3600.0,
        ..Default::default()
    }
}

pub fn subscribe_request(info: v1::FrameworkInfo) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        framework_info: Some(info),
        suppressed_roles: vec![],
    }
}

/// The next event on a subscription, or a panic after [`WAIT`].
pub async fn next_event(stream: &mut tonic::Streaming<v1::Event>) -> v1::Event {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event within the wait")
        .expect("stream healthy")
        .expect("stream open")
}

/// Waits for the SUBSCRIBED event, skipping others.
pub async fn subscribed(stream: &mut tonic::Streaming<v1::Event>) -> v1::Subscribed {
    loop {
        match next_event(stream).await.event {
            Some(v1::event::Event::Subscribed(s)) => return s,
            Some(v1::event::Event::Error(e)) => panic!("subscription refused: {}", e.message),
            _ => continue,
        }
    }
}

/// Subscribes a framework named `name`; returns its stream and SUBSCRIBED.
pub async fn subscribe(
    master: &TestMaster,
    info: v1::FrameworkInfo,
) -> (tonic::Streaming<v1::Event>, v1::Subscribed) {
    let mut client = master.scheduler().await;
    let mut stream = client
        .subscribe(subscribe_request(info))
        .await
        .expect("subscribe")
        .into_inner();
    let s = subscribed(&mut stream).await;
    (stream, s)
}

pub fn agent_info(hostname: &str) -> v1::AgentInfo {
    v1::AgentInfo {
        id: String::new(),
        hostname: hostname.to_string(),
        address: format!("{hostname}:5051"),
        principal: String::new(),
        resources: strata_proto::Resources::parse("cpus:4;mem:4096;disk:10000;ports:[31000-32000]")
            .expect("resources")
            .to_proto(),
        attributes: vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into(),
        }],
    }
}

pub fn register(info: v1::AgentInfo) -> v1::AgentMessage {
    v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register {
            checkpointed: None,
            agent_info: Some(info),
            tasks: vec![],
            version: strata_proto::VERSION.to_string(),
        })),
    }
}

/// An attached agent: the sender for its messages up and the stream of messages down.
pub struct TestAgent {
    pub up: tokio::sync::mpsc::Sender<v1::AgentMessage>,
    pub down: tonic::Streaming<v1::MasterMessage>,
}

/// Opens an agent stream whose first message is `first`.
pub async fn attach(
    master: &TestMaster,
    first: v1::AgentMessage,
) -> Result<TestAgent, tonic::Status> {
    let (up, rx) = tokio::sync::mpsc::channel(16);
    up.send(first).await.expect("queue first message");
    let mut client = master.agent_link().await;
    let down = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(TestAgent { up, down })
}

/// The next message down an agent stream, or a panic after [`WAIT`].
pub async fn next_master_message(agent: &mut TestAgent) -> v1::master_message::Message {
    loop {
        let m = tokio::time::timeout(WAIT, agent.down.message())
            .await
            .expect("a message within the wait")
            .expect("stream healthy")
            .expect("stream open");
        if let Some(m) = m.message {
            return m;
        }
    }
}

/// Waits for Registered, skipping pings.
pub async fn registered(agent: &mut TestAgent) -> v1::Registered {
    loop {
        match next_master_message(agent).await {
            v1::master_message::Message::Registered(r) => return r,
            v1::master_message::Message::Error(e) => panic!("registration refused: {}", e.message),
            _ => continue,
        }
    }
}

/// GET `path` over HTTP/1.1.
pub async fn http_get(master: &TestMaster, path: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client")
        .get(master.url(path))
        .send()
        .await
        .expect("HTTP request")
}

pub async fn state_json(master: &TestMaster) -> serde_json::Value {
    let r = http_get(master, "/state").await;
    assert_eq!(r.status(), 200);
    r.json().await.expect("JSON state")
}
