//! `strata secret ...` and `strata config ...`: the master's configs and secrets
//! (issue 16) through its operator API (`CreateObject`, `RemoveObject`, `ListObjects`,
//! `GetConfig`).
//!
//! ```text
//!   strata secret create db-pass --from-file pass.txt   ─┐
//!   strata config update nginx.conf < nginx.conf        ─┼─▶ MasterClient ──gRPC──▶ master
//!   strata secret list / config list / config show      ─┘
//! ```
//!
//! Names and sizes are checked here first ([`strata_proto::objects`], the master's own
//! rules), so a bad name or a value past 500 KiB is refused before anything is sent. A
//! secret's value is never printed, and no message repeats a `--from-literal` value.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use serde::Serialize;
use strata_proto::objects::{MAX_OBJECT_BYTES, kind_name, validate_name, validate_size};
use strata_proto::v1::ObjectKind;

use super::Global;
use super::master_client::{MasterClient, ObjectInfo};
use super::output::{Output, Table, format_age, format_number, now_unix};

/// A `--from-literal` value: shown as `<redacted>` by `Debug`, so that no debug print
/// of a parsed command shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Literal(String);

impl From<String> for Literal {
    fn from(value: String) -> Literal {
        Literal(value)
    }
}

impl std::fmt::Debug for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a value comes from: a file, the command line, else stdin.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Read the value from this file (at most 500 KiB).
    #[arg(long, value_name = "FILE", conflicts_with = "from_literal")]
    pub from_file: Option<PathBuf>,
    /// The value itself (other users of this machine may see a command line: prefer
    /// --from-file or stdin for a secret).
    #[arg(long, value_name = "VALUE")]
    pub from_literal: Option<Literal>,
}

/// `strata secret ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretCommand {
    /// Create a secret (version 1) from --from-file, --from-literal or stdin. Its value
    /// is encrypted by the master and never shown again.
    Create {
        /// Lower-case letters, digits, '-', '_' and '.'.
        name: String,
        #[command(flatten)]
        source: Source,
    },
    /// Give a secret a new version (the container framework rolls the apps using it;
    /// tasks of other frameworks keep the version they started with).
    Update {
        name: String,
        #[command(flatten)]
        source: Source,
    },
    /// List the secrets you may see: versions, sizes, who may use them; never values.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a secret and all its versions: running tasks keep theirs, new launches
    /// that reference it fail.
    #[command(visible_alias = "remove")]
    Rm { name: String },
}

/// `strata config ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Create a config (version 1) from --from-file, --from-literal or stdin.
    Create {
        /// Lower-case letters, digits, '-', '_' and '.'.
        name: String,
        #[command(flatten)]
        source: Source,
    },
    /// Give a config a new version (the container framework rolls the apps using it).
    Update {
        name: String,
        #[command(flatten)]
        source: Source,
    },
    /// List the configs: versions, sizes, who may use them.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a config and all its versions: running tasks keep theirs, new launches
    /// that reference it fail.
    #[command(visible_alias = "remove")]
    Rm { name: String },
    /// Write a config's value to stdout, as it is.
    Show {
        name: String,
        /// A kept version (default: the latest).
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
}

/// One command of either group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        name: String,
        source: Source,
        update: bool,
    },
    List,
    Remove {
        name: String,
    },
    Show {
        name: String,
        version: Option<u64>,
    },
}

impl From<SecretCommand> for Op {
    fn from(c: SecretCommand) -> Op {
        match c {
            SecretCommand::Create { name, source } => Op::Create {
                name,
                source,
                update: false,
            },
            SecretCommand::Update { name, source } => Op::Create {
                name,
                source,
                update: true,
            },
            SecretCommand::List => Op::List,
            SecretCommand::Rm { name } => Op::Remove { name },
        }
    }
}

impl From<ConfigCommand> for Op {
    fn from(c: ConfigCommand) -> Op {
        match c {
            ConfigCommand::Create { name, source } => Op::Create {
                name,
                source,
                update: false,
            },
            ConfigCommand::Update { name, source } => Op::Create {
                name,
                source,
                update: true,
            },
            ConfigCommand::List => Op::List,
            ConfigCommand::Rm { name } => Op::Remove { name },
            ConfigCommand::Show { name, version } => Op::Show { name, version },
        }
    }
}

impl SecretCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        run(Op::from(self), ObjectKind::Secret, global).await
    }
}

impl ConfigCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        run(Op::from(self), ObjectKind::Config, global).await
    }
}

/// Checks what can be checked here, then connects and runs `op` on stdout.
async fn run(op: Op, kind: ObjectKind, global: &Global) -> anyhow::Result<u8> {
    let data = prepare(&op, kind, &mut std::io::stdin().lock())?;
    let master = global.master_client()?;
    let mut out = std::io::stdout().lock();
    let result = execute(op, kind, data, &master, global.output, &mut out).await;
    let _ = out.flush();
    result
}

/// The local checks of `op`: its name, and for a create its value (read from its
/// source, `stdin` when none is given) and that value's size. Answers the value.
pub fn prepare(op: &Op, kind: ObjectKind, stdin: &mut dyn Read) -> anyhow::Result<Vec<u8>> {
    let name = match op {
        Op::Create { name, .. } | Op::Remove { name } | Op::Show { name, .. } => name,
        Op::List => return Ok(Vec::new()),
    };
    validate_name(kind, name).map_err(anyhow::Error::msg)?;
    let Op::Create { source, .. } = op else {
        return Ok(Vec::new());
    };
    let (data, len) = match (&source.from_file, &source.from_literal) {
        (Some(path), _) => {
            let file = std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            // A large regular file is refused without reading it.
            if let Ok(meta) = file.metadata()
                && meta.is_file()
            {
                let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
                validate_size(kind, name, len).map_err(anyhow::Error::msg)?;
            }
            read_limited(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
        }
        (None, Some(Literal(value))) => (value.as_bytes().to_vec(), value.len()),
        (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading the {}'s value from stdin (end it with Ctrl-D)",
                    kind_name(kind)
                );
            }
            read_limited(stdin).map_err(|e| anyhow::anyhow!("cannot read stdin: {e}"))?
        }
    };
    validate_size(kind, name, len).map_err(anyhow::Error::msg)?;
    Ok(data)
}

/// Reads `reader` to its end; keeps at most one byte past the limit (so a huge input
/// costs no memory) but counts them all, for the message.
fn read_limited(reader: impl Read) -> std::io::Result<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut reader = reader;
    let mut len = 0usize;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        len = len.saturating_add(n);
        let room = (MAX_OBJECT_BYTES + 1).saturating_sub(data.len());
        data.extend_from_slice(&chunk[..n.min(room)]);
    }
    Ok((data, len))
}

/// Runs `op` (checked by [`prepare`], whose value is `data`) against `master`,
/// writing what it prints to `out`.
pub async fn execute(
    op: Op,
    kind: ObjectKind,
    data: Vec<u8>,
    master: &MasterClient,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let what = kind_name(kind);
    match op {
        Op::Create { name, update, .. } => {
            let version = master.create_object(kind, &name, data, update).await?;
            let action = if update { "updated" } else { "created" };
            match output {
                Output::Json => write_json(
                    out,
                    &serde_json::json!({
                        "kind": what, "name": name, "version": version, "action": action,
                    }),
                )?,
                Output::Table => {
                    writeln!(out, "{what} '{name}' {action} (version {version})")?;
                }
            }
        }
        Op::Remove { name } => {
            master.remove_object(kind, &name).await?;
            match output {
                Output::Json => write_json(
                    out,
                    &serde_json::json!({ "kind": what, "name": name, "action": "removed" }),
                )?,
                Output::Table => writeln!(out, "{what} '{name}' removed")?,
            }
        }
        Op::List => {
            let mut objects = master.list_objects(kind).await?;
            objects.sort_by(|a, b| a.name.cmp(&b.name));
            match output {
                Output::Json => write_json(out, &objects)?,
                Output::Table => {
                    let table = objects_table(&objects, now_unix());
                    if table.is_empty() {
                        eprintln!("No {what}s.");
                    } else {
                        out.write_all(table.render().as_bytes())?;
                    }
                }
            }
        }
        Op::Show { name, version } => {
            anyhow::ensure!(
                kind == ObjectKind::Config,
                "a {what}'s value is never shown"
            );
            let (_, value) = master.get_config(&name, version).await?;
            // The raw bytes, whatever -o says: `strata config show x > x.conf`.
            match out.write_all(&value) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
    }
    Ok(0)
}

/// Pretty JSON and a newline on `out`.
fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `NAME VERSION VERSIONS SIZE OWNER TASKS USABLE BY CREATED`: the latest version, how
/// many are kept, the latest's size and age at `now` (Unix seconds).
pub fn objects_table(objects: &[ObjectInfo], now: f64) -> Table {
    let mut table = Table::new(&[
        "name",
        "version",
        "versions",
        "size",
        "owner",
        "tasks",
        "usable by",
        "created",
    ]);
    for o in objects {
        let latest = o.latest();
        let mut usable: Vec<&str> = o.principals.iter().map(String::as_str).collect();
        if o.anyone {
            usable.push("anyone");
        }
        table.row([
            o.name.clone(),
            latest.map_or("-".into(), |v| v.version.to_string()),
            o.versions.len().to_string(),
            latest.map_or("-".into(), |v| format_bytes(v.size)),
            if o.owner.is_empty() {
                "-".into()
            } else {
                o.owner.clone()
            },
            o.tasks.to_string(),
            if usable.is_empty() {
                "-".into()
            } else {
                usable.join(",")
            },
            match latest {
                Some(v) if v.created_unix > 0.0 => format_age(now - v.created_unix),
                _ => "-".into(),
            },
        ]);
    }
    table
}

/// Bytes for people: `512B`, `1.5KiB`, `500KiB`, `2MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes}B")
    } else if b < KIB * KIB {
        format!("{}KiB", format_number((b / KIB * 10.0).round() / 10.0))
    } else {
        format!(
            "{}MiB",
            format_number((b / (KIB * KIB) * 10.0).round() / 10.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use strata_proto::v1;

    use super::*;
    use crate::cli::master_client::tests::{FakeMaster, ObjectCall};

    /// `strata secret|config ...` as clap parses them (with the global flags).
    #[derive(clap::Parser, Debug)]
    enum Cli {
        Secret(crate::cli::SecretArgs),
        Config(crate::cli::ConfigArgs),
    }

    fn parse_with_output(argv: &[&str]) -> Result<(Op, Output), clap::Error> {
        use clap::Parser;
        let mut full = vec!["strata"];
        full.extend_from_slice(argv);
        Ok(match Cli::try_parse_from(full)? {
            Cli::Secret(a) => (Op::from(a.command), a.global.output),
            Cli::Config(a) => (Op::from(a.command), a.global.output),
        })
    }

    fn parse(argv: &[&str]) -> Result<Op, clap::Error> {
        parse_with_output(argv).map(|(op, _)| op)
    }

    #[test]
    fn the_command_tree_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert_eq!(
            parse_with_output(&["secret", "list", "-o", "json"]).unwrap(),
            (Op::List, Output::Json)
        );
        assert_eq!(
            parse_with_output(&["config", "-o", "json", "ls"]).unwrap(),
            (Op::List, Output::Json)
        );
    }

    fn create(name: &str, source: Source, update: bool) -> Op {
        Op::Create {
            name: name.into(),
            source,
            update,
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(&["secret", "create", "db-pass", "--from-file", "p.txt"]).unwrap(),
            create(
                "db-pass",
                Source {
                    from_file: Some("p.txt".into()),
                    from_literal: None
                },
                false
            )
        );
        assert_eq!(
            parse(&["secret", "update", "db-pass", "--from-literal", "hunter2"]).unwrap(),
            create(
                "db-pass",
                Source {
                    from_file: None,
                    from_literal: Some(Literal("hunter2".into()))
                },
                true
            )
        );
        assert_eq!(
            parse(&["config", "create", "app.conf"]).unwrap(),
            create("app.conf", Source::default(), false)
        );
        assert_eq!(parse(&["secret", "ls"]).unwrap(), Op::List);
        assert_eq!(parse(&["config", "list"]).unwrap(), Op::List);
        assert_eq!(
            parse(&["secret", "rm", "x"]).unwrap(),
            Op::Remove { name: "x".into() }
        );
        assert_eq!(
            parse(&["config", "show", "x", "--version", "3"]).unwrap(),
            Op::Show {
                name: "x".into(),
                version: Some(3)
            }
        );
        // No `show` for secrets; one source at most; and the literal never in errors.
        assert!(parse(&["secret", "show", "x"]).is_err());
        let err = parse(&[
            "secret",
            "create",
            "x",
            "--from-file",
            "f",
            "--from-literal",
            "hunter2",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let op = parse(&["secret", "create", "x", "--from-literal", "hunter2"]).unwrap();
        assert!(!format!("{op:?}").contains("hunter2"));
    }

    fn literal(value: &str) -> Source {
        Source {
            from_file: None,
            from_literal: Some(Literal(value.into())),
        }
    }

    /// Runs `op` as the CLI would against `fake`, stdin `stdin`; answers the result
    /// and what was printed.
    async fn run_on(
        fake: &FakeMaster,
        op: Op,
        kind: ObjectKind,
        output: Output,
        stdin: &[u8],
    ) -> (anyhow::Result<u8>, Vec<u8>) {
        let addr = fake.clone().serve().await;
        let master = MasterClient::new(&addr);
        let mut out = Vec::new();
        let result = match prepare(&op, kind, &mut Cursor::new(stdin.to_vec())) {
            Ok(data) => execute(op, kind, data, &master, output, &mut out).await,
            Err(e) => Err(e),
        };
        (result, out)
    }

    fn creates(fake: &FakeMaster) -> Vec<v1::CreateObjectRequest> {
        fake.object_calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                ObjectCall::Create(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn create_from_a_file_a_literal_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass.txt");
        std::fs::write(&file, b"s3cret\n").unwrap();
        let fake = FakeMaster::default();
        let source = Source {
            from_file: Some(file),
            from_literal: None,
        };
        let (result, out) = run_on(
            &fake,
            create("db-pass", source, false),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "secret 'db-pass' created (version 1)\n"
        );

        let (result, out) = run_on(
            &fake,
            create("db-pass", literal("hunter2"), true),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        assert_eq!(result.unwrap(), 0);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "secret 'db-pass' updated (version 2)\n");

        let (result, out) = run_on(
            &fake,
            create("app.conf", Source::default(), false),
            ObjectKind::Config,
            Output::Json,
            b"listen 80;\n",
        )
        .await;
        assert_eq!(result.unwrap(), 0);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "config", "name": "app.conf", "version": 1, "action": "created"})
        );

        let sent = creates(&fake);
        assert_eq!(sent.len(), 3);
        assert_eq!(
            (
                sent[0].kind,
                sent[0].name.as_str(),
                &sent[0].data[..],
                sent[0].update
            ),
            (
                ObjectKind::Secret as i32,
                "db-pass",
                &b"s3cret\n"[..],
                false
            )
        );
        assert_eq!(
            (sent[1].name.as_str(), &sent[1].data[..], sent[1].update),
            ("db-pass", &b"hunter2"[..], true)
        );
        assert_eq!(
            (sent[2].kind, &sent[2].data[..]),
            (ObjectKind::Config as i32, &b"listen 80;\n"[..])
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_any_call() {
        let fake = FakeMaster::default();
        let big = "x".repeat(MAX_OBJECT_BYTES + 1);
        let (result, _) = run_on(
            &fake,
            create("big", literal(&big), false),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        let err = result.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "secret 'big' is {} bytes; the limit is {MAX_OBJECT_BYTES} (500 KiB)",
                MAX_OBJECT_BYTES + 1
            )
        );
        assert!(!err.contains("xxxx"));

        let stdin = vec![b'y'; 3 * MAX_OBJECT_BYTES];
        let (result, _) = run_on(
            &fake,
            create("big", Source::default(), false),
            ObjectKind::Config,
            Output::Table,
            &stdin,
        )
        .await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config 'big' is {} bytes", 3 * MAX_OBJECT_BYTES)),
            "{err}"
        );

        let (result, _) = run_on(
            &fake,
            create("Bad/Name", literal("hunter2"), false),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("secret name 'Bad/Name' is not valid"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        let (result, _) = run_on(
            &fake,
            Op::Remove { name: "".into() },
            ObjectKind::Config,
            Output::Table,
            b"",
        )
        .await;
        assert_eq!(result.unwrap_err().to_string(), "a config name is empty");

        let missing = std::path::PathBuf::from("/nonexistent/strata-test-secret");
        let source = Source {
            from_file: Some(missing),
            from_literal: None,
        };
        let (result, _) = run_on(
            &fake,
            create("ok", source, false),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "cannot read /nonexistent/strata-test-secret: No such file or directory (os error 2)"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'z'; MAX_OBJECT_BYTES + 10]).unwrap();
        let source = Source {
            from_file: Some(file),
            from_literal: None,
        };
        let (result, _) = run_on(
            &fake,
            create("big", source, true),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        assert!(
            result
                .unwrap_err()
                .to_string()
                .starts_with(&format!("secret 'big' is {} bytes", MAX_OBJECT_BYTES + 10))
        );

        assert!(fake.object_calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn refusals_are_the_masters_words_and_remove_says_so() {
        let fake = FakeMaster::default();
        *fake.refuse.lock().unwrap() =
            Some(tonic::Status::already_exists("secret 'db-pass' exists"));
        let (result, out) = run_on(
            &fake,
            create("db-pass", literal("hunter2"), false),
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        let err = result.unwrap_err().to_string();
        assert_eq!(err, "secret 'db-pass' exists");
        assert!(out.is_empty());

        *fake.refuse.lock().unwrap() = None;
        let (result, out) = run_on(
            &fake,
            Op::Remove {
                name: "db-pass".into(),
            },
            ObjectKind::Secret,
            Output::Table,
            b"",
        )
        .await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "secret 'db-pass' removed\n"
        );
        let calls = fake.object_calls.lock().unwrap().clone();
        assert_eq!(
            calls.last().unwrap(),
            &ObjectCall::Remove(v1::RemoveObjectRequest {
                kind: ObjectKind::Secret as i32,
                name: "db-pass".into()
            })
        );
    }

    fn listed(name: &str, kind: ObjectKind, sizes: &[u64], created: f64) -> v1::ObjectInfo {
        v1::ObjectInfo {
            kind: kind as i32,
            name: name.into(),
            owner: "ops".into(),
            versions: sizes
                .iter()
                .enumerate()
                .map(|(i, size)| v1::ObjectVersionInfo {
                    version: i as u64 + 3,
                    size: *size,
                    created_unix: created + i as f64,
                })
                .collect(),
            principals: vec!["ops".into(), "web-*".into()],
            anyone: false,
            tasks: 2,
        }
    }

    #[tokio::test]
    async fn list_as_a_table_and_as_json() {
        let fake = FakeMaster::default();
        let now = now_unix().floor();
        let mut open = listed("public.conf", ObjectKind::Config, &[10], now - 14_400.0);
        open.principals = vec![];
        open.anyone = true;
        open.owner = String::new();
        *fake.objects.lock().unwrap() = vec![
            listed("web-tls", ObjectKind::Secret, &[100, 1536], now - 300.0),
            listed("db-pass", ObjectKind::Secret, &[7], now - 90_000.0),
            open,
        ];
        let master = MasterClient::new(&fake.clone().serve().await);
        let secrets = master.list_objects(ObjectKind::Secret).await.unwrap();
        assert_eq!(secrets.len(), 2);
        let mut sorted = secrets.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let table = objects_table(&sorted, now + 0.5);
        assert_eq!(
            table.render(),
            "NAME      VERSION   VERSIONS   SIZE     OWNER   TASKS   USABLE BY   CREATED\n\
             db-pass   3         1          7B       ops     2       ops,web-*   25h\n\
             web-tls   4         2          1.5KiB   ops     2       ops,web-*   4m59s\n"
        );
        let configs = master.list_objects(ObjectKind::Config).await.unwrap();
        assert_eq!(
            objects_table(&configs, now).render(),
            "NAME          VERSION   VERSIONS   SIZE   OWNER   TASKS   USABLE BY   CREATED\n\
             public.conf   3         1          10B    -       2       anyone      4h\n"
        );

        let (result, out) = run_on(&fake, Op::List, ObjectKind::Secret, Output::Json, b"").await;
        assert_eq!(result.unwrap(), 0);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
        assert_eq!(json[0]["name"], "db-pass");
        assert_eq!(
            json[1],
            serde_json::json!({
                "kind": "secret", "name": "web-tls", "owner": "ops",
                "versions": [
                    {"version": 3, "size": 100, "created_unix": now - 300.0},
                    {"version": 4, "size": 1536, "created_unix": now - 299.0},
                ],
                "principals": ["ops", "web-*"], "anyone": false, "tasks": 2,
            })
        );
        let (result, out) = run_on(&fake, Op::List, ObjectKind::Secret, Output::Table, b"").await;
        assert_eq!(result.unwrap(), 0);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("NAME "), "{out}");
        assert!(out.contains("web-tls"), "{out}");
    }

    #[tokio::test]
    async fn config_show_writes_the_raw_bytes() {
        let fake = FakeMaster::default();
        *fake.configs.lock().unwrap() = vec![
            ("app.conf".into(), 1, b"old\n".to_vec()),
            ("app.conf".into(), 2, vec![0, 159, 146, 150, b'\n']),
        ];
        let show = |version| Op::Show {
            name: "app.conf".into(),
            version,
        };
        let (result, out) = run_on(&fake, show(None), ObjectKind::Config, Output::Json, b"").await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(out, vec![0, 159, 146, 150, b'\n']);
        let (result, out) =
            run_on(&fake, show(Some(1)), ObjectKind::Config, Output::Table, b"").await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(out, b"old\n");
        let (result, _) =
            run_on(&fake, show(Some(7)), ObjectKind::Config, Output::Table, b"").await;
        assert_eq!(result.unwrap_err().to_string(), "no config 'app.conf'");
        let calls = fake.object_calls.lock().unwrap().clone();
        assert_eq!(
            calls[1],
            ObjectCall::GetConfig(v1::GetConfigRequest {
                name: "app.conf".into(),
                version: 1
            })
        );
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1KiB");
        assert_eq!(format_bytes(1536), "1.5KiB");
        assert_eq!(format_bytes(500 * 1024), "500KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 / 2), "1.5MiB");
    }
}
