//! [`TaskBuilder`]: describe a command task once, then build its `v1::TaskInfo` for
//! an agent or against an offer.
//!
//! ```
//! use strata_framework_sdk::TaskBuilder;
//!
//! let task = TaskBuilder::new("web-1")
//!     .shell("python3 -m http.server $PORT0")
//!     .cpus(0.5)
//!     .mem(128.0)
//!     .ports(1)
//!     .env("GREETING", "hi");
//! // Against an offer: ports are picked from the offer's ranges and exported to the
//! // task as PORT0, PORT1, ... (and PORTS, comma-separated).
//! # let _ = task;
//!
//! // A Docker task: the image's /bin/sh runs the command; container port 80 is
//! // published on a host port picked from the offer (bridge network).
//! let web = TaskBuilder::new("web-2")
//!     .docker_image("nginx:1.27")
//!     .shell("nginx -g 'daemon off;'")
//!     .cpus(0.5)
//!     .mem(128.0)
//!     .port_mapping(80);
//! # let _ = web;
//!
//! // Discoverable as the service "web" (DNS `web.strata`, SRV `_http._tcp.web.strata`):
//! // the port picked from the offer for PORT0 is published as "http".
//! let svc = TaskBuilder::new("web-3")
//!     .shell("python3 -m http.server $PORT0")
//!     .cpus(0.5)
//!     .service("web")
//!     .named_port("http", 0, "tcp");
//! # let _ = svc;
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strata_proto::{Resources, Scalar, v1};

use crate::SdkError;
use crate::offers::offer_resources;
use crate::ops::ResourceList;

/// What the task runs.
#[derive(Clone, Debug, PartialEq)]
enum Command {
    /// `/bin/sh -c <script>`.
    Shell(String),
    /// exec `program` with the builder's arguments.
    Exec(String),
}

/// The Docker container of a task (see [`TaskBuilder::docker_image`]).
#[derive(Clone, Debug, PartialEq)]
struct DockerSpec {
    image: String,
    network: Option<v1::docker_info::Network>,
    /// (container port, protocol); host ports are picked from the offer in order.
    mappings: Vec<(u32, String)>,
    volumes: Vec<v1::Volume>,
    pull_policy: v1::docker_info::PullPolicy,
    force_pull: bool,
}

/// A command task under construction. Cheap to clone; build as many `TaskInfo`s from
/// it as needed (change the id with [`id`](TaskBuilder::id)).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskBuilder {
    id: String,
    name: Option<String>,
    command: Option<Command>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    user: Option<String>,
    cpus: Option<f64>,
    mem: Option<f64>,
    disk: Option<f64>,
    ports: u64,
    extra: Resources,
    /// Persistent volumes, as given (validated when the task is built).
    volumes: Vec<v1::Resource>,
    labels: BTreeMap<String, String>,
    grace: Option<Duration>,
    data: Vec<u8>,
    docker: Option<DockerSpec>,
    health_check: Option<v1::HealthCheck>,
    discovery: Option<v1::DiscoveryInfo>,
    objects: Vec<v1::ObjectRef>,
}

impl TaskBuilder {
    /// A task with this id (unique within the framework). The name defaults to the id.
    pub fn new(id: impl Into<String>) -> Self {
        TaskBuilder {
            id: id.into(),
            name: None,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            user: None,
            cpus: None,
            mem: None,
            disk: None,
            ports: 0,
            extra: Resources::new(),
            volumes: Vec::new(),
            labels: BTreeMap::new(),
            grace: None,
            data: Vec::new(),
            docker: None,
            health_check: None,
            discovery: None,
            objects: Vec::new(),
        }
    }

    /// The task id this builder produces.
    pub fn task_id(&self) -> &str {
        &self.id
    }

    /// Replaces the task id (handy when stamping many tasks from one template).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// A human-readable name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(mut self, script: impl Into<String>) -> Self {
        self.command = Some(Command::Shell(script.into()));
        self
    }

    /// Executes `program` directly (no shell), with the arguments given by
    /// [`arg`](TaskBuilder::arg) / [`args`](TaskBuilder::args).
    pub fn exec(mut self, program: impl Into<String>) -> Self {
        self.command = Some(Command::Exec(program.into()));
        self
    }

    /// Appends one argument (exec commands only).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments (exec commands only).
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the task.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Runs the task as this user (when the agent runs as root).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// CPUs (fractions allowed, e.g. 0.1).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Memory in MiB.
    pub fn mem(mut self, mem: f64) -> Self {
        self.mem = Some(mem);
        self
    }

    /// Disk in MiB.
    pub fn disk(mut self, disk: f64) -> Self {
        self.disk = Some(disk);
        self
    }

    /// How many ports the task needs; they are picked from the offer by
    /// [`build_for`](TaskBuilder::build_for) and exported as `PORT0`, `PORT1`, ...
    pub fn ports(mut self, count: u64) -> Self {
        self.ports = count;
        self
    }

    /// Further resources (for example `gpus`, or exact port ranges), added to the
    /// cpus/mem/disk set above.
    pub fn resources(mut self, resources: &Resources) -> Self {
        self.extra.add(resources);
        self
    }

    /// Mounts a persistent volume into the task at its container path (relative to the
    /// sandbox; a Docker task also sees it at `/<container_path>`). Name the volume
    /// exactly as offered: same role, persistence id, size and container path (an
    /// entry of [`ops::offer_volumes`](crate::ops::offer_volumes), or the
    /// [`ops::persistent_volume`](crate::ops::persistent_volume) it was created from).
    /// The volume is part of the task's resources, so the task is placed only on an
    /// offer that holds it; a volume is used whole, by one task at a time. Anything
    /// but a persistent volume fails the build.
    ///
    /// ```
    /// use strata_framework_sdk::{TaskBuilder, ops};
    ///
    /// let volume = ops::persistent_volume("db", "pg_0_0", "data", 512.0, false).unwrap();
    /// let task = TaskBuilder::new("pg-0")
    ///     .shell("echo $((`cat data/n 2>/dev/null || echo 0` + 1)) > data/n")
    ///     .cpus(0.5)
    ///     .persistent_volume(&volume)
    ///     .build("agent-1")
    ///     .unwrap();
    /// assert!(task.resources.iter().any(ops::is_volume));
    /// ```
    pub fn persistent_volume(mut self, volume: &(impl ResourceList + ?Sized)) -> Self {
        self.volumes.extend(volume.to_wire());
        self
    }

    /// A label, visible in the master's state.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Opaque bytes carried with the task.
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// A health check the agent runs next to the task once it is TASK_RUNNING (Mesos
    /// semantics): HTTP (`GET http://127.0.0.1:<port><path>`, 200-399 is healthy), TCP
    /// (a connection to 127.0.0.1:`port` is accepted) or COMMAND (`/bin/sh -c command`
    /// in the sandbox with the task's environment, inside the container for Docker
    /// tasks; exit status 0 is healthy). Unset durations take Mesos' defaults
    /// ([`strata_proto::health::defaults`]: delay 15 s, interval 10 s, timeout 20 s,
    /// grace period 0, 3 consecutive failures).
    ///
    /// The scheduler sees the first result and every change of health as a
    /// TASK_RUNNING update with `healthy` set and reason
    /// REASON_TASK_HEALTH_CHECK_STATUS_UPDATED; after `consecutive_failures` failures in
    /// a row (0: never) the agent kills the task, which ends TASK_KILLED with `healthy`
    /// false and reason REASON_TASK_HEALTH_CHECK_FAILED. A bad check (no type, HTTP/TCP
    /// without a port, COMMAND without a command, a negative duration) makes the task
    /// TASK_ERROR. HTTP and TCP checks name a host port: for a port picked by
    /// [`build_for`](TaskBuilder::build_for), set `health_check.port` on the built
    /// `TaskInfo` to its `PORT0` (the first `ports` range).
    ///
    /// ```
    /// use strata_framework_sdk::TaskBuilder;
    /// use strata_framework_sdk::v1;
    ///
    /// let task = TaskBuilder::new("web-1")
    ///     .shell("test -e ready && sleep 3600")
    ///     .cpus(0.1)
    ///     .health_check(v1::HealthCheck {
    ///         r#type: v1::health_check::Type::Command as i32,
    ///         command: "test -e ready".into(),
    ///         interval_seconds: Some(5.0),
    ///         consecutive_failures: Some(3),
    ///         ..Default::default()
    ///     })
    ///     .build("agent-1")
    ///     .unwrap();
    /// assert!(task.health_check.is_some());
    /// ```
    pub fn health_check(mut self, check: v1::HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// How the task is discovered (Mesos' DiscoveryInfo): the service it is an instance
    /// of, its visibility, its named ports and labels. The master keeps it with the task
    /// and shows it in `/state` and the operator API; service discovery (DNS) publishes
    /// the task under its name, and each named port as an SRV record. Replaces what
    /// [`service`](TaskBuilder::service) and [`named_port`](TaskBuilder::named_port)
    /// set before; call them after it to add to it. A port numbered 0 takes a port
    /// picked from the offer (see [`named_port`](TaskBuilder::named_port)).
    ///
    /// Unset fields mean: visibility CLUSTER, name the task's name, protocol `tcp`. A
    /// bad port (a number over 65535, a protocol other than `tcp`/`udp`, a name that is
    /// not a DNS label, a name used twice) fails the build
    /// ([`strata_proto::discovery::validate`], the master's own check).
    ///
    /// ```
    /// use strata_framework_sdk::TaskBuilder;
    /// use strata_framework_sdk::v1;
    /// use v1::discovery_info::Visibility;
    ///
    /// let task = TaskBuilder::new("db-1")
    ///     .shell("exec my-db --port 5432")
    ///     .cpus(1.0)
    ///     .discovery(v1::DiscoveryInfo {
    ///         visibility: Visibility::Framework as i32,
    ///         name: "db".into(),
    ///         version: "15.2".into(),
    ///         ..Default::default()
    ///     })
    ///     .named_port("pg", 5432, "tcp")
    ///     .build("agent-1")
    ///     .unwrap();
    /// let discovery = task.discovery.unwrap();
    /// assert_eq!(discovery.name, "db");
    /// assert_eq!(discovery.ports.unwrap().ports[0].number, 5432);
    /// ```
    pub fn discovery(mut self, info: v1::DiscoveryInfo) -> Self {
        self.discovery = Some(info);
        self
    }

    /// Delivers the latest version of the secret `name` as the file `path`, relative to
    /// the task's secrets directory (a tmpfs: `$STRATA_SANDBOX/secrets/` for a process
    /// task, `/run/secrets/` in a Docker container), mode 0400. The agent fetches the
    /// value from the master at launch; the framework never sees it. The framework's
    /// principal must be allowed to use the secret (ACL `use_secrets`, or having
    /// created it), else the task fails with TASK_ERROR naming it.
    ///
    /// ```
    /// use strata_framework_sdk::TaskBuilder;
    /// let task = TaskBuilder::new("db-1")
    ///     .shell("cat $STRATA_SANDBOX/secrets/db-pass")
    ///     .secret_file("db-pass", "db-pass")
    ///     .secret_env("DB_PASS", "db-pass")
    ///     .config_file("db-conf", "configs/db.conf")
    ///     .build("agent-1")
    ///     .unwrap();
    /// assert_eq!(task.objects.len(), 3);
    /// ```
    pub fn secret_file(self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.object(
            v1::ObjectKind::Secret,
            name,
            v1::object_ref::Target::File(path.into()),
        )
    }

    /// Sets the environment variable `var` to the latest version of the secret `name`.
    pub fn secret_env(self, var: impl Into<String>, name: impl Into<String>) -> Self {
        self.object(
            v1::ObjectKind::Secret,
            name,
            v1::object_ref::Target::Env(var.into()),
        )
    }

    /// Delivers the latest version of the config `name` as the file `path`: relative
    /// to the sandbox (e.g. `configs/NAME`), or for a Docker task an absolute path in
    /// the container; mode 0444.
    pub fn config_file(self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.object(
            v1::ObjectKind::Config,
            name,
            v1::object_ref::Target::File(path.into()),
        )
    }

    /// Sets the environment variable `var` to the latest version of the config `name`.
    pub fn config_env(self, var: impl Into<String>, name: impl Into<String>) -> Self {
        self.object(
            v1::ObjectKind::Config,
            name,
            v1::object_ref::Target::Env(var.into()),
        )
    }

    /// References a config or secret as given (`version` 0: the latest at launch; the
    /// master pins it).
    pub fn object_ref(mut self, reference: v1::ObjectRef) -> Self {
        self.objects.push(reference);
        self
    }

    fn object(
        self,
        kind: v1::ObjectKind,
        name: impl Into<String>,
        target: v1::object_ref::Target,
    ) -> Self {
        self.object_ref(v1::ObjectRef {
            kind: kind as i32,
            name: name.into(),
            version: 0,
            target: Some(target),
        })
    }

    /// Makes the task discoverable as an instance of the service `name` (e.g. `web`:
    /// DNS `web.strata`), visible to the whole cluster unless
    /// [`discovery`](TaskBuilder::discovery) says otherwise.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.discovery.get_or_insert_with(Default::default).name = name.into();
        self
    }

    /// Publishes a port of the task under `name` (a DNS label such as `http`: SRV
    /// `_http._tcp.SERVICE.strata`) with `protocol` `tcp` or `udp`. `number` is the
    /// host port; 0 means a port picked from the offer by
    /// [`build_for`](TaskBuilder::build_for): the first named port numbered 0 gets
    /// PORT0 (with port mappings, the host port of the first mapping), the second
    /// PORT1, and so on; the task takes at least that many ports. Makes the task
    /// discoverable (under its name, unless [`service`](TaskBuilder::service) names the
    /// service).
    ///
    /// ```
    /// use strata_framework_sdk::{TaskBuilder, v1};
    ///
    /// let offer = v1::Offer {
    ///     id: "o1".into(),
    ///     agent_id: "a1".into(),
    ///     resources: strata_framework_sdk::Resources::parse("cpus:1;mem:256;ports:[31000-31009]")
    ///         .unwrap()
    ///         .to_proto(),
    ///     ..Default::default()
    /// };
    /// let task = TaskBuilder::new("web-1")
    ///     .shell("serve --http $PORT0 --dns $PORT1")
    ///     .cpus(0.5)
    ///     .service("web")
    ///     .named_port("http", 0, "tcp")
    ///     .named_port("dns", 0, "udp")
    ///     .build_for(&offer)
    ///     .unwrap();
    /// let ports = task.discovery.unwrap().ports.unwrap().ports;
    /// assert_eq!((ports[0].name.as_str(), ports[0].number), ("http", 31000));
    /// assert_eq!((ports[1].name.as_str(), ports[1].protocol.as_str()), ("dns", "udp"));
    /// assert_eq!(ports[1].number, 31001);
    /// ```
    pub fn named_port(mut self, name: impl Into<String>, number: u16, protocol: &str) -> Self {
        self.discovery
            .get_or_insert_with(Default::default)
            .ports
            .get_or_insert_with(Default::default)
            .ports
            .push(v1::Port {
                number: u32::from(number),
                name: name.into(),
                protocol: protocol.to_string(),
                ..Default::default()
            });
        self
    }

    /// Discovery ports numbered 0: each takes a port picked from the offer.
    fn picked_discovery_ports(&self) -> u64 {
        self.discovery.as_ref().map_or(0, |d| {
            strata_proto::discovery::ports(d)
                .iter()
                .filter(|p| p.number == 0)
                .count() as u64
        })
    }

    /// Runs the task in a Docker container of `image` (on agents started with
    /// `--containerizers process,docker`, which advertise the attribute
    /// `containerizers` with `docker` in it). The command runs in the container:
    /// [`shell`](TaskBuilder::shell) as `/bin/sh -c`, [`exec`](TaskBuilder::exec) as its
    /// entrypoint. cpus and mem become the container's limits.
    pub fn docker_image(mut self, image: impl Into<String>) -> Self {
        let image = image.into();
        match &mut self.docker {
            Some(d) => d.image = image,
            None => {
                self.docker = Some(DockerSpec {
                    image,
                    network: None,
                    mappings: Vec::new(),
                    volumes: Vec::new(),
                    pull_policy: v1::docker_info::PullPolicy::Unspecified,
                    force_pull: false,
                })
            }
        }
        self
    }

    fn docker_mut(&mut self) -> &mut DockerSpec {
        self.docker.get_or_insert_with(|| DockerSpec {
            image: String::new(),
            network: None,
            mappings: Vec::new(),
            volumes: Vec::new(),
            pull_policy: v1::docker_info::PullPolicy::Unspecified,
            force_pull: false,
        })
    }

    /// The Docker network: host (the default without port mappings), bridge (the
    /// default with them) or none.
    pub fn network(mut self, network: v1::docker_info::Network) -> Self {
        self.docker_mut().network = Some(network);
        self
    }

    /// Publishes TCP `container_port` on a host port picked from the offer (one more
    /// port per mapping; the first mapping gets PORT0, ...). Docker tasks only.
    pub fn port_mapping(self, container_port: u16) -> Self {
        self.port_mapping_with(container_port, "tcp")
    }

    /// Like [`port_mapping`](TaskBuilder::port_mapping), with protocol `tcp` or `udp`.
    pub fn port_mapping_with(mut self, container_port: u16, protocol: &str) -> Self {
        self.docker_mut()
            .mappings
            .push((u32::from(container_port), protocol.to_string()));
        self
    }

    /// Mounts the agent's `host_path` at `container_path` (read-only when `read_only`).
    pub fn volume(
        self,
        host_path: impl Into<String>,
        container_path: impl Into<String>,
        read_only: bool,
    ) -> Self {
        self.mount(
            v1::Volume {
                host_path: host_path.into(),
                container_path: container_path.into(),
                ..Default::default()
            },
            read_only,
        )
    }

    /// Mounts the Docker named volume `name` at `container_path` (read-only when
    /// `read_only`). The agent creates the volume on first use (driver `local`,
    /// labelled `strata.volume=true` and `strata.agent_id=<agent id>`) and uses one that
    /// exists as it is; Strata never removes it, so the data outlives the task and is
    /// there for the next task on that agent that mounts it. Docker tasks only; the
    /// framework's principal needs the ACL action `use_docker_volumes` for the name.
    ///
    /// ```
    /// use strata_framework_sdk::TaskBuilder;
    ///
    /// let task = TaskBuilder::new("db-1")
    ///     .docker_image("postgres:16")
    ///     .shell("docker-entrypoint.sh postgres")
    ///     .cpus(1.0)
    ///     .mem(512.0)
    ///     .docker_volume("pgdata", "/var/lib/postgresql/data", false)
    ///     .build("agent-1")
    ///     .unwrap();
    /// let volume = &task.container.unwrap().volumes[0];
    /// assert_eq!(volume.docker_volume, "pgdata");
    /// assert_eq!(volume.container_path, "/var/lib/postgresql/data");
    /// assert!(volume.host_path.is_empty());
    /// ```
    pub fn docker_volume(
        self,
        name: impl Into<String>,
        container_path: impl Into<String>,
        read_only: bool,
    ) -> Self {
        self.mount(
            v1::Volume {
                docker_volume: name.into(),
                container_path: container_path.into(),
                ..Default::default()
            },
            read_only,
        )
    }

    /// Adds `volume` to the Docker container, read-only when `read_only`.
    fn mount(mut self, mut volume: v1::Volume, read_only: bool) -> Self {
        let mode = if read_only {
            v1::volume::Mode::Ro
        } else {
            v1::volume::Mode::Rw
        };
        volume.mode = mode as i32;
        self.docker_mut().volumes.push(volume);
        self
    }

    /// When the agent pulls the image: if it is not present (the default), always or never.
    pub fn pull_policy(mut self, policy: v1::docker_info::PullPolicy) -> Self {
        self.docker_mut().pull_policy = policy;
        self
    }

    /// The number of ports the task takes: those requested with
    /// [`ports`](TaskBuilder::ports), or one per port mapping, or one per named port
    /// numbered 0 ([`named_port`](TaskBuilder::named_port)), whichever is most.
    pub fn port_count(&self) -> u64 {
        let mappings = self.docker.as_ref().map_or(0, |d| d.mappings.len() as u64);
        self.ports.max(mappings).max(self.picked_discovery_ports())
    }

    /// The resources the task asks for, without the ports picked at build time.
    pub fn requested(&self) -> Result<Resources, SdkError> {
        let mut out = Resources::new();
        for (name, value) in [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)] {
            let Some(value) = value else { continue };
            if !value.is_finite() || value < 0.0 {
                return Err(SdkError::InvalidArgument(format!(
                    "task '{}': {name} must be a finite number >= 0, not {value}",
                    self.id
                )));
            }
            let amount = Scalar::from_f64(value).ok_or_else(|| {
                SdkError::InvalidArgument(format!(
                    "task '{}': {name} {value} is too large",
                    self.id
                ))
            })?;
            out = out.with_scalar(name, amount);
        }
        out.add(&self.extra);
        if !self.volumes.is_empty() {
            let volumes = Resources::try_from_proto(&self.volumes).map_err(|e| {
                SdkError::InvalidArgument(format!("task '{}': bad persistent volume: {e}", self.id))
            })?;
            if let Some(e) = volumes.entries().iter().find(|e| e.persistence().is_none()) {
                return Err(SdkError::InvalidArgument(format!(
                    "task '{}': '{}' is not a persistent volume (a disk with a persistence id and a container path)",
                    self.id,
                    Resources::of_entry(e.clone())
                )));
            }
            out.add(&volumes);
        }
        Ok(out)
    }

    /// Builds the task for `agent_id` without checking what the agent has. Refused when
    /// the task asks for ports by count ([`build_for`](TaskBuilder::build_for) picks them).
    pub fn build(&self, agent_id: impl Into<String>) -> Result<v1::TaskInfo, SdkError> {
        if self.port_count() > 0 {
            return Err(SdkError::InvalidArgument(format!(
                "task '{}' asks for {} ports: build it with build_for(&offer) so they can be picked",
                self.id,
                self.port_count()
            )));
        }
        let resources = self.requested()?;
        self.assemble(agent_id.into(), resources, &[])
    }

    /// Builds the task to run on `offer`, picking its ports from the offer's ranges.
    /// Fails with [`SdkError::DoesNotFit`] when the offer is too small.
    pub fn build_for(&self, offer: &v1::Offer) -> Result<v1::TaskInfo, SdkError> {
        let available = offer_resources(offer)?;
        self.build_within(&offer.agent_id, &available)
            .map(|(task, _)| task)
    }

    /// Builds the task against `available` (what is left of an offer); returns the
    /// task and the resources it takes, ports included.
    pub(crate) fn build_within(
        &self,
        agent_id: &str,
        available: &Resources,
    ) -> Result<(v1::TaskInfo, Resources), SdkError> {
        let mut needs = self.requested()?;
        let mut ports = Vec::new();
        if self.port_count() > 0 {
            let free = available.unreserved().ports();
            let Some(picked) = free.take_lowest(self.port_count()) else {
                return Err(self.does_not_fit(&needs, available));
            };
            for &(begin, end) in picked.ranges() {
                ports.extend(begin..=end);
            }
            needs = needs.with_ranges("ports", picked);
        }
        if !available.contains(&needs) {
            return Err(self.does_not_fit(&needs, available));
        }
        let task = self.assemble(agent_id.to_string(), needs.clone(), &ports)?;
        Ok((task, needs))
    }

    fn does_not_fit(&self, needs: &Resources, available: &Resources) -> SdkError {
        let mut needs = needs.to_string();
        if self.port_count() > 0 && !needs.contains("ports") {
            needs.push_str(&format!(" and {} ports", self.port_count()));
        }
        SdkError::DoesNotFit {
            task_id: self.id.clone(),
            needs,
            available: available.clone(),
        }
    }

    fn assemble(
        &self,
        agent_id: String,
        resources: Resources,
        ports: &[u64],
    ) -> Result<v1::TaskInfo, SdkError> {
        if self.id.is_empty() {
            return Err(SdkError::InvalidArgument(
                "a task needs a non-empty id".into(),
            ));
        }
        let (shell, value) = match &self.command {
            Some(Command::Shell(script)) => {
                if !self.args.is_empty() {
                    return Err(SdkError::InvalidArgument(format!(
                        "task '{}': arguments are only used with exec(); put them in the shell command",
                        self.id
                    )));
                }
                (true, script.clone())
            }
            Some(Command::Exec(program)) => (false, program.clone()),
            None => {
                return Err(SdkError::InvalidArgument(format!(
                    "task '{}' has no command: call shell(..) or exec(..)",
                    self.id
                )));
            }
        };
        if value.trim().is_empty() {
            return Err(SdkError::InvalidArgument(format!(
                "task '{}' has an empty command",
                self.id
            )));
        }
        let mut environment: HashMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (i, port) in ports.iter().enumerate() {
            environment.insert(format!("PORT{i}"), port.to_string());
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(u64::to_string).collect();
            environment.insert("PORTS".into(), list.join(","));
        }
        let task = v1::TaskInfo {
            task_id: self.id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.id.clone()),
            agent_id,
            resources: resources.to_proto(),
            command: Some(v1::CommandInfo {
                shell,
                value,
                arguments: self.args.clone(),
                environment,
                user: self.user.clone().unwrap_or_default(),
            }),
            kill_policy: self.grace.map(|g| v1::KillPolicy {
                grace_period_seconds: Some(g.as_secs_f64()),
            }),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            data: self.data.clone(),
            container: self.container(ports)?,
            health_check: self.health_check.clone(),
            discovery: self.discovery_info(ports),
            objects: self.objects.clone(),
        };
        strata_proto::discovery::validate(&task)
            .map_err(|e| SdkError::InvalidArgument(e.to_string()))?;
        Ok(task)
    }

    /// The task's DiscoveryInfo, its ports numbered 0 given the picked `ports` in order.
    fn discovery_info(&self, ports: &[u64]) -> Option<v1::DiscoveryInfo> {
        let mut info = self.discovery.clone()?;
        let mut picked = ports.iter();
        if let Some(list) = info.ports.as_mut() {
            for port in list.ports.iter_mut().filter(|p| p.number == 0) {
                // build() refuses tasks with ports to pick, and build_within picks
                // port_count() >= the ports numbered 0: never runs out.
                port.number = picked.next().map_or(0, |&p| u32::try_from(p).unwrap_or(0));
            }
        }
        Some(info)
    }

    /// The task's ContainerInfo: `None` for a process task.
    fn container(&self, ports: &[u64]) -> Result<Option<v1::ContainerInfo>, SdkError> {
        let Some(d) = &self.docker else {
            return Ok(None);
        };
        if d.image.trim().is_empty() {
            return Err(SdkError::InvalidArgument(format!(
                "task '{}' sets Docker options but no image: call docker_image(..)",
                self.id
            )));
        }
        let port_mappings = d
            .mappings
            .iter()
            .zip(ports)
            .map(
                |((container_port, protocol), host)| v1::docker_info::PortMapping {
                    host_port: u32::try_from(*host).unwrap_or(0),
                    container_port: *container_port,
                    protocol: protocol.clone(),
                },
            )
            .collect::<Vec<_>>();
        let network = match d.network {
            Some(n) => n,
            None if !port_mappings.is_empty() => v1::docker_info::Network::Bridge,
            None => v1::docker_info::Network::Unspecified,
        };
        Ok(Some(v1::ContainerInfo {
            r#type: v1::container_info::Type::Docker as i32,
            docker: Some(v1::DockerInfo {
                image: d.image.clone(),
                network: network as i32,
                port_mappings,
                pull_policy: d.pull_policy as i32,
                force_pull: d.force_pull,
            }),
            volumes: d.volumes.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(resources: &str) -> v1::Offer {
        v1::Offer {
            id: "o1".into(),
            agent_id: "a1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        }
    }

    fn invalid(result: Result<v1::TaskInfo, SdkError>) -> String {
        match result {
            Err(SdkError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_task_without_discovery_info_has_none() {
        let task = TaskBuilder::new("t")
            .shell("x")
            .cpus(0.1)
            .build("a")
            .unwrap();
        assert_eq!(task.discovery, None);
    }

    #[test]
    fn service_and_named_ports_make_the_discovery_info() {
        let task = TaskBuilder::new("web-1")
            .shell("serve")
            .cpus(0.1)
            .named_port("admin", 9090, "tcp")
            .service("web")
            .label("team", "a")
            .build("a")
            .unwrap();
        let info = task.discovery.unwrap();
        assert_eq!(info.name, "web");
        assert_eq!(
            strata_proto::discovery::visibility(&info),
            v1::discovery_info::Visibility::Cluster
        );
        let ports = strata_proto::discovery::ports(&info);
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (
                ports[0].name.as_str(),
                ports[0].number,
                ports[0].protocol.as_str()
            ),
            ("admin", 9090, "tcp")
        );
        assert!(info.labels.is_empty(), "task labels stay the task's");

        // A named port alone publishes the task under its own name.
        let task = TaskBuilder::new("solo")
            .shell("serve")
            .cpus(0.1)
            .named_port("http", 8080, "")
            .build("a")
            .unwrap();
        assert_eq!(strata_proto::discovery::service_name(&task), "solo");
    }

    #[test]
    fn ports_numbered_zero_take_the_picked_ports_in_order() {
        // Two port mappings take two ports; the named ports follow PORT0, PORT1.
        let task = TaskBuilder::new("web-1")
            .docker_image("nginx")
            .shell("nginx")
            .cpus(0.1)
            .port_mapping(80)
            .port_mapping_with(53, "udp")
            .service("web")
            .named_port("http", 0, "tcp")
            .named_port("fixed", 7000, "tcp")
            .named_port("dns", 0, "udp")
            .build_for(&offer("cpus:1;mem:64;ports:[31000-31000,31005-31010]"))
            .unwrap();
        let mappings = &task
            .container
            .as_ref()
            .unwrap()
            .docker
            .as_ref()
            .unwrap()
            .port_mappings;
        let info = task.discovery.unwrap();
        let ports = strata_proto::discovery::ports(&info);
        assert_eq!(ports[0].number, mappings[0].host_port);
        assert_eq!(ports[0].number, 31000);
        assert_eq!(ports[1].number, 7000);
        assert_eq!(ports[2].number, mappings[1].host_port);
        assert_eq!(ports[2].number, 31005);

        // Named ports numbered 0 ask for ports of their own.
        let b = TaskBuilder::new("t")
            .shell("x")
            .cpus(0.1)
            .named_port("a", 0, "tcp")
            .named_port("b", 0, "tcp");
        assert_eq!(b.port_count(), 2);
        let task = b.build_for(&offer("cpus:1;ports:[31000-31009]")).unwrap();
        assert_eq!(task.command.unwrap().environment["PORTS"], "31000,31001");
        assert!(invalid(b.build("a")).contains("build_for"));
        match b.build_for(&offer("cpus:1;ports:[31000-31000]")) {
            Err(SdkError::DoesNotFit { .. }) => {}
            other => panic!("expected DoesNotFit, got {other:?}"),
        }
    }

    #[test]
    fn discovery_replaces_and_bad_ports_fail_the_build() {
        let task = TaskBuilder::new("t")
            .shell("x")
            .cpus(0.1)
            .service("old")
            .named_port("gone", 1, "tcp")
            .discovery(v1::DiscoveryInfo {
                name: "new".into(),
                ..Default::default()
            })
            .build("a")
            .unwrap();
        let info = task.discovery.unwrap();
        assert_eq!(info.name, "new");
        assert!(strata_proto::discovery::ports(&info).is_empty());

        let base = TaskBuilder::new("t").shell("x").cpus(0.1).service("s");
        let e = invalid(base.clone().named_port("HTTP", 80, "tcp").build("a"));
        assert!(e.contains("not a DNS label"), "{e}");
        let e = invalid(base.clone().named_port("http", 80, "sctp").build("a"));
        assert!(e.contains("protocol 'sctp' is unknown"), "{e}");
        let e = invalid(
            base.named_port("http", 80, "tcp")
                .named_port("http", 81, "tcp")
                .build("a"),
        );
        assert!(e.contains("used twice"), "{e}");
    }
}
