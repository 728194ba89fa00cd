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
    sim.agent_update(&other, &fw.id, "t1", TaskState::TaskFinished, "x");
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_STAGING"));
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
    let (again, effects) = sim.reregister(&agent, vec![running]);
    let msgs = agent_messages(&effects, again.conn);
    assert!(
        msgs.contains(&Message::KillTask(v1::KillTask {
            framework_id: fw.id.clone(),
            task_id: "t1".into(),
            kill_policy: None
        })),
        "{msgs:?}"
    );
}

#[test]
fn implicit_reconciliation_reports_every_live_task() {
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
        ],
        None,
    )
    .unwrap();
    sim.agent_update(&agent, &fw.id, "a", TaskState::TaskRunning, "u1");
    sim.agent_update(&agent, &fw.id, "c", TaskState::TaskFinished, "u2");
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
            ("b".into(), TaskState::TaskStaging)
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
