//! `Resources` maths on the largest inputs (~1 MB): 10,000 roles and 100,000 port
//! ranges. `cargo bench -p strata-proto --bench resources`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_proto::resources::Resources;
use strata_proto::v1;

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// 100,000 port ranges in random order (single even ports, so they never merge).
fn port_ranges(seed: u64) -> Vec<v1::Range> {
    let mut s = seed;
    (0..100_000)
        .map(|_| {
            let begin = (lcg(&mut s) % 32_768) * 2;
            v1::Range { begin, end: begin }
        })
        .collect()
}

/// 10,000 roles with cpus, mem and a few ports each, in random order.
fn roles(seed: u64) -> Vec<v1::Resource> {
    let mut s = seed;
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let role = format!("role-{}", lcg(&mut s) % 1_000_000);
        for (name, scalar) in [("cpus", 0.5), ("mem", 128.0)] {
            out.push(v1::Resource {
                name: name.into(),
                scalar,
                role: role.clone(),
                ..Default::default()
            });
        }
        let p = lcg(&mut s) % 60_000 + 1;
        out.push(v1::Resource {
            name: "ports".into(),
            role,
            ranges: vec![v1::Range {
                begin: p,
                end: p + 3,
            }],
            ..Default::default()
        });
    }
    out
}

fn ports(seed: u64) -> Vec<v1::Resource> {
    vec![v1::Resource {
        name: "ports".into(),
        ranges: port_ranges(seed),
        ..Default::default()
    }]
}

fn bench(c: &mut Criterion) {
    let roles_a = roles(1);
    let ports_a = ports(2);
    let raw = format!(
        "ports:[{}]",
        port_ranges(3)
            .iter()
            .map(|r| format!("{}-{}", r.begin, r.end))
            .collect::<Vec<_>>()
            .join(",")
    );
    let a = Resources::try_from_proto(&roles_a).unwrap();
    let b = Resources::try_from_proto(&roles(4)).unwrap();
    let pa = Resources::try_from_proto(&ports_a).unwrap();
    let pb = Resources::try_from_proto(&ports(5)).unwrap();
    let text = a.to_string();

    c.bench_function("try_from_proto 10k roles", |x| {
        x.iter(|| Resources::try_from_proto(black_box(&roles_a)).unwrap())
    });
    c.bench_function("try_from_proto 100k ranges", |x| {
        x.iter(|| Resources::try_from_proto(black_box(&ports_a)).unwrap())
    });
    c.bench_function("parse 10k roles", |x| {
        x.iter(|| Resources::parse(black_box(&text)).unwrap())
    });
    c.bench_function("parse 100k raw ranges (1.1 MB)", |x| {
        x.iter(|| Resources::parse(black_box(&raw)).unwrap())
    });
    c.bench_function("add 10k roles", |x| {
        x.iter(|| {
            let mut s = a.clone();
            s.add(black_box(&b));
            s
        })
    });
    c.bench_function("add 32k ranges", |x| {
        x.iter(|| {
            let mut s = pa.clone();
            s.add(black_box(&pb));
            s
        })
    });
    let mut sum = a.clone();
    sum.add(&b);
    sum.add(&pa);
    c.bench_function("contains 10k roles", |x| {
        x.iter(|| black_box(&sum).contains(black_box(&b)))
    });
    c.bench_function("subtract 10k roles + 32k ranges", |x| {
        let mut other = b.clone();
        other.add(&pb);
        x.iter(|| {
            let mut s = sum.clone();
            s.subtract(black_box(&other));
            s
        })
    });
    c.bench_function("ports() across 10k roles", |x| {
        x.iter(|| black_box(&sum).ports())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
