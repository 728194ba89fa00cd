//! Property tests of everything that reads wire data: arbitrary bytes, mutated
//! encodings and arbitrary well-formed messages go into every message type the master,
//! the agent, the SDK and the CLI decode, and then through the checks the code applies
//! to what it decoded (limits, ids, resources, containers, health checks, durations).
//! Nothing may panic; what is refused is refused with an error value.
//!
//! Default: 256 cases per property (proptest's default); `PROPTEST_CASES=N` raises it.

use std::collections::HashMap;

use proptest::prelude::*;
use prost::Message;
use strata_proto::v1;
use strata_proto::{Resources, container, discovery, duration, health, limits, validate};

// ---- what the code does with decoded messages ----

/// Resources as the master reads them: limits first, then validation; what is valid
/// survives the round trip through the wire form.
fn check_resources(list: &[v1::Resource]) {
    let _ = limits::check_resources(list);
    if let Ok(r) = Resources::try_from_proto(list) {
        let again = Resources::try_from_proto(&r.to_proto()).expect("to_proto of valid resources");
        assert_eq!(again, r, "resources change across the wire: {list:?}");
        let _ = r.to_string();
        let _ = r.dominant_share(&r);
    }
}

fn check_framework_info(info: &v1::FrameworkInfo) {
    let _ = limits::check_framework_info(info);
    let _ = validate::framework_id(&info.id);
    let _ = limits::check_roles("roles", &info.roles);
    for c in &info.capabilities {
        let _ = v1::FrameworkCapability::try_from(*c);
    }
}

fn check_agent_info(info: &v1::AgentInfo) {
    let _ = limits::check_agent_info(info);
    let _ = limits::check_attributes(&info.attributes);
    check_resources(&info.resources);
}

/// A task as the master (at ACCEPT) and the agent (at RunTask, and from its
/// checkpoint) check it.
fn check_task_info(task: &v1::TaskInfo) {
    let _ = validate::task_id(&task.task_id);
    let _ = limits::check_task_info(task);
    let _ = limits::check_labels(&task.labels);
    check_resources(&task.resources);
    let resources = Resources::try_from_proto(&task.resources).unwrap_or_default();
    let _ = container::is_docker(task);
    if let Err(e) = container::validate(task, &resources) {
        let _ = e.to_string();
    }
    if let Some(check) = &task.health_check {
        check_health(check);
    }
    if let Err(e) = discovery::validate(task) {
        let _ = e.to_string();
    }
    if let Some(info) = &task.discovery {
        let _ = discovery::visibility(info);
        for port in discovery::ports(info) {
            let _ = discovery::port_visibility(info, port);
            let _ = discovery::protocol(port);
        }
    }
    let _ = discovery::service_name(task);
}

fn check_health(check: &v1::HealthCheck) {
    match health::validate(check) {
        Ok(spec) => {
            assert!(spec.interval > std::time::Duration::ZERO);
            assert!(spec.timeout > std::time::Duration::ZERO);
            for d in [spec.delay, spec.interval, spec.timeout, spec.grace_period] {
                assert!(d.as_secs_f64() <= health::MAX_SECONDS, "{check:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn check_status(s: &v1::TaskStatus) {
    let state = strata_proto::states::state_from_i32(s.state);
    let _ = strata_proto::is_terminal(state);
    let _ = strata_proto::state_name(state);
    let _ = v1::TaskStatusReason::try_from(s.reason);
    let _ = v1::TaskStatusSource::try_from(s.source);
    let _ = validate::task_id(&s.task_id);
    let _ = validate::framework_id(&s.framework_id);
}

fn check_running(t: &v1::RunningTask) {
    let _ = validate::framework_id(&t.framework_id);
    let _ = strata_proto::states::state_from_i32(t.state);
    if let Some(task) = &t.task {
        check_task_info(task);
    }
    if let Some(f) = &t.framework {
        check_framework_info(f);
    }
}

fn check_agent_message(m: &v1::AgentMessage) {
    use v1::agent_message::Message as M;
    match &m.message {
        Some(M::Register(r)) => check_register(r),
        Some(M::StatusUpdate(u)) => {
            if let Some(s) = &u.status {
                check_status(s);
            }
        }
        Some(M::ExecutorMessage(e)) => {
            let _ = validate::task_id(&e.task_id);
        }
        Some(M::UsageReport(u)) => {
            for t in &u.tasks {
                let _ = validate::task_id(&t.task_id);
            }
        }
        Some(M::Heartbeat(_)) | None => {}
    }
}

fn check_register(r: &v1::Register) {
    if let Some(info) = &r.agent_info {
        check_agent_info(info);
    }
    for t in &r.tasks {
        check_running(t);
    }
}

fn check_master_message(m: &v1::MasterMessage) {
    use v1::master_message::Message as M;
    match &m.message {
        Some(M::RunTask(r)) => {
            if let Some(t) = &r.task {
                check_task_info(t);
            }
            if let Some(f) = &r.framework {
                check_framework_info(f);
            }
        }
        Some(M::KillTask(k)) => {
            let _ = validate::task_id(&k.task_id);
            let _ = validate::framework_id(&k.framework_id);
        }
        Some(M::ShutdownFramework(s)) => {
            let _ = validate::framework_id(&s.framework_id);
        }
        Some(M::Acknowledge(a)) => {
            let _ = validate::task_id(&a.task_id);
        }
        _ => {}
    }
}

fn check_event(e: &v1::Event) {
    use v1::event::Event as E;
    match &e.event {
        Some(E::Offers(o)) => {
            for offer in &o.offers {
                check_resources(&offer.resources);
                let _ = limits::check_attributes(&offer.attributes);
            }
        }
        Some(E::Update(u)) => {
            if let Some(s) = &u.status {
                check_status(s);
            }
        }
        _ => {}
    }
}

fn check_accept(r: &v1::AcceptRequest) {
    let _ = limits::check_count("offers", r.offer_ids.len(), limits::MAX_OFFERS_PER_CALL);
    for op in &r.operations {
        if let Some(v1::operation::Operation::Launch(l)) = &op.operation {
            for t in &l.task_infos {
                check_task_info(t);
            }
        }
    }
}

fn check_state_response(s: &v1::GetStateResponse) {
    for a in &s.agents {
        if let Some(info) = &a.info {
            check_agent_info(info);
        }
        check_resources(&a.total);
        check_resources(&a.used);
        check_resources(&a.offered);
    }
    for f in &s.frameworks {
        if let Some(info) = &f.info {
            check_framework_info(info);
        }
        check_resources(&f.used);
    }
    for t in &s.tasks {
        let _ = strata_proto::states::state_from_i32(t.state);
        check_resources(&t.resources);
        if let Some(st) = &t.last_status {
            check_status(st);
        }
    }
    for r in &s.roles {
        check_resources(&r.allocated);
    }
}

/// Decodes `bytes` as every message type read from the wire, and checks what decodes.
fn decode_all(bytes: &[u8]) {
    fn dec<M: Message + Default>(bytes: &[u8]) -> Option<M> {
        let m = M::decode(bytes).ok()?;
        // What decodes encodes again, and decodes to a message of the same size (not
        // compared with `==`: NaN doubles and map order).
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(again.encoded_len(), m.encoded_len());
        Some(m)
    }
    // Scheduler API (master side) and its events (SDK side).
    if let Some(r) = dec::<v1::SubscribeRequest>(bytes) {
        if let Some(f) = &r.framework_info {
            check_framework_info(f);
        }
        let _ = limits::check_roles("suppressed", &r.suppressed_roles);
    }
    if let Some(r) = dec::<v1::AcceptRequest>(bytes) {
        check_accept(&r);
    }
    dec::<v1::DeclineRequest>(bytes);
    if let Some(r) = dec::<v1::ReviveRequest>(bytes) {
        let _ = limits::check_roles("roles", &r.roles);
    }
    if let Some(r) = dec::<v1::SuppressRequest>(bytes) {
        let _ = limits::check_roles("roles", &r.roles);
    }
    if let Some(r) = dec::<v1::KillRequest>(bytes) {
        let _ = validate::task_id(&r.task_id);
    }
    dec::<v1::AcknowledgeRequest>(bytes);
    dec::<v1::ReconcileRequest>(bytes);
    dec::<v1::MessageRequest>(bytes);
    dec::<v1::TeardownRequest>(bytes);
    dec::<v1::CallResponse>(bytes);
    if let Some(e) = dec::<v1::Event>(bytes) {
        check_event(&e);
    }
    // Agent link, both directions.
    if let Some(m) = dec::<v1::AgentMessage>(bytes) {
        check_agent_message(&m);
    }
    if let Some(r) = dec::<v1::Register>(bytes) {
        check_register(&r);
    }
    if let Some(m) = dec::<v1::MasterMessage>(bytes) {
        check_master_message(&m);
    }
    // Operator API, both directions.
    dec::<v1::UpdateWeightsRequest>(bytes);
    dec::<v1::AgentMaintenanceRequest>(bytes);
    dec::<v1::GetStateRequest>(bytes);
    dec::<v1::MaintenanceResponse>(bytes);
    if let Some(s) = dec::<v1::GetStateResponse>(bytes) {
        check_state_response(&s);
    }
    dec::<v1::GetAgentsResponse>(bytes);
    dec::<v1::GetFrameworksResponse>(bytes);
    dec::<v1::GetTasksResponse>(bytes);
    dec::<v1::GetRolesResponse>(bytes);
    // What the agent's checkpoint and the master's registry carry hex-encoded.
    if let Some(s) = dec::<v1::TaskStatus>(bytes) {
        check_status(&s);
    }
    if let Some(t) = dec::<v1::TaskInfo>(bytes) {
        check_task_info(&t);
    }
    if let Some(f) = dec::<v1::FrameworkInfo>(bytes) {
        check_framework_info(&f);
    }
    if let Some(a) = dec::<v1::AgentInfo>(bytes) {
        check_agent_info(&a);
    }
}

// ---- strategies ----

/// Floats a peer may send, the nasty ones often.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0.0, -0.0, 1.0, 0.5, -1.0, 1e-12, 4.0, 4096.0, 9.0e12, 9.1e12, 1e300,
            f64::MAX, f64::MIN, f64::MIN_POSITIVE, f64::EPSILON, f64::NAN,
            f64::INFINITY, f64::NEG_INFINITY, 31_536_000.0, 31_536_000.000_001,
        ]),
        1 => any::<f64>(),
        1 => -10.0f64..10_000.0,
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "*", ".", "..", "a", "web-1", "a/b", "a\\b", "x\0y", "tab\there", "/",
            "/health", "/a b", "/ok#frag", "é", "cpus", "mem", "disk", "gpus", "ports",
            "bogus", "busybox:latest", "DOCKER", "tcp", "udp", "/mnt/sandbox", "/var/lib",
        ])
        .prop_map(String::from),
        2 => "\\PC{0,16}",
        1 => any::<String>(),
        1 => (0usize..600).prop_map(|n| "x".repeat(n)),
    ]
}

fn resource() -> impl Strategy<Value = v1::Resource> {
    (
        text(),
        float(),
        prop::collection::vec(
            prop_oneof![
                3 => (0u64..70_000, 0u64..100).prop_map(|(b, l)| (b, b + l)),
                1 => (any::<u64>(), any::<u64>()),
            ],
            0..6,
        ),
        text(),
    )
        .prop_map(|(name, scalar, ranges, role)| v1::Resource {
            name,
            scalar,
            ranges: ranges
                .into_iter()
                .map(|(begin, end)| v1::Range { begin, end })
                .collect(),
            role,
            disk: None,
        })
}

fn opt_float() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(float())
}

fn health_check() -> impl Strategy<Value = v1::HealthCheck> {
    (
        -1i32..5,
        text(),
        prop_oneof![Just(0u32), 1u32..70_000, any::<u32>()],
        text(),
        (opt_float(), opt_float(), opt_float(), opt_float()),
        prop::option::of(any::<u32>()),
    )
        .prop_map(
            |(r#type, path, port, command, (delay, interval, timeout, grace), failures)| {
                v1::HealthCheck {
                    r#type,
                    path,
                    port,
                    command,
                    delay_seconds: delay,
                    interval_seconds: interval,
                    timeout_seconds: timeout,
                    grace_period_seconds: grace,
                    consecutive_failures: failures,
                }
            },
        )
}

fn container_info() -> impl Strategy<Value = v1::ContainerInfo> {
    let mapping = (any::<u32>(), 0u32..70_000, text()).prop_map(|(h, c, protocol)| {
        v1::docker_info::PortMapping {
            host_port: h % 70_000,
            container_port: c,
            protocol,
        }
    });
    let docker = (
        text(),
        -1i32..5,
        prop::collection::vec(mapping, 0..4),
        -1i32..5,
        any::<bool>(),
    )
        .prop_map(
            |(image, network, port_mappings, pull_policy, force_pull)| v1::DockerInfo {
                image,
                network,
                port_mappings,
                pull_policy,
                force_pull,
            },
        );
    let volume = (text(), text(), -1i32..4, text(), text()).prop_map(
        |(host_path, container_path, mode, docker_volume, driver)| v1::Volume {
            host_path,
            container_path,
            mode,
            docker_volume,
            driver,
        },
    );
    (
        -1i32..3,
        prop::option::of(docker),
        prop::collection::vec(volume, 0..3),
    )
        .prop_map(|(r#type, docker, volumes)| v1::ContainerInfo {
            r#type,
            docker,
            volumes,
        })
}

fn discovery_info() -> impl Strategy<Value = v1::DiscoveryInfo> {
    let port = (
        prop_oneof![Just(0u32), 1u32..70_000, any::<u32>()],
        text(),
        prop_oneof![Just(String::new()), Just("tcp".to_string()), text()],
        -1i32..5,
        prop::collection::hash_map(text(), text(), 0..2),
    )
        .prop_map(|(number, name, protocol, visibility, labels)| v1::Port {
            number,
            name,
            protocol,
            visibility,
            labels,
        });
    (
        -1i32..5,
        (text(), text(), text(), text()),
        prop::option::of(prop::collection::vec(port, 0..4)),
        prop::collection::hash_map(text(), text(), 0..2),
    )
        .prop_map(
            |(visibility, (name, environment, location, version), ports, labels)| {
                v1::DiscoveryInfo {
                    visibility,
                    name,
                    environment,
                    location,
                    version,
                    ports: ports.map(|ports| v1::Ports { ports }),
                    labels,
                }
            },
        )
}

fn task_info() -> impl Strategy<Value = v1::TaskInfo> {
    (
        (text(), text(), text()),
        prop::collection::vec(resource(), 0..5),
        prop::option::of((any::<bool>(), text(), prop::collection::vec(text(), 0..3))),
        prop::option::of(opt_float()),
        prop::collection::hash_map(text(), text(), 0..3),
        prop::option::of(container_info()),
        prop::option::of(health_check()),
        prop::option::of(discovery_info()),
    )
        .prop_map(
            |(
                (task_id, name, agent_id),
                resources,
                command,
                kill,
                labels,
                container,
                hc,
                discovery,
            )| {
                v1::TaskInfo {
                    task_id,
                    name,
                    agent_id,
                    resources,
                    command: command.map(|(shell, value, arguments)| v1::CommandInfo {
                        shell,
                        value,
                        arguments,
                        ..Default::default()
                    }),
                    kill_policy: kill.map(|g| v1::KillPolicy {
                        grace_period_seconds: g,
                    }),
                    labels: labels.into_iter().collect::<HashMap<_, _>>(),
                    data: vec![],
                    container,
                    health_check: hc,
                    discovery,
                    objects: vec![],
                }
            },
        )
}

/// Rich, valid encodings to mutate: every branch of the messages has bytes to hit.
fn seeds() -> Vec<Vec<u8>> {
    let task = v1::TaskInfo {
        task_id: "web-1".into(),
        name: "web".into(),
        agent_id: "a1".into(),
        resources: Resources::parse("cpus:1;mem(web):128;ports:[31000-31002,31005]")
            .unwrap()
            .to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "sleep 1".into(),
            arguments: vec!["x".into()],
            environment: [("K".to_string(), "V".to_string())].into(),
            user: "u".into(),
        }),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: Some(3.0),
        }),
        labels: [("l".to_string(), "v".to_string())].into(),
        data: vec![1, 2, 3],
        container: Some(v1::ContainerInfo {
            r#type: 1,
            docker: Some(v1::DockerInfo {
                image: "busybox".into(),
                network: 2,
                port_mappings: vec![v1::docker_info::PortMapping {
                    host_port: 31000,
                    container_port: 80,
                    protocol: "tcp".into(),
                }],
                pull_policy: 1,
                force_pull: true,
            }),
            volumes: vec![v1::Volume {
                host_path: "/data".into(),
                container_path: "/data".into(),
                mode: 2,
                ..Default::default()
            }],
        }),
        health_check: Some(v1::HealthCheck {
            r#type: 1,
            path: "/h".into(),
            port: 8080,
            command: String::new(),
            delay_seconds: Some(1.0),
            interval_seconds: Some(2.0),
            timeout_seconds: Some(3.0),
            grace_period_seconds: Some(4.0),
            consecutive_failures: Some(5),
        }),
        discovery: Some(v1::DiscoveryInfo {
            visibility: 2,
            name: "web".into(),
            environment: "prod".into(),
            location: "zone-a".into(),
            version: "3".into(),
            ports: Some(v1::Ports {
                ports: vec![v1::Port {
                    number: 31000,
                    name: "http".into(),
                    protocol: "tcp".into(),
                    visibility: 3,
                    labels: [("k".to_string(), "v".to_string())].into(),
                }],
            }),
            labels: [("l".to_string(), "v".to_string())].into(),
        }),
        objects: vec![
            v1::ObjectRef {
                kind: 1,
                name: "db-pass".into(),
                version: 3,
                target: Some(v1::object_ref::Target::File("db-pass".into())),
            },
            v1::ObjectRef {
                kind: 2,
                name: "conf".into(),
                version: 0,
                target: Some(v1::object_ref::Target::Env("CONF".into())),
            },
        ],
    };
    let framework = v1::FrameworkInfo {
        id: "f1".into(),
        name: "fw".into(),
        user: "alice".into(),
        roles: vec!["web".into(), "*".into()],
        failover_timeout_seconds: 10.0,
        capabilities: vec![1, 2, 3],
        hostname: "h".into(),
        principal: "p".into(),
    };
    let agent = v1::AgentInfo {
        principal: String::new(),
        id: "a1".into(),
        hostname: "h1".into(),
        address: "h1:5051".into(),
        resources: Resources::parse("cpus:4;mem:4096;ports:[31000-32000]")
            .unwrap()
            .to_proto(),
        attributes: vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into(),
        }],
    };
    let status = v1::TaskStatus {
        task_id: "web-1".into(),
        state: 3,
        message: "m".into(),
        source: 2,
        reason: 1,
        agent_id: "a1".into(),
        framework_id: "f1".into(),
        uuid: "u".into(),
        timestamp: 1.0,
        exit_status: Some(0),
        healthy: Some(true),
        data: vec![9],
    };
    let register = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register {
            checkpointed: None,
            agent_info: Some(agent.clone()),
            tasks: vec![v1::RunningTask {
                framework_id: "f1".into(),
                task: Some(task.clone()),
                state: 3,
                framework: Some(framework.clone()),
            }],
            version: "1".into(),
        })),
    };
    let accept = v1::AcceptRequest {
        header: Some(v1::CallHeader {
            framework_id: "f1".into(),
            stream_id: "s".into(),
        }),
        offer_ids: vec!["o1".into()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: vec![task.clone()],
            })),
        }],
        filters: Some(v1::Filters {
            refuse_seconds: Some(5.0),
        }),
    };
    let run = v1::MasterMessage {
        message: Some(v1::master_message::Message::RunTask(v1::RunTask {
            framework: Some(framework.clone()),
            task: Some(task.clone()),
        })),
    };
    let offers = v1::Event {
        event: Some(v1::event::Event::Offers(v1::Offers {
            offers: vec![v1::Offer {
                id: "o1".into(),
                framework_id: "f1".into(),
                agent_id: "a1".into(),
                hostname: "h1".into(),
                role: "*".into(),
                resources: agent.resources.clone(),
                attributes: agent.attributes.clone(),
                agent_address: "h1:5051".into(),
            }],
        })),
    };
    let state = v1::GetStateResponse {
        master_id: "m".into(),
        agents: vec![v1::AgentState {
            info: Some(agent.clone()),
            status: "ACTIVE".into(),
            total: agent.resources.clone(),
            used: vec![],
            offered: vec![],
            registered_time: 1.0,
            maintenance: String::new(),
        }],
        frameworks: vec![],
        tasks: vec![v1::TaskEntry {
            task_id: "web-1".into(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            name: "web".into(),
            state: 3,
            resources: task.resources.clone(),
            last_status: Some(status.clone()),
            discovery: task.discovery.clone(),
            health_checked: task.health_check.is_some(),
        }],
        roles: vec![],
    };
    vec![
        task.encode_to_vec(),
        register.encode_to_vec(),
        accept.encode_to_vec(),
        run.encode_to_vec(),
        offers.encode_to_vec(),
        state.encode_to_vec(),
        status.encode_to_vec(),
    ]
}

/// A seed encoding with some bytes overwritten, inserted or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds().len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(seed, edits, cut)| {
            let mut bytes = seeds().swap_remove(seed);
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            if !bytes.is_empty() && cut.index(4) == 0 {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_to_a_message_or_an_error(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_encodings_decode_to_a_message_or_an_error(bytes in mutated()) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_resources_are_valid_or_refused(list in prop::collection::vec(resource(), 0..8)) {
        check_resources(&list);
        if let Ok(r) = Resources::try_from_proto(&list) {
            // Validated resources are never negative, never NaN.
            for e in r.to_proto() {
                prop_assert!(e.scalar.is_finite() && e.scalar >= 0.0, "{:?}", e);
                for range in &e.ranges {
                    prop_assert!(range.begin <= range.end && range.end <= 65_535);
                }
            }
        }
    }

    #[test]
    fn arbitrary_tasks_are_valid_or_refused(task in task_info()) {
        check_task_info(&task);
        let msg = v1::MasterMessage {
            message: Some(v1::master_message::Message::RunTask(v1::RunTask {
                framework: None,
                task: Some(task),
            })),
        };
        decode_all(&msg.encode_to_vec());
    }

    #[test]
    fn arbitrary_health_checks_are_valid_or_refused(check in health_check()) {
        check_health(&check);
    }

    #[test]
    fn arbitrary_strings_are_ids_resources_and_durations_or_errors(s in text()) {
        let _ = validate::task_id(&s).map_err(|e| e.to_string());
        let _ = validate::framework_id(&s).map_err(|e| e.to_string());
        let _ = limits::shown(&s);
        let mut t = s.clone();
        limits::truncate(&mut t, 7);
        prop_assert!(t.len() <= 7);
        if let Ok(r) = Resources::parse(&s) {
            check_resources(&r.to_proto());
        }
        for parse in [duration::parse, duration::parse_or_seconds] {
            if let Ok(d) = parse(&s) {
                prop_assert!(d <= duration::MAX, "{:?} -> {:?}", s, d);
            }
        }
    }

    #[test]
    fn flag_shaped_strings_parse_or_are_refused(
        parts in prop::collection::vec(
            (
                prop::sample::select(vec!["cpus", "mem", "ports", "disk", "gpus", "x", ""]),
                prop::option::of(prop::sample::select(vec!["web", "*", "", "a b"])),
                prop_oneof![
                    float().prop_map(|f| f.to_string()),
                    "\\[[0-9, -]{0,20}\\]?",
                    "[0-9.eE+-]{0,12}",
                ],
            ),
            0..5,
        ),
        dur in "[0-9 .]{0,8}(ns|us|ms|s|sec|m|min|h|d|w|M|y|x|)[0-9]{0,3}(ms|s|m|h|)",
    ) {
        let flag: Vec<String> = parts
            .iter()
            .map(|(name, role, value)| match role {
                Some(r) => format!("{name}({r}):{value}"),
                None => format!("{name}:{value}"),
            })
            .collect();
        let flag = flag.join(";");
        if let Ok(r) = Resources::parse(&flag) {
            check_resources(&r.to_proto());
        }
        for parse in [duration::parse, duration::parse_or_seconds] {
            match parse(&dur) {
                Ok(d) => prop_assert!(d <= duration::MAX, "{:?} -> {:?}", dur, d),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}
