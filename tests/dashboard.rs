//! The master's web dashboard (issue 18) in a real headless Chromium: Debian's
//! `chromium` and `chromium-driver`, driven over WebDriver by `common/browser.rs`.
//!
//! Needs both installed (`scripts/test.sh` installs them); under `CI=true` a missing
//! browser fails these tests; elsewhere they return at once, with a SKIPPED note on
//! stderr (which cargo shows with `--nocapture`).
//!
//! Screenshots go to `target/tmp/dashboard/`; with `STRATA_UPDATE_SCREENSHOTS=1` the
//! overview's also replaces `docs/screenshots/overview.png`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use browser::{Browser, pending};
use common::{Cluster, fast_master_flags};

/// How long the page may take to show what the cluster already knows.
const WAIT: Duration = Duration::from_secs(20);

/// The numbers of the overview, each an element id (the SSE `overview` event carries
/// the same names with underscores).
const OVERVIEW_IDS: [&str; 16] = [
    "agents-active",
    "agents-total",
    "frameworks-connected",
    "tasks-running",
    "tasks-staging",
    "offers-outstanding",
    "cpus-used",
    "cpus-total",
    "mem-used",
    "mem-total",
    "disk-used",
    "disk-total",
    "tasks-finished",
    "tasks-killed",
    "tasks-lost",
    "agents-maintenance",
];

/// A row of the `#agents` table: its `data-agent-id` and rendered text.
#[derive(Debug)]
struct Row {
    agent_id: Option<String>,
    text: String,
}

fn agent_rows(b: &Browser) -> Result<Vec<Row>, browser::WdError> {
    b.find_all("#agents tbody tr")?
        .iter()
        .map(|e| {
            Ok(Row {
                agent_id: b.attribute(e, "data-agent-id")?,
                text: b.element_text(e)?,
            })
        })
        .collect()
}

/// The agents' ids in the master's `/state`, by hostname.
fn agent_ids(cluster: &Cluster) -> Vec<(String, String)> {
    let state = cluster.state();
    let mut ids: Vec<(String, String)> = state["agents"]
        .as_array()
        .expect("agents in /state")
        .iter()
        .map(|a| {
            (
                a["hostname"].as_str().unwrap_or_default().to_string(),
                a["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// Fails the test with the browser console's SEVERE entries since the last read
/// (chromedriver's log), or with the errors app.js caught (`window.__strataErrors`).
fn assert_no_console_errors(b: &Browser, when: &str) {
    let caught = b.eval("return window.__strataErrors || []");
    assert_eq!(caught, serde_json::json!([]), "errors app.js caught {when}");
    let errors = b.console_errors();
    assert!(
        errors.is_empty(),
        "browser console errors {when}:\n{}",
        errors
            .iter()
            .map(|e| format!("  [{}] {}", e.source, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The response header block of `GET url` (plain HTTP/1.1), lower-cased.
fn response_head(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[test]
fn the_overview_shows_both_agents_and_updates_live() {
    let mut cluster = Cluster::start_with(2, fast_master_flags());
    let Some(b) = Browser::start("the_overview_shows_both_agents_and_updates_live") else {
        return;
    };
    eprintln!("chromedriver + Chromium session ready in {:?}", b.startup);
    let ids = agent_ids(&cluster);
    assert_eq!(
        ids.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["agent0.test", "agent1.test"],
        "the cluster's agents"
    );

    let opened = Instant::now();
    b.goto(&cluster.master_url("/"));
    b.wait_for(
        WAIT,
        "the overview with 2 active agents, both rows, live",
        |b| {
            let active = b.text("#agents-active")?;
            let rows = agent_rows(b)?;
            let live = b.text("#live")?;
            let hosts_shown = ids
                .iter()
                .all(|(host, _)| rows.iter().any(|r| r.text.contains(host.as_str())));
            if active.trim() == "2" && rows.len() == 2 && hosts_shown && live.trim() == "live" {
                Ok(())
            } else {
                Err(pending(format!(
                    "#agents-active {active:?}, #live {live:?}, rows {rows:?}"
                )))
            }
        },
    );
    eprintln!("overview complete {:?} after navigating", opened.elapsed());

    // Each row names its agent by id, and shows its hostname and state.
    let rows = agent_rows(&b).expect("the rows");
    for (host, id) in &ids {
        let row = rows
            .iter()
            .find(|r| r.agent_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no row with data-agent-id={id} ({host}): {rows:?}"));
        assert!(row.text.contains(host.as_str()), "{host}'s row: {row:?}");
        assert!(
            row.text.contains("ACTIVE"),
            "{host}'s row shows ACTIVE: {row:?}"
        );
    }
    // Every number of the contract is on the page.
    let mut numbers = Vec::new();
    for id in OVERVIEW_IDS {
        let text = b
            .text(&format!("#{id}"))
            .unwrap_or_else(|e| panic!("#{id} on the overview: {e}"));
        assert!(!text.trim().is_empty(), "#{id} is empty");
        numbers.push(format!("{id}={text:?}"));
    }
    eprintln!("overview numbers: {}", numbers.join(", "));
    for (id, want) in [
        ("agents-total", "2"),
        ("frameworks-connected", "0"),
        ("tasks-running", "0"),
        ("tasks-staging", "0"),
    ] {
        assert_eq!(b.text(&format!("#{id}")).unwrap().trim(), want, "#{id}");
    }
    // CSP `default-src 'self'`: no inline script, the assets served by the master.
    let inline = b.eval("return document.querySelectorAll('script:not([src])').length");
    assert_eq!(inline, 0, "inline <script> elements on the overview");
    let head = response_head(&cluster.master_url("/"));
    assert!(
        head.contains("content-security-policy:") && head.contains("default-src 'self'"),
        "GET / sends a CSP with default-src 'self':\n{head}"
    );
    for asset in ["/ui/app.css", "/ui/app.js"] {
        common::http_get(&cluster.master_url(asset)).unwrap_or_else(|e| panic!("GET {asset}: {e}"));
    }
    assert_no_console_errors(&b, "on the overview");

    let shot = browser::output_dir().join("overview.png");
    let (w, h) = b.save_screenshot(&shot);
    eprintln!("screenshot {} ({w}x{h})", shot.display());
    assert_eq!((w, h), (1280, 800), "the screenshot's size");
    if std::env::var("STRATA_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::copy(&shot, docs.join("overview.png")).expect("copy the screenshot");
        eprintln!("updated docs/screenshots/overview.png");
    }

    // Live: an agent lost shows without a reload. The marker would not survive one.
    b.eval("window.__strataSamePage = true; return null");
    let url = b.current_url();
    cluster.agents[1].kill9();
    let killed = Instant::now();
    b.wait_for(WAIT, "#agents-active to drop to 1 without a reload", |b| {
        let active = b.text("#agents-active")?;
        if active.trim() == "1" {
            Ok(())
        } else {
            Err(pending(format!("#agents-active {active:?}")))
        }
    });
    eprintln!("agent loss shown {:?} after kill -9", killed.elapsed());
    // Its row too, fetched again when the feed said something changed.
    let lost = ids
        .iter()
        .find(|(host, _)| host == "agent1.test")
        .map(|(_, id)| id.clone())
        .expect("agent1's id");
    b.wait_for(WAIT, "agent1's row to say DISCONNECTED", |b| {
        let row = b
            .find(&format!("tr[data-agent-id=\"{lost}\"] td.state"))
            .map_err(|e| pending(format!("{e:?}")))?;
        let text = b
            .element_text(&row)
            .map_err(|e| pending(format!("{e:?}")))?;
        if text.contains("DISCONNECTED") {
            Ok(())
        } else {
            Err(pending(text))
        }
    });
    assert_eq!(
        b.eval("return window.__strataSamePage === true"),
        true,
        "the page was reloaded (or navigated) instead of updating live"
    );
    assert_eq!(b.current_url(), url, "the page navigated");
    assert_no_console_errors(&b, "after an agent was lost");

    // The master gone: the page says so, and keeps trying.
    cluster.master.kill9();
    let killed = Instant::now();
    b.wait_for(
        WAIT,
        "#live to read \"disconnected, retrying\" (class offline)",
        |b| {
            let live = b.find("#live")?;
            let text = b.element_text(&live)?;
            let class = b.attribute(&live, "class")?.unwrap_or_default();
            let offline = class.split_whitespace().any(|c| c == "offline");
            if text.trim() == "disconnected, retrying" && offline {
                Ok(())
            } else {
                Err(pending(format!("#live {text:?} class {class:?}")))
            }
        },
    );
    eprintln!(
        "disconnection shown {:?} after the master died",
        killed.elapsed()
    );
    assert_eq!(b.current_url(), url, "the page navigated");
}

#[test]
fn the_agents_page_paginates() {
    let cluster = Cluster::start_with(2, fast_master_flags());
    let Some(b) = Browser::start("the_agents_page_paginates") else {
        return;
    };
    b.goto(&cluster.master_url("/ui/agents?page=1"));
    b.wait_for(WAIT, "page 1 of 1 with 2 agent rows", |b| {
        let page = b.text("#page")?;
        let rows = agent_rows(b)?;
        if page.trim() == "page 1 of 1" && rows.len() == 2 {
            Ok(())
        } else {
            Err(pending(format!("#page {page:?}, rows {rows:?}")))
        }
    });
    assert_no_console_errors(&b, "on /ui/agents?page=1");

    // Past the end: the last page, or a plain statement that there is no such page.
    b.goto(&cluster.master_url("/ui/agents?page=99"));
    let seen = b.wait_for(
        WAIT,
        "page=99 to show the last page or say no such page",
        |b| {
            let text = b.page_text();
            if text.to_ascii_lowercase().contains("no such page") {
                return Ok(format!("a message: {text:?}"));
            }
            let page = b.text("#page")?;
            let rows = agent_rows(b)?;
            if page.trim() == "page 1 of 1" && rows.len() == 2 {
                Ok("the last page (page 1 of 1, 2 rows)".to_string())
            } else {
                Err(pending(format!("#page {page:?}, rows {rows:?}")))
            }
        },
    );
    eprintln!("/ui/agents?page=99 showed {seen}");
}

#[test]
fn the_overview_is_readable_on_a_phone() {
    let cluster = Cluster::start_with(2, fast_master_flags());
    let Some(b) = Browser::start("the_overview_is_readable_on_a_phone") else {
        return;
    };
    b.set_viewport_size(390, 844);
    b.goto(&cluster.master_url("/"));
    b.wait_for_text(WAIT, "#agents-active", "2");
    b.wait_for(WAIT, "both agent rows", |b| {
        let rows = agent_rows(b)?;
        if rows.len() == 2 {
            Ok(())
        } else {
            Err(pending(format!("rows {rows:?}")))
        }
    });
    let sizes =
        b.eval("return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth }");
    eprintln!("at 390x844: {sizes}");
    let inner = sizes["inner"].as_f64().expect("innerWidth");
    let scroll = sizes["scroll"].as_f64().expect("scrollWidth");
    assert_eq!(inner, 390.0, "the viewport is a phone's width");
    let shot = browser::output_dir().join("overview-phone.png");
    b.save_screenshot(&shot);
    assert!(
        scroll <= inner + 1.0,
        "the overview scrolls sideways on a phone: scrollWidth {scroll} > innerWidth {inner} \
         (screenshot {})",
        shot.display()
    );
    assert_no_console_errors(&b, "on the overview at phone width");
}

/// An agent's maintenance from its row: Deactivate goes through `POST
/// /maintenance/deactivate` (the same call as `strata agent deactivate`), the page
/// says it was done and shows the agent deactivated with a Reactivate button, which
/// undoes it; the master's `/state` agrees each time.
#[test]
fn an_agent_is_deactivated_and_reactivated_from_its_row() {
    let cluster = Cluster::start_with(2, fast_master_flags());
    let Some(b) = Browser::start("an_agent_is_deactivated_and_reactivated_from_its_row") else {
        return;
    };
    let (_, id) = agent_ids(&cluster).remove(0);
    let maintenance = |cluster: &Cluster| {
        cluster.state()["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .map(|a| a["maintenance"].clone())
            .unwrap()
    };
    b.goto(&cluster.master_url("/"));
    for (button, shown, state) in [
        (
            "deactivate",
            "DEACTIVATED",
            serde_json::json!("DEACTIVATED"),
        ),
        ("reactivate", "ACTIVE", serde_json::Value::Null),
    ] {
        let css = format!("button[data-action=\"{button}\"][data-agent-id=\"{id}\"]");
        // The rows are replaced when the live feed says something changed: find and
        // click again if the button went stale meanwhile.
        b.wait_for(WAIT, &format!("a click on the {button} button"), |b| {
            let target = b.find(&css).map_err(|e| pending(format!("{e:?}")))?;
            b.click(&target).map_err(|e| pending(format!("{e:?}")))
        });
        b.wait_for(WAIT, &format!("the row to show {shown}"), |b| {
            let row = b
                .find(&format!("tr[data-agent-id=\"{id}\"] td.state"))
                .map_err(|e| pending(format!("{e:?}")))?;
            let text = b
                .element_text(&row)
                .map_err(|e| pending(format!("{e:?}")))?;
            let done = if button == "deactivate" {
                text.contains(shown)
            } else {
                text.trim() == shown
            };
            if done { Ok(()) } else { Err(pending(text)) }
        });
        assert_eq!(maintenance(&cluster), state, "{button}");
    }
    assert_no_console_errors(&b, "after deactivating and reactivating");

    // Another operator deactivates it (with curl, say): the open page shows it without
    // a reload, its count and its row.
    b.wait_for_text(WAIT, "#agents-maintenance", "0");
    b.eval("window.__strataSamePage = true; return null");
    let (code, body) = common::http_request(
        "POST",
        &cluster.master_url("/maintenance/deactivate"),
        Some(&serde_json::json!({ "agent_id": id }).to_string()),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    b.wait_for_text(WAIT, "#agents-maintenance", "1");
    b.wait_for(WAIT, "the row to show DEACTIVATED without a reload", |b| {
        let row = b
            .find(&format!("tr[data-agent-id=\"{id}\"] td.state"))
            .map_err(|e| pending(format!("{e:?}")))?;
        let text = b
            .element_text(&row)
            .map_err(|e| pending(format!("{e:?}")))?;
        if text.contains("DEACTIVATED") {
            Ok(())
        } else {
            Err(pending(text))
        }
    });
    assert_eq!(
        b.eval("return window.__strataSamePage === true"),
        true,
        "reloaded"
    );
    assert_no_console_errors(&b, "after another operator's deactivation");
}

/// The running task named `name` in the master's `/state`: (task id, framework id).
fn running_task(cluster: &Cluster, name: &str) -> Option<(String, String)> {
    let state = cluster.state();
    state["tasks"].as_array()?.iter().find_map(|t| {
        (t["name"] == name && t["state"] == "TASK_RUNNING").then(|| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["framework_id"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

/// Waits until the text of `css` contains `want`.
fn wait_contains(b: &Browser, css: &str, want: &str) {
    b.wait_for(WAIT, &format!("{css} to contain {want:?}"), |b| {
        let t = b.text(css)?;
        if t.contains(want) {
            Ok(())
        } else {
            Err(pending(format!("{css} reads {t:?}")))
        }
    });
}

/// Copies a screenshot to docs/screenshots/ with STRATA_UPDATE_SCREENSHOTS=1.
fn publish_screenshot(shot: &std::path::Path, name: &str) {
    if std::env::var("STRATA_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::copy(shot, docs.join(name)).expect("copy the screenshot");
        eprintln!("updated docs/screenshots/{name}");
    }
}

#[test]
fn a_task_page_shows_its_history_and_tails_its_output_live() {
    let cluster = Cluster::start_with(1, fast_master_flags());
    cluster.wait_for_agents(1);
    let dir = tempfile::tempdir().unwrap();
    let (_run, task_id, framework_id) = run_printer(&cluster, dir.path());
    let Some(b) = Browser::start("a_task_page_shows_its_history_and_tails_its_output_live") else {
        return;
    };

    // From the task list to the task's page.
    b.goto(&cluster.master_url("/ui/tasks?app=printer"));
    b.wait_for_text(WAIT, "#task-count", "1 task(s)");
    let link = b
        .find(&format!("tr[data-task-id=\"{task_id}\"] a"))
        .expect("the task's link");
    b.click(&link).unwrap();
    b.wait_for_text(WAIT, "#task-state", "TASK_RUNNING");
    assert!(
        b.current_url()
            .contains(&format!("/ui/tasks/{task_id}?framework={framework_id}"))
    );
    let history = b.text("#history").unwrap();
    for state in ["TASK_STAGING", "TASK_RUNNING"] {
        assert!(history.contains(state), "{state} in the history: {history}");
    }
    // The output, escaped as text, and growing without a reload.
    wait_contains(&b, "#tail", "dashboard line <one>");
    b.eval("window.__strataSamePage = true; return null");
    let ticks = |b: &Browser| -> Result<usize, browser::WdError> {
        Ok(b.text("#tail")?
            .lines()
            .filter(|l| l.starts_with("tick-"))
            .count())
    };
    let before = ticks(&b).unwrap();
    b.wait_for(WAIT, "more ticks in the tail", |b| {
        let now = ticks(b)?;
        if now >= before + 2 {
            Ok(())
        } else {
            Err(pending(format!("{now} ticks, {before} before")))
        }
    });
    assert_eq!(
        b.eval("return window.__strataSamePage === true"),
        true,
        "reloaded"
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('#tail b').length"),
        0,
        "the task's output became markup"
    );

    // The sandbox: stdout, stderr and the directory; into it, and a file opened.
    b.wait_for(WAIT, "the sandbox listing", |b| {
        let rows = b.text("#files tbody")?;
        if rows.contains("stdout") && rows.contains("stderr") && rows.contains("sub/") {
            Ok(())
        } else {
            Err(pending(rows))
        }
    });
    let shot = browser::output_dir().join("task.png");
    let (w, h) = b.save_screenshot(&shot);
    assert_eq!((w, h), (1280, 800), "the screenshot's size");
    publish_screenshot(&shot, "task.png");
    b.click(&b.find("#files a[data-dir=\"sub\"]").unwrap())
        .unwrap();
    wait_contains(&b, "#sandbox-path", "sub");
    b.click(&b.find("#files a[data-file=\"sub/file.txt\"]").unwrap())
        .unwrap();
    b.wait_for_text(WAIT, "#tail-name", "sub/file.txt");
    wait_contains(&b, "#tail", "nested-content");
    // stderr.
    b.click(&b.find("button.tail-file[data-file=\"stderr\"]").unwrap())
        .unwrap();
    wait_contains(&b, "#tail", "to-stderr");
    assert_no_console_errors(&b, "on the task page");

    // Readable at a phone's width: nothing scrolls sideways.
    b.set_viewport_size(390, 844);
    b.goto(&cluster.master_url(&format!("/ui/tasks/{task_id}")));
    wait_contains(&b, "#tail", "dashboard line <one>");
    let sizes =
        b.eval("return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth }");
    let inner = sizes["inner"].as_f64().expect("innerWidth");
    let scroll = sizes["scroll"].as_f64().expect("scrollWidth");
    assert_eq!(inner, 390.0, "the viewport is a phone's width");
    assert!(
        scroll <= inner + 1.0,
        "the task page scrolls sideways on a phone: scrollWidth {scroll} > innerWidth {inner}"
    );
}

/// `strata run` of a task named `printer` that prints a line, leaves a file in a
/// directory of its sandbox, writes to stderr, then ticks once a second; once it runs:
/// the `strata run` (stopped, it kills its task), the task's id and its framework's.
fn run_printer(cluster: &Cluster, dir: &std::path::Path) -> (Stop, String, String) {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let run = std::process::Command::new(common::bin("strata"))
        .args([
            "run",
            "--insecure",
            "--master",
            &cluster.master.addr,
            "--name",
            "printer",
            "--",
        ])
        .arg(
            "echo 'dashboard line <one>'; mkdir -p sub; echo nested-content > sub/file.txt; \
             echo to-stderr >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("strata run");
    let run = Stop(run);
    let mut task = None;
    common::wait_until(WAIT, "the printer task running", || {
        task = running_task(cluster, "printer");
        task.is_some()
    });
    let (task_id, framework_id) = task.unwrap();
    (run, task_id, framework_id)
}

/// The overview, its keyboard navigation, and a task page's tail, in `engine`'s
/// browser: what every browser must do.
fn overview_keyboard_and_task_page(engine: browser::Engine, test: &str) {
    let cluster = Cluster::start_with(1, fast_master_flags());
    cluster.wait_for_agents(1);
    let dir = tempfile::tempdir().unwrap();
    let (_run, task_id, framework_id) = run_printer(&cluster, dir.path());
    let Some(b) = Browser::start_engine(test, engine) else {
        return;
    };
    b.goto(&cluster.master_url("/"));
    b.wait_for(WAIT, "the overview, live, with its agent", |b| {
        let active = b.text("#agents-active")?;
        let live = b.text("#live")?;
        let rows = b.find_all("#agents tbody tr[data-agent-id]")?.len();
        if active.trim() == "1" && live.trim() == "live" && rows == 1 {
            Ok(())
        } else {
            Err(pending(format!(
                "#agents-active {active:?}, #live {live:?}, {rows} rows"
            )))
        }
    });
    // The keyboard: Tab walks the navigation in order, the focus is visible, Enter
    // follows a link.
    b.eval("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); return null");
    let mut order = Vec::new();
    for _ in 0..4 {
        b.press("\u{E004}").unwrap();
        let focused = b.eval(
            "const e = document.activeElement; const s = getComputedStyle(e); \
             return [e.textContent.trim(), s.outlineStyle, e.tagName]",
        );
        order.push(focused);
    }
    let names: Vec<&str> = order.iter().map(|f| f[0].as_str().unwrap_or("")).collect();
    assert_eq!(
        names,
        ["Overview", "Agents", "Frameworks", "Tasks"],
        "{order:?}"
    );
    for f in &order {
        assert_eq!(f[2], "A", "{f}");
        assert_ne!(f[1], "none", "the focus is visible: {f}");
    }
    b.press("\u{E007}").unwrap();
    b.wait_for(WAIT, "Enter on Tasks to open the tasks page", |b| {
        let url = b.current_url();
        if url.ends_with("/ui/tasks") {
            Ok(())
        } else {
            Err(pending(url))
        }
    });
    b.wait_for_text(WAIT, "#task-count", "1 task(s)");
    b.goto(&cluster.master_url(&format!("/ui/tasks/{task_id}?framework={framework_id}")));
    b.wait_for_text(WAIT, "#task-state", "TASK_RUNNING");
    wait_contains(&b, "#tail", "dashboard line <one>");
    wait_contains(&b, "#files tbody", "stderr");
    assert_no_console_errors(&b, &format!("in {engine:?}"));
}

#[test]
fn the_dashboard_works_from_the_keyboard() {
    overview_keyboard_and_task_page(
        browser::Engine::Chromium,
        "the_dashboard_works_from_the_keyboard",
    );
}

#[test]
fn the_dashboard_works_in_firefox() {
    overview_keyboard_and_task_page(browser::Engine::Firefox, "the_dashboard_works_in_firefox");
}

/// A child process sent SIGINT, then killed, when dropped.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_roles_weight_is_set_from_the_frameworks_page() {
    let mut flags = fast_master_flags();
    flags.extend(["--weights".to_string(), "web=2".to_string()]);
    let cluster = Cluster::start_with(1, flags);
    let Some(b) = Browser::start("a_roles_weight_is_set_from_the_frameworks_page") else {
        return;
    };
    b.goto(&cluster.master_url("/ui/frameworks"));
    let input = "tr[data-role=\"web\"] input[name=\"weight\"]";
    b.wait_for(WAIT, "the web role's weight", |b| {
        match b.execute(
            "const i = document.querySelector(arguments[0]); return i ? i.value : null",
            vec![serde_json::json!(input)],
        )? {
            v if v == "2" => Ok(()),
            v => Err(pending(format!("{v}"))),
        }
    });
    b.execute(
        "const i = document.querySelector(arguments[0]); i.value = '5'; return null",
        vec![serde_json::json!(input)],
    )
    .unwrap();
    b.click(&b.find("tr[data-role=\"web\"] button.set-weight").unwrap())
        .unwrap();
    wait_contains(&b, "#message", "weight of role web: 5");
    let weights = common::http_json(&cluster.master_url("/weights"));
    let web = weights
        .as_array()
        .and_then(|w| w.iter().find(|r| r["role"] == "web"))
        .unwrap_or_else(|| panic!("web in {weights}"));
    assert_eq!(web["weight"], 5.0, "{weights}");
    assert_no_console_errors(&b, "after setting a weight");
    // A bad weight is refused with the master's reason, and changes nothing.
    b.execute(
        "const i = document.querySelector(arguments[0]); i.value = '0'; i.form.requestSubmit(); return null",
        vec![serde_json::json!(input)],
    )
    .unwrap();
    b.wait_for(WAIT, "the refusal", |b| {
        let m = b.text("#message")?;
        if m.contains("refused (400)") {
            Ok(())
        } else {
            Err(pending(m))
        }
    });
    let weights = common::http_json(&cluster.master_url("/weights"));
    assert!(weights.to_string().contains("\"weight\":5.0"), "{weights}");
    // The refused call is the console's only entry (Chromium logs every 4xx answer).
    let errors = b.console_errors();
    assert!(
        errors.iter().all(|e| e.source == "network"
            && e.message.contains("/weights")
            && e.message.contains("400")),
        "{errors:?}"
    );
    let caught = b.eval("return window.__strataErrors || []");
    assert_eq!(caught, serde_json::json!([]));
}
