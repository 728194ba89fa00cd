//! Configs and secrets in the core (issue 16): the objects operators create, who may
//! manage, see and use them, the versions a task launches with, and the values an
//! agent fetches for its tasks.
//!
//! ```text
//!   Operator.CreateObject / RemoveObject / ListObjects / GetConfig ─┐
//!   AgentLink.FetchObjects (an agent, for a task it was sent) ──────┼─▶ ObjectCall ─▶ Master::object_call
//!   ACCEPT: each task's ObjectRefs ─▶ Master::resolve_objects (authorize, pin versions)
//! ```
//!
//! The core holds secret values sealed only (the gRPC layer seals and opens them with
//! `crate::secrets`), so neither the core, its registry nor its snapshot can show one.
//!
//! Who may do what (the owner is the principal that created the object):
//! - create a new name: the ACL `manage_secrets` / `manage_configs` on the name;
//! - update, remove: the owner, or that ACL;
//! - see a secret in listings: the owner, or `view_secrets`; configs: anyone;
//! - use a secret in a task: the framework's principal is the owner, or `use_secrets`
//!   allows it; configs: anyone.
//!
//! A principal that may not see or manage an object is refused the same way whether it
//! exists or not: nothing tells it which names exist.

use std::collections::BTreeMap;
use std::time::Instant;

use strata_proto::objects as rules;
use strata_proto::v1::{self, TaskStatusReason};
use strata_security::{Action, Principal};

use super::api::Effect;
use super::master::Master;
use super::registry::{
    ObjectRecord, ObjectVersion, RegistryOp, StoredKind, object_key, put_object, remove_object,
};
use super::validate::TaskProblem;

/// An object operation, with the caller's principal as the core knows principals (its
/// name; empty: anonymous).
#[derive(Debug)]
pub enum ObjectCall {
    /// Creates an object (`update` false) or its next version (`update` true). A
    /// secret's `data` is sealed; `size` is the value's length.
    Create {
        principal: String,
        kind: StoredKind,
        name: String,
        data: Vec<u8>,
        size: u64,
        update: bool,
    },
    Remove {
        principal: String,
        kind: StoredKind,
        name: String,
    },
    /// Objects of `kind` (both when `None`) the principal may see.
    List {
        principal: String,
        kind: Option<StoredKind>,
    },
    /// A config's value (`version` 0: the latest).
    GetConfig {
        principal: String,
        name: String,
        version: u64,
    },
    /// The values a task launched on the calling agent references (secrets sealed).
    Fetch {
        principal: String,
        agent_id: String,
        framework_id: String,
        task_id: String,
    },
}

/// What an [`ObjectCall`] answers.
#[derive(Debug, PartialEq)]
pub enum ObjectAnswer {
    /// The version created.
    Version(u64),
    Removed,
    List(Vec<v1::ObjectInfo>),
    Config {
        version: u64,
        data: Vec<u8>,
    },
    /// One per distinct (kind, name, version) the task references; secrets sealed.
    Values(Vec<v1::ObjectValue>),
}

/// How an [`ObjectCall`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
}

/// Why an [`ObjectCall`] was refused; the message never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ObjectError {
    pub code: ObjectCode,
    pub message: String,
}

impl ObjectError {
    fn new(code: ObjectCode, message: String) -> ObjectError {
        ObjectError { code, message }
    }
}

fn manage_action(kind: StoredKind) -> Action {
    match kind {
        StoredKind::Secret => Action::ManageSecrets,
        StoredKind::Config => Action::ManageConfigs,
    }
}

/// Who the caller is, in messages.
fn who(principal: &Principal) -> String {
    match principal {
        Principal::Anonymous => "an anonymous caller".to_string(),
        p => format!("principal '{}'", p.name()),
    }
}

impl Master {
    /// The objects, by registry key (for tests and the snapshot's counts).
    pub fn objects(&self) -> &BTreeMap<String, ObjectRecord> {
        &self.objects
    }

    /// Whether `principal` owns `record` (anonymous callers own nothing).
    fn owns(principal: &Principal, record: Option<&ObjectRecord>) -> bool {
        !principal.is_anonymous() && record.is_some_and(|r| r.owner == principal.name())
    }

    /// Runs one object operation; what it changes is persisted through
    /// `Effect::Persist`.
    pub fn object_call(
        &mut self,
        call: ObjectCall,
        now: Instant,
    ) -> Result<ObjectAnswer, ObjectError> {
        match call {
            ObjectCall::Create {
                principal,
                kind,
                name,
                data,
                size,
                update,
            } => self.create_object(&principal, kind, name, data, size, update, now),
            ObjectCall::Remove {
                principal,
                kind,
                name,
            } => self.remove_object(&principal, kind, &name),
            ObjectCall::List { principal, kind } => Ok(self.list_objects(&principal, kind)),
            ObjectCall::GetConfig {
                principal: _,
                name,
                version,
            } => self.get_config(&name, version),
            ObjectCall::Fetch {
                principal,
                agent_id,
                framework_id,
                task_id,
            } => {
                let result = self.fetch_objects(&principal, &agent_id, &framework_id, &task_id);
                match &result {
                    Ok(_) => self.counters.object_fetches += 1,
                    Err(e) => {
                        self.counters.object_fetches_refused += 1;
                        tracing::warn!(target: "strata::audit", principal = %Principal::from_name(&principal), task_id = %rules_shown(&task_id), error = %e, "object fetch refused");
                    }
                }
                result
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_object(
        &mut self,
        principal: &str,
        kind: StoredKind,
        name: String,
        data: Vec<u8>,
        size: u64,
        update: bool,
        now: Instant,
    ) -> Result<ObjectAnswer, ObjectError> {
        let invalid = |m| ObjectError::new(ObjectCode::InvalidArgument, m);
        rules::validate_name(kind.to_proto(), &name).map_err(invalid)?;
        rules::validate_size(
            kind.to_proto(),
            &name,
            usize::try_from(size).unwrap_or(usize::MAX),
        )
        .map_err(invalid)?;
        let caller = Principal::from_name(principal);
        let what = kind.name();
        let record = self.objects.get(&object_key(kind, &name));
        let manage = self
            .config
            .authorizer
            .authorize(&caller, manage_action(kind), &name)
            .is_ok();
        let version = if update {
            if !(manage || Self::owns(&caller, record)) {
                return Err(ObjectError::new(
                    ObjectCode::PermissionDenied,
                    format!(
                        "{} is not authorized to update {what} '{name}'",
                        who(&caller)
                    ),
                ));
            }
            let Some(latest) = record.and_then(ObjectRecord::latest) else {
                return Err(ObjectError::new(
                    ObjectCode::NotFound,
                    format!(
                        "{what} '{name}' does not exist: `strata {what} create {name}` makes it"
                    ),
                ));
            };
            latest.version + 1
        } else {
            if !manage {
                return Err(ObjectError::new(
                    ObjectCode::PermissionDenied,
                    format!(
                        "{} is not authorized to create {what} '{name}'",
                        who(&caller)
                    ),
                ));
            }
            if let Some(latest) = record.and_then(ObjectRecord::latest) {
                return Err(ObjectError::new(
                    ObjectCode::AlreadyExists,
                    format!(
                        "{what} '{name}' exists (version {}): `strata {what} update {name}` makes a new version",
                        latest.version
                    ),
                ));
            }
            // Created again after a removal: numbering goes on.
            self.object_tombstones
                .get(&object_key(kind, &name))
                .map_or(1, |last| last + 1)
        };
        let owner = record.map_or_else(|| caller.name(), |r| r.owner.clone());
        let stored = ObjectVersion {
            version,
            size,
            created_unix: self.unix(now),
            data,
        };
        self.object_tombstones.remove(&object_key(kind, &name));
        put_object(&mut self.objects, kind, &name, &owner, &stored);
        self.emit(Effect::Persist(RegistryOp::PutObject {
            kind,
            name: name.clone(),
            owner,
            version: stored,
        }));
        tracing::info!(target: "strata::audit", principal = %caller, kind = what, name = %name, version, "object version created");
        Ok(ObjectAnswer::Version(version))
    }

    fn remove_object(
        &mut self,
        principal: &str,
        kind: StoredKind,
        name: &str,
    ) -> Result<ObjectAnswer, ObjectError> {
        let caller = Principal::from_name(principal);
        let what = kind.name();
        let key = object_key(kind, name);
        let record = self.objects.get(&key);
        let manage = self
            .config
            .authorizer
            .authorize(&caller, manage_action(kind), name)
            .is_ok();
        if !(manage || Self::owns(&caller, record)) {
            return Err(ObjectError::new(
                ObjectCode::PermissionDenied,
                format!(
                    "{} is not authorized to remove {what} '{}'",
                    who(&caller),
                    rules_shown(name)
                ),
            ));
        }
        if record.is_none() {
            return Err(ObjectError::new(
                ObjectCode::NotFound,
                format!("{what} '{}' does not exist", rules_shown(name)),
            ));
        }
        remove_object(&mut self.objects, &mut self.object_tombstones, kind, name);
        self.emit(Effect::Persist(RegistryOp::RemoveObject {
            kind,
            name: name.to_string(),
        }));
        tracing::info!(target: "strata::audit", principal = %caller, kind = what, name = %name, "object removed");
        Ok(ObjectAnswer::Removed)
    }

    fn list_objects(&self, principal: &str, kind: Option<StoredKind>) -> ObjectAnswer {
        let caller = Principal::from_name(principal);
        let authorizer = &self.config.authorizer;
        // Tasks per object, over the live tasks that reference any.
        let mut uses: BTreeMap<(StoredKind, &str), u64> = BTreeMap::new();
        for fw in self.frameworks.values() {
            for task in fw.tasks.values().filter(|t| !t.objects.is_empty()) {
                let mut seen = std::collections::BTreeSet::new();
                for r in &task.objects {
                    let Some(k) = StoredKind::from_wire(r.kind) else {
                        continue;
                    };
                    if seen.insert((k, r.name.as_str())) {
                        *uses.entry((k, r.name.as_str())).or_default() += 1;
                    }
                }
            }
        }
        let list = self
            .objects
            .values()
            .filter(|r| kind.is_none_or(|k| k == r.kind))
            .filter(|r| match r.kind {
                StoredKind::Config => true,
                StoredKind::Secret => {
                    Self::owns(&caller, Some(r))
                        || authorizer.permits(&caller, Action::ViewSecrets, &r.name)
                }
            })
            .map(|r| {
                let (principals, anyone) = match r.kind {
                    StoredKind::Config => (Vec::new(), true),
                    StoredKind::Secret => {
                        let may = authorizer.who_may(Action::UseSecrets, &r.name);
                        let mut principals = Vec::new();
                        if !r.owner.is_empty() {
                            principals.push(r.owner.clone());
                        }
                        for p in may.principals {
                            if !principals.contains(&p) {
                                principals.push(p);
                            }
                        }
                        (principals, may.anyone)
                    }
                };
                v1::ObjectInfo {
                    kind: r.kind.to_proto() as i32,
                    name: r.name.clone(),
                    owner: r.owner.clone(),
                    versions: r
                        .versions
                        .iter()
                        .map(|v| v1::ObjectVersionInfo {
                            version: v.version,
                            size: v.size,
                            created_unix: v.created_unix,
                        })
                        .collect(),
                    principals,
                    anyone,
                    tasks: uses.get(&(r.kind, r.name.as_str())).copied().unwrap_or(0),
                }
            })
            .collect();
        ObjectAnswer::List(list)
    }

    fn get_config(&self, name: &str, version: u64) -> Result<ObjectAnswer, ObjectError> {
        let record = self.objects.get(&object_key(StoredKind::Config, name));
        let Some(record) = record else {
            return Err(ObjectError::new(
                ObjectCode::NotFound,
                format!("config '{}' does not exist", rules_shown(name)),
            ));
        };
        let found = if version == 0 {
            record.latest()
        } else {
            record.version(version)
        };
        let Some(v) = found else {
            return Err(ObjectError::new(
                ObjectCode::NotFound,
                format!(
                    "config '{name}' has no version {version} ({})",
                    kept(record)
                ),
            ));
        };
        Ok(ObjectAnswer::Config {
            version: v.version,
            data: v.data.clone(),
        })
    }

    fn fetch_objects(
        &self,
        principal: &str,
        agent_id: &str,
        framework_id: &str,
        task_id: &str,
    ) -> Result<ObjectAnswer, ObjectError> {
        let denied = || {
            ObjectError::new(
                ObjectCode::PermissionDenied,
                format!(
                    "no task '{}' of framework '{}' was launched on agent '{}' by this master",
                    rules_shown(task_id),
                    rules_shown(framework_id),
                    rules_shown(agent_id)
                ),
            )
        };
        let task = self
            .framework_ids
            .get(framework_id)
            .and_then(|fk| self.frameworks.get(fk))
            .and_then(|fw| fw.tasks.get(task_id))
            .filter(|t| t.agent_id == agent_id)
            .ok_or_else(denied)?;
        // Only the agent the task was sent to (its certificate's principal).
        let agent_principal = self
            .agents
            .get(&task.agent)
            .map(|a| a.principal.as_str())
            .ok_or_else(denied)?;
        if agent_principal != principal {
            return Err(denied());
        }
        let mut values: Vec<v1::ObjectValue> = Vec::new();
        for r in &task.objects {
            let Some(kind) = StoredKind::from_wire(r.kind) else {
                continue;
            };
            if values
                .iter()
                .any(|v| v.kind == r.kind && v.name == r.name && v.version == r.version)
            {
                continue;
            }
            let what = kind.name();
            let record = self.objects.get(&object_key(kind, &r.name));
            let Some(version) = record.and_then(|rec| rec.version(r.version)) else {
                return Err(ObjectError::new(
                    ObjectCode::NotFound,
                    match record {
                        None => format!("{what} '{}' was removed", r.name),
                        Some(rec) => format!(
                            "{what} '{}' no longer has version {} ({})",
                            r.name,
                            r.version,
                            kept(rec)
                        ),
                    },
                ));
            };
            values.push(v1::ObjectValue {
                kind: r.kind,
                name: r.name.clone(),
                version: r.version,
                data: version.data.clone(),
            });
        }
        Ok(ObjectAnswer::Values(values))
    }

    /// The versions the task's references launch with (the latest for those that name
    /// none), once the framework's principal may use each secret and every object
    /// exists; else the task's TASK_ERROR, naming the object and why. A principal that
    /// may not use a secret is told so whether it exists or not.
    pub(super) fn resolve_objects(
        &self,
        framework: &v1::FrameworkInfo,
        task: &v1::TaskInfo,
    ) -> Result<Vec<u64>, TaskProblem> {
        if task.objects.is_empty() {
            return Ok(Vec::new());
        }
        let principal = Principal::from_name(&framework.principal);
        let id = &task.task_id;
        let mut pins = Vec::with_capacity(task.objects.len());
        for r in &task.objects {
            let Some(kind) = StoredKind::from_wire(r.kind) else {
                return Err(TaskProblem::invalid(format!(
                    "task '{id}': a reference has no kind"
                )));
            };
            let what = kind.name();
            let record = self.objects.get(&object_key(kind, &r.name));
            if kind == StoredKind::Secret
                && !Self::owns(&principal, record)
                && let Err(denied) =
                    self.config
                        .authorizer
                        .authorize(&principal, Action::UseSecrets, &r.name)
            {
                return Err(TaskProblem {
                    reason: TaskStatusReason::ReasonTaskUnauthorized,
                    message: format!("task '{id}' was not launched: {denied}"),
                });
            }
            let Some(record) = record else {
                return Err(TaskProblem::invalid(format!(
                    "task '{id}': {what} '{}' does not exist",
                    r.name
                )));
            };
            let version = if r.version == 0 {
                record.latest().map(|v| v.version)
            } else {
                record.version(r.version).map(|v| v.version)
            };
            let Some(version) = version else {
                return Err(TaskProblem::invalid(format!(
                    "task '{id}': {what} '{}' has no version {} ({})",
                    r.name,
                    r.version,
                    kept(record)
                )));
            };
            pins.push(version);
        }
        Ok(pins)
    }
}

/// Applies the versions [`Master::resolve_objects`] chose to the task's references.
pub(super) fn pin(task: &mut v1::TaskInfo, pins: &[u64]) {
    for (r, version) in task.objects.iter_mut().zip(pins) {
        r.version = *version;
    }
}

/// "kept: versions 3-12", for messages.
fn kept(record: &ObjectRecord) -> String {
    match (record.versions.first(), record.versions.last()) {
        (Some(a), Some(b)) if a.version == b.version => format!("kept: version {}", a.version),
        (Some(a), Some(b)) => format!("kept: versions {}-{}", a.version, b.version),
        _ => "no version kept".to_string(),
    }
}

fn rules_shown(s: &str) -> std::borrow::Cow<'_, str> {
    strata_proto::limits::shown(s)
}
