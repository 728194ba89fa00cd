//! Validation and defaults of a task's [`v1::HealthCheck`], shared by the master (which
//! answers a bad one with TASK_ERROR at ACCEPT) and the agent (which checks again when
//! the task arrives and runs the check). [`validate`] turns the wire message into a
//! [`HealthCheckSpec`]: the check with every default applied and every duration a
//! [`Duration`], so the agent never reads the raw fields.

use std::time::Duration;

use crate::v1::{self, health_check};

/// Mesos' defaults for the fields a health check leaves unset, in one place.
pub mod defaults {
    /// Time from TASK_RUNNING to the first check.
    pub const DELAY_SECONDS: f64 = 15.0;
    /// Time between the starts of two checks.
    pub const INTERVAL_SECONDS: f64 = 10.0;
    /// A check that has not answered within this time has failed.
    pub const TIMEOUT_SECONDS: f64 = 20.0;
    /// From TASK_RUNNING, failures do not count until this has passed.
    pub const GRACE_PERIOD_SECONDS: f64 = 0.0;
    /// The task is killed after this many failures in a row.
    pub const CONSECUTIVE_FAILURES: u32 = 3;
}

/// The longest duration a health check may name (one year): beyond it a number is a
/// mistake, and it keeps `Instant + duration` from overflowing.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// What a validated check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// GET `http://127.0.0.1:<port><path>`; 200-399 is healthy. `path` starts with '/'.
    Http { port: u16, path: String },
    /// A TCP connection to 127.0.0.1:`port` is accepted.
    Tcp { port: u16 },
    /// `/bin/sh -c command` exits with status 0.
    Command { command: String },
}

/// A validated health check with Mesos' defaults applied (see [`defaults`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub kind: CheckKind,
    pub delay: Duration,
    /// Greater than zero.
    pub interval: Duration,
    /// Greater than zero.
    pub timeout: Duration,
    pub grace_period: Duration,
    /// Kill the task after this many failures in a row; 0 never kills.
    pub consecutive_failures: u32,
}

/// Why a health check was refused. The messages name the field and say what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthCheckError {
    #[error("health_check.type is not set: use HTTP, TCP or COMMAND")]
    MissingType,
    #[error("health_check.type {0} is unknown: use HTTP, TCP or COMMAND")]
    UnknownType(i32),
    #[error("health_check.port {port} is not a port: {kind} checks need a port in 1-65535")]
    BadPort { kind: &'static str, port: u32 },
    #[error("health_check.command is empty: a COMMAND check needs a shell command")]
    EmptyCommand,
    #[error(
        "health_check.path '{0}' is not a request path: start it with '/' and use no spaces or control characters"
    )]
    BadPath(String),
    #[error(
        "health_check.{field} must be a number of seconds {rule} (at most a year), got {value}"
    )]
    BadDuration {
        field: &'static str,
        /// ">= 0" or "> 0".
        rule: &'static str,
        value: f64,
    },
}

/// Checks a health check and applies the defaults: the type is set; HTTP and TCP name a
/// port in 1..=65535 (HTTP a path starting with '/', or none); COMMAND a non-empty
/// command; the durations are finite, >= 0 and at most [`MAX_SECONDS`], the interval and
/// the timeout > 0.
pub fn validate(check: &v1::HealthCheck) -> Result<HealthCheckSpec, HealthCheckError> {
    let kind = match health_check::Type::try_from(check.r#type) {
        Err(_) => return Err(HealthCheckError::UnknownType(check.r#type)),
        Ok(health_check::Type::Unspecified) => return Err(HealthCheckError::MissingType),
        Ok(health_check::Type::Http) => {
            let port = port_of("HTTP", check.port)?;
            let path = if check.path.is_empty() {
                "/".to_string()
            } else {
                check.path.clone()
            };
            if !path.starts_with('/')
                || path
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '#')
            {
                return Err(HealthCheckError::BadPath(check.path.clone()));
            }
            CheckKind::Http { port, path }
        }
        Ok(health_check::Type::Tcp) => CheckKind::Tcp {
            port: port_of("TCP", check.port)?,
        },
        Ok(health_check::Type::Command) => {
            if check.command.trim().is_empty() {
                return Err(HealthCheckError::EmptyCommand);
            }
            CheckKind::Command {
                command: check.command.clone(),
            }
        }
    };
    Ok(HealthCheckSpec {
        kind,
        delay: seconds(
            "delay_seconds",
            check.delay_seconds,
            defaults::DELAY_SECONDS,
            false,
        )?,
        interval: seconds(
            "interval_seconds",
            check.interval_seconds,
            defaults::INTERVAL_SECONDS,
            true,
        )?,
        timeout: seconds(
            "timeout_seconds",
            check.timeout_seconds,
            defaults::TIMEOUT_SECONDS,
            true,
        )?,
        grace_period: seconds(
            "grace_period_seconds",
            check.grace_period_seconds,
            defaults::GRACE_PERIOD_SECONDS,
            false,
        )?,
        consecutive_failures: check
            .consecutive_failures
            .unwrap_or(defaults::CONSECUTIVE_FAILURES),
    })
}

fn port_of(kind: &'static str, port: u32) -> Result<u16, HealthCheckError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(HealthCheckError::BadPort { kind, port })
}

fn seconds(
    field: &'static str,
    value: Option<f64>,
    default: f64,
    positive: bool,
) -> Result<Duration, HealthCheckError> {
    let value = value.unwrap_or(default);
    let bad = || HealthCheckError::BadDuration {
        field,
        rule: if positive { "> 0" } else { ">= 0" },
        value,
    };
    // Refuses NaN and the infinities too.
    if !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(bad());
    }
    let d = Duration::try_from_secs_f64(value).map_err(|_| bad())?;
    // Zero, or a number too small for a nanosecond, where more than zero is needed.
    if positive && d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: health_check::Type) -> v1::HealthCheck {
        v1::HealthCheck {
            r#type: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_applied() {
        let mut c = check(health_check::Type::Http);
        c.port = 8080;
        let spec = validate(&c).unwrap();
        assert_eq!(
            spec,
            HealthCheckSpec {
                kind: CheckKind::Http {
                    port: 8080,
                    path: "/".into()
                },
                delay: Duration::from_secs(15),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(20),
                grace_period: Duration::ZERO,
                consecutive_failures: 3,
            }
        );
    }

    #[test]
    fn given_values_are_kept() {
        let c = v1::HealthCheck {
            r#type: health_check::Type::Command as i32,
            command: "test -e ready".into(),
            delay_seconds: Some(0.0),
            interval_seconds: Some(0.2),
            timeout_seconds: Some(1.0),
            grace_period_seconds: Some(5.0),
            consecutive_failures: Some(0),
            ..Default::default()
        };
        let spec = validate(&c).unwrap();
        assert_eq!(
            spec.kind,
            CheckKind::Command {
                command: "test -e ready".into()
            }
        );
        assert_eq!(spec.delay, Duration::ZERO);
        assert_eq!(spec.interval, Duration::from_millis(200));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!(spec.grace_period, Duration::from_secs(5));
        assert_eq!(spec.consecutive_failures, 0);

        let mut tcp = check(health_check::Type::Tcp);
        tcp.port = 65535;
        assert_eq!(validate(&tcp).unwrap().kind, CheckKind::Tcp { port: 65535 });
    }

    #[test]
    fn bad_checks_are_refused_with_a_reason() {
        let err = |c: &v1::HealthCheck| validate(c).unwrap_err().to_string();
        assert!(err(&v1::HealthCheck::default()).contains("type is not set"));
        let mut c = check(health_check::Type::Http);
        c.r#type = 42;
        assert!(err(&c).contains("type 42 is unknown"));

        let c = check(health_check::Type::Http);
        assert_eq!(
            err(&c),
            "health_check.port 0 is not a port: HTTP checks need a port in 1-65535"
        );
        let mut c = check(health_check::Type::Tcp);
        c.port = 70000;
        assert!(err(&c).contains("port 70000 is not a port"), "{}", err(&c));
        let mut c = check(health_check::Type::Http);
        c.port = 80;
        c.path = "health".into();
        assert!(err(&c).contains("path 'health'"));
        c.path = "/a b".into();
        assert!(err(&c).contains("path '/a b'"));

        let mut c = check(health_check::Type::Command);
        c.command = "  ".into();
        assert!(err(&c).contains("command is empty"));

        let mut c = check(health_check::Type::Command);
        c.command = "true".into();
        for (set, field) in [
            (
                (|c: &mut v1::HealthCheck| c.interval_seconds = Some(0.0))
                    as fn(&mut v1::HealthCheck),
                "interval_seconds must be a number of seconds > 0",
            ),
            (
                |c| c.timeout_seconds = Some(f64::NAN),
                "timeout_seconds must be a number of seconds > 0",
            ),
            (
                |c| c.delay_seconds = Some(-1.0),
                "delay_seconds must be a number of seconds >= 0",
            ),
            (
                |c| c.grace_period_seconds = Some(f64::INFINITY),
                "grace_period_seconds must be",
            ),
            (
                |c| c.interval_seconds = Some(1e-12),
                "interval_seconds must be",
            ),
            (|c| c.delay_seconds = Some(1e12), "delay_seconds must be"),
        ] {
            let mut bad = c.clone();
            set(&mut bad);
            assert!(err(&bad).contains(field), "{} vs {field}", err(&bad));
        }
        // Zero is fine where the rule is >= 0.
        c.delay_seconds = Some(0.0);
        c.grace_period_seconds = Some(0.0);
        assert!(validate(&c).is_ok());
    }
}
