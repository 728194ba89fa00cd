//! What a task's resources become in its cgroup: a pure mapping, the same for every
//! launch, tested for cgroup v1 and v2 without touching the kernel.
//!
//! ```text
//!              cgroup v1                               cgroup v2
//! cpus  ─▶ cpu.shares = 1024 x cpus (min 2)      cpu.weight = runc's mapping of the shares
//!       ─▶ cpu.cfs_period_us = 100000            cpu.max = "QUOTA 100000"
//!          cpu.cfs_quota_us = cpus x period      (only with --cgroups-enable-cfs, the default)
//! mem   ─▶ memory.limit_in_bytes = mem           memory.max = mem
//!          memory.memsw.limit_in_bytes = mem     memory.swap.max = 0
//!          (when the kernel accounts swap)
//! pids  ─▶ pids.max = --cgroups-pids-max         pids.max
//! ```
//!
//! v1 limits memory plus swap together (memsw), v2 limits swap alone: both forms mean
//! "no swap beyond the memory limit". On this project's CI machine the v2 controllers
//! are bound to v1 hierarchies, so v2 enforcement is only covered here, at the unit
//! level; the v1 forms are exercised for real by the agent's cgroup tests.

use cgroups_rs::fs::{MaxValue, Resources as CgroupResources};
use serde::{Deserialize, Serialize};
use strata_proto::Resources;

use super::CgroupVersion;

/// CFS period (Mesos' default): the quota is a share of every 100 ms.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Shares per cpu (Mesos: `CPU_SHARES_PER_CPU`).
pub const SHARES_PER_CPU: u64 = 1024;
/// Least shares the kernel accepts (Mesos: `MIN_CPU_SHARES`).
pub const MIN_SHARES: u64 = 2;
/// Most shares the kernel accepts.
pub const MAX_SHARES: u64 = 262_144;
/// Least CFS quota (Mesos: `MIN_CPU_CFS_QUOTA`, 1 ms).
pub const MIN_CFS_QUOTA_US: i64 = 1_000;
/// One MiB: `mem` is given in MB (MiB) as in Mesos.
pub const MIB: u64 = 1024 * 1024;

/// The limits of one task's cgroup. `None` leaves the kernel's default (unlimited).
/// Checkpointed with the task's container (recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Thousandths of a cpu, as the task asked.
    pub cpus_milli: Option<i64>,
    /// cgroup v1 `cpu.shares`.
    pub shares: Option<u64>,
    /// CFS quota per [`CFS_PERIOD_US`], when the hard cap is on.
    pub cfs_quota_us: Option<i64>,
    /// Memory hard limit, bytes.
    pub mem_bytes: Option<u64>,
    /// Most processes (and threads) in the cgroup.
    pub pids_max: Option<u64>,
}

impl Limits {
    /// The limits for a task's resources.
    pub fn for_task(resources: &Resources, enable_cfs: bool, pids_max: Option<u64>) -> Limits {
        let cpus = resources.cpus().milli();
        let mem = resources.mem().milli();
        let (shares, cfs_quota_us) = if cpus > 0 {
            let shares = (cpus as u64 * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES);
            let quota = enable_cfs
                .then(|| (cpus.saturating_mul(CFS_PERIOD_US as i64) / 1000).max(MIN_CFS_QUOTA_US));
            (Some(shares), quota)
        } else {
            (None, None)
        };
        // mem is in MB with thousandths; round down to whole pages' worth of bytes.
        let mem_bytes = (mem > 0).then(|| (mem as u64).saturating_mul(MIB) / 1000);
        Limits {
            cpus_milli: (cpus > 0).then_some(cpus),
            shares,
            cfs_quota_us,
            mem_bytes,
            pids_max,
        }
    }

    /// The cpu limit as a number of cpus, for statistics.
    pub fn cpus(&self) -> Option<f64> {
        self.cpus_milli.map(|m| m as f64 / 1000.0)
    }

    /// What cgroups-rs writes for these limits on `version`. `memsw`: whether the v1
    /// kernel accounts swap (`memory.memsw.*` exists).
    pub fn to_cgroup_resources(&self, version: CgroupVersion, memsw: bool) -> CgroupResources {
        let mut res = CgroupResources::default();
        res.cpu.shares = match version {
            CgroupVersion::V1 => self.shares,
            // cgroups-rs writes `shares` into cpu.weight on v2 as given: convert here.
            CgroupVersion::V2 => self.shares.map(shares_to_weight),
        };
        if let Some(quota) = self.cfs_quota_us {
            res.cpu.period = Some(CFS_PERIOD_US);
            res.cpu.quota = Some(quota);
        }
        if let Some(mem) = self.mem_bytes {
            let mem = i64::try_from(mem).unwrap_or(i64::MAX);
            res.memory.memory_hard_limit = Some(mem);
            res.memory.memory_swap_limit = match version {
                CgroupVersion::V1 if memsw => Some(mem),
                CgroupVersion::V1 => None,
                CgroupVersion::V2 => Some(0),
            };
        }
        if let Some(max) = self.pids_max {
            res.pid.maximum_number_of_processes =
                Some(MaxValue::Value(i64::try_from(max).unwrap_or(i64::MAX)));
        }
        res
    }

    /// The files (controller, file, value) these limits end up in: for logs and tests.
    pub fn files(
        &self,
        version: CgroupVersion,
        memsw: bool,
    ) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        match version {
            CgroupVersion::V1 => {
                if let Some(s) = self.shares {
                    out.push(("cpu", "cpu.shares", s.to_string()));
                }
                if let Some(q) = self.cfs_quota_us {
                    out.push(("cpu", "cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
                    out.push(("cpu", "cpu.cfs_quota_us", q.to_string()));
                }
                if let Some(m) = self.mem_bytes {
                    out.push(("memory", "memory.limit_in_bytes", m.to_string()));
                    if memsw {
                        out.push(("memory", "memory.memsw.limit_in_bytes", m.to_string()));
                    }
                }
            }
            CgroupVersion::V2 => {
                if let Some(s) = self.shares {
                    out.push(("cpu", "cpu.weight", shares_to_weight(s).to_string()));
                }
                if let Some(q) = self.cfs_quota_us {
                    out.push(("cpu", "cpu.max", format!("{q} {CFS_PERIOD_US}")));
                }
                if let Some(m) = self.mem_bytes {
                    out.push(("memory", "memory.max", m.to_string()));
                    out.push(("memory", "memory.swap.max", "0".to_string()));
                }
            }
        }
        if let Some(p) = self.pids_max {
            out.push(("pids", "pids.max", p.to_string()));
        }
        out
    }
}

/// cgroup v2 `cpu.weight` (1..=10000) for v1 shares (2..=262144), as runc and crun map
/// them: 1024 shares (one cpu) is weight 39, the v1 default ratio preserved.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// "64 MiB", "1.5 GiB", "1000 bytes": a limit as people read it.
pub fn human_bytes(bytes: u64) -> String {
    const GIB: u64 = 1024 * MIB;
    let fmt = |v: f64, unit: &str| {
        if v.fract() == 0.0 {
            format!("{v:.0} {unit}")
        } else {
            format!("{v:.1} {unit}")
        }
    };
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        fmt(bytes as f64 / GIB as f64, "GiB")
    } else if bytes >= MIB {
        fmt(bytes as f64 / MIB as f64, "MiB")
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(resources: &str, cfs: bool, pids: Option<u64>) -> Limits {
        Limits::for_task(&Resources::parse(resources).unwrap(), cfs, pids)
    }

    #[test]
    fn half_a_cpu_and_64_mb_on_v1() {
        let l = limits("cpus:0.5;mem:64", true, None);
        assert_eq!(l.shares, Some(512));
        assert_eq!(l.cfs_quota_us, Some(50_000));
        assert_eq!(l.mem_bytes, Some(64 * MIB));
        assert_eq!(
            l.files(CgroupVersion::V1, true),
            vec![
                ("cpu", "cpu.shares", "512".to_string()),
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "50000".to_string()),
                ("memory", "memory.limit_in_bytes", "67108864".to_string()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "67108864".to_string()
                ),
            ]
        );
        let r = l.to_cgroup_resources(CgroupVersion::V1, true);
        assert_eq!(r.cpu.shares, Some(512));
        assert_eq!((r.cpu.quota, r.cpu.period), (Some(50_000), Some(100_000)));
        assert_eq!(r.memory.memory_hard_limit, Some(64 * MIB as i64));
        assert_eq!(r.memory.memory_swap_limit, Some(64 * MIB as i64));
        // Without swap accounting there is no memsw file to write.
        let r = l.to_cgroup_resources(CgroupVersion::V1, false);
        assert_eq!(r.memory.memory_swap_limit, None);
    }

    #[test]
    fn v2_names_and_values() {
        let l = limits("cpus:2;mem:128", true, Some(100));
        assert_eq!(
            l.files(CgroupVersion::V2, true),
            vec![
                ("cpu", "cpu.weight", "79".to_string()),
                ("cpu", "cpu.max", "200000 100000".to_string()),
                ("memory", "memory.max", "134217728".to_string()),
                ("memory", "memory.swap.max", "0".to_string()),
                ("pids", "pids.max", "100".to_string()),
            ]
        );
        let r = l.to_cgroup_resources(CgroupVersion::V2, false);
        assert_eq!(
            r.cpu.shares,
            Some(79),
            "cgroups-rs writes this into cpu.weight"
        );
        assert_eq!(
            r.memory.memory_swap_limit,
            Some(0),
            "memory.swap.max: no swap at all"
        );
        assert_eq!(
            r.pid.maximum_number_of_processes,
            Some(MaxValue::Value(100))
        );
    }

    #[test]
    fn weights_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1, "clamped");
    }

    #[test]
    fn tiny_and_missing_resources() {
        let l = limits("cpus:0.001", true, None);
        assert_eq!(l.shares, Some(MIN_SHARES));
        assert_eq!(l.cfs_quota_us, Some(MIN_CFS_QUOTA_US));
        assert_eq!(l.mem_bytes, None);
        let l = limits("cpus:1", false, None);
        assert_eq!(
            l.cfs_quota_us, None,
            "--cgroups-enable-cfs=false: shares only"
        );
        assert!(
            limits("disk:10", true, None)
                .files(CgroupVersion::V1, true)
                .is_empty()
        );
    }

    #[test]
    fn limits_read_like_people_write_them() {
        assert_eq!(human_bytes(64 * MIB), "64 MiB");
        assert_eq!(human_bytes(64 * MIB + MIB / 2), "64.5 MiB");
        assert_eq!(human_bytes(2048 * MIB), "2 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
