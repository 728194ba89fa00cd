//! Launch latency of a cgroup-isolated `true` task on one agent: from the RunTask the
//! master sends to the TASK_RUNNING it receives (STARTING acknowledged on the way, as a
//! master does), p50 and p99 over 1,000 launches, beside the floor measured in the
//! same run: create a cgroup with the task's limits, fork, join it, exec `true`, wait;
//! and the floor with the monitor the agent puts above every process task (recovery).
//! Everything is measured twice: with the kernel's default, where about 1% of cgroup
//! joins wait 10-25 ms for an RCU grace period, and with `favordynmods` set on the
//! cgroup2 mount (the agent's `--cgroups-favor-dynmods`, see `cgroups::dynmods`);
//! the host's setting is put back at the end.
//!
//! `cargo bench -p strata-agent --bench launch` (needs root and cgroups; `LAUNCHES=N`
//! changes the count, `SLOWEST=N` lists the N slowest launches through the agent).
//!
//! The agent's work dir (sandboxes, status files, checkpoint) is a temporary directory
//! under `$TMPDIR`; the bench prints its filesystem. Where that is ext4 without a
//! journal (this machine's root filesystem), every file creation scans the inodes
//! deleted in the last 30 s (ext4's `recently_deleted`, which only runs without a
//! journal): over successive runs perf showed a third of the agent's CPU there and its
//! p50 climbing from 2.6 to 7 ms while the floor, which creates no files, stayed put.
//! `TMPDIR=/dev/shm` (tmpfs), or any journalled filesystem, takes that out.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use strata_agent::cgroups::{Cgroups, CgroupsOptions, Limits, dynmods};
use strata_agent::isolation::child::ChildSetup;
use strata_agent::isolation::{IsolationMode, IsolationOptions, Isolator};
use strata_proto::Resources;
use strata_proto::v1::{self, TaskState};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The filesystem `path` is on, by name where it is a common one.
fn filesystem(path: &std::path::Path) -> String {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    match nix::sys::statfs::statfs(path).map(|s| s.filesystem_type()) {
        Ok(t) if t == EXT4_SUPER_MAGIC => "ext4".into(),
        Ok(t) if t == TMPFS_MAGIC => "tmpfs".into(),
        Ok(t) if t == XFS_SUPER_MAGIC => "xfs".into(),
        Ok(t) if t == BTRFS_SUPER_MAGIC => "btrfs".into(),
        Ok(t) => format!("{t:?}"),
        Err(e) => format!("unknown ({e})"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let launches: usize = std::env::var("LAUNCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(bench(launches));
}

async fn bench(launches: usize) {
    let slowest: usize = std::env::var("SLOWEST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Both ways the kernel can take a task into its cgroups; the host's setting is
    // put back afterwards.
    let before =
        dynmods::cgroup2_mount().map(|m| m.super_options.iter().any(|o| o == "favordynmods"));
    println!("launch latency of a cgroup-isolated `true`, {launches} launches per figure");
    for favor in [false, true] {
        if before.is_some()
            && let Err(e) = dynmods::set(favor)
        {
            println!("  favordynmods {favor}: cannot set it ({e}); skipped");
            continue;
        }
        measure(launches, favor, slowest).await;
    }
    if let Some(was) = before {
        dynmods::set(was).expect("put favordynmods back as it was");
    }
}

/// The floor and the agent, with the kernel's favordynmods on or off (the agent's
/// `--cgroups-favor-dynmods`).
async fn measure(launches: usize, favor: bool, slowest: usize) {
    let root = format!("strata-bench-{}", std::process::id());
    let cgroups_options = CgroupsOptions {
        root: root.clone(),
        favor_dynmods: favor,
        ..CgroupsOptions::default()
    };
    let resources = Resources::parse("cpus:0.1;mem:32").unwrap();
    let limits = Limits::for_task(&resources, true, None);

    // The floor: what any cgroup-isolated launch costs, without the agent.
    let floor_dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::detect(cgroups_options.clone(), floor_dir.path())
        .expect("cgroups (run as root on a machine with cgroups)");
    let mut floor = Vec::with_capacity(launches);
    for i in 0..launches {
        let id = format!("floor-{i}");
        let t0 = Instant::now();
        let join = cgroups.create(&id, &limits).expect("create");
        let mut cmd = tokio::process::Command::new("true");
        ChildSetup {
            join: join.0,
            ..ChildSetup::default()
        }
        .install(&mut cmd);
        let status = cmd.status().await.expect("spawn true");
        floor.push(t0.elapsed());
        assert!(status.success());
        cgroups.destroy(&id).expect("destroy");
    }
    // The same with the monitor every process task now runs under (one more fork in
    // the child, see `isolation::child`): what recovery costs a launch at the least.
    let mut monitored = Vec::with_capacity(launches);
    for i in 0..launches {
        let id = format!("monitored-{i}");
        let t0 = Instant::now();
        let join = cgroups.create(&id, &limits).expect("create");
        let mut cmd = tokio::process::Command::new("true");
        ChildSetup {
            join: join.0,
            monitor: true,
            ..ChildSetup::default()
        }
        .install(&mut cmd);
        let status = cmd.status().await.expect("spawn true");
        monitored.push(t0.elapsed());
        assert!(status.success());
        cgroups.destroy(&id).expect("destroy");
    }
    drop(cgroups);

    // Through the agent: RunTask → TASK_RUNNING.
    let dir = tempfile::tempdir().unwrap();
    let fs = filesystem(dir.path());
    let mut master = FakeMaster::start().await;
    let mut o = options(master.addr, dir.path());
    o.isolation = IsolationOptions {
        mode: IsolationMode::Explicit(vec![Isolator::Cgroups]),
        cgroups: cgroups_options,
    };
    o.resources = Resources::parse("cpus:2;mem:1024").unwrap();
    let agent = TestAgent::start(o).await;
    master.next_register().await;
    let mut agent_times = Vec::with_capacity(launches);
    let mut when = Vec::with_capacity(launches);
    let bench_start = Instant::now();
    for i in 0..launches {
        let id = format!("true-{i}");
        let task = v1::TaskInfo {
            resources: resources.to_proto(),
            ..shell_task(&id, "true")
        };
        let t0 = Instant::now();
        master.run_task(framework(), task);
        master.wait_state(&id, TaskState::TaskRunning).await;
        agent_times.push(t0.elapsed());
        when.push((t0.elapsed(), i, t0 - bench_start));
        master.follow(&id).await;
    }
    agent.stop().await;
    master.stop().await;
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{c}/{root}"));
    }

    println!(
        "favordynmods {} (agent work dir {}, {fs}):",
        if favor { "on" } else { "off" },
        dir.path().display()
    );
    // `SLOWEST=N`: the N slowest launches through the agent, with when they started
    // (to tell a periodic cause from a growing one).
    when.sort_by_key(|w| std::cmp::Reverse(w.0));
    for (took, i, at) in when.iter().take(slowest) {
        println!(
            "  slow launch #{i} at {:.3} s: {:.3} ms",
            at.as_secs_f64(),
            ms(*took)
        );
    }
    floor.sort();
    monitored.sort();
    agent_times.sort();
    let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    let (m50, m99) = (percentile(&monitored, 0.5), percentile(&monitored, 0.99));
    let (a50, a99) = (
        percentile(&agent_times, 0.5),
        percentile(&agent_times, 0.99),
    );
    println!(
        "  floor (mkdir+limits, fork, join, exec, wait):  p50 {:7.3} ms  p99 {:7.3} ms",
        ms(f50),
        ms(f99)
    );
    println!(
        "  floor with the task's monitor (one more fork): p50 {:7.3} ms  p99 {:7.3} ms",
        ms(m50),
        ms(m99)
    );
    println!(
        "  agent (RunTask -> TASK_RUNNING):               p50 {:7.3} ms  p99 {:7.3} ms",
        ms(a50),
        ms(a99)
    );
    println!(
        "  ratio agent/floor:                             p50 {:7.2}x    p99 {:7.2}x",
        ms(a50) / ms(f50),
        ms(a99) / ms(f99)
    );
    println!(
        "  goal p99 < 10 ms: {}",
        if a99 < Duration::from_millis(10) {
            "met"
        } else {
            "NOT met"
        }
    );
}
