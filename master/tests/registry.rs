//! The `strata-master` binary on a registry it must not guess at: it exits 1 before it
//! listens, saying which file, what is wrong and what to do.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata-master");

/// Starts the master on `work_dir` and returns its exit code, stdout and stderr.
fn start_on(work_dir: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--work-dir"])
        .arg(work_dir)
        .output()
        .expect("run strata-master");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_complete_registry_log_line_it_cannot_read_stops_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("registry.log");
    // A line a newer master could write: complete (newline-terminated), not torn.
    let text = concat!(
        r#"{"seq":1,"op":{"AdmitAgent":{"id":"a1","hostname":"a1.example"}}}"#,
        "\n",
        r#"{"seq":2,"op":{"SetQuota":{"role":"web","cpus":4}}}"#,
        "\n",
    );
    std::fs::write(&log, text).unwrap();
    let (code, stdout, stderr) = start_on(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("listening"), "it must not start: {stdout}");
    for wanted in [
        log.display().to_string().as_str(),
        "line 2",
        "not a torn write",
        "newer strata-master",
    ] {
        assert!(stderr.contains(wanted), "{wanted:?} in {stderr}");
    }
    // The log is left as it was, for the master that can read it.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
}

#[test]
fn a_registry_of_a_newer_format_version_stops_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("registry.json");
    std::fs::write(&snapshot, r#"{"version": 7, "seq": 0, "registry": {}}"#).unwrap();
    let (code, stdout, stderr) = start_on(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("listening"), "it must not start: {stdout}");
    for wanted in [
        snapshot.display().to_string().as_str(),
        "format version 7",
        "reads version 3",
    ] {
        assert!(stderr.contains(wanted), "{wanted:?} in {stderr}");
    }
}
