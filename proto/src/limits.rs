//! The bounds on everything a peer sends: the size of a gRPC message, the bytes of each
//! string field and the number of entries of each list. One constant per limit, the
//! same for every crate: the master enforces them where wire data enters its core, and
//! the SDK, agent and CLI are built with the same message size, so a message one side
//! may send the other side always accepts.
//!
//! The values are far above what a real cluster uses (Mesos and Kubernetes precedent:
//! names of 63 to 255 bytes, label keys of 253) and far below what would let one call
//! make the master hold or send megabytes per task. docs/INTERNALS.md ("Limits") has
//! the table. A field over its limit is refused with a [`LimitError`] that names the
//! field, its size and the limit, never the (possibly huge) value itself.
//!
//! Limits are bytes of UTF-8 (what the wire carries), not characters.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::v1;

/// The largest gRPC message, in either direction, on the scheduler and agent APIs and
/// of every request to the operator API: set as the decoding and encoding limit of every
/// tonic server and client (master, agent link, SDK, CLI). tonic's default is 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The largest answer of the operator API (`GetState` and friends), which grows with the
/// cluster (10,000 agents and their tasks) rather than with what one peer sent. Only the
/// master's operator service (encoding) and the CLI (decoding) use it.
pub const MAX_OPERATOR_ANSWER_BYTES: usize = 256 << 20;

/// Names of people and machines: framework name, user and principal, task name, agent
/// hostname and address.
pub const MAX_NAME_BYTES: usize = 1024;
/// Ids: framework, task, agent and offer ids, status update uuids (a file name's limit;
/// the same as [`crate::validate::MAX_ID_BYTES`]).
pub const MAX_ID_BYTES: usize = crate::validate::MAX_ID_BYTES;
/// A role name (also as a resource's reservation role).
pub const MAX_ROLE_BYTES: usize = 255;
/// A resource name (`cpus`, `mem`, `disk`, `ports`, custom ones).
pub const MAX_RESOURCE_NAME_BYTES: usize = 255;
/// A label key of a task (Kubernetes: 253 for the prefix plus 63 for the name).
pub const MAX_LABEL_KEY_BYTES: usize = 253;
/// A label value of a task.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// An agent attribute's name.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 253;
/// An agent attribute's value.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// A reason or message: a task status message from an agent (longer ones are cut), the
/// message of an error.
pub const MAX_REASON_BYTES: usize = 4096;

/// One task as encoded (`TaskInfo`: command, environment, container, labels, data):
/// the master sends it to the agent with its framework's info, and the agent sends it
/// back among all its tasks when it re-registers, so it must stay a small part of a
/// message.
pub const MAX_TASK_BYTES: usize = 1 << 20;
/// The data of one framework message (MESSAGE call, or a task's message to its
/// scheduler).
pub const MAX_MESSAGE_DATA_BYTES: usize = 4 << 20;

/// Labels of one task.
pub const MAX_LABELS: usize = 128;
/// Attributes of one agent.
pub const MAX_ATTRIBUTES: usize = 128;
/// Roles of one framework; also the roles of one REVIVE or SUPPRESS.
pub const MAX_ROLES: usize = 64;
/// Role weights of one operator call.
pub const MAX_WEIGHTS: usize = 1024;
/// Tasks launched by one ACCEPT (its offers all come from one agent). Each launched
/// task is work on the master's one driver: 4,096 of the largest held it 34 ms
/// (`strata-bench stall`); a scheduler with more for one agent accepts again.
pub const MAX_TASKS_PER_ACCEPT: usize = 1024;
/// Offer ids named by one ACCEPT or DECLINE.
pub const MAX_OFFERS_PER_CALL: usize = 1024;
/// Tasks named by one explicit RECONCILE (a scheduler with more asks in several calls,
/// or implicitly with none). Each named task is one answer built on the master's one
/// driver: 55,000 named tasks stalled it about 50 ms (`strata-bench stall`).
pub const MAX_TASKS_PER_RECONCILE: usize = 4096;
/// Ports of one task's discovery info (`TaskInfo.discovery.ports`).
pub const MAX_DISCOVERY_PORTS: usize = 64;
/// Entries of one list of resources (an agent's, a task's).
pub const MAX_RESOURCES: usize = 64;
/// Ranges of one range resource (`ports:[31000-31010,31020-31030]` has two).
pub const MAX_RANGES: usize = 1024;

/// How much of a client's string a message echoes back (see [`shown`]).
pub const SHOWN_BYTES: usize = 64;

/// A field over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} has {count} entries; the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// Checks that `value` (the field `what`) has at most `max` bytes.
pub fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Checks that the list `what` has at most `max` entries.
pub fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::TooMany { what, count, max });
    }
    Ok(())
}

/// Checks a list of resources: entries, name, role and ranges of each.
pub fn check_resources(resources: &[v1::Resource]) -> Result<(), LimitError> {
    check_count("the list of resources", resources.len(), MAX_RESOURCES)?;
    for r in resources {
        check_len("a resource name", &r.name, MAX_RESOURCE_NAME_BYTES)?;
        check_len("a resource's role", &r.role, MAX_ROLE_BYTES)?;
        check_count("a resource's list of ranges", r.ranges.len(), MAX_RANGES)?;
    }
    Ok(())
}

/// Checks an agent's attributes: how many, and the name and value of each.
pub fn check_attributes(attributes: &[v1::Attribute]) -> Result<(), LimitError> {
    check_count("the list of attributes", attributes.len(), MAX_ATTRIBUTES)?;
    for a in attributes {
        check_len("an attribute name", &a.name, MAX_ATTRIBUTE_NAME_BYTES)?;
        check_len("an attribute value", &a.value, MAX_ATTRIBUTE_VALUE_BYTES)?;
    }
    Ok(())
}

/// Checks a task's labels: how many, and the key and value of each.
pub fn check_labels(labels: &HashMap<String, String>) -> Result<(), LimitError> {
    check_count("the map of labels", labels.len(), MAX_LABELS)?;
    for (k, v) in labels {
        check_len("a label key", k, MAX_LABEL_KEY_BYTES)?;
        check_len("a label value", v, MAX_LABEL_VALUE_BYTES)?;
    }
    Ok(())
}

/// Checks a task's discovery info: its names (service name, environment, location,
/// version) as names, its labels and each port's labels as a task's labels, and at
/// most [`MAX_DISCOVERY_PORTS`] ports with names and protocols of at most
/// [`MAX_NAME_BYTES`] (what the values may be is [`crate::discovery::validate`]'s).
pub fn check_discovery_info(info: &v1::DiscoveryInfo) -> Result<(), LimitError> {
    check_len("discovery name", &info.name, MAX_NAME_BYTES)?;
    check_len("discovery environment", &info.environment, MAX_NAME_BYTES)?;
    check_len("discovery location", &info.location, MAX_NAME_BYTES)?;
    check_len("discovery version", &info.version, MAX_NAME_BYTES)?;
    check_labels(&info.labels)?;
    let ports = crate::discovery::ports(info);
    check_count(
        "the discovery info's list of ports",
        ports.len(),
        MAX_DISCOVERY_PORTS,
    )?;
    for port in ports {
        check_len("a discovery port name", &port.name, MAX_NAME_BYTES)?;
        check_len("a discovery port protocol", &port.protocol, MAX_NAME_BYTES)?;
        check_labels(&port.labels)?;
    }
    Ok(())
}

/// Checks a list of role names: how many, and the bytes of each.
pub fn check_roles(what: &'static str, roles: &[String]) -> Result<(), LimitError> {
    check_count(what, roles.len(), MAX_ROLES)?;
    for role in roles {
        check_len("a role name", role, MAX_ROLE_BYTES)?;
    }
    Ok(())
}

/// Checks what a framework subscribes with (the id's own rule is
/// [`crate::validate::framework_id`]).
pub fn check_framework_info(info: &v1::FrameworkInfo) -> Result<(), LimitError> {
    check_len("framework id", &info.id, MAX_ID_BYTES)?;
    check_len("framework name", &info.name, MAX_NAME_BYTES)?;
    check_len("framework user", &info.user, MAX_NAME_BYTES)?;
    check_len("framework hostname", &info.hostname, MAX_NAME_BYTES)?;
    check_len("framework principal", &info.principal, MAX_NAME_BYTES)?;
    check_roles("the framework's list of roles", &info.roles)?;
    check_count(
        "the framework's list of capabilities",
        info.capabilities.len(),
        MAX_ROLES,
    )
}

/// Checks what an agent registers with.
pub fn check_agent_info(info: &v1::AgentInfo) -> Result<(), LimitError> {
    check_len("agent id", &info.id, MAX_ID_BYTES)?;
    check_len("agent hostname", &info.hostname, MAX_NAME_BYTES)?;
    check_len("agent address", &info.address, MAX_NAME_BYTES)?;
    check_resources(&info.resources)?;
    check_attributes(&info.attributes)
}

/// Checks the sized fields of a task and its encoded size (the id's own rule is
/// [`crate::validate::task_id`]).
pub fn check_task_info(task: &v1::TaskInfo) -> Result<(), LimitError> {
    check_len("task id", &task.task_id, MAX_ID_BYTES)?;
    check_len("task name", &task.name, MAX_NAME_BYTES)?;
    check_len("task agent_id", &task.agent_id, MAX_ID_BYTES)?;
    check_resources(&task.resources)?;
    check_labels(&task.labels)?;
    if let Some(discovery) = &task.discovery {
        check_discovery_info(discovery)?;
    }
    let len = prost::Message::encoded_len(task);
    if len > MAX_TASK_BYTES {
        return Err(LimitError::TooLong {
            what: "the encoded task",
            len,
            max: MAX_TASK_BYTES,
        });
    }
    Ok(())
}

/// A client's string as echoed back in a message: at most [`SHOWN_BYTES`] bytes (cut at a
/// character boundary) followed by `…` when longer, so that echoing it (once per task,
/// say) never multiplies what the client sent.
pub fn shown(value: &str) -> Cow<'_, str> {
    if value.len() <= SHOWN_BYTES {
        return Cow::Borrowed(value);
    }
    let mut end = SHOWN_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &value[..end]))
}

/// `value` cut to at most `max` bytes (at a character boundary), for fields that are
/// kept rather than refused when too long (a status message from an agent).
pub fn truncate(value: &mut String, max: usize) {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_field_its_size_and_the_limit() {
        let name = "x".repeat(10 << 20);
        assert_eq!(
            check_len("framework name", &name, MAX_NAME_BYTES)
                .unwrap_err()
                .to_string(),
            "framework name is 10485760 bytes; the limit is 1024"
        );
        assert_eq!(
            check_count("the map of labels", 129, MAX_LABELS)
                .unwrap_err()
                .to_string(),
            "the map of labels has 129 entries; the limit is 128"
        );
    }

    #[test]
    fn the_limit_itself_is_allowed() {
        assert_eq!(
            check_len("n", &"x".repeat(MAX_NAME_BYTES), MAX_NAME_BYTES),
            Ok(())
        );
        assert_eq!(check_count("l", MAX_LABELS, MAX_LABELS), Ok(()));
        let info = v1::FrameworkInfo {
            name: "n".repeat(MAX_NAME_BYTES),
            roles: (0..MAX_ROLES).map(|i| format!("{i:0>255}")).collect(),
            ..Default::default()
        };
        assert_eq!(check_framework_info(&info), Ok(()));
    }

    #[test]
    fn the_message_size_is_far_below_what_a_maximal_offer_needs() {
        // The largest offer an agent within the limits can make: under 2 MiB, so an
        // OFFERS event of half the message limit holds several.
        let resources: Vec<v1::Resource> = (0..MAX_RESOURCES)
            .map(|i| v1::Resource {
                name: format!("{i:x>255}"),
                role: "r".repeat(MAX_ROLE_BYTES),
                disk: None,
                ranges: (0..MAX_RANGES as u64)
                    .map(|b| v1::Range {
                        begin: u64::MAX - 2 * b,
                        end: u64::MAX - 2 * b,
                    })
                    .collect(),
                scalar: 0.0,
            })
            .collect();
        let attributes = (0..MAX_ATTRIBUTES)
            .map(|i| v1::Attribute {
                name: format!("{i:a>253}"),
                value: "v".repeat(MAX_ATTRIBUTE_VALUE_BYTES),
            })
            .collect();
        let offer = v1::Offer {
            id: "o".repeat(MAX_ID_BYTES),
            framework_id: "f".repeat(MAX_ID_BYTES),
            agent_id: "a".repeat(MAX_ID_BYTES),
            hostname: "h".repeat(MAX_NAME_BYTES),
            role: "r".repeat(MAX_ROLE_BYTES),
            resources,
            attributes,
            agent_address: "x".repeat(MAX_NAME_BYTES),
        };
        let len = prost::Message::encoded_len(&offer);
        assert!(len < 2 << 20, "a maximal offer is {len} bytes");
        assert!(
            len * 8 < MAX_MESSAGE_BYTES,
            "a maximal offer is {len} bytes"
        );
    }

    #[test]
    fn discovery_info_is_bounded_as_names_and_labels() {
        let port = |name: String| v1::Port {
            number: 31000,
            name,
            protocol: "tcp".into(),
            ..Default::default()
        };
        let task = |info: v1::DiscoveryInfo| v1::TaskInfo {
            task_id: "t".into(),
            discovery: Some(info),
            ..Default::default()
        };
        let most = v1::DiscoveryInfo {
            name: "n".repeat(MAX_NAME_BYTES),
            environment: "e".repeat(MAX_NAME_BYTES),
            location: "l".repeat(MAX_NAME_BYTES),
            version: "v".repeat(MAX_NAME_BYTES),
            labels: (0..MAX_LABELS)
                .map(|i| (format!("{i:k>253}"), "v".repeat(64)))
                .collect(),
            ports: Some(v1::Ports {
                ports: (0..MAX_DISCOVERY_PORTS)
                    .map(|i| port(format!("p{i}")))
                    .collect(),
            }),
            ..Default::default()
        };
        assert_eq!(check_task_info(&task(most.clone())), Ok(()));

        let mut long_name = most.clone();
        long_name.name.push('n');
        assert_eq!(
            check_task_info(&task(long_name)).unwrap_err().to_string(),
            "discovery name is 1025 bytes; the limit is 1024"
        );
        let mut long_version = most.clone();
        long_version.version.push('v');
        assert!(check_task_info(&task(long_version)).is_err());

        let mut many_ports = most.clone();
        many_ports
            .ports
            .as_mut()
            .unwrap()
            .ports
            .push(port("one-more".into()));
        assert_eq!(
            check_task_info(&task(many_ports)).unwrap_err().to_string(),
            "the discovery info's list of ports has 65 entries; the limit is 64"
        );

        let mut many_labels = most.clone();
        many_labels.labels.insert("one-more".into(), String::new());
        assert_eq!(
            check_task_info(&task(many_labels)).unwrap_err().to_string(),
            "the map of labels has 129 entries; the limit is 128"
        );

        let mut long_port_name = most.clone();
        long_port_name.ports.as_mut().unwrap().ports[3].name = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            check_task_info(&task(long_port_name))
                .unwrap_err()
                .to_string(),
            "a discovery port name is 1025 bytes; the limit is 1024"
        );

        let mut long_port_label = most;
        long_port_label.ports.as_mut().unwrap().ports[0]
            .labels
            .insert("k".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1));
        assert_eq!(
            check_task_info(&task(long_port_label))
                .unwrap_err()
                .to_string(),
            "a label value is 4097 bytes; the limit is 4096"
        );
    }

    #[test]
    fn shown_cuts_long_strings_at_a_character_boundary() {
        assert_eq!(shown("short"), "short");
        let long = "é".repeat(100);
        let s = shown(&long);
        assert!(s.len() <= SHOWN_BYTES + "…".len(), "{s}");
        assert!(s.ends_with('…'));
        let mut t = "é".repeat(10);
        truncate(&mut t, 5);
        assert_eq!(t, "éé");
    }
}
