//! The composing containerizer: one agent, several ways to run tasks. A task whose
//! `TaskInfo.container` is of type DOCKER goes to the Docker containerizer, every other
//! task to the process one; `wait`, `kill`, `usage` and `exec` follow the container to
//! the containerizer that launched it.
//!
//! ```text
//! launch(spec) ── container.type DOCKER? ──yes──▶ docker  ─┐ remembers which one
//!                                        └─no───▶ process ─┘ ran each ContainerId
//! wait / kill / usage / exec(id) ──▶ the one that launched id
//! ```
//!
//! A task for a containerizer the agent was not started with fails to launch with a
//! message that says how to start the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    ResourceUsage, Termination,
};

/// Which of the composed containerizers runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Process,
    Docker,
}

/// See the module docs.
pub struct ComposingContainerizer {
    process: Option<Arc<dyn Containerizer>>,
    docker: Option<Arc<dyn Containerizer>>,
    /// Short critical sections only; never held across an `.await`.
    owners: Mutex<HashMap<ContainerId, Which>>,
}

impl ComposingContainerizer {
    /// Composes a process containerizer and a Docker one; either may be absent.
    pub fn new(
        process: Option<Arc<dyn Containerizer>>,
        docker: Option<Arc<dyn Containerizer>>,
    ) -> ComposingContainerizer {
        ComposingContainerizer {
            process,
            docker,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Which>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, which: Which) -> Result<&Arc<dyn Containerizer>, ContainerError> {
        match which {
            Which::Process => self
                .process
                .as_ref()
                .ok_or(ContainerError::NotEnabled("process")),
            Which::Docker => self
                .docker
                .as_ref()
                .ok_or(ContainerError::NotEnabled("Docker")),
        }
    }

    fn owner_of(&self, id: &ContainerId) -> Option<Which> {
        self.owners().get(id).copied()
    }
}

impl Containerizer for ComposingContainerizer {
    fn name(&self) -> &'static str {
        match (self.process.is_some(), self.docker.is_some()) {
            (true, true) => "process,docker",
            (false, true) => "docker",
            _ => "process",
        }
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>> {
        Box::pin(async move {
            let which = if strata_proto::container::is_docker(&spec.task) {
                Which::Docker
            } else {
                Which::Process
            };
            let inner = self.get(which)?;
            let id = spec.container_id.clone();
            self.owners().insert(id.clone(), which);
            let result = inner.launch(spec).await;
            if result.is_err() {
                self.owners().remove(&id);
            }
            result
        })
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>> {
        Box::pin(async move {
            let which = self
                .owner_of(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            let result = self.get(which)?.wait(id.clone()).await;
            if !matches!(result, Err(ContainerError::AlreadyWaited(_))) {
                self.owners().remove(&id);
            }
            result
        })
    }

    fn kill(&self, id: ContainerId, grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(async move {
            match self.owner_of(&id) {
                Some(which) => self.get(which)?.kill(id, grace).await,
                None => Ok(()), // ended and forgotten
            }
        })
    }

    fn recover(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        Box::pin(async move {
            let mut recovered = Vec::new();
            for (which, inner) in [
                (Which::Process, &self.process),
                (Which::Docker, &self.docker),
            ] {
                let Some(inner) = inner else { continue };
                for id in inner.recover(handles.clone()).await? {
                    self.owners().insert(id.clone(), which);
                    recovered.push(id);
                }
            }
            Ok(recovered)
        })
    }

    fn usage(&self, id: ContainerId) -> BoxFuture<'_, Result<ResourceUsage, ContainerError>> {
        Box::pin(async move {
            let which = self
                .owner_of(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            self.get(which)?.usage(id).await
        })
    }

    fn exec(
        &self,
        id: ContainerId,
        command: String,
    ) -> BoxFuture<'_, Result<ExitKind, ContainerError>> {
        Box::pin(async move {
            let which = self
                .owner_of(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            self.get(which)?.exec(id, command).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeContainerizer;
    use strata_proto::v1;

    fn spec(docker: bool) -> LaunchSpec {
        let container = docker.then(|| v1::ContainerInfo {
            r#type: v1::container_info::Type::Docker as i32,
            docker: Some(v1::DockerInfo {
                image: "busybox".into(),
                ..Default::default()
            }),
            volumes: vec![],
        });
        LaunchSpec {
            container_id: ContainerId::random(),
            agent_id: "a".into(),
            framework_id: "f".into(),
            framework: Default::default(),
            task: v1::TaskInfo {
                task_id: "t".into(),
                container,
                ..Default::default()
            },
            command: v1::CommandInfo::default(),
            resources: Default::default(),
            sandbox: "/nonexistent".into(),
            user: None,
            objects: None,
            volumes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn routes_docker_tasks_to_docker_and_others_to_process() {
        let process: Arc<dyn Containerizer> = Arc::new(FakeContainerizer::new(Duration::ZERO));
        let docker: Arc<dyn Containerizer> =
            Arc::new(FakeContainerizer::new(Duration::from_secs(3600)));
        let c = ComposingContainerizer::new(Some(process), Some(docker));
        assert_eq!(c.name(), "process,docker");
        // The process one finishes at once; the "docker" one runs until killed.
        let p = c.launch(spec(false)).await.unwrap();
        c.wait(p.id).await.unwrap();
        let d = c.launch(spec(true)).await.unwrap();
        c.kill(d.id.clone(), Duration::ZERO).await.unwrap();
        assert_eq!(
            c.wait(d.id).await.unwrap().exit,
            super::super::ExitKind::Signaled(libc::SIGKILL)
        );
    }

    #[tokio::test]
    async fn a_docker_task_on_an_agent_without_docker_fails_clearly() {
        let process: Arc<dyn Containerizer> = Arc::new(FakeContainerizer::new(Duration::ZERO));
        let c = ComposingContainerizer::new(Some(process), None);
        let err = c.launch(spec(true)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "this agent does not run Docker tasks: start it with --containerizers process,docker"
        );
    }
}
