//! Scaling guard for the `Resources` maths: the largest inputs the request limits
//! allow (~1 MB) must be processed in milliseconds, not seconds. The quadratic code
//! this replaced took tens of seconds on these inputs (see the timings printed with
//! `cargo test --release -p strata-proto --test resources_scaling -- --nocapture`).
//!
//! The bounds asserted here are deliberately loose (they must hold in debug builds on
//! a slow, shared CI machine); they only catch a return to quadratic behaviour.

use std::time::{Duration, Instant};

use strata_proto::resources::Resources;
use strata_proto::v1;

const RANGES: u64 = 100_000;
const ROLES: usize = 10_000;
/// Loose upper bound per operation, debug build included.
const BOUND: Duration = Duration::from_secs(5);

/// A deterministic pseudo-random sequence (no dev-dependency needed).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// 100,000 port ranges in random order: mostly single even ports (which never merge,
/// so the set stays at its largest, 32,768 ranges), some short ranges.
fn port_ranges(seed: u64) -> Vec<v1::Range> {
    let mut s = seed;
    (0..RANGES)
        .map(|i| {
            let begin = (lcg(&mut s) % 32_768) * 2;
            let end = if i % 10 == 0 {
                (begin + lcg(&mut s) % 8).min(65_535)
            } else {
                begin
            };
            v1::Range { begin, end }
        })
        .collect()
}

/// 10,000 roles, each with cpus, mem and a few ports, in random order, plus the
/// 100,000 unreserved port ranges.
fn big_proto(seed: u64) -> Vec<v1::Resource> {
    let mut s = seed;
    let mut out = Vec::with_capacity(3 * ROLES + 1);
    let mut roles: Vec<usize> = (0..ROLES).collect();
    for i in (1..roles.len()).rev() {
        let j = (lcg(&mut s) as usize) % (i + 1);
        roles.swap(i, j);
    }
    for r in roles {
        let role = format!("role-{r}");
        out.push(v1::Resource {
            name: "cpus".into(),
            scalar: 0.5,
            role: role.clone(),
            ..Default::default()
        });
        out.push(v1::Resource {
            name: "mem".into(),
            scalar: 128.0,
            role: role.clone(),
            ..Default::default()
        });
        let p = (lcg(&mut s) % 60_000) + 1;
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
    out.push(v1::Resource {
        name: "ports".into(),
        ranges: port_ranges(seed ^ 0x9e37),
        ..Default::default()
    });
    out
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    println!("{what}: {took:?}");
    // STRATA_SCALING_NO_BOUND=1 only prints (to time an old, slow build).
    if std::env::var_os("STRATA_SCALING_NO_BOUND").is_none() {
        assert!(
            took < BOUND,
            "{what} took {took:?}, expected well under {BOUND:?}"
        );
    }
    out
}

#[test]
fn large_resources_are_processed_in_near_linear_time() {
    let proto = big_proto(7);
    let from_proto = timed("try_from_proto (10k roles + 100k ranges)", || {
        Resources::try_from_proto(&proto).unwrap()
    });
    let text = from_proto.to_string();
    let text_len = text.len();
    let parsed = timed("parse", || Resources::parse(&text).unwrap());
    assert_eq!(parsed, from_proto);

    // A flag-form input with every one of the 100,000 ranges written out (~1 MB).
    let raw: Vec<String> = port_ranges(11)
        .iter()
        .map(|r| format!("{}-{}", r.begin, r.end))
        .collect();
    let raw = format!("ports:[{}];cpus:4", raw.join(","));
    println!(
        "input sizes: display {text_len} bytes, raw ranges {} bytes",
        raw.len()
    );
    let raw_parsed = timed("parse (100k raw ranges)", || {
        Resources::parse(&raw).unwrap()
    });

    let other = Resources::try_from_proto(&big_proto(8)).unwrap();
    let mut sum = from_proto.clone();
    timed("add", || sum.add(&other));
    timed("add (100k raw ranges)", || sum.add(&raw_parsed));
    assert!(timed("contains", || sum.contains(&other)));
    let mut diff = sum.clone();
    timed("subtract", || diff.subtract(&other));
    assert!(timed("contains after subtract", || sum.contains(&diff)));
    timed("checked_sub", || sum.checked_sub(&from_proto).unwrap());
    let ports = timed("ports() across 10k roles", || sum.ports());
    assert!(ports.count() > 0);
    timed("reserved_for x 1000", || {
        for r in 0..1000 {
            assert!(!sum.reserved_for(&format!("role-{r}")).is_empty());
        }
    });
    timed("allocatable_to x 1000", || {
        for r in 0..1000 {
            assert!(!sum.allocatable_to(&format!("role-{r}")).is_empty());
        }
    });
    let wanted = Resources::try_from_proto(&big_proto(9)).unwrap();
    timed("pick", || sum.pick(&wanted, "role-1"));
    timed("display", || sum.to_string());
    timed("to_proto", || sum.to_proto());
}
