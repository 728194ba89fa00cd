//! Task lifecycle calls: launch and status updates, acknowledgements, KILL,
//! RECONCILE and MESSAGE.

use strata_proto::v1::{self, TaskState, TaskStatusReason, master_message::Message};

use super::*;

#[test]
fn a_launched_task_runs_finishes_and_its_resources_return_once() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let mut t = task("t1", "cpus:4;mem:1024");
    t.kill_policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(1.0),
    });
    sim.accept(&fw, offer_ids(&offers), vec![t.clone()], None)
        .unwrap();
    let effects = sim.effects();
    let Message::RunTask(run) = one(agent_messages(&effects, agent.conn)) else {
        panic!("{effects:?}")
    };
    assert_eq!(
        run.task,
        Some(v1::TaskInfo {
            agent_id: agent.id.clone(),
            ..t
        })
    );
    assert_eq!(run.framework.as_ref().map(|f| f.name.as_str()), Some("fw"));
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_STAGING"));
    assert_eq!(sim.m.metrics().tasks_staging, 1);

    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    let [up] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (state_of(&up), up.uuid.as_str()),
        (TaskState::TaskRunning, "u1"),
        "forwarded as the agent sent it"
    );
    assert_eq!(sim.m.metrics().tasks_running, 1);

    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFinished, "u2");
    let [up] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(state_of(&up), TaskState::TaskFinished);
    let view = sim.agent_view(&agent.id);
    assert!(view.used.is_empty());
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_FINISHED"));
    assert_eq!(sim.m.metrics().tasks_finished_total, 1);

    // The agent retries the terminal update (not yet acknowledged): forwarded again,
    // nothing released twice.
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFinished, "u2");
    assert_eq!(updates_for(&sim.effects(), fw.conn).len(), 1);
    assert_eq!(sim.m.metrics().tasks_finished_total, 1);
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:4;mem:1024"),
        "not doubled"
    );
    assert_eq!(sim.m.snapshot().tasks.len(), 1);
}

#[test]
fn stale_and_illegal_updates_do_not_move_a_task_back() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskStaging, "u0");
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_RUNNING"));
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFailed, "u2");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFinished, "u3");
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_FAILED"));
    let m = sim.m.metrics();
    assert_eq!((m.tasks_failed_total, m.tasks_finished_total), (1, 0));
    assert_eq!(
        updates_for(&sim.effects(), fw.conn).len(),
        4,
        "all forwarded for acknowledgement"
    );
}

#[test]
fn an_update_from_another_agent_does_not_touch_the_task() {
    let mut sim = Sim::new();
    let (_agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let other = sim.add_agent("h2", "cpus:1;mem:128");
    sim.effects();
    sim.agent_update(&other, &fw.id, "t1", TaskState::TaskFinished, "x");
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_STAGING"));
    // The framework is not told its live task ended; the master acknowledges the
    // other agent's update itself so that its retries stop.
    let effects = sim.effects();
    assert!(updates_for(&effects, fw.conn).is_empty(), "{effects:?}");
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::ToAgent { conn, message: v1::MasterMessage {
            message: Some(Message::Acknowledge(a)) } } if *conn == other.conn && a.uuid == "x")
        ),
        "{effects:?}"
    );
}

#[test]
fn acknowledgements_are_forwarded_to_the_agent() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let ack = |agent_id: &str, uuid: &str| {
        Call::Acknowledge(v1::AcknowledgeRequest {
            header: None,
            agent_id: agent_id.into(),
            task_id: "t1".into(),
            uuid: uuid.into(),
        })
    };
    sim.call(&fw, ack(&agent.id, "u1")).unwrap();
    assert_eq!(
        sim.effects(),
        vec![Effect::ToAgent {
            conn: agent.conn,
            message: v1::MasterMessage {
                message: Some(Message::Acknowledge(v1::AcknowledgeUpdate {
                    framework_id: fw.id.clone(),
                    task_id: "t1".into(),
                    uuid: "u1".into()
                }))
            }
        }]
    );
    let err = sim.call(&fw, ack("nope", "u1")).unwrap_err();
    assert_eq!(
        err,
        CallError::NotFound("agent 'nope' is unknown to this master".into())
    );
    assert!(matches!(
        sim.call(&fw, ack(&agent.id, "")),
        Err(CallError::InvalidArgument(_))
    ));
    assert!(sim.effects().is_empty());
}

#[test]
fn updates_of_a_removed_framework_are_acknowledged_by_the_master() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.call(&fw, Call::Teardown(v1::TeardownRequest { header: None }))
        .unwrap();
    sim.effects();
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskKilled, "u9");
    let Message::Acknowledge(a) = one(agent_messages(&sim.effects(), agent.conn)) else {
        panic!()
    };
    assert_eq!((a.task_id.as_str(), a.uuid.as_str()), ("t1", "u9"));
}

#[test]
fn kill_goes_to_the_agent_and_an_unknown_task_is_reported_lost() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let policy = Some(v1::KillPolicy {
        grace_period_seconds: Some(7.0),
    });
    let kill = |id: &str| {
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: id.into(),
            agent_id: String::new(),
            kill_policy: policy,
        })
    };
    sim.call(&fw, kill("t1")).unwrap();
    assert_eq!(
        agent_messages(&sim.effects(), agent.conn),
        vec![Message::KillTask(v1::KillTask {
            framework_id: fw.id.clone(),
            task_id: "t1".into(),
            kill_policy: policy
        })]
    );
    assert_eq!(
        sim.task_state("t1").as_deref(),
        Some("TASK_STAGING"),
        "the agent reports the kill"
    );

    sim.call(&fw, kill("ghost")).unwrap();
    let [lost] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (lost.task_id.as_str(), state_of(&lost)),
        ("ghost", TaskState::TaskLost)
    );
    assert_eq!(reason_of(&lost), TaskStatusReason::ReasonTaskUnknown);
    assert!(lost.message.contains("cannot kill task 'ghost'"));
}

/// Found by the simulation (`sim/`): after a master restart, a KILL of a task whose
/// agent had not re-registered yet was answered TASK_LOST, a terminal state, though the
/// task ran on and came back with its agent. Now the master answers as reconciliation
/// does: nothing while the agent is recovering, TASK_UNREACHABLE while it is
/// unreachable.
#[test]
fn a_kill_of_a_task_the_master_cannot_know_yet_is_not_answered_lost() {
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
    let fw = sim.subscribe_info(fw_info.clone());
    let kill = || {
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: "t1".into(),
            agent_id: "agent-1".into(),
            kill_policy: None,
        })
    };
    sim.call(&fw, kill()).unwrap();
    assert!(
        updates_for(&sim.effects(), fw.conn).is_empty(),
        "agent-1 has not re-registered: the master cannot know its tasks"
    );

    // The re-register timeout passes: the agent is unreachable, the task may come back.
    sim.advance(Duration::from_secs(601));
    sim.tick();
    sim.call(&fw, kill()).unwrap();
    let [u] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (u.task_id.as_str(), state_of(&u), reason_of(&u)),
        (
            "t1",
            TaskState::TaskUnreachable,
            TaskStatusReason::ReasonAgentUnreachable
        )
    );

    // It comes back; now the kill goes to the agent.
    let agent = SimAgent {
        conn: ConnId(0),
        id: "agent-1".into(),
        info: v1::AgentInfo {
            id: "agent-1".into(),
            ..Sim::agent_info("h1", "cpus:4;mem:1024")
        },
    };
    let running = v1::RunningTask {
        framework_id: "fw-1".into(),
        task: Some(task("t1", "cpus:1;mem:128")),
        state: TaskState::TaskRunning as i32,
        framework: Some(fw_info),
    };
    let (agent, effects) = sim.reregister(&agent, vec![running]);
    let [back] = updates_for(&effects, fw.conn).try_into().unwrap();
    assert_eq!(state_of(&back), TaskState::TaskRunning);
    sim.call(&fw, kill()).unwrap();
    let killed = agent_messages(&sim.effects(), agent.conn);
    assert!(matches!(killed.as_slice(), [Message::KillTask(k)] if k.task_id == "t1"));
}

/// Found by the fault-injection suite (tests/faults.rs): a KILL naming no agent, of a
/// task the master does not know because it restarted and the task's agent has not
/// re-registered yet, was answered TASK_LOST; the task came back running with its
/// agent. While any agent is still to re-register the master gives no answer.
#[test]
fn a_kill_naming_no_agent_is_not_answered_while_agents_re_register() {
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
    let kill = || {
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: "t1".into(),
            agent_id: String::new(),
            kill_policy: None,
        })
    };
    sim.call(&fw, kill()).unwrap();
    assert!(
        updates_for(&sim.effects(), fw.conn).is_empty(),
        "agent-1 may still run t1: no answer yet"
    );
    // Once no agent is left to re-register, an unknown task is lost.
    sim.advance(Duration::from_secs(601));
    sim.tick();
    let _ = sim.effects();
    sim.call(&fw, kill()).unwrap();
    let [u] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(u.task_id, "t1");
    assert_ne!(state_of(&u), TaskState::TaskRunning);
}

#[test]
fn a_kill_for_a_disconnected_agent_is_delivered_when_it_returns() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    sim.call(
        &fw,
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: "t1".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    assert!(sim.effects().is_empty());
    let running = v1::RunningTask {
        framework_id: fw.id.clone(),
        task: Some(task("t1", "cpus:1;mem:128")),
        state: TaskState::TaskRunning as i32,
        framework: None,
    };
    let (again, effects) = sim.reregister(&agent, vec![running.clone()]);
    let msgs = agent_messages(&effects, again.conn);
    assert!(
        msgs.contains(&Message::KillTask(v1::KillTask {
            framework_id: fw.id.clone(),
            task_id: "t1".into(),
            kill_policy: None
        })),
        "{msgs:?}"
    );
    // Sent once: the next re-registration (the task still dying) sends no KILL.
    let (later, effects) = sim.reregister(&again, vec![running]);
    let msgs = agent_messages(&effects, later.conn);
    assert!(
        !msgs.iter().any(|m| matches!(m, Message::KillTask(_))),
        "{msgs:?}"
    );
}

#[test]
fn a_pending_kill_survives_the_task_going_lost() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    sim.effects();
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    sim.call(
        &fw,
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: "t1".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    // The agent stays away: the task is LOST for this framework (not partition aware).
    let effects = sim.tick_after(80.0);
    let [lost] = updates_for(&effects, fw.conn).try_into().unwrap();
    assert_eq!(state_of(&lost), TaskState::TaskLost);

    // It comes back still running the task: the task is killed, not restored.
    let running = v1::RunningTask {
        framework_id: fw.id.clone(),
        task: Some(task("t1", "cpus:1;mem:128")),
        state: TaskState::TaskRunning as i32,
        framework: None,
    };
    let (again, effects) = sim.reregister(&agent, vec![running]);
    let msgs = agent_messages(&effects, again.conn);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::KillTask(k) if k.task_id == "t1")),
        "{msgs:?}"
    );
    assert!(updates_for(&effects, fw.conn).is_empty());
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_KILLING"));
}

/// The scenario of `strata run -- sleep 5` across a master restart: the task
/// finishes, the master restarts, the agent re-registers and resends TASK_FINISHED
/// before the framework is back (the update is dropped); the framework re-subscribes
/// and reconciles.
#[test]
fn a_task_that_finished_while_its_framework_was_away_reconciles_as_finished() {
    let fw_info = v1::FrameworkInfo {
        id: "fw-1".into(),
        failover_timeout_seconds: 60.0,
        ..framework_info("fw", &[], false)
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
    let agent = SimAgent {
        conn: ConnId(0),
        id: "agent-1".into(),
        info: v1::AgentInfo {
            id: "agent-1".into(),
            ..Sim::agent_info("h1", "cpus:4;mem:1024")
        },
    };
    let finished = v1::RunningTask {
        framework_id: "fw-1".into(),
        task: Some(task("t1", "cpus:1;mem:128")),
        state: TaskState::TaskFinished as i32,
        framework: Some(fw_info.clone()),
    };
    let (agent, _) = sim.reregister(&agent, vec![finished]);
    sim.agent_update(&agent, "fw-1", "t1", TaskState::TaskFinished, "u-fin");
    assert!(
        sim.effects()
            .iter()
            .all(|e| !matches!(e, Effect::ToFramework { .. })),
        "nobody to tell yet"
    );

    let fw = sim.subscribe_info(fw_info);
    assert_eq!(fw.id, "fw-1");
    let ask = |agent_id: &str| {
        Call::Reconcile(v1::ReconcileRequest {
            header: None,
            tasks: vec![v1::ReconcileTask {
                task_id: "t1".into(),
                agent_id: agent_id.into(),
            }],
        })
    };
    sim.call(&fw, ask(&agent.id)).unwrap();
    let [answer] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(state_of(&answer), TaskState::TaskFinished, "{answer:?}");
    assert_eq!(reason_of(&answer), TaskStatusReason::ReasonReconciliation);
    assert!(answer.uuid.is_empty());
    // Implicit reconciliation includes it too.
    sim.call(
        &fw,
        Call::Reconcile(v1::ReconcileRequest {
            header: None,
            tasks: vec![],
        }),
    )
    .unwrap();
    let [answer] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (answer.task_id.as_str(), state_of(&answer)),
        ("t1", TaskState::TaskFinished)
    );

    // The agent retries the update: it reaches the framework, which acknowledges it.
    sim.agent_update(&agent, "fw-1", "t1", TaskState::TaskFinished, "u-fin");
    let [update] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(
        (state_of(&update), update.uuid.as_str()),
        (TaskState::TaskFinished, "u-fin")
    );
    sim.call(
        &fw,
        Call::Acknowledge(v1::AcknowledgeRequest {
            header: None,
            agent_id: agent.id.clone(),
            task_id: "t1".into(),
            uuid: "u-fin".into(),
        }),
    )
    .unwrap();
    sim.effects();
    // Acknowledged: forgotten, and answered as any task the agent does not run.
    sim.call(&fw, ask(&agent.id)).unwrap();
    let [answer] = updates_for(&sim.effects(), fw.conn).try_into().unwrap();
    assert_eq!(state_of(&answer), TaskState::TaskLost);
    assert_eq!(sim.agent_view(&agent.id).used, Resources::new());
}

#[test]
fn a_task_that_ended_unacknowledged_is_known_until_its_update_is_acknowledged() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let mut info = v1::FrameworkInfo {
        failover_timeout_seconds: 60.0,
        ..framework_info("fw", &[], false)
    };
    let fw = sim.subscribe_info(info.clone());
    info.id = fw.id.clone();
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:128")],
        refuse(0.0),
    )
    .unwrap();
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    // The framework is away when the task fails.
    sim.handle(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFailed, "u2");
    assert_eq!(sim.agent_view(&agent.id).used, Resources::new(), "released");
    let fw = sim.subscribe_info(info);
    sim.effects();
    let reconcile = |sim: &mut Sim| {
        sim.call(
            &fw,
            Call::Reconcile(v1::ReconcileRequest {
                header: None,
                tasks: vec![v1::ReconcileTask {
                    task_id: "t1".into(),
                    agent_id: agent.id.clone(),
                }],
            }),
        )
        .unwrap();
        one(updates_for(&sim.effects(), fw.conn))
    };
    assert_eq!(state_of(&reconcile(&mut sim)), TaskState::TaskFailed);

    // A KILL that comes too late is answered with how the task ended.
    sim.call(
        &fw,
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: "t1".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    let effects = sim.effects();
    assert_eq!(
        state_of(&one(updates_for(&effects, fw.conn))),
        TaskState::TaskFailed
    );
    assert!(agent_messages(&effects, agent.conn).is_empty());

    // Its id cannot be reused while the update is unacknowledged.
    let offers = offers_for(&sim.tick_after(6.0), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:128")],
        refuse(0.0),
    )
    .unwrap();
    let refused = one(updates_for(&sim.effects(), fw.conn));
    assert_eq!(
        (state_of(&refused), reason_of(&refused)),
        (
            TaskState::TaskError,
            TaskStatusReason::ReasonDuplicateTaskId
        )
    );

    // An acknowledgement of another uuid does not forget it; the terminal one does.
    let ack = |uuid: &str| {
        Call::Acknowledge(v1::AcknowledgeRequest {
            header: None,
            agent_id: agent.id.clone(),
            task_id: "t1".into(),
            uuid: uuid.into(),
        })
    };
    sim.call(&fw, ack("u1")).unwrap();
    assert_eq!(state_of(&reconcile(&mut sim)), TaskState::TaskFailed);
    sim.call(&fw, ack("u2")).unwrap();
    assert_eq!(state_of(&reconcile(&mut sim)), TaskState::TaskLost);
    assert_eq!(sim.m.metrics().tasks_failed_total, 1, "ended once");
}

#[test]
fn ended_unacknowledged_tasks_are_bounded_per_framework() {
    use super::super::state::{ENDED_TASKS, EndedTasks};
    let mut ended = EndedTasks::default();
    let status = |i: usize| v1::TaskStatus {
        task_id: format!("t{i}"),
        state: TaskState::TaskFinished as i32,
        uuid: format!("u{i}"),
        ..Default::default()
    };
    for i in 0..ENDED_TASKS + 50 {
        ended.insert(super::super::allocator::AgentKey(1), "a".into(), status(i));
    }
    assert_eq!(ended.len(), ENDED_TASKS);
    assert!(
        !ended.contains("t0") && !ended.contains("t49"),
        "oldest first"
    );
    assert!(ended.contains("t50"));
    // Acknowledging in any order keeps the bookkeeping proportional.
    for i in (50..ENDED_TASKS + 50).rev() {
        assert!(ended.acknowledge(&format!("t{i}"), &format!("u{i}")));
    }
    assert_eq!((ended.len(), ended.order_len()), (0, 0));
}

#[test]
fn implicit_reconciliation_reports_every_live_task_and_unacknowledged_ended_ones() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![
            task("a", "cpus:1;mem:32"),
            task("b", "cpus:1;mem:32"),
            task("c", "cpus:1;mem:32"),
            task("d", "cpus:1;mem:32"),
        ],
        None,
    )
    .unwrap();
    sim.agent_update(&agent, &fw.id, "a", TaskState::TaskRunning, "u1");
    sim.agent_update(&agent, &fw.id, "c", TaskState::TaskFinished, "u2");
    sim.agent_update(&agent, &fw.id, "d", TaskState::TaskFinished, "u3");
    // c's terminal update is acknowledged: c is forgotten. d's is not: d is reported.
    sim.call(
        &fw,
        Call::Acknowledge(v1::AcknowledgeRequest {
            header: None,
            agent_id: agent.id.clone(),
            task_id: "c".into(),
            uuid: "u2".into(),
        }),
    )
    .unwrap();
    sim.effects();
    sim.call(
        &fw,
        Call::Reconcile(v1::ReconcileRequest {
            header: None,
            tasks: vec![],
        }),
    )
    .unwrap();
    let updates = updates_for(&sim.effects(), fw.conn);
    let got: Vec<(String, TaskState)> = updates
        .iter()
        .map(|u| (u.task_id.clone(), state_of(u)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), TaskState::TaskRunning),
            ("b".into(), TaskState::TaskStaging),
            ("d".into(), TaskState::TaskFinished)
        ]
    );
    assert!(
        updates
            .iter()
            .all(|u| reason_of(u) == TaskStatusReason::ReasonReconciliation && u.uuid.is_empty())
    );
    assert!(
        updates.iter().all(
            |u| u.agent_id == agent.id && u.source == v1::TaskStatusSource::SourceMaster as i32
        )
    );
}

/// A large implicit reconciliation is answered a chunk per input, so that it does not
/// hold the core (and every other caller) long; every task is answered once, and the
/// ended tasks come after the live ones.
#[test]
fn a_large_implicit_reconciliation_is_answered_in_chunks() {
    use crate::core::reconcile::RECONCILE_CHUNK;
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:1000;mem:100000");
    let total = RECONCILE_CHUNK + 100;
    let mut launched = 0;
    while launched < total {
        let offers = offers_for(&sim.tick_after(1.5), fw.conn);
        let n = (total - launched).min(strata_proto::limits::MAX_TASKS_PER_ACCEPT);
        let tasks = (launched..launched + n)
            .map(|i| task(&format!("t{i:05}"), "cpus:0.01;mem:1"))
            .collect();
        sim.accept(&fw, offer_ids(&offers), tasks, refuse(0.0))
            .unwrap();
        launched += n;
    }
    sim.agent_update(&agent, &fw.id, "t00000", TaskState::TaskFinished, "u0");
    sim.effects();
    let reconcile = |sim: &mut Sim| {
        sim.call(
            &fw,
            Call::Reconcile(v1::ReconcileRequest {
                header: None,
                tasks: vec![],
            }),
        )
        .unwrap();
        updates_for(&sim.effects(), fw.conn)
    };
    let first = reconcile(&mut sim);
    assert_eq!(first.len(), RECONCILE_CHUNK);
    assert!(sim.m.has_pending_work());
    // A new implicit RECONCILE starts over.
    assert_eq!(reconcile(&mut sim).len(), RECONCILE_CHUNK);
    sim.handle(Input::Continue).unwrap();
    let rest = updates_for(&sim.effects(), fw.conn);
    assert!(!sim.m.has_pending_work());
    let mut ids: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|u| u.task_id.clone())
        .collect();
    assert_eq!(ids.len(), total);
    assert_eq!(ids.last().map(String::as_str), Some("t00000"), "ended last");
    assert_eq!(state_of(rest.last().unwrap()), TaskState::TaskFinished);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "each task once");
    // Nothing left: a Continue answers nothing.
    sim.handle(Input::Continue).unwrap();
    assert!(updates_for(&sim.effects(), fw.conn).is_empty());
}

#[test]
fn explicit_reconciliation_answers_for_unknown_tasks_as_mesos_does() {
    for partition_aware in [true, false] {
        let mut sim = Sim::new();
        let fw = sim.subscribe_info(framework_info("fw", &[], partition_aware));
        let agent = sim.add_agent("h1", "cpus:4;mem:1024");
        let ask = |task_id: &str, agent_id: &str| v1::ReconcileTask {
            task_id: task_id.into(),
            agent_id: agent_id.into(),
        };
        let req = v1::ReconcileRequest {
            header: None,
            tasks: vec![
                ask("x1", &agent.id),
                ask("x2", "unknown-agent"),
                ask("x3", ""),
            ],
        };
        sim.call(&fw, Call::Reconcile(req)).unwrap();
        let got: Vec<TaskState> = updates_for(&sim.effects(), fw.conn)
            .iter()
            .map(state_of)
            .collect();
        let want = if partition_aware {
            vec![
                TaskState::TaskGone,
                TaskState::TaskUnknown,
                TaskState::TaskUnknown,
            ]
        } else {
            vec![TaskState::TaskLost; 3]
        };
        assert_eq!(got, want);
    }
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let req = v1::ReconcileRequest {
        header: None,
        tasks: vec![v1::ReconcileTask {
            task_id: String::new(),
            agent_id: String::new(),
        }],
    };
    assert!(matches!(
        sim.call(&fw, Call::Reconcile(req)),
        Err(CallError::InvalidArgument(_))
    ));
}

#[test]
fn framework_messages_go_to_the_agent() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let msg = |agent_id: &str| {
        Call::Message(v1::MessageRequest {
            header: None,
            agent_id: agent_id.into(),
            task_id: "t1".into(),
            data: b"ping".to_vec(),
        })
    };
    sim.call(&fw, msg(&agent.id)).unwrap();
    assert_eq!(
        agent_messages(&sim.effects(), agent.conn),
        vec![Message::FrameworkMessage(v1::FrameworkToTask {
            framework_id: fw.id.clone(),
            task_id: "t1".into(),
            data: b"ping".to_vec()
        })]
    );
    assert!(matches!(
        sim.call(&fw, msg("nope")),
        Err(CallError::NotFound(_))
    ));
}

#[test]
fn the_snapshot_keeps_a_bounded_list_of_completed_tasks() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    for i in 0..1100 {
        let offers = offers_for(&sim.tick_after(1.0), fw.conn);
        let id = format!("t{i}");
        sim.accept(
            &fw,
            offer_ids(&offers),
            vec![task(&id, "cpus:1;mem:32")],
            refuse(0.0),
        )
        .unwrap();
        sim.agent_update(
            &agent,
            &fw.id,
            &id,
            TaskState::TaskFinished,
            &format!("u{i}"),
        );
        sim.agent_heartbeat(&agent);
    }
    sim.effects();
    let snap = sim.m.snapshot();
    assert_eq!(snap.tasks.len(), 1000);
    assert_eq!(snap.tasks.last().map(|t| t.id.as_str()), Some("t1099"));
    assert_eq!(sim.m.metrics().tasks_finished_total, 1100);
}
