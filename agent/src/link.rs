//! The agent's link to the master: one bidirectional gRPC stream
//! (`AgentLink.Attach`), dialled by the agent.
//!
//! ```text
//! dial ─▶ Attach(stream) ─▶ send Register{agent_info, tasks, version}
//!      ◀─ Registered{agent_id, heartbeat}  → Connection (the agent loop pumps it)
//!      ◀─ AgentError / anything else / timeout → LinkError, retry after a backoff
//!      ◀─ AgentError { gone } → LinkError::Gone: the agent kills its tasks and stops
//! ```
//!
//! [`connect`] is one attempt; the agent loop owns the retry schedule ([`Backoff`]:
//! random in `[0, b]`, `b` doubling up to a cap, as Mesos agents do; but while the
//! master cannot be reached at all, `b` stays at most [`UNREACHABLE_PROBE`], so that an
//! agent is back within seconds of the master's return however long it was away).

use std::time::Duration;

use rand::Rng;
use strata_proto::limits::MAX_MESSAGE_BYTES;
use strata_proto::v1::{self, agent_link_client::AgentLinkClient, agent_message, master_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Capacity of the outbound queue into the stream. What goes in is bounded by the
/// tasks (only queue heads are in flight) plus heartbeats; when it is full an update
/// is left to its retry timer rather than blocking the agent.
pub(crate) const OUTBOUND_CAPACITY: usize = 65536;
/// How long one attempt may take, dial to Registered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Heartbeat interval when the master names none that makes sense (Mesos: 15 s).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// The fastest heartbeat the agent sends, whatever the master asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// The slowest: an absurd interval from the wire must not overflow a timer.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);
/// Longest registration backoff bound, whatever the options say.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// The largest backoff bound while the master cannot be reached (its port refuses or
/// does not answer). Such an attempt costs the master nothing, so agents keep probing
/// at this pace (spread by the random delay) instead of doubling their wait through a
/// long outage: after a 6.4 s outage, the doubling bound had an agent wait 26.7 s.
/// Once the master answers, failures back off in full (a busy master is spared).
pub(crate) const UNREACHABLE_PROBE: Duration = Duration::from_secs(2);

/// Why an attempt to (re-)register failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot reach the master: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the master refused the stream: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the master refused the registration: {0}")]
    Refused(String),
    #[error("{0}")]
    Gone(String),
    #[error("the master closed the stream before answering the registration")]
    Closed,
    #[error("the master answered the registration with something else")]
    Unexpected,
    #[error("no answer from the master within {0:?}")]
    Timeout(Duration),
}

/// A registered stream.
pub(crate) struct Connection {
    /// Messages up to the master.
    pub outbound: mpsc::Sender<v1::AgentMessage>,
    /// Messages down from the master, after Registered.
    pub inbound: tonic::Streaming<v1::MasterMessage>,
    pub registered: v1::Registered,
}

/// The gRPC endpoint for `uri` (from [`crate::config::master_uri`]), with keepalives so
/// that a master that vanishes without closing the connection is noticed.
pub(crate) fn endpoint(uri: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(tune(Endpoint::from_shared(uri.to_string())?))
}

/// The link's connection settings on `endpoint` (plain or TLS).
pub(crate) fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
}

/// One registration attempt.
pub(crate) async fn connect(
    endpoint: Endpoint,
    register: v1::Register,
) -> Result<Connection, LinkError> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(endpoint, register)).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::Timeout(ATTEMPT_TIMEOUT)),
    }
}

async fn attempt(endpoint: Endpoint, register: v1::Register) -> Result<Connection, LinkError> {
    let channel = endpoint.connect().await?;
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let first = v1::AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    };
    // The receiver is alive (held just below), so this cannot fail.
    let _ = outbound.try_send(first);
    let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await? {
        Some(v1::MasterMessage {
            message: Some(master_message::Message::Registered(registered)),
        }) => Ok(Connection {
            outbound,
            inbound,
            registered,
        }),
        Some(v1::MasterMessage {
            message: Some(master_message::Message::Error(e)),
        }) if e.gone => Err(LinkError::Gone(e.message)),
        Some(v1::MasterMessage {
            message: Some(master_message::Message::Error(e)),
        }) => Err(LinkError::Refused(e.message)),
        Some(_) => Err(LinkError::Unexpected),
        None => Err(LinkError::Closed),
    }
}

/// The heartbeat interval for what Registered asked, clamped to [100 ms, 1 h].
pub(crate) fn heartbeat_interval(seconds: f64) -> Duration {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => d.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT),
        _ => DEFAULT_HEARTBEAT,
    }
}

/// Mesos' registration backoff: each delay is random in `[0, b]`; `b` starts at
/// `initial` and doubles after each failed attempt up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(MAX_BACKOFF);
        Backoff {
            initial,
            max: max.clamp(initial, MAX_BACKOFF),
            current: initial,
        }
    }

    /// The next delay; doubles the bound for the one after. `unreachable`: the last
    /// attempt could not reach the master at all, and the bound is at most
    /// [`UNREACHABLE_PROBE`] (or the initial bound, when that is larger).
    pub(crate) fn next_delay(&mut self, unreachable: bool) -> Duration {
        let bound = if unreachable {
            self.current.min(UNREACHABLE_PROBE.max(self.initial))
        } else {
            self.current
        };
        self.current = (self.current * 2).min(self.max);
        let nanos = bound.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            rand::rng().random_range(0..=nanos)
        })
    }

    /// After a successful registration.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_random_below_a_doubling_capped_bound() {
        let s = Duration::from_secs(1);
        let mut b = Backoff::new(s, 4 * s);
        for bound in [1, 2, 4, 4, 4] {
            assert!(b.next_delay(false) <= bound * s);
        }
        b.reset();
        assert!(b.next_delay(false) <= s);
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(false),
            Duration::ZERO
        );
    }

    #[test]
    fn through_a_long_outage_an_agent_keeps_probing_every_few_seconds() {
        // The defaults: 1 s doubling to 1 min.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut waited = Duration::ZERO;
        let mut longest = Duration::ZERO;
        while waited < Duration::from_secs(600) {
            let delay = b.next_delay(true);
            longest = longest.max(delay);
            waited += delay.max(Duration::from_millis(1));
        }
        assert!(longest <= UNREACHABLE_PROBE, "{longest:?}");
        // The master answers but refuses: the doubling bound applies again, up to the cap.
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay(false)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(
            delays.iter().any(|d| *d > UNREACHABLE_PROBE * 4),
            "a master that answers gets the full backoff"
        );
        // The random delays spread agents over the whole bound.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let probes: Vec<Duration> = (0..1000).map(|_| b.next_delay(true)).collect();
        let early = probes
            .iter()
            .filter(|d| **d < UNREACHABLE_PROBE / 2)
            .count();
        assert!(
            (300..700).contains(&early),
            "{early} of 1000 in the first half"
        );
    }

    #[test]
    fn heartbeat_interval_is_clamped() {
        assert_eq!(heartbeat_interval(5.0), Duration::from_secs(5));
        assert_eq!(heartbeat_interval(0.001), MIN_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e15), MAX_HEARTBEAT);
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
    }
}
