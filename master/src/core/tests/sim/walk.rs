//! Running walks: one seeded walk of `steps` steps with its invariants checked after
//! each (a failure reports the seed, the step, the last steps and the replay command),
//! and many seeds shared out over threads.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::world::{Stats, World, fnv};

/// How many of the latest steps a failure prints.
const TAIL: usize = 15;

/// Every this many steps (and after a master restart) the invariants are checked on
/// every agent and framework, not only on the agents the step touched.
pub(super) const FULL_CHECK_EVERY: usize = 250;

/// One walk; on failure, the seed, the step, the error and the last steps.
pub(super) fn walk(
    seed: u64,
    steps: usize,
    agents: usize,
    trace: bool,
) -> Result<(Stats, u64), String> {
    let mut w = World::new(seed, agents, trace);
    let replay = format!(
        "replay: STRATA_SIM_SEED={seed} STRATA_SIM_STEPS={steps} STRATA_SIM_AGENTS={agents} \
         cargo test -p strata-master --lib core::tests::sim -- --nocapture"
    );
    let fail = |w: &World, at: String, e: String| {
        let tail: Vec<String> = w.log.iter().map(|l| format!("  {l}")).collect();
        format!(
            "simulation seed {seed} failed {at} ({agents} agents, {} frameworks): {e}\n{}{replay}\nlast steps, oldest first:\n{}",
            w.frameworks.len(),
            w.describe_agents_in(&e),
            tail.join("\n")
        )
    };
    if let Err(e) = w.check(true) {
        return Err(fail(&w, "at the start".into(), e));
    }
    for step in 1..=steps {
        let what = catch_unwind(AssertUnwindSafe(|| w.step()));
        let what = match what {
            Ok(what) => what,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(fail(&w, format!("at step {step}"), format!("panic: {msg}")));
            }
        };
        let secs = w.now().duration_since(w.start).as_secs_f64();
        w.log.push_back(format!("#{step} t={secs:.1}s {what}"));
        if w.log.len() > TAIL {
            w.log.pop_front();
        }
        if let Some(h) = w.trace {
            w.trace = Some(fnv(h, w.log.back().unwrap().as_bytes()));
        }
        if let Err(e) = w.check(step % FULL_CHECK_EVERY == 0) {
            return Err(fail(&w, format!("at step {step}"), e));
        }
    }
    w.stats.steps = steps;
    let settled = catch_unwind(AssertUnwindSafe(|| w.settle()));
    match settled {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(fail(&w, "at the end".into(), e)),
        Err(_) => return Err(fail(&w, "at the end".into(), "panic while settling".into())),
    }
    w.stats.simulated_secs = w.now().duration_since(w.start).as_secs();
    let digest = w.trace.unwrap_or(0);
    let snapshot = serde_json::to_string(&w.sim.m.snapshot()).unwrap();
    Ok((w.stats, fnv(digest, snapshot.as_bytes())))
}

pub(super) fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
    )
}

/// Runs the walks of `seeds`, spread over up to `threads` threads (each walk is
/// single-threaded and deterministic; only the seeds are shared out). Results come
/// back in seed order.
pub(super) fn walks(
    seeds: &[u64],
    steps: usize,
    agents: usize,
    threads: usize,
) -> Vec<(u64, f64, Result<Stats, String>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, seeds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else {
                        break;
                    };
                    let started = std::time::Instant::now();
                    let result = catch_unwind(|| walk(seed, steps, agents, false))
                        .unwrap_or_else(|_| Err(format!("simulation seed {seed} panicked")))
                        .map(|(stats, _)| stats);
                    let secs = started.elapsed().as_secs_f64();
                    results.lock().unwrap().push((seed, secs, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    results
}
