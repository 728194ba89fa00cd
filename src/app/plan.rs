//! The per-app plan: from the desired instances, the upgrade strategy and the tasks
//! as they are, how many tasks to launch now and which to kill (scale, rolling
//! update, restart, destroy, unreachable replacement). Pure and level-triggered: it
//! is recomputed from the state after every change, so a restart resumes any
//! deployment where it stood.

use strata_proto::v1::TaskState;

use super::records::{AppRecord, TaskRecord};

/// What to do for one app right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub launch: u32,
    pub kill: Vec<String>,
    /// Tasks of the current version that are running and healthy.
    pub ready: u32,
    /// The app has converged: exactly `instances` ready tasks of the current version,
    /// no other task left, not even one being killed (as in Marathon, a deployment
    /// ends once its kills are confirmed; a killed task whose agent stays away is
    /// given up after `unreachable_replace_seconds`).
    pub converged: bool,
}

/// Counts for views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub staged: u32,
    pub running: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    pub old_version: u32,
}

/// Whether a task counts as healthy: running, and its check (if it was launched
/// with one) passes.
pub fn is_healthy(_app: &AppRecord, task: &TaskRecord) -> bool {
    task.is_running()
        && task.unreachable_since.is_none()
        && (!task.checked || task.healthy == Some(true))
}

/// A task whose agent has been unreachable for longer than the app allows: it is
/// replaced (and killed should it come back).
pub fn is_expired(app: &AppRecord, task: &TaskRecord, now: f64) -> bool {
    task.state == TaskState::TaskUnreachable
        && task
            .unreachable_since
            .is_some_and(|since| now - since >= app.spec.unreachable_replace_seconds)
}

pub fn counts(app: &AppRecord, tasks: &[&TaskRecord]) -> Counts {
    let mut c = Counts::default();
    for t in tasks {
        match t.state {
            TaskState::TaskStaging | TaskState::TaskStarting => c.staged += 1,
            TaskState::TaskRunning => {
                c.running += 1;
                if is_healthy(app, t) {
                    c.healthy += 1;
                } else if t.healthy == Some(false) {
                    c.unhealthy += 1;
                }
            }
            _ => {}
        }
        if t.version != app.version && !t.is_killing() {
            c.old_version += 1;
        }
    }
    c
}

/// The plan for `app` given its live (non-terminal) tasks.
pub fn plan(app: &AppRecord, tasks: &[&TaskRecord], now: f64) -> Plan {
    let mut out = Plan::default();
    if app.destroying {
        out.kill = tasks
            .iter()
            .filter(|t| !t.is_killing())
            .map(|t| t.id.clone())
            .collect();
        return out;
    }
    let n = app.spec.instances as usize;
    let mut new: Vec<&TaskRecord> = Vec::new();
    let mut old: Vec<&TaskRecord> = Vec::new();
    for t in tasks {
        if t.is_killing() {
            continue;
        }
        if is_expired(app, t, now) {
            out.kill.push(t.id.clone());
            continue;
        }
        if t.version == app.version {
            new.push(t);
        } else {
            old.push(t);
        }
    }

    // Too many of the current version: kill the surplus, those not yet healthy
    // first, then the youngest.
    if new.len() > n {
        new.sort_by(|a, b| {
            is_healthy(app, a)
                .cmp(&is_healthy(app, b))
                .then(b.staged_at.total_cmp(&a.staged_at))
                .then(b.id.cmp(&a.id))
        });
        let surplus = new.len() - n;
        for t in new.drain(..surplus) {
            out.kill.push(t.id.clone());
        }
    }
    let new_healthy = new.iter().filter(|t| is_healthy(app, t)).count();
    out.ready = new_healthy as u32;

    if old.is_empty() {
        out.launch = (n - new.len()) as u32;
        let killing = tasks.iter().any(|t| t.is_killing());
        out.converged = new.len() == n && new_healthy == n && !killing && out.kill.is_empty();
        return out;
    }

    // A rolling update: keep at least `min_healthy` healthy tasks (of either version)
    // and at most `max_total` tasks.
    let strategy = &app.spec.upgrade_strategy;
    let min_healthy = ((n as f64) * strategy.minimum_health_capacity - 1e-9).ceil() as usize;
    // A resident app never runs over capacity: a new task needs the volumes of an
    // instance, which its old task holds until it is gone.
    let resident = app.spec.is_resident();
    let over = if resident {
        0
    } else {
        ((n as f64) * strategy.maximum_over_capacity + 1e-9).floor() as usize
    };
    let max_total = n + over;
    let old_healthy: Vec<&TaskRecord> =
        old.iter().copied().filter(|t| is_healthy(app, t)).collect();
    let old_unhealthy: Vec<&TaskRecord> = old
        .iter()
        .copied()
        .filter(|t| !is_healthy(app, t))
        .collect();
    // Old tasks that are not healthy add nothing to capacity: kill them first.
    for t in &old_unhealthy {
        out.kill.push(t.id.clone());
    }
    let healthy_now = new_healthy + old_healthy.len();
    let mut killable = healthy_now
        .saturating_sub(min_healthy)
        .min(old_healthy.len());
    // With no new task pending, every old one can go once enough new ones are healthy.
    let mut old_sorted = old_healthy.clone();
    old_sorted.sort_by(|a, b| a.staged_at.total_cmp(&b.staged_at).then(a.id.cmp(&b.id)));
    let mut killed_healthy = 0;
    for t in old_sorted {
        if killable == 0 {
            break;
        }
        out.kill.push(t.id.clone());
        killable -= 1;
        killed_healthy += 1;
    }
    let remaining_old = old_healthy.len() - killed_healthy;
    let total = new.len() + remaining_old;
    let wanted = n.saturating_sub(new.len());
    let mut room = max_total.saturating_sub(total);
    // No room and nothing may be killed (e.g. 1 instance, 50% over capacity rounds to
    // 0 extra): one task over capacity lets the update go on (Marathon does the same).
    // A resident app goes one under capacity instead: its oldest old task stops, and
    // its instance comes back with the new version.
    if room == 0 && killed_healthy == 0 && wanted > 0 && old_unhealthy.is_empty() {
        let new_pending = new.iter().any(|t| !is_healthy(app, t));
        if !new_pending {
            if resident {
                if let Some(t) = old_healthy
                    .iter()
                    .min_by(|a, b| a.staged_at.total_cmp(&b.staged_at).then(a.id.cmp(&b.id)))
                {
                    out.kill.push(t.id.clone());
                }
            } else {
                room = 1;
            }
        }
    }
    out.launch = wanted.min(room) as u32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::spec::AppSpec;

    fn app(instances: u32, min: f64, over: f64, checks: bool) -> AppRecord {
        let mut spec: AppSpec = serde_json::from_value(serde_json::json!({
            "id": "web", "cmd": "sleep 100", "instances": instances,
            "upgrade_strategy": {"minimum_health_capacity": min, "maximum_over_capacity": over},
        }))
        .unwrap();
        if checks {
            spec.health_checks = serde_json::from_value(serde_json::json!([
                {"protocol": "command", "command": "true"}
            ]))
            .unwrap();
        }
        AppRecord {
            spec,
            version: "v2".into(),
            destroying: false,
            wipe: false,
            residents: Default::default(),
            next_resident: 0,
            deployment: None,
            backoff: Default::default(),
            last_failure: None,
            objects: Default::default(),
            version_cause: None,
            objects_held: Default::default(),
        }
    }

    fn task(id: &str, version: &str, state: &str, healthy: Option<bool>, at: f64) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            app_id: "web".into(),
            version: version.into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            agent_address: "h:1".into(),
            attributes: Default::default(),
            ports: vec![],
            state: TaskState::from_str_name(state).expect("a task state name"),
            healthy,
            staged_at: at,
            started_at: None,
            message: String::new(),
            kill_requested_at: None,
            unreachable_since: None,
            checked: healthy.is_some(),
            resident: None,
        }
    }

    #[test]
    fn fresh_app_launches_all_instances() {
        let a = app(5, 1.0, 1.0, false);
        let p = plan(&a, &[], 0.0);
        assert_eq!(p.launch, 5);
        assert!(p.kill.is_empty());
        assert!(!p.converged);
    }

    #[test]
    fn scale_down_kills_the_youngest() {
        let a = app(2, 1.0, 1.0, false);
        let ts: Vec<TaskRecord> = (0..5)
            .map(|i| task(&format!("t{i}"), "v2", "TASK_RUNNING", None, i as f64))
            .collect();
        let refs: Vec<&TaskRecord> = ts.iter().collect();
        let p = plan(&a, &refs, 10.0);
        assert_eq!(p.launch, 0);
        assert_eq!(p.kill, vec!["t4", "t3", "t2"]);
    }

    #[test]
    fn a_deployment_ends_only_once_its_kills_are_confirmed() {
        let a = app(2, 1.0, 1.0, false);
        let mut ts: Vec<TaskRecord> = (0..3)
            .map(|i| task(&format!("t{i}"), "v2", "TASK_RUNNING", None, i as f64))
            .collect();
        let p = plan(&a, &ts.iter().collect::<Vec<_>>(), 10.0);
        assert_eq!(p.kill, vec!["t2"]);
        assert!(!p.converged, "a kill still to make");
        // Killed but not yet ended (TASK_KILLING): still in progress.
        ts[2].kill_requested_at = Some(10.0);
        ts[2].state = TaskState::TaskKilling;
        let p = plan(&a, &ts.iter().collect::<Vec<_>>(), 11.0);
        assert!(p.kill.is_empty() && p.launch == 0);
        assert!(!p.converged, "an old task is still being killed");
        // Ended: gone from the live tasks.
        ts.pop();
        assert!(plan(&a, &ts.iter().collect::<Vec<_>>(), 12.0).converged);
    }

    #[test]
    fn rolling_update_keeps_full_health() {
        // 3 instances, min health 1.0, over 1.0: launch 3 new, kill none until healthy.
        let a = app(3, 1.0, 1.0, true);
        let ts: Vec<TaskRecord> = (0..3)
            .map(|i| task(&format!("o{i}"), "v1", "TASK_RUNNING", Some(true), i as f64))
            .collect();
        let refs: Vec<&TaskRecord> = ts.iter().collect();
        let p = plan(&a, &refs, 10.0);
        assert_eq!(p.launch, 3);
        assert!(p.kill.is_empty());

        // One new task healthy: exactly one old task may go.
        let mut ts2 = ts.clone();
        ts2.push(task("n0", "v2", "TASK_RUNNING", Some(true), 5.0));
        for (id, state) in [("n1", "TASK_RUNNING"), ("n2", "TASK_STAGING")] {
            let mut t = task(id, "v2", state, None, 5.0);
            t.checked = true;
            ts2.push(t);
        }
        let refs: Vec<&TaskRecord> = ts2.iter().collect();
        let p = plan(&a, &refs, 10.0);
        assert_eq!(p.launch, 0);
        assert_eq!(p.kill, vec!["o0"]);
    }

    #[test]
    fn rolling_update_without_room_kills_first() {
        // 4 instances, min health 0.5, no over capacity: kill 2 old, then launch 2.
        let a = app(4, 0.5, 0.0, false);
        let ts: Vec<TaskRecord> = (0..4)
            .map(|i| task(&format!("o{i}"), "v1", "TASK_RUNNING", None, i as f64))
            .collect();
        let refs: Vec<&TaskRecord> = ts.iter().collect();
        let p = plan(&a, &refs, 10.0);
        assert_eq!(p.kill.len(), 2);
        assert_eq!(p.launch, 2);
    }

    #[test]
    fn an_update_with_no_room_launches_one_over_capacity() {
        // 1 instance, min health 1.0, 50% over capacity rounds to no extra task.
        let a = app(1, 1.0, 0.5, false);
        let old = [task("o0", "v1", "TASK_RUNNING", None, 0.0)];
        let refs: Vec<&TaskRecord> = old.iter().collect();
        let p = plan(&a, &refs, 1.0);
        assert_eq!(p.launch, 1);
        assert!(p.kill.is_empty());
    }

    #[test]
    fn adding_a_health_check_keeps_the_old_unchecked_tasks_healthy() {
        let a = app(2, 1.0, 1.0, true);
        let old: Vec<TaskRecord> = (0..2)
            .map(|i| task(&format!("o{i}"), "v1", "TASK_RUNNING", None, i as f64))
            .collect();
        let refs: Vec<&TaskRecord> = old.iter().collect();
        let p = plan(&a, &refs, 1.0);
        assert!(p.kill.is_empty(), "{p:?}");
        assert_eq!(p.launch, 2);
    }

    #[test]
    fn destroy_kills_everything() {
        let mut a = app(2, 1.0, 1.0, false);
        a.destroying = true;
        let ts = [task("t0", "v2", "TASK_RUNNING", None, 0.0)];
        let refs: Vec<&TaskRecord> = ts.iter().collect();
        let p = plan(&a, &refs, 1.0);
        assert_eq!(p.kill, vec!["t0"]);
        assert_eq!(p.launch, 0);
    }

    #[test]
    fn unreachable_tasks_are_replaced_after_the_timeout() {
        let a = app(1, 1.0, 1.0, false);
        let mut t = task("t0", "v2", "TASK_UNREACHABLE", None, 0.0);
        t.unreachable_since = Some(100.0);
        let refs = [&t];
        assert_eq!(plan(&a, &refs, 110.0).launch, 0);
        let p = plan(&a, &refs, 161.0);
        assert_eq!(p.launch, 1);
        assert_eq!(p.kill, vec!["t0"]);
    }
}
