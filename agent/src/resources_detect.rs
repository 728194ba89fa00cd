//! What the agent offers: the machine's cores, memory, disk and a port range, detected
//! the way Mesos does it, with `--resources` overriding each resource it names.
//!
//! - cpus: the number of cores the agent may use.
//! - mem: total memory minus min(1 GiB, 50%) for the system, in MiB.
//! - disk: free space of the work dir's filesystem minus min(5 GiB, 50%), in MiB.
//! - ports: 31000-32000.

use std::collections::HashSet;
use std::path::Path;

use strata_proto::{RangeSet, ResourceError, Resources, Scalar};

/// The default port range, as in Mesos.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// Detects the machine's resources. Anything that cannot be measured is left out
/// (and logged), so the agent never offers what it does not have.
pub fn detect_resources(work_dir: &Path) -> Resources {
    let mut out = Resources::new();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    out = out.with_scalar("cpus", Scalar::from_int(cpus as i64));
    match total_memory_mib() {
        Some(total) => {
            let reserved = (total / 2).min(1024);
            out = out.with_scalar("mem", Scalar::from_int((total - reserved) as i64));
        }
        None => tracing::warn!("cannot read the machine's memory; offering no mem"),
    }
    match free_disk_mib(work_dir) {
        Some(free) => {
            let reserved = (free / 2).min(5 * 1024);
            out = out.with_scalar("disk", Scalar::from_int((free - reserved) as i64));
        }
        None => {
            tracing::warn!(work_dir = %work_dir.display(), "cannot measure free disk; offering no disk")
        }
    }
    out.with_ranges(
        "ports",
        RangeSet::from_range(DEFAULT_PORTS.0, DEFAULT_PORTS.1),
    )
}

/// The resources to offer: detected ones, with every resource named in `flag` (the
/// `--resources` form) replacing the detected one of the same name.
pub fn resolve_resources(flag: Option<&str>, work_dir: &Path) -> Result<Resources, ResourceError> {
    let detected = detect_resources(work_dir);
    let Some(flag) = flag else {
        return Ok(detected);
    };
    let overrides = Resources::parse(flag)?;
    // A MOUNT disk is a filesystem mounted on this machine: its root must be here.
    for e in overrides.entries() {
        if let Some(root) = e.disk.as_ref().and_then(|d| d.mount.as_deref())
            && !Path::new(root).is_dir()
        {
            return Err(ResourceError::BadDisk {
                name: e.name.clone(),
                reason: format!("the MOUNT root {root} is not a directory on this machine"),
            });
        }
    }
    Ok(merge_overrides(&detected, &overrides))
}

/// `detected` with every resource name present in `overrides` replaced by it.
pub fn merge_overrides(detected: &Resources, overrides: &Resources) -> Resources {
    let names: HashSet<&str> = overrides
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let mut wire: Vec<_> = detected
        .to_proto()
        .into_iter()
        .filter(|r| !names.contains(r.name.as_str()))
        .collect();
    wire.extend(overrides.to_proto());
    // Both inputs are validated bags, so this cannot fail; keep the overrides if it did.
    Resources::try_from_proto(&wire).unwrap_or_else(|_| overrides.clone())
}

fn total_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn free_disk_mib(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let bytes = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    Some(bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_finds_cpus_mem_and_ports() {
        let r = detect_resources(Path::new("/tmp"));
        assert!(r.cpus() >= Scalar::from_int(1));
        assert!(r.mem().is_positive());
        assert_eq!(r.ports().ranges(), &[DEFAULT_PORTS]);
    }

    #[test]
    fn flags_replace_only_what_they_name() {
        let detected = Resources::parse("cpus:8;mem:16000;disk:100;ports:[31000-32000]").unwrap();
        let merged = merge_overrides(
            &detected,
            &Resources::parse("cpus:2;ports:[5000-5001]").unwrap(),
        );
        assert_eq!(merged.cpus(), Scalar::from_int(2));
        assert_eq!(merged.mem(), Scalar::from_int(16000));
        assert_eq!(merged.ports().ranges(), &[(5000, 5001)]);
        assert!(resolve_resources(Some("cpus:abc"), Path::new("/tmp")).is_err());
    }

    #[test]
    fn a_mount_disk_must_be_a_directory_here() {
        let dir = tempfile::tempdir().unwrap();
        let flag = format!("disk:10;disk[MOUNT:{}]:100", dir.path().display());
        let r = resolve_resources(Some(&flag), dir.path()).unwrap();
        assert_eq!(r.disk().as_f64(), 110.0);
        let err = resolve_resources(Some("disk[MOUNT:/no/such/disk]:100"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/disk is not a directory"), "{err}");
    }
}
