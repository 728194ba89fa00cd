//! The fake containerizer runs nothing. A task goes straight to TASK_RUNNING and
//! finishes (exit 0) after a fixed time; a kill ends it at once. It creates no
//! sandbox either (so `/files/read` has nothing to show): file system work would
//! dominate a scale run.
//!
//! It exists for scale runs only (`strata bench`: 100 agents and 20,000 tasks in one
//! process) and for tests of the agent's logic. Never use it to run real work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    Termination,
};

/// See the module docs.
pub struct FakeContainerizer {
    /// How long each task "runs".
    task_duration: Duration,
    /// A kill signal per container; `Notify` keeps the permit if the kill comes first.
    containers: Mutex<HashMap<ContainerId, Arc<Notify>>>,
}

impl FakeContainerizer {
    pub fn new(task_duration: Duration) -> FakeContainerizer {
        FakeContainerizer {
            task_duration,
            containers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Arc<Notify>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Containerizer for FakeContainerizer {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn reports_starting(&self) -> bool {
        false
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>> {
        self.lock()
            .insert(spec.container_id.clone(), Arc::new(Notify::new()));
        Box::pin(async move { Ok(ContainerHandle::new(spec.container_id, None)) })
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>> {
        let killed = self.lock().get(&id).cloned();
        Box::pin(async move {
            let killed = killed.ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            let exit = tokio::select! {
                _ = tokio::time::sleep(self.task_duration) => ExitKind::Exited(0),
                _ = killed.notified() => ExitKind::Signaled(libc::SIGKILL),
            };
            self.lock().remove(&id);
            Ok(Termination {
                exit,
                limitation: None,
            })
        })
    }

    fn kill(&self, id: ContainerId, _grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>> {
        if let Some(killed) = self.lock().get(&id) {
            killed.notify_one();
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            container_id: ContainerId::random(),
            agent_id: "a".into(),
            framework_id: "f".into(),
            framework: Default::default(),
            task: v1::TaskInfo::default(),
            command: v1::CommandInfo::default(),
            resources: Default::default(),
            sandbox: "/nonexistent".into(),
            user: None,
            objects: None,
            volumes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn finishes_after_its_duration_or_when_killed() {
        let fake = FakeContainerizer::new(Duration::ZERO);
        let h = fake.launch(spec()).await.unwrap();
        assert_eq!(fake.wait(h.id).await.unwrap().exit, ExitKind::Exited(0));

        let fake = FakeContainerizer::new(Duration::from_secs(3600));
        let h = fake.launch(spec()).await.unwrap();
        fake.kill(h.id.clone(), Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(
            fake.wait(h.id.clone()).await.unwrap().exit,
            ExitKind::Signaled(libc::SIGKILL)
        );
        assert!(matches!(
            fake.wait(h.id).await,
            Err(ContainerError::NotFound(_))
        ));
    }
}
