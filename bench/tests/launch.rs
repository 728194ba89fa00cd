//! The default launch bench, small: a user runs it with `--record` and sees its figures
//! on stdout and one more row in the history file.

use std::process::Command;

#[test]
fn a_small_launch_run_prints_its_figures_and_records_a_row() {
    let dir = std::env::temp_dir().join(format!("strata-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = dir.join("HISTORY.md");
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "--agents",
            "2",
            "--tasks",
            "50",
            "--timeout",
            "60",
            "--record",
        ])
        .args(["--note", "test run", "--history"])
        .arg(&history)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("tasks: 50\n"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[lines.len() - 2].starts_with("launch_throughput: "),
        "{stdout}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("launch_latency_p99: "),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&history).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].starts_with("| date | commit | bench |"), "{text}");
    let row = rows[2];
    assert!(
        row.contains("| launch | `strata-bench --agents 2 --tasks 50 --timeout 60` | "),
        "{row}"
    );
    assert!(row.contains(" tasks/s, p99 "), "{row}");
    assert!(row.ends_with("cores; test run |"), "{row}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--secure` (TLS, agents joining with the join token, the framework's credential
/// checked and authorized on every call), small: the secure path runs to the end and
/// prints the same figures.
#[test]
fn a_small_secure_launch_run_prints_its_figures() {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args([
            "--agents",
            "2",
            "--tasks",
            "20",
            "--timeout",
            "30",
            "--secure",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("tasks: 20\n"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[lines.len() - 2].starts_with("launch_throughput: "),
        "{stdout}"
    );
    assert!(
        lines[lines.len() - 1].starts_with("launch_latency_p99: "),
        "{stdout}"
    );
    // Secure: nothing ran in plain text.
    assert!(stderr.contains("secure (TLS"), "{stderr}");
    assert!(!stderr.contains("INSECURE"), "{stderr}");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}
