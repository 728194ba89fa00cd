//! Resident apps (issue 17, Marathon's local persistent volumes): each instance of an
//! app with `persistent` volumes reserves its resources and creates its volumes on the
//! agent it first lands on (RESERVE, CREATE and LAUNCH in one ACCEPT), and is launched
//! there again, with the same data, after a failure, a kill, a rolling update or an
//! agent restart. `app rm --wipe` destroys the volumes and releases the reservations
//! (DESTROY, UNRESERVE) through offers of their agents.
//!
//! ```text
//!   instance pg_0 ── volumes pg_0_0, pg_0_1 on agent A (persistence ids; app ids have no `_`)
//!   pending launch ─▶ a free instance: an offer of its agent holding its volumes ─▶ LAUNCH
//!                 └─▶ fewer instances than asked: any offer that fits ─▶ RESERVE, CREATE, LAUNCH
//!   volumes offered that no instance claims (`app rm` kept them, a lost record) ─▶ adopted
//!   agent gone ─▶ instance lost: waits (default) or, `unreachable_strategy: relocate`, anew
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use strata_framework_sdk::offer_resources;
use strata_proto::resources::Entry;
use strata_proto::{Resources, Scalar, v1};

use super::{Engine, Slot, needs_of};
use crate::app::constraints::Placement;
use crate::app::records::Resident;

/// The id of instance `n` of `app`.
pub fn instance_id(app: &str, n: u64) -> String {
    format!("{app}_{n}")
}

/// The persistence id of an instance's `k`-th persistent volume.
pub fn volume_id(instance: &str, k: usize) -> String {
    format!("{instance}_{k}")
}

/// (app, instance number, volume index) of a persistence id this framework made.
pub fn parse_volume_id(id: &str) -> Option<(&str, u64, usize)> {
    let mut parts = id.rsplitn(3, '_');
    let k = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    let app = parts.next()?;
    (!app.is_empty() && !app.contains('_')).then_some((app, n, k))
}

/// What a lost instance waits for.
pub fn lost_note(instance: &str, hostname: &str) -> String {
    format!(
        "instance {instance}'s agent {hostname} is gone, its data with it: remove the app, or set unreachable_strategy: relocate to start it afresh elsewhere"
    )
}

fn operation(op: v1::operation::Operation) -> v1::Operation {
    v1::Operation {
        operation: Some(op),
    }
}

/// The volumes of `role` in `r`, by persistence id.
fn volumes_by_id(r: &Resources, role: &str) -> BTreeMap<String, Entry> {
    r.volumes()
        .filter(|e| e.role.as_deref() == Some(role))
        .filter_map(|e| Some((e.persistence()?.id.clone(), e.clone())))
        .collect()
}

/// The resources of `entries`.
fn bag<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Resources {
    let mut out = Resources::new();
    for e in entries {
        out.add(&Resources::of_entry(e.clone()));
    }
    out
}

impl Engine {
    /// Whether any resident app's instance needs an offer to be wiped (`app rm
    /// --wipe`): such offers are demand too.
    pub(super) fn wipes_pending(&self) -> u32 {
        self.apps
            .iter()
            .filter(|(id, a)| {
                a.destroying && a.wipe && self.tasks.values().all(|t| t.app_id != **id)
            })
            .map(|(_, a)| a.residents.len() as u32)
            .sum()
    }

    /// The instances of `app_id` no live task runs as, not lost, by number.
    fn free_residents(&self, app_id: &str) -> Vec<String> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let busy: HashSet<&str> = self
            .tasks
            .values()
            .filter(|t| t.app_id == app_id)
            .filter_map(|t| t.resident.as_deref())
            .collect();
        let mut free: Vec<(u64, String)> = app
            .residents
            .iter()
            .filter(|(id, r)| !r.lost && !busy.contains(id.as_str()))
            .map(|(id, _)| {
                let n = id.rsplit('_').next().and_then(|n| n.parse().ok());
                (n.unwrap_or(u64::MAX), id.clone())
            })
            .collect();
        free.sort();
        free.into_iter().map(|(_, id)| id).collect()
    }

    /// Volumes of the framework's role in the offers that no instance claims, named
    /// as this framework names them, of an app it runs: their instance is adopted
    /// (its record was lost, or `app rm` kept its data and the app came back).
    pub(super) fn adopt_residents(&mut self, offers: &[v1::Offer]) {
        let role = self.role().to_string();
        for offer in offers {
            let Ok(r) = offer_resources(offer) else {
                continue;
            };
            let mut found: BTreeMap<(String, u64), Vec<(usize, String)>> = BTreeMap::new();
            for id in volumes_by_id(&r, &role).into_keys() {
                if let Some((app, n, k)) = parse_volume_id(&id) {
                    found
                        .entry((app.to_string(), n))
                        .or_default()
                        .push((k, id.clone()));
                }
            }
            for ((app_id, n), mut volumes) in found {
                let instance = instance_id(&app_id, n);
                let Some(app) = self.apps.get_mut(&app_id) else {
                    continue;
                };
                if !app.spec.is_resident() || app.residents.contains_key(&instance) {
                    continue;
                }
                volumes.sort();
                // What it reserved is not known: what an instance of the app takes
                // (released by `app rm --wipe`, as far as the role's offers hold it).
                let mut reserved = needs_of(&app.spec);
                let total: f64 = app.spec.persistent_volumes().map(|(_, s)| s).sum();
                reserved.add(
                    &Resources::new()
                        .with_scalar("disk", Scalar::from_f64(total).unwrap_or_default()),
                );
                let reserved = reserved.with_role(Some(&role)).to_string();
                tracing::info!(app = %app_id, %instance, agent = %offer.agent_id,
                    "adopting an instance's volumes found in an offer");
                app.residents.insert(
                    instance,
                    Resident {
                        agent_id: offer.agent_id.clone(),
                        hostname: offer.hostname.clone(),
                        attributes: offer
                            .attributes
                            .iter()
                            .map(|a| (a.name.clone(), a.value.clone()))
                            .collect(),
                        volumes: volumes.into_iter().map(|(_, id)| id).collect(),
                        reserved,
                        lost: false,
                        confirmed: true,
                    },
                );
                app.next_resident = app.next_resident.max(n + 1);
                self.save_app(&app_id);
            }
        }
    }

    /// Places the pending launches of resident apps: each free instance on an offer of
    /// its agent that holds its volumes, then new instances (RESERVE, CREATE, LAUNCH)
    /// while the app has fewer than it asks. Returns the resident apps' ids (the other
    /// placements skip them).
    pub(super) fn place_residents(
        &mut self,
        wanted: &mut [(String, u32)],
        slots: &mut [Slot],
        unmet: &mut HashMap<String, String>,
        placed_any: &mut HashMap<String, bool>,
        now: f64,
    ) -> HashSet<String> {
        let mut ids = HashSet::new();
        for (app_id, left) in wanted.iter_mut() {
            if !self.apps.get(app_id).is_some_and(|a| a.spec.is_resident()) {
                continue;
            }
            ids.insert(app_id.clone());
            let mut waiting: Vec<String> = Vec::new();
            for instance in self.free_residents(app_id) {
                if *left == 0 {
                    break;
                }
                match self.relaunch(app_id, &instance, slots, now) {
                    Ok(()) => {
                        *left -= 1;
                        placed_any.insert(app_id.clone(), true);
                    }
                    Err(why) => waiting.push(why),
                }
            }
            let app = self.apps.get(app_id).expect("listed");
            // A lost instance holds its place until an operator decides (relocate
            // forgets it).
            let known = app.residents.len() as u32;
            let mut new = (*left).min(app.spec.instances.saturating_sub(known));
            let lost: Vec<String> = app
                .residents
                .iter()
                .filter(|(_, r)| r.lost)
                .map(|(id, r)| lost_note(id, &r.hostname))
                .collect();
            while new > 0 {
                match self.new_resident(app_id, slots, now) {
                    Ok(()) => {
                        new -= 1;
                        *left -= 1;
                        placed_any.insert(app_id.clone(), true);
                    }
                    Err(why) => {
                        if let Some(why) = why {
                            waiting.push(why);
                        }
                        break;
                    }
                }
            }
            waiting.extend(lost);
            if *left > 0 && !waiting.is_empty() {
                unmet.insert(app_id.clone(), waiting.join("; "));
            }
        }
        ids
    }

    /// Launches free `instance` of `app_id` on the offer of its agent that holds its
    /// volumes; Err: why not (no such offer, or it does not fit).
    fn relaunch(
        &mut self,
        app_id: &str,
        instance: &str,
        slots: &mut [Slot],
        now: f64,
    ) -> Result<(), String> {
        let role = self.role().to_string();
        let app = self.apps.get(app_id).ok_or("gone")?;
        let resident = app.residents.get(instance).ok_or("gone")?.clone();
        let Some(slot) = slots
            .iter_mut()
            .find(|s| s.offer.agent_id == resident.agent_id)
        else {
            return Err(format!(
                "instance {instance} waits for an offer of its agent {} (its volumes are there)",
                resident.hostname
            ));
        };
        let offered = volumes_by_id(&slot.available, &role);
        let missing: Vec<&String> = resident
            .volumes
            .iter()
            .filter(|id| !offered.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            if !resident.confirmed {
                // Its RESERVE / CREATE never took: it starts afresh.
                tracing::info!(app = %app_id, %instance, "an instance whose volumes were never created is forgotten");
                if let Some(app) = self.apps.get_mut(app_id) {
                    app.residents.remove(instance);
                }
                self.save_app(app_id);
                return Err(format!("instance {instance} is created anew"));
            }
            return Err(format!(
                "instance {instance}'s volumes ({}) are not in the offers of its agent {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                resident.hostname
            ));
        }
        let volumes = bag(resident.volumes.iter().filter_map(|id| offered.get(id)));
        // It must go back where its data is: the constraints chose that agent before.
        let mut spec = app.spec.clone();
        spec.constraints.clear();
        let (needs, ports) = self
            .fit(
                app_id,
                &spec,
                needs_of(&spec),
                &slot.offer,
                &slot.placement,
                &slot.available,
            )
            .map_err(|why| {
                why.unwrap_or_else(|| {
                    format!(
                        "instance {instance} does not fit on its agent {} ({} free there)",
                        resident.hostname, slot.available
                    )
                })
            })?;
        let mut resources = needs.clone();
        resources.add(&volumes);
        slot.available.subtract(&resources);
        self.launch_as(app_id, instance, slot, &resources, ports, now);
        Ok(())
    }

    /// A new instance of `app_id` on the first offer where it fits and the
    /// constraints allow: RESERVE what it takes, CREATE its volumes, LAUNCH. Err(Some)
    /// a constraint's reason, Err(None) nothing fits.
    fn new_resident(
        &mut self,
        app_id: &str,
        slots: &mut [Slot],
        now: f64,
    ) -> Result<(), Option<String>> {
        let role = self.role().to_string();
        let app = self.apps.get(app_id).ok_or(None)?;
        let spec = app.spec.clone();
        let volumes: Vec<(String, bool, f64)> = spec
            .persistent_volumes()
            .map(|(v, size)| {
                (
                    v.container_path.clone(),
                    v.mode.as_deref() == Some("ro"),
                    size,
                )
            })
            .collect();
        let total: f64 = volumes.iter().map(|(_, _, s)| s).sum();
        let mut needs = needs_of(&spec);
        needs.add(&Resources::new().with_scalar("disk", Scalar::from_f64(total).ok_or(None)?));
        // Constraints count where the app's instances keep their data too.
        let residents: Vec<Placement> = app
            .residents
            .values()
            .map(|r| Placement {
                hostname: r.hostname.clone(),
                attributes: r.attributes.clone(),
            })
            .collect();
        let mut why = None;
        for slot in slots.iter_mut() {
            let taken = residents
                .iter()
                .any(|p| p.hostname == slot.placement.hostname);
            if taken && spec.constraints.is_empty() && spec.instances > 1 {
                // Spread instances by default: another agent first.
                continue;
            }
            let fit = self.fit(
                app_id,
                &spec,
                needs.clone(),
                &slot.offer,
                &slot.placement,
                &slot.available,
            );
            let (picked, ports) = match fit {
                Ok(f) => f,
                Err(reason) => {
                    why = why.or(reason);
                    continue;
                }
            };
            if !spec.constraints.is_empty() {
                let refs: Vec<&Placement> = residents.iter().collect();
                if let Err(unmet) =
                    crate::app::constraints::check(&spec.constraints, &slot.placement, &refs)
                {
                    why = Some(unmet.to_string());
                    continue;
                }
            }
            // Ports are not reserved; everything else becomes the role's.
            let (port_entries, rest): (Vec<&Entry>, Vec<&Entry>) =
                picked.entries().iter().partition(|e| e.name == "ports");
            let rest = bag(rest);
            let reserve = rest.unreserved().with_role(Some(&role));
            let mut resources = rest.with_role(Some(&role));
            resources.subtract(
                &Resources::new()
                    .with_scalar("disk", Scalar::from_f64(total).unwrap_or_default())
                    .with_role(Some(&role)),
            );
            let app = self.apps.get_mut(app_id).expect("checked");
            let n = app.next_resident;
            app.next_resident += 1;
            let instance = instance_id(app_id, n);
            let mut created = Resources::new();
            let mut ids = Vec::new();
            for (k, (path, read_only, size)) in volumes.iter().enumerate() {
                let id = volume_id(&instance, k);
                // The SDK's builder, as any scheduler makes one (the spec was
                // checked: a role, a positive size).
                let volume = strata_framework_sdk::ops::persistent_volume(
                    &role, &id, path, *size, *read_only,
                )
                .unwrap_or_default();
                created.add(&volume);
                ids.push(id);
            }
            resources.add(&created);
            resources.add(&bag(port_entries));
            app.residents.insert(
                instance.clone(),
                Resident {
                    agent_id: slot.offer.agent_id.clone(),
                    hostname: slot.offer.hostname.clone(),
                    attributes: slot.placement.attributes.clone(),
                    volumes: ids,
                    reserved: reserve.to_string(),
                    lost: false,
                    confirmed: false,
                },
            );
            self.save_app(app_id);
            tracing::info!(app = %app_id, %instance, agent = %slot.offer.agent_id,
                reserve = %reserve, volumes = %created, "creating a resident instance");
            if !reserve.is_empty() {
                slot.operations
                    .push(operation(v1::operation::Operation::Reserve(v1::Reserve {
                        resources: reserve.to_proto(),
                    })));
            }
            slot.operations
                .push(operation(v1::operation::Operation::Create(v1::Create {
                    volumes: created.to_proto(),
                })));
            slot.available.subtract(&picked);
            self.launch_as(app_id, &instance, slot, &resources, ports, now);
            return Ok(());
        }
        Err(why)
    }

    /// Records a task of `app_id` running as `instance` with `resources` and adds it
    /// to the launches of `slot`.
    fn launch_as(
        &mut self,
        app_id: &str,
        instance: &str,
        slot: &mut Slot,
        resources: &Resources,
        ports: Vec<u16>,
        now: f64,
    ) {
        let task = self.record_task(
            app_id,
            &slot.offer,
            &slot.placement,
            resources,
            ports,
            Some(instance.to_string()),
            now,
        );
        slot.launched.push(task);
    }

    /// `app rm --wipe` of apps whose tasks are gone: each instance's volumes are
    /// destroyed and what it reserved released, on an offer of its agent; lost
    /// instances are forgotten.
    pub(super) fn wipe_residents(&mut self, slots: &mut [Slot]) {
        let role = self.role().to_string();
        let wiping: Vec<String> = self
            .apps
            .iter()
            .filter(|(id, a)| {
                a.destroying
                    && a.wipe
                    && !a.residents.is_empty()
                    && self.tasks.values().all(|t| t.app_id != **id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for app_id in wiping {
            let residents: Vec<(String, Resident)> = self.apps[&app_id]
                .residents
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (instance, r) in residents {
                if !r.lost {
                    let Some(slot) = slots.iter_mut().find(|s| s.offer.agent_id == r.agent_id)
                    else {
                        continue;
                    };
                    let offered = volumes_by_id(&slot.available, &role);
                    let volumes = bag(r.volumes.iter().filter_map(|id| offered.get(id)));
                    if !volumes.is_empty() {
                        let mut bases = Resources::new();
                        for v in volumes.entries() {
                            if let Some(b) = v.volume_base() {
                                bases.add(&Resources::of_entry(b));
                            }
                        }
                        slot.available.subtract(&volumes);
                        slot.available.add(&bases);
                        slot.operations
                            .push(operation(v1::operation::Operation::Destroy(v1::Destroy {
                                volumes: volumes.to_proto(),
                            })));
                    }
                    // Release what it reserved, as far as the offer holds it.
                    let reserved = Resources::parse(&r.reserved).unwrap_or_default();
                    let mut release = Resources::new();
                    for e in reserved.entries() {
                        let one = Resources::of_entry(e.clone());
                        let have = slot.available.reserved_for(&role).without_volumes();
                        let amount = have.scalar(&e.name).min(one.scalar(&e.name));
                        if amount.is_positive() && e.disk.is_none() {
                            release.add(
                                &Resources::new()
                                    .with_scalar(&e.name, amount)
                                    .with_role(Some(&role)),
                            );
                        }
                    }
                    if !release.is_empty() {
                        slot.available.subtract(&release);
                        slot.available.add(&release.with_role(None));
                        slot.operations
                            .push(operation(v1::operation::Operation::Unreserve(
                                v1::Unreserve {
                                    resources: release.to_proto(),
                                },
                            )));
                    }
                    tracing::info!(app = %app_id, %instance, agent = %r.agent_id,
                        volumes = %volumes, unreserve = %release, "wiping a resident instance");
                }
                if let Some(app) = self.apps.get_mut(&app_id) {
                    app.residents.remove(&instance);
                }
                self.save_app(&app_id);
            }
        }
    }

    /// The task of a resident instance ended: a start confirms the instance's
    /// volumes; its agent gone for good loses it.
    pub(super) fn resident_update(&mut self, app_id: &str, instance: &str, state: v1::TaskState) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        let relocates = app.spec.relocates();
        let Some(r) = app.residents.get_mut(instance) else {
            return;
        };
        match state {
            v1::TaskState::TaskStarting | v1::TaskState::TaskRunning if !r.confirmed => {
                r.confirmed = true;
            }
            v1::TaskState::TaskGoneByOperator => {
                tracing::warn!(app = %app_id, %instance, agent = %r.agent_id,
                    relocates, "the agent of a resident instance is gone, its data with it");
                if relocates {
                    app.residents.remove(instance);
                } else {
                    r.lost = true;
                }
            }
            _ => return,
        }
        self.save_app(app_id);
    }

    /// An agent was removed for good: the instances whose data was there are lost
    /// (forgotten, for apps that relocate), whether a task of theirs ran there or not.
    pub fn agent_gone(&mut self, agent_id: &str, now: f64) -> Vec<super::Action> {
        let ids: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.residents.values().any(|r| r.agent_id == agent_id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(app) = self.apps.get_mut(&id) {
                for (instance, r) in app.residents.iter_mut() {
                    if r.agent_id == agent_id && !r.lost {
                        tracing::warn!(app = %id, %instance, agent_id,
                            "the agent of a resident instance is gone, its data with it");
                        r.lost = true;
                    }
                }
            }
            self.save_app(&id);
        }
        self.relocate_lost();
        self.last_pending = 0;
        self.tick(now)
    }

    /// Apps that relocate forget their lost instances (e.g. after a re-deploy that set
    /// `unreachable_strategy: relocate`), and so do apps being wiped (nothing is left
    /// to destroy).
    pub(super) fn relocate_lost(&mut self) {
        let ids: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| {
                (a.spec.relocates() || (a.destroying && a.wipe))
                    && a.residents.values().any(|r| r.lost)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(app) = self.apps.get_mut(&id) {
                app.residents.retain(|_, r| !r.lost);
            }
            self.save_app(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::engine::Action;
    use crate::app::spec::AppSpec;
    use strata_master::core::volumes::{Checkpointed, OpKind, apply_op};
    use strata_proto::v1::TaskState;

    /// A master's view of one agent, just enough to make offers and apply what the
    /// engine accepts: its total (with reservations and volumes), what tasks use,
    /// and its ledger.
    struct Agent {
        id: &'static str,
        total: Resources,
        used: BTreeMap<String, Resources>,
        ledger: Checkpointed,
    }

    impl Agent {
        fn new(id: &'static str) -> Agent {
            Agent {
                id,
                total: Resources::parse("cpus:4;mem:1024;disk:4000;ports:[31000-31010]").unwrap(),
                used: BTreeMap::new(),
                ledger: Checkpointed::default(),
            }
        }

        fn offer(&self, n: u32) -> v1::Offer {
            let mut free = self.total.allocatable_to("apps");
            for r in self.used.values() {
                free.subtract(r);
            }
            v1::Offer {
                id: format!("{}-o{n}", self.id),
                framework_id: "fw".into(),
                agent_id: self.id.into(),
                hostname: format!("host-{}", self.id),
                role: "apps".into(),
                resources: free.to_proto(),
                attributes: vec![],
                agent_address: String::new(),
            }
        }

        /// Applies a Launch action made from its offer as the master would; panics on
        /// anything the master would refuse.
        fn accept(
            &mut self,
            offer: &v1::Offer,
            operations: &[v1::Operation],
            tasks: &[v1::TaskInfo],
        ) {
            let mut pool = Resources::try_from_proto(&offer.resources).unwrap();
            let ok = |_: &str, _: &Resources, _: &Checkpointed| Ok(());
            for op in operations {
                let (kind, wire) = OpKind::of(op.operation.as_ref().unwrap()).unwrap();
                let c = apply_op(
                    kind,
                    wire,
                    &mut pool,
                    &mut self.ledger,
                    "fw",
                    &ok,
                    "the offers",
                )
                .unwrap_or_else(|e| panic!("{} refused: {e}", kind.name()));
                self.total.subtract(&c.from);
                self.total.add(&c.to);
            }
            for t in tasks {
                let r = Resources::try_from_proto(&t.resources).unwrap();
                assert!(
                    pool.contains(&r),
                    "task {} needs {r}, the offer has {pool}",
                    t.task_id
                );
                pool.subtract(&r);
                self.used.insert(t.task_id.clone(), r);
            }
        }
    }

    fn launches(actions: &[Action]) -> Vec<(String, Vec<v1::Operation>, Vec<v1::TaskInfo>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch {
                    offer_id,
                    operations,
                    tasks,
                } => Some((offer_id.clone(), operations.clone(), tasks.clone())),
                _ => None,
            })
            .collect()
    }

    fn status(task: &str, state: TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn pg(cmd: &str, relocate: bool) -> AppSpec {
        let mut json = serde_json::json!({
            "id": "pg", "cmd": cmd, "instances": 1, "cpus": 0.5, "mem": 64, "disk": 10,
            "volumes": [{"container_path": "data", "persistent": {"size": 512}}],
        });
        if relocate {
            json["unreachable_strategy"] = "relocate".into();
        }
        AppSpec::from_json(json).unwrap()
    }

    /// One offer round of `agent`: what the engine launched there (applied).
    fn round(c: &mut Engine, agent: &mut Agent, n: u32, now: f64) -> Vec<v1::TaskInfo> {
        let offer = agent.offer(n);
        let actions = c.offers(vec![offer.clone()], now);
        let mut out = Vec::new();
        for (id, ops, tasks) in launches(&actions) {
            assert_eq!(id, offer.id);
            agent.accept(&offer, &ops, &tasks);
            out.extend(tasks);
        }
        out
    }

    fn volume_of(t: &v1::TaskInfo) -> String {
        let r = Resources::try_from_proto(&t.resources).unwrap();
        let v: Vec<&Entry> = r.volumes().collect();
        assert_eq!(v.len(), 1, "{r}");
        v[0].persistence().unwrap().id.clone()
    }

    #[test]
    fn a_resident_instance_keeps_its_volume_through_failures_and_updates_then_wipes() {
        let mut c = Engine::default().with_role("apps");
        c.subscribed("fw", 0.0);
        c.deploy(pg("v1", false), false, 1.0).unwrap();
        let mut a1 = Agent::new("a1");
        let mut a2 = Agent::new("a2");

        // First launch: RESERVE, CREATE and LAUNCH in one accept.
        let offer = a1.offer(1);
        let actions = c.offers(vec![offer.clone()], 2.0);
        let [(_, ops, tasks)] = launches(&actions).try_into().unwrap();
        let kinds: Vec<&str> = ops
            .iter()
            .map(|o| OpKind::of(o.operation.as_ref().unwrap()).unwrap().0.name())
            .collect();
        assert_eq!(kinds, ["RESERVE", "CREATE"]);
        a1.accept(&offer, &ops, &tasks);
        let first = tasks[0].task_id.clone();
        assert_eq!(volume_of(&tasks[0]), "pg_0_0");
        assert_eq!(
            a1.ledger.reserved,
            Resources::parse("cpus(apps):0.5;mem(apps):64;disk(apps):522").unwrap()
        );
        c.status(&status(&first, TaskState::TaskRunning), 3.0);
        let view = c.app_view("pg", 3.0).unwrap();
        assert_eq!(view.residents.len(), 1);
        assert_eq!(view.residents[0].task_id.as_deref(), Some(first.as_str()));

        // The task fails: an offer of another agent is not used, its own agent's is,
        // with the same volume and no new reservation.
        c.status(&status(&first, TaskState::TaskFailed), 4.0);
        a1.used.remove(&first);
        assert!(round(&mut c, &mut a2, 1, 100.0).is_empty());
        let waiting = c.app_view("pg", 100.0).unwrap().deployment;
        assert!(waiting.is_none_or(|d| {
            d.waiting
                .contains("waits for an offer of its agent host-a1")
        }));
        let offer = a1.offer(2);
        let actions = c.offers(vec![offer.clone()], 101.0);
        let [(_, ops, tasks)] = launches(&actions).try_into().unwrap();
        assert!(ops.is_empty(), "{ops:?}");
        a1.accept(&offer, &ops, &tasks);
        assert_eq!(volume_of(&tasks[0]), "pg_0_0");
        let second = tasks[0].task_id.clone();
        c.status(&status(&second, TaskState::TaskRunning), 102.0);

        // A rolling update stops the old task first, then comes back on the volume.
        let (_, actions) = c.deploy(pg("v2", false), false, 103.0).unwrap();
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Kill { task_id, .. } if *task_id == second)),
            "{actions:?}"
        );
        assert!(
            round(&mut c, &mut a1, 3, 104.0).is_empty(),
            "the volume is in use"
        );
        c.status(&status(&second, TaskState::TaskKilled), 105.0);
        a1.used.remove(&second);
        let tasks = round(&mut c, &mut a1, 4, 106.0);
        assert_eq!(tasks.len(), 1);
        assert_eq!(volume_of(&tasks[0]), "pg_0_0");
        assert!(tasks[0].command.as_ref().unwrap().value.contains("v2"));
        let third = tasks[0].task_id.clone();
        c.status(&status(&third, TaskState::TaskRunning), 107.0);

        // `app rm --wipe`: the task goes, then DESTROY and UNRESERVE free it all.
        c.destroy("pg", true, 108.0).unwrap();
        c.status(&status(&third, TaskState::TaskKilled), 109.0);
        a1.used.remove(&third);
        let offer = a1.offer(5);
        let actions = c.offers(vec![offer.clone()], 110.0);
        let [(_, ops, tasks)] = launches(&actions).try_into().unwrap();
        assert!(tasks.is_empty());
        a1.accept(&offer, &ops, &tasks);
        assert_eq!(a1.ledger, Checkpointed::default());
        assert_eq!(a1.total, Agent::new("a1").total);
        c.tick(111.0);
        assert!(c.app_view("pg", 111.0).is_none(), "removed once wiped");
    }

    #[test]
    fn app_rm_keeps_the_volume_and_a_new_deploy_adopts_it() {
        let mut c = Engine::default().with_role("apps");
        c.subscribed("fw", 0.0);
        c.deploy(pg("v1", false), false, 1.0).unwrap();
        let mut a1 = Agent::new("a1");
        let tasks = round(&mut c, &mut a1, 1, 2.0);
        let t = tasks[0].task_id.clone();
        c.status(&status(&t, TaskState::TaskRunning), 3.0);
        c.destroy("pg", false, 4.0).unwrap();
        c.status(&status(&t, TaskState::TaskKilled), 5.0);
        a1.used.remove(&t);
        c.tick(6.0);
        assert!(c.app_view("pg", 6.0).is_none());
        assert_eq!(a1.ledger.volumes.volumes().count(), 1, "kept");
        // Offers of the kept volume are declined while no app claims it.
        assert!(round(&mut c, &mut a1, 2, 7.0).is_empty());
        // Deployed again: the instance comes back on its data.
        c.deploy(pg("v1", false), false, 8.0).unwrap();
        let tasks = round(&mut c, &mut a1, 3, 9.0);
        assert_eq!(tasks.len(), 1);
        assert_eq!(volume_of(&tasks[0]), "pg_0_0");
        assert_eq!(c.app_view("pg", 9.0).unwrap().residents[0].instance, "pg_0");
    }

    #[test]
    fn a_lost_agent_waits_for_an_operator_unless_the_app_relocates() {
        let mut c = Engine::default().with_role("apps");
        c.subscribed("fw", 0.0);
        c.deploy(pg("v1", false), false, 1.0).unwrap();
        let mut a1 = Agent::new("a1");
        let mut a2 = Agent::new("a2");
        let t = round(&mut c, &mut a1, 1, 2.0)[0].task_id.clone();
        c.status(&status(&t, TaskState::TaskRunning), 3.0);
        c.status(&status(&t, TaskState::TaskGoneByOperator), 4.0);
        assert!(round(&mut c, &mut a2, 1, 5.0).is_empty());
        let view = c.app_view("pg", 5.0).unwrap();
        assert!(view.residents[0].lost);
        let waiting = view.residents[0].note.clone().unwrap_or_default();
        assert!(
            waiting.contains("instance pg_0's agent host-a1 is gone")
                && waiting.contains("unreachable_strategy: relocate"),
            "{waiting}"
        );
        // With relocate, the instance starts afresh on another agent.
        c.deploy(pg("v1", true), false, 6.0).unwrap();
        let tasks = round(&mut c, &mut a2, 2, 7.0);
        assert_eq!(tasks.len(), 1);
        assert_eq!(volume_of(&tasks[0]), "pg_1_0");
        assert_eq!(tasks[0].agent_id, "a2");
    }

    #[test]
    fn resident_apps_need_a_role_and_keep_their_volumes() {
        let mut c = Engine::default();
        c.subscribed("fw", 0.0);
        let err = c.deploy(pg("v1", false), false, 1.0).unwrap_err();
        assert!(
            err.to_string().contains("role '*' cannot hold any"),
            "{err}"
        );
        let mut c = Engine::default().with_role("apps");
        c.subscribed("fw", 0.0);
        c.deploy(pg("v1", false), false, 1.0).unwrap();
        let mut bigger = pg("v1", false);
        bigger.volumes[0].persistent.as_mut().unwrap().size = 1024.0;
        let err = c.deploy(bigger, false, 2.0).unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
    }

    #[test]
    fn ids_round_trip_and_foreign_ones_are_not_parsed() {
        let instance = instance_id("pg.main", 3);
        assert_eq!(instance, "pg.main_3");
        let id = volume_id(&instance, 1);
        assert_eq!(id, "pg.main_3_1");
        assert_eq!(parse_volume_id(&id), Some(("pg.main", 3, 1)));
        for foreign in ["data", "a_b", "a_b_c", "x_y_1_2", "_1_2", "a_1_x"] {
            assert_eq!(parse_volume_id(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn an_instance_without_a_task_is_lost_with_its_agent() {
        let mut c = Engine::default().with_role("apps");
        c.subscribed("fw", 0.0);
        c.deploy(pg("v1", false), false, 1.0).unwrap();
        let mut a1 = Agent::new("a1");
        let t = round(&mut c, &mut a1, 1, 2.0)[0].task_id.clone();
        c.status(&status(&t, TaskState::TaskRunning), 3.0);
        // Scaled to 0: the instance keeps its data, no task runs as it.
        c.scale("pg", 0, 4.0).unwrap();
        c.status(&status(&t, TaskState::TaskKilled), 5.0);
        assert!(
            c.app_view("pg", 5.0).unwrap().residents[0]
                .task_id
                .is_none()
        );
        c.agent_gone("a1", 6.0);
        let view = c.app_view("pg", 6.0).unwrap();
        assert!(view.residents[0].lost, "{:?}", view.residents);
        // Removed with --wipe: nothing is left to destroy, the app goes.
        c.destroy("pg", true, 7.0).unwrap();
        c.tick(8.0);
        assert!(c.app_view("pg", 8.0).is_none());
    }
}
