//! Agent configuration: [`AgentOptions`], and the parsers for the flag forms the
//! binary accepts (attributes, durations, the master address). Everything here is
//! validated once, before the agent starts; the running agent trusts it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::Resources;

use crate::containerizer::Containerizer;

/// Why a configuration value was refused. Each message says what was wrong and the
/// form that is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid attribute '{part}': expected name:value, e.g. 'rack:r1;zone:a'")]
    AttributeForm { part: String },
    #[error("attribute '{name}' is given twice")]
    DuplicateAttribute { name: String },
    #[error("invalid master address '{input}': {reason} (expected host:port, e.g. 127.0.0.1:5050)")]
    Master { input: String, reason: String },
    #[error(
        "invalid --default-user '{user}': {reason} (name an existing user, e.g. nobody, or give '' to run tasks as the agent's own user)"
    )]
    DefaultUser { user: String, reason: String },
    #[error("invalid --docker-volume-allow: {0}")]
    DockerVolumeAllow(String),
}

/// Which containerizer runs the tasks.
#[derive(Clone)]
pub enum ContainerizerConfig {
    /// Real processes in their own process group ([`crate::ProcessContainerizer`]).
    Process,
    /// Runs nothing: tasks finish after `task_duration`. For scale runs only
    /// ([`crate::FakeContainerizer`]).
    Fake { task_duration: Duration },
    /// Any other implementation (cgroups, Docker, a test double).
    Custom(Arc<dyn Containerizer>),
    /// `--containerizers process,docker` (or `docker`): tasks with a DOCKER container
    /// run on the Docker engine ([`crate::DockerContainerizer`]), the others (when
    /// `process` is set) as processes, composed by [`crate::ComposingContainerizer`].
    /// The agent adds the attribute `containerizers` (e.g. `process,docker`) naming
    /// those that work: Docker only when its engine answers at start.
    Docker {
        docker: crate::containerizer::DockerOptions,
        process: bool,
    },
}

impl fmt::Debug for ContainerizerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerizerConfig::Process => write!(f, "Process"),
            ContainerizerConfig::Fake { task_duration } => f
                .debug_struct("Fake")
                .field("task_duration", task_duration)
                .finish(),
            ContainerizerConfig::Custom(c) => write!(f, "Custom({})", c.name()),
            ContainerizerConfig::Docker { docker, process } => f
                .debug_struct("Docker")
                .field("docker", docker)
                .field("process", process)
                .finish(),
        }
    }
}

/// Everything [`crate::run`] needs. Build it with [`AgentOptions::new`] and set the
/// fields that differ from the defaults.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The master's agent endpoint, `host:port` or `http://host:port`; the agent dials
    /// it, the master never dials the agent.
    pub master: String,
    /// Root of everything the agent writes: its id (`agent_id`), its checkpoint
    /// (`checkpoint.json` and `checkpoint.log`) and the task sandboxes (`frameworks/<fw>/tasks/<task>/`).
    pub work_dir: PathBuf,
    /// What the agent offers to the master. [`crate::resolve_resources`] detects them and
    /// applies the `--resources` overrides; empty means the agent offers nothing.
    pub resources: Resources,
    /// Attributes reported to the master (e.g. `rack:r1`), used by placement constraints.
    pub attributes: Vec<(String, String)>,
    /// Hostname reported to the master (and shown to frameworks in offers); `None`:
    /// the machine's hostname.
    pub hostname: Option<String>,
    /// `host:port` the master and users reach this agent's HTTP API at; `None`: the
    /// listener's bound address (`hostname:port` when bound to 0.0.0.0).
    pub advertise_address: Option<String>,
    /// Which containerizer runs tasks.
    pub containerizer: ContainerizerConfig,
    /// First retry interval of an unacknowledged status update (Mesos: 10 s).
    pub status_retry_interval: Duration,
    /// The retry interval doubles up to this (Mesos: 10 min).
    pub status_retry_max: Duration,
    /// Initial registration backoff: the agent waits a random time in `[0, b]` before
    /// each attempt, `b` doubling from this value (Mesos: 1 s)...
    pub registration_backoff: Duration,
    /// ...up to this cap (Mesos: 1 min).
    pub registration_backoff_max: Duration,
    /// Grace between SIGTERM and SIGKILL when a kill names no kill policy (3 s).
    pub default_kill_grace: Duration,
    /// Grace given to every task when the agent shuts down killing its tasks
    /// ([`crate::Shutdown::KillTasks`]; Mesos: 5 s).
    pub executor_shutdown_grace_period: Duration,
    /// Least time between two fsyncs of the checkpoint (writes ahead of launches and
    /// updates are not waited for).
    pub checkpoint_interval: Duration,
    /// What the process containerizer isolates tasks with (`--isolation`, `--cgroups-*`).
    pub isolation: crate::isolation::IsolationOptions,
    /// How often the agent sends its tasks' resource usage to the master (5 s).
    pub usage_report_interval: Duration,
    /// Sandbox garbage collection and task log rotation.
    pub hygiene: crate::hygiene::HygieneOptions,
    /// Disk isolation: how often each running task's disk is measured, and whether a
    /// task over its `disk` is killed (`--container-disk-watch-interval`,
    /// `--enforce-container-disk-quota`; see [`crate::disk`]).
    pub disk_isolation: crate::disk::DiskIsolationOptions,
    /// Who runs the tasks that name no user (neither `CommandInfo.user` nor
    /// `FrameworkInfo.user`): `--default-user`, `nobody` by default, so that a task
    /// is never root unless it asks (and the master lets it). `None` or empty: the
    /// agent's own user, as before issue 14. Applies only when the agent is root (it
    /// cannot switch users otherwise: tasks then run as the agent's user, and a
    /// warning says so at start). A user that does not exist stops the agent at start
    /// ([`check_default_user`]). Docker tasks are not run as it: their image decides
    /// (or `CommandInfo.user`); their sandbox belongs to it.
    pub default_user: Option<String>,
    /// Plain text to the master and on the agent's API, no authentication: for a
    /// master started with `--insecure` (development only). The library's default is
    /// `true`; the `strata-agent` binary and `strata local` run secure.
    pub insecure: bool,
    /// The master's join token (`STRATA-JOIN-1-...`), needed at first start of a
    /// secure agent: it gets its certificate with it and keeps it in `WORK_DIR/tls/`.
    pub join_token: Option<String>,
    /// Where the service proxy listens for the cluster's service ports (issue 15): it
    /// forwards each to the service's instances anywhere in the cluster. `None`: no
    /// proxy. Default `0.0.0.0`.
    pub service_proxy: Option<std::net::IpAddr>,
}

impl AgentOptions {
    /// Options with Mesos' defaults, the process containerizer and no resources.
    pub fn new(master: impl Into<String>, work_dir: impl Into<PathBuf>) -> AgentOptions {
        AgentOptions {
            master: master.into(),
            work_dir: work_dir.into(),
            resources: Resources::new(),
            attributes: Vec::new(),
            hostname: None,
            advertise_address: None,
            containerizer: ContainerizerConfig::Process,
            status_retry_interval: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            registration_backoff: Duration::from_secs(1),
            registration_backoff_max: Duration::from_secs(60),
            default_kill_grace: Duration::from_secs(3),
            executor_shutdown_grace_period: Duration::from_secs(5),
            checkpoint_interval: Duration::from_millis(500),
            isolation: crate::isolation::IsolationOptions::default(),
            usage_report_interval: Duration::from_secs(5),
            hygiene: crate::hygiene::HygieneOptions::default(),
            disk_isolation: crate::disk::DiskIsolationOptions::default(),
            default_user: Some(DEFAULT_USER.to_string()),
            insecure: true,
            join_token: None,
            service_proxy: Some(std::net::IpAddr::from([0, 0, 0, 0])),
        }
    }
}

/// The default of [`AgentOptions::default_user`].
pub const DEFAULT_USER: &str = "nobody";

/// Checks `--default-user`: `None` or empty means the agent's own user (`Ok(None)`);
/// a name must be a user of this machine. Run once at start, before anything starts.
pub fn check_default_user(user: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(name) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let err = |reason: String| ConfigError::DefaultUser {
        user: name.to_string(),
        reason,
    };
    match nix::unistd::User::from_name(name) {
        Ok(Some(_)) => Ok(Some(name.to_string())),
        Ok(None) => Err(err("no such user on this machine".into())),
        Err(e) => Err(err(format!("cannot look it up: {e}"))),
    }
}

/// Parses `rack:r1;zone:a` into name/value pairs. Names must be non-empty and unique;
/// values are text and may contain ':'.
pub fn parse_attributes(input: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .map(|(n, v)| (n.trim(), v.trim()))
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| ConfigError::AttributeForm {
                part: part.to_string(),
            })?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(ConfigError::DuplicateAttribute {
                name: name.to_string(),
            });
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Parses a duration flag: `500ms`, `10s`, `1.5s`, `5m`, `1h` (humantime's syntax,
/// shared by every Strata binary: [`strata_proto::duration`]), at most a year. `0`
/// alone is zero; a number without a unit is refused.
pub use strata_proto::duration::parse as parse_duration;

/// The gRPC URI of the master: `host:port` becomes `http://host:port`.
pub fn master_uri(input: &str) -> Result<String, ConfigError> {
    let input = input.trim();
    let err = |reason: &str| ConfigError::Master {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(err("it is empty"));
    }
    let uri = if input.contains("://") {
        input.to_string()
    } else {
        format!("http://{input}")
    };
    let parsed: http_uri::Uri = uri.parse().map_err(|_| err("it is not a valid address"))?;
    if parsed.port_u16().is_none() {
        return Err(err("it has no port"));
    }
    match parsed.scheme_str() {
        Some("http") | Some("https") => Ok(uri),
        _ => Err(err("the scheme must be http or https")),
    }
}

/// `tonic` re-exports the `http` crate's `Uri`; use it rather than a new dependency.
mod http_uri {
    pub use tonic::codegen::http::Uri;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse() {
        assert_eq!(
            parse_attributes("rack:r1; zone:a ;url:http://x").unwrap(),
            vec![
                ("rack".to_string(), "r1".to_string()),
                ("zone".to_string(), "a".to_string()),
                ("url".to_string(), "http://x".to_string())
            ]
        );
        assert!(parse_attributes("").unwrap().is_empty());
        assert!(matches!(
            parse_attributes("rack"),
            Err(ConfigError::AttributeForm { .. })
        ));
        assert!(matches!(
            parse_attributes(":x"),
            Err(ConfigError::AttributeForm { .. })
        ));
        assert!(matches!(
            parse_attributes("a:1;a:2"),
            Err(ConfigError::DuplicateAttribute { .. })
        ));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "1.5", "10", "-1s", "10 parsecs", "99999999999999h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("e.g. 30s, 500ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_default_user_must_exist() {
        assert_eq!(
            AgentOptions::new("m:1", "/w").default_user.as_deref(),
            Some("nobody")
        );
        assert_eq!(check_default_user(None).unwrap(), None);
        assert_eq!(check_default_user(Some("")).unwrap(), None);
        assert_eq!(
            check_default_user(Some("root")).unwrap().as_deref(),
            Some("root")
        );
        let e = check_default_user(Some("no-such-user-here")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --default-user 'no-such-user-here': no such user on this machine (name an existing user, e.g. nobody, or give '' to run tasks as the agent's own user)"
        );
    }

    #[test]
    fn master_addresses() {
        assert_eq!(
            master_uri("127.0.0.1:5050").unwrap(),
            "http://127.0.0.1:5050"
        );
        assert_eq!(master_uri("http://m1:5050").unwrap(), "http://m1:5050");
        assert!(master_uri("").is_err());
        assert!(master_uri("127.0.0.1").is_err());
        assert!(master_uri("ftp://x:1").is_err());
        assert!(master_uri("a b:1").is_err());
    }
}
