//! Property tests: the `Resources` and `RangeSet` maths against a naive model (a map
//! from (name, role) to a number of thousandths or a set of single ports).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use strata_proto::resources::{RangeSet, Resources, Scalar, Value};
use strata_proto::v1;

#[derive(Clone, Debug, PartialEq, Eq)]
enum M {
    Milli(i64),
    Ports(BTreeSet<u64>),
}

type Model = BTreeMap<(String, Option<String>), M>;

fn set_of(r: &RangeSet) -> BTreeSet<u64> {
    r.ranges().iter().flat_map(|&(b, e)| b..=e).collect()
}

/// The ranges are sorted, non-empty, and neither overlap nor touch.
fn check_normal(r: &RangeSet) {
    for &(b, e) in r.ranges() {
        assert!(b <= e, "{r}");
    }
    for w in r.ranges().windows(2) {
        assert!(w[0].1.saturating_add(1) < w[1].0, "not merged: {r}");
    }
}

/// The model of a `Resources`, checking its invariants on the way.
fn model_of(r: &Resources) -> Model {
    let mut m = Model::new();
    for w in r.entries().windows(2) {
        let k = |e: &strata_proto::resources::Entry| (e.name.clone(), e.role.clone());
        assert!(k(&w[0]) < k(&w[1]), "entries not sorted or repeated: {r:?}");
    }
    for e in r.entries() {
        let v = match &e.value {
            Value::Scalar(s) => {
                assert!(s.is_positive(), "empty entry in {r:?}");
                M::Milli(s.milli())
            }
            Value::Ranges(rs) => {
                assert!(!rs.is_empty(), "empty entry in {r:?}");
                check_normal(rs);
                M::Ports(set_of(rs))
            }
        };
        m.insert((e.name.clone(), e.role.clone()), v);
    }
    m
}

fn norm_role(role: &str) -> Option<String> {
    (!role.is_empty() && role != "*").then(|| role.to_string())
}

fn model_from_proto(list: &[v1::Resource]) -> Model {
    let mut m = Model::new();
    for r in list {
        let v = if r.name == "ports" {
            M::Ports(r.ranges.iter().flat_map(|x| x.begin..=x.end).collect())
        } else {
            M::Milli((r.scalar * 1000.0).round() as i64)
        };
        model_add_one(&mut m, (r.name.clone(), norm_role(&r.role)), v);
    }
    m
}

fn model_add_one(m: &mut Model, key: (String, Option<String>), v: M) {
    let empty = match &v {
        M::Milli(x) => *x <= 0,
        M::Ports(s) => s.is_empty(),
    };
    if empty {
        return;
    }
    match (m.get_mut(&key), v) {
        (Some(M::Milli(a)), M::Milli(b)) => *a += b,
        (Some(M::Ports(a)), M::Ports(b)) => a.extend(b),
        (Some(_), _) => unreachable!("kinds are fixed per name"),
        (None, v) => {
            m.insert(key, v);
        }
    }
}

fn model_add(a: &Model, b: &Model) -> Model {
    let mut out = a.clone();
    for (k, v) in b {
        model_add_one(&mut out, k.clone(), v.clone());
    }
    out
}

fn model_sub(a: &Model, b: &Model) -> Model {
    let mut out = a.clone();
    for (k, v) in b {
        if let Some(have) = out.get_mut(k) {
            match (have, v) {
                (M::Milli(x), M::Milli(y)) => *x = (*x - y).max(0),
                (M::Ports(x), M::Ports(y)) => x.retain(|p| !y.contains(p)),
                _ => unreachable!(),
            }
        }
    }
    out.retain(|_, v| match v {
        M::Milli(x) => *x > 0,
        M::Ports(s) => !s.is_empty(),
    });
    out
}

fn model_contains(a: &Model, b: &Model) -> bool {
    b.iter().all(|(k, v)| match (a.get(k), v) {
        (Some(M::Milli(x)), M::Milli(y)) => x >= y,
        (Some(M::Ports(x)), M::Ports(y)) => y.is_subset(x),
        _ => false,
    })
}

/// `Resources::pick` written the obvious way on the model.
fn model_pick(have: &Model, wanted: &Model, role: &str) -> Option<Model> {
    let reserved_role = (role != "*").then(|| role.to_string());
    let mut out = Model::new();
    for ((name, _), need) in wanted {
        let reserved = reserved_role
            .as_ref()
            .and_then(|r| have.get(&(name.clone(), Some(r.clone()))));
        let unreserved = have.get(&(name.clone(), None));
        match need {
            M::Milli(need) => {
                let from_reserved = match reserved {
                    Some(M::Milli(h)) => (*h).min(*need),
                    _ => 0,
                };
                let rest = need - from_reserved;
                let free = match unreserved {
                    Some(M::Milli(h)) => *h,
                    _ => 0,
                };
                if rest > free {
                    return None;
                }
                model_add_one(
                    &mut out,
                    (name.clone(), reserved_role.clone()),
                    M::Milli(from_reserved),
                );
                model_add_one(&mut out, (name.clone(), None), M::Milli(rest));
            }
            M::Ports(need) => {
                let from_reserved: BTreeSet<u64> = match reserved {
                    Some(M::Ports(h)) => need.intersection(h).copied().collect(),
                    _ => BTreeSet::new(),
                };
                let rest: BTreeSet<u64> = need.difference(&from_reserved).copied().collect();
                let fits = match unreserved {
                    Some(M::Ports(h)) => rest.is_subset(h),
                    _ => rest.is_empty(),
                };
                if !fits {
                    return None;
                }
                model_add_one(
                    &mut out,
                    (name.clone(), reserved_role.clone()),
                    M::Ports(from_reserved),
                );
                model_add_one(&mut out, (name.clone(), None), M::Ports(rest));
            }
        }
    }
    Some(out)
}

fn ranges_strategy(max: usize) -> impl Strategy<Value = Vec<(u64, u64)>> {
    // Small domain so ranges overlap, touch and nest often; now and then the top
    // of the port space.
    prop::collection::vec(
        prop_oneof![
            9 => (0u64..120, 0u64..12).prop_map(|(b, l)| (b, b + l)),
            1 => (65_500u64..=65_535, 0u64..40).prop_map(|(b, l)| (b, (b + l).min(65_535))),
        ],
        0..max,
    )
}

fn resource_strategy() -> impl Strategy<Value = v1::Resource> {
    let role = prop::sample::select(vec!["", "*", "a", "b", "web", "web-2"]);
    let scalar = (
        prop::sample::select(vec!["cpus", "mem", "disk", "gpus"]),
        0i64..5_000,
        role.clone(),
    )
        .prop_map(|(name, milli, role)| v1::Resource {
            name: name.into(),
            scalar: milli as f64 / 1000.0,
            role: role.into(),
            ..Default::default()
        });
    let ports = (ranges_strategy(20), role).prop_map(|(ranges, role)| v1::Resource {
        name: "ports".into(),
        ranges: ranges
            .into_iter()
            .map(|(begin, end)| v1::Range { begin, end })
            .collect(),
        role: role.into(),
        ..Default::default()
    });
    prop_oneof![2 => scalar, 1 => ports]
}

fn list_strategy() -> impl Strategy<Value = Vec<v1::Resource>> {
    prop::collection::vec(resource_strategy(), 0..30)
}

fn build(list: &[v1::Resource]) -> Resources {
    Resources::try_from_proto(list).expect("generated resources are valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn range_set_ops_match_a_set(a in ranges_strategy(30), b in ranges_strategy(30), v in 0u64..140, n in 0u64..60) {
        let mut ra = RangeSet::new();
        for &(x, y) in &a {
            ra.insert(x, y);
        }
        check_normal(&ra);
        let sa: BTreeSet<u64> = a.iter().flat_map(|&(x, y)| x..=y).collect();
        prop_assert_eq!(set_of(&ra), sa.clone());
        let mut rb = RangeSet::new();
        for &(x, y) in &b {
            rb.insert(x, y);
        }
        let sb = set_of(&rb);

        prop_assert_eq!(ra.contains_value(v), sa.contains(&v));
        prop_assert_eq!(ra.contains(&rb), sb.is_subset(&sa));
        prop_assert_eq!(ra.count(), sa.len() as u64);

        let mut u = ra.clone();
        u.union(&rb);
        check_normal(&u);
        prop_assert_eq!(set_of(&u), sa.union(&sb).copied().collect::<BTreeSet<_>>());

        let mut d = ra.clone();
        d.remove(&rb);
        check_normal(&d);
        prop_assert_eq!(set_of(&d), sa.difference(&sb).copied().collect::<BTreeSet<_>>());

        match ra.take_lowest(n) {
            Some(low) => {
                check_normal(&low);
                prop_assert_eq!(set_of(&low), sa.iter().copied().take(n as usize).collect::<BTreeSet<_>>());
            }
            None => prop_assert!((sa.len() as u64) < n),
        }
    }

    #[test]
    fn resources_ops_match_the_model(la in list_strategy(), lb in list_strategy()) {
        let (a, b) = (build(&la), build(&lb));
        let (ma, mb) = (model_from_proto(&la), model_from_proto(&lb));
        prop_assert_eq!(model_of(&a), ma.clone());
        prop_assert_eq!(model_of(&b), mb.clone());

        // Equality is equality of the model.
        prop_assert_eq!(a == b, ma == mb);

        let mut sum = a.clone();
        sum.add(&b);
        prop_assert_eq!(model_of(&sum), model_add(&ma, &mb));
        let mut both = Resources::new();
        both.add(&b);
        both.add(&a);
        prop_assert_eq!(&both, &sum);

        prop_assert_eq!(a.contains(&b), model_contains(&ma, &mb));
        prop_assert!(sum.contains(&a) && sum.contains(&b));

        let mut diff = a.clone();
        diff.subtract(&b);
        prop_assert_eq!(model_of(&diff), model_sub(&ma, &mb));
prop_assert_eq!(sum.checked_sub(&b).map(|r| model_of(&r)), Some(model_sub(&model_add(&ma, &mb), &mb)));
        prop_assert_eq!(a.checked_sub(&b).is_some(), model_contains(&ma, &mb));

        // Per-name totals and per-role views.
        for name in ["cpus", "mem", "disk", "gpus"] {
            let total: i64 = ma.iter().filter(|((n, _), _)| n == name).map(|(_, v)| match v {
                M::Milli(x) => *x,
                M::Ports(_) => 0,
            }).sum();
            prop_assert_eq!(a.scalar(name), Scalar::from_milli(total));
        }
        let ports: BTreeSet<u64> = ma.iter().filter(|((n, _), _)| n == "ports").flat_map(|(_, v)| match v {
            M::Ports(s) => s.clone(),
            M::Milli(_) => BTreeSet::new(),
        }).collect();
        let ap = a.ports();
        check_normal(&ap);
        prop_assert_eq!(set_of(&ap), ports);
        let only = |keep: &dyn Fn(&Option<String>) -> bool| -> Model {
            ma.iter().filter(|((_, r), _)| keep(r)).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        prop_assert_eq!(model_of(&a.unreserved()), only(&|r| r.is_none()));
        for role in ["a", "web", "zzz", "*"] {
            prop_assert_eq!(model_of(&a.reserved_for(role)), only(&|r| r.as_deref() == Some(role)));
            prop_assert_eq!(
                model_of(&a.allocatable_to(role)),
                only(&|r| r.is_none() || r.as_deref() == Some(role))
            );
            let picked = a.pick(&b, role);
            prop_assert_eq!(picked.as_ref().map(model_of), model_pick(&ma, &mb, role));
        }

        // The flag form and the wire form read back to the same value.
        prop_assert_eq!(&Resources::parse(&a.to_string()).unwrap(), &a);
        prop_assert_eq!(&Resources::parse(&sum.to_string()).unwrap(), &sum);
        prop_assert_eq!(&Resources::try_from_proto(&a.to_proto()).unwrap(), &a);
    }

    #[test]
    fn order_of_the_input_does_not_matter(
        (list, shuffled) in list_strategy().prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle()))
    ) {
        prop_assert_eq!(build(&list), build(&shuffled));
        let mut one_by_one = Resources::new();
        for r in &shuffled {
            one_by_one.add(&build(std::slice::from_ref(r)));
        }
        prop_assert_eq!(one_by_one, build(&list));
    }
}

/// A disk with an identity: a volume (reserved for db or web, ids v0..v3) or a MOUNT
/// disk (/mnt/d0..d2), of a random size.
fn disk_strategy() -> impl Strategy<Value = v1::Resource> {
    (0u8..2, 0u8..4, 0u8..2, 1u32..2000).prop_map(|(kind, id, role, size)| {
        let role = if role == 0 { "db" } else { "web" };
        let disk = if kind == 0 {
            v1::DiskInfo {
                persistence: Some(v1::disk_info::Persistence {
                    id: format!("v{id}"),
                    principal: "p".into(),
                }),
                container_path: format!("data{id}"),
                ..Default::default()
            }
        } else {
            v1::DiskInfo {
                source: Some(v1::disk_info::Source {
                    r#type: v1::disk_info::source::Type::Mount as i32,
                    root: format!("/mnt/d{}", id % 3),
                }),
                ..Default::default()
            }
        };
        v1::Resource {
            name: "disk".into(),
            scalar: f64::from(size),
            role: role.into(),
            disk: Some(disk),
            ..Default::default()
        }
    })
}

proptest! {
    /// Disks with an identity are entries of their own: they survive the wire, add
    /// and subtract like amounts, are contained only whole, and `pick` of plain
    /// amounts never takes them.
    #[test]
    fn disks_with_an_identity_keep_it(
        plain in list_strategy(),
        disks in prop::collection::vec(disk_strategy(), 0..6),
    ) {
        let mut list = plain.clone();
        list.extend(disks.iter().cloned());
        let all = build(&list);
        prop_assert_eq!(Resources::try_from_proto(&all.to_proto()).unwrap(), all.clone());
        let only_disks = build(&disks);
        let base = build(&plain);
        let mut sum = base.clone();
        sum.add(&only_disks);
        prop_assert_eq!(&sum, &all);
        prop_assert!(all.contains(&only_disks));
        let mut left = all.clone();
        left.subtract(&only_disks);
        prop_assert_eq!(&left, &base);
        for e in only_disks.entries() {
            let whole = Resources::of_entry(e.clone());
            prop_assert!(all.contains(&whole));
            if let Value::Scalar(s) = &e.value
                && s.milli() > 1000
            {
                let mut half = e.clone();
                half.value = Value::Scalar(Scalar::from_milli(s.milli() - 1000));
                prop_assert!(!all.contains(&Resources::of_entry(half)));
            }
        }
        let plain_disk = base.disk();
        if plain_disk.is_positive() {
            let wanted = Resources::new().with_scalar("disk", plain_disk);
            for role in ["db", "web", "*"] {
                if let Some(p) = all.pick(&wanted, role) {
                    prop_assert_eq!(p.volumes().count(), 0);
                    prop_assert!(p.entries().iter().all(|e| e.disk.is_none()));
                }
            }
        }
    }
}
