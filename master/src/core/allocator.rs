//! The allocator: decides which framework is offered which agent's free resources.
//!
//! [`Allocator`] is the seam; [`DrfAllocator`] is the default, hierarchical Dominant
//! Resource Fairness as in Mesos:
//!
//! ```text
//!   allocate(now, agents)
//!     for agent in shuffle(agents)                      (seeded, deterministic)
//!       while agent has free resources
//!         for role in roles by weighted dominant share  (incremental Sorter)
//!           offerable = free unreserved + free reserved for role
//!           skip unless offerable >= min allocatable (cpus 0.01 or mem 32)
//!           for framework in role by dominant share     (incremental Sorter)
//!             skip if a decline filter covers offerable
//!             ─▶ Allocation{framework, agent, role, offerable}; re-key both sorters
//! ```
//!
//! A framework sits in a role's sorter only while it is active and the role is not
//! suppressed for it, so the loop never scans ineligible frameworks. Shares are keyed
//! in `BTreeSet`s and updated on each allocation and recovery (O(log n)); only a change
//! of the cluster total (an agent added or removed) re-keys everything, once, at the
//! start of the next cycle.
//!
//! The allocator owns the authoritative "allocated" bookkeeping (offered or used by
//! tasks) per agent and per (framework, role). The master gives resources back with
//! [`Allocator::recover`] (declined, unused, task finished, offer rescinded), optionally
//! with a decline filter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use strata_proto::{Resources, Scalar};

use super::drf::{Scalars, Sorter};
use super::fastmap::FastMap;
use super::rng::Rng;

/// The allocator's handle on an agent, chosen by the master (stable for an agent id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentKey(pub u32);

/// The allocator's handle on a framework, chosen by the master (stable for a
/// framework id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameworkKey(pub u32);

/// One decision of an allocation cycle: offer `resources` of `agent` to `framework`
/// under `role`. The resources count as allocated until recovered.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework: FrameworkKey,
    pub agent: AgentKey,
    pub role: String,
    pub resources: Resources,
}

/// Resources already in use on an agent when it is added (tasks it reported).
#[derive(Clone, Debug, PartialEq)]
pub struct UsedResources {
    pub framework: FrameworkKey,
    pub role: String,
    pub resources: Resources,
}

/// The smallest offer worth making (Mesos: cpus 0.01 or mem 32 MiB).
pub fn min_allocatable(r: &Resources) -> bool {
    r.cpus() >= Scalar::from_milli(10) || r.mem() >= Scalar::from_int(32)
}

/// What the master needs from an allocator. Every method is cheap except
/// [`Allocator::allocate`], which is one cycle over the given agents.
pub trait Allocator: Send {
    /// A framework subscribed (or was recovered, then `active` is false).
    fn add_framework(
        &mut self,
        framework: FrameworkKey,
        roles: &[String],
        suppressed: &[String],
        active: bool,
    );
    /// A framework re-subscribed with possibly different roles or suppressed roles.
    fn update_framework(
        &mut self,
        framework: FrameworkKey,
        roles: &[String],
        suppressed: &[String],
    );
    fn activate_framework(&mut self, framework: FrameworkKey);
    fn deactivate_framework(&mut self, framework: FrameworkKey);
    /// Forgets a framework; whatever it still had allocated returns to the agents.
    fn remove_framework(&mut self, framework: FrameworkKey);
    /// An agent (re-)registered with `total`, part of it already `used` by tasks.
    fn add_agent(&mut self, agent: AgentKey, total: Resources, used: &[UsedResources]);
    /// Forgets an agent and every allocation on it.
    fn remove_agent(&mut self, agent: AgentKey);
    fn activate_agent(&mut self, agent: AgentKey);
    /// Keeps the agent's accounting but offers nothing from it.
    fn deactivate_agent(&mut self, agent: AgentKey);
    /// Gives allocated resources back to the agent's free pool; with `refuse`, the
    /// framework is not offered these resources of this agent (for this role) again
    /// before `now + refuse`. Recovering more than is allocated is clamped.
    fn recover(
        &mut self,
        agent: AgentKey,
        framework: FrameworkKey,
        role: &str,
        resources: Resources,
        refuse: Option<Duration>,
        now: Instant,
    );
    /// Stops offering to the framework under these roles.
    fn suppress(&mut self, framework: FrameworkKey, roles: &[String]);
    /// Resumes offers under these roles and clears the framework's filters for them.
    fn revive(&mut self, framework: FrameworkKey, roles: &[String]);
    fn set_weight(&mut self, role: &str, weight: f64);
    /// Drops filters whose time has passed.
    fn expire_filters(&mut self, now: Instant);
    /// One allocation cycle over `agents` (all agents when `None`).
    fn allocate(&mut self, now: Instant, agents: Option<&[AgentKey]>) -> Vec<Allocation>;
    /// The agent's free resources, for inspection.
    fn available(&self, agent: AgentKey) -> Option<Resources>;
    /// Resources allocated to `framework` in `role` on `agent` were converted by a
    /// RESERVE / UNRESERVE / CREATE / DESTROY: `from` became `to` in the allocation and
    /// in the agent's total (the amounts per name are the same, so no share changes).
    fn convert_allocated(
        &mut self,
        agent: AgentKey,
        framework: FrameworkKey,
        role: &str,
        from: &Resources,
        to: &Resources,
    );
    /// Free resources of `agent` were converted (an operator's call); false, and
    /// nothing changed, when `from` is not free.
    fn convert_available(&mut self, agent: AgentKey, from: &Resources, to: &Resources) -> bool;
}

type RoleKey = u32;

#[derive(Debug)]
struct AgentEntry {
    total: Resources,
    available: Resources,
    active: bool,
    /// What is allocated on this agent, by (framework, role): lets `recover`,
    /// `remove_agent` and `remove_framework` undo exactly what was charged. A handful
    /// of entries at most, so a vector beats a map.
    allocations: Vec<((FrameworkKey, RoleKey), Resources)>,
}

impl AgentEntry {
    fn allocate(&mut self, key: (FrameworkKey, RoleKey), resources: &Resources) {
        match self.allocations.iter_mut().find(|(k, _)| *k == key) {
            Some((_, r)) => r.add(resources),
            None => self.allocations.push((key, resources.clone())),
        }
    }
}

#[derive(Debug)]
struct Filter {
    role: RoleKey,
    resources: Resources,
    expires: Instant,
}

#[derive(Debug, Default)]
struct FrameworkEntry {
    roles: Vec<RoleKey>,
    suppressed: BTreeSet<RoleKey>,
    active: bool,
    /// Allocated (offered + used) per role, for the framework's share in each role.
    alloc: FastMap<RoleKey, Scalars>,
    /// Decline filters by agent.
    filters: FastMap<AgentKey, Vec<Filter>>,
}

impl FrameworkEntry {
    fn filtered(
        &self,
        agent: AgentKey,
        role: RoleKey,
        offerable: &Resources,
        now: Instant,
    ) -> bool {
        if self.filters.is_empty() {
            return false;
        }
        self.filters.get(&agent).is_some_and(|list| {
            list.iter()
                .any(|f| f.role == role && f.expires > now && f.resources.contains(offerable))
        })
    }

    fn wants(&self, role: RoleKey) -> bool {
        self.active && self.roles.contains(&role) && !self.suppressed.contains(&role)
    }
}

#[derive(Debug)]
struct RoleEntry {
    name: String,
    weight: f64,
    /// Allocated to every framework under this role.
    alloc: Scalars,
    /// The role's frameworks that want offers, by dominant share.
    sorter: Sorter<FrameworkKey>,
}

/// Hierarchical DRF. See the module docs.
#[derive(Debug)]
pub struct DrfAllocator {
    agents: FastMap<AgentKey, AgentEntry>,
    /// Every agent key, sorted: the deterministic order each cycle shuffles.
    agent_keys: Vec<AgentKey>,
    /// The cycle's shuffled agent order, kept to reuse its buffer.
    order: Vec<AgentKey>,
    frameworks: FastMap<FrameworkKey, FrameworkEntry>,
    roles: Vec<RoleEntry>,
    role_index: HashMap<String, RoleKey>,
    /// Roles with at least one framework that wants offers, by weighted share.
    role_sorter: Sorter<RoleKey>,
    /// Sum of every agent's total: the denominator of all shares.
    total: Scalars,
    /// The total changed since the sorters were keyed.
    dirty: bool,
    weights: HashMap<String, f64>,
    rng: Rng,
    /// Filter expiry times; entries may be stale (filter already gone).
    filter_expiry: FilterExpiry,
    /// Live filters, to notice when `filter_expiry` holds mostly stale entries.
    filter_count: usize,
}

const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);

impl DrfAllocator {
    /// An allocator with role `weights` (missing roles weigh 1.0) and a shuffle seed.
    pub fn new(weights: HashMap<String, f64>, seed: u64) -> DrfAllocator {
        DrfAllocator {
            agents: FastMap::default(),
            agent_keys: Vec::new(),
            order: Vec::new(),
            frameworks: FastMap::default(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            role_sorter: Sorter::default(),
            total: Scalars::default(),
            dirty: false,
            weights,
            rng: Rng::new(seed),
            filter_expiry: FilterExpiry::default(),
            filter_count: 0,
        }
    }

    fn role_key(&mut self, name: &str) -> RoleKey {
        if let Some(k) = self.role_index.get(name) {
            return *k;
        }
        let key = self.roles.len() as RoleKey;
        let weight = sane_weight(self.weights.get(name).copied().unwrap_or(1.0));
        self.roles.push(RoleEntry {
            name: name.to_string(),
            weight,
            alloc: Scalars::default(),
            sorter: Sorter::default(),
        });
        self.role_index.insert(name.to_string(), key);
        key
    }

    /// The key of a known role: a scan for the usual handful, the index beyond.
    fn find_role(&self, name: &str) -> Option<RoleKey> {
        if self.roles.len() <= 16 {
            self.roles
                .iter()
                .position(|r| r.name == name)
                .map(|i| i as RoleKey)
        } else {
            self.role_index.get(name).copied()
        }
    }

    fn role_share(&self, role: RoleKey) -> f64 {
        let r = &self.roles[role as usize];
        r.alloc.share(&self.total) / r.weight
    }

    fn framework_share(&self, fw: &FrameworkEntry, role: RoleKey) -> f64 {
        fw.alloc.get(&role).map_or(0.0, |s| s.share(&self.total))
    }

    /// Puts the framework in (or takes it out of) the role's sorter, and the role in
    /// (or out of) the role sorter, to match who wants offers.
    fn sync(&mut self, framework: FrameworkKey, role: RoleKey) {
        let want = self
            .frameworks
            .get(&framework)
            .is_some_and(|f| f.wants(role));
        if want {
            if !self.roles[role as usize].sorter.contains(framework) {
                let share = self
                    .frameworks
                    .get(&framework)
                    .map_or(0.0, |f| self.framework_share(f, role));
                self.roles[role as usize].sorter.insert(framework, share);
            }
        } else {
            self.roles[role as usize].sorter.remove(framework);
        }
        self.sync_role(role);
    }

    fn sync_role(&mut self, role: RoleKey) {
        if self.roles[role as usize].sorter.is_empty() {
            self.role_sorter.remove(role);
        } else if !self.role_sorter.contains(role) {
            let share = self.role_share(role);
            self.role_sorter.insert(role, share);
        }
    }

    /// Adds (`add`) or removes the scalars of an allocation to the framework's and the
    /// role's accounting and re-keys both sorters.
    fn charge(&mut self, framework: FrameworkKey, role: RoleKey, amount: &Scalars, add: bool) {
        let total = self.total;
        if let Some(fw) = self.frameworks.get_mut(&framework) {
            let a = fw.alloc.entry(role).or_default();
            if add {
                a.add(amount);
            } else {
                a.sub(amount);
            }
            let share = a.share(&total);
            self.roles[role as usize].sorter.update(framework, share);
        }
        let r = &mut self.roles[role as usize];
        if add {
            r.alloc.add(amount);
        } else {
            r.alloc.sub(amount);
        }
        let share = r.alloc.share(&total) / r.weight;
        self.role_sorter.update(role, share);
    }

    /// Re-keys every sorter after the cluster total changed.
    fn rekey_all(&mut self) {
        for role in 0..self.roles.len() {
            for fk in self.roles[role].sorter.keys() {
                let share = self
                    .frameworks
                    .get(&fk)
                    .map_or(0.0, |f| self.framework_share(f, role as RoleKey));
                self.roles[role].sorter.insert(fk, share);
            }
        }
        for rk in self.role_sorter.keys() {
            let share = self.role_share(rk);
            self.role_sorter.insert(rk, share);
        }
        self.dirty = false;
    }

    /// The first (role, framework) in DRF order that may be offered the agent's free
    /// resources, with what it would be offered (`None`: all of them).
    fn pick(
        &self,
        key: AgentKey,
        agent: &AgentEntry,
        now: Instant,
    ) -> Option<(RoleKey, FrameworkKey, Option<Resources>)> {
        let free = &agent.available;
        let has_reserved = free.entries().iter().any(|e| e.role.is_some());
        if !has_reserved && !min_allocatable(free) {
            return None;
        }
        for rk in self.role_sorter.iter() {
            let role = &self.roles[rk as usize];
            let part = has_reserved.then(|| free.allocatable_to(&role.name));
            let offerable = part.as_ref().unwrap_or(free);
            if has_reserved && !min_allocatable(offerable) {
                continue;
            }
            for fk in role.sorter.iter() {
                if self
                    .frameworks
                    .get(&fk)
                    .is_some_and(|f| f.filtered(key, rk, offerable, now))
                {
                    continue;
                }
                return Some((rk, fk, part));
            }
        }
        None
    }

    /// Rebuilds the expiry index from the live filters when it is mostly stale
    /// (filters cleared by REVIVE or replaced leave their entries behind).
    fn compact_filter_expiry_if_bloated(&mut self) {
        if self.filter_expiry.len <= 2 * self.filter_count + 1024 {
            return;
        }
        let Some(epoch) = self.filter_expiry.epoch else {
            return;
        };
        let mut expiry = FilterExpiry::default();
        for (fk, fw) in &self.frameworks {
            for (ak, list) in &fw.filters {
                for f in list {
                    expiry.push(epoch, f.expires, *fk, *ak);
                }
            }
        }
        self.filter_expiry = expiry;
    }
}

/// When filters expire, in 100 ms buckets (pushing is O(1) amortised, unlike a heap):
/// bucket `k` holds the (framework, agent) pairs with a filter expiring in
/// `((k-1)·100 ms, k·100 ms]` after `epoch`. Entries may be stale; the filter lists
/// are the truth.
#[derive(Debug, Default)]
struct FilterExpiry {
    epoch: Option<Instant>,
    buckets: BTreeMap<u64, Vec<(FrameworkKey, AgentKey)>>,
    len: usize,
}

const BUCKET_MS: u128 = 100;

impl FilterExpiry {
    /// Indexes a filter made at `now` (no earlier than any before) expiring at `expires`.
    fn push(&mut self, now: Instant, expires: Instant, fk: FrameworkKey, ak: AgentKey) {
        let epoch = *self.epoch.get_or_insert(now);
        let ms = expires.saturating_duration_since(epoch).as_millis();
        let bucket = u64::try_from(ms.div_ceil(BUCKET_MS)).unwrap_or(u64::MAX);
        self.buckets.entry(bucket).or_default().push((fk, ak));
        self.len += 1;
    }

    /// Takes the entries of every bucket that ended by `now`.
    fn due(&mut self, now: Instant) -> Vec<(FrameworkKey, AgentKey)> {
        let Some(epoch) = self.epoch else {
            return Vec::new();
        };
        let limit = u64::try_from(now.saturating_duration_since(epoch).as_millis() / BUCKET_MS)
            .unwrap_or(u64::MAX);
        let mut out = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > limit {
                break;
            }
            let bucket = entry.remove();
            if out.is_empty() {
                out = bucket;
            } else {
                out.extend(bucket);
            }
        }
        self.len -= out.len().min(self.len);
        out
    }
}

fn sane_weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 { w } else { 1.0 }
}

impl Allocator for DrfAllocator {
    fn add_framework(
        &mut self,
        framework: FrameworkKey,
        roles: &[String],
        suppressed: &[String],
        active: bool,
    ) {
        let roles: Vec<RoleKey> = roles.iter().map(|r| self.role_key(r)).collect();
        let suppressed: BTreeSet<RoleKey> = suppressed.iter().map(|r| self.role_key(r)).collect();
        let entry = self.frameworks.entry(framework).or_default();
        entry.roles = roles.clone();
        entry.suppressed = suppressed;
        entry.active = active;
        for role in roles {
            self.sync(framework, role);
        }
    }

    fn update_framework(
        &mut self,
        framework: FrameworkKey,
        roles: &[String],
        suppressed: &[String],
    ) {
        let new_roles: Vec<RoleKey> = roles.iter().map(|r| self.role_key(r)).collect();
        let new_suppressed: BTreeSet<RoleKey> =
            suppressed.iter().map(|r| self.role_key(r)).collect();
        let Some(fw) = self.frameworks.get_mut(&framework) else {
            return;
        };
        let mut touched: BTreeSet<RoleKey> = fw.roles.iter().copied().collect();
        touched.extend(new_roles.iter().copied());
        fw.roles = new_roles;
        fw.suppressed = new_suppressed;
        for role in touched {
            self.sync(framework, role);
        }
    }

    fn activate_framework(&mut self, framework: FrameworkKey) {
        if let Some(fw) = self.frameworks.get_mut(&framework) {
            fw.active = true;
            for role in fw.roles.clone() {
                self.sync(framework, role);
            }
        }
    }

    fn deactivate_framework(&mut self, framework: FrameworkKey) {
        if let Some(fw) = self.frameworks.get_mut(&framework) {
            fw.active = false;
            for role in fw.roles.clone() {
                self.sync(framework, role);
            }
        }
    }

    fn remove_framework(&mut self, framework: FrameworkKey) {
        let Some(fw) = self.frameworks.remove(&framework) else {
            return;
        };
        self.filter_count = self
            .filter_count
            .saturating_sub(fw.filters.values().map(Vec::len).sum());
        let mut roles: BTreeSet<RoleKey> = fw.roles.iter().copied().collect();
        roles.extend(fw.alloc.keys().copied());
        for role in roles {
            self.roles[role as usize].sorter.remove(framework);
            self.sync_role(role);
        }
        // Whatever is still allocated to it returns to its agents.
        let mut returned: Vec<(RoleKey, Resources)> = Vec::new();
        for key in &self.agent_keys {
            let Some(agent) = self.agents.get_mut(key) else {
                continue;
            };
            if !agent
                .allocations
                .iter()
                .any(|((fk, _), _)| *fk == framework)
            {
                continue;
            }
            let (gone, kept): (Vec<_>, Vec<_>) = agent
                .allocations
                .drain(..)
                .partition(|((fk, _), _)| *fk == framework);
            agent.allocations = kept;
            for ((_, role), res) in gone {
                agent.available.add(&res);
                returned.push((role, res));
            }
        }
        for (role, res) in returned {
            self.charge(framework, role, &Scalars::of(&res), false);
        }
    }

    fn convert_allocated(
        &mut self,
        agent: AgentKey,
        framework: FrameworkKey,
        role: &str,
        from: &Resources,
        to: &Resources,
    ) {
        let Some(rk) = self.find_role(role) else {
            return;
        };
        let Some(entry) = self.agents.get_mut(&agent) else {
            return;
        };
        if let Some((_, alloc)) = entry
            .allocations
            .iter_mut()
            .find(|(k, _)| *k == (framework, rk))
        {
            alloc.subtract(from);
            alloc.add(to);
        }
        entry.total.subtract(from);
        entry.total.add(to);
    }

    fn convert_available(&mut self, agent: AgentKey, from: &Resources, to: &Resources) -> bool {
        let Some(entry) = self.agents.get_mut(&agent) else {
            return false;
        };
        if !entry.available.contains(from) {
            return false;
        }
        entry.available.subtract(from);
        entry.available.add(to);
        entry.total.subtract(from);
        entry.total.add(to);
        true
    }

    fn add_agent(&mut self, agent: AgentKey, total: Resources, used: &[UsedResources]) {
        if self.agents.contains_key(&agent) {
            self.remove_agent(agent);
        }
        let mut entry = AgentEntry {
            available: total.clone(),
            total,
            active: true,
            allocations: Vec::new(),
        };
        let mut charges = Vec::with_capacity(used.len());
        for u in used {
            let role = self.role_key(&u.role);
            entry.available.subtract(&u.resources);
            entry.allocate((u.framework, role), &u.resources);
            charges.push((u.framework, role, Scalars::of(&u.resources)));
        }
        self.total.add(&Scalars::of(&entry.total));
        self.agents.insert(agent, entry);
        if let Err(i) = self.agent_keys.binary_search(&agent) {
            self.agent_keys.insert(i, agent);
        }
        self.dirty = true;
        for (fk, role, amount) in charges {
            self.charge(fk, role, &amount, true);
        }
    }

    fn remove_agent(&mut self, agent: AgentKey) {
        let Some(entry) = self.agents.remove(&agent) else {
            return;
        };
        if let Ok(i) = self.agent_keys.binary_search(&agent) {
            self.agent_keys.remove(i);
        }
        self.total.sub(&Scalars::of(&entry.total));
        self.dirty = true;
        for ((fk, role), res) in entry.allocations {
            self.charge(fk, role, &Scalars::of(&res), false);
        }
    }

    fn activate_agent(&mut self, agent: AgentKey) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.active = true;
        }
    }

    fn deactivate_agent(&mut self, agent: AgentKey) {
        if let Some(a) = self.agents.get_mut(&agent) {
            a.active = false;
        }
    }

    fn recover(
        &mut self,
        agent: AgentKey,
        framework: FrameworkKey,
        role: &str,
        resources: Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) {
        let Some(rk) = self.find_role(role) else {
            tracing::debug!(role, "recover for a role the allocator never saw; ignored");
            return;
        };
        let Some(entry) = self.agents.get_mut(&agent) else {
            // remove_agent already took the agent's allocations back.
            return;
        };
        let Some(i) = entry
            .allocations
            .iter()
            .position(|(k, _)| *k == (framework, rk))
        else {
            tracing::debug!(?agent, ?framework, "recover of nothing allocated; ignored");
            return;
        };
        let alloc = &mut entry.allocations[i].1;
        // The usual cases first: all of the allocation comes back, or a part of it.
        let actual = if *alloc == resources {
            entry.allocations.swap_remove(i).1
        } else if alloc.contains(&resources) {
            alloc.subtract(&resources);
            resources.clone()
        } else {
            tracing::debug!(
                ?agent,
                ?framework,
                "recovering more than was allocated; clamped"
            );
            let before = alloc.clone();
            alloc.subtract(&resources);
            let actual = before.checked_sub(alloc).unwrap_or_default();
            if alloc.is_empty() {
                entry.allocations.swap_remove(i);
            }
            actual
        };
        let amount = Scalars::of(&actual);
        if entry.available.is_empty() {
            entry.available = actual;
        } else {
            entry.available.add(&actual);
        }
        self.charge(framework, rk, &amount, false);

        let Some(refuse) = refuse.filter(|d| !d.is_zero()) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(&framework) else {
            return;
        };
        let expires = now.checked_add(refuse.min(MAX_REFUSE)).unwrap_or(now);
        let list = fw.filters.entry(agent).or_default();
        let before = list.len();
        // Drop filters that are expired or fully covered by the new one.
        list.retain(|f| {
            f.expires > now
                && !(f.role == rk && f.expires <= expires && resources.contains(&f.resources))
        });
        let dropped = before - list.len();
        list.push(Filter {
            role: rk,
            resources,
            expires,
        });
        self.filter_count = self.filter_count + 1 - dropped;
        self.filter_expiry.push(now, expires, framework, agent);
        self.compact_filter_expiry_if_bloated();
    }

    fn suppress(&mut self, framework: FrameworkKey, roles: &[String]) {
        let keys: Vec<RoleKey> = roles.iter().map(|r| self.role_key(r)).collect();
        if let Some(fw) = self.frameworks.get_mut(&framework) {
            fw.suppressed.extend(keys.iter().copied());
            for role in keys {
                self.sync(framework, role);
            }
        }
    }

    fn revive(&mut self, framework: FrameworkKey, roles: &[String]) {
        let keys: Vec<RoleKey> = roles.iter().map(|r| self.role_key(r)).collect();
        let Some(fw) = self.frameworks.get_mut(&framework) else {
            return;
        };
        let mut removed = 0;
        for list in fw.filters.values_mut() {
            let before = list.len();
            list.retain(|f| !keys.contains(&f.role));
            removed += before - list.len();
        }
        fw.filters.retain(|_, list| !list.is_empty());
        for role in &keys {
            fw.suppressed.remove(role);
        }
        self.filter_count = self.filter_count.saturating_sub(removed);
        for role in keys {
            self.sync(framework, role);
        }
    }

    fn set_weight(&mut self, role: &str, weight: f64) {
        let rk = self.role_key(role);
        self.roles[rk as usize].weight = sane_weight(weight);
        self.weights.insert(role.to_string(), sane_weight(weight));
        let share = self.role_share(rk);
        self.role_sorter.update(rk, share);
    }

    fn expire_filters(&mut self, now: Instant) {
        for (fk, ak) in self.filter_expiry.due(now) {
            let Some(fw) = self.frameworks.get_mut(&fk) else {
                continue;
            };
            if let Some(list) = fw.filters.get_mut(&ak) {
                let before = list.len();
                list.retain(|f| f.expires > now);
                self.filter_count = self.filter_count.saturating_sub(before - list.len());
                if list.is_empty() {
                    fw.filters.remove(&ak);
                }
            }
        }
    }

    fn allocate(&mut self, now: Instant, agents: Option<&[AgentKey]>) -> Vec<Allocation> {
        if self.dirty {
            self.rekey_all();
        }
        if self.role_sorter.is_empty() {
            return Vec::new();
        }
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        match agents {
            Some(list) => {
                order.extend_from_slice(list);
                order.sort_unstable();
                order.dedup();
            }
            None => order.extend_from_slice(&self.agent_keys),
        }
        self.rng.shuffle(&mut order);
        let mut out = Vec::with_capacity(order.len());
        for &key in &order {
            while let Some(agent) = self.agents.get(&key) {
                if !agent.active || agent.available.is_empty() {
                    break;
                }
                let Some((rk, fk, part)) = self.pick(key, agent, now) else {
                    break;
                };
                let Some(agent) = self.agents.get_mut(&key) else {
                    break;
                };
                let offered = match part {
                    // The common case: all of the agent's free resources, moved.
                    None => std::mem::take(&mut agent.available),
                    Some(part) => {
                        agent.available.subtract(&part);
                        part
                    }
                };
                agent.allocate((fk, rk), &offered);
                self.charge(fk, rk, &Scalars::of(&offered), true);
                out.push(Allocation {
                    framework: fk,
                    agent: key,
                    role: self.roles[rk as usize].name.clone(),
                    resources: offered,
                });
            }
        }
        self.order = order;
        out
    }

    fn available(&self, agent: AgentKey) -> Option<Resources> {
        self.agents.get(&agent).map(|a| a.available.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offers_each_agent_whole_to_lowest_share() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        a.add_framework(FrameworkKey(2), &roles(&["*"]), &[], true);
        for i in 0..4 {
            a.add_agent(AgentKey(i), res("cpus:4;mem:1024"), &[]);
        }
        let out = a.allocate(now, None);
        assert_eq!(out.len(), 4);
        let to1 = out
            .iter()
            .filter(|x| x.framework == FrameworkKey(1))
            .count();
        assert_eq!(to1, 2, "two frameworks share four agents equally");
        assert!(a.allocate(now, None).is_empty(), "nothing is offered twice");
    }

    #[test]
    fn filter_then_expiry() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        a.add_agent(AgentKey(0), res("cpus:4;mem:1024"), &[]);
        let out = a.allocate(now, None);
        assert_eq!(out.len(), 1);
        a.recover(
            AgentKey(0),
            FrameworkKey(1),
            "*",
            out[0].resources.clone(),
            Some(Duration::from_secs(5)),
            now,
        );
        assert!(a.allocate(now + Duration::from_secs(1), None).is_empty());
        a.expire_filters(now + Duration::from_secs(5));
        assert_eq!(a.allocate(now + Duration::from_secs(5), None).len(), 1);
        assert_eq!(a.filter_count, 0);
    }

    #[test]
    fn reserved_resources_only_to_their_role() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["web"]), &[], true);
        a.add_framework(FrameworkKey(2), &roles(&["db"]), &[], true);
        a.add_agent(
            AgentKey(0),
            res("cpus(db):2;mem(db):512;cpus:1;mem:128"),
            &[],
        );
        let out = a.allocate(now, None);
        let db: Vec<_> = out.iter().filter(|x| x.role == "db").collect();
        assert_eq!(db.len(), 1);
        assert_eq!(
            db[0].resources.reserved_for("db").cpus(),
            Scalar::from_int(2)
        );
        for x in out.iter().filter(|x| x.role == "web") {
            assert!(x.resources.reserved_for("db").is_empty());
        }
        assert_eq!(a.available(AgentKey(0)), Some(Resources::new()));
    }

    #[test]
    fn remove_framework_returns_its_allocations() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        a.add_agent(AgentKey(0), res("cpus:4;mem:1024"), &[]);
        assert_eq!(a.allocate(now, None).len(), 1);
        a.remove_framework(FrameworkKey(1));
        assert_eq!(a.available(AgentKey(0)), Some(res("cpus:4;mem:1024")));
        assert_eq!(a.roles[0].alloc, Scalars::default());
    }

    #[test]
    fn revive_storms_do_not_grow_the_expiry_index_without_bound() {
        let mut now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        a.add_agent(AgentKey(0), res("cpus:4;mem:1024"), &[]);
        let year = Some(Duration::from_secs(365 * 24 * 3600));
        for _ in 0..5000 {
            now += Duration::from_millis(1);
            let out = a.allocate(now, None);
            assert_eq!(out.len(), 1, "revive cleared the filter");
            a.recover(
                AgentKey(0),
                FrameworkKey(1),
                "*",
                out[0].resources.clone(),
                year,
                now,
            );
            a.revive(FrameworkKey(1), &roles(&["*"]));
        }
        assert_eq!(a.filter_count, 0);
        assert!(a.filter_expiry.len <= 1024 + 1, "{}", a.filter_expiry.len);
    }

    #[test]
    fn removing_an_agent_takes_its_allocations_out_of_the_shares() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        let used = [UsedResources {
            framework: FrameworkKey(1),
            role: "*".into(),
            resources: res("cpus:1;mem:10"),
        }];
        a.add_agent(AgentKey(0), res("cpus:4;mem:1024"), &used);
        assert_eq!(a.available(AgentKey(0)), Some(res("cpus:3;mem:1014")));
        assert_eq!(a.allocate(now, None).len(), 1);
        a.remove_agent(AgentKey(0));
        assert_eq!(a.roles[0].alloc, Scalars::default());
        assert_eq!(a.total, Scalars::default());
        assert!(a.allocate(now, None).is_empty());
        // A late recover for the gone agent is ignored.
        a.recover(AgentKey(0), FrameworkKey(1), "*", res("cpus:1"), None, now);
        assert_eq!(a.roles[0].alloc, Scalars::default());
    }

    #[test]
    fn recovering_more_than_allocated_is_clamped() {
        let now = Instant::now();
        let mut a = DrfAllocator::new(HashMap::new(), 1);
        a.add_framework(FrameworkKey(1), &roles(&["*"]), &[], true);
        a.add_agent(AgentKey(0), res("cpus:4;mem:1024"), &[]);
        let out = a.allocate(now, None);
        a.recover(
            AgentKey(0),
            FrameworkKey(1),
            "*",
            res("cpus:1;mem:24"),
            None,
            now,
        );
        a.recover(
            AgentKey(0),
            FrameworkKey(1),
            "*",
            res("cpus:8;mem:2048"),
            None,
            now,
        );
        assert_eq!(
            a.available(AgentKey(0)),
            Some(out[0].resources.clone()),
            "never more than the total"
        );
        a.recover(AgentKey(0), FrameworkKey(1), "*", res("cpus:1"), None, now);
        assert_eq!(a.available(AgentKey(0)), Some(res("cpus:4;mem:1024")));
    }
}
