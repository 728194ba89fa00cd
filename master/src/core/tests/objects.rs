//! Configs and secrets in the core (issue 16): who may create, update, remove, list
//! and use them; the versions tasks are pinned to at ACCEPT; what an agent may fetch;
//! and that the registry brings them all back after a restart. The attacker's side
//! (another principal, another agent, a name it may not know) beside the user's.

use super::*;
use strata_security::{Acls, Authorizer};

const ACLS: &str = r#"{
  "permissive": false,
  "register_frameworks": [{"principals": {"type": "ANY"}, "roles": {"type": "ANY"}}],
  "run_tasks": [{"principals": {"type": "ANY"}, "users": {"type": "ANY"}}],
  "manage_secrets": [
    {"principals": {"values": ["admin"]}, "secrets": {"type": "ANY"}},
    {"principals": {"values": ["web"]}, "secrets": {"values": ["web-*"]}}
  ],
  "manage_configs": [{"principals": {"type": "ANY"}, "configs": {"type": "ANY"}}],
  "view_secrets": [{"principals": {"values": ["admin"]}, "secrets": {"type": "ANY"}}],
  "use_secrets": [
    {"principals": {"values": ["admin"]}, "secrets": {"type": "ANY"}},
    {"principals": {"values": ["batch"]}, "secrets": {"values": ["shared"]}}
  ]
}"#;

fn sim() -> Sim {
    let mut c = config();
    c.authorizer = Authorizer::new(Acls::parse(ACLS).unwrap());
    Sim::with(c, Registry::default())
}

fn create(
    s: &mut Sim,
    principal: &str,
    kind: StoredKind,
    name: &str,
    data: &[u8],
    update: bool,
) -> Result<ObjectAnswer, ObjectError> {
    let call = ObjectCall::Create {
        principal: principal.into(),
        kind,
        name: name.into(),
        data: data.to_vec(),
        size: data.len() as u64,
        update,
    };
    s.m.object_call(call, s.now)
}

fn list(s: &mut Sim, principal: &str) -> Vec<v1::ObjectInfo> {
    let call = ObjectCall::List {
        principal: principal.into(),
        kind: None,
    };
    match s.m.object_call(call, s.now).unwrap() {
        ObjectAnswer::List(l) => l,
        other => panic!("{other:?}"),
    }
}

fn info(principal: &str) -> v1::FrameworkInfo {
    let mut info = framework_info(principal, &["*"], true);
    info.principal = principal.into();
    info
}

fn with_secret(mut task: v1::TaskInfo, name: &str, version: u64) -> v1::TaskInfo {
    task.objects.push(v1::ObjectRef {
        kind: v1::ObjectKind::Secret as i32,
        name: name.into(),
        version,
        target: Some(v1::object_ref::Target::File(name.into())),
    });
    task
}

fn with_config_env(mut task: v1::TaskInfo, name: &str, var: &str) -> v1::TaskInfo {
    task.objects.push(v1::ObjectRef {
        kind: v1::ObjectKind::Config as i32,
        name: name.into(),
        version: 0,
        target: Some(v1::object_ref::Target::Env(var.into())),
    });
    task
}

/// Launches `task` on a fresh offer; the first update it got (None: launched) and the
/// task the agent was sent.
fn launch_one(
    s: &mut Sim,
    fw: &SimFramework,
    agent: &SimAgent,
    task: v1::TaskInfo,
) -> (Option<v1::TaskStatus>, Option<v1::TaskInfo>) {
    let mut offers = Vec::new();
    for _ in 0..5 {
        let effects = s.tick_after(1.5);
        offers = offers_for(&effects, fw.conn);
        if !offers.is_empty() {
            break;
        }
    }
    assert!(!offers.is_empty(), "no offer for {}", task.task_id);
    s.accept(fw, offer_ids(&offers), vec![task], refuse(0.0))
        .unwrap();
    let effects = s.effects();
    let sent = agent_messages(&effects, agent.conn)
        .into_iter()
        .find_map(|m| match m {
            Message::RunTask(r) => r.task,
            _ => None,
        });
    (updates_for(&effects, fw.conn).into_iter().next(), sent)
}

#[test]
fn objects_are_created_versioned_listed_and_removed_by_who_may() {
    let mut s = sim();
    // admin creates; a second create of the same name is refused, an update is v2.
    assert_eq!(
        create(
            &mut s,
            "admin",
            StoredKind::Secret,
            "db-pass",
            b"sealed-1",
            false
        ),
        Ok(ObjectAnswer::Version(1))
    );
    let e = create(&mut s, "admin", StoredKind::Secret, "db-pass", b"x", false).unwrap_err();
    assert_eq!(e.code, ObjectCode::AlreadyExists);
    assert!(e.message.contains("strata secret update db-pass"), "{e}");
    assert_eq!(
        create(
            &mut s,
            "admin",
            StoredKind::Secret,
            "db-pass",
            b"sealed-2",
            true
        ),
        Ok(ObjectAnswer::Version(2))
    );
    // web may manage web-* only, and owns what it creates.
    assert_eq!(
        create(&mut s, "web", StoredKind::Secret, "web-token", b"t", false),
        Ok(ObjectAnswer::Version(1))
    );
    let e = create(&mut s, "web", StoredKind::Secret, "db-pass", b"evil", true).unwrap_err();
    assert_eq!(e.code, ObjectCode::PermissionDenied);
    assert_eq!(
        e.message,
        "principal 'web' is not authorized to update secret 'db-pass'"
    );
    // The same answer for a name that does not exist: nothing tells web which exist.
    let e = create(&mut s, "web", StoredKind::Secret, "nope", b"evil", true).unwrap_err();
    assert_eq!(
        e.message,
        "principal 'web' is not authorized to update secret 'nope'"
    );
    let e = create(&mut s, "web", StoredKind::Secret, "other", b"x", false).unwrap_err();
    assert_eq!(e.code, ObjectCode::PermissionDenied);

    // Listings: admin sees every secret, web only its own; values never appear.
    let names = |l: &[v1::ObjectInfo]| l.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&list(&mut s, "admin")), ["db-pass", "web-token"]);
    let web = list(&mut s, "web");
    assert_eq!(names(&web), ["web-token"]);
    assert_eq!(web[0].owner, "web");
    assert_eq!(web[0].principals, ["web", "admin"]);
    assert!(!web[0].anyone);
    let admin = list(&mut s, "admin");
    let db = &admin[0];
    assert_eq!(
        db.versions
            .iter()
            .map(|v| (v.version, v.size))
            .collect::<Vec<_>>(),
        [(1, 8), (2, 8)]
    );
    assert!(!format!("{admin:?}").contains("sealed-2"));

    // Removal: by the owner or the ACL; then it is gone.
    let remove = |s: &mut Sim, p: &str, name: &str| {
        s.m.object_call(
            ObjectCall::Remove {
                principal: p.into(),
                kind: StoredKind::Secret,
                name: name.into(),
            },
            s.now,
        )
    };
    assert_eq!(
        remove(&mut s, "web", "db-pass").unwrap_err().code,
        ObjectCode::PermissionDenied
    );
    assert_eq!(
        remove(&mut s, "web", "db-pass").unwrap_err().message,
        "principal 'web' is not authorized to remove secret 'db-pass'"
    );
    assert_eq!(
        remove(&mut s, "web", "web-token"),
        Ok(ObjectAnswer::Removed)
    );
    // web may manage web-*: it may learn that one is gone.
    assert_eq!(
        remove(&mut s, "web", "web-token").unwrap_err().message,
        "secret 'web-token' does not exist"
    );
    assert_eq!(
        remove(&mut s, "admin", "web-token").unwrap_err().code,
        ObjectCode::NotFound
    );
    assert_eq!(names(&list(&mut s, "admin")), ["db-pass"]);
}

#[test]
fn bad_names_and_sizes_change_nothing() {
    let mut s = sim();
    for (name, want) in [
        ("Bad", "is not valid"),
        ("a/b", "is not valid"),
        ("", "is empty"),
    ] {
        let e = create(&mut s, "admin", StoredKind::Config, name, b"x", false).unwrap_err();
        assert_eq!(e.code, ObjectCode::InvalidArgument);
        assert!(e.message.contains(want), "{name}: {e}");
    }
    let big = vec![b'x'; strata_proto::objects::MAX_OBJECT_BYTES + 1];
    let e = create(&mut s, "admin", StoredKind::Config, "big", &big, false).unwrap_err();
    assert!(e.message.contains("the limit is 512000"), "{e}");
    assert!(s.m.objects().is_empty());
    assert!(persisted(&s.effects()).is_empty());
}

#[test]
fn tasks_launch_with_pinned_versions_and_only_with_secrets_they_may_use() {
    let mut s = sim();
    let agent = s.add_agent("a1", "cpus:8;mem:4096");
    create(&mut s, "admin", StoredKind::Secret, "db-pass", b"v1", false).unwrap();
    create(&mut s, "admin", StoredKind::Secret, "db-pass", b"v2", true).unwrap();
    create(&mut s, "admin", StoredKind::Secret, "shared", b"s", false).unwrap();
    create(&mut s, "web", StoredKind::Config, "conf", b"c", false).unwrap();
    s.effects();

    // admin may use db-pass: version 0 is pinned to the latest, 1 stays 1.
    let admin = s.subscribe_info(info("admin"));
    let t = with_config_env(
        with_secret(task("t1", "cpus:1;mem:64"), "db-pass", 0),
        "conf",
        "CONF",
    );
    let (update, sent) = launch_one(&mut s, &admin, &agent, t);
    assert!(update.is_none(), "{update:?}");
    let sent = sent.expect("RunTask");
    assert_eq!(
        sent.objects.iter().map(|r| r.version).collect::<Vec<_>>(),
        [2, 1]
    );
    let (update, sent) = launch_one(
        &mut s,
        &admin,
        &agent,
        with_secret(task("t2", "cpus:1;mem:64"), "db-pass", 1),
    );
    assert!(update.is_none(), "{update:?}");
    assert_eq!(sent.unwrap().objects[0].version, 1);

    // A principal that may use it learns that it does not exist, or which versions are kept.
    let (update, _) = launch_one(
        &mut s,
        &admin,
        &agent,
        with_secret(task("t3", "cpus:1;mem:64"), "no-such", 0),
    );
    let update = update.unwrap();
    assert_eq!(reason_of(&update), v1::TaskStatusReason::ReasonTaskInvalid);
    assert_eq!(update.message, "task 't3': secret 'no-such' does not exist");
    let (update, _) = launch_one(
        &mut s,
        &admin,
        &agent,
        with_secret(task("t4", "cpus:1;mem:64"), "db-pass", 9),
    );
    assert_eq!(
        update.unwrap().message,
        "task 't4': secret 'db-pass' has no version 9 (kept: versions 1-2)"
    );
    // A bad reference is the task's error, naming the field.
    let mut bad = with_secret(task("t5", "cpus:1;mem:64"), "db-pass", 0);
    bad.objects[0].target = Some(v1::object_ref::Target::File("../../etc/passwd".into()));
    let (update, _) = launch_one(&mut s, &admin, &agent, bad);
    let update = update.unwrap();
    assert_eq!(reason_of(&update), v1::TaskStatusReason::ReasonTaskInvalid);
    assert!(
        update.message.contains("'..' component"),
        "{}",
        update.message
    );

    // batch may use `shared` only; refused the same way for a name that exists and
    // one that does not.
    let batch = s.subscribe_info(info("batch"));
    let (update, _) = launch_one(
        &mut s,
        &batch,
        &agent,
        with_secret(task("b1", "cpus:1;mem:64"), "shared", 0),
    );
    assert!(update.is_none(), "{update:?}");
    for (id, name) in [("b2", "db-pass"), ("b3", "no-such")] {
        let (update, sent) = launch_one(
            &mut s,
            &batch,
            &agent,
            with_secret(task(id, "cpus:1;mem:64"), name, 0),
        );
        assert!(sent.is_none());
        let update = update.expect("TASK_ERROR");
        assert_eq!(state_of(&update), v1::TaskState::TaskError);
        assert_eq!(
            reason_of(&update),
            v1::TaskStatusReason::ReasonTaskUnauthorized
        );
        assert_eq!(
            update.message,
            format!(
                "task '{id}' was not launched: batch is not authorized to use secret '{name}': no rule of use_secrets allows it and the ACLs are not permissive"
            )
        );
    }
    // The list counts the tasks that use each object.
    let l = list(&mut s, "admin");
    let uses: Vec<(String, u64)> = l.iter().map(|o| (o.name.clone(), o.tasks)).collect();
    assert_eq!(
        uses,
        [
            ("conf".to_string(), 1),
            ("db-pass".to_string(), 2),
            ("shared".to_string(), 1)
        ]
    );
}

fn fetch(
    s: &mut Sim,
    principal: &str,
    agent_id: &str,
    fw: &SimFramework,
    task_id: &str,
) -> Result<ObjectAnswer, ObjectError> {
    let call = ObjectCall::Fetch {
        principal: principal.into(),
        agent_id: agent_id.into(),
        framework_id: fw.id.clone(),
        task_id: task_id.into(),
    };
    s.m.object_call(call, s.now)
}

#[test]
fn only_the_agent_a_task_was_sent_to_fetches_its_values() {
    let mut s = sim();
    // An agent with a certificate (principal) and another one.
    let conn = s.conn();
    let mut info_a = Sim::agent_info("a1", "cpus:8;mem:4096");
    info_a.principal = "agent:node-a".into();
    info_a.id = "node-a".into();
    s.handle(Input::AgentRegister {
        conn,
        register: v1::Register {
            checkpointed: None,
            agent_info: Some(info_a.clone()),
            tasks: vec![],
            version: "test".into(),
        },
        peer: None,
    })
    .unwrap();
    s.effects();
    let agent = SimAgent {
        conn,
        id: "node-a".into(),
        info: info_a,
    };
    create(
        &mut s,
        "admin",
        StoredKind::Secret,
        "db-pass",
        b"sealed",
        false,
    )
    .unwrap();
    create(&mut s, "admin", StoredKind::Config, "conf", b"plain", false).unwrap();
    let admin = s.subscribe_info(info("admin"));
    let t = with_config_env(
        with_secret(task("t1", "cpus:1;mem:64"), "db-pass", 0),
        "conf",
        "C",
    );
    let (update, _) = launch_one(&mut s, &admin, &agent, t);
    assert!(update.is_none());

    let values = match fetch(&mut s, "agent:node-a", "node-a", &admin, "t1").unwrap() {
        ObjectAnswer::Values(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        values
            .iter()
            .map(|v| (v.name.as_str(), v.version, v.data.as_slice()))
            .collect::<Vec<_>>(),
        [("db-pass", 1, &b"sealed"[..]), ("conf", 1, &b"plain"[..])]
    );
    // Another agent, a user, anonymous, a wrong agent id or an unknown task: one answer.
    for (principal, agent_id, task_id) in [
        ("agent:node-b", "node-a", "t1"),
        ("admin", "node-a", "t1"),
        ("", "node-a", "t1"),
        ("agent:node-a", "node-b", "t1"),
        ("agent:node-a", "node-a", "t9"),
    ] {
        let e = fetch(&mut s, principal, agent_id, &admin, task_id).unwrap_err();
        assert_eq!(e.code, ObjectCode::PermissionDenied, "{principal}");
        assert!(e.message.contains("was launched on agent"), "{e}");
    }
    // Removed meanwhile: the fetch says so (the agent fails the launch with it).
    s.m.object_call(
        ObjectCall::Remove {
            principal: "admin".into(),
            kind: StoredKind::Secret,
            name: "db-pass".into(),
        },
        s.now,
    )
    .unwrap();
    let e = fetch(&mut s, "agent:node-a", "node-a", &admin, "t1").unwrap_err();
    assert_eq!(e.code, ObjectCode::NotFound);
    assert_eq!(e.message, "secret 'db-pass' was removed");
}

#[test]
fn the_registry_keeps_objects_and_their_last_versions_across_restarts() {
    let mut s = sim();
    create(&mut s, "admin", StoredKind::Secret, "db-pass", b"v1", false).unwrap();
    for i in 2..=12u8 {
        create(
            &mut s,
            "admin",
            StoredKind::Secret,
            "db-pass",
            &[b'v', i],
            true,
        )
        .unwrap();
    }
    create(&mut s, "admin", StoredKind::Config, "gone", b"x", false).unwrap();
    s.m.object_call(
        ObjectCall::Remove {
            principal: "admin".into(),
            kind: StoredKind::Config,
            name: "gone".into(),
        },
        s.now,
    )
    .unwrap();
    let registry = fold(Registry::default(), &s.effects());
    // Through the file format (base64 data) too.
    let registry: Registry =
        serde_json::from_str(&serde_json::to_string(&registry).unwrap()).unwrap();
    let registry_before_restart = registry.clone();
    let mut c = config();
    c.authorizer = Authorizer::new(Acls::parse(ACLS).unwrap());
    let mut again = Sim::with(c, registry);
    assert_eq!(again.m.objects().len(), 1);
    let l = list(&mut again, "admin");
    assert_eq!(
        l[0].versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        (3..=12).collect::<Vec<_>>()
    );
    assert_eq!(l[0].owner, "admin");
    assert_eq!(
        create(
            &mut again,
            "admin",
            StoredKind::Secret,
            "db-pass",
            b"v13",
            true
        ),
        Ok(ObjectAnswer::Version(13))
    );
    // Removed and created again, across a restart too, it goes on from its last
    // version: version 1 never names two values.
    again
        .m
        .object_call(
            ObjectCall::Remove {
                principal: "admin".into(),
                kind: StoredKind::Secret,
                name: "db-pass".into(),
            },
            again.now,
        )
        .unwrap();
    let registry = fold(registry_before_restart, &again.effects());
    let mut c = config();
    c.authorizer = Authorizer::new(Acls::parse(ACLS).unwrap());
    let mut third = Sim::with(c, registry);
    assert!(third.m.objects().is_empty());
    assert_eq!(
        create(
            &mut third,
            "admin",
            StoredKind::Secret,
            "db-pass",
            b"new",
            false
        ),
        Ok(ObjectAnswer::Version(14))
    );
    assert_eq!(
        create(&mut third, "admin", StoredKind::Config, "gone", b"x", false),
        Ok(ObjectAnswer::Version(2))
    );
}

#[test]
fn configs_are_shown_and_secrets_never() {
    let mut s = sim();
    create(
        &mut s,
        "web",
        StoredKind::Config,
        "conf",
        b"level=debug",
        false,
    )
    .unwrap();
    create(
        &mut s,
        "web",
        StoredKind::Config,
        "conf",
        b"level=info",
        true,
    )
    .unwrap();
    let get = |s: &mut Sim, version| {
        s.m.object_call(
            ObjectCall::GetConfig {
                principal: "anyone".into(),
                name: "conf".into(),
                version,
            },
            s.now,
        )
    };
    assert_eq!(
        get(&mut s, 0),
        Ok(ObjectAnswer::Config {
            version: 2,
            data: b"level=info".to_vec()
        })
    );
    assert_eq!(
        get(&mut s, 1),
        Ok(ObjectAnswer::Config {
            version: 1,
            data: b"level=debug".to_vec()
        })
    );
    assert_eq!(get(&mut s, 7).unwrap_err().code, ObjectCode::NotFound);
    // No call answers a secret's data but an agent's fetch; the state shows no object.
    create(&mut s, "admin", StoredKind::Secret, "s", b"PLANTED", false).unwrap();
    let state = s.state_json().to_string();
    assert!(!state.contains("PLANTED"));
    let e =
        s.m.object_call(
            ObjectCall::GetConfig {
                principal: "admin".into(),
                name: "s".into(),
                version: 0,
            },
            s.now,
        )
        .unwrap_err();
    assert_eq!(e.message, "config 's' does not exist");
}
