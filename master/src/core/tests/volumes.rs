//! Dynamic reservations and persistent volumes (issue 17): RESERVE / UNRESERVE /
//! CREATE / DESTROY in an ACCEPT and from an operator, what is offered to whom after,
//! what the registry and the agent are told, and what survives restarts.

use super::*;
use strata_security::{Acls, Authorizer};

/// A framework in role `role` with principal `principal`.
fn in_role(s: &mut Sim, principal: &str, role: &str) -> SimFramework {
    let mut info = framework_info(principal, &[role], true);
    info.principal = principal.into();
    s.subscribe_info(info)
}

fn op(kind: &str, r: Resources) -> v1::Operation {
    use v1::operation::Operation as O;
    let resources = r.to_proto();
    v1::Operation {
        operation: Some(match kind {
            "reserve" => O::Reserve(v1::Reserve { resources }),
            "unreserve" => O::Unreserve(v1::Unreserve { resources }),
            "create" => O::Create(v1::Create { volumes: resources }),
            "destroy" => O::Destroy(v1::Destroy { volumes: resources }),
            _ => unreachable!(),
        }),
    }
}

/// A volume of `size` MiB reserved for `role`.
fn volume(role: &str, id: &str, path: &str, size: f64) -> Resources {
    Resources::try_from_proto(&[v1::Resource {
        name: "disk".into(),
        scalar: size,
        role: role.into(),
        disk: Some(v1::DiskInfo {
            persistence: Some(v1::disk_info::Persistence {
                id: id.into(),
                principal: String::new(),
            }),
            container_path: path.into(),
            ..Default::default()
        }),
        ..Default::default()
    }])
    .unwrap()
}

/// The next offers `fw` gets (after the allocation interval).
fn next_offers(s: &mut Sim, fw: &SimFramework) -> Vec<v1::Offer> {
    let effects = s.tick_after(1.5);
    offers_for(&effects, fw.conn)
}

fn offered(offers: &[v1::Offer]) -> Resources {
    let mut all = Resources::new();
    for o in offers {
        all.add(&Resources::try_from_proto(&o.resources).unwrap());
    }
    all
}

fn accept_ops(
    s: &mut Sim,
    fw: &SimFramework,
    offers: &[v1::Offer],
    operations: Vec<v1::Operation>,
) -> Result<(), CallError> {
    let req = v1::AcceptRequest {
        header: Some(fw.header()),
        offer_ids: offer_ids(offers),
        operations,
        filters: refuse(0.0),
    };
    s.call(fw, Call::Accept(req))
}

/// One agent (`cpus:4;mem:1024;disk:2000`) where framework `dbfw` (role db) reserved
/// `reserved` and created volume `id` of `size` MiB at `data`; the effects consumed.
fn with_a_volume(reserved: &str, id: &str, size: f64) -> (Sim, SimAgent, SimFramework) {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("reserve", res(reserved)),
            op("create", volume("db", id, "data", size)),
        ],
    )
    .unwrap();
    (s, agent, db)
}

/// The CheckpointResources messages sent to `conn`.
fn checkpoints(effects: &[Effect], conn: ConnId) -> Vec<v1::CheckpointResources> {
    agent_messages(effects, conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::CheckpointResources(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn ledger_of(c: &v1::CheckpointResources) -> (Resources, Resources) {
    (
        Resources::try_from_proto(&c.reserved).unwrap(),
        Resources::try_from_proto(&c.volumes).unwrap(),
    )
}

#[test]
fn a_reservation_is_offered_only_to_its_role_and_reaches_the_registry_and_the_agent() {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    accept_ops(
        &mut s,
        &db,
        &offers,
        vec![op("reserve", res("cpus(db):1;disk(db):1000"))],
    )
    .unwrap();
    let effects = s.effects();
    let ops = persisted(&effects);
    assert!(
        ops.iter()
            .any(|o| matches!(o, RegistryOp::CheckpointResources { id, .. } if *id == agent.id)),
        "{ops:?}"
    );
    let (reserved, volumes) = ledger_of(&one(checkpoints(&effects, agent.conn)));
    assert_eq!(reserved, res("cpus(db):1;disk(db):1000"));
    assert!(volumes.is_empty());
    let view = s.agent_view(&agent.id);
    assert_eq!(
        view.total,
        res("cpus:3;cpus(db):1;mem:1024;disk:1000;disk(db):1000")
    );
    assert_eq!(view.reserved, res("cpus(db):1;disk(db):1000"));
    let m = s.m.metrics();
    assert_eq!(
        (m.reserved_cpus, m.reserved_disk, m.volumes),
        (1.0, 1000.0, 0)
    );

    // The reservation comes back to db; a framework of another role never sees it.
    let offers = next_offers(&mut s, &db);
    assert_eq!(
        offered(&offers).reserved_for("db"),
        res("cpus(db):1;disk(db):1000")
    );
    s.decline(&db, offer_ids(&offers), refuse(3600.0)).unwrap();
    let web = in_role(&mut s, "webfw", "web");
    let offers = next_offers(&mut s, &web);
    let got = offered(&offers);
    assert!(got.reserved_for("db").is_empty(), "{got}");
    assert_eq!(got, res("cpus:3;mem:1024;disk:1000"));
}

#[test]
fn a_volume_is_created_used_by_a_task_offered_again_then_destroyed_and_unreserved() {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    let vol = volume("db", "pg-0", "data", 512.0);
    let mut t = task("pg", "cpus:1;mem:128;disk(db):10");
    let mut task_res = Resources::try_from_proto(&t.resources).unwrap();
    task_res.add(&vol);
    t.resources = task_res.to_proto();
    // Reserve, create and launch on it in one ACCEPT, as Marathon does.
    accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("reserve", res("cpus(db):1;disk(db):1000")),
            op("create", vol.clone()),
            launch(vec![t]),
        ],
    )
    .unwrap();
    let effects = s.effects();
    assert!(updates_for(&effects, db.conn).is_empty(), "launched");
    let run = agent_messages(&effects, agent.conn)
        .into_iter()
        .find_map(|m| match m {
            Message::RunTask(r) => r.task,
            _ => None,
        })
        .expect("RunTask");
    let sent = Resources::try_from_proto(&run.resources).unwrap();
    let sent_vol = one(sent.volumes().cloned().collect());
    let p = sent_vol.persistence().unwrap();
    assert_eq!((p.id.as_str(), p.principal.as_str()), ("pg-0", "dbfw"));
    assert_eq!(p.container_path, "data");
    let last = checkpoints(&effects, agent.conn).pop().unwrap();
    let (_, volumes) = ledger_of(&last);
    assert_eq!(volumes.volumes().count(), 1);

    // /state shows the volume, its creator and the task using it.
    let view = s.agent_view(&agent.id);
    let v = one(view.volumes.clone());
    assert_eq!(
        (v.role.as_str(), v.id.as_str(), v.size),
        ("db", "pg-0", 512.0)
    );
    assert_eq!(v.principal, "dbfw");
    assert_eq!(v.task_id.as_deref(), Some("pg"));
    assert_eq!(view.total.disk().as_f64(), 2000.0);
    let m = s.m.metrics();
    assert_eq!((m.volumes, m.volumes_disk), (1, 512.0));

    // While it runs, the volume is not offered; a DESTROY by the operator is refused
    // naming the task.
    let offers = next_offers(&mut s, &db);
    assert_eq!(offered(&offers).volumes().count(), 0);
    s.decline(&db, offer_ids(&offers), refuse(0.0)).unwrap();
    let err = s
        .handle(Input::Operator(OperatorCall::ResourceOperation {
            agent_id: agent.id.clone(),
            kind: super::super::volumes::OpKind::Destroy,
            resources: vol.to_proto(),
            principal: "ops".into(),
        }))
        .unwrap_err();
    assert!(err.to_string().contains("in use by task 'pg'"), "{err}");

    // The task ends: the volume is offered again to db, whole.
    s.agent_update(&agent, &db.id, "pg", v1::TaskState::TaskFinished, "u1");
    s.effects();
    let offers = next_offers(&mut s, &db);
    let got = offered(&offers);
    let again = one(got.volumes().cloned().collect());
    assert_eq!(again.persistence().unwrap().id, "pg-0");
    assert_eq!(Resources::of_entry(again.clone()).disk().as_f64(), 512.0);

    // DESTROY: the disk goes back to the reservation; then UNRESERVE releases it all.
    accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("destroy", Resources::of_entry(again)),
            op("unreserve", res("cpus(db):1;disk(db):1000")),
        ],
    )
    .unwrap();
    let effects = s.effects();
    let last = checkpoints(&effects, agent.conn).pop().unwrap();
    assert_eq!(ledger_of(&last), (Resources::new(), Resources::new()));
    let view = s.agent_view(&agent.id);
    assert!(view.volumes.is_empty());
    assert_eq!(view.total, res("cpus:4;mem:1024;disk:2000"));
    let reg = fold(Registry::default(), &effects);
    assert!(
        reg.agent_resources.is_empty(),
        "an empty ledger leaves no entry"
    );
}

#[test]
fn bad_operations_are_refused_with_the_reason_and_change_nothing() {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus(db):1;cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    let before = s.agent_view(&agent.id).total;
    let cases: Vec<(v1::Operation, &str)> = vec![
        (
            op("reserve", res("cpus(db):9")),
            "is not among the unreserved resources of the offers",
        ),
        (
            op("reserve", res("cpus(web):1")),
            "role 'web' is not the role of the offers",
        ),
        (op("reserve", res("cpus:1")), "names no role"),
        (
            op("unreserve", res("cpus(db):1")),
            "a static reservation from the agent's --resources cannot be released",
        ),
        (
            op("create", volume("db", "v", "data", 512.0)),
            "the volumes need disk(db):512 of disk reserved for role 'db'",
        ),
        (
            op("create", res("disk(db):10")),
            "is not a persistent volume",
        ),
        (
            op("destroy", volume("db", "nope", "data", 1.0)),
            "is not in the offers",
        ),
        (
            op("reserve", res("cpus(db):1;mem(other):1")),
            "one operation acts in one role",
        ),
    ];
    for (operation, want) in cases {
        let offers = if s.m.snapshot().outstanding_offers == 0 {
            next_offers(&mut s, &db)
        } else {
            offers.clone()
        };
        let err = accept_ops(&mut s, &db, &offers, vec![operation]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(want), "{want:?} in {text}");
        assert!(text.contains("operation 1"), "{text}");
        let effects = s.effects();
        assert!(checkpoints(&effects, agent.conn).is_empty());
        assert!(persisted(&effects).is_empty(), "{:?}", persisted(&effects));
        assert_eq!(s.agent_view(&agent.id).total, before);
    }
    // A wire volume with `..` in its path never gets that far: refused as resources.
    let mut bad = volume("db", "v", "data", 1.0).to_proto();
    bad[0].disk.as_mut().unwrap().container_path = "../../etc".into();
    let offers = next_offers(&mut s, &db);
    let req = v1::Operation {
        operation: Some(v1::operation::Operation::Create(v1::Create {
            volumes: bad,
        })),
    };
    let err = accept_ops(&mut s, &db, &offers, vec![req]).unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
}

#[test]
fn a_second_volume_with_the_same_id_is_refused() {
    let mut s = Sim::new();
    s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    let err = accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("reserve", res("disk(db):1000")),
            op("create", volume("db", "v1", "data", 100.0)),
            op("create", volume("db", "v1", "other", 100.0)),
        ],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "operation 3 (CREATE): a volume 'v1' of role 'db' exists on this agent already"
        ),
        "{err}"
    );
    // The first two were applied.
    s.effects();
    let offers = next_offers(&mut s, &db);
    assert_eq!(offered(&offers).volumes().count(), 1);
}

#[test]
fn acls_decide_who_reserves_and_creates_for_a_role() {
    let acls = Acls::parse(
        r#"{
          "permissive": true,
          "reserve_resources": [{"principals": {"values": ["dbfw"]}, "roles": {"values": ["db"]}},
                                {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}}],
          "create_volumes": [{"principals": {"type": "ANY"}, "roles": {"type": "NONE"}}]
        }"#,
    )
    .unwrap();
    let mut cfg = config();
    cfg.authorizer = Authorizer::new(acls);
    let mut s = Sim::with(cfg.clone(), Registry::default());
    s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let eve = in_role(&mut s, "eve", "db");
    let offers = next_offers(&mut s, &eve);
    let err = accept_ops(
        &mut s,
        &eve,
        &offers,
        vec![op("reserve", res("cpus(db):1"))],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("eve is not authorized to reserve resources for role 'db'"),
        "{err}"
    );
    assert!(persisted(&s.effects()).is_empty());

    let mut s = Sim::with(cfg, Registry::default());
    s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    let err = accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("reserve", res("disk(db):100")),
            op("create", volume("db", "v", "data", 100.0)),
        ],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("operation 2 (CREATE)"), "{text}");
    assert!(
        text.contains("dbfw is not authorized to create volumes for role 'db'"),
        "{text}"
    );
}

#[test]
fn reservations_and_volumes_survive_a_master_restart_and_the_agent_gets_them_back() {
    let (mut s, agent, _) = with_a_volume("cpus(db):1;disk(db):1000", "pg-0", 512.0);
    let mut registry = Registry::default();
    registry.apply(&RegistryOp::AdmitAgent {
        id: agent.id.clone(),
        hostname: "a1".into(),
        principal: String::new(),
    });
    let registry = fold(registry, &s.effects());
    let before = s.agent_view(&agent.id);

    // A new master from the registry; the agent re-registers with its flags only.
    let mut s = Sim::with(config(), registry);
    let (agent, effects) = s.reregister(&agent, vec![]);
    let (reserved, volumes) = ledger_of(&one(checkpoints(&effects, agent.conn)));
    assert_eq!(reserved, res("cpus(db):1;disk(db):1000"));
    assert_eq!(volumes.volumes().count(), 1);
    let after = s.agent_view(&agent.id);
    assert_eq!(after.total, before.total);
    assert_eq!(after.reserved, before.reserved);
    assert_eq!(after.volumes.len(), 1);
    // Still offered to db only, the volume whole.
    let db = in_role(&mut s, "dbfw", "db");
    let got = offered(&next_offers(&mut s, &db));
    assert_eq!(got.volumes().count(), 1);
    assert_eq!(got.reserved_for("db").disk().as_f64(), 1000.0);
}

#[test]
fn a_master_that_does_not_know_the_agent_adopts_its_ledger_and_a_shrunk_agent_is_refused() {
    let mut s = Sim::new();
    let mut ledger = v1::CheckpointResources {
        reserved: res("disk(db):1000").to_proto(),
        volumes: volume("db", "pg-0", "data", 512.0).to_proto(),
    };
    ledger.volumes[0]
        .disk
        .as_mut()
        .unwrap()
        .persistence
        .as_mut()
        .unwrap()
        .principal = "dbfw".into();
    let conn = s.conn();
    let mut info = Sim::agent_info("a1", "cpus:4;mem:1024;disk:2000");
    info.id = "agent-1".into();
    s.handle(Input::AgentRegister {
        conn,
        register: v1::Register {
            agent_info: Some(info.clone()),
            tasks: vec![],
            version: "test".into(),
            checkpointed: Some(ledger.clone()),
        },
        peer: None,
    })
    .unwrap();
    let effects = s.effects();
    let reg = fold(Registry::default(), &effects);
    assert!(reg.agent_resources.contains_key("agent-1"), "persisted");
    let view = s.agent_view("agent-1");
    assert_eq!(view.volumes.len(), 1);
    assert_eq!(view.reserved, res("disk(db):1000"));

    // Another agent whose flags no longer hold its ledger is refused, saying why.
    let conn = s.conn();
    let mut small = Sim::agent_info("a2", "cpus:4;mem:1024;disk:100");
    small.id = "agent-2".into();
    s.handle(Input::AgentRegister {
        conn,
        register: v1::Register {
            agent_info: Some(small),
            tasks: vec![],
            version: "test".into(),
            checkpointed: Some(ledger),
        },
        peer: None,
    })
    .unwrap();
    let effects = s.effects();
    let error = agent_messages(&effects, conn)
        .into_iter()
        .find_map(|m| match m {
            Message::Error(e) => Some(e.message),
            _ => None,
        })
        .expect("refused");
    assert!(
        error.contains("cannot register") && error.contains("do not hold its dynamic reservations"),
        "{error}"
    );
}

#[test]
fn an_operator_reserves_creates_and_releases_on_an_agent() {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    // An outstanding offer of the agent is rescinded so its resources can be used.
    let fw = s.subscribe("other");
    let offers = next_offers(&mut s, &fw);
    assert_eq!(offers.len(), 1);
    let call = |kind, r: Resources| {
        Input::Operator(OperatorCall::ResourceOperation {
            agent_id: agent.id.clone(),
            kind,
            resources: r.to_proto(),
            principal: "ops".into(),
        })
    };
    use super::super::volumes::OpKind;
    s.handle(call(OpKind::Reserve, res("disk(db):1000;mem(db):256")))
        .unwrap();
    let effects = s.effects();
    assert_eq!(rescinds_for(&effects, fw.conn).len(), 1);
    s.handle(call(OpKind::Create, volume("db", "ops-vol", "data", 300.0)))
        .unwrap();
    let view = s.agent_view(&agent.id);
    let v = one(view.volumes.clone());
    assert_eq!((v.id.as_str(), v.principal.as_str()), ("ops-vol", "ops"));
    // The other framework (role `*`) is not offered any of it.
    let got = offered(&next_offers(&mut s, &fw));
    assert_eq!(got, res("cpus:4;mem:768;disk:1000"));
    s.decline(&fw, offer_ids(&[]), None).ok();
    // Unknown agents and missing resources are refused with the reason.
    let err = s
        .handle(Input::Operator(OperatorCall::ResourceOperation {
            agent_id: "nope".into(),
            kind: OpKind::Reserve,
            resources: res("cpus(db):1").to_proto(),
            principal: "ops".into(),
        }))
        .unwrap_err();
    assert!(err.to_string().contains("unknown to this master"), "{err}");
    let err = s
        .handle(call(OpKind::Unreserve, res("disk(db):1000")))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not among the resources of role 'db' of the agent's unused resources"),
        "{err}"
    );
    s.handle(call(
        OpKind::Destroy,
        volume("db", "ops-vol", "data", 300.0),
    ))
    .unwrap();
    s.handle(call(OpKind::Unreserve, res("disk(db):1000;mem(db):256")))
        .unwrap();
    assert_eq!(
        s.agent_view(&agent.id).total,
        res("cpus:4;mem:1024;disk:2000")
    );
}

/// A MOUNT disk: the agent's `disk[MOUNT:/mnt/d1]:1000`.
fn mount_volume(role: &str, id: &str, size: f64) -> Resources {
    let mut r = volume(role, id, "data", size).to_proto();
    r[0].disk.as_mut().unwrap().source = Some(v1::disk_info::Source {
        r#type: v1::disk_info::source::Type::Mount as i32,
        root: "/mnt/d1".into(),
    });
    Resources::try_from_proto(&r).unwrap()
}

#[test]
fn a_mount_disk_is_offered_reserved_and_made_a_volume_whole() {
    let mut s = Sim::new();
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:100;disk[MOUNT:/mnt/d1]:1000");
    let db = in_role(&mut s, "dbfw", "db");
    let offers = next_offers(&mut s, &db);
    assert!(offered(&offers).contains(&res("disk[MOUNT:/mnt/d1]:1000")));
    // Half of it cannot be reserved; all of it can.
    let err = accept_ops(
        &mut s,
        &db,
        &offers,
        vec![op("reserve", res("disk(db)[MOUNT:/mnt/d1]:500"))],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not among the unreserved"),
        "{err}"
    );
    let offers = next_offers(&mut s, &db);
    // A task cannot use the disk itself; a volume on it, whole, it can.
    let mut t = task("raw", "cpus:1;mem:64");
    let mut r = Resources::try_from_proto(&t.resources).unwrap();
    r.add(&res("disk(db)[MOUNT:/mnt/d1]:1000"));
    t.resources = r.to_proto();
    let vol = mount_volume("db", "big", 1000.0);
    let mut t2 = task("user", "cpus:1;mem:64");
    let mut r2 = Resources::try_from_proto(&t2.resources).unwrap();
    r2.add(&vol);
    t2.resources = r2.to_proto();
    accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("reserve", res("disk(db)[MOUNT:/mnt/d1]:1000")),
            launch(vec![t]),
            op("create", vol.clone()),
            launch(vec![t2]),
        ],
    )
    .unwrap();
    let effects = s.effects();
    let update = one(updates_for(&effects, db.conn));
    assert_eq!(update.task_id, "raw");
    assert!(
        update.message.contains("without a volume"),
        "{}",
        update.message
    );
    assert_eq!(s.task_state("user").as_deref(), Some("TASK_STAGING"));
    let view = s.agent_view(&agent.id);
    let v = one(view.volumes.clone());
    assert_eq!((v.mount.as_deref(), v.size), (Some("/mnt/d1"), 1000.0));
    // A volume bigger or smaller than the disk is refused.
    s.agent_update(&agent, &db.id, "user", v1::TaskState::TaskFinished, "u1");
    s.effects();
    let offers = next_offers(&mut s, &db);
    let err = accept_ops(
        &mut s,
        &db,
        &offers,
        vec![
            op("destroy", vol),
            op("create", mount_volume("db", "small", 10.0)),
        ],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("operation 2 (CREATE): the volumes need disk(db)[MOUNT:/mnt/d1]:10"),
        "{err}"
    );
}

mod props {
    use super::*;
    use crate::core::volumes::{Checkpointed, OpKind, apply_op};
    use proptest::prelude::*;

    /// One operation a framework in role db might try on an agent's free resources.
    fn op_strategy() -> impl Strategy<Value = (OpKind, Resources)> {
        let amount = 1u32..6;
        prop_oneof![
            (amount.clone(), 0u32..3).prop_map(|(d, c)| (
                OpKind::Reserve,
                res(&format!("disk(db):{};cpus(db):{c}", d * 100))
            )),
            (amount.clone(), 0u32..3).prop_map(|(d, c)| (
                OpKind::Unreserve,
                res(&format!("disk(db):{};cpus(db):{c}", d * 100))
            )),
            (0u32..4, amount.clone()).prop_map(|(id, d)| (
                OpKind::Create,
                volume("db", &format!("v{id}"), "data", f64::from(d * 50))
            )),
            (0u32..4, amount).prop_map(|(id, d)| (
                OpKind::Destroy,
                volume("db", &format!("v{id}"), "data", f64::from(d * 50))
            )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever sequence of operations is tried (refused ones change nothing), the
        /// agent's free resources are always its flags with the ledger applied: what
        /// a master restart rebuilds is what was there.
        #[test]
        fn the_ledger_always_rebuilds_the_agents_resources(ops in prop::collection::vec(op_strategy(), 1..25)) {
            let static_total = res("cpus:4;mem:1024;disk:1000;cpus(db):1");
            let mut pool = static_total.clone();
            let mut ledger = Checkpointed::default();
            let ok = |_: &str, _: &Resources, _: &Checkpointed| Ok(());
            for (kind, r) in ops {
                let before = (pool.clone(), ledger.clone());
                match apply_op(kind, &r.to_proto(), &mut pool, &mut ledger, "p", &ok, "the offers") {
                    Ok(c) => {
                        prop_assert_eq!(c.from.disk(), c.to.disk());
                        prop_assert_eq!(c.from.cpus(), c.to.cpus());
                    }
                    Err(_) => prop_assert_eq!((pool.clone(), ledger.clone()), before),
                }
                prop_assert_eq!(ledger.apply(&static_total).unwrap(), pool.clone());
                // The ledger survives its wire and registry forms.
                prop_assert_eq!(Checkpointed::decode(&ledger.encode()).unwrap(), ledger.clone());
                prop_assert_eq!(pool.disk(), static_total.disk());
            }
        }
    }
}

#[test]
fn only_a_volumes_creator_or_an_admin_destroys_it() {
    let mut cfg = config();
    cfg.authorizer = Authorizer::new(Acls::secure_default());
    let mut s = Sim::with(cfg, Registry::default());
    let agent = s.add_agent("a1", "cpus:4;mem:1024;disk:2000");
    use super::super::volumes::OpKind;
    let call = |kind, r: Resources, who: &str| {
        Input::Operator(OperatorCall::ResourceOperation {
            agent_id: agent.id.clone(),
            kind,
            resources: r.to_proto(),
            principal: who.into(),
        })
    };
    s.handle(call(OpKind::Reserve, res("disk(db):500"), "alice"))
        .unwrap();
    s.handle(call(
        OpKind::Create,
        volume("db", "v", "data", 100.0),
        "alice",
    ))
    .unwrap();
    // Eve may reserve (the built-in ACLs let anyone) but not destroy alice's data.
    let before = s.agent_view(&agent.id);
    let err = s
        .handle(call(
            OpKind::Destroy,
            volume("db", "v", "data", 100.0),
            "eve",
        ))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("eve is not authorized to destroy volumes of role 'db'"),
        "{err}"
    );
    assert_eq!(s.agent_view(&agent.id).volumes.len(), before.volumes.len());
    // Its creator and admin may.
    s.handle(call(
        OpKind::Destroy,
        volume("db", "v", "data", 100.0),
        "alice",
    ))
    .unwrap();
    s.handle(call(
        OpKind::Create,
        volume("db", "w", "data", 100.0),
        "alice",
    ))
    .unwrap();
    s.handle(call(
        OpKind::Destroy,
        volume("db", "w", "data", 100.0),
        "admin",
    ))
    .unwrap();
    assert!(s.agent_view(&agent.id).volumes.is_empty());
}

#[test]
fn an_agent_marked_gone_takes_its_volumes_and_every_framework_hears_of_it() {
    let (mut s, agent, db) = with_a_volume("disk(db):1000", "v", 100.0);
    s.handle(Input::Operator(OperatorCall::MarkAgentGone {
        agent_id: agent.id.clone(),
    }))
    .unwrap();
    let effects = s.effects();
    let failure = events_for(&effects, db.conn)
        .into_iter()
        .find_map(|e| match e {
            Event::Failure(f) => Some(f),
            _ => None,
        })
        .expect("a FAILURE event");
    assert_eq!(
        (failure.agent_id.as_str(), failure.task_id.as_str()),
        (agent.id.as_str(), "")
    );
    let view = s.agent_view(&agent.id);
    assert!(view.volumes.is_empty() && view.reserved.is_empty());
    let reg = fold(Registry::default(), &effects);
    assert!(!reg.agent_resources.contains_key(&agent.id));
    assert_eq!(s.m.metrics().volumes, 0);
}
