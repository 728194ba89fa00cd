//! `strata volume list|create|destroy`: the cluster's persistent volumes (issue 17)
//! through the master's operator API (`GetVolumes`, `CreateVolumes`, `DestroyVolumes`).
//!
//! ```text
//!   strata agent reserve a1 'disk:2048' --role db      (reserved disk first)
//!   strata volume create a1 --role db --id data --path data --size 1024
//!   strata volume list                                  ─▶ GetVolumes
//!   strata volume destroy a1 --role db --id data        ─▶ GetVolumes, then DestroyVolumes
//! ```
//!
//! A volume made by the container framework has the persistence id
//! `<app id>_<instance>_<n>` (app ids have no `_`), e.g. `pg_0_0`: the list shows its
//! app and instance ([`app_instance`]); any other id is a volume made by another
//! framework or an operator.

use std::io::Write;

use strata_framework_sdk::ops;

use super::Global;
use super::master_client::{MasterClient, ResourceAction, Volume};
use super::output::{Output, Table, format_mb, format_number};

/// `strata volume ...`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq)]
pub enum VolumeCommand {
    /// List the persistent volumes: agent, role, size, usage, the task using each and,
    /// for the container framework's, their app and instance.
    #[command(visible_alias = "ls")]
    List,
    /// Create a persistent volume out of disk of an agent reserved for a role
    /// (`strata agent reserve AGENT 'disk:SIZE' --role ROLE` first). Needs the
    /// `create_volumes` ACL for the role.
    Create {
        /// The agent's id (`strata agent list`).
        agent_id: String,
        /// The role whose reserved disk it is made of.
        #[arg(long)]
        role: String,
        /// The persistence id, unique per agent and role: letters, digits, '_', '.', '-'.
        #[arg(long)]
        id: String,
        /// Where tasks see it: a path relative to their sandbox, e.g. `data`.
        #[arg(long, value_name = "CONTAINER_PATH")]
        path: String,
        /// Its size in MiB (a MOUNT disk: the whole disk's size).
        #[arg(long, value_name = "MIB")]
        size: f64,
        /// Tasks mount it read-only.
        #[arg(long)]
        read_only: bool,
        /// Make it on the agent's MOUNT disk mounted at ROOT (reserved for the role,
        /// used whole) instead of its work dir.
        #[arg(long, value_name = "ROOT")]
        mount: Option<String>,
    },
    /// Destroy a persistent volume and its data; its disk stays reserved for the role.
    /// No task may be using it. Needs the `destroy_volumes` ACL for the role.
    Destroy {
        /// The agent's id (`strata volume list`).
        agent_id: String,
        /// The volume's role.
        #[arg(long)]
        role: String,
        /// The volume's persistence id.
        #[arg(long)]
        id: String,
    },
}

impl VolumeCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        let master = global.master_client()?;
        let mut out = std::io::stdout();
        execute(self, &master, global.output, &mut out).await
    }
}

/// Runs `command` against `master`, printing on `out`.
pub async fn execute(
    command: VolumeCommand,
    master: &MasterClient,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    match command {
        VolumeCommand::List => {
            let volumes = master.volumes().await?;
            match output {
                Output::Json => {
                    let shown: Vec<serde_json::Value> = volumes.iter().map(volume_json).collect();
                    writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
                }
                Output::Table if volumes.is_empty() => eprintln!("No volumes."),
                Output::Table => out.write_all(volumes_table(&volumes).render().as_bytes())?,
            }
        }
        VolumeCommand::Create {
            agent_id,
            role,
            id,
            path,
            size,
            read_only,
            mount,
        } => {
            let volume = match &mount {
                Some(root) => {
                    ops::persistent_volume_on_mount(&role, &id, &path, size, read_only, root)?
                }
                None => ops::persistent_volume(&role, &id, &path, size, read_only)?,
            };
            master
                .resource_operation(ResourceAction::Create, &agent_id, volume.to_proto())
                .await?;
            match output {
                Output::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "agent_id": agent_id, "action": "create", "role": role, "id": id,
                        "container_path": path, "size_mb": size, "read_only": read_only,
                        "mount": mount,
                    }))?
                )?,
                Output::Table => {
                    let mut how = format!("{} at {path}", format_mb(size));
                    if read_only {
                        how.push_str(", read-only");
                    }
                    if let Some(root) = &mount {
                        how.push_str(&format!(", on {root}"));
                    }
                    writeln!(
                        out,
                        "agent {agent_id}: created volume {id} of role {role} ({how})"
                    )?;
                }
            }
        }
        VolumeCommand::Destroy { agent_id, role, id } => {
            let volumes = master.volumes().await?;
            let volume = find(&volumes, &agent_id, &role, &id)?;
            master
                .resource_operation(
                    ResourceAction::Destroy,
                    &agent_id,
                    vec![volume.resource.clone()],
                )
                .await?;
            match output {
                Output::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "agent_id": agent_id, "action": "destroy", "role": role, "id": id,
                    }))?
                )?,
                Output::Table => writeln!(
                    out,
                    "agent {agent_id}: destroyed volume {id} of role {role} (its data is \
                     removed; its {} of disk stay reserved for {role})",
                    format_mb(volume.size_mb)
                )?,
            }
        }
    }
    Ok(0)
}

/// The volume `id` of `role` on `agent_id`, or an error saying where volumes of that
/// id are, if anywhere.
pub fn find<'a>(
    volumes: &'a [Volume],
    agent_id: &str,
    role: &str,
    id: &str,
) -> anyhow::Result<&'a Volume> {
    if let Some(v) = volumes
        .iter()
        .find(|v| v.agent_id == agent_id && v.role == role && v.id == id)
    {
        return Ok(v);
    }
    let elsewhere: Vec<String> = volumes
        .iter()
        .filter(|v| v.id == id)
        .map(|v| format!("agent {} role {}", v.agent_id, v.role))
        .collect();
    let hint = if elsewhere.is_empty() {
        "`strata volume list` shows the volumes".to_string()
    } else {
        format!("there is one on {}", elsewhere.join(", "))
    };
    anyhow::bail!("no volume '{id}' of role '{role}' on agent '{agent_id}' ({hint})")
}

/// The app and instance of a volume made by the container framework, from its
/// persistence id `<app id>_<instance>_<n>` (`pg_0_0`: app `pg`, instance `0`);
/// `None` for any other id.
pub fn app_instance(id: &str) -> Option<(&str, &str)> {
    let mut parts = id.split('_');
    let (app, instance, n) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (parts.next().is_none() && !app.is_empty() && digits(instance) && digits(n))
        .then_some((app, instance))
}

/// Bytes for people: `0B`, `512B`, `1.5K`, `300M`, `2.1G`.
pub fn format_used(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        value /= 1024.0;
        unit = u;
        if value < 1024.0 {
            break;
        }
    }
    let shown = if value < 10.0 {
        (value * 10.0).round() / 10.0
    } else {
        value.round()
    };
    format!("{}{unit}", format_number(shown))
}

/// `ID ROLE AGENT SIZE USED TASK APP INSTANCE`, by agent, role and id.
pub fn volumes_table(volumes: &[Volume]) -> Table {
    let mut table = Table::new(&[
        "id", "role", "agent", "size", "used", "task", "app", "instance",
    ]);
    let mut sorted: Vec<&Volume> = volumes.iter().collect();
    sorted.sort_by(|a, b| (&a.agent_id, &a.role, &a.id).cmp(&(&b.agent_id, &b.role, &b.id)));
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for v in sorted {
        let (app, instance) = app_instance(&v.id).unwrap_or(("-", "-"));
        table.row([
            v.id.clone(),
            v.role.clone(),
            v.agent_id.clone(),
            format_mb(v.size_mb),
            format_used(v.used_bytes),
            or_dash(&v.task_id),
            app.to_string(),
            instance.to_string(),
        ]);
    }
    table
}

/// A volume in `-o json`: [`Volume`] with its app and instance (null for volumes
/// not made by the container framework).
fn volume_json(v: &Volume) -> serde_json::Value {
    let mut json = serde_json::to_value(v).unwrap_or_default();
    let (app, instance) = match app_instance(&v.id) {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    if let Some(map) = json.as_object_mut() {
        map.insert("app".into(), app.into());
        map.insert("instance".into(), instance.into());
    }
    json
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use strata_proto::{Resources, v1};
    use tonic::Status;

    use super::*;
    use crate::cli::master_client::tests::FakeMaster;

    /// `strata volume ...` as clap parses it.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: VolumeCommand,
    }

    fn parse(args: &[&str]) -> Result<VolumeCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("volume").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    /// A volume as the master's `GetVolumes` shows it.
    pub fn volume_state(
        agent: &str,
        role: &str,
        id: &str,
        size: f64,
        used: u64,
    ) -> v1::VolumeState {
        let mut wire = ops::persistent_volume(role, id, "data", size, false)
            .unwrap()
            .to_proto()
            .remove(0);
        wire.disk
            .as_mut()
            .unwrap()
            .persistence
            .as_mut()
            .unwrap()
            .principal = "ops".into();
        v1::VolumeState {
            agent_id: agent.into(),
            hostname: format!("host-{agent}"),
            role: role.into(),
            volume: Some(wire),
            used_bytes: used,
            ..Default::default()
        }
    }

    fn volumes() -> Vec<v1::VolumeState> {
        let mut used = volume_state("a1", "db", "pg_0_0", 1024.0, 3 * 1024 * 1024 + 200_000);
        used.framework_id = "f1".into();
        used.task_id = "pg.abc".into();
        vec![
            volume_state("a2", "web", "cache", 512.0, 0),
            used,
            volume_state("a1", "db", "pg_1_0", 2048.0, 5 << 30),
        ]
    }

    async fn run_on(
        fake: &FakeMaster,
        command: VolumeCommand,
        output: Output,
    ) -> (anyhow::Result<u8>, String) {
        let addr = fake.clone().serve().await;
        let master = MasterClient::new(&addr);
        let mut out = Vec::new();
        let result = execute(command, &master, output, &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn ids_of_the_container_framework_name_their_app_and_instance() {
        assert_eq!(app_instance("pg_0_0"), Some(("pg", "0")));
        assert_eq!(app_instance("web-api_12_3"), Some(("web-api", "12")));
        for other in [
            "data", "pg_0", "pg_0_0_1", "_0_0", "pg__0", "pg_a_0", "pg_0_x", "",
        ] {
            assert_eq!(app_instance(other), None, "{other}");
        }
    }

    #[test]
    fn usage_for_people() {
        assert_eq!(format_used(0), "0B");
        assert_eq!(format_used(1023), "1023B");
        assert_eq!(format_used(1536), "1.5K");
        assert_eq!(format_used(300 << 20), "300M");
        assert_eq!(format_used((21 << 30) / 10), "2.1G");
        assert_eq!(format_used(3 << 40), "3T");
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&["ls"]).unwrap(), VolumeCommand::List);
        assert_eq!(
            parse(&[
                "create",
                "a1",
                "--role",
                "db",
                "--id",
                "data",
                "--path",
                "d",
                "--size",
                "512",
                "--read-only",
                "--mount",
                "/mnt/d1"
            ])
            .unwrap(),
            VolumeCommand::Create {
                agent_id: "a1".into(),
                role: "db".into(),
                id: "data".into(),
                path: "d".into(),
                size: 512.0,
                read_only: true,
                mount: Some("/mnt/d1".into()),
            }
        );
        assert!(parse(&["create", "a1", "--role", "db", "--id", "x", "--path", "d"]).is_err());
        assert_eq!(
            parse(&["destroy", "a1", "--role", "db", "--id", "data"]).unwrap(),
            VolumeCommand::Destroy {
                agent_id: "a1".into(),
                role: "db".into(),
                id: "data".into(),
            }
        );
        assert!(parse(&["destroy", "a1", "--id", "data"]).is_err());
    }

    #[tokio::test]
    async fn list_shows_volumes_with_their_app_and_instance() {
        let fake = FakeMaster::default();
        *fake.volumes.lock().unwrap() = volumes();
        let (result, out) = run_on(&fake, VolumeCommand::List, Output::Table).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            out,
            "ID       ROLE   AGENT   SIZE   USED   TASK     APP   INSTANCE\n\
             pg_0_0   db     a1      1G     3.2M   pg.abc   pg    0\n\
             pg_1_0   db     a1      2G     5G     -        pg    1\n\
             cache    web    a2      512M   0B     -        -     -\n"
        );

        let (result, out) = run_on(&fake, VolumeCommand::List, Output::Json).await;
        assert_eq!(result.unwrap(), 0);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            json[1],
            serde_json::json!({
                "id": "pg_0_0", "role": "db", "agent_id": "a1", "hostname": "host-a1",
                "principal": "ops", "container_path": "data", "read_only": false,
                "mount": null, "size_mb": 1024.0, "used_bytes": 3 * 1024 * 1024 + 200_000,
                "framework_id": "f1", "task_id": "pg.abc", "app": "pg", "instance": "0",
            })
        );
        assert_eq!(json[0]["app"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn an_unreadable_volume_is_an_error_naming_its_agent() {
        let fake = FakeMaster::default();
        let mut bad = volume_state("a1", "db", "v", 1.0, 0);
        bad.volume.as_mut().unwrap().disk = None;
        *fake.volumes.lock().unwrap() = vec![bad];
        let (result, _) = run_on(&fake, VolumeCommand::List, Output::Table).await;
        let text = result.unwrap_err().to_string();
        assert!(text.contains("a volume of agent 'a1'"), "{text}");
        assert!(text.contains("not a persistent volume"), "{text}");
    }

    #[tokio::test]
    async fn create_sends_the_volume_without_a_principal() {
        let fake = FakeMaster::default();
        let create = VolumeCommand::Create {
            agent_id: "a1".into(),
            role: "db".into(),
            id: "data".into(),
            path: "data/pg".into(),
            size: 512.0,
            read_only: true,
            mount: None,
        };
        let (result, out) = run_on(&fake, create.clone(), Output::Table).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            out,
            "agent a1: created volume data of role db (512M at data/pg, read-only)\n"
        );
        let calls = fake.resource_calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "CreateVolumes");
        assert_eq!(calls[0].1.agent_id, "a1");
        let sent = Resources::try_from_proto(&calls[0].1.resources).unwrap();
        assert_eq!(sent.to_string(), "disk(db)[data:data/pg:ro]:512");
        assert_eq!(
            sent.volumes()
                .next()
                .unwrap()
                .persistence()
                .unwrap()
                .principal,
            ""
        );

        // Bad input is refused before anything is sent.
        let VolumeCommand::Create { role, id, size, .. } = create.clone() else {
            unreachable!()
        };
        let bad = VolumeCommand::Create {
            agent_id: "a1".into(),
            role,
            id,
            path: "../etc".into(),
            size,
            read_only: false,
            mount: None,
        };
        let (result, _) = run_on(&fake, bad, Output::Table).await;
        assert!(result.unwrap_err().to_string().contains("'..'"));
        assert_eq!(fake.resource_calls.lock().unwrap().len(), 1);

        // The master's refusal, in its words.
        *fake.refuse.lock().unwrap() = Some(Status::failed_precondition(
            "CREATE on agent 'a1' refused: the volumes need disk(db):512 of disk reserved for role 'db'",
        ));
        let (result, out) = run_on(&fake, create, Output::Table).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "CREATE on agent 'a1' refused: the volumes need disk(db):512 of disk reserved for role 'db'"
        );
        assert_eq!(out, "");
    }

    #[tokio::test]
    async fn destroy_sends_the_volume_as_the_master_has_it() {
        let fake = FakeMaster::default();
        *fake.volumes.lock().unwrap() = volumes();
        let destroy = |agent: &str, role: &str, id: &str| VolumeCommand::Destroy {
            agent_id: agent.into(),
            role: role.into(),
            id: id.into(),
        };
        let (result, out) = run_on(&fake, destroy("a1", "db", "pg_1_0"), Output::Table).await;
        assert_eq!(result.unwrap(), 0);
        assert_eq!(
            out,
            "agent a1: destroyed volume pg_1_0 of role db (its data is removed; its 2G of disk \
             stay reserved for db)\n"
        );
        let calls = fake.resource_calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "DestroyVolumes");
        assert_eq!(
            calls[0].1.resources,
            vec![volumes()[2].volume.clone().unwrap()]
        );

        // Not there: nothing sent, and where a volume of that id is.
        let (result, _) = run_on(&fake, destroy("a2", "db", "pg_1_0"), Output::Table).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "no volume 'pg_1_0' of role 'db' on agent 'a2' (there is one on agent a1 role db)"
        );
        let (result, _) = run_on(&fake, destroy("a1", "db", "nope"), Output::Table).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "no volume 'nope' of role 'db' on agent 'a1' (`strata volume list` shows the volumes)"
        );
        assert_eq!(fake.resource_calls.lock().unwrap().len(), 1);

        // In use: the master says so.
        *fake.refuse.lock().unwrap() = Some(Status::failed_precondition(
            "volume 'pg_0_0' is used by task 'pg.abc'",
        ));
        let (result, _) = run_on(&fake, destroy("a1", "db", "pg_0_0"), Output::Json).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "volume 'pg_0_0' is used by task 'pg.abc'"
        );
    }
}
