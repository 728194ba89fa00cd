//! Offer operations besides LAUNCH (issue 17): dynamic reservations (RESERVE /
//! UNRESERVE) and persistent volumes (CREATE / DESTROY), built as `v1::Operation`s for
//! [`DriverHandle::accept`](crate::DriverHandle::accept).
//!
//! ```text
//!   offer (unreserved) ─ reserve(cpus(db):1;disk(db):1024) ─▶ offer (reserved for db)
//!   offer (reserved)   ─ create(persistent_volume(..))     ─▶ offer with the volume
//!   offer with volume  ─ LAUNCH task.persistent_volume(&v) ─▶ the task sees it at its path
//!   (task ended)       ─ destroy(&v), unreserve(..)        ─▶ back to unreserved
//! ```
//!
//! One ACCEPT applies its operations in order, each to what the ones before left of
//! the offers, so a scheduler can reserve, create and launch in one call. An operation
//! the master refuses is skipped (the others are still applied) and the ACCEPT
//! answers `INVALID_ARGUMENT` naming it ([`SdkError::Rpc`](crate::SdkError::Rpc)).
//!
//! ```
//! use strata_framework_sdk::{Resources, TaskBuilder, ops};
//!
//! // Reserve a cpu, memory and 1 GiB of disk for role "db" ...
//! let reserved = Resources::parse("cpus:1;mem:512;disk:1024").unwrap().with_role(Some("db"));
//! // ... make 512 MiB of it a volume the task sees as `data` in its sandbox ...
//! let volume = ops::persistent_volume("db", "pg_0_0", "data", 512.0, false).unwrap();
//! // ... and run the task with it.
//! let task = TaskBuilder::new("pg-0")
//!     .shell("exec postgres -D data")
//!     .cpus(1.0)
//!     .mem(512.0)
//!     .persistent_volume(&volume);
//! let operations = vec![ops::reserve(&reserved), ops::create(&volume)];
//! // driver.accept(vec![offer.id], operations + a LAUNCH of task.build_for(..), None)
//! # let _ = (task, operations);
//! ```

use strata_proto::{Resources, v1};

use crate::SdkError;

/// Resources an operation or a task takes as given: a [`Resources`] bag, or wire
/// resources as an offer lists them (one `v1::Resource`, a slice or a `Vec`).
pub trait ResourceList {
    /// The resources in their wire form.
    fn to_wire(&self) -> Vec<v1::Resource>;
}

impl ResourceList for Resources {
    fn to_wire(&self) -> Vec<v1::Resource> {
        self.to_proto()
    }
}

impl ResourceList for v1::Resource {
    fn to_wire(&self) -> Vec<v1::Resource> {
        vec![self.clone()]
    }
}

impl ResourceList for [v1::Resource] {
    fn to_wire(&self) -> Vec<v1::Resource> {
        self.to_vec()
    }
}

impl ResourceList for Vec<v1::Resource> {
    fn to_wire(&self) -> Vec<v1::Resource> {
        self.clone()
    }
}

/// RESERVE: reserves unreserved resources of the offers for a role. Each resource names
/// the role to reserve it for (`cpus(db):1`, or `.with_role(Some("db"))` on a bag), a
/// role of the framework's that the offers were made to. The reservation survives
/// agent and master restarts and is offered only to that role until UNRESERVE.
///
/// ```
/// use strata_framework_sdk::{Resources, ops, v1};
///
/// let op = ops::reserve(&Resources::parse("cpus(db):1;disk(db):2048").unwrap());
/// let Some(v1::operation::Operation::Reserve(r)) = op.operation else { panic!() };
/// assert!(r.resources.iter().all(|r| r.role == "db"));
/// ```
pub fn reserve(resources: &Resources) -> v1::Operation {
    operation(v1::operation::Operation::Reserve(v1::Reserve {
        resources: resources.to_proto(),
    }))
}

/// UNRESERVE: releases a dynamic reservation; the resources, as offered (with their
/// role), go back to the unreserved pool. A static reservation (an agent's
/// `--resources`) cannot be released, nor disk a volume is made of (DESTROY first).
pub fn unreserve(resources: &Resources) -> v1::Operation {
    operation(v1::operation::Operation::Unreserve(v1::Unreserve {
        resources: resources.to_proto(),
    }))
}

/// CREATE: makes persistent volumes out of disk of the offers reserved for their role
/// (see [`persistent_volume`]). The master sets each volume's principal to the
/// framework's. Once created, the volume is offered to its role (as it is: same id,
/// size and container path) whenever no task uses it.
pub fn create(volumes: &(impl ResourceList + ?Sized)) -> v1::Operation {
    operation(v1::operation::Operation::Create(v1::Create {
        volumes: volumes.to_wire(),
    }))
}

/// DESTROY: removes persistent volumes and their data from the agent; their disk goes
/// back to the role's reservation. Give the volumes exactly as offered
/// ([`offer_volumes`]); only a volume in the offers (which no task uses) can be
/// destroyed.
pub fn destroy(volumes: &(impl ResourceList + ?Sized)) -> v1::Operation {
    operation(v1::operation::Operation::Destroy(v1::Destroy {
        volumes: volumes.to_wire(),
    }))
}

fn operation(op: v1::operation::Operation) -> v1::Operation {
    v1::Operation {
        operation: Some(op),
    }
}

/// A persistent volume to CREATE, or to name in a task: `size_mib` of disk reserved
/// for `role`, with the persistence id `id` (unique per agent and role:
/// `[A-Za-z0-9_.-]`, at most 128 bytes) and seen by the task at `container_path`, a
/// path relative to its sandbox without `..` (`data`, `db/files`); read-only when
/// `read_only`. The principal is left empty: the master fills in the caller's.
///
/// Fails, with the reason, on an empty or `*` role, a bad id or container path, or a
/// size that is not a positive number.
///
/// ```
/// use strata_framework_sdk::ops;
///
/// let v = ops::persistent_volume("db", "pg_0_0", "data", 512.0, false).unwrap();
/// assert_eq!(v.to_string(), "disk(db)[pg_0_0:data]:512");
/// assert!(ops::persistent_volume("db", "v", "../etc", 1.0, false).is_err());
/// ```
pub fn persistent_volume(
    role: &str,
    id: &str,
    container_path: &str,
    size_mib: f64,
    read_only: bool,
) -> Result<Resources, SdkError> {
    volume(role, id, container_path, size_mib, read_only, None)
}

/// A persistent volume on the MOUNT disk mounted at `root` on the agent (offered as
/// `disk[MOUNT:root]`): a MOUNT disk is used whole, so `size_mib` must be the disk's
/// whole size, reserved for `role`. Otherwise as [`persistent_volume`].
///
/// ```
/// use strata_framework_sdk::ops;
///
/// let v = ops::persistent_volume_on_mount("db", "v1", "data", 1000.0, true, "/mnt/d1").unwrap();
/// assert_eq!(v.to_string(), "disk(db)[v1:data:ro@/mnt/d1]:1000");
/// ```
pub fn persistent_volume_on_mount(
    role: &str,
    id: &str,
    container_path: &str,
    size_mib: f64,
    read_only: bool,
    root: &str,
) -> Result<Resources, SdkError> {
    volume(role, id, container_path, size_mib, read_only, Some(root))
}

fn volume(
    role: &str,
    id: &str,
    container_path: &str,
    size_mib: f64,
    read_only: bool,
    root: Option<&str>,
) -> Result<Resources, SdkError> {
    if role.trim().is_empty() || role == "*" {
        return Err(SdkError::InvalidArgument(format!(
            "volume '{id}': a persistent volume is made of disk reserved for a role; give a role, not '{role}'"
        )));
    }
    if !(size_mib.is_finite() && size_mib > 0.0) {
        return Err(SdkError::InvalidArgument(format!(
            "volume '{id}': the size must be a positive number of MiB, not {size_mib}"
        )));
    }
    let mode = if read_only {
        v1::volume::Mode::Ro
    } else {
        v1::volume::Mode::Rw
    };
    let wire = v1::Resource {
        name: "disk".into(),
        scalar: size_mib,
        role: role.to_string(),
        disk: Some(v1::DiskInfo {
            persistence: Some(v1::disk_info::Persistence {
                id: id.to_string(),
                principal: String::new(),
            }),
            container_path: container_path.to_string(),
            mode: mode as i32,
            source: root.map(|root| v1::disk_info::Source {
                r#type: v1::disk_info::source::Type::Mount as i32,
                root: root.to_string(),
            }),
        }),
        ..Default::default()
    };
    Ok(Resources::try_from_proto(&[wire])?)
}

/// Whether a wire resource is a persistent volume (a disk with a persistence id).
pub fn is_volume(resource: &v1::Resource) -> bool {
    resource.name == "disk"
        && resource
            .disk
            .as_ref()
            .and_then(|d| d.persistence.as_ref())
            .is_some_and(|p| !p.id.is_empty())
}

/// The persistent volumes of an offer, as offered: give them as they are to
/// [`TaskBuilder::persistent_volume`](crate::TaskBuilder::persistent_volume) or
/// [`destroy`].
pub fn offer_volumes(offer: &v1::Offer) -> Vec<v1::Resource> {
    offer
        .resources
        .iter()
        .filter(|r| is_volume(r))
        .cloned()
        .collect()
}

/// The volume of `role` with persistence id `id` in an offer, if it is there.
pub fn offer_volume(offer: &v1::Offer, role: &str, id: &str) -> Option<v1::Resource> {
    offer
        .resources
        .iter()
        .filter(|r| is_volume(r) && r.role == role)
        .find(|r| {
            r.disk
                .as_ref()
                .and_then(|d| d.persistence.as_ref())
                .is_some_and(|p| p.id == id)
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskBuilder;

    fn offer(resources: &[v1::Resource]) -> v1::Offer {
        v1::Offer {
            id: "o1".into(),
            agent_id: "a1".into(),
            resources: resources.to_vec(),
            ..Default::default()
        }
    }

    /// The volume as the master offers it: with the creator's principal.
    fn offered(volume: &Resources) -> v1::Resource {
        let mut wire = volume.to_proto().remove(0);
        wire.disk
            .as_mut()
            .unwrap()
            .persistence
            .as_mut()
            .unwrap()
            .principal = "fw".into();
        wire
    }

    #[test]
    fn operations_carry_their_resources() {
        let r = Resources::parse("cpus(db):1;disk(db):100").unwrap();
        let v = persistent_volume("db", "v1", "data", 64.0, false).unwrap();
        let ops = [reserve(&r), unreserve(&r), create(&v), destroy(&v)];
        use v1::operation::Operation as Op;
        match ops.map(|o| o.operation.unwrap()) {
            [
                Op::Reserve(a),
                Op::Unreserve(b),
                Op::Create(c),
                Op::Destroy(d),
            ] => {
                assert_eq!(a.resources, r.to_proto());
                assert_eq!(b.resources, r.to_proto());
                assert_eq!(c.volumes, v.to_proto());
                assert_eq!(d.volumes, v.to_proto());
            }
            other => panic!("{other:?}"),
        }
        // Wire resources work as well as bags.
        let wire = offered(&v);
        let Some(Op::Destroy(d)) = destroy(&wire).operation else {
            panic!()
        };
        assert_eq!(d.volumes, vec![wire.clone()]);
        let Some(Op::Create(c)) = create(&vec![wire.clone()]).operation else {
            panic!()
        };
        assert_eq!(c.volumes.len(), 1);
    }

    #[test]
    fn a_volume_is_reserved_disk_with_persistence_and_no_principal() {
        let v = persistent_volume("db", "pg_0_0", "data/pg", 512.0, true).unwrap();
        let wire = v.to_proto();
        assert_eq!(wire.len(), 1);
        let w = &wire[0];
        assert_eq!(
            (w.name.as_str(), w.scalar, w.role.as_str()),
            ("disk", 512.0, "db")
        );
        let disk = w.disk.as_ref().unwrap();
        let p = disk.persistence.as_ref().unwrap();
        assert_eq!((p.id.as_str(), p.principal.as_str()), ("pg_0_0", ""));
        assert_eq!(disk.container_path, "data/pg");
        assert_eq!(disk.mode, v1::volume::Mode::Ro as i32);
        assert!(disk.source.is_none());
        assert!(is_volume(w));

        let m = persistent_volume_on_mount("db", "v", "data", 1000.0, false, "/mnt/d1").unwrap();
        let source = m.to_proto()[0].disk.clone().unwrap().source.unwrap();
        assert_eq!(source.root, "/mnt/d1");
        assert_eq!(source.r#type, v1::disk_info::source::Type::Mount as i32);
    }

    #[test]
    fn bad_volumes_are_refused_with_the_reason() {
        let err = |r: Result<Resources, SdkError>| r.unwrap_err().to_string();
        assert!(err(persistent_volume("", "v", "data", 1.0, false)).contains("role"));
        assert!(err(persistent_volume("*", "v", "data", 1.0, false)).contains("role"));
        assert!(err(persistent_volume("db", "v", "data", 0.0, false)).contains("positive"));
        assert!(err(persistent_volume("db", "v", "data", f64::NAN, false)).contains("positive"));
        assert!(err(persistent_volume("db", "a/b", "data", 1.0, false)).contains("persistence id"));
        assert!(err(persistent_volume("db", "v", "/etc", 1.0, false)).contains("absolute"));
        assert!(err(persistent_volume("db", "v", "a/../..", 1.0, false)).contains("'..'"));
        assert!(persistent_volume_on_mount("db", "v", "data", 1.0, false, "relative").is_err());
    }

    #[test]
    fn volumes_are_found_in_offers() {
        let v1_ = persistent_volume("db", "v1", "data", 64.0, false).unwrap();
        let v2 = persistent_volume("web", "v1", "www", 32.0, false).unwrap();
        let mut resources = Resources::parse("cpus:1;disk(db):100").unwrap().to_proto();
        resources.push(offered(&v1_));
        resources.push(offered(&v2));
        let o = offer(&resources);
        let found = offer_volumes(&o);
        assert_eq!(found.len(), 2);
        assert_eq!(offer_volume(&o, "web", "v1").unwrap().scalar, 32.0);
        assert_eq!(offer_volume(&o, "db", "v1").unwrap().scalar, 64.0);
        assert!(offer_volume(&o, "db", "v2").is_none());
        assert!(offer_volumes(&offer(&[])).is_empty());
    }

    #[test]
    fn a_task_takes_the_volume_as_offered() {
        let v = persistent_volume("db", "pg_0_0", "data", 512.0, false).unwrap();
        let wire = offered(&v);
        let mut resources = Resources::parse("cpus:2;mem:1024;disk:100")
            .unwrap()
            .to_proto();
        resources.push(wire.clone());
        let o = offer(&resources);
        let task = TaskBuilder::new("pg-0").shell("x").cpus(1.0).mem(64.0);

        // Named as a bag (no principal) or as the offer has it: the same.
        for t in [
            task.clone().persistent_volume(&v),
            task.clone().persistent_volume(&wire),
        ] {
            let info = t.build_for(&o).unwrap();
            let got = Resources::try_from_proto(&info.resources).unwrap();
            assert_eq!(got.volumes().count(), 1, "{got}");
            assert_eq!(got.disk().to_string(), "512");
        }

        // Another size, path or id is not in the offer.
        for other in [
            persistent_volume("db", "pg_0_0", "data", 256.0, false).unwrap(),
            persistent_volume("db", "pg_0_0", "other", 512.0, false).unwrap(),
            persistent_volume("db", "pg_0_1", "data", 512.0, false).unwrap(),
        ] {
            match task.clone().persistent_volume(&other).build_for(&o) {
                Err(SdkError::DoesNotFit { .. }) => {}
                r => panic!("{other}: expected DoesNotFit, got {r:?}"),
            }
        }

        // Plain disk is no volume.
        let plain = Resources::parse("disk(db):10").unwrap();
        match task.clone().persistent_volume(&plain).build("a1") {
            Err(SdkError::InvalidArgument(m)) => {
                assert!(m.contains("not a persistent volume"), "{m}")
            }
            r => panic!("expected InvalidArgument, got {r:?}"),
        }
        // build() takes it without an offer.
        let info = task.persistent_volume(&v).build("a1").unwrap();
        assert_eq!(info.resources.iter().filter(|r| is_volume(r)).count(), 1);
    }
}
