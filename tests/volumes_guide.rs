//! docs/volumes.md (issue 17: persistent volumes, dynamic reservations, disk
//! isolation) runs as written, against a real master, two agents and `strata serve
//! --role apps`: its `sh` blocks in order, in one working dir, with the built
//! binaries first on PATH and `$STRATA_MASTER`, `$STRATA_SERVER` and
//! `STRATA_INSECURE` set (the environment the guide tells the reader to have).
//!
//! - `<!-- file: NAME -->` before a block writes that block to NAME in the working dir.
//! - A `text` block shows output: each of its lines must be a line of what the `sh`
//!   block before it printed (stdout and stderr), ids, hostnames, addresses, ages and
//!   measured usage aside ([`canonical`]); a `text` block of `strata_master_*` lines
//!   shows the master's `/metrics` at that point, and is compared as it is.
//! - `console` blocks (the MOUNT disk's agent command line and commands with
//!   placeholders) are run by [`the_guides_mount_disk_commands_work`] with the
//!   placeholders filled in; `json` is the ACL example, checked with the authorizer.
//!
//! Besides the output, what the guide says happens is checked where it happens: the
//! resident instance stays on its agent, its count is on that agent's disk after
//! `strata app rm` and gone after `--wipe`, the operator's volume directory comes and
//! goes, the disk hog ends `REASON_CONTAINER_LIMITATION_DISK`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, Proc, http_get, http_request, run_with_timeout, wait_until};
use serde_json::Value;

use common::GuideBlock as Block;

fn guide_blocks() -> Vec<Block> {
    common::guide_blocks("volumes.md")
}

// ---- comparing output -----------------------------------------------------------

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// An agent id: `46315299-8d04-4256-b80f-05be03d5cb6c`.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| is_hex(p))
}

/// A task id of the container framework: `counter.4f38c2c736ee`.
fn is_task_id(s: &str) -> bool {
    s.rsplit_once('.').is_some_and(|(app, id)| {
        !app.is_empty()
            && app.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            && id.len() == 12
            && is_hex(id)
    })
}

/// A host of the test cluster, or of the guide's: `agent1.test`.
fn is_host(s: &str) -> bool {
    s.strip_prefix("agent")
        .and_then(|r| r.strip_suffix(".test"))
        .is_some_and(is_digits)
}

/// `127.0.0.1:38275`.
fn is_address(s: &str) -> bool {
    s.split_once(':').is_some_and(|(ip, port)| {
        is_digits(port) && ip.split('.').count() == 4 && ip.split('.').all(is_digits)
    })
}

/// An age as the CLI prints it: `0s`, `12s`, `3m`.
fn is_age(s: &str) -> bool {
    s.len() >= 2
        && is_digits(&s[..s.len() - 1])
        && matches!(s.as_bytes()[s.len() - 1], b's' | b'm' | b'h' | b'd')
}

/// Usage as last measured (`strata volume list`'s USED): `0B`, `8K`, `1.5K`.
fn is_usage(s: &str) -> bool {
    s.len() >= 2
        && matches!(s.as_bytes()[s.len() - 1], b'B' | b'K')
        && is_decimal_or_digits(&s[..s.len() - 1])
}

fn is_decimal_or_digits(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => is_digits(a) && is_digits(b),
        None => is_digits(s),
    }
}

/// A measured amount: `100.0` (MB of a disk hog, which depends on when it was
/// measured).
fn is_decimal(s: &str) -> bool {
    s.contains('.') && is_decimal_or_digits(s)
}

/// One word of a line with what differs between runs (and between the guide's
/// cluster and the test's) replaced by its kind; punctuation around it is kept.
fn canonical_word(word: &str) -> String {
    const PUNCT: &[char] = &['"', '\'', '(', ')', ',', ':', ';'];
    let core = word.trim_start_matches(PUNCT);
    let before = &word[..word.len() - core.len()];
    let core = core.trim_end_matches(PUNCT);
    let after = &word[before.len() + core.len()..];
    let kind = if is_uuid(core) {
        "<agent-id>"
    } else if is_task_id(core) {
        "<task-id>"
    } else if is_host(core) {
        "<host>"
    } else if is_address(core) {
        "<address>"
    } else if is_age(core) {
        "<age>"
    } else if is_usage(core) {
        "<usage>"
    } else if is_decimal(core) {
        "<amount>"
    } else {
        core
    };
    format!("{before}{kind}{after}")
}

/// A line as words, with [`canonical_word`] applied: column alignment does not count.
fn canonical(line: &str) -> Vec<String> {
    line.split_whitespace().map(canonical_word).collect()
}

/// Every line the guide shows is a line of the output.
fn assert_shown(shown: &str, output: &str, block: &str) {
    let lines: Vec<Vec<String>> = output.lines().map(canonical).collect();
    let mut compared = 0;
    for line in shown.lines().filter(|l| !l.trim().is_empty()) {
        let want = canonical(line);
        assert!(
            lines.contains(&want),
            "docs/volumes.md shows the line\n  {line}\nbut the block\n{block}\nprinted no such \
             line (compared as {want:?}); it printed:\n{output}"
        );
        compared += 1;
    }
    assert!(compared > 0, "an empty text block after\n{block}");
}

#[test]
fn the_comparison_keeps_what_matters() {
    let same = |a: &str, b: &str| canonical(a) == canonical(b);
    assert!(same(
        "counter_0_0   apps   46315299-8d04-4256-b80f-05be03d5cb6c   64M    0B     counter.4f38c2c736ee   counter   0",
        "counter_0_0 apps ba2c3621-388e-474f-a4de-bcc97c8973ce 64M 12K counter.1316e3aa1dec counter 0",
    ));
    assert!(same(
        "task \"counter.4f38c2c736ee\": kill requested (RUNNING); app \"counter\" replaces it",
        "task \"counter.99aa00bb11cc\": kill requested (RUNNING); app \"counter\" replaces it",
    ));
    assert!(same(
        "Instance counter_0:  on agent1.test (volumes counter_0_0), task counter.4f38c2c736ee",
        "Instance counter_0:  on agent0.test (volumes counter_0_0), task counter.000000000000",
    ));
    assert!(!same("start 2", "start 3"));
    assert!(!same("counter_0_0 apps x 64M", "counter_0_0 apps x 128M"));
    assert!(!same(
        "Instance counter_0: on agent1.test (volumes counter_0_0), task x",
        "Instance counter_0: on agent1.test (volumes counter_0_0), no task"
    ));
    assert!(!same(
        "db(cpus:0.5,mem:256M,disk:512M)",
        "db(cpus:1,mem:256M,disk:512M)"
    ));
}

// ---- the cluster ----------------------------------------------------------------

/// The two agents of [`Cluster::start`] and `strata serve --role apps`.
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
    fn start() -> Apps {
        let cluster = Cluster::start(2);
        let serve = common::start_serve_with(
            cluster.dir.path(),
            &cluster.master.addr,
            &cluster.dir.path().join("apps-state"),
            "127.0.0.1:0",
            &["--role", "apps"],
        );
        let apps = Apps { cluster, serve };
        wait_until(
            Duration::from_secs(30),
            "the framework to subscribe",
            || apps.get("/v1/info").is_some_and(|v| v["connected"] == true),
        );
        apps
    }

    /// `GET path` of the App API, when it answers 200.
    fn get(&self, path: &str) -> Option<Value> {
        match http_request("GET", &format!("http://{}{path}", self.serve.addr), None) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    fn app_status(&self, id: &str) -> u16 {
        http_request(
            "GET",
            &format!("http://{}/v1/apps/{id}", self.serve.addr),
            None,
        )
        .map(|(code, _)| code)
        .unwrap_or_else(|e| panic!("GET /v1/apps/{id}: {e}"))
    }

    /// (agent id, hostname) of the app's only resident instance.
    fn resident(&self, app: &str) -> (String, String) {
        let view = self
            .get(&format!("/v1/apps/{app}"))
            .unwrap_or_else(|| panic!("app {app} is not there"));
        let residents = view["residents"].as_array().cloned().unwrap_or_default();
        assert_eq!(residents.len(), 1, "one resident instance: {view}");
        (
            residents[0]["agent_id"].as_str().unwrap().to_string(),
            residents[0]["hostname"].as_str().unwrap().to_string(),
        )
    }

    /// The work dir of the agent `agentN.test`.
    fn work_dir(&self, hostname: &str) -> PathBuf {
        let index: usize = hostname
            .strip_prefix("agent")
            .and_then(|r| r.strip_suffix(".test"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a test agent: {hostname}"));
        self.cluster.dir.path().join(format!("agent{index}"))
    }

    /// The hostname of the agent `id`, as the master's `/state` has it.
    fn hostname_of(&self, id: &str) -> String {
        self.cluster.state()["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["hostname"].as_str())
            .unwrap_or_else(|| panic!("no agent {id} in /state"))
            .to_string()
    }

    fn metrics(&self) -> String {
        http_get(&self.cluster.master_url("/metrics")).expect("the master's /metrics")
    }

    /// Waits until no agent has a volume or a reservation, as the master sees them.
    fn wait_nothing_reserved(&self) {
        wait_until(
            Duration::from_secs(30),
            "no volume and no reservation",
            || {
                self.cluster.state()["agents"]
                    .as_array()
                    .is_some_and(|agents| {
                        agents.iter().all(|a| {
                            a["volumes"] == serde_json::json!([])
                                && a["reserved"] == serde_json::json!({})
                        })
                    })
            },
        );
    }
}

/// The count the counter app keeps in its volume.
fn count_in(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("count"))
        .unwrap_or_else(|e| panic!("{}/count: {e}", dir.display()))
        .trim()
        .to_string()
}

/// The ACL example does what the guide says of it.
fn check_the_guides_acls(blocks: &[Block]) {
    use strata_security::{Acls, Action, Authorizer, Principal};
    let json = blocks
        .iter()
        .find(|b| b.info == "json" && b.text.contains("reserve_resources"))
        .expect("the guide's ACL example");
    let acls = Acls::parse(&json.text).unwrap_or_else(|e| panic!("the guide's ACLs: {e}"));
    let authz = Authorizer::new(acls);
    let user = |name: &str| Principal::User(name.into());
    for action in [
        Action::ReserveResources,
        Action::UnreserveResources,
        Action::CreateVolumes,
        Action::DestroyVolumes,
    ] {
        assert!(authz.permits(&user("ops"), action, "db"), "{action:?}");
        assert!(authz.permits(&user("apps"), action, "apps"), "{action:?}");
        assert!(!authz.permits(&user("apps"), action, "db"), "{action:?}");
        assert!(!authz.permits(&user("dev"), action, "apps"), "{action:?}");
    }
}

/// docs/volumes.md, run as written (see the module's doc).
#[test]
fn the_guide_runs() {
    let started = Instant::now();
    let blocks = guide_blocks();
    check_the_guides_acls(&blocks);
    let apps = Apps::start();
    let work = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        common::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut files = 0;
    let mut ran: Vec<&str> = Vec::new();
    let mut texts = 0;
    let mut metrics_checked = false;
    let mut deploys = 0;
    // The sh block last run and what it printed (stdout, then stderr).
    let mut last: Option<(&str, String)> = None;
    // The counter's instance: its agent and the volume's directory on its disk.
    let mut counter: Option<(String, PathBuf)> = None;
    // The operator's volume `pg` on its agent's disk.
    let mut pg_dir: Option<PathBuf> = None;
    for block in &blocks {
        if let Some(name) = &block.file {
            std::fs::write(work.path().join(name), &block.text).unwrap();
            files += 1;
            continue;
        }
        if block.info == "text" {
            let (sh, output) = last.as_ref().expect("a text block before any sh block");
            if block.text.lines().all(|l| l.starts_with("strata_master_")) {
                let metrics = apps.metrics();
                for line in block.text.lines() {
                    assert!(
                        metrics.lines().any(|m| m == line),
                        "the master's /metrics has no line {line:?} after\n{sh}\n{metrics}"
                    );
                }
                metrics_checked = true;
            } else {
                assert_shown(&block.text, output, sh);
            }
            texts += 1;
            continue;
        }
        if block.info != "sh" {
            continue;
        }
        let text = block.text.as_str();
        let mut cmd = Command::new("sh");
        cmd.args(["-e", "-c", text])
            .current_dir(work.path())
            .env("PATH", &path)
            .env("STRATA_MASTER", &apps.cluster.master.addr)
            .env("STRATA_SERVER", &apps.serve.addr)
            .env("STRATA_INSECURE", "1")
            .stdin(Stdio::null());
        let (code, out, err) = run_with_timeout(cmd, Duration::from_secs(90));
        assert_eq!(
            code, 0,
            "a block of docs/volumes.md failed:\n{text}\nstdout:\n{out}\nstderr:\n{err}"
        );
        ran.push(text);
        last = Some((text, format!("{out}{err}")));

        // What the guide says happened, where it happens.
        if text.contains("strata app deploy -f counter.yaml") {
            deploys += 1;
            let (agent, hostname) = apps.resident("counter");
            let dir = apps
                .work_dir(&hostname)
                .join("volumes/roles/apps/counter_0_0");
            match &counter {
                None => {
                    assert_eq!(deploys, 1);
                    counter = Some((agent, dir));
                }
                Some((first, first_dir)) => {
                    // Deployed again: back on its agent and its data.
                    assert_eq!(&agent, first, "the instance came back on its agent");
                    assert_eq!(&dir, first_dir);
                }
            }
        }
        if text.contains("strata task logs") {
            // The task has printed its count (the guide's loop waited for it), and the
            // count is on its agent's disk.
            let (agent, dir) = counter.as_ref().expect("the counter was deployed");
            let want = match (deploys, text.contains("strata task kill")) {
                (1, false) => "1",
                (1, true) => "2",
                (2, false) => "3",
                other => panic!("a logs block the test does not know: {other:?}\n{text}"),
            };
            assert_eq!(count_in(dir), want, "{text}");
            assert_eq!(
                &apps.resident("counter").0,
                agent,
                "the instance stays on its agent"
            );
        }
        if text.contains("strata app rm counter --wait") {
            // Removed, its data kept on the agent's disk.
            assert_eq!(apps.app_status("counter"), 404);
            let (_, dir) = counter.as_ref().unwrap();
            assert_eq!(count_in(dir), "2", "the volume outlives the app");
        }
        if text.contains("strata app rm counter --wipe") {
            assert_eq!(apps.app_status("counter"), 404);
            let (_, dir) = counter.as_ref().unwrap();
            wait_until(Duration::from_secs(30), "the volume's data gone", || {
                !dir.exists()
            });
            apps.wait_nothing_reserved();
        }
        if text.contains("strata volume create") {
            // The operator's volume is a directory on its agent's disk.
            let agents = apps.cluster.state()["agents"].clone();
            let agent = agents
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["volumes"].as_array().is_some_and(|v| !v.is_empty()))
                .unwrap_or_else(|| panic!("no agent has the volume: {agents}"))
                .clone();
            assert_eq!(agent["volumes"][0]["id"], "pg", "{agent}");
            assert_eq!(agent["reserved"]["disk(db)"], 512.0, "{agent}");
            let dir = apps
                .work_dir(agent["hostname"].as_str().unwrap())
                .join("volumes/roles/db/pg");
            assert!(dir.is_dir(), "{} is the volume", dir.display());
            pg_dir = Some(dir);
        }
        if text.contains("strata volume destroy") {
            let dir = pg_dir.take().expect("the volume was created before");
            wait_until(Duration::from_secs(30), "the volume's data gone", || {
                !dir.exists()
            });
            apps.wait_nothing_reserved();
            let agent = apps.hostname_of(
                out.lines()
                    .next()
                    .and_then(|l| l.strip_prefix("agent "))
                    .and_then(|l| l.split(':').next())
                    .expect("the destroy says which agent"),
            );
            assert!(dir.starts_with(apps.work_dir(&agent)), "{}", dir.display());
        }
        if text.contains("filler.yaml") {
            // The hog ended TASK_FAILED with the reason the guide names, and its app
            // was wiped.
            let state = apps.cluster.state();
            let failed = state["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| {
                    t["id"].as_str().is_some_and(|id| id.starts_with("filler."))
                        && t["state"] == "TASK_FAILED"
                })
                .unwrap_or_else(|| panic!("no failed task of filler: {state}"))
                .clone();
            assert_eq!(
                failed["reason"], "REASON_CONTAINER_LIMITATION_DISK",
                "{failed}"
            );
            assert!(
                failed["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("of its 74 MB (sandbox and 1 volume)")),
                "{failed}"
            );
            assert_eq!(apps.app_status("filler"), 404);
            apps.wait_nothing_reserved();
        }
    }
    // Every step ran, and every output shown was compared.
    assert_eq!(files, 2, "counter.yaml and filler.yaml");
    assert_eq!(ran.len(), 9, "the guide's sh blocks: {ran:#?}");
    assert_eq!(deploys, 2);
    assert!(metrics_checked, "the metrics shown were compared");
    assert_eq!(texts, 10, "the guide's text blocks");
    let (_, dir) = counter.expect("the counter ran");
    assert!(!dir.exists());
    assert!(pg_dir.is_none(), "the operator's volume was destroyed");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the guide took {:?}",
        started.elapsed()
    );
}

/// The guide's MOUNT disk commands (its `console` blocks, `/mnt/disk1` a directory of
/// the test's and its 100000 MB made 2000, `AGENT` the agent's id) do what it says: the
/// agent offers the disk, it is reserved and a volume of its whole size made on it, not
/// of a part; the volume is the disk's root (what was there is in it); destroyed, the
/// root is emptied and stays.
#[test]
fn the_guides_mount_disk_commands_work() {
    let blocks = guide_blocks();
    let console: Vec<&Block> = blocks.iter().filter(|b| b.info == "console").collect();
    assert_eq!(
        console.len(),
        2,
        "the agent's command line, then the commands"
    );
    let disk = tempfile::tempdir().unwrap();
    let root = disk.path().join("disk1");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("there-before"), "old data\n").unwrap();
    let fill = |s: &str| {
        s.replace("/mnt/disk1", root.to_str().unwrap())
            .replace("100000", "2000")
    };
    let agent_line = console[0]
        .text
        .trim()
        .strip_prefix("$ strata-agent ")
        .expect("the agent's command line");
    let resources = agent_line.split('\'').nth(1).expect("--resources '...'");
    let mut cluster = Cluster::start_with(0, common::fast_master_flags());
    cluster.add_agent_with(0, &fill(resources), &[]);
    cluster.wait_for_agents(1);
    let agent = cluster.state()["agents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let strata = |line: &str| {
        let mut cmd = Command::new("sh");
        cmd.args(["-e", "-c", line])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    common::bin_dir().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("STRATA_MASTER", &cluster.master.addr)
            .env("STRATA_INSECURE", "1")
            .stdin(Stdio::null());
        run_with_timeout(cmd, Duration::from_secs(30))
    };
    let commands: Vec<String> = console[1]
        .text
        .lines()
        .map(|l| fill(l.strip_prefix("$ ").expect("a command")).replace("AGENT", &agent))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    // Reserved whole; a volume of a part of it is refused.
    let (code, out, err) = strata(&commands[0]);
    assert_eq!(code, 0, "{}: {out}{err}", commands[0]);
    let part = commands[1].replace("--size 2000", "--size 1000");
    let (code, out, err) = strata(&part);
    assert_eq!(code, 1, "{part}: {out}{err}");
    assert!(err.contains("a MOUNT disk whole"), "{err}");
    let (code, out, err) = strata(&commands[1]);
    assert_eq!(code, 0, "{}: {out}{err}", commands[1]);
    assert!(
        out.contains(&format!(
            "created volume pg of role db (2G at data, on {}",
            root.display()
        )),
        "{out}"
    );
    let (code, out, err) = strata("strata volume list -o json");
    assert_eq!(code, 0, "{out}{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], "pg", "{listed}");
    assert_eq!(listed[0]["mount"], root.to_str().unwrap(), "{listed}");
    assert_eq!(listed[0]["size_mb"], 2000.0, "{listed}");
    // The volume is the root: what was on the disk is in it, and nothing was made
    // under the agent's work dir.
    assert!(root.join("there-before").exists());
    assert!(
        !cluster
            .dir
            .path()
            .join("agent0/volumes/roles/db/pg")
            .exists()
    );

    let (code, out, err) = strata(&format!("strata volume destroy {agent} --role db --id pg"));
    assert_eq!(code, 0, "{out}{err}");
    wait_until(Duration::from_secs(30), "the MOUNT disk emptied", || {
        std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none())
    });
    assert!(root.is_dir(), "the mount point stays");
}
