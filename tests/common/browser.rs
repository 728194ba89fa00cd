//! A headless Chromium driven over W3C WebDriver, for the dashboard's browser tests.
//!
//! Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`;
//! `scripts/test.sh` installs them). [`Browser::start`] runs chromedriver as a child on a
//! free loopback port and opens one session; dropping the [`Browser`] ends the session
//! and stops chromedriver and every Chromium process it started.
//!
//! The client is a few plain HTTP/1.1 requests over `std::net` (JSON in, JSON out), not a
//! WebDriver crate: the handful of endpoints the tests use does not justify one.
//!
//! Without Chromium, [`Browser::start`] fails the test under `CI=true` and otherwise
//! returns `None` after saying loudly on stderr that the test did not run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Firefox ESR, and Mozilla's geckodriver built from crates.io into
/// /usr/local (`cargo install geckodriver --root /usr/local`, as scripts/test.sh does:
/// Debian does not package it).
pub const FIREFOX: &str = "/usr/bin/firefox-esr";
pub const GECKODRIVER: &str = "/usr/local/bin/geckodriver";

/// Which browser a session drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Chromium through chromedriver (the default).
    Chromium,
    /// Firefox ESR through geckodriver. It has no console log over WebDriver: only the
    /// errors app.js catches (`window.__strataErrors`) are seen.
    Firefox,
}

impl Engine {
    fn driver(self) -> &'static str {
        match self {
            Engine::Chromium => CHROMEDRIVER,
            Engine::Firefox => GECKODRIVER,
        }
    }

    fn driver_args(self, port: u16) -> Vec<String> {
        match self {
            Engine::Chromium => vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            Engine::Firefox => vec![
                "--port".into(),
                port.to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                // Not the port Firefox's Marionette listens on by default (2828): tests
                // run side by side.
                "--marionette-port".into(),
                free_port().to_string(),
            ],
        }
    }
}

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error: its `error` code (`no such element`, `stale element reference`,
/// ...) and message, or a failure to talk to chromedriver at all (code `transport`).
#[derive(Debug, Clone)]
pub struct WdError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // chromedriver's messages run on with a native stack trace: the first line only.
        let first = self.message.lines().next().unwrap_or("");
        write!(f, "{}: {first}", self.code)
    }
}

impl std::error::Error for WdError {}

pub type WdResult<T> = Result<T, WdError>;

fn transport(e: impl std::fmt::Display) -> WdError {
    WdError {
        code: "transport".into(),
        message: e.to_string(),
    }
}

/// An element reference of the current page.
#[derive(Debug, Clone)]
pub struct Element(pub String);

/// A browser console entry (`/se/log`, type `browser`).
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub source: String,
    pub message: String,
}

/// Whether Chromium and chromedriver are installed; `Err` says what is missing.
pub fn installed() -> Result<(), String> {
    installed_engine(Engine::Chromium)
}

/// Whether the browser and driver of `engine` are installed; `Err` says what is
/// missing.
pub fn installed_engine(engine: Engine) -> Result<(), String> {
    let (files, how) = match engine {
        Engine::Chromium => (
            [CHROMIUM, CHROMEDRIVER],
            "install Debian's chromium and chromium-driver \
             (`apt-get install --no-install-recommends chromium chromium-driver`, \
             as scripts/test.sh does)",
        ),
        Engine::Firefox => (
            [FIREFOX, GECKODRIVER],
            "install Debian's firefox-esr and geckodriver from crates.io \
             (`apt-get install firefox-esr; cargo install geckodriver --locked --root /usr/local`, \
             as scripts/test.sh does)",
        ),
    };
    let missing: Vec<&str> = files
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} missing: {how}", missing.join(" and ")))
    }
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The capabilities of every session: headless Chromium, its window 1280x800 (then
/// resized for a 1280x800 viewport by [`Browser::start`]). `--no-sandbox`
/// because the tests run as root (Chromium refuses to start its sandbox as root);
/// `--disable-dev-shm-usage` because containers often have a small /dev/shm.
fn capabilities(engine: Engine) -> Value {
    if engine == Engine::Firefox {
        return json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "firefox",
                    "acceptInsecureCerts": true,
                    "moz:firefoxOptions": {
                        "binary": FIREFOX,
                        "args": ["-headless", "-width=1280", "-height=800"],
                    },
                }
            }
        });
    }
    json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-dev-shm-usage",
                        "--disable-gpu",
                        "--window-size=1280,800",
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }
        }
    })
}

pub struct Browser {
    pub engine: Engine,
    driver: Child,
    port: u16,
    session: String,
    /// chromedriver's own output, shown when it fails to start.
    pub driver_log: PathBuf,
    _dir: tempfile::TempDir,
    /// From starting chromedriver to an open session.
    pub startup: Duration,
}

impl Browser {
    /// chromedriver and a headless Chromium session, its viewport 1280x800; or, when
    /// they are not installed, a failure under `CI=true` and otherwise `None` (said on
    /// stderr: cargo's test harness shows it with `--nocapture` only).
    pub fn start(test: &str) -> Option<Browser> {
        Browser::start_engine(test, Engine::Chromium)
    }

    /// [`Browser::start`] with the browser of `engine`.
    pub fn start_engine(test: &str, engine: Engine) -> Option<Browser> {
        let driver_name = engine.driver();
        if let Err(why) = installed_engine(engine) {
            if on_ci() {
                panic!("{test}: {why} (CI=true: the browser tests never skip on CI)");
            }
            eprintln!("\n!!!! {test}: SKIPPED, NOT RUN: {why}\n!!!! (under CI=true this fails)\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let driver_log = dir.path().join("driver.log");
        let started = Instant::now();
        // The port may be taken between our probe and chromedriver's bind: retry.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(&driver_log).expect("the driver's log");
            let mut driver = Command::new(driver_name)
                .args(engine.driver_args(port))
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                // Its own process group: Drop kills chromedriver and the Chromium
                // processes under it, also those a failed `DELETE /session` left.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {driver_name}: {e}"));
            match wait_ready(&mut driver, port, Duration::from_secs(10)) {
                Ok(()) => {
                    let session = match open_session(port, engine) {
                        Ok(s) => s,
                        Err(e) => {
                            kill_group(&mut driver);
                            panic!(
                                "{driver_name} could not start its browser: {e}\nits log:\n{}",
                                std::fs::read_to_string(&driver_log).unwrap_or_default()
                            );
                        }
                    };
                    let mut browser = Browser {
                        engine,
                        driver,
                        port,
                        session,
                        driver_log,
                        _dir: dir,
                        startup: Duration::ZERO,
                    };
                    browser.set_viewport_size(1280, 800);
                    browser.startup = started.elapsed();
                    return Some(browser);
                }
                Err(e) => {
                    kill_group(&mut driver);
                    failures.push(format!(
                        "port {port}: {e}; its log:\n{}",
                        std::fs::read_to_string(&driver_log).unwrap_or_default()
                    ));
                }
            }
        }
        panic!(
            "{driver_name} did not become ready (3 tries):\n{}",
            failures.join("\n")
        );
    }

    fn url(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// A command of this session: its `value`, or the WebDriver error.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> WdResult<Value> {
        webdriver(self.port, method, &self.url(path), body)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Navigates to `url` and waits for its load (WebDriver's default page load strategy).
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching the CSS selector.
    pub fn find(&self, css: &str) -> WdResult<Element> {
        let v = self.command(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        )?;
        element_of(&v)
    }

    /// Every element matching the CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> WdResult<Vec<Element>> {
        let v = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": css })),
        )?;
        v.as_array()
            .ok_or_else(|| transport(format!("elements: not an array: {v}")))?
            .iter()
            .map(element_of)
            .collect()
    }

    /// An element's rendered text (what a user sees, trimmed by the browser).
    pub fn element_text(&self, e: &Element) -> WdResult<String> {
        let v = self.command("GET", &format!("/element/{}/text", e.0), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// An element's attribute, `None` when it has none.
    pub fn attribute(&self, e: &Element, name: &str) -> WdResult<Option<String>> {
        let v = self.command("GET", &format!("/element/{}/attribute/{name}", e.0), None)?;
        Ok(v.as_str().map(str::to_string))
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> WdResult<String> {
        let e = self.find(css)?;
        self.element_text(&e)
    }

    pub fn click(&self, e: &Element) -> WdResult<()> {
        self.command("POST", &format!("/element/{}/click", e.0), Some(&json!({})))?;
        Ok(())
    }

    /// Empties an input or a textarea.
    pub fn clear(&self, e: &Element) -> WdResult<()> {
        self.command("POST", &format!("/element/{}/clear", e.0), Some(&json!({})))?;
        Ok(())
    }

    /// Types `text` into an element as a user would (`\n` is the Enter key).
    pub fn send_keys(&self, e: &Element, text: &str) -> WdResult<()> {
        self.command(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(&json!({ "text": text })),
        )?;
        Ok(())
    }

    /// Presses and releases a key on whatever has the focus, as a keyboard does
    /// (WebDriver's key codes: `"\u{E004}"` Tab, `"\u{E007}"` Enter).
    pub fn press(&self, key: &str) -> WdResult<()> {
        self.command(
            "POST",
            "/actions",
            Some(&json!({ "actions": [{
                "type": "key",
                "id": "keyboard",
                "actions": [{ "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }],
            }]})),
        )?;
        Ok(())
    }

    /// A Chrome DevTools Protocol command, through chromedriver's passthrough
    /// (`POST /session/{id}/goog/cdp/execute`).
    pub fn cdp(&self, cmd: &str, params: Value) -> WdResult<Value> {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Sends `Authorization: Basic` with `principal`'s `secret` on every request of
    /// the page from now on (its fetches and event streams too): a login without the
    /// browser's own dialog, which headless Chromium cannot answer.
    pub fn basic_auth(&self, principal: &str, secret: &str) {
        let token = base64_encode(format!("{principal}:{secret}").as_bytes());
        self.cdp("Network.enable", json!({}))
            .unwrap_or_else(|e| panic!("CDP Network.enable: {e}"));
        self.cdp(
            "Network.setExtraHTTPHeaders",
            json!({ "headers": { "Authorization": format!("Basic {token}") } }),
        )
        .unwrap_or_else(|e| panic!("CDP Network.setExtraHTTPHeaders: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page with `args`.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> WdResult<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// [`Browser::execute`], failing the test on an error.
    pub fn eval(&self, script: &str) -> Value {
        self.execute(script, vec![])
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Sets the window's outer size (headless: the viewport is the window).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
    }

    /// Sizes the window so that the page's viewport (`innerWidth` x `innerHeight`,
    /// what a screenshot shows) is `width` x `height`: the window's outer size also
    /// counts the browser's own frame, even headless.
    pub fn set_viewport_size(&self, width: u32, height: u32) {
        let inner = |b: &Browser| {
            let v = b.eval("return [window.innerWidth, window.innerHeight]");
            (
                v[0].as_u64().unwrap_or(0) as u32,
                v[1].as_u64().unwrap_or(0) as u32,
            )
        };
        self.set_window_size(width, height);
        let (w, h) = inner(self);
        self.set_window_size(
            width + width.saturating_sub(w),
            height + height.saturating_sub(h),
        );
        let got = inner(self);
        assert_eq!(
            got,
            (width, height),
            "the viewport after resizing the window"
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("screenshot: base64 text"))
            .expect("screenshot: valid base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot: not a PNG"
        );
        png
    }

    /// Saves a PNG of the viewport to `path` (creating its directory), and returns
    /// its (width, height).
    pub fn save_screenshot(&self, path: &Path) -> (u32, u32) {
        let png = self.screenshot();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        png_size(&png)
    }

    /// The browser console entries since the last call (chromedriver's legacy
    /// `POST /session/{id}/se/log` with type `browser`; each entry is returned once).
    pub fn console_log(&self) -> Vec<LogEntry> {
        if self.engine == Engine::Firefox {
            // geckodriver has no log endpoint.
            return Vec::new();
        }
        let v = self.cmd("POST", "/se/log", Some(&json!({ "type": "browser" })));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or_default().to_string(),
                        source: e["source"].as_str().unwrap_or_default().to_string(),
                        message: e["message"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The console's SEVERE entries since the last read (errors, uncaught exceptions,
    /// failed loads, CSP violations).
    pub fn console_errors(&self) -> Vec<LogEntry> {
        self.console_log()
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }

    /// The page's visible text (shortened), for failure messages.
    pub fn page_text(&self) -> String {
        let text = self
            .execute(
                "return document.body ? document.body.innerText : document.documentElement.outerHTML",
                vec![],
            )
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(cannot read the page: {e})"));
        let mut short: String = text.chars().take(3000).collect();
        if short.len() < text.len() {
            short.push_str("\n...");
        }
        short
    }

    /// Polls `probe` every 100 ms until it returns `Ok`, for at most `timeout`. An `Err`
    /// ([`Pending`]: the state seen, or an element not there yet or replaced while read)
    /// means "not yet", except that chromedriver not answering fails at once. On timeout
    /// the test fails with the last state seen, the page's URL and text, and a
    /// screenshot under [`output_dir`].
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Browser) -> Result<T, Pending>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe(self) {
                Ok(v) => return v,
                Err(Pending { state, fatal: true }) => {
                    panic!("waiting for {what}: chromedriver stopped answering: {state}")
                }
                Err(Pending { state, .. }) => state,
            };
            if Instant::now() >= deadline {
                let shot = failure_dir().join(format!("timeout-{}.png", slug(what)));
                let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.save_screenshot(&shot)
                }))
                .map(|_| format!("screenshot: {}", shot.display()))
                .unwrap_or_else(|_| "no screenshot".into());
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last: {last})\n\
                     url: {}\n{saved}\npage text:\n{}",
                    self.current_url(),
                    self.page_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the rendered text of `css` is `want` (both trimmed).
    pub fn wait_for_text(&self, timeout: Duration, css: &str, want: &str) {
        self.wait_for(timeout, &format!("{css} to read {want:?}"), |b| {
            let t = b.text(css)?;
            if t.trim() == want.trim() {
                Ok(())
            } else {
                Err(pending(format!("{css} reads {t:?}")))
            }
        })
    }
}

/// Why a [`Browser::wait_for`] probe is not satisfied yet: the state it saw.
#[derive(Debug)]
pub struct Pending {
    pub state: String,
    /// chromedriver itself failed: no use waiting.
    pub fatal: bool,
}

/// "Not yet": `state` is what the probe saw, shown if the wait times out.
pub fn pending(state: impl Into<String>) -> Pending {
    Pending {
        state: state.into(),
        fatal: false,
    }
}

impl From<WdError> for Pending {
    fn from(e: WdError) -> Pending {
        Pending {
            fatal: e.code == "transport",
            state: e.to_string(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium cleanly (and removes its profile dir), then chromedriver; then
        // kills whatever of the group is left.
        let _ = webdriver(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        kill_group(&mut self.driver);
    }
}

/// Where the tests leave screenshots and failure evidence: `target/tmp/dashboard`
/// (the system's temporary directory outside an integration test: `strata-bench
/// dashboard` includes this file too).
pub fn output_dir() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("dashboard")
}

fn failure_dir() -> PathBuf {
    output_dir().join("failures")
}

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .take(60)
        .collect()
}

fn kill_group(driver: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(driver.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = driver.kill();
    let _ = driver.wait();
}

fn wait_ready(driver: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("the driver exited: {status}"));
        }
        match webdriver_within(port, "GET", "/status", None, Duration::from_secs(1)) {
            Ok(v) if v["ready"] == true => return Ok(()),
            Ok(v) => last = format!("not ready: {v}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not ready within {timeout:?}: {last}"))
}

fn open_session(port: u16, engine: Engine) -> WdResult<String> {
    let v = webdriver(port, "POST", "/session", Some(&capabilities(engine)))?;
    v["sessionId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| transport(format!("no sessionId in {v}")))
}

fn element_of(v: &Value) -> WdResult<Element> {
    v[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_string()))
        .ok_or_else(|| transport(format!("not an element reference: {v}")))
}

/// One WebDriver request to chromedriver on `port`: the response's `value`, or its
/// error. Plain HTTP/1.1 with `Connection: close`.
fn webdriver(port: u16, method: &str, path: &str, body: Option<&Value>) -> WdResult<Value> {
    // Long enough for a slow page load (chromedriver's own page load timeout is 300 s,
    // but nothing here should take a minute).
    webdriver_within(port, method, path, body, Duration::from_secs(60))
}

/// [`webdriver`], waiting at most `timeout` for each read.
fn webdriver_within(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> WdResult<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(transport)?;
    s.set_read_timeout(Some(timeout)).ok();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(transport)?;
    // chromedriver keeps the connection open whatever the request says: read the
    // header, then exactly the body it announces.
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(transport)? == 0 {
            return Err(transport(format!(
                "{method} {path}: connection closed in the header"
            )));
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    let length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    let body = if let Some(n) = length {
        let mut body = vec![0; n];
        r.read_exact(&mut body).map_err(transport)?;
        body
    } else if lower.contains("transfer-encoding: chunked") {
        read_chunked(&mut r)?
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body).map_err(transport)?;
        body
    };
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| transport(format!("no status code: {head}")))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        transport(format!(
            "{method} {path}: {code}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if code != 200 {
        return Err(WdError {
            code: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(value)
}

fn read_chunked(r: &mut impl BufRead) -> WdResult<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).map_err(transport)?;
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|e| transport(format!("bad chunk size {size:?}: {e}")))?;
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).map_err(transport)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Standard base64 (screenshots), without a crate the root package does not have.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => return Err(format!("not base64: {:?}", c as char)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Standard base64 with padding (credentials in an `Authorization` header).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A PNG's (width, height) from its IHDR chunk.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() >= 24, "a PNG too short for its header");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}
