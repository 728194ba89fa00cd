//! The container framework's embedded store (redb, one file in the state dir): apps,
//! tasks and the framework id, written before the actions that depend on them.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use super::core::Write;
use super::records::{AppRecord, TaskRecord};

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
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

pub struct Store {
    db: Database,
}

/// What the store holds.
pub struct Loaded {
    pub apps: Vec<AppRecord>,
    pub tasks: Vec<TaskRecord>,
    pub framework_id: Option<String>,
}

impl Store {
    /// Opens (or creates) `DIR/state.redb`. A second process on the same dir fails.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("state.redb");
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        let txn = db.begin_write().map_err(io)?;
        {
            txn.open_table(APPS).map_err(io)?;
            txn.open_table(TASKS).map_err(io)?;
            txn.open_table(META).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(Store { db })
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let mut apps = Vec::new();
        for row in txn.open_table(APPS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let rec: AppRecord =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    key: format!("app {}", k.value()),
                    reason: e.to_string(),
                })?;
            apps.push(rec);
        }
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
        Ok(Loaded {
            apps,
            tasks,
            framework_id,
        })
    }

    /// Applies the writes in one durable transaction.
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut apps = txn.open_table(APPS).map_err(io)?;
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

    #[test]
    fn writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::app::spec::AppSpec::parse("id: web\ncmd: sleep 10\n").unwrap();
        let app = AppRecord {
            spec,
            version: "v1".into(),
            destroying: false,
            deployment: None,
            backoff: Default::default(),
            last_failure: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .apply(&[
                    Write::App("web".into(), Some(Box::new(app.clone()))),
                    Write::FrameworkId("fw-1".into()),
                ])
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.apps, vec![app]);
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-1"));
        store.apply(&[Write::App("web".into(), None)]).unwrap();
        assert!(store.load().unwrap().apps.is_empty());
    }
}
