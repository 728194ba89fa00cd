//! Frameworks: heartbeats, TEARDOWN, failover within and after the timeout.

use strata_proto::v1::{self, TaskState, master_message::Message};

use super::*;

fn with_failover(name: &str, seconds: f64) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        failover_timeout_seconds: seconds,
        ..framework_info(name, &[], false)
    }
}

#[test]
fn connected_frameworks_get_a_heartbeat_every_interval() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    assert!(events_for(&sim.tick_after(14.0), fw.conn).is_empty());
    assert_eq!(
        events_for(&sim.tick_after(1.0), fw.conn),
        vec![Event::Heartbeat(v1::Heartbeat {})]
    );
    assert!(events_for(&sim.tick_after(1.0), fw.conn).is_empty());
    assert_eq!(
        events_for(&sim.tick_after(14.0), fw.conn),
        vec![Event::Heartbeat(v1::Heartbeat {})]
    );
}

#[test]
fn teardown_kills_tasks_returns_resources_and_forgets_the_framework() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let other = sim.subscribe("other");
    let leftover = offers_for(&sim.tick_after(1.0), other.conn);
    assert_eq!(
        leftover.len(),
        1,
        "the framework with the lower share is offered first"
    );
    sim.decline(&other, offer_ids(&leftover), refuse(0.0))
        .unwrap();
    sim.call(&fw, Call::Teardown(v1::TeardownRequest { header: None }))
        .unwrap();
    let effects = sim.effects();
    assert_eq!(
        effects,
        vec![
            Effect::Persist(RegistryOp::RemoveFramework { id: fw.id.clone() }),
            Effect::ToAgent {
                conn: agent.conn,
                message: v1::MasterMessage {
                    message: Some(Message::ShutdownFramework(v1::ShutdownFramework {
                        framework_id: fw.id.clone()
                    }))
                }
            },
            Effect::CloseFramework { conn: fw.conn },
        ]
    );
    let snap = sim.m.snapshot();
    assert_eq!(snap.frameworks.len(), 1);
    assert_eq!(snap.outstanding_offers, 0);
    assert!(snap.agents[0].used.is_empty());
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_KILLED"));
    // Everything goes to the remaining framework.
    let offers = offers_for(&sim.tick(), other.conn);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:4;mem:1024")
    );
    // The old id cannot come back; calls with it are refused.
    let err = sim
        .call(&fw, Call::Revive(v1::ReviveRequest::default()))
        .unwrap_err();
    assert_eq!(err, CallError::UnknownFramework(fw.id.clone()));
    let conn = sim.conn();
    let info = v1::FrameworkInfo {
        id: fw.id.clone(),
        ..framework_info("fw", &[], false)
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
    assert!(
        matches!(&events_for(&effects, conn)[..], [Event::Error(e)] if e.message.contains("was removed"))
    );
}

#[test]
fn a_removed_framework_stays_removed_after_a_master_restart() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let mut registry = Registry::default();
    registry.apply(&RegistryOp::AdmitAgent {
        id: agent.id.clone(),
        hostname: "h1".into(),
        principal: String::new(),
    });
    let registry = fold(registry, &sim.effects());
    sim.call(&fw, Call::Teardown(v1::TeardownRequest { header: None }))
        .unwrap();
    let registry = fold(registry, &sim.effects());
    assert_eq!(registry.removed_frameworks, vec![fw.id.clone()]);
    assert!(registry.frameworks.is_empty());

    // A new master from that registry. The agent was down and still runs the task
    // (it never got the shutdown): the master kills it at once, not after the
    // framework's failover timeout.
    let mut sim = Sim::with(config(), registry);
    let (back, effects) = sim.reregister(&agent, vec![running(&fw, "t1", "cpus:1;mem:128")]);
    assert_eq!(
        agent_messages(&effects, back.conn)
            .into_iter()
            .filter(|m| matches!(m, Message::ShutdownFramework(s) if s.framework_id == fw.id))
            .count(),
        1,
        "{effects:?}"
    );
    assert!(sim.m.snapshot().frameworks.is_empty());
    // And the old id cannot subscribe again.
    let conn = sim.conn();
    sim.handle(Input::Subscribe {
        conn,
        request: v1::SubscribeRequest {
            framework_info: Some(v1::FrameworkInfo {
                id: fw.id.clone(),
                ..framework_info("fw", &[], false)
            }),
            suppressed_roles: vec![],
        },
    })
    .unwrap();
    let effects = sim.effects();
    assert!(
        matches!(&events_for(&effects, conn)[..], [Event::Error(e)] if e.message.contains("was removed")),
        "{effects:?}"
    );
}

#[test]
fn a_framework_that_fails_over_in_time_keeps_its_tasks() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let fw = sim.subscribe_info(with_failover("fw", 60.0));
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:128")],
        refuse(0.0),
    )
    .unwrap();
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    let leftover = offers_for(&sim.tick_after(1.0), fw.conn);
    assert_eq!(leftover.len(), 1);

    sim.handle(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    assert!(
        sim.effects().is_empty(),
        "offers of a gone stream are withdrawn silently"
    );
    let snap = sim.m.snapshot();
    assert_eq!(
        (snap.outstanding_offers, snap.frameworks[0].connected),
        (0, false)
    );
    assert_eq!(sim.m.metrics().frameworks_disconnected, 1);
    let err = sim
        .call(&fw, Call::Revive(v1::ReviveRequest::default()))
        .unwrap_err();
    assert!(
        matches!(err, CallError::StaleStream { .. }),
        "no calls while disconnected"
    );
    sim.agent_heartbeat(&agent);
    assert!(offers_for(&sim.tick_after(30.0), fw.conn).is_empty());

    // The scheduler restarts and re-subscribes with its id.
    let conn = sim.conn();
    let info = v1::FrameworkInfo {
        id: fw.id.clone(),
        ..with_failover("fw", 60.0)
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
    let Some(Event::Subscribed(s)) = events_for(&effects, conn).into_iter().next() else {
        panic!("{effects:?}")
    };
    assert_eq!(s.framework_id, fw.id);
    assert_ne!(s.stream_id, fw.stream, "a fresh stream id");
    let failed_over = SimFramework {
        conn,
        id: fw.id.clone(),
        stream: s.stream_id,
    };
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_RUNNING"));
    assert!(matches!(
        sim.call(&fw, Call::Revive(v1::ReviveRequest::default())),
        Err(CallError::StaleStream { .. })
    ));
    sim.call(
        &failed_over,
        Call::Reconcile(v1::ReconcileRequest::default()),
    )
    .unwrap();
    assert_eq!(updates_for(&sim.effects(), conn).len(), 1);
    sim.agent_heartbeat(&agent);
    assert_eq!(
        offers_for(&sim.tick_after(40.0), conn).len(),
        1,
        "offers resume; the old deadline is gone"
    );
    assert_eq!(sim.m.snapshot().frameworks.len(), 1);
}

#[test]
fn a_second_subscription_closes_the_first_stream() {
    let mut sim = Sim::new();
    let fw = sim.subscribe_info(with_failover("fw", 60.0));
    let conn = sim.conn();
    let info = v1::FrameworkInfo {
        id: fw.id.clone(),
        ..with_failover("fw", 60.0)
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
    assert!(effects.contains(&Effect::CloseFramework { conn: fw.conn }));
    // The old stream's close does not disconnect the new subscription.
    sim.handle(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    assert!(sim.m.snapshot().frameworks[0].connected);
}

#[test]
fn a_framework_that_does_not_come_back_in_time_is_removed_and_its_tasks_killed() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let fw = sim.subscribe_info(with_failover("fw", 60.0));
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:128")],
        None,
    )
    .unwrap();
    sim.effects();
    sim.handle(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    sim.advance(Duration::from_secs(59));
    sim.agent_heartbeat(&agent);
    assert!(persisted(&sim.tick()).is_empty());
    let effects = sim.tick_after(1.0);
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::RemoveFramework { id: fw.id.clone() }]
    );
    assert_eq!(
        agent_messages(&effects, agent.conn),
        vec![Message::ShutdownFramework(v1::ShutdownFramework {
            framework_id: fw.id.clone()
        })]
    );
    assert!(
        !effects.contains(&Effect::CloseFramework { conn: fw.conn }),
        "its stream is already gone"
    );
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_KILLED"));
    assert!(sim.agent_view(&agent.id).used.is_empty());
    assert!(sim.m.snapshot().frameworks.is_empty());
    assert_eq!(sim.m.metrics().tasks_killed_total, 1);
}

#[test]
fn a_framework_with_no_failover_timeout_is_removed_when_it_disconnects() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.handle(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    let effects = sim.effects();
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::RemoveFramework { id: fw.id.clone() }]
    );
    assert_eq!(agent_messages(&effects, agent.conn).len(), 1);
    assert!(sim.m.snapshot().frameworks.is_empty());
}

#[test]
fn a_framework_id_unknown_to_this_master_is_accepted() {
    let mut sim = Sim::new();
    let conn = sim.conn();
    let info = v1::FrameworkInfo {
        id: "from-before".into(),
        ..framework_info("fw", &[], false)
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
    assert!(
        matches!(&events_for(&effects, conn)[..], [Event::Subscribed(s)] if s.framework_id == "from-before")
    );
}
