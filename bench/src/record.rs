//! `--record`: appends a run's headline figure to the history file (`bench/HISTORY.md`),
//! one markdown table row of date, commit, bench, command, figure and machine notes,
//! so that the next regression shows against the figures before it.
//!
//! ```text
//! bench run ─▶ Outcome { figure } ─▶ row (date UTC, `git rev-parse --short HEAD` of the
//! history file's tree, "+dirty" when tracked files differ from it) ─▶ appended
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The history file's table header; a file that does not exist yet starts with it.
const HEADER: &str = "| date | commit | bench | command | figure | machine notes |\n| --- | --- | --- | --- | --- | --- |\n";

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// After a successful run, append its headline figure to the history file.
    #[arg(long, global = true)]
    pub record: bool,
    /// What to say about the machine in the recorded row (its load, the disk, ...).
    #[arg(long, global = true, requires = "record", value_name = "TEXT")]
    pub note: Option<String>,
    /// The history file [default: bench/HISTORY.md of the source tree this binary
    /// was built from].
    #[arg(long, global = true, requires = "record", value_name = "FILE")]
    pub history: Option<PathBuf>,
}

impl RecordArgs {
    pub fn history_file(&self) -> PathBuf {
        self.history
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("HISTORY.md"))
    }
}

/// One row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub date: String,
    pub commit: String,
    pub bench: String,
    pub command: String,
    pub figure: String,
    pub notes: String,
}

impl Row {
    /// The row for a run of `bench` that ended now with `figure`.
    pub fn now(bench: &str, figure: &str, history: &Path, note: Option<&str>) -> Row {
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let mut notes = format!("{cores} cores");
        if let Some(note) = note {
            notes = format!("{notes}; {note}");
        }
        Row {
            date: date[..10].to_string(),
            commit: commit(history),
            bench: bench.to_string(),
            command: command(std::env::args().skip(1)),
            figure: figure.to_string(),
            notes,
        }
    }

    /// `| date | commit | ... |`, with `|` in a cell escaped and line breaks joined.
    pub fn to_markdown(&self) -> String {
        let cells = [
            &self.date,
            &self.commit,
            &self.bench,
            &format!("`{}`", self.command),
            &self.figure,
            &self.notes,
        ];
        let cells: Vec<String> = cells
            .iter()
            .map(|c| c.replace('|', "\\|").replace('\n', " "))
            .collect();
        format!("| {} |", cells.join(" | "))
    }
}

/// Appends `row` to the table at the end of `history` (made, header first, when it
/// does not exist).
pub fn append(history: &Path, row: &Row) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(history) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", history.display())),
    };
    let mut text = match &existing {
        None => HEADER.to_string(),
        Some(t) if !t.is_empty() && !t.ends_with('\n') => "\n".to_string(),
        Some(_) => String::new(),
    };
    text.push_str(&row.to_markdown());
    text.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(history)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", history.display()))
}

/// The command as run, without the recording flags: `strata-bench failover --restarts 3`.
fn command(mut args: impl Iterator<Item = String>) -> String {
    let mut kept = vec!["strata-bench".to_string()];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--record" => {}
            "--note" | "--history" => {
                args.next();
            }
            a if a.starts_with("--note=") || a.starts_with("--history=") => {}
            _ => kept.push(arg),
        }
    }
    kept.join(" ")
}

/// `git rev-parse --short HEAD` of the tree holding `history`, with `+dirty` when a
/// tracked file other than the history file differs from it; `unknown` outside git.
fn commit(history: &Path) -> String {
    let dir = history
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        // --no-optional-locks: reading the status never rewrites the index.
        Command::new("git")
            .args(["--no-optional-locks", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_string();
    };
    let name = history.file_name().map(|n| n.to_string_lossy().to_string());
    let exclude = format!(":(exclude){}", name.unwrap_or_default());
    let changed = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ":/",
        &exclude,
    ]);
    match changed {
        Some(c) if c.is_empty() => head,
        _ => format!("{head}+dirty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            date: "2026-12-07".into(),
            commit: "01d40cf".into(),
            bench: "launch".into(),
            command: "strata-bench --agents 100 --tasks 20000".into(),
            figure: "12000 tasks/s, p99 1600.0 ms".into(),
            notes: "2 cores | shared".into(),
        }
    }

    #[test]
    fn a_row_is_one_markdown_line_with_bars_escaped() {
        assert_eq!(
            row().to_markdown(),
            "| 2026-12-07 | 01d40cf | launch | `strata-bench --agents 100 --tasks 20000` | 12000 tasks/s, p99 1600.0 ms | 2 cores \\| shared |"
        );
    }

    #[test]
    fn the_command_leaves_out_the_recording_flags() {
        let args = [
            "failover",
            "--record",
            "--note",
            "quiet machine",
            "--restarts",
            "3",
            "--history=/tmp/h.md",
        ];
        assert_eq!(
            command(args.iter().map(|a| a.to_string())),
            "strata-bench failover --restarts 3"
        );
    }

    #[test]
    fn a_new_history_file_starts_with_the_header_and_rows_follow() {
        let dir =
            std::env::temp_dir().join(format!("strata-bench-record-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("HISTORY.md");
        append(&file, &row()).unwrap();
        std::fs::write(&file, std::fs::read_to_string(&file).unwrap().trim_end()).unwrap();
        append(&file, &row()).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let line = row().to_markdown();
        assert_eq!(text, format!("{HEADER}{line}\n{line}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
