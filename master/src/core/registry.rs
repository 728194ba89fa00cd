//! The registry records: what the core persists through the `Store` trait and loads
//! back after a master restart (admitted agents, frameworks, maintenance, weights,
//! removed frameworks, tasks told LOST), and the bounds on what it keeps.
//!
//! ```text
//!   Master ──Effect::Persist(RegistryOp)──▶ driver ──▶ Store::append
//!   Store::load ──▶ Registry (the fold of every RegistryOp, `Registry::apply`) ──▶ Master::new
//! ```
//!
//! It depends on nothing else in the core: `api` (the `Persist` effect) and `state`
//! (the in-memory records) build on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An agent under maintenance, as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Maintenance {
    /// Not offered; tasks keep running.
    Deactivated,
    /// Not offered; its tasks are killed (also those it reports when it re-registers).
    Draining {
        /// The longest grace period between SIGTERM and SIGKILL, seconds.
        max_grace_period_seconds: Option<f64>,
    },
}

/// A change to the registry: what must survive a master restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegistryOp {
    /// An agent was admitted (first registration) or re-admitted.
    AdmitAgent {
        id: String,
        hostname: String,
        /// The principal the agent registered as (its certificate's); its id is bound
        /// to it. Empty: registered without authentication.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        principal: String,
    },
    /// An agent was marked unreachable at `unix_time` seconds.
    MarkUnreachable { id: String, unix_time: f64 },
    /// An agent was removed for good.
    RemoveAgent { id: String },
    /// A framework subscribed; `info` is its latest FrameworkInfo, prost-encoded.
    AddFramework { id: String, info: Vec<u8> },
    /// A framework was torn down or its failover timeout passed.
    RemoveFramework { id: String },
    /// An operator marked an agent gone.
    MarkAgentGone { id: String },
    /// An operator set a role's weight.
    SetWeight { role: String, weight: f64 },
    /// An operator put an agent under maintenance (`Some`) or ended it (`None`).
    SetMaintenance {
        id: String,
        maintenance: Option<Maintenance>,
    },
    /// A task its framework (not partition aware) was told is TASK_LOST came back
    /// with its agent: LOST stays its end for that framework (`LostTasks`).
    MarkTaskLost {
        framework_id: String,
        task_id: String,
        agent_id: String,
    },
    /// The framework launched a new task with the id of a task it was told is LOST.
    ForgetLostTask {
        framework_id: String,
        task_id: String,
    },
    /// A config or secret was created (`version` 1) or given a new version (issue 16).
    /// A secret's data is sealed (`crate::secrets`); the registry never holds a secret
    /// value in the clear.
    PutObject {
        kind: StoredKind,
        name: String,
        /// The principal that created it (kept from version 1 on).
        owner: String,
        version: ObjectVersion,
    },
    /// A config or secret was removed, with all its versions.
    RemoveObject { kind: StoredKind, name: String },
    /// An agent's dynamic reservations and persistent volumes changed (issue 17):
    /// the whole ledger, a prost-encoded `CheckpointResources`.
    CheckpointResources {
        id: String,
        #[serde(with = "base64_bytes")]
        resources: Vec<u8>,
    },
}

/// The kind of a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredKind {
    Secret,
    Config,
}

impl StoredKind {
    /// The wire kind.
    pub fn to_proto(self) -> strata_proto::v1::ObjectKind {
        match self {
            StoredKind::Secret => strata_proto::v1::ObjectKind::Secret,
            StoredKind::Config => strata_proto::v1::ObjectKind::Config,
        }
    }

    /// The stored kind of a wire kind (`None`: unspecified).
    pub fn from_proto(kind: strata_proto::v1::ObjectKind) -> Option<StoredKind> {
        match kind {
            strata_proto::v1::ObjectKind::Secret => Some(StoredKind::Secret),
            strata_proto::v1::ObjectKind::Config => Some(StoredKind::Config),
            strata_proto::v1::ObjectKind::Unspecified => None,
        }
    }

    /// The stored kind of a wire value (`None`: unspecified or unknown).
    pub fn from_wire(kind: i32) -> Option<StoredKind> {
        strata_proto::v1::ObjectKind::try_from(kind)
            .ok()
            .and_then(StoredKind::from_proto)
    }

    /// `secret` or `config`.
    pub fn name(self) -> &'static str {
        match self {
            StoredKind::Secret => "secret",
            StoredKind::Config => "config",
        }
    }
}

/// The registry's key of an object: `secret/NAME` or `config/NAME`.
pub fn object_key(kind: StoredKind, name: &str) -> String {
    format!("{}/{name}", kind.name())
}

/// One version of a config or secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub version: u64,
    /// Bytes of the value (a secret's data is longer: sealed).
    pub size: u64,
    pub created_unix: f64,
    /// The value (a config's) or the sealed value (a secret's), base64 in the file.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// A config or secret: its owner and its kept versions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub kind: StoredKind,
    pub name: String,
    pub owner: String,
    pub versions: Vec<ObjectVersion>,
}

impl ObjectRecord {
    /// The latest version.
    pub fn latest(&self) -> Option<&ObjectVersion> {
        self.versions.last()
    }

    /// Version `version`, if kept.
    pub fn version(&self, version: u64) -> Option<&ObjectVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// Applies a `PutObject` to a map of objects (the registry's and the core's): the
/// version is added and only the last [`strata_proto::objects::VERSIONS_KEPT`] kept.
pub fn put_object(
    objects: &mut BTreeMap<String, ObjectRecord>,
    kind: StoredKind,
    name: &str,
    owner: &str,
    version: &ObjectVersion,
) {
    let record = objects
        .entry(object_key(kind, name))
        .or_insert_with(|| ObjectRecord {
            kind,
            name: name.to_string(),
            owner: owner.to_string(),
            versions: Vec::new(),
        });
    record.versions.retain(|v| v.version != version.version);
    record.versions.push(version.clone());
    let over = record
        .versions
        .len()
        .saturating_sub(strata_proto::objects::VERSIONS_KEPT);
    record.versions.drain(..over);
}

/// Applies a `RemoveObject` to a map of objects and of tombstones (the registry's and
/// the core's): the object goes, its last version is remembered.
pub fn remove_object(
    objects: &mut BTreeMap<String, ObjectRecord>,
    tombstones: &mut BTreeMap<String, u64>,
    kind: StoredKind,
    name: &str,
) {
    let key = object_key(kind, name);
    if let Some(last) = objects
        .remove(&key)
        .and_then(|r| r.latest().map(|v| v.version))
    {
        tombstones.insert(key, last);
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A map of byte strings as base64 text.
mod base64_map {
    use std::collections::BTreeMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                STANDARD
                    .decode(v)
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// How many tasks told TASK_LOST that came back a framework remembers, in memory
/// (`LostTasks`) and in the registry.
pub const LOST_TASKS: usize = 10_000;

/// A task its framework was told is LOST, in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostTaskRecord {
    pub framework_id: String,
    pub task_id: String,
    pub agent_id: String,
}

/// How many removed framework ids are remembered, in memory and in the registry (to
/// refuse their re-subscription, kill their tasks agents still report, and acknowledge
/// their stray updates, across master restarts too).
pub const REMOVED_FRAMEWORKS: usize = 10_000;

/// The registry as loaded at start (the fold of every `RegistryOp` persisted so far).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Admitted agents: id → hostname.
    pub agents: BTreeMap<String, String>,
    /// Unreachable agents: id → unix time they were marked.
    pub unreachable: BTreeMap<String, f64>,
    /// Frameworks: id → prost-encoded FrameworkInfo.
    pub frameworks: BTreeMap<String, Vec<u8>>,
    /// Role weights operators set (they override the `--weights` flag).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Agents under maintenance: id → what.
    #[serde(default)]
    pub maintenance: BTreeMap<String, Maintenance>,
    /// Frameworks removed (torn down, or their failover timeout passed), oldest first,
    /// the last [`REMOVED_FRAMEWORKS`] of them.
    #[serde(default)]
    pub removed_frameworks: Vec<String>,
    /// Agents an operator marked gone: never admitted again.
    #[serde(default)]
    pub gone: BTreeSet<String>,
    /// Tasks told LOST that came back with their agent, oldest first, the last
    /// [`LOST_TASKS`] of them.
    #[serde(default)]
    pub lost_tasks: Vec<LostTaskRecord>,
    /// The principal each agent registered as (agents registered without
    /// authentication have none).
    #[serde(default)]
    pub agent_principals: BTreeMap<String, String>,
    /// Configs and secrets (issue 16), by [`object_key`].
    #[serde(default)]
    pub objects: BTreeMap<String, ObjectRecord>,
    /// The last version of each removed object, by [`object_key`]: created again, it
    /// goes on from there, so that a version number never names two values (a
    /// framework that pinned version 1 sees version 2 as a change).
    #[serde(default)]
    pub object_tombstones: BTreeMap<String, u64>,
    /// Each agent's dynamic reservations and persistent volumes (issue 17): a
    /// prost-encoded `CheckpointResources`, by agent id. Absent: none.
    #[serde(default, with = "base64_map")]
    pub agent_resources: BTreeMap<String, Vec<u8>>,
}

impl Registry {
    /// Applies one operation.
    pub fn apply(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::AdmitAgent {
                id,
                hostname,
                principal,
            } => {
                self.unreachable.remove(id);
                self.agents.insert(id.clone(), hostname.clone());
                if !principal.is_empty() {
                    self.agent_principals.insert(id.clone(), principal.clone());
                }
            }
            RegistryOp::MarkUnreachable { id, unix_time } => {
                self.unreachable.insert(id.clone(), *unix_time);
            }
            RegistryOp::RemoveAgent { id } => {
                self.agents.remove(id);
                self.unreachable.remove(id);
                self.maintenance.remove(id);
                self.agent_principals.remove(id);
                self.agent_resources.remove(id);
            }
            RegistryOp::AddFramework { id, info } => {
                self.frameworks.insert(id.clone(), info.clone());
            }
            RegistryOp::RemoveFramework { id } => {
                self.frameworks.remove(id);
                self.lost_tasks.retain(|t| &t.framework_id != id);
                if !self.removed_frameworks.contains(id) {
                    self.removed_frameworks.push(id.clone());
                    let over = self
                        .removed_frameworks
                        .len()
                        .saturating_sub(REMOVED_FRAMEWORKS);
                    self.removed_frameworks.drain(..over);
                }
            }
            RegistryOp::MarkAgentGone { id } => {
                self.agents.remove(id);
                self.unreachable.remove(id);
                self.maintenance.remove(id);
                self.agent_resources.remove(id);
                self.gone.insert(id.clone());
            }
            RegistryOp::SetWeight { role, weight } => {
                self.weights.insert(role.clone(), *weight);
            }
            RegistryOp::SetMaintenance { id, maintenance } => match maintenance {
                Some(m) => {
                    self.maintenance.insert(id.clone(), *m);
                }
                None => {
                    self.maintenance.remove(id);
                }
            },
            RegistryOp::MarkTaskLost {
                framework_id,
                task_id,
                agent_id,
            } => {
                self.lost_tasks
                    .retain(|t| !(&t.framework_id == framework_id && &t.task_id == task_id));
                self.lost_tasks.push(LostTaskRecord {
                    framework_id: framework_id.clone(),
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                });
                let over = self.lost_tasks.len().saturating_sub(LOST_TASKS);
                self.lost_tasks.drain(..over);
            }
            RegistryOp::ForgetLostTask {
                framework_id,
                task_id,
            } => {
                self.lost_tasks
                    .retain(|t| !(&t.framework_id == framework_id && &t.task_id == task_id));
            }
            RegistryOp::PutObject {
                kind,
                name,
                owner,
                version,
            } => {
                self.object_tombstones.remove(&object_key(*kind, name));
                put_object(&mut self.objects, *kind, name, owner, version);
            }
            RegistryOp::RemoveObject { kind, name } => {
                remove_object(&mut self.objects, &mut self.object_tombstones, *kind, name);
            }
            RegistryOp::CheckpointResources { id, resources } => {
                if resources.is_empty() {
                    self.agent_resources.remove(id);
                } else {
                    self.agent_resources.insert(id.clone(), resources.clone());
                }
            }
        }
    }
}
