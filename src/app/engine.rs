//! The container framework's state machine: apps, tasks and deployments in memory,
//! driven by API calls, offers, status updates and a periodic tick. Each entry point
//! returns the actions to take (launch, decline, kill, revive, ...) and records what
//! must be persisted before they are taken; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use strata_framework_sdk::offer_resources;
use strata_proto::is_terminal;
use strata_proto::v1::{self, ObjectKind, TaskState};
use strata_proto::{RangeSet, Resources, Scalar};

use super::constraints::{self, Placement};
use super::plan::{self, Plan};
use super::records::{
    AppRecord, BackoffState, DeploymentKind, DeploymentRecord, MAX_VERSIONS, StoredApp, TaskRecord,
    VersionRecord, rfc3339,
};
use super::spec::{AppSpec, EnvValue, PlacementStrategy, PortSpec, SpecError, object_key};
use super::view::{
    AppNumbers, AppTaskView, AppVersionView, AppVersionsView, AppView, DeploymentView,
    EndpointView, PortView, ResidentView, TaskFailureView,
};

#[path = "resident.rs"]
mod resident;

/// How long declined offers stay away (revive brings them back when demand changes).
pub const DECLINE_REFUSE_SECONDS: f64 = 120.0;
/// A kill not answered within this time is sent again.
pub const KILL_RETRY_SECONDS: f64 = 30.0;
/// A task not running this long after its launch is killed and replaced (Marathon's
/// task_launch_timeout).
pub const LAUNCH_TIMEOUT_SECONDS: f64 = 300.0;
/// How often tasks not known to be running are reconciled explicitly, and how long
/// pending launches may go without an offer before offers are revived again.
pub const RECONCILE_SECONDS: f64 = 30.0;
/// A failure this long after the previous backoff ended starts the backoff over.
pub const BACKOFF_RESET_SECONDS: f64 = 600.0;
/// After this long without offers, a deployment's waiting reason says so.
const QUIET_OFFERS_SECONDS: f64 = 10.0;
/// How long a listing of the master's configs and secrets is pinned by new versions of
/// apps (the service lists every 2 s; a listing this old means the master could not
/// be asked, and pinning an old value would launch it).
pub const OBJECTS_FRESH_SECONDS: f64 = 10.0;

/// The ports service ports are assigned from (`strata serve --service-ports`, issue
/// 15): `FIRST-LAST`, both included; 10000-10999 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for ServicePortRange {
    fn default() -> ServicePortRange {
        ServicePortRange {
            first: 10000,
            last: 10999,
        }
    }
}

impl ServicePortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports the range holds.
    pub fn size(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }
}

impl fmt::Display for ServicePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for ServicePortRange {
    type Err = String;

    /// `FIRST-LAST` (or one port), 1-65535, FIRST at most LAST.
    fn from_str(text: &str) -> Result<ServicePortRange, String> {
        let port = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!(
                    "'{}' is not a port (1-65535): expected FIRST-LAST, e.g. 10000-10999",
                    t.trim()
                )),
            }
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(text)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!(
                "{first}-{last} is empty: the first port must not be above the last"
            ));
        }
        Ok(ServicePortRange { first, last })
    }
}

/// What the service must do, in order, after the writes are persisted.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Accepts the offer: `operations` (a resident app's RESERVE / CREATE, a wipe's
    /// DESTROY / UNRESERVE) then a LAUNCH of `tasks` (when any).
    Launch {
        offer_id: String,
        operations: Vec<v1::Operation>,
        tasks: Vec<v1::TaskInfo>,
    },
    Decline {
        offer_ids: Vec<String>,
        refuse_seconds: f64,
    },
    Kill {
        task_id: String,
        /// The agent it runs on (empty: not known).
        agent_id: String,
        grace_seconds: f64,
    },
    Revive,
    Suppress,
    /// Explicit reconciliation of these tasks, then implicit (all tasks).
    Reconcile(Vec<v1::ReconcileTask>),
    /// Explicit reconciliation of these tasks only.
    ReconcileTasks(Vec<v1::ReconcileTask>),
}

/// A change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// An app's record (`None`: removed, its versions with it).
    App(String, Option<Box<AppRecord>>),
    /// An app's versions, oldest first: written apart from the record (which changes
    /// with every task's progress), only when they change (a version is added, or the
    /// current one's pins are learned).
    Versions(String, Vec<VersionRecord>),
    Task(String, Option<Box<TaskRecord>>),
    FrameworkId(String),
}

/// What the store holds, as of the latest write that persisted: the service keeps it
/// beside the core to put the core back (with [`Engine::revert`]) when a write fails.
/// It costs a second copy of the records, in exchange for an undo that needs no I/O
/// (redb refuses every read after an I/O error until it is reopened).
#[derive(Debug, Default)]
pub struct Persisted {
    apps: BTreeMap<String, AppRecord>,
    versions: BTreeMap<String, Vec<VersionRecord>>,
    tasks: BTreeMap<String, TaskRecord>,
}

impl Persisted {
    /// What [`Engine::restore`] starts from.
    pub fn new(apps: &[StoredApp], tasks: &[TaskRecord]) -> Persisted {
        Persisted {
            apps: apps
                .iter()
                .map(|a| (a.app.spec.id.clone(), a.app.clone()))
                .collect(),
            versions: apps
                .iter()
                .map(|a| (a.app.spec.id.clone(), a.versions.clone()))
                .collect(),
            tasks: tasks.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        }
    }

    /// `writes` are durable now.
    pub fn record(&mut self, writes: Vec<Write>) {
        for w in writes {
            match w {
                Write::App(id, Some(rec)) => {
                    self.apps.insert(id, *rec);
                }
                Write::App(id, None) => {
                    self.apps.remove(&id);
                    self.versions.remove(&id);
                }
                Write::Versions(id, versions) => {
                    self.versions.insert(id, versions);
                }
                Write::Task(id, Some(rec)) => {
                    self.tasks.insert(id, *rec);
                }
                Write::Task(id, None) => {
                    self.tasks.remove(&id);
                }
                Write::FrameworkId(_) => {}
            }
        }
    }
}

/// A refused API call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("app \"{0}\" not found")]
    AppNotFound(String),
    #[error("task \"{0}\" not found")]
    TaskNotFound(String),
    #[error("app \"{0}\" already exists")]
    AppExists(String),
    #[error("app \"{0}\" is being destroyed")]
    Destroying(String),
    #[error("spec refused: {0}")]
    Refused(SpecError),
    #[error("app \"{app}\" has no version \"{version}\" (GET /v1/apps/{app}/versions lists them)")]
    VersionNotFound { app: String, version: String },
    #[error("app \"{0}\" has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A rollback to a version whose tasks used a config or secret version the master
    /// no longer keeps (removed, or pruned by newer ones).
    #[error(
        "app \"{app}\" cannot roll back to version \"{version}\": it used {object}, which the master no longer keeps ({kept})"
    )]
    PinnedObjectGone {
        app: String,
        version: String,
        /// `secret db-pass version 3`.
        object: String,
        /// What the master keeps of it: `it keeps versions 4, 5`, or `secret db-pass
        /// is gone`.
        kept: String,
    },
}

#[derive(Default)]
pub struct Engine {
    apps: BTreeMap<String, AppRecord>,
    /// Each app's versions, oldest first, the current one last (at most
    /// [`MAX_VERSIONS`]): persisted with the app.
    versions: BTreeMap<String, Vec<VersionRecord>>,
    tasks: BTreeMap<String, TaskRecord>,
    framework_id: Option<String>,
    /// Why an app's pending launches did not happen in the latest offer round.
    waiting: HashMap<String, String>,
    suppressed: bool,
    last_pending: u32,
    /// When offers last arrived, revive was last sent, and tasks were last reconciled.
    last_offers: f64,
    last_revive: f64,
    /// When offers were revived after a suppression, until the first offer after that
    /// arrives. Meanwhile waiting apps say "reviving offers", and any quiet time counts
    /// from here: the last offer before the suppression says nothing about now.
    revived_at: Option<f64>,
    last_reconcile: f64,
    writes: Vec<Write>,
    seq: u64,
    /// The framework's role (`*` when unset).
    role: String,
    /// Where service ports asked as 0 are taken from, and where asked ones must be.
    service_ports: ServicePortRange,
    /// The latest version of each config and secret the master listed last
    /// ([`Engine::objects`]): what a new version of an app pins. Not persisted: empty
    /// after a restart until the first listing (apps deployed meanwhile pin 0).
    latest_objects: ObjectVersions,
    /// When they were listed. A listing older than [`OBJECTS_FRESH_SECONDS`] (the
    /// master could not be asked) is not pinned (0 instead).
    objects_listed_at: Option<f64>,
    /// Every version of each config and secret the master keeps, as last listed (with
    /// `objects_listed_at`): a rollback to a version pinning one that is gone is
    /// refused. `None` until a listing told them.
    kept_objects: Option<KeptVersions>,
}

/// The latest version of each config and secret, by kind and name, as the master's
/// `ListObjects` says.
pub type ObjectVersions = BTreeMap<(ObjectKind, String), u64>;

/// Every version the master keeps of each config and secret, by kind and name, as
/// `ListObjects` says.
pub type KeptVersions = BTreeMap<(ObjectKind, String), BTreeSet<u64>>;

impl Engine {
    /// The role the framework subscribes with: apps may accept its reservations.
    pub fn with_role(mut self, role: &str) -> Engine {
        self.role = role.to_string();
        self
    }

    /// The range service ports are assigned from (`strata serve --service-ports`).
    pub fn with_service_ports(mut self, range: ServicePortRange) -> Engine {
        self.service_ports = range;
        self
    }

    fn role(&self) -> &str {
        if self.role.is_empty() {
            "*"
        } else {
            &self.role
        }
    }

    /// The state as persisted.
    pub fn restore(
        apps: Vec<StoredApp>,
        tasks: Vec<TaskRecord>,
        framework_id: Option<String>,
    ) -> Engine {
        let versions = apps
            .iter()
            .map(|a| (a.app.spec.id.clone(), a.versions.clone()))
            .collect();
        Engine {
            apps: apps
                .into_iter()
                .map(|a| (a.app.spec.id.clone(), a.app))
                .collect(),
            versions,
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            framework_id,
            ..Engine::default()
        }
    }

    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// Writes accumulated since the last call, to persist before acting.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// `writes` (taken with [`Engine::take_writes`]) could not be persisted: puts every
    /// app and task they touched back as `persisted` holds it, so that memory does not
    /// run ahead of the store. The framework id is kept (it is what the master says)
    /// and its write stays owed: it goes with the next writes.
    pub fn revert(&mut self, writes: &[Write], persisted: &Persisted) {
        for w in writes {
            match w {
                Write::App(id, _) | Write::Versions(id, _) => {
                    match persisted.apps.get(id) {
                        Some(rec) => {
                            self.apps.insert(id.clone(), rec.clone());
                        }
                        None => {
                            self.apps.remove(id);
                        }
                    }
                    match persisted.versions.get(id) {
                        Some(versions) => {
                            self.versions.insert(id.clone(), versions.clone());
                        }
                        None => {
                            self.versions.remove(id);
                        }
                    }
                }
                Write::Task(id, _) => match persisted.tasks.get(id) {
                    Some(rec) => {
                        self.tasks.insert(id.clone(), rec.clone());
                    }
                    None => {
                        self.tasks.remove(id);
                    }
                },
                Write::FrameworkId(id) => self.writes.push(Write::FrameworkId(id.clone())),
            }
        }
    }

    /// Persists the app's record (not its versions: [`Engine::save_versions`]), or its
    /// removal with its versions.
    fn save_app(&mut self, id: &str) {
        let rec = match self.apps.get(id) {
            Some(app) => Some(Box::new(app.clone())),
            None => {
                self.versions.remove(id);
                None
            }
        };
        self.writes.push(Write::App(id.to_string(), rec));
    }

    /// Persists the app's versions (they changed).
    fn save_versions(&mut self, id: &str) {
        if let Some(versions) = self.versions.get(id) {
            self.writes
                .push(Write::Versions(id.to_string(), versions.clone()));
        }
    }

    /// The app has a new version (`version`, `spec` and `version_cause` set): it
    /// joins its versions, the oldest beyond [`MAX_VERSIONS`] are forgotten.
    fn record_version(&mut self, id: &str) {
        let Some(app) = self.apps.get(id) else {
            return;
        };
        let entry = VersionRecord::current(app);
        let versions = self.versions.entry(id.to_string()).or_default();
        versions.retain(|v| v.version != entry.version);
        versions.push(entry);
        let excess = versions.len().saturating_sub(MAX_VERSIONS);
        versions.drain(..excess);
        self.save_versions(id);
    }

    fn save_task(&mut self, id: &str) {
        let rec = self.tasks.get(id).cloned().map(Box::new);
        self.writes.push(Write::Task(id.to_string(), rec));
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        let u = uuid::Uuid::new_v4().simple().to_string();
        format!("{prefix}.{}", &u[..12])
    }

    fn new_version(&self, app: Option<&AppRecord>, now: f64) -> String {
        let mut v = rfc3339(now);
        if let Some(a) = app
            && a.version >= v
        {
            // Two changes within a millisecond (or a clock step back): stay ordered.
            v = format!("{}+{}", a.version, self.seq + 1);
        }
        v
    }

    // ---- API -------------------------------------------------------------------

    /// Creates the app, or updates it (a rolling update when anything but
    /// `instances` changes, a scale otherwise). `create_only` refuses an existing id.
    pub fn deploy(
        &mut self,
        spec: AppSpec,
        create_only: bool,
        now: f64,
    ) -> Result<(AppView, Vec<Action>), ApiError> {
        self.deploy_as(spec, create_only, None, None, now)
    }

    /// [`Engine::deploy`]; with a `cause` (a rollback), always a new version (even of
    /// the same configuration), made for that cause, pinning `objects` (a rollback's
    /// version's pins) rather than the latest versions.
    fn deploy_as(
        &mut self,
        spec: AppSpec,
        create_only: bool,
        cause: Option<String>,
        objects: Option<BTreeMap<String, u64>>,
        now: f64,
    ) -> Result<(AppView, Vec<Action>), ApiError> {
        let id = spec.id.clone();
        for (i, role) in spec.accepted_resource_roles.iter().flatten().enumerate() {
            if role != "*" && role != self.role() {
                return Err(ApiError::Refused(SpecError {
                    field: format!("accepted_resource_roles[{i}]"),
                    reason: format!(
                        "'{role}' is neither '*' nor the framework's role '{}'",
                        self.role()
                    ),
                }));
            }
        }
        let existing = self.apps.get(&id).cloned();
        if spec.is_resident() && self.role() == "*" {
            return Err(ApiError::Refused(SpecError::new(
                "volumes",
                "persistent volumes need reservations, and role '*' cannot hold any: start the framework with a role (strata serve --role NAME)",
            )));
        }
        if let Some(a) = &existing {
            let persistent = |s: &AppSpec| -> Vec<(String, String)> {
                s.persistent_volumes()
                    .map(|(v, size)| (v.container_path.clone(), size.to_string()))
                    .collect()
            };
            if !a.destroying && persistent(&a.spec) != persistent(&spec) {
                return Err(ApiError::Refused(SpecError::new(
                    "volumes",
                    "the persistent volumes of an app cannot change (its instances' data is in them): remove the app with `strata app rm --wipe` to start over, or deploy another app",
                )));
            }
            if create_only {
                return Err(ApiError::AppExists(id));
            }
            if a.destroying {
                return Err(ApiError::Destroying(id));
            }
        }
        let spec = self
            .assign_service_ports(spec, existing.as_ref())
            .map_err(ApiError::Refused)?;
        let record = match existing {
            None => {
                let version = self.new_version(None, now);
                AppRecord {
                    deployment: Some(self.deployment(DeploymentKind::Create, &id, &version, now)),
                    objects: self.pins(&spec, now),
                    spec,
                    version,
                    destroying: false,
                    wipe: false,
                    residents: Default::default(),
                    next_resident: 0,
                    backoff: BackoffState::default(),
                    last_failure: None,
                    version_cause: None,
                    objects_held: BTreeMap::new(),
                }
            }
            Some(a) => {
                let a = &a;
                let mut same_config = a.spec.clone();
                same_config.instances = spec.instances;
                let mut rec = a.clone();
                if same_config == spec && cause.is_none() {
                    if a.spec.instances != spec.instances {
                        rec.deployment =
                            Some(self.deployment(DeploymentKind::Scale, &id, &a.version, now));
                        rec.spec = spec;
                    }
                } else {
                    let version = self.new_version(Some(a), now);
                    let mut deployment =
                        self.deployment(DeploymentKind::Update, &id, &version, now);
                    deployment.cause = cause.clone();
                    rec.deployment = Some(deployment);
                    rec.version = version;
                    let latest = self.pins(&spec, now);
                    rec.objects_held = BTreeMap::new();
                    rec.objects = match objects {
                        Some(old) => {
                            // The pins of the version rolled back to (0: the latest
                            // at launch, as then); the latest known of each object it
                            // is older than (however old the listing) is held back
                            // from rolling the app forward.
                            let mut pins = latest;
                            for (kind, name) in spec.object_names() {
                                let key = object_key(kind, &name);
                                let Some(&old) = old.get(&key).filter(|v| **v != 0) else {
                                    continue;
                                };
                                let known = self.latest_objects.get(&(kind, name)).copied();
                                if let Some(known) = known.filter(|k| old < *k) {
                                    rec.objects_held.insert(key.clone(), known);
                                }
                                pins.insert(key, old);
                            }
                            pins
                        }
                        None => latest,
                    };
                    rec.version_cause = cause;
                    rec.spec = spec;
                    rec.backoff = BackoffState::default();
                }
                rec
            }
        };
        let new_version = self.apps.get(&id).map(|a| &a.version) != Some(&record.version);
        self.apps.insert(id.clone(), record);
        if new_version {
            self.record_version(&id);
        }
        self.save_app(&id);
        // Demand changed: offers declined for the old demand may fit now.
        self.last_pending = 0;
        let actions = self.tick(now);
        Ok((self.app_view(&id, now).expect("just inserted"), actions))
    }

    pub fn scale(
        &mut self,
        id: &str,
        instances: u32,
        now: f64,
    ) -> Result<(AppView, Vec<Action>), ApiError> {
        let mut spec = self.live_app(id)?.spec.clone();
        if instances > 10_000 {
            return Err(ApiError::Refused(SpecError {
                field: "instances".into(),
                reason: format!("{instances} is more than 10000"),
            }));
        }
        spec.instances = instances;
        self.deploy(spec, false, now)
    }

    pub fn restart(&mut self, id: &str, now: f64) -> Result<(AppView, Vec<Action>), ApiError> {
        let a = self.live_app(id)?.clone();
        let version = self.new_version(Some(&a), now);
        let deployment = self.deployment(DeploymentKind::Restart, id, &version, now);
        let objects = self.pins(&a.spec, now);
        let rec = self.apps.get_mut(id).expect("checked");
        rec.version = version;
        rec.objects = objects;
        rec.objects_held = BTreeMap::new();
        rec.version_cause = None;
        rec.deployment = Some(deployment);
        rec.backoff = BackoffState::default();
        self.record_version(id);
        self.save_app(id);
        self.last_pending = 0;
        let actions = self.tick(now);
        Ok((self.app_view(id, now).expect("exists"), actions))
    }

    /// The spec a rollback of app `id` to `version` deploys (`None`: the version before
    /// the current one) and that version: the version's spec with the app's current
    /// `instances` (as everywhere here, the number of instances is not part of a
    /// version). Asked before [`Engine::rollback`] to authorize what it deploys.
    pub fn rollback_target(
        &self,
        id: &str,
        version: Option<&str>,
        now: f64,
    ) -> Result<(AppSpec, String), ApiError> {
        let (spec, version, _) = self.rollback_to(id, version, now)?;
        Ok((spec, version))
    }

    /// [`Engine::rollback_target`] with the pins of the version: refused when one of
    /// them is a config or secret version the master (as last listed, within
    /// [`OBJECTS_FRESH_SECONDS`]) no longer keeps.
    fn rollback_to(
        &self,
        id: &str,
        version: Option<&str>,
        now: f64,
    ) -> Result<(AppSpec, String, BTreeMap<String, u64>), ApiError> {
        let app = self.live_app(id)?;
        let versions = self.versions.get(id).map(Vec::as_slice).unwrap_or_default();
        let target = match version {
            Some(v) => versions
                .iter()
                .rev()
                .find(|r| r.version == v)
                .ok_or_else(|| ApiError::VersionNotFound {
                    app: id.to_string(),
                    version: v.to_string(),
                })?,
            None => versions
                .iter()
                .rev()
                .find(|r| r.version != app.version)
                .ok_or_else(|| ApiError::NoEarlierVersion(id.to_string()))?,
        };
        let (mut spec, objects) = if target.version == app.version {
            (app.spec.clone(), app.objects.clone())
        } else {
            (target.spec.clone(), target.objects.clone())
        };
        spec.instances = app.spec.instances;
        if let Some((object, kept)) = self.gone_pin(&spec, &objects, now) {
            return Err(ApiError::PinnedObjectGone {
                app: id.to_string(),
                version: target.version.clone(),
                object,
                kept,
            });
        }
        Ok((spec, target.version.clone(), objects))
    }

    /// The first pin of `objects` (of an object `spec` uses) that the master no longer
    /// keeps, as `secret db-pass version 3`, and what it keeps of that object (`it
    /// keeps versions 4, 5`, `secret db-pass is gone`). Nothing is known gone without
    /// a fresh listing of every kept version.
    fn gone_pin(
        &self,
        spec: &AppSpec,
        objects: &BTreeMap<String, u64>,
        now: f64,
    ) -> Option<(String, String)> {
        let kept = self.kept_objects.as_ref()?;
        let fresh = self
            .objects_listed_at
            .is_some_and(|at| now - at <= OBJECTS_FRESH_SECONDS);
        if !fresh {
            return None;
        }
        spec.object_names().into_iter().find_map(|(kind, name)| {
            let pin = *objects.get(&object_key(kind, &name))?;
            let what = strata_proto::objects::kind_name(kind);
            let kept = match kept.get(&(kind, name.clone())) {
                _ if pin == 0 => return None,
                Some(versions) if versions.contains(&pin) => return None,
                Some(versions) if !versions.is_empty() => format!(
                    "it keeps versions {}",
                    versions
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!("{what} {name} is gone"),
            };
            Some((format!("{what} {name} version {pin}"), kept))
        })
    }

    /// Deploys an earlier version of the app again (`None`: the one before the
    /// current one) as a new version, whose cause is `rollback to VERSION`: a rolling
    /// update like any deploy, refused (changing nothing) like any deploy.
    pub fn rollback(
        &mut self,
        id: &str,
        version: Option<&str>,
        now: f64,
    ) -> Result<(AppView, Vec<Action>), ApiError> {
        let (spec, version, objects) = self.rollback_to(id, version, now)?;
        let cause = Some(format!("rollback to {version}"));
        self.deploy_as(spec, false, cause, Some(objects), now)
    }

    /// The app's versions, newest first (`GET /v1/apps/{id}/versions`).
    pub fn app_versions(&self, id: &str) -> Result<AppVersionsView, ApiError> {
        let app = self
            .apps
            .get(id)
            .ok_or_else(|| ApiError::AppNotFound(id.to_string()))?;
        let mut versions: Vec<AppVersionView> = self
            .versions
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .rev()
            .map(|v| {
                let current = v.version == app.version;
                AppVersionView {
                    version: v.version.clone(),
                    cause: v.cause.clone(),
                    current,
                    objects: if current {
                        app.objects.clone()
                    } else {
                        v.objects.clone()
                    },
                    // The current version as the app shows it (scaled since, perhaps).
                    spec: if current {
                        app.spec.clone()
                    } else {
                        v.spec.clone()
                    },
                }
            })
            .collect();
        if !versions.iter().any(|v| v.current) {
            versions.insert(
                0,
                AppVersionView {
                    version: app.version.clone(),
                    cause: app.version_cause.clone(),
                    current: true,
                    objects: app.objects.clone(),
                    spec: app.spec.clone(),
                },
            );
        }
        Ok(AppVersionsView {
            app_id: id.to_string(),
            versions,
        })
    }

    /// Removes the app: its tasks are killed; a resident app keeps its instances'
    /// volumes and reservations (a later deploy of the same id adopts them) unless
    /// `wipe` (then they are destroyed and released before the app is gone). A second
    /// call may add `wipe`.
    pub fn destroy(
        &mut self,
        id: &str,
        wipe: bool,
        now: f64,
    ) -> Result<(AppView, Vec<Action>), ApiError> {
        let a = self
            .apps
            .get(id)
            .ok_or_else(|| ApiError::AppNotFound(id.to_string()))?;
        if !a.destroying {
            let version = a.version.clone();
            let deployment = self.deployment(DeploymentKind::Destroy, id, &version, now);
            let rec = self.apps.get_mut(id).expect("checked");
            rec.destroying = true;
            rec.wipe = wipe;
            rec.deployment = Some(deployment);
            self.save_app(id);
        } else if wipe && !a.wipe {
            self.apps.get_mut(id).expect("checked").wipe = true;
            self.save_app(id);
        }
        // Offers of the instances' agents are needed now.
        self.last_pending = 0;
        let view = self.app_view(id, now).expect("exists");
        let actions = self.tick(now);
        Ok((view, actions))
    }

    /// Kills one task; its app replaces it.
    pub fn kill_task(
        &mut self,
        task_id: &str,
        now: f64,
    ) -> Result<(AppTaskView, Vec<Action>), ApiError> {
        if !self.tasks.contains_key(task_id) {
            return Err(ApiError::TaskNotFound(task_id.to_string()));
        }
        let mut actions = Vec::new();
        self.request_kill(task_id, now, &mut actions);
        // The view is taken before the tick: a tick may forget the task (one killed
        // while unreachable past its app's limit).
        let view = self.task_view(&self.tasks[task_id]);
        actions.extend(self.tick(now));
        Ok((view, actions))
    }

    /// Puts the service port of each port of `spec` that asks for one (issue 15): a
    /// port asking for 0 keeps the one it holds (`existing`, the app as deployed), else
    /// gets the lowest free one of the range; a port asking for n gets n, if no other
    /// app holds it and it is inside the range (or the app already holds it: a
    /// narrower range does not take ports away). The spec returned (and stored with
    /// the app) holds the assigned numbers, never 0, so the assignment is persisted
    /// with the app, stays across updates, scales and restarts, and is freed with the
    /// app. Refused with the field named; nothing is changed then.
    fn assign_service_ports(
        &self,
        mut spec: AppSpec,
        existing: Option<&AppRecord>,
    ) -> Result<AppSpec, SpecError> {
        if spec.ports.iter().all(|p| p.service_port().is_none()) {
            return Ok(spec);
        }
        let range = self.service_ports;
        // Held by the other apps (those being removed too, until they are gone).
        let mut others: BTreeMap<u16, (&str, usize)> = BTreeMap::new();
        for (app_id, app) in &self.apps {
            if *app_id == spec.id {
                continue;
            }
            for (i, port) in app.spec.ports.iter().enumerate() {
                if let Some(n) = port.service_port().filter(|n| *n != 0) {
                    others.insert(n, (app_id.as_str(), i));
                }
            }
        }
        let held: Vec<Option<u16>> = existing
            .map(|a| {
                a.spec
                    .ports
                    .iter()
                    .map(|p| p.service_port().filter(|n| *n != 0))
                    .collect()
            })
            .unwrap_or_default();
        let mut used: BTreeSet<u16> = others.keys().copied().collect();
        for (i, port) in spec.ports.iter().enumerate() {
            let Some(n) = port.service_port().filter(|n| *n != 0) else {
                continue;
            };
            let field = format!("ports[{i}].service_port");
            if let Some((app, j)) = others.get(&n) {
                return Err(SpecError {
                    field,
                    reason: format!(
                        "service port {n} is taken by app \"{app}\" (its ports[{j}]): \
                         choose another, or 0 for any free one"
                    ),
                });
            }
            if !range.contains(n) && !held.contains(&Some(n)) {
                return Err(SpecError {
                    field,
                    reason: format!(
                        "service port {n} is outside the framework's service port range \
                         {range} (strata serve --service-ports): choose one inside it, or \
                         0 for any free one"
                    ),
                });
            }
            used.insert(n);
        }
        for i in 0..spec.ports.len() {
            if spec.ports[i].service_port() != Some(0) {
                continue;
            }
            let kept = held.get(i).copied().flatten().filter(|n| !used.contains(n));
            let n = match kept.or_else(|| (range.first..=range.last).find(|n| !used.contains(n))) {
                Some(n) => n,
                None => {
                    return Err(SpecError {
                        field: format!("ports[{i}].service_port"),
                        reason: format!(
                            "no free service port: all {} of the range {range} are taken; \
                             remove an app that holds one, or widen strata serve \
                             --service-ports",
                            range.size()
                        ),
                    });
                }
            };
            used.insert(n);
            if let PortSpec::Mapping(m) = &mut spec.ports[i] {
                m.service_port = Some(n);
            }
        }
        Ok(spec)
    }

    /// Service ports held by apps: (port, app id, port index), by port.
    #[cfg(test)]
    pub fn service_ports(&self) -> Vec<(u16, String, usize)> {
        let mut out: Vec<(u16, String, usize)> = self
            .apps
            .iter()
            .flat_map(|(id, app)| {
                app.spec.ports.iter().enumerate().filter_map(move |(i, p)| {
                    p.service_port()
                        .filter(|n| *n != 0)
                        .map(|n| (n, id.clone(), i))
                })
            })
            .collect();
        out.sort();
        out
    }

    fn live_app(&self, id: &str) -> Result<&AppRecord, ApiError> {
        match self.apps.get(id) {
            None => Err(ApiError::AppNotFound(id.to_string())),
            Some(a) if a.destroying => Err(ApiError::Destroying(id.to_string())),
            Some(a) => Ok(a),
        }
    }

    fn deployment(
        &mut self,
        kind: DeploymentKind,
        app: &str,
        version: &str,
        now: f64,
    ) -> DeploymentRecord {
        DeploymentRecord {
            id: self.next_id(app),
            kind,
            version: version.to_string(),
            started_at: now,
            cause: None,
        }
    }

    // ---- configs and secrets (issue 16) ----------------------------------------

    /// The pins of a new version of an app running `spec`: the latest version of each
    /// object it references as last listed (within [`OBJECTS_FRESH_SECONDS`]), or 0
    /// (the master gives the latest at launch) for one not listed (yet).
    fn pins(&self, spec: &AppSpec, now: f64) -> BTreeMap<String, u64> {
        let fresh = self
            .objects_listed_at
            .is_some_and(|at| now - at <= OBJECTS_FRESH_SECONDS);
        spec.object_names()
            .into_iter()
            .map(|(kind, name)| {
                let version = self
                    .latest_objects
                    .get(&(kind, name.clone()))
                    .filter(|_| fresh)
                    .copied()
                    .unwrap_or(0);
                (object_key(kind, &name), version)
            })
            .collect()
    }

    /// [`Engine::objects_listed`] without the kept versions (nothing is then known
    /// gone to a rollback).
    #[cfg(test)]
    pub fn objects(&mut self, latest: ObjectVersions, now: f64) -> Vec<Action> {
        self.kept_objects = None;
        self.objects_and_kept(latest, None, now)
    }

    /// The latest version of every config and secret (the master's `ListObjects`).
    /// Each app whose pins differ gets a new version with the new pins: a rolling
    /// update within its upgrade strategy, as if its spec had changed (old tasks keep
    /// running with what they got until replaced), its cause (`secret db-pass version
    /// 4`) recorded. A pin of 0 (deployed before the version was known: its tasks got
    /// the latest at launch) is only recorded. An object no longer listed (removed)
    /// changes nothing: launches that need it fail at the master and the app shows it.
    /// `kept`: every version the master keeps of each, which tells a rollback that a
    /// version it would pin again is gone.
    pub fn objects_listed(
        &mut self,
        latest: ObjectVersions,
        kept: KeptVersions,
        now: f64,
    ) -> Vec<Action> {
        self.objects_and_kept(latest, Some(kept), now)
    }

    fn objects_and_kept(
        &mut self,
        latest: ObjectVersions,
        kept: Option<KeptVersions>,
        now: f64,
    ) -> Vec<Action> {
        self.kept_objects = kept;
        self.latest_objects = latest;
        self.objects_listed_at = Some(now);
        let mut rolled = false;
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            let app = &self.apps[&id];
            if app.destroying {
                continue;
            }
            let mut pins = app.objects.clone();
            let mut changed = Vec::new();
            let mut learned = false;
            for (kind, name) in app.spec.object_names() {
                let Some(&version) = self.latest_objects.get(&(kind, name.clone())) else {
                    continue;
                };
                let key = object_key(kind, &name);
                let held = app.objects_held.get(&key).copied().unwrap_or(0);
                let pin = pins.entry(key).or_insert(0);
                if *pin == version {
                    continue;
                }
                if *pin == 0 {
                    learned = true;
                } else if version <= held {
                    // A rollback went back from this version: only a newer one rolls
                    // the app forward.
                    continue;
                } else {
                    changed.push(format!(
                        "{} {name} version {version}",
                        strata_proto::objects::kind_name(kind)
                    ));
                }
                *pin = version;
            }
            if changed.is_empty() && !learned {
                continue;
            }
            if changed.is_empty() {
                tracing::info!(app = %id, objects = ?pins, "object versions learned");
                let version = app.version.clone();
                if let Some(current) = self
                    .versions
                    .get_mut(&id)
                    .and_then(|v| v.last_mut())
                    .filter(|v| v.version == version)
                {
                    current.objects = pins.clone();
                    self.save_versions(&id);
                }
                self.apps.get_mut(&id).expect("listed").objects = pins;
                self.save_app(&id);
                continue;
            }
            let cause = changed.join(", ");
            tracing::info!(app = %id, %cause, "a newer version of an object: rolling the app");
            let version = self.new_version(Some(app), now);
            let mut deployment = self.deployment(DeploymentKind::Update, &id, &version, now);
            deployment.cause = Some(cause.clone());
            let rec = self.apps.get_mut(&id).expect("listed");
            rec.version = version;
            rec.objects = pins;
            rec.objects_held = BTreeMap::new();
            rec.version_cause = Some(cause);
            rec.deployment = Some(deployment);
            rec.backoff = BackoffState::default();
            self.record_version(&id);
            self.save_app(&id);
            rolled = true;
        }
        if !rolled {
            return Vec::new();
        }
        // Demand changed, as after a deploy.
        self.last_pending = 0;
        self.tick(now)
    }

    // ---- scheduler events ------------------------------------------------------

    /// Subscribed (first time or again): remember the id, and reconcile every task.
    pub fn subscribed(&mut self, framework_id: &str, now: f64) -> Vec<Action> {
        if self.framework_id.as_deref() != Some(framework_id) {
            self.framework_id = Some(framework_id.to_string());
            self.writes
                .push(Write::FrameworkId(framework_id.to_string()));
        }
        self.suppressed = false;
        self.last_pending = 0;
        self.last_reconcile = now;
        self.last_revive = now;
        self.last_offers = now;
        self.revived_at = None;
        let tasks = self
            .tasks
            .values()
            .map(|t| v1::ReconcileTask {
                task_id: t.id.clone(),
                agent_id: t.agent_id.clone(),
            })
            .collect();
        vec![Action::Reconcile(tasks), Action::Revive]
    }

    /// A status update for one of our tasks (or one we do not know: it is killed).
    pub fn status(&mut self, status: &v1::TaskStatus, now: f64) -> Vec<Action> {
        let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
        tracing::info!(
            task = %status.task_id,
            state = state.as_str_name(),
            healthy = ?status.healthy,
            uuid = %status.uuid,
            reason = status.reason().as_str_name(),
            message = %status.message,
            "status update"
        );
        let mut actions = Vec::new();
        if let Some((app_id, instance)) = self
            .tasks
            .get(&status.task_id)
            .and_then(|t| Some((t.app_id.clone(), t.resident.clone()?)))
        {
            self.resident_update(&app_id, &instance, state);
        }
        let Some(task) = self.tasks.get_mut(&status.task_id) else {
            if !is_terminal(state) && state != TaskState::TaskUnknown {
                tracing::warn!(task = %status.task_id, "killing a task this framework does not know");
                actions.push(Action::Kill {
                    task_id: status.task_id.clone(),
                    agent_id: status.agent_id.clone(),
                    grace_seconds: 3.0,
                });
            }
            return actions;
        };
        let gone = is_terminal(state)
            || (state == TaskState::TaskUnknown
                && status.reason() == v1::TaskStatusReason::ReasonReconciliation);
        if gone {
            let task = self.tasks.remove(&status.task_id).expect("present");
            self.save_task(&status.task_id);
            // A launch that never reached the cluster (the service stopped between
            // recording the task and launching it): the master has never heard of it.
            // That is no failure of the app's, and no reason to back off.
            let never_launched = task.started_at.is_none()
                && status.reason() == v1::TaskStatusReason::ReasonReconciliation
                && matches!(
                    state,
                    TaskState::TaskGone | TaskState::TaskUnknown | TaskState::TaskDropped
                );
            let expected = never_launched
                || task.is_killing()
                || self.apps.get(&task.app_id).is_none_or(|a| a.destroying);
            if !expected && let Some(app) = self.apps.get_mut(&task.app_id) {
                let b = &app.spec.backoff;
                // A failure long after the last one starts over (Kubernetes resets a
                // crash-loop backoff after 10 minutes without trouble).
                let fresh = now - app.backoff.until >= BACKOFF_RESET_SECONDS;
                let delay = if app.backoff.delay <= 0.0 || fresh {
                    b.seconds
                } else {
                    (app.backoff.delay * b.factor).min(b.max_seconds)
                };
                app.backoff = BackoffState {
                    delay,
                    until: now + delay,
                };
                app.last_failure = Some(TaskFailureView {
                    task_id: task.id.clone(),
                    state: state.as_str_name().to_string(),
                    message: status.message.clone(),
                    timestamp: rfc3339(now),
                });
                let app_id = task.app_id.clone();
                self.save_app(&app_id);
            }
        } else {
            if state != TaskState::Unspecified && state != TaskState::TaskUnknown {
                task.state = state;
            }
            if let Some(h) = status.healthy {
                task.healthy = Some(h);
            }
            match state {
                TaskState::TaskRunning => {
                    task.unreachable_since = None;
                    if task.started_at.is_none() {
                        task.started_at = Some(now);
                    }
                }
                TaskState::TaskUnreachable if task.unreachable_since.is_none() => {
                    task.unreachable_since = Some(now);
                }
                _ => {}
            }
            if !status.message.is_empty() {
                task.message = status.message.clone();
            }
            let id = status.task_id.clone();
            self.save_task(&id);
        }
        actions.extend(self.tick(now));
        actions
    }

    /// Periodic work: kills the plans ask for, deployments that finished, apps
    /// destroyed, kills to retry, and suppress/revive as demand changes.
    pub fn tick(&mut self, now: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut pending = 0;
        let app_ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in app_ids {
            let plan = self.plan_for(&id, now);
            for t in &plan.kill {
                self.request_kill(t, now, &mut actions);
            }
            let app = self.apps.get(&id).expect("listed");
            let (destroying, has_deployment, backoff_until) =
                (app.destroying, app.deployment.is_some(), app.backoff.until);
            // `app rm --wipe` waits for the instances' volumes to be destroyed.
            let wiped = !app.wipe || app.residents.is_empty();
            if destroying && wiped && self.tasks.values().all(|t| t.app_id != id) {
                self.apps.remove(&id);
                self.waiting.remove(&id);
                self.save_app(&id);
                continue;
            }
            if plan.converged && has_deployment {
                self.apps.get_mut(&id).expect("listed").deployment = None;
                self.waiting.remove(&id);
                self.save_app(&id);
            }
            if plan.launch > 0 && backoff_until <= now {
                pending += plan.launch;
            }
        }
        pending += self.wipes_pending();
        self.relocate_lost();
        // Launches that never got going, and killed tasks whose agent stays away.
        let mut expired = Vec::new();
        let mut stale_launches = Vec::new();
        for t in self.tasks.values() {
            let unreachable_limit = self
                .apps
                .get(&t.app_id)
                .map(|a| a.spec.unreachable_replace_seconds)
                .unwrap_or(60.0);
            if t.is_killing()
                && t.unreachable_since
                    .is_some_and(|since| now - since >= unreachable_limit)
            {
                // The master keeps the kill for when the agent returns; a task that
                // comes back unknown to us is killed on its first update.
                expired.push(t.id.clone());
            } else if !t.is_killing()
                && matches!(t.state, TaskState::TaskStaging | TaskState::TaskStarting)
                && now - t.staged_at >= LAUNCH_TIMEOUT_SECONDS
            {
                stale_launches.push(t.id.clone());
            }
        }
        for id in expired {
            self.tasks.remove(&id);
            self.save_task(&id);
        }
        for id in stale_launches {
            tracing::warn!(task = %id, "not running {LAUNCH_TIMEOUT_SECONDS} s after its launch: killed and replaced");
            self.request_kill(&id, now, &mut actions);
        }
        // Kills not answered in time are sent again.
        let grace: HashMap<String, f64> = self
            .apps
            .iter()
            .map(|(k, a)| (k.clone(), a.spec.kill_grace_period_seconds))
            .collect();
        let mut resend = Vec::new();
        for t in self.tasks.values_mut() {
            if let Some(at) = t.kill_requested_at
                && now - at >= KILL_RETRY_SECONDS
            {
                t.kill_requested_at = Some(now);
                resend.push((
                    t.id.clone(),
                    t.agent_id.clone(),
                    grace.get(&t.app_id).copied().unwrap_or(3.0),
                ));
            }
        }
        for (id, agent_id, g) in resend {
            self.save_task(&id);
            actions.push(Action::Kill {
                task_id: id,
                agent_id,
                grace_seconds: g,
            });
        }
        // Something pending and no offer for a while (a lost revive, a filter): revive.
        let starved = pending > 0
            && now - self.last_offers >= RECONCILE_SECONDS
            && now - self.last_revive >= RECONCILE_SECONDS;
        if pending > 0 && (self.suppressed || pending > self.last_pending || starved) {
            if self.suppressed {
                // The first attempt counts (a failed revive is retried while still
                // suppressed).
                self.revived_at.get_or_insert(now);
            }
            self.suppressed = false;
            self.last_revive = now;
            actions.push(Action::Revive);
        } else if pending == 0 && !self.suppressed {
            self.suppressed = true;
            self.revived_at = None;
            actions.push(Action::Suppress);
        }
        self.last_pending = pending;
        // Tasks whose state we are not sure of are reconciled now and then.
        if now - self.last_reconcile >= RECONCILE_SECONDS {
            self.last_reconcile = now;
            let unsure: Vec<v1::ReconcileTask> = self
                .tasks
                .values()
                .filter(|t| !t.is_running() || t.is_killing())
                .map(|t| v1::ReconcileTask {
                    task_id: t.id.clone(),
                    agent_id: t.agent_id.clone(),
                })
                .collect();
            if !unsure.is_empty() {
                actions.push(Action::ReconcileTasks(unsure));
            }
        }
        actions
    }

    /// A REVIVE did not reach the master: the next tick tries again.
    pub fn revive_failed(&mut self) {
        self.suppressed = true;
    }

    fn request_kill(&mut self, task_id: &str, now: f64, actions: &mut Vec<Action>) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        if t.kill_requested_at.is_some() {
            return;
        }
        t.kill_requested_at = Some(now);
        let grace = self
            .apps
            .get(&t.app_id)
            .map(|a| a.spec.kill_grace_period_seconds)
            .unwrap_or(3.0);
        let agent_id = t.agent_id.clone();
        self.save_task(task_id);
        actions.push(Action::Kill {
            task_id: task_id.to_string(),
            agent_id,
            grace_seconds: grace,
        });
    }

    fn live_tasks(&self, app_id: &str) -> Vec<&TaskRecord> {
        self.tasks.values().filter(|t| t.app_id == app_id).collect()
    }

    fn plan_for(&self, app_id: &str, now: f64) -> Plan {
        match self.apps.get(app_id) {
            Some(app) => plan::plan(app, &self.live_tasks(app_id), now),
            None => Plan::default(),
        }
    }

    /// Offers: launch what is pending where it fits and the constraints allow;
    /// decline the rest.
    pub fn offers(&mut self, offers: Vec<v1::Offer>, now: f64) -> Vec<Action> {
        self.last_offers = now;
        self.revived_at = None;
        self.adopt_residents(&offers);
        // What each app still needs, in app order.
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for (id, app) in &self.apps {
            if app.destroying || app.backoff.until > now {
                continue;
            }
            let plan = plan::plan(app, &self.live_tasks(id), now);
            if plan.launch > 0 {
                wanted.push((id.clone(), plan.launch));
            }
        }
        let mut actions = Vec::new();
        if wanted.is_empty() && self.wipes_pending() == 0 {
            let ids: Vec<String> = offers.into_iter().map(|o| o.id).collect();
            if !ids.is_empty() {
                actions.push(Action::Decline {
                    offer_ids: ids,
                    refuse_seconds: DECLINE_REFUSE_SECONDS,
                });
            }
            actions.extend(self.tick(now));
            return actions;
        }

        let mut largest = Largest::default();
        let mut unmet: HashMap<String, String> = HashMap::new();
        let mut placed_any: HashMap<String, bool> = HashMap::new();
        let mut unused = Vec::new();
        // The round's offers: each with what is left of it and the tasks placed on it.
        let mut slots: Vec<Slot> = Vec::new();
        for offer in offers {
            let Ok(mut available) = offer_resources(&offer) else {
                unused.push(offer.id.clone());
                continue;
            };
            // The offer's role: the unreserved resources, and those reserved for the
            // framework's role (which tasks take first).
            available = available.allocatable_to(offer_role(&offer));
            largest.see(&available);
            let placement = Placement {
                hostname: offer.hostname.clone(),
                attributes: offer
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
            };
            slots.push(Slot {
                offer,
                placement,
                available,
                operations: Vec::new(),
                launched: Vec::new(),
            });
        }
        // `app rm --wipe` of resident apps, then resident apps' instances (each on its
        // agent, or new ones with their reservations and volumes).
        self.wipe_residents(&mut slots);
        let residents =
            self.place_residents(&mut wanted, &mut slots, &mut unmet, &mut placed_any, now);
        // Apps placed with `spread`: every instance where the app has the fewest,
        // looking at all of the round's offers.
        let mut spread =
            self.place_spread(&mut wanted, &mut slots, &mut unmet, &mut placed_any, now);
        spread.extend(residents);
        // Apps placed with `pack`: first fit, offer after offer.
        for slot in slots.iter_mut() {
            // Round robin over the apps until nothing more fits on this offer.
            loop {
                let mut progress = false;
                for (app_id, left) in wanted.iter_mut() {
                    if *left == 0 || spread.contains(app_id.as_str()) {
                        continue;
                    }
                    match self.try_place(app_id, &slot.offer, &slot.placement, &slot.available, now)
                    {
                        Ok((task, used)) => {
                            slot.available.subtract(&used);
                            slot.launched.push(task);
                            *left -= 1;
                            progress = true;
                            placed_any.insert(app_id.clone(), true);
                        }
                        Err(reason) => {
                            if let Some(r) = reason {
                                unmet.insert(app_id.clone(), r);
                            }
                        }
                    }
                }
                if !progress {
                    break;
                }
            }
        }
        for slot in slots {
            if slot.launched.is_empty() && slot.operations.is_empty() {
                unused.push(slot.offer.id.clone());
            } else {
                actions.push(Action::Launch {
                    offer_id: slot.offer.id.clone(),
                    operations: slot.operations,
                    tasks: slot.launched,
                });
            }
        }
        for (app_id, left) in &wanted {
            if *left == 0 {
                self.waiting.remove(app_id);
                continue;
            }
            let reason = match unmet.get(app_id) {
                Some(r) => r.clone(),
                None => {
                    let app = self.apps.get(app_id).expect("listed");
                    largest.why_not(&needs_of(&app.spec))
                }
            };
            if !placed_any.contains_key(app_id) || !reason.is_empty() {
                self.waiting.insert(app_id.clone(), reason);
            }
        }
        if !unused.is_empty() {
            actions.push(Action::Decline {
                offer_ids: unused,
                refuse_seconds: DECLINE_REFUSE_SECONDS,
            });
        }
        actions.extend(self.tick(now));
        actions
    }

    /// Places the instances wanted by the apps with `spread` placement on the round's
    /// offers (`slots`), one instance per app in turn: each goes to the offer whose
    /// spread value (the `spread` field's, or the agent when unset) has the fewest of
    /// the app's current tasks, then whose agent has the fewest, then the first offer.
    /// An offer where an instance does not fit or a constraint forbids it is not tried
    /// again for that app this round (what is left only shrinks, constraints only
    /// tighten). Deterministic: it depends on the offers' order, not on hashing.
    /// Returns the ids of the apps it placed for (the spread apps).
    fn place_spread(
        &mut self,
        wanted: &mut [(String, u32)],
        slots: &mut [Slot],
        unmet: &mut HashMap<String, String>,
        placed_any: &mut HashMap<String, bool>,
        now: f64,
    ) -> std::collections::HashSet<String> {
        let mut spreading: Vec<Option<Spreading>> = wanted
            .iter()
            .map(|(app_id, _)| {
                let app = self.apps.get(app_id)?;
                if app.spec.placement != PlacementStrategy::Spread || app.spec.is_resident() {
                    return None;
                }
                // The app's current tasks (a rolling update spreads the new version).
                let current = self
                    .tasks
                    .values()
                    .filter(|t| t.app_id == *app_id && !t.is_killing() && t.version == app.version);
                let s = Spreading::new(app.spec.spread.as_deref(), slots, current);
                Some(s)
            })
            .collect();
        let ids = wanted
            .iter()
            .zip(&spreading)
            .filter(|(_, s)| s.is_some())
            .map(|((id, _), _)| id.clone())
            .collect();
        loop {
            let mut progress = false;
            for ((app_id, left), s) in wanted.iter_mut().zip(spreading.iter_mut()) {
                let Some(s) = s else { continue };
                if *left == 0 {
                    continue;
                }
                while let Some(i) = (0..slots.len())
                    .filter(|&i| !s.tried[i])
                    .min_by_key(|&i| (s.rank(i), i))
                {
                    let slot = &mut slots[i];
                    match self.try_place(app_id, &slot.offer, &slot.placement, &slot.available, now)
                    {
                        Ok((task, used)) => {
                            slot.available.subtract(&used);
                            slot.launched.push(task);
                            s.placed(i);
                            *left -= 1;
                            progress = true;
                            placed_any.insert(app_id.clone(), true);
                            break;
                        }
                        Err(reason) => {
                            if let Some(r) = reason {
                                unmet.insert(app_id.clone(), r);
                            }
                            s.tried[i] = true;
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        ids
    }

    /// Places one task of `app_id` on the offer: Ok(task, resources used), or
    /// Err(Some(reason)) when a constraint forbids it, Err(None) when it does not fit.
    fn try_place(
        &mut self,
        app_id: &str,
        offer: &v1::Offer,
        placement: &Placement,
        available: &Resources,
        now: f64,
    ) -> Result<(v1::TaskInfo, Resources), Option<String>> {
        let app = self.apps.get(app_id).ok_or(None)?;
        let (needs, ports) = self.fit(
            app_id,
            &app.spec,
            needs_of(&app.spec),
            offer,
            placement,
            available,
        )?;
        let task = self.record_task(app_id, offer, placement, &needs, ports, None, now);
        Ok((task, needs))
    }

    /// What one task of `app_id` with `needs` (and the spec's ports) takes of
    /// `available`, and its ports: Err(Some(reason)) when a constraint forbids the
    /// agent, Err(None) when it does not fit.
    fn fit(
        &self,
        app_id: &str,
        spec: &AppSpec,
        mut needs: Resources,
        offer: &v1::Offer,
        placement: &Placement,
        available: &Resources,
    ) -> Result<(Resources, Vec<u16>), Option<String>> {
        // Resources first.
        let free_ports = available.ports();
        let mut ports: Vec<u16> = Vec::new();
        let mut taken = RangeSet::new();
        for p in &spec.ports {
            let want = match p {
                PortSpec::Host(h) => *h,
                PortSpec::Mapping(m) => m.host_port,
            };
            if want != 0 {
                if !free_ports.contains_value(want as u64) || taken.contains_value(want as u64) {
                    return Err(None);
                }
                taken.insert(want as u64, want as u64);
                ports.push(want);
            } else {
                ports.push(0);
            }
        }
        for slot in ports.iter_mut() {
            if *slot == 0 {
                let mut left = free_ports.clone();
                left.remove(&taken);
                let one = left.take_lowest(1).ok_or(None)?;
                let v = one.ranges()[0].0;
                taken.insert(v, v);
                *slot = v as u16;
            }
        }
        if !taken.is_empty() {
            needs = needs.with_ranges("ports", taken);
        }
        let needs = match &spec.accepted_resource_roles {
            None => available.pick(&needs, offer_role(offer)),
            Some(roles) => {
                let role = offer_role(offer);
                let mut allowed = Resources::new();
                if roles.iter().any(|r| r == "*") {
                    allowed.add(&available.unreserved());
                }
                if role != "*" && roles.iter().any(|r| r == role) {
                    allowed.add(&available.reserved_for(role));
                }
                allowed.pick(&needs, role)
            }
        }
        .ok_or(None)?;
        // Then constraints, against where the app's tasks run.
        if !spec.constraints.is_empty() {
            let placed: Vec<Placement> = self
                .tasks
                .values()
                .filter(|t| t.app_id == app_id && !t.is_killing())
                .map(|t| Placement {
                    hostname: t.hostname.clone(),
                    attributes: t.attributes.clone(),
                })
                .collect();
            let refs: Vec<&Placement> = placed.iter().collect();
            constraints::check(&spec.constraints, placement, &refs)
                .map_err(|unmet| Some(unmet.to_string()))?;
        }
        Ok((needs, ports))
    }

    /// Records a task of `app_id` launched on the offer with `resources` and `ports`
    /// (as the instance `resident` of a resident app) and builds it.
    #[allow(clippy::too_many_arguments)]
    fn record_task(
        &mut self,
        app_id: &str,
        offer: &v1::Offer,
        placement: &Placement,
        needs: &Resources,
        ports: Vec<u16>,
        resident: Option<String>,
        now: f64,
    ) -> v1::TaskInfo {
        let task_id = self.next_id(app_id);
        let app = self.apps.get(app_id).expect("checked");
        let task = build_task(app, &task_id, &offer.agent_id, needs, &ports);
        let record = TaskRecord {
            id: task_id.clone(),
            app_id: app_id.to_string(),
            version: app.version.clone(),
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            agent_address: offer.agent_address.clone(),
            attributes: placement.attributes.clone(),
            ports,
            state: TaskState::TaskStaging,
            healthy: None,
            staged_at: now,
            started_at: None,
            message: String::new(),
            kill_requested_at: None,
            unreachable_since: None,
            checked: !app.spec.health_checks.is_empty(),
            resident,
        };
        self.tasks.insert(task_id.clone(), record);
        self.save_task(&task_id);
        task
    }

    /// A launch the master refused or that was never sent: forget the tasks (the plan
    /// launches them again). When the outcome is unknown (a timeout), keep them: the
    /// next reconciliation says what became of them.
    pub fn launch_failed(&mut self, task_ids: &[String], now: f64) -> Vec<Action> {
        for id in task_ids {
            if let Some(t) = self.tasks.get(id)
                && t.state == TaskState::TaskStaging
            {
                self.tasks.remove(id);
                self.save_task(id);
            }
        }
        self.tick(now)
    }

    // ---- views -----------------------------------------------------------------

    pub fn app_ids(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    pub fn app_view(&self, id: &str, now: f64) -> Option<AppView> {
        let app = self.apps.get(id)?;
        let tasks = self.live_tasks(id);
        let c = plan::counts(app, &tasks);
        let p = plan::plan(app, &tasks, now);
        let deployment = app.deployment.as_ref().map(|d| DeploymentView {
            id: d.id.clone(),
            app_id: id.to_string(),
            kind: d.kind.as_str().to_string(),
            version: d.version.clone(),
            started_at: rfc3339(d.started_at),
            target_instances: if app.destroying {
                0
            } else {
                app.spec.instances
            },
            ready_instances: p.ready,
            waiting: self.waiting_reason(app, id, &p, now, false),
            cause: d.cause.clone(),
        });
        Some(AppView {
            id: id.to_string(),
            spec: app.spec.clone(),
            version: app.version.clone(),
            instances: if app.destroying {
                0
            } else {
                app.spec.instances
            },
            tasks_staged: c.staged,
            tasks_running: c.running,
            tasks_healthy: c.healthy,
            tasks_unhealthy: c.unhealthy,
            tasks_old_version: c.old_version,
            deployment,
            last_failure: app.last_failure.clone(),
            backoff_seconds: (app.backoff.until > now).then_some(app.backoff.until - now),
            ports: port_names(&app.spec)
                .into_iter()
                .zip(&app.spec.ports)
                .enumerate()
                .map(|(index, ((name, protocol), port))| PortView {
                    index,
                    name,
                    protocol,
                    service_port: port.service_port().filter(|n| *n != 0),
                })
                .collect(),
            endpoints: endpoints(app, &tasks),
            objects: app.objects.clone(),
            version_cause: app.version_cause.clone(),
            residents: app
                .residents
                .iter()
                .map(|(instance, r)| ResidentView {
                    instance: instance.clone(),
                    agent_id: r.agent_id.clone(),
                    hostname: r.hostname.clone(),
                    volumes: r.volumes.clone(),
                    task_id: tasks
                        .iter()
                        .find(|t| t.resident.as_deref() == Some(instance.as_str()))
                        .map(|t| t.id.clone()),
                    lost: r.lost,
                    note: r.lost.then(|| resident::lost_note(instance, &r.hostname)),
                })
                .collect(),
        })
    }

    /// Why the app's deployment does not progress (empty: it does). `stable`: the
    /// form that changes only when something does (the dashboards' feed): when a
    /// backoff ends, since when offers are missing, rather than how long.
    fn waiting_reason(
        &self,
        app: &AppRecord,
        id: &str,
        p: &Plan,
        now: f64,
        stable: bool,
    ) -> String {
        if app.backoff.until > now && p.launch > 0 {
            if stable {
                return format!(
                    "restart backoff: next launch at {}",
                    clock(app.backoff.until.ceil())
                );
            }
            return format!(
                "restart backoff: next launch in {:.1} s",
                app.backoff.until - now
            );
        }
        if app.destroying && app.wipe && !app.residents.is_empty() {
            let hosts: BTreeSet<&str> = app
                .residents
                .values()
                .map(|r| r.hostname.as_str())
                .collect();
            return format!(
                "wiping {} instance(s): destroying their volumes on {}",
                app.residents.len(),
                hosts.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        if p.launch == 0 {
            if app.deployment.is_none() || p.converged || app.destroying {
                return String::new();
            }
            let n = app.spec.instances;
            return if p.ready < n {
                format!(
                    "waiting for {} new task(s) to be running and healthy",
                    n - p.ready
                )
            } else {
                "waiting for old tasks to be killed".to_string()
            };
        }
        // Offers were suppressed (nothing was pending) and are being revived: until the
        // first offer after the revive, say so, and count quiet time from the revive.
        if let Some(since) = self.revived_at.or(self.suppressed.then_some(now)) {
            let quiet = now - since;
            return if quiet < QUIET_OFFERS_SECONDS {
                "reviving offers".to_string()
            } else if stable {
                format!("reviving offers: none since {}", clock(since))
            } else {
                format!("reviving offers: none for {quiet:.0} s")
            };
        }
        // What the last offers said, or that none came: offers stop when the cluster
        // is full, when every agent's offer is filtered, or when the master is away.
        let quiet = now - self.last_offers;
        if stable && quiet >= QUIET_OFFERS_SECONDS {
            let since = if self.last_offers > 0.0 {
                format!("since {}", clock(self.last_offers))
            } else {
                "yet".to_string()
            };
            return match self.waiting.get(id) {
                Some(reason) => format!("{reason} (no offer {since})"),
                None => format!("waiting for offers: none {since}"),
            };
        }
        match self.waiting.get(id) {
            Some(reason) if quiet < QUIET_OFFERS_SECONDS => reason.clone(),
            Some(reason) => format!("{reason} (no offer for {quiet:.0} s)"),
            None if quiet < QUIET_OFFERS_SECONDS => "waiting for offers".to_string(),
            None => format!("waiting for offers: none for {quiet:.0} s"),
        }
    }

    /// Every app's live numbers, as the dashboards' feed sends them every second:
    /// from one pass over the tasks rather than a full view of each app, the waiting
    /// reason in its stable form (a countdown says when it ends).
    pub fn app_numbers(&self, now: f64) -> BTreeMap<String, AppNumbers> {
        let mut by_app: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
        for t in self.tasks.values() {
            by_app.entry(t.app_id.as_str()).or_default().push(t);
        }
        self.apps
            .iter()
            .map(|(id, app)| {
                let tasks = by_app
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let c = plan::counts(app, tasks);
                let desired = if app.destroying {
                    0
                } else {
                    app.spec.instances
                };
                let (deployment, waiting) = match &app.deployment {
                    Some(d) => {
                        let p = plan::plan(app, tasks, now);
                        (
                            format!("{} {}/{desired}", d.kind.as_str(), p.ready),
                            self.waiting_reason(app, id, &p, now, true),
                        )
                    }
                    None => ("—".to_string(), String::new()),
                };
                let numbers = AppNumbers {
                    running: c.running,
                    healthy: c.healthy,
                    desired,
                    staged: c.staged,
                    version: app.version.clone(),
                    deployment,
                    waiting,
                };
                (id.clone(), numbers)
            })
            .collect()
    }

    pub fn apps(&self, now: f64) -> Vec<AppView> {
        self.apps
            .keys()
            .filter_map(|id| self.app_view(id, now))
            .collect()
    }

    pub fn deployments(&self, now: f64) -> Vec<DeploymentView> {
        self.apps(now)
            .into_iter()
            .filter_map(|a| a.deployment)
            .collect()
    }

    pub fn task_view(&self, t: &TaskRecord) -> AppTaskView {
        AppTaskView {
            id: t.id.clone(),
            app_id: t.app_id.clone(),
            version: t.version.clone(),
            agent_id: t.agent_id.clone(),
            hostname: t.hostname.clone(),
            agent_address: t.agent_address.clone(),
            state: t.state.as_str_name().to_string(),
            healthy: t.healthy,
            ports: t.ports.clone(),
            staged_at: rfc3339(t.staged_at),
            started_at: t.started_at.map(rfc3339),
            message: t.message.clone(),
        }
    }

    pub fn tasks(&self, app: Option<&str>) -> Result<Vec<AppTaskView>, ApiError> {
        if let Some(a) = app
            && !self.apps.contains_key(a)
        {
            return Err(ApiError::AppNotFound(a.to_string()));
        }
        let mut out: Vec<AppTaskView> = self
            .tasks
            .values()
            .filter(|t| app.is_none_or(|a| t.app_id == a))
            .map(|t| self.task_view(t))
            .collect();
        out.sort_by(|a, b| a.app_id.cmp(&b.app_id).then(a.staged_at.cmp(&b.staged_at)));
        Ok(out)
    }

    pub fn task(&self, id: &str) -> Result<AppTaskView, ApiError> {
        self.tasks
            .get(id)
            .map(|t| self.task_view(t))
            .ok_or_else(|| ApiError::TaskNotFound(id.to_string()))
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

/// One offer of a round: what is left of it, and the tasks placed on it so far.
struct Slot {
    offer: v1::Offer,
    placement: Placement,
    available: Resources,
    /// RESERVE / CREATE / DESTROY / UNRESERVE to apply before the launch (resident
    /// apps).
    operations: Vec<v1::Operation>,
    launched: Vec<v1::TaskInfo>,
}

/// Where one app's current tasks are, for `spread` placement in one offer round:
/// counted per value of the spread field and per agent, for the values and agents of
/// the round's offers (tasks elsewhere do not change the choice).
struct Spreading {
    /// Each offer's value of the field (its agent's id when spreading by agent;
    /// agents lacking the attribute share one value, as in Docker Swarm), as an index
    /// into `by_value`.
    value_of: Vec<usize>,
    /// Each offer's agent, as an index into `by_agent`.
    agent_of: Vec<usize>,
    by_value: Vec<u32>,
    by_agent: Vec<u32>,
    /// Offers (by index) already found unfit for the app this round.
    tried: Vec<bool>,
}

impl Spreading {
    /// `field` is the spec's `spread` (`None`: by agent); `tasks` the app's tasks.
    fn new<'t>(
        field: Option<&str>,
        slots: &[Slot],
        tasks: impl Iterator<Item = &'t TaskRecord>,
    ) -> Spreading {
        let mut values: HashMap<Option<&str>, usize> = HashMap::new();
        let mut agents: HashMap<&str, usize> = HashMap::new();
        let mut value_of = Vec::with_capacity(slots.len());
        let mut agent_of = Vec::with_capacity(slots.len());
        for slot in slots {
            let agent = slot.offer.agent_id.as_str();
            let value = match field {
                None => Some(agent),
                Some(f) => slot.placement.field(f),
            };
            let next = values.len();
            value_of.push(*values.entry(value).or_insert(next));
            let next = agents.len();
            agent_of.push(*agents.entry(agent).or_insert(next));
        }
        let mut by_value = vec![0; values.len()];
        let mut by_agent = vec![0; agents.len()];
        for t in tasks {
            // As `Placement::field` reads it.
            let value = match field {
                None => Some(t.agent_id.as_str()),
                Some("hostname") => Some(t.hostname.as_str()),
                Some(f) => t.attributes.get(f).map(String::as_str),
            };
            if let Some(&v) = values.get(&value) {
                by_value[v] += 1;
            }
            if let Some(&a) = agents.get(t.agent_id.as_str()) {
                by_agent[a] += 1;
            }
        }
        Spreading {
            value_of,
            agent_of,
            by_value,
            by_agent,
            tried: vec![false; slots.len()],
        }
    }

    /// For offer `i`, lower is preferred: the app's tasks at the offer's value, then
    /// on its agent.
    fn rank(&self, i: usize) -> (u32, u32) {
        (
            self.by_value[self.value_of[i]],
            self.by_agent[self.agent_of[i]],
        )
    }

    /// An instance was placed on offer `i`.
    fn placed(&mut self, i: usize) {
        self.by_value[self.value_of[i]] += 1;
        self.by_agent[self.agent_of[i]] += 1;
    }
}

/// The scalar resources one task of the app needs (ports are added per offer).
fn needs_of(spec: &AppSpec) -> Resources {
    let mut r = Resources::new();
    for (name, v) in [("cpus", spec.cpus), ("mem", spec.mem), ("disk", spec.disk)] {
        if let Some(s) = Scalar::from_f64(v)
            && s.is_positive()
        {
            r = r.with_scalar(name, s);
        }
    }
    r
}

/// The role an offer was made to (`*` when it names none).
fn offer_role(offer: &v1::Offer) -> &str {
    if offer.role.is_empty() {
        "*"
    } else {
        &offer.role
    }
}

/// The largest amount of each resource seen in one offer of a round, to say why
/// nothing fits.
#[derive(Default)]
struct Largest {
    scalars: BTreeMap<String, Scalar>,
    ports: u64,
    offers: u32,
}

impl Largest {
    fn see(&mut self, r: &Resources) {
        self.offers += 1;
        for name in ["cpus", "mem", "disk"] {
            let v = r.scalar(name);
            let e = self.scalars.entry(name.to_string()).or_insert(v);
            if v > *e {
                *e = v;
            }
        }
        self.ports = self.ports.max(r.ports().count());
    }

    fn why_not(&self, needs: &Resources) -> String {
        if self.offers == 0 {
            return "waiting for offers".to_string();
        }
        let mut short = Vec::new();
        let mut have = Vec::new();
        for name in ["cpus", "mem", "disk"] {
            let need = needs.scalar(name);
            let best = self.scalars.get(name).copied().unwrap_or_default();
            if need.is_positive() && best < need {
                short.push(format!("{name} {need}"));
                have.push(format!("{name} {best}"));
            }
        }
        if short.is_empty() {
            let wanted: Vec<String> = ["cpus", "mem", "disk"]
                .iter()
                .filter(|n| needs.scalar(n).is_positive())
                .map(|n| format!("{n} {}", needs.scalar(n)))
                .collect();
            return format!(
                "no offer fits: needs {} (and its ports); no single offer has all of it",
                wanted.join(", ")
            );
        }
        format!(
            "no offer fits: needs {}, largest offer has {}",
            short.join(", "),
            have.join(", ")
        )
    }
}

/// The running instances of an app, where its service ports lead: each one's host and
/// ports and whether it is in the service proxies' rotation (running, reachable, not
/// being killed, healthy when checked: [`plan::is_healthy`]).
fn endpoints(app: &AppRecord, tasks: &[&TaskRecord]) -> Vec<EndpointView> {
    let mut out: Vec<EndpointView> = tasks
        .iter()
        .filter(|t| t.is_running() || t.state == TaskState::TaskKilling)
        .map(|t| EndpointView {
            task_id: t.id.clone(),
            host: t.hostname.clone(),
            ports: t.ports.clone(),
            state: t.state.as_str_name().to_string(),
            healthy: t.healthy,
            ready: plan::is_healthy(app, t) && !t.is_killing(),
        })
        .collect();
    out.sort_by(|a, b| (&a.host, &a.ports).cmp(&(&b.host, &b.ports)));
    out
}

/// The discovery name and protocol of each port of the spec, in its order: the name
/// the spec gives (lower-cased) when it is a DNS label not used before for the
/// protocol, else `portN` (else none, if even that is used).
fn port_names(spec: &AppSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let name = match port {
            PortSpec::Mapping(m) => m.name.clone(),
            PortSpec::Host(_) => None,
        };
        let protocol = port.protocol().to_string();
        let taken = |n: &str| out.iter().any(|(name, p)| name == n && *p == protocol);
        let name = name
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| strata_proto::discovery::is_port_name(n) && !taken(n.as_str()))
            .unwrap_or_else(|| format!("port{i}"));
        let name = if taken(name.as_str()) {
            String::new()
        } else {
            name
        };
        out.push((name, protocol));
    }
    out
}

/// The TaskInfo for one instance.
fn build_task(
    app: &AppRecord,
    task_id: &str,
    agent_id: &str,
    resources: &Resources,
    ports: &[u16],
) -> v1::TaskInfo {
    let spec = &app.spec;
    let mut env: HashMap<String, String> = spec
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Value(v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    env.insert("STRATA_APP_ID".into(), spec.id.clone());
    env.insert("STRATA_APP_VERSION".into(), app.version.clone());
    // PORTn in the spec's order (what port_index and the task view use); the agent
    // would otherwise number the task's ports in ascending order.
    for (i, port) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
        let all: Vec<String> = ports.iter().map(u16::to_string).collect();
        env.insert("PORTS".into(), all.join(","));
    }
    let command = match (&spec.cmd, spec.args.as_slice()) {
        (Some(cmd), _) => v1::CommandInfo {
            shell: true,
            value: cmd.clone(),
            arguments: vec![],
            environment: env,
            user: spec.user.clone().unwrap_or_default(),
        },
        (None, [program, rest @ ..]) if spec.image.is_none() => v1::CommandInfo {
            shell: false,
            value: program.clone(),
            arguments: rest.to_vec(),
            environment: env,
            user: spec.user.clone().unwrap_or_default(),
        },
        (None, args) => v1::CommandInfo {
            shell: false,
            value: String::new(),
            arguments: args.to_vec(),
            environment: env,
            user: spec.user.clone().unwrap_or_default(),
        },
    };
    let container = spec.image.as_ref().map(|image| {
        let network = match spec.network.as_deref() {
            Some("bridge") => v1::docker_info::Network::Bridge,
            Some("none") => v1::docker_info::Network::None,
            _ => v1::docker_info::Network::Host,
        };
        let pull = match spec.pull.as_deref() {
            Some("always") => v1::docker_info::PullPolicy::Always,
            Some("never") => v1::docker_info::PullPolicy::Never,
            _ => v1::docker_info::PullPolicy::IfNotPresent,
        };
        let port_mappings = spec
            .ports
            .iter()
            .zip(ports)
            .filter_map(|(p, host)| match p {
                PortSpec::Mapping(m) => m.container_port.map(|c| v1::docker_info::PortMapping {
                    host_port: *host as u32,
                    container_port: c as u32,
                    protocol: m.protocol.clone().unwrap_or_default(),
                }),
                PortSpec::Host(_) => None,
            })
            .collect();
        v1::ContainerInfo {
            r#type: v1::container_info::Type::Docker as i32,
            docker: Some(v1::DockerInfo {
                image: image.clone(),
                network: network as i32,
                port_mappings,
                pull_policy: pull as i32,
                force_pull: false,
            }),
            // Docker named volumes (issue 17); validated with the spec.
            volumes: spec
                .volumes
                .iter()
                .filter_map(|v| {
                    let mode = match v.mode.as_deref() {
                        Some("ro") => v1::volume::Mode::Ro,
                        _ => v1::volume::Mode::Rw,
                    };
                    Some(v1::Volume {
                        docker_volume: v.docker_volume.clone()?,
                        container_path: v.container_path.clone(),
                        mode: mode as i32,
                        ..Default::default()
                    })
                })
                .collect(),
        }
    });
    let health_check = spec.health_checks.first().map(|h| {
        let kind = match h.protocol.as_str() {
            "http" => v1::health_check::Type::Http,
            "tcp" => v1::health_check::Type::Tcp,
            _ => v1::health_check::Type::Command,
        };
        v1::HealthCheck {
            r#type: kind as i32,
            path: h.path.clone().unwrap_or_default(),
            port: ports.get(h.port_index).copied().unwrap_or(0) as u32,
            command: h.command.clone().unwrap_or_default(),
            delay_seconds: Some(h.delay_seconds),
            interval_seconds: Some(h.interval_seconds),
            timeout_seconds: Some(h.timeout_seconds),
            grace_period_seconds: Some(h.grace_period_seconds),
            consecutive_failures: Some(h.max_consecutive_failures),
        }
    });
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert("strata.app".into(), spec.id.clone());
    labels.insert("strata.version".into(), app.version.clone());
    // Discovery (issue 15): the app id is the service; one port per spec port, on the
    // host port the task got, named as the spec names it (lower-cased) or portN, with
    // its service port (if any) in the SERVICE_PORT_LABEL label: the service proxies
    // listen on it and forward to this port.
    let names = port_names(spec);
    let discovery_ports: Vec<v1::Port> = ports
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let (name, protocol) = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| (format!("port{i}"), "tcp".to_string()));
            let labels = spec
                .ports
                .get(i)
                .and_then(PortSpec::service_port)
                .filter(|n| *n != 0)
                .map(|n| {
                    HashMap::from([(
                        strata_proto::discovery::SERVICE_PORT_LABEL.to_string(),
                        n.to_string(),
                    )])
                })
                .unwrap_or_default();
            v1::Port {
                number: u32::from(*host),
                name,
                protocol,
                labels,
                ..Default::default()
            }
        })
        .collect();
    let discovery = v1::DiscoveryInfo {
        visibility: v1::discovery_info::Visibility::Cluster as i32,
        name: spec.id.clone(),
        version: app.version.clone(),
        ports: Some(v1::Ports {
            ports: discovery_ports,
        }),
        ..Default::default()
    };
    v1::TaskInfo {
        task_id: task_id.to_string(),
        name: spec.id.clone(),
        agent_id: agent_id.to_string(),
        resources: resources.to_proto(),
        command: Some(command),
        kill_policy: Some(v1::KillPolicy {
            grace_period_seconds: Some(spec.kill_grace_period_seconds),
        }),
        labels,
        data: vec![],
        container,
        health_check,
        discovery: Some(discovery),
        objects: object_refs(app),
    }
}

/// The configs and secrets of a task of the app's current version: the spec's
/// references, each with the version the app pins (0: the latest at launch).
fn object_refs(app: &AppRecord) -> Vec<v1::ObjectRef> {
    let mut refs = app.spec.object_refs();
    for r in &mut refs {
        if let Some(kind) = strata_proto::objects::kind_of(r.kind) {
            r.version = app
                .objects
                .get(&object_key(kind, &r.name))
                .copied()
                .unwrap_or(0);
        }
    }
    refs
}

/// The time of day (UTC, to the second) of seconds since the Unix epoch: `18:51:24
/// UTC`.
fn clock(epoch: f64) -> String {
    let t = rfc3339(epoch);
    format!("{} UTC", t.get(11..19).unwrap_or(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> AppSpec {
        AppSpec::from_json(json).unwrap()
    }

    fn offer(id: &str, agent: &str, host: &str, cpus: f64) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            hostname: host.into(),
            role: "*".into(),
            resources: Resources::parse(&format!("cpus:{cpus};mem:1024;ports:[31000-31010]"))
                .unwrap()
                .to_proto(),
            attributes: vec![],
            agent_address: format!("{host}:5051"),
        }
    }

    fn launched(actions: &[Action]) -> Vec<v1::TaskInfo> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Launch { tasks, .. } => tasks.clone(),
                _ => vec![],
            })
            .collect()
    }

    fn status(task: &str, state: TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn launches_what_fits_then_suppresses_and_revives_on_new_demand() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let (_, actions) = c
            .deploy(
                spec(serde_json::json!({"id": "a", "cmd": "x", "instances": 2, "cpus": 1})),
                false,
                1.0,
            )
            .unwrap();
        assert!(actions.contains(&Action::Revive), "{actions:?}");
        let actions = c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0);
        let tasks = launched(&actions);
        assert_eq!(tasks.len(), 2);
        for t in &tasks {
            c.status(&status(&t.task_id, TaskState::TaskRunning), 3.0);
        }
        // Converged: nothing pending, offers suppressed, the deployment is over.
        let actions = c.tick(4.0);
        assert!(c.apps(4.0)[0].deployment.is_none());
        assert!(
            actions.contains(&Action::Suppress) || c.suppressed,
            "{actions:?}"
        );
        // A new instance wanted: revive.
        let (_, actions) = c.scale("a", 3, 5.0).unwrap();
        assert!(actions.contains(&Action::Revive), "{actions:?}");
    }

    #[test]
    fn a_docker_app_mounts_its_named_volumes() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "db", "image": "postgres:16", "cpus": 1,
            "volumes": [{"docker_volume": "pgdata", "container_path": "/var/lib/postgresql/data"},
                        {"docker_volume": "seed", "container_path": "/seed", "mode": "ro"}]});
        c.deploy(spec(app), false, 1.0).unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        let volumes = &tasks[0].container.as_ref().unwrap().volumes;
        let seen: Vec<(&str, &str, v1::volume::Mode, &str)> = volumes
            .iter()
            .map(|v| {
                (
                    v.docker_volume.as_str(),
                    v.container_path.as_str(),
                    v1::volume::Mode::try_from(v.mode).unwrap(),
                    v.host_path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "pgdata",
                    "/var/lib/postgresql/data",
                    v1::volume::Mode::Rw,
                    ""
                ),
                ("seed", "/seed", v1::volume::Mode::Ro, "")
            ]
        );
    }

    /// A scale while offers are suppressed: the framework revives, and until an offer
    /// comes the deployment says so, never "none for 144 s" counted from the last
    /// offer before the suppression. Quiet time counts from the revive; once offers
    /// come, the usual reasons are back.
    #[test]
    fn a_scale_while_suppressed_says_reviving_offers_until_the_first_offer() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "instances": 1, "cpus": 1});
        c.deploy(spec(app), false, 1.0).unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        c.status(&status(&tasks[0].task_id, TaskState::TaskRunning), 3.0);
        c.tick(4.0);
        assert!(c.suppressed, "nothing pending: offers suppressed");
        // 144 s later (no offers while suppressed), the user scales up.
        let (view, actions) = c.scale("a", 3, 146.0).unwrap();
        assert!(actions.contains(&Action::Revive), "{actions:?}");
        let waiting =
            |c: &Engine, now: f64| c.app_view("a", now).unwrap().deployment.unwrap().waiting;
        assert_eq!(view.deployment.unwrap().waiting, "reviving offers");
        assert_eq!(waiting(&c, 150.0), "reviving offers");
        // No offer for a while after the revive: counted from the revive.
        c.tick(157.0);
        assert_eq!(waiting(&c, 158.0), "reviving offers: none for 12 s");
        // The first offer after the revive: what it said is the reason now.
        assert!(launched(&c.offers(vec![offer("o2", "ag1", "h1", 0.5)], 160.0)).is_empty());
        assert_eq!(
            waiting(&c, 161.0),
            "no offer fits: needs cpus 1, largest offer has cpus 0.5"
        );
        // Then quiet time counts from that offer.
        assert_eq!(
            waiting(&c, 175.0),
            "no offer fits: needs cpus 1, largest offer has cpus 0.5 (no offer for 15 s)"
        );
    }

    /// A revive that did not reach the master is retried; the wait still counts from
    /// the first attempt.
    #[test]
    fn a_failed_revive_keeps_saying_reviving_offers_from_the_first_attempt() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        assert!(c.tick(1.0).contains(&Action::Suppress));
        let app = serde_json::json!({"id": "a", "cmd": "x", "cpus": 1});
        let (view, actions) = c.deploy(spec(app), false, 100.0).unwrap();
        assert!(actions.contains(&Action::Revive), "{actions:?}");
        assert_eq!(view.deployment.unwrap().waiting, "reviving offers");
        c.revive_failed();
        assert!(c.tick(101.0).contains(&Action::Revive));
        let view = c.app_view("a", 115.0).unwrap();
        assert_eq!(
            view.deployment.unwrap().waiting,
            "reviving offers: none for 15 s"
        );
    }

    #[test]
    fn ports_are_numbered_in_the_specs_order() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "cpus": 1, "ports": [31005, 0],
            "health_checks": [{"protocol": "tcp", "port_index": 0}]});
        c.deploy(spec(app), false, 1.0).unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        let env = &tasks[0].command.as_ref().unwrap().environment;
        assert_eq!(env.get("PORT0").map(String::as_str), Some("31005"));
        assert_eq!(env.get("PORT1").map(String::as_str), Some("31000"));
        assert_eq!(env.get("PORTS").map(String::as_str), Some("31005,31000"));
        assert_eq!(tasks[0].health_check.as_ref().unwrap().port, 31005);
    }

    #[test]
    fn failures_back_off_exponentially_and_a_new_version_resets_it() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(
            spec(serde_json::json!({"id": "a", "cmd": "x", "cpus": 1,
                "backoff": {"seconds": 2, "factor": 2, "max_seconds": 5}})),
            false,
            1.0,
        )
        .unwrap();
        let mut now = 2.0;
        let mut delays = Vec::new();
        for i in 0..4 {
            let tasks = launched(&c.offers(vec![offer(&format!("o{i}"), "ag1", "h1", 4.0)], now));
            assert_eq!(tasks.len(), 1, "launch {i} at {now}");
            c.status(&status(&tasks[0].task_id, TaskState::TaskFailed), now);
            let wait = c.apps(now)[0].backoff_seconds.expect("backing off");
            delays.push((wait * 1000.0).round() / 1000.0);
            // Nothing is launched while backing off.
            assert!(launched(&c.offers(vec![offer("x", "ag1", "h1", 4.0)], now + 0.1)).is_empty());
            now += wait + 0.01;
        }
        assert_eq!(delays, vec![2.0, 4.0, 5.0, 5.0]);
        // A failure long after the last backoff ended starts over at `seconds`.
        let tasks = launched(&c.offers(vec![offer("o9", "ag1", "h1", 4.0)], now));
        now += BACKOFF_RESET_SECONDS;
        c.status(&status(&tasks[0].task_id, TaskState::TaskFailed), now);
        let wait = c.apps(now)[0].backoff_seconds.expect("backing off");
        assert!((wait - 2.0).abs() < 1e-6, "{wait}");
        let (view, _) = c.restart("a", now).unwrap();
        assert!(view.backoff_seconds.is_none());
    }

    /// The dashboards' feed numbers are the views' numbers, from one pass over the
    /// tasks; their waiting reason does not count down (a backoff says when it ends,
    /// missing offers since when), where the App API's does.
    #[test]
    fn the_feeds_numbers_match_the_views_and_do_not_count_down() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(
            spec(
                serde_json::json!({"id": "a", "cmd": "x", "cpus": 1, "instances": 2,
                "backoff": {"seconds": 30, "factor": 2, "max_seconds": 60}}),
            ),
            false,
            1.0,
        )
        .unwrap();
        c.deploy(cmd_app("one", 1), false, 1.0).unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        assert_eq!(tasks.len(), 3);
        for t in &tasks {
            let state = if t.task_id.starts_with("web.") {
                TaskState::TaskRunning
            } else {
                TaskState::TaskFailed
            };
            c.status(&status(&t.task_id, state), 3.0);
            if state == TaskState::TaskFailed {
                break; // one of a's fails, the other stays staged
            }
        }
        for now in [3.5, 4.5, 40.0] {
            let numbers = c.app_numbers(now);
            let views = c.apps(now);
            assert_eq!(numbers.len(), views.len());
            for v in views {
                let n = &numbers[&v.id];
                assert_eq!(
                    (n.running, n.healthy, n.desired, n.staged, &n.version),
                    (
                        v.tasks_running,
                        v.tasks_healthy,
                        v.instances,
                        v.tasks_staged,
                        &v.version
                    ),
                    "{}",
                    v.id
                );
                let d = v.deployment.as_ref().expect("deploying");
                let progress = format!("{} {}/{}", d.kind, d.ready_instances, d.target_instances);
                assert_eq!(n.deployment, progress, "{}", v.id);
            }
        }
        let waiting = |c: &Engine, now: f64| c.app_numbers(now)["a"].waiting.clone();
        assert_eq!(
            waiting(&c, 3.5),
            "restart backoff: next launch at 00:00:33 UTC"
        );
        assert_eq!(waiting(&c, 3.5), waiting(&c, 4.5), "the same every second");
        let api = |now: f64| c.app_view("a", now).unwrap().deployment.unwrap().waiting;
        assert_eq!(api(3.5), "restart backoff: next launch in 29.5 s");
        assert_ne!(api(3.5), api(4.5));
        // After the backoff, offers missing for long: the same text too.
        assert!(!waiting(&c, 40.0).is_empty());
        assert_eq!(waiting(&c, 40.0), waiting(&c, 41.0));
        assert_eq!(waiting(&c, 40.0), waiting(&c, 90.0));
        // What the last offers said, when they stopped coming: since when.
        c.waiting.insert("a".into(), "no offer fits".into());
        c.suppressed = false;
        c.revived_at = None;
        assert_eq!(
            waiting(&c, 60.0),
            "no offer fits (no offer since 00:00:02 UTC)"
        );
        assert_eq!(waiting(&c, 60.0), waiting(&c, 61.0));
    }

    #[test]
    fn an_unknown_running_task_is_killed_and_a_reconciled_gone_task_is_replaced() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let actions = c.status(&status("stranger", TaskState::TaskRunning), 1.0);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Kill { task_id, .. } if task_id == "stranger"))
        );

        c.deploy(
            spec(serde_json::json!({"id": "a", "cmd": "x", "cpus": 1})),
            false,
            1.0,
        )
        .unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        assert_eq!(tasks.len(), 1);
        // After a restart, the master says it never heard of it: replaced at once,
        // with no backoff and no failure recorded.
        let mut gone = status(&tasks[0].task_id, TaskState::TaskGone);
        gone.reason = v1::TaskStatusReason::ReasonReconciliation as i32;
        c.status(&gone, 3.0);
        assert!(c.tasks(None).unwrap().is_empty());
        let view = &c.apps(3.0)[0];
        assert_eq!(view.tasks_staged, 0);
        assert!(view.backoff_seconds.is_none() && view.last_failure.is_none());
        assert_eq!(
            launched(&c.offers(vec![offer("o2", "ag1", "h1", 4.0)], 3.5)).len(),
            1
        );
    }

    #[test]
    fn a_task_stuck_in_staging_is_killed_after_the_launch_timeout() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(
            spec(serde_json::json!({"id": "a", "cmd": "x", "cpus": 1})),
            false,
            1.0,
        )
        .unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        let actions = c.tick(2.0 + LAUNCH_TIMEOUT_SECONDS + 1.0);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Kill { task_id, .. } if *task_id == tasks[0].task_id)),
            "{actions:?}"
        );
        // And a replacement is wanted at once.
        let more = launched(&c.offers(
            vec![offer("o2", "ag1", "h1", 4.0)],
            2.0 + LAUNCH_TIMEOUT_SECONDS + 2.0,
        ));
        assert_eq!(more.len(), 1);
    }

    #[test]
    fn unmet_resources_and_constraints_are_explained() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(
            spec(serde_json::json!({"id": "big", "cmd": "x", "cpus": 2})),
            false,
            1.0,
        )
        .unwrap();
        c.offers(vec![offer("o1", "ag1", "h1", 1.5)], 2.0);
        let d = c.apps(2.0)[0].deployment.clone().unwrap();
        assert_eq!(
            d.waiting,
            "no offer fits: needs cpus 2, largest offer has cpus 1.5"
        );

        c.deploy(
            spec(
                serde_json::json!({"id": "u", "cmd": "x", "cpus": 0.1, "instances": 2,
                "constraints": ["hostname UNIQUE"]}),
            ),
            false,
            3.0,
        )
        .unwrap();
        let tasks = launched(&c.offers(vec![offer("o2", "ag1", "h1", 1.0)], 4.0));
        assert_eq!(tasks.len(), 1);
        let u = c.app_view("u", 4.0).unwrap();
        let waiting = u.deployment.unwrap().waiting;
        assert!(waiting.contains("hostname UNIQUE"), "{waiting}");
    }

    #[test]
    fn tasks_take_the_roles_reservation_first_and_never_another_roles() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(
            spec(
                serde_json::json!({"id": "a", "cmd": "x", "instances": 2, "cpus": 1.5, "mem": 64}),
            ),
            false,
            1.0,
        )
        .unwrap();
        // Offered to role web: one cpu reserved for it, two shared, and (should a
        // master ever send it) a cpu of another role, which must not be used.
        let mut o = offer("o1", "ag1", "h1", 0.0);
        o.role = "web".into();
        o.resources = Resources::parse("cpus(web):1;cpus:2;cpus(db):1;mem:1024")
            .unwrap()
            .to_proto();
        let tasks = launched(&c.offers(vec![o.clone()], 2.0));
        assert_eq!(tasks.len(), 2, "3 cpus of web and * fit two tasks of 1.5");
        let used: Vec<Resources> = tasks
            .iter()
            .map(|t| Resources::try_from_proto(&t.resources).unwrap())
            .collect();
        assert_eq!(
            used[0],
            Resources::parse("cpus(web):1;cpus:0.5;mem:64").unwrap()
        );
        assert_eq!(used[1], Resources::parse("cpus:1.5;mem:64").unwrap());
        let offered = Resources::try_from_proto(&o.resources).unwrap();
        let mut both = used[0].clone();
        both.add(&used[1]);
        assert!(offered.contains(&both));
    }

    /// Launched tasks per agent id.
    fn per_agent(tasks: &[v1::TaskInfo]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in tasks {
            *out.entry(t.agent_id.clone()).or_default() += 1;
        }
        out
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn zoned(id: &str, agent: &str, cpus: f64, zone: &str) -> v1::Offer {
        let mut o = offer(id, agent, agent, cpus);
        o.attributes = vec![v1::Attribute {
            name: "zone".into(),
            value: zone.into(),
        }];
        o
    }

    #[test]
    fn instances_are_spread_across_agents_by_default() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "instances": 4, "cpus": 1, "mem": 64});
        c.deploy(spec(app), false, 1.0).unwrap();
        let offers = vec![offer("o1", "ag1", "h1", 4.0), offer("o2", "ag2", "h2", 4.0)];
        let actions = c.offers(offers, 2.0);
        let tasks = launched(&actions);
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 2), ("ag2", 2)]));
        // One launch per offer, nothing declined.
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Launch { .. }))
                .count(),
            2
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Decline { .. })));
        // A scale counts the tasks already running: the next two go one per agent,
        // and an odd one goes to the first offer of the agents with the fewest.
        c.scale("a", 7, 3.0).unwrap();
        let offers = vec![offer("o3", "ag2", "h2", 2.0), offer("o4", "ag1", "h1", 2.0)];
        let tasks = launched(&c.offers(offers, 4.0));
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 1), ("ag2", 2)]));
    }

    /// Tasks placed in earlier rounds count: an agent seen for the first time gets
    /// the new instances, never a second one while it has fewer.
    #[test]
    fn spread_evens_out_with_the_tasks_already_placed() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "instances": 2, "cpus": 1, "mem": 64});
        c.deploy(spec(app), false, 1.0).unwrap();
        // Only ag1 is offered: both go there.
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 2)]));
        c.scale("a", 5, 3.0).unwrap();
        let offers = vec![offer("o2", "ag1", "h1", 2.0), offer("o3", "ag2", "h2", 4.0)];
        let tasks = launched(&c.offers(offers, 4.0));
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 1), ("ag2", 2)]));
    }

    /// An agent where an instance does not fit, or that a constraint rules out, is
    /// passed over for the next best; the constraints still apply.
    #[test]
    fn spread_goes_where_it_fits_and_the_constraints_allow() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "instances": 4, "cpus": 1, "mem": 64});
        c.deploy(spec(app), false, 1.0).unwrap();
        let offers = vec![offer("o1", "ag1", "h1", 1.0), offer("o2", "ag2", "h2", 4.0)];
        let tasks = launched(&c.offers(offers, 2.0));
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 1), ("ag2", 3)]));

        let app = serde_json::json!({"id": "m", "cmd": "x", "instances": 5, "cpus": 0.5,
            "mem": 64, "constraints": ["hostname MAX_PER 2"]});
        c.deploy(spec(app), false, 3.0).unwrap();
        let offers = vec![
            offer("o3", "ag1", "h1", 4.0),
            offer("o4", "ag2", "h2", 4.0),
            offer("o5", "ag3", "h3", 4.0),
        ];
        let tasks = launched(&c.offers(offers, 4.0));
        assert_eq!(
            per_agent(&tasks),
            counts(&[("ag1", 2), ("ag2", 2), ("ag3", 1)])
        );
        // Only h1 and h2 are offered, and each has its two: nothing is placed, and
        // the app says why.
        c.scale("m", 7, 5.0).unwrap();
        let offers = vec![offer("o6", "ag1", "h1", 4.0), offer("o7", "ag2", "h2", 4.0)];
        let tasks = launched(&c.offers(offers, 6.0));
        assert!(tasks.is_empty(), "{tasks:?}");
        let waiting = c.app_view("m", 6.0).unwrap().deployment.unwrap().waiting;
        assert!(waiting.contains("hostname MAX_PER 2"), "{waiting}");
    }

    /// A rolling update spreads the new version: the old tasks, on their way out,
    /// do not count. Changing the placement is an update like any other change.
    #[test]
    fn an_update_spreads_the_new_version() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "a", "cmd": "x", "instances": 2, "cpus": 1,
            "mem": 64, "placement": "pack"});
        c.deploy(spec(app.clone()), false, 1.0).unwrap();
        let offers = vec![offer("o1", "ag1", "h1", 4.0), offer("o2", "ag2", "h2", 4.0)];
        let old = launched(&c.offers(offers, 2.0));
        assert_eq!(per_agent(&old), counts(&[("ag1", 2)]));
        for t in &old {
            c.status(&status(&t.task_id, TaskState::TaskRunning), 3.0);
        }
        let version = c.app_view("a", 3.0).unwrap().version;
        let mut spread = app;
        spread["placement"] = "spread".into();
        let (view, _) = c.deploy(spec(spread), false, 4.0).unwrap();
        assert_ne!(view.version, version, "a new version");
        assert_eq!(view.deployment.unwrap().kind, "update");
        let offers = vec![offer("o3", "ag1", "h1", 2.0), offer("o4", "ag2", "h2", 4.0)];
        let new = launched(&c.offers(offers, 5.0));
        assert_eq!(per_agent(&new), counts(&[("ag1", 1), ("ag2", 1)]));
    }

    #[test]
    fn spread_by_an_attribute_balances_its_values_then_the_agents() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "z", "cmd": "x", "instances": 4, "cpus": 1,
            "mem": 64, "spread": "zone"});
        c.deploy(spec(app), false, 1.0).unwrap();
        let offers = vec![
            zoned("o1", "a1", 4.0, "a"),
            zoned("o2", "a2", 4.0, "a"),
            zoned("o3", "b1", 4.0, "b"),
        ];
        let tasks = launched(&c.offers(offers, 2.0));
        // Zone a: one on each of its agents; zone b: two on its only agent.
        assert_eq!(
            per_agent(&tasks),
            counts(&[("a1", 1), ("a2", 1), ("b1", 2)])
        );
        // Six: three per zone.
        c.scale("z", 6, 3.0).unwrap();
        let offers = vec![
            zoned("o4", "a1", 4.0, "a"),
            zoned("o5", "a2", 4.0, "a"),
            zoned("o6", "b1", 4.0, "b"),
        ];
        let tasks = launched(&c.offers(offers, 4.0));
        assert_eq!(per_agent(&tasks), counts(&[("a1", 1), ("b1", 1)]));
    }

    /// Many instances over many offers in one round: even, and quick.
    #[test]
    fn spread_of_many_instances_over_many_offers_is_even() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "many", "cmd": "x", "instances": 2000,
            "cpus": 0.1, "mem": 16, "ports": [0]});
        c.deploy(spec(app), false, 1.0).unwrap();
        let offers: Vec<v1::Offer> = (0..200)
            .map(|i| {
                let mut o = offer(&format!("o{i}"), &format!("ag{i:03}"), "h", 4.0);
                o.resources = Resources::parse("cpus:4;mem:4096;ports:[31000-31100]")
                    .unwrap()
                    .to_proto();
                o
            })
            .collect();
        let started = std::time::Instant::now();
        let tasks = launched(&c.offers(offers, 2.0));
        let took = started.elapsed();
        assert_eq!(tasks.len(), 2000);
        let per = per_agent(&tasks);
        assert_eq!(per.len(), 200);
        assert!(per.values().all(|&n| n == 10), "{per:?}");
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn pack_fills_the_first_offer_first() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "p", "cmd": "x", "instances": 4, "cpus": 1,
            "mem": 64, "placement": "pack"});
        c.deploy(spec(app), false, 1.0).unwrap();
        let offers = vec![offer("o1", "ag1", "h1", 4.0), offer("o2", "ag2", "h2", 4.0)];
        let actions = c.offers(offers, 2.0);
        assert_eq!(per_agent(&launched(&actions)), counts(&[("ag1", 4)]));
        assert!(actions.contains(&Action::Decline {
            offer_ids: vec!["o2".into()],
            refuse_seconds: DECLINE_REFUSE_SECONDS,
        }));
        // When the first is full, the next.
        c.scale("p", 6, 3.0).unwrap();
        let offers = vec![offer("o3", "ag1", "h1", 1.0), offer("o4", "ag2", "h2", 4.0)];
        let tasks = launched(&c.offers(offers, 4.0));
        assert_eq!(per_agent(&tasks), counts(&[("ag1", 1), ("ag2", 1)]));
    }

    /// Spread and pack apps share a round: each is placed its own way.
    #[test]
    fn spread_and_pack_apps_in_one_round() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        for (id, placement) in [("p", "pack"), ("s", "spread")] {
            let app = serde_json::json!({"id": id, "cmd": "x", "instances": 2, "cpus": 1,
                "mem": 64, "placement": placement});
            c.deploy(spec(app), false, 1.0).unwrap();
        }
        let offers = vec![offer("o1", "ag1", "h1", 4.0), offer("o2", "ag2", "h2", 4.0)];
        let tasks = launched(&c.offers(offers, 2.0));
        let of = |app: &str| {
            let mine: Vec<v1::TaskInfo> = tasks.iter().filter(|t| t.name == app).cloned().collect();
            per_agent(&mine)
        };
        assert_eq!(of("p"), counts(&[("ag1", 2)]));
        assert_eq!(of("s"), counts(&[("ag1", 1), ("ag2", 1)]));
    }

    #[test]
    fn bad_placement_and_spread_are_refused_with_the_field_named() {
        for (bad, field) in [
            (serde_json::json!({"placement": "binpack"}), "placement"),
            (serde_json::json!({"placement": ""}), "placement"),
            (serde_json::json!({"placement": null}), "placement"),
            (serde_json::json!({"spread": ""}), "spread"),
            (serde_json::json!({"spread": "my zone"}), "spread"),
            (serde_json::json!({"spread": 3}), "spread"),
            (
                serde_json::json!({"placement": "pack", "spread": "zone"}),
                "spread",
            ),
        ] {
            let mut app = serde_json::json!({"id": "a", "cmd": "x"});
            for (k, v) in bad.as_object().unwrap() {
                app[k] = v.clone();
            }
            let err = AppSpec::from_json(app).unwrap_err();
            assert_eq!(err.field, field, "{bad}: {err}");
        }
    }

    #[test]
    fn accepted_resource_roles_limit_what_tasks_use() {
        let mut c = Engine::default().with_role("web");
        c.subscribed("fw", 0.0);
        let err = c
            .deploy(
                spec(serde_json::json!({"id": "x", "cmd": "x", "accepted_resource_roles": ["*", "db"]})),
                false,
                1.0,
            )
            .unwrap_err();
        match err {
            ApiError::Refused(e) => {
                assert_eq!(e.field, "accepted_resource_roles[1]");
                assert!(e.reason.contains("framework's role 'web'"), "{}", e.reason);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(c.app_ids().is_empty(), "nothing was changed");

        for (id, roles) in [("shared", "*"), ("reserved", "web")] {
            c.deploy(
                spec(
                    serde_json::json!({"id": id, "cmd": "x", "instances": 3, "cpus": 1, "mem": 64,
                    "accepted_resource_roles": [roles]}),
                ),
                false,
                1.0,
            )
            .unwrap();
        }
        let mut o = offer("o1", "ag1", "h1", 0.0);
        o.role = "web".into();
        // Only the web app takes the reservation, so it needs reserved mem too.
        o.resources = Resources::parse("cpus(web):1;mem(web):64;cpus:1;mem:960")
            .unwrap()
            .to_proto();
        let tasks = launched(&c.offers(vec![o], 2.0));
        assert_eq!(tasks.len(), 2, "one cpu for each app");
        for t in &tasks {
            let used = Resources::try_from_proto(&t.resources).unwrap();
            let want = if t.task_id.starts_with("reserved") {
                "cpus(web):1;mem(web):64"
            } else {
                "cpus:1;mem:64"
            };
            assert_eq!(used, Resources::parse(want).unwrap(), "{}", t.task_id);
        }
    }

    #[test]
    fn every_task_carries_discovery_info_with_the_specs_ports() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "web", "cmd": "x", "cpus": 1, "ports": [
            {"host_port": 0, "name": "HTTP"}, 31005,
            {"host_port": 0, "name": "dns", "protocol": "udp"},
            {"host_port": 0, "name": "not_a_label"}]});
        c.deploy(spec(app), false, 1.0).unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        let task = &tasks[0];
        assert_eq!(strata_proto::discovery::validate(task), Ok(()));
        let env = &task.command.as_ref().unwrap().environment;
        let info = task.discovery.as_ref().unwrap();
        assert_eq!(info.name, "web");
        assert_eq!(
            info.visibility,
            v1::discovery_info::Visibility::Cluster as i32
        );
        assert_eq!(info.version, env["STRATA_APP_VERSION"]);
        let ports: Vec<(String, String, String)> = strata_proto::discovery::ports(info)
            .iter()
            .map(|p| (p.name.clone(), p.number.to_string(), p.protocol.clone()))
            .collect();
        let want: Vec<(String, String, String)> = [
            ("http", "PORT0", "tcp"),
            ("port1", "PORT1", "tcp"),
            ("dns", "PORT2", "udp"),
            ("port3", "PORT3", "tcp"),
        ]
        .iter()
        .map(|(n, p, proto)| (n.to_string(), env[*p].clone(), proto.to_string()))
        .collect();
        assert_eq!(ports, want);
        assert_eq!(env["PORT1"], "31005");
    }

    // ---- service ports (issue 15) ------------------------------------------------

    fn with_service_ports(id: &str, asked: &[Option<u16>]) -> AppSpec {
        let ports: Vec<serde_json::Value> = asked
            .iter()
            .map(|a| match a {
                None => serde_json::json!(0),
                Some(n) => serde_json::json!({"host_port": 0, "service_port": n}),
            })
            .collect();
        spec(
            serde_json::json!({"id": id, "cmd": "sleep 100", "cpus": 0.1, "mem": 16,
            "ports": ports}),
        )
    }

    fn assigned(c: &Engine, id: &str) -> Vec<Option<u16>> {
        c.app_view(id, 0.0)
            .unwrap()
            .ports
            .iter()
            .map(|p| p.service_port)
            .collect()
    }

    fn refused_field(r: Result<(AppView, Vec<Action>), ApiError>) -> SpecError {
        match r {
            Err(ApiError::Refused(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn label(port: &v1::Port) -> Option<&str> {
        port.labels
            .get(strata_proto::discovery::SERVICE_PORT_LABEL)
            .map(String::as_str)
    }

    #[test]
    fn service_ports_are_assigned_from_the_range_and_labelled_on_the_tasks() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let (view, _) = c
            .deploy(
                with_service_ports("web", &[Some(0), None, Some(10500), Some(0)]),
                false,
                1.0,
            )
            .unwrap();
        let ports: Vec<Option<u16>> = view.ports.iter().map(|p| p.service_port).collect();
        assert_eq!(ports, [Some(10000), None, Some(10500), Some(10001)]);
        // The spec as stored (and shown) holds the numbers assigned.
        let stored: Vec<Option<u16>> = view.spec.ports.iter().map(PortSpec::service_port).collect();
        assert_eq!(stored, ports);
        assert_eq!(view.ports[1].name, "port1");
        assert_eq!(view.ports[1].protocol, "tcp");
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        let info = tasks[0].discovery.as_ref().unwrap();
        let labels: Vec<Option<&str>> = strata_proto::discovery::ports(info)
            .iter()
            .map(label)
            .collect();
        assert_eq!(labels, [Some("10000"), None, Some("10500"), Some("10001")]);
        assert_eq!(strata_proto::discovery::validate(&tasks[0]), Ok(()));
        // A second app gets the next free one.
        c.deploy(with_service_ports("api", &[Some(0)]), false, 3.0)
            .unwrap();
        assert_eq!(assigned(&c, "api"), [Some(10002)]);
        assert_eq!(
            c.service_ports(),
            [
                (10000, "web".to_string(), 0),
                (10001, "web".to_string(), 3),
                (10002, "api".to_string(), 0),
                (10500, "web".to_string(), 2),
            ]
        );
    }

    #[test]
    fn bad_service_ports_are_refused_with_the_field_named_and_change_nothing() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(with_service_ports("web", &[Some(10010)]), false, 1.0)
            .unwrap();
        let writes = c.take_writes();
        assert!(!writes.is_empty());
        // Taken by another app.
        let e =
            refused_field(c.deploy(with_service_ports("api", &[None, Some(10010)]), false, 2.0));
        assert_eq!(e.field, "ports[1].service_port", "{e}");
        assert!(
            e.reason
                .contains("service port 10010 is taken by app \"web\" (its ports[0])"),
            "{e}"
        );
        // Outside the range.
        for n in [9999, 11000, 80] {
            let e = refused_field(c.deploy(with_service_ports("api", &[Some(n)]), false, 2.0));
            assert_eq!(e.field, "ports[0].service_port", "{e}");
            assert!(
                e.reason
                    .contains("outside the framework's service port range 10000-10999"),
                "{e}"
            );
        }
        // Duplicates within the app: the spec refuses them.
        let dup = serde_json::json!({"id": "api", "cmd": "x", "ports": [
            {"service_port": 10020}, {"service_port": 10020}]});
        let e = AppSpec::from_json(dup).unwrap_err();
        assert_eq!(e.field, "ports[1].service_port", "{e}");
        // An update of the holder to a taken port is refused too, and keeps what it had.
        c.deploy(with_service_ports("api", &[Some(0)]), false, 3.0)
            .unwrap();
        let before = c.app_view("web", 4.0).unwrap();
        c.take_writes();
        let e = refused_field(c.deploy(with_service_ports("web", &[Some(10000)]), false, 4.0));
        assert_eq!(e.field, "ports[0].service_port");
        assert!(e.reason.contains("taken by app \"api\""), "{e}");
        assert_eq!(c.app_view("web", 4.0).unwrap(), before);
        assert!(c.take_writes().is_empty(), "a refusal writes nothing");
        assert!(c.app_view("nope", 4.0).is_none());
        assert_eq!(c.app_ids(), ["api", "web"]);
    }

    #[test]
    fn an_exhausted_range_is_refused_naming_the_port() {
        let range: ServicePortRange = "20000-20001".parse().unwrap();
        let mut c = Engine::default().with_service_ports(range);
        c.subscribed("fw", 0.0);
        c.deploy(with_service_ports("a", &[Some(0), Some(0)]), false, 1.0)
            .unwrap();
        assert_eq!(assigned(&c, "a"), [Some(20000), Some(20001)]);
        let e =
            refused_field(c.deploy(with_service_ports("b", &[None, None, Some(0)]), false, 2.0));
        assert_eq!(e.field, "ports[2].service_port");
        assert!(
            e.reason
                .contains("no free service port: all 2 of the range 20000-20001 are taken"),
            "{e}"
        );
        assert!(c.app_view("b", 2.0).is_none());
    }

    #[test]
    fn service_ports_stay_across_updates_scales_and_restarts() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(with_service_ports("other", &[Some(0)]), false, 0.5)
            .unwrap();
        let (first, _) = c
            .deploy(with_service_ports("web", &[Some(0), Some(0)]), false, 1.0)
            .unwrap();
        assert_eq!(assigned(&c, "web"), [Some(10001), Some(10002)]);
        // The same file deployed again: nothing to change (not a new version).
        let (again, _) = c
            .deploy(with_service_ports("web", &[Some(0), Some(0)]), false, 2.0)
            .unwrap();
        assert_eq!(again.version, first.version);
        // A rolling update keeps them; so do a scale and a restart.
        let mut update = with_service_ports("web", &[Some(0), Some(0)]);
        update.cmd = Some("sleep 200".into());
        let (updated, _) = c.deploy(update, false, 3.0).unwrap();
        assert_ne!(updated.version, first.version);
        assert_eq!(assigned(&c, "web"), [Some(10001), Some(10002)]);
        c.scale("web", 3, 4.0).unwrap();
        c.restart("web", 5.0).unwrap();
        assert_eq!(assigned(&c, "web"), [Some(10001), Some(10002)]);
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 6.0));
        assert_eq!(tasks.iter().filter(|t| t.name == "web").count(), 3);
        for t in tasks.iter().filter(|t| t.name == "web") {
            let info = t.discovery.as_ref().unwrap();
            let labels: Vec<Option<&str>> = strata_proto::discovery::ports(info)
                .iter()
                .map(label)
                .collect();
            assert_eq!(labels, [Some("10001"), Some("10002")]);
        }
        // A port asking for the one another port of the app holds takes it over; the
        // other gets a free one.
        c.deploy(
            with_service_ports("web", &[Some(0), Some(10001)]),
            false,
            7.0,
        )
        .unwrap();
        assert_eq!(assigned(&c, "web"), [Some(10002), Some(10001)]);
        // A port that no longer asks frees its port.
        c.deploy(with_service_ports("web", &[None, Some(0)]), false, 8.0)
            .unwrap();
        assert_eq!(assigned(&c, "web"), [None, Some(10001)]);
        c.deploy(with_service_ports("new", &[Some(10002)]), false, 9.0)
            .unwrap();
    }

    // ---- configs and secrets (issue 16) ----------------------------------------

    fn latest(objects: &[(ObjectKind, &str, u64)]) -> ObjectVersions {
        objects
            .iter()
            .map(|(kind, name, version)| ((*kind, name.to_string()), *version))
            .collect()
    }

    /// (kind, name, version, target) of each reference of a task.
    fn refs(task: &v1::TaskInfo) -> Vec<(ObjectKind, String, u64, String)> {
        task.objects
            .iter()
            .map(|r| {
                let target = match &r.target {
                    Some(v1::object_ref::Target::File(f)) => format!("file {f}"),
                    Some(v1::object_ref::Target::Env(v)) => format!("env {v}"),
                    None => String::new(),
                };
                (r.kind(), r.name.clone(), r.version, target)
            })
            .collect()
    }

    fn pins(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn kills(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Kill { task_id, .. } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn db_app(instances: u32) -> AppSpec {
        spec(serde_json::json!({
            "id": "web", "cmd": "serve", "instances": instances, "cpus": 0.5, "mem": 64,
            "secrets": [{"source": "db-pass"}],
            "configs": [{"source": "nginx-conf", "target": "conf/nginx.conf"}],
            "env": {"PLAIN": "value", "DB_PASS": {"secret": "db-pass"},
                    "LEVEL": {"config": "log-level"}},
            "upgrade_strategy": {"minimum_health_capacity": 0.5, "maximum_over_capacity": 0}
        }))
    }

    /// Every task carries the spec's references with the versions the app pins: the
    /// latest the master listed, 0 for one it did not list (the master gives the
    /// latest at launch). Values never pass through the framework: the plain
    /// variables are in the command's environment, the references only in `objects`.
    #[test]
    fn tasks_carry_the_specs_references_with_pinned_versions() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let secret = ObjectKind::Secret;
        let config = ObjectKind::Config;
        let actions = c.objects(
            latest(&[(secret, "db-pass", 3), (config, "nginx-conf", 2)]),
            0.5,
        );
        assert!(actions.is_empty(), "{actions:?}");
        let (view, _) = c.deploy(db_app(1), false, 1.0).unwrap();
        assert_eq!(
            view.objects,
            pins(&[
                ("config/log-level", 0),
                ("config/nginx-conf", 2),
                ("secret/db-pass", 3)
            ])
        );
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            refs(&tasks[0]),
            [
                (secret, "db-pass".into(), 3, "file db-pass".into()),
                (
                    config,
                    "nginx-conf".into(),
                    2,
                    "file conf/nginx.conf".into()
                ),
                (secret, "db-pass".into(), 3, "env DB_PASS".into()),
                (config, "log-level".into(), 0, "env LEVEL".into()),
            ]
        );
        let env = &tasks[0].command.as_ref().unwrap().environment;
        assert_eq!(env["PLAIN"], "value");
        assert!(!env.contains_key("DB_PASS") && !env.contains_key("LEVEL"));
        strata_proto::objects::validate_task(&tasks[0]).expect("the master's rules hold");
        // The pins are stored with the app.
        let (apps, _) = stored(c.take_writes());
        assert_eq!(apps[0].app.objects, view.objects);
    }

    /// A new version of a secret rolls the app like a change of its spec, within its
    /// upgrade strategy (4 instances, half must stay healthy, none over): two old tasks
    /// go, two new ones come with the new version, the other two old ones keep
    /// running with the old version until the new ones are healthy. The version's
    /// cause says why.
    #[test]
    fn a_newer_version_of_a_secret_rolls_the_app_within_its_upgrade_strategy() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let secret = ObjectKind::Secret;
        c.objects(latest(&[(secret, "db-pass", 3)]), 1.0);
        c.deploy(db_app(4), false, 2.0).unwrap();
        let old = launched(&c.offers(vec![offer("o1", "ag1", "h1", 8.0)], 3.0));
        assert_eq!(old.len(), 4);
        assert!(old.iter().all(|t| t.objects[0].version == 3));
        for t in &old {
            c.status(&status(&t.task_id, TaskState::TaskRunning), 4.0);
        }
        let before = c.app_view("web", 4.5).unwrap();
        assert!(before.deployment.is_none(), "converged");

        let actions = c.objects(latest(&[(secret, "db-pass", 4)]), 5.0);
        let killed = kills(&actions);
        assert_eq!(killed.len(), 2, "half may go: {actions:?}");
        let view = c.app_view("web", 5.0).unwrap();
        assert_ne!(view.version, before.version, "a new version");
        assert_eq!(view.objects["secret/db-pass"], 4);
        assert_eq!(
            view.version_cause.as_deref(),
            Some("secret db-pass version 4")
        );
        let deployment = view.deployment.expect("a rolling update");
        assert_eq!(deployment.kind, "update");
        assert_eq!(
            deployment.cause.as_deref(),
            Some("secret db-pass version 4")
        );
        let (apps, _) = stored(c.take_writes());
        assert_eq!(apps[0].app.objects["secret/db-pass"], 4, "persisted");
        assert_eq!(
            apps[0].app.version_cause.as_deref(),
            Some("secret db-pass version 4")
        );
        // The same listing again changes nothing.
        assert!(c.objects(latest(&[(secret, "db-pass", 4)]), 5.5).is_empty());

        // The two that stay run the old version (their tasks were launched with 3).
        let kept: Vec<&TaskRecord> = c.tasks.values().filter(|t| !t.is_killing()).collect();
        assert_eq!(kept.len(), 2);
        assert!(
            kept.iter()
                .all(|t| t.version == before.version && t.is_running())
        );
        // Two new tasks, with the new version of the secret.
        let new = launched(&c.offers(vec![offer("o2", "ag1", "h1", 8.0)], 6.0));
        assert_eq!(new.len(), 2);
        let mut actions = Vec::new();
        for id in &killed {
            actions.extend(c.status(&status(id, TaskState::TaskKilled), 7.0));
        }
        assert!(
            kills(&actions).is_empty(),
            "no new one healthy yet: {actions:?}"
        );
        for t in &new {
            assert!(
                t.objects
                    .iter()
                    .filter(|r| r.name == "db-pass")
                    .all(|r| r.version == 4)
            );
            actions.extend(c.status(&status(&t.task_id, TaskState::TaskRunning), 7.5));
        }
        // Once they are healthy, the other two old ones go and two more new come.
        assert_eq!(kills(&actions).len(), 2, "{actions:?}");
        let more = launched(&c.offers(vec![offer("o3", "ag1", "h1", 8.0)], 9.0));
        assert_eq!(more.len(), 2);
        assert!(more.iter().all(|t| t.objects[0].version == 4));
    }

    /// An app deployed before the framework knew an object's version pinned 0: its
    /// tasks got the latest at launch. Learning the version records it without rolling.
    /// A removed object rolls nothing (launches that need it fail at the master, and
    /// the app shows that); one created again rolls the app.
    #[test]
    fn learning_a_version_does_not_roll_nor_does_a_removed_object() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let secret = ObjectKind::Secret;
        c.deploy(db_app(2), false, 1.0).unwrap();
        let first = launched(&c.offers(vec![offer("o1", "ag1", "h1", 8.0)], 2.0));
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|t| t.objects.iter().all(|r| r.version == 0))
        );
        for t in &first {
            c.status(&status(&t.task_id, TaskState::TaskRunning), 3.0);
        }
        let before = c.app_view("web", 3.0).unwrap();
        assert!(before.objects.values().all(|v| *v == 0));
        c.take_writes();

        let listed = latest(&[
            (secret, "db-pass", 5),
            (ObjectKind::Config, "nginx-conf", 1),
        ]);
        let actions = c.objects(listed.clone(), 4.0);
        assert!(kills(&actions).is_empty(), "{actions:?}");
        let view = c.app_view("web", 4.0).unwrap();
        assert_eq!(view.version, before.version, "no new version");
        assert!(view.deployment.is_none() && view.version_cause.is_none());
        assert_eq!(
            view.objects,
            pins(&[
                ("config/log-level", 0),
                ("config/nginx-conf", 1),
                ("secret/db-pass", 5)
            ])
        );
        let (apps, _) = stored(c.take_writes());
        assert_eq!(apps[0].app.objects, view.objects, "recorded");
        // A scale launches with the versions learned.
        c.scale("web", 3, 5.0).unwrap();
        let third = launched(&c.offers(vec![offer("o2", "ag1", "h1", 8.0)], 5.0));
        assert_eq!(third[0].objects[0].version, 5);
        c.status(&status(&third[0].task_id, TaskState::TaskRunning), 5.5);

        c.take_writes();
        // Removed: nothing rolls, nothing is forgotten.
        let actions = c.objects(latest(&[(ObjectKind::Config, "nginx-conf", 1)]), 6.0);
        assert!(actions.is_empty(), "{actions:?}");
        let view = c.app_view("web", 6.0).unwrap();
        assert_eq!(view.version, before.version);
        assert_eq!(view.objects["secret/db-pass"], 5);
        assert!(c.take_writes().is_empty());
        // Created again (version 1): a new value, so the app rolls.
        c.objects(
            latest(&[
                (secret, "db-pass", 1),
                (ObjectKind::Config, "nginx-conf", 1),
            ]),
            7.0,
        );
        let view = c.app_view("web", 7.0).unwrap();
        assert_ne!(view.version, before.version);
        assert_eq!(
            view.version_cause.as_deref(),
            Some("secret db-pass version 1")
        );
    }

    /// Pins go with the app's version: an update of the spec pins what was listed
    /// last, as does a restart; a scale keeps them; a framework restarted from its
    /// store keeps them.
    #[test]
    fn pins_follow_the_apps_versions_and_survive_a_restart() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let secret = ObjectKind::Secret;
        c.deploy(db_app(1), false, 1.0).unwrap();
        // Listed after the deploy (learned, no roll), then the secret changes while the
        // app is being updated anyway: the update pins what was listed last.
        c.objects(latest(&[(secret, "db-pass", 2)]), 2.0);
        let mut changed = db_app(1);
        changed.cpus = 0.25;
        c.latest_objects = latest(&[(secret, "db-pass", 3)]);
        c.objects_listed_at = Some(2.5);
        let (view, _) = c.deploy(changed.clone(), false, 3.0).unwrap();
        assert_eq!(view.objects["secret/db-pass"], 3);
        assert!(view.version_cause.is_none(), "an API change");
        let (view, _) = c.scale("web", 2, 4.0).unwrap();
        assert_eq!(view.objects["secret/db-pass"], 3);
        c.latest_objects = latest(&[(secret, "db-pass", 7)]);
        c.objects_listed_at = Some(4.5);
        let (view, _) = c.restart("web", 5.0).unwrap();
        assert_eq!(view.objects["secret/db-pass"], 7);
        let (apps, tasks) = stored(c.take_writes());
        let restored = Engine::restore(apps, tasks, Some("fw".into()));
        assert_eq!(
            restored.app_view("web", 6.0).unwrap().objects["secret/db-pass"],
            7
        );
        // A listing from long ago (no app referenced objects for a while, so none was
        // made since) is not pinned: the master gives the latest.
        let (view, _) = c.restart("web", 4.5 + OBJECTS_FRESH_SECONDS + 1.0).unwrap();
        assert_eq!(view.objects["secret/db-pass"], 0);
    }

    /// What the store would hold after the writes: the records a restarted framework
    /// loads.
    fn stored(writes: Vec<Write>) -> (Vec<StoredApp>, Vec<TaskRecord>) {
        let mut apps = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let mut tasks = BTreeMap::new();
        for w in writes {
            match w {
                Write::App(id, rec) => {
                    if rec.is_none() {
                        versions.remove(&id);
                    }
                    apps.insert(id, rec);
                }
                Write::Versions(id, v) => {
                    versions.insert(id, v);
                }
                Write::Task(id, rec) => {
                    tasks.insert(id, rec);
                }
                Write::FrameworkId(_) => {}
            }
        }
        let apps = apps
            .into_iter()
            .filter_map(|(id, rec)| {
                let kept = versions.remove(&id).unwrap_or_default();
                Some(StoredApp::new(*rec?, kept))
            })
            .collect();
        (apps, tasks.into_values().flatten().map(|r| *r).collect())
    }

    #[test]
    fn service_ports_survive_a_restart_of_the_framework_and_are_freed_on_removal() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        c.deploy(with_service_ports("web", &[Some(0)]), false, 1.0)
            .unwrap();
        c.deploy(with_service_ports("api", &[Some(0)]), false, 1.5)
            .unwrap();
        let tasks = launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 2.0));
        assert_eq!(tasks.len(), 2);
        // The framework restarts from what it persisted, with a narrower range.
        let (apps, task_records) = stored(c.take_writes());
        let range: ServicePortRange = "10001-10005".parse().unwrap();
        let mut c =
            Engine::restore(apps, task_records, Some("fw".into())).with_service_ports(range);
        assert_eq!(assigned(&c, "web"), [Some(10000)]);
        assert_eq!(assigned(&c, "api"), [Some(10001)]);
        // Deployed again, each keeps its port (web's, now outside the range, too) and
        // a new app gets a free one.
        let (_, actions) = c
            .deploy(with_service_ports("web", &[Some(0)]), false, 3.0)
            .unwrap();
        assert!(launched(&actions).is_empty());
        c.scale("web", 2, 3.5).unwrap();
        assert_eq!(assigned(&c, "web"), [Some(10000)]);
        let e = refused_field(c.deploy(with_service_ports("new", &[Some(10001)]), false, 4.0));
        assert!(e.reason.contains("taken by app \"api\""), "{e}");
        c.deploy(with_service_ports("new", &[Some(0)]), false, 4.0)
            .unwrap();
        assert_eq!(assigned(&c, "new"), [Some(10002)]);
        // Removed: its port is held until its tasks are gone, then free.
        c.destroy("api", false, 5.0).unwrap();
        let e = refused_field(c.deploy(with_service_ports("late", &[Some(10001)]), false, 5.5));
        assert!(e.reason.contains("taken by app \"api\""), "{e}");
        let api_task = tasks.iter().find(|t| t.name == "api").unwrap();
        c.status(&status(&api_task.task_id, TaskState::TaskKilled), 6.0);
        c.tick(6.5);
        assert!(c.app_view("api", 7.0).is_none());
        c.deploy(with_service_ports("late", &[Some(10001)]), false, 7.0)
            .unwrap();
        assert_eq!(assigned(&c, "late"), [Some(10001)]);
    }

    #[test]
    fn the_view_lists_the_running_instances_as_endpoints() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let app = serde_json::json!({"id": "web", "cmd": "x", "cpus": 1, "instances": 2,
            "ports": [{"host_port": 0, "name": "http", "service_port": 0}],
            "health_checks": [{"protocol": "tcp", "port_index": 0}]});
        c.deploy(spec(app), false, 1.0).unwrap();
        let tasks = launched(&c.offers(
            vec![offer("o1", "ag1", "h1", 1.0), offer("o2", "ag2", "h2", 1.0)],
            2.0,
        ));
        assert_eq!(tasks.len(), 2);
        assert!(c.app_view("web", 2.0).unwrap().endpoints.is_empty());
        for t in &tasks {
            let mut s = status(&t.task_id, TaskState::TaskRunning);
            s.healthy = Some(t.agent_id == "ag1");
            c.status(&s, 3.0);
        }
        let view = c.app_view("web", 3.0).unwrap();
        assert_eq!(view.ports.len(), 1);
        assert_eq!(
            (view.ports[0].name.as_str(), view.ports[0].service_port),
            ("http", Some(10000))
        );
        let seen: Vec<(Option<String>, Option<bool>, bool)> = view
            .endpoints
            .iter()
            .map(|e| (e.address(0), e.healthy, e.ready))
            .collect();
        assert_eq!(
            seen,
            [
                (Some("h1:31000".to_string()), Some(true), true),
                (Some("h2:31000".to_string()), Some(false), false),
            ]
        );
        // Being killed: still listed, out of rotation.
        let h1 = tasks.iter().find(|t| t.agent_id == "ag1").unwrap();
        c.kill_task(&h1.task_id, 4.0).unwrap();
        let view = c.app_view("web", 4.0).unwrap();
        let e = view.endpoints.iter().find(|e| e.host == "h1").unwrap();
        assert!(!e.ready, "{e:?}");
        // JSON: the ports and endpoints of the App API.
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["ports"][0]["service_port"], 10000);
        assert_eq!(json["endpoints"][0]["host"], "h1");
        assert_eq!(json["endpoints"][0]["ports"][0], 31000);
    }

    #[test]
    fn service_port_ranges_are_parsed_and_bad_ones_refused() {
        assert_eq!(
            ServicePortRange::default(),
            "10000-10999".parse::<ServicePortRange>().unwrap()
        );
        let r: ServicePortRange = " 20000 - 20009 ".trim().parse().unwrap();
        assert_eq!((r.first, r.last, r.size()), (20000, 20009, 10));
        assert_eq!(r.to_string(), "20000-20009");
        let one: ServicePortRange = "8080".parse().unwrap();
        assert_eq!((one.first, one.last), (8080, 8080));
        for bad in ["", "0-10", "10-0x", "a-b", "20-10", "1-70000", "-5"] {
            assert!(bad.parse::<ServicePortRange>().is_err(), "{bad}");
        }
    }

    // ---- versions and rollback ------------------------------------------------

    fn cmd_app(cmd: &str, instances: u32) -> AppSpec {
        spec(serde_json::json!({"id": "web", "cmd": cmd, "instances": instances, "cpus": 0.1}))
    }

    /// (version, cause, current, cmd) of each version, newest first.
    fn history(c: &Engine) -> Vec<(String, Option<String>, bool, String)> {
        c.app_versions("web")
            .unwrap()
            .versions
            .into_iter()
            .map(|v| {
                (
                    v.version,
                    v.cause,
                    v.current,
                    v.spec.cmd.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Every new version of an app joins its versions (a create, an update, a restart,
    /// a newer secret), newest first; a scale, or the same spec again, makes none.
    #[test]
    fn versions_are_kept_for_each_new_version_and_not_for_a_scale() {
        let mut c = Engine::default();
        let v1 = c.deploy(cmd_app("one", 1), false, 1.0).unwrap().0.version;
        assert_eq!(history(&c), [(v1.clone(), None, true, "one".into())]);
        c.scale("web", 3, 2.0).unwrap();
        c.deploy(cmd_app("one", 3), false, 3.0).unwrap();
        assert_eq!(history(&c).len(), 1, "a scale is not a version");
        assert_eq!(
            c.app_versions("web").unwrap().versions[0].spec.instances,
            3,
            "the current version shows the app's spec"
        );
        let v2 = c.deploy(cmd_app("two", 3), false, 4.0).unwrap().0.version;
        let v3 = c.restart("web", 5.0).unwrap().0.version;
        let mut with_secret = cmd_app("two", 3);
        with_secret.secrets = db_app(1).secrets;
        let v4 = c.deploy(with_secret, false, 6.0).unwrap().0.version;
        c.objects(latest(&[(ObjectKind::Secret, "db-pass", 3)]), 7.0);
        assert_eq!(history(&c).len(), 4, "learning a pin is not a version");
        c.objects(latest(&[(ObjectKind::Secret, "db-pass", 4)]), 8.0);
        let v5 = c.app_view("web", 8.0).unwrap().version;
        let versions: Vec<(String, Option<String>, bool)> = history(&c)
            .into_iter()
            .map(|(v, cause, current, _)| (v, cause, current))
            .collect();
        assert_eq!(
            versions,
            [
                (v5, Some("secret db-pass version 4".into()), true),
                (v4, None, false),
                (v3, None, false),
                (v2, None, false),
                (v1, None, false),
            ]
        );
        assert_eq!(
            c.app_versions("nope"),
            Err(ApiError::AppNotFound("nope".into()))
        );
    }

    #[test]
    fn only_the_last_20_versions_are_kept() {
        let mut c = Engine::default();
        for i in 0..25 {
            c.deploy(cmd_app(&format!("v{i}"), 1), false, 1.0 + f64::from(i))
                .unwrap();
        }
        let kept = history(&c);
        assert_eq!(kept.len(), MAX_VERSIONS);
        assert_eq!(kept[0].3, "v24");
        assert_eq!(kept[19].3, "v5");
        assert!(kept[0].2 && kept[1..].iter().all(|v| !v.2));
        // The forgotten ones cannot be rolled back to.
        let (stored, _) = stored(c.take_writes());
        assert_eq!(stored[0].versions.len(), MAX_VERSIONS, "persisted capped");
    }

    /// A rollback deploys an earlier version's spec as a new version (a rolling
    /// update), with the app's current instances, its cause `rollback to V`; without a
    /// version, the one before the current one.
    #[test]
    fn a_rollback_deploys_an_earlier_spec_as_a_new_version() {
        let mut c = Engine::default();
        let v1 = c.deploy(cmd_app("one", 2), false, 1.0).unwrap().0.version;
        c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 1.0);
        let v2 = c.deploy(cmd_app("two", 2), false, 2.0).unwrap().0.version;
        c.scale("web", 3, 3.0).unwrap();
        c.take_writes();

        let (view, _) = c.rollback("web", None, 4.0).unwrap();
        assert!(view.version > v2, "a new version");
        assert_eq!(view.spec.cmd.as_deref(), Some("one"));
        assert_eq!(
            view.spec.instances, 3,
            "instances are not part of a version"
        );
        let cause = format!("rollback to {v1}");
        assert_eq!(view.version_cause.as_deref(), Some(cause.as_str()));
        let d = view.deployment.as_ref().expect("a deployment");
        assert_eq!(
            (d.kind.as_str(), d.cause.as_deref()),
            ("update", Some(cause.as_str()))
        );
        let launches = launched(&c.offers(vec![offer("o2", "ag2", "h2", 4.0)], 4.0));
        assert!(!launches.is_empty(), "the old spec is launched again");
        assert!(
            launches
                .iter()
                .all(|t| { t.command.as_ref().is_some_and(|cmd| cmd.value == "one") })
        );
        let v3 = view.version.clone();
        assert_eq!(
            history(&c)[..3]
                .iter()
                .map(|v| (v.0.clone(), v.1.clone(), v.3.clone()))
                .collect::<Vec<_>>(),
            [
                (v3.clone(), Some(cause.clone()), "one".to_string()),
                (v2.clone(), None, "two".into()),
                (v1.clone(), None, "one".into()),
            ]
        );
        // Persisted with the app, and restored.
        let (apps, tasks) = stored(c.take_writes());
        let restored = Engine::restore(apps, tasks, Some("fw".into()));
        assert_eq!(history(&restored), history(&c));

        // To a named version: v2 again.
        let (view, _) = c.rollback("web", Some(&v2), 5.0).unwrap();
        assert_eq!(view.spec.cmd.as_deref(), Some("two"));
        let cause = format!("rollback to {v2}");
        assert_eq!(view.version_cause.as_deref(), Some(cause.as_str()));
        assert_eq!(history(&c).len(), 4);
        // A rollback to a version of the same configuration still makes a version.
        let (again, _) = c.rollback("web", Some(&v2), 6.0).unwrap();
        assert_ne!(again.version, view.version);
        assert_eq!(history(&c).len(), 5);
    }

    /// A rollback that cannot be made changes nothing: an unknown version, no earlier
    /// version, an app being removed, a spec the framework refuses now.
    #[test]
    fn a_refused_rollback_changes_nothing() {
        let mut c = Engine::default();
        assert_eq!(
            c.rollback("web", None, 1.0).unwrap_err(),
            ApiError::AppNotFound("web".into())
        );
        let v1 = c.deploy(cmd_app("one", 1), false, 1.0).unwrap().0.version;
        c.take_writes();
        assert_eq!(
            c.rollback("web", None, 2.0).unwrap_err(),
            ApiError::NoEarlierVersion("web".into())
        );
        assert_eq!(
            c.rollback("web", Some("2001-01-01T00:00:00.000Z"), 2.0)
                .unwrap_err(),
            ApiError::VersionNotFound {
                app: "web".into(),
                version: "2001-01-01T00:00:00.000Z".into()
            }
        );
        assert!(c.take_writes().is_empty(), "nothing written");
        assert_eq!(history(&c), [(v1.clone(), None, true, "one".into())]);

        // An earlier version whose service port another app took since.
        let mut ported = cmd_app("two", 1);
        ported.ports = with_service_ports("web", &[Some(10007)]).ports;
        c.deploy(ported, false, 3.0).unwrap();
        let v3 = c.deploy(cmd_app("three", 1), false, 4.0).unwrap().0.version;
        c.deploy(with_service_ports("other", &[Some(10007)]), false, 5.0)
            .unwrap();
        c.take_writes();
        let err = c.rollback("web", None, 6.0).unwrap_err();
        assert!(
            matches!(&err, ApiError::Refused(e) if e.field == "ports[0].service_port"),
            "{err:?}"
        );
        assert!(c.take_writes().is_empty(), "nothing written");
        assert_eq!(c.app_view("web", 6.0).unwrap().version, v3);
        assert_eq!(history(&c).len(), 3);

        // Being removed (its task not yet gone), then gone with its versions.
        assert!(!launched(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 7.0)).is_empty());
        c.destroy("web", false, 7.0).unwrap();
        assert_eq!(
            c.rollback("web", Some(&v1), 8.0).unwrap_err(),
            ApiError::Destroying("web".into())
        );
        let task = c.tasks(Some("web")).unwrap()[0].id.clone();
        c.status(&status(&task, TaskState::TaskKilled), 9.0);
        c.tick(9.0);
        assert_eq!(
            c.app_versions("web"),
            Err(ApiError::AppNotFound("web".into()))
        );
        assert!(!c.versions.contains_key("web"), "forgotten with the app");
    }

    /// Each object of `objects` with every version the master keeps of it: the
    /// listing a rollback is checked against, and its latest versions.
    fn listing(objects: &[(ObjectKind, &str, &[u64])]) -> (ObjectVersions, KeptVersions) {
        let kept: KeptVersions = objects
            .iter()
            .map(|(kind, name, v)| ((*kind, name.to_string()), v.iter().copied().collect()))
            .collect();
        let latest = kept
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), *v.last()?)))
            .collect();
        (latest, kept)
    }

    /// (name, version) of the secrets and configs the launched tasks reference.
    fn launched_pins(actions: &[Action]) -> BTreeSet<(String, u64)> {
        launched(actions)
            .iter()
            .flat_map(refs)
            .map(|(_, name, version, _)| (name, version))
            .collect()
    }

    /// A version made by a newer secret keeps its pins beside its spec; rolling back
    /// from it launches the secret's older version again (not a restart with the same
    /// pins), and that listing again does not roll the app forward: only a newer
    /// version of the secret does.
    #[test]
    fn a_rollback_restores_the_versions_pins_of_configs_and_secrets() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let (secret, config) = (ObjectKind::Secret, ObjectKind::Config);
        let list = |db: &'static [u64]| {
            listing(&[
                (secret, "db-pass", db),
                (config, "nginx-conf", &[1]),
                (config, "log-level", &[2]),
            ])
        };
        let (latest, kept) = list(&[2, 3]);
        c.objects_listed(latest, kept, 0.5);
        let v1 = c.deploy(db_app(1), false, 1.0).unwrap().0.version;
        let first = launched_pins(&c.offers(vec![offer("o1", "ag1", "h1", 4.0)], 1.0));
        assert!(first.contains(&("db-pass".into(), 3)), "{first:?}");

        // db-pass version 4: a version the framework made, with its pins.
        let (latest, kept) = list(&[2, 3, 4]);
        c.objects_listed(latest, kept, 2.0);
        let v2 = c.app_view("web", 2.0).unwrap();
        assert_eq!(
            v2.version_cause.as_deref(),
            Some("secret db-pass version 4")
        );
        let versions = c.app_versions("web").unwrap().versions;
        assert_eq!(
            versions
                .iter()
                .map(|v| v.objects.clone())
                .collect::<Vec<_>>(),
            [
                pins(&[
                    ("config/log-level", 2),
                    ("config/nginx-conf", 1),
                    ("secret/db-pass", 4)
                ]),
                pins(&[
                    ("config/log-level", 2),
                    ("config/nginx-conf", 1),
                    ("secret/db-pass", 3)
                ]),
            ]
        );

        // Back to v1: version 3 of the secret again.
        let (view, _) = c.rollback("web", None, 3.0).unwrap();
        assert_eq!(view.version_cause, Some(format!("rollback to {v1}")));
        assert_eq!(view.objects["secret/db-pass"], 3, "the old pin");
        assert_eq!(view.objects["config/nginx-conf"], 1);
        let again = launched_pins(&c.offers(vec![offer("o2", "ag2", "h2", 4.0)], 3.0));
        assert!(again.contains(&("db-pass".into(), 3)), "{again:?}");
        assert!(!again.iter().any(|p| p == &("db-pass".to_string(), 4)));
        assert_eq!(
            c.app_versions("web").unwrap().versions[0].objects["secret/db-pass"],
            3
        );

        // The same listing again (4 still the latest) does not undo the rollback, nor
        // after a restart of the framework.
        let (latest, kept) = list(&[2, 3, 4]);
        c.objects_listed(latest.clone(), kept.clone(), 4.0);
        assert_eq!(c.app_view("web", 4.0).unwrap().version, view.version);
        let (apps, tasks) = stored(c.take_writes());
        let mut restored = Engine::restore(apps, tasks, Some("fw".into()));
        restored.objects_listed(latest, kept, 4.5);
        assert_eq!(restored.app_view("web", 4.5).unwrap().version, view.version);
        assert_eq!(
            restored.app_view("web", 4.5).unwrap().objects["secret/db-pass"],
            3
        );

        // A newer version than the one rolled back from rolls the app forward.
        let (latest, kept) = list(&[3, 4, 5]);
        c.objects_listed(latest, kept, 5.0);
        let rolled = c.app_view("web", 5.0).unwrap();
        assert_ne!(rolled.version, view.version);
        assert_eq!(rolled.objects["secret/db-pass"], 5);
        assert_eq!(
            rolled.version_cause.as_deref(),
            Some("secret db-pass version 5")
        );
    }

    /// A rollback to a version whose secret version the master no longer keeps is
    /// refused, naming it, and changes nothing; without a fresh listing nothing is
    /// known gone.
    #[test]
    fn a_rollback_to_a_pruned_secret_version_is_refused() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let (secret, config) = (ObjectKind::Secret, ObjectKind::Config);
        let list = |db: &'static [u64]| {
            listing(&[
                (secret, "db-pass", db),
                (config, "nginx-conf", &[1]),
                (config, "log-level", &[2]),
            ])
        };
        let (latest, kept) = list(&[3]);
        c.objects_listed(latest, kept, 0.5);
        let v1 = c.deploy(db_app(1), false, 1.0).unwrap().0.version;
        let (latest, kept) = list(&[3, 4]);
        c.objects_listed(latest, kept, 2.0);
        // Version 3 pruned.
        let (latest, kept) = list(&[4, 5]);
        c.objects_listed(latest, kept, 3.0);
        let before = c.app_view("web", 3.0).unwrap();
        assert_eq!(before.objects["secret/db-pass"], 5);
        c.take_writes();
        let err = c.rollback("web", Some(&v1), 4.0).unwrap_err();
        assert_eq!(
            err,
            ApiError::PinnedObjectGone {
                app: "web".into(),
                version: v1.clone(),
                object: "secret db-pass version 3".into(),
                kept: "it keeps versions 4, 5".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "app \"web\" cannot roll back to version \"{v1}\": it used secret db-pass version 3, which the master no longer keeps (it keeps versions 4, 5)"
            )
        );
        assert_eq!(c.rollback_target("web", Some(&v1), 4.0).unwrap_err(), err);
        assert!(c.take_writes().is_empty(), "nothing changed");
        assert_eq!(c.app_view("web", 4.0).unwrap(), before);
        // The secret removed altogether.
        let (latest, kept) = listing(&[(config, "nginx-conf", &[1]), (config, "log-level", &[2])]);
        c.objects_listed(latest, kept, 5.0);
        let err = c.rollback("web", Some(&v1), 5.0).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "db-pass version 3, which the master no longer keeps (secret db-pass is gone)"
            ),
            "{err}"
        );
        // The version before the current one (version 4) is kept: allowed.
        let (latest, kept) = list(&[4, 5]);
        c.objects_listed(latest, kept, 6.0);
        let (view, _) = c.rollback("web", None, 6.0).unwrap();
        assert_eq!(view.objects["secret/db-pass"], 4);
        // A listing too old to tell: not refused (the master refuses the launch).
        let late = 6.0 + OBJECTS_FRESH_SECONDS + 1.0;
        assert!(c.rollback("web", Some(&v1), late).is_ok());
    }
}
