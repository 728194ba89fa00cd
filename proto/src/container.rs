//! Validation of a task's [`v1::ContainerInfo`] (issue 4: Docker containers), shared
//! by the master (which answers a bad one with TASK_ERROR) and the agent (which never
//! trusts wire data). Every error says what was wrong and what to do.

use std::collections::HashSet;

use crate::Resources;
use crate::v1::{self, container_info, docker_info, volume};

/// Where an agent mounts a Docker task's sandbox inside its container.
pub const SANDBOX_MOUNT: &str = "/mnt/sandbox";

/// The longest Docker named volume (and volume driver) name accepted.
pub const MAX_DOCKER_VOLUME_NAME: usize = 255;

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
/// `ports`; each volume has one source (an absolute host path, or a Docker named volume
/// of a name the engine accepts) and an absolute container path without `..`; a named
/// volume needs a Docker container. A task without a container passes.
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
            if let Some((i, v)) = container
                .volumes
                .iter()
                .enumerate()
                .find(|(_, v)| !v.docker_volume.is_empty())
            {
                return Err(err(format!(
                    "container.volumes[{i}].docker_volume '{}' needs a Docker container: set container.type to DOCKER (process tasks cannot mount Docker volumes)",
                    v.docker_volume
                )));
            }
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
            let mut paths = HashSet::new();
            for (i, v) in container.volumes.iter().enumerate() {
                validate_volume(i, v).map_err(&err)?;
                if !paths.insert(v.container_path.trim_end_matches('/')) {
                    return Err(err(format!(
                        "container.volumes[{i}].container_path '{}' is mounted twice: give each volume its own path",
                        v.container_path
                    )));
                }
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

/// Checks a Docker named volume's name: what the engine accepts
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_DOCKER_VOLUME_NAME`] bytes). The error
/// says what is wrong, without naming the field (the caller does).
pub fn validate_docker_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty: name the volume, e.g. pgdata".into());
    }
    if name.len() > MAX_DOCKER_VOLUME_NAME {
        return Err(format!(
            "is {} bytes long: at most {MAX_DOCKER_VOLUME_NAME}",
            name.len()
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(
            "is not a Docker volume name: use letters, digits, '_', '.' and '-', starting with a letter or a digit"
                .into(),
        );
    }
    Ok(())
}

/// Checks a volume driver's name (`local`, or a plugin such as `rexray/ebs:latest`).
fn validate_driver(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > MAX_DOCKER_VOLUME_NAME
        || !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/'))
    {
        return Err(format!(
            "is not a volume driver name: use letters, digits, '_', '.', '-', ':' and '/', starting with a letter or a digit, at most {MAX_DOCKER_VOLUME_NAME} bytes (or leave it empty for local)"
        ));
    }
    Ok(())
}

/// Checks volume `i` of a Docker container: one source (a host path or a named
/// volume), an absolute container path without `..`, a known mode.
fn validate_volume(i: usize, v: &v1::Volume) -> Result<(), String> {
    let field = |name: &str| format!("container.volumes[{i}].{name}");
    match (v.host_path.is_empty(), v.docker_volume.is_empty()) {
        (true, true) => {
            return Err(format!(
                "container.volumes[{i}] has no source: set host_path (a path on the agent) or docker_volume (a Docker named volume)"
            ));
        }
        (false, false) => {
            return Err(format!(
                "container.volumes[{i}] sets both host_path '{}' and docker_volume '{}': set one of them",
                v.host_path, v.docker_volume
            ));
        }
        (false, true) => {
            check_path(&field("host_path"), &v.host_path)?;
            if !v.driver.is_empty() {
                return Err(format!(
                    "{} '{}' is only for a docker_volume, not a host_path",
                    field("driver"),
                    v.driver
                ));
            }
        }
        (true, false) => {
            validate_docker_volume_name(&v.docker_volume)
                .map_err(|why| format!("{} '{}' {why}", field("docker_volume"), v.docker_volume))?;
            if !v.driver.is_empty() {
                validate_driver(&v.driver)
                    .map_err(|why| format!("{} '{}' {why}", field("driver"), v.driver))?;
            }
        }
    }
    check_path(&field("container_path"), &v.container_path)?;
    if v.container_path.split('/').any(|part| part == "..") {
        return Err(format!(
            "{} '{}' contains '..': give the path itself",
            field("container_path"),
            v.container_path
        ));
    }
    if v.container_path.trim_end_matches('/').is_empty() {
        return Err(format!(
            "{} '/' is the container's root: pick a directory, e.g. /data",
            field("container_path")
        ));
    }
    if v.container_path.trim_end_matches('/') == SANDBOX_MOUNT {
        return Err(format!(
            "{} {SANDBOX_MOUNT} is where the sandbox is mounted: pick another path",
            field("container_path")
        ));
    }
    volume::Mode::try_from(v.mode)
        .map_err(|_| format!("{} {} is unknown: use RW or RO", field("mode"), v.mode))?;
    Ok(())
}

/// An absolute path that fits Docker's `source:target:mode` bind syntax.
fn check_path(field: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{field} '{path}' is not an absolute path: start it with '/'"
        ));
    }
    if path.contains(':') || path.contains(',') || path.chars().any(char::is_control) {
        return Err(format!(
            "{field} '{path}' contains ':', ',' or control characters"
        ));
    }
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
            ..Default::default()
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
            ..Default::default()
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

    fn named(name: &str, container_path: &str) -> v1::Volume {
        v1::Volume {
            docker_volume: name.into(),
            container_path: container_path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn named_volumes_need_a_good_name_a_good_path_and_docker() {
        let ok = docker_task(
            image("busybox"),
            vec![
                named("pgdata", "/var/lib/postgresql/data"),
                v1::Volume {
                    driver: "local".into(),
                    mode: volume::Mode::Ro as i32,
                    ..named("strata-test.vol_1", "/ro")
                },
            ],
        );
        assert_eq!(check(&ok), Ok(()));
        let long = "v".repeat(MAX_DOCKER_VOLUME_NAME);
        assert_eq!(
            check(&docker_task(image("busybox"), vec![named(&long, "/d")])),
            Ok(())
        );

        let refused =
            |volumes: Vec<v1::Volume>| check(&docker_task(image("busybox"), volumes)).unwrap_err();
        let cases = [
            (
                vec![named("bad name", "/d")],
                "task 't': container.volumes[0].docker_volume 'bad name' is not a Docker volume name",
            ),
            (
                vec![named("-x", "/d")],
                "container.volumes[0].docker_volume '-x' is not a Docker volume name",
            ),
            (
                vec![named("a/b", "/d")],
                "docker_volume 'a/b' is not a Docker volume name",
            ),
            (
                vec![named(&format!("{long}v"), "/d")],
                "is 256 bytes long: at most 255",
            ),
            (
                vec![named("v", "data")],
                "container.volumes[0].container_path 'data' is not an absolute path",
            ),
            (
                vec![named("v", "/data/../etc")],
                "container.volumes[0].container_path '/data/../etc' contains '..'",
            ),
            (
                vec![named("v", "/")],
                "container_path '/' is the container's root",
            ),
            (
                vec![named("v", "/mnt/sandbox/")],
                "is where the sandbox is mounted",
            ),
            (vec![named("v", "/a:b")], "contains ':'"),
            (
                vec![named("v", "/d"), named("w", "/d/")],
                "container.volumes[1].container_path '/d/' is mounted twice",
            ),
            (
                vec![v1::Volume {
                    host_path: "/srv".into(),
                    ..named("v", "/d")
                }],
                "container.volumes[0] sets both host_path '/srv' and docker_volume 'v'",
            ),
            (vec![named("", "/d")], "container.volumes[0] has no source"),
            (
                vec![v1::Volume {
                    driver: "bad driver".into(),
                    ..named("v", "/d")
                }],
                "container.volumes[0].driver 'bad driver' is not a volume driver name",
            ),
            (
                vec![v1::Volume {
                    host_path: "/srv".into(),
                    driver: "local".into(),
                    ..Default::default()
                }],
                "container.volumes[0].driver 'local' is only for a docker_volume",
            ),
            (
                vec![v1::Volume {
                    mode: 7,
                    ..named("v", "/d")
                }],
                "container.volumes[0].mode 7 is unknown",
            ),
        ];
        for (volumes, want) in cases {
            let e = refused(volumes);
            assert!(e.contains(want), "want '{want}' in: {e}");
        }

        // A process task (no container type) cannot mount a named volume.
        let process = v1::TaskInfo {
            task_id: "p".into(),
            container: Some(v1::ContainerInfo {
                volumes: vec![named("v", "/d")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = check(&process).unwrap_err();
        assert!(
            e.starts_with(
                "task 'p': container.volumes[0].docker_volume 'v' needs a Docker container"
            ),
            "{e}"
        );
    }
}
