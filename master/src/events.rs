//! The operator event stream's log, kept by the driver: the changes the core observed
//! ([`crate::core::Observed`]), numbered, as `OperatorEvent`s, the last
//! [`LOG_CAPACITY`] of them kept for clients that resume, and handed to every
//! subscriber in order.
//!
//! ```text
//!  core ─take_observed─▶ EventLog::publish ─seq n─▶ log (ring) ─▶ each subscriber's channel
//!  Subscribe(resume after k) ─▶ k still in the log ─▶ events k+1..n, then live
//!                             └▶ otherwise         ─▶ SNAPSHOT (seq n), then live
//! ```
//!
//! Everything happens on the driver's task, between two inputs, so a subscriber never
//! misses or repeats an event between its snapshot (or replay) and the live events. A
//! subscriber whose channel is full is dropped (its stream ends) and resumes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use strata_proto::v1::{self, operator_event::Event};
use tokio::sync::mpsc;

use crate::core::{Observed, StateSnapshot};
use crate::grpc::{agent_state, framework_state, task_entry};

/// How many events the log keeps for clients that resume.
pub const LOG_CAPACITY: usize = 65_536;
/// How many events may wait for one subscriber before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 16_384;

/// Where a new subscriber starts: a snapshot (or the events it missed), then `events`.
#[derive(Debug)]
pub struct SubscribeStart {
    /// The state as of `seq`, when the client could not resume.
    pub snapshot: Option<StateSnapshot>,
    /// The events after the client's resume point, up to `seq`.
    pub replay: Vec<Arc<v1::OperatorEvent>>,
    /// The seq of the last event included above.
    pub seq: u64,
    pub master_id: String,
    /// Each framework's principal, for the subscriber's authorization.
    pub owners: HashMap<String, String>,
    /// The live events from `seq + 1` on.
    pub events: mpsc::Receiver<Arc<v1::OperatorEvent>>,
}

/// What a subscriber follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (an operator; filtered by its ACLs on the way out).
    All,
    /// Agents, and tasks that offer themselves to discovery beyond their framework:
    /// what the agents' service proxies need. Selected once per event, so that
    /// thousands of agents following the stream cost the master little.
    Services,
}

/// Whether `event` matters to [`Scope::Services`] subscribers.
pub fn for_services(event: &v1::OperatorEvent) -> bool {
    match &event.event {
        Some(Event::TaskAdded(t)) | Some(Event::TaskUpdated(t)) => discoverable(t),
        Some(Event::AgentAdded(_))
        | Some(Event::AgentUpdated(_))
        | Some(Event::AgentRemoved(_))
        | Some(Event::Heartbeat(_)) => true,
        _ => false,
    }
}

/// A task with discovery info visible beyond its framework.
pub fn discoverable(t: &v1::TaskEntry) -> bool {
    t.discovery.as_ref().is_some_and(beyond_framework)
}

fn beyond_framework(d: &v1::DiscoveryInfo) -> bool {
    strata_proto::discovery::visibility(d) != v1::discovery_info::Visibility::Framework
}

/// The state as [`Scope::Services`] subscribers see it: agents, and discoverable tasks.
pub fn services_snapshot(mut s: StateSnapshot) -> StateSnapshot {
    s.frameworks.clear();
    s.roles.clear();
    s.tasks
        .retain(|t| t.discovery.as_ref().is_some_and(beyond_framework));
    s
}

/// The log and the subscribers.
pub struct EventLog {
    master_id: String,
    last_seq: u64,
    log: VecDeque<Arc<v1::OperatorEvent>>,
    subscribers: Vec<mpsc::Sender<Arc<v1::OperatorEvent>>>,
    /// The agents' proxies, by principal.
    service_subscribers: Vec<(String, mpsc::Sender<Arc<v1::OperatorEvent>>)>,
    /// The latest seq each proxy has applied (its acknowledgements).
    acks: HashMap<String, u64>,
}

impl EventLog {
    pub fn new(master_id: String) -> EventLog {
        EventLog {
            master_id,
            last_seq: 0,
            log: VecDeque::new(),
            subscribers: Vec::new(),
            service_subscribers: Vec::new(),
            acks: HashMap::new(),
        }
    }

    /// Numbers `observed`, keeps them, and sends them to every subscriber.
    pub fn publish(&mut self, observed: Vec<Observed>) {
        if observed.is_empty() {
            return;
        }
        for change in observed {
            self.last_seq += 1;
            let event = Arc::new(v1::OperatorEvent {
                seq: self.last_seq,
                master_id: self.master_id.clone(),
                event: Some(event_of(change)),
            });
            if self.log.len() == LOG_CAPACITY {
                self.log.pop_front();
            }
            self.log.push_back(event.clone());
            send_all(&mut self.subscribers, &event);
            if for_services(&event) {
                self.service_subscribers
                    .retain(|(_, s)| keep(s.try_send(event.clone())));
            }
        }
    }

    /// Starts a subscriber: after `resume` (master id and seq) when the log still
    /// holds every event since, else from a snapshot (`snapshot` is called then).
    pub fn subscribe(
        &mut self,
        principal: &str,
        scope: Scope,
        resume: Option<(&str, u64)>,
        snapshot: impl FnOnce() -> StateSnapshot,
        owners: HashMap<String, String>,
    ) -> SubscribeStart {
        let (tx, events) = mpsc::channel(SUBSCRIBER_BUFFER);
        match scope {
            Scope::All => self.subscribers.push(tx),
            Scope::Services => self.service_subscribers.push((principal.to_string(), tx)),
        }
        let first_kept = self.log.front().map(|e| e.seq).unwrap_or(self.last_seq + 1);
        let replay = match resume {
            Some((master_id, after))
                if master_id == self.master_id
                    && after <= self.last_seq
                    && after + 1 >= first_kept =>
            {
                let skip = (after + 1 - first_kept) as usize;
                let kept = self.log.iter().skip(skip);
                Some(match scope {
                    Scope::All => kept.cloned().collect(),
                    Scope::Services => kept.filter(|e| for_services(e)).cloned().collect(),
                })
            }
            _ => None,
        };
        let (snapshot, replay) = match replay {
            Some(replay) => (None, replay),
            None => match scope {
                Scope::All => (Some(snapshot()), Vec::new()),
                Scope::Services => (Some(services_snapshot(snapshot())), Vec::new()),
            },
        };
        SubscribeStart {
            snapshot,
            replay,
            seq: self.last_seq,
            master_id: self.master_id.clone(),
            owners,
            events,
        }
    }

    /// How many subscribers are attached.
    pub fn subscribers(&self) -> usize {
        self.subscribers.len() + self.service_subscribers.len()
    }
}

impl EventLog {
    /// A proxy (`principal`) has applied the events up to `seq` of `master_id`.
    pub fn ack(&mut self, principal: &str, master_id: &str, seq: u64) {
        if master_id == self.master_id && seq <= self.last_seq {
            let acked = self.acks.entry(principal.to_string()).or_default();
            *acked = (*acked).max(seq);
        }
    }

    /// The seq every proxy following the stream has applied (`u64::MAX` when none
    /// follows).
    pub fn synced(&mut self) -> u64 {
        self.service_subscribers.retain(|(_, s)| !s.is_closed());
        self.service_subscribers
            .iter()
            .map(|(p, _)| self.acks.get(p).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Whether a subscriber stays after a send (it is dropped when gone or full).
fn keep(sent: Result<(), mpsc::error::TrySendError<Arc<v1::OperatorEvent>>>) -> bool {
    match sent {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::info!("an operator event subscriber fell behind: dropped (it may resume)");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Sends `event` to each of `subscribers`, dropping those that are gone or full.
fn send_all(
    subscribers: &mut Vec<mpsc::Sender<Arc<v1::OperatorEvent>>>,
    event: &Arc<v1::OperatorEvent>,
) {
    subscribers.retain(|s| keep(s.try_send(event.clone())));
}

fn event_of(change: Observed) -> Event {
    match change {
        Observed::TaskAdded(t) => Event::TaskAdded(task_entry(&t)),
        Observed::TaskUpdated(t) => Event::TaskUpdated(task_entry(&t)),
        Observed::AgentAdded(a) => Event::AgentAdded(agent_state(&a)),
        Observed::AgentUpdated(a) => Event::AgentUpdated(agent_state(&a)),
        Observed::AgentRemoved(id) => Event::AgentRemoved(id),
        Observed::FrameworkAdded(f) => Event::FrameworkAdded(framework_state(&f)),
        Observed::FrameworkUpdated(f) => Event::FrameworkUpdated(framework_state(&f)),
        Observed::FrameworkRemoved(id) => Event::FrameworkRemoved(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> StateSnapshot {
        StateSnapshot {
            master_id: "m".into(),
            agents: Vec::new(),
            frameworks: Vec::new(),
            tasks: Vec::new(),
            roles: Vec::new(),
            outstanding_offers: 0,
        }
    }

    fn removed(id: &str) -> Observed {
        Observed::FrameworkRemoved(id.into())
    }

    #[test]
    fn a_client_resumes_where_it_left_off_or_gets_a_snapshot() {
        let mut log = EventLog::new("m".into());
        log.publish(vec![removed("a"), removed("b")]);
        let start = log.subscribe("", Scope::All, None, snapshot, HashMap::new());
        assert!(start.snapshot.is_some());
        assert_eq!(start.seq, 2);
        let mut live = start.events;
        log.publish(vec![removed("c")]);
        assert_eq!(live.try_recv().unwrap().seq, 3);

        // Resumes after 1: events 2 and 3, no snapshot.
        let again = log.subscribe(
            "",
            Scope::All,
            Some(("m", 1)),
            || panic!("no snapshot"),
            HashMap::new(),
        );
        let seqs: Vec<u64> = again.replay.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(again.seq, 3);
        // Another master's resume point, or one from the future: a snapshot.
        assert!(
            log.subscribe("", Scope::All, Some(("other", 1)), snapshot, HashMap::new())
                .snapshot
                .is_some()
        );
        assert!(
            log.subscribe("", Scope::All, Some(("m", 9)), snapshot, HashMap::new())
                .snapshot
                .is_some()
        );
        // Up to date: nothing to replay, no snapshot.
        let current = log.subscribe(
            "",
            Scope::All,
            Some(("m", 3)),
            || panic!("no snapshot"),
            HashMap::new(),
        );
        assert!(current.replay.is_empty() && current.snapshot.is_none());
    }

    #[test]
    fn a_resume_point_the_log_no_longer_holds_gets_a_snapshot() {
        let mut log = EventLog::new("m".into());
        log.publish(
            (0..LOG_CAPACITY + 10)
                .map(|i| removed(&i.to_string()))
                .collect(),
        );
        assert!(
            log.subscribe("", Scope::All, Some(("m", 5)), snapshot, HashMap::new())
                .snapshot
                .is_some()
        );
        let kept = log.subscribe(
            "",
            Scope::All,
            Some(("m", 10)),
            || panic!("no snapshot"),
            HashMap::new(),
        );
        assert_eq!(kept.replay.len(), LOG_CAPACITY);
        assert_eq!(kept.replay[0].seq, 11);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_dropped() {
        let mut log = EventLog::new("m".into());
        let start = log.subscribe("", Scope::All, None, snapshot, HashMap::new());
        log.publish(
            (0..SUBSCRIBER_BUFFER + 1)
                .map(|i| removed(&i.to_string()))
                .collect(),
        );
        assert_eq!(log.subscribers(), 0);
        drop(start);
    }
}
