//! One allocation cycle at scale, in the shape of Mesos' `DeclineOffers` benchmark
//! (where Mesos 1.8 takes about 1.1 s): 10,000 agents of cpus:24;mem:4096 and 1,000
//! frameworks that decline every offer with the default 5 s filter.
//!
//! A measured cycle goes through the master's public API, as the driver does:
//! advance the clock by the allocation interval, `Tick` (the batch allocation turns
//! into one OFFERS event per framework), then one DECLINE call per framework for all
//! its offers (resources return to the allocator under a filter). Before measuring,
//! a few cycles run so that filters are in their steady state.
//!
//! `allocator_only/10000x1000` measures the allocator alone on the same shape
//! (allocate, then recover everything with a filter), without offers and events.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use strata_master::core::allocator::{AgentKey, Allocator, DrfAllocator, FrameworkKey};
use strata_master::core::{Call, ConnId, CoreConfig, Effect, Input, Master, Registry};
use strata_proto::Resources;
use strata_proto::v1::{self, event::Event};

const AGENTS: u64 = 10_000;
const FRAMEWORKS: u64 = 1_000;

struct Cluster {
    master: Master,
    now: Instant,
    /// Each framework's call header, by its subscription stream.
    headers: HashMap<ConnId, v1::CallHeader>,
}

fn cluster() -> Cluster {
    let now = Instant::now();
    // Simulated agents send no heartbeats: keep them from timing out.
    let config = CoreConfig {
        master_id: "bench-master".into(),
        agent_ping_timeout: Duration::from_secs(24 * 3600),
        ..CoreConfig::default()
    };
    let mut master = Master::new(config, Registry::default(), now);
    let resources = Resources::parse("cpus:24;mem:4096")
        .expect("resources")
        .to_proto();
    for i in 0..AGENTS {
        let info = v1::AgentInfo {
            hostname: format!("agent-{i}"),
            address: format!("10.0.{}.{}:5051", i / 256, i % 256),
            resources: resources.clone(),
            ..Default::default()
        };
        let register = v1::Register {
            checkpointed: None,
            agent_info: Some(info),
            tasks: vec![],
            version: String::new(),
        };
        master
            .handle(
                Input::AgentRegister {
                    conn: ConnId(i),
                    register,
                    peer: None,
                },
                now,
            )
            .expect("register");
    }
    for j in 0..FRAMEWORKS {
        let info = v1::FrameworkInfo {
            name: format!("framework-{j}"),
            ..Default::default()
        };
        let request = v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        };
        master
            .handle(
                Input::Subscribe {
                    conn: ConnId(AGENTS + j),
                    request,
                },
                now,
            )
            .expect("subscribe");
    }
    let mut headers = HashMap::new();
    for effect in master.take_effects() {
        if let Effect::ToFramework {
            conn,
            event: v1::Event {
                event: Some(Event::Subscribed(s)),
            },
        } = effect
        {
            headers.insert(
                conn,
                v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                },
            );
        }
    }
    assert_eq!(headers.len(), FRAMEWORKS as usize);
    Cluster {
        master,
        now,
        headers,
    }
}

/// One allocation cycle; returns how many offers were made and declined.
fn cycle(c: &mut Cluster) -> usize {
    c.now += Duration::from_secs(1);
    c.master.handle(Input::Tick, c.now).expect("tick");
    let mut offered = 0;
    for effect in c.master.take_effects() {
        let Effect::ToFramework {
            conn,
            event: v1::Event {
                event: Some(Event::Offers(offers)),
            },
        } = effect
        else {
            continue;
        };
        let Some(header) = c.headers.get(&conn) else {
            continue;
        };
        offered += offers.offers.len();
        let offer_ids = offers.offers.into_iter().map(|o| o.id).collect();
        let request = v1::DeclineRequest {
            header: Some(header.clone()),
            offer_ids,
            filters: None,
        };
        let input = Input::Call {
            header: header.clone(),
            call: Call::Decline(request),
        };
        c.master.handle(input, c.now).expect("decline");
    }
    offered
}

fn allocation_cycle(crit: &mut Criterion) {
    let mut c = cluster();
    for _ in 0..6 {
        assert_eq!(
            cycle(&mut c),
            AGENTS as usize,
            "every agent is offered in every cycle"
        );
    }
    let mut group = crit.benchmark_group("allocation_cycle");
    group.sample_size(10);
    group.bench_function("10000x1000", |b| {
        b.iter(|| {
            let offered = cycle(&mut c);
            assert_eq!(
                offered, AGENTS as usize,
                "every agent is offered in every cycle"
            );
            black_box(offered)
        })
    });
    group.finish();
}

fn allocator_only(crit: &mut Criterion) {
    let mut now = Instant::now();
    let mut a = DrfAllocator::new(HashMap::new(), 7);
    let star = vec!["*".to_string()];
    for j in 0..FRAMEWORKS as u32 {
        a.add_framework(FrameworkKey(j), &star, &[], true);
    }
    let total = Resources::parse("cpus:24;mem:4096").expect("resources");
    for i in 0..AGENTS as u32 {
        a.add_agent(AgentKey(i), total.clone(), &[]);
    }
    let step = |a: &mut DrfAllocator, now: &mut Instant| {
        *now += Duration::from_secs(1);
        a.expire_filters(*now);
        let out = a.allocate(*now, None);
        let n = out.len();
        for x in out {
            a.recover(
                x.agent,
                x.framework,
                &x.role,
                x.resources,
                Some(Duration::from_secs(5)),
                *now,
            );
        }
        n
    };
    for _ in 0..6 {
        assert_eq!(step(&mut a, &mut now), AGENTS as usize);
    }
    let mut group = crit.benchmark_group("allocator_only");
    group.sample_size(10);
    group.bench_function("10000x1000", |b| {
        b.iter(|| {
            let offered = step(&mut a, &mut now);
            assert_eq!(offered, AGENTS as usize);
            black_box(offered)
        })
    });
    group.finish();
}

criterion_group!(benches, allocation_cycle, allocator_only);
criterion_main!(benches);
