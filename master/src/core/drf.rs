//! Dominant Resource Fairness bookkeeping: compact scalar allocations and an
//! incrementally sorted set of clients ordered by (dominant share, key).
//!
//! ```text
//!   allocation / recovery of one client ──▶ Sorter::update(key, new share)   O(log n)
//!   allocation loop                     ──▶ Sorter::iter()  lowest share first
//!   cluster total changes               ──▶ caller re-keys every client (rare)
//! ```
//!
//! Shares are computed over the scalar resources only (cpus, mem, disk, gpus), the
//! way Mesos' DRF sorter does; ranges (ports) never dominate.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::Hash;

use strata_proto::Resources;
use strata_proto::resources::Value;

use super::fastmap::FastMap;

/// The scalar resource names DRF looks at, in [`Scalars`] index order.
pub const SCALAR_NAMES: [&str; 4] = ["cpus", "mem", "disk", "gpus"];

/// Scalar quantities in thousandths, indexed like [`SCALAR_NAMES`]. Cheap to copy and
/// add, unlike [`Resources`], so the allocator's hot path works on these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scalars(pub [i64; 4]);

impl Scalars {
    /// The scalar part of `r` (all reservation roles together).
    pub fn of(r: &Resources) -> Scalars {
        let mut out = [0i64; 4];
        for e in r.entries() {
            if let Value::Scalar(s) = &e.value
                && let Some(i) = SCALAR_NAMES.iter().position(|n| *n == e.name)
            {
                out[i] += s.milli();
            }
        }
        Scalars(out)
    }

    pub fn add(&mut self, o: &Scalars) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
    }

    /// Subtracts, clamping every component at zero.
    pub fn sub(&mut self, o: &Scalars) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.saturating_sub(b).max(0);
        }
    }

    /// The dominant share against `total`: the largest fraction over the resources
    /// the cluster has. 0 for an empty cluster.
    pub fn share(&self, total: &Scalars) -> f64 {
        let mut share: f64 = 0.0;
        for (a, t) in self.0.iter().zip(total.0) {
            if t > 0 {
                share = share.max(*a as f64 / t as f64);
            }
        }
        share
    }
}

/// A totally ordered share (f64 compared with `total_cmp`).
#[derive(Clone, Copy, Debug)]
pub struct Share(pub f64);

impl PartialEq for Share {
    fn eq(&self, o: &Share) -> bool {
        self.0.total_cmp(&o.0) == Ordering::Equal
    }
}

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, o: &Share) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Share {
    fn cmp(&self, o: &Share) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Clients ordered by share, ties broken by key. Every operation is O(log n).
#[derive(Debug, Clone)]
pub struct Sorter<K> {
    order: BTreeSet<(Share, K)>,
    shares: FastMap<K, Share>,
}

impl<K> Default for Sorter<K> {
    fn default() -> Self {
        Sorter {
            order: BTreeSet::new(),
            shares: FastMap::default(),
        }
    }
}

impl<K: Ord + Copy + Hash + Eq> Sorter<K> {
    /// Adds `key` with `share`, or moves it if present.
    pub fn insert(&mut self, key: K, share: f64) {
        if let Some(old) = self.shares.insert(key, Share(share)) {
            self.order.remove(&(old, key));
        }
        self.order.insert((Share(share), key));
    }

    pub fn remove(&mut self, key: K) -> bool {
        match self.shares.remove(&key) {
            Some(old) => {
                self.order.remove(&(old, key));
                true
            }
            None => false,
        }
    }

    /// Re-keys `key` if it is present; absent keys stay absent.
    pub fn update(&mut self, key: K, share: f64) {
        if let Some(old) = self.shares.get_mut(&key) {
            if *old == Share(share) {
                return;
            }
            self.order.remove(&(*old, key));
            *old = Share(share);
            self.order.insert((Share(share), key));
        }
    }

    pub fn contains(&self, key: K) -> bool {
        self.shares.contains_key(&key)
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Lowest share first.
    pub fn iter(&self) -> impl Iterator<Item = K> + '_ {
        self.order.iter().map(|(_, k)| *k)
    }

    /// Every key (in share order), for re-keying after the total changed.
    pub fn keys(&self) -> Vec<K> {
        self.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_share() {
        let total = Scalars::of(&Resources::parse("cpus:10;mem:1000;ports:[1-5]").unwrap());
        let a = Scalars::of(&Resources::parse("cpus:1;mem:500").unwrap());
        assert_eq!(a.share(&total), 0.5);
        let mut b = a;
        b.sub(&Scalars::of(&Resources::parse("cpus:2").unwrap()));
        assert_eq!(b.0[0], 0);
        assert_eq!(Scalars::default().share(&Scalars::default()), 0.0);
    }

    #[test]
    fn sorter_orders_by_share_then_key() {
        let mut s = Sorter::default();
        s.insert(3u32, 0.5);
        s.insert(1u32, 0.5);
        s.insert(2u32, 0.1);
        assert_eq!(s.keys(), vec![2, 1, 3]);
        s.update(2, 0.9);
        assert_eq!(s.keys(), vec![1, 3, 2]);
        s.update(7, 0.0);
        assert!(!s.contains(7));
        assert!(s.remove(1));
        assert_eq!(s.keys(), vec![3, 2]);
    }
}
