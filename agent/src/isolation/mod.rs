//! Which isolation the process containerizer gives its tasks (`--isolation`), decided
//! once at agent start and logged.
//!
//! ```text
//! --isolation auto (default)   cgroups when they work here, else process groups only (a warning)
//! --isolation cgroups          cgroups required: when they cannot be used every launch fails
//!                              (TASK_FAILED, REASON_CONTAINER_LAUNCH_FAILED, "cgroups are not available: ...")
//! --isolation cgroups,pid      and each task in its own pid (and mount) namespace
//! --isolation pid              a pid namespace without cgroups
//! --isolation none             process groups only (also `posix`), as before issue 3
//! ```
//!
//! A pid namespace without cgroups still ends with its task: when its init (the task)
//! dies the kernel kills everything else in the namespace. How the task's process joins
//! its cgroup and namespace before it execs is in [`child`].

pub mod child;

use std::path::Path;
use std::sync::Arc;

use crate::cgroups::{Cgroups, CgroupsOptions};

/// One isolator named in `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolator {
    /// A cgroup per task: cpu, memory, pids limits; the cgroup is the unit of a kill.
    Cgroups,
    /// A pid namespace per task, with its own /proc.
    Pid,
}

/// The `--isolation` flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IsolationMode {
    /// cgroups when usable, else none.
    #[default]
    Auto,
    /// Exactly these (empty: none).
    Explicit(Vec<Isolator>),
}

/// Why an `--isolation` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    #[error(
        "unknown isolator '{0}': use auto, none, or a comma list of cgroups and pid (e.g. cgroups,pid)"
    )]
    Unknown(String),
    #[error("'none' cannot be combined with other isolators")]
    NoneCombined,
}

/// Parses `auto`, `none` (`posix`), or a comma list of `cgroups` and `pid`
/// (Mesos' `cgroups/cpu,cgroups/mem` and `namespaces/pid` are accepted too).
pub fn parse_isolation(input: &str) -> Result<IsolationMode, IsolationError> {
    let parts: Vec<&str> = input
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts == ["auto"] {
        return Ok(IsolationMode::Auto);
    }
    let mut out = Vec::new();
    let mut none = false;
    for part in &parts {
        let isolator = match *part {
            "none" | "posix" | "posix/cpu" | "posix/mem" => {
                none = true;
                continue;
            }
            "cgroups" | "cgroups/cpu" | "cgroups/mem" | "cgroups/pids" => Isolator::Cgroups,
            "pid" | "namespaces/pid" => Isolator::Pid,
            other => return Err(IsolationError::Unknown(other.to_string())),
        };
        if !out.contains(&isolator) {
            out.push(isolator);
        }
    }
    if none && !out.is_empty() {
        return Err(IsolationError::NoneCombined);
    }
    Ok(IsolationMode::Explicit(out))
}

/// `--isolation` and the `--cgroups-*` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsolationOptions {
    pub mode: IsolationMode,
    pub cgroups: CgroupsOptions,
}

/// The isolation this agent has, found at start.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// Set when tasks get a cgroup.
    pub cgroups: Option<Arc<Cgroups>>,
    /// Each task in its own pid and mount namespace.
    pub pid_namespace: bool,
    /// Isolation was asked for and cannot be had: every launch fails with this.
    pub unavailable: Option<String>,
}

impl Isolation {
    /// Process groups only.
    pub fn none() -> Isolation {
        Isolation::default()
    }

    /// Decides what `options` give on this machine. Never fails: isolation that was
    /// asked for and is missing makes launches fail (see [`Isolation::unavailable`]).
    pub fn detect(options: &IsolationOptions, work_dir: &Path) -> Isolation {
        match &options.mode {
            IsolationMode::Auto => match Cgroups::detect(options.cgroups.clone(), work_dir) {
                Ok(c) => Isolation {
                    cgroups: Some(Arc::new(c)),
                    ..Isolation::default()
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cgroups are not available; tasks run as process groups without resource limits (--isolation cgroups makes this an error)");
                    Isolation::none()
                }
            },
            IsolationMode::Explicit(list) => {
                let mut iso = Isolation::none();
                if list.contains(&Isolator::Cgroups) {
                    match Cgroups::detect(options.cgroups.clone(), work_dir) {
                        Ok(c) => iso.cgroups = Some(Arc::new(c)),
                        Err(e) => {
                            tracing::error!(error = %e, "cgroups are not available; every task will fail to launch");
                            iso.unavailable = Some(format!("cgroups are not available: {e}"));
                        }
                    }
                }
                if list.contains(&Isolator::Pid) {
                    let uid = nix::unistd::geteuid();
                    if uid.is_root() {
                        iso.pid_namespace = true;
                    } else if iso.unavailable.is_none() {
                        tracing::error!(
                            uid = uid.as_raw(),
                            "pid namespaces need root; every task will fail to launch"
                        );
                        iso.unavailable = Some(format!(
                            "pid namespaces are not available: the agent runs as uid {}, they need root",
                            uid.as_raw()
                        ));
                    }
                }
                iso
            }
        }
    }

    /// One line for the start log and `/state`.
    pub fn describe(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("unavailable ({why})");
        }
        let mut parts = Vec::new();
        if let Some(c) = &self.cgroups {
            parts.push(format!("cgroups: {}", c.describe()));
        }
        if self.pid_namespace {
            parts.push("pid namespace".to_string());
        }
        if parts.is_empty() {
            "none (process groups, no resource limits)".to_string()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_flag_forms() {
        assert_eq!(parse_isolation("auto"), Ok(IsolationMode::Auto));
        assert_eq!(parse_isolation("none"), Ok(IsolationMode::Explicit(vec![])));
        assert_eq!(
            parse_isolation("posix"),
            Ok(IsolationMode::Explicit(vec![]))
        );
        assert_eq!(
            parse_isolation("cgroups, pid"),
            Ok(IsolationMode::Explicit(vec![
                Isolator::Cgroups,
                Isolator::Pid
            ]))
        );
        assert_eq!(
            parse_isolation("cgroups/cpu,cgroups/mem,namespaces/pid"),
            Ok(IsolationMode::Explicit(vec![
                Isolator::Cgroups,
                Isolator::Pid
            ]))
        );
        assert_eq!(
            parse_isolation("none,pid"),
            Err(IsolationError::NoneCombined)
        );
        assert!(matches!(
            parse_isolation("cgroups,gpu"),
            Err(IsolationError::Unknown(g)) if g == "gpu"
        ));
    }

    #[test]
    fn a_bad_cgroups_root_makes_required_cgroups_unavailable() {
        let options = IsolationOptions {
            mode: IsolationMode::Explicit(vec![Isolator::Cgroups]),
            cgroups: CgroupsOptions {
                root: "../escape".into(),
                ..CgroupsOptions::default()
            },
        };
        let iso = Isolation::detect(&options, Path::new("/nonexistent"));
        assert!(iso.cgroups.is_none());
        let why = iso.unavailable.expect("unavailable");
        assert!(
            why.starts_with("cgroups are not available: invalid cgroups root"),
            "{why}"
        );
    }
}
