//! The size limits of `strata_proto::limits`: a peer that sends a field or list over
//! its limit is refused with a message naming the field, its size and the limit (and
//! never echoing the value); the limit itself is accepted. A client string is never
//! copied into every task's update.

use std::collections::HashMap;

use strata_proto::limits::{self, MAX_MESSAGE_BYTES};
use strata_proto::v1::{self, TaskState, TaskStatusReason};

use super::*;

/// Subscribes with `info`; the ERROR message when refused.
fn subscribe_refused(sim: &mut Sim, info: v1::FrameworkInfo) -> Option<String> {
    let conn = sim.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(info),
        suppressed_roles: vec![],
    };
    sim.handle(Input::Subscribe { conn, request }).unwrap();
    let effects = sim.effects();
    match &events_for(&effects, conn)[..] {
        [Event::Error(e)] => {
            assert_eq!(effects.last(), Some(&Effect::CloseFramework { conn }));
            assert!(persisted(&effects).is_empty(), "nothing is registered");
            Some(e.message.clone())
        }
        _ => None,
    }
}

/// Registers an agent with `info`; the error message when refused.
fn register_refused(sim: &mut Sim, info: v1::AgentInfo) -> Option<String> {
    let conn = sim.conn();
    let register = v1::Register {
        checkpointed: None,
        agent_info: Some(info),
        tasks: vec![],
        version: "test".into(),
    };
    sim.handle(Input::AgentRegister {
        conn,
        register,
        peer: None,
    })
    .unwrap();
    let effects = sim.effects();
    agent_messages(&effects, conn)
        .into_iter()
        .find_map(|m| match m {
            Message::Error(e) => Some(e.message),
            _ => None,
        })
}

#[test]
fn a_framework_name_over_the_limit_is_refused_and_one_at_the_limit_subscribes() {
    let mut sim = Sim::new();
    let huge = framework_info(&"n".repeat(10 << 20), &[], false);
    assert_eq!(
        subscribe_refused(&mut sim, huge).as_deref(),
        Some("framework name is 10485760 bytes; the limit is 1024")
    );
    let longest = framework_info(&"n".repeat(limits::MAX_NAME_BYTES), &[], false);
    assert_eq!(subscribe_refused(&mut sim, longest), None);
    let user = v1::FrameworkInfo {
        user: "u".repeat(limits::MAX_NAME_BYTES + 1),
        ..framework_info("x", &[], false)
    };
    assert_eq!(
        subscribe_refused(&mut sim, user).as_deref(),
        Some("framework user is 1025 bytes; the limit is 1024")
    );
}

#[test]
fn roles_over_their_limits_are_refused_and_the_most_allowed_subscribe() {
    let mut sim = Sim::new();
    let role = |i: usize| format!("{i:r>width$}", width = limits::MAX_ROLE_BYTES);
    let most: Vec<String> = (0..limits::MAX_ROLES).map(role).collect();
    let most: Vec<&str> = most.iter().map(String::as_str).collect();
    assert_eq!(
        subscribe_refused(&mut sim, framework_info("x", &most, false)),
        None
    );

    let many: Vec<String> = (0..limits::MAX_ROLES + 1).map(role).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        subscribe_refused(&mut sim, framework_info("x", &many, false)).as_deref(),
        Some("the framework's list of roles has 65 entries; the limit is 64")
    );
    let long = "r".repeat(limits::MAX_ROLE_BYTES + 1);
    assert_eq!(
        subscribe_refused(&mut sim, framework_info("x", &[&long], false)).as_deref(),
        Some("a role name is 256 bytes; the limit is 255")
    );
}

#[test]
fn agent_attributes_and_resources_over_their_limits_are_refused() {
    let mut sim = Sim::new();
    let with_attributes = |attributes: Vec<v1::Attribute>| v1::AgentInfo {
        attributes,
        ..Sim::agent_info("h1", "cpus:4;mem:1024")
    };
    let attribute = |name: String, value: String| v1::Attribute { name, value };

    // The attack: one 5 MB attribute value.
    let huge = with_attributes(vec![attribute("rack".into(), "v".repeat(5 << 20))]);
    assert_eq!(
        register_refused(&mut sim, huge).as_deref(),
        Some("invalid agent registration: an attribute value is 5242880 bytes; the limit is 1024")
    );
    let many = with_attributes(
        (0..=limits::MAX_ATTRIBUTES)
            .map(|i| attribute(format!("a{i}"), "v".into()))
            .collect(),
    );
    assert_eq!(
        register_refused(&mut sim, many).as_deref(),
        Some(
            "invalid agent registration: the list of attributes has 129 entries; the limit is 128"
        )
    );
    let name = with_attributes(vec![attribute("a".repeat(254), "v".into())]);
    assert!(register_refused(&mut sim, name).is_some());

    let ports: Vec<String> = (0..=limits::MAX_RANGES)
        .map(|i| format!("{p}-{p}", p = 20_000 + 2 * i))
        .collect();
    let ranges = Sim::agent_info(
        "h1",
        &format!("cpus:4;mem:1024;ports:[{}]", ports.join(",")),
    );
    assert_eq!(
        register_refused(&mut sim, ranges).as_deref(),
        Some(
            "invalid agent registration: a resource's list of ranges has 1025 entries; the limit is 1024"
        )
    );
    let hostname = Sim::agent_info(&"h".repeat(limits::MAX_NAME_BYTES + 1), "cpus:4;mem:1024");
    assert_eq!(
        register_refused(&mut sim, hostname).as_deref(),
        Some("invalid agent registration: agent hostname is 1025 bytes; the limit is 1024")
    );

    // The most of everything registers.
    let most = with_attributes(
        (0..limits::MAX_ATTRIBUTES)
            .map(|i| {
                attribute(
                    format!("{i:a>253}"),
                    "v".repeat(limits::MAX_ATTRIBUTE_VALUE_BYTES),
                )
            })
            .collect(),
    );
    assert_eq!(register_refused(&mut sim, most), None);
    assert_eq!(sim.m.snapshot().agents.len(), 1);
}

#[test]
fn task_fields_over_their_limits_are_task_errors_and_the_most_allowed_launches() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offer = one(offers_for(&sim.tick(), fw.conn));

    let long_name = v1::TaskInfo {
        name: "n".repeat(limits::MAX_NAME_BYTES + 1),
        ..task("t1", "cpus:1;mem:32")
    };
    let many_labels = v1::TaskInfo {
        labels: (0..=limits::MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect(),
        ..task("t2", "cpus:1;mem:32")
    };
    let long_value = v1::TaskInfo {
        labels: HashMap::from([("k".into(), "v".repeat(limits::MAX_LABEL_VALUE_BYTES + 1))]),
        ..task("t3", "cpus:1;mem:32")
    };
    let most = v1::TaskInfo {
        name: "n".repeat(limits::MAX_NAME_BYTES),
        labels: (0..limits::MAX_LABELS)
            .map(|i| {
                (
                    format!("{i:k>253}"),
                    "v".repeat(limits::MAX_LABEL_VALUE_BYTES),
                )
            })
            .collect(),
        ..task("t4", "cpus:1;mem:32")
    };
    sim.accept(
        &fw,
        vec![offer.id],
        vec![long_name, many_labels, long_value, most],
        None,
    )
    .unwrap();
    let effects = sim.effects();
    let updates = updates_for(&effects, fw.conn);
    let errors: Vec<(&str, &str)> = updates
        .iter()
        .map(|u| {
            assert_eq!(state_of(u), TaskState::TaskError);
            assert_eq!(reason_of(u), TaskStatusReason::ReasonTaskInvalid);
            (u.task_id.as_str(), u.message.as_str())
        })
        .collect();
    assert_eq!(
        errors,
        [
            (
                "t1",
                "task 't1': task name is 1025 bytes; the limit is 1024"
            ),
            (
                "t2",
                "task 't2': the map of labels has 129 entries; the limit is 128"
            ),
            (
                "t3",
                "task 't3': a label value is 4097 bytes; the limit is 4096"
            ),
        ]
    );
    assert_eq!(agent_messages(&effects, agent.conn).len(), 1, "t4 runs");
    assert_eq!(sim.task_state("t4").as_deref(), Some("TASK_STAGING"));
}

#[test]
fn an_accept_over_a_limit_is_refused_whole() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offer = one(offers_for(&sim.tick(), fw.conn));

    let tasks: Vec<v1::TaskInfo> = (0..=limits::MAX_TASKS_PER_ACCEPT)
        .map(|i| task(&format!("t{i}"), "cpus:0.001;mem:1"))
        .collect();
    let err = sim
        .accept(&fw, vec![offer.id.clone()], tasks, None)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "ACCEPT: the ACCEPT's list of tasks has 1025 entries; the limit is 1024"
    );
    let ids = vec![offer.id.clone(); limits::MAX_OFFERS_PER_CALL + 1];
    let err = sim.accept(&fw, ids, vec![], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ACCEPT: the list of offer ids has 1025 entries; the limit is 1024"
    );
    assert!(sim.effects().is_empty(), "nothing happened");
    assert_eq!(
        sim.m.snapshot().outstanding_offers,
        1,
        "the offer is still there"
    );
    // The offer is still the framework's to accept.
    sim.accept(&fw, vec![offer.id], vec![task("t", "cpus:1;mem:32")], None)
        .unwrap();
    assert_eq!(sim.task_state("t").as_deref(), Some("TASK_STAGING"));
}

/// The attack: an ACCEPT naming one unknown 1 MB offer id with 500 tasks made the
/// master build 500 updates each carrying the id (about 500 MB).
#[test]
fn a_huge_unknown_offer_id_is_refused_without_an_update_per_task() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let tasks: Vec<v1::TaskInfo> = (0..500)
        .map(|i| task(&format!("t{i}"), "cpus:1;mem:32"))
        .collect();
    let err = sim
        .accept(&fw, vec!["o".repeat(1 << 20)], tasks, None)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "ACCEPT: an offer id is 1048576 bytes; the limit is 255"
    );
    assert!(sim.effects().is_empty());
}

/// Within the limits, unknown offer ids (as many as a call may name, each as long as
/// an id may be) are named in each task's update by a short prefix and a count.
#[test]
fn unknown_offer_ids_are_not_copied_into_every_update() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let ids: Vec<String> = (0..limits::MAX_OFFERS_PER_CALL)
        .map(|i| format!("{i:o>255}"))
        .collect();
    let tasks: Vec<v1::TaskInfo> = (0..500)
        .map(|i| task(&format!("t{i}"), "cpus:1;mem:32"))
        .collect();
    sim.accept(&fw, ids, tasks, None).unwrap();
    let updates = updates_for(&sim.effects(), fw.conn);
    assert_eq!(updates.len(), 500);
    for u in &updates {
        assert_eq!(reason_of(u), TaskStatusReason::ReasonInvalidOffers);
        assert!(
            u.message.len() < 256,
            "{} bytes: {}",
            u.message.len(),
            u.message
        );
        assert!(
            u.message.contains("and 1023 other offer(s)"),
            "{}",
            u.message
        );
    }
    // One unknown id: named, cut short.
    let t = task("one", "cpus:1;mem:32");
    sim.accept(&fw, vec!["x".repeat(255)], vec![t], None)
        .unwrap();
    let u = one(updates_for(&sim.effects(), fw.conn));
    assert_eq!(
        u.message,
        format!(
            "task 'one' was not launched: offer '{}…' is no longer outstanding \
             (unknown, rescinded, or already accepted or declined)",
            "x".repeat(64)
        )
    );
}

#[test]
fn ids_of_other_calls_over_the_limit_are_refused() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let long = "x".repeat(limits::MAX_ID_BYTES + 1);
    let kill = Call::Kill(v1::KillRequest {
        header: Some(fw.header()),
        task_id: long.clone(),
        ..Default::default()
    });
    let err = sim.call(&fw, kill).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "KILL: task id is 256 bytes; the limit is 255"
    );
    let err = sim.decline(&fw, vec![long.clone()], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DECLINE: an offer id is 256 bytes; the limit is 255"
    );
    let header = v1::CallHeader {
        framework_id: "f".repeat(1 << 20),
        stream_id: String::new(),
    };
    let err = sim
        .handle(Input::Call {
            header,
            call: Call::Revive(v1::ReviveRequest::default()),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "REVIVE: the header's framework_id is 1048576 bytes; the limit is 255"
    );
    assert!(sim.effects().is_empty());
}

#[test]
fn a_task_over_the_limits_reported_by_a_re_registering_agent_is_killed_not_taken() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:4096");
    let fw = sim.subscribe("fw");
    let mut huge = running(&fw, "huge", "cpus:1;mem:64");
    if let Some(task) = huge.task.as_mut() {
        task.name = "n".repeat(limits::MAX_NAME_BYTES + 1);
    }
    let fine = running(&fw, "fine", "cpus:1;mem:64");
    let (agent, effects) = sim.reregister(&agent, vec![huge, fine]);
    assert_eq!(sim.task_state("huge"), None, "not taken");
    assert_eq!(sim.task_state("fine").as_deref(), Some("TASK_RUNNING"));
    let kills: Vec<String> = agent_messages(&effects, agent.conn)
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::KillTask(k) => Some(k.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(kills, ["huge"]);
    sim.m.check_invariants().unwrap();
}

#[test]
fn a_reconcile_naming_too_many_tasks_is_refused_and_the_most_allowed_is_answered() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let named = |n: usize| {
        Call::Reconcile(v1::ReconcileRequest {
            header: Some(fw.header()),
            tasks: (0..n)
                .map(|i| v1::ReconcileTask {
                    task_id: format!("t{i}"),
                    ..Default::default()
                })
                .collect(),
        })
    };
    let err = sim
        .call(&fw, named(limits::MAX_TASKS_PER_RECONCILE + 1))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "RECONCILE: the RECONCILE's list of tasks has 4097 entries; the limit is 4096"
    );
    assert!(sim.effects().is_empty());
    sim.call(&fw, named(limits::MAX_TASKS_PER_RECONCILE))
        .expect("the most allowed is answered");
}

#[test]
fn operator_calls_over_the_limits_are_refused_and_the_most_allowed_pass() {
    let mut sim = Sim::new();
    let weights =
        |n: usize| -> Vec<(String, f64)> { (0..n).map(|i| (format!("{i:r>255}"), 2.0)).collect() };
    let err = sim
        .handle(Input::Operator(OperatorCall::UpdateWeights(weights(
            limits::MAX_WEIGHTS + 1,
        ))))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "the list of weights has 1025 entries; the limit is 1024"
    );
    let err = sim
        .handle(Input::Operator(OperatorCall::UpdateWeights(vec![(
            "r".repeat(256),
            2.0,
        )])))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a role name is 256 bytes; the limit is 255"
    );
    assert!(sim.effects().is_empty());
    sim.handle(Input::Operator(OperatorCall::UpdateWeights(weights(
        limits::MAX_WEIGHTS,
    ))))
    .unwrap();
    assert_eq!(persisted(&sim.effects()).len(), limits::MAX_WEIGHTS);

    let err = sim
        .handle(Input::Operator(OperatorCall::DrainAgent {
            agent_id: "a".repeat(1 << 20),
            max_grace_period: None,
        }))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "agent id is 1048576 bytes; the limit is 255"
    );
}

#[test]
fn a_long_status_message_from_an_agent_is_cut() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offer = one(offers_for(&sim.tick(), fw.conn));
    sim.accept(&fw, vec![offer.id], vec![task("t", "cpus:1;mem:32")], None)
        .unwrap();
    sim.effects();
    let status = v1::TaskStatus {
        task_id: "t".into(),
        framework_id: fw.id.clone(),
        state: TaskState::TaskRunning as i32,
        message: "m".repeat(1 << 20),
        uuid: "u1".into(),
        ..Default::default()
    };
    sim.handle(Input::AgentMessage {
        conn: agent.conn,
        message: v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(status),
            })),
        },
    })
    .unwrap();
    let u = one(updates_for(&sim.effects(), fw.conn));
    assert_eq!(u.message.len(), limits::MAX_REASON_BYTES);
}

/// However many agents a framework is offered at once, each OFFERS event stays well
/// under the message size the SDK accepts.
#[test]
fn a_large_batch_of_offers_is_split_into_events_under_the_message_limit() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let attributes: Vec<v1::Attribute> = (0..limits::MAX_ATTRIBUTES)
        .map(|i| v1::Attribute {
            name: format!("{i:a>253}"),
            value: "v".repeat(limits::MAX_ATTRIBUTE_VALUE_BYTES),
        })
        .collect();
    let agents = 80;
    for i in 0..agents {
        let info = v1::AgentInfo {
            attributes: attributes.clone(),
            ..Sim::agent_info(&format!("h{i}"), "cpus:4;mem:1024")
        };
        assert_eq!(register_refused(&mut sim, info), None);
    }
    let effects = sim.tick();
    let events: Vec<Event> = events_for(&effects, fw.conn);
    assert!(events.len() > 1, "{} events", events.len());
    let mut offers = 0;
    for e in events {
        let Event::Offers(o) = &e else {
            panic!("{e:?}")
        };
        offers += o.offers.len();
        let len = prost::Message::encoded_len(&v1::Event { event: Some(e) });
        assert!(
            len <= MAX_MESSAGE_BYTES / 2 + 1024,
            "an event of {len} bytes"
        );
    }
    assert_eq!(offers, agents);
}

#[test]
fn a_task_over_the_encoded_size_limit_is_a_task_error() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offer = one(offers_for(&sim.tick(), fw.conn));
    let big = v1::TaskInfo {
        data: vec![0; limits::MAX_TASK_BYTES],
        ..task("big", "cpus:1;mem:32")
    };
    let most = v1::TaskInfo {
        data: vec![0; limits::MAX_TASK_BYTES - 1024],
        ..task("most", "cpus:1;mem:32")
    };
    sim.accept(&fw, vec![offer.id], vec![big, most], None)
        .unwrap();
    let effects = sim.effects();
    let u = one(updates_for(&effects, fw.conn));
    assert_eq!(u.task_id, "big");
    assert_eq!(state_of(&u), TaskState::TaskError);
    assert!(
        u.message
            .starts_with("task 'big': the encoded task is 10486"),
        "{}",
        u.message
    );
    assert!(
        u.message.ends_with("bytes; the limit is 1048576"),
        "{}",
        u.message
    );
    assert_eq!(agent_messages(&effects, agent.conn).len(), 1, "'most' runs");
}
