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
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strata_proto::{Resources, Scalar, v1};

use crate::SdkError;
use crate::offers::offer_resources;

/// What the task runs.
#[derive(Clone, Debug, PartialEq)]
enum Command {
    /// `/bin/sh -c <script>`.
    Shell(String),
    /// exec `program` with the builder's arguments.
    Exec(String),
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
    labels: BTreeMap<String, String>,
    grace: Option<Duration>,
    data: Vec<u8>,
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
            labels: BTreeMap::new(),
            grace: None,
            data: Vec::new(),
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

    /// The number of ports requested with [`ports`](TaskBuilder::ports).
    pub fn port_count(&self) -> u64 {
        self.ports
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
        Ok(out)
    }

    /// Builds the task for `agent_id` without checking what the agent has. Refused when
    /// the task asks for ports by count ([`build_for`](TaskBuilder::build_for) picks them).
    pub fn build(&self, agent_id: impl Into<String>) -> Result<v1::TaskInfo, SdkError> {
        if self.ports > 0 {
            return Err(SdkError::InvalidArgument(format!(
                "task '{}' asks for {} ports: build it with build_for(&offer) so they can be picked",
                self.id, self.ports
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
        if self.ports > 0 {
            let free = available.unreserved().ports();
            let Some(picked) = free.take_lowest(self.ports) else {
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
        if self.ports > 0 && !needs.contains("ports") {
            needs.push_str(&format!(" and {} ports", self.ports));
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
        Ok(v1::TaskInfo {
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
        })
    }
}
