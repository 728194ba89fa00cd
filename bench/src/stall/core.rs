//! The same largest requests fed straight to a sans-IO core of its own
//! ([`strata_master::core::Master`]), with no gRPC, driver or channels: how much of
//! each stall is the core's `handle` (and the dropping of the effects it returns),
//! and how much the store's append and sync of what it persists (a [`FileStore`] in
//! the bench's work directory, as the driver's).
//!
//! ```text
//!  AgentRegister ×N, Subscribe, Tick ─▶ Master (offers of every agent held)
//!  one big Input per kind ─▶ handle + take_effects  (timed: `core`)
//!                          ─▶ Persist effects ─▶ FileStore append + sync  (timed: `store`)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_master::core::{
    Call, ConnId, CoreConfig, Effect, Input, Master, OperatorCall, Registry,
};
use strata_master::{FileStore, Store};
use strata_proto::limits;
use strata_proto::v1;

use super::{
    agent_info, bench_framework_info, big_framework_info, big_weights, launch_op, launch_tasks,
    reconcile_list, unknown_ids, unknown_tasks,
};
use crate::stats::Samples;

/// One kind's times in the core alone.
pub(super) struct CoreTimes {
    pub(super) kind: &'static str,
    /// `handle` and `take_effects` (and dropping them), each repetition.
    pub(super) core: Samples,
    /// Appending the persisted ops and one sync, each repetition.
    pub(super) store: Samples,
    /// Effects of the last repetition: (all, persisted).
    pub(super) effects: (usize, usize),
    /// The core's verdict on the last repetition.
    pub(super) answer: String,
}

/// A core with `agents` agents of the largest size and the bench's framework holding
/// all their offers.
struct Setup {
    master: Master,
    store: FileStore,
    now: Instant,
    header: v1::CallHeader,
    offers: HashMap<String, Vec<v1::Offer>>,
    next_conn: u64,
}

impl Setup {
    fn new(agents: u32, dir: &Path) -> anyhow::Result<Setup> {
        let config = CoreConfig::default();
        let interval = config.allocation_interval;
        let now = Instant::now();
        let mut setup = Setup {
            master: Master::new(config, Registry::default(), now),
            store: FileStore::open(dir)?,
            now,
            header: v1::CallHeader::default(),
            offers: HashMap::new(),
            next_conn: 1,
        };
        for i in 0..agents {
            let conn = setup.conn();
            let register = v1::Register {
                checkpointed: None,
                agent_info: Some(agent_info(i)),
                tasks: vec![],
                version: env!("CARGO_PKG_VERSION").to_string(),
            };
            setup
                .master
                .handle(
                    Input::AgentRegister {
                        conn,
                        register,
                        peer: None,
                    },
                    now,
                )
                .map_err(|e| anyhow::anyhow!("agent {i} refused: {e}"))?;
            setup.persist()?;
        }
        let conn = setup.conn();
        setup
            .master
            .handle(
                Input::Subscribe {
                    conn,
                    request: v1::SubscribeRequest {
                        framework_info: Some(bench_framework_info()),
                        suppressed_roles: vec![],
                    },
                },
                now,
            )
            .map_err(|e| anyhow::anyhow!("subscribe refused: {e}"))?;
        setup.persist()?;
        for _ in 0..50 {
            setup.now += interval + Duration::from_millis(1);
            setup
                .master
                .handle(Input::Tick, setup.now)
                .map_err(|e| anyhow::anyhow!("tick: {e}"))?;
            setup.persist()?;
            if setup.offers.len() == agents as usize && !setup.header.stream_id.is_empty() {
                break;
            }
        }
        anyhow::ensure!(
            setup.offers.len() == agents as usize,
            "the core offered the resources of {} of {agents} agents",
            setup.offers.len()
        );
        Ok(setup)
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Takes the effects: persists what they persist, keeps offers and the header.
    fn persist(&mut self) -> anyhow::Result<()> {
        for effect in self.master.take_effects() {
            match effect {
                Effect::Persist(op) => {
                    self.store.append(&op)?;
                }
                Effect::ToFramework { event, .. } => match event.event {
                    Some(v1::event::Event::Subscribed(s)) if self.header.stream_id.is_empty() => {
                        self.header = v1::CallHeader {
                            framework_id: s.framework_id,
                            stream_id: s.stream_id,
                        };
                    }
                    Some(v1::event::Event::Offers(o)) => {
                        for offer in o.offers {
                            self.offers
                                .entry(offer.agent_id.clone())
                                .or_default()
                                .push(offer);
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        self.store.sync()?;
        Ok(())
    }

    /// Feeds `input`: the time of `handle` and `take_effects`, and of the store.
    fn time(
        &mut self,
        input: Input,
    ) -> anyhow::Result<(Duration, Duration, (usize, usize), String)> {
        let started = Instant::now();
        let result = self.master.handle(input, self.now);
        let effects = self.master.take_effects();
        let total = effects.len();
        let mut ops = Vec::new();
        for effect in effects {
            if let Effect::Persist(op) = effect {
                ops.push(op);
            }
        }
        let core = started.elapsed();
        let started = Instant::now();
        for op in &ops {
            self.store.append(op)?;
        }
        self.store.sync()?;
        let store = started.elapsed();
        let answer = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("refused: {}", limits::shown(&e.to_string())),
        };
        Ok((core, store, (total, ops.len()), answer))
    }
}

/// Every kind of the network run (but `idle`), `reps` times each, in a core of its own.
pub(super) fn core_run(agents: u32, reps: u32, dir: &Path) -> anyhow::Result<Vec<CoreTimes>> {
    let mut setup = Setup::new(agents, dir)?;
    let mut agent_ids: Vec<String> = setup.offers.keys().cloned().collect();
    agent_ids.sort();
    let mut launched: Vec<(String, String)> = Vec::new();
    let mut results = Vec::new();
    let mut kind = |setup: &mut Setup,
                    kind: &'static str,
                    make: &mut dyn FnMut(u32, &Setup) -> anyhow::Result<Input>|
     -> anyhow::Result<()> {
        let mut core = Vec::new();
        let mut store = Vec::new();
        let mut effects = (0, 0);
        let mut answer = String::new();
        for rep in 0..reps {
            let input = make(rep, setup)?;
            let (c, s, e, a) = setup.time(input)?;
            core.push(c);
            store.push(s);
            effects = e;
            answer = a;
        }
        results.push(CoreTimes {
            kind,
            core: Samples::new(core),
            store: Samples::new(store),
            effects,
            answer,
        });
        Ok(())
    };
    kind(&mut setup, "accept_launch", &mut |rep, s| {
        let agent = &agent_ids[rep as usize];
        let offers = s.offers.get(agent).map(Vec::as_slice).unwrap_or_default();
        let tasks = launch_tasks(rep, agent, offers)?;
        launched.extend(
            tasks
                .iter()
                .map(|t| (t.task_id.clone(), t.agent_id.clone())),
        );
        Ok(Input::Call {
            header: s.header.clone(),
            call: Call::Accept(v1::AcceptRequest {
                header: Some(s.header.clone()),
                offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                operations: vec![launch_op(tasks)],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            }),
        })
    })?;
    kind(&mut setup, "accept_unknown", &mut |rep, s| {
        Ok(Input::Call {
            header: s.header.clone(),
            call: Call::Accept(v1::AcceptRequest {
                header: Some(s.header.clone()),
                offer_ids: unknown_ids(rep, 'o', limits::MAX_OFFERS_PER_CALL),
                operations: vec![launch_op(unknown_tasks(rep, &agent_ids[0]))],
                filters: None,
            }),
        })
    })?;
    kind(&mut setup, "decline", &mut |rep, s| {
        Ok(Input::Call {
            header: s.header.clone(),
            call: Call::Decline(v1::DeclineRequest {
                header: Some(s.header.clone()),
                offer_ids: unknown_ids(rep, 'd', limits::MAX_OFFERS_PER_CALL),
                filters: Some(v1::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            }),
        })
    })?;
    let mut conns = (0..reps)
        .map(|_| setup.conn())
        .collect::<Vec<_>>()
        .into_iter();
    kind(&mut setup, "subscribe", &mut |rep, _| {
        let info = big_framework_info(rep);
        Ok(Input::Subscribe {
            conn: conns.next().unwrap_or(ConnId(u64::MAX - u64::from(rep))),
            request: v1::SubscribeRequest {
                suppressed_roles: info.roles.clone(),
                framework_info: Some(info),
            },
        })
    })?;
    kind(&mut setup, "update_weights", &mut |rep, _| {
        Ok(Input::Operator(OperatorCall::UpdateWeights(big_weights(
            rep,
        ))))
    })?;
    let reconcile = reconcile_list(&launched, &agent_ids);
    kind(&mut setup, "reconcile", &mut |_, s| {
        Ok(Input::Call {
            header: s.header.clone(),
            call: Call::Reconcile(v1::ReconcileRequest {
                header: Some(s.header.clone()),
                tasks: reconcile.clone(),
            }),
        })
    })?;
    kind(&mut setup, "reconcile_implicit", &mut |_, s| {
        Ok(Input::Call {
            header: s.header.clone(),
            call: Call::Reconcile(v1::ReconcileRequest {
                header: Some(s.header.clone()),
                tasks: vec![],
            }),
        })
    })?;
    Ok(results)
}
