//! Registration, offers and the DRF allocator seen through the master: fairness,
//! weights, decline filters, suppress and revive, prompt and batch allocation.

use std::collections::HashMap;

use strata_proto::v1::{self, TaskState, event::Event, master_message::Message};

use super::*;

#[test]
fn an_agent_registers_and_a_framework_is_offered_all_of_it() {
    let mut sim = Sim::new();
    let conn = sim.conn();
    let info = Sim::agent_info("h1", "cpus:4;mem:4096;ports:[31000-31009]");
    let register = v1::Register {
        checkpointed: None,
        agent_info: Some(info.clone()),
        tasks: vec![],
        version: "0.1.0".into(),
    };
    sim.handle(Input::AgentRegister {
        conn,
        register,
        peer: Some("10.0.0.1:4000".into()),
    })
    .unwrap();
    let effects = sim.effects();
    let agent_id = sim.m.snapshot().agents[0].id.clone();
    assert_eq!(agent_id.len(), 36, "a uuid is assigned");
    assert_eq!(
        effects,
        vec![
            Effect::Persist(RegistryOp::AdmitAgent {
                id: agent_id.clone(),
                hostname: "h1".into(),
                principal: String::new(),
            }),
            Effect::ToAgent {
                conn,
                message: v1::MasterMessage {
                    message: Some(Message::Registered(v1::Registered {
                        agent_id: agent_id.clone(),
                        master_id: "master-test".into(),
                        heartbeat_interval_seconds: 15.0,
                    }))
                }
            },
        ]
    );

    let fconn = sim.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(framework_info("hello", &[], false)),
        suppressed_roles: vec![],
    };
    sim.handle(Input::Subscribe {
        conn: fconn,
        request,
    })
    .unwrap();
    let effects = sim.effects();
    assert_eq!(effects.len(), 2);
    let Effect::Persist(RegistryOp::AddFramework { id, info: bytes }) = &effects[0] else {
        panic!("AddFramework first: {effects:?}");
    };
    let stored = super::super::codec::decode_framework_info(bytes).unwrap();
    assert_eq!(
        (
            stored.id.as_str(),
            stored.name.as_str(),
            stored.roles.clone()
        ),
        (id.as_str(), "hello", vec!["*".to_string()])
    );
    let Effect::ToFramework {
        conn: c,
        event: v1::Event {
            event: Some(Event::Subscribed(s)),
        },
    } = &effects[1]
    else {
        panic!("SUBSCRIBED second: {effects:?}");
    };
    assert_eq!(*c, fconn);
    assert_eq!(&s.framework_id, id);
    assert_eq!(s.heartbeat_interval_seconds, 15.0);
    assert_eq!(s.master_id, "master-test");
    assert_ne!(s.stream_id, s.framework_id);

    // Offers come at the next Tick, without waiting for the batch interval.
    let effects = sim.tick();
    assert_eq!(effects.len(), 1, "one OFFERS event: {effects:?}");
    let offers = offers_for(&effects, fconn);
    assert_eq!(offers.len(), 1);
    let o = &offers[0];
    assert_eq!(o.framework_id, *id);
    assert_eq!(o.agent_id, agent_id);
    assert_eq!(o.hostname, "h1");
    assert_eq!(o.agent_address, "h1:5051");
    assert_eq!(o.role, "*");
    assert_eq!(o.attributes, info.attributes);
    assert_eq!(
        Resources::try_from_proto(&o.resources).unwrap(),
        res("cpus:4;mem:4096;ports:[31000-31009]")
    );

    let snap = sim.m.snapshot();
    assert_eq!(snap.outstanding_offers, 1);
    assert_eq!(snap.agents[0].offered, snap.agents[0].total);
    assert_eq!(snap.agents[0].status, "ACTIVE");
    assert_eq!(
        snap.frameworks[0].offered,
        res("cpus:4;mem:4096;ports:[31000-31009]")
    );
    let m = sim.m.metrics();
    assert_eq!(
        (
            m.agents_active,
            m.frameworks_connected,
            m.outstanding_offers,
            m.offers_sent_total
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (m.cpus_total, m.cpus_offered, m.mem_total),
        (4.0, 4.0, 4096.0)
    );

    // Offered resources are never offered twice.
    assert!(offers_for(&sim.tick_after(1.0), fconn).is_empty());
}

#[test]
fn offers_of_one_cycle_come_in_one_event_per_framework() {
    let mut sim = Sim::new();
    for i in 0..5 {
        sim.add_agent(&format!("h{i}"), "cpus:2;mem:1024");
    }
    let fw = sim.subscribe("fw");
    let effects = sim.tick();
    assert_eq!(events_for(&effects, fw.conn).len(), 1);
    assert_eq!(offers_for(&effects, fw.conn).len(), 5);
}

#[test]
fn two_frameworks_split_identical_agents_equally() {
    let mut sim = Sim::new();
    let a = sim.subscribe("a");
    let b = sim.subscribe("b");
    for i in 0..10 {
        sim.add_agent(&format!("h{i}"), "cpus:4;mem:1024");
    }
    let effects = sim.tick();
    assert_eq!(offers_for(&effects, a.conn).len(), 5);
    assert_eq!(offers_for(&effects, b.conn).len(), 5);
}

/// Framework `a` holds the whole cluster; `b` arrives. As `a`'s tasks finish, the freed
/// agents go to whichever framework has the lower dominant share, so the two converge.
#[test]
fn drf_converges_to_equal_shares_as_tasks_finish() {
    let mut sim = Sim::new();
    let agents: Vec<SimAgent> = (0..10)
        .map(|i| sim.add_agent(&format!("h{i}"), "cpus:4;mem:1024"))
        .collect();
    let a = sim.subscribe("a");
    let offers = offers_for(&sim.tick(), a.conn);
    assert_eq!(offers.len(), 10);
    let mut a_tasks: Vec<(String, String)> = Vec::new(); // (task, agent)
    for (i, o) in offers.iter().enumerate() {
        let id = format!("a{i}");
        sim.accept(
            &a,
            vec![o.id.clone()],
            vec![task(&id, "cpus:4;mem:1024")],
            None,
        )
        .unwrap();
        a_tasks.push((id, o.agent_id.clone()));
    }
    let b = sim.subscribe("b");
    assert!(
        offers_for(&sim.tick(), b.conn).is_empty(),
        "nothing is free"
    );

    let mut held = HashMap::from([("a", 10), ("b", 0)]);
    for round in 0..8 {
        // One of a's tasks finishes.
        let (tid, agent_id) = a_tasks.remove(0);
        let agent = agents.iter().find(|x| x.id == agent_id).unwrap().clone();
        sim.agent_update(
            &agent,
            &a.id,
            &tid,
            TaskState::TaskFinished,
            &format!("u{round}"),
        );
        *held.get_mut("a").unwrap() -= 1;
        let effects = sim.tick();
        for (name, fw) in [("a", &a), ("b", &b)] {
            for o in offers_for(&effects, fw.conn) {
                let id = format!("{name}-r{round}");
                sim.accept(
                    fw,
                    vec![o.id.clone()],
                    vec![task(&id, "cpus:4;mem:1024")],
                    None,
                )
                .unwrap();
                if name == "a" {
                    a_tasks.push((id, o.agent_id.clone()));
                }
                *held.get_mut(name).unwrap() += 1;
            }
        }
        sim.effects();
    }
    assert_eq!(held["a"] + held["b"], 10);
    assert_eq!(held["a"], 5, "shares converge: {held:?}");
    assert_eq!(held["b"], 5);
}

#[test]
fn a_role_with_weight_two_gets_twice_as_much() {
    let mut cfg = config();
    cfg.weights = HashMap::from([("prod".to_string(), 2.0), ("dev".to_string(), 1.0)]);
    let mut sim = Sim::with(cfg, Registry::default());
    let prod = sim.subscribe_info(framework_info("p", &["prod"], false));
    let dev = sim.subscribe_info(framework_info("d", &["dev"], false));
    for i in 0..30 {
        sim.add_agent(&format!("h{i}"), "cpus:4;mem:1024");
    }
    let effects = sim.tick();
    let p = offers_for(&effects, prod.conn);
    let d = offers_for(&effects, dev.conn);
    assert_eq!((p.len(), d.len()), (20, 10));
    assert!(p.iter().all(|o| o.role == "prod"));
    let roles = sim.m.snapshot().roles;
    let prod_view = roles.iter().find(|r| r.name == "prod").unwrap();
    assert_eq!(prod_view.weight, 2.0);
    assert_eq!(prod_view.allocated.cpus().as_f64(), 80.0);
    assert_eq!(prod_view.frameworks, vec![prod.id.clone()]);
}

#[test]
fn frameworks_within_a_role_share_by_dominant_share() {
    let mut sim = Sim::new();
    let a = sim.subscribe_info(framework_info("a", &["web"], false));
    let b = sim.subscribe_info(framework_info("b", &["web"], false));
    let c = sim.subscribe_info(framework_info("c", &["batch"], false));
    for i in 0..12 {
        sim.add_agent(&format!("h{i}"), "cpus:1;mem:100");
    }
    let effects = sim.tick();
    // Two roles of weight 1 split 6/6; inside "web", a and b split 3/3.
    assert_eq!(offers_for(&effects, c.conn).len(), 6);
    assert_eq!(offers_for(&effects, a.conn).len(), 3);
    assert_eq!(offers_for(&effects, b.conn).len(), 3);
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let mut sim = Sim::new();
    let web = sim.subscribe_info(framework_info("w", &["web"], false));
    let db = sim.subscribe_info(framework_info("d", &["db"], false));
    sim.add_agent("h1", "cpus(db):2;mem(db):512;cpus:1;mem:256");
    let effects = sim.tick();
    let w = offers_for(&effects, web.conn);
    let d = offers_for(&effects, db.conn);
    let reserved: Resources = d
        .iter()
        .map(|o| Resources::try_from_proto(&o.resources).unwrap())
        .fold(Resources::new(), |mut a, r| {
            a.add(&r);
            a
        });
    assert_eq!(reserved.reserved_for("db"), res("cpus(db):2;mem(db):512"));
    for o in w {
        assert!(
            Resources::try_from_proto(&o.resources)
                .unwrap()
                .reserved_for("db")
                .is_empty()
        );
    }
}

#[test]
fn a_declined_agent_is_offered_to_another_framework_until_the_filter_expires() {
    let mut sim = Sim::new();
    let a = sim.subscribe("a");
    let b = sim.subscribe("b");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let effects = sim.tick();
    let first = offers_for(&effects, a.conn);
    assert_eq!(first.len(), 1, "a is first (equal shares, older framework)");
    assert!(offers_for(&effects, b.conn).is_empty());

    sim.decline(&a, offer_ids(&first), refuse(10.0)).unwrap();
    assert_eq!(sim.m.metrics().offers_declined_total, 1);
    // Declined resources wait for the next batch (no prompt re-offer storm).
    assert!(sim.tick().is_empty());
    let effects = sim.tick_after(1.0);
    let to_b = offers_for(&effects, b.conn);
    assert_eq!(to_b.len(), 1, "b gets what a declined");
    assert!(offers_for(&effects, a.conn).is_empty());

    sim.decline(&b, offer_ids(&to_b), refuse(0.0)).unwrap();
    let effects = sim.tick_after(1.0);
    assert!(
        offers_for(&effects, a.conn).is_empty(),
        "a's filter still holds at t=2s"
    );
    let again = offers_for(&effects, b.conn);
    assert_eq!(again.len(), 1);

    sim.decline(&b, offer_ids(&again), refuse(0.0)).unwrap();
    let effects = sim.tick_after(8.0); // t = 10 s
    assert_eq!(
        offers_for(&effects, a.conn).len(),
        1,
        "after refuse_seconds a sees the agent again"
    );
}

#[test]
fn declining_without_filters_uses_five_seconds() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.decline(&fw, offer_ids(&offers), None).unwrap();
    for _ in 0..4 {
        assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
    }
    assert_eq!(
        offers_for(&sim.tick_after(1.0), fw.conn).len(),
        1,
        "back after 5 s"
    );
}

#[test]
fn a_filter_does_not_hide_more_resources_than_were_declined() {
    let mut sim = Sim::new();
    let (agent, fw) = sim.running_task("cpus:4;mem:1024", "cpus:2;mem:512", "t1");
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskRunning, "u1");
    let offers = offers_for(&sim.tick_after(1.0), fw.conn);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:2;mem:512")
    );
    sim.decline(&fw, offer_ids(&offers), refuse(60.0)).unwrap();
    assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
    // The task finishes: now the whole agent is free, which the filter does not cover.
    sim.agent_update(&agent, &fw.id, "t1", TaskState::TaskFinished, "u2");
    let offers = offers_for(&sim.tick(), fw.conn);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::try_from_proto(&offers[0].resources).unwrap(),
        res("cpus:4;mem:1024")
    );
}

#[test]
fn suppress_stops_offers_and_revive_brings_them_back_at_once() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.call(
        &fw,
        Call::Suppress(v1::SuppressRequest {
            header: None,
            roles: vec![],
        }),
    )
    .unwrap();
    sim.decline(&fw, offer_ids(&offers), refuse(3600.0))
        .unwrap();
    assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
    assert_eq!(
        sim.m.snapshot().frameworks[0].suppressed_roles,
        vec!["*".to_string()]
    );

    // REVIVE clears the hour-long filter and unsuppresses; offers come at the next Tick.
    sim.call(
        &fw,
        Call::Revive(v1::ReviveRequest {
            header: None,
            roles: vec![],
        }),
    )
    .unwrap();
    assert_eq!(offers_for(&sim.tick(), fw.conn).len(), 1);
    assert!(sim.m.snapshot().frameworks[0].suppressed_roles.is_empty());

    let err = sim.call(
        &fw,
        Call::Suppress(v1::SuppressRequest {
            header: None,
            roles: vec!["nope".into()],
        }),
    );
    assert!(matches!(err, Err(CallError::InvalidArgument(m)) if m.contains("nope")));
}

#[test]
fn a_framework_can_subscribe_with_roles_suppressed() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:4;mem:1024");
    let conn = sim.conn();
    let request = v1::SubscribeRequest {
        framework_info: Some(framework_info("s", &["a", "b"], false)),
        suppressed_roles: vec!["a".into()],
    };
    sim.handle(Input::Subscribe { conn, request }).unwrap();
    sim.effects();
    let offers = offers_for(&sim.tick(), conn);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].role, "b");
}

#[test]
fn the_batch_runs_every_allocation_interval() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    sim.decline(&fw, offer_ids(&offers), refuse(0.0)).unwrap();
    assert!(
        offers_for(&sim.tick_after(0.5), fw.conn).is_empty(),
        "not before the interval"
    );
    assert_eq!(offers_for(&sim.tick_after(0.5), fw.conn).len(), 1);
    assert!(sim.m.metrics().allocation_runs_total >= 2);
}

#[test]
fn unanswered_offers_are_rescinded_after_the_offer_timeout() {
    let mut cfg = config();
    cfg.offer_timeout = Some(Duration::from_secs(30));
    let mut sim = Sim::with(cfg, Registry::default());
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:4;mem:1024");
    let offers = offers_for(&sim.tick(), fw.conn);
    assert!(rescinds_for(&sim.tick_after(29.0), fw.conn).is_empty());
    let effects = sim.tick_after(1.0);
    assert_eq!(rescinds_for(&effects, fw.conn), offer_ids(&offers));
    assert_eq!(sim.m.metrics().offers_rescinded_total, 1);
    // The resources are offered afresh, in the same Tick's batch.
    let fresh = offers_for(&effects, fw.conn);
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0].id, offers[0].id);
}

#[test]
fn small_leftovers_are_not_offered() {
    let mut sim = Sim::new();
    let fw = sim.subscribe("fw");
    sim.add_agent("h1", "cpus:1;mem:64");
    let offers = offers_for(&sim.tick(), fw.conn);
    // Leave 0.005 cpus and 16 MiB: below the minimum allocatable.
    sim.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t", "cpus:0.995;mem:48")],
        refuse(0.0),
    )
    .unwrap();
    assert!(offers_for(&sim.tick_after(1.0), fw.conn).is_empty());
}
