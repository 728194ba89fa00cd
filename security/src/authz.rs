//! The one authorizer: Mesos' ACLs. Every decision that needs permission (a role to
//! register, a user to run as, an image, a host path, an operator action, what a caller
//! may see, an app to deploy) is one question, `(principal, action, object)`, asked of
//! one [`Authorizer`], on the master, the agents and the App API alike.
//!
//! ```json
//! {
//!   "permissive": false,
//!   "register_frameworks": [{"principals": {"values": ["web"]}, "roles": {"values": ["web"]}}],
//!   "run_tasks": [{"principals": {"type": "NONE"}, "users": {"values": ["root"]}},
//!                 {"principals": {"type": "ANY"}, "users": {"type": "ANY"}}],
//!   "update_weights": [{"principals": {"values": ["admin"]}, "roles": {"type": "ANY"}}]
//! }
//! ```
//!
//! Semantics are Mesos': the rules of an action are tried in order and the first whose
//! principal and object both *match* decides: allowed unless either entity is `NONE`.
//! When no rule matches, `permissive` decides (Mesos' default is `true`; Strata's
//! secure default is `false`, see [`Acls::secure_default`]). An entity is
//! `{"values": [...]}`, `{"type": "ANY"}` or `{"type": "NONE"}`; a value ending in `*`
//! (other than `*` alone, the default role) matches every name that starts with what
//! comes before it, and a host path value matches the paths below it too. A caller
//! without a principal (`--insecure`, public endpoints) matches only `ANY` and `NONE`
//! and is allowed only by `ANY`, as in Mesos. Besides the rules, a principal may
//! always see, tear down and read the sandboxes of its own frameworks, and (applied
//! by the master, not here) use, view, update and remove the secrets and configs it
//! created.
//!
//! Refusals, and every operator action allowed, are written to the audit log (target
//! `strata::audit`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::SecurityError;
use crate::authn::{audit_allowed, audit_refused};
use crate::principal::Principal;

/// What a principal asks to do. The names are the keys of the ACL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Subscribe a framework in a role (object: the role).
    RegisterFrameworks,
    /// Launch a task as a user (object: the task's user, else the framework's).
    RunTasks,
    /// Launch a Docker task from an image (object: the image as written).
    UseImages,
    /// Mount a host path into a Docker task (object: the path).
    UseHostVolumes,
    /// Mount a Docker named volume into a Docker task, creating it on first use
    /// (object: the volume's name).
    UseDockerVolumes,
    /// Reserve resources for a role (object: the role).
    ReserveResources,
    /// Release a reservation of a role (object: the role).
    UnreserveResources,
    /// Create persistent volumes from a role's reserved disk (object: the role).
    CreateVolumes,
    /// Destroy persistent volumes of a role, with their data (object: the role).
    DestroyVolumes,
    /// Tear down a framework (object: the framework's principal).
    TeardownFrameworks,
    /// Set a role's weight (object: the role).
    UpdateWeights,
    /// Stop offering an agent's resources (object: the agent id).
    DeactivateAgents,
    /// Offer a deactivated or drained agent's resources again (object: the agent id).
    ReactivateAgents,
    /// Kill every task of an agent (object: the agent id).
    DrainAgents,
    /// Mark an agent gone for good (object: the agent id).
    MarkAgentsGone,
    /// See a framework in `/state` and the operator API (object: its principal).
    ViewFrameworks,
    /// See a framework's tasks (object: the framework's principal).
    ViewTasks,
    /// Read a task's sandbox through an agent's file API (object: the task's
    /// framework's principal).
    AccessSandboxes,
    /// See an app in the App API (object: the app id).
    ViewApps,
    /// Deploy, scale, restart, roll back or remove an app (object: the app id).
    ManageApps,
    /// Reload credentials and ACLs through the operator API (object: `acls` or
    /// `credentials`).
    ReloadSecurity,
    /// Reference a secret in a task (object: the secret's name).
    UseSecrets,
    /// See a secret's name, versions and size in listings (object: the secret's name).
    ViewSecrets,
    /// Create, update or remove a secret (object: the secret's name).
    ManageSecrets,
    /// Create, update or remove a config (object: the config's name). Configs are
    /// readable and usable by any authenticated principal.
    ManageConfigs,
}

impl Action {
    /// Every action, in the order the ACL file documents them.
    pub const ALL: [Action; 25] = [
        Action::RegisterFrameworks,
        Action::RunTasks,
        Action::UseImages,
        Action::UseHostVolumes,
        Action::UseDockerVolumes,
        Action::ReserveResources,
        Action::UnreserveResources,
        Action::CreateVolumes,
        Action::DestroyVolumes,
        Action::TeardownFrameworks,
        Action::UpdateWeights,
        Action::DeactivateAgents,
        Action::ReactivateAgents,
        Action::DrainAgents,
        Action::MarkAgentsGone,
        Action::ViewFrameworks,
        Action::ViewTasks,
        Action::AccessSandboxes,
        Action::ViewApps,
        Action::ManageApps,
        Action::ReloadSecurity,
        Action::UseSecrets,
        Action::ViewSecrets,
        Action::ManageSecrets,
        Action::ManageConfigs,
    ];

    /// The action's key in the ACL file.
    pub fn key(self) -> &'static str {
        match self {
            Action::RegisterFrameworks => "register_frameworks",
            Action::RunTasks => "run_tasks",
            Action::UseImages => "use_images",
            Action::UseHostVolumes => "use_host_volumes",
            Action::UseDockerVolumes => "use_docker_volumes",
            Action::ReserveResources => "reserve_resources",
            Action::UnreserveResources => "unreserve_resources",
            Action::CreateVolumes => "create_volumes",
            Action::DestroyVolumes => "destroy_volumes",
            Action::TeardownFrameworks => "teardown_frameworks",
            Action::UpdateWeights => "update_weights",
            Action::DeactivateAgents => "deactivate_agents",
            Action::ReactivateAgents => "reactivate_agents",
            Action::DrainAgents => "drain_agents",
            Action::MarkAgentsGone => "mark_agents_gone",
            Action::ViewFrameworks => "view_frameworks",
            Action::ViewTasks => "view_tasks",
            Action::AccessSandboxes => "access_sandboxes",
            Action::ViewApps => "view_apps",
            Action::ManageApps => "manage_apps",
            Action::ReloadSecurity => "reload_security",
            Action::UseSecrets => "use_secrets",
            Action::ViewSecrets => "view_secrets",
            Action::ManageSecrets => "manage_secrets",
            Action::ManageConfigs => "manage_configs",
        }
    }

    /// The key of a rule's object entity for this action.
    pub fn object_key(self) -> &'static str {
        match self {
            Action::RegisterFrameworks
            | Action::ReserveResources
            | Action::UnreserveResources
            | Action::CreateVolumes
            | Action::DestroyVolumes
            | Action::UpdateWeights => "roles",
            Action::RunTasks => "users",
            Action::UseImages => "images",
            Action::UseHostVolumes => "paths",
            Action::UseDockerVolumes => "volumes",
            Action::TeardownFrameworks
            | Action::ViewFrameworks
            | Action::ViewTasks
            | Action::AccessSandboxes => "framework_principals",
            Action::DeactivateAgents
            | Action::ReactivateAgents
            | Action::DrainAgents
            | Action::MarkAgentsGone => "agents",
            Action::ViewApps | Action::ManageApps => "apps",
            Action::ReloadSecurity => "files",
            Action::UseSecrets | Action::ViewSecrets | Action::ManageSecrets => "secrets",
            Action::ManageConfigs => "configs",
        }
    }

    /// Actions on a framework's belongings that its own principal may always take.
    pub fn owned(self) -> bool {
        matches!(
            self,
            Action::TeardownFrameworks
                | Action::ViewFrameworks
                | Action::ViewTasks
                | Action::AccessSandboxes
        )
    }

    /// Operator actions: allowed ones are written to the audit log too.
    pub fn is_operator(self) -> bool {
        matches!(
            self,
            Action::TeardownFrameworks
                | Action::UpdateWeights
                | Action::DeactivateAgents
                | Action::ReactivateAgents
                | Action::DrainAgents
                | Action::MarkAgentsGone
                | Action::ManageApps
                | Action::ReloadSecurity
                | Action::ReserveResources
                | Action::UnreserveResources
                | Action::CreateVolumes
                | Action::DestroyVolumes
                | Action::ManageSecrets
                | Action::ManageConfigs
        )
    }

    /// What the action does to `object`, for messages ("run tasks as user 'root'").
    pub fn describe(self, object: &str) -> String {
        match self {
            Action::RegisterFrameworks => format!("register a framework in role '{object}'"),
            Action::RunTasks => format!("run tasks as user '{object}'"),
            Action::UseImages => format!("run the image '{object}'"),
            Action::UseHostVolumes => format!("mount the host path '{object}'"),
            Action::UseDockerVolumes => format!("use the Docker volume '{object}'"),
            Action::ReserveResources => format!("reserve resources for role '{object}'"),
            Action::UnreserveResources => format!("unreserve resources of role '{object}'"),
            Action::CreateVolumes => format!("create volumes for role '{object}'"),
            Action::DestroyVolumes => format!("destroy volumes of role '{object}'"),
            Action::TeardownFrameworks => format!("tear down frameworks of '{object}'"),
            Action::UpdateWeights => format!("update the weight of role '{object}'"),
            Action::DeactivateAgents => format!("deactivate agent '{object}'"),
            Action::ReactivateAgents => format!("reactivate agent '{object}'"),
            Action::DrainAgents => format!("drain agent '{object}'"),
            Action::MarkAgentsGone => format!("mark agent '{object}' gone"),
            Action::ViewFrameworks => format!("view frameworks of '{object}'"),
            Action::ViewTasks => format!("view tasks of frameworks of '{object}'"),
            Action::AccessSandboxes => {
                format!("read sandboxes of tasks of frameworks of '{object}'")
            }
            Action::ViewApps => format!("view app '{object}'"),
            Action::ManageApps => format!("change app '{object}'"),
            Action::ReloadSecurity => format!("reload the {object}"),
            Action::UseSecrets => format!("use secret '{object}'"),
            Action::ViewSecrets => format!("view secret '{object}'"),
            Action::ManageSecrets => format!("change secret '{object}'"),
            Action::ManageConfigs => format!("change config '{object}'"),
        }
    }

    fn from_key(key: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.key() == key)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// A rule's subject or object: some names, anyone, or no one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    Any,
    None,
    Values(Vec<String>),
}

impl Entity {
    fn parse(value: &Value, what: &str) -> Result<Entity, String> {
        let Some(map) = value.as_object() else {
            return Err(format!(
                "{what} must be an object: {{\"values\": [...]}}, {{\"type\": \"ANY\"}} or {{\"type\": \"NONE\"}}"
            ));
        };
        if let Some(unknown) = map.keys().find(|k| *k != "values" && *k != "type") {
            return Err(format!(
                "{what} has an unknown key '{unknown}' (expected 'values' or 'type')"
            ));
        }
        match (map.get("type").map(|t| t.as_str()), map.get("values")) {
            (Some(Some("ANY")), None) => Ok(Entity::Any),
            (Some(Some("NONE")), None) => Ok(Entity::None),
            (None | Some(Some("SOME")), Some(Value::Array(values))) => {
                let mut out = Vec::with_capacity(values.len());
                for v in values {
                    match v.as_str() {
                        Some(s) if !s.is_empty() => out.push(s.to_string()),
                        _ => {
                            return Err(format!(
                                "{what}.values must hold non-empty strings, found {v}"
                            ));
                        }
                    }
                }
                if out.is_empty() {
                    return Err(format!(
                        "{what}.values is empty: use {{\"type\": \"NONE\"}} for no one"
                    ));
                }
                Ok(Entity::Values(out))
            }
            (Some(t), Some(_)) if t != Some("SOME") => Err(format!(
                "{what} has both 'type' and 'values': give one of them"
            )),
            _ => Err(format!(
                "{what} must be {{\"values\": [...]}}, {{\"type\": \"ANY\"}} or {{\"type\": \"NONE\"}}"
            )),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Entity::Any => serde_json::json!({"type": "ANY"}),
            Entity::None => serde_json::json!({"type": "NONE"}),
            Entity::Values(v) => serde_json::json!({ "values": v }),
        }
    }

    /// Whether the rule entity matches a named request entity (`None`: anonymous).
    fn matches(&self, name: Option<&str>, paths: bool) -> bool {
        match (self, name) {
            (Entity::Any | Entity::None, _) => true,
            (Entity::Values(_), None) => false,
            (Entity::Values(values), Some(name)) => {
                values.iter().any(|v| value_matches(v, name, paths))
            }
        }
    }

    /// Whether a matching rule entity allows the request entity.
    fn allows(&self, name: Option<&str>) -> bool {
        match (self, name) {
            (Entity::Any, _) => true,
            (Entity::None, _) => false,
            (Entity::Values(_), named) => named.is_some(),
        }
    }
}

/// `value` names `name`: equal, a `prefix*` pattern, or (for host paths) a directory
/// above it.
fn value_matches(value: &str, name: &str, paths: bool) -> bool {
    if value == name {
        return true;
    }
    if let Some(prefix) = value.strip_suffix('*')
        && !prefix.is_empty()
        && name.starts_with(prefix)
    {
        return true;
    }
    if paths {
        let dir = value.trim_end_matches('/');
        return dir.is_empty()
            || name
                .strip_prefix(dir)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'));
    }
    false
}

/// One rule: who (`principals`) may or may not do an action to what (the object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub principals: Entity,
    pub objects: Entity,
}

/// A set of ACLs: the rules of each action and what happens when none matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acls {
    pub permissive: bool,
    rules: HashMap<Action, Vec<Rule>>,
}

/// The principal the defaults give every operator action.
const OPERATOR: &str = crate::credentials::ADMIN;

impl Acls {
    /// Reads ACLs in the format of the module's example. Unknown actions and keys are
    /// errors (a misspelt action would otherwise be silently permissive).
    pub fn parse(json: &str) -> Result<Acls, String> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("the ACLs must be a JSON object".into());
        };
        Acls::from_map(&map)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Acls, String> {
        let mut acls = Acls {
            permissive: true,
            rules: HashMap::new(),
        };
        for (key, value) in map {
            if key == "permissive" {
                acls.permissive = value
                    .as_bool()
                    .ok_or_else(|| format!("'permissive' must be true or false, got {value}"))?;
                continue;
            }
            let Some(action) = Action::from_key(key) else {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.key()).collect();
                return Err(format!(
                    "unknown action '{key}' (known: permissive, {})",
                    known.join(", ")
                ));
            };
            let Some(list) = value.as_array() else {
                return Err(format!("'{key}' must be a list of rules"));
            };
            let mut rules = Vec::with_capacity(list.len());
            for (i, rule) in list.iter().enumerate() {
                let what = format!("{key}[{i}]");
                let Some(rule) = rule.as_object() else {
                    return Err(format!("{what} must be an object"));
                };
                let object_key = action.object_key();
                if let Some(unknown) = rule.keys().find(|k| *k != "principals" && *k != object_key)
                {
                    return Err(format!(
                        "{what} has an unknown key '{unknown}' (a {key} rule has 'principals' and '{object_key}')"
                    ));
                }
                let principals = match rule.get("principals") {
                    Some(v) => Entity::parse(v, &format!("{what}.principals"))?,
                    None => return Err(format!("{what} has no 'principals'")),
                };
                let objects = match rule.get(object_key) {
                    Some(v) => Entity::parse(v, &format!("{what}.{object_key}"))?,
                    None if action == Action::ReloadSecurity => Entity::Any,
                    None => return Err(format!("{what} has no '{object_key}'")),
                };
                rules.push(Rule {
                    principals,
                    objects,
                });
            }
            acls.rules.insert(action, rules);
        }
        Ok(acls)
    }

    /// Reads an ACL file.
    pub fn load(path: &Path) -> Result<Acls, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Io {
            action: "read the ACL file",
            path: path.display().to_string(),
            source,
        })?;
        Acls::parse(&text).map_err(|reason| SecurityError::Acls {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Allows everything (Mesos without ACLs) but running as root.
    pub fn insecure_default() -> Acls {
        let mut acls = Acls {
            permissive: true,
            rules: HashMap::new(),
        };
        acls.rules.insert(Action::RunTasks, vec![no_root()]);
        acls
    }

    /// What a secure master, agent and App API apply without `--acls`: any principal
    /// may register any role, run tasks as any user but root, use any image, host
    /// path (the agents' `--docker-volume-allow` still applies) and Docker named
    /// volume, see and tear down its
    /// own frameworks and use the App API; the operator principal `admin` may do
    /// everything else, secrets and configs included (their owners' rights are the
    /// master's, not the ACLs'). Anything not named is refused.
    pub fn secure_default() -> Acls {
        let anyone = |objects| Rule {
            principals: Entity::Any,
            objects,
        };
        let operator = || Rule {
            principals: Entity::Values(vec![OPERATOR.to_string()]),
            objects: Entity::Any,
        };
        let mut rules = HashMap::new();
        for action in Action::ALL {
            let list = match action {
                Action::RunTasks => vec![no_root(), anyone(Entity::Any)],
                Action::RegisterFrameworks
                | Action::UseImages
                | Action::UseHostVolumes
                | Action::UseDockerVolumes
                | Action::ReserveResources
                | Action::UnreserveResources
                | Action::CreateVolumes
                | Action::ViewApps
                | Action::ManageApps => vec![anyone(Entity::Any)],
                // A volume's creator may destroy it whatever the ACLs say (the
                // master's owner rule); anyone else's data is admin's to destroy.
                Action::DestroyVolumes
                | Action::TeardownFrameworks
                | Action::UpdateWeights
                | Action::DeactivateAgents
                | Action::ReactivateAgents
                | Action::DrainAgents
                | Action::MarkAgentsGone
                | Action::ViewFrameworks
                | Action::ViewTasks
                | Action::AccessSandboxes
                | Action::ReloadSecurity
                | Action::UseSecrets
                | Action::ViewSecrets
                | Action::ManageSecrets
                | Action::ManageConfigs => vec![operator()],
            };
            rules.insert(action, list);
        }
        Acls {
            permissive: false,
            rules,
        }
    }

    /// The rules of `action`, in order.
    pub fn rules(&self, action: Action) -> &[Rule] {
        self.rules.get(&action).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The ACLs as the file format writes them (for `GET /acls`).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("permissive".into(), Value::Bool(self.permissive));
        for action in Action::ALL {
            if let Some(rules) = self.rules.get(&action) {
                let list = rules
                    .iter()
                    .map(|r| {
                        let mut m = Map::new();
                        m.insert("principals".into(), r.principals.to_json());
                        m.insert(action.object_key().into(), r.objects.to_json());
                        Value::Object(m)
                    })
                    .collect();
                map.insert(action.key().into(), Value::Array(list));
            }
        }
        Value::Object(map)
    }

    /// Whether `principal` may do `action` to `object`, and why not.
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        object: &str,
    ) -> Result<(), String> {
        let name = (!principal.is_anonymous()).then(|| principal.name());
        if action.owned() && name.as_deref() == Some(object) {
            return Ok(());
        }
        let paths = action == Action::UseHostVolumes;
        for (i, rule) in self.rules(action).iter().enumerate() {
            if rule.principals.matches(name.as_deref(), false)
                && rule.objects.matches(Some(object), paths)
            {
                if rule.principals.allows(name.as_deref()) && rule.objects.allows(Some(object)) {
                    return Ok(());
                }
                return Err(format!("rule {}[{i}] refuses it", action.key()));
            }
        }
        if self.permissive {
            Ok(())
        } else {
            Err(format!(
                "no rule of {} allows it and the ACLs are not permissive",
                action.key()
            ))
        }
    }
}

/// Who the ACLs let do an action to one object (see [`Acls::who_may`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhoMay {
    /// The principals allowed by name, in rule order, without duplicates. A value of a
    /// rule is copied as written, so a `prefix*` pattern stands for every principal
    /// starting with the prefix.
    pub principals: Vec<String>,
    /// Every principal not refused by a rule is allowed too (an `ANY` rule, or the ACLs
    /// are permissive and no rule decided), but those in `except`.
    pub anyone: bool,
    /// When `anyone`: the principals (or `prefix*` patterns) a rule refused by name
    /// (a `NONE` object) before. Empty otherwise.
    pub except: Vec<String>,
}

impl WhoMay {
    /// Whether the named principal is allowed: listed (or matched by a listed
    /// pattern), or anyone is and it is not excepted. A pattern allowed after a
    /// narrower refusal (`team-a` refused, then `team-*` allowed) counts as allowed
    /// whole: `principals` lists it as written.
    pub fn includes(&self, principal: &str) -> bool {
        let named = |list: &[String]| list.iter().any(|p| value_matches(p, principal, false));
        named(&self.principals) || (self.anyone && !named(&self.except))
    }
}

impl Acls {
    /// Who may do `action` to `object`, by the same first-match semantics as
    /// [`Acls::decide`]: the rules whose object matches `object` are walked in order.
    /// A rule naming principals decides for each of them not decided yet: allowed, or
    /// refused when its object is `NONE`. An `ANY` rule allows (or, with a `NONE`
    /// object, refuses) everyone not decided yet and a `NONE` principals rule refuses
    /// them; either ends the walk. Those no rule decided are allowed when the ACLs are
    /// permissive. Owners' rights applied by the caller (a secret's creator) are not
    /// included; a framework principal's own objects (see [`Action::owned`]) are. A
    /// caller without a principal is covered by `anyone` only.
    pub fn who_may(&self, action: Action, object: &str) -> WhoMay {
        let mut allowed: Vec<String> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        if action.owned() && !object.is_empty() {
            allowed.push(object.to_string());
        }
        let decided = |allowed: &[String], refused: &[String], v: &str| {
            allowed
                .iter()
                .chain(refused)
                .any(|d| value_matches(d, v, false))
        };
        let paths = action == Action::UseHostVolumes;
        let mut anyone = self.permissive;
        for rule in self.rules(action) {
            if !rule.objects.matches(Some(object), paths) {
                continue;
            }
            let object_allows = rule.objects.allows(Some(object));
            match &rule.principals {
                Entity::Values(values) => {
                    for v in values {
                        if !decided(&allowed, &refused, v) {
                            if object_allows {
                                allowed.push(v.clone());
                            } else {
                                refused.push(v.clone());
                            }
                        }
                    }
                }
                Entity::Any => {
                    anyone = object_allows;
                    break;
                }
                Entity::None => {
                    anyone = false;
                    break;
                }
            }
        }
        WhoMay {
            principals: allowed,
            anyone,
            except: if anyone { refused } else { Vec::new() },
        }
    }
}

fn no_root() -> Rule {
    Rule {
        principals: Entity::None,
        objects: Entity::Values(vec!["root".into()]),
    }
}

/// A refused authorization: what the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} is not authorized to {what}: {reason}")]
pub struct Denied {
    pub principal: String,
    pub action: Action,
    pub object: String,
    pub what: String,
    pub reason: String,
}

/// The one authorizer. Cheap to clone; clones share the ACLs, so a reload applies to
/// every caller at once.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    acls: RwLock<Arc<Acls>>,
    /// The file the ACLs come from; `None`: built-in defaults.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(acls: Acls) -> Authorizer {
        Authorizer::with_source(acls, None)
    }

    fn with_source(acls: Acls, path: Option<PathBuf>) -> Authorizer {
        Authorizer {
            inner: Arc::new(Inner {
                acls: RwLock::new(Arc::new(acls)),
                path,
            }),
        }
    }

    /// [`Acls::insecure_default`]: everything but root.
    pub fn insecure() -> Authorizer {
        Authorizer::new(Acls::insecure_default())
    }

    /// The ACLs of `path` when given, else `default`.
    pub fn load(path: Option<&Path>, default: Acls) -> Result<Authorizer, SecurityError> {
        match path {
            Some(p) => Ok(Authorizer::with_source(
                Acls::load(p)?,
                Some(p.to_path_buf()),
            )),
            None => Ok(Authorizer::new(default)),
        }
    }

    /// The file the ACLs were read from.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The ACLs in force.
    pub fn acls(&self) -> Arc<Acls> {
        self.inner
            .acls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the ACLs; decisions already taken stand.
    pub fn set(&self, acls: Acls) {
        *self.inner.acls.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acls);
    }

    /// Reads the ACL file again. An unreadable or invalid file changes nothing and is
    /// the error. Without a file there is nothing to reload (`Ok(false)`).
    pub fn reload(&self) -> Result<bool, SecurityError> {
        let Some(path) = &self.inner.path else {
            return Ok(false);
        };
        let acls = Acls::load(path)?;
        self.set(acls);
        tracing::info!(target: "strata::audit", path = %path.display(), "ACLs reloaded");
        Ok(true)
    }

    /// Who the ACLs in force let do `action` to `object` ([`Acls::who_may`]).
    pub fn who_may(&self, action: Action, object: &str) -> WhoMay {
        self.acls().who_may(action, object)
    }

    /// Whether `principal` may do `action` to `object`, without writing to the audit
    /// log (for filtering what a caller sees).
    pub fn permits(&self, principal: &Principal, action: Action, object: &str) -> bool {
        self.acls().decide(principal, action, object).is_ok()
    }

    /// Whether `principal` may do `action` to `object`. A refusal is written to the
    /// audit log, and so is an allowed operator action.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        object: &str,
    ) -> Result<(), Denied> {
        match self.acls().decide(principal, action, object) {
            Ok(()) => {
                if action.is_operator() {
                    audit_allowed(principal, action.key(), object);
                }
                Ok(())
            }
            Err(reason) => {
                let denied = Denied {
                    principal: principal.to_string(),
                    action,
                    object: object.to_string(),
                    what: action.describe(object),
                    reason,
                };
                audit_refused(principal, action.key(), object, &denied.reason);
                Err(denied)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::User(name.into())
    }

    #[test]
    fn first_matching_rule_decides_and_none_refuses() {
        let acls = Acls::parse(
            r#"{"permissive": true,
                "run_tasks": [
                  {"principals": {"values": ["ops"]}, "users": {"values": ["root"]}},
                  {"principals": {"type": "NONE"}, "users": {"values": ["root"]}}
                ]}"#,
        )
        .unwrap();
        assert!(acls.decide(&user("ops"), Action::RunTasks, "root").is_ok());
        let e = acls
            .decide(&user("web"), Action::RunTasks, "root")
            .unwrap_err();
        assert!(e.contains("run_tasks[1]"), "{e}");
        assert!(
            acls.decide(&Principal::Anonymous, Action::RunTasks, "root")
                .is_err()
        );
        // permissive: nothing matched
        assert!(
            acls.decide(&user("web"), Action::RunTasks, "nobody")
                .is_ok()
        );
        assert!(
            acls.decide(&user("web"), Action::UpdateWeights, "x")
                .is_ok()
        );
    }

    #[test]
    fn anonymous_matches_only_any_and_none() {
        let acls = Acls::parse(
            r#"{"permissive": false,
                "update_weights": [{"principals": {"values": ["admin"]}, "roles": {"type": "ANY"}}],
                "view_apps": [{"principals": {"type": "ANY"}, "apps": {"type": "ANY"}}]}"#,
        )
        .unwrap();
        assert!(
            acls.decide(&Principal::Anonymous, Action::UpdateWeights, "r")
                .is_err()
        );
        assert!(
            acls.decide(&user("admin"), Action::UpdateWeights, "r")
                .is_ok()
        );
        assert!(
            acls.decide(&Principal::Anonymous, Action::ViewApps, "a")
                .is_ok()
        );
    }

    #[test]
    fn patterns_and_paths() {
        let acls = Acls::parse(
            r#"{"permissive": false,
                "use_images": [{"principals": {"type": "ANY"}, "images": {"values": ["registry.local/*"]}}],
                "use_host_volumes": [{"principals": {"type": "ANY"}, "paths": {"values": ["/data/"]}}],
                "use_docker_volumes": [{"principals": {"values": ["web"]}, "volumes": {"values": ["web-*"]}}],
                "register_frameworks": [{"principals": {"type": "ANY"}, "roles": {"values": ["*"]}}]}"#,
        )
        .unwrap();
        let p = user("web");
        assert!(
            acls.decide(&p, Action::UseImages, "registry.local/web:1")
                .is_ok()
        );
        assert!(acls.decide(&p, Action::UseImages, "evil/web").is_err());
        assert!(acls.decide(&p, Action::UseHostVolumes, "/data").is_ok());
        assert!(acls.decide(&p, Action::UseHostVolumes, "/data/x/y").is_ok());
        assert!(
            acls.decide(&p, Action::UseHostVolumes, "/database")
                .is_err()
        );
        assert!(acls.decide(&p, Action::RegisterFrameworks, "*").is_ok());
        assert!(acls.decide(&p, Action::RegisterFrameworks, "web").is_err());
        // Docker volume names are names, not paths: a prefix pattern, no directories.
        assert!(
            acls.decide(&p, Action::UseDockerVolumes, "web-cache")
                .is_ok()
        );
        assert!(acls.decide(&p, Action::UseDockerVolumes, "db").is_err());
        assert!(
            acls.decide(&user("db"), Action::UseDockerVolumes, "web-cache")
                .is_err()
        );
        // The built-in ACLs let anyone use any named volume, as any host path.
        assert!(
            Acls::secure_default()
                .decide(&Principal::Anonymous, Action::UseDockerVolumes, "pgdata")
                .is_ok()
        );
    }

    #[test]
    fn owners_see_their_own_frameworks() {
        let acls = Acls::secure_default();
        assert!(acls.decide(&user("web"), Action::ViewTasks, "web").is_ok());
        assert!(acls.decide(&user("web"), Action::ViewTasks, "db").is_err());
        assert!(acls.decide(&user("admin"), Action::ViewTasks, "db").is_ok());
        assert!(
            acls.decide(&user("web"), Action::AccessSandboxes, "web")
                .is_ok()
        );
        assert!(
            acls.decide(&Principal::Anonymous, Action::ViewTasks, "")
                .is_err()
        );
        assert!(acls.decide(&user("web"), Action::RunTasks, "root").is_err());
        assert!(
            acls.decide(&user("admin"), Action::RunTasks, "root")
                .is_err()
        );
        assert!(
            acls.decide(&user("web"), Action::RunTasks, "nobody")
                .is_ok()
        );
        assert!(
            acls.decide(&user("web"), Action::MarkAgentsGone, "a")
                .is_err()
        );
        assert!(
            acls.decide(&user("admin"), Action::MarkAgentsGone, "a")
                .is_ok()
        );
    }

    #[test]
    fn insecure_default_refuses_only_root() {
        let acls = Acls::insecure_default();
        let anon = Principal::Anonymous;
        assert!(acls.decide(&anon, Action::MarkAgentsGone, "a").is_ok());
        assert!(acls.decide(&anon, Action::RunTasks, "nobody").is_ok());
        assert!(acls.decide(&anon, Action::RunTasks, "root").is_err());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[]", "JSON object"),
            (r#"{"run_task": []}"#, "unknown action 'run_task'"),
            (r#"{"permissive": "yes"}"#, "'permissive' must be"),
            (r#"{"run_tasks": {}}"#, "list of rules"),
            (
                r#"{"run_tasks": [{"principals": {"type": "ANY"}, "roles": {"type": "ANY"}}]}"#,
                "unknown key 'roles'",
            ),
            (
                r#"{"run_tasks": [{"principals": {"type": "ANY"}}]}"#,
                "has no 'users'",
            ),
            (
                r#"{"run_tasks": [{"principals": {"type": "ALL"}, "users": {"type": "ANY"}}]}"#,
                "run_tasks[0].principals must be",
            ),
            (
                r#"{"run_tasks": [{"principals": {"values": []}, "users": {"type": "ANY"}}]}"#,
                "is empty",
            ),
            (
                r#"{"run_tasks": [{"principals": {"values": [""]}, "users": {"type": "ANY"}}]}"#,
                "non-empty strings",
            ),
        ];
        for (json, want) in cases {
            let e = Acls::parse(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn who_may_follows_first_match() {
        let acls = Acls::parse(
            r#"{"permissive": false,
                "use_secrets": [
                  {"principals": {"values": ["web", "ops"]}, "secrets": {"values": ["web-*"]}},
                  {"principals": {"values": ["ops", "team-*"]}, "secrets": {"values": ["db-pass"]}},
                  {"principals": {"type": "NONE"}, "secrets": {"values": ["root-*"]}},
                  {"principals": {"type": "ANY"}, "secrets": {"values": ["public"]}},
                  {"principals": {"values": ["late"]}, "secrets": {"type": "ANY"}}
                ]}"#,
        )
        .unwrap();
        let who = acls.who_may(Action::UseSecrets, "web-tls");
        assert_eq!(who.principals, ["web", "ops", "late"]);
        assert!(!who.anyone);
        assert!(who.includes("web") && !who.includes("db"));

        let who = acls.who_may(Action::UseSecrets, "db-pass");
        assert_eq!(who.principals, ["ops", "team-*", "late"]);
        assert!(!who.anyone);
        assert!(who.includes("team-a") && !who.includes("web"));

        let who = acls.who_may(Action::UseSecrets, "root-key");
        assert_eq!(who, WhoMay::default());

        let who = acls.who_may(Action::UseSecrets, "public");
        assert!(who.anyone && who.principals.is_empty());

        let who = acls.who_may(Action::UseSecrets, "other");
        assert_eq!(who.principals, ["late"]);
        assert!(!who.anyone);

        // It agrees with decide.
        for object in ["web-tls", "db-pass", "root-key", "public", "other"] {
            let who = acls.who_may(Action::UseSecrets, object);
            for p in ["web", "ops", "team-a", "late", "eve"] {
                assert_eq!(
                    who.includes(p),
                    acls.decide(&user(p), Action::UseSecrets, object).is_ok(),
                    "{p} on {object}"
                );
            }
        }
    }

    #[test]
    fn who_may_permissive_and_none_objects() {
        let acls = Acls::parse(
            r#"{"permissive": true,
                "view_secrets": [
                  {"principals": {"values": ["ops"]}, "secrets": {"values": ["a*"]}},
                  {"principals": {"values": ["web", "team-*"]}, "secrets": {"type": "NONE"}},
                  {"principals": {"values": ["web", "team-a", "db"]}, "secrets": {"type": "ANY"}}
                ]}"#,
        )
        .unwrap();
        let who = acls.who_may(Action::ViewSecrets, "abc");
        assert_eq!(who.principals, ["ops", "db"]);
        assert!(who.anyone);
        assert_eq!(who.except, ["web", "team-*"]);
        for object in ["abc", "b"] {
            let who = acls.who_may(Action::ViewSecrets, object);
            for p in ["ops", "web", "team-a", "db", "eve"] {
                assert_eq!(
                    who.includes(p),
                    acls.decide(&user(p), Action::ViewSecrets, object).is_ok(),
                    "{p} on {object}"
                );
            }
        }
        // No rule for manage_configs: permissive.
        let who = acls.who_may(Action::ManageConfigs, "c");
        assert!(who.anyone && who.principals.is_empty() && who.except.is_empty());
        assert!(
            Acls::insecure_default()
                .who_may(Action::UseSecrets, "s")
                .anyone
        );
        // An ANY rule with a NONE object refuses everyone left.
        let acls = Acls::parse(
            r#"{"permissive": true,
                "use_secrets": [
                  {"principals": {"values": ["ops"]}, "secrets": {"type": "ANY"}},
                  {"principals": {"type": "ANY"}, "secrets": {"type": "NONE"}}
                ]}"#,
        )
        .unwrap();
        let who = acls.who_may(Action::UseSecrets, "x");
        assert_eq!(who.principals, ["ops"]);
        assert!(!who.anyone && who.except.is_empty());
    }

    #[test]
    fn secrets_and_configs_are_the_operators_by_default() {
        let acls = Acls::secure_default();
        for action in [
            Action::UseSecrets,
            Action::ViewSecrets,
            Action::ManageSecrets,
            Action::ManageConfigs,
        ] {
            let who = acls.who_may(action, "db-pass");
            assert_eq!(who.principals, ["admin"], "{action}");
            assert!(!who.anyone);
            assert!(acls.decide(&user("admin"), action, "db-pass").is_ok());
            assert!(acls.decide(&user("web"), action, "db-pass").is_err());
        }
        assert_eq!(Action::UseSecrets.object_key(), "secrets");
        assert_eq!(Action::ManageConfigs.object_key(), "configs");
        let authz = Authorizer::new(acls);
        assert_eq!(
            authz.who_may(Action::ViewTasks, "web").principals,
            ["web", "admin"]
        );
    }

    #[test]
    fn round_trips_through_json() {
        let acls = Acls::secure_default();
        let again = Acls::parse(&acls.to_json().to_string()).unwrap();
        assert_eq!(acls, again);
    }

    #[test]
    fn reload_keeps_the_old_acls_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acls.json");
        std::fs::write(&path, r#"{"permissive": false}"#).unwrap();
        let authz = Authorizer::load(Some(&path), Acls::secure_default()).unwrap();
        let web = user("web");
        assert!(authz.authorize(&web, Action::ViewApps, "a").is_err());
        std::fs::write(&path, r#"{"permissive": true}"#).unwrap();
        assert!(authz.reload().unwrap());
        assert!(authz.authorize(&web, Action::ViewApps, "a").is_ok());
        std::fs::write(&path, r#"{"permissive": tru"#).unwrap();
        let e = authz.reload().unwrap_err().to_string();
        assert!(e.contains("acls.json"), "{e}");
        assert!(authz.permits(&web, Action::ViewApps, "a"));
        let denied = Authorizer::new(Acls::secure_default())
            .authorize(&web, Action::RunTasks, "root")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "web is not authorized to run tasks as user 'root': rule run_tasks[0] refuses it"
        );
    }
}
