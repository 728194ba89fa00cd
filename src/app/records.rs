//! What the container framework persists: apps (spec, version, deployment, backoff)
//! and tasks (where they run, their last known state).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use strata_proto::v1::TaskState;

use super::spec::AppSpec;
use super::view::TaskFailureView;

/// One app as the framework keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub spec: AppSpec,
    /// The configuration version tasks are launched with (changes with everything in
    /// the spec but `instances`, and on restart).
    pub version: String,
    /// Set by `app rm`: every task is killed and the app removed once none is left.
    #[serde(default)]
    pub destroying: bool,
    /// Set by `app rm --wipe`: once its tasks are gone, the resident instances'
    /// volumes are destroyed and their reservations released (through offers of their
    /// agents) before the app is removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wipe: bool,
    /// A resident app's instances (issue 17), by instance id (`<app>_<n>`): where each
    /// keeps its data. Kept across scale-downs (a later scale-up reuses them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub residents: BTreeMap<String, Resident>,
    /// The number of the next resident instance.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_resident: u64,
    #[serde(default)]
    pub deployment: Option<DeploymentRecord>,
    #[serde(default)]
    pub backoff: BackoffState,
    #[serde(default)]
    pub last_failure: Option<TaskFailureView>,
    /// The version of each config and secret the tasks of `version` are launched with
    /// (issue 16), by [`object_key`](super::spec::object_key) (`secret/db-pass`): 0
    /// when the framework did not know it (the master then gives the latest, and the
    /// framework records it when it learns it, without a new version). A newer version
    /// of one of them makes a new version of the app (a rolling update).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, u64>,
    /// Why the framework itself made `version`, when it did: e.g. `secret db-pass
    /// version 4` (a newer version of an object the app uses). Unset for changes made
    /// through the App API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_cause: Option<String>,
    /// After a rollback that pinned older versions of configs or secrets than the
    /// latest: the latest version of each of them then, by object key. A newer
    /// listing of that same version does not roll the app forward again (the
    /// rollback went away from it); a version newer than it does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects_held: BTreeMap<String, u64>,
}

/// How many versions of an app are kept (the current one included): Marathon's
/// `/v2/apps/{id}/versions`, for `GET /v1/apps/{id}/versions` and rollback.
pub const MAX_VERSIONS: usize = 20;

/// One version of an app: the spec it was made with and why the framework made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    pub spec: AppSpec,
    /// [`AppRecord::version_cause`] of that version: why the framework made it
    /// (`secret db-pass version 4`, `rollback to V`), unset for an App API change.
    #[serde(default)]
    pub cause: Option<String>,
    /// [`AppRecord::objects`] of that version: the version of each config and secret
    /// its tasks were launched with, which a rollback to it launches again. Empty in
    /// a store written before pins were kept per version (a rollback then pins the
    /// latest, as a deploy does).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, u64>,
}

impl VersionRecord {
    /// The version `app` runs now, as a version of its history.
    pub fn current(app: &AppRecord) -> VersionRecord {
        VersionRecord {
            version: app.version.clone(),
            spec: app.spec.clone(),
            cause: app.version_cause.clone(),
            objects: app.objects.clone(),
        }
    }
}

/// An app as the store holds it: its record and its versions, oldest first, the
/// current one last, at most [`MAX_VERSIONS`]. The store keeps the versions apart from
/// the record (written only when they change); a record written before that holds
/// them as a `versions` key beside its fields, and one written before versions were
/// kept loads with its current version as the only one.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredApp {
    pub app: AppRecord,
    pub versions: Vec<VersionRecord>,
}

impl StoredApp {
    /// `app` with `versions`, or (none: a record from before versions were kept) its
    /// current version as the only one.
    pub fn new(app: AppRecord, mut versions: Vec<VersionRecord>) -> StoredApp {
        if versions.is_empty() {
            versions.push(VersionRecord::current(&app));
        }
        StoredApp { app, versions }
    }

    /// Reads a stored record (with or without `versions` in it).
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<StoredApp> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let versions = match value.as_object_mut().and_then(|o| o.remove("versions")) {
            Some(v) if !v.is_null() => serde_json::from_value(v)?,
            _ => Vec::new(),
        };
        Ok(StoredApp::new(serde_json::from_value(value)?, versions))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One instance of a resident app: the agent holding its volumes, what it reserved
/// there, and whether that agent is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resident {
    pub agent_id: String,
    pub hostname: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The persistence ids of its volumes, in the spec's order (`<instance>_<k>`).
    pub volumes: Vec<String>,
    /// What it reserved (the flag form, e.g. `cpus(apps):0.5;mem(apps):64;disk(apps):522`),
    /// released with `app rm --wipe`.
    #[serde(default)]
    pub reserved: String,
    /// Its agent was marked gone (its data with it): it waits for an operator, or is
    /// started afresh elsewhere with `unreachable_strategy: relocate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// Its volumes exist: a task of it started, or they were found in an offer. An
    /// instance whose RESERVE / CREATE never took is created anew.
    #[serde(default)]
    pub confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub kind: DeploymentKind,
    pub version: String,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    /// What started it when not the App API: e.g. `secret db-pass version 4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// What a deployment does. Stored (and shown by the App API) as its lower-case name,
/// as records have always held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentKind {
    Create,
    Update,
    Scale,
    Restart,
    Destroy,
}

impl DeploymentKind {
    /// The name the App API shows: `create`, `update`, `scale`, `restart`, `destroy`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Create => "create",
            DeploymentKind::Update => "update",
            DeploymentKind::Scale => "scale",
            DeploymentKind::Restart => "restart",
            DeploymentKind::Destroy => "destroy",
        }
    }
}

/// The restart backoff of an app: the current delay and when launching may resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackoffState {
    /// The delay applied after the latest failure (0: none yet).
    pub delay: f64,
    /// Seconds since the Unix epoch before which no task of the app is launched.
    pub until: f64,
}

/// One task of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub app_id: String,
    pub version: String,
    pub agent_id: String,
    pub hostname: String,
    pub agent_address: String,
    /// The agent's attributes (for constraints).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    /// The last state reported; stored as its Mesos name, e.g. `TASK_RUNNING`.
    #[serde(with = "task_state_name")]
    pub state: TaskState,
    #[serde(default)]
    pub healthy: Option<bool>,
    pub staged_at: f64,
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub message: String,
    /// The framework asked for it to be killed (at this time): it no longer counts
    /// towards the app's instances, and its end is not a failure.
    #[serde(default)]
    pub kill_requested_at: Option<f64>,
    /// When the task became unreachable (its agent stopped answering).
    #[serde(default)]
    pub unreachable_since: Option<f64>,
    /// Launched with a health check (its health counts only then).
    #[serde(default)]
    pub checked: bool,
    /// The resident instance it runs as (resident apps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<String>,
}

impl TaskRecord {
    pub fn is_running(&self) -> bool {
        self.state == TaskState::TaskRunning
    }

    pub fn is_killing(&self) -> bool {
        self.kill_requested_at.is_some()
    }
}

/// A [`TaskState`] (a prost enum, without serde) stored as its Mesos name, the form
/// records have always had. A name this version does not know (written by a newer
/// one) loads as `Unspecified`, as before the state was typed: such a task counts as
/// not running, and reconciliation tells its state.
mod task_state_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use strata_proto::v1::TaskState;

    pub fn serialize<S: Serializer>(state: &TaskState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.as_str_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
        let name = String::deserialize(d)?;
        Ok(TaskState::from_str_name(&name).unwrap_or(TaskState::Unspecified))
    }
}

/// Seconds since the Unix epoch, as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(epoch: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(epoch.max(0.0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
