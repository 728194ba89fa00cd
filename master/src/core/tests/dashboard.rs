//! The dashboard's queries (issue 18): a page of agents and a page of tasks, filtered
//! by the caller's rights before paging.

use super::*;

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
