//! The agent's API under the master's ACLs (issue 14), in a secure cluster in one
//! process: a master with TLS, credentials and an ACL file, an agent that joins with
//! the token (and fetches the credentials and the ACLs from the master), and a
//! framework of principal `web` that runs a task printing a line.
//!
//! The user (`web`) reads its task's stdout through the agent's `/files/read` and sees
//! its task in the agent's `/state`; the attacker (`intruder`, another principal of the
//! cluster, not an operator) is refused the sandbox with a 403 that says who may not do
//! what, and does not see the task; the operator (`admin`) may do both; `auditor` may
//! only because of the master's ACL file, which the agent must have fetched.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_framework_sdk::{
    ClientTls, Credential, Driver, DriverHandle, DriverOptions, OfferPool, Scheduler, TaskBuilder,
    v1,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const ADMIN: &str = "admin-secret-0123456789";
const WEB: &str = "web-secret-0123456789";
const INTRUDER: &str = "intruder-secret-0123456789";
const AUDITOR: &str = "auditor-secret-0123456789";
const LINE: &str = "hello from the task of web";

/// Runs one task that prints [`LINE`], then says how it ended.
struct Web {
    pending: Option<TaskBuilder>,
    ended: mpsc::UnboundedSender<(String, v1::TaskStatus)>,
}

impl Scheduler for Web {
    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        let mut pool = OfferPool::new(offers);
        if let Some(task) = self.pending.take() {
            match pool.place(&task) {
                Ok(Some(_)) => {}
                _ => self.pending = Some(task),
            }
        }
        let placement = pool.into_placement();
        let unused = placement.unused_ids();
        for launch in placement.launches {
            driver
                .launch(vec![launch.offer.id], launch.tasks)
                .await
                .expect("launch");
        }
        if !unused.is_empty() {
            let _ = driver.decline(unused, Some(30.0)).await;
        }
    }

    async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
        if strata_framework_sdk::is_terminal(strata_framework_sdk::state_of(&status)) {
            let framework_id = driver.framework_id().unwrap_or_default();
            let _ = self.ended.send((framework_id, status));
        }
    }
}

fn write_security_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let credentials = dir.join("credentials.json");
    std::fs::write(
        &credentials,
        serde_json::json!({"credentials": [
            {"principal": "admin", "secret": ADMIN},
            {"principal": "web", "secret": WEB},
            {"principal": "intruder", "secret": INTRUDER},
            {"principal": "auditor", "secret": AUDITOR},
        ]})
        .to_string(),
    )
    .unwrap();
    // Everything else permissive (this test is about the agent); the tasks and the
    // sandboxes are the operators' and the auditor's, besides their owners'.
    let rules = serde_json::json!([
        {"principals": {"values": ["admin", "auditor"]}, "framework_principals": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "framework_principals": {"type": "NONE"}},
    ]);
    let acls = dir.join("acls.json");
    std::fs::write(
        &acls,
        serde_json::json!({
            "permissive": true,
            "view_tasks": rules,
            "access_sandboxes": rules,
        })
        .to_string(),
    )
    .unwrap();
    (credentials, acls)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_is_its_owners_and_the_operators_not_another_principals() {
    let dir = tempfile::tempdir().unwrap();
    let (credentials, acls) = write_security_files(dir.path());

    // The master: TLS, the credentials, the ACL file.
    let master_dir = dir.path().join("master");
    let mut options = strata_master::MasterOptions::new(&master_dir);
    options.allocation_interval = Duration::from_millis(200);
    options.acls = Some(acls);
    options.security = strata_master::Security::Tls(strata_master::TlsOptions {
        names: vec![],
        credentials: Some(credentials),
        agent_cert_ttl: Duration::from_secs(3600),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    let mut s = stopped.clone();
    background.spawn(async move {
        strata_master::serve(listener, options, async move {
            let _ = s.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
    });
    let token_file = master_dir.join("tls/join-token");
    wait_until("the join token", async || token_file.exists()).await;
    let ca_pem = std::fs::read_to_string(master_dir.join("tls/ca.crt")).unwrap();
    let tls = |principal: &str, secret: &str| ClientTls {
        ca_pem: Some(ca_pem.clone()),
        identity: None,
        credential: Some(Credential::new(principal, secret)),
    };

    // The agent: joins with the token, runs process tasks (as `nobody`), no cgroups.
    let agent_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = agent_listener.local_addr().unwrap();
    let mut options = strata_agent::AgentOptions::new(master.to_string(), dir.path().join("agent"));
    options.resources = strata_proto::Resources::parse("cpus:1;mem:256;disk:100").unwrap();
    options.hostname = Some("acl-agent".into());
    options.insecure = false;
    options.join_token = Some(std::fs::read_to_string(&token_file).unwrap().trim().into());
    options.isolation.mode = strata_agent::isolation::IsolationMode::Explicit(vec![]);
    options.registration_backoff = Duration::from_millis(50);
    let mut s = stopped.clone();
    background.spawn(async move {
        let _ = strata_agent::run(agent_listener, options, async move {
            let _ = s.wait_for(|s| *s).await;
            strata_agent::Shutdown::KillTasks
        })
        .await;
    });

    // The framework of `web` runs a task that prints a line.
    let (ended, mut ends) = mpsc::unbounded_channel();
    let web = Web {
        pending: Some(
            TaskBuilder::new("hello")
                .shell(format!("echo '{LINE}'"))
                .cpus(0.1)
                .mem(32.0),
        ),
        ended,
    };
    let framework = v1::FrameworkInfo {
        name: "web".into(),
        ..Default::default()
    };
    let driver = Driver::new(master.to_string(), framework, web).with_options(DriverOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        subscribe_timeout: Some(Duration::from_secs(30)),
        tls: tls("web", WEB),
        ..DriverOptions::default()
    });
    background.spawn(async move {
        let _ = driver.run().await;
    });
    let (framework_id, status) = tokio::time::timeout(Duration::from_secs(40), ends.recv())
        .await
        .expect("the task ends in time")
        .expect("the framework runs");
    assert_eq!(
        strata_framework_sdk::state_of(&status),
        v1::TaskState::TaskFinished,
        "{}",
        status.message
    );

    // The agent's API (and the master's), as each principal.
    let get_at = async |port: u16, principal: &str, secret: &str, path: &str| {
        let client = tls(principal, secret)
            .reqwest(reqwest::Client::builder())
            .unwrap()
            .build()
            .unwrap();
        let response = client
            .get(format!("https://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    };
    let get = async |principal: &str, secret: &str, path: &str| {
        get_at(agent.port(), principal, secret, path).await
    };
    let read = format!(
        "/files/read?framework_id={framework_id}&task_id={}&file=stdout",
        status.task_id
    );
    let listed = |state: &serde_json::Value| {
        ["tasks", "completed_tasks"].iter().any(|list| {
            state[list]
                .as_array()
                .unwrap_or_else(|| panic!("no {list} in {state}"))
                .iter()
                .any(|t| t["task_id"] == status.task_id.as_str())
        })
    };

    // The agent takes the credentials from the master (every 30 s; the first at once).
    wait_until("the agent accepts web's credential", async || {
        get("web", WEB, "/state").await.0 == 200
    })
    .await;

    // The user: web reads its own task's stdout and sees its task.
    let (code, answer) = get("web", WEB, &read).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"], format!("{LINE}\n"), "{answer}");
    let (code, state) = get("web", WEB, "/state").await;
    assert_eq!(code, 200, "{state}");
    assert!(listed(&state), "web does not see its task: {state}");
    let task = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(state["completed_tasks"].as_array().unwrap())
        .find(|t| t["task_id"] == status.task_id.as_str())
        .unwrap();
    assert_eq!(task["framework_principal"], "web", "{state}");

    // The attacker: another principal of the cluster is refused the sandbox, with who
    // and what, and does not see the task; the agent's own facts it sees.
    let (code, answer) = get("intruder", INTRUDER, &read).await;
    assert_eq!(code, 403, "{answer}");
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        message.starts_with("intruder is not authorized to read sandboxes")
            && message.contains("'web'"),
        "{message}"
    );
    assert!(!message.contains(LINE), "{message}");
    let (code, state) = get("intruder", INTRUDER, "/state").await;
    assert_eq!(code, 200, "{state}");
    assert!(!listed(&state), "intruder sees web's task: {state}");
    assert_eq!(state["hostname"], "acl-agent", "{state}");
    assert!(state["resources"].is_object() || state["resources"].is_string());
    let (code, stats) = get("intruder", INTRUDER, "/monitor/statistics").await;
    assert_eq!(code, 200, "{stats}");
    assert!(!stats.to_string().contains(&status.task_id), "{stats}");

    // The operator may do both.
    let (code, answer) = get("admin", ADMIN, &read).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"], format!("{LINE}\n"), "{answer}");
    let (code, state) = get("admin", ADMIN, "/state").await;
    assert_eq!(code, 200, "{state}");
    assert!(listed(&state), "admin does not see web's task: {state}");

    // So may the auditor, but only by the master's ACL file: the agent fetched it (its
    // own defaults would refuse).
    wait_until("the agent applies the master's ACLs", async || {
        get("auditor", AUDITOR, &read).await.0 == 200
    })
    .await;
    let (_, state) = get("auditor", AUDITOR, "/state").await;
    assert!(listed(&state), "auditor does not see web's task: {state}");
    // ... which still refuse the intruder.
    assert_eq!(get("intruder", INTRUDER, &read).await.0, 403);

    // Through the master's dashboard (issue 18): the master asks the same ACLs, then
    // reads from the agent with its own certificate on behalf of the caller. The
    // owner and the operator get the line; the intruder is refused by the master.
    let via_master = async |principal: &str, secret: &str, path: &str| {
        get_at(master.port(), principal, secret, path).await
    };
    let relayed = format!(
        "/ui/tasks/{}/files/read?framework={framework_id}&file=stdout",
        status.task_id
    );
    for (who, secret) in [("web", WEB), ("admin", ADMIN)] {
        let (code, answer) = via_master(who, secret, &relayed).await;
        assert_eq!(code, 200, "{who}: {answer}");
        assert_eq!(answer["data"], format!("{LINE}\n"), "{who}: {answer}");
    }
    let browse = format!(
        "/ui/tasks/{}/files/browse?framework={framework_id}",
        status.task_id
    );
    let (code, listing) = via_master("web", WEB, &browse).await;
    assert_eq!(code, 200, "{listing}");
    assert!(listing.to_string().contains("\"stdout\""), "{listing}");
    let (code, answer) = via_master("intruder", INTRUDER, &relayed).await;
    assert!(code == 403 || code == 404, "{code}: {answer}");
    assert!(!answer.to_string().contains(LINE), "{answer}");

    let _ = stop.send(true);
    background.abort_all();
    while background.join_next().await.is_some() {}
}
