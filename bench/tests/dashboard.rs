//! The dashboard bench, small: 20 simulated agents, 100 tasks, one navigation per page
//! and 2 s CPU windows; every figure printed and every page with its content. Needs
//! Chromium and chromedriver: without them the test fails under `CI=true` and
//! otherwise says loudly that it did not run.

use std::process::Command;

#[path = "../../tests/common/browser.rs"]
mod browser;

#[test]
fn a_small_dashboard_run_prints_its_figures() {
    if let Err(why) = browser::installed() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{why} (CI=true: the browser tests never skip on CI)");
        }
        eprintln!("\n!!!! a_small_dashboard_run_prints_its_figures: SKIPPED, NOT RUN: {why}\n");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "dashboard",
            "--agents",
            "20",
            "--tasks",
            "100",
            "--rounds",
            "1",
            "--window",
            "2",
            "--timeout",
            "60",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "agents: 20\n",
        "tasks: 100\n",
        "master: own process\n",
        "setup: ",
        "overview_fcp_p50: ",
        "overview_response_end_p50: ",
        "overview_content: ok (20 rows, #tasks-running reads \"100\")\n",
        "tasks_fcp_p50: ",
        "tasks_content: ok (50 rows, #task-count reads \"100 task(s)\")\n",
        "tasks_last_page_content: ok (50 rows, #page reads \"page 2 of 2\")\n",
        "agents_last_page_content: ok (20 rows, #page reads \"page 1 of 1\")\n",
        "goal first contentful paint p50 < 1000 ms: ",
        "cpu_no_dashboard: master ",
        "dashboards_loaded: 10 of 10 (2 browsers, up to 5 each)\n",
        "dashboards_live: 10 of 10\n",
        "dashboards_script_errors: 0\n",
        "cpu_10_dashboards: master ",
        "master_cpu_extra_10_dashboards: ",
        "goal master extra CPU with 10 dashboards < 5% of a core: ",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[lines.len() - 3].starts_with("overview_fcp_p50: ")
            && lines[lines.len() - 2].starts_with("tasks_fcp_p50: ")
            && lines[lines.len() - 1].starts_with("master_cpu_extra: "),
        "{stdout}"
    );
}
