//! Docker named volumes at ACCEPT (issue 17): a task names a volume the engine
//! accepts, only in a Docker container, and its framework's principal may use it
//! (`use_docker_volumes`). Anything else is TASK_ERROR naming the field or the volume,
//! and no task is created.

use super::*;
use strata_security::{Acls, Authorizer};

/// `task` with a named volume `name` at `/data`, in a Docker container or (not
/// `docker`) in none.
fn with_volume(mut task: v1::TaskInfo, docker: bool, name: &str) -> v1::TaskInfo {
    task.container = Some(v1::ContainerInfo {
        r#type: if docker {
            v1::container_info::Type::Docker as i32
        } else {
            v1::container_info::Type::Unspecified as i32
        },
        docker: docker.then(|| v1::DockerInfo {
            image: "busybox:latest".into(),
            ..Default::default()
        }),
        volumes: vec![v1::Volume {
            docker_volume: name.into(),
            container_path: "/data".into(),
            mode: v1::volume::Mode::Rw as i32,
            ..Default::default()
        }],
    });
    task
}

fn framework(principal: &str) -> v1::FrameworkInfo {
    let mut info = framework_info(principal, &["*"], true);
    info.principal = principal.into();
    info.user = String::new();
    info
}

/// Launches `task` on a fresh offer and returns the update it got (none: launched).
fn launch_one(s: &mut Sim, fw: &SimFramework, task: v1::TaskInfo) -> Option<v1::TaskStatus> {
    let effects = s.tick_after(1.5);
    let offers = offers_for(&effects, fw.conn);
    assert!(!offers.is_empty(), "no offer");
    s.accept(fw, offer_ids(&offers), vec![task], refuse(0.0))
        .unwrap();
    updates_for(&s.effects(), fw.conn).into_iter().next()
}

#[test]
fn a_docker_task_with_a_named_volume_is_launched() {
    let mut s = Sim::new();
    s.add_agent("a1", "cpus:8;mem:4096");
    let fw = s.subscribe_info(framework("web"));
    let t = with_volume(task("db", "cpus:1;mem:64"), true, "pgdata");
    assert_eq!(launch_one(&mut s, &fw, t), None);
    assert_eq!(s.task_state("db").as_deref(), Some("TASK_STAGING"));
}

#[test]
fn a_bad_name_or_a_process_task_is_refused_naming_the_field() {
    let mut s = Sim::new();
    s.add_agent("a1", "cpus:8;mem:4096");
    let fw = s.subscribe_info(framework("web"));
    let cases = [
        (
            with_volume(task("bad-name", "cpus:1;mem:64"), true, "my data"),
            "task 'bad-name': container.volumes[0].docker_volume 'my data' is not a Docker volume name",
        ),
        (
            with_volume(task("dots", "cpus:1;mem:64"), true, "../etc"),
            "task 'dots': container.volumes[0].docker_volume '../etc' is not a Docker volume name",
        ),
        (
            with_volume(task("process", "cpus:1;mem:64"), false, "pgdata"),
            "task 'process': container.volumes[0].docker_volume 'pgdata' needs a Docker container",
        ),
    ];
    for (t, want) in cases {
        let id = t.task_id.clone();
        let update = launch_one(&mut s, &fw, t).expect("an update");
        assert_eq!(state_of(&update), v1::TaskState::TaskError, "{id}");
        assert_eq!(reason_of(&update), v1::TaskStatusReason::ReasonTaskInvalid);
        assert!(update.message.contains(want), "{id}: {}", update.message);
        assert_eq!(s.task_state(&id), None, "{id} must not exist");
    }
}

/// A master whose ACLs let `web` use the volumes `web-*` and nobody any other.
fn acl_sim() -> Sim {
    let mut config = config();
    config.authorizer = Authorizer::new(
        Acls::parse(
            r#"{
              "permissive": true,
              "use_docker_volumes": [
                {"principals": {"values": ["web"]}, "volumes": {"values": ["web-*"]}},
                {"principals": {"type": "ANY"}, "volumes": {"type": "NONE"}}
              ]
            }"#,
        )
        .unwrap(),
    );
    let mut s = Sim::with(config, Registry::default());
    s.add_agent("a1", "cpus:8;mem:4096");
    s
}

#[test]
fn an_acl_decides_who_uses_which_named_volume() {
    let mut s = acl_sim();
    let web = s.subscribe_info(framework("web"));
    let update = launch_one(
        &mut s,
        &web,
        with_volume(task("steal", "cpus:1;mem:64"), true, "pgdata"),
    )
    .expect("an update");
    assert_eq!(state_of(&update), v1::TaskState::TaskError);
    assert_eq!(
        reason_of(&update),
        v1::TaskStatusReason::ReasonTaskUnauthorized
    );
    assert_eq!(
        update.message,
        "task 'steal' was not launched: web is not authorized to use the Docker volume 'pgdata': rule use_docker_volumes[1] refuses it"
    );
    assert_eq!(s.task_state("steal"), None);
    let t = with_volume(task("web-1", "cpus:1;mem:64"), true, "web-cache");
    assert_eq!(launch_one(&mut s, &web, t), None);
    assert_eq!(s.task_state("web-1").as_deref(), Some("TASK_STAGING"));

    // Another principal may not use web's volumes.
    let mut s = acl_sim();
    let other = s.subscribe_info(framework("other"));
    let update = launch_one(
        &mut s,
        &other,
        with_volume(task("other-1", "cpus:1;mem:64"), true, "web-cache"),
    )
    .expect("an update");
    assert_eq!(
        reason_of(&update),
        v1::TaskStatusReason::ReasonTaskUnauthorized
    );
    assert!(
        update
            .message
            .contains("other is not authorized to use the Docker volume 'web-cache'"),
        "{}",
        update.message
    );
    assert_eq!(s.task_state("other-1"), None);
}
