//! At-least-once delivery of status updates: one queue per task, in order, only the
//! head in flight, retried until the master acknowledges it by uuid.
//!
//! ```text
//! push ──▶ [u1 u2 u3]  head u1 sent now, retried at +10 s, +20 s, ... (capped at 10 min)
//! ack(u1) ─▶ [u2 u3]   u2 becomes the head and is sent at once
//! re-registration ─▶ every head is sent again at once
//! ```
//!
//! Sans-IO: callers pass `now` and send what comes back. Retry timers live in one
//! ordered map, so the next deadline is found in O(log n) with thousands of tasks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use strata_proto::v1;

use crate::task_key::TaskKey;

/// The longest retry interval, whatever the options say.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The result of an acknowledgement.
#[derive(Debug, PartialEq)]
pub(crate) enum Ack {
    /// The head was acknowledged. `next` is the new head, to send now; `remaining`
    /// counts what is left in the queue.
    Acked {
        next: Option<v1::TaskStatus>,
        remaining: usize,
    },
    /// The uuid is not the head's (a duplicate or stale acknowledgement).
    NotHead,
    /// No queue for this task.
    Unknown,
}

#[derive(Debug)]
struct Queue {
    pending: VecDeque<v1::TaskStatus>,
    /// The head's retry timer, the key of its entry in `StatusUpdates::timers`.
    timer: Option<(Instant, u64)>,
    /// The head's current retry interval.
    backoff: Duration,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct StatusUpdates {
    queues: HashMap<TaskKey, Queue>,
    /// Retry deadlines of queue heads; the `u64` makes equal instants distinct.
    timers: BTreeMap<(Instant, u64), TaskKey>,
    seq: u64,
    initial: Duration,
    max: Duration,
}

impl StatusUpdates {
    pub(crate) fn new(initial: Duration, max: Duration) -> StatusUpdates {
        // Bounded so that `now + interval` can never overflow.
        let initial = initial.clamp(Duration::from_millis(1), MAX_INTERVAL);
        let max = max.min(MAX_INTERVAL);
        StatusUpdates {
            queues: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            initial,
            max: max.max(initial),
        }
    }

    /// Queues `status` for `key`. Returns it when it became the head: send it now.
    pub(crate) fn push(
        &mut self,
        key: &TaskKey,
        status: v1::TaskStatus,
        now: Instant,
    ) -> Option<v1::TaskStatus> {
        let initial = self.initial;
        let queue = self.queues.entry(key.clone()).or_insert_with(|| Queue {
            pending: VecDeque::new(),
            timer: None,
            backoff: initial,
        });
        queue.pending.push_back(status);
        if queue.pending.len() == 1 {
            queue.backoff = initial;
            let head = queue.pending.front().cloned();
            self.schedule(key, now + initial);
            head
        } else {
            None
        }
    }

    /// Acknowledges the head of `key`'s queue when `uuid` is its uuid.
    pub(crate) fn acknowledge(&mut self, key: &TaskKey, uuid: &str, now: Instant) -> Ack {
        let Some(queue) = self.queues.get_mut(key) else {
            return Ack::Unknown;
        };
        if queue.pending.front().map(|s| s.uuid.as_str()) != Some(uuid) {
            return Ack::NotHead;
        }
        queue.pending.pop_front();
        if let Some(timer) = queue.timer.take() {
            self.timers.remove(&timer);
        }
        let remaining = queue.pending.len();
        if remaining == 0 {
            self.queues.remove(key);
            return Ack::Acked {
                next: None,
                remaining,
            };
        }
        queue.backoff = self.initial;
        let next = queue.pending.front().cloned();
        self.schedule(key, now + self.initial);
        Ack::Acked { next, remaining }
    }

    /// When the next retry is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The heads whose retry is due, each rescheduled with a doubled interval.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<v1::TaskStatus> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            queue.timer = None;
            queue.backoff = (queue.backoff * 2).min(self.max);
            let (head, backoff) = (queue.pending.front().cloned(), queue.backoff);
            if let Some(head) = head {
                out.push(head);
                self.schedule(&key, now + backoff);
            }
        }
        out
    }

    /// Every head, to resend after a (re-)registration; their retry intervals restart.
    pub(crate) fn heads(&mut self, now: Instant) -> Vec<v1::TaskStatus> {
        let keys: Vec<TaskKey> = self.queues.keys().cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(queue) = self.queues.get_mut(&key) {
                queue.backoff = self.initial;
                if let Some(head) = queue.pending.front() {
                    out.push(head.clone());
                }
            }
            self.schedule(&key, now + self.initial);
        }
        out
    }

    /// The pending updates of `key`, oldest first.
    pub(crate) fn pending(&self, key: &TaskKey) -> impl Iterator<Item = &v1::TaskStatus> {
        self.queues
            .get(key)
            .into_iter()
            .flat_map(|q| q.pending.iter())
    }

    pub(crate) fn len(&self, key: &TaskKey) -> usize {
        self.queues.get(key).map_or(0, |q| q.pending.len())
    }

    /// Every task with pending updates.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &TaskKey> {
        self.queues.keys()
    }

    /// Puts a new agent id on every pending update (the master gave a new one).
    pub(crate) fn restamp_agent(&mut self, agent_id: &str) {
        for queue in self.queues.values_mut() {
            for status in &mut queue.pending {
                status.agent_id = agent_id.to_string();
            }
        }
    }

    /// (Re)sets the retry timer of `key`'s head.
    fn schedule(&mut self, key: &TaskKey, at: Instant) {
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        if let Some(old) = queue.timer.take() {
            self.timers.remove(&old);
        }
        if queue.pending.is_empty() {
            return;
        }
        self.seq += 1;
        queue.timer = Some((at, self.seq));
        self.timers.insert((at, self.seq), key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> TaskKey {
        TaskKey {
            framework_id: "f".into(),
            task_id: t.into(),
        }
    }

    fn status(uuid: &str) -> v1::TaskStatus {
        v1::TaskStatus {
            uuid: uuid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_head_is_in_flight_and_acks_advance_it() {
        let now = Instant::now();
        let mut u = StatusUpdates::new(Duration::from_secs(10), Duration::from_secs(600));
        assert_eq!(
            u.push(&key("t"), status("a"), now).map(|s| s.uuid),
            Some("a".into())
        );
        assert_eq!(u.push(&key("t"), status("b"), now), None);
        assert_eq!(u.acknowledge(&key("t"), "b", now), Ack::NotHead);
        assert_eq!(u.acknowledge(&key("x"), "a", now), Ack::Unknown);
        match u.acknowledge(&key("t"), "a", now) {
            Ack::Acked {
                next: Some(s),
                remaining: 1,
            } => assert_eq!(s.uuid, "b"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            u.acknowledge(&key("t"), "b", now),
            Ack::Acked {
                next: None,
                remaining: 0
            }
        );
        assert_eq!(u.len(&key("t")), 0);
        assert_eq!(u.next_deadline(), None);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut u = StatusUpdates::new(10 * s, 25 * s);
        u.push(&key("t"), status("a"), t0);
        assert_eq!(u.next_deadline(), Some(t0 + 10 * s));
        assert!(u.due(t0 + 9 * s).is_empty());
        assert_eq!(u.due(t0 + 10 * s).len(), 1);
        assert_eq!(u.next_deadline(), Some(t0 + 30 * s)); // 20 s later
        assert_eq!(u.due(t0 + 30 * s).len(), 1);
        assert_eq!(u.next_deadline(), Some(t0 + 55 * s)); // capped at 25 s
        // A re-registration resends at once and restarts the interval.
        assert_eq!(u.heads(t0 + 40 * s).len(), 1);
        assert_eq!(u.next_deadline(), Some(t0 + 50 * s));
    }

    #[test]
    fn restamps_agent_ids() {
        let now = Instant::now();
        let mut u = StatusUpdates::new(Duration::from_secs(1), Duration::from_secs(1));
        u.push(&key("t"), status("a"), now);
        u.restamp_agent("agent-2");
        assert!(u.pending(&key("t")).all(|s| s.agent_id == "agent-2"));
        assert_eq!(u.keys().count(), 1);
    }
}
