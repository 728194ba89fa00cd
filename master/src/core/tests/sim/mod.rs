//! A deterministic simulation of the master core: thousands of simulated agents and
//! three to five frameworks, with faults, driven by a seed, checking invariants after
//! every step.
//!
//! ```text
//!   seed ─▶ Rng ─▶ step: tick (time advances) │ deliver in-flight agent messages
//!                        agent work (tasks start, end) │ frameworks answer offers
//!                        acks, kills, reconciliation │ faults ─▶ Master::handle(input, now)
//!                                                              │
//!   model agents, model frameworks ◀── effects (messages, offers, updates, registry)
//!        └──────────── invariants checked after every step ◀──┘
//! ```
//!
//! The world: `N` agents (2,000 by default) of four sizes and 3–5 frameworks (3 plus
//! the seed modulo 3) with different roles, weights, failover timeouts, and with and
//! without the PARTITION_AWARE and TASK_KILLING_STATE capabilities. The core runs with
//! short timeouts (agent ping 5 s × 3, agent re-register 30 s, offer timeout 90 s) and
//! simulated time, so heartbeat timeouts, offer timeouts, decline filters, agent
//! re-register timeouts (after a master restart) and framework failover timeouts fire.
//!
//! Agents are modelled after `strata-agent` (`agent/src/tasks.rs`, `updates.rs`): each
//! task has one queue of status updates; only its head is in flight, resent on a
//! backed-off timer and after every (re-)registration, and the next update goes out
//! once the head is acknowledged. A task is reported at registration (with its latest
//! state) until it has ended and its last update is acknowledged. A kill of an unknown
//! task is answered TASK_LOST; ShutdownFramework ends the framework's tasks at once
//! (a zero grace period: the core gives a removed framework's resources back at once).
//! Master messages reach an agent as soon as they are sent (a stream is ordered and
//! reliable while it lasts), except that a paused agent reads them when it wakes up and
//! loses them if the master closed its stream meanwhile. Agents never restart (lose
//! their tasks) and keep their resources.
//!
//! Faults: agents paused (silent: no heartbeats, no work, master messages buffered;
//! past the ping timeout the master marks them unreachable and closes their stream, so
//! they come back by re-registering with their tasks), agent streams broken and
//! re-opened, master restarts (a new master from the registry the old one persisted;
//! agents and frameworks come back at random times, some after the re-register
//! timeout), frameworks disconnecting and re-subscribing within and after their
//! failover timeout, fail-overs to a new scheduler instance while the old stream is
//! open, zombie calls on an old stream, TEARDOWN, status updates duplicated, delayed and
//! reordered (agent messages travel through an in-flight pool delivered in random
//! order; old updates are sometimes delivered again much later), accepts naming
//! rescinded or used offers, offers of two agents, tasks too big or reusing a live id,
//! kills and reconciliation of unknown tasks, lost acknowledgements.
//!
//! Invariants, after every step:
//! - the core's own `Master::check_invariants` (free + offered + used == total on
//!   every agent, every index agrees), and the checks below that are per agent: for
//!   the agents the step touched (named by its inputs and effects), and for all agents
//!   and frameworks every `walk::FULL_CHECK_EVERY` steps and after a master restart;
//! - offers: no offer id is ever sent twice; a RESCIND names an offer its framework
//!   holds; events only reach a framework's current stream; each framework holds
//!   exactly the offers the master has outstanding for it; and on every agent the
//!   outstanding offers (to all frameworks, as the frameworks see them) plus what its
//!   tasks really use (the agent model) fit in its total;
//! - capacity: on every agent the master's live tasks, and the tasks the agent really
//!   runs, fit in its total;
//! - one terminal state per task, as each framework sees it: an update repeated with
//!   the same uuid carries the same state; after a terminal state only that same state
//!   may come again (retries, reconciliation). TASK_LOST too, for frameworks that
//!   are not partition aware: if the agent comes back the master kills the task and
//!   keeps its updates from the framework.
//!
//! At the end of each walk everything heals (agents resume and reconnect, frameworks
//! re-subscribe, in-flight messages arrive, kills complete, acknowledgements flow)
//! and then: no update is left unacknowledged anywhere, the master's live tasks are
//! exactly the agents' live tasks (same agent, same state), every task a framework
//! believes live is live and every task it saw end is gone.
//!
//! The same seed replays the same walk: one `Rng` drives every choice, the model
//! keeps everything in ordered maps, and time is simulated (`Sim::now`);
//! `the_same_seed_replays_the_same_walk` checks it on a digest of every effect.
//! `simulation_ten_thousand_steps` runs 5 seeds × 2,000 steps over 2,000 agents, the
//! seeds shared out over the machine's cores (each walk runs on one thread). A failure
//! prints the seed, the step, the error (with what the master and the agent model
//! hold for the agents and the task it names), the last steps, and the command that
//! replays it. Environment overrides for longer runs:
//!
//! - `STRATA_SIM_SEED=n`: run only this seed;
//! - `STRATA_SIM_SEEDS=n`: run seeds 1..=n (default 5);
//! - `STRATA_SIM_STEPS=n`: steps per seed (default 2,000);
//! - `STRATA_SIM_AGENTS=n`: agents (default 2,000).
//!
//! e.g. `STRATA_SIM_SEEDS=50 STRATA_SIM_STEPS=20000 cargo test --release -p
//! strata-master --lib core::tests::sim -- --nocapture` (`--nocapture` shows what
//! each walk did). Small worlds with long walks (`STRATA_SIM_AGENTS=5
//! STRATA_SIM_STEPS=20000`) pile the faults onto the same few agents and tasks.
//!
//! Modules: `world` (configuration, the `World`, feeding inputs and applying effects),
//! `agent` and `framework` (the models), `steps` and `schedulers` (the step generator
//! and its faults), `invariants` (after every step), `settle` (the end of a walk),
//! `walk` (running seeded walks).

mod agent;
mod framework;
mod invariants;
mod schedulers;
mod settle;
mod steps;
mod walk;
mod world;

use walk::{env_number, walk, walks};
use world::Stats;

/// Seeds, steps per seed and agents of the default run (`STRATA_SIM_*` override them).
const DEFAULT_SEEDS: u64 = 5;
const DEFAULT_STEPS: usize = 2_000;
const DEFAULT_AGENTS: usize = 2_000;

#[test]
fn simulation_ten_thousand_steps() {
    let seeds: Vec<u64> = match env_number("STRATA_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("STRATA_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let steps = env_number("STRATA_SIM_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    let agents = env_number("STRATA_SIM_AGENTS").map_or(DEFAULT_AGENTS, |n| n.max(1) as usize);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (seed, secs, result) in walks(&seeds, steps, agents, threads) {
        match result {
            Ok(stats) => {
                eprintln!("sim seed {seed}: {steps} steps, {agents} agents, {secs:.1}s: {stats:?}");
                total.add(&stats);
            }
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {} walks failed; the first:\n{first}",
            failures.len(),
            seeds.len()
        );
    }
    eprintln!("sim total: {total:?}");
    if seeds.len() as u64 == DEFAULT_SEEDS && steps >= DEFAULT_STEPS && agents >= 100 {
        // The default run exercises every fault, not only the happy path.
        let t = &total;
        for (what, n) in [
            ("tasks launched", t.tasks_launched),
            ("duplicate updates", t.duplicate_updates),
            ("rescinds", t.rescinds),
            ("agents marked unreachable", t.unreachable),
            ("framework disconnects", t.framework_disconnects),
            ("frameworks removed", t.frameworks_removed),
            ("master restarts", t.master_restarts),
            ("stale accepts", t.stale_accepts),
        ] {
            assert!(n > 0, "the default walks never saw {what}: {total:?}");
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_walk() {
    let a = walk(7, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    let b = walk(7, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.1, b.1, "two runs of seed 7 differ");
    let c = walk(8, 400, 150, true).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a.1, c.1, "seeds 7 and 8 walked the same way");
}
