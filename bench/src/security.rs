//! `strata-bench security`: what TLS and authorization cost, insecure beside secure in
//! one invocation (issue 14's goal: within 10%).
//!
//! - launch: `--rounds` runs of the launch bench (`--agents`, `--tasks`), insecure
//!   and `--secure` alternately (insecure first), compared by their median
//!   throughput; ratio secure/insecure, goal ≥ 0.90.
//! - failover: one failover run (`--restarts` each) insecure, then one `--secure`,
//!   both with the master in its own process and one connection per agent (what
//!   `--secure` needs), so that only TLS and authorization differ; compared by their
//!   median `time_to_all_agents_back`; ratio secure/insecure, goal ≤ 1.10.
//!
//! Every run prints its own lines; the summary comes last, ending with
//! `security_launch_ratio: R`, `security_failover_ratio: R` and whether the goal is
//! met.

use crate::Outcome;
use crate::failover::{FailoverBenchArgs, FailoverFigures, measure_failover};
use crate::launch::{LaunchArgs, LaunchFigures, measure};

/// Secure within 10% of insecure.
const GOAL: f64 = 0.10;

#[derive(clap::Args, Debug)]
pub struct SecurityArgs {
    /// Launch runs of each kind, alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Fake agents of each launch run.
    #[arg(long, default_value_t = 100)]
    pub agents: u32,
    /// Tasks of each launch run.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u32,
    /// Simulated agents of the failover runs (fewer if the open-files limit does not
    /// allow one connection each).
    #[arg(long, default_value_t = 10_000)]
    pub failover_agents: u32,
    /// Tasks of the failover runs.
    #[arg(long, default_value_t = 100_000)]
    pub failover_tasks: u32,
    /// Master restarts of each failover run.
    #[arg(long, default_value_t = 1)]
    pub restarts: u32,
    /// Skip the failover runs (launch only).
    #[arg(long)]
    pub no_failover: bool,
    /// Give up on a run (a failover phase) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub async fn bench_security(args: SecurityArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let launch_args = |secure| LaunchArgs {
        agents: args.agents,
        tasks: args.tasks,
        cpus: 0.1,
        timeout: args.timeout,
        secure,
    };
    let (mut insecure, mut secure) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for (kind, runs, on) in [
            ("insecure", &mut insecure, false),
            ("secure", &mut secure, true),
        ] {
            println!("== launch {kind}, round {round} of {}", args.rounds);
            runs.push(measure(&launch_args(on)).await?);
        }
    }

    let mut failover = None;
    let mut code = 0;
    if !args.no_failover {
        let failover_args = |secure| FailoverBenchArgs {
            agents: args.failover_agents,
            tasks: args.failover_tasks,
            timeout: args.timeout,
            restarts: args.restarts,
            agents_per_conn: Some(1),
            jitter_ms: 100,
            poll_ms: 20,
            reconcile_on_subscribe: false,
            master_process: true,
            secure,
        };
        // The secure run takes as many agents as one connection each allows: the
        // insecure one takes as many, so that only TLS and authorization differ.
        let agents = crate::failover::agents_with_own_connections(args.failover_agents);
        println!("== failover insecure");
        let mut plain = failover_args(false);
        plain.agents = agents;
        let (o1, f1) = measure_failover(&plain).await?;
        println!("== failover secure");
        let (o2, f2) = measure_failover(&failover_args(true)).await?;
        code = o1.code.max(o2.code);
        failover = Some((f1, f2));
    }

    println!("== security: insecure beside secure");
    let launch = report_launch(&insecure, &secure);
    let mut figure = format!(
        "launch secure/insecure {launch:.2} ({:.0} vs {:.0} tasks/s, medians of {})",
        median(&secure, |f| f.throughput),
        median(&insecure, |f| f.throughput),
        args.rounds
    );
    let failover_ratio = failover.map(|(plain, tls)| {
        let ratio = report_failover(&plain, &tls);
        figure.push_str(&format!(
            "; failover secure/insecure {ratio:.2} ({:.0} vs {:.0} ms, {} agents)",
            tls.median_ms, plain.median_ms, tls.agents
        ));
        ratio
    });
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("security_launch_ratio: {launch:.2}");
    if let Some(ratio) = failover_ratio {
        println!("security_failover_ratio: {ratio:.2}");
    }
    println!(
        "goal secure within {:.0}% of insecure: launch {}{}",
        GOAL * 100.0,
        verdict(launch >= 1.0 - GOAL),
        failover_ratio
            .map(|r| format!(", failover {}", verdict(r <= 1.0 + GOAL)))
            .unwrap_or_default()
    );
    Ok(Outcome { code, figure })
}

fn median(runs: &[LaunchFigures], f: impl Fn(&LaunchFigures) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints the launch figures side by side; the throughput ratio secure/insecure.
fn report_launch(insecure: &[LaunchFigures], secure: &[LaunchFigures]) -> f64 {
    let list = |runs: &[LaunchFigures]| {
        runs.iter()
            .map(|f| format!("{:.0}", f.throughput))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (kind, runs) in [("insecure", insecure), ("secure", secure)] {
        println!(
            "security_launch_{kind}: median {:.0} tasks/s (runs: {}), p50 {:.1} ms, p99 {:.1} ms",
            median(runs, |f| f.throughput),
            list(runs),
            median(runs, |f| f.p50_ms),
            median(runs, |f| f.p99_ms)
        );
    }
    median(secure, |f| f.throughput) / median(insecure, |f| f.throughput)
}

/// Prints the failover figures side by side; the time ratio secure/insecure.
fn report_failover(insecure: &FailoverFigures, secure: &FailoverFigures) -> f64 {
    for (kind, f) in [("insecure", insecure), ("secure", secure)] {
        println!(
            "security_failover_{kind}: time_to_all_agents_back {:.1} ms ({} agents), master cpu {}, bench cpu {:.0} ms",
            f.median_ms,
            f.agents,
            f.master_cpu_ms
                .map(|c| format!("{c:.0} ms"))
                .unwrap_or_else(|| "-".into()),
            f.bench_cpu_ms
        );
    }
    secure.median_ms / insecure.median_ms
}
