//! Validation of what frameworks and agents send: roles, filters, kill policies,
//! task descriptions, and the size limits of calls ([`strata_proto::limits`], checked
//! before anything else a call does). Every failure is a value with a message that says what was
//! wrong and what to do; nothing here panics on wire data.

use std::collections::HashSet;
use std::time::Duration;

use strata_proto::Resources;
use strata_proto::limits::{self, LimitError};
use strata_proto::resources::Value;
use strata_proto::v1::{self, TaskStatusReason};
use strata_security::{Action, Authorizer, Principal};

use super::api::{Call, CallError, OperatorCall};

/// The longest refusal (Mesos caps refuse_seconds at one year).
pub const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longer durations (failover timeouts of weeks are common) are capped here.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Seconds as a duration: negative or NaN is zero, huge or infinite is capped.
pub fn duration_from_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_DURATION)
            .min(MAX_DURATION)
    }
}

/// Checks one role name.
pub fn validate_role(role: &str) -> Result<(), String> {
    if role.is_empty() {
        return Err("a role name is empty".into());
    }
    limits::check_len("a role name", role, limits::MAX_ROLE_BYTES).map_err(|e| e.to_string())?;
    if role == "." || role == ".." {
        return Err(format!("role '{role}' is not allowed"));
    }
    if role.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("role '{role}' contains whitespace"));
    }
    Ok(())
}

/// The roles a framework subscribes with: `["*"]` when none, each valid, no repeats.
pub fn validate_roles(roles: &[String]) -> Result<Vec<String>, String> {
    if roles.is_empty() {
        return Ok(vec!["*".to_string()]);
    }
    limits::check_roles("the list of roles", roles).map_err(|e| e.to_string())?;
    let mut seen: HashSet<&str> = HashSet::with_capacity(roles.len());
    for role in roles {
        validate_role(role)?;
        if !seen.insert(role) {
            return Err(format!("role '{role}' is listed twice"));
        }
    }
    Ok(roles.to_vec())
}

/// The filter of a DECLINE or of the unused part of an ACCEPT: `None` means no filter.
pub fn refuse_duration(
    filters: Option<&v1::Filters>,
    default: Duration,
) -> Result<Option<Duration>, CallError> {
    let d = match filters.and_then(|f| f.refuse_seconds) {
        None => default,
        Some(s) if s.is_nan() || s < 0.0 => {
            return Err(CallError::InvalidArgument(format!(
                "filters.refuse_seconds must be zero or a positive number of seconds, got {s}"
            )));
        }
        Some(s) if s.is_infinite() => MAX_REFUSE,
        Some(s) => Duration::try_from_secs_f64(s).unwrap_or(MAX_REFUSE),
    };
    let d = d.min(MAX_REFUSE);
    Ok((!d.is_zero()).then_some(d))
}

/// Checks a kill policy's grace period.
pub fn validate_kill_policy(policy: Option<&v1::KillPolicy>) -> Result<(), String> {
    if let Some(g) = policy.and_then(|p| p.grace_period_seconds)
        && (!g.is_finite() || g < 0.0)
    {
        return Err(format!(
            "kill_policy.grace_period_seconds must be a non-negative number of seconds, got {g}"
        ));
    }
    Ok(())
}

/// Why a task of an ACCEPT was refused: becomes a TASK_ERROR update.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskProblem {
    pub reason: TaskStatusReason,
    pub message: String,
}

impl TaskProblem {
    pub fn invalid(message: String) -> TaskProblem {
        TaskProblem {
            reason: TaskStatusReason::ReasonTaskInvalid,
            message,
        }
    }
}

/// The checks of one task that need no context but the offers' agent: id, resources,
/// command, agent, kill policy, container (an image; port mappings within the task's
/// ports), health check, discovery info. Returns the task's validated resources.
pub fn validate_task(task: &v1::TaskInfo, offers_agent_id: &str) -> Result<Resources, TaskProblem> {
    strata_proto::validate::task_id(&task.task_id)
        .map_err(|e| TaskProblem::invalid(e.to_string()))?;
    let id = &task.task_id;
    limits::check_task_info(task).map_err(|e| TaskProblem::invalid(format!("task '{id}': {e}")))?;
    let resources = Resources::try_from_proto(&task.resources)
        .map_err(|e| TaskProblem::invalid(format!("task '{id}' has invalid resources: {e}")))?;
    if resources.cpus().is_zero() && resources.mem().is_zero() {
        return Err(TaskProblem::invalid(format!(
            "task '{id}' asks for no cpus and no mem: give it some cpus or mem"
        )));
    }
    if let Some(e) = resources
        .entries()
        .iter()
        .find(|e| e.disk.is_some() && e.persistence().is_none())
    {
        return Err(TaskProblem::invalid(format!(
            "task '{id}' uses the MOUNT disk {} without a volume: CREATE a persistent volume on it (disk.persistence, disk.container_path) and use that",
            Resources::of_entry(e.clone())
        )));
    }
    let mut paths = std::collections::BTreeSet::new();
    for v in resources.volumes() {
        let path = v
            .persistence()
            .map(|p| p.container_path.as_str())
            .unwrap_or("");
        if !paths.insert(path) {
            return Err(TaskProblem::invalid(format!(
                "task '{id}' mounts two volumes at '{path}'"
            )));
        }
    }
    match &task.command {
        Some(c) if !c.value.trim().is_empty() => {}
        _ => {
            return Err(TaskProblem::invalid(format!(
                "task '{id}' has no command: set command.value"
            )));
        }
    }
    if !task.agent_id.is_empty() && task.agent_id != offers_agent_id {
        return Err(TaskProblem::invalid(format!(
            "task '{id}' names agent '{}' but the offers are from agent '{offers_agent_id}'",
            task.agent_id
        )));
    }
    validate_kill_policy(task.kill_policy.as_ref())
        .map_err(|m| TaskProblem::invalid(format!("task '{id}': {m}")))?;
    strata_proto::container::validate(task, &resources)
        .map_err(|e| TaskProblem::invalid(e.to_string()))?;
    if let Some(check) = &task.health_check {
        strata_proto::health::validate(check)
            .map_err(|e| TaskProblem::invalid(format!("task '{id}': {e}")))?;
    }
    strata_proto::discovery::validate(task).map_err(|e| TaskProblem::invalid(e.to_string()))?;
    strata_proto::objects::validate_task(task)
        .map_err(|e| TaskProblem::invalid(format!("task '{id}': {e}")))?;
    Ok(resources)
}

/// The ACL checks of one task (issue 14): the framework's principal may run it as its
/// user (the command's, else the framework's; none: the agent's `--default-user`), from
/// its Docker image, with its host volumes and its Docker named volumes
/// (`use_docker_volumes`, issue 17).
pub fn authorize_task(
    authorizer: &Authorizer,
    framework: &v1::FrameworkInfo,
    task: &v1::TaskInfo,
) -> Result<(), TaskProblem> {
    let principal = Principal::from_name(&framework.principal);
    let refuse = |denied: strata_security::Denied| TaskProblem {
        reason: TaskStatusReason::ReasonTaskUnauthorized,
        message: format!("task '{}' was not launched: {denied}", task.task_id),
    };
    let user = task
        .command
        .as_ref()
        .map(|c| c.user.as_str())
        .filter(|u| !u.is_empty())
        .unwrap_or(&framework.user);
    if !user.is_empty() {
        authorizer
            .authorize(&principal, Action::RunTasks, user)
            .map_err(refuse)?;
    }
    if let Some(container) = &task.container {
        if let Some(docker) = &container.docker {
            authorizer
                .authorize(&principal, Action::UseImages, &docker.image)
                .map_err(refuse)?;
        }
        for volume in &container.volumes {
            // One source each (validated before): a host path or a named volume.
            if !volume.docker_volume.is_empty() {
                authorizer
                    .authorize(&principal, Action::UseDockerVolumes, &volume.docker_volume)
                    .map_err(refuse)?;
            } else {
                authorizer
                    .authorize(&principal, Action::UseHostVolumes, &volume.host_path)
                    .map_err(refuse)?;
            }
        }
    }
    Ok(())
}

/// The size limits of a scheduler call ([`strata_proto::limits`]), checked before
/// anything else: a call over a limit is refused whole, with nothing changed.
pub fn check_call_limits(header: &v1::CallHeader, call: &Call) -> Result<(), CallError> {
    let check = || -> Result<(), LimitError> {
        limits::check_len(
            "the header's framework_id",
            &header.framework_id,
            limits::MAX_ID_BYTES,
        )?;
        limits::check_len(
            "the header's stream_id",
            &header.stream_id,
            limits::MAX_ID_BYTES,
        )?;
        match call {
            Call::Accept(r) => {
                check_offer_ids(&r.offer_ids)?;
                let tasks = r
                    .operations
                    .iter()
                    .filter_map(|op| op.operation.as_ref())
                    .map(|op| match op {
                        v1::operation::Operation::Launch(l) => l.task_infos.len(),
                        _ => 0,
                    })
                    .sum();
                limits::check_count(
                    "the ACCEPT's list of tasks",
                    tasks,
                    limits::MAX_TASKS_PER_ACCEPT,
                )
            }
            Call::Decline(r) => check_offer_ids(&r.offer_ids),
            Call::Revive(r) => limits::check_roles("the REVIVE's list of roles", &r.roles),
            Call::Suppress(r) => limits::check_roles("the SUPPRESS's list of roles", &r.roles),
            Call::Kill(r) => {
                limits::check_len("task id", &r.task_id, limits::MAX_ID_BYTES)?;
                limits::check_len("agent id", &r.agent_id, limits::MAX_ID_BYTES)
            }
            Call::Acknowledge(r) => {
                limits::check_len("task id", &r.task_id, limits::MAX_ID_BYTES)?;
                limits::check_len("agent id", &r.agent_id, limits::MAX_ID_BYTES)?;
                limits::check_len("uuid", &r.uuid, limits::MAX_ID_BYTES)
            }
            Call::Reconcile(r) => {
                limits::check_count(
                    "the RECONCILE's list of tasks",
                    r.tasks.len(),
                    limits::MAX_TASKS_PER_RECONCILE,
                )?;
                r.tasks.iter().try_for_each(|t| {
                    limits::check_len("task id", &t.task_id, limits::MAX_ID_BYTES)?;
                    limits::check_len("agent id", &t.agent_id, limits::MAX_ID_BYTES)
                })
            }
            Call::Message(r) => {
                limits::check_len("task id", &r.task_id, limits::MAX_ID_BYTES)?;
                limits::check_len("agent id", &r.agent_id, limits::MAX_ID_BYTES)?;
                if r.data.len() > limits::MAX_MESSAGE_DATA_BYTES {
                    return Err(LimitError::TooLong {
                        what: "the message's data",
                        len: r.data.len(),
                        max: limits::MAX_MESSAGE_DATA_BYTES,
                    });
                }
                Ok(())
            }
            Call::Teardown(_) => Ok(()),
        }
    };
    check().map_err(|e| CallError::InvalidArgument(format!("{}: {e}", call.name())))
}

fn check_offer_ids(ids: &[String]) -> Result<(), LimitError> {
    limits::check_count(
        "the list of offer ids",
        ids.len(),
        limits::MAX_OFFERS_PER_CALL,
    )?;
    ids.iter()
        .try_for_each(|id| limits::check_len("an offer id", id, limits::MAX_ID_BYTES))
}

/// The size limits of an operator call ([`strata_proto::limits`]; role names are
/// checked with the rest of each role).
pub fn check_operator_limits(call: &OperatorCall) -> Result<(), CallError> {
    let result = match call {
        OperatorCall::UpdateWeights(w) => {
            limits::check_count("the list of weights", w.len(), limits::MAX_WEIGHTS)
        }
        OperatorCall::DeactivateAgent { agent_id }
        | OperatorCall::DrainAgent { agent_id, .. }
        | OperatorCall::ReactivateAgent { agent_id }
        | OperatorCall::MarkAgentGone { agent_id } => {
            limits::check_len("agent id", agent_id, limits::MAX_ID_BYTES)
        }
        OperatorCall::TeardownFramework { framework_id } => {
            limits::check_len("framework id", framework_id, limits::MAX_ID_BYTES)
        }
        OperatorCall::ResourceOperation {
            agent_id,
            resources,
            ..
        } => limits::check_len("agent id", agent_id, limits::MAX_ID_BYTES).and_then(|()| {
            limits::check_count(
                "the operation's resources",
                resources.len(),
                limits::MAX_RESOURCES,
            )
        }),
    };
    result.map_err(|e| CallError::InvalidArgument(e.to_string()))
}

/// Why `wanted` does not fit in `left`, naming the first resource that is short.
pub fn fit_problem(task_id: &str, wanted: &Resources, left: &Resources) -> Option<String> {
    if left.contains(wanted) {
        return None;
    }
    for e in wanted.entries() {
        let name = match &e.role {
            Some(role) => format!("{}({role})", e.name),
            None => e.name.clone(),
        };
        let have = left
            .entries()
            .iter()
            .find(|l| l.name == e.name && l.role == e.role);
        match (&e.value, have.map(|h| &h.value)) {
            (Value::Scalar(w), Some(Value::Scalar(h))) if w <= h => continue,
            (Value::Scalar(w), Some(Value::Scalar(h))) => {
                return Some(format!(
                    "task '{task_id}' asks for {name} {w} but the offers have {h} left"
                ));
            }
            (Value::Scalar(w), _) => {
                return Some(format!(
                    "task '{task_id}' asks for {name} {w} but the offers have none"
                ));
            }
            (Value::Ranges(w), Some(Value::Ranges(h))) if h.contains(w) => continue,
            (Value::Ranges(w), Some(Value::Ranges(h))) => {
                return Some(format!(
                    "task '{task_id}' asks for {name} {w} but the offers have {h}"
                ));
            }
            (Value::Ranges(w), _) => {
                return Some(format!(
                    "task '{task_id}' asks for {name} {w} but the offers have none"
                ));
            }
        }
    }
    Some(format!(
        "task '{task_id}' asks for {wanted} which does not fit in what the offers have left ({left})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(validate_roles(&[]), Ok(vec!["*".to_string()]));
        assert!(validate_roles(&["".into()]).is_err());
        assert!(validate_roles(&["a b".into()]).is_err());
        assert!(validate_roles(&["..".into()]).is_err());
        assert!(validate_roles(&["a".into(), "a".into()]).is_err());
        assert_eq!(
            validate_roles(&["web".into(), "*".into()]).map(|r| r.len()),
            Ok(2)
        );
    }

    #[test]
    fn refuse_seconds() {
        let d = Duration::from_secs(5);
        let f = |s: f64| v1::Filters {
            refuse_seconds: Some(s),
        };
        assert_eq!(refuse_duration(None, d), Ok(Some(d)));
        assert_eq!(
            refuse_duration(
                Some(&v1::Filters {
                    refuse_seconds: None
                }),
                d
            ),
            Ok(Some(d))
        );
        assert_eq!(refuse_duration(Some(&f(0.0)), d), Ok(None));
        assert_eq!(refuse_duration(Some(&f(1e12)), d), Ok(Some(MAX_REFUSE)));
        assert_eq!(
            refuse_duration(Some(&f(f64::INFINITY)), d),
            Ok(Some(MAX_REFUSE))
        );
        assert!(refuse_duration(Some(&f(-1.0)), d).is_err());
        assert!(refuse_duration(Some(&f(f64::NAN)), d).is_err());
    }

    #[test]
    fn durations_never_panic() {
        assert_eq!(duration_from_secs(f64::NAN), Duration::ZERO);
        assert_eq!(duration_from_secs(-3.0), Duration::ZERO);
        assert_eq!(duration_from_secs(f64::INFINITY), MAX_DURATION);
        assert_eq!(duration_from_secs(1.5), Duration::from_millis(1500));
    }

    #[test]
    fn fit_messages() {
        let left = Resources::parse("cpus:4;mem:1024;ports:[31000-31001]").unwrap();
        let want = Resources::parse("cpus:8;mem:10").unwrap();
        assert_eq!(
            fit_problem("t", &want, &left).unwrap(),
            "task 't' asks for cpus 8 but the offers have 4 left"
        );
        let want = Resources::parse("cpus:1;gpus:1").unwrap();
        assert_eq!(
            fit_problem("t", &want, &left).unwrap(),
            "task 't' asks for gpus 1 but the offers have none"
        );
        let want = Resources::parse("cpus:1;ports:[80-80]").unwrap();
        assert!(
            fit_problem("t", &want, &left)
                .unwrap()
                .contains("ports [80-80]")
        );
        assert_eq!(
            fit_problem("t", &Resources::parse("cpus:4").unwrap(), &left),
            None
        );
    }
}
