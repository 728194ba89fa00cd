//! Zero-downtime kills (issue 15): a service instance's kill waits until every proxy
//! has taken it out of rotation (bounded); nothing waits when no proxy follows.

use super::*;
use strata_proto::discovery::SERVICE_PORT_LABEL;
use strata_proto::v1::TaskState;

fn service_task(id: &str) -> v1::TaskInfo {
    let mut t = task(id, "cpus:1;mem:32");
    t.discovery = Some(v1::DiscoveryInfo {
        name: "web".into(),
        ports: Some(v1::Ports {
            ports: vec![v1::Port {
                number: 31000,
                name: "http".into(),
                labels: [(SERVICE_PORT_LABEL.to_string(), "10000".to_string())].into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    });
    t
}

fn kills(effects: &[Effect], agent: &SimAgent) -> Vec<String> {
    agent_messages(effects, agent.conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::KillTask(k) => Some(k.task_id),
            _ => None,
        })
        .collect()
}

/// A framework with TASK_KILLING_STATE, an agent, and `tasks` running on it.
fn running(sim: &mut Sim, tasks: Vec<v1::TaskInfo>) -> (SimFramework, SimAgent) {
    let mut info = framework_info("fw", &[], true);
    info.capabilities
        .push(v1::FrameworkCapability::TaskKillingState as i32);
    let fw = sim.subscribe_info(info);
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
    sim.accept(&fw, offer_ids(&offers), tasks, None).unwrap();
    for (i, id) in ids.iter().enumerate() {
        sim.agent_update(&agent, &fw.id, id, TaskState::TaskRunning, &format!("u{i}"));
    }
    sim.effects();
    (fw, agent)
}

fn kill(sim: &mut Sim, fw: &SimFramework, task_id: &str) {
    sim.call(
        fw,
        Call::Kill(v1::KillRequest {
            header: None,
            task_id: task_id.into(),
            agent_id: String::new(),
            kill_policy: None,
        }),
    )
    .unwrap();
}

#[test]
fn a_service_instance_is_killed_once_every_proxy_has_dropped_it() {
    let mut sim = Sim::new();
    sim.m.observe(true);
    let (fw, agent) = running(
        &mut sim,
        vec![service_task("web.1"), task("batch.1", "cpus:1;mem:32")],
    );
    sim.m.take_observed();

    // The service instance leaves the rotation first: KILLING, no KillTask yet.
    kill(&mut sim, &fw, "web.1");
    let effects = sim.effects();
    assert!(kills(&effects, &agent).is_empty(), "{effects:?}");
    assert_eq!(sim.task_state("web.1").as_deref(), Some("TASK_KILLING"));
    let updates = updates_for(&effects, fw.conn);
    assert_eq!(
        state_of(&updates[0]),
        TaskState::TaskKilling,
        "the framework hears of it"
    );
    let seq = sim.m.observed_total();
    assert!(
        matches!(sim.m.take_observed().last(), Some(Observed::TaskUpdated(t)) if t.state == "TASK_KILLING")
    );
    // A health result meanwhile does not put it back in rotation; a retried KILL waits too.
    sim.agent_update(&agent, &fw.id, "web.1", TaskState::TaskRunning, "u9");
    assert_eq!(sim.task_state("web.1").as_deref(), Some("TASK_KILLING"));
    kill(&mut sim, &fw, "web.1");
    assert!(kills(&sim.effects(), &agent).is_empty());
    // The proxies have an older event only: still waiting.
    sim.handle(Input::ServicesSynced { seq: seq - 1 }).unwrap();
    assert!(kills(&sim.effects(), &agent).is_empty());
    sim.handle(Input::ServicesSynced { seq }).unwrap();
    assert_eq!(kills(&sim.effects(), &agent), ["web.1"]);

    // A task that serves no service port is killed at once.
    kill(&mut sim, &fw, "batch.1");
    assert_eq!(kills(&sim.effects(), &agent), ["batch.1"]);
}

#[test]
fn a_proxy_that_never_answers_holds_a_kill_at_most_the_drain_wait() {
    let mut sim = Sim::new();
    sim.m.observe(true);
    let (fw, agent) = running(&mut sim, vec![service_task("web.1")]);
    kill(&mut sim, &fw, "web.1");
    assert!(kills(&sim.effects(), &agent).is_empty());
    sim.tick_after(1.0);
    assert!(kills(&sim.effects(), &agent).is_empty());
    let effects = sim.tick_after(1.5);
    assert_eq!(kills(&effects, &agent), ["web.1"]);
}

#[test]
fn nothing_waits_when_no_proxy_follows_the_events() {
    let mut sim = Sim::new();
    let (fw, agent) = running(&mut sim, vec![service_task("web.1")]);
    kill(&mut sim, &fw, "web.1");
    assert_eq!(kills(&sim.effects(), &agent), ["web.1"]);
}

/// While only service proxies watch, only what they follow is recorded: agents and
/// tasks with discovery info, not frameworks or other tasks.
#[test]
fn proxies_alone_cost_only_the_changes_they_follow() {
    let mut sim = Sim::new();
    sim.m.observe(false);
    running(
        &mut sim,
        vec![service_task("web.1"), task("batch.1", "cpus:1;mem:32")],
    );
    let observed = sim.m.take_observed();
    assert!(!observed.is_empty());
    for o in &observed {
        match o {
            Observed::TaskAdded(t) | Observed::TaskUpdated(t) => assert_eq!(t.id, "web.1"),
            Observed::AgentAdded(_) | Observed::AgentUpdated(_) => {}
            other => panic!("recorded for proxies: {other:?}"),
        }
    }
}
