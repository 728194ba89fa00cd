//! The master's options ([`MasterOptions`]) and the small typed parsers behind its
//! flags: durations such as `500ms`, `1s`, `10m`, `2h` ([`parse_duration`], the one
//! duration syntax of every Strata flag, [`strata_proto::duration`]) and role weights
//! such as `role=2,other=1` ([`parse_weights`]).
//!
//! Options are validated once, before anything starts ([`MasterOptions::validate`]);
//! the core then trusts them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::CoreConfig;
pub use crate::security::{Security, TlsOptions};

/// How the master runs. Build it with [`MasterOptions::new`] (or
/// `MasterOptions { work_dir, ..Default::default() }`) and change the fields you
/// need; the defaults are Mesos' defaults. `work_dir` has no default: an empty one is
/// refused by [`MasterOptions::validate`].
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Where the registry (what survives a restart) lives. Created if missing; one
    /// master at a time may use it (it is locked while the master runs).
    pub work_dir: PathBuf,
    /// Batch allocation interval (default 1 s).
    pub allocation_interval: Duration,
    /// Interval of HEARTBEAT events to frameworks (default 15 s).
    pub framework_heartbeat_interval: Duration,
    /// How often agents must send a heartbeat, and the unit of the agent timeout
    /// (default 15 s).
    pub agent_ping_timeout: Duration,
    /// Missed pings after which an agent is unreachable (default 5).
    pub max_agent_ping_timeouts: u32,
    /// After a master restart, how long known agents have to re-register before they
    /// are marked unreachable (default 10 min).
    pub agent_reregister_timeout: Duration,
    /// refuse_seconds of DECLINE and of resources left unused by ACCEPT when the
    /// framework sets no filter (default 5 s).
    pub default_refuse: Duration,
    /// Role weights for DRF (roles not named weigh 1.0).
    pub weights: HashMap<String, f64>,
    /// Rescind offers not answered within this time; `None` (default): never.
    pub offer_timeout: Option<Duration>,
    /// On shutdown, how long open connections get to close before the server stops
    /// waiting for them (default 5 s).
    pub shutdown_grace: Duration,
    /// TLS and authentication (`Security::Tls`), or neither. The library's default is
    /// `Insecure`; the `strata-master` binary and `strata local` default to TLS.
    pub security: Security,
    /// The ACL file (Mesos' JSON, see [`strata_security::authz`]); `None`: the
    /// built-in ACLs ([`strata_security::Acls::secure_default`] when secure,
    /// [`strata_security::Acls::insecure_default`] when not). Reloaded on SIGHUP and
    /// `POST /security/reload`.
    pub acls: Option<PathBuf>,
    /// Per-principal rate limits of the scheduler API (Mesos' `--rate_limits`);
    /// `None`: no limits.
    pub rate_limits: Option<crate::rate::RateLimitsConfig>,
    /// The most frameworks one principal may have registered at once (`""`, callers
    /// without authentication, counts as one principal).
    pub max_frameworks_per_principal: usize,
    /// The most distinct roles the frameworks of one principal may use at once.
    pub max_roles_per_principal: usize,
    /// Where the DNS server (see [`crate::dns`]) answers, on UDP and TCP; `None`
    /// (default): no DNS server. Port 0 picks a free port (the same for both).
    pub dns_listen: Option<SocketAddr>,
    /// The domain the DNS server answers for (default `strata`): lower-case DNS labels
    /// separated by dots, no trailing dot.
    pub dns_domain: String,
    /// The key that encrypts secrets in the registry (see [`crate::secrets`]), created
    /// with mode 0600 at the first start; `None`: `WORK_DIR/secrets.key` (a key in
    /// memory only when `work_dir` is empty).
    pub secrets_key_file: Option<PathBuf>,
}

impl Default for MasterOptions {
    /// The defaults with an empty `work_dir` (which must be set before use).
    fn default() -> MasterOptions {
        MasterOptions::new(PathBuf::new())
    }
}

impl MasterOptions {
    /// Defaults (see the field docs) with the registry in `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> MasterOptions {
        let core = CoreConfig::default();
        MasterOptions {
            work_dir: work_dir.into(),
            allocation_interval: core.allocation_interval,
            framework_heartbeat_interval: core.framework_heartbeat_interval,
            agent_ping_timeout: core.agent_ping_timeout,
            max_agent_ping_timeouts: core.max_agent_ping_timeouts,
            agent_reregister_timeout: core.agent_reregister_timeout,
            default_refuse: core.default_refuse,
            weights: core.weights,
            offer_timeout: core.offer_timeout,
            shutdown_grace: Duration::from_secs(5),
            security: Security::Insecure,
            acls: None,
            rate_limits: None,
            max_frameworks_per_principal: core.max_frameworks_per_principal,
            max_roles_per_principal: core.max_roles_per_principal,
            dns_listen: None,
            dns_domain: crate::dns::DEFAULT_DOMAIN.to_string(),
            secrets_key_file: None,
        }
    }

    /// Checks every option; the first problem found is returned.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.work_dir.as_os_str().is_empty() {
            return Err(OptionsError::EmptyWorkDir);
        }
        self.validate_tunables()
    }

    /// Checks every option but the work dir (for a master whose store lives
    /// elsewhere, see `serve_with_store`).
    pub fn validate_tunables(&self) -> Result<(), OptionsError> {
        let positive = [
            ("allocation interval", self.allocation_interval),
            (
                "framework heartbeat interval",
                self.framework_heartbeat_interval,
            ),
            ("agent ping timeout", self.agent_ping_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(OptionsError::ZeroDuration(name));
            }
        }
        if self.offer_timeout.is_some_and(|d| d.is_zero()) {
            return Err(OptionsError::ZeroDuration("offer timeout"));
        }
        if self.max_agent_ping_timeouts == 0 {
            return Err(OptionsError::ZeroPingTimeouts);
        }
        if self.max_frameworks_per_principal == 0 || self.max_roles_per_principal == 0 {
            return Err(OptionsError::ZeroCap);
        }
        for (role, weight) in &self.weights {
            check_role(role)?;
            check_weight(role, *weight)?;
        }
        if !crate::dns::is_domain(&self.dns_domain) {
            return Err(OptionsError::DnsDomain(self.dns_domain.clone()));
        }
        Ok(())
    }

    /// The core's configuration for a master with id `master_id`, with the built-in
    /// insecure ACLs (the master puts its own [`strata_security::Authorizer`] in).
    pub fn core_config(&self, master_id: String) -> CoreConfig {
        CoreConfig {
            master_id,
            allocation_interval: self.allocation_interval,
            framework_heartbeat_interval: self.framework_heartbeat_interval,
            agent_ping_timeout: self.agent_ping_timeout,
            max_agent_ping_timeouts: self.max_agent_ping_timeouts,
            agent_reregister_timeout: self.agent_reregister_timeout,
            default_refuse: self.default_refuse,
            weights: self.weights.clone(),
            offer_timeout: self.offer_timeout,
            authorizer: strata_security::Authorizer::insecure(),
            max_frameworks_per_principal: self.max_frameworks_per_principal,
            max_roles_per_principal: self.max_roles_per_principal,
        }
    }
}

/// A wrong option or flag value. Each says what was wrong and what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("the work dir is empty: name a directory for the registry")]
    EmptyWorkDir,
    #[error("the {0} must be greater than zero")]
    ZeroDuration(&'static str),
    #[error("max agent ping timeouts must be at least 1")]
    ZeroPingTimeouts,
    #[error("the frameworks and roles per principal must be at least 1")]
    ZeroCap,
    #[error(
        "invalid weights '{input}': {reason} (expected role=weight[,role=weight...], e.g. prod=2,dev=1)"
    )]
    Weights { input: String, reason: String },
    #[error(
        "invalid role name '{0}': roles are non-empty and contain no whitespace, ',', '=' or '/'"
    )]
    Role(String),
    #[error("invalid weight {weight} for role '{role}': weights are finite numbers greater than 0")]
    Weight { role: String, weight: f64 },
    #[error(
        "invalid DNS domain '{0}': use lower-case DNS labels (letters, digits, '-') separated by dots, e.g. strata or cluster.example, without a trailing dot"
    )]
    DnsDomain(String),
}

/// Parses a duration flag: `500ms`, `1s`, `1.5s`, `10m`, `2h`, `1d` (humantime's
/// syntax, shared by every Strata binary; `0` alone is zero, a number without a unit
/// is refused).
pub use strata_proto::duration::parse as parse_duration;

/// Parses role weights `role=2,other=1.5`. Roles must be unique and weights finite
/// and positive. An empty string gives no weights.
pub fn parse_weights(input: &str) -> Result<HashMap<String, f64>, OptionsError> {
    let err = |reason: String| OptionsError::Weights {
        input: input.to_string(),
        reason,
    };
    let mut out = HashMap::new();
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, weight) = part
            .split_once('=')
            .ok_or_else(|| err(format!("'{part}' has no '='")))?;
        let role = role.trim();
        check_role(role).map_err(|e| err(e.to_string()))?;
        let weight: f64 = weight.trim().parse().map_err(|_| {
            err(format!(
                "weight '{}' of role '{role}' is not a number",
                weight.trim()
            ))
        })?;
        check_weight(role, weight).map_err(|e| err(e.to_string()))?;
        if out.insert(role.to_string(), weight).is_some() {
            return Err(err(format!("role '{role}' is given twice")));
        }
    }
    Ok(out)
}

fn check_role(role: &str) -> Result<(), OptionsError> {
    let bad = role.is_empty()
        || role == "."
        || role == ".."
        || role.starts_with('-')
        || role
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '=' | '/'));
    if bad {
        Err(OptionsError::Role(role.to_string()))
    } else {
        Ok(())
    }
}

fn check_weight(role: &str, weight: f64) -> Result<(), OptionsError> {
    if weight.is_finite() && weight > 0.0 {
        Ok(())
    } else {
        Err(OptionsError::Weight {
            role: role.to_string(),
            weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration(" 0 ").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for bad in [
            "", "1", "s", "-1s", "1x", "1.2.3s", "abc", "1e400h", "ms", "400d",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("e.g. 30s, 500ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn weights_parse() {
        let w = parse_weights("role=2,other=1").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w["role"], 2.0);
        assert_eq!(w["other"], 1.0);
        assert_eq!(parse_weights(" a = 0.5 ").unwrap()["a"], 0.5);
        assert!(parse_weights("").unwrap().is_empty());
    }

    #[test]
    fn bad_weights_are_refused() {
        for bad in [
            "role=-1", "role=abc", "role=0", "role=NaN", "role=inf", "role", "=2", "a b=1",
            "a=1,a=2", "a/b=1",
        ] {
            let e = parse_weights(bad).unwrap_err();
            assert!(matches!(e, OptionsError::Weights { .. }), "{bad}: {e}");
        }
        let msg = parse_weights("role=-1").unwrap_err().to_string();
        assert!(msg.contains("greater than 0"), "{msg}");
    }

    #[test]
    fn options_validate() {
        let mut o = MasterOptions::new("/tmp/x");
        assert_eq!(o.validate(), Ok(()));
        o.allocation_interval = Duration::ZERO;
        assert!(matches!(o.validate(), Err(OptionsError::ZeroDuration(_))));
        let mut o = MasterOptions::new("");
        assert_eq!(o.validate(), Err(OptionsError::EmptyWorkDir));
        o.work_dir = "/tmp/x".into();
        o.weights.insert("r".into(), f64::NAN);
        assert!(matches!(o.validate(), Err(OptionsError::Weight { .. })));
        let o = MasterOptions::new("/tmp/x");
        assert_eq!(o.core_config("m1".into()).master_id, "m1");
        assert_eq!((o.dns_listen, o.dns_domain.as_str()), (None, "strata"));
        let mut o = MasterOptions::new("/tmp/x");
        o.dns_domain = "Strata.".into();
        assert_eq!(o.validate(), Err(OptionsError::DnsDomain("Strata.".into())));
    }
}
