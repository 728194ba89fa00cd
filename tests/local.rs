//! `strata local` as a user first meets it: secure without asking (TLS, an admin
//! credential, agents joined with the master's token), and the CLI and curl working
//! against it through the config it writes; a CLI without the config, with a wrong
//! secret or with `--insecure` is refused with a message that says why.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{run_with_timeout, wait_until};

/// `strata local` running, killed when dropped.
struct Local {
    child: Child,
    work: PathBuf,
    /// What it printed on stdout up to "up".
    said: Vec<String>,
    log: PathBuf,
}

impl Drop for Local {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- strata local said ----\n{}\n---- its log ----\n{}",
                self.said.join("\n"),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Local {
    /// Starts `strata local` with one agent on ports the kernel picks; its user's CLI config goes to `user_config` (`STRATA_CONFIG`), never to
    /// the real home directory.
    fn start(dir: &Path, user_config: &Path) -> Local {
        Local::start_with(dir, user_config, 1)
    }

    /// [`Local::start`] with `agents` agents.
    fn start_with(dir: &Path, user_config: &Path, agents: u16) -> Local {
        let work = dir.join("work");
        let log = dir.join("local.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "local",
                "--master",
                "127.0.0.1:0",
                "--apps-listen",
                "127.0.0.1:0",
            ])
            .args(["--agents", &agents.to_string(), "--work-dir"])
            .arg(&work)
            .env("STRATA_CONFIG", user_config)
            .env("HOME", dir)
            .env_remove("XDG_CONFIG_HOME")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start strata local");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut local = Local {
            child,
            work,
            said: Vec::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let up = line.contains("up; Ctrl-C stops it");
                    local.said.push(line);
                    if up {
                        return local;
                    }
                }
                Err(_) => panic!("strata local did not come up"),
            }
        }
    }

    /// The first line it printed that contains `what`.
    fn line(&self, what: &str) -> &str {
        self.said
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line with {what:?}: {:#?}", self.said))
    }

    /// Where the App API (and the apps dashboard) listens.
    fn apps_addr(&self) -> String {
        let line = self.line("App API on https://");
        let rest = line.split("App API on https://").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().to_string()
    }

    fn master_addr(&self) -> String {
        let line = self.line("master on https://");
        let rest = line.split("master on https://").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().to_string()
    }
}

/// The CLI with `config` as its config, and nothing from this test's environment.
fn strata(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args)
        .env("STRATA_CONFIG", config)
        .env_remove("STRATA_INSECURE")
        .env_remove("STRATA_MASTER")
        .env_remove("STRATA_SERVER");
    run_with_timeout(cmd, Duration::from_secs(60))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn strata_local_is_secure_and_the_cli_and_curl_work_with_what_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let user_config = dir.path().join("user/strata.json");
    let local = Local::start(dir.path(), &user_config);
    let config = local.work.join("config.json");

    // What it wrote, private, and where it said.
    for private in [
        &config,
        &user_config,
        &local.work.join("admin-credential.json"),
    ] {
        assert_eq!(mode(private), 0o600, "{}", private.display());
    }
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(&user_config).unwrap()
    );
    local.line(&format!("written to {}", config.display()));
    local.line(&format!("written to {}", user_config.display()));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(written["master"], local.master_addr());
    assert_eq!(written["principal"], "admin");
    assert!(
        !local
            .said
            .iter()
            .any(|l| l.contains(written["secret"].as_str().unwrap())),
        "the secret is never printed: {:#?}",
        local.said
    );

    // The CLI, through the config: the master's operator API and the App API, TLS.
    wait_until(Duration::from_secs(30), "the agent is active", || {
        let (code, out, _) = strata(&config, &["agent", "list", "-o", "json"]);
        code == 0 && out.contains("\"ACTIVE\"")
    });
    wait_until(Duration::from_secs(30), "the framework registers", || {
        let (code, out, _) = strata(&config, &["framework", "list", "-o", "json"]);
        code == 0 && out.contains("\"strata\"")
    });
    let (code, out, err) = strata(&config, &["app", "list"]);
    assert_eq!(code, 0, "{out}{err}");

    // An app, and a task's output read from its agent (https, the CA, the credential).
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/hello.yaml");
    let (code, out, err) = strata(&config, &["app", "deploy", "-f", hello, "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = strata(&config, &["task", "list", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = tasks[0]["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "the task's output", || {
        let (code, out, _) = strata(&config, &["task", "logs", &first]);
        code == 0 && out.contains("hello from")
    });

    // `strata run`, through the same config: the framework API and the agent's files.
    let (code, out, err) = strata(&config, &["run", "--", "echo hello from run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "hello from run\n", "{err}");
    // Not as root: the built-in ACLs refuse it, and nothing runs.
    let (code, out, err) = strata(&config, &["run", "--user", "root", "--", "id"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("TASK_ERROR")
            && err.contains("admin is not authorized to run tasks as user 'root'"),
        "{err}"
    );

    // curl, as strata local said to call it.
    let curl = local.line("curl --cacert").trim().to_string();
    let out = Command::new("sh").args(["-c", &curl]).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{curl}: {body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(common::active_agents(&state), 1, "{state}");

    // No config: the CLI says where it looked and what to do.
    let missing = dir.path().join("nothing.json");
    let (code, _, err) = strata(&missing, &["agent", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("no CLI config found at {}", missing.display()))
            && err.contains("strata local")
            && err.contains("--insecure"),
        "{err}"
    );

    // A wrong secret: the master's refusal, naming whose credential it was.
    let mut wrong = written.clone();
    wrong["secret"] = "not-the-secret-of-the-admin".into();
    let wrong_config = dir.path().join("wrong.json");
    std::fs::write(&wrong_config, wrong.to_string()).unwrap();
    std::fs::set_permissions(&wrong_config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = strata(&wrong_config, &["agent", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused the credential of 'admin'"), "{err}");
    let (code, _, err) = strata(&wrong_config, &["app", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused the credential of 'admin'"), "{err}");

    // Plain text to a TLS master gets nowhere.
    let (code, _, err) = strata(&config, &["agent", "list", "--insecure"]);
    assert_ne!(code, 0, "{err}");
}

/// The dashboards of a `strata local` cluster as its user opens them: logged in as
/// `admin` (its secret from WORK/admin.secret), over TLS with the cluster's CA. The
/// master's overview shows both agents; the apps dashboard shows an app deployed with
/// the CLI at its count; its task's page on the master tails the task's output, read
/// from the agent through the master.
#[test]
fn the_dashboards_of_strata_local_show_both_agents_an_app_and_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let user_config = dir.path().join("user/strata.json");
    let local = Local::start_with(dir.path(), &user_config, 2);
    let config = local.work.join("config.json");
    let secret = std::fs::read_to_string(local.work.join("admin.secret")).unwrap();
    let Some(b) = browser::Browser::start(
        "the_dashboards_of_strata_local_show_both_agents_an_app_and_its_output",
    ) else {
        return;
    };
    b.basic_auth("admin", secret.trim());
    let wait = Duration::from_secs(60);
    b.goto(&format!("https://{}/", local.master_addr()));
    b.wait_for(wait, "the overview with both agents", |b| {
        let active = b.text("#agents-active")?;
        let rows = b.text("#agents tbody")?;
        if active.trim() == "2"
            && rows.contains("strata-agent-1")
            && rows.contains("strata-agent-2")
        {
            Ok(())
        } else {
            Err(browser::pending(format!(
                "#agents-active {active:?}, rows {rows:?}"
            )))
        }
    });

    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/apps/hello.yaml");
    let (code, out, err) = strata(&config, &["app", "deploy", "-f", hello, "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    b.goto(&format!("https://{}/", local.apps_addr()));
    b.wait_for(wait, "hello at 2/2 on the apps dashboard", |b| {
        let count = b.text("#count-hello")?;
        if count.trim() == "2/2" {
            Ok(())
        } else {
            Err(browser::pending(format!("#count-hello {count:?}")))
        }
    });
    b.goto(&format!("https://{}/ui/apps/hello", local.apps_addr()));
    let link = b.wait_for(wait, "a task of hello linked to the master", |b| {
        b.find("#tasks tr[data-task-id] a")
            .map_err(|e| browser::pending(e.to_string()))
    });
    b.click(&link).unwrap();
    b.wait_for(wait, "the task's output through the master", |b| {
        let tail = b.text("#tail")?;
        if tail.contains("hello from") {
            Ok(())
        } else {
            Err(browser::pending(format!("#tail {tail:?}")))
        }
    });
    assert!(
        b.current_url()
            .starts_with(&format!("https://{}/ui/tasks/", local.master_addr())),
        "{}",
        b.current_url()
    );
    let caught = b.eval("return window.__strataErrors || []");
    assert_eq!(caught, serde_json::json!([]));
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");
}
