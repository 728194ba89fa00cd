//! Configs and secrets through the gRPC layer (issue 16): created by an operator,
//! encrypted at rest in the registry, kept across restarts, fetched by the agent a
//! task was sent to (in the clear, over its link) and by nobody else; a wrong or
//! missing key stops the master rather than losing the secrets.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use strata_proto::v1;
use strata_proto::v1::event::Event as Ev;
use strata_proto::v1::master_message::Message as Down;
use tonic::Code;

/// The value planted in a secret: it must appear nowhere on disk.
const PLANTED: &str = "PLANTED-s3cr3t-6f1c2a9e";

async fn create(
    master: &TestMaster,
    kind: v1::ObjectKind,
    name: &str,
    data: &[u8],
    update: bool,
) -> Result<u64, tonic::Status> {
    master
        .operator()
        .await
        .create_object(v1::CreateObjectRequest {
            kind: kind as i32,
            name: name.into(),
            data: data.to_vec(),
            update,
        })
        .await
        .map(|r| r.into_inner().version)
}

async fn list(master: &TestMaster) -> Vec<v1::ObjectInfo> {
    master
        .operator()
        .await
        .list_objects(v1::ListObjectsRequest { kind: 0 })
        .await
        .expect("list")
        .into_inner()
        .objects
}

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_kept_across_restarts_and_fetched_by_their_agent() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    assert_eq!(
        create(
            &master,
            v1::ObjectKind::Secret,
            "db-pass",
            b"old-value",
            false
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        create(
            &master,
            v1::ObjectKind::Secret,
            "db-pass",
            PLANTED.as_bytes(),
            true
        )
        .await
        .unwrap(),
        2
    );
    create(
        &master,
        v1::ObjectKind::Config,
        "app-conf",
        b"level=info\n",
        false,
    )
    .await
    .unwrap();
    // Refusals: too large, a bad name, a second create.
    let big = vec![b'x'; 500 * 1024 + 1];
    let e = create(&master, v1::ObjectKind::Config, "big", &big, false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "config 'big' is 512001 bytes; the limit is 512000 (500 KiB)"
    );
    let e = create(&master, v1::ObjectKind::Secret, "Db Pass", b"x", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = create(&master, v1::ObjectKind::Secret, "db-pass", b"x", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // The key file: created private.
    let key = dir.path().join("secrets.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // An agent and a framework; a task that uses the secret and the config.
    let mut agent = attach(&master, register(agent_info("node1")))
        .await
        .expect("attach");
    let reg = registered(&mut agent).await;
    let (mut events, s) = subscribe(&master, framework_info("secrets")).await;
    let offer = loop {
        if let Some(Ev::Offers(o)) = next_event(&mut events).await.event {
            break o.offers.into_iter().next().unwrap();
        }
    };
    let task = v1::TaskInfo {
        task_id: "t1".into(),
        name: "t1".into(),
        agent_id: reg.agent_id.clone(),
        resources: strata_proto::Resources::cpus_mem(0.5, 64.0).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "cat secrets/db-pass".into(),
            ..Default::default()
        }),
        objects: vec![
            v1::ObjectRef {
                kind: v1::ObjectKind::Secret as i32,
                name: "db-pass".into(),
                version: 0,
                target: Some(v1::object_ref::Target::File("db-pass".into())),
            },
            v1::ObjectRef {
                kind: v1::ObjectKind::Config as i32,
                name: "app-conf".into(),
                version: 0,
                target: Some(v1::object_ref::Target::Env("APP_CONF".into())),
            },
        ],
        ..Default::default()
    };
    master
        .scheduler()
        .await
        .accept(v1::AcceptRequest {
            header: Some(v1::CallHeader {
                framework_id: s.framework_id.clone(),
                stream_id: s.stream_id.clone(),
            }),
            offer_ids: vec![offer.id],
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    task_infos: vec![task],
                })),
            }],
            filters: None,
        })
        .await
        .expect("accept");
    let run = loop {
        if let Down::RunTasks(r) = next_master_message(&mut agent).await {
            break r;
        }
    };
    // The agent is sent references with their versions pinned, never values.
    let sent = &run.tasks[0];
    assert_eq!(
        sent.objects.iter().map(|r| r.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(!contains(
        &prost::Message::encode_to_vec(&run),
        PLANTED.as_bytes()
    ));

    // The agent fetches the values over its link.
    let fetched = master
        .agent_link()
        .await
        .fetch_objects(v1::FetchObjectsRequest {
            agent_id: reg.agent_id.clone(),
            framework_id: s.framework_id.clone(),
            task_id: "t1".into(),
        })
        .await
        .expect("fetch")
        .into_inner()
        .objects;
    let values: Vec<(&str, u64, &[u8])> = fetched
        .iter()
        .map(|v| (v.name.as_str(), v.version, v.data.as_slice()))
        .collect();
    assert_eq!(
        values,
        [
            ("db-pass", 2, PLANTED.as_bytes()),
            ("app-conf", 1, &b"level=info\n"[..])
        ]
    );
    // For a task it was not sent: refused.
    let e = master
        .agent_link()
        .await
        .fetch_objects(v1::FetchObjectsRequest {
            agent_id: "another-agent".into(),
            framework_id: s.framework_id.clone(),
            task_id: "t1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Nothing the master shows holds the value; /state names the references.
    let state = http_get(&master, "/state").await.text().await.unwrap();
    assert!(!state.contains(PLANTED));
    let json: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        json["tasks"][0]["objects"],
        serde_json::json!([
            {"kind": "secret", "name": "db-pass", "version": 2, "file": "db-pass"},
            {"kind": "config", "name": "app-conf", "version": 1, "env": "APP_CONF"}
        ])
    );
    let metrics = http_get(&master, "/metrics").await.text().await.unwrap();
    assert!(!metrics.contains(PLANTED));
    for line in [
        "strata_master_secrets 1",
        "strata_master_configs 1",
        "strata_master_object_fetches_total 1",
        "strata_master_object_fetches_refused_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let listed = format!("{:?}", list(&master).await);
    assert!(!listed.contains(PLANTED));
    drop((events, agent));
    master.stop().await.unwrap();

    // On disk: the registry holds the secret sealed only.
    for (path, bytes) in files(dir.path()) {
        assert!(
            !contains(&bytes, PLANTED.as_bytes()),
            "{} holds the secret in the clear",
            path.display()
        );
    }

    // A restarted master has every object, every version.
    let master = TestMaster::start(dir.path()).await;
    let objects = list(&master).await;
    let summary: Vec<(String, Vec<u64>)> = objects
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                o.versions.iter().map(|v| v.version).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("app-conf".to_string(), vec![1]),
            ("db-pass".to_string(), vec![1, 2])
        ]
    );
    let config = master
        .operator()
        .await
        .get_config(v1::GetConfigRequest {
            name: "app-conf".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(config.data, b"level=info\n");
    master.stop().await.unwrap();

    // Another key, or none, stops the master at start (the secrets would not open).
    let good = std::fs::read(&key).unwrap();
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let e = TestMaster::start(dir.path())
        .await
        .stop()
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("does not open the registry's secrets"),
        "{e}"
    );
    std::fs::remove_file(&key).unwrap();
    let e = TestMaster::start(dir.path())
        .await
        .stop()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("holds 1 secrets"), "{e}");
    assert!(
        !key.exists(),
        "no new key was made over the registry's secrets"
    );
    std::fs::write(&key, good).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = TestMaster::start(dir.path())
        .await
        .stop()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
