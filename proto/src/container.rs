//! Validation of a task's [`v1::ContainerInfo`] (issue 4: Docker containers), shared
//! by the master (which answers a bad one with TASK_ERROR) and the agent (which never
//! trusts wire data). Every error says what was wrong and what to do.

use std::collections::HashSet;

use crate::Resources;
use crate::v1::{self, container_info, docker_info, volume};

/// Where an agent mounts a Docker task's sandbox inside its container.
pub const SANDBOX_MOUNT: &str = "/mnt/sandbox";

/// The name of the agent attribute that lists the containerizers an agent runs
/// (comma separated, e.g. `process,docker`).
pub const CONTAINERIZERS_ATTRIBUTE: &str = "containerizers";

/// Why a task's container description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task '{task_id}': {message}")]
pub struct ContainerError {
    pub task_id: String,
    pub message: String,
}

/// Whether the task asks for a Docker container.
pub fn is_docker(task: &v1::TaskInfo) -> bool {
    task.container
        .as_ref()
        .is_some_and(|c| c.r#type == container_info::Type::Docker as i32)
}

/// Checks the task's container against its (validated) resources: a Docker task names
/// an image; port mappings use bridge networking and host ports among the task's
/// `ports`; volumes have absolute paths. A task without a container passes.
pub fn validate(task: &v1::TaskInfo, resources: &Resources) -> Result<(), ContainerError> {
    let err = |message: String| ContainerError {
        task_id: task.task_id.clone(),
        message,
    };
    let Some(container) = &task.container else {
        return Ok(());
    };
    let kind = container_info::Type::try_from(container.r#type).map_err(|_| {
        err(format!(
            "container.type {} is unknown: use DOCKER",
            container.r#type
        ))
    })?;
    match kind {
        container_info::Type::Unspecified => {
            if container.docker.is_some() || !container.volumes.is_empty() {
                return Err(err(
                    "container.type is not set: set it to DOCKER to run in a Docker container"
                        .into(),
                ));
            }
            Ok(())
        }
        container_info::Type::Docker => {
            let docker = container.docker.as_ref().ok_or_else(|| {
                err("container.type is DOCKER but container.docker is missing: set container.docker.image".into())
            })?;
            validate_docker(docker, resources).map_err(&err)?;
            for v in &container.volumes {
                validate_volume(v).map_err(&err)?;
            }
            Ok(())
        }
    }
}

fn validate_docker(docker: &v1::DockerInfo, resources: &Resources) -> Result<(), String> {
    let image = docker.image.trim();
    if image.is_empty() {
        return Err("container.docker.image is empty: name an image, e.g. busybox:latest".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "container.docker.image '{image}' contains whitespace"
        ));
    }
    let network = docker_info::Network::try_from(docker.network).map_err(|_| {
        format!(
            "container.docker.network {} is unknown: use HOST, BRIDGE or NONE",
            docker.network
        )
    })?;
    docker_info::PullPolicy::try_from(docker.pull_policy).map_err(|_| {
        format!(
            "container.docker.pull_policy {} is unknown: use IF_NOT_PRESENT, ALWAYS or NEVER",
            docker.pull_policy
        )
    })?;
    if !docker.port_mappings.is_empty() && network != docker_info::Network::Bridge {
        return Err(
            "port mappings need the bridge network: set container.docker.network to BRIDGE".into(),
        );
    }
    let ports = resources.ports();
    let mut seen = HashSet::new();
    for m in &docker.port_mappings {
        let protocol = match m.protocol.as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return Err(format!(
                    "port mapping protocol '{other}' is unknown: use tcp or udp"
                ));
            }
        };
        if m.container_port == 0 || m.container_port > 65535 {
            return Err(format!(
                "container port {} is not a port (1-65535)",
                m.container_port
            ));
        }
        if !ports.contains_value(u64::from(m.host_port)) {
            return Err(format!(
                "host port {} of a port mapping is not among the task's ports resources ({}): take it from the offer's ports",
                m.host_port,
                if ports.is_empty() {
                    "none".to_string()
                } else {
                    ports
                        .ranges()
                        .iter()
                        .map(|(b, e)| format!("{b}-{e}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ));
        }
        if !seen.insert((m.host_port, protocol)) {
            return Err(format!(
                "host port {}/{protocol} is mapped twice",
                m.host_port
            ));
        }
    }
    Ok(())
}

fn validate_volume(v: &v1::Volume) -> Result<(), String> {
    for (what, path) in [
        ("host_path", &v.host_path),
        ("container_path", &v.container_path),
    ] {
        if !path.starts_with('/') {
            return Err(format!(
                "volume {what} '{path}' is not an absolute path: start it with '/'"
            ));
        }
        if path.contains(':') || path.contains(',') || path.chars().any(char::is_control) {
            return Err(format!(
                "volume {what} '{path}' contains ':', ',' or control characters"
            ));
        }
    }
    if v.container_path == SANDBOX_MOUNT {
        return Err(format!(
            "volume container_path {SANDBOX_MOUNT} is where the sandbox is mounted: pick another path"
        ));
    }
    volume::Mode::try_from(v.mode)
        .map_err(|_| format!("volume mode {} is unknown: use RW or RO", v.mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_task(docker: v1::DockerInfo, volumes: Vec<v1::Volume>) -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: "t".into(),
            container: Some(v1::ContainerInfo {
                r#type: container_info::Type::Docker as i32,
                docker: Some(docker),
                volumes,
            }),
            ..Default::default()
        }
    }

    fn image(image: &str) -> v1::DockerInfo {
        v1::DockerInfo {
            image: image.into(),
            ..Default::default()
        }
    }

    fn check(task: &v1::TaskInfo) -> Result<(), String> {
        let r = Resources::parse("cpus:1;mem:64;ports:[31000-31001]").unwrap();
        validate(task, &r).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_and_good_docker_tasks_pass() {
        assert_eq!(check(&v1::TaskInfo::default()), Ok(()));
        let mut docker = image("busybox:latest");
        docker.network = docker_info::Network::Bridge as i32;
        docker.port_mappings.push(docker_info::PortMapping {
            host_port: 31001,
            container_port: 80,
            protocol: String::new(),
        });
        let vol = v1::Volume {
            host_path: "/data".into(),
            container_path: "/data".into(),
            mode: volume::Mode::Ro as i32,
        };
        let t = docker_task(docker, vec![vol]);
        assert!(is_docker(&t));
        assert_eq!(check(&t), Ok(()));
    }

    #[test]
    fn bad_docker_tasks_are_refused_with_a_reason() {
        let e = check(&docker_task(image(" "), vec![])).unwrap_err();
        assert!(e.contains("image is empty"), "{e}");

        let mut docker = image("busybox");
        docker.port_mappings.push(docker_info::PortMapping {
            host_port: 31000,
            container_port: 80,
            protocol: "tcp".into(),
        });
        let e = check(&docker_task(docker.clone(), vec![])).unwrap_err();
        assert!(e.contains("need the bridge network"), "{e}");

        docker.network = docker_info::Network::Bridge as i32;
        docker.port_mappings[0].host_port = 8080;
        let e = check(&docker_task(docker, vec![])).unwrap_err();
        assert!(
            e.contains("host port 8080") && e.contains("31000-31001"),
            "{e}"
        );

        let vol = v1::Volume {
            host_path: "data".into(),
            container_path: "/data".into(),
            mode: 0,
        };
        let e = check(&docker_task(image("busybox"), vec![vol])).unwrap_err();
        assert!(e.contains("not an absolute path"), "{e}");

        let t = v1::TaskInfo {
            task_id: "t".into(),
            container: Some(v1::ContainerInfo {
                r#type: container_info::Type::Docker as i32,
                docker: None,
                volumes: vec![],
            }),
            ..Default::default()
        };
        assert!(
            check(&t)
                .unwrap_err()
                .contains("container.docker is missing")
        );
    }
}
