//! The dashboard's queries (issue 18): a page of agents and a page of tasks, filtered
//! by the caller's rights before paging.

use super::*;
use strata_proto::v1::TaskState;

#[test]
fn a_page_of_tasks_is_filtered_then_paged_and_counts_only_what_may_be_seen() {
    let mut s = Sim::new();
    s.add_agent("a1", "cpus:64;mem:65536");
    let mut mine = framework_info("mine", &[], true);
    mine.principal = "alice".into();
    let alice = s.subscribe_info(mine);
    let mut theirs = framework_info("theirs", &[], true);
    theirs.principal = "bob".into();
    let bob = s.subscribe_info(theirs);
    for (fw, prefix) in [(&alice, "a"), (&bob, "b")] {
        let offers = offers_for(&s.tick_after(1.5), fw.conn);
        let tasks = (0..3)
            .map(|i| task(&format!("{prefix}{i}"), "cpus:1;mem:32"))
            .collect();
        s.accept(fw, offer_ids(&offers), tasks, refuse(0.0))
            .unwrap();
        s.effects();
    }
    let only_alice = |owner: &str| owner == "alice";
    let all = TaskFilter::default();
    let (total, page) = s.m.tasks_page(&all, &only_alice, 0, 2);
    assert_eq!(total, 3, "bob's tasks are not counted");
    let ids: Vec<&str> = page.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1"]);
    let (_, rest) = s.m.tasks_page(&all, &only_alice, 2, 2);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, "a2");
    // Filters: a state none has, one framework, one agent.
    let running = TaskFilter {
        state: Some("TASK_RUNNING".into()),
        ..Default::default()
    };
    assert_eq!(s.m.tasks_page(&running, &|_| true, 0, 50).0, 0);
    let staging = TaskFilter {
        state: Some("TASK_STAGING".into()),
        framework_id: Some(bob.id.clone()),
        ..Default::default()
    };
    assert_eq!(s.m.tasks_page(&staging, &|_| true, 0, 50).0, 3);
    assert_eq!(s.m.tasks_page(&staging, &only_alice, 0, 50).0, 0);
    let elsewhere = TaskFilter {
        agent_id: Some("nope".into()),
        ..Default::default()
    };
    assert_eq!(s.m.tasks_page(&elsewhere, &|_| true, 0, 50).0, 0);
}

#[test]
fn a_page_of_agents_is_in_id_order_with_the_count() {
    let mut s = Sim::new();
    let mut ids: Vec<String> = (0..5)
        .map(|i| s.add_agent(&format!("h{i}"), "cpus:1;mem:64").id)
        .collect();
    ids.sort();
    let (total, page) = s.m.agents_page(1, 2);
    assert_eq!(total, 5);
    let got: Vec<&str> = page.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(got, [ids[1].as_str(), ids[2].as_str()]);
    assert!(s.m.agents_page(10, 2).1.is_empty());
}

/// The agent reports `state` (with `message` and `healthy`) for `task_id`.
fn report(
    s: &mut Sim,
    agent: &SimAgent,
    fw: &SimFramework,
    task_id: &str,
    (state, message, healthy): (TaskState, &str, Option<bool>),
    uuid: &str,
) {
    let status = v1::TaskStatus {
        task_id: task_id.into(),
        state: state as i32,
        source: v1::TaskStatusSource::SourceAgent as i32,
        agent_id: agent.id.clone(),
        framework_id: fw.id.clone(),
        uuid: uuid.into(),
        message: message.into(),
        healthy,
        timestamp: 1.0,
        ..Default::default()
    };
    let message = v1::AgentMessage {
        message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
            status: Some(status),
        })),
    };
    s.handle(Input::AgentMessage {
        conn: agent.conn,
        message,
    })
    .unwrap();
}

#[test]
fn a_task_page_has_its_status_history_in_order_without_repeats_and_bounded() {
    let mut s = Sim::new();
    let agent = s.add_agent("h<1>", "cpus:8;mem:4096");
    let mut info = framework_info("apps", &[], true);
    info.principal = "alice".into();
    let fw = s.subscribe_info(info);
    let offers = offers_for(&s.tick_after(1.5), fw.conn);
    s.accept(
        &fw,
        offer_ids(&offers),
        vec![task("t0", "cpus:1;mem:32")],
        refuse(0.0),
    )
    .unwrap();
    s.effects();
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskStarting, "", None),
        "u1",
    );
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskRunning, "", None),
        "u2",
    );
    // A retried update and an unchanged health result add nothing.
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskRunning, "", None),
        "u2",
    );
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskRunning, "", Some(true)),
        "u3",
    );
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskRunning, "", Some(true)),
        "u4",
    );
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskRunning, "check failed", Some(false)),
        "u5",
    );
    let all = |_: &str| true;
    let found = s.m.task_details("t0", None, &all);
    assert_eq!(found.len(), 1);
    let d = &found[0];
    assert!(d.live);
    assert_eq!(d.hostname, "h<1>");
    assert_eq!(d.framework_principal, "alice");
    let states: Vec<(&str, Option<bool>, &str)> = d
        .statuses
        .iter()
        .map(|e| (e.state.as_str(), e.healthy, e.message.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("TASK_STAGING", None, ""),
            ("TASK_STARTING", None, ""),
            ("TASK_RUNNING", None, ""),
            ("TASK_RUNNING", Some(true), ""),
            ("TASK_RUNNING", Some(false), "check failed"),
        ]
    );
    assert!(
        d.statuses
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    // Many changes: the first entry stays, then the latest ones.
    for i in 0..40 {
        let healthy = Some(i % 2 == 0);
        report(
            &mut s,
            &agent,
            &fw,
            "t0",
            (TaskState::TaskRunning, &format!("m{i}"), healthy),
            &format!("v{i}"),
        );
    }
    report(
        &mut s,
        &agent,
        &fw,
        "t0",
        (TaskState::TaskFailed, "exit 3", None),
        "end",
    );
    let d = &s.m.task_details("t0", None, &all)[0];
    assert!(!d.live, "a finished task is among the completed");
    assert_eq!(d.statuses.len(), super::super::state::HISTORY);
    assert_eq!(d.statuses[0].state, "TASK_STAGING");
    assert_eq!(d.statuses.last().unwrap().state, "TASK_FAILED");
    assert_eq!(d.statuses.last().unwrap().message, "exit 3");
    assert_eq!(d.statuses[d.statuses.len() - 2].message, "m39");
    assert_eq!(d.task.state, "TASK_FAILED");
}

#[test]
fn a_task_page_shows_only_what_the_caller_may_view_and_tells_frameworks_apart() {
    let mut s = Sim::new();
    s.add_agent("a1", "cpus:64;mem:65536");
    let mut ids = Vec::new();
    for (name, principal) in [("one", "alice"), ("two", "bob")] {
        let mut info = framework_info(name, &[], true);
        info.principal = principal.into();
        let fw = s.subscribe_info(info);
        let offers = offers_for(&s.tick_after(1.5), fw.conn);
        s.accept(
            &fw,
            offer_ids(&offers),
            vec![task("same", "cpus:1;mem:32")],
            refuse(0.0),
        )
        .unwrap();
        s.effects();
        ids.push(fw.id.clone());
    }
    assert_eq!(s.m.task_details("same", None, &|_| true).len(), 2);
    let alice = |owner: &str| owner == "alice";
    let mine = s.m.task_details("same", None, &alice);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].task.framework_id, ids[0]);
    assert!(s.m.task_details("same", Some(&ids[1]), &alice).is_empty());
    assert_eq!(s.m.task_details("same", Some(&ids[1]), &|_| true).len(), 1);
    assert!(s.m.task_details("other", None, &|_| true).is_empty());
    // The app filter of the task list is the task's name.
    let named = TaskFilter {
        name: Some("task same".into()),
        ..Default::default()
    };
    assert_eq!(s.m.tasks_page(&named, &|_| true, 0, 50).0, 2);
}
