//! A port's backend table and the choice of a backend: least outstanding connections,
//! ties broken at random.
//!
//! Every backend counts the connections (TCP) or flows (UDP) it serves now. A new
//! connection goes to a backend with the fewest, chosen uniformly among those tied
//! (one pass, reservoir sampling). A backend whose connect failed in the last
//! [`FAILURE_COOLDOWN`] is skipped while another backend is available: the master's
//! event that takes a dead instance out may arrive after its first failures.
//!
//! The table is replaced as a whole by [`PortShared::set_backends`]; a backend that
//! stays (same address and task) keeps its counters, so the balance holds across
//! updates. Connections keep an `Arc` of their backend, so a backend removed from the
//! table lives on, and is counted, until its last connection ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Backend, Protocol};

/// How long a backend whose connect failed is avoided while another is available.
pub(crate) const FAILURE_COOLDOWN: Duration = Duration::from_secs(2);

/// The clock of [`BackendSlot::avoid_until`] and of UDP flows' activity.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the proxy's epoch (the first call).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One backend of one port, with its counters.
#[derive(Debug)]
pub(crate) struct BackendSlot {
    pub(crate) addr: SocketAddr,
    pub(crate) task_id: String,
    /// Connections (TCP) or flows (UDP) this proxy has open to the backend now.
    active: AtomicU64,
    /// [`now_ms`] until which the backend is avoided after a failed connect; 0: never.
    avoid_until: AtomicU64,
}

impl BackendSlot {
    fn new(backend: Backend) -> BackendSlot {
        BackendSlot {
            addr: backend.addr,
            task_id: backend.task_id,
            active: AtomicU64::new(0),
            avoid_until: AtomicU64::new(0),
        }
    }

    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    fn avoided(&self, now: u64) -> bool {
        now < self.avoid_until.load(Ordering::Relaxed)
    }

    /// Records a failed connect. True when the backend was not already avoided (the
    /// first failure of a run: worth a warning).
    pub(crate) fn mark_failed(&self) -> bool {
        let now = now_ms();
        let cooldown = u64::try_from(FAILURE_COOLDOWN.as_millis()).unwrap_or(u64::MAX);
        let previous = self
            .avoid_until
            .swap(now.saturating_add(cooldown), Ordering::Relaxed);
        now >= previous
    }
}

/// A connection's (or flow's) claim on a backend: counted while it lives.
#[derive(Debug)]
pub(crate) struct BackendLease {
    pub(crate) slot: Arc<BackendSlot>,
}

impl BackendLease {
    fn new(slot: Arc<BackendSlot>) -> BackendLease {
        slot.active.fetch_add(1, Ordering::Relaxed);
        BackendLease { slot }
    }
}

impl Drop for BackendLease {
    fn drop(&mut self) {
        self.slot.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a port's listener and its connections share with the proxy's table.
#[derive(Debug)]
pub(crate) struct PortShared {
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    name: RwLock<Arc<str>>,
    backends: RwLock<Arc<[Arc<BackendSlot>]>>,
    /// Backends taken out of the table that still had connections or flows.
    retired: RwLock<Vec<Arc<BackendSlot>>>,
    /// Open connections (TCP) or live flows (UDP) of the port.
    active: AtomicU64,
}

impl PortShared {
    pub(crate) fn new(port: u16, protocol: Protocol, name: &str) -> PortShared {
        PortShared {
            port,
            protocol,
            name: RwLock::new(Arc::from(name)),
            backends: RwLock::new(Arc::from(Vec::new())),
            retired: RwLock::new(Vec::new()),
            active: AtomicU64::new(0),
        }
    }

    /// Connections (or flows) still open to backends no longer in the table.
    pub(crate) fn draining(&self) -> u64 {
        let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
        retired.retain(|slot| slot.active() > 0);
        retired.iter().map(|slot| slot.active()).sum()
    }

    pub(crate) fn name(&self) -> Arc<str> {
        self.name.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_name(&self, name: &str) {
        let mut current = self.name.write().unwrap_or_else(|e| e.into_inner());
        if &**current != name {
            *current = Arc::from(name);
        }
    }

    /// The current backends (a snapshot).
    pub(crate) fn backends(&self) -> Arc<[Arc<BackendSlot>]> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the backends at once. Backends that stay keep their counters.
    pub(crate) fn set_backends(&self, backends: Vec<Backend>) {
        let mut table = self.backends.write().unwrap_or_else(|e| e.into_inner());
        let mut old: Vec<Option<&Arc<BackendSlot>>> = table.iter().map(Some).collect();
        let new: Vec<Arc<BackendSlot>> = backends
            .into_iter()
            .map(|b| {
                let kept = old
                    .iter_mut()
                    .find(|s| s.is_some_and(|s| s.addr == b.addr && s.task_id == b.task_id));
                match kept.and_then(Option::take) {
                    Some(slot) => slot.clone(),
                    None => Arc::new(BackendSlot::new(b)),
                }
            })
            .collect();
        let gone = old
            .into_iter()
            .flatten()
            .filter(|slot| slot.active() > 0)
            .cloned();
        self.retired
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(gone);
        *table = Arc::from(new);
    }

    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Chooses a backend for a new connection or flow, other than `exclude`, and
    /// counts it there. None when there is no backend (but `exclude`).
    pub(crate) fn pick(&self, exclude: Option<&Arc<BackendSlot>>) -> Option<BackendLease> {
        let backends = self.backends();
        let now = now_ms();
        let eligible = |b: &&Arc<BackendSlot>| exclude.is_none_or(|e| !Arc::ptr_eq(e, b));
        // Backends that did not fail lately first; all of them if every one did.
        least_loaded(backends.iter().filter(eligible).filter(|b| !b.avoided(now)))
            .or_else(|| least_loaded(backends.iter().filter(eligible)))
            .map(|slot| BackendLease::new(slot.clone()))
    }
}

/// The backend with the fewest active connections, uniformly among those tied.
fn least_loaded<'a>(
    backends: impl Iterator<Item = &'a Arc<BackendSlot>>,
) -> Option<&'a Arc<BackendSlot>> {
    let mut rng = rand::rng();
    let mut best = u64::MAX;
    let mut tied = 0u32;
    let mut chosen = None;
    for backend in backends {
        let active = backend.active();
        if active < best {
            best = active;
            tied = 1;
            chosen = Some(backend);
        } else if active == best {
            tied = tied.saturating_add(1);
            if rng.random_range(0..tied) == 0 {
                chosen = Some(backend);
            }
        }
    }
    chosen
}

/// Counts a connection or flow on its port while it lives.
#[derive(Debug)]
pub(crate) struct PortCount {
    port: Arc<PortShared>,
}

impl PortCount {
    pub(crate) fn new(port: &Arc<PortShared>) -> PortCount {
        port.active.fetch_add(1, Ordering::Relaxed);
        PortCount { port: port.clone() }
    }
}

impl Drop for PortCount {
    fn drop(&mut self) {
        self.port.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, task: &str) -> Backend {
        Backend {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            task_id: task.to_string(),
        }
    }

    #[test]
    fn picks_the_least_loaded_and_spreads_ties() {
        let shared = PortShared::new(10000, Protocol::Tcp, "app");
        assert!(shared.pick(None).is_none());
        shared.set_backends(vec![backend(1, "a"), backend(2, "b"), backend(3, "c")]);
        let first = shared.pick(None).unwrap();
        let second = shared.pick(None).unwrap();
        let third = shared.pick(None).unwrap();
        let mut ports = [
            first.slot.addr.port(),
            second.slot.addr.port(),
            third.slot.addr.port(),
        ];
        ports.sort_unstable();
        assert_eq!(
            ports,
            [1, 2, 3],
            "each backend gets one before any gets two"
        );
        let idle = second.slot.addr;
        drop(second);
        let again = shared.pick(None).unwrap();
        assert_eq!(again.slot.addr, idle, "the one backend with no connection");
        assert_eq!(again.slot.active(), 1);
        // Ties go everywhere.
        drop((first, third, again));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(shared.pick(None).unwrap().slot.addr.port());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn kept_backends_keep_their_counts_and_excluded_are_skipped() {
        let shared = PortShared::new(10000, Protocol::Tcp, "app");
        shared.set_backends(vec![backend(1, "a"), backend(2, "b")]);
        let lease = shared.pick(None).unwrap();
        let port = lease.slot.addr.port();
        shared.set_backends(vec![backend(1, "a"), backend(2, "b"), backend(3, "c")]);
        let kept = shared.backends();
        let slot = kept.iter().find(|b| b.addr.port() == port).unwrap();
        assert_eq!(slot.active(), 1);
        assert!(Arc::ptr_eq(slot, &lease.slot));
        // Excluding the only backend leaves nothing.
        shared.set_backends(vec![backend(1, "a")]);
        let only = shared.pick(None).unwrap();
        assert!(shared.pick(Some(&only.slot)).is_none());
        // A failed backend is avoided while another is available, used otherwise.
        shared.set_backends(vec![backend(1, "a"), backend(2, "b")]);
        drop((lease, only));
        let failed = shared.backends()[0].clone();
        assert!(failed.mark_failed());
        assert!(!failed.mark_failed(), "a second failure is not news");
        for _ in 0..20 {
            assert_eq!(shared.pick(None).unwrap().slot.addr.port(), 2);
        }
        shared.set_backends(vec![backend(1, "a")]);
        assert_eq!(shared.pick(None).unwrap().slot.addr.port(), 1);
    }
}
