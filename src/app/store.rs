//! The container framework's embedded store (redb, one file in the state dir): apps,
//! tasks and the framework id, written before the actions that depend on them.
//!
//! A write that fails (a full disk, an I/O error) leaves the store as it was before
//! that write; redb then refuses everything until the database is reopened, so the
//! next write reopens it first. The store never panics and never exits: the service
//! decides what a failed write means (see `service`).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::engine::Write;
use super::records::{StoredApp, TaskRecord, VersionRecord};

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// Each app's versions (a JSON array, oldest first), by app id: apart from the app's
/// record, which is written on every change of its tasks, these only when a version
/// is added. (A store written before this table kept them in the record, under
/// `versions`: moved here when loaded.)
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("state store: {0}")]
    Io(String),
    #[error("state store: a record of {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub struct StateStore {
    path: PathBuf,
    /// `None` after a failed write: reopened by the next one.
    db: Option<Database>,
}

/// What the store holds.
pub struct Loaded {
    /// Each app with its versions (a record written before versions were kept: its
    /// current version as the only one).
    pub apps: Vec<StoredApp>,
    pub tasks: Vec<TaskRecord>,
    pub framework_id: Option<String>,
}

impl StateStore {
    /// Opens (or creates) `DIR/state.redb`. A second process on the same dir fails.
    pub fn open(dir: &Path) -> Result<StateStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = dir.join("state.redb");
        let db = Self::create(&path)?;
        Ok(StateStore { path, db: Some(db) })
    }

    fn create(path: &Path) -> Result<Database, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let db = Database::create(path).map_err(|e| open_err(e.to_string()))?;
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(APPS).map_err(io)?;
            txn.open_table(VERSIONS).map_err(io)?;
            txn.open_table(TASKS).map_err(io)?;
            txn.open_table(META).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(db)
    }

    /// The open database, reopened first after a failed write.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            self.db = Some(Self::create(&self.path)?);
        }
        Ok(self.db.as_ref().expect("just opened"))
    }

    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        let txn = self.db()?.begin_read().map_err(io)?;
        let mut apps = Vec::new();
        // Versions still in their app's record: moved to their table below.
        let mut to_move = Vec::new();
        let versions = txn.open_table(VERSIONS).map_err(io)?;
        for row in txn.open_table(APPS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                key: format!("app {}", k.value()),
                reason: e.to_string(),
            };
            let mut rec = StoredApp::from_json(v.value()).map_err(corrupt)?;
            match versions.get(k.value()).map_err(io)? {
                Some(kept) => {
                    let kept: Vec<VersionRecord> =
                        serde_json::from_slice(kept.value()).map_err(|e| StoreError::Corrupt {
                            key: format!("versions of app {}", k.value()),
                            reason: e.to_string(),
                        })?;
                    rec = StoredApp::new(rec.app, kept);
                }
                None => to_move.push((k.value().to_string(), rec.clone())),
            }
            apps.push(rec);
        }
        drop(versions);
        let mut tasks = Vec::new();
        for row in txn.open_table(TASKS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let rec: TaskRecord =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    key: format!("task {}", k.value()),
                    reason: e.to_string(),
                })?;
            tasks.push(rec);
        }
        let framework_id = txn
            .open_table(META)
            .map_err(io)?
            .get("framework_id")
            .map_err(io)?
            .map(|v| v.value().to_string());
        drop(txn);
        if !to_move.is_empty() {
            let writes: Vec<Write> = to_move
                .into_iter()
                .flat_map(|(id, rec)| {
                    [
                        Write::Versions(id.clone(), rec.versions),
                        Write::App(id, Some(Box::new(rec.app))),
                    ]
                })
                .collect();
            // Not fatal: loaded as they are, they are moved by the next load (a write
            // of the record alone before that drops its old versions).
            if let Err(e) = self.apply(&writes) {
                tracing::warn!(error = %e, "cannot move the apps' versions to their own table");
            }
        }
        Ok(Loaded {
            apps,
            tasks,
            framework_id,
        })
    }

    /// Applies the writes in one durable transaction: all of them, or (on an error)
    /// none.
    pub fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let result = Self::write(self.db()?, writes);
        if result.is_err() {
            // redb answers `PreviousIo` to everything after an I/O error until the
            // database is reopened.
            self.db = None;
        }
        result
    }

    fn write(db: &Database, writes: &[Write]) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(io)?;
        {
            let mut apps = txn.open_table(APPS).map_err(io)?;
            let mut versions = txn.open_table(VERSIONS).map_err(io)?;
            let mut tasks = txn.open_table(TASKS).map_err(io)?;
            let mut meta = txn.open_table(META).map_err(io)?;
            for w in writes {
                match w {
                    Write::App(id, Some(rec)) => {
                        let bytes = serde_json::to_vec(rec).map_err(io)?;
                        apps.insert(id.as_str(), bytes.as_slice()).map_err(io)?;
                    }
                    Write::App(id, None) => {
                        apps.remove(id.as_str()).map_err(io)?;
                        versions.remove(id.as_str()).map_err(io)?;
                    }
                    Write::Versions(id, kept) => {
                        let bytes = serde_json::to_vec(kept).map_err(io)?;
                        versions.insert(id.as_str(), bytes.as_slice()).map_err(io)?;
                    }
                    Write::Task(id, Some(rec)) => {
                        let bytes = serde_json::to_vec(rec).map_err(io)?;
                        tasks.insert(id.as_str(), bytes.as_slice()).map_err(io)?;
                    }
                    Write::Task(id, None) => {
                        tasks.remove(id.as_str()).map_err(io)?;
                    }
                    Write::FrameworkId(id) => {
                        meta.insert("framework_id", id.as_str()).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::records::{AppRecord, VersionRecord};

    #[test]
    fn writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::app::spec::AppSpec::parse("id: web\ncmd: sleep 10\n").unwrap();
        let app = AppRecord {
            spec: spec.clone(),
            version: "v1".into(),
            destroying: false,
            wipe: false,
            residents: Default::default(),
            next_resident: 0,
            deployment: None,
            backoff: Default::default(),
            last_failure: None,
            objects: Default::default(),
            version_cause: None,
            objects_held: Default::default(),
        };
        let mut old = spec.clone();
        old.cmd = Some("sleep 5".into());
        let app = StoredApp::new(
            app,
            vec![
                VersionRecord {
                    version: "v0".into(),
                    spec: old,
                    cause: None,
                    objects: Default::default(),
                },
                VersionRecord {
                    version: "v1".into(),
                    spec,
                    cause: Some("rollback to v0".into()),
                    objects: Default::default(),
                },
            ],
        );
        {
            let mut store = StateStore::open(dir.path()).unwrap();
            store
                .apply(&[
                    Write::App("web".into(), Some(Box::new(app.app.clone()))),
                    Write::Versions("web".into(), app.versions.clone()),
                    Write::FrameworkId("fw-1".into()),
                ])
                .unwrap();
            // The record alone, later: the versions stay as they were written.
            let mut scaled = app.app.clone();
            scaled.spec.instances = 3;
            store
                .apply(&[Write::App("web".into(), Some(Box::new(scaled.clone())))])
                .unwrap();
        }
        let mut store = StateStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let mut app = app;
        app.app.spec.instances = 3;
        assert_eq!(loaded.apps, vec![app.clone()]);
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-1"));
        store.apply(&[Write::App("web".into(), None)]).unwrap();
        assert!(store.load().unwrap().apps.is_empty());
    }

    /// An app's record as the store held it before versions had their own table (its
    /// versions in it, under `versions`) loads with them, and they are moved to the
    /// versions table: a later write of the record alone keeps them.
    #[test]
    fn versions_kept_in_the_record_are_moved_to_their_table() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::app::spec::AppSpec::parse("id: web\ncmd: sleep 10\n").unwrap();
        let mut old_spec = spec.clone();
        old_spec.cmd = Some("sleep 5".into());
        let record = serde_json::json!({
            "spec": spec,
            "version": "v1",
            "destroying": false,
            "deployment": null,
            "backoff": {"delay": 0.0, "until": 0.0},
            "last_failure": null,
            "versions": [
                {"version": "v0", "spec": old_spec, "cause": null},
                {"version": "v1", "spec": spec, "cause": null}
            ]
        });
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let bytes = serde_json::to_vec(&record).unwrap();
                let mut apps = txn.open_table(APPS).unwrap();
                apps.insert("web", bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let names = |loaded: &Loaded| -> Vec<String> {
            loaded.apps[0]
                .versions
                .iter()
                .map(|v| v.version.clone())
                .collect()
        };
        let mut store = StateStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(names(&loaded), ["v0", "v1"]);
        let app = loaded.apps[0].app.clone();
        store
            .apply(&[Write::App("web".into(), Some(Box::new(app)))])
            .unwrap();
        drop(store);
        let mut store = StateStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(names(&loaded), ["v0", "v1"], "moved, not lost");
        // Removing the app removes its versions.
        store.apply(&[Write::App("web".into(), None)]).unwrap();
        let txn = store.db().unwrap().begin_read().unwrap();
        assert!(
            txn.open_table(VERSIONS)
                .unwrap()
                .get("web")
                .unwrap()
                .is_none()
        );
    }

    /// Records as the code before typed states wrote them (state and deployment kind
    /// as strings) load into the typed records, and the typed records are written in
    /// that same form.
    #[test]
    fn records_in_the_old_string_form_load() {
        use strata_proto::v1::TaskState;

        use crate::app::records::DeploymentKind;

        let dir = tempfile::tempdir().unwrap();
        let spec = crate::app::spec::AppSpec::parse("id: web\ncmd: sleep 10\n").unwrap();
        let old_app = serde_json::json!({
            "spec": spec,
            "version": "2026-12-01T10:00:00.000Z",
            "destroying": false,
            "deployment": {
                "id": "web.0123456789ab",
                "kind": "update",
                "version": "2026-12-01T10:00:00.000Z",
                "started_at": 1764583200.0
            },
            "backoff": {"delay": 0.0, "until": 0.0},
            "last_failure": null
        });
        let old_task = serde_json::json!({
            "id": "web.aaaaaaaaaaaa",
            "app_id": "web",
            "version": "2026-12-01T10:00:00.000Z",
            "agent_id": "ag1",
            "hostname": "h1",
            "agent_address": "h1:5051",
            "attributes": {"rack": "r1"},
            "ports": [31000],
            "state": "TASK_RUNNING",
            "healthy": true,
            "staged_at": 1764583201.0,
            "started_at": 1764583202.0,
            "message": "",
            "kill_requested_at": null,
            "unreachable_since": null,
            "checked": false
        });
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let bytes = serde_json::to_vec(&old_app).unwrap();
                let mut apps = txn.open_table(APPS).unwrap();
                apps.insert("web", bytes.as_slice()).unwrap();
                let bytes = serde_json::to_vec(&old_task).unwrap();
                let mut tasks = txn.open_table(TASKS).unwrap();
                tasks.insert("web.aaaaaaaaaaaa", bytes.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = StateStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let stored = &loaded.apps[0];
        let app = &stored.app;
        // Versions were not kept then: the current one is the only one.
        assert_eq!(
            stored.versions,
            [VersionRecord {
                version: "2026-12-01T10:00:00.000Z".into(),
                spec: app.spec.clone(),
                cause: None,
                objects: Default::default(),
            }]
        );
        assert_eq!(
            app.deployment.as_ref().map(|d| d.kind),
            Some(DeploymentKind::Update)
        );
        let task = &loaded.tasks[0];
        assert_eq!(task.state, TaskState::TaskRunning);
        assert!(task.is_running());
        // Written back in the same form.
        assert_eq!(serde_json::to_value(app).unwrap(), old_app);
        assert_eq!(serde_json::to_value(task).unwrap(), old_task);
        // A state name this version does not know loads as unspecified (not running).
        let mut unknown = old_task.clone();
        unknown["state"] = "TASK_FROM_THE_FUTURE".into();
        let task: TaskRecord = serde_json::from_value(unknown).unwrap();
        assert_eq!(task.state, TaskState::Unspecified);
    }
}
