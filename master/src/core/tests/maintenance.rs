//! Operator calls: deactivating, draining and reactivating agents, role weights, and
//! both surviving a master restart through the registry.

use strata_proto::v1::{self, TaskState, master_message::Message};

use super::*;

fn operator(sim: &mut Sim, call: OperatorCall) -> Result<(), CallError> {
    sim.handle(Input::Operator(call))
}

fn kills(effects: &[Effect], conn: ConnId) -> Vec<v1::KillTask> {
    agent_messages(effects, conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::KillTask(k) => Some(k),
            _ => None,
        })
        .collect()
}

#[test]
fn a_deactivated_agent_is_not_offered_keeps_its_tasks_and_comes_back_when_reactivated() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let leftover = offers_for(&sim.tick_after(1.0), fw.conn);
    assert_eq!(leftover.len(), 1);

    operator(
        &mut sim,
        OperatorCall::DeactivateAgent {
            agent_id: agent.id.clone(),
        },
    )
    .unwrap();
    let effects = sim.effects();
    assert_eq!(rescinds_for(&effects, fw.conn), offer_ids(&leftover));
    assert!(
        kills(&effects, agent.conn).is_empty(),
        "its tasks keep running"
    );
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::SetMaintenance {
            id: agent.id.clone(),
            maintenance: Some(Maintenance::Deactivated),
        }]
    );
    assert_eq!(sim.agent_view(&agent.id).maintenance, Some("DEACTIVATED"));
    assert_eq!(sim.agent_view(&agent.id).status, "ACTIVE");
    assert!(offers_for(&sim.tick_after(2.0), fw.conn).is_empty());
    assert_eq!(sim.task_state("t1").as_deref(), Some("TASK_STAGING"));

    operator(
        &mut sim,
        OperatorCall::ReactivateAgent {
            agent_id: agent.id.clone(),
        },
    )
    .unwrap();
    let effects = sim.effects();
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::SetMaintenance {
            id: agent.id.clone(),
            maintenance: None,
        }]
    );
    assert_eq!(sim.agent_view(&agent.id).maintenance, None);
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:3;mem:896")
    );
}

#[test]
fn draining_kills_every_task_with_the_grace_capped_and_ends_drained() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    sim.effects();

    operator(
        &mut sim,
        OperatorCall::DrainAgent {
            agent_id: agent.id.clone(),
            max_grace_period: Some(Duration::from_secs(2)),
        },
    )
    .unwrap();
    let effects = sim.effects();
    let kill = one(kills(&effects, agent.conn));
    assert_eq!(kill.task_id, "t1");
    assert_eq!(kill.framework_id, fw.id);
    assert_eq!(
        kill.kill_policy.and_then(|p| p.grace_period_seconds),
        Some(2.0)
    );
    assert_eq!(sim.agent_view(&agent.id).maintenance, Some("DRAINING"));
    assert!(offers_for(&sim.tick_after(2.0), fw.conn).is_empty());

    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskKilled, "u2");
    let effects = sim.effects();
    assert_eq!(
        state_of(&one(updates_for(&effects, fw.conn))),
        TaskState::TaskKilled
    );
    assert_eq!(sim.agent_view(&agent.id).maintenance, Some("DRAINED"));
    assert!(
        offers_for(&sim.tick_after(2.0), fw.conn).is_empty(),
        "a drained agent stays out of the pool until reactivated"
    );
}

#[test]
fn a_drain_of_an_agent_that_is_away_kills_its_tasks_when_it_re_registers() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.handle(Input::AgentDisconnected { conn: agent.conn })
        .unwrap();
    sim.effects();
    operator(
        &mut sim,
        OperatorCall::DrainAgent {
            agent_id: agent.id.clone(),
            max_grace_period: None,
        },
    )
    .unwrap();
    assert!(kills(&sim.effects(), agent.conn).is_empty(), "no stream");

    let (back, effects) = sim.reregister(&agent, vec![running(&fw, "t1", "cpus:1;mem:128")]);
    assert_eq!(one(kills(&effects, back.conn)).task_id, "t1");
    assert_eq!(sim.agent_view(&agent.id).maintenance, Some("DRAINING"));
    assert!(offers_for(&sim.tick_after(2.0), fw.conn).is_empty());
}

#[test]
fn weights_and_maintenance_survive_a_master_restart() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let other = sim.add_agent("h2", "cpus:4;mem:1024");
    sim.effects();
    operator(
        &mut sim,
        OperatorCall::UpdateWeights(vec![("web".into(), 3.0), ("batch".into(), 0.5)]),
    )
    .unwrap();
    operator(
        &mut sim,
        OperatorCall::DrainAgent {
            agent_id: agent.id.clone(),
            max_grace_period: Some(Duration::from_secs(1)),
        },
    )
    .unwrap();
    operator(
        &mut sim,
        OperatorCall::DeactivateAgent {
            agent_id: other.id.clone(),
        },
    )
    .unwrap();
    // Every registry op the run persisted, from the first registration on.
    let mut registry = Registry::default();
    for id in [&agent.id, &other.id] {
        registry.apply(&RegistryOp::AdmitAgent {
            id: id.clone(),
            hostname: "h".into(),
            principal: String::new(),
        });
    }
    let registry = fold(registry, &sim.effects());
    assert_eq!(registry.weights.get("web"), Some(&3.0));
    assert_eq!(registry.maintenance.len(), 2);

    // A new master from that registry.
    let mut sim = Sim::with(config(), registry);
    let roles = sim.m.snapshot().roles;
    let weight = |name: &str| roles.iter().find(|r| r.name == name).map(|r| r.weight);
    assert_eq!(weight("web"), Some(3.0));
    assert_eq!(weight("batch"), Some(0.5));
    let fw2 = sim.subscribe("watcher");
    let (back, effects) = sim.reregister(&agent, vec![running(&fw, "t1", "cpus:1;mem:128")]);
    let kill = one(kills(&effects, back.conn));
    assert_eq!(
        kill.kill_policy.and_then(|p| p.grace_period_seconds),
        Some(1.0)
    );
    sim.reregister(&other, vec![]);
    assert_eq!(sim.agent_view(&agent.id).maintenance, Some("DRAINING"));
    assert_eq!(sim.agent_view(&other.id).maintenance, Some("DEACTIVATED"));
    assert!(
        offers_for(&sim.tick_after(2.0), fw2.conn).is_empty(),
        "neither agent is offered after the restart"
    );
    operator(
        &mut sim,
        OperatorCall::ReactivateAgent {
            agent_id: other.id.clone(),
        },
    )
    .unwrap();
    assert_eq!(one(offers_for(&sim.tick(), fw2.conn)).agent_id, other.id);
}

#[test]
fn bad_operator_calls_are_refused_and_change_nothing() {
    let mut sim = Sim::new();
    let (agent, _fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    let before = sim.state_json();
    let cases: Vec<(OperatorCall, ErrorCode, &str)> = vec![
        (
            OperatorCall::DeactivateAgent {
                agent_id: "nope".into(),
            },
            ErrorCode::NotFound,
            "unknown",
        ),
        (
            OperatorCall::DrainAgent {
                agent_id: String::new(),
                max_grace_period: None,
            },
            ErrorCode::InvalidArgument,
            "no agent_id",
        ),
        (
            OperatorCall::ReactivateAgent {
                agent_id: agent.id.clone(),
            },
            ErrorCode::FailedPrecondition,
            "nothing to reactivate",
        ),
        (
            OperatorCall::UpdateWeights(vec![]),
            ErrorCode::InvalidArgument,
            "no weights",
        ),
        (
            OperatorCall::UpdateWeights(vec![("web".into(), 2.0), ("bad".into(), -1.0)]),
            ErrorCode::InvalidArgument,
            "positive finite",
        ),
        (
            OperatorCall::UpdateWeights(vec![("web".into(), f64::NAN)]),
            ErrorCode::InvalidArgument,
            "positive finite",
        ),
        (
            OperatorCall::UpdateWeights(vec![("a b".into(), 1.0)]),
            ErrorCode::InvalidArgument,
            "whitespace",
        ),
        (
            OperatorCall::UpdateWeights(vec![("web".into(), 1.0), ("web".into(), 2.0)]),
            ErrorCode::InvalidArgument,
            "twice",
        ),
    ];
    for (call, code, wanted) in cases {
        let err = operator(&mut sim, call.clone()).unwrap_err();
        assert_eq!(err.code(), code, "{call:?}: {err}");
        assert!(err.to_string().contains(wanted), "{call:?}: {err}");
        assert!(sim.effects().is_empty(), "{call:?} changed something");
    }
    assert_eq!(sim.state_json(), before);
}

#[test]
fn a_maintenance_grace_never_lengthens_the_tasks_own() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let fw = sim.subscribe("fw");
    let offers = offers_for(&sim.tick(), fw.conn);
    let quick = v1::TaskInfo {
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: Some(0.5),
        }),
        ..task("quick", "cpus:1;mem:64")
    };
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![quick, task("plain", "cpus:1;mem:64")],
        None,
    )
    .unwrap();
    sim.effects();
    operator(
        &mut sim,
        OperatorCall::DrainAgent {
            agent_id: agent.id.clone(),
            max_grace_period: Some(Duration::from_secs(10)),
        },
    )
    .unwrap();
    let mut graces: Vec<(String, Option<f64>)> = kills(&sim.effects(), agent.conn)
        .into_iter()
        .map(|k| {
            (
                k.task_id,
                k.kill_policy.and_then(|p| p.grace_period_seconds),
            )
        })
        .collect();
    graces.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        graces,
        vec![("plain".into(), Some(10.0)), ("quick".into(), Some(0.5))]
    );
}

#[test]
fn an_agent_marked_gone_ends_its_tasks_and_never_comes_back() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:1;mem:128", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    let mut registry = Registry::default();
    registry.apply(&RegistryOp::AdmitAgent {
        id: agent.id.clone(),
        hostname: "h1".into(),
        principal: String::new(),
    });
    let registry = fold(registry, &sim.effects());

    operator(
        &mut sim,
        OperatorCall::MarkAgentGone {
            agent_id: agent.id.clone(),
        },
    )
    .unwrap();
    let effects = sim.effects();
    assert_eq!(
        persisted(&effects),
        vec![RegistryOp::MarkAgentGone {
            id: agent.id.clone()
        }]
    );
    assert!(effects.contains(&Effect::CloseAgent { conn: agent.conn }));
    // The framework is not partition aware: TASK_GONE_BY_OPERATOR reaches it as LOST.
    let update = one(updates_for(&effects, fw.conn));
    assert_eq!(state_of(&update), TaskState::TaskLost);
    assert_eq!(reason_of(&update), v1::TaskStatusReason::ReasonAgentRemoved);
    assert!(update.message.contains("marked gone"), "{update:?}");
    assert_eq!(sim.agent_view(&agent.id).status, "GONE");
    assert!(sim.agent_view(&agent.id).used.is_empty());
    assert!(offers_for(&sim.tick_after(2.0), fw.conn).is_empty());
    sim.m.check_invariants().unwrap();
    // Nothing more can be done to it, and it may not come back.
    let err = operator(
        &mut sim,
        OperatorCall::ReactivateAgent {
            agent_id: agent.id.clone(),
        },
    )
    .unwrap_err();
    assert!(matches!(err, CallError::FailedPrecondition(_)), "{err:?}");
    let refused = |sim: &mut Sim| {
        let (back, effects) = sim.reregister(&agent, vec![running(&fw, "t1", "cpus:1;mem:128")]);
        let refused = agent_messages(&effects, back.conn)
            .iter()
            .any(|m| matches!(m, Message::Error(e) if e.message.contains("marked gone")));
        refused && effects.contains(&Effect::CloseAgent { conn: back.conn })
    };
    assert!(refused(&mut sim));
    assert_eq!(sim.agent_view(&agent.id).status, "GONE");

    // A new master from the registry: still gone, still refused, and reconciling a
    // task on it says TASK_GONE_BY_OPERATOR to a partition-aware framework.
    let registry = fold(registry, &effects);
    assert!(registry.gone.contains(&agent.id));
    assert!(!registry.agents.contains_key(&agent.id));
    let mut sim = Sim::with(config(), registry);
    assert_eq!(sim.agent_view(&agent.id).status, "GONE");
    assert!(refused(&mut sim));
    let pa = sim.subscribe_info(framework_info("pa", &[], true));
    sim.effects();
    let reconcile = v1::ReconcileRequest {
        header: None,
        tasks: vec![v1::ReconcileTask {
            task_id: "t9".into(),
            agent_id: agent.id.clone(),
        }],
    };
    sim.call(&pa, Call::Reconcile(reconcile)).unwrap();
    let answer = one(updates_for(&sim.effects(), pa.conn));
    assert_eq!(state_of(&answer), TaskState::TaskGoneByOperator);
    sim.m.check_invariants().unwrap();
}
