//! The helpers a scheduler uses on every offer: TaskBuilder, offer_fits, OfferPool.

use std::time::Duration;

use strata_framework_sdk::{
    OfferPool, Resources, Scalar, SdkError, TaskBuilder, offer_fits, offer_resources, v1,
};

fn offer(id: &str, resources: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: format!("agent-of-{id}"),
        resources: Resources::parse(resources).unwrap().to_proto(),
        ..Default::default()
    }
}

fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

#[test]
fn a_shell_task_is_built_with_its_resources_env_and_policy() {
    let task = TaskBuilder::new("hello-1")
        .shell("echo hi")
        .cpus(0.1)
        .mem(32.0)
        .env("GREETING", "hi")
        .label("app", "hello")
        .kill_grace(Duration::from_millis(1500))
        .build("agent-1")
        .unwrap();
    assert_eq!(task.task_id, "hello-1");
    assert_eq!(task.name, "hello-1", "the name defaults to the id");
    assert_eq!(task.agent_id, "agent-1");
    let command = task.command.unwrap();
    assert!(command.shell);
    assert_eq!(command.value, "echo hi");
    assert_eq!(command.environment["GREETING"], "hi");
    assert_eq!(task.labels["app"], "hello");
    assert_eq!(task.kill_policy.unwrap().grace_period_seconds, Some(1.5));
    assert_eq!(
        Resources::try_from_proto(&task.resources).unwrap(),
        res("cpus:0.1;mem:32")
    );
}

#[test]
fn an_exec_task_carries_its_arguments() {
    let task = TaskBuilder::new("t")
        .name("lister")
        .exec("/bin/ls")
        .arg("-l")
        .args(["/tmp", "/var"])
        .cpus(1.0)
        .build("a")
        .unwrap();
    let command = task.command.unwrap();
    assert!(!command.shell);
    assert_eq!(command.value, "/bin/ls");
    assert_eq!(command.arguments, ["-l", "/tmp", "/var"]);
    assert_eq!(task.name, "lister");
}

#[test]
fn invalid_tasks_are_refused_with_a_reason() {
    let invalid = |b: TaskBuilder| match b.build("a") {
        Err(SdkError::InvalidArgument(reason)) => reason,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(invalid(TaskBuilder::new("t").cpus(1.0)).contains("no command"));
    assert!(invalid(TaskBuilder::new("t").shell("x").cpus(f64::NAN)).contains("cpus"));
    assert!(invalid(TaskBuilder::new("t").shell("x").mem(-1.0)).contains("mem"));
    assert!(invalid(TaskBuilder::new("t").shell("echo").arg("x")).contains("exec"));
    assert!(invalid(TaskBuilder::new("").shell("echo")).contains("id"));
    assert!(invalid(TaskBuilder::new("t").shell("  ")).contains("empty command"));
    assert!(invalid(TaskBuilder::new("t").shell("x").ports(2)).contains("build_for"));
}

#[test]
fn build_for_picks_ports_from_the_offer_and_exports_them() {
    let o = offer("o-1", "cpus:2;mem:256;ports:[31000-31000,31005-31010]");
    let task = TaskBuilder::new("web")
        .shell("serve")
        .cpus(1.0)
        .mem(64.0)
        .ports(3)
        .build_for(&o)
        .unwrap();
    let resources = Resources::try_from_proto(&task.resources).unwrap();
    assert_eq!(
        resources.ports().ranges(),
        &[(31000, 31000), (31005, 31006)]
    );
    let env = &task.command.unwrap().environment;
    assert_eq!(
        (
            env["PORT0"].as_str(),
            env["PORT1"].as_str(),
            env["PORT2"].as_str()
        ),
        ("31000", "31005", "31006")
    );
    assert_eq!(env["PORTS"], "31000,31005,31006");
    assert_eq!(task.agent_id, "agent-of-o-1");
}

#[test]
fn build_for_says_what_did_not_fit() {
    let o = offer("o-1", "cpus:0.5;mem:256");
    match TaskBuilder::new("big")
        .shell("x")
        .cpus(1.0)
        .mem(64.0)
        .build_for(&o)
    {
        Err(e @ SdkError::DoesNotFit { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("big") && text.contains("cpus:1") && text.contains("cpus:0.5"),
                "{text}"
            );
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    match TaskBuilder::new("porty")
        .shell("x")
        .cpus(0.1)
        .ports(1)
        .build_for(&o)
    {
        Err(e @ SdkError::DoesNotFit { .. }) => assert!(e.to_string().contains("1 ports"), "{e}"),
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
}

#[test]
fn offer_fits_uses_exact_fixed_point_maths() {
    let o = offer("o", "cpus:0.3;mem:100");
    // 0.1 + 0.2 is exactly 0.3 cpus here, unlike f64.
    let mut needs = Resources::cpus_mem(0.1, 50.0);
    needs.add(&Resources::cpus_mem(0.2, 50.0));
    assert!(offer_fits(&o, &needs));
    assert!(!offer_fits(&o, &Resources::cpus_mem(0.301, 1.0)));
    assert!(
        !offer_fits(&o, &res("cpus:0.1;disk:1")),
        "disk was not offered"
    );

    let malformed = v1::Offer {
        id: "bad".into(),
        resources: vec![v1::Resource {
            name: "cpus".into(),
            scalar: f64::NAN,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(!offer_fits(&malformed, &Resources::cpus_mem(0.1, 0.0)));
    assert!(matches!(
        offer_resources(&malformed),
        Err(SdkError::Resources(_))
    ));
}

#[test]
fn the_pool_packs_tasks_first_fit_and_subtracts_as_it_goes() {
    let mut pool = OfferPool::new(vec![
        offer("o-1", "cpus:1;mem:256;ports:[31000-31001]"),
        offer("o-2", "cpus:1;mem:256;ports:[32000-32009]"),
        offer("o-3", "cpus:1;mem:256"),
    ]);
    let template = TaskBuilder::new("x")
        .shell("echo")
        .cpus(0.3)
        .mem(64.0)
        .ports(1);
    let mut placed_on = Vec::new();
    for i in 0..5 {
        let task = template.clone().id(format!("t-{i}"));
        placed_on.push(pool.place(&task).unwrap().map(|o| o.id.clone()));
    }
    // o-1 holds three by cpu but only two by ports; o-2 takes the rest.
    let placed_on: Vec<&str> = placed_on.iter().map(|o| o.as_deref().unwrap()).collect();
    assert_eq!(placed_on, ["o-1", "o-1", "o-2", "o-2", "o-2"]);
    assert_eq!(pool.remaining("o-1").unwrap(), &res("cpus:0.4;mem:128"));
    let left = pool.remaining("o-2").unwrap();
    assert_eq!(
        left.cpus(),
        Scalar::from_milli(100),
        "1 - 3 x 0.3 is exactly 0.1"
    );
    assert_eq!(left.ports().ranges(), &[(32003, 32009)]);

    // A task too big for every offer is not placed.
    let huge = TaskBuilder::new("huge").shell("echo").cpus(4.0);
    assert!(pool.place(&huge).unwrap().is_none());
    // An invalid task is an error, not "does not fit".
    assert!(
        pool.place(&TaskBuilder::new("nan").shell("echo").cpus(f64::NAN))
            .is_err()
    );

    let placement = pool.into_placement();
    assert_eq!(placement.task_count(), 5);
    assert_eq!(placement.launches.len(), 2);
    assert_eq!(placement.unused_ids(), ["o-3"]);
    let ports_of = |l: &strata_framework_sdk::OfferLaunch| -> Vec<String> {
        l.tasks
            .iter()
            .map(|t| t.command.as_ref().unwrap().environment["PORT0"].clone())
            .collect()
    };
    assert_eq!(ports_of(&placement.launches[0]), ["31000", "31001"]);
    assert_eq!(
        ports_of(&placement.launches[1]),
        ["32000", "32001", "32002"]
    );
    assert!(
        placement.launches[1]
            .tasks
            .iter()
            .all(|t| t.agent_id == "agent-of-o-2")
    );
}

#[test]
fn a_malformed_offer_fits_nothing_and_is_left_unused() {
    let malformed = v1::Offer {
        id: "bad".into(),
        resources: vec![v1::Resource {
            name: "bananas".into(),
            scalar: 1.0,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut pool = OfferPool::new(vec![malformed]);
    assert!(
        pool.place(&TaskBuilder::new("t").shell("x").cpus(0.1))
            .unwrap()
            .is_none()
    );
    assert_eq!(pool.into_placement().unused_ids(), ["bad"]);
}

#[test]
fn a_docker_task_maps_its_ports_to_ports_picked_from_the_offer() {
    let builder = TaskBuilder::new("web")
        .docker_image("strata-test/busybox")
        .shell("httpd -f -p 80")
        .cpus(0.5)
        .mem(64.0)
        .port_mapping(80)
        .volume("/srv/data", "/data", true);
    assert!(
        builder.build("a").is_err(),
        "host ports are picked from an offer"
    );
    let task = builder
        .build_for(&offer("o1", "cpus:1;mem:128;ports:[31007-31009]"))
        .unwrap();
    assert_eq!(
        Resources::try_from_proto(&task.resources).unwrap(),
        res("cpus:0.5;mem:64;ports:[31007-31007]")
    );
    let container = task.container.unwrap();
    assert_eq!(container.r#type, v1::container_info::Type::Docker as i32);
    let docker = container.docker.unwrap();
    assert_eq!(docker.image, "strata-test/busybox");
    assert_eq!(docker.network, v1::docker_info::Network::Bridge as i32);
    assert_eq!(
        docker.port_mappings,
        vec![v1::docker_info::PortMapping {
            host_port: 31007,
            container_port: 80,
            protocol: "tcp".into()
        }]
    );
    assert_eq!(container.volumes[0].mode, v1::volume::Mode::Ro as i32);
    assert_eq!(task.command.unwrap().environment["PORT0"], "31007");

    let plain = TaskBuilder::new("p")
        .shell("true")
        .cpus(0.1)
        .build("a")
        .unwrap();
    assert_eq!(plain.container, None, "a process task has no container");
    let err = TaskBuilder::new("x")
        .network(v1::docker_info::Network::None)
        .shell("true")
        .cpus(0.1)
        .build("a")
        .unwrap_err();
    assert!(err.to_string().contains("no image"), "{err}");
}

#[test]
fn a_health_check_rides_along_with_the_task() {
    let check = v1::HealthCheck {
        r#type: v1::health_check::Type::Http as i32,
        path: "/ready".into(),
        port: 31000,
        interval_seconds: Some(2.0),
        consecutive_failures: Some(5),
        ..Default::default()
    };
    let task = TaskBuilder::new("web-1")
        .shell("serve")
        .cpus(0.1)
        .resources(&res("ports:[31000-31000]"))
        .health_check(check.clone())
        .build("a")
        .unwrap();
    assert_eq!(task.health_check, Some(check));
    let plain = TaskBuilder::new("p")
        .shell("true")
        .cpus(0.1)
        .build("a")
        .unwrap();
    assert_eq!(plain.health_check, None, "no health check unless asked for");
}
