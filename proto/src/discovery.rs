//! Validation of a task's [`v1::DiscoveryInfo`] (issue 15: services), shared by the
//! master (which answers a bad one with TASK_ERROR at ACCEPT) and whoever publishes
//! tasks to service discovery. The sizes are bounded by
//! [`crate::limits::check_task_info`]; [`validate`] checks what the values mean. Every
//! error names the field and says what to do.

use std::collections::HashSet;

use crate::v1::{self, discovery_info::Visibility};

/// The longest port name: a DNS label.
pub const MAX_PORT_NAME_BYTES: usize = 63;

/// The label of a discovery [`v1::Port`] that names the port's service port (issue
/// 15): its value is the service port number as decimal text, e.g. `"10000"`. The
/// container framework sets it on each port of an app task whose spec asks for a
/// service port (`ports[i].service_port`); the service proxy in every agent listens on
/// that port and forwards to the instances that carry it. A port without the label has
/// no service port.
pub const SERVICE_PORT_LABEL: &str = "service_port";

/// The protocols a port may name.
pub const PROTOCOLS: [&str; 2] = ["tcp", "udp"];

/// Why a task's discovery info was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task '{task_id}': {message}")]
pub struct DiscoveryError {
    pub task_id: String,
    pub message: String,
}

/// Checks the task's discovery info: known visibilities; `name`, `environment`,
/// `location` and `version` without control characters; each port's number 1-65535,
/// protocol `tcp` (or empty) or `udp`, name empty or a DNS label
/// ([`is_port_name`]); no two named ports with the same name and protocol. A task
/// without discovery info passes. Sizes are [`crate::limits::check_task_info`]'s.
pub fn validate(task: &v1::TaskInfo) -> Result<(), DiscoveryError> {
    let Some(info) = &task.discovery else {
        return Ok(());
    };
    validate_info(info).map_err(|message| DiscoveryError {
        task_id: task.task_id.clone(),
        message,
    })
}

/// [`validate`] of a discovery info alone; the error is the message without the task.
pub fn validate_info(info: &v1::DiscoveryInfo) -> Result<(), String> {
    check_visibility("discovery.visibility", info.visibility)?;
    for (field, value) in [
        ("discovery.name", &info.name),
        ("discovery.environment", &info.environment),
        ("discovery.location", &info.location),
        ("discovery.version", &info.version),
    ] {
        if value.chars().any(char::is_control) {
            return Err(format!("{field} contains control characters"));
        }
    }
    let mut named = HashSet::new();
    for (i, port) in ports(info).iter().enumerate() {
        if port.number == 0 || port.number > 65535 {
            return Err(format!(
                "discovery.ports[{i}].number {} is not a port (1-65535)",
                port.number
            ));
        }
        if !PROTOCOLS.contains(&port.protocol.as_str()) && !port.protocol.is_empty() {
            return Err(format!(
                "discovery.ports[{i}].protocol '{}' is unknown: use tcp or udp",
                crate::limits::shown(&port.protocol)
            ));
        }
        if !port.name.is_empty() {
            if !is_port_name(&port.name) {
                return Err(format!(
                    "discovery.ports[{i}].name '{}' is not a DNS label: use at most {MAX_PORT_NAME_BYTES} lower-case letters, digits and '-', starting and ending with a letter or digit",
                    crate::limits::shown(&port.name)
                ));
            }
            if !named.insert((port.name.as_str(), protocol(port))) {
                return Err(format!(
                    "discovery.ports[{i}].name '{}' is used twice for {}: give each port its own name",
                    port.name,
                    protocol(port)
                ));
            }
        }
        check_visibility(&format!("discovery.ports[{i}].visibility"), port.visibility)?;
    }
    Ok(())
}

fn check_visibility(field: &str, value: i32) -> Result<(), String> {
    Visibility::try_from(value)
        .map(|_| ())
        .map_err(|_| format!("{field} {value} is unknown: use FRAMEWORK, CLUSTER or EXTERNAL"))
}

/// Whether `name` is a valid port name: a DNS label (RFC 1123) of 1 to
/// [`MAX_PORT_NAME_BYTES`] lower-case letters, digits and '-', starting and ending
/// with a letter or digit.
pub fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PORT_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The ports of a discovery info (none when `ports` is absent).
pub fn ports(info: &v1::DiscoveryInfo) -> &[v1::Port] {
    match &info.ports {
        Some(p) => &p.ports,
        None => &[],
    }
}

/// A port's protocol: `tcp` when empty.
pub fn protocol(port: &v1::Port) -> &str {
    if port.protocol.is_empty() {
        "tcp"
    } else {
        &port.protocol
    }
}

/// Who may discover the task: the info's visibility, CLUSTER when not set (or unknown).
pub fn visibility(info: &v1::DiscoveryInfo) -> Visibility {
    match Visibility::try_from(info.visibility) {
        Ok(Visibility::Unspecified) | Err(_) => Visibility::Cluster,
        Ok(v) => v,
    }
}

/// Who may discover the port: its own visibility, else that of its discovery info.
pub fn port_visibility(info: &v1::DiscoveryInfo, port: &v1::Port) -> Visibility {
    match Visibility::try_from(port.visibility) {
        Ok(Visibility::Unspecified) | Err(_) => visibility(info),
        Ok(v) => v,
    }
}

/// The service name of a task: its discovery name, else the task's name (empty when
/// the task has no discovery info: it is not published).
pub fn service_name(task: &v1::TaskInfo) -> &str {
    match &task.discovery {
        Some(d) if !d.name.is_empty() => d.name.as_str(),
        Some(_) => task.name.as_str(),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(number: u32, name: &str, protocol: &str) -> v1::Port {
        v1::Port {
            number,
            name: name.into(),
            protocol: protocol.into(),
            ..Default::default()
        }
    }

    fn task(ports: Vec<v1::Port>) -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: "web-1".into(),
            name: "web".into(),
            discovery: Some(v1::DiscoveryInfo {
                visibility: Visibility::Cluster as i32,
                name: "web".into(),
                ports: Some(v1::Ports { ports }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn check(task: &v1::TaskInfo) -> Result<(), String> {
        validate(task).map_err(|e| e.to_string())
    }

    #[test]
    fn tasks_without_and_with_good_discovery_info_pass() {
        assert_eq!(check(&v1::TaskInfo::default()), Ok(()));
        let t = task(vec![
            port(31000, "http", "tcp"),
            port(31000, "http", "udp"),
            port(31001, "", ""),
            port(65535, "metrics-2", "tcp"),
            port(1, &"a".repeat(63), "udp"),
        ]);
        assert_eq!(check(&t), Ok(()));
        let empty = v1::TaskInfo {
            discovery: Some(v1::DiscoveryInfo::default()),
            ..Default::default()
        };
        assert_eq!(check(&empty), Ok(()));
    }

    #[test]
    fn bad_ports_are_refused_with_the_field_named() {
        let cases = [
            (
                port(0, "http", "tcp"),
                "discovery.ports[0].number 0 is not a port",
            ),
            (port(65536, "http", "tcp"), "number 65536 is not a port"),
            (port(80, "http", "sctp"), "protocol 'sctp' is unknown"),
            (port(80, "http", "TCP"), "protocol 'TCP' is unknown"),
            (port(80, "HTTP", "tcp"), "name 'HTTP' is not a DNS label"),
            (port(80, "-http", "tcp"), "is not a DNS label"),
            (port(80, "http-", "tcp"), "is not a DNS label"),
            (port(80, "ht_tp", "tcp"), "is not a DNS label"),
            (port(80, "ht.tp", "tcp"), "is not a DNS label"),
            (port(80, &"a".repeat(64), "tcp"), "is not a DNS label"),
        ];
        for (p, want) in cases {
            let e = check(&task(vec![p])).unwrap_err();
            assert!(e.starts_with("task 'web-1': "), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let e = check(&task(vec![port(80, "http", ""), port(81, "http", "tcp")])).unwrap_err();
        assert!(
            e.contains("discovery.ports[1].name 'http' is used twice for tcp"),
            "{e}"
        );
        let mut bad = port(80, "http", "tcp");
        bad.visibility = 7;
        let e = check(&task(vec![port(81, "a", "tcp"), bad])).unwrap_err();
        assert!(
            e.contains("discovery.ports[1].visibility 7 is unknown"),
            "{e}"
        );
    }

    #[test]
    fn bad_fields_of_the_info_are_refused() {
        let mut t = task(vec![]);
        t.discovery.as_mut().unwrap().visibility = 9;
        assert!(
            check(&t)
                .unwrap_err()
                .contains("discovery.visibility 9 is unknown")
        );
        let mut t = task(vec![]);
        t.discovery.as_mut().unwrap().version = "1\n2".into();
        assert!(
            check(&t)
                .unwrap_err()
                .contains("discovery.version contains control characters")
        );
    }

    #[test]
    fn a_long_bad_value_is_echoed_only_in_part() {
        let e = check(&task(vec![port(80, &"X".repeat(10_000), "tcp")])).unwrap_err();
        assert!(e.len() < 400, "{e}");
        let e = check(&task(vec![port(80, "a", &"x".repeat(10_000))])).unwrap_err();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn defaults_fill_unset_visibility_protocol_and_name() {
        let mut t = task(vec![port(80, "http", "")]);
        let info = t.discovery.as_ref().unwrap();
        let p = &ports(info)[0];
        assert_eq!(protocol(p), "tcp");
        assert_eq!(port_visibility(info, p), Visibility::Cluster);
        assert_eq!(service_name(&t), "web");
        let info = t.discovery.as_mut().unwrap();
        info.visibility = Visibility::Unspecified as i32;
        info.name.clear();
        assert_eq!(visibility(info), Visibility::Cluster);
        info.visibility = Visibility::Framework as i32;
        info.ports.as_mut().unwrap().ports[0].visibility = Visibility::External as i32;
        let info = t.discovery.as_ref().unwrap();
        assert_eq!(port_visibility(info, &ports(info)[0]), Visibility::External);
        t.name = "task-name".into();
        assert_eq!(service_name(&t), "task-name");
        assert_eq!(service_name(&v1::TaskInfo::default()), "");
        assert!(ports(&v1::DiscoveryInfo::default()).is_empty());
    }
}
