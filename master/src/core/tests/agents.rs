//! Agents: bad registrations, replaced streams, disconnection, the unreachable
//! timeout (TASK_UNREACHABLE vs TASK_LOST), coming back, and master restarts.

use strata_proto::v1::{
    self, TaskState, TaskStatusReason, TaskStatusSource, master_message::Message,
};

use super::*;

fn running(fw: &SimFramework, task_id: &str, resources: &str, state: TaskState) -> v1::RunningTask {
    v1::RunningTask {
        framework_id: fw.id.clone(),
        task: Some(task(task_id, resources)),
        state: state as i32,
        framework: Some(v1::FrameworkInfo {
            id: fw.id.clone(),
            ..framework_info("fw", &[], true)
        }),
    }
}

#[test]
fn an_agent_with_invalid_resources_is_refused() {
    let mut sim = Sim::new();
    for (resources, wanted) in [
        (
            vec![v1::Resource {
                name: "cpus".into(),
                scalar: -1.0,
                ..Default::default()
            }],
            "negative",
        ),
        (
            vec![v1::Resource {
                name: "cpus".into(),
                scalar: f64::NAN,
                ..Default::default()
            }],
            "not a finite",
        ),
        (
            vec![v1::Resource {
                name: "bananas".into(),
                scalar: 1.0,
                ..Default::default()
            }],
            "unknown resource",
        ),
    ] {
        let conn = sim.conn();
        let info = v1::AgentInfo {
            resources,
            ..Sim::agent_info("h1", "cpus:1")
        };
        let register = v1::Register {
            checkpointed: None,
            agent_info: Some(info),
            tasks: vec![],
            version: String::new(),
        };
        sim.handle(Input::AgentRegister {
            conn,
            register,
            peer: None,
        })
        .unwrap();
        let effects = sim.effects();
        assert_eq!(effects.len(), 2, "{effects:?}");
        let Message::Error(e) = one(agent_messages(&effects, conn)) else {
            panic!("AgentError expected: {effects:?}");
        };
        assert!(e.message.contains(wanted), "{}", e.message);
        assert_eq!(effects[1], Effect::CloseAgent { conn });
    }
    let conn = sim.conn();
    let register = v1::Register {
        checkpointed: None,
        agent_info: None,
        tasks: vec![],
        version: String::new(),
    };
    sim.handle(Input::AgentRegister {
        conn,
        register,
        peer: None,
    })
    .unwrap();
    assert_eq!(sim.effects().last(), Some(&Effect::CloseAgent { conn }));
    assert!(sim.m.snapshot().agents.is_empty());
}

#[test]
fn a_new_stream_for_a_registered_agent_replaces_the_old_one() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let (again, effects) = sim.reregister(&agent, vec![]);
    assert!(effects.contains(&Effect::CloseAgent { conn: agent.conn }));
    assert_eq!(
        rescinds_for(&effects, fw.conn),
        offer_ids(&offers),
        "offers of the old registration are void"
    );
    assert!(
        persisted(&effects).is_empty(),
        "nothing new to persist for a live agent"
    );
    // The old stream's close is ignored; the new one is live.
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    assert_eq!(sim.agent_view(&agent.id).status, "ACTIVE");
    assert_eq!(offers_for(&sim.tick(), fw.conn).len(), 1);
    sim.agent_heartbeat(&again);
}

#[test]
fn a_disconnected_agent_keeps_its_tasks_and_is_not_offered() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let leftover = offers_for(&sim.tick_after(1.0), fw.conn);
    assert_eq!(leftover.len(), 1);
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    let effects = sim.effects();
    assert_eq!(rescinds_for(&effects, fw.conn), offer_ids(&leftover));
    assert!(updates_for(&effects, fw.conn).is_empty(), "tasks are kept");
    assert_eq!(sim.agent_view(&agent.id).status, "DISCONNECTED");
    assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_STAGING"));

    // It comes back before the timeout: reactivated, tasks untouched, offers resume.
    let (_again, effects) = sim.reregister(
        &agent,
        vec![running(&fw, "t1", "cpus:1;mem:128", TaskState::TaskRunning)],
    );
    assert!(updates_for(&effects, fw.conn).is_empty());
    assert_eq!(sim.agent_view(&agent.id).status, "ACTIVE");
    assert_eq!(sim.agent_view(&agent.id).used, res("cpus:1;mem:128"));
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:3;mem:896")
    );
}

/// One agent runs a task of a partition-aware framework and one of a framework that
/// is not; the agent goes silent.
fn two_frameworks_on_one_agent(sim: &mut Sim) -> (SimAgent, SimFramework, SimFramework) {
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let pa = sim.subscribe_info(framework_info("pa", &[], true));
    let plain = sim.subscribe_info(framework_info("plain", &[], false));
    let offers = offers_for(&sim.tick(), pa.conn);
    sim.accept(
        &pa,
        offer_ids(&offers),
        vec![task("p1", "cpus:1;mem:128")],
        None,
    )
    .unwrap();
    let offers = offers_for(&sim.tick_after(1.0), plain.conn);
    sim.accept(
        &plain,
        offer_ids(&offers),
        vec![task("n1", "cpus:1;mem:128")],
        None,
    )
    .unwrap();
    sim.agent_update(&agent, &pa.id, "p1", TaskState::TaskRunning, "u1");
    sim.agent_update(&agent, &plain.id, "n1", TaskState::TaskRunning, "u2");
    sim.effects();
    (agent, pa, plain)
}

#[test]
fn a_silent_agent_becomes_unreachable_its_offers_are_rescinded_and_tasks_reported() {
    let mut sim = Sim::new();
    let (agent, pa, plain) = two_frameworks_on_one_agent(&mut sim);
    // Both filtered frameworks have 5 s refusals; after them the rest is offered to pa.
    let offers = offers_for(&sim.tick_after(5.0), pa.conn);
    assert_eq!(offers.len(), 1);

    // 74 s of silence is fine; at 75 s (15 s x 5) the agent is unreachable.
    sim.advance(Duration::from_secs(69));
    sim.tick();
    assert_eq!(sim.agent_view(&agent.id).status, "ACTIVE");
    let effects = sim.tick_after(1.0);
    assert_eq!(sim.agent_view(&agent.id).status, "UNREACHABLE");
    let unix = 1_000_000.0 + 76.0;
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::MarkUnreachable {
            id: agent.id.clone(),
            unix_time: unix
        }]
    );
    assert!(effects.contains(&Effect::CloseAgent { conn: agent.conn }));
    assert_eq!(rescinds_for(&effects, pa.conn), offer_ids(&offers));

    let [p] = updates_for(&effects, pa.conn).try_into().unwrap();
    assert_eq!(
        p,
        v1::TaskStatus {
            task_id: "p1".into(),
            state: TaskState::TaskUnreachable as i32,
            message: format!(
                "agent '{}' is unreachable: no heartbeat within the ping timeout",
                agent.id
            ),
            source: TaskStatusSource::SourceMaster as i32,
            reason: TaskStatusReason::ReasonAgentUnreachable as i32,
            agent_id: agent.id.clone(),
            framework_id: pa.id.clone(),
            uuid: String::new(),
            timestamp: unix,
            ..Default::default()
        }
    );
    let [n] = updates_for(&effects, plain.conn).try_into().unwrap();
    assert_eq!(state_of(&n), TaskState::TaskLost);
    assert_eq!(reason_of(&n), TaskStatusReason::ReasonAgentUnreachable);
    assert!(n.uuid.is_empty());

    let snap = sim.m.snapshot();
    assert_eq!(snap.outstanding_offers, 0);
    assert_eq!(sim.task_state("p1").as_deref(), Some("TASK_UNREACHABLE"));
    assert_eq!(sim.task_state("n1").as_deref(), Some("TASK_LOST"));
    let m = sim.m.metrics();
    assert_eq!(
        (m.agents_unreachable, m.cpus_total, m.tasks_lost_total),
        (1, 0.0, 1)
    );
    // Its resources left the pool: nothing is offered.
    assert!(offers_for(&sim.tick_after(1.0), pa.conn).is_empty());
}

#[test]
fn heartbeats_keep_an_agent_reachable() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:1;mem:128");
    for _ in 0..10 {
        sim.advance(Duration::from_secs(15));
        sim.agent_heartbeat(&agent);
        sim.tick();
    }
    assert_eq!(sim.agent_view(&agent.id).status, "ACTIVE");
}

/// Partition-aware tasks come back; a task a framework that is not partition aware
/// was told is LOST is killed, as that framework considers it gone, and LOST stays
/// its one end for that framework: it hears nothing more of it.
#[test]
fn an_unreachable_agent_that_returns_gets_its_tasks_back() {
    let mut sim = Sim::new();
    let (agent, pa, plain) = two_frameworks_on_one_agent(&mut sim);
    // pa also launched p2, which the agent will no longer run when it returns.
    let offers = offers_for(&sim.tick_after(5.0), pa.conn);
    sim.accept(
        &pa,
        offer_ids(&offers),
        vec![task("p2", "cpus:1;mem:128")],
        None,
    )
    .unwrap();
    sim.effects();
    sim.advance(Duration::from_secs(80));
    sim.tick();
    assert_eq!(sim.agent_view(&agent.id).status, "UNREACHABLE");

    let (again, effects) = sim.reregister(
        &agent,
        vec![
            running(&pa, "p1", "cpus:1;mem:128", TaskState::TaskRunning),
            running(&plain, "n1", "cpus:1;mem:128", TaskState::TaskRunning),
        ],
    );
    assert_eq!(
        persisted(&effects),
        vec![
            RegistryOp::AdmitAgent {
                id: agent.id.clone(),
                hostname: "h1".into(),
                principal: String::new(),
            },
            RegistryOp::MarkTaskLost {
                framework_id: plain.id.clone(),
                task_id: "n1".into(),
                agent_id: agent.id.clone()
            }
        ]
    );
    let messages: [Message; 2] = agent_messages(&effects, again.conn)
        .try_into()
        .unwrap_or_else(|m| panic!("{m:?}"));
    let [Message::Registered(r), Message::KillTask(kill)] = messages else {
        panic!("{effects:?}");
    };
    assert_eq!(r.agent_id, agent.id, "same id");
    assert_eq!(
        (kill.framework_id.as_str(), kill.task_id.as_str()),
        (plain.id.as_str(), "n1"),
        "the task its framework was told is lost is killed"
    );

    let pa_updates = updates_for(&effects, pa.conn);
    assert_eq!(pa_updates.len(), 2, "{pa_updates:?}");
    assert_eq!(
        (pa_updates[0].task_id.as_str(), state_of(&pa_updates[0])),
        ("p1", TaskState::TaskRunning)
    );
    assert_eq!(
        reason_of(&pa_updates[0]),
        TaskStatusReason::ReasonReconciliation
    );
    assert_eq!(
        (pa_updates[1].task_id.as_str(), state_of(&pa_updates[1])),
        ("p2", TaskState::TaskGone)
    );
    assert!(
        updates_for(&effects, plain.conn).is_empty(),
        "no news for a task its framework considers gone"
    );

    assert_eq!(sim.task_state("p1").as_deref(), Some("TASK_RUNNING"));
    assert_eq!(sim.task_state("p2").as_deref(), Some("TASK_GONE"));
    assert_eq!(
        sim.task_state("n1").as_deref(),
        Some("TASK_KILLING"),
        "accounted until the agent reports it killed"
    );
    let view = sim.agent_view(&agent.id);
    assert_eq!(
        (view.status.as_str(), view.used.clone()),
        ("ACTIVE", res("cpus:2;mem:256"))
    );
    // The rest is offered again.
    let effects = sim.tick();
    let offered: Vec<_> = [pa.conn, plain.conn]
        .iter()
        .flat_map(|c| offers_for(&effects, *c))
        .collect();
    assert_eq!(offered.len(), 1);
    assert_eq!(
        Resources::try_from_proto(&offered[0].resources).unwrap(),
        res("cpus:2;mem:768")
    );

    // Reconciliation while it is being killed: LOST, as the framework was told.
    sim.call(&plain, Call::Reconcile(v1::ReconcileRequest::default()))
        .unwrap();
    let [n] = updates_for(&sim.effects(), plain.conn).try_into().unwrap();
    assert_eq!(state_of(&n), TaskState::TaskLost);

    // The agent kills it: its update is acknowledged by the master, not forwarded;
    // the kill is not sent again on a later re-registration.
    sim.agent_update(&again, &plain.id, "n1", TaskState::TaskRunning, "r9");
    sim.agent_update(&again, &plain.id, "n1", TaskState::TaskKilled, "k1");
    let effects = sim.effects();
    assert!(updates_for(&effects, plain.conn).is_empty(), "{effects:?}");
    let acked: Vec<_> = agent_messages(&effects, again.conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::Acknowledge(a) => Some(a.uuid),
            _ => None,
        })
        .collect();
    assert_eq!(acked, ["r9", "k1"]);
    assert_eq!(sim.agent_view(&agent.id).used, res("cpus:1;mem:128"));
    // A retry of the update changes nothing and is acknowledged again.
    sim.agent_update(&again, &plain.id, "n1", TaskState::TaskKilled, "k1");
    assert!(updates_for(&sim.effects(), plain.conn).is_empty());
    let (later, effects) = sim.reregister(
        &again,
        vec![running(&pa, "p1", "cpus:1;mem:128", TaskState::TaskRunning)],
    );
    assert!(
        !agent_messages(&effects, later.conn)
            .iter()
            .any(|m| matches!(m, Message::KillTask(_))),
        "{effects:?}"
    );
}

/// A task its framework (not partition aware) was told is LOST that ended while its
/// agent was away: the agent's update of that end is acknowledged by the master, not
/// forwarded, and the framework's view stays LOST.
#[test]
fn a_lost_task_that_ended_meanwhile_stays_lost_for_its_framework() {
    let mut sim = Sim::new();
    let (agent, _pa, plain) = two_frameworks_on_one_agent(&mut sim);
    sim.advance(Duration::from_secs(80));
    sim.tick();
    assert_eq!(sim.task_state("n1").as_deref(), Some("TASK_LOST"));
    sim.effects();

    let (again, effects) = sim.reregister(
        &agent,
        vec![running(
            &plain,
            "n1",
            "cpus:1;mem:128",
            TaskState::TaskFailed,
        )],
    );
    assert!(updates_for(&effects, plain.conn).is_empty(), "{effects:?}");
    sim.agent_update(&again, &plain.id, "n1", TaskState::TaskFailed, "f1");
    let effects = sim.effects();
    assert!(updates_for(&effects, plain.conn).is_empty(), "{effects:?}");
    assert!(
        agent_messages(&effects, again.conn)
            .iter()
            .any(|m| matches!(m, Message::Acknowledge(a) if a.uuid == "f1")),
        "{effects:?}"
    );
    sim.m.check_invariants().unwrap();
}

/// Found by the simulation (`sim/`): an agent back from UNREACHABLE that reports a
/// task ended (its update still queued) used to leave the task TASK_UNREACHABLE on an
/// ACTIVE agent until the update came, its resources counted by the allocator but not
/// by the books. It ends now, with the reported state; the agent's update follows and
/// its acknowledgement forgets the task.
#[test]
fn an_unreachable_task_reported_ended_when_its_agent_returns_ends_at_once() {
    let mut sim = Sim::new();
    let (agent, pa, _plain) = two_frameworks_on_one_agent(&mut sim);
    sim.advance(Duration::from_secs(80));
    sim.tick();
    assert_eq!(sim.task_state("p1").as_deref(), Some("TASK_UNREACHABLE"));

    let (again, effects) = sim.reregister(
        &agent,
        vec![running(&pa, "p1", "cpus:1;mem:128", TaskState::TaskFailed)],
    );
    sim.m.check_invariants().unwrap();
    assert!(
        updates_for(&effects, pa.conn).is_empty(),
        "the agent's update follows"
    );
    assert_eq!(sim.task_state("p1").as_deref(), Some("TASK_FAILED"));
    let view = sim.agent_view(&agent.id);
    assert_eq!(
        (view.status.as_str(), view.used),
        ("ACTIVE", Resources::new())
    );
    // Its resources are offered again.
    let effects = sim.tick_after(6.0);
    let offered: Vec<_> = [pa.conn, _plain.conn]
        .iter()
        .flat_map(|c| offers_for(&effects, *c))
        .collect();
    assert_eq!(
        Resources::try_from_proto(&offered[0].resources).unwrap(),
        res("cpus:4;mem:1024")
    );
    // Until the update is acknowledged the framework knows the task as failed.
    sim.call(&pa, Call::Reconcile(v1::ReconcileRequest::default()))
        .unwrap();
    let [r] = updates_for(&sim.effects(), pa.conn).try_into().unwrap();
    assert_eq!(
        (r.task_id.as_str(), state_of(&r)),
        ("p1", TaskState::TaskFailed)
    );

    sim.agent_update(&again, &pa.id, "p1", TaskState::TaskFailed, "f1");
    let [u] = updates_for(&sim.effects(), pa.conn).try_into().unwrap();
    assert_eq!(
        (state_of(&u), u.uuid.as_str()),
        (TaskState::TaskFailed, "f1")
    );
    let ack = v1::AcknowledgeRequest {
        header: None,
        agent_id: agent.id.clone(),
        task_id: "p1".into(),
        uuid: "f1".into(),
    };
    sim.call(&pa, Call::Acknowledge(ack)).unwrap();
    sim.effects();
    sim.call(&pa, Call::Reconcile(v1::ReconcileRequest::default()))
        .unwrap();
    assert!(updates_for(&sim.effects(), pa.conn).is_empty(), "forgotten");
    sim.m.check_invariants().unwrap();
}

/// Found by the simulation (`sim/`): an agent re-registers (here after a master
/// restart) with a task it reports FAILED while an older RUNNING update of that task
/// is still unacknowledged; the agent resends that one first. The master, which knows
/// the task ended (reconciliation says FAILED), used to forward the RUNNING: the
/// framework saw the task go back to running. Now the master acknowledges it itself,
/// and the framework next sees the FAILED update; so too for non-terminal updates of
/// tasks the master no longer knows (stale duplicates).
#[test]
fn an_update_older_than_a_reported_end_is_acknowledged_not_forwarded() {
    let fw_info = v1::FrameworkInfo {
        id: "fw-1".into(),
        failover_timeout_seconds: 3600.0,
        ..framework_info("fw", &[], true)
    };
    let mut registry = Registry::default();
    registry.apply(&RegistryOp::AdmitAgent {
        id: "agent-1".into(),
        hostname: "h1".into(),
        principal: String::new(),
    });
    registry.apply(&RegistryOp::AddFramework {
        id: "fw-1".into(),
        info: super::super::codec::encode_framework_info(&fw_info),
    });
    let mut sim = Sim::with(config(), registry);
    let fw = sim.subscribe_info(fw_info);
    let agent = SimAgent {
        conn: ConnId(0),
        id: "agent-1".into(),
        info: v1::AgentInfo {
            id: "agent-1".into(),
            ..Sim::agent_info("h1", "cpus:4;mem:1024")
        },
    };
    let failed = running(&fw, "t1", "cpus:1;mem:128", TaskState::TaskFailed);
    let (agent, effects) = sim.reregister(&agent, vec![failed]);
    assert!(updates_for(&effects, fw.conn).is_empty());
    sim.call(&fw, Call::Reconcile(v1::ReconcileRequest::default()))
        .unwrap();
    let [r] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(state_of(&r), TaskState::TaskFailed);

    // The older RUNNING comes first (and once more, duplicated).
    for _ in 0..2 {
        sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
        let effects = sim.effects();
        assert!(updates_for(&effects, fw.conn).is_empty(), "{effects:?}");
        assert_eq!(
            agent_messages(&effects, agent.conn),
            vec![Message::Acknowledge(v1::AcknowledgeUpdate {
                framework_id: fw.id.clone(),
                task_id: "t1".into(),
                uuid: "u1".into(),
            })]
        );
    }
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFailed, "u2");
    let [u] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (state_of(&u), u.uuid.as_str()),
        (TaskState::TaskFailed, "u2")
    );

    // Acknowledged, the task is forgotten; a stale duplicate of the RUNNING that
    // arrives now is no news either.
    let ack = v1::AcknowledgeRequest {
        header: None,
        agent_id: agent.id.clone(),
        task_id: "t1".into(),
        uuid: "u2".into(),
    };
    sim.call(&fw, Call::Acknowledge(ack)).unwrap();
    sim.effects();
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    let effects = sim.effects();
    assert!(updates_for(&effects, fw.conn).is_empty(), "{effects:?}");
    assert_eq!(
        agent_messages(&effects, agent.conn).len(),
        1,
        "acknowledged"
    );
    sim.m.check_invariants().unwrap();
}

#[test]
fn a_second_register_refused_on_a_registered_stream_disconnects_the_agent() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    // The same stream registers again, with resources the master refuses.
    let mut info = agent.info.clone();
    info.resources = vec![v1::Resource {
        name: "cpus".into(),
        scalar: f64::NAN,
        ..Default::default()
    }];
    let message = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register {
            checkpointed: None,
            agent_info: Some(info),
            tasks: vec![],
            version: "test".into(),
        })),
    };
    sim.handle(Input::AgentMessage {
        conn: agent.conn,
        message,
    })
    .unwrap();
    let effects = sim.effects();
    assert!(effects.contains(&Effect::CloseAgent { conn: agent.conn }));
    assert_eq!(
        rescinds_for(&effects, fw.conn),
        offer_ids(&offers),
        "its offers are void"
    );
    assert_eq!(sim.agent_view(&agent.id).status, "DISCONNECTED");
    assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
    // The driver dropped the stream: no AgentDisconnected follows. The unreachable
    // timeout runs all the same.
    sim.advance(Duration::from_secs(75));
    sim.tick();
    assert_eq!(sim.agent_view(&agent.id).status, "UNREACHABLE");
}

#[test]
fn after_a_master_restart_agents_and_frameworks_come_back() {
    let fw_info = v1::FrameworkInfo {
        id: "fw-1".into(),
        failover_timeout_seconds: 3600.0,
        ..framework_info("old", &[], true)
    };
    let mut registry = Registry::default();
    registry.apply(&RegistryOp::AdmitAgent {
        id: "agent-1".into(),
        hostname: "h1".into(),
        principal: String::new(),
    });
    registry.apply(&RegistryOp::AdmitAgent {
        id: "agent-2".into(),
        hostname: "h2".into(),
        principal: String::new(),
    });
    registry.apply(&RegistryOp::AddFramework {
        id: "fw-1".into(),
        info: super::super::codec::encode_framework_info(&fw_info),
    });
    let mut sim = Sim::with(config(), registry);
    let snap = sim.m.snapshot();
    assert_eq!(
        snap.agents
            .iter()
            .map(|a| a.status.as_str())
            .collect::<Vec<_>>(),
        vec!["RECOVERING", "RECOVERING"]
    );
    assert_eq!(snap.frameworks.len(), 1);
    assert!(!snap.frameworks[0].connected);

    // agent-1 re-registers with the framework's task and with one of a framework the
    // registry never heard of.
    let old_fw = SimFramework {
        conn: ConnId(0),
        id: "fw-1".into(),
        stream: String::new(),
    };
    let stranger = SimFramework {
        conn: ConnId(0),
        id: "fw-x".into(),
        stream: String::new(),
    };
    let agent = SimAgent {
        conn: ConnId(0),
        id: "agent-1".into(),
        info: v1::AgentInfo {
            id: "agent-1".into(),
            ..Sim::agent_info("h1", "cpus:4;mem:1024")
        },
    };
    let (agent, effects) = sim.reregister(
        &agent,
        vec![
            running(&old_fw, "t1", "cpus:1;mem:128", TaskState::TaskRunning),
            running(&stranger, "x1", "cpus:1;mem:128", TaskState::TaskRunning),
        ],
    );
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::AdmitAgent {
            id: "agent-1".into(),
            hostname: "h1".into(),
            principal: String::new(),
        }]
    );
    assert_eq!(
        sim.m.snapshot().frameworks.len(),
        2,
        "fw-x is recovered from the agent"
    );

    // Reconciling an unknown task on the recovering agent-2 gets no answer yet.
    let conn = sim.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(fw_info.clone()),
        suppressed_roles: vec![],
    };
    sim.handle(Input::Subscribe { conn, request }).unwrap();
    let effects = sim.effects();
    let Some(Event::Subscribed(s)) = events_for(&effects, conn).into_iter().next() else {
        panic!("{effects:?}")
    };
    assert_eq!(s.framework_id, "fw-1");
    let fw = SimFramework {
        conn,
        id: "fw-1".into(),
        stream: s.stream_id,
    };
    let req = v1::ReconcileRequest {
        header: None,
        tasks: vec![
            v1::ReconcileTask {
                task_id: "t1".into(),
                agent_id: String::new(),
            },
            v1::ReconcileTask {
                task_id: "t9".into(),
                agent_id: "agent-2".into(),
            },
        ],
    };
    sim.call(&fw, Call::Reconcile(req)).unwrap();
    let updates = updates_for(&sim.effects(), conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(
        (updates[0].task_id.as_str(), state_of(&updates[0])),
        ("t1", TaskState::TaskRunning)
    );

    // agent-2 never returns: after agent_reregister_timeout it is unreachable.
    for _ in 0..39 {
        sim.advance(Duration::from_secs(15));
        sim.agent_heartbeat(&agent);
        assert!(persisted(&sim.tick()).is_empty());
    }
    sim.advance(Duration::from_secs(15));
    sim.agent_heartbeat(&agent);
    let effects = sim.tick();
    // fw-x never subscribed within the re-register timeout either: it is removed.
    assert_eq!(
        persisted(&effects),
        vec![
            RegistryOp::MarkUnreachable {
                id: "agent-2".into(),
                unix_time: 1_000_600.0
            },
            RegistryOp::RemoveFramework { id: "fw-x".into() },
        ]
    );
    assert_eq!(
        agent_messages(&effects, agent.conn),
        vec![Message::ShutdownFramework(v1::ShutdownFramework {
            framework_id: "fw-x".into()
        })]
    );
    assert_eq!(sim.agent_view("agent-2").status, "UNREACHABLE");
    let req = v1::ReconcileRequest {
        header: None,
        tasks: vec![v1::ReconcileTask {
            task_id: "t9".into(),
            agent_id: "agent-2".into(),
        }],
    };
    sim.call(&fw, Call::Reconcile(req)).unwrap();
    let [u] = updates_for(&sim.effects(), conn).try_into().unwrap();
    assert_eq!(state_of(&u), TaskState::TaskUnreachable);
}

#[test]
fn an_unknown_agent_id_is_accepted_after_a_restart_without_registry() {
    let mut sim = Sim::new();
    let agent = SimAgent {
        conn: ConnId(0),
        id: "old-id".into(),
        info: v1::AgentInfo {
            id: "old-id".into(),
            ..Sim::agent_info("h1", "cpus:4;mem:1024")
        },
    };
    let (agent, effects) = sim.reregister(&agent, vec![]);
    let Message::Registered(r) = one(agent_messages(&effects, agent.conn)) else {
        panic!()
    };
    assert_eq!(r.agent_id, "old-id");
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::AdmitAgent {
            id: "old-id".into(),
            hostname: "h1".into(),
            principal: String::new(),
        }]
    );
}

#[test]
fn executor_messages_reach_the_framework() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let message = v1::AgentMessage {
        message: Some(v1::agent_message::Message::ExecutorMessage(
            v1::ExecutorMessage {
                framework_id: fw.id.clone(),
                task_id: "t1".into(),
                data: b"hi".to_vec(),
            },
        )),
    };
    sim.handle(Input::AgentMessage {
        conn: agent.conn,
        message,
    })
    .unwrap();
    let events = events_for(&sim.effects(), fw.conn);
    assert_eq!(
        events,
        vec![Event::Message(v1::FrameworkMessage {
            agent_id: agent.id.clone(),
            task_id: "t1".into(),
            data: b"hi".to_vec()
        })]
    );
}

#[test]
fn usage_reports_reach_state_for_the_agents_own_running_tasks() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let stats = v1::ResourceStatistics {
        timestamp: 1.5,
        processes: Some(3),
        cpus_total_time_secs: Some(0.25),
        mem_total_bytes: Some(4096),
        mem_limit_bytes: Some(128 << 20),
        disk_used_bytes: Some(3 << 20),
        disk_limit_bytes: Some(10 << 20),
        ..Default::default()
    };
    let report = |task_id: &str, framework_id: &str| v1::AgentMessage {
        message: Some(v1::agent_message::Message::UsageReport(v1::UsageReport {
            volumes: Vec::new(),
            tasks: vec![v1::TaskUsage {
                framework_id: framework_id.into(),
                task_id: task_id.into(),
                statistics: Some(stats),
            }],
        })),
    };
    // Unknown tasks and frameworks are ignored; nothing is sent to anyone.
    for message in [
        report("nope", &fw.id),
        report("t1", "no-such-framework"),
        report("t1", &fw.id),
    ] {
        sim.handle(Input::AgentMessage {
            conn: agent.conn,
            message,
        })
        .unwrap();
    }
    assert!(sim.effects().is_empty());
    let state = sim.state_json();
    let task = &state["tasks"][0];
    assert_eq!(task["id"], "t1");
    assert_eq!(task["statistics"]["processes"], 3);
    assert_eq!(task["statistics"]["mem_limit_bytes"], 128 << 20);
    assert_eq!(task["statistics"]["disk_used_bytes"], 3 << 20);
    assert_eq!(task["statistics"]["disk_limit_bytes"], 10 << 20);
    assert_eq!(task["statistics"]["cpus_total_time_secs"], 0.25);
    assert_eq!(task["statistics"]["threads"], serde_json::Value::Null);
}
