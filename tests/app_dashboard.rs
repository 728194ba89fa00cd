//! The apps dashboard of `strata serve` (issue 18) in a real headless Chromium (and
//! Firefox ESR for the deploy, scale and rollback),
//! against a real master, agents and `strata serve`: deploying from the YAML editor,
//! scaling live, a stuck deployment's waiting reason, an app in restart backoff whose
//! page is not fetched again every second, a bad spec shown at its field, and on a
//! secure serve a user whom the ACLs let look but not change refused.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them)
//! and the workspace's binaries (`cargo build --workspace --bins`). Screenshots go to
//! `target/tmp/dashboard/`; with `STRATA_UPDATE_SCREENSHOTS=1` they also replace
//! `docs/screenshots/apps.png` and `docs/screenshots/app.png`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use browser::{Browser, Engine, pending};
use common::{Cluster, Proc, http_request, start_serve, wait_until};
use serde_json::{Value, json};

/// How long the page may take to show what the framework already knows.
const WAIT: Duration = Duration::from_secs(30);
/// How long tasks may take to start on the agents.
const RUN: Duration = Duration::from_secs(60);

/// A cluster with `strata serve` (insecure) on it.
struct Apps {
    cluster: Cluster,
    serve: Proc,
}

impl Drop for Apps {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.serve.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- last lines of strata serve ----\n{}", tail.join("\n"));
        }
    }
}

impl Apps {
    fn start(agents: usize) -> Apps {
        let cluster = Cluster::start(agents);
        let serve = start_serve(
            cluster.dir.path(),
            &cluster.master.addr,
            &cluster.dir.path().join("apps-state"),
            "127.0.0.1:0",
        );
        let apps = Apps { cluster, serve };
        wait_until(WAIT, "the framework to subscribe", || {
            apps.call("GET", "/v1/info", None).1["connected"] == true
        });
        apps
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.serve.addr, path)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (code, body) = http_request(method, &self.url(path), text.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    fn app(&self, id: &str) -> Value {
        let (code, app) = self.call("GET", &format!("/v1/apps/{id}"), None);
        assert_eq!(code, 200, "GET /v1/apps/{id}: {app}");
        app
    }
}

/// Fails the test with the browser console's SEVERE entries since the last read, or
/// with the errors the pages' scripts caught (`window.__strataErrors`).
fn assert_no_console_errors(b: &Browser, when: &str) {
    assert_no_console_errors_but(b, when, &[]);
}

/// [`assert_no_console_errors`], but for the network's report of the refusals the
/// test asked for (Chromium logs every 4xx answer to a `fetch`): entries of source
/// `network` whose message holds one of `expected` (e.g. `status of 403`).
fn assert_no_console_errors_but(b: &Browser, when: &str, expected: &[&str]) {
    let caught = b.eval("return window.__strataErrors || []");
    assert_eq!(caught, json!([]), "errors the scripts caught {when}");
    let errors: Vec<_> = b
        .console_errors()
        .into_iter()
        .filter(|e| !(e.source == "network" && expected.iter().any(|x| e.message.contains(x))))
        .collect();
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

/// Saves a 1280x800 screenshot as `name` in the output dir, and under
/// docs/screenshots with `STRATA_UPDATE_SCREENSHOTS=1`.
fn screenshot(b: &Browser, name: &str) {
    let shot = browser::output_dir().join(name);
    let (w, h) = b.save_screenshot(&shot);
    eprintln!("screenshot {} ({w}x{h})", shot.display());
    assert_eq!((w, h), (1280, 800), "the screenshot's size");
    if std::env::var("STRATA_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::copy(&shot, docs.join(name)).expect("copy the screenshot");
        eprintln!("updated docs/screenshots/{name}");
    }
}

/// Waits until the text of `css` is `want`, also checking the live indicator.
fn wait_text(b: &Browser, css: &str, want: &str) {
    b.wait_for(WAIT, &format!("{css} to read {want:?}"), |b| {
        let t = b.text(css)?;
        if t.trim() == want {
            Ok(())
        } else {
            Err(pending(format!("{css} reads {t:?}")))
        }
    });
}

fn wait_live(b: &Browser) {
    wait_text(b, "#live", "live");
}

/// Types `text` into the editor, replacing what it held, and clicks Deploy.
fn deploy_from_editor(b: &Browser, text: &str) {
    let editor = b.find("#spec-editor").expect("the editor");
    b.clear(&editor).expect("clear the editor");
    b.send_keys(&editor, text).expect("type the spec");
    assert_eq!(
        b.eval("return document.getElementById('spec-editor').value"),
        json!(text),
        "the editor holds what was typed"
    );
    b.click(&b.find("#deploy").expect("the Deploy button"))
        .expect("click Deploy");
}

#[test]
fn an_app_deployed_from_the_editor_runs_n_of_n_and_scales_live() {
    deploy_scale_and_roll_back(
        Engine::Chromium,
        "an_app_deployed_from_the_editor_runs_n_of_n_and_scales_live",
    );
}

/// The same in Firefox (no console log over WebDriver there: the errors the pages'
/// scripts catch are checked).
#[test]
fn the_apps_dashboard_works_in_firefox() {
    deploy_scale_and_roll_back(Engine::Firefox, "the_apps_dashboard_works_in_firefox");
}

/// Deploys an app from the editor, scales it from its page without a reload, edits
/// it and rolls it back, in `engine`'s browser.
fn deploy_scale_and_roll_back(engine: Engine, test: &str) {
    let apps = Apps::start(2);
    let Some(b) = Browser::start_engine(test, engine) else {
        return;
    };
    // The apps page, empty, links to the editor.
    b.goto(&apps.url("/"));
    wait_live(&b);
    assert!(b.text("#apps").unwrap().contains("No apps"));
    b.click(&b.find("#deploy-link").unwrap()).unwrap();
    b.wait_for(WAIT, "the editor", |b| Ok(b.find("#spec-editor")?));
    assert!(
        b.current_url().ends_with("/ui/deploy"),
        "{}",
        b.current_url()
    );

    // (a) Deploy from the YAML editor: the app page, then 2/2 on the apps page.
    deploy_from_editor(
        &b,
        "id: web\ninstances: 2\ncmd: \"sleep 1000\"\ncpus: 0.1\nmem: 32\nlabels:\n  team: web\n",
    );
    b.wait_for(WAIT, "the app page of web", |b| {
        let url = b.current_url();
        if url.ends_with("/ui/apps/web") {
            Ok(())
        } else {
            Err(pending(format!("at {url}")))
        }
    });
    assert_eq!(apps.app("web")["spec"]["labels"]["team"], "web");
    b.goto(&apps.url("/"));
    wait_live(&b);
    b.wait_for(RUN, "web at 2/2 on the apps page", |b| {
        let count = b.text("#count-web")?;
        if count.trim() == "2/2" {
            Ok(())
        } else {
            Err(pending(format!("#count-web {count:?}")))
        }
    });
    let row = b
        .find("#apps tbody tr[data-app-id=\"web\"]")
        .expect("web's row");
    let text = b.element_text(&row).unwrap();
    assert!(text.contains("web") && text.contains("2/2"), "{text}");
    assert_no_console_errors(&b, "on the apps page");
    let inline = b.eval("return document.querySelectorAll('script:not([src]), style').length");
    assert_eq!(inline, 0, "inline script or style (the CSP forbids them)");

    // (b) Scale from its page: the count changes without a reload.
    b.goto(&apps.url("/ui/apps/web"));
    wait_live(&b);
    wait_text(&b, "#count-web", "2/2");
    b.wait_for(WAIT, "2 task rows", |b| {
        let rows = b.find_all("#tasks tbody tr[data-task-id]")?;
        if rows.len() == 2 {
            Ok(())
        } else {
            Err(pending(format!("{} rows", rows.len())))
        }
    });
    // Task ids link to the master's dashboard.
    let link = b.find("#tasks tbody tr[data-task-id] a").unwrap();
    let href = b.attribute(&link, "href").unwrap().unwrap_or_default();
    assert!(
        href.starts_with(&format!("http://{}/ui/tasks/", apps.cluster.master.addr)),
        "{href}"
    );
    assert!(b.text("#spec").unwrap().contains("cmd: sleep 1000"));
    b.wait_for(WAIT, "the version history", |b| {
        let rows = b.find_all("#versions tbody tr[data-version]")?;
        if rows.is_empty() {
            Err(pending(b.text("#versions")?))
        } else {
            Ok(())
        }
    });
    b.eval("window.__strataSamePage = true; return null");
    let url = b.current_url();
    let input = b.find("#scale-instances").unwrap();
    b.clear(&input).unwrap();
    b.send_keys(&input, "3").unwrap();
    b.click(&b.find("#scale").unwrap()).unwrap();
    b.wait_for(WAIT, "the scale's answer in #message", |b| {
        let m = b.text("#message")?;
        if m.contains("scale: done") {
            Ok(())
        } else {
            Err(pending(format!("#message {m:?}")))
        }
    });
    b.wait_for(RUN, "#count-web to read 3/3 without a reload", |b| {
        let count = b.text("#count-web")?;
        let rows = b.find_all("#tasks tbody tr[data-task-id]")?.len();
        if count.trim() == "3/3" && rows == 3 {
            Ok(())
        } else {
            Err(pending(format!("#count-web {count:?}, {rows} task rows")))
        }
    });
    assert_eq!(
        b.eval("return window.__strataSamePage === true"),
        json!(true),
        "the page was reloaded instead of updating live"
    );
    assert_eq!(b.current_url(), url, "the page navigated");
    assert_eq!(apps.app("web")["instances"], 3);
    assert_no_console_errors(&b, "after scaling");
    if engine == Engine::Chromium {
        screenshot(&b, "app.png");
    }

    // Edit: the editor holds the current spec; a change goes through PUT.
    b.click(&b.find("#edit").unwrap()).unwrap();
    let spec = b.wait_for(WAIT, "the editor with web's spec", |b| {
        let value = b.execute(
            "const e = document.getElementById('spec-editor'); return e ? e.value : ''",
            vec![],
        )?;
        let text = value.as_str().unwrap_or_default().to_string();
        if text.contains("id: web") && text.contains("instances: 3") {
            Ok(text)
        } else {
            Err(pending(text))
        }
    });
    assert!(b.current_url().ends_with("/ui/deploy?app=web"));
    let first = apps.app("web")["version"].as_str().unwrap().to_string();
    // A new version through PUT, from the editor...
    deploy_from_editor(&b, &spec.replace("sleep 1000", "sleep 2000"));
    b.wait_for(WAIT, "web's page with the new spec", |b| {
        let spec = b.text("#spec")?;
        if b.current_url().ends_with("/ui/apps/web") && spec.contains("sleep 2000") {
            Ok(())
        } else {
            Err(pending(format!("{}: {spec}", b.current_url())))
        }
    });
    assert_eq!(apps.app("web")["spec"]["cmd"], "sleep 2000");
    // ...and back to the first one, chosen in the version history.
    let option = b.wait_for(WAIT, "the first version to roll back to", |b| {
        Ok(b.find(&format!("#rollback-version option[value=\"{first}\"]"))?)
    });
    b.click(&option).unwrap();
    b.click(&b.find("#rollback").unwrap()).unwrap();
    b.wait_for(WAIT, "the rollback's answer", |b| {
        let m = b.text("#message")?;
        if m.contains("roll back: done") {
            Ok(())
        } else {
            Err(pending(format!("#message {m:?}")))
        }
    });
    assert_eq!(apps.app("web")["spec"]["cmd"], "sleep 1000", "rolled back");
    assert_no_console_errors(&b, "after editing and rolling back");
}

/// An app in restart backoff: its waiting reason says when the next launch is (not a
/// countdown that changes every second), and its page is not fetched again while
/// nothing changes.
#[test]
fn a_backoff_does_not_refresh_the_app_page_every_second() {
    let apps = Apps::start(1);
    let Some(b) = Browser::start("a_backoff_does_not_refresh_the_app_page_every_second") else {
        return;
    };
    let spec = json!({"id": "crash", "instances": 1, "cmd": "exit 1", "cpus": 0.1, "mem": 32,
        "backoff": {"seconds": 120, "factor": 1, "max_seconds": 120}});
    let (code, body) = apps.call("PUT", "/v1/apps/crash", Some(spec));
    assert_eq!(code, 200, "{body}");
    wait_until(RUN, "crash to back off", || {
        apps.app("crash")["backoff_seconds"].is_number()
    });
    // A deployment that waits for the backoff: a scale.
    let (code, body) = apps.call(
        "POST",
        "/v1/apps/crash/scale",
        Some(json!({"instances": 2})),
    );
    assert_eq!(code, 200, "{body}");
    let waiting = apps.app("crash")["deployment"]["waiting"].clone();
    assert!(
        waiting
            .as_str()
            .unwrap_or_default()
            .starts_with("restart backoff: next launch in"),
        "{waiting}"
    );
    b.goto(&apps.url("/ui/apps/crash"));
    wait_live(&b);
    b.wait_for(WAIT, "the backoff's waiting reason", |b| {
        let text = b.text("#waiting-crash")?;
        if text.starts_with("restart backoff: next launch at ") {
            Ok(())
        } else {
            Err(pending(format!("#waiting-crash {text:?}")))
        }
    });
    let fetches = || {
        b.eval(
            "return performance.getEntriesByType('resource')\
               .filter((e) => new URL(e.name).pathname === '/ui/apps/crash').length",
        )
    };
    let text = b.text("#waiting-crash").unwrap();
    let before = fetches();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(b.text("#waiting-crash").unwrap(), text, "no countdown");
    assert_eq!(fetches(), before, "the page was not fetched again");
    assert_no_console_errors(&b, "on the app page in backoff");
}

#[test]
fn a_stuck_deployment_shows_its_waiting_reason() {
    let apps = Apps::start(1);
    let Some(b) = Browser::start("a_stuck_deployment_shows_its_waiting_reason") else {
        return;
    };
    for spec in [
        json!({"id": "web", "instances": 2, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32}),
        json!({"id": "big", "instances": 1, "cmd": "sleep 1000", "cpus": 64, "mem": 32}),
    ] {
        let id = spec["id"].as_str().unwrap().to_string();
        let (code, body) = apps.call("PUT", &format!("/v1/apps/{id}"), Some(spec));
        assert_eq!(code, 200, "{body}");
    }
    // The reason the API gives, once it has seen the offers (before: "reviving
    // offers").
    let mut reason = String::new();
    wait_until(RUN, "big's deployment to say it needs more cpus", || {
        reason = apps.app("big")["deployment"]["waiting"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        reason.contains("cpus")
    });
    eprintln!("big waits: {reason}");

    b.goto(&apps.url("/"));
    wait_live(&b);
    b.wait_for(RUN, "web at 2/2 and big's waiting reason", |b| {
        let web = b.text("#count-web")?;
        let waiting = b.find("#waiting-big")?;
        let text = b.element_text(&waiting)?;
        let class = b.attribute(&waiting, "class")?.unwrap_or_default();
        if web.trim() == "2/2" && text.contains("cpus") && class.contains("waiting") {
            Ok(())
        } else {
            Err(pending(format!(
                "#count-web {web:?}, #waiting-big {text:?} class {class:?}"
            )))
        }
    });
    assert_eq!(b.text("#count-big").unwrap().trim(), "0/1");
    assert!(
        b.text("#waiting-banner")
            .unwrap()
            .contains("1 deployment(s) waiting")
    );
    let web_waiting = b.find("#waiting-web").unwrap();
    assert_eq!(
        b.element_text(&web_waiting).unwrap(),
        "",
        "web waits for nothing"
    );
    assert_no_console_errors(&b, "on the apps page");
    screenshot(&b, "apps.png");

    // And on the app page.
    b.goto(&apps.url("/ui/apps/big"));
    wait_live(&b);
    let text = b.text("#waiting-big").unwrap();
    assert!(
        text.contains("cpus"),
        "#waiting-big on the app page: {text}"
    );
    assert!(b.text("#deployment-big").unwrap().contains("0/1"));
    assert_no_console_errors(&b, "on the app page");

    // Both pages are readable at a phone's width: nothing scrolls sideways.
    b.set_viewport_size(390, 844);
    for path in ["/", "/ui/apps/big", "/ui/deploy"] {
        b.goto(&apps.url(path));
        wait_live(&b);
        let sizes = b.eval(
            "return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth }",
        );
        let inner = sizes["inner"].as_f64().expect("innerWidth");
        let scroll = sizes["scroll"].as_f64().expect("scrollWidth");
        assert_eq!(inner, 390.0, "the viewport is a phone's width");
        assert!(
            scroll <= inner + 1.0,
            "{path} scrolls sideways on a phone: scrollWidth {scroll} > innerWidth {inner}"
        );
    }
    assert_no_console_errors(&b, "at a phone's width");
}

#[test]
fn a_bad_spec_is_shown_at_its_field_and_changes_nothing() {
    let apps = Apps::start(1);
    let Some(b) = Browser::start("a_bad_spec_is_shown_at_its_field_and_changes_nothing") else {
        return;
    };
    b.goto(&apps.url("/ui/deploy"));
    wait_live(&b);
    for (yaml, field, line) in [
        (
            "id: web\ninstances: -1\ncmd: \"sleep 1000\"\ncpus: 0.1\n",
            "instances",
            2,
        ),
        (
            "id: web\ncmd: \"sleep 1000\"\ncpus: 0.1\nmem: 32\ninstancez: 2\n",
            "instancez",
            5,
        ),
    ] {
        b.eval(
            "const e = document.getElementById('field-error'); e.hidden = true; e.textContent = ''; return null",
        );
        deploy_from_editor(&b, yaml);
        let shown = b.wait_for(WAIT, &format!("#field-error naming {field}"), |b| {
            let e = b.find("#field-error")?;
            let text = b.element_text(&e)?;
            let named = b.attribute(&e, "data-field")?.unwrap_or_default();
            if !text.is_empty() && named == field && text.contains(field) {
                Ok(text)
            } else {
                Err(pending(format!("{text:?} data-field {named:?}")))
            }
        });
        eprintln!("{field}: {shown}");
        // The caret is on the field's line.
        let selected = b.eval(
            "const e = document.getElementById('spec-editor'); \
             return [document.activeElement === e, e.value.slice(0, e.selectionStart).split('\\n').length, \
                     e.value.slice(e.selectionStart, e.selectionEnd)]",
        );
        assert_eq!(selected[0], json!(true), "the editor has the focus");
        assert_eq!(selected[1], json!(line), "the caret's line for {field}");
        assert!(
            selected[2].as_str().unwrap_or_default().contains(field),
            "the selection: {selected}"
        );
        assert!(
            b.text("#message").unwrap().contains("deploy refused (4"),
            "{}",
            b.text("#message").unwrap()
        );
        assert!(b.current_url().ends_with("/ui/deploy"), "still the editor");
    }
    let (code, list) = apps.call("GET", "/v1/apps", None);
    assert_eq!((code, list), (200, json!([])), "nothing was made");
    assert_no_console_errors_but(
        &b,
        "on the editor",
        &["/v1/apps - Failed to load resource: the server responded with a status of 422"],
    );
}

/// The App API's callers on the secure serve: `ops` may change apps, `dev` may look.
const USERS: [(&str, &str); 3] = [
    ("admin", "admin-secret-0123456789"),
    ("ops", "the-operators-secret-0123"),
    ("dev", "the-developers-secret-0123"),
];

const ACLS: &str = r#"{"permissive": false,
  "view_apps": [{"principals": {"values": ["ops", "dev"]}, "apps": {"type": "ANY"}}],
  "manage_apps": [{"principals": {"values": ["ops"]}, "apps": {"type": "ANY"}}]}"#;

/// A PUT of `spec` as `who` over HTTPS with the cluster CA: (status, body).
fn put_secure(ca: &Path, base: &str, who: &str, spec: &Value) -> (u16, String) {
    let (_, secret) = USERS.iter().find(|(p, _)| *p == who).unwrap();
    let tls = common::Tls::new(ca, who, secret);
    let client = tls
        .client
        .reqwest(reqwest::Client::builder().timeout(Duration::from_secs(10)))
        .unwrap()
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let r = client
            .put(format!("{base}/v1/apps/{}", spec["id"].as_str().unwrap()))
            .json(spec)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn on_a_secure_serve_a_user_who_may_only_look_is_refused_the_scale() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let credentials = d.join("credentials.json");
    let entries: Vec<Value> = USERS
        .iter()
        .map(|(p, s)| json!({"principal": p, "secret": s}))
        .collect();
    std::fs::write(&credentials, json!({ "credentials": entries }).to_string()).unwrap();
    let acls = d.join("acls.json");
    std::fs::write(&acls, ACLS).unwrap();
    let framework_credential = d.join("framework.json");
    std::fs::write(
        &framework_credential,
        json!({"principal": "admin", "secret": USERS[0].1}).to_string(),
    )
    .unwrap();
    // A secure master (TLS, the credentials) and a secure serve; no agent is needed.
    let master = Proc::spawn(
        "master",
        &common::bin("strata-master"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            d.join("master").display().to_string(),
            "--credentials".into(),
            credentials.display().to_string(),
        ],
        &d.join("master.log"),
    );
    let ca = d.join("master/tls/ca.crt");
    let serve = Proc::spawn(
        "strata-serve",
        &common::bin("strata"),
        &[
            "serve".into(),
            "--master".into(),
            master.addr.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--state-dir".into(),
            d.join("apps-state").display().to_string(),
            "--ca-file".into(),
            ca.display().to_string(),
            "--credential-file".into(),
            framework_credential.display().to_string(),
            "--credentials".into(),
            credentials.display().to_string(),
            "--acls".into(),
            acls.display().to_string(),
            "--tick".into(),
            "200ms".into(),
        ],
        &d.join("serve.log"),
    );
    let logs = || {
        format!(
            "---- master ----\n{}\n---- serve ----\n{}",
            master.log_text(),
            serve.log_text()
        )
    };
    let base = format!("https://{}", serve.addr);
    let dev = common::Tls::new(&ca, "dev", USERS[2].1);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match dev.get(&format!("{base}/v1/info")) {
            Ok((200, _)) => break,
            other if std::time::Instant::now() > deadline => {
                panic!("the secure serve never answered: {other:?}\n{}", logs())
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    // Without a credential: 401 asking for Basic, the dashboard included.
    let anonymous = common::Tls {
        client: strata_security::ClientTls {
            credential: None,
            ..dev.client.clone()
        },
    };
    let (code, _) = anonymous.get(&format!("{base}/")).unwrap();
    assert_eq!(code, 401, "GET / without a credential");
    // ops deploys; dev may look only.
    let spec = json!({"id": "web", "instances": 1, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32});
    let (code, body) = put_secure(&ca, &base, "ops", &spec);
    assert_eq!(code, 200, "ops deploys: {body}\n{}", logs());

    let Some(b) = Browser::start("on_a_secure_serve_a_user_who_may_only_look_is_refused_the_scale")
    else {
        return;
    };
    b.basic_auth("dev", USERS[2].1);
    b.goto(&format!("{base}/"));
    wait_live(&b);
    wait_text(&b, "#count-web", "0/1");
    b.goto(&format!("{base}/ui/apps/web"));
    wait_live(&b);
    let input = b.find("#scale-instances").unwrap();
    b.clear(&input).unwrap();
    b.send_keys(&input, "2").unwrap();
    b.click(&b.find("#scale").unwrap()).unwrap();
    let message = b.wait_for(WAIT, "the refusal in #message", |b| {
        let m = b.text("#message")?;
        if m.contains("refused") {
            Ok(m)
        } else {
            Err(pending(format!("#message {m:?}")))
        }
    });
    eprintln!("dev's scale: {message}");
    assert!(
        message.contains("scale refused (403)")
            && message.contains("dev is not authorized to change app 'web'"),
        "{message}"
    );
    let (code, app) = dev.get(&format!("{base}/v1/apps/web")).unwrap();
    assert_eq!(code, 200);
    let app: Value = serde_json::from_str(&app).unwrap();
    assert_eq!(app["instances"], 1, "unchanged: {app}");
    assert_no_console_errors_but(
        &b,
        "after the refusal",
        &[
            "/v1/apps/web/scale - Failed to load resource: the server responded with a status of 403",
        ],
    );
}
