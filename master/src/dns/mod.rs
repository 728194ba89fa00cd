//! The master's DNS server (`--dns-listen`, issue 15): Mesos-DNS-style names for every
//! framework's running tasks with discovery info, served with hickory-server on UDP and
//! TCP and kept up to date from the operator event stream ([`crate::events`]).
//!
//! ```text
//!  driver ─operator_subscribe─▶ follow: Tables ─zone()─▶ Arc<Zone> (swapped whole)
//!                                                          ▲ read per query
//!  UDP/TCP ─▶ hickory_server::Server ─▶ Answerer ───────────┘
//! ```
//!
//! The names are [`records`]'. Answers are authoritative with a TTL of [`TTL`]; a
//! name inside the domain that does not exist is NXDOMAIN, a name that exists without
//! records of the asked type is NOERROR with no answer (both with the zone's SOA in
//! the authority section), and a name outside the domain is REFUSED. SRV answers carry
//! the A/AAAA records of their targets in the additional section.

pub mod records;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use strata_proto::v1::operator_event::Event;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

pub use records::{Lookup, Node, Srv, Tables, Zone, is_domain, label};

use crate::driver::DriverHandle;

/// The domain answered for unless `--dns-domain` says otherwise.
pub const DEFAULT_DOMAIN: &str = "strata";
/// The TTL of every record: short, as instances come and go.
pub const TTL: u32 = 5;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers waiting to be written to one TCP client.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How long resolving an agent's host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The zone being served: replaced whole after every batch of events.
type SharedZone = Arc<RwLock<Arc<Zone>>>;

/// A DNS server's sockets, bound: [`DnsServer::run`] serves on them.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`. Port 0 picks a port free for both.
    pub async fn bind(addr: SocketAddr) -> io::Result<DnsServer> {
        let tries = if addr.port() == 0 { 16 } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let udp = UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => {
                    return Ok(DnsServer {
                        udp,
                        tcp,
                        addr: bound,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no port")))
    }

    /// The address served on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the names of `domain` (see [`records`]), following `driver`'s event
    /// stream, until `stop` turns true or the driver stops.
    pub async fn run(self, driver: DriverHandle, domain: String, mut stop: watch::Receiver<bool>) {
        let zone: SharedZone = Arc::new(RwLock::new(Arc::new(Zone::new(&domain))));
        let follower = tokio::spawn(follow(driver, domain, zone.clone(), stop.clone()));
        let mut server = hickory_server::Server::new(Answerer { zone });
        server.register_socket(self.udp);
        server.register_listener(self.tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        let _ = stop.wait_for(|s| *s).await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "the DNS server stopped with an error");
        }
        let _ = follower.await;
        tracing::info!("DNS server stopped");
    }
}

/// Keeps `zone` up to date from the operator event stream until `stop` or until the
/// driver is gone; resumes where it left off when it falls behind.
async fn follow(
    driver: DriverHandle,
    domain: String,
    zone: SharedZone,
    mut stop: watch::Receiver<bool>,
) {
    let mut tables = Tables::default();
    let mut resume: Option<(String, u64)> = None;
    let (resolved_tx, mut resolved) = mpsc::unbounded_channel();
    loop {
        let start = tokio::select! {
            // All: the framework names are needed too (TASK.FRAMEWORK.DOMAIN).
            start = driver.operator_subscribe(String::new(), crate::events::Scope::All, resume.take()) => match start {
                Ok(start) => start,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut asks = Vec::new();
        if let Some(snapshot) = &start.snapshot {
            let state = crate::grpc::state_response(snapshot);
            asks.extend(tables.apply(&Event::Snapshot(state)));
        }
        let mut last = start.seq;
        for event in &start.replay {
            if let Some(e) = &event.event {
                asks.extend(tables.apply(e));
            }
        }
        resolve(asks, &resolved_tx);
        publish(&tables, &domain, &zone);
        let mut events = start.events;
        loop {
            tokio::select! {
                next = events.recv() => {
                    let Some(event) = next else { break };
                    let mut asks = Vec::new();
                    last = event.seq;
                    if let Some(e) = &event.event {
                        asks.extend(tables.apply(e));
                    }
                    // Everything already waiting, then one new zone.
                    while let Ok(event) = events.try_recv() {
                        last = event.seq;
                        if let Some(e) = &event.event {
                            asks.extend(tables.apply(e));
                        }
                    }
                    resolve(asks, &resolved_tx);
                    publish(&tables, &domain, &zone);
                }
                Some((agent_id, host, ips)) = resolved.recv() => {
                    if tables.resolved(&agent_id, &host, ips) {
                        publish(&tables, &domain, &zone);
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        // The stream ends when the master stops, or when this fell behind.
        if *stop.borrow() || !driver.is_running() {
            return;
        }
        tracing::info!(after = last, "DNS: the event stream fell behind; resuming");
        resume = Some((start.master_id, last));
    }
}

/// Builds the zone from `tables` and serves it, with the next serial, if it changed.
fn publish(tables: &Tables, domain: &str, zone: &SharedZone) {
    let mut fresh = tables.zone(domain);
    let mut current = zone.write().unwrap_or_else(|e| e.into_inner());
    fresh.serial = current.serial;
    if **current != fresh {
        fresh.serial = current.serial.wrapping_add(1);
        tracing::debug!(
            names = fresh.len(),
            tasks = tables.tasks(),
            serial = fresh.serial,
            "DNS zone updated"
        );
        *current = Arc::new(fresh);
    }
}

/// Resolves each agent host name in the background; the answers come back on `tx`.
fn resolve(
    asks: Vec<records::Resolve>,
    tx: &mpsc::UnboundedSender<(String, String, Vec<std::net::IpAddr>)>,
) {
    for ask in asks {
        let tx = tx.clone();
        tokio::spawn(async move {
            let found = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host(format!("{}:0", bracketed(&ask.host))),
            )
            .await;
            let mut ips: Vec<std::net::IpAddr> = match found {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    tracing::warn!(agent = %ask.agent_id, host = %ask.host, error = %e, "DNS: cannot resolve the agent's host: its tasks get no addresses until it re-registers");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(agent = %ask.agent_id, host = %ask.host, "DNS: resolving the agent's host timed out: its tasks get no addresses until it re-registers");
                    Vec::new()
                }
            };
            ips.sort();
            ips.dedup();
            let _ = tx.send((ask.agent_id, ask.host, ips));
        });
    }
}

/// `host` as the host part of `host:port`.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Answers queries from the zone of the moment.
struct Answerer {
    zone: SharedZone,
}

#[async_trait::async_trait]
impl RequestHandler for Answerer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, MAX_UDP_PAYLOAD))
                .set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answer = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            Answer::code(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Ok(info) => {
                    let zone = self.zone.read().unwrap_or_else(|e| e.into_inner()).clone();
                    answer(&zone, info.query.original())
                }
                Err(_) => Answer::code(ResponseCode::FormErr),
            }
        };
        metadata.response_code = answer.code;
        metadata.authoritative = answer.authoritative;
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS: cannot send an answer");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The largest UDP answer (with EDNS; 512 bytes without): the DNS flag day 2020's
/// size, which avoids IP fragmentation. A larger answer is truncated (TC) and the
/// client asks again over TCP.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// What to send back for one question.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    /// The zone's SOA, in the authority section of an empty answer (negative caching).
    pub soa: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer {
            code,
            ..Answer::default()
        }
    }
}

/// The answer to `query` from `zone`: records of the name and type asked (any case;
/// the answer's names are spelled as asked), NXDOMAIN for a name of the domain that
/// does not exist, REFUSED outside the domain or of a class other than IN.
pub fn answer(zone: &Zone, query: &Query) -> Answer {
    let name = query.name();
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Answer::code(ResponseCode::Refused);
    }
    let node = match zone.lookup(&name.to_ascii()) {
        Lookup::Outside => return Answer::code(ResponseCode::Refused),
        Lookup::NxDomain => {
            return Answer {
                code: ResponseCode::NXDomain,
                authoritative: true,
                soa: vec![soa(zone)],
                ..Answer::default()
            };
        }
        Lookup::Found(node) => node,
    };
    let kind = query.query_type();
    let wants = |t: RecordType| kind == t || kind == RecordType::ANY;
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    if wants(RecordType::A) || wants(RecordType::AAAA) {
        answers.extend(addresses(
            name,
            node,
            wants(RecordType::A),
            wants(RecordType::AAAA),
        ));
    }
    if wants(RecordType::SRV) {
        for srv in &node.srv {
            let Ok(target) = Name::from_ascii(format!("{}.", srv.target)) else {
                continue;
            };
            if let Lookup::Found(host) = zone.lookup(&srv.target) {
                additionals.extend(addresses(&target, host, true, true));
            }
            answers.push(Record::from_rdata(
                name.clone(),
                TTL,
                RData::SRV(SRV::new(0, 0, srv.port, target)),
            ));
        }
    }
    let apex = name
        .to_ascii()
        .trim_end_matches('.')
        .eq_ignore_ascii_case(zone.domain());
    if apex && wants(RecordType::SOA) {
        answers.push(soa(zone));
    }
    let soa = if answers.is_empty() {
        vec![soa(zone)]
    } else {
        Vec::new()
    };
    Answer {
        code: ResponseCode::NoError,
        authoritative: true,
        answers,
        soa,
        additionals,
    }
}

/// The A and/or AAAA records of `node`, named `name`.
fn addresses(name: &Name, node: &Node, v4: bool, v6: bool) -> Vec<Record> {
    let a = node.v4.iter().filter(|_| v4).map(|ip| RData::A(A(*ip)));
    let aaaa = node
        .v6
        .iter()
        .filter(|_| v6)
        .map(|ip| RData::AAAA(AAAA(*ip)));
    a.chain(aaaa)
        .map(|data| Record::from_rdata(name.clone(), TTL, data))
        .collect()
}

/// The zone's SOA: `ns.DOMAIN. root.ns.DOMAIN.`, its serial, and the TTL as the
/// negative-caching time.
fn soa(zone: &Zone) -> Record {
    let domain = zone.domain();
    let name = |s: String| Name::from_ascii(s).unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        name(format!("{domain}.")),
        TTL,
        RData::SOA(SOA::new(
            name(format!("ns.{domain}.")),
            name(format!("root.ns.{domain}.")),
            zone.serial,
            60,
            30,
            86400,
            TTL,
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1;

    fn zone() -> Zone {
        let mut tables = Tables::default();
        let state = v1::GetStateResponse {
            agents: vec![v1::AgentState {
                info: Some(v1::AgentInfo {
                    id: "a1".into(),
                    address: "10.0.0.1:5051".into(),
                    ..Default::default()
                }),
                status: "ACTIVE".into(),
                ..Default::default()
            }],
            tasks: vec![v1::TaskEntry {
                task_id: "web.1".into(),
                agent_id: "a1".into(),
                framework_id: "f".into(),
                state: v1::TaskState::TaskRunning as i32,
                discovery: Some(v1::DiscoveryInfo {
                    name: "web".into(),
                    ports: Some(v1::Ports {
                        ports: vec![v1::Port {
                            number: 31000,
                            name: "http".into(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        tables.apply(&Event::Snapshot(state));
        let mut zone = tables.zone("strata");
        zone.serial = 7;
        zone
    }

    fn ask(name: &str, kind: RecordType) -> Answer {
        answer(
            &zone(),
            &Query::query(Name::from_ascii(name).unwrap(), kind),
        )
    }

    #[test]
    fn a_records_are_named_as_asked() {
        let a = ask("WEB.strata.", RecordType::A);
        assert_eq!((a.code, a.authoritative), (ResponseCode::NoError, true));
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].name.to_ascii(), "WEB.strata.");
        assert_eq!(a.answers[0].ttl, TTL);
        assert_eq!(a.answers[0].data, RData::A(A("10.0.0.1".parse().unwrap())));
        assert!(a.soa.is_empty());
        // No AAAA: NOERROR, no answer, the SOA for negative caching.
        let none = ask("web.strata.", RecordType::AAAA);
        assert_eq!(none.code, ResponseCode::NoError);
        assert!(none.answers.is_empty());
        assert_eq!(none.soa.len(), 1);
    }

    #[test]
    fn srv_answers_carry_their_targets_addresses() {
        let a = ask("_http._tcp.web.strata.", RecordType::SRV);
        assert_eq!(a.code, ResponseCode::NoError);
        let RData::SRV(srv) = &a.answers[0].data else {
            panic!("{:?}", a.answers)
        };
        assert_eq!(
            (srv.priority, srv.weight, srv.port, srv.target.to_ascii()),
            (0, 0, 31000, "web-1.web.strata.".to_string())
        );
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].name.to_ascii(), "web-1.web.strata.");
        // ANY: every type the name has.
        assert_eq!(ask("web.strata.", RecordType::ANY).answers.len(), 1);
    }

    #[test]
    fn unknown_names_foreign_names_and_the_apex() {
        let nx = ask("nope.strata.", RecordType::A);
        assert_eq!((nx.code, nx.authoritative), (ResponseCode::NXDomain, true));
        let RData::SOA(soa) = &nx.soa[0].data else {
            panic!("{:?}", nx.soa)
        };
        assert_eq!((soa.serial, soa.minimum), (7, TTL));
        let refused = ask("example.com.", RecordType::A);
        assert_eq!(
            (refused.code, refused.authoritative),
            (ResponseCode::Refused, false)
        );
        let apex = ask("strata.", RecordType::SOA);
        assert_eq!((apex.code, apex.answers.len()), (ResponseCode::NoError, 1));
        let chaos = Query::query(Name::from_ascii("web.strata.").unwrap(), RecordType::A)
            .set_query_class(DNSClass::CH)
            .clone();
        assert_eq!(answer(&zone(), &chaos).code, ResponseCode::Refused);
    }
}
