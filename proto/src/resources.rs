//! Resources maths with no float drift.
//!
//! Scalars (cpus, mem, disk, gpus) are held as fixed-point thousandths ([`Scalar`]), so
//! `0.1 + 0.2` cpus is exactly `0.3` cpus; ports are inclusive integer ranges
//! ([`RangeSet`]). A [`Resources`] value is a normalised bag: at most one entry per
//! (name, reservation role, disk identity), never an empty or zero entry. A disk with
//! a [`Disk`] (a persistent volume, a MOUNT disk) is its own entry and is used whole:
//! [`Resources::contains`] asks for its exact size. Everything read from the
//! wire or from a flag goes through [`Resources::try_from_proto`] or [`Resources::parse`],
//! which reject empty names, unknown names, negative, NaN and infinite values.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::v1;

/// Fixed-point resource quantity in thousandths (Mesos keeps three decimal places too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(i64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);
    /// The fixed-point scale: 1.0 is 1000 units.
    pub const SCALE: i64 = 1000;

    /// From thousandths.
    pub const fn from_milli(milli: i64) -> Scalar {
        Scalar(milli)
    }

    /// From a whole number.
    pub const fn from_int(v: i64) -> Scalar {
        Scalar(v * Self::SCALE)
    }

    /// From a float, rounded to the nearest thousandth. Rejects NaN, infinities and
    /// values too large to hold.
    pub fn from_f64(v: f64) -> Option<Scalar> {
        if !v.is_finite() || v.abs() > 9.0e12 {
            return None;
        }
        Some(Scalar((v * Self::SCALE as f64).round() as i64))
    }

    pub fn milli(self) -> i64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl std::ops::Add for Scalar {
    type Output = Scalar;
    fn add(self, o: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(o.0))
    }
}

impl std::ops::Sub for Scalar {
    type Output = Scalar;
    fn sub(self, o: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(o.0))
    }
}

impl std::ops::AddAssign for Scalar {
    fn add_assign(&mut self, o: Scalar) {
        *self = *self + o;
    }
}

impl std::ops::SubAssign for Scalar {
    fn sub_assign(&mut self, o: Scalar) {
        *self = *self - o;
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::SCALE;
        let frac = (self.0 % Self::SCALE).abs();
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let sign = if self.0 < 0 && whole == 0 { "-" } else { "" };
            let s = format!("{frac:03}");
            write!(f, "{sign}{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

/// A set of inclusive integer ranges, kept sorted and merged (no two ranges overlap or
/// touch).
///
/// Costs, for sets of `n` and `m` ranges: [`insert`](RangeSet::insert) is a binary
/// search plus one shift of the tail; [`contains_value`](RangeSet::contains_value) is
/// O(log n); [`contains`](RangeSet::contains) is O(m log n); [`union`](RangeSet::union)
/// and [`remove`](RangeSet::remove) are one merge pass, O(n + m).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeSet(Vec<(u64, u64)>);

/// Below this many ranges, [`RangeSet::union`] inserts them one by one (a binary search
/// and a shift each) instead of building a merged copy.
const SMALL_UNION: usize = 8;

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet(Vec::new())
    }

    /// One inclusive range; empty when `begin > end`.
    pub fn from_range(begin: u64, end: u64) -> RangeSet {
        if begin > end {
            RangeSet::new()
        } else {
            RangeSet(vec![(begin, end)])
        }
    }

    /// Ranges in any order, overlapping or not (`begin > end` ones are dropped): one
    /// sort and one merge pass, O(n log n).
    fn from_unsorted(mut v: Vec<(u64, u64)>) -> RangeSet {
        v.retain(|&(b, e)| b <= e);
        v.sort_unstable();
        coalesce(&mut v);
        RangeSet(v)
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many integers the set holds.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    pub fn contains_value(&self, v: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e < v);
        self.0.get(i).is_some_and(|&(b, _)| b <= v)
    }

    /// Adds `[begin, end]`, merging with neighbours.
    pub fn insert(&mut self, begin: u64, end: u64) {
        if begin > end {
            return;
        }
        // The ranges that overlap or touch `[begin, end]` are `lo..hi`.
        let lo = self
            .0
            .partition_point(|&(_, e)| e.saturating_add(1) < begin);
        let hi = lo + self.0[lo..].partition_point(|&(b, _)| b <= end.saturating_add(1));
        if lo == hi {
            self.0.insert(lo, (begin, end));
        } else {
            let merged = (begin.min(self.0[lo].0), end.max(self.0[hi - 1].1));
            self.0[lo] = merged;
            self.0.drain(lo + 1..hi);
        }
    }

    pub fn union(&mut self, other: &RangeSet) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        if other.0.len() <= SMALL_UNION {
            for &(b, e) in &other.0 {
                self.insert(b, e);
            }
            return;
        }
        // One merge pass over both sorted lists.
        let (a, b) = (&self.0, &other.0);
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = if j == b.len() || (i < a.len() && a[i] <= b[j]) {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            };
            push_merged(&mut out, next);
        }
        self.0 = out;
    }

    /// Removes every value of `other` (values not present are ignored).
    pub fn remove(&mut self, other: &RangeSet) {
        if self.0.is_empty() || other.0.is_empty() {
            return;
        }
        let o = &other.0;
        let mut out = Vec::with_capacity(self.0.len() + o.len());
        let mut j = 0;
        for &(b, e) in &self.0 {
            // Skip what ends before this range; `o[j]` may reach into later ranges.
            while j < o.len() && o[j].1 < b {
                j += 1;
            }
            let mut cur = b;
            let mut covered = false;
            while j < o.len() && o[j].0 <= e {
                let (ob, oe) = o[j];
                if ob > cur {
                    out.push((cur, ob - 1));
                }
                if oe >= e {
                    covered = true;
                    break;
                }
                cur = oe + 1;
                j += 1;
            }
            if !covered {
                out.push((cur, e));
            }
        }
        self.0 = out;
    }

    /// Whether every value of `other` is in `self`.
    pub fn contains(&self, other: &RangeSet) -> bool {
        let mut i = 0;
        for &(ob, oe) in &other.0 {
            // The only range that can hold `[ob, oe]` is the first that ends at or after `ob`.
            i += self.0[i..].partition_point(|&(_, e)| e < ob);
            match self.0.get(i) {
                Some(&(b, e)) if b <= ob && oe <= e => {}
                _ => return false,
            }
        }
        true
    }

    /// The values in both sets: O(m log n) for the smaller set's `m` ranges, plus the
    /// size of the result.
    fn intersection(&self, other: &RangeSet) -> RangeSet {
        let (small, big) = if self.0.len() <= other.0.len() {
            (&self.0, &other.0)
        } else {
            (&other.0, &self.0)
        };
        let mut out = Vec::new();
        let mut i = 0;
        for &(b, e) in small {
            i += big[i..].partition_point(|&(_, be)| be < b);
            // `big[i]` may also reach into the next range of `small`: `i` stays.
            for &(bb, be) in big[i..].iter().take_while(|&&(bb, _)| bb <= e) {
                out.push((b.max(bb), e.min(be)));
            }
        }
        RangeSet(out)
    }

    /// The lowest `n` values as a set, or None when there are fewer.
    pub fn take_lowest(&self, n: u64) -> Option<RangeSet> {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            let take = len.min(left);
            out.push((b, b + take - 1));
            left -= take;
        }
        (left == 0).then_some(RangeSet(out))
    }
}

/// Appends `r` (whose begin is not below any range in `out`), merging it with the last
/// range when they overlap or touch.
fn push_merged(out: &mut Vec<(u64, u64)>, (b, e): (u64, u64)) {
    match out.last_mut() {
        Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
        _ => out.push((b, e)),
    }
}

/// Merges, in place, the overlapping and touching ranges of a list sorted by begin.
fn coalesce(v: &mut Vec<(u64, u64)>) {
    let mut w = 0;
    for i in 0..v.len() {
        let (b, e) = v[i];
        if w > 0 && b <= v[w - 1].1.saturating_add(1) {
            v[w - 1].1 = v[w - 1].1.max(e);
        } else {
            v[w] = (b, e);
            w += 1;
        }
    }
    v.truncate(w);
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        write!(f, "]")
    }
}

/// The kind of a known resource name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    Ranges,
}

/// Known resource names and their kinds. Anything else is refused.
pub fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "cpus" | "mem" | "disk" | "gpus" => Some(Kind::Scalar),
        "ports" => Some(Kind::Ranges),
        _ => None,
    }
}

/// A value of one resource entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Scalar(Scalar),
    Ranges(RangeSet),
}

/// One normalised entry of a [`Resources`] bag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Reservation role; `None` is unreserved (`*`).
    pub role: Option<String>,
    /// `disk` only: a persistent volume or a MOUNT disk (used whole).
    pub disk: Option<Box<Disk>>,
    pub value: Value,
}

/// What makes a disk entry more than an amount of work-dir disk (the wire `DiskInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Disk {
    /// A MOUNT disk's root on the agent; `None`: the agent's work-dir disk.
    pub mount: Option<String>,
    /// Set on persistent volumes.
    pub persistence: Option<Persistence>,
}

/// A persistent volume's identity and where tasks see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    pub id: String,
    /// Who created it.
    pub principal: String,
    /// Relative to the task's sandbox, without `..`.
    pub container_path: String,
    pub read_only: bool,
}

impl Disk {
    /// The same disk, used the same way (mount, id, container path, mode); the
    /// creator's principal is not compared when `other` leaves it empty.
    pub fn same_use(&self, other: &Disk) -> bool {
        self.mount == other.mount
            && match (&self.persistence, &other.persistence) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.id == b.id
                        && a.container_path == b.container_path
                        && a.read_only == b.read_only
                        && (b.principal.is_empty() || a.principal == b.principal)
                }
                _ => false,
            }
    }

    /// The part of the identity entries are sorted and merged by: (mount root, id).
    fn key(&self) -> (&str, &str) {
        (
            self.mount.as_deref().unwrap_or(""),
            self.persistence.as_ref().map_or("", |p| p.id.as_str()),
        )
    }
}

impl Entry {
    /// The persistent volume's identity, when the entry is one.
    pub fn persistence(&self) -> Option<&Persistence> {
        self.disk.as_ref().and_then(|d| d.persistence.as_ref())
    }

    /// What a volume was made of: the same disk without its persistence (plain
    /// reserved disk, or the reserved MOUNT disk). `None` for other entries.
    pub fn volume_base(&self) -> Option<Entry> {
        let disk = self.disk.as_ref()?;
        disk.persistence.as_ref()?;
        Some(Entry {
            name: self.name.clone(),
            role: self.role.clone(),
            disk: disk.mount.clone().map(|mount| {
                Box::new(Disk {
                    mount: Some(mount),
                    persistence: None,
                })
            }),
            value: self.value.clone(),
        })
    }
}

/// The longest persistence id, container path and MOUNT root.
const MAX_DISK_TEXT: usize = 128;

/// Why resources read from the wire or a flag were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource with an empty name")]
    EmptyName,
    #[error("unknown resource '{0}' (known: cpus, mem, disk, gpus, ports)")]
    UnknownName(String),
    #[error("resource '{name}' is not a finite number")]
    NotFinite { name: String },
    #[error("resource '{name}' is negative ({value})")]
    Negative { name: String, value: f64 },
    #[error("resource '{name}' must be a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },
    #[error("resource '{name}' has an invalid range {begin}-{end}")]
    BadRange { name: String, begin: u64, end: u64 },
    #[error("cannot parse resources '{input}': {reason}")]
    Parse { input: String, reason: String },
    #[error("invalid disk '{name}': {reason}")]
    BadDisk { name: String, reason: String },
}

/// A normalised bag of resources. See the module docs.
///
/// Entries are kept sorted by (name, role), unreserved first within a name, so every
/// lookup of one (name, role) is a binary search. Costs, for bags of `n` and `m`
/// entries, plus the range-set work of the entries that meet (see [`RangeSet`]):
/// [`add`](Resources::add) is one merge pass, O(n + m) (a binary search and an insert
/// per entry when `other` has only a few); [`contains`](Resources::contains) walks
/// `other` with a galloping search, O(m log(n / m) + m); [`subtract`](Resources::subtract)
/// likewise, plus O(n) when an entry empties; [`scalar`](Resources::scalar),
/// [`ranges`](Resources::ranges) and [`pick`](Resources::pick) are binary searches
/// per name or entry; [`unreserved`](Resources::unreserved),
/// [`reserved_for`](Resources::reserved_for) and
/// [`allocatable_to`](Resources::allocatable_to) a binary search per distinct name;
/// building from a list ([`try_from_proto`](Resources::try_from_proto),
/// [`parse`](Resources::parse)) sorts once, O(n log n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    entries: Vec<Entry>,
}

/// Below this many entries, [`Resources::add`] inserts them one by one (a binary search
/// and a shift each) instead of building a merged copy.
const SMALL_ADD: usize = 8;

/// The sort key of an entry: (name, role, disk identity), `None` (unreserved, plain
/// disk) first.
type Key<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a str)>);

fn key(e: &Entry) -> Key<'_> {
    (
        e.name.as_str(),
        e.role.as_deref(),
        e.disk.as_deref().map(Disk::key),
    )
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Scalar(s) => !s.is_positive(),
        Value::Ranges(r) => r.is_empty(),
    }
}

/// Adds `b` to `a`. Kinds are fixed per name, so a mismatch cannot happen for
/// validated input; it keeps `a`.
fn merge_value(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Scalar(a), Value::Scalar(b)) => *a += *b,
        (Value::Ranges(a), Value::Ranges(b)) => a.union(b),
        _ => {}
    }
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Normalises a list of entries in any order: one stable sort by (name, role), then
    /// one pass that sums the scalars and merges the ranges of equal keys. The same
    /// result as adding the entries one by one (on a kind mismatch the first wins).
    fn from_entries(mut list: Vec<Entry>) -> Resources {
        list.retain(|e| !is_empty_value(&e.value));
        // Stable: on a kind mismatch (not possible for validated input) the first wins.
        list.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
        let mut iter = list.into_iter().peekable();
        while let Some(Entry {
            name,
            role,
            disk,
            value,
        }) = iter.next()
        {
            let first_key = (
                name.as_str(),
                role.as_deref(),
                disk.as_deref().map(Disk::key),
            );
            let same = |n: &Entry| key(n) == first_key;
            let value = match value {
                Value::Scalar(mut s) => {
                    while let Some(next) = iter.next_if(same) {
                        if let Value::Scalar(t) = next.value {
                            s += t;
                        }
                    }
                    Value::Scalar(s)
                }
                Value::Ranges(RangeSet(mut all)) => {
                    let mut more = false;
                    while let Some(next) = iter.next_if(same) {
                        if let Value::Ranges(RangeSet(t)) = next.value {
                            all.extend(t);
                            more = true;
                        }
                    }
                    if more {
                        Value::Ranges(RangeSet::from_unsorted(all))
                    } else {
                        Value::Ranges(RangeSet(all))
                    }
                }
            };
            entries.push(Entry {
                name,
                role,
                disk,
                value,
            });
        }
        Resources { entries }
    }

    /// Where the plain entry (name, role) is, or where it would go.
    fn position(&self, name: &str, role: Option<&str>) -> Result<usize, usize> {
        self.position_of(&(name, role, None))
    }

    /// Where the entry with this key is, or where it would go.
    fn position_of(&self, k: &Key<'_>) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| key(e).cmp(k))
    }

    /// [`position`](Resources::position) among the entries from `from` on, by a
    /// galloping search: looking up `m` sorted keys one after the other from where the
    /// last one was found costs O(m log(n / m) + m), never more than a binary search
    /// each, nor more than one merge pass.
    fn position_from(&self, from: usize, target: Key<'_>) -> Result<usize, usize> {
        let rest = &self.entries[from..];
        let mut bound = 1;
        while bound < rest.len() && key(&rest[bound - 1]) < target {
            bound *= 2;
        }
        let window = &rest[..bound.min(rest.len())];
        match window.binary_search_by(|e| key(e).cmp(&target)) {
            Ok(i) => Ok(from + i),
            Err(i) => Err(from + i),
        }
    }

    fn find(&self, name: &str, role: Option<&str>) -> Option<&Value> {
        self.position(name, role)
            .ok()
            .map(|i| &self.entries[i].value)
    }

    /// The entries named `name` (one per role, unreserved first).
    fn named(&self, name: &str) -> &[Entry] {
        let lo = self.entries.partition_point(|e| e.name.as_str() < name);
        let len = self.entries[lo..].partition_point(|e| e.name == name);
        &self.entries[lo..lo + len]
    }

    /// The groups of entries sharing a name, in order.
    fn groups(&self) -> impl Iterator<Item = &[Entry]> {
        let mut rest = self.entries.as_slice();
        std::iter::from_fn(move || {
            let first = rest.first()?;
            let len = rest.partition_point(|e| e.name == first.name);
            let (group, tail) = rest.split_at(len);
            rest = tail;
            Some(group)
        })
    }

    /// The entries (in order) of each name group that `pick` chooses.
    fn filter_groups(&self, pick: impl Fn(&[Entry], &mut Vec<Entry>)) -> Resources {
        let mut entries = Vec::new();
        for group in self.groups() {
            pick(group, &mut entries);
        }
        Resources { entries }
    }

    /// Builder-style: adds an unreserved scalar. Negative or zero amounts are ignored.
    pub fn with_scalar(mut self, name: &str, amount: Scalar) -> Resources {
        self.add_entry(Entry {
            name: name.to_string(),
            role: None,
            disk: None,
            value: Value::Scalar(amount),
        });
        self
    }

    /// Builder-style: adds unreserved ranges.
    pub fn with_ranges(mut self, name: &str, ranges: RangeSet) -> Resources {
        self.add_entry(Entry {
            name: name.to_string(),
            role: None,
            disk: None,
            value: Value::Ranges(ranges),
        });
        self
    }

    /// cpus, mem (MiB) as floats; convenience for callers that build requests.
    pub fn cpus_mem(cpus: f64, mem: f64) -> Resources {
        Resources::new()
            .with_scalar("cpus", Scalar::from_f64(cpus).unwrap_or_default())
            .with_scalar("mem", Scalar::from_f64(mem).unwrap_or_default())
    }

    /// The total of a scalar resource across roles.
    pub fn scalar(&self, name: &str) -> Scalar {
        self.named(name)
            .iter()
            .map(|e| match &e.value {
                Value::Scalar(s) => *s,
                Value::Ranges(_) => Scalar::ZERO,
            })
            .fold(Scalar::ZERO, |a, b| a + b)
    }

    /// The union of a range resource across roles.
    pub fn ranges(&self, name: &str) -> RangeSet {
        let sets: Vec<&RangeSet> = self
            .named(name)
            .iter()
            .filter_map(|e| match &e.value {
                Value::Ranges(r) => Some(r),
                Value::Scalar(_) => None,
            })
            .collect();
        match sets.as_slice() {
            [] => RangeSet::new(),
            [one] => (*one).clone(),
            many => {
                RangeSet::from_unsorted(many.iter().flat_map(|r| r.0.iter().copied()).collect())
            }
        }
    }

    pub fn cpus(&self) -> Scalar {
        self.scalar("cpus")
    }

    pub fn mem(&self) -> Scalar {
        self.scalar("mem")
    }

    pub fn disk(&self) -> Scalar {
        self.scalar("disk")
    }

    pub fn ports(&self) -> RangeSet {
        self.ranges("ports")
    }

    fn add_entry(&mut self, entry: Entry) {
        if is_empty_value(&entry.value) {
            return;
        }
        match self.position_of(&key(&entry)) {
            Ok(i) => merge_value(&mut self.entries[i].value, &entry.value),
            Err(i) => self.entries.insert(i, entry),
        }
    }

    /// Adds everything in `other`.
    pub fn add(&mut self, other: &Resources) {
        if other.entries.len() <= SMALL_ADD {
            for e in &other.entries {
                self.add_entry(e.clone());
            }
            return;
        }
        // One merge pass over both sorted lists.
        let mut out = Vec::with_capacity(self.entries.len() + other.entries.len());
        let mut mine = std::mem::take(&mut self.entries).into_iter().peekable();
        for theirs in &other.entries {
            while let Some(e) = mine.next_if(|e| key(e) < key(theirs)) {
                out.push(e);
            }
            match mine.next_if(|e| key(e) == key(theirs)) {
                Some(mut e) => {
                    merge_value(&mut e.value, &theirs.value);
                    out.push(e);
                }
                None => out.push(theirs.clone()),
            }
        }
        out.extend(mine);
        self.entries = out;
    }

    /// Whether `other` fits inside `self`, entry by entry (same name, role and disk;
    /// a disk with a [`Disk`] only whole, with the same volume details but for the
    /// creator's principal, which a task need not repeat).
    pub fn contains(&self, other: &Resources) -> bool {
        // `other` is sorted too: each lookup starts where the last one ended.
        let mut from = 0;
        other.entries.iter().all(|o| {
            let Ok(i) = self.position_from(from, key(o)) else {
                return false;
            };
            from = i + 1;
            let mine = &self.entries[i];
            if let Some(theirs) = &o.disk {
                return mine.disk.as_deref().is_some_and(|d| d.same_use(theirs))
                    && mine.value == o.value;
            }
            match (&mine.value, &o.value) {
                (Value::Scalar(a), Value::Scalar(b)) => a >= b,
                (Value::Ranges(a), Value::Ranges(b)) => a.contains(b),
                _ => false,
            }
        })
    }

    /// Removes `other`; amounts not present are clamped at zero. Use [`contains`]
    /// first when the caller must know it fits.
    ///
    /// [`contains`]: Resources::contains
    pub fn subtract(&mut self, other: &Resources) {
        let mut emptied = false;
        let mut from = 0;
        for o in &other.entries {
            let found = self.position_from(from, key(o));
            from = found.unwrap_or_else(|i| i);
            if let Ok(i) = found {
                let e = &mut self.entries[i];
                match (&mut e.value, &o.value) {
                    (Value::Scalar(a), Value::Scalar(b)) => {
                        *a = if *a > *b { *a - *b } else { Scalar::ZERO }
                    }
                    (Value::Ranges(a), Value::Ranges(b)) => a.remove(b),
                    _ => {}
                }
                emptied |= is_empty_value(&e.value);
            }
        }
        if emptied {
            self.entries.retain(|e| !is_empty_value(&e.value));
        }
    }

    /// `self - other`, when `other` fits.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut out = self.clone();
        out.subtract(other);
        Some(out)
    }

    /// Only the unreserved entries.
    pub fn unreserved(&self) -> Resources {
        self.filter_groups(|group, out| out.extend_from_slice(of_role(group, None)))
    }

    /// Only the entries reserved for `role`.
    pub fn reserved_for(&self, role: &str) -> Resources {
        self.filter_groups(|group, out| out.extend_from_slice(of_role(group, Some(role))))
    }

    /// What a framework in `role` may be offered: unreserved plus reserved for `role`.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter_groups(|group, out| {
            out.extend_from_slice(of_role(group, None));
            out.extend_from_slice(of_role(group, Some(role)));
        })
    }

    /// The persistent volumes.
    pub fn volumes(&self) -> impl Iterator<Item = &Entry> {
        self.named("disk")
            .iter()
            .filter(|e| e.persistence().is_some())
    }

    /// The entries without a persistent volume (what can be reserved or unreserved).
    pub fn without_volumes(&self) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|e| e.persistence().is_none())
                .cloned()
                .collect(),
        }
    }

    /// `self` with each volume's details (its creator) taken from the same volume in
    /// `from`, where it is there.
    pub fn with_details_of(&self, from: &Resources) -> Resources {
        let mut out = self.clone();
        for e in out.entries.iter_mut().filter(|e| e.disk.is_some()) {
            if let Ok(i) = from.position_of(&key(e)) {
                e.disk.clone_from(&from.entries[i].disk);
            }
        }
        out
    }

    /// One entry as a bag.
    pub fn of_entry(entry: Entry) -> Resources {
        Resources::from_entries(vec![entry])
    }

    /// The same resources with every role replaced by `role` (`None`: unreserved).
    /// Disk identities are kept.
    pub fn with_role(&self, role: Option<&str>) -> Resources {
        Resources::from_entries(
            self.entries
                .iter()
                .map(|e| Entry {
                    role: role.map(str::to_string),
                    ..e.clone()
                })
                .collect(),
        )
    }

    /// Where `wanted` (amounts by name; roles in it are ignored; a volume or MOUNT disk
    /// in it must be in `self` as it is) comes from in `self`
    /// for a framework in `role`: from the entries reserved for `role` first, the rest
    /// unreserved, as Marathon takes its role's reservations before shared resources.
    /// `None` when it does not fit. The result [`contains`](Resources::contains) is
    /// inside `self`, so it can be launched from an offer and subtracted from it.
    pub fn pick(&self, wanted: &Resources, role: &str) -> Option<Resources> {
        let mut out = Vec::new();
        let reserved_role = (role != "*").then(|| role.to_string());
        for w in &wanted.entries {
            if w.disk.is_some() {
                // A volume or MOUNT disk is taken as it is, whole, or not at all.
                if !self.contains(&Resources::of_entry(w.clone())) {
                    return None;
                }
                out.push(w.clone());
                continue;
            }
            let reserved = reserved_role
                .as_deref()
                .and_then(|r| self.find(&w.name, Some(r)));
            let unreserved = self.find(&w.name, None);
            match &w.value {
                Value::Scalar(need) => {
                    let from_reserved = match reserved {
                        Some(Value::Scalar(have)) => (*have).min(*need),
                        _ => Scalar::ZERO,
                    };
                    let rest = *need - from_reserved;
                    let have_unreserved = match unreserved {
                        Some(Value::Scalar(have)) => *have,
                        _ => Scalar::ZERO,
                    };
                    if rest > have_unreserved {
                        return None;
                    }
                    for (amount, r) in [(from_reserved, &reserved_role), (rest, &None)] {
                        out.push(Entry {
                            name: w.name.clone(),
                            role: r.clone(),
                            disk: None,
                            value: Value::Scalar(amount),
                        });
                    }
                }
                Value::Ranges(need) => {
                    // The part of `need` inside the reservation, and the rest.
                    let from_reserved = match reserved {
                        Some(Value::Ranges(have)) => need.intersection(have),
                        _ => RangeSet::new(),
                    };
                    let mut rest = need.clone();
                    rest.remove(&from_reserved);
                    let fits = match unreserved {
                        Some(Value::Ranges(have)) => have.contains(&rest),
                        _ => rest.is_empty(),
                    };
                    if !fits {
                        return None;
                    }
                    for (ranges, r) in [(from_reserved, &reserved_role), (rest, &None)] {
                        out.push(Entry {
                            name: w.name.clone(),
                            role: r.clone(),
                            disk: None,
                            value: Value::Ranges(ranges),
                        });
                    }
                }
            }
        }
        Some(Resources::from_entries(out))
    }

    /// Validates and normalises wire resources.
    pub fn try_from_proto(list: &[v1::Resource]) -> Result<Resources, ResourceError> {
        let entries = list
            .iter()
            .map(|r| {
                let role = role_from_proto(r.role.clone());
                Ok(Entry {
                    value: value_from_proto(r)?,
                    disk: disk_from_proto(r, role.is_some())?,
                    name: r.name.clone(),
                    role,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One sort for the whole list, not one per entry.
        Ok(Resources::from_entries(entries))
    }

    /// [`try_from_proto`](Resources::try_from_proto) of a list it may take apart.
    fn from_proto_owned(list: Vec<v1::Resource>) -> Result<Resources, ResourceError> {
        let entries = list
            .into_iter()
            .map(|r| {
                let role = role_from_proto(r.role.clone());
                Ok(Entry {
                    value: value_from_proto(&r)?,
                    disk: disk_from_proto(&r, role.is_some())?,
                    name: r.name,
                    role,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Resources::from_entries(entries))
    }

    /// The wire form.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.entries
            .iter()
            .map(|e| v1::Resource {
                name: e.name.clone(),
                scalar: match &e.value {
                    Value::Scalar(s) => s.as_f64(),
                    Value::Ranges(_) => 0.0,
                },
                ranges: match &e.value {
                    Value::Ranges(r) => r
                        .ranges()
                        .iter()
                        .map(|&(begin, end)| v1::Range { begin, end })
                        .collect(),
                    Value::Scalar(_) => Vec::new(),
                },
                role: e.role.clone().unwrap_or_default(),
                disk: e.disk.as_deref().map(disk_to_proto),
            })
            .collect()
    }

    /// Parses the flag form `cpus:4;mem:4096;disk:10000;ports:[31000-32000]`, with an
    /// optional reservation role as `cpus(role):2`.
    pub fn parse(input: &str) -> Result<Resources, ResourceError> {
        let perr = |reason: String| ResourceError::Parse {
            input: input.to_string(),
            reason,
        };
        let mut out = Vec::new();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            // `name(role)[MOUNT:/path]:value`: the bracket may hold a colon.
            let (key, disk, value) = match part.split_once('[') {
                Some((k, rest)) if !k.contains(':') => {
                    let (inside, after) = rest
                        .split_once(']')
                        .ok_or_else(|| perr(format!("'{part}' has an unclosed '['")))?;
                    let value = after
                        .trim()
                        .strip_prefix(':')
                        .ok_or_else(|| perr(format!("'{part}' is not name:value")))?;
                    (k, Some(parse_disk(inside).map_err(perr)?), value)
                }
                _ => {
                    let (k, v) = part
                        .split_once(':')
                        .ok_or_else(|| perr(format!("'{part}' is not name:value")))?;
                    (k, None, v)
                }
            };
            let key = key.trim();
            let (name, role) = match key.split_once('(') {
                Some((n, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| perr(format!("'{key}' has an unclosed role")))?;
                    (n.trim(), role.trim().to_string())
                }
                None => (key, String::new()),
            };
            let value = value.trim();
            let mut res = v1::Resource {
                name: name.to_string(),
                role,
                disk,
                ..Default::default()
            };
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| perr(format!("'{value}' has an unclosed '['")))?;
                for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let (b, e) = r.split_once('-').unwrap_or((r, r));
                    let begin = b
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| perr(format!("bad range '{r}'")))?;
                    let end = e
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| perr(format!("bad range '{r}'")))?;
                    res.ranges.push(v1::Range { begin, end });
                }
                if res.ranges.is_empty() {
                    return Err(perr(format!("'{name}' has no ranges")));
                }
            } else {
                res.scalar = value
                    .parse::<f64>()
                    .map_err(|_| perr(format!("'{value}' is not a number")))?;
            }
            out.push(res);
        }
        Resources::from_proto_owned(out)
    }

    /// DRF dominant share of `self` against `total`: the largest fraction among the
    /// scalar resources (cpus, mem, disk, gpus). 0 when `total` has none.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let mut share: f64 = 0.0;
        for name in ["cpus", "mem", "disk", "gpus"] {
            let t = total.scalar(name).milli();
            if t > 0 {
                share = share.max(self.scalar(name).milli() as f64 / t as f64);
            }
        }
        share
    }
}

/// The part of each name group reserved for `role` (`None`: unreserved); entries of
/// one role are next to each other.
fn of_role<'a>(group: &'a [Entry], role: Option<&str>) -> &'a [Entry] {
    let lo = group.partition_point(|e| e.role.as_deref() < role);
    let len = group[lo..].partition_point(|e| e.role.as_deref() == role);
    &group[lo..lo + len]
}

/// The bracket of the flag form: `MOUNT:/mnt/disk1` (agents offer MOUNT disks; volumes
/// are made by CREATE, not by flags).
fn parse_disk(inside: &str) -> Result<v1::DiskInfo, String> {
    let root = inside
        .trim()
        .strip_prefix("MOUNT:")
        .ok_or_else(|| format!("'[{inside}]' is not a disk source: write [MOUNT:/path]"))?;
    Ok(v1::DiskInfo {
        source: Some(v1::disk_info::Source {
            r#type: v1::disk_info::source::Type::Mount as i32,
            root: root.trim().to_string(),
        }),
        ..Default::default()
    })
}

/// Whether `text` is a valid persistence id: `[A-Za-z0-9_.-]`, not `.` or `..`.
fn valid_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_DISK_TEXT
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A relative path inside the sandbox: no `..`, not absolute, no empty part.
pub fn valid_container_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the container path is empty".into());
    }
    if path.len() > MAX_DISK_TEXT {
        return Err(format!(
            "the container path is longer than {MAX_DISK_TEXT} bytes"
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "the container path '{path}' is absolute: give a path relative to the task's sandbox"
        ));
    }
    for part in path.trim_end_matches('/').split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "the container path '{path}' has an empty, '.' or '..' part"
            ));
        }
    }
    if path.contains('\0') {
        return Err("the container path holds a NUL byte".into());
    }
    Ok(())
}

/// The validated disk identity of a wire resource.
fn disk_from_proto(r: &v1::Resource, reserved: bool) -> Result<Option<Box<Disk>>, ResourceError> {
    let Some(d) = &r.disk else {
        return Ok(None);
    };
    let bad = |reason: String| ResourceError::BadDisk {
        name: r.name.clone(),
        reason,
    };
    if r.name != "disk" {
        return Err(bad("only a disk resource has disk info".into()));
    }
    let mount = match &d.source {
        None => None,
        Some(src) => {
            if src.r#type != v1::disk_info::source::Type::Mount as i32 {
                return Err(bad("the source type must be MOUNT".into()));
            }
            let root = src.root.trim_end_matches('/');
            if !root.starts_with('/')
                || root.len() > MAX_DISK_TEXT
                || root.split('/').any(|p| p == "..")
                || root.contains('\0')
            {
                return Err(bad(format!(
                    "the MOUNT root '{}' must be an absolute path without '..'",
                    src.root
                )));
            }
            Some(root.to_string())
        }
    };
    let persistence = match &d.persistence {
        None => {
            if !d.container_path.is_empty() {
                return Err(bad(
                    "a container path needs a persistent volume (disk.persistence)".into(),
                ));
            }
            if mount.is_none() {
                return Ok(None);
            }
            None
        }
        Some(p) => {
            if !valid_id(&p.id) {
                return Err(bad(format!(
                    "persistence id '{}' must be 1 to {MAX_DISK_TEXT} of [A-Za-z0-9_.-] (not '.' or '..')",
                    p.id
                )));
            }
            if !reserved {
                return Err(bad(format!(
                    "persistent volume '{}' is not reserved: a volume is made of disk reserved for a role",
                    p.id
                )));
            }
            if p.principal.len() > 256 {
                return Err(bad("the volume's principal is longer than 256 bytes".into()));
            }
            valid_container_path(&d.container_path).map_err(bad)?;
            let read_only = match v1::volume::Mode::try_from(d.mode) {
                Ok(v1::volume::Mode::Ro) => true,
                Ok(_) => false,
                Err(_) => return Err(bad(format!("unknown volume mode {}", d.mode))),
            };
            Some(Persistence {
                id: p.id.clone(),
                principal: p.principal.clone(),
                container_path: d.container_path.trim_end_matches('/').to_string(),
                read_only,
            })
        }
    };
    Ok(Some(Box::new(Disk { mount, persistence })))
}

/// The wire form of a disk identity.
fn disk_to_proto(d: &Disk) -> v1::DiskInfo {
    v1::DiskInfo {
        persistence: d.persistence.as_ref().map(|p| v1::disk_info::Persistence {
            id: p.id.clone(),
            principal: p.principal.clone(),
        }),
        container_path: d
            .persistence
            .as_ref()
            .map(|p| p.container_path.clone())
            .unwrap_or_default(),
        mode: match &d.persistence {
            Some(p) if p.read_only => v1::volume::Mode::Ro as i32,
            Some(_) => v1::volume::Mode::Rw as i32,
            None => 0,
        },
        source: d.mount.as_ref().map(|root| v1::disk_info::Source {
            r#type: v1::disk_info::source::Type::Mount as i32,
            root: root.clone(),
        }),
    }
}

/// `[MOUNT:/mnt/d]`, `[ID:data]`, `[ID:data:ro]`, `[ID:data@/mnt/d]`: the display
/// form of a disk identity.
impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.persistence, &self.mount) {
            (None, Some(root)) => write!(f, "[MOUNT:{root}]"),
            (None, None) => Ok(()),
            (Some(p), mount) => {
                write!(f, "[{}:{}", p.id, p.container_path)?;
                if p.read_only {
                    write!(f, ":ro")?;
                }
                if let Some(root) = mount {
                    write!(f, "@{root}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// The reservation role of a wire resource: `""` and `*` are unreserved.
fn role_from_proto(role: String) -> Option<String> {
    if role.is_empty() || role == "*" {
        None
    } else {
        Some(role)
    }
}

/// The validated value of one wire resource.
fn value_from_proto(r: &v1::Resource) -> Result<Value, ResourceError> {
    if r.name.trim().is_empty() {
        return Err(ResourceError::EmptyName);
    }
    let kind = kind_of(&r.name).ok_or_else(|| ResourceError::UnknownName(r.name.clone()))?;
    Ok(match kind {
        Kind::Scalar => {
            if !r.ranges.is_empty() {
                return Err(ResourceError::WrongKind {
                    name: r.name.clone(),
                    expected: "scalar",
                });
            }
            if !r.scalar.is_finite() {
                return Err(ResourceError::NotFinite {
                    name: r.name.clone(),
                });
            }
            if r.scalar < 0.0 {
                return Err(ResourceError::Negative {
                    name: r.name.clone(),
                    value: r.scalar,
                });
            }
            Value::Scalar(
                Scalar::from_f64(r.scalar).ok_or_else(|| ResourceError::NotFinite {
                    name: r.name.clone(),
                })?,
            )
        }
        Kind::Ranges => {
            if r.scalar != 0.0 {
                return Err(ResourceError::WrongKind {
                    name: r.name.clone(),
                    expected: "list of ranges",
                });
            }
            let mut set = Vec::with_capacity(r.ranges.len());
            for range in &r.ranges {
                if range.begin > range.end || range.end > 65535 {
                    return Err(ResourceError::BadRange {
                        name: r.name.clone(),
                        begin: range.begin,
                        end: range.end,
                    });
                }
                set.push((range.begin, range.end));
            }
            Value::Ranges(RangeSet::from_unsorted(set))
        }
    })
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                write!(f, ";")?;
            }
            write!(f, "{}", e.name)?;
            if let Some(role) = &e.role {
                write!(f, "({role})")?;
            }
            if let Some(disk) = &e.disk {
                write!(f, "{disk}")?;
            }
            match &e.value {
                Value::Scalar(s) => write!(f, ":{s}")?,
                Value::Ranges(r) => write!(f, ":{r}")?,
            }
        }
        Ok(())
    }
}

/// JSON form for people: `{"cpus": 4.0, "mem": 4096.0, "ports": "[31000-32000]"}`,
/// reserved entries keyed `cpus(role)`.
impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for e in &self.entries {
            let mut key = match &e.role {
                Some(r) => format!("{}({r})", e.name),
                None => e.name.clone(),
            };
            if let Some(disk) = &e.disk {
                key.push_str(&disk.to_string());
            }
            match &e.value {
                Value::Scalar(v) => map.serialize_entry(&key, &v.as_f64())?,
                Value::Ranges(r) => map.serialize_entry(&key, &r.to_string())?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn no_float_drift() {
        let mut a = Resources::cpus_mem(0.1, 0.0);
        a.add(&Resources::cpus_mem(0.2, 0.0));
        assert_eq!(a.cpus(), Scalar::from_f64(0.3).unwrap());
        assert_eq!(a.cpus().to_string(), "0.3");
    }

    #[test]
    fn parse_and_display_roundtrip() {
        let r = res("cpus:4;mem:4096;disk:10000;ports:[31000-32000]");
        assert_eq!(r.cpus(), Scalar::from_int(4));
        assert_eq!(r.ports().count(), 1001);
        assert_eq!(Resources::parse(&r.to_string()).unwrap(), r);
        let reserved = res("cpus(web):2;cpus:1");
        assert_eq!(reserved.cpus(), Scalar::from_int(3));
        assert_eq!(reserved.reserved_for("web").cpus(), Scalar::from_int(2));
        assert_eq!(reserved.allocatable_to("db").cpus(), Scalar::from_int(1));
    }

    #[test]
    fn arithmetic() {
        let total = res("cpus:4;mem:1024;ports:[31000-31009]");
        let used = res("cpus:1.5;mem:24;ports:[31002-31003]");
        assert!(total.contains(&used));
        let left = total.checked_sub(&used).unwrap();
        assert_eq!(left.cpus().to_string(), "2.5");
        assert_eq!(left.ports().ranges(), &[(31000, 31001), (31004, 31009)]);
        assert!(!left.contains(&used));
        assert!(left.checked_sub(&res("cpus:3")).is_none());
        let mut back = left.clone();
        back.add(&used);
        assert_eq!(back, total);
    }

    #[test]
    fn validation_rejects_bad_input() {
        let bad = |name: &str, scalar: f64| {
            Resources::try_from_proto(&[v1::Resource {
                name: name.into(),
                scalar,
                ..Default::default()
            }])
        };
        assert_eq!(bad("", 1.0), Err(ResourceError::EmptyName));
        assert!(matches!(
            bad("cpus", -1.0),
            Err(ResourceError::Negative { .. })
        ));
        assert!(matches!(
            bad("cpus", f64::NAN),
            Err(ResourceError::NotFinite { .. })
        ));
        assert!(matches!(
            bad("cpus", f64::INFINITY),
            Err(ResourceError::NotFinite { .. })
        ));
        assert!(matches!(
            bad("bananas", 1.0),
            Err(ResourceError::UnknownName(_))
        ));
        assert!(Resources::parse("cpus:abc").is_err());
        assert!(Resources::parse("ports:[5-3]").is_err());
        assert!(Resources::parse("cpus").is_err());
    }

    #[test]
    fn ranges_take_lowest() {
        let r = RangeSet::from_range(31000, 31001);
        let mut more = r.clone();
        more.insert(31005, 31010);
        assert_eq!(
            more.take_lowest(3).unwrap().ranges(),
            &[(31000, 31001), (31005, 31005)]
        );
        assert!(r.take_lowest(3).is_none());
    }

    #[test]
    fn dominant_share() {
        let total = res("cpus:10;mem:1000");
        assert_eq!(res("cpus:1;mem:500").dominant_share(&total), 0.5);
    }

    #[test]
    fn json_form() {
        let j = serde_json::to_string(&res("cpus:0.5;ports:[1-2]")).unwrap();
        assert_eq!(j, r#"{"cpus":0.5,"ports":"[1-2]"}"#);
    }

    #[test]
    fn pick_takes_the_roles_reservation_first_then_unreserved() {
        let offer =
            res("cpus(web):1;cpus:2;mem:512;mem(web):128;ports(web):[80-80];ports:[31000-31009]");
        let wanted = res("cpus:1.5;mem:256;ports:[80-80,31000-31000]");
        let picked = offer.pick(&wanted, "web").unwrap();
        assert_eq!(
            picked,
            res("cpus(web):1;cpus:0.5;mem(web):128;mem:128;ports(web):[80-80];ports:[31000-31000]")
        );
        assert!(offer.contains(&picked));
        assert_eq!(picked.cpus(), wanted.cpus());
        let mut left = offer.clone();
        left.subtract(&picked);
        assert_eq!(left.cpus(), Scalar::from_f64(1.5).unwrap());
    }

    #[test]
    fn pick_refuses_what_does_not_fit_and_ignores_other_roles() {
        let offer = res("cpus(db):4;cpus:1;mem:512");
        // Only the unreserved cpu counts for role web, and for `*`.
        assert!(offer.pick(&res("cpus:2;mem:64"), "web").is_none());
        assert!(offer.pick(&res("cpus:2;mem:64"), "*").is_none());
        assert_eq!(
            offer.pick(&res("cpus:1;mem:64"), "*").unwrap(),
            res("cpus:1;mem:64")
        );
        // A port outside everything offered.
        assert!(offer.pick(&res("ports:[80-80]"), "db").is_none());
        // Four reserved and one unreserved cpus for db.
        assert_eq!(
            offer.pick(&res("cpus:5"), "db").unwrap(),
            res("cpus(db):4;cpus:1")
        );
    }

    fn volume(role: &str, id: &str, path: &str, size: f64) -> v1::Resource {
        v1::Resource {
            name: "disk".into(),
            scalar: size,
            role: role.into(),
            disk: Some(v1::DiskInfo {
                persistence: Some(v1::disk_info::Persistence {
                    id: id.into(),
                    principal: "ops".into(),
                }),
                container_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn volumes_are_their_own_entries_and_used_whole() {
        let mut r = res("disk(db):1000;disk:500");
        let v = Resources::try_from_proto(&[volume("db", "v1", "data", 512.0)]).unwrap();
        r.add(&v);
        assert_eq!(r.entries().len(), 3);
        assert_eq!(r.disk(), Scalar::from_int(2012));
        assert_eq!(r.volumes().count(), 1);
        assert_eq!(
            r.to_string(),
            "disk:500;disk(db):1000;disk(db)[v1:data]:512"
        );
        assert!(r.contains(&v));
        // Half a volume, or the volume under another path, is not in it.
        let half = Resources::try_from_proto(&[volume("db", "v1", "data", 256.0)]).unwrap();
        assert!(!r.contains(&half));
        let moved = Resources::try_from_proto(&[volume("db", "v1", "other", 512.0)]).unwrap();
        assert!(!r.contains(&moved));
        // Plain disk never comes out of a volume.
        assert_eq!(
            r.pick(&res("disk:1500"), "db").unwrap(),
            res("disk(db):1000;disk:500")
        );
        assert!(r.pick(&res("disk:1600"), "db").is_none());
        // A volume asked by `pick` comes as it is.
        let mut wanted = res("cpus:0");
        wanted.add(&v);
        assert_eq!(r.pick(&wanted, "db").unwrap(), v);
        assert_eq!(r.reserved_for("db").disk(), Scalar::from_int(1512));
        assert_eq!(r.allocatable_to("web").disk(), Scalar::from_int(500));
        assert_eq!(r.without_volumes(), res("disk(db):1000;disk:500"));
        let base = r.volumes().next().unwrap().volume_base().unwrap();
        assert_eq!(Resources::of_entry(base), res("disk(db):512"));
        // Back to the wire and again: the same.
        assert_eq!(Resources::try_from_proto(&r.to_proto()).unwrap(), r);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"disk(db)[v1:data]":512.0}"#);
    }

    #[test]
    fn mount_disks_parse_and_stay_whole() {
        let r = res("cpus:2;disk[MOUNT:/mnt/d1]:1000;disk:50;disk[MOUNT:/mnt/d2]:2000");
        assert_eq!(r.disk(), Scalar::from_int(3050));
        assert_eq!(r.unreserved(), r);
        assert_eq!(Resources::parse(&r.to_string()).unwrap(), r);
        let d1 = res("disk[MOUNT:/mnt/d1]:1000");
        assert!(r.contains(&d1));
        assert!(!r.contains(&res("disk[MOUNT:/mnt/d1]:500")));
        let reserved = d1.with_role(Some("db"));
        assert_eq!(reserved.to_string(), "disk(db)[MOUNT:/mnt/d1]:1000");
        assert!(Resources::parse("disk[FOO:/x]:1").is_err());
        assert!(Resources::parse("disk[MOUNT:relative]:1").is_err());
        assert!(Resources::parse("cpus[MOUNT:/x]:1").is_err());
        assert!(Resources::parse("disk[MOUNT:/x:1").is_err());
    }

    #[test]
    fn bad_volumes_are_refused_with_the_reason() {
        let err = |r: v1::Resource| Resources::try_from_proto(&[r]).unwrap_err().to_string();
        assert!(err(volume("", "v1", "data", 1.0)).contains("not reserved"));
        assert!(err(volume("db", "", "data", 1.0)).contains("persistence id"));
        assert!(err(volume("db", "..", "data", 1.0)).contains("persistence id"));
        assert!(err(volume("db", "a/b", "data", 1.0)).contains("persistence id"));
        assert!(err(volume("db", "v", "../etc", 1.0)).contains("'..'"));
        assert!(err(volume("db", "v", "a/../../b", 1.0)).contains("'..'"));
        assert!(err(volume("db", "v", "/etc", 1.0)).contains("absolute"));
        assert!(err(volume("db", "v", "", 1.0)).contains("empty"));
        let mut cpus = volume("db", "v", "data", 1.0);
        cpus.name = "cpus".into();
        assert!(err(cpus).contains("only a disk"));
        let mut path_only = volume("db", "v", "data", 1.0);
        path_only.disk.as_mut().unwrap().persistence = None;
        assert!(err(path_only).contains("needs a persistent volume"));
    }
}
