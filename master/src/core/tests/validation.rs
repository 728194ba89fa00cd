//! Bad input: every validation failure gives a clear error or TASK_ERROR and leaves
//! the master's state as it was (or, for an ACCEPT, returns the offers' resources).

use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::*;

/// One agent, two frameworks, one outstanding offer each (one agent each).
fn two_offers(sim: &mut Sim) -> (SimFramework, v1::Offer, SimFramework, v1::Offer) {
    let a = sim.subscribe("a");
    let b = sim.subscribe("b");
    sim.add_agent("h1", "cpus:4;mem:1024");
    sim.add_agent("h2", "cpus:4;mem:1024");
    let effects = sim.tick();
    let oa = offers_for(&effects, a.conn).remove(0);
    let ob = offers_for(&effects, b.conn).remove(0);
    (a, oa, b, ob)
}

/// As in Mesos: an ACCEPT naming an offer that is no longer outstanding (say, just
/// rescinded) succeeds; each of its tasks gets TASK_DROPPED (TASK_LOST when the
/// framework is not partition aware) with REASON_INVALID_OFFERS, and the caller's
/// other offers in the call return to the pool.
#[test]
fn accepting_an_unknown_offer_drops_its_tasks_and_returns_the_other_offers() {
    for partition_aware in [false, true] {
        let mut sim = Sim::new();
        let a = sim.subscribe_info(framework_info("a", &[], partition_aware));
        let agent = sim.add_agent("h1", "cpus:4;mem:1024");
        let oa = one(offers_for(&sim.tick(), a.conn));
        sim.accept(
            &a,
            vec!["no-such-offer".into(), oa.id.clone()],
            vec![task("t1", "cpus:1;mem:32"), task("t2", "cpus:1;mem:32")],
            None,
        )
        .unwrap();
        let effects = sim.effects();
        assert!(
            agent_messages(&effects, agent.conn).is_empty(),
            "nothing runs"
        );
        let updates = updates_for(&effects, a.conn);
        let ids: Vec<&str> = updates.iter().map(|u| u.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        let want = if partition_aware {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        };
        for u in &updates {
            assert_eq!(state_of(u), want);
            assert_eq!(reason_of(u), TaskStatusReason::ReasonInvalidOffers);
            assert!(u.message.contains("'no-such-offer'"), "{}", u.message);
            assert!(u.uuid.is_empty());
        }
        assert_eq!(sim.m.metrics().calls_refused_total, 0);
        assert_eq!(sim.task_state("t1"), None, "no task was created");
        assert_eq!(sim.m.snapshot().outstanding_offers, 0);
        assert!(sim.agent_view(&agent.id).used.is_empty());
        // The valid offer returned without a filter: offered again at once.
        let again = one(offers_for(&sim.tick_after(1.0), a.conn));
        assert_eq!(again.resources, oa.resources);
    }
}

#[test]
fn accepting_an_unknown_offer_with_another_frameworks_is_refused() {
    let mut sim = Sim::new();
    let (a, _oa, _b, ob) = two_offers(&mut sim);
    let before = sim.state_json();
    let err = sim
        .accept(
            &a,
            vec!["no-such-offer".into(), ob.id.clone()],
            vec![task("t1", "cpus:1;mem:32")],
            None,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(sim.effects().is_empty());
    assert_eq!(sim.state_json(), before);
}

#[test]
fn accepting_another_frameworks_offer_is_refused_and_changes_nothing() {
    let mut sim = Sim::new();
    let (a, _oa, _b, ob) = two_offers(&mut sim);
    let before = sim.state_json();
    let err = sim
        .accept(
            &a,
            vec![ob.id.clone()],
            vec![task("t1", "cpus:1;mem:32")],
            None,
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArgument(format!("offer '{}' was made to another framework", ob.id))
    );
    assert!(sim.effects().is_empty());
    assert_eq!(sim.state_json(), before, "b's offer is still outstanding");
}

#[test]
fn accepting_offers_from_two_agents_is_refused_and_the_offers_return() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let h1 = sim.add_agent("h1", "cpus:4;mem:1024");
    let h2 = sim.add_agent("h2", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(offers.len(), 2);
    let err = sim
        .accept(
            &fw,
            offer_ids(&offers),
            vec![task("t1", "cpus:1;mem:32")],
            None,
        )
        .unwrap_err();
    let CallError::InvalidArgument(message) = err else {
        panic!()
    };
    assert!(message.contains("from 2 agents"), "{message}");
    assert!(
        message.contains(&h1.id) && message.contains(&h2.id),
        "{message}"
    );
    assert!(sim.effects().is_empty(), "no task, no update");
    let snap = sim.m.snapshot();
    assert_eq!(snap.outstanding_offers, 0);
    assert!(snap.tasks.is_empty());
    assert!(
        snap.agents
            .iter()
            .all(|a| a.offered.is_empty() && a.used.is_empty())
    );
    // No filter: they are offered again at the next batch.
    assert_eq!(offers_for(&sim.tick_after(1.0), fw.conn).len(), 2);
}

/// Accepts one offer with one bad task; expects a TASK_ERROR whose message contains
/// `wanted`, no task, and the offer's resources back in the pool.
fn refused_task(bad: v1::TaskInfo, wanted: &str, reason: TaskStatusReason) {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let task_id = bad.task_id.clone();
    sim.accept(&fw, offer_ids(&offers), vec![bad], None)
        .unwrap();
    let effects = sim.effects();
    let [status] = updates_for(&effects, fw.conn).try_into().unwrap();
    assert_eq!(state_of(&status), TaskState::TaskError);
    assert_eq!(reason_of(&status), reason);
    assert!(
        status.message.contains(wanted),
        "{:?} does not contain {wanted:?}",
        status.message
    );
    assert_eq!(
        (
            status.task_id.as_str(),
            status.agent_id.as_str(),
            status.framework_id.as_str()
        ),
        (task_id.as_str(), agent.id.as_str(), fw.id.as_str())
    );
    assert_eq!(status.source, v1::TaskStatusSource::SourceMaster as i32);
    assert!(status.uuid.is_empty());
    assert_eq!(effects.len(), 1, "nothing sent to the agent: {effects:?}");
    let snap = sim.m.snapshot();
    assert!(snap.tasks.is_empty());
    assert_eq!(snap.outstanding_offers, 0);
    assert!(snap.agents[0].used.is_empty() && snap.agents[0].offered.is_empty());
    assert_eq!(sim.m.metrics().tasks_error_total, 1);
    assert_eq!(
        sim.m.metrics().calls_refused_total,
        0,
        "the call itself succeeded"
    );
}

fn with_resource(id: &str, name: &str, scalar: f64) -> v1::TaskInfo {
    let mut t = task(id, "mem:32");
    t.resources.push(v1::Resource {
        name: name.into(),
        scalar,
        ..Default::default()
    });
    t
}

#[test]
fn a_task_asking_for_more_cpus_than_offered_gets_task_error() {
    refused_task(
        task("big", "cpus:8;mem:32"),
        "task 'big' asks for cpus 8 but the offers have 4 left",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

#[test]
fn a_task_with_negative_cpus_gets_task_error() {
    refused_task(
        with_resource("neg", "cpus", -1.0),
        "resource 'cpus' is negative (-1)",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

#[test]
fn a_task_with_nan_cpus_gets_task_error() {
    refused_task(
        with_resource("nan", "cpus", f64::NAN),
        "resource 'cpus' is not a finite number",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

#[test]
fn a_task_with_an_unknown_resource_gets_task_error() {
    refused_task(
        with_resource("fruit", "bananas", 1.0),
        "unknown resource 'bananas'",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

#[test]
fn a_task_without_command_or_resources_or_id_gets_task_error() {
    let mut t = task("nocmd", "cpus:1");
    t.command = None;
    refused_task(t, "has no command", TaskStatusReason::ReasonTaskInvalid);
    refused_task(
        task("zero", "disk:10"),
        "asks for no cpus and no mem",
        TaskStatusReason::ReasonTaskInvalid,
    );
    refused_task(
        task("", "cpus:1"),
        "invalid task id '': it is empty",
        TaskStatusReason::ReasonTaskInvalid,
    );
    refused_task(
        task("../etc", "cpus:1"),
        "invalid task id '../etc': it contains '/'",
        TaskStatusReason::ReasonTaskInvalid,
    );
    let mut t = task("elsewhere", "cpus:1");
    t.agent_id = "other-agent".into();
    refused_task(
        t,
        "names agent 'other-agent'",
        TaskStatusReason::ReasonTaskInvalid,
    );
    let mut t = task("grace", "cpus:1");
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(-1.0),
    });
    refused_task(
        t,
        "grace_period_seconds",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

/// The agent checks task ids with the same rule ([`strata_proto::validate`]) before
/// it makes a sandbox. Every id it would refuse is refused here, at ACCEPT, with
/// TASK_ERROR and the rule's message, and never reaches the agent (where it would
/// fail late, after the framework thought the launch went out).
#[test]
fn a_task_id_the_agent_would_refuse_gets_task_error_at_accept() {
    let long = "x".repeat(256);
    for bad in ["", ".", "..", "a/b", "../etc", "a\\b", "a\0b", "x\n", &long] {
        let refusal = strata_proto::validate::task_id(bad).expect_err(bad);
        refused_task(
            task(bad, "cpus:1"),
            &refusal.to_string(),
            TaskStatusReason::ReasonTaskInvalid,
        );
    }
}

/// `..` inside an id is one ordinary directory name: the master lets it through,
/// and the agent (same rule) accepts it too.
#[test]
fn a_task_id_with_dots_inside_reaches_the_agent() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(strata_proto::validate::task_id("a..b"), Ok(()));
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("a..b", "cpus:1;mem:32")],
        None,
    )
    .unwrap();
    let effects = sim.effects();
    assert!(updates_for(&effects, fw.conn).is_empty());
    let launched: Vec<String> = agent_messages(&effects, agent.conn)
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::RunTask(r) => r.task.map(|t| t.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(launched, ["a..b"]);
}

fn docker_task(id: &str, resources: &str, docker: v1::DockerInfo) -> v1::TaskInfo {
    let mut t = task(id, resources);
    t.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        docker: Some(docker),
        volumes: vec![],
    });
    t
}

fn mapping(host_port: u32, container_port: u32) -> v1::docker_info::PortMapping {
    v1::docker_info::PortMapping {
        host_port,
        container_port,
        protocol: String::new(),
    }
}

#[test]
fn a_docker_task_without_image_or_with_a_foreign_host_port_gets_task_error() {
    refused_task(
        docker_task("noimage", "cpus:1;mem:32", v1::DockerInfo::default()),
        "container.docker.image is empty",
        TaskStatusReason::ReasonTaskInvalid,
    );
    let docker = v1::DockerInfo {
        image: "busybox".into(),
        network: v1::docker_info::Network::Bridge as i32,
        port_mappings: vec![mapping(8080, 80)],
        ..Default::default()
    };
    refused_task(
        docker_task("port", "cpus:1;mem:32", docker),
        "host port 8080 of a port mapping is not among the task's ports",
        TaskStatusReason::ReasonTaskInvalid,
    );
    let docker = v1::DockerInfo {
        image: "busybox".into(),
        port_mappings: vec![mapping(8080, 80)],
        ..Default::default()
    };
    refused_task(
        docker_task("hostnet", "cpus:1;mem:32", docker),
        "port mappings need the bridge network",
        TaskStatusReason::ReasonTaskInvalid,
    );
}

#[test]
fn a_good_docker_task_reaches_the_agent_with_its_container() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024;ports:[31000-31010]");
    let offers = offers_for(&sim.tick(), fw.conn);
    let docker = v1::DockerInfo {
        image: "busybox:latest".into(),
        network: v1::docker_info::Network::Bridge as i32,
        port_mappings: vec![mapping(31005, 80)],
        ..Default::default()
    };
    let t = docker_task("web", "cpus:1;mem:32;ports:[31005-31005]", docker.clone());
    sim.accept(&fw, offer_ids(&offers), vec![t], refuse(0.0))
        .unwrap();
    let effects = sim.effects();
    assert!(updates_for(&effects, fw.conn).is_empty());
    let containers: Vec<v1::ContainerInfo> = agent_messages(&effects, agent.conn)
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::RunTask(r) => r.task.and_then(|t| t.container),
            _ => None,
        })
        .collect();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].docker.as_ref(), Some(&docker));
}

#[test]
fn a_task_id_used_twice_in_one_accept_gets_task_error_for_the_second() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:32"), task("t1", "cpus:1;mem:32")],
        None,
    )
    .unwrap();
    let effects = sim.effects();
    let [status] = updates_for(&effects, fw.conn).try_into().unwrap();
    assert_eq!(state_of(&status), TaskState::TaskError);
    assert_eq!(reason_of(&status), TaskStatusReason::ReasonDuplicateTaskId);
    assert_eq!(status.message, "task id 't1' is used twice in this ACCEPT");
    assert_eq!(
        agent_messages(&effects, agent.conn).len(),
        1,
        "the first t1 runs"
    );
    assert_eq!(
        sim.agent_view(&agent.id).used,
        res("cpus:1;mem:32"),
        "the second's resources were not consumed"
    );
}

#[test]
fn a_task_id_of_a_live_task_gets_task_error_and_the_live_task_is_untouched() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:32", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    sim.effects();
    let offers = offers_for(&sim.tick_after(1.0), fw.conn);
    let before_tasks = sim.m.snapshot().tasks.len();
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:32")],
        None,
    )
    .unwrap();
    let [status] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(reason_of(&status), TaskStatusReason::ReasonDuplicateTaskId);
    assert!(
        status.message.contains("already used by a live task"),
        "{}",
        status.message
    );
    assert_eq!(sim.m.snapshot().tasks.len(), before_tasks);
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_RUNNING"));
    assert_eq!(sim.agent_view(&agent.id).used, res("cpus:1;mem:32"));
}

#[test]
fn good_and_bad_tasks_in_one_accept_and_what_is_left_returns() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let tasks = vec![
        task("ok1", "cpus:2;mem:256"),
        task("big", "cpus:3;mem:32"),
        task("ok2", "cpus:2;mem:256"),
    ];
    sim.accept(&fw, offer_ids(&offers), tasks, refuse(0.0))
        .unwrap();
    let effects = sim.effects();
    let updates = updates_for(&effects, fw.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].message,
        "task 'big' asks for cpus 3 but the offers have 2 left"
    );
    let runs: Vec<String> = agent_messages(&effects, agent.conn)
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::RunTask(r) => {
                let t = r.task.unwrap();
                assert_eq!(t.agent_id, agent.id, "agent id filled in");
                assert_eq!(r.framework.unwrap().id, fw.id);
                Some(t.task_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(runs, vec!["ok1".to_string(), "ok2".to_string()]);
    let view = sim.agent_view(&agent.id);
    assert_eq!(view.used, res("cpus:4;mem:512"));
    assert!(view.offered.is_empty());
    let offers = offers_for(&sim.tick_after(1.0), fw.conn);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("mem:512")
    );
}

#[test]
fn a_bad_refuse_seconds_is_refused_and_the_offer_stays() {
    let mut sim = Sim::new();
    let (a, oa, _b, _ob) = two_offers(&mut sim);
    let before = sim.state_json();
    for bad in [-1.0, f64::NAN] {
        let err = sim
            .decline(&a, vec![oa.id.clone()], refuse(bad))
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidArgument(m) if m.contains("refuse_seconds")),
            "{err:?}"
        );
        let err = sim
            .accept(&a, vec![oa.id.clone()], vec![], refuse(bad))
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidArgument(m) if m.contains("refuse_seconds")),
            "{err:?}"
        );
    }
    assert_eq!(sim.state_json(), before);
}

/// DECLINE treats offers as ACCEPT does: another framework's is InvalidArgument; one
/// no longer outstanding is skipped and the call succeeds.
#[test]
fn declining_foreign_offers_is_refused_and_unknown_ones_are_skipped() {
    let mut sim = Sim::new();
    let (a, oa, _b, ob) = two_offers(&mut sim);
    let before = sim.state_json();
    let err = sim.decline(&a, vec![ob.id.clone()], None).unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArgument(format!("offer(s) {} were made to another framework", ob.id))
    );
    assert_eq!(sim.state_json(), before);
    sim.decline(&a, vec!["gone".into(), oa.id.clone()], None)
        .unwrap();
    assert_eq!(
        sim.m.snapshot().outstanding_offers,
        1,
        "a's valid offer was declined anyway"
    );
}

#[test]
fn a_call_with_a_stale_stream_id_is_refused_and_changes_nothing() {
    let mut sim = Sim::new();
    let (a, oa, _b, _ob) = two_offers(&mut sim);
    let before = sim.state_json();
    let stale = SimFramework {
        stream: "not-the-stream".into(),
        ..a.clone()
    };
    let err = sim
        .accept(
            &stale,
            vec![oa.id.clone()],
            vec![task("t1", "cpus:1;mem:32")],
            None,
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::StaleStream {
            framework_id: a.id.clone(),
            got: "not-the-stream".into()
        }
    );
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    let err = sim
        .call(&stale, Call::Teardown(v1::TeardownRequest { header: None }))
        .unwrap_err();
    assert!(matches!(err, CallError::StaleStream { .. }));
    assert!(sim.effects().is_empty());
    assert_eq!(sim.state_json(), before);
    assert_eq!(sim.m.metrics().calls_refused_total, 2);
}

#[test]
fn a_call_from_an_unknown_framework_is_refused() {
    let mut sim = Sim::new();
    let (_a, oa, _b, _ob) = two_offers(&mut sim);
    let before = sim.state_json();
    let ghost = SimFramework {
        conn: ConnId(99),
        id: "ghost".into(),
        stream: "s".into(),
    };
    let err = sim
        .accept(&ghost, vec![oa.id.clone()], vec![], None)
        .unwrap_err();
    assert_eq!(err, CallError::UnknownFramework("ghost".into()));
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(sim.state_json(), before);
}

#[test]
fn a_subscription_with_bad_roles_gets_error_and_is_closed() {
    let mut sim = Sim::new();
    for (roles, wanted) in [
        (vec!["a b"], "whitespace"),
        (vec![""], "empty"),
        (vec![".."], "not allowed"),
    ] {
        let conn = sim.conn();
        let request = v1::SubscribeRequest {
            framework_info: Some(framework_info("x", &roles, false)),
            suppressed_roles: vec![],
        };
        sim.handle(Input::Subscribe { conn, request }).unwrap();
        let effects = sim.effects();
        let Event::Error(e) = one(events_for(&effects, conn)) else {
            panic!("{effects:?}")
        };
        assert!(e.message.contains(wanted), "{}", e.message);
        assert_eq!(effects.last(), Some(&Effect::CloseFramework { conn }));
        assert!(persisted(&effects).is_empty());
    }
    let conn = sim.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(framework_info("x", &["a"], false)),
        suppressed_roles: vec!["b".into()],
    };
    sim.handle(Input::Subscribe { conn, request }).unwrap();
    assert_eq!(sim.effects().last(), Some(&Effect::CloseFramework { conn }));
    let conn = sim.conn();
    let info = v1::FrameworkInfo {
        failover_timeout_seconds: f64::NAN,
        ..framework_info("x", &[], false)
    };
    sim.handle(Input::Subscribe {
        conn,
        request: v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        },
    })
    .unwrap();
    assert_eq!(sim.effects().last(), Some(&Effect::CloseFramework { conn }));
    assert!(sim.m.snapshot().frameworks.is_empty());
}

/// A framework id names the framework's sandbox directory on every agent: one the
/// agents would refuse is refused at SUBSCRIBE, not task by task after each ACCEPT.
#[test]
fn a_subscription_with_an_id_the_agent_would_refuse_gets_error_and_is_closed() {
    let mut sim = Sim::new();
    for bad in ["..", "a/b", "fw\0"] {
        let conn = sim.conn();
        let info = v1::FrameworkInfo {
            id: bad.into(),
            ..framework_info("x", &[], false)
        };
        sim.handle(Input::Subscribe {
            conn,
            request: v1::SubscribeRequest {
                framework_info: Some(info),
                suppressed_roles: vec![],
            },
        })
        .unwrap();
        let effects = sim.effects();
        let Event::Error(e) = one(events_for(&effects, conn)) else {
            panic!("{effects:?}")
        };
        let refusal = strata_proto::validate::framework_id(bad).expect_err(bad);
        assert_eq!(e.message, refusal.to_string());
        assert!(
            e.message.starts_with("invalid framework id '"),
            "{}",
            e.message
        );
        assert_eq!(effects.last(), Some(&Effect::CloseFramework { conn }));
        assert!(persisted(&effects).is_empty());
    }
    assert!(sim.m.snapshot().frameworks.is_empty());
    // Dots inside an id are fine.
    let fw = sim.subscribe_info(v1::FrameworkInfo {
        id: "fw..1".into(),
        ..framework_info("x", &[], false)
    });
    assert_eq!(fw.id, "fw..1");
}

#[test]
fn offer_ids_are_master_scoped_and_only_exact_ids_match() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let id = offers[0].id.clone();
    assert!(id.starts_with("master-test-O"), "{id}");
    let seq = id.trim_start_matches("master-test-O");
    for fake in [
        format!("master-test-O0{seq}"),
        format!("master-test-O+{seq}"),
        format!("other-O{seq}"),
        format!("{id} "),
    ] {
        sim.decline(&fw, vec![fake.clone()], None).unwrap();
        assert_eq!(sim.m.snapshot().outstanding_offers, 1, "{fake} matched");
    }
    sim.decline(&fw, vec![id.clone(), id], None).unwrap();
    assert_eq!(
        sim.m.snapshot().outstanding_offers,
        0,
        "listing an offer twice declines it once"
    );
}

/// Discovery info is checked at ACCEPT like the rest of a task: a bad one is
/// TASK_ERROR naming the field; a good one is kept and shown in `/state`.
#[test]
fn discovery_info_is_checked_and_kept() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let with_port = |id: &str, name: &str, number: u32| {
        let mut t = task(id, "cpus:1;mem:32");
        t.discovery = Some(v1::DiscoveryInfo {
            name: "web".into(),
            ports: Some(v1::Ports {
                ports: vec![v1::Port {
                    number,
                    name: name.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        });
        t
    };
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![
            with_port("bad-name", "Not A Label", 80),
            with_port("bad-port", "http", 0),
            with_port("ok", "http", 8080),
        ],
        refuse(0.0),
    )
    .unwrap();
    let updates = updates_for(&sim.effects(), fw.conn);
    assert_eq!(updates.len(), 2, "{updates:?}");
    for u in &updates {
        assert_eq!(state_of(u), v1::TaskState::TaskError);
        assert!(u.message.contains("discovery"), "{}", u.message);
    }
    let state = sim.state_json();
    let ok = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "ok")
        .unwrap();
    assert_eq!(ok["discovery"]["ports"][0]["number"], 8080);
    assert_eq!(ok["discovery"]["ports"][0]["protocol"], "tcp");
}
