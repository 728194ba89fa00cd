//! The core asks the one authorizer (issue 14): which roles a framework's principal may
//! register, and the users, images and host paths its tasks may use. Refusals are
//! TASK_ERROR with REASON_TASK_UNAUTHORIZED and say who may not do what.

use super::*;
use strata_security::{Acls, Authorizer};

const ACLS: &str = r#"{
  "permissive": false,
  "register_frameworks": [
    {"principals": {"values": ["web"]}, "roles": {"values": ["web", "*"]}},
    {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}}
  ],
  "run_tasks": [
    {"principals": {"values": ["ops"]}, "users": {"values": ["root"]}},
    {"principals": {"type": "NONE"}, "users": {"values": ["root"]}},
    {"principals": {"type": "ANY"}, "users": {"type": "ANY"}}
  ],
  "use_images": [{"principals": {"type": "ANY"}, "images": {"values": ["registry.local/*"]}}],
  "use_host_volumes": [{"principals": {"values": ["ops"]}, "paths": {"values": ["/data"]}}]
}"#;

fn sim() -> Sim {
    let mut config = config();
    config.authorizer = Authorizer::new(Acls::parse(ACLS).unwrap());
    Sim::with(config, Registry::default())
}

fn info(principal: &str, roles: &[&str]) -> v1::FrameworkInfo {
    let mut info = framework_info(principal, roles, true);
    info.principal = principal.into();
    info.user = String::new();
    info
}

/// Launches `task` on a fresh offer of `agent` and returns the update it got.
fn launch_one(s: &mut Sim, fw: &SimFramework, task: v1::TaskInfo) -> Option<v1::TaskStatus> {
    let effects = s.tick_after(1.5);
    let offers = offers_for(&effects, fw.conn);
    assert!(!offers.is_empty(), "no offer");
    s.accept(fw, offer_ids(&offers), vec![task], refuse(0.0))
        .unwrap();
    updates_for(&s.effects(), fw.conn).into_iter().next()
}

fn docker(mut task: v1::TaskInfo, image: &str, host_path: Option<&str>) -> v1::TaskInfo {
    task.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(v1::DockerInfo {
            image: image.into(),
            ..Default::default()
        }),
        volumes: host_path
            .map(|p| {
                vec![v1::Volume {
                    host_path: p.into(),
                    container_path: "/data".into(),
                    mode: 0,
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
    });
    task
}

#[test]
fn a_principal_registers_only_the_roles_it_may() {
    let mut s = sim();
    s.subscribe_info(info("web", &["web"]));
    let conn = s.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(info("web", &["web", "db"])),
        suppressed_roles: vec![],
    };
    s.handle(Input::Subscribe { conn, request }).unwrap();
    let events = events_for(&s.effects(), conn);
    assert!(
        matches!(&events[..], [Event::Error(e)]
            if e.message == "web is not authorized to register a framework in role 'db': no rule of register_frameworks allows it and the ACLs are not permissive"),
        "{events:?}"
    );
    // No principal at all (an insecure client): only ANY rules apply.
    let conn = s.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(info("", &["*"])),
        suppressed_roles: vec![],
    };
    s.handle(Input::Subscribe { conn, request }).unwrap();
    assert!(
        matches!(&events_for(&s.effects(), conn)[..], [Event::Error(e)] if e.message.starts_with("anonymous is not authorized"))
    );
    assert_eq!(s.state_json()["frameworks"].as_array().unwrap().len(), 1);
}

#[test]
fn root_images_and_host_paths_need_an_acl() {
    let mut s = sim();
    s.add_agent("a1", "cpus:8;mem:4096");
    let web = s.subscribe_info(info("web", &["*"]));

    // The attacker: root, an image from elsewhere, a host path.
    let mut as_root = task("root", "cpus:1;mem:64");
    as_root.command.as_mut().unwrap().user = "root".into();
    let cases = [
        (
            as_root,
            "web is not authorized to run tasks as user 'root': rule run_tasks[1] refuses it",
        ),
        (
            docker(task("evil-image", "cpus:1;mem:64"), "evil/miner", None),
            "web is not authorized to run the image 'evil/miner'",
        ),
        (
            docker(
                task("mount", "cpus:1;mem:64"),
                "registry.local/web",
                Some("/etc"),
            ),
            "web is not authorized to mount the host path '/etc'",
        ),
    ];
    for (task, want) in cases {
        let id = task.task_id.clone();
        let update = launch_one(&mut s, &web, task).expect("an update");
        assert_eq!(state_of(&update), v1::TaskState::TaskError, "{id}");
        assert_eq!(
            reason_of(&update),
            v1::TaskStatusReason::ReasonTaskUnauthorized
        );
        assert!(update.message.contains(want), "{id}: {}", update.message);
        assert_eq!(s.task_state(&id), None, "{id} must not exist");
    }

    // The user: a task as nobody, from an allowed image, is launched.
    let mut as_nobody = docker(task("ok", "cpus:1;mem:64"), "registry.local/web:1", None);
    as_nobody.command.as_mut().unwrap().user = "nobody".into();
    assert_eq!(launch_one(&mut s, &web, as_nobody), None);
    assert_eq!(s.task_state("ok").as_deref(), Some("TASK_STAGING"));

    // The framework's user counts when the task names none.
    let mut s2 = sim();
    s2.add_agent("a1", "cpus:8;mem:4096");
    let mut root_fw = info("web", &["*"]);
    root_fw.user = "root".into();
    let fw = s2.subscribe_info(root_fw);
    let update = launch_one(&mut s2, &fw, task("t", "cpus:1;mem:64")).unwrap();
    assert_eq!(
        reason_of(&update),
        v1::TaskStatusReason::ReasonTaskUnauthorized
    );
}

#[test]
fn an_acl_can_allow_root_and_host_paths() {
    let mut s = sim();
    s.add_agent("a1", "cpus:8;mem:4096");
    let ops = s.subscribe_info(info("ops", &["*"]));
    let mut t = docker(
        task("db", "cpus:1;mem:64"),
        "registry.local/db",
        Some("/data/db"),
    );
    t.command.as_mut().unwrap().user = "root".into();
    assert_eq!(launch_one(&mut s, &ops, t), None);
    assert_eq!(s.task_state("db").as_deref(), Some("TASK_STAGING"));
}

#[test]
fn acls_changed_at_run_time_apply_to_the_next_launch() {
    let mut s = sim();
    s.add_agent("a1", "cpus:8;mem:4096");
    let authz = s.m.config.authorizer.clone();
    let web = s.subscribe_info(info("web", &["*"]));
    let mut t = task("t1", "cpus:1;mem:64");
    t.command.as_mut().unwrap().user = "root".into();
    assert!(launch_one(&mut s, &web, t.clone()).is_some());
    authz.set(Acls::parse(r#"{"permissive": true}"#).unwrap());
    t.task_id = "t2".into();
    assert_eq!(launch_one(&mut s, &web, t), None);
}

#[test]
fn one_principal_registers_a_bounded_number_of_frameworks_and_roles() {
    let mut config = config();
    config.max_frameworks_per_principal = 2;
    config.max_roles_per_principal = 3;
    let mut s = Sim::with(config, Registry::default());
    let first = s.subscribe_info(info("web", &["a"]));
    s.subscribe_info(info("web", &["b"]));
    let refused = |s: &mut Sim, info: v1::FrameworkInfo| {
        let conn = s.conn();
        let request = v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        };
        s.handle(Input::Subscribe { conn, request }).unwrap();
        match &events_for(&s.effects(), conn)[..] {
            [Event::Error(e)] => e.message.clone(),
            other => panic!("not refused: {other:?}"),
        }
    };
    let e = refused(&mut s, info("web", &["c"]));
    assert!(
        e.contains("principal 'web' has 2 frameworks registered")
            && e.contains("--max-frameworks-per-principal 2"),
        "{e}"
    );
    // Another principal is not held back; a failover does not count twice.
    s.subscribe_info(info("db", &["a"]));
    let mut again = info("web", &["a"]);
    again.id = first.id.clone();
    s.subscribe_info(again);
    // Roles: the failover may not take the principal past its roles either.
    let mut more = info("web", &["a", "c", "d"]);
    more.id = first.id.clone();
    let e = refused(&mut s, more);
    assert!(
        e.contains("would use 4 roles") && e.contains("--max-roles-per-principal 3"),
        "{e}"
    );
}
