//! App specs: what a user deploys (YAML or JSON), parsed and validated with the
//! offending field named.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use strata_proto::objects::{self as object_rules, kind_name};
use strata_proto::v1::{self, ObjectKind, object_ref::Target};

/// An app: `instances` copies of a command or a Docker image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Lower-case letters, digits, '-' and '.', starting and ending with a letter or
    /// digit, at most 63 characters.
    pub id: String,
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// A shell command (`/bin/sh -c`). With `image`, the command run in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Without `cmd`: the program and its arguments (`args[0]` is the program). With
    /// `image` and no `cmd`: the arguments passed to the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A Docker image: the task runs in a container of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker networking: host (default), bridge or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Docker image pull policy: if-not-present (default), always or never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<String>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// MB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// MB.
    #[serde(default)]
    pub disk: f64,
    /// Environment variables: a value, or a reference to a secret or config
    /// (`{secret: NAME}`, `{config: NAME}`) whose value the agent sets (issue 16).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Secrets delivered as files (Swarm's `secrets`): on a tmpfs, at `secrets/TARGET`
    /// in the sandbox (`/run/secrets/TARGET` in a container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ObjectFile>,
    /// Configs delivered as files (Swarm's `configs`): at TARGET in the sandbox
    /// (default `configs/SOURCE`), or for a Docker app at an absolute TARGET in the
    /// container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ObjectFile>,
    /// Volumes (issue 17): Docker named volumes mounted into a Docker app's
    /// containers (Swarm's volumes), or local persistent volumes (Marathon's resident
    /// apps): `{container_path: data, persistent: {size: 512}}` makes each instance
    /// keep its data on the agent it first lands on, and come back there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// What a resident app (with persistent volumes) does when an instance's agent is
    /// gone for good (`strata agent gone`), its data with it: `wait` (the default: the
    /// app says so and waits for an operator, as Marathon does) or `relocate` (the
    /// instance starts afresh, with empty volumes, elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<String>,
    /// Host ports, one per entry; tasks see `$PORT0`, `$PORT1`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Placement constraints, e.g. `hostname UNIQUE` or `["rack", "CLUSTER", "a"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// How instances are placed among the agents that fit and satisfy the
    /// constraints: `spread` (default) or `pack` (first fit).
    #[serde(default)]
    pub placement: PlacementStrategy,
    /// With `placement: spread`: the field to spread across, `hostname` or an agent
    /// attribute (e.g. `zone`), then across agents within each value. Unset: across
    /// agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheckSpec>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub backoff: Backoff,
    /// Seconds between SIGTERM and SIGKILL when a task is killed.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_period_seconds: f64,
    /// How long a task on an unreachable agent may stay unreachable before it is
    /// replaced.
    #[serde(default = "default_unreachable")]
    pub unreachable_replace_seconds: f64,
    /// Run the task as this user (when the agent runs as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The roles whose resources the tasks may use: `*` (unreserved) and the
    /// framework's role (its reservations). Unset: both, reservations first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
}

/// A volume of an app, one of:
/// - a Docker named volume mounted at an absolute path in the container. The agent a
///   task lands on creates the volume on first use and never removes it: the data
///   stays on that agent for the next task that mounts it (the instances of an app on
///   one agent share it);
/// - a local persistent volume (`persistent`), at a path relative to the sandbox: each
///   instance reserves its resources and creates its own volume on the agent it lands
///   on, and is relaunched there, with the same data, after a failure, a restart, a
///   rolling update or an agent restart (Marathon's resident apps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The engine's volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume: Option<String>,
    /// A Docker volume: an absolute path in the container, without `..`. A persistent
    /// volume: a path relative to the sandbox (`data`), without `..` (a Docker app
    /// sees it at `/data` too).
    pub container_path: String,
    /// `rw` (the default) or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A local persistent volume of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentSpec>,
}

/// The size of a local persistent volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistentSpec {
    /// MiB, reserved on the agent and counted in the task's disk limit.
    pub size: f64,
}

/// A secret or config delivered to the app's tasks as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectFile {
    /// The object's name.
    pub source: String,
    /// Where the file goes. A secret: a path relative to the task's secrets directory
    /// (default: `source`). A config: a path relative to the sandbox (default:
    /// `configs/SOURCE`), or for a Docker app an absolute path in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The value of an environment variable of the spec: a string, or a reference to a
/// secret or config (`{secret: NAME}`, `{config: NAME}`), never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Value(String),
    Secret(String),
    Config(String),
}

impl EnvValue {
    /// The object referenced, if any.
    pub fn reference(&self) -> Option<(ObjectKind, &str)> {
        match self {
            EnvValue::Value(_) => None,
            EnvValue::Secret(name) => Some((ObjectKind::Secret, name)),
            EnvValue::Config(name) => Some((ObjectKind::Config, name)),
        }
    }
}

impl From<&str> for EnvValue {
    fn from(value: &str) -> EnvValue {
        EnvValue::Value(value.to_string())
    }
}

impl fmt::Display for EnvValue {
    /// The value, or `{secret: NAME}` / `{config: NAME}` (as written in YAML).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Value(v) => f.write_str(v),
            EnvValue::Secret(name) => write!(f, "{{secret: {name}}}"),
            EnvValue::Config(name) => write!(f, "{{config: {name}}}"),
        }
    }
}

impl Serialize for EnvValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, name) = match self {
            EnvValue::Value(v) => return s.serialize_str(v),
            EnvValue::Secret(name) => ("secret", name),
            EnvValue::Config(name) => ("config", name),
        };
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(key, name)?;
        map.end()
    }
}

/// What an `env` value may be, for messages.
const ENV_VALUE_EXPECTED: &str = "a string, {secret: NAME} or {config: NAME}";

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnvValue, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ENV_VALUE_EXPECTED)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v))
            }

            // YAML's unquoted scalars (`A: 1`, `B: true`) are values as before.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue::Value(v.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EnvValue, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(format!(
                        "an empty mapping: expected {ENV_VALUE_EXPECTED}"
                    )));
                };
                let value = match key.as_str() {
                    "secret" => EnvValue::Secret(map.next_value()?),
                    "config" => EnvValue::Config(map.next_value()?),
                    other => {
                        return Err(A::Error::custom(format!(
                            "unknown reference `{other}`: expected {ENV_VALUE_EXPECTED}"
                        )));
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom(format!(
                        "a reference names one object: expected {ENV_VALUE_EXPECTED}"
                    )));
                }
                Ok(value)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How pins and messages name an object: `secret/NAME`, `config/NAME`.
pub fn object_key(kind: ObjectKind, name: &str) -> String {
    format!("{}/{name}", kind_name(kind))
}

/// Where an app's instances go among the agents that fit and satisfy its constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategy {
    /// Balanced: a new instance goes where the app has the fewest instances (by the
    /// spec's `spread` field, then by agent), as Docker Swarm places by default.
    #[default]
    Spread,
    /// First fit: instances fill the first offer that fits before the next.
    Pack,
}

impl PlacementStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementStrategy::Spread => "spread",
            PlacementStrategy::Pack => "pack",
        }
    }
}

/// One port: a number (the host port; 0 = any offered port) or a mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Host(u16),
    Mapping(PortMapping),
}

impl PortSpec {
    /// The service port asked for: `None` (none), `Some(0)` (any free one of the
    /// framework's `--service-ports`) or `Some(n)`. Once deployed, the app's spec holds
    /// the port assigned (never 0).
    pub fn service_port(&self) -> Option<u16> {
        match self {
            PortSpec::Mapping(m) => m.service_port,
            PortSpec::Host(_) => None,
        }
    }

    /// tcp (when not said) or udp.
    pub fn protocol(&self) -> &str {
        match self {
            PortSpec::Mapping(PortMapping {
                protocol: Some(p), ..
            }) => p,
            _ => "tcp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The host port; 0 (default) = any offered port.
    #[serde(default)]
    pub host_port: u16,
    /// Docker bridge networking: the port inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// tcp (default) or udp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The app's stable port on every agent (issue 15, Marathon's `servicePort`): the
    /// service proxies forward connections to it to the app's healthy instances.
    /// Absent: none; 0: any free port of the framework's `--service-ports` range
    /// (assigned once, kept across updates and restarts); n: that port (inside the
    /// range, not taken by another app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
}

/// A placement constraint on agents: a field (`hostname` or an agent attribute),
/// an operator and, for most operators, a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConstraintRepr", into = "ConstraintRepr")]
pub struct Constraint {
    pub field: String,
    pub operator: Operator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum ConstraintRepr {
    /// `"hostname UNIQUE"`, `"rack CLUSTER a"`, `"rack LIKE r[12]"`.
    Text(String),
    /// `["hostname", "UNIQUE"]`, `["rack", "MAX_PER", "2"]`.
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    /// At most one task per distinct value of the field.
    Unique,
    /// Only on agents whose field equals the value.
    Cluster(String),
    /// At most n tasks per distinct value of the field.
    MaxPer(u32),
    /// Only on agents whose field matches the regex (the whole value).
    Like(Pattern),
    /// Only on agents whose field does not match the regex (the whole value).
    Unlike(Pattern),
}

/// The regex of a LIKE or UNLIKE constraint: the text as written (what is serialized
/// and shown) and the regex compiled from it once, when the spec is parsed, to match
/// whole values. Placement only ever uses the compiled regex: compiling on every
/// placement attempt once stalled the framework for seconds with large patterns.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    /// `^(?:source)$`, compiled.
    whole: regex::Regex,
    /// Over [`Pattern::SIZE_LIMIT`]: [`AppSpec::validate`] refuses it for anything
    /// deployed, so only a spec read back from the framework's state store (deployed
    /// before the limit existed) keeps one, and the framework still starts.
    too_large: bool,
}

/// Why a LIKE or UNLIKE regex was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the regex is empty")]
    Empty,
    #[error("invalid regex {pattern:?}: {reason}")]
    Syntax { pattern: String, reason: String },
    #[error(
        "regex {pattern:?} is too large: compiled, it would take more than {} KiB; use a \
         simpler pattern (e.g. \\w+ rather than \\w{{200}})",
        Pattern::SIZE_LIMIT / 1024
    )]
    TooLarge { pattern: String },
}

impl Pattern {
    /// The most memory one compiled pattern may take. Attribute values are short and
    /// ordinary patterns (`r[12]`, `eu-.*`, `\w+`) need a few KiB to 64 KiB; a pattern
    /// over this is refused when the spec is deployed.
    pub const SIZE_LIMIT: usize = 1024 * 1024;

    /// The limit before [`Pattern::SIZE_LIMIT`] existed (the regex crate's default),
    /// for patterns read back from the state store.
    const STORED_SIZE_LIMIT: usize = 10 * 1024 * 1024;

    /// Compiles `source` so that it must match a whole value. The pattern must also
    /// be valid on its own, so that e.g. `a)|(b` cannot escape the anchoring.
    ///
    /// A pattern over [`Pattern::SIZE_LIMIT`] (and within what was accepted before
    /// that limit) is kept but marked, and [`Pattern::problem`] reports it: a state
    /// store holding one still loads, and [`AppSpec::validate`] refuses it for anything
    /// deployed.
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        let anchored = format!("^(?:{source})$");
        let limited = |limit| {
            Pattern::compile(source, source, limit)?;
            Pattern::compile(&anchored, source, limit)
        };
        match limited(Pattern::SIZE_LIMIT) {
            Ok(whole) => Ok(Pattern {
                source: source.to_string(),
                whole,
                too_large: false,
            }),
            Err(PatternError::TooLarge { .. }) => Ok(Pattern {
                source: source.to_string(),
                whole: limited(Pattern::STORED_SIZE_LIMIT)?,
                too_large: true,
            }),
            Err(e) => Err(e),
        }
    }

    /// Compiles `text` (`source` or its anchored form); errors name `source`.
    fn compile(text: &str, source: &str, limit: usize) -> Result<regex::Regex, PatternError> {
        regex::RegexBuilder::new(text)
            .size_limit(limit)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => PatternError::TooLarge {
                    pattern: source.to_string(),
                },
                e => {
                    // regex's syntax errors span lines (the pattern, a caret, the error).
                    let e = e.to_string();
                    let reason = e
                        .lines()
                        .find_map(|l| l.strip_prefix("error: "))
                        .unwrap_or(&e);
                    PatternError::Syntax {
                        pattern: source.to_string(),
                        reason: reason.to_string(),
                    }
                }
            })
    }

    /// What makes this pattern unfit to deploy: over [`Pattern::SIZE_LIMIT`].
    pub fn problem(&self) -> Option<PatternError> {
        self.too_large.then(|| PatternError::TooLarge {
            pattern: self.source.clone(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches all of `value`.
    pub fn matches_whole(&self, value: &str) -> bool {
        self.whole.is_match(value)
    }

    /// The compiled, anchored regex (for tests that check it is the one kept).
    #[cfg(test)]
    pub(super) fn compiled(&self) -> &regex::Regex {
        &self.whole
    }
}

impl PartialEq for Pattern {
    /// Two patterns are the same when they are written the same.
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// http, tcp or command.
    pub protocol: String,
    /// http: the request path (default "/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http and tcp: which of the app's ports to check.
    #[serde(default)]
    pub port_index: usize,
    /// command: the shell command; exit 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default = "default_hc_delay")]
    pub delay_seconds: f64,
    #[serde(default = "default_hc_interval")]
    pub interval_seconds: f64,
    #[serde(default = "default_hc_timeout")]
    pub timeout_seconds: f64,
    #[serde(default = "default_hc_grace")]
    pub grace_period_seconds: f64,
    /// Kill and replace the task after this many failures in a row; 0 = never.
    #[serde(default = "default_hc_failures")]
    pub max_consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeStrategy {
    /// The share of `instances` that must stay healthy during a rolling update, 0..=1.
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// The share of `instances` that may run above `instances` during one, 0..=1.
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// The delay before replacing a failed task: `seconds`, multiplied by `factor` on each
/// failure up to `max_seconds`; reset by a new version of the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "one")]
    pub seconds: f64,
    #[serde(default = "default_backoff_factor")]
    pub factor: f64,
    #[serde(default = "default_backoff_max")]
    pub max_seconds: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            seconds: 1.0,
            factor: default_backoff_factor(),
            max_seconds: default_backoff_max(),
        }
    }
}

fn default_instances() -> u32 {
    1
}
fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_kill_grace() -> f64 {
    3.0
}
fn default_unreachable() -> f64 {
    60.0
}
fn default_hc_delay() -> f64 {
    15.0
}
fn default_hc_interval() -> f64 {
    10.0
}
fn default_hc_timeout() -> f64 {
    20.0
}
fn default_hc_grace() -> f64 {
    300.0
}
fn default_hc_failures() -> u32 {
    3
}
fn one() -> f64 {
    1.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_backoff_max() -> f64 {
    300.0
}

/// Why a spec was refused: the offending field (a path such as
/// `health_checks[0].port_index`) and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The field named by errors about the document as a whole (not a mapping, text after
/// the JSON object, several YAML documents). Syntax errors are named by the field
/// being read when the parser met them.
const ROOT_FIELD: &str = "spec";

const MAX_INSTANCES: u32 = 10_000;
const MAX_CPUS: f64 = 1024.0;
const MIN_MEM: f64 = 4.0;

impl AppSpec {
    /// Parses a spec written in YAML or JSON, then validates it. Text that looks like
    /// a JSON object (`{` then `"` or `}`) is parsed as JSON, for its better messages;
    /// anything else as YAML (which includes flow mappings such as `{id: web}`).
    pub fn parse(text: &str) -> Result<AppSpec, SpecError> {
        let looks_like_json = text
            .trim_start()
            .strip_prefix('{')
            .is_some_and(|rest| rest.trim_start().starts_with(['"', '}']));
        if looks_like_json {
            let mut de = serde_json::Deserializer::from_str(text);
            let spec =
                serde_path_to_error::deserialize::<_, AppSpec>(&mut de).map_err(path_error)?;
            de.end()
                .map_err(|e| SpecError::new(ROOT_FIELD, e.to_string()))?;
            return spec.validated();
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, AppSpec>(de)
            .map_err(path_error)?
            .validated()
    }

    /// Parses a YAML body (the App API's `application/yaml`), then validates it. A
    /// refusal names the field, as [`AppSpec::from_json`] does, and its line when known:
    /// where the parser met the error, else (a rule broken by a value that parsed) the
    /// line of the field's key.
    pub fn from_yaml(text: &str) -> Result<AppSpec, YamlError> {
        // Syntax first: text that is not YAML at all is refused as a whole.
        if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
            return Err(YamlError {
                line: e.location().map(|l| l.line()),
                error: SpecError::new(ROOT_FIELD, e.to_string()),
                syntax: true,
            });
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let spec = serde_path_to_error::deserialize::<_, AppSpec>(de).map_err(|e| {
            let line = e.inner().location().map(|l| l.line());
            let error = path_error(e);
            YamlError {
                line: line.or_else(|| yaml_key_line(text, &error.field)),
                error,
                syntax: false,
            }
        })?;
        spec.validate().map_err(|error| YamlError {
            line: yaml_key_line(text, &error.field),
            error,
            syntax: false,
        })?;
        Ok(spec)
    }

    /// Builds a spec from a JSON value (e.g. an HTTP request body), then validates it.
    pub fn from_json(value: serde_json::Value) -> Result<AppSpec, SpecError> {
        serde_path_to_error::deserialize::<_, AppSpec>(value)
            .map_err(path_error)?
            .validated()
    }

    fn validated(self) -> Result<AppSpec, SpecError> {
        self.validate()?;
        Ok(self)
    }

    /// Checks every rule; the first failure names its field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_id(&self.id)?;
        if self.instances > MAX_INSTANCES {
            return Err(SpecError::new(
                "instances",
                format!("{} is more than {MAX_INSTANCES}", self.instances),
            ));
        }
        self.validate_command()?;
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= MAX_CPUS) {
            return Err(SpecError::new(
                "cpus",
                format!(
                    "must be more than 0 and at most {MAX_CPUS}, got {}",
                    self.cpus
                ),
            ));
        }
        at_least("mem", self.mem, MIN_MEM)?;
        at_least("disk", self.disk, 0.0)?;
        for (key, value) in &self.env {
            if key.is_empty() {
                return Err(SpecError::new("env", "a variable name is empty"));
            }
            if key.contains('=') || key.contains('\0') {
                return Err(SpecError::new(
                    "env",
                    format!("variable name {key:?} contains '=' or NUL"),
                ));
            }
            if let EnvValue::Value(value) = value
                && value.contains('\0')
            {
                return Err(SpecError::new(
                    format!("env.{key}"),
                    "the value contains NUL",
                ));
            }
        }
        self.validate_docker()?;
        self.validate_volumes()?;
        self.validate_objects()?;
        self.validate_ports()?;
        for (i, constraint) in self.constraints.iter().enumerate() {
            if let Some(reason) = constraint.problem() {
                return Err(SpecError::new(format!("constraints[{i}]"), reason));
            }
        }
        self.validate_spread()?;
        for (i, check) in self.health_checks.iter().enumerate() {
            check.validate(&format!("health_checks[{i}]"), self.ports.len())?;
        }
        if self.health_checks.len() > 1 {
            return Err(SpecError::new(
                "health_checks[1]",
                "one health check per app is supported (the agent runs one per task)",
            ));
        }
        self.upgrade_strategy.validate()?;
        self.backoff.validate()?;
        seconds(
            "kill_grace_period_seconds",
            self.kill_grace_period_seconds,
            0.0,
        )?;
        seconds(
            "unreachable_replace_seconds",
            self.unreachable_replace_seconds,
            0.0,
        )?;
        if let Some(user) = &self.user
            && user.is_empty()
        {
            return Err(SpecError::new("user", "must not be empty"));
        }
        if self.labels.keys().any(String::is_empty) {
            return Err(SpecError::new("labels", "a label key is empty"));
        }
        if let Some(roles) = &self.accepted_resource_roles {
            if roles.is_empty() {
                return Err(SpecError::new(
                    "accepted_resource_roles",
                    "must name at least one role (leave it out to accept all)",
                ));
            }
            for (i, role) in roles.iter().enumerate() {
                let bad = role.is_empty()
                    || role == "."
                    || role == ".."
                    || role.starts_with('-')
                    || role.chars().any(|c| c.is_whitespace() || c.is_control());
                if bad {
                    return Err(SpecError::new(
                        format!("accepted_resource_roles[{i}]"),
                        format!("{role:?} is not a role name"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Exactly one of `cmd`, `args` or `image`; `image` may come with either.
    fn validate_command(&self) -> Result<(), SpecError> {
        if self.cmd.is_some() && !self.args.is_empty() {
            return Err(SpecError::new(
                "args",
                "cmd and args are mutually exclusive",
            ));
        }
        if self.cmd.is_none() && self.args.is_empty() && self.image.is_none() {
            return Err(SpecError::new(
                "cmd",
                "one of cmd, args or image is required",
            ));
        }
        if let Some(cmd) = &self.cmd {
            if cmd.trim().is_empty() {
                return Err(SpecError::new("cmd", "must not be empty"));
            }
            if cmd.contains('\0') {
                return Err(SpecError::new("cmd", "contains NUL"));
            }
        }
        for (i, arg) in self.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(SpecError::new(format!("args[{i}]"), "contains NUL"));
            }
        }
        if self.image.is_none() && self.args.first().is_some_and(|program| program.is_empty()) {
            return Err(SpecError::new("args[0]", "the program must not be empty"));
        }
        if let Some(image) = &self.image
            && image.trim().is_empty()
        {
            return Err(SpecError::new("image", "must not be empty"));
        }
        Ok(())
    }

    /// The configs and secrets the tasks reference (issue 16), as the task's
    /// [`v1::ObjectRef`]s with version 0 (the latest: the engine pins them): the
    /// `secrets`, then the `configs`, then the `env` references, each with its target.
    pub fn object_refs(&self) -> Vec<v1::ObjectRef> {
        let file = |kind: ObjectKind, f: &ObjectFile| v1::ObjectRef {
            kind: kind as i32,
            name: f.source.clone(),
            version: 0,
            target: Some(Target::File(match (&f.target, kind) {
                (Some(target), _) => target.clone(),
                (None, ObjectKind::Config) => {
                    format!("{}/{}", object_rules::CONFIGS_DIR, f.source)
                }
                (None, _) => f.source.clone(),
            })),
        };
        let mut refs: Vec<v1::ObjectRef> = self
            .secrets
            .iter()
            .map(|f| file(ObjectKind::Secret, f))
            .chain(self.configs.iter().map(|f| file(ObjectKind::Config, f)))
            .collect();
        for (var, value) in &self.env {
            if let Some((kind, name)) = value.reference() {
                refs.push(v1::ObjectRef {
                    kind: kind as i32,
                    name: name.to_string(),
                    version: 0,
                    target: Some(Target::Env(var.clone())),
                });
            }
        }
        refs
    }

    /// Every object the tasks reference (kind and name), once each.
    pub fn object_names(&self) -> BTreeSet<(ObjectKind, String)> {
        self.object_refs()
            .into_iter()
            .filter_map(|r| Some((object_rules::kind_of(r.kind)?, r.name)))
            .collect()
    }

    /// The secrets the tasks reference (what a deploy asks `use_secrets` for).
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.object_names()
            .into_iter()
            .filter(|(kind, _)| *kind == ObjectKind::Secret)
            .map(|(_, name)| name)
            .collect()
    }

    /// `secrets`, `configs` and the `env` references, with the rules the master and the
    /// agent apply to a task's references (`strata_proto::objects`), each refusal naming
    /// its field.
    fn validate_objects(&self) -> Result<(), SpecError> {
        let docker = self.image.is_some();
        let mut count = 0;
        let mut counted = |field: &str| {
            count += 1;
            if count > object_rules::MAX_OBJECTS_PER_TASK {
                return Err(SpecError::new(
                    field,
                    format!(
                        "more than {} secret and config references (secrets, configs and \
                         env together)",
                        object_rules::MAX_OBJECTS_PER_TASK
                    ),
                ));
            }
            Ok(())
        };
        for (list, kind, files) in [
            ("secrets", ObjectKind::Secret, &self.secrets),
            ("configs", ObjectKind::Config, &self.configs),
        ] {
            let mut targets: BTreeMap<String, usize> = BTreeMap::new();
            for (i, f) in files.iter().enumerate() {
                let at = format!("{list}[{i}]");
                counted(&at)?;
                object_rules::validate_name(kind, &f.source)
                    .map_err(|e| SpecError::new(format!("{at}.source"), e))?;
                let field = format!("{at}.target");
                let target = match &f.target {
                    Some(target) => target.clone(),
                    None if kind == ObjectKind::Config => {
                        format!("{}/{}", object_rules::CONFIGS_DIR, f.source)
                    }
                    None => f.source.clone(),
                };
                let absolute = target.starts_with('/');
                if absolute && !(docker && kind == ObjectKind::Config) {
                    let reason = if kind == ObjectKind::Secret {
                        format!(
                            "'{target}' must be relative to the task's secrets directory \
                             ({}/ in the sandbox, {} in a container)",
                            object_rules::SECRETS_DIR,
                            object_rules::DOCKER_SECRETS_DIR
                        )
                    } else {
                        format!(
                            "'{target}' must be relative to the sandbox (an absolute path, \
                             in the container, only with image)"
                        )
                    };
                    return Err(SpecError::new(field, reason));
                }
                let inner = target.trim_start_matches('/');
                if absolute && inner.is_empty() {
                    return Err(SpecError::new(field, "the file path is '/'"));
                }
                object_rules::validate_relative_path(inner)
                    .map_err(|e| SpecError::new(&field, e))?;
                if kind == ObjectKind::Config {
                    // The secrets are a tmpfs mounted over that directory.
                    let secrets_dir = if absolute {
                        object_rules::DOCKER_SECRETS_DIR.trim_start_matches('/')
                    } else {
                        object_rules::SECRETS_DIR
                    };
                    if inner == secrets_dir || inner.starts_with(&format!("{secrets_dir}/")) {
                        return Err(SpecError::new(
                            field,
                            format!(
                                "'{target}' is inside the secrets directory (a tmpfs of the \
                                 secrets): choose another path"
                            ),
                        ));
                    }
                }
                if let Some(first) = targets.insert(target.clone(), i) {
                    return Err(SpecError::new(
                        field,
                        format!("'{target}' is also the target of {list}[{first}]"),
                    ));
                }
            }
        }
        for (var, value) in &self.env {
            let Some((kind, name)) = value.reference() else {
                continue;
            };
            let at = format!("env.{var}");
            counted(&at)?;
            object_rules::validate_env_name(var).map_err(|e| SpecError::new(&at, e))?;
            object_rules::validate_name(kind, name).map_err(|e| SpecError::new(&at, e))?;
            // Without `cmd` a Docker task runs the image's entrypoint, not a shell: the
            // agent sets secret variables from the secrets tmpfs in a shell only (the
            // engine writes a container's environment to disk).
            if docker && kind == ObjectKind::Secret && self.cmd.is_none() {
                return Err(SpecError::new(
                    at,
                    format!(
                        "secret '{name}' as a variable of a Docker app needs cmd (a shell \
                         command, where the agent sets it from the secrets tmpfs; the engine \
                         keeps a container's environment on disk); or deliver it as a file \
                         with secrets"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `spread` names a field (`hostname` or an attribute), only with `spread`
    /// placement.
    fn validate_spread(&self) -> Result<(), SpecError> {
        let Some(field) = &self.spread else {
            return Ok(());
        };
        if self.placement != PlacementStrategy::Spread {
            return Err(SpecError::new(
                "spread",
                format!(
                    "only with placement spread (placement is {})",
                    self.placement.as_str()
                ),
            ));
        }
        if field.is_empty() {
            return Err(SpecError::new(
                "spread",
                "must not be empty: hostname or an agent attribute name (leave it out to \
                 spread across agents)",
            ));
        }
        if field.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SpecError::new(
                "spread",
                format!("{field:?} is not a field name: hostname or an agent attribute name"),
            ));
        }
        Ok(())
    }

    fn validate_docker(&self) -> Result<(), SpecError> {
        for (field, value, allowed) in [
            ("network", &self.network, &["host", "bridge", "none"][..]),
            (
                "pull",
                &self.pull,
                &["if-not-present", "always", "never"][..],
            ),
        ] {
            let Some(value) = value else { continue };
            if self.image.is_none() {
                return Err(SpecError::new(field, "only with image"));
            }
            one_of(field, value, allowed)?;
        }
        Ok(())
    }

    /// The Docker named volumes: only with `image`; each named as the engine accepts,
    /// at its own absolute container path, `rw` or `ro`.
    fn validate_volumes(&self) -> Result<(), SpecError> {
        let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
        if let Some(s) = &self.unreachable_strategy {
            one_of("unreachable_strategy", s, &["wait", "relocate"])?;
        }
        for (i, v) in self.volumes.iter().enumerate() {
            let field = |name: &str| format!("volumes[{i}].{name}");
            if let Some(p) = &v.persistent {
                if v.docker_volume.is_some() {
                    return Err(SpecError::new(
                        field("persistent"),
                        "a volume is either a Docker volume (docker_volume) or a persistent volume (persistent), not both",
                    ));
                }
                if !(p.size.is_finite() && p.size >= 1.0) {
                    return Err(SpecError::new(
                        field("persistent.size"),
                        format!("must be a number of MiB of at least 1, got {}", p.size),
                    ));
                }
                let path = v.container_path.as_str();
                strata_proto::resources::valid_container_path(path)
                    .map_err(|why| SpecError::new(field("container_path"), why))?;
                if let Some(first) = paths.insert(path.trim_end_matches('/'), i) {
                    return Err(SpecError::new(
                        field("container_path"),
                        format!("'{path}' is also the container_path of volumes[{first}]"),
                    ));
                }
                if let Some(mode) = &v.mode {
                    one_of(&field("mode"), mode, &["rw", "ro"])?;
                }
                continue;
            }
            let Some(name) = &v.docker_volume else {
                return Err(SpecError::new(
                    field("docker_volume"),
                    "is required: name the Docker volume to mount, e.g. {docker_volume: pgdata, container_path: /data}, or give a local persistent volume, e.g. {container_path: data, persistent: {size: 512}}",
                ));
            };
            if self.image.is_none() {
                return Err(SpecError::new(
                    field("docker_volume"),
                    "only with image: Docker volumes are mounted into Docker containers",
                ));
            }
            strata_proto::container::validate_docker_volume_name(name)
                .map_err(|why| SpecError::new(field("docker_volume"), format!("'{name}' {why}")))?;
            let path = v.container_path.as_str();
            let problem = if !path.starts_with('/') {
                Some("is not an absolute path: start it with '/'")
            } else if path.split('/').any(|part| part == "..") {
                Some("contains '..'")
            } else if path.contains(':') || path.contains(',') || path.chars().any(char::is_control)
            {
                Some("contains ':', ',' or control characters")
            } else if path.trim_end_matches('/').is_empty() {
                Some("is the container's root: pick a directory, e.g. /data")
            } else if path.trim_end_matches('/') == strata_proto::container::SANDBOX_MOUNT {
                Some("is where the sandbox is mounted: pick another path")
            } else {
                None
            };
            if let Some(why) = problem {
                return Err(SpecError::new(
                    field("container_path"),
                    format!("'{path}' {why}"),
                ));
            }
            if let Some(first) = paths.insert(path.trim_end_matches('/'), i) {
                return Err(SpecError::new(
                    field("container_path"),
                    format!("'{path}' is also the container_path of volumes[{first}]"),
                ));
            }
            if let Some(mode) = &v.mode {
                one_of(&field("mode"), mode, &["rw", "ro"])?;
            }
        }
        Ok(())
    }

    /// The persistent volumes (a resident app has one or more).
    pub fn persistent_volumes(&self) -> impl Iterator<Item = (&VolumeSpec, f64)> {
        self.volumes
            .iter()
            .filter_map(|v| v.persistent.as_ref().map(|p| (v, p.size)))
    }

    /// Whether the app keeps its instances' data in persistent volumes.
    pub fn is_resident(&self) -> bool {
        self.persistent_volumes().next().is_some()
    }

    /// A resident app whose instance's agent is gone starts it afresh elsewhere.
    pub fn relocates(&self) -> bool {
        self.unreachable_strategy.as_deref() == Some("relocate")
    }

    /// The Docker volumes the tasks mount (what a deploy asks `use_docker_volumes`
    /// for).
    pub fn docker_volume_names(&self) -> BTreeSet<String> {
        self.volumes
            .iter()
            .filter_map(|v| v.docker_volume.clone())
            .collect()
    }

    fn validate_ports(&self) -> Result<(), SpecError> {
        let bridge = self.image.is_some() && self.network.as_deref() == Some("bridge");
        let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
        let mut services: BTreeMap<u16, usize> = BTreeMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(service_port) = port.service_port()
                && service_port != 0
                && let Some(first) = services.insert(service_port, i)
            {
                return Err(SpecError::new(
                    format!("ports[{i}].service_port"),
                    format!("service port {service_port} is also ports[{first}].service_port"),
                ));
            }
            let (field, host_port) = match port {
                PortSpec::Host(host_port) => {
                    if bridge {
                        return Err(SpecError::new(
                            format!("ports[{i}]"),
                            "with network bridge every port needs a container_port",
                        ));
                    }
                    (format!("ports[{i}]"), *host_port)
                }
                PortSpec::Mapping(mapping) => {
                    let container_port = format!("ports[{i}].container_port");
                    match (bridge, mapping.container_port) {
                        (true, None) => {
                            return Err(SpecError::new(
                                container_port,
                                "with network bridge every port needs a container_port",
                            ));
                        }
                        (false, Some(_)) => {
                            return Err(SpecError::new(
                                container_port,
                                "only with image and network bridge",
                            ));
                        }
                        _ => {}
                    }
                    if let Some(protocol) = &mapping.protocol {
                        one_of(&format!("ports[{i}].protocol"), protocol, &["tcp", "udp"])?;
                    }
                    (format!("ports[{i}].host_port"), mapping.host_port)
                }
            };
            if host_port != 0
                && let Some(first) = seen.insert(host_port, i)
            {
                return Err(SpecError::new(
                    field,
                    format!("host port {host_port} is also ports[{first}]"),
                ));
            }
        }
        Ok(())
    }
}

impl HealthCheckSpec {
    fn validate(&self, at: &str, ports: usize) -> Result<(), SpecError> {
        let field = |name: &str| format!("{at}.{name}");
        one_of(
            &field("protocol"),
            &self.protocol,
            &["http", "tcp", "command"],
        )?;
        let command = self.protocol == "command";
        if command {
            match &self.command {
                None => {
                    return Err(SpecError::new(
                        field("command"),
                        "required with protocol command",
                    ));
                }
                Some(c) if c.trim().is_empty() => {
                    return Err(SpecError::new(field("command"), "must not be empty"));
                }
                Some(_) => {}
            }
        } else {
            if self.command.is_some() {
                return Err(SpecError::new(
                    field("command"),
                    "only with protocol command",
                ));
            }
            if self.port_index >= ports {
                return Err(SpecError::new(
                    field("port_index"),
                    format!(
                        "port_index {} but the app has {ports} port(s)",
                        self.port_index
                    ),
                ));
            }
        }
        if let Some(path) = &self.path {
            if self.protocol != "http" {
                return Err(SpecError::new(field("path"), "only with protocol http"));
            }
            if !path.starts_with('/') {
                return Err(SpecError::new(
                    field("path"),
                    format!("must start with '/', got {path:?}"),
                ));
            }
        }
        seconds(&field("delay_seconds"), self.delay_seconds, 0.0)?;
        positive(&field("interval_seconds"), self.interval_seconds)?;
        seconds(&field("interval_seconds"), self.interval_seconds, 0.0)?;
        positive(&field("timeout_seconds"), self.timeout_seconds)?;
        seconds(&field("timeout_seconds"), self.timeout_seconds, 0.0)?;
        seconds(
            &field("grace_period_seconds"),
            self.grace_period_seconds,
            0.0,
        )?;
        Ok(())
    }
}

impl UpgradeStrategy {
    fn validate(&self) -> Result<(), SpecError> {
        for (name, value) in [
            ("minimum_health_capacity", self.minimum_health_capacity),
            ("maximum_over_capacity", self.maximum_over_capacity),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SpecError::new(
                    format!("upgrade_strategy.{name}"),
                    format!("must be between 0 and 1, got {value}"),
                ));
            }
        }
        if self.minimum_health_capacity == 1.0 && self.maximum_over_capacity == 0.0 {
            return Err(SpecError::new(
                "upgrade_strategy",
                "minimum_health_capacity 1 with maximum_over_capacity 0: such an update \
                 could never make progress (no old task may stop, no new task may start)",
            ));
        }
        Ok(())
    }
}

impl Backoff {
    fn validate(&self) -> Result<(), SpecError> {
        seconds("backoff.seconds", self.seconds, 0.0)?;
        at_least("backoff.factor", self.factor, 1.0)?;
        seconds("backoff.max_seconds", self.max_seconds, 0.0)?;
        if !(self.max_seconds.is_finite() && self.max_seconds >= self.seconds) {
            return Err(SpecError::new(
                "backoff.max_seconds",
                format!(
                    "must be at least backoff.seconds ({}), got {}",
                    self.seconds, self.max_seconds
                ),
            ));
        }
        Ok(())
    }
}

fn validate_id(id: &str) -> Result<(), SpecError> {
    let reason = if id.is_empty() {
        "must not be empty".to_string()
    } else if id.len() > 63 {
        format!("{} characters, at most 63", id.len())
    } else if let Some(c) = id
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        format!("{c:?} is not allowed: lower-case letters, digits, '-' and '.' only")
    } else if !id.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !id.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        "must start and end with a lower-case letter or a digit".to_string()
    } else {
        return Ok(());
    };
    Err(SpecError::new("id", reason))
}

fn at_least(field: &str, value: f64, min: f64) -> Result<(), SpecError> {
    if value.is_finite() && value >= min {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be a number of at least {min}, got {value}"),
        ))
    }
}

/// The longest duration a spec may name: a year (what the agent accepts for health
/// checks, and far below what timers can hold).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A duration in seconds: at least `min`, at most a year.
fn seconds(field: &str, value: f64, min: f64) -> Result<(), SpecError> {
    at_least(field, value, min)?;
    if value > MAX_SECONDS {
        return Err(SpecError::new(
            field,
            format!("must be at most {MAX_SECONDS} seconds (a year), got {value}"),
        ));
    }
    Ok(())
}

fn positive(field: &str, value: f64) -> Result<(), SpecError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("must be a number more than 0, got {value}"),
        ))
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), SpecError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("expected one of {}, got {value:?}", allowed.join(", ")),
        ))
    }
}

/// Why a YAML spec was refused ([`AppSpec::from_yaml`]).
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub error: SpecError,
    /// The line at fault (1-based), when known.
    pub line: Option<usize>,
    /// The text is not YAML at all (rather than a spec with a bad field).
    pub syntax: bool,
}

/// The line (1-based) of the key of `field` (a path such as
/// `health_checks[0].port_index`) in a block-style YAML document: each name of the
/// path is looked for after the line of the one before it. `None` when not found
/// (flow style, or a field the document does not write).
fn yaml_key_line(text: &str, field: &str) -> Option<usize> {
    if field.is_empty() || field == ROOT_FIELD {
        return None;
    }
    let names = field
        .split('.')
        .map(|name| name.split('[').next().unwrap_or(name))
        .filter(|name| !name.is_empty());
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for (depth, name) in names.enumerate() {
        let at = (from..lines.len()).find(|&i| {
            let line = lines[i];
            if depth == 0 && line.starts_with([' ', '\t', '-']) {
                return false;
            }
            let key = line.trim_start().trim_start_matches("- ").trim_start();
            [name.to_string(), format!("\"{name}\""), format!("'{name}'")]
                .iter()
                .any(|k| {
                    key.strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with(':'))
                })
        })?;
        found = Some(at + 1);
        from = at + 1;
    }
    found
}

/// Turns a deserialization error into a [`SpecError`] naming the path of the field.
fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> SpecError {
    let mut field = match err.path().to_string() {
        root if root == "." => String::new(),
        path => path,
    };
    let mut reason = err.inner().to_string();
    // serde_yaml names the path itself (or that of a parent): drop it.
    if let Some((prefix, rest)) = reason.split_once(": ")
        && field.strip_prefix(prefix).is_some_and(|after| {
            after.is_empty() || after.starts_with('.') || after.starts_with('[')
        })
    {
        reason = rest.to_string();
    }
    let join = |field: &str, name: &str| {
        if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        }
    };
    if let Some((name, tail)) = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
    {
        field = join(&field, name);
        reason = format!("missing field{tail}");
    } else if let Some((name, tail)) = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        // serde_path_to_error usually has the unknown key as the last segment already.
        if field != name && !field.ends_with(&format!(".{name}")) {
            field = join(&field, name);
        }
        reason = format!("unknown field{tail}");
    } else if let Some(tail) =
        reason.strip_prefix("data did not match any variant of untagged enum PortSpec")
    {
        reason = format!(
            "expected a host port number (0-65535) or a mapping of host_port, \
             container_port, protocol, name and service_port{tail}"
        );
    } else if let Some(tail) =
        reason.strip_prefix("data did not match any variant of untagged enum ConstraintRepr")
    {
        reason = format!(
            "expected a string such as \"rack CLUSTER a\" or a list of strings such as \
             [\"rack\", \"CLUSTER\", \"a\"]{tail}"
        );
    }
    if field.is_empty() {
        field = ROOT_FIELD.to_string();
    }
    SpecError { field, reason }
}

impl Operator {
    fn name(&self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster(_) => "CLUSTER",
            Operator::MaxPer(_) => "MAX_PER",
            Operator::Like(_) => "LIKE",
            Operator::Unlike(_) => "UNLIKE",
        }
    }

    fn value(&self) -> Option<String> {
        match self {
            Operator::Unique => None,
            Operator::Cluster(v) => Some(v.clone()),
            Operator::Like(p) | Operator::Unlike(p) => Some(p.as_str().to_string()),
            Operator::MaxPer(n) => Some(n.to_string()),
        }
    }
}

impl Constraint {
    /// Parses the parts of a constraint, without the checks of [`Constraint::problem`].
    fn from_parts(field: &str, operator: &str, value: Option<&str>) -> Result<Constraint, String> {
        let name = operator.to_ascii_uppercase();
        let needs_value = || match value {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("{name} needs a value")),
        };
        let operator = match name.as_str() {
            "UNIQUE" => match value {
                Some(v) if !v.is_empty() => {
                    return Err(format!("UNIQUE takes no value, got {v:?}"));
                }
                _ => Operator::Unique,
            },
            "CLUSTER" => Operator::Cluster(needs_value()?),
            "LIKE" => Operator::Like(Pattern::new(&needs_value()?).map_err(|e| e.to_string())?),
            "UNLIKE" => Operator::Unlike(Pattern::new(&needs_value()?).map_err(|e| e.to_string())?),
            "MAX_PER" => {
                let v = needs_value()?;
                match v.parse::<u32>() {
                    Ok(n) if n > 0 => Operator::MaxPer(n),
                    _ => return Err(format!("MAX_PER needs a positive integer, got {v:?}")),
                }
            }
            _ => {
                return Err(format!(
                    "unknown operator {operator:?}, expected UNIQUE, CLUSTER, MAX_PER, LIKE \
                     or UNLIKE"
                ));
            }
        };
        Ok(Constraint {
            field: field.to_string(),
            operator,
        })
    }

    /// `"FIELD OPERATOR [VALUE]"`: the value is the rest of the text after the operator,
    /// so that a regex may contain spaces.
    fn from_text(text: &str) -> Result<Constraint, String> {
        let text = text.trim();
        let (field, operator, value) = split_text(text);
        if field.is_empty() {
            return Err("empty constraint, expected e.g. \"hostname UNIQUE\"".to_string());
        }
        if operator.is_empty() {
            return Err(format!(
                "{text:?} has no operator, expected e.g. \"{text} UNIQUE\""
            ));
        }
        Constraint::from_parts(field, operator, value)
    }

    /// Whether the canonical text reads back as this constraint: it does unless the
    /// field has whitespace or the value has leading or trailing whitespace. Decided
    /// on the text alone (no regex is compiled for it: this runs on every serialize).
    fn text_reads_back(&self, text: &str) -> bool {
        let (field, operator, value) = split_text(text.trim());
        field == self.field
            && operator == self.operator.name()
            && value.map(str::to_string) == self.operator.value()
    }

    /// What is wrong with a constraint, if anything.
    fn problem(&self) -> Option<String> {
        if self.field.is_empty() {
            return Some("the field must not be empty".to_string());
        }
        match &self.operator {
            Operator::Unique => None,
            Operator::MaxPer(0) => Some("MAX_PER needs a positive integer, got 0".to_string()),
            Operator::MaxPer(_) => None,
            Operator::Cluster(v) if v.is_empty() => {
                Some(format!("{} needs a value", self.operator.name()))
            }
            Operator::Cluster(_) => None,
            // A Pattern holds a regex that compiled; one read back from the state store
            // may be over the size limit.
            Operator::Like(p) | Operator::Unlike(p) => p.problem().map(|e| e.to_string()),
        }
    }
}

/// `"FIELD OPERATOR [VALUE]"` split at the first two runs of whitespace; the value is
/// the rest (`None` when there is none).
fn split_text(text: &str) -> (&str, &str, Option<&str>) {
    fn split_word(s: &str) -> (&str, &str) {
        match s.find(char::is_whitespace) {
            Some(i) => (&s[..i], s[i..].trim_start()),
            None => (s, ""),
        }
    }
    let (field, rest) = split_word(text);
    let (operator, value) = split_word(rest);
    (field, operator, Some(value).filter(|v| !v.is_empty()))
}

impl fmt::Display for Constraint {
    /// The canonical text form, `FIELD OPERATOR [VALUE]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.operator.name())?;
        match self.operator.value() {
            Some(value) => write!(f, " {value}"),
            None => Ok(()),
        }
    }
}

impl TryFrom<ConstraintRepr> for Constraint {
    type Error = String;

    fn try_from(repr: ConstraintRepr) -> Result<Constraint, String> {
        let constraint = match repr {
            ConstraintRepr::Text(text) => Constraint::from_text(&text)?,
            ConstraintRepr::List(parts) => match parts.as_slice() {
                [field, operator] => Constraint::from_parts(field, operator, None)?,
                [field, operator, value] => Constraint::from_parts(field, operator, Some(value))?,
                _ => {
                    return Err(format!(
                        "expected [field, operator] or [field, operator, value], got {} \
                         element(s)",
                        parts.len()
                    ));
                }
            },
        };
        // A regex over the size limit is refused by `AppSpec::validate`, when a spec is
        // deployed, not here: a state store written before the limit must still load.
        let too_large = matches!(
            &constraint.operator,
            Operator::Like(p) | Operator::Unlike(p) if p.problem().is_some()
        );
        match constraint.problem() {
            Some(reason) if !too_large => Err(reason),
            _ => Ok(constraint),
        }
    }
}

impl From<Constraint> for ConstraintRepr {
    /// The canonical text, unless it would not read back as the same constraint (a
    /// field with whitespace, a value with leading or trailing whitespace): then a list.
    fn from(constraint: Constraint) -> ConstraintRepr {
        let text = constraint.to_string();
        if constraint.text_reads_back(&text) {
            ConstraintRepr::Text(text)
        } else {
            let mut parts = vec![
                constraint.field.clone(),
                constraint.operator.name().to_string(),
            ];
            parts.extend(constraint.operator.value());
            ConstraintRepr::List(parts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
id: web.frontend-1
instances: 3
image: nginx:1.27
args: ["-g", "daemon off;"]
network: bridge
pull: always
cpus: 0.5
mem: 256
disk: 1024
env:
  MODE: prod
  EMPTY: ""
  LOG_LEVEL: {config: log-level}
secrets:
  - source: tls.key
  - {source: db-pass, target: db/password}
configs:
  - source: nginx-conf
    target: /etc/nginx/nginx.conf
  - source: motd
volumes:
  - {docker_volume: web-cache, container_path: /var/cache/nginx}
  - docker_volume: web-static
    container_path: /srv
    mode: ro
ports:
  - host_port: 0
    container_port: 80
    protocol: tcp
    name: http
    service_port: 0
  - {host_port: 8443, container_port: 443, protocol: udp, name: quic, service_port: 10443}
constraints:
  - hostname UNIQUE
  - rack CLUSTER a
  - ["rack", "MAX_PER", "2"]
  - zone like eu-(west|north) [0-9]
  - [disk, UNLIKE, "hdd|tape"]
placement: spread
spread: zone
health_checks:
  - protocol: http
    path: /healthz
    port_index: 0
    delay_seconds: 5
    interval_seconds: 2
    timeout_seconds: 1.5
    grace_period_seconds: 30
    max_consecutive_failures: 0
upgrade_strategy:
  minimum_health_capacity: 0.5
  maximum_over_capacity: 0.25
backoff: {seconds: 2, factor: 2, max_seconds: 60}
kill_grace_period_seconds: 10
unreachable_replace_seconds: 120
user: nobody
labels: {team: web, tier: ""}
accepted_resource_roles: ["*", web]
"#;

    fn hc(protocol: &str) -> HealthCheckSpec {
        HealthCheckSpec {
            protocol: protocol.to_string(),
            path: None,
            port_index: 0,
            command: None,
            delay_seconds: 15.0,
            interval_seconds: 10.0,
            timeout_seconds: 20.0,
            grace_period_seconds: 300.0,
            max_consecutive_failures: 3,
        }
    }

    fn c(field: &str, operator: Operator) -> Constraint {
        Constraint {
            field: field.to_string(),
            operator,
        }
    }

    fn like(re: &str) -> Operator {
        Operator::Like(Pattern::new(re).unwrap())
    }

    fn unlike(re: &str) -> Operator {
        Operator::Unlike(Pattern::new(re).unwrap())
    }

    fn full() -> AppSpec {
        AppSpec {
            unreachable_strategy: None,
            id: "web.frontend-1".into(),
            instances: 3,
            cmd: None,
            args: vec!["-g".into(), "daemon off;".into()],
            image: Some("nginx:1.27".into()),
            network: Some("bridge".into()),
            pull: Some("always".into()),
            cpus: 0.5,
            mem: 256.0,
            disk: 1024.0,
            env: [
                ("MODE", EnvValue::from("prod")),
                ("EMPTY", EnvValue::from("")),
                ("LOG_LEVEL", EnvValue::Config("log-level".into())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            secrets: vec![
                ObjectFile {
                    source: "tls.key".into(),
                    target: None,
                },
                ObjectFile {
                    source: "db-pass".into(),
                    target: Some("db/password".into()),
                },
            ],
            configs: vec![
                ObjectFile {
                    source: "nginx-conf".into(),
                    target: Some("/etc/nginx/nginx.conf".into()),
                },
                ObjectFile {
                    source: "motd".into(),
                    target: None,
                },
            ],
            volumes: vec![
                VolumeSpec {
                    persistent: None,
                    docker_volume: Some("web-cache".into()),
                    container_path: "/var/cache/nginx".into(),
                    mode: None,
                },
                VolumeSpec {
                    persistent: None,
                    docker_volume: Some("web-static".into()),
                    container_path: "/srv".into(),
                    mode: Some("ro".into()),
                },
            ],
            ports: vec![
                PortSpec::Mapping(PortMapping {
                    host_port: 0,
                    container_port: Some(80),
                    protocol: Some("tcp".into()),
                    name: Some("http".into()),
                    service_port: Some(0),
                }),
                PortSpec::Mapping(PortMapping {
                    host_port: 8443,
                    container_port: Some(443),
                    protocol: Some("udp".into()),
                    name: Some("quic".into()),
                    service_port: Some(10443),
                }),
            ],
            constraints: vec![
                c("hostname", Operator::Unique),
                c("rack", Operator::Cluster("a".into())),
                c("rack", Operator::MaxPer(2)),
                c("zone", like("eu-(west|north) [0-9]")),
                c("disk", unlike("hdd|tape")),
            ],
            placement: PlacementStrategy::Spread,
            spread: Some("zone".into()),
            health_checks: vec![HealthCheckSpec {
                path: Some("/healthz".into()),
                delay_seconds: 5.0,
                interval_seconds: 2.0,
                timeout_seconds: 1.5,
                grace_period_seconds: 30.0,
                max_consecutive_failures: 0,
                ..hc("http")
            }],
            upgrade_strategy: UpgradeStrategy {
                minimum_health_capacity: 0.5,
                maximum_over_capacity: 0.25,
            },
            backoff: Backoff {
                seconds: 2.0,
                factor: 2.0,
                max_seconds: 60.0,
            },
            kill_grace_period_seconds: 10.0,
            unreachable_replace_seconds: 120.0,
            user: Some("nobody".into()),
            labels: [("team", "web"), ("tier", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            accepted_resource_roles: Some(vec!["*".into(), "web".into()]),
        }
    }

    /// A valid command app to break one rule at a time.
    fn base() -> AppSpec {
        AppSpec::parse("id: app\ncmd: sleep 1000\n").unwrap()
    }

    /// A valid image app.
    fn image() -> AppSpec {
        AppSpec {
            image: Some("busybox".into()),
            cmd: None,
            ..base()
        }
    }

    #[track_caller]
    fn refused(spec: AppSpec, field: &str) -> SpecError {
        let err = spec.validate().expect_err("should be refused");
        assert_eq!(err.field, field, "{err}");
        err
    }

    #[track_caller]
    fn parse_refused(text: &str, field: &str) -> SpecError {
        let err = AppSpec::parse(text).expect_err("should be refused");
        assert_eq!(err.field, field, "{err}");
        err
    }

    #[track_caller]
    fn constraint_refused(constraint: &str, reason_part: &str) {
        let text =
            format!("id: app\ncmd: x\nconstraints:\n  - hostname UNIQUE\n  - {constraint}\n");
        let err = parse_refused(&text, "constraints[1]");
        assert!(err.reason.contains(reason_part), "{err}");
    }

    #[track_caller]
    fn constraint(text: &str) -> Constraint {
        serde_json::from_value(serde_json::json!(text)).unwrap()
    }

    #[test]
    fn full_yaml_parses_every_field() {
        assert_eq!(AppSpec::parse(FULL).unwrap(), full());
    }

    #[test]
    fn full_json_parses() {
        let json = serde_json::to_string_pretty(&full()).unwrap();
        assert!(json.starts_with('{'));
        assert_eq!(AppSpec::parse(&json).unwrap(), full());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(AppSpec::from_json(value).unwrap(), full());
    }

    /// A YAML body's refusal names the field and its line: where the parser met it,
    /// else the line of the field's key; text that is not YAML is a syntax error.
    #[test]
    fn yaml_errors_name_the_field_and_the_line() {
        let refused = |text: &str| AppSpec::from_yaml(text).unwrap_err();
        let e = refused("id: web\ncmd: sleep 1\ninstances: -1\n");
        assert_eq!(
            (e.error.field.as_str(), e.line, e.syntax),
            ("instances", Some(3), false)
        );
        let e = refused("id: web\ncmd: sleep 1\nenv:\n  A: 1\n  B: [x]\n");
        assert_eq!((e.error.field.as_str(), e.line), ("env.B", Some(5)));
        let e = refused("id: web\ncmd: sleep 1\nmem: 1\n");
        assert_eq!((e.error.field.as_str(), e.line), ("mem", Some(3)));
        let e = refused(
            "id: web\ncmd: sleep 1\nports: [0]\nhealth_checks:\n- protocol: tcp\n  port_index: 1\n",
        );
        assert_eq!(
            (e.error.field.as_str(), e.line),
            ("health_checks[0].port_index", Some(6))
        );
        // A missing field: the parser names the mapping that lacks it.
        let e = refused("\ncmd: sleep 1\n");
        assert_eq!((e.error.field.as_str(), e.line), ("id", Some(2)));
        // A rule about a field the document does not write: no line.
        assert_eq!(
            yaml_key_line("id: web\n", "health_checks[0].port_index"),
            None
        );
        let e = refused("id: web\ncmd: [sleep\n");
        assert!(e.syntax && e.line.is_some(), "{e:?}");
        assert_eq!(
            AppSpec::from_yaml("id: web\ncmd: sleep 1\n").unwrap(),
            AppSpec::parse("id: web\ncmd: sleep 1\n").unwrap()
        );
        assert_eq!(
            yaml_key_line("a:\n  b: 1\nb: 2\n", "b"),
            Some(3),
            "top level only"
        );
        assert_eq!(yaml_key_line("{id: web}", "id"), None);
    }

    #[test]
    fn yaml_flow_mapping_starting_with_a_brace_parses() {
        let spec = AppSpec::parse("{id: web, cmd: sleep 1, instances: 2}").unwrap();
        assert_eq!(spec.instances, 2);
        let err = parse_refused("{id: web, cmd: sleep 1, instances: z}", "instances");
        assert!(err.reason.contains("invalid type"), "{err}");
    }

    #[test]
    fn round_trip_json_and_yaml() {
        for spec in [full(), base(), image()] {
            let value = serde_json::to_value(&spec).unwrap();
            assert_eq!(AppSpec::from_json(value).unwrap(), spec);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(AppSpec::parse(&json).unwrap(), spec);
            let yaml = serde_yaml::to_string(&spec).unwrap();
            assert_eq!(AppSpec::parse(&yaml).unwrap(), spec);
        }
    }

    #[test]
    fn constraints_serialize_as_canonical_text() {
        let value = serde_json::to_value(&full().constraints).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                "hostname UNIQUE",
                "rack CLUSTER a",
                "rack MAX_PER 2",
                "zone LIKE eu-(west|north) [0-9]",
                "disk UNLIKE hdd|tape",
            ])
        );
    }

    #[test]
    fn constraints_that_text_cannot_carry_serialize_as_lists() {
        for constraint in [
            c("my rack", Operator::Cluster("a".into())),
            c("rack", like(" a")),
            c("rack", Operator::Cluster("a ".into())),
        ] {
            let value = serde_json::to_value(&constraint).unwrap();
            assert!(value.is_array(), "{value}");
            assert_eq!(
                serde_json::from_value::<Constraint>(value).unwrap(),
                constraint
            );
        }
    }

    #[test]
    fn defaults_applied() {
        let spec = base();
        assert_eq!(spec.instances, 1);
        assert_eq!(spec.cpus, 1.0);
        assert_eq!(spec.mem, 128.0);
        assert_eq!(spec.disk, 0.0);
        assert_eq!(spec.backoff, Backoff::default());
        assert_eq!(
            (
                spec.backoff.seconds,
                spec.backoff.factor,
                spec.backoff.max_seconds
            ),
            (1.0, 1.15, 300.0)
        );
        assert_eq!(
            (
                spec.upgrade_strategy.minimum_health_capacity,
                spec.upgrade_strategy.maximum_over_capacity
            ),
            (1.0, 1.0)
        );
        assert_eq!(spec.kill_grace_period_seconds, 3.0);
        assert_eq!(spec.unreachable_replace_seconds, 60.0);
        assert!(spec.args.is_empty() && spec.ports.is_empty() && spec.env.is_empty());
        assert!(spec.constraints.is_empty() && spec.health_checks.is_empty());
        assert_eq!(
            (spec.image, spec.network, spec.pull, spec.user),
            (None, None, None, None)
        );

        let spec = AppSpec::parse(
            "id: app\ncmd: x\nports: [0]\nhealth_checks: [{protocol: tcp}]\n\
             backoff: {factor: 2}\nupgrade_strategy: {maximum_over_capacity: 0.5}\n",
        )
        .unwrap();
        assert_eq!(spec.health_checks, vec![hc("tcp")]);
        let h = &spec.health_checks[0];
        assert_eq!(
            (
                h.delay_seconds,
                h.interval_seconds,
                h.timeout_seconds,
                h.grace_period_seconds,
                h.max_consecutive_failures,
                h.port_index
            ),
            (15.0, 10.0, 20.0, 300.0, 3, 0)
        );
        assert_eq!(
            (spec.backoff.seconds, spec.backoff.max_seconds),
            (1.0, 300.0)
        );
        assert_eq!(spec.upgrade_strategy.minimum_health_capacity, 1.0);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse_refused("id: app\ncmd: x\nhelth_checks: []\n", "helth_checks");
        assert!(
            err.reason.starts_with("unknown field, expected one of"),
            "{err}"
        );
        let err = parse_refused(
            "id: app\ncmd: x\nports: [0]\nhealth_checks: [{protocol: tcp, prot: 1}]\n",
            "health_checks[0].prot",
        );
        assert!(err.reason.starts_with("unknown field"), "{err}");
        parse_refused("id: app\ncmd: x\nbackoff: {secs: 1}\n", "backoff.secs");
        let err =
            AppSpec::from_json(serde_json::json!({"id": "app", "cmd": "x", "helth_checks": []}))
                .unwrap_err();
        assert_eq!(err.field, "helth_checks");
        assert!(
            err.reason.starts_with("unknown field, expected one of"),
            "{err}"
        );
        parse_refused(
            r#"{"id": "app", "cmd": "x", "upgrade_strategy": {"min": 1}}"#,
            "upgrade_strategy.min",
        );
    }

    #[test]
    fn type_errors_are_named() {
        let text = "id: app\ncmd: x\nports: [0]\nhealth_checks:\n  - protocol: tcp\n    port_index: first\n";
        let err = parse_refused(text, "health_checks[0].port_index");
        assert!(err.reason.starts_with("invalid type"), "{err}");
        let err = AppSpec::from_json(serde_json::json!({
            "id": "app", "cmd": "x", "health_checks": [{"protocol": "tcp", "port_index": "first"}]
        }))
        .unwrap_err();
        assert_eq!(err.field, "health_checks[0].port_index");
        parse_refused(
            r#"{"id": "app", "cmd": "x", "health_checks": [{"protocol": "tcp", "port_index": -1}]}"#,
            "health_checks[0].port_index",
        );
        parse_refused("id: app\ncmd: x\ninstances: -1\n", "instances");
        parse_refused("id: app\ncmd: x\nenv: {A: [1]}\n", "env.A");
        let err = parse_refused("id: app\ncmd: x\nports: [70000]\n", "ports[0]");
        assert!(err.reason.contains("host port number"), "{err}");
        parse_refused("id: app\ncmd: x\nports: [{host_prot: 1}]\n", "ports[0]");
        let err = parse_refused(
            "id: app\ncmd: x\nconstraints: [hostname UNIQUE, 7]\n",
            "constraints[1]",
        );
        assert!(err.reason.contains("such as"), "{err}");
    }

    #[test]
    fn missing_and_malformed_documents() {
        let err = parse_refused("cmd: x\n", "id");
        assert!(err.reason.starts_with("missing field"), "{err}");
        parse_refused(
            "id: app\ncmd: x\nhealth_checks: [{port_index: 0}]\n",
            "health_checks[0].protocol",
        );
        parse_refused("- a\n", ROOT_FIELD);
        // serde_yaml reports a syntax error where deserialization reaches it.
        for text in [
            "id: \"unclosed\ncmd: x\n",
            "id: app\n\tcmd: x\n",
            "id: app\ncmd: [x\n",
        ] {
            let err = AppSpec::parse(text).unwrap_err();
            assert!(err.reason.contains("line"), "{err}");
        }
        parse_refused(r#"{"id": "app", "cmd": "x"} trailing"#, ROOT_FIELD);
        // So does serde_json.
        let err = parse_refused(r#"{"id": "app", "cmd": }"#, "cmd");
        assert!(err.reason.starts_with("expected value at line 1"), "{err}");
        let err = AppSpec::parse(r#"{"id": "app", "cmd": "x","#).unwrap_err();
        assert!(err.reason.contains("EOF"), "{err}");
        let err = parse_refused("{}", "id");
        assert!(err.reason.starts_with("missing field"), "{err}");
        assert!(AppSpec::parse(r#"{"id": "app", "cmd": "x"}"#).is_ok());
    }

    #[test]
    fn parse_and_from_json_validate() {
        parse_refused("id: App\ncmd: x\n", "id");
        let err =
            AppSpec::from_json(serde_json::json!({"id": "app", "cmd": "x", "mem": 1})).unwrap_err();
        assert_eq!(err.field, "mem");
    }

    #[test]
    fn spec_error_displays_field_and_reason() {
        let err = SpecError::new("cpus", "must be more than 0");
        assert_eq!(err.to_string(), "cpus: must be more than 0");
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<SpecError>(&json).unwrap(), err);
    }

    #[test]
    fn id_rules() {
        for ok in ["a", "0", "web", "my-app.v2", "a--b..c", &"a".repeat(63)] {
            let spec = AppSpec {
                id: ok.to_string(),
                ..base()
            };
            assert_eq!(spec.validate(), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "my_app",
            "-web",
            "web-",
            ".web",
            "web.",
            "a/b",
            "wéb",
            &"a".repeat(64),
        ] {
            refused(
                AppSpec {
                    id: bad.to_string(),
                    ..base()
                },
                "id",
            );
        }
    }

    #[test]
    fn instances_at_most_10000() {
        assert!(
            AppSpec {
                instances: 10_000,
                ..base()
            }
            .validate()
            .is_ok()
        );
        assert!(
            AppSpec {
                instances: 0,
                ..base()
            }
            .validate()
            .is_ok()
        );
        refused(
            AppSpec {
                instances: 10_001,
                ..base()
            },
            "instances",
        );
    }

    #[test]
    fn command_rules() {
        let args = vec!["sleep".to_string(), "1".to_string()];
        // Accepted: cmd, args, image, image + cmd, image + args.
        assert!(base().validate().is_ok());
        assert!(
            AppSpec {
                cmd: None,
                args: args.clone(),
                ..base()
            }
            .validate()
            .is_ok()
        );
        assert!(image().validate().is_ok());
        assert!(
            AppSpec {
                cmd: Some("x".into()),
                ..image()
            }
            .validate()
            .is_ok()
        );
        assert!(
            AppSpec {
                args: args.clone(),
                ..image()
            }
            .validate()
            .is_ok()
        );
        // Refused.
        refused(
            AppSpec {
                cmd: None,
                ..base()
            },
            "cmd",
        );
        refused(
            AppSpec {
                args: args.clone(),
                ..base()
            },
            "args",
        );
        refused(
            AppSpec {
                cmd: Some("x".into()),
                args: args.clone(),
                ..image()
            },
            "args",
        );
        refused(
            AppSpec {
                cmd: Some(" ".into()),
                ..base()
            },
            "cmd",
        );
        refused(
            AppSpec {
                cmd: Some("a\0b".into()),
                ..base()
            },
            "cmd",
        );
        refused(
            AppSpec {
                cmd: None,
                args: vec![String::new()],
                ..base()
            },
            "args[0]",
        );
        refused(
            AppSpec {
                cmd: None,
                args: vec!["a".into(), "\0".into()],
                ..base()
            },
            "args[1]",
        );
        refused(
            AppSpec {
                image: Some(String::new()),
                ..image()
            },
            "image",
        );
        parse_refused("id: app\n", "cmd");
        parse_refused("id: app\nargs: []\n", "cmd");
    }

    #[test]
    fn resource_rules() {
        for ok in [0.001, 1.0, 1024.0] {
            assert!(AppSpec { cpus: ok, ..base() }.validate().is_ok(), "{ok}");
        }
        for bad in [0.0, -1.0, 1024.5, f64::NAN, f64::INFINITY] {
            refused(
                AppSpec {
                    cpus: bad,
                    ..base()
                },
                "cpus",
            );
        }
        assert!(AppSpec { mem: 4.0, ..base() }.validate().is_ok());
        for bad in [3.99, 0.0, -128.0, f64::NAN, f64::INFINITY] {
            refused(AppSpec { mem: bad, ..base() }, "mem");
        }
        assert!(
            AppSpec {
                disk: 0.0,
                ..base()
            }
            .validate()
            .is_ok()
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            refused(
                AppSpec {
                    disk: bad,
                    ..base()
                },
                "disk",
            );
        }
        parse_refused("id: app\ncmd: x\ncpus: .nan\n", "cpus");
        parse_refused("id: app\ncmd: x\nmem: .inf\n", "mem");
    }

    #[test]
    fn env_rules() {
        let env = |k: &str, v: &str| [(k.to_string(), EnvValue::from(v))].into_iter().collect();
        assert!(
            AppSpec {
                env: env("A_1", ""),
                ..base()
            }
            .validate()
            .is_ok()
        );
        refused(
            AppSpec {
                env: env("", "x"),
                ..base()
            },
            "env",
        );
        refused(
            AppSpec {
                env: env("A=B", "x"),
                ..base()
            },
            "env",
        );
        refused(
            AppSpec {
                env: env("A\0", "x"),
                ..base()
            },
            "env",
        );
        refused(
            AppSpec {
                env: env("A", "x\0"),
                ..base()
            },
            "env.A",
        );
    }

    /// The example of docs/app-api.md's "Configs and secrets" section.
    fn docs_objects_example() -> String {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/app-api.md"))
            .expect("docs/app-api.md");
        let section = &doc[doc
            .find("#### Configs and secrets")
            .expect("docs/app-api.md has a Configs and secrets section")..];
        let start = section.find("```yaml\n").expect("it shows a spec") + "```yaml\n".len();
        let end = start + section[start..].find("```").expect("the block ends");
        section[start..end].to_string()
    }

    #[test]
    fn secrets_configs_and_env_references_parse_with_their_defaults() {
        let spec = AppSpec::parse(&docs_objects_example()).expect("the docs' example parses");
        let refs: Vec<(i32, String, Option<Target>)> = spec
            .object_refs()
            .into_iter()
            .map(|r| (r.kind, r.name, r.target))
            .collect();
        let secret = ObjectKind::Secret as i32;
        let config = ObjectKind::Config as i32;
        let file = |p: &str| Some(Target::File(p.into()));
        let env = |v: &str| Some(Target::Env(v.into()));
        assert_eq!(
            refs,
            [
                (secret, "db-pass".into(), file("db-pass")),
                (secret, "tls.key".into(), file("tls/server.key")),
                (config, "nginx-conf".into(), file("conf/nginx.conf")),
                (config, "motd".into(), file("configs/motd")),
                (secret, "db-pass".into(), env("DB_PASS")),
                (config, "log-level".into(), env("LOG_LEVEL")),
            ]
        );
        assert_eq!(spec.env["PLAIN"], EnvValue::from("value"));
        assert_eq!(spec.env["DB_PASS"].to_string(), "{secret: db-pass}");
        assert_eq!(
            spec.secret_names().into_iter().collect::<Vec<_>>(),
            ["db-pass", "tls.key"]
        );
        assert_eq!(spec.object_names().len(), 5);
        // References, never values: what is shown is what was written.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["env"]["DB_PASS"],
            serde_json::json!({"secret": "db-pass"})
        );
        assert_eq!(json["secrets"][0], serde_json::json!({"source": "db-pass"}));
        assert_eq!(AppSpec::from_json(json).unwrap(), spec);
        // Every reference passes the master's rules for a task's references.
        let task = v1::TaskInfo {
            objects: spec.object_refs(),
            command: Some(v1::CommandInfo {
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        object_rules::validate_task(&task).unwrap();
        // Unquoted YAML scalars are still plain values.
        let spec = AppSpec::parse("id: a\ncmd: x\nenv: {N: 1, B: true, S: two}\n").unwrap();
        assert_eq!(spec.env["N"], EnvValue::from("1"));
        assert_eq!(spec.env["B"], EnvValue::from("true"));
        assert!(spec.object_refs().is_empty());
    }

    #[test]
    fn bad_references_are_refused_naming_the_field_and_the_reason() {
        let spec = |rest: &str| format!("id: app\ncmd: x\n{rest}\n");
        let image = |rest: &str| format!("id: app\nimage: busybox\n{rest}\n");
        for (text, field, reason) in [
            (
                spec("secrets: [{source: DB}]"),
                "secrets[0].source",
                "secret name 'DB' is not valid",
            ),
            (
                spec("secrets: [{source: ''}]"),
                "secrets[0].source",
                "a secret name is empty",
            ),
            (
                spec("configs: [{source: a/b}]"),
                "configs[0].source",
                "config name 'a/b' is not valid",
            ),
            (
                spec("secrets: [{source: a, target: ../etc/passwd}]"),
                "secrets[0].target",
                "'..' component",
            ),
            (
                spec("secrets: [{source: a, target: /etc/passwd}]"),
                "secrets[0].target",
                "must be relative to the task's secrets directory",
            ),
            (
                spec("configs: [{source: a, target: /etc/a.conf}]"),
                "configs[0].target",
                "only with image",
            ),
            (
                image("configs: [{source: a, target: /etc/../a.conf}]"),
                "configs[0].target",
                "'..' component",
            ),
            (
                image("configs: [{source: a, target: /}]"),
                "configs[0].target",
                "'/'",
            ),
            (
                spec("configs: [{source: a, target: 'a//b'}]"),
                "configs[0].target",
                "empty",
            ),
            (
                spec("configs: [{source: a, target: secrets/a}]"),
                "configs[0].target",
                "inside the secrets directory",
            ),
            (
                image("configs: [{source: a, target: /run/secrets/a}]"),
                "configs[0].target",
                "inside the secrets directory",
            ),
            (
                spec("secrets: [{source: a}, {source: b, target: a}]"),
                "secrets[1].target",
                "'a' is also the target of secrets[0]",
            ),
            (
                spec("configs: [{source: a}, {source: a}]"),
                "configs[1].target",
                "'configs/a' is also the target of configs[0]",
            ),
            (
                spec("env: {DB_PASS: {secret: Bad}}"),
                "env.DB_PASS",
                "secret name 'Bad'",
            ),
            (
                spec("env: {1X: {config: c}}"),
                "env.1X",
                "environment variable name",
            ),
            (
                spec("env: {A-B: {secret: s}}"),
                "env.A-B",
                "environment variable name",
            ),
            (
                image("env: {DB_PASS: {secret: s}}"),
                "env.DB_PASS",
                "needs cmd",
            ),
            (
                spec("env: {A: {vault: s}}"),
                "env.A",
                "unknown reference `vault`",
            ),
            (
                spec("env: {A: {secret: s, config: c}}"),
                "env.A",
                "a reference names one object",
            ),
            (spec("env: {A: {}}"), "env.A", "an empty mapping"),
            (
                spec("env: {A: [s]}"),
                "env.A",
                "{secret: NAME} or {config: NAME}",
            ),
            (
                spec("secrets: [{source: a, mode: 0400}]"),
                "secrets[0].mode",
                "unknown field",
            ),
            (spec("secrets: [db-pass]"), "secrets[0]", ""),
        ] {
            let err = parse_refused(&text, field);
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
        // A Docker app's config variables, and secret variables with a shell command, are
        // fine; so is one source under two targets.
        AppSpec::parse(&image("env: {LEVEL: {config: c}}")).unwrap();
        AppSpec::parse(&image("cmd: exec app\nenv: {DB_PASS: {secret: s}}")).unwrap();
        AppSpec::parse(&spec("args: [app]\nenv: {DB_PASS: {secret: s}}").replace("cmd: x\n", ""))
            .unwrap();
        AppSpec::parse(&spec("secrets: [{source: s}, {source: s, target: copy}]")).unwrap();
        // At most 64 references in all.
        let many: Vec<String> = (0..59).map(|i| format!("{{source: s{i}}}")).collect();
        let text = spec(&format!(
            "secrets: [{}]\nconfigs: [{{source: c}}]\nenv: {{A: {{secret: a}}, B: {{secret: b}}, \
             C: {{config: c}}, D: {{config: d}}}}",
            many.join(", ")
        ));
        AppSpec::parse(&text).unwrap();
        let text = text.replace("D: {config: d}", "D: {config: d}, E: {config: e}");
        let err = parse_refused(&text, "env.E");
        assert!(err.reason.contains("more than 64"), "{err}");
    }

    fn mapping(host_port: u16, container_port: Option<u16>) -> PortSpec {
        PortSpec::Mapping(PortMapping {
            host_port,
            container_port,
            protocol: None,
            name: None,
            service_port: None,
        })
    }

    #[test]
    fn service_ports_are_parsed_in_the_mapping_form_and_duplicates_refused() {
        let spec = AppSpec::parse(
            "id: app\ncmd: x\nports: [0, {host_port: 0, name: http, service_port: 0}, \
             {service_port: 10005, protocol: udp}]\n",
        )
        .unwrap();
        let asked: Vec<Option<u16>> = spec.ports.iter().map(PortSpec::service_port).collect();
        assert_eq!(asked, [None, Some(0), Some(10005)]);
        let protocols: Vec<&str> = spec.ports.iter().map(PortSpec::protocol).collect();
        assert_eq!(protocols, ["tcp", "tcp", "udp"]);
        // Absent stays absent when written back.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ports"][0], 0);
        assert_eq!(json["ports"][1]["service_port"], 0);
        assert!(AppSpec::from_json(json).is_ok());
        // Two ports of the app may not ask for the same one (any number of 0s may).
        let err = parse_refused(
            "id: app\ncmd: x\nports: [{service_port: 0}, {service_port: 0}, \
             {service_port: 10001}, {service_port: 10001}]\n",
            "ports[3].service_port",
        );
        assert!(err.reason.contains("also ports[2].service_port"), "{err}");
        let err = parse_refused(
            "id: app\ncmd: x\nports: [{service_port: 70000}]\n",
            "ports[0]",
        );
        assert!(err.reason.contains("service_port"), "{err}");
        parse_refused("id: app\ncmd: x\nports: [{service_prot: 1}]\n", "ports[0]");
    }

    #[test]
    fn port_rules() {
        let ok = AppSpec {
            ports: vec![
                PortSpec::Host(0),
                PortSpec::Host(0),
                PortSpec::Host(80),
                mapping(81, None),
            ],
            ..base()
        };
        assert!(ok.validate().is_ok());
        let err = refused(
            AppSpec {
                ports: vec![PortSpec::Host(80), PortSpec::Host(80)],
                ..base()
            },
            "ports[1]",
        );
        assert!(err.reason.contains("ports[0]"), "{err}");
        refused(
            AppSpec {
                ports: vec![PortSpec::Host(80), mapping(80, None)],
                ..base()
            },
            "ports[1].host_port",
        );
        // container_port: only with image and network bridge.
        refused(
            AppSpec {
                ports: vec![mapping(0, Some(80))],
                ..base()
            },
            "ports[0].container_port",
        );
        refused(
            AppSpec {
                ports: vec![mapping(0, Some(80))],
                ..image()
            },
            "ports[0].container_port",
        );
        let host = AppSpec {
            network: Some("host".into()),
            ports: vec![mapping(0, Some(80))],
            ..image()
        };
        refused(host, "ports[0].container_port");
        let bridge = AppSpec {
            network: Some("bridge".into()),
            ..image()
        };
        assert!(
            AppSpec {
                ports: vec![mapping(0, Some(80)), mapping(8080, Some(80))],
                ..bridge.clone()
            }
            .validate()
            .is_ok()
        );
        // With network bridge every port needs one.
        refused(
            AppSpec {
                ports: vec![mapping(0, Some(80)), mapping(0, None)],
                ..bridge.clone()
            },
            "ports[1].container_port",
        );
        refused(
            AppSpec {
                ports: vec![PortSpec::Host(0)],
                ..bridge.clone()
            },
            "ports[0]",
        );
        // Protocol.
        for (protocol, valid) in [
            ("tcp", true),
            ("udp", true),
            ("TCP", false),
            ("sctp", false),
        ] {
            let spec = AppSpec {
                ports: vec![PortSpec::Mapping(PortMapping {
                    host_port: 0,
                    container_port: None,
                    protocol: Some(protocol.into()),
                    name: None,
                    service_port: None,
                })],
                ..base()
            };
            if valid {
                assert!(spec.validate().is_ok(), "{protocol}");
            } else {
                refused(spec, "ports[0].protocol");
            }
        }
    }

    #[test]
    fn network_and_pull_rules() {
        for network in ["host", "bridge", "none"] {
            assert!(
                AppSpec {
                    network: Some(network.into()),
                    ..image()
                }
                .validate()
                .is_ok()
            );
        }
        refused(
            AppSpec {
                network: Some("overlay".into()),
                ..image()
            },
            "network",
        );
        refused(
            AppSpec {
                network: Some("host".into()),
                ..base()
            },
            "network",
        );
        for pull in ["if-not-present", "always", "never"] {
            assert!(
                AppSpec {
                    pull: Some(pull.into()),
                    ..image()
                }
                .validate()
                .is_ok()
            );
        }
        refused(
            AppSpec {
                pull: Some("sometimes".into()),
                ..image()
            },
            "pull",
        );
        refused(
            AppSpec {
                pull: Some("always".into()),
                ..base()
            },
            "pull",
        );
    }

    #[test]
    fn docker_volume_rules() {
        let vol = |name: Option<&str>, path: &str, mode: Option<&str>| VolumeSpec {
            persistent: None,
            docker_volume: name.map(str::to_string),
            container_path: path.into(),
            mode: mode.map(str::to_string),
        };
        let with = |spec: AppSpec, volumes: Vec<VolumeSpec>| AppSpec { volumes, ..spec };
        let good = with(
            image(),
            vec![
                vol(Some("pgdata"), "/var/lib/postgresql/data", None),
                vol(Some("shared.assets_1"), "/srv/", Some("ro")),
            ],
        );
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(
            good.docker_volume_names().into_iter().collect::<Vec<_>>(),
            ["pgdata", "shared.assets_1"]
        );
        let cases = [
            (
                with(base(), vec![vol(Some("pgdata"), "/data", None)]),
                "volumes[0].docker_volume",
                "only with image",
            ),
            (
                with(image(), vec![vol(None, "/data", None)]),
                "volumes[0].docker_volume",
                "is required",
            ),
            (
                with(image(), vec![vol(Some("my data"), "/data", None)]),
                "volumes[0].docker_volume",
                "'my data' is not a Docker volume name",
            ),
            (
                with(image(), vec![vol(Some(&"v".repeat(256)), "/data", None)]),
                "volumes[0].docker_volume",
                "at most 255",
            ),
            (
                with(image(), vec![vol(Some("v"), "data", None)]),
                "volumes[0].container_path",
                "'data' is not an absolute path",
            ),
            (
                with(image(), vec![vol(Some("v"), "/data/../etc", None)]),
                "volumes[0].container_path",
                "contains '..'",
            ),
            (
                with(image(), vec![vol(Some("v"), "/", None)]),
                "volumes[0].container_path",
                "the container's root",
            ),
            (
                with(image(), vec![vol(Some("v"), "/mnt/sandbox", None)]),
                "volumes[0].container_path",
                "where the sandbox is mounted",
            ),
            (
                with(
                    image(),
                    vec![vol(Some("v"), "/d", None), vol(Some("w"), "/d/", None)],
                ),
                "volumes[1].container_path",
                "'/d/' is also the container_path of volumes[0]",
            ),
            (
                with(image(), vec![vol(Some("v"), "/d", Some("rwx"))]),
                "volumes[0].mode",
                "expected one of rw, ro",
            ),
        ];
        for (spec, field, want) in cases {
            let e = refused(spec, field);
            assert!(e.reason.contains(want), "{field}: {e}");
        }
        // The example of docs/app-api.md's "Docker volumes" section parses.
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/app-api.md"))
            .expect("docs/app-api.md");
        let section = &doc[doc
            .find("#### Docker volumes")
            .expect("docs/app-api.md has a Docker volumes section")..];
        let start = section.find("```yaml\n").expect("it shows a spec") + "```yaml\n".len();
        let end = start + section[start..].find("```").expect("the block ends");
        let example = AppSpec::parse(&section[start..end]).expect("the docs' example parses");
        assert_eq!(
            example
                .docker_volume_names()
                .into_iter()
                .collect::<Vec<_>>(),
            ["pgdata", "seed-data"]
        );
        assert_eq!(example.volumes[1].mode.as_deref(), Some("ro"));
        // Unknown keys of a volume are named too.
        let e = parse_refused(
            "id: db\nimage: postgres\nvolumes:\n  - {docker_volume: pgdata, container_path: /d, size: 5}\n",
            "volumes[0].size",
        );
        assert!(e.reason.starts_with("unknown field"), "{e}");
    }

    #[test]
    fn persistent_volumes_parse_and_bad_ones_are_refused_with_the_field() {
        // The example of docs/app-api.md's "Persistent volumes" section parses.
        let doc = include_str!("../../docs/app-api.md");
        let section = &doc[doc
            .find("#### Persistent volumes")
            .expect("docs/app-api.md has a Persistent volumes section")..];
        let start = section.find("```yaml\n").unwrap() + 8;
        let end = start + section[start..].find("```").unwrap();
        let example = AppSpec::parse(&section[start..end]).unwrap();
        assert!(example.is_resident());
        assert!(!example.relocates());
        assert_eq!(example.persistent_volumes().next().unwrap().1, 64.0);
        let base = "id: db\ncmd: x\nvolumes:\n  - ";
        for (volume, field, why) in [
            (
                "{container_path: data, persistent: {size: 0}}",
                "volumes[0].persistent.size",
                "at least 1",
            ),
            (
                "{container_path: ../x, persistent: {size: 5}}",
                "volumes[0].container_path",
                "'..'",
            ),
            (
                "{container_path: /abs, persistent: {size: 5}}",
                "volumes[0].container_path",
                "absolute",
            ),
            (
                "{container_path: d, docker_volume: v, persistent: {size: 5}}",
                "volumes[0].persistent",
                "not both",
            ),
            (
                "{container_path: d, persistent: {size: 5}, mode: rx}",
                "volumes[0].mode",
                "rx",
            ),
            (
                "{container_path: d, persistent: {size: 5, type: x}}",
                "volumes[0].persistent.type",
                "unknown field",
            ),
        ] {
            let e = parse_refused(&format!("{base}{volume}\n"), field);
            assert!(e.reason.contains(why), "{volume}: {e}");
        }
        let e = parse_refused(
            "id: db\ncmd: x\nvolumes:\n  - {container_path: d, persistent: {size: 5}}\n  - {container_path: d/, persistent: {size: 5}}\n",
            "volumes[1].container_path",
        );
        assert!(e.reason.contains("also the container_path"), "{e}");
        let e = parse_refused(
            "id: db\ncmd: x\nunreachable_strategy: later\n",
            "unreachable_strategy",
        );
        assert!(e.reason.contains("later"), "{e}");
    }

    #[test]
    fn constraint_text_forms() {
        assert_eq!(
            constraint("hostname UNIQUE"),
            c("hostname", Operator::Unique)
        );
        assert_eq!(
            constraint("  hostname   unique  "),
            c("hostname", Operator::Unique)
        );
        assert_eq!(
            constraint("rack CLUSTER a"),
            c("rack", Operator::Cluster("a".into()))
        );
        assert_eq!(
            constraint("rack cluster a b"),
            c("rack", Operator::Cluster("a b".into()))
        );
        assert_eq!(constraint("rack MAX_PER 2"), c("rack", Operator::MaxPer(2)));
        assert_eq!(constraint("rack max_per 2"), c("rack", Operator::MaxPer(2)));
        assert_eq!(constraint("rack LIKE r[12]"), c("rack", like("r[12]")));
        assert_eq!(constraint("rack Like a  b|c"), c("rack", like("a  b|c")));
        assert_eq!(constraint("rack\tUNLIKE r3"), c("rack", unlike("r3")));
    }

    #[test]
    fn constraint_list_forms() {
        let list = |v: serde_json::Value| serde_json::from_value::<Constraint>(v).unwrap();
        assert_eq!(
            list(serde_json::json!(["hostname", "UNIQUE"])),
            c("hostname", Operator::Unique)
        );
        assert_eq!(
            list(serde_json::json!(["hostname", "UNIQUE", ""])),
            c("hostname", Operator::Unique)
        );
        assert_eq!(
            list(serde_json::json!(["rack", "CLUSTER", "a"])),
            c("rack", Operator::Cluster("a".into()))
        );
        assert_eq!(
            list(serde_json::json!(["rack", "max_per", "3"])),
            c("rack", Operator::MaxPer(3))
        );
        assert_eq!(
            list(serde_json::json!(["my rack", "LIKE", " a b"])),
            c("my rack", like(" a b"))
        );
        assert_eq!(
            list(serde_json::json!(["rack", "UNLIKE", "r3"])),
            c("rack", unlike("r3"))
        );
        let spec = AppSpec::parse(
            "id: app\ncmd: x\nconstraints:\n  - [rack, CLUSTER, a]\n  - [hostname, UNIQUE]\n",
        )
        .unwrap();
        assert_eq!(
            spec.constraints,
            vec![
                c("rack", Operator::Cluster("a".into())),
                c("hostname", Operator::Unique)
            ]
        );
    }

    #[test]
    fn constraint_display_is_canonical_text() {
        assert_eq!(
            c("hostname", Operator::Unique).to_string(),
            "hostname UNIQUE"
        );
        assert_eq!(
            c("rack", Operator::Cluster("a".into())).to_string(),
            "rack CLUSTER a"
        );
        assert_eq!(c("rack", Operator::MaxPer(2)).to_string(), "rack MAX_PER 2");
        assert_eq!(c("rack", like("r[12]")).to_string(), "rack LIKE r[12]");
        assert_eq!(c("rack", unlike("r 3")).to_string(), "rack UNLIKE r 3");
        assert_eq!(constraint("rack max_per +2").to_string(), "rack MAX_PER 2");
    }

    #[test]
    fn constraint_parse_errors_name_the_constraint() {
        constraint_refused("hostname", "no operator");
        constraint_refused("\"\"", "empty constraint");
        constraint_refused("hostname FOO", "unknown operator");
        constraint_refused("hostname GROUP_BY", "unknown operator");
        constraint_refused("hostname UNIQUE a", "UNIQUE takes no value");
        constraint_refused("rack CLUSTER", "CLUSTER needs a value");
        constraint_refused("rack LIKE", "LIKE needs a value");
        constraint_refused("rack UNLIKE", "UNLIKE needs a value");
        constraint_refused("rack MAX_PER", "MAX_PER needs a value");
        constraint_refused("rack MAX_PER 0", "positive integer");
        constraint_refused("rack MAX_PER -1", "positive integer");
        constraint_refused("rack MAX_PER two", "positive integer");
        constraint_refused("rack MAX_PER 1.5", "positive integer");
        constraint_refused("rack LIKE r[12", "invalid regex");
        constraint_refused("rack UNLIKE (a", "invalid regex");
        constraint_refused("rack LIKE a)|(b", "invalid regex");
        constraint_refused("[hostname]", "expected [field, operator]");
        constraint_refused("[rack, CLUSTER, a, b]", "expected [field, operator]");
        constraint_refused("[\"\", UNIQUE]", "field must not be empty");
        constraint_refused("[rack, CLUSTER, \"\"]", "CLUSTER needs a value");
        let err = AppSpec::from_json(
            serde_json::json!({"id": "app", "cmd": "x", "constraints": ["rack LIKE ("]}),
        )
        .unwrap_err();
        assert_eq!(err.field, "constraints[0]");
    }

    #[test]
    fn constraint_rules_in_validate() {
        // Constraints built in code, not parsed, are validated too.
        for bad in [
            c("", Operator::Unique),
            c("rack", Operator::Cluster(String::new())),
            c("rack", Operator::MaxPer(0)),
        ] {
            let spec = AppSpec {
                constraints: vec![c("hostname", Operator::Unique), bad],
                ..base()
            };
            refused(spec, "constraints[1]");
        }
        // A LIKE/UNLIKE regex cannot even be built in code unless it compiles.
        assert_eq!(Pattern::new(""), Err(PatternError::Empty));
        for bad in ["(", "[", "a)|(b"] {
            assert!(
                matches!(Pattern::new(bad), Err(PatternError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    /// A pattern whose compiled form is huge (it once stalled placement for seconds,
    /// being compiled on every attempt) is refused when the app is deployed, at the
    /// constraint, with what to do instead.
    #[test]
    fn an_over_large_constraint_regex_is_refused_at_deploy() {
        for text in [
            "id: web\ncmd: x\nconstraints:\n  - hostname UNIQUE\n  - rack LIKE \\w{200}\n",
            "id: web\ncmd: x\nconstraints:\n  - hostname UNIQUE\n  - [rack, UNLIKE, \"\\\\w{200}\"]\n",
        ] {
            let err = parse_refused(text, "constraints[1]");
            assert!(
                err.reason.starts_with(
                    "regex \"\\\\w{200}\" is too large: compiled, it would take more than \
                     1024 KiB; use a simpler pattern (e.g. \\w+ rather than \\w{200})"
                ),
                "{text}: {err}"
            );
        }
        let err = AppSpec::from_json(serde_json::json!({
            "id": "web", "cmd": "x", "constraints": ["rack LIKE \\w{200}"]
        }))
        .unwrap_err();
        assert_eq!(err.field, "constraints[0]");
        assert!(err.reason.contains("is too large"), "{err}");
        // A spec stored before the limit existed still reads back (the state store
        // must load), with its regex compiled once; deploying it again is refused.
        let stored: AppSpec = serde_json::from_value(serde_json::json!({
            "id": "web", "cmd": "x", "constraints": ["rack LIKE \\w{200}"]
        }))
        .unwrap();
        let Operator::Like(p) = &stored.constraints[0].operator else {
            panic!("{stored:?}")
        };
        assert!(p.matches_whole(&"x".repeat(200)) && !p.matches_whole("x"));
        let err = stored.validate().unwrap_err();
        assert_eq!(err.field, "constraints[0]");
        assert!(
            err.reason.starts_with("regex \"\\\\w{200}\" is too large"),
            "{err}"
        );
        assert!(matches!(
            Pattern::new("\\w{200}").unwrap().problem(),
            Some(PatternError::TooLarge { .. })
        ));
        // Ordinary patterns, Unicode classes included, are well within the limit.
        for ok in [
            "r[12]",
            "eu-(west|north) [0-9]",
            "\\w+",
            "\\d{3}-\\w+",
            "\\w{10}",
        ] {
            assert_eq!(Pattern::new(ok).unwrap().problem(), None, "{ok}");
        }
    }

    #[test]
    fn placement_defaults_to_spread_across_agents_and_round_trips() {
        let spec = base();
        assert_eq!(
            (spec.placement, spec.spread),
            (PlacementStrategy::Spread, None)
        );
        let value = serde_json::to_value(base()).unwrap();
        assert_eq!(value["placement"], "spread");
        assert!(value.get("spread").is_none(), "{value}");
        let spec = AppSpec::parse("id: app\ncmd: x\nplacement: pack\n").unwrap();
        assert_eq!(spec.placement, PlacementStrategy::Pack);
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["placement"], "pack");
        assert_eq!(AppSpec::from_json(value).unwrap(), spec);
        let spec =
            AppSpec::from_json(serde_json::json!({"id": "app", "cmd": "x", "spread": "hostname"}))
                .unwrap();
        assert_eq!(spec.spread.as_deref(), Some("hostname"));
        let yaml = serde_yaml::to_string(&spec).unwrap();
        assert!(yaml.contains("spread: hostname"), "{yaml}");
        assert_eq!(AppSpec::parse(&yaml).unwrap(), spec);
    }

    #[test]
    fn bad_placement_and_spread_are_refused_with_the_field_named() {
        for bad in ["binpack", "Spread", "PACK", "\"\""] {
            let err = parse_refused(&format!("id: app\ncmd: x\nplacement: {bad}\n"), "placement");
            assert!(err.reason.contains("expected `spread` or `pack`"), "{err}");
        }
        let err =
            AppSpec::from_json(serde_json::json!({"id": "app", "cmd": "x", "placement": "random"}))
                .unwrap_err();
        assert_eq!(err.field, "placement");
        assert!(err.reason.contains("unknown variant `random`"), "{err}");
        parse_refused("id: app\ncmd: x\nplacement: 3\n", "placement");
        parse_refused("id: app\ncmd: x\nspread: [zone]\n", "spread");
        let err = parse_refused("id: app\ncmd: x\nplacement: pack\nspread: zone\n", "spread");
        assert!(err.reason.contains("only with placement spread"), "{err}");
        let err = parse_refused("id: app\ncmd: x\nspread: \"\"\n", "spread");
        assert!(err.reason.contains("must not be empty"), "{err}");
        for bad in ["my zone", "zone\n", "\tzone", "a\u{7}"] {
            let spec = AppSpec {
                spread: Some(bad.into()),
                ..base()
            };
            let err = refused(spec, "spread");
            assert!(err.reason.contains("is not a field name"), "{err}");
        }
        // Built in code, a pack spec with a spread field is refused too.
        refused(
            AppSpec {
                placement: PlacementStrategy::Pack,
                spread: Some("zone".into()),
                ..base()
            },
            "spread",
        );
    }

    #[test]
    fn health_check_rules() {
        let with = |checks: Vec<HealthCheckSpec>, ports: usize| AppSpec {
            ports: vec![PortSpec::Host(0); ports],
            health_checks: checks,
            ..base()
        };
        assert!(with(vec![hc("http")], 1).validate().is_ok());
        refused(with(vec![hc("http"), hc("tcp")], 1), "health_checks[1]");
        let command = HealthCheckSpec {
            command: Some("true".into()),
            ..hc("command")
        };
        assert!(with(vec![command.clone()], 0).validate().is_ok());
        refused(with(vec![hc("grpc")], 1), "health_checks[0].protocol");
        refused(with(vec![hc("HTTP")], 1), "health_checks[0].protocol");
        let err = refused(
            with(
                vec![
                    hc("tcp"),
                    HealthCheckSpec {
                        port_index: 1,
                        ..hc("http")
                    },
                ],
                1,
            ),
            "health_checks[1].port_index",
        );
        assert_eq!(err.reason, "port_index 1 but the app has 1 port(s)");
        refused(with(vec![hc("tcp")], 0), "health_checks[0].port_index");
        refused(with(vec![hc("command")], 0), "health_checks[0].command");
        refused(
            with(
                vec![HealthCheckSpec {
                    command: Some(" ".into()),
                    ..hc("command")
                }],
                0,
            ),
            "health_checks[0].command",
        );
        refused(
            with(
                vec![HealthCheckSpec {
                    command: Some("true".into()),
                    ..hc("http")
                }],
                1,
            ),
            "health_checks[0].command",
        );
        assert!(
            with(
                vec![HealthCheckSpec {
                    path: Some("/".into()),
                    ..hc("http")
                }],
                1
            )
            .validate()
            .is_ok()
        );
        refused(
            with(
                vec![HealthCheckSpec {
                    path: Some("health".into()),
                    ..hc("http")
                }],
                1,
            ),
            "health_checks[0].path",
        );
        refused(
            with(
                vec![HealthCheckSpec {
                    path: Some("/".into()),
                    ..hc("tcp")
                }],
                1,
            ),
            "health_checks[0].path",
        );
        refused(
            with(
                vec![HealthCheckSpec {
                    path: Some("/".into()),
                    ..command.clone()
                }],
                1,
            ),
            "health_checks[0].path",
        );
        // Durations.
        let zeros = HealthCheckSpec {
            delay_seconds: 0.0,
            grace_period_seconds: 0.0,
            ..hc("tcp")
        };
        assert!(with(vec![zeros], 1).validate().is_ok());
        for (field, set) in [
            (
                "delay_seconds",
                (|h: &mut HealthCheckSpec, v| h.delay_seconds = v) as fn(&mut HealthCheckSpec, f64),
            ),
            ("interval_seconds", |h, v| h.interval_seconds = v),
            ("timeout_seconds", |h, v| h.timeout_seconds = v),
            ("grace_period_seconds", |h, v| h.grace_period_seconds = v),
        ] {
            let positive = matches!(field, "interval_seconds" | "timeout_seconds");
            for v in [-1.0, f64::NAN, f64::INFINITY, 0.0] {
                let mut check = hc("tcp");
                set(&mut check, v);
                let spec = with(vec![check], 1);
                if v == 0.0 && !positive {
                    assert!(spec.validate().is_ok(), "{field} {v}");
                } else {
                    refused(spec, &format!("health_checks[0].{field}"));
                }
            }
        }
    }

    #[test]
    fn upgrade_strategy_rules() {
        let with = |minimum_health_capacity, maximum_over_capacity| AppSpec {
            upgrade_strategy: UpgradeStrategy {
                minimum_health_capacity,
                maximum_over_capacity,
            },
            ..base()
        };
        for (min, max) in [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.99, 0.0), (1.0, 0.01)] {
            assert!(with(min, max).validate().is_ok(), "{min} {max}");
        }
        refused(with(-0.1, 1.0), "upgrade_strategy.minimum_health_capacity");
        refused(with(1.1, 1.0), "upgrade_strategy.minimum_health_capacity");
        refused(
            with(f64::NAN, 1.0),
            "upgrade_strategy.minimum_health_capacity",
        );
        refused(with(1.0, 1.5), "upgrade_strategy.maximum_over_capacity");
        refused(with(0.5, -1.0), "upgrade_strategy.maximum_over_capacity");
        let err = refused(with(1.0, 0.0), "upgrade_strategy");
        assert!(err.reason.contains("could never make progress"), "{err}");
    }

    #[test]
    fn backoff_rules() {
        let with = |seconds, factor, max_seconds| AppSpec {
            backoff: Backoff {
                seconds,
                factor,
                max_seconds,
            },
            ..base()
        };
        assert!(with(0.0, 1.0, 0.0).validate().is_ok());
        assert!(with(5.0, 3.0, 5.0).validate().is_ok());
        refused(with(-1.0, 1.15, 300.0), "backoff.seconds");
        refused(with(f64::NAN, 1.15, 300.0), "backoff.seconds");
        refused(with(1.0, 0.9, 300.0), "backoff.factor");
        refused(with(1.0, f64::INFINITY, 300.0), "backoff.factor");
        refused(with(10.0, 1.15, 5.0), "backoff.max_seconds");
        refused(with(1.0, 1.15, f64::INFINITY), "backoff.max_seconds");
    }

    #[test]
    fn grace_unreachable_user_and_label_rules() {
        assert!(
            AppSpec {
                kill_grace_period_seconds: 0.0,
                unreachable_replace_seconds: 0.0,
                ..base()
            }
            .validate()
            .is_ok()
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            refused(
                AppSpec {
                    kill_grace_period_seconds: bad,
                    ..base()
                },
                "kill_grace_period_seconds",
            );
            refused(
                AppSpec {
                    unreachable_replace_seconds: bad,
                    ..base()
                },
                "unreachable_replace_seconds",
            );
        }
        refused(
            AppSpec {
                user: Some(String::new()),
                ..base()
            },
            "user",
        );
        let labels = [(String::new(), "x".to_string())].into_iter().collect();
        refused(AppSpec { labels, ..base() }, "labels");
    }

    #[test]
    fn patterns_match_whole_values() {
        let p = Pattern::new("a|b").unwrap();
        assert!(p.matches_whole("a") && p.matches_whole("b"));
        assert!(!p.matches_whole("ab") && !p.matches_whole("xa") && !p.matches_whole(""));
        assert!(Pattern::new("a)|(b").is_err());
        assert_eq!(p.to_string(), "a|b");
        assert_eq!(p.as_str(), "a|b");
    }

    #[test]
    fn accepted_resource_roles_rules() {
        let base = serde_json::json!({"id": "a", "cmd": "x"});
        let with = |roles: serde_json::Value| {
            let mut v = base.clone();
            v["accepted_resource_roles"] = roles;
            AppSpec::from_json(v)
        };
        assert!(with(serde_json::json!(["*", "web"])).is_ok());
        assert_eq!(
            with(serde_json::json!([])).unwrap_err().field,
            "accepted_resource_roles"
        );
        assert_eq!(
            with(serde_json::json!(["*", "a b"])).unwrap_err().field,
            "accepted_resource_roles[1]"
        );
    }
}
