//! `strata-bench dashboard`: issue 18's benchmark of the master's web dashboard. Time
//! to first paint of its pages in Chromium with 10,000 simulated agents and 100,000
//! tasks, and the master's extra CPU while 10 dashboards are open.
//!
//! ```text
//!  setup    as `strata-bench failover --master-process` (failover/): the master in
//!           its own process, N simulated agents registered and heartbeating, T tasks
//!           launched through offers, RUNNING and acknowledged
//!  paint    headless Chromium (chromedriver, tests/common/browser.rs): per page
//!           (/, /ui/tasks, /ui/tasks?page=<last>, /ui/agents?page=<last>) --rounds
//!           fresh navigations (about:blank between), each read back from the page:
//!           Navigation Timing (responseStart, responseEnd, domContentLoadedEventEnd,
//!           loadEventEnd) and Paint Timing (first-contentful-paint), once the page
//!           shows what it must (its rows, its counts)
//!  cpu      the master process's CPU (utime + stime, /proc/PID/stat) over --window:
//!           no dashboard open (the agents' heartbeats, the allocator), then with
//!           --dashboards overview windows open (each its own /ui/events stream and its
//!           /ui/agents/rows fetches), then none again; extra = open - mean(none)
//! ```
//!
//! - The pages are server-rendered: the numbers and tables are in the HTML, so the
//!   first contentful paint is the first meaningful paint. Goal: under 1 s (p50) for
//!   the overview and the task list.
//! - A Chromium profile opens at most 6 HTTP/1.1 connections to one host, and an
//!   open dashboard holds one for its event stream: one browser holding more than 5
//!   dashboards of one master (over plain HTTP, no HTTP/2) has none left to load the
//!   next page. The dashboards are therefore spread over browsers (sessions),
//!   `--per-browser` (5) each, as 10 people would have them open in their own
//!   browsers. Chromium's CPU is not the master's: it is printed apart.
//! - Output is `name: value unit` lines; the goals are said `met` / `NOT met` (exit
//!   code 0 either way, as the other benches); a page without its content or a
//!   dashboard not live fails the run (exit code 1).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::Outcome;
use crate::failover::master::cpu_time;
use crate::failover::{Cluster, FailoverBenchArgs};

/// The WebDriver client of the dashboard's browser tests (std only), shared as is.
#[path = "../../tests/common/browser.rs"]
mod browser;

use browser::Browser;

/// Rows on a page of `/ui/agents` and `/ui/tasks` (the master's `ui::PAGE_SIZE`).
const PAGE_SIZE: u32 = 50;
/// Goal: first contentful paint of the overview and of the task list, p50.
const GOAL_FCP_MS: f64 = 1000.0;
/// Goal: the master's extra CPU with the dashboards open, % of one core.
const GOAL_EXTRA_CPU: f64 = 5.0;
/// How long a page may take to show its paint entry after its load.
const PAINT_WAIT: Duration = Duration::from_secs(10);
/// Requests of each page and endpoint from the bench's own client.
const REQUESTS: u32 = 40;
/// A navigation whose response started later than this (ms) stalled.
const STALLED_MS: f64 = 5000.0;
/// After the dashboards are open (or closed), before the window starts.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(clap::Args, Debug)]
pub struct DashboardArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: u32,
    /// Tasks, spread evenly over the agents and launched through offers.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Fresh navigations per page.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Each CPU window (no dashboard, dashboards open, none again), in seconds.
    #[arg(long, default_value_t = 30)]
    pub window: u64,
    /// Overview dashboards open during the second window.
    #[arg(long, default_value_t = 10)]
    pub dashboards: u32,
    /// Dashboards per browser (each browser its own Chromium): Chromium opens at most
    /// 6 HTTP/1.1 connections to a host, and each dashboard holds one for its events.
    #[arg(long, default_value_t = 5)]
    pub per_browser: u32,
    /// Give up on the setup after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// A page measured: its name in the output, its path, and what it must show.
struct PageSpec {
    name: &'static str,
    path: String,
    /// Rows: this selector must match `rows` elements.
    rows_css: &'static str,
    rows: u64,
    /// Text: this element's text must be `text`.
    text_css: &'static str,
    text: String,
}

/// One navigation's figures, ms from the navigation's start.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    response_start: f64,
    response_end: f64,
    dom_content_loaded: f64,
    load: f64,
    fcp: f64,
    html_bytes: f64,
}

/// One of a [`Timing`]'s figures.
type Field = fn(&Timing) -> f64;

/// A page's figures over the rounds.
struct PageFigures {
    fcp_p50: f64,
    errors: Vec<String>,
}

/// One CPU window: % of one core of the master, this process, Chromium.
#[derive(Debug, Clone, Copy)]
struct CpuWindow {
    master: f64,
    bench: f64,
    chromium: f64,
}

pub async fn bench_dashboard(args: DashboardArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.per_browser >= 1, "--per-browser must be at least 1");
    anyhow::ensure!(args.dashboards >= 1, "--dashboards must be at least 1");
    browser::installed().map_err(|why| anyhow::anyhow!("{why}"))?;
    let failover = FailoverBenchArgs {
        agents: args.agents,
        tasks: args.tasks,
        timeout: args.timeout,
        restarts: 1,
        agents_per_conn: None,
        jitter_ms: 100,
        poll_ms: 20,
        reconcile_on_subscribe: false,
        master_process: true,
        secure: false,
    };
    let cluster = Cluster::start(&failover, "strata-bench-dashboard").await?;
    println!("setup: {:.3} s", cluster.setup_time().as_secs_f64());
    let result = measure(&args, &cluster).await;
    if let Err(e) = cluster.stop().await {
        eprintln!("bench: {e:#}");
    }
    result
}

async fn measure(args: &DashboardArgs, cluster: &Cluster) -> anyhow::Result<Outcome> {
    let pid = cluster
        .master_pid()
        .context("the master does not run in its own process")?;
    let url = cluster.url().to_string();
    // The agents the master shows (fewer than asked when the open-files limit is short).
    let (agents, tasks) = counts(cluster).await?;
    let last_tasks = tasks.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let last_agents = agents.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let pages = vec![
        PageSpec {
            name: "overview",
            path: "/".into(),
            rows_css: "#agents tbody tr[data-agent-id]",
            rows: agents.min(u64::from(PAGE_SIZE)),
            text_css: "#tasks-running",
            text: tasks.to_string(),
        },
        PageSpec {
            name: "tasks",
            path: "/ui/tasks".into(),
            rows_css: "#tasks tbody tr[data-task-id]",
            rows: tasks.min(u64::from(PAGE_SIZE)),
            text_css: "#task-count",
            text: format!("{tasks} task(s)"),
        },
        PageSpec {
            name: "tasks_last_page",
            path: format!("/ui/tasks?page={last_tasks}"),
            rows_css: "#tasks tbody tr[data-task-id]",
            rows: tasks - (last_tasks - 1) * u64::from(PAGE_SIZE),
            text_css: "#page",
            text: format!("page {last_tasks} of {last_tasks}"),
        },
        PageSpec {
            name: "agents_last_page",
            path: format!("/ui/agents?page={last_agents}"),
            rows_css: "#agents tbody tr[data-agent-id]",
            rows: agents - (last_agents - 1) * u64::from(PAGE_SIZE),
            text_css: "#page",
            text: format!("page {last_agents} of {last_agents}"),
        },
    ];

    // The server's side alone, from the bench's HTTP client (no browser): each page,
    // and what an open dashboard asks for again and again (the rows of its agents
    // table after each change; the live feed's one metrics pass a second is about one
    // /metrics), each asked REQUESTS times in a row: the answer's time, and the
    // master process's CPU per request.
    let mut paths: Vec<(&str, String)> = pages.iter().map(|p| (p.name, p.path.clone())).collect();
    paths.push(("agent_rows", "/ui/agents/rows?page=1".into()));
    paths.push(("metrics", "/metrics".into()));
    for (name, path) in &paths {
        let mut times = Vec::new();
        let mut bytes = 0;
        let cpu_before = cpu_time(Some(pid));
        for _ in 0..REQUESTS {
            let asked = Instant::now();
            let body = cluster
                .http()
                .get(format!("{url}{path}"))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            times.push(asked.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
        }
        let cpu = cpu_time(Some(pid)).saturating_sub(cpu_before);
        println!(
            "{name}_http_get_p50: {:.1} ms (max {:.1} ms, {bytes} bytes; master CPU {:.2} ms a request, mean of {REQUESTS}; the bench's client, no browser)",
            percentile(&mut times, 0.5),
            percentile(&mut times, 1.0),
            cpu.as_secs_f64() * 1000.0 / f64::from(REQUESTS),
        );
    }

    let args_rounds = args.rounds;
    let window = Duration::from_secs(args.window);
    let (dashboards, per_browser) = (args.dashboards, args.per_browser);
    let base = url.clone();
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<Outcome> {
        let browser =
            Browser::start("strata-bench dashboard").context("Chromium is not installed")?;
        println!("browser_startup: {:.0} ms", browser.startup.as_secs_f64() * 1000.0);
        let mut figures = Vec::new();
        for page in &pages {
            figures.push(paint(&browser, &base, page, args_rounds)?);
        }
        let errors: Vec<String> = figures.iter().flat_map(|f| f.errors.clone()).collect();
        let (overview_fcp, tasks_fcp) = (figures[0].fcp_p50, figures[1].fcp_p50);
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        println!(
            "goal first contentful paint p50 < {GOAL_FCP_MS:.0} ms: overview {}, tasks {}",
            verdict(overview_fcp < GOAL_FCP_MS),
            verdict(tasks_fcp < GOAL_FCP_MS)
        );

        // The master's CPU: none open, the dashboards open, none again.
        blank(&browser)?;
        std::thread::sleep(SETTLE);
        let before = cpu_window(pid, window);
        print_window("cpu_no_dashboard", &before);
        let (open, live) = open_dashboards(browser, &base, pid, dashboards, per_browser, window)?;
        print_window(&format!("cpu_{dashboards}_dashboards"), &open);
        std::thread::sleep(SETTLE);
        let after = cpu_window(pid, window);
        print_window("cpu_no_dashboard_after", &after);
        let baseline = (before.master + after.master) / 2.0;
        let extra = open.master - baseline;
        println!(
            "master_cpu_extra_{dashboards}_dashboards: {extra:+.2} % of a core (open {:.2} % - no dashboard {:.2} %, the mean of before and after; Chromium's CPU not counted)",
            open.master, baseline
        );
        println!(
            "goal master extra CPU with {dashboards} dashboards < {GOAL_EXTRA_CPU:.0}% of a core: {}",
            verdict(extra < GOAL_EXTRA_CPU)
        );
        let mut failed = errors;
        if live < dashboards {
            failed.push(format!("only {live} of {dashboards} dashboards were live"));
        }
        for e in &failed {
            eprintln!("bench: {e}");
        }
        println!("overview_fcp_p50: {overview_fcp:.1} ms");
        println!("tasks_fcp_p50: {tasks_fcp:.1} ms");
        println!("master_cpu_extra: {extra:+.2} % of a core");
        Ok(Outcome {
            code: u8::from(!failed.is_empty()),
            figure: format!(
                "{agents} agents, {tasks} tasks: FCP p50 overview {overview_fcp:.0} ms, tasks {tasks_fcp:.0} ms (last pages: tasks {:.0} ms, agents {:.0} ms); {dashboards} dashboards {extra:+.2}% of a core (master {:.2}% vs {baseline:.2}% with none)",
                figures[2].fcp_p50, figures[3].fcp_p50, open.master
            ),
        })
    })
    .await
    .map_err(|e| anyhow::anyhow!("the browser part failed: {e}"))??;
    Ok(outcome)
}

/// Agents and tasks the master shows (`/metrics`).
async fn counts(cluster: &Cluster) -> anyhow::Result<(u64, u64)> {
    let text = cluster
        .http()
        .get(format!("{}/metrics", cluster.url()))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Ok((
        value("strata_master_agents_active"),
        value("strata_master_tasks_running"),
    ))
}

/// Reads a navigation's timings once its load is over and its paint recorded: `null`
/// until then.
const TIMING_JS: &str = "
const n = performance.getEntriesByType('navigation')[0];
const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
if (!n || !p || !(n.loadEventEnd > 0)) return null;
const el = document.querySelector(arguments[1]);
return {
  response_start: n.responseStart, response_end: n.responseEnd,
  dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
  fcp: p.startTime, html_bytes: n.decodedBodySize,
  rows: document.querySelectorAll(arguments[0]).length,
  text: el ? el.textContent.trim() : null,
  url: location.href,
};";

/// `rounds` fresh navigations to `page`; prints its lines.
fn paint(b: &Browser, base: &str, page: &PageSpec, rounds: u32) -> anyhow::Result<PageFigures> {
    let url = format!("{base}{}", page.path);
    let mut timings = Vec::new();
    let mut errors = Vec::new();
    for round in 1..=rounds {
        blank(b)?;
        navigate(b, &url)?;
        let deadline = Instant::now() + PAINT_WAIT;
        let v = loop {
            let v = b
                .execute(TIMING_JS, vec![json!(page.rows_css), json!(page.text_css)])
                .map_err(|e| anyhow::anyhow!("{}: reading the timings: {e}", page.name))?;
            if !v.is_null() {
                break v;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: no first-contentful-paint entry {PAINT_WAIT:?} after the load (url {url})",
                page.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rows = v["rows"].as_u64().unwrap_or(0);
        let text = v["text"].as_str().unwrap_or("(none)");
        if rows != page.rows || text != page.text {
            errors.push(format!(
                "{} (round {round}): {rows} rows ({} expected), {} reads {text:?} ({:?} expected)",
                page.name, page.rows, page.text_css, page.text
            ));
        }
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        timings.push(Timing {
            response_start: f("response_start"),
            response_end: f("response_end"),
            dom_content_loaded: f("dom_content_loaded"),
            load: f("load"),
            fcp: f("fcp"),
            html_bytes: f("html_bytes"),
        });
    }
    let column = |f: Field| timings.iter().map(f).collect::<Vec<f64>>();
    let name = page.name;
    println!("{name}_url: {}", page.path);
    let mut fcp = column(|t| t.fcp);
    let fcp_p50 = percentile(&mut fcp, 0.5);
    let figures: [(&str, Field); 5] = [
        ("fcp", |t| t.fcp),
        ("response_start", |t| t.response_start),
        ("response_end", |t| t.response_end),
        ("dom_content_loaded", |t| t.dom_content_loaded),
        ("load", |t| t.load),
    ];
    for (what, get) in figures {
        let mut v = column(get);
        println!(
            "{name}_{what}_p50: {:.1} ms (max {:.1} ms, {} navigations)",
            percentile(&mut v, 0.5),
            percentile(&mut v, 1.0),
            v.len()
        );
    }
    // A navigation that waited seconds for its response waited for a connection:
    // Chromium opens at most 6 HTTP/1.1 connections to a host, and the pages left
    // before (kept in the back/forward cache) may still hold theirs.
    let stalled = timings
        .iter()
        .filter(|t| t.response_start > STALLED_MS)
        .count();
    if stalled > 0 {
        println!(
            "{name}_stalled_navigations: {stalled} of {} (response after more than {:.0} s)",
            timings.len(),
            STALLED_MS / 1000.0
        );
    }
    println!(
        "{name}_html: {:.0} bytes",
        timings.last().map_or(0.0, |t| t.html_bytes)
    );
    println!(
        "{name}_content: {}",
        if errors.is_empty() {
            format!(
                "ok ({} rows, {} reads {:?})",
                page.rows, page.text_css, page.text
            )
        } else {
            format!("WRONG in {} of {rounds} rounds", errors.len())
        }
    );
    Ok(PageFigures { fcp_p50, errors })
}

/// Opens `n` overview dashboards, `per_browser` to a browser (`first` the first
/// browser), measures a CPU window with them open, checks that each is live, and
/// closes them all: the window and how many were live.
fn open_dashboards(
    first: Browser,
    base: &str,
    pid: u32,
    n: u32,
    per_browser: u32,
    window: Duration,
) -> anyhow::Result<(CpuWindow, u32)> {
    let url = format!("{base}/");
    let mut browsers = vec![first];
    // (browser, window handle) of each dashboard.
    let mut tabs: Vec<(usize, String)> = Vec::new();
    let mut loaded = 0;
    for i in 0..n {
        let index = (i / per_browser) as usize;
        if index == browsers.len() {
            browsers.push(
                Browser::start("strata-bench dashboard").context("Chromium is not installed")?,
            );
        }
        let b = &browsers[index];
        let handle = if i % per_browser == 0 {
            wd(b, "GET", "/window", None)?
        } else {
            let made = wd(b, "POST", "/window/new", Some(&json!({ "type": "window" })))?;
            let handle = made["handle"].clone();
            wd(b, "POST", "/window", Some(&json!({ "handle": handle })))?;
            handle
        };
        let handle = handle.as_str().unwrap_or_default().to_string();
        // A load that cannot get a connection ends in a WebDriver timeout.
        wd(b, "POST", "/timeouts", Some(&json!({ "pageLoad": 20_000 })))?;
        match navigate(b, &url) {
            Ok(()) => loaded += 1,
            Err(e) => eprintln!("bench: dashboard {}: {e:#}", i + 1),
        }
        tabs.push((index, handle));
    }
    println!(
        "dashboards_loaded: {loaded} of {n} ({} browsers, up to {per_browser} each)",
        browsers.len()
    );
    std::thread::sleep(SETTLE);
    let open = cpu_window(pid, window);
    let mut live = 0;
    let (mut refetches, mut errors) = (0, 0);
    for (index, handle) in &tabs {
        let b = &browsers[*index];
        wd(b, "POST", "/window", Some(&json!({ "handle": handle })))?;
        let v = b
            .execute(
                "const l = document.getElementById('live');
return [l ? l.textContent : '',
  performance.getEntriesByType('resource').filter((e) => e.name.includes('/ui/agents/rows')).length,
  (window.__strataErrors || []).length];",
                vec![],
            )
            .map_err(|e| anyhow::anyhow!("reading a dashboard: {e}"))?;
        if v[0] == "live" {
            live += 1;
        }
        refetches += v[1].as_u64().unwrap_or(0);
        errors += v[2].as_u64().unwrap_or(0);
    }
    println!("dashboards_live: {live} of {n}");
    println!(
        "dashboards_agent_rows_fetches: {refetches} (all dashboards, from their load to the window's end, {:.1} per dashboard per minute)",
        refetches as f64 / f64::from(n.max(1)) / ((window + SETTLE).as_secs_f64() / 60.0)
    );
    println!("dashboards_script_errors: {errors}");
    drop(browsers);
    Ok((open, live))
}

/// A WebDriver command of `b`'s session, its error an `anyhow` one.
fn wd(b: &Browser, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    b.command(method, path, body)
        .map_err(|e| anyhow::anyhow!("WebDriver {method} {path}: {e}"))
}

/// Navigates `b` to `url` and waits for its load (WebDriver's page load strategy).
fn navigate(b: &Browser, url: &str) -> anyhow::Result<()> {
    wd(b, "POST", "/url", Some(&json!({ "url": url })))?;
    Ok(())
}

/// An empty page: the next navigation starts afresh, and nothing listens meanwhile.
fn blank(b: &Browser) -> anyhow::Result<()> {
    navigate(b, "about:blank")
}

/// The CPU of the master process `pid`, this process and Chromium over `window`
/// (slept).
fn cpu_window(pid: u32, window: Duration) -> CpuWindow {
    let read = || {
        (
            Instant::now(),
            cpu_time(Some(pid)),
            cpu_time(None),
            chromium_cpu(),
        )
    };
    let (t0, m0, b0, c0) = read();
    std::thread::sleep(window);
    let (t1, m1, b1, c1) = read();
    let wall = (t1 - t0).as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
    CpuWindow {
        master: pct(m1.saturating_sub(m0)),
        bench: pct(b1.saturating_sub(b0)),
        chromium: pct(c1.saturating_sub(c0)),
    }
}

fn print_window(name: &str, w: &CpuWindow) {
    println!(
        "{name}: master {:.2} % of a core (bench process {:.2} %, Chromium {:.2} %, not the master's)",
        w.master, w.bench, w.chromium
    );
}

/// CPU time (user + system) of every process in the process groups of the
/// chromedriver children of this process (chromedriver and the Chromium processes it
/// started), from /proc.
fn chromium_cpu() -> Duration {
    let me = std::process::id();
    let stats: Vec<(u32, u32, u32, String, Duration)> = proc_stats();
    let groups: Vec<u32> = stats
        .iter()
        .filter(|(_, ppid, _, comm, _)| *ppid == me && comm == "chromedriver")
        .map(|(pid, ..)| *pid)
        .collect();
    stats
        .iter()
        .filter(|(_, _, pgrp, ..)| groups.contains(pgrp))
        .map(|(.., cpu)| *cpu)
        .sum()
}

/// (pid, ppid, pgrp, comm, utime + stime) of every process.
fn proc_stats() -> Vec<(u32, u32, u32, String, Duration)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let comm = text[open + 1..close].to_string();
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        // Fields from 3 on: state (3), ppid (4), pgrp (5), ..., utime (14), stime (15).
        let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        let (Some(ppid), Some(pgrp), Some(utime), Some(stime)) =
            (field(4), field(5), field(14), field(15))
        else {
            continue;
        };
        out.push((
            pid,
            ppid as u32,
            pgrp as u32,
            comm,
            Duration::from_millis((utime + stime) * 10),
        ));
    }
    out
}

/// The `q` quantile (nearest rank) of `v`, sorted in place; NaN when empty.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
