//! Per-principal rate limits of the scheduler API (Mesos' `--rate_limits`): one
//! framework's flood of calls cannot starve the others. Each limited principal has a
//! token bucket of `qps` calls per second ([`governor`]'s GCRA); a call over the rate
//! waits its turn, and a call that would make more than `capacity` calls wait is
//! refused at once with `RESOURCE_EXHAUSTED`. Principals not named share one bucket
//! of `aggregate_default_qps` when it is set, and are not limited otherwise.
//!
//! ```json
//! {"limits": [{"principal": "batch", "qps": 50, "capacity": 500},
//!             {"principal": "apps"}],
//!  "aggregate_default_qps": 100, "aggregate_default_capacity": 1000}
//! ```
//!
//! (`{"principal": "apps"}` alone: not limited.)

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// How many calls may wait for a limited principal when the file names no capacity.
pub const DEFAULT_CAPACITY: u64 = 1000;
/// The highest rate a limit may name (anything above is no limit on this machine).
const MAX_QPS: f64 = 1e6;

/// The rate limits file, in Mesos' shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default)]
    pub limits: Vec<RateLimit>,
    #[serde(default)]
    pub aggregate_default_qps: Option<f64>,
    #[serde(default)]
    pub aggregate_default_capacity: Option<u64>,
}

/// One principal's limit; no `qps`: not limited.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub principal: String,
    #[serde(default)]
    pub qps: Option<f64>,
    #[serde(default)]
    pub capacity: Option<u64>,
}

impl RateLimitsConfig {
    /// Reads the limits from `text`: JSON, or the path of a file of JSON.
    pub fn parse_flag(text: &str) -> Result<RateLimitsConfig, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            return RateLimitsConfig::parse(trimmed);
        }
        let path = Path::new(trimmed);
        let json = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the rate limits file {}: {e}", path.display()))?;
        RateLimitsConfig::parse(&json).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads and checks the limits.
    pub fn parse(json: &str) -> Result<RateLimitsConfig, String> {
        let config: RateLimitsConfig = serde_json::from_str(json).map_err(|e| {
            format!(
                "invalid rate limits ({e}); expected e.g. {{\"limits\": [{{\"principal\": \"batch\", \"qps\": 50, \"capacity\": 500}}], \"aggregate_default_qps\": 100}}"
            )
        })?;
        let mut seen = std::collections::HashSet::new();
        for limit in &config.limits {
            if limit.principal.is_empty() {
                return Err("a rate limit names an empty principal".into());
            }
            if !seen.insert(&limit.principal) {
                return Err(format!(
                    "principal '{}' has two rate limits",
                    limit.principal
                ));
            }
            check_qps(&limit.principal, limit.qps)?;
            check_capacity(&limit.principal, limit.capacity)?;
        }
        check_qps("aggregate_default_qps", config.aggregate_default_qps)?;
        check_capacity(
            "aggregate_default_capacity",
            config.aggregate_default_capacity,
        )?;
        Ok(config)
    }
}

fn check_qps(who: &str, qps: Option<f64>) -> Result<(), String> {
    match qps {
        Some(q) if !(q.is_finite() && q > 0.0 && q <= MAX_QPS) => Err(format!(
            "the qps of {who} must be a number above 0 and at most {MAX_QPS}, got {q}"
        )),
        _ => Ok(()),
    }
}

fn check_capacity(who: &str, capacity: Option<u64>) -> Result<(), String> {
    match capacity {
        Some(0) => Err(format!(
            "the capacity of {who} must be at least 1 (calls that may wait)"
        )),
        _ => Ok(()),
    }
}

/// A call refused because too many of its principal's calls wait already.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "rate limit exceeded for {who}: {qps} calls per second, and {capacity} calls are waiting already; slow down and retry"
)]
pub struct RateLimited {
    pub who: String,
    pub qps: f64,
    pub capacity: u64,
}

struct Bucket {
    limiter: DefaultDirectRateLimiter,
    waiting: AtomicU64,
    capacity: u64,
    qps: f64,
    who: String,
}

impl Bucket {
    fn new(who: String, qps: f64, capacity: Option<u64>) -> Bucket {
        let period = Duration::from_secs_f64(1.0 / qps).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        Bucket {
            limiter: RateLimiter::direct(quota),
            waiting: AtomicU64::new(0),
            capacity: capacity.unwrap_or(DEFAULT_CAPACITY),
            qps,
            who,
        }
    }

    async fn admit(&self) -> Result<(), RateLimited> {
        if self.limiter.check().is_ok() {
            return Ok(());
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(RateLimited {
                who: self.who.clone(),
                qps: self.qps,
                capacity: self.capacity,
            });
        }
        // Counted as waiting until it is admitted, or its call is dropped.
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        self.limiter.until_ready().await;
        Ok(())
    }
}

/// The limits in force; cheap to clone.
#[derive(Clone, Default)]
pub struct RateLimits {
    /// `None`: the principal is named and not limited.
    named: Arc<HashMap<String, Option<Bucket>>>,
    default: Option<Arc<Bucket>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("named", &self.named.len())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> RateLimits {
        let named = config
            .limits
            .iter()
            .map(|l| {
                let bucket = l.qps.map(|qps| {
                    Bucket::new(format!("principal '{}'", l.principal), qps, l.capacity)
                });
                (l.principal.clone(), bucket)
            })
            .collect();
        let default = config.aggregate_default_qps.map(|qps| {
            Arc::new(Bucket::new(
                "the principals without a limit of their own (aggregate_default_qps)".into(),
                qps,
                config.aggregate_default_capacity,
            ))
        });
        RateLimits {
            named: Arc::new(named),
            default,
        }
    }

    /// Waits until a call of `principal` (its name; "" for none) may go on, or refuses
    /// it when too many wait already.
    pub async fn admit(&self, principal: &str) -> Result<(), RateLimited> {
        let bucket = match self.named.get(principal) {
            Some(named) => named.as_ref(),
            None => self.default.as_deref(),
        };
        match bucket {
            Some(bucket) => bucket.admit().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (json, want) in [
            (r#"{"limits": [{"principal": "a", "qps": 0}]}"#, "above 0"),
            (r#"{"limits": [{"principal": "a", "qps": -1}]}"#, "above 0"),
            (
                r#"{"limits": [{"principal": "", "qps": 1}]}"#,
                "empty principal",
            ),
            (
                r#"{"limits": [{"principal": "a"}, {"principal": "a"}]}"#,
                "two rate limits",
            ),
            (
                r#"{"limits": [{"principal": "a", "capacity": 0, "qps": 1}]}"#,
                "at least 1",
            ),
            (r#"{"limit": []}"#, "expected e.g."),
            (r#"{"aggregate_default_qps": 1e309}"#, "expected e.g."),
            ("not json", "expected e.g."),
        ] {
            let e = RateLimitsConfig::parse(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
        let e = RateLimitsConfig::parse_flag("/no/such/file").unwrap_err();
        assert!(e.contains("/no/such/file"), "{e}");
    }

    #[tokio::test]
    async fn a_flood_waits_then_is_refused_and_others_go_on() {
        let config = RateLimitsConfig::parse(
            r#"{"limits": [{"principal": "flood", "qps": 10, "capacity": 2},
                           {"principal": "free"}],
                "aggregate_default_qps": 1000}"#,
        )
        .unwrap();
        let limits = RateLimits::new(&config);
        // The first call passes; two more wait their turn; the next is refused.
        limits.admit("flood").await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let limits = limits.clone();
                tokio::spawn(async move { limits.admit("flood").await })
            })
            .collect();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let refused = limits.admit("flood").await.unwrap_err();
        assert_eq!(refused.capacity, 2);
        assert!(
            refused.to_string().contains("principal 'flood'"),
            "{refused}"
        );
        // Others are not held up by the flood.
        for _ in 0..100 {
            limits.admit("free").await.unwrap();
        }
        limits.admit("someone").await.unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    }
}
