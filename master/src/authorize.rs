//! What the master's operator API (HTTP and gRPC alike) asks the one authorizer: may
//! this principal make this operator call, and which frameworks and tasks may it see.
//! The scheduler API's questions (roles, users, images, host paths) are the core's
//! ([`crate::core`] holds the same [`Authorizer`]).

use std::collections::HashMap;

use strata_security::{Action, Authorizer, Denied, Principal};

use crate::core::{OperatorCall, StateSnapshot};
use crate::driver::{DriverGone, DriverHandle};

/// The (action, object) pairs an operator call needs, all of which must be allowed.
/// A teardown's object is the framework's principal, which only the state knows: see
/// [`authorize_operator`].
fn targets(call: &OperatorCall) -> Vec<(Action, &str)> {
    match call {
        OperatorCall::UpdateWeights(weights) => weights
            .iter()
            .map(|(role, _)| (Action::UpdateWeights, role.as_str()))
            .collect(),
        OperatorCall::DeactivateAgent { agent_id } => {
            vec![(Action::DeactivateAgents, agent_id.as_str())]
        }
        OperatorCall::DrainAgent { agent_id, .. } => vec![(Action::DrainAgents, agent_id.as_str())],
        OperatorCall::ReactivateAgent { agent_id } => {
            vec![(Action::ReactivateAgents, agent_id.as_str())]
        }
        OperatorCall::MarkAgentGone { agent_id } => {
            vec![(Action::MarkAgentsGone, agent_id.as_str())]
        }
        OperatorCall::TeardownFramework { .. } => Vec::new(),
        // Asked by the core, which knows who created a volume (its creator may
        // destroy it).
        OperatorCall::ResourceOperation { .. } => Vec::new(),
    }
}

/// Whether `principal` may make `call`. Refusals (and allowed calls) are in the audit
/// log. An unknown framework's teardown is asked with an empty object, so a caller who
/// may not tear down frameworks learns nothing about which ids exist.
pub async fn authorize_operator(
    driver: &DriverHandle,
    authz: &Authorizer,
    principal: &Principal,
    call: &OperatorCall,
) -> Result<Result<(), Denied>, DriverGone> {
    if let OperatorCall::TeardownFramework { framework_id } = call {
        let snapshot = driver.snapshot().await?;
        let owner = snapshot
            .frameworks
            .iter()
            .find(|f| &f.id == framework_id)
            .map(|f| f.principal.clone())
            .unwrap_or_default();
        return Ok(authz.authorize(principal, Action::TeardownFrameworks, &owner));
    }
    for (action, object) in targets(call) {
        if let Err(denied) = authz.authorize(principal, action, object) {
            return Ok(Err(denied));
        }
    }
    Ok(Ok(()))
}

/// The state as `principal` may see it: every agent and role, the frameworks it may
/// view (`view_frameworks`) and the tasks it may view (`view_tasks`), by the principal
/// of each framework.
pub fn visible(authz: &Authorizer, principal: &Principal, mut s: StateSnapshot) -> StateSnapshot {
    let acls = authz.acls();
    let mut decided: HashMap<(Action, String), bool> = HashMap::new();
    let mut may = |action: Action, owner: &str| -> bool {
        *decided
            .entry((action, owner.to_string()))
            .or_insert_with(|| acls.decide(principal, action, owner).is_ok())
    };
    let owners: HashMap<String, String> = s
        .frameworks
        .iter()
        .map(|f| (f.id.clone(), f.principal.clone()))
        .collect();
    s.frameworks
        .retain(|f| may(Action::ViewFrameworks, &f.principal));
    // A task whose framework is not in the state (removed) has no owner to ask about
    // but the empty one.
    s.tasks.retain(|t| {
        let owner = owners
            .get(&t.framework_id)
            .map(String::as_str)
            .unwrap_or("");
        may(Action::ViewTasks, owner)
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{FrameworkView, TaskView};
    use strata_proto::Resources;
    use strata_security::Acls;

    fn framework(id: &str, principal: &str) -> FrameworkView {
        FrameworkView {
            id: id.into(),
            name: id.into(),
            principal: principal.into(),
            user: String::new(),
            roles: vec!["*".into()],
            capabilities: Vec::new(),
            failover_timeout_seconds: 0.0,
            connected: true,
            active: true,
            suppressed_roles: Vec::new(),
            used: Resources::new(),
            offered: Resources::new(),
            task_count: 1,
        }
    }

    fn task(id: &str, framework_id: &str) -> TaskView {
        TaskView {
            id: id.into(),
            name: id.into(),
            framework_id: framework_id.into(),
            agent_id: "a".into(),
            state: "TASK_RUNNING".into(),
            resources: Resources::new(),
            message: String::new(),
            reason: String::new(),
            exit_status: None,
            healthy: None,
            health_checked: false,
            updated: 0.0,
            statistics: None,
            discovery: None,
            objects: vec![],
        }
    }

    #[test]
    fn principals_see_their_own_and_admin_sees_all() {
        let snapshot = StateSnapshot {
            master_id: "m".into(),
            agents: Vec::new(),
            frameworks: vec![framework("f1", "web"), framework("f2", "db")],
            tasks: vec![task("t1", "f1"), task("t2", "f2"), task("t3", "gone")],
            roles: Vec::new(),
            outstanding_offers: 0,
        };
        let authz = Authorizer::new(Acls::secure_default());
        let web = visible(&authz, &Principal::User("web".into()), snapshot.clone());
        assert_eq!(web.frameworks.len(), 1);
        assert_eq!(web.frameworks[0].id, "f1");
        assert_eq!(web.tasks.len(), 1);
        assert_eq!(web.tasks[0].id, "t1");
        let admin = visible(&authz, &Principal::User("admin".into()), snapshot.clone());
        assert_eq!((admin.frameworks.len(), admin.tasks.len()), (2, 3));
        let nobody = visible(&authz, &Principal::Anonymous, snapshot.clone());
        assert_eq!((nobody.frameworks.len(), nobody.tasks.len()), (0, 0));
        let insecure = visible(&Authorizer::insecure(), &Principal::Anonymous, snapshot);
        assert_eq!((insecure.frameworks.len(), insecure.tasks.len()), (2, 3));
    }

    #[test]
    fn operator_calls_name_their_objects() {
        let call = OperatorCall::UpdateWeights(vec![("a".into(), 1.0), ("b".into(), 2.0)]);
        assert_eq!(
            targets(&call),
            vec![(Action::UpdateWeights, "a"), (Action::UpdateWeights, "b")]
        );
        let call = OperatorCall::MarkAgentGone {
            agent_id: "x".into(),
        };
        assert_eq!(targets(&call), vec![(Action::MarkAgentsGone, "x")]);
    }
}
