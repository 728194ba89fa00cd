//! A secure cluster in one process: a master with TLS and credentials, an agent that
//! joins with the token, keeps and renews its certificate, and serves its own API over
//! HTTPS to authenticated callers only.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_security::{ClientTls, Credential, MASTER_NAME};
use tokio::net::TcpListener;

const SECRET: &str = "admin-secret-0123456789";

struct Cluster {
    master: std::net::SocketAddr,
    master_dir: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

async fn start_master(dir: &Path, agent_cert_ttl: Duration) -> Cluster {
    let credentials = dir.join("credentials.json");
    std::fs::write(
        &credentials,
        format!(r#"{{"credentials":[{{"principal":"admin","secret":"{SECRET}"}}]}}"#),
    )
    .unwrap();
    let mut options = strata_master::MasterOptions::new(dir.join("master"));
    options.allocation_interval = Duration::from_millis(200);
    options.security = strata_master::Security::Tls(strata_master::TlsOptions {
        names: vec![],
        credentials: Some(credentials),
        agent_cert_ttl,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut r = rx.clone();
    tasks.spawn(async move {
        strata_master::serve(listener, options, async move {
            let _ = r.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
    });
    let token = dir.join("master/tls/join-token");
    wait_until("the join token", || token.exists()).await;
    Cluster {
        master,
        master_dir: dir.join("master"),
        stop,
        tasks,
    }
}

impl Cluster {
    fn join_token(&self) -> String {
        std::fs::read_to_string(self.master_dir.join("tls/join-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn tls(&self, credential: Option<Credential>) -> ClientTls {
        ClientTls {
            ca_pem: Some(std::fs::read_to_string(self.master_dir.join("tls/ca.crt")).unwrap()),
            identity: None,
            credential,
        }
    }

    async fn state(&self) -> serde_json::Value {
        let client = self
            .tls(Some(Credential::new("admin", SECRET)))
            .reqwest(reqwest::Client::builder().resolve(MASTER_NAME, self.master))
            .unwrap()
            .build()
            .unwrap();
        client
            .get(format!(
                "https://{MASTER_NAME}:{}/state",
                self.master.port()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs an agent in `dir` until the returned sender says stop.
    async fn start_agent(
        &mut self,
        dir: &Path,
        token: Option<String>,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = strata_agent::AgentOptions::new(self.master.to_string(), dir);
        options.resources = strata_proto::Resources::parse("cpus:1;mem:256;disk:100").unwrap();
        options.hostname = Some("secure-agent".into());
        options.containerizer = strata_agent::ContainerizerConfig::Fake {
            task_duration: Duration::from_secs(60),
        };
        options.insecure = false;
        options.join_token = token;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.tasks.spawn(async move {
            let _ = strata_agent::run(listener, options, async move {
                let _ = stopped.await;
                strata_agent::Shutdown::KeepTasks
            })
            .await;
        });
        (addr, stop)
    }

    async fn wait_for_agent(&self, id: Option<&str>) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.state().await;
            if let Some(agent) = state["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["status"] == "ACTIVE" && id.is_none_or(|id| a["id"] == id))
            {
                return agent.clone();
            }
            assert!(Instant::now() < deadline, "no active agent in {state}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_serves_https_to_authenticated_callers_and_renews() {
    let dir = tempfile::tempdir().unwrap();
    // Certificates of 6 s: the agent renews at 4 s.
    let mut cluster = start_master(dir.path(), Duration::from_secs(6)).await;
    let agent_dir = dir.path().join("agent");

    // Without a token (and no certificate yet) the agent says what it needs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = strata_agent::AgentOptions::new(cluster.master.to_string(), &agent_dir);
    options.insecure = false;
    let e = strata_agent::run(listener, options, async {
        strata_agent::Shutdown::KeepTasks
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--join-token"), "{e}");
    // A wrong token is refused at once, with the reason.
    let ca = strata_security::ClusterCa::create().unwrap();
    let wrong = strata_security::JoinToken::new(&ca).to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = strata_agent::AgentOptions::new(cluster.master.to_string(), &agent_dir);
    options.insecure = false;
    options.join_token = Some(wrong);
    let e = strata_agent::run(listener, options, async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        strata_agent::Shutdown::KeepTasks
    })
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("not the one the join token names"),
        "{e}"
    );

    // The user: the right token.
    let token = cluster.join_token();
    let (agent_addr, stop_agent) = cluster.start_agent(&agent_dir, Some(token)).await;
    let agent = cluster.wait_for_agent(None).await;
    let agent_id = agent["id"].as_str().unwrap().to_string();
    assert!(agent["principal"].as_str().unwrap().starts_with("agent:"));
    let key = agent_dir.join("tls/agent.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Its API is HTTPS; callers need a credential of the cluster (the agent fetches
    // the digests from the master).
    let get = |credential: Option<Credential>| {
        let tls = cluster.tls(credential);
        async move {
            let client = tls
                .reqwest(reqwest::Client::builder())
                .unwrap()
                .build()
                .unwrap();
            client
                .get(format!("https://127.0.0.1:{}/state", agent_addr.port()))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(Some(Credential::new("admin", SECRET))).await.ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the agent's API never accepted the admin"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(None).await.unwrap(), 401);
    assert_eq!(
        get(Some(Credential::new("admin", "wrong-secret-0123456789")))
            .await
            .unwrap(),
        401
    );

    // Renewal: the certificate on disk changes before the first expires, the agent
    // stays registered, and its API serves the new certificate.
    let first = std::fs::read_to_string(agent_dir.join("tls/agent.crt")).unwrap();
    wait_until("a renewed certificate", || {
        std::fs::read_to_string(agent_dir.join("tls/agent.crt")).unwrap() != first
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The first certificate has expired by now; the API answers with the new one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(Some(Credential::new("admin", SECRET))).await.ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the agent's API stopped answering after renewal"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_for_agent(Some(&agent_id)).await;

    // A restart uses the kept (renewed) certificate, no token, and keeps the agent id.
    let _ = stop_agent.send(());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_addr, stop_again) = cluster.start_agent(&agent_dir, None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = cluster.state().await;
        let back = state["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == agent_id.as_str() && a["status"] == "ACTIVE")
            && state["agents"].as_array().unwrap().len() == 1;
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not come back: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_again.send(());
    cluster.stop().await;
}
