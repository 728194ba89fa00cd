//! Dynamic reservations and persistent volumes (issue 17): RESERVE / UNRESERVE /
//! CREATE / DESTROY, applied to what is left of an ACCEPT's offers or, for an operator,
//! to an agent's unused resources; and each agent's checkpointed resources, kept in
//! the registry and sent to the agent.
//!
//! ```text
//!   ACCEPT ─ Reserve/Unreserve/Create/Destroy ─▶ apply_op(pool of the role, ledger)
//!   operator call ─────────────────────────────▶ apply_op(agent's free resources, ledger)
//!        ─▶ allocator converts the allocation (or free pool) and the agent's total
//!        ─▶ Persist(CheckpointResources) ─▶ agent: CheckpointResources (the whole ledger)
//!   agent registers ─▶ total = its --resources with the ledger applied (the registry's
//!                      ledger for an agent the master knows; else the agent's own copy)
//! ```
//!
//! The ledger ([`Checkpointed`]) holds the dynamically reserved resources (plain, as
//! reserved, including the disk volumes were made of) and the volumes. An agent's
//! total is its static resources with the reserved ones moved from unreserved to
//! their role, then each volume taken out of its role's plain (or MOUNT) disk.

use std::time::Instant;

use strata_proto::resources::Entry;
use strata_proto::{Resources, v1};
use strata_security::{Action, Principal};

use super::allocator::{AgentKey, FrameworkKey};
use super::api::CallError;
use super::master::Master;
use super::registry::RegistryOp;
use super::state::OfferSeq;

/// An agent's dynamic reservations and persistent volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpointed {
    /// Dynamically reserved resources: role set, no persistence.
    pub reserved: Resources,
    /// Persistent volumes: role set, with persistence.
    pub volumes: Resources,
}

impl Checkpointed {
    pub fn is_empty(&self) -> bool {
        self.reserved.is_empty() && self.volumes.is_empty()
    }

    pub fn to_proto(&self) -> v1::CheckpointResources {
        v1::CheckpointResources {
            reserved: self.reserved.to_proto(),
            volumes: self.volumes.to_proto(),
        }
    }

    /// Validates a ledger read from the wire or the registry.
    pub fn from_proto(p: &v1::CheckpointResources) -> Result<Checkpointed, String> {
        let reserved = Resources::try_from_proto(&p.reserved).map_err(|e| e.to_string())?;
        let volumes = Resources::try_from_proto(&p.volumes).map_err(|e| e.to_string())?;
        if let Some(e) = reserved
            .entries()
            .iter()
            .find(|e| e.role.is_none() || e.persistence().is_some())
        {
            return Err(format!(
                "'{}' is not a dynamic reservation",
                Resources::of_entry(e.clone())
            ));
        }
        if let Some(e) = volumes.entries().iter().find(|e| e.persistence().is_none()) {
            return Err(format!(
                "'{}' is not a persistent volume",
                Resources::of_entry(e.clone())
            ));
        }
        Ok(Checkpointed { reserved, volumes })
    }

    /// The registry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.to_proto())
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpointed, String> {
        let p: v1::CheckpointResources =
            prost::Message::decode(bytes).map_err(|e| e.to_string())?;
        Checkpointed::from_proto(&p)
    }

    /// The agent's total: `static_total` with the reservations and volumes applied, or
    /// why they do not fit in it (the agent came back with fewer resources).
    pub fn apply(&self, static_total: &Resources) -> Result<Resources, String> {
        let mut total = static_total.clone();
        let unreserved = self.reserved.with_role(None);
        if !total.contains(&unreserved) {
            return Err(format!(
                "its resources ({static_total}) do not hold its dynamic reservations ({})",
                self.reserved
            ));
        }
        total.subtract(&unreserved);
        total.add(&self.reserved);
        for v in self.volumes.entries() {
            let Some(base) = v.volume_base() else {
                continue;
            };
            let base = Resources::of_entry(base);
            if !total.contains(&base) {
                return Err(format!(
                    "its resources ({static_total}, with reservations {}) do not hold its volume {}",
                    self.reserved,
                    Resources::of_entry(v.clone())
                ));
            }
            total.subtract(&base);
            total.add(&Resources::of_entry(v.clone()));
        }
        Ok(total)
    }
}

/// One resource operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Reserve,
    Unreserve,
    Create,
    Destroy,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Reserve => "RESERVE",
            OpKind::Unreserve => "UNRESERVE",
            OpKind::Create => "CREATE",
            OpKind::Destroy => "DESTROY",
        }
    }

    pub fn action(self) -> Action {
        match self {
            OpKind::Reserve => Action::ReserveResources,
            OpKind::Unreserve => Action::UnreserveResources,
            OpKind::Create => Action::CreateVolumes,
            OpKind::Destroy => Action::DestroyVolumes,
        }
    }

    /// The kind and resources of a wire operation; `None` for LAUNCH.
    pub fn of(op: &v1::operation::Operation) -> Option<(OpKind, &[v1::Resource])> {
        use v1::operation::Operation as O;
        match op {
            O::Launch(_) => None,
            O::Reserve(r) => Some((OpKind::Reserve, &r.resources)),
            O::Unreserve(r) => Some((OpKind::Unreserve, &r.resources)),
            O::Create(c) => Some((OpKind::Create, &c.volumes)),
            O::Destroy(d) => Some((OpKind::Destroy, &d.volumes)),
        }
    }
}

/// What an operation turned into what, on one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// The role whose resources changed (the offers' role).
    pub role: String,
    pub from: Resources,
    pub to: Resources,
}

/// Whether `principal` may apply `kind` to `res` (all of one role): the ACL action of
/// the operation for the role, except that the creator of a volume may always destroy
/// it (Mesos asks `destroy_volumes` of the creator's principal likewise).
pub fn authorize_op(
    authorizer: &strata_security::Authorizer,
    principal: &str,
    kind: OpKind,
    role: &str,
    res: &Resources,
    ledger: &Checkpointed,
) -> Result<(), OpError> {
    if kind == OpKind::Destroy && !principal.is_empty() {
        let created_by_caller = |v: &Entry| {
            let id = v.persistence().map(|p| p.id.as_str());
            ledger.volumes.volumes().any(|l| {
                l.role == v.role
                    && l.persistence().map(|p| p.id.as_str()) == id
                    && l.persistence().is_some_and(|p| p.principal == principal)
            })
        };
        if res.volumes().next().is_some() && res.volumes().all(created_by_caller) {
            return Ok(());
        }
    }
    authorizer
        .authorize(&Principal::from_name(principal), kind.action(), role)
        .map_err(|d| OpError::Denied(d.to_string()))
}

/// Why an operation was not applied: the request itself, or the caller's rights.
#[derive(Debug, Clone, PartialEq)]
pub enum OpError {
    Invalid(String),
    Denied(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Invalid(s) | OpError::Denied(s) => f.write_str(s),
        }
    }
}

/// What a caller's rights are checked by: given the operation's role, its resources
/// and the agent's ledger.
pub type OpCheck<'a> = &'a dyn Fn(&str, &Resources, &Checkpointed) -> Result<(), OpError>;

/// Checks one operation against `pool` (what is left of the offers of one role, or
/// an agent's free resources) and the agent's ledger, and applies it to both. On an
/// error nothing changed. `principal`: the caller's (the creator of CREATE's
/// volumes); `check`: whether the caller may act in the role on these resources (a
/// framework: in the offers' role only; the ACLs: [`authorize_op`]), asked once the
/// request names one role.
pub fn apply_op(
    kind: OpKind,
    wire: &[v1::Resource],
    pool: &mut Resources,
    ledger: &mut Checkpointed,
    principal: &str,
    check: OpCheck<'_>,
    pool_name: &str,
) -> Result<Conversion, OpError> {
    let invalid = OpError::Invalid;
    if wire.is_empty() {
        return Err(invalid("it names no resources".into()));
    }
    let res = Resources::try_from_proto(wire).map_err(|e| invalid(e.to_string()))?;
    let mut roles: Vec<&str> = res
        .entries()
        .iter()
        .map(|e| e.role.as_deref().unwrap_or("*"))
        .collect();
    roles.dedup();
    let role = match roles.as_slice() {
        [one] => one.to_string(),
        _ => {
            return Err(invalid(format!(
                "its resources name {} roles ({}): one operation acts in one role",
                roles.len(),
                roles.join(", ")
            )));
        }
    };
    if role == "*" {
        return Err(invalid(format!(
            "'{res}' names no role: {} acts on resources reserved for a role",
            kind.name()
        )));
    }
    check(&role, &res, ledger)?;
    apply_valid(kind, res, role, pool, ledger, principal, pool_name).map_err(invalid)
}

/// [`apply_op`] once the request names one role the caller may act in.
fn apply_valid(
    kind: OpKind,
    mut res: Resources,
    role: String,
    pool: &mut Resources,
    ledger: &mut Checkpointed,
    principal: &str,
    pool_name: &str,
) -> Result<Conversion, String> {
    let volumes = res.volumes().count();
    match kind {
        OpKind::Reserve | OpKind::Unreserve if volumes > 0 => {
            return Err(format!(
                "'{res}' holds a persistent volume: {} acts on plain resources (DESTROY the volume first)",
                kind.name()
            ));
        }
        OpKind::Create | OpKind::Destroy if volumes != res.entries().len() => {
            return Err(format!(
                "'{}' is not a persistent volume: give disk resources with disk.persistence and a container path",
                res.without_volumes()
            ));
        }
        _ => {}
    }
    let (from, to) = match kind {
        OpKind::Reserve => {
            let from = res.with_role(None);
            if !pool.contains(&from) {
                return Err(format!(
                    "'{from}' is not among the unreserved resources of {pool_name} ({})",
                    pool.unreserved()
                ));
            }
            (from, res)
        }
        OpKind::Unreserve => {
            if !ledger.reserved.contains(&res) {
                return Err(format!(
                    "'{res}' is not dynamically reserved (dynamic reservations of this agent: {}); a static reservation from the agent's --resources cannot be released",
                    shown(&ledger.reserved)
                ));
            }
            if !pool.contains(&res) {
                return Err(format!(
                    "'{res}' is not among the resources of role '{role}' of {pool_name} ({}): what a persistent volume is made of is released only after its DESTROY, what a task uses after it ends",
                    shown(&pool.reserved_for(&role))
                ));
            }
            let to = res.with_role(None);
            (res, to)
        }
        OpKind::Create => {
            // The creator is the caller; a principal given must be the caller's.
            let mut entries: Vec<Entry> = Vec::new();
            for e in res.entries() {
                let mut e = e.clone();
                if let Some(p) = e.disk.as_mut().and_then(|d| d.persistence.as_mut()) {
                    if !p.principal.is_empty() && p.principal != principal {
                        return Err(format!(
                            "volume '{}' names principal '{}', not the caller's ('{principal}')",
                            p.id, p.principal
                        ));
                    }
                    p.principal = principal.to_string();
                }
                entries.push(e);
            }
            res = Resources::new();
            let mut from = Resources::new();
            for e in entries {
                let id = e.persistence().map(|p| p.id.clone()).unwrap_or_default();
                let taken = ledger
                    .volumes
                    .volumes()
                    .chain(res.volumes())
                    .any(|v| v.role == e.role && v.persistence().is_some_and(|p| p.id == id));
                if taken {
                    return Err(format!(
                        "a volume '{id}' of role '{role}' exists on this agent already: persistence ids are unique per agent and role"
                    ));
                }
                if let Some(base) = e.volume_base() {
                    from.add(&Resources::of_entry(base));
                }
                res.add(&Resources::of_entry(e));
            }
            if !pool.contains(&from) {
                return Err(format!(
                    "the volumes need {from} of disk reserved for role '{role}' (a MOUNT disk whole); {pool_name} have {}",
                    shown(&disk_of(&pool.reserved_for(&role)))
                ));
            }
            (from, res)
        }
        OpKind::Destroy => {
            if !pool.contains(&res) {
                return Err(format!(
                    "'{res}' is not in {pool_name} (a volume a task uses is not free; kill the task first)"
                ));
            }
            if !ledger.volumes.contains(&res) {
                return Err(format!("'{res}' is not a volume of this agent"));
            }
            let mut to = Resources::new();
            for v in res.entries() {
                if let Some(base) = v.volume_base() {
                    to.add(&Resources::of_entry(base));
                }
            }
            (res, to)
        }
    };
    pool.subtract(&from);
    pool.add(&to);
    match kind {
        OpKind::Reserve => ledger.reserved.add(&to),
        OpKind::Unreserve => ledger.reserved.subtract(&from),
        OpKind::Create => ledger.volumes.add(&to),
        OpKind::Destroy => ledger.volumes.subtract(&from),
    }
    Ok(Conversion { role, from, to })
}

/// The disk entries of `r`.
fn disk_of(r: &Resources) -> Resources {
    let mut out = Resources::new();
    for e in r.entries().iter().filter(|e| e.name == "disk") {
        out.add(&Resources::of_entry(e.clone()));
    }
    out
}

/// `none` for an empty bag.
fn shown(r: &Resources) -> String {
    if r.is_empty() {
        "none".into()
    } else {
        r.to_string()
    }
}

impl Master {
    /// One RESERVE / UNRESERVE / CREATE / DESTROY of an ACCEPT, applied to the pool of
    /// its role (`pools`: what is left of the offers, by role). `Err`: why it was
    /// skipped.
    pub(super) fn accept_resource_op(
        &mut self,
        fk: FrameworkKey,
        ak: AgentKey,
        pools: &mut [(String, Resources)],
        kind: OpKind,
        wire: &[v1::Resource],
    ) -> Result<(), String> {
        let Some(fw) = self.frameworks.get(&fk) else {
            return Err("the framework is gone".into());
        };
        let principal = fw.info.principal.clone();
        let authorizer = self.config.authorizer.clone();
        let offered: Vec<String> = pools.iter().map(|(r, _)| r.clone()).collect();
        let check = |role: &str, res: &Resources, ledger: &Checkpointed| {
            if !offered.iter().any(|r| r == role) {
                return Err(OpError::Invalid(format!(
                    "role '{role}' is not the role of the offers ({}): an operation acts in the role its offers were made to",
                    offered.join(", ")
                )));
            }
            authorize_op(&authorizer, &principal, kind, role, res, ledger)
        };
        let Some(agent) = self.agents.get(&ak) else {
            return Err("the agent is gone".into());
        };
        let mut ledger = agent.checkpointed.clone();
        // The role is checked first, so find its pool after parsing: try each pool
        // whose role the resources name.
        let role = wire
            .first()
            .map(|r| {
                if r.role.is_empty() {
                    "*".to_string()
                } else {
                    r.role.clone()
                }
            })
            .unwrap_or_default();
        let pool_index = pools.iter().position(|(r, _)| *r == role);
        let mut scratch = Resources::new();
        let pool = match pool_index {
            Some(i) => &mut pools[i].1,
            None => &mut scratch,
        };
        let conversion = apply_op(
            kind,
            wire,
            pool,
            &mut ledger,
            &principal,
            &check,
            "the offers",
        )
        .map_err(|e| e.to_string())?;
        self.allocator.convert_allocated(
            ak,
            fk,
            &conversion.role,
            &conversion.from,
            &conversion.to,
        );
        self.commit_ledger(ak, ledger, &conversion);
        Ok(())
    }

    /// An operator's RESERVE / UNRESERVE / CREATE / DESTROY on an agent's unused
    /// resources, asked of the ACLs for the role ([`authorize_op`]). Outstanding
    /// offers of the agent are rescinded first, so that what they held can be used.
    pub(super) fn operator_resource_op(
        &mut self,
        agent_id: &str,
        kind: OpKind,
        wire: &[v1::Resource],
        principal: &str,
        now: Instant,
    ) -> Result<(), CallError> {
        let key = self.resource_agent(agent_id)?;
        if kind == OpKind::Destroy {
            self.refuse_volumes_in_use(key, wire)?;
        }
        let Some(agent) = self.agents.get(&key) else {
            return Err(CallError::NotFound(format!("agent '{agent_id}' is gone")));
        };
        let offers: Vec<OfferSeq> = agent.offers.iter().copied().collect();
        let authorizer = self.config.authorizer.clone();
        let check = |role: &str, res: &Resources, ledger: &Checkpointed| {
            authorize_op(&authorizer, principal, kind, role, res, ledger)
        };
        let refused = |e: OpError| {
            let message = format!("{} on agent '{agent_id}' refused: {e}", kind.name());
            match e {
                OpError::Denied(_) => CallError::PermissionDenied(message),
                OpError::Invalid(_) => CallError::FailedPrecondition(message),
            }
        };
        // First on what is free or offered, changing nothing: a refused call leaves the
        // outstanding offers alone.
        let mut unused = self.allocator.available(key).unwrap_or_default();
        unused.add(&self.offered_sum(&agent.offers));
        apply_op(
            kind,
            wire,
            &mut unused,
            &mut agent.checkpointed.clone(),
            principal,
            &check,
            "the agent's unused resources",
        )
        .map_err(refused)?;
        for seq in offers {
            self.rescind_offer(seq, true, now);
        }
        let Some(agent) = self.agents.get(&key) else {
            return Err(CallError::NotFound(format!("agent '{agent_id}' is gone")));
        };
        let mut ledger = agent.checkpointed.clone();
        let mut free = self.allocator.available(key).unwrap_or_default();
        // Authorized above (and written to the audit log once).
        let allowed = |_: &str, _: &Resources, _: &Checkpointed| Ok(());
        let conversion = apply_op(
            kind,
            wire,
            &mut free,
            &mut ledger,
            principal,
            &allowed,
            "the agent's unused resources",
        )
        .map_err(refused)?;
        if !self
            .allocator
            .convert_available(key, &conversion.from, &conversion.to)
        {
            return Err(CallError::FailedPrecondition(format!(
                "{} on agent '{agent_id}' refused: '{}' is not free on the agent",
                kind.name(),
                conversion.from
            )));
        }
        tracing::info!(agent_id, operation = kind.name(), principal, from = %conversion.from,
            to = %conversion.to, "resource operation by an operator");
        self.commit_ledger(key, ledger, &conversion);
        self.pending_agents.insert(key);
        Ok(())
    }

    /// A DESTROY of a volume a task uses is refused, naming the task.
    fn refuse_volumes_in_use(&self, key: AgentKey, wire: &[v1::Resource]) -> Result<(), CallError> {
        let Ok(wanted) = Resources::try_from_proto(wire) else {
            return Ok(()); // apply_op says why
        };
        let Some(agent) = self.agents.get(&key) else {
            return Ok(());
        };
        for (fk, tid) in &agent.tasks {
            let Some(task) = self.frameworks.get(fk).and_then(|f| f.tasks.get(tid)) else {
                continue;
            };
            for v in wanted.volumes() {
                let id = v.persistence().map(|p| p.id.as_str()).unwrap_or_default();
                let used = task
                    .resources
                    .volumes()
                    .any(|t| t.role == v.role && t.persistence().is_some_and(|p| p.id == id));
                if used {
                    return Err(CallError::FailedPrecondition(format!(
                        "volume '{id}' of role '{}' on agent '{}' is in use by task '{tid}' of framework '{}': kill the task first",
                        v.role.as_deref().unwrap_or("*"),
                        agent.id,
                        task.framework_id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The agent an operator's resource operation names.
    fn resource_agent(&self, agent_id: &str) -> Result<AgentKey, CallError> {
        if agent_id.is_empty() {
            return Err(CallError::InvalidArgument("no agent_id given".into()));
        }
        let key = self.agent_ids.get(agent_id).copied().ok_or_else(|| {
            CallError::NotFound(format!(
                "agent '{agent_id}' is unknown to this master: see /state for its agents"
            ))
        })?;
        if !self.agents.get(&key).is_some_and(|a| a.is_connected()) {
            return Err(CallError::FailedPrecondition(format!(
                "agent '{agent_id}' is not connected: its resources change only while it is"
            )));
        }
        Ok(key)
    }

    /// Keeps the agent's new ledger: its total, the registry, the agent.
    fn commit_ledger(&mut self, key: AgentKey, ledger: Checkpointed, c: &Conversion) {
        let Some(agent) = self.agents.get_mut(&key) else {
            return;
        };
        agent.total.subtract(&c.from);
        agent.total.add(&c.to);
        agent.checkpointed = ledger;
        let volumes = &agent.checkpointed.volumes;
        agent.volume_usage.retain(|(role, id), _| {
            volumes.volumes().any(|v| {
                v.role.as_deref() == Some(role.as_str())
                    && v.persistence().is_some_and(|p| &p.id == id)
            })
        });
        let id = agent.id.clone();
        let bytes = agent.checkpointed.encode();
        self.emit(super::api::Effect::Persist(
            RegistryOp::CheckpointResources {
                id,
                resources: bytes,
            },
        ));
        self.send_checkpointed(key);
    }

    /// Sends the agent its whole ledger (after a change and after each registration).
    pub(super) fn send_checkpointed(&mut self, key: AgentKey) {
        let Some(agent) = self.agents.get(&key) else {
            return;
        };
        let message = agent.checkpointed.to_proto();
        self.message_to(
            key,
            v1::master_message::Message::CheckpointResources(message),
        );
    }

    /// The ledger of a registering agent and whether it is adopted: the master's
    /// when it knows the agent id, else the agent's own copy (adopted: to be
    /// persisted, so that the registry has it from then on; an invalid copy is
    /// ignored).
    pub(super) fn registering_ledger(
        &self,
        id: &str,
        reported: Option<&v1::CheckpointResources>,
    ) -> (Checkpointed, bool) {
        if let Some(agent) = self.agent_ids.get(id).and_then(|k| self.agents.get(k)) {
            return (agent.checkpointed.clone(), false);
        }
        let Some(reported) = reported else {
            return (Checkpointed::default(), false);
        };
        match Checkpointed::from_proto(reported) {
            Ok(ledger) => {
                let adopted = !ledger.is_empty();
                if adopted {
                    tracing::info!(agent_id = %id, reserved = %ledger.reserved,
                        volumes = %ledger.volumes, "adopting the agent's own reservations and volumes (this master's registry does not know the agent)");
                }
                (ledger, adopted)
            }
            Err(e) => {
                tracing::warn!(agent_id = %id, error = %e,
                    "the agent's checkpointed resources are invalid; ignored");
                (Checkpointed::default(), false)
            }
        }
    }
}
