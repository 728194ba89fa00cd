//! The files API against a real agent running a real task: `/files/browse` lists a
//! task's sandbox and `/files/read?path=` reads any file of it, but a task that plants
//! symlinks in its sandbox never gets the agent (root) to read what is not the task's.

mod common;

use common::*;

#[tokio::test]
async fn a_task_browses_and_reads_its_sandbox_but_never_through_its_symlinks() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut master = FakeMaster::start().await;
    let agent = TestAgent::start(options(master.addr, dir.path())).await;
    master.next_register().await;
    // The attacker: `evil -> /`, `sub -> /etc`, and a link back up from deep down.
    master.run_task(
        framework(),
        shell_task(
            "attacker",
            "mkdir -p logs/deep && printf 'hi\\n' > logs/deep/app.log && \
             ln -s / evil && ln -s /etc sub && ln -s ../../evil logs/deep/up && echo planted",
        ),
    );
    master.follow("attacker").await;
    let q = format!("framework_id={FRAMEWORK}&task_id=attacker");

    // What the task made is listed as it is, symlinks as symlinks.
    let (status, root) = agent.get_json(&format!("/files/browse?{q}")).await;
    assert_eq!(status, 200, "{root}");
    assert_eq!(root["path"], "");
    assert_eq!(root["state"], "TASK_FINISHED");
    assert_eq!(root["truncated"], false);
    let kinds: Vec<(&str, &str)> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("logs", "dir"),
            ("evil", "symlink"),
            ("stderr", "file"),
            ("stdout", "file"),
            ("sub", "symlink"),
        ]
    );
    let (status, deep) = agent
        .get_json(&format!("/files/browse?{q}&path=logs/deep"))
        .await;
    assert_eq!(status, 200, "{deep}");
    assert_eq!(deep["path"], "logs/deep");
    let app = &deep["entries"][0];
    assert_eq!(
        (&app["name"], &app["path"], &app["kind"], &app["size"]),
        (
            &"app.log".into(),
            &"logs/deep/app.log".into(),
            &"file".into(),
            &3.into()
        ),
        "{deep}"
    );
    assert_eq!(deep["entries"][1]["name"], "up");
    assert_eq!(deep["entries"][1]["kind"], "symlink");
    assert!(
        deep["entries"][1]["mode"]
            .as_str()
            .unwrap()
            .starts_with('l')
    );

    // Its own files are read by path; stdout by either name.
    let (status, body) = agent
        .get_json(&format!("/files/read?{q}&path=logs/deep/app.log"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], "hi\n");
    assert_eq!(body["eof"], true);
    for name in ["file=stdout", "path=stdout", "path=./stdout"] {
        let (status, body) = agent.get_json(&format!("/files/read?{q}&{name}")).await;
        assert_eq!(
            (status, &body["data"]),
            (200, &"planted\n".into()),
            "{name}"
        );
    }

    // But nothing outside the sandbox, through any of its symlinks.
    for (endpoint, path, at) in [
        ("read", "evil/etc/shadow", "evil"),
        ("read", "evil/etc/passwd", "evil"),
        ("read", "sub/shadow", "sub"),
        ("read", "sub/passwd", "sub"),
        ("read", "logs/deep/up/etc/shadow", "logs/deep/up"),
        ("browse", "evil", "evil"),
        ("browse", "evil/etc", "evil"),
        ("browse", "sub", "sub"),
        ("browse", "logs/deep/up", "logs/deep/up"),
    ] {
        let (status, body) = agent
            .get_json(&format!("/files/{endpoint}?{q}&path={path}"))
            .await;
        assert_eq!(status, 403, "{endpoint} {path}: {body}");
        assert_eq!(
            body["error"],
            format!(
                "refusing to serve '{at}' of the task: it is a symbolic link, which the agent does not follow"
            ),
            "{endpoint} {path}"
        );
        assert!(!body.to_string().contains("root:"), "{body}");
    }
    // Nor by leaving it by name.
    for path in [
        "/etc/shadow",
        "%2Fetc%2Fshadow",
        "../../../../etc/shadow",
        "logs/..%2F..%2F..%2F..%2F..%2Fetc%2Fshadow",
    ] {
        for endpoint in ["read", "browse"] {
            let (status, body) = agent
                .get_json(&format!("/files/{endpoint}?{q}&path={path}"))
                .await;
            assert_eq!(status, 400, "{endpoint} {path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("invalid path: "),
                "{body}"
            );
        }
    }
    // One name of a file, not two.
    let (status, body) = agent
        .get_json(&format!("/files/read?{q}&file=stdout&path=stdout"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "give either file (stdout or stderr) or path (a file below the sandbox), not both"
    );
    // Unknown tasks and paths: 404.
    let (status, _) = agent
        .get_json(&format!(
            "/files/browse?framework_id={FRAMEWORK}&task_id=nope"
        ))
        .await;
    assert_eq!(status, 404);
    let (status, body) = agent
        .get_json(&format!("/files/browse?{q}&path=logs/nope"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"],
        "no directory 'logs/nope' in the sandbox of the task"
    );

    agent.stop().await;
    master.stop().await;
}
