//! The master's DNS server (issue 15), asked by real resolver clients: Debian's `dig`
//! and hickory's message codec over UDP and TCP. Two agents run instances of `web`; the
//! answers follow the tasks as they run, die and turn unhealthy.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use strata_master::MasterOptions;
use strata_proto::v1;
use strata_proto::v1::event::Event as Ev;

/// A port free on 127.0.0.1 for both UDP and TCP, released for the master to take.
fn free_dns_port() -> u16 {
    for _ in 0..32 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

async fn start_master(dir: &std::path::Path) -> (TestMaster, SocketAddr) {
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let mut options = MasterOptions::new(dir);
    options.allocation_interval = Duration::from_millis(100);
    options.dns_listen = Some(dns);
    let master = TestMaster::start_with(options).await;
    (master, dns)
}

/// `dig @SERVER -p PORT ARGS...`'s stdout; `None` when dig is not installed and this is
/// not CI (under CI it must be there: the test fails, saying what to install). Run
/// without blocking: the master answers on this test's runtime.
async fn dig(server: SocketAddr, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=2"])
        .args(args)
        .output()
        .await;
    match out {
        Ok(out) => {
            assert!(
                out.status.success(),
                "dig {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "dig is not installed ({e}): it checks the master's DNS server; install \
                     Debian's `dnsutils` package (apt-get install dnsutils, as scripts/test.sh does)"
                );
            }
            eprintln!("dig is not installed: its checks are skipped (apt-get install dnsutils)");
            None
        }
        Err(e) => panic!("cannot run dig: {e}"),
    }
}

/// The lines of `dig +short`, sorted.
async fn short(server: SocketAddr, name: &str, kind: &str, tcp: bool) -> Option<BTreeSet<String>> {
    let mut args = vec![name, kind, "+short"];
    if tcp {
        args.push("+tcp");
    }
    dig(server, &args)
        .await
        .map(|out| out.lines().map(str::to_string).collect())
}

/// The `status:` dig reports for `name`.
async fn status(server: SocketAddr, name: &str, kind: &str) -> Option<String> {
    dig(server, &[name, kind, "+noall", "+comments"])
        .await
        .map(|out| {
            out.split("status: ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .unwrap_or_else(|| panic!("no status in {out}"))
                .to_string()
        })
}

/// Asks `server` with hickory's message codec, over UDP or TCP.
async fn ask(server: SocketAddr, name: &str, kind: RecordType, tcp: bool) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let bytes = query.to_vec().unwrap();
    let answer = if tcp {
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        stream
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    } else {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&bytes, server).await.unwrap();
        let mut buf = vec![0; 4096];
        let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("a DNS answer within the wait")
            .unwrap();
        buf.truncate(n);
        buf
    };
    let message = Message::from_vec(&answer).expect("a DNS message");
    assert_eq!(message.metadata.id, query.metadata.id);
    message
}

fn code(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Asks until `done` holds for the answer (the server follows the master's events),
/// or panics after [`WAIT`] with the last answer.
async fn until(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    done: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = ask(server, name, kind, false).await;
        if done(&m) {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name} {kind}: still {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn addresses(m: &Message) -> BTreeSet<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn srv(m: &Message) -> BTreeSet<(u16, String)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => {
                assert_eq!((s.priority, s.weight), (0, 0));
                Some((s.port, s.target.to_ascii()))
            }
            _ => None,
        })
        .collect()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn web_task(id: &str, name: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.into(),
        name: name.into(),
        resources: strata_proto::Resources::cpus_mem(0.5, 64.0).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 1000".into(),
            ..Default::default()
        }),
        discovery: Some(v1::DiscoveryInfo {
            name: "Web".into(),
            ports: Some(v1::Ports {
                ports: vec![
                    v1::Port {
                        number: 31000,
                        name: "http".into(),
                        protocol: "tcp".into(),
                        ..Default::default()
                    },
                    v1::Port {
                        number: 31001,
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn send_status(
    agent: &TestAgent,
    agent_id: &str,
    framework_id: &str,
    task_id: &str,
    state: v1::TaskState,
    healthy: Option<bool>,
) {
    let status = v1::TaskStatus {
        task_id: task_id.into(),
        state: state as i32,
        source: v1::TaskStatusSource::SourceAgent as i32,
        agent_id: agent_id.into(),
        framework_id: framework_id.into(),
        uuid: uuid::Uuid::new_v4().to_string(),
        timestamp: strata_proto::now_unix_seconds(),
        healthy,
        ..Default::default()
    };
    agent
        .up
        .send(v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                status: Some(status),
            })),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn dig_and_hickory_find_the_instances_of_a_service_as_they_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let (master, dns) = start_master(dir.path()).await;

    // Nothing runs yet: the domain exists, its names do not; other domains are refused.
    let m = until(dns, "web.strata.", RecordType::A, |m| {
        code(m) == ResponseCode::NXDomain
    })
    .await;
    assert!(m.metadata.authoritative);
    assert_eq!(
        code(&ask(dns, "example.com.", RecordType::A, false).await),
        ResponseCode::Refused
    );

    // Two agents: one by address, one by a name the master resolves.
    let mut info1 = agent_info("node1");
    info1.address = "127.0.0.2:5051".into();
    let mut agent1 = attach(&master, register(info1)).await.unwrap();
    let a1 = registered(&mut agent1).await.agent_id;
    let mut info2 = agent_info("node2");
    info2.address = "localhost:5051".into();
    let mut agent2 = attach(&master, register(info2)).await.unwrap();
    let a2 = registered(&mut agent2).await.agent_id;

    // A framework runs one instance of `Web` on each.
    let (mut events, s) = subscribe(&master, framework_info("Web Shop")).await;
    let mut offers = Vec::new();
    while offers.len() < 2 {
        if let Ev::Offers(o) = next_event(&mut events).await.event.unwrap() {
            for offer in o.offers {
                if !offers
                    .iter()
                    .any(|x: &v1::Offer| x.agent_id == offer.agent_id)
                {
                    offers.push(offer);
                }
            }
        }
    }
    let mut scheduler = master.scheduler().await;
    for offer in &offers {
        let (id, name) = if offer.agent_id == a1 {
            ("web.1", "web-one")
        } else {
            ("web.2", "web-two")
        };
        scheduler
            .accept(v1::AcceptRequest {
                header: Some(v1::CallHeader {
                    framework_id: s.framework_id.clone(),
                    stream_id: s.stream_id.clone(),
                }),
                offer_ids: vec![offer.id.clone()],
                operations: vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::Launch {
                        task_infos: vec![web_task(id, name)],
                    })),
                }],
                filters: None,
            })
            .await
            .unwrap();
    }
    // Staging: not published yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        code(&ask(dns, "web.strata.", RecordType::A, false).await),
        ResponseCode::NXDomain
    );
    let fw = s.framework_id.as_str();
    send_status(&agent1, &a1, fw, "web.1", v1::TaskState::TaskRunning, None).await;
    send_status(
        &agent2,
        &a2,
        fw,
        "web.2",
        v1::TaskState::TaskRunning,
        Some(true),
    )
    .await;

    // A: both agents (localhost resolved to 127.0.0.1).
    let both = ips(&["127.0.0.1", "127.0.0.2"]);
    let m = until(dns, "web.strata.", RecordType::A, |m| addresses(m) == both).await;
    assert!(m.answers.iter().all(|r| r.ttl == 5));
    // SRV: one per instance, with the instances' addresses in the additional section.
    let want = BTreeSet::from([
        (31000, "web-1.web.strata.".to_string()),
        (31000, "web-2.web.strata.".to_string()),
    ]);
    for tcp in [false, true] {
        let m = ask(dns, "_http._tcp.web.strata.", RecordType::SRV, tcp).await;
        assert_eq!(code(&m), ResponseCode::NoError);
        assert_eq!(srv(&m), want, "tcp: {tcp}");
        let extra: BTreeSet<(String, IpAddr)> = m
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((r.name.to_ascii(), IpAddr::V4(a.0))),
                _ => None,
            })
            .collect();
        assert!(
            extra.contains(&("web-1.web.strata.".into(), "127.0.0.2".parse().unwrap())),
            "{extra:?}"
        );
        assert!(
            extra.contains(&("web-2.web.strata.".into(), "127.0.0.1".parse().unwrap())),
            "{extra:?}"
        );
    }
    // The unnamed port is _port1 (its index); the task.framework form; any case.
    let m = ask(dns, "_port1._tcp.web.strata.", RecordType::SRV, false).await;
    assert_eq!(
        srv(&m),
        BTreeSet::from([
            (31001, "web-1.web.strata.".to_string()),
            (31001, "web-2.web.strata.".to_string()),
        ])
    );
    let m = ask(dns, "Web-One.Web-Shop.STRATA.", RecordType::A, false).await;
    assert_eq!(addresses(&m), ips(&["127.0.0.2"]));
    let m = ask(dns, "web.web-shop.strata.", RecordType::A, false).await;
    assert_eq!(addresses(&m), both);
    // A name with records of another type: NOERROR with no answer.
    let m = ask(dns, "web.strata.", RecordType::SRV, false).await;
    assert_eq!((code(&m), m.answers.len()), (ResponseCode::NoError, 0));

    // The same through dig, over UDP and TCP.
    for tcp in [false, true] {
        if let Some(lines) = short(dns, "web.strata", "A", tcp).await {
            assert_eq!(lines, set(&["127.0.0.1", "127.0.0.2"]));
        }
        if let Some(lines) = short(dns, "_http._tcp.web.strata", "SRV", tcp).await {
            assert_eq!(
                lines,
                set(&["0 0 31000 web-1.web.strata.", "0 0 31000 web-2.web.strata."])
            );
        }
    }
    if let Some(lines) = short(dns, "web-two.web-shop.strata", "A", false).await {
        assert_eq!(lines, set(&["127.0.0.1"]));
    }
    if let Some(s) = status(dns, "nothing-here.strata", "A").await {
        assert_eq!(s, "NXDOMAIN");
    }
    if let Some(s) = status(dns, "example.com", "A").await {
        assert_eq!(s, "REFUSED");
    }

    // web.1 is killed: it is gone from every answer.
    send_status(&agent1, &a1, fw, "web.1", v1::TaskState::TaskKilled, None).await;
    until(dns, "web.strata.", RecordType::A, |m| {
        addresses(m) == ips(&["127.0.0.1"])
    })
    .await;
    let m = ask(dns, "_http._tcp.web.strata.", RecordType::SRV, false).await;
    assert_eq!(
        srv(&m),
        BTreeSet::from([(31000, "web-2.web.strata.".to_string())])
    );
    if let Some(lines) = short(dns, "_http._tcp.web.strata", "SRV", false).await {
        assert_eq!(lines, set(&["0 0 31000 web-2.web.strata."]));
    }
    if let Some(s) = status(dns, "web-1.web.strata", "A").await {
        assert_eq!(s, "NXDOMAIN");
    }

    // web.2 fails its health check: no instance is left.
    send_status(
        &agent2,
        &a2,
        fw,
        "web.2",
        v1::TaskState::TaskRunning,
        Some(false),
    )
    .await;
    until(dns, "web.strata.", RecordType::A, |m| {
        code(m) == ResponseCode::NXDomain
    })
    .await;
    if let Some(s) = status(dns, "_http._tcp.web.strata", "SRV").await {
        assert_eq!(s, "NXDOMAIN");
    }
    drop(events);
    master.stop().await.unwrap();
    // Stopped with the master: the port is free again.
    std::net::UdpSocket::bind(dns).expect("the DNS port is released");
}

/// A DNS address that cannot be bound stops the master at start with a clear error.
#[tokio::test]
async fn a_dns_port_in_use_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut options = MasterOptions::new(dir.path());
    options.dns_listen = Some(addr);
    let result = tokio::time::timeout(
        WAIT,
        strata_master::serve(listener, options, std::future::pending()),
    )
    .await
    .expect("serve returns at once");
    let e = result.expect_err("the port is taken");
    assert!(
        e.to_string()
            .contains(&format!("cannot serve DNS on {addr}")),
        "{e}"
    );
    drop(taken);
}

/// Without `dns_listen` no DNS server runs; a bad domain is refused.
#[test]
fn dns_is_off_by_default_and_the_domain_is_checked() {
    let mut options = MasterOptions::new("/tmp/x");
    assert_eq!(options.dns_listen, None);
    options.dns_domain = "Not A Domain".into();
    let e = options.validate().unwrap_err();
    assert!(e.to_string().contains("invalid DNS domain"), "{e}");
}

/// The binary: `--dns-listen` with port 0 says where DNS is, answers for
/// `--dns-domain`, and stops with the master on SIGTERM.
#[tokio::test]
async fn the_binary_serves_dns_where_it_says() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata-master"))
        .args(["--insecure", "--listen", "127.0.0.1:0", "--work-dir"])
        .arg(dir.path())
        .args([
            "--dns-listen",
            "127.0.0.1:0",
            "--dns-domain",
            "cluster.example",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start strata-master");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dns = None;
    while dns.is_none() {
        let line = tokio::time::timeout(WAIT, out.next_line())
            .await
            .expect("a line within the wait")
            .unwrap()
            .expect("strata-master says where DNS is");
        dns = line
            .strip_prefix("strata-master: DNS on ")
            .and_then(|rest| rest.split(' ').next())
            .map(|addr| addr.parse::<SocketAddr>().expect("an address"));
    }
    let dns = dns.unwrap();
    assert_ne!(dns.port(), 0);
    for tcp in [false, true] {
        let m = ask(dns, "web.cluster.example.", RecordType::A, tcp).await;
        assert_eq!(code(&m), ResponseCode::NXDomain);
        let m = ask(dns, "web.strata.", RecordType::A, tcp).await;
        assert_eq!(code(&m), ResponseCode::Refused);
    }
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("strata-master stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    std::net::UdpSocket::bind(dns).expect("the DNS port is released");
}
