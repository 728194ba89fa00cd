//! The driver stall bench: how long the largest request the limits
//! (`strata_proto::limits`) allow keeps the master's driver busy, which is how long
//! every other caller (agents, frameworks, operators) waits behind it.
//!
//! ```text
//!  N simulated agents ──AgentLink.Attach (max resources, max attributes)──▶ ┌────────┐
//!  framework ──Subscribe, then one big call of each kind, a few times──────▶ │ master │
//!  prober ──Acknowledge (unknown agent, refused by the core) back to back──▶ └────────┘
//! ```
//!
//! The master runs in this process; the agents are simulated (one `Attach` stream
//! each, registering the largest agent the limits allow: 64 resource entries, each
//! `ports` entry with 1024 ranges, 128 attributes of the largest size) and answer the
//! master's pings; they launch nothing. The framework (the largest FrameworkInfo,
//! which the master copies into every task it launches) holds every agent's offers.
//!
//! The stall is measured from outside, as another caller sees it: a prober on its own
//! connection sends a cheap call that the core refuses at once (an ACKNOWLEDGE naming
//! an unknown agent), one after the other, before, during and after the big request.
//! Every call waits in the driver's queue behind whatever the driver is doing, so the
//! slowest probe that overlaps the big request is the stall (the big request's own
//! handling, its effects and the store sync of its batch). The same window without a
//! big request (`stall_idle`) shows the floor: probes' own round trip and the 100 ms
//! allocation tick. The big call's own latency (`rpc`) adds its transfer and decoding.
//! Each kind is repeated `--reps` times; the line reports the median.
//!
//! Then the same requests are fed to a core of its own, without gRPC or driver
//! (`core.rs`): the `core_<kind>` lines split each stall into the core's `handle` and
//! the store's append and sync of what it persisted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_proto::limits;
use strata_proto::v1::{
    self, agent_link_client::AgentLinkClient, agent_message, master_message,
    operator_client::OperatorClient, scheduler_client::SchedulerClient,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

mod core;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct StallArgs {
    /// Simulated agents, each offering the largest resources the limits allow.
    #[arg(long, default_value_t = 100)]
    agents: u32,
    /// Repetitions of each request kind (the line reports the median).
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// The goal: every kind's median stall under this many milliseconds.
    #[arg(long, default_value_t = 10.0)]
    goal_ms: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// Reserved roles of each agent's resources (plus the unreserved ones): 13 roles of
/// `cpus`, `mem`, `disk`, `ports` and 12 of `gpus` make [`limits::MAX_RESOURCES`] entries.
const RESERVED_ROLES: usize = 12;
/// Ports per range of an agent's `ports` entries (ranges of 8 with gaps of 8).
const PORTS_PER_RANGE: u64 = 8;
/// How long the probes run before the big request, and after its answer (its effects
/// and the store sync may end after the answer of a streamed call).
const SETTLE: Duration = Duration::from_millis(150);

pub async fn bench_stall(args: StallArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.agents >= args.reps.max(1),
        "--agents must be at least --reps (each ACCEPT uses the offers of a fresh agent)"
    );
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let work = work_dir("strata-bench-stall")?;
    let mut parts = Parts::new();
    let master = parts
        .master(strata_master::MasterOptions::new(work.join("master")))
        .await?;
    eprintln!(
        "bench: master on {master}, {} simulated agents of the largest size, {} repetitions per kind",
        args.agents, args.reps
    );
    let (stop_agents, agents_stopped) = watch::channel(false);
    let mut agents = JoinSet::new();
    let result = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        run(master.to_string(), &args, &mut agents, agents_stopped),
    )
    .await
    .map_err(|_| anyhow::anyhow!("bench did not finish within {} s", args.timeout))
    .and_then(|r| r);
    stop_agents.send_replace(true);
    while agents.join_next().await.is_some() {}
    parts.stop().await;
    let core_results = match &result {
        Ok(_) => {
            let (agents, reps, dir) = (args.agents, args.reps, work.join("core"));
            tokio::task::spawn_blocking(move || core::core_run(agents, reps, &dir))
                .await
                .context("the core run panicked")
                .and_then(|r| r)
        }
        Err(_) => Ok(vec![]),
    };
    let _ = std::fs::remove_dir_all(&work);

    let results = result?;
    let core_results = core_results?;
    let mut worst: Option<(&str, Duration)> = None;
    for r in &results {
        let stall = r.stalls.percentile(0.5);
        println!(
            "stall_{}: {:.1} ms (max {:.1} ms; rpc p50 {:.1} ms; {})",
            r.kind,
            ms(stall),
            ms(r.stalls.percentile(1.0)),
            ms(r.rpcs.percentile(0.5)),
            r.answer
        );
        if r.kind != "idle" && worst.is_none_or(|(_, w)| stall > w) {
            worst = Some((r.kind, stall));
        }
    }
    for c in &core_results {
        println!(
            "core_{}: {:.1} ms (max {:.1} ms; store append+sync p50 {:.1} ms; {} effects, {} persisted; {})",
            c.kind,
            ms(c.core.percentile(0.5)),
            ms(c.core.percentile(1.0)),
            ms(c.store.percentile(0.5)),
            c.effects.0,
            c.effects.1,
            c.answer
        );
    }
    let (kind, stall) = worst.unwrap_or(("none", Duration::ZERO));
    let met = ms(stall) < args.goal_ms;
    println!(
        "goal < {} ms: {} (worst {kind}: {:.1} ms)",
        args.goal_ms,
        if met { "met" } else { "missed" },
        ms(stall)
    );
    Ok(Outcome {
        code: 0,
        figure: format!(
            "worst stall {:.1} ms ({kind}); goal < {} ms {}",
            ms(stall),
            args.goal_ms,
            if met { "met" } else { "missed" }
        ),
    })
}

/// One request kind's measurements.
struct KindResult {
    kind: &'static str,
    /// The slowest probe of each repetition.
    stalls: Samples,
    /// The big call's own latency, each repetition.
    rpcs: Samples,
    /// What the master answered (the last repetition).
    answer: String,
}

async fn run(
    master: String,
    args: &StallArgs,
    agents: &mut JoinSet<()>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<KindResult>> {
    let endpoint = Endpoint::from_shared(format!("http://{master}"))?;
    let registered = Arc::new(AtomicU64::new(0));
    for i in 0..args.agents {
        let endpoint = endpoint.clone();
        let registered = registered.clone();
        let stop = stop.clone();
        agents.spawn(async move {
            if let Err(e) = sim_agent(i, endpoint, registered, stop).await {
                eprintln!("bench: agent {i}: {e:#}");
            }
        });
    }
    wait_until("every agent registered", Duration::from_secs(120), || {
        registered.load(Ordering::Relaxed) == u64::from(args.agents)
    })
    .await?;

    let mut fw = Framework::subscribe(&endpoint).await?;
    // Offers of every agent, then a quiet second: the allocator has nothing left.
    let started = Instant::now();
    loop {
        fw.drain_offers();
        if fw.offers.len() == args.agents as usize && fw.quiet_for() > Duration::from_secs(1) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "offers of only {} of {} agents after 120 s",
            fw.offers.len(),
            args.agents
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offers_per_agent = fw.offers.values().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "bench: framework holds {} offers ({} per agent)",
        fw.offers.values().map(Vec::len).sum::<usize>(),
        offers_per_agent,
    );

    let prober = Prober::connect(&endpoint, fw.header.clone()).await?;
    let operator = OperatorClient::new(channel(&endpoint).await?)
        .max_decoding_message_size(limits::MAX_OPERATOR_ANSWER_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
    let agent_ids: Vec<String> = {
        let mut ids: Vec<String> = fw.offers.keys().cloned().collect();
        ids.sort();
        ids
    };
    let mut launched: Vec<(String, String)> = Vec::new();
    let mut results = Vec::new();

    // The floor: the same window with nothing big in it.
    results.push(
        repeat("idle", args.reps, &prober, |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok("nothing sent".to_string())
        })
        .await?,
    );

    // ACCEPT of 4096 tasks against all offers of one agent (a fresh agent each time).
    let header = fw.header.clone();
    let client = fw.client.clone();
    let launch = repeat("accept_launch", args.reps, &prober, |rep| {
        let agent = &agent_ids[rep as usize];
        let offers = fw.offers.get(agent).map(Vec::as_slice).unwrap_or_default();
        let tasks = launch_tasks(rep, agent, offers);
        if let Ok(tasks) = &tasks {
            launched.extend(
                tasks
                    .iter()
                    .map(|t| (t.task_id.clone(), t.agent_id.clone())),
            );
        }
        let offer_ids = offers.iter().map(|o| o.id.clone()).collect();
        let mut client = client.clone();
        let header = header.clone();
        async move {
            let req = v1::AcceptRequest {
                header: Some(header),
                offer_ids,
                operations: vec![launch_op(tasks?)],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            };
            Ok(answer(client.accept(req).await.map(|_| ())))
        }
    })
    .await?;
    anyhow::ensure!(
        launch.answer == "ok",
        "the launching ACCEPT was refused: {}",
        launch.answer
    );
    results.push(launch);

    // ACCEPT of 4096 tasks naming 1024 unknown offer ids of the largest size.
    results.push(
        repeat("accept_unknown", args.reps, &prober, |rep| {
            let mut client = client.clone();
            let header = header.clone();
            let agent = agent_ids[0].clone();
            async move {
                let req = v1::AcceptRequest {
                    header: Some(header),
                    offer_ids: unknown_ids(rep, 'o', limits::MAX_OFFERS_PER_CALL),
                    operations: vec![launch_op(unknown_tasks(rep, &agent))],
                    filters: None,
                };
                Ok(answer(client.accept(req).await.map(|_| ())))
            }
        })
        .await?,
    );

    // DECLINE of 1024 unknown offer ids of the largest size.
    results.push(
        repeat("decline", args.reps, &prober, |rep| {
            let mut client = client.clone();
            let header = header.clone();
            async move {
                let req = v1::DeclineRequest {
                    header: Some(header),
                    offer_ids: unknown_ids(rep, 'd', limits::MAX_OFFERS_PER_CALL),
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(3600.0),
                    }),
                };
                Ok(answer(client.decline(req).await.map(|_| ())))
            }
        })
        .await?,
    );

    // SUBSCRIBE of a new framework with the largest FrameworkInfo; its latency is the
    // time to SUBSCRIBED. The framework is torn down after the measurement.
    results.push(
        repeat("subscribe", args.reps, &prober, |rep| {
            let endpoint = endpoint.clone();
            async move { big_subscribe(rep, &endpoint).await }
        })
        .await?,
    );

    // UpdateWeights of 1024 new roles of the largest size.
    results.push(
        repeat("update_weights", args.reps, &prober, |rep| {
            let mut operator = operator.clone();
            async move {
                let req = v1::UpdateWeightsRequest {
                    weights: big_weights(rep)
                        .into_iter()
                        .map(|(role, weight)| v1::update_weights_request::RoleWeight {
                            role,
                            weight,
                        })
                        .collect(),
                };
                Ok(answer(operator.update_weights(req).await.map(|_| ())))
            }
        })
        .await?,
    );

    // Explicit RECONCILE of as many tasks as one call may name: the launched ones,
    // then unknown ids of the largest size.
    let reconcile_tasks = reconcile_list(&launched, &agent_ids);
    eprintln!(
        "bench: RECONCILE of {} tasks ({} launched), implicit RECONCILE of {} launched",
        reconcile_tasks.len(),
        launched.len(),
        launched.len()
    );
    results.push(
        repeat("reconcile", args.reps, &prober, |_| {
            let mut client = client.clone();
            let header = header.clone();
            let tasks = reconcile_tasks.clone();
            async move {
                let req = v1::ReconcileRequest {
                    header: Some(header),
                    tasks,
                };
                Ok(answer(client.reconcile(req).await.map(|_| ())))
            }
        })
        .await?,
    );
    results.push(
        repeat("reconcile_implicit", args.reps, &prober, |_| {
            let mut client = client.clone();
            let header = header.clone();
            async move {
                let req = v1::ReconcileRequest {
                    header: Some(header),
                    tasks: vec![],
                };
                Ok(answer(client.reconcile(req).await.map(|_| ())))
            }
        })
        .await?,
    );

    let updates = fw.updates.load(Ordering::Relaxed);
    eprintln!("bench: the framework received {updates} updates");
    fw.close().await;
    Ok(results)
}

/// Measures `reps` requests made by `request(rep)`.
async fn repeat<F, Fut>(
    kind: &'static str,
    reps: u32,
    prober: &Prober,
    mut request: F,
) -> anyhow::Result<KindResult>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
{
    let mut stalls = Vec::new();
    let mut rpcs = Vec::new();
    let mut last = String::new();
    for rep in 0..reps {
        let fut = request(rep);
        let (stall, rpc, outcome) = measure(prober, async move {
            match fut.await {
                Ok(a) => Ok(a),
                Err(e) => Err(tonic::Status::internal(format!("{e:#}"))),
            }
        })
        .await?;
        stalls.push(stall);
        rpcs.push(rpc);
        last = outcome;
    }
    eprintln!(
        "bench: {kind}: stalls {:?} ms",
        stalls
            .iter()
            .map(|d| (ms(*d) * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    Ok(KindResult {
        kind,
        stalls: Samples::new(stalls),
        rpcs: Samples::new(rpcs),
        answer: last,
    })
}

/// What a measured call resolves to: `ok`, a gRPC refusal, or a description.
trait Answer {
    fn describe(self) -> String;
}

impl Answer for Result<(), tonic::Status> {
    fn describe(self) -> String {
        answer(self)
    }
}

impl Answer for Result<String, tonic::Status> {
    fn describe(self) -> String {
        match self {
            Ok(a) => a,
            Err(e) => format!("failed: {}", e.message()),
        }
    }
}

fn answer(r: Result<(), tonic::Status>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(s) => {
            let m = s.message();
            let cut = limits::shown(m);
            format!("refused {:?}: {cut}", s.code())
        }
    }
}

/// Runs the prober around `big`: the slowest probe that overlaps `big` (and the
/// settling time after it), `big`'s own latency and its answer.
async fn measure<R: Answer>(
    prober: &Prober,
    big: impl Future<Output = R>,
) -> anyhow::Result<(Duration, Duration, String)> {
    let probes = prober.start();
    tokio::time::sleep(SETTLE).await;
    let sent = Instant::now();
    let outcome = big.await.describe();
    let rpc = sent.elapsed();
    tokio::time::sleep(SETTLE).await;
    let end = Instant::now();
    let samples = probes.stop().await?;
    let stall = samples
        .iter()
        .filter(|(at, took)| *at + *took >= sent && *at <= end)
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    Ok((stall, rpc, outcome))
}

/// Sends cheap calls one after the other on a connection of its own.
struct Prober {
    client: SchedulerClient<Channel>,
    header: v1::CallHeader,
}

/// A running probe loop.
struct Probes {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<(Instant, Duration)>>>,
}

impl Prober {
    async fn connect(endpoint: &Endpoint, header: v1::CallHeader) -> anyhow::Result<Prober> {
        Ok(Prober {
            client: SchedulerClient::new(channel(endpoint).await?),
            header,
        })
    }

    fn start(&self) -> Probes {
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = self.client.clone();
        let req = v1::AcknowledgeRequest {
            header: Some(self.header.clone()),
            agent_id: "strata-bench-no-such-agent".into(),
            task_id: "strata-bench-probe".into(),
            uuid: "strata-bench-probe".into(),
        };
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let at = Instant::now();
                match client.acknowledge(req.clone()).await {
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    other => anyhow::bail!("the probe was answered {other:?}, not NotFound"),
                }
                samples.push((at, at.elapsed()));
            }
            Ok(samples)
        });
        Probes { stop, task }
    }
}

impl Probes {
    async fn stop(self) -> anyhow::Result<Vec<(Instant, Duration)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the prober panicked")?
    }
}

/// A connection of its own to the master (one HTTP/2 connection per client, so that
/// one client's large message does not hold up another's frames).
async fn channel(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    endpoint.connect().await.context("connect to the master")
}

/// The benchmark's framework: subscribed with [`bench_framework_info`], so that it
/// holds all of every agent's resources as offers.
struct Framework {
    client: SchedulerClient<Channel>,
    header: v1::CallHeader,
    /// Offers as they arrive from the event reader.
    incoming: mpsc::UnboundedReceiver<v1::Offer>,
    /// Offers held, by agent id.
    offers: HashMap<String, Vec<v1::Offer>>,
    last_offer: Instant,
    updates: Arc<AtomicU64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Framework {
    async fn subscribe(endpoint: &Endpoint) -> anyhow::Result<Framework> {
        let mut client = SchedulerClient::new(channel(endpoint).await?)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        let mut events = client
            .subscribe(v1::SubscribeRequest {
                framework_info: Some(bench_framework_info()),
                suppressed_roles: vec![],
            })
            .await
            .context("subscribe")?
            .into_inner();
        let header = match events.next().await {
            Some(Ok(v1::Event {
                event: Some(v1::event::Event::Subscribed(s)),
            })) => v1::CallHeader {
                framework_id: s.framework_id,
                stream_id: s.stream_id,
            },
            other => anyhow::bail!("unexpected first event: {other:?}"),
        };
        // Unbounded: at most the offers of every agent (the allocator offers nothing
        // while they are held), drained by the bench as it waits for them.
        let (tx, incoming) = mpsc::unbounded_channel();
        let updates = Arc::new(AtomicU64::new(0));
        let counted = updates.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                match event.event {
                    Some(v1::event::Event::Offers(o)) => {
                        for offer in o.offers {
                            let _ = tx.send(offer);
                        }
                    }
                    Some(v1::event::Event::Update(_)) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(v1::event::Event::Error(e)) => {
                        eprintln!("bench: master error to the framework: {}", e.message);
                    }
                    _ => {}
                }
            }
        });
        Ok(Framework {
            client,
            header,
            incoming,
            offers: HashMap::new(),
            last_offer: Instant::now(),
            updates,
            reader,
        })
    }

    fn drain_offers(&mut self) {
        while let Ok(offer) = self.incoming.try_recv() {
            self.last_offer = Instant::now();
            self.offers
                .entry(offer.agent_id.clone())
                .or_default()
                .push(offer);
        }
    }

    fn quiet_for(&self) -> Duration {
        self.last_offer.elapsed()
    }

    async fn close(mut self) {
        let _ = self
            .client
            .teardown(v1::TeardownRequest {
                header: Some(self.header.clone()),
            })
            .await;
        self.reader.abort();
        let _ = self.reader.await;
    }
}

/// A new framework subscribing with the largest FrameworkInfo: the time to its
/// SUBSCRIBED is the call's latency.
async fn big_subscribe(rep: u32, endpoint: &Endpoint) -> anyhow::Result<String> {
    let mut client = SchedulerClient::new(channel(endpoint).await?)
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
    let info = big_framework_info(rep);
    let mut events = match client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(info.clone()),
            suppressed_roles: info.roles.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return Ok(answer(Err(s))),
    };
    let header = match events.next().await {
        Some(Ok(v1::Event {
            event: Some(v1::event::Event::Subscribed(s)),
        })) => v1::CallHeader {
            framework_id: s.framework_id,
            stream_id: s.stream_id,
        },
        other => return Ok(format!("no SUBSCRIBED: {other:?}")),
    };
    // Teardown once the measurement window has ended (it ends SETTLE after this
    // answer), and long before the next request.
    tokio::spawn(async move {
        tokio::time::sleep(SETTLE + Duration::from_millis(20)).await;
        let _ = client
            .teardown(v1::TeardownRequest {
                header: Some(header),
            })
            .await;
        drop(events);
    });
    Ok("ok".to_string())
}

/// The largest FrameworkInfo: names of the largest size, 64 new roles of the largest
/// size, 64 capabilities.
fn big_framework_info(rep: u32) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: "n".repeat(limits::MAX_NAME_BYTES),
        user: "u".repeat(limits::MAX_NAME_BYTES),
        hostname: "h".repeat(limits::MAX_NAME_BYTES),
        principal: "p".repeat(limits::MAX_NAME_BYTES),
        roles: (0..limits::MAX_ROLES)
            .map(|i| padded(&format!("s{rep}x{i}"), 's', limits::MAX_ROLE_BYTES))
            .collect(),
        capabilities: vec![v1::FrameworkCapability::MultiRole as i32; limits::MAX_ROLES],
        failover_timeout_seconds: 0.0,
        id: String::new(),
    }
}

/// What the bench's own framework subscribes with: the largest FrameworkInfo, whose
/// roles are the unreserved one, every reserved one (so that it is offered all of
/// every agent's resources) and new ones up to [`limits::MAX_ROLES`]. Largest because
/// the master copies it into every task it launches.
fn bench_framework_info() -> v1::FrameworkInfo {
    let mut roles = vec!["*".to_string()];
    roles.extend((0..RESERVED_ROLES).map(reserved_role));
    let mut i = 0;
    while roles.len() < limits::MAX_ROLES {
        roles.push(padded(&format!("f{i}x"), 'f', limits::MAX_ROLE_BYTES));
        i += 1;
    }
    v1::FrameworkInfo {
        name: padded("strata-bench-stall-", 'n', limits::MAX_NAME_BYTES),
        user: "u".repeat(limits::MAX_NAME_BYTES),
        hostname: "h".repeat(limits::MAX_NAME_BYTES),
        principal: "p".repeat(limits::MAX_NAME_BYTES),
        roles,
        capabilities: vec![v1::FrameworkCapability::MultiRole as i32; limits::MAX_ROLES],
        failover_timeout_seconds: 0.0,
        id: String::new(),
    }
}

/// The weights of one UpdateWeights: 1024 new roles of the largest size.
fn big_weights(rep: u32) -> Vec<(String, f64)> {
    (0..limits::MAX_WEIGHTS)
        .map(|i| {
            (
                padded(&format!("w{rep}x{i}"), 'w', limits::MAX_ROLE_BYTES),
                1.0 + i as f64,
            )
        })
        .collect()
}

fn reserved_role(i: usize) -> String {
    padded(&format!("role{i}"), 'r', limits::MAX_ROLE_BYTES)
}

/// `prefix` padded with `fill` to `len` bytes.
fn padded(prefix: &str, fill: char, len: usize) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push(fill);
    }
    s
}

/// The largest agent the limits allow: 64 resource entries (cpus, mem, disk, ports
/// for the unreserved role and 12 reserved ones, gpus for 12 of them), each `ports`
/// entry with 1024 ranges, and 128 attributes of the largest name and value.
fn agent_info(index: u32) -> v1::AgentInfo {
    let mut resources = Vec::new();
    let roles = std::iter::once(String::new()).chain((0..RESERVED_ROLES).map(reserved_role));
    for (n, role) in roles.enumerate() {
        let scalar = |name: &str, v: f64| v1::Resource {
            disk: None,
            name: name.into(),
            scalar: v,
            ranges: vec![],
            role: role.clone(),
        };
        resources.push(scalar("cpus", 1000.0));
        resources.push(scalar("mem", 1_000_000.0));
        resources.push(scalar("disk", 1_000_000.0));
        if n > 0 {
            resources.push(scalar("gpus", 8.0));
        }
        resources.push(v1::Resource {
            disk: None,
            name: "ports".into(),
            scalar: 0.0,
            ranges: (0..limits::MAX_RANGES as u64)
                .map(|r| v1::Range {
                    begin: 10_000 + 2 * PORTS_PER_RANGE * r,
                    end: 10_000 + 2 * PORTS_PER_RANGE * r + PORTS_PER_RANGE - 1,
                })
                .collect(),
            role: role.clone(),
        });
    }
    debug_assert_eq!(resources.len(), limits::MAX_RESOURCES);
    v1::AgentInfo {
        id: String::new(),
        hostname: padded(&format!("stall-{index}-"), 'h', limits::MAX_NAME_BYTES),
        address: format!("127.0.0.1:{}", 20_000 + index),
        principal: String::new(),
        resources,
        attributes: (0..limits::MAX_ATTRIBUTES)
            .map(|i| v1::Attribute {
                name: padded(&format!("a{i}"), 'a', limits::MAX_ATTRIBUTE_NAME_BYTES),
                value: padded(&format!("v{i}"), 'v', limits::MAX_ATTRIBUTE_VALUE_BYTES),
            })
            .collect(),
    }
}

/// A simulated agent: registers, then answers pings and drops whatever else the
/// master sends (it launches nothing) until `stop`.
async fn sim_agent(
    index: u32,
    endpoint: Endpoint,
    registered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut client = AgentLinkClient::new(channel(&endpoint).await?)
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
    let (outbound, rx) = mpsc::channel(64);
    outbound
        .send(v1::AgentMessage {
            message: Some(agent_message::Message::Register(v1::Register {
                checkpointed: None,
                agent_info: Some(agent_info(index)),
                tasks: vec![],
                version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        })
        .await
        .map_err(|_| anyhow::anyhow!("outbound queue closed"))?;
    let mut inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .context("attach")?
        .into_inner();
    match inbound.message().await? {
        Some(v1::MasterMessage {
            message: Some(master_message::Message::Registered(_)),
        }) => {}
        other => anyhow::bail!("unexpected answer to Register: {other:?}"),
    }
    registered.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            next = inbound.message() => {
                let Some(message) = next? else { return Ok(()) };
                if let Some(master_message::Message::Ping(_)) = message.message {
                    let heartbeat = v1::AgentMessage {
                        message: Some(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
                    };
                    if outbound.send(heartbeat).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn launch_op(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::Launch(v1::Launch {
            task_infos: tasks,
        })),
    }
}

/// Bytes per task so that [`limits::MAX_TASKS_PER_ACCEPT`] of them, and 1024 offer
/// ids of the largest size, fit in one message.
fn task_budget() -> usize {
    (limits::MAX_MESSAGE_BYTES
        - limits::MAX_OFFERS_PER_CALL * (limits::MAX_ID_BYTES + 8)
        - 64 * 1024)
        / limits::MAX_TASKS_PER_ACCEPT
}

/// A task with the largest id and name, `resources`, and labels that fill it up to
/// [`task_budget`].
fn big_task(id: String, agent_id: &str, resources: Vec<v1::Resource>) -> v1::TaskInfo {
    let mut task = v1::TaskInfo {
        task_id: padded(&id, 't', limits::MAX_ID_BYTES),
        name: padded(&id, 'n', limits::MAX_NAME_BYTES),
        agent_id: agent_id.to_string(),
        resources,
        command: Some(v1::CommandInfo {
            shell: true,
            value: "true".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // 16 labels with 32-byte keys, their values sharing what is left.
    const LABELS: usize = 16;
    let room = task_budget().saturating_sub(task_len(&task));
    let per_label = room / LABELS;
    let value_len = per_label
        .saturating_sub(32 + 12)
        .min(limits::MAX_LABEL_VALUE_BYTES);
    for l in 0..LABELS {
        task.labels
            .insert(padded(&format!("label{l}"), 'k', 32), "v".repeat(value_len));
    }
    task
}

/// 4096 tasks spread over `offers` (all of one agent): each takes 0.01 cpus, 1 mem and
/// one port of its offer's role.
fn launch_tasks(rep: u32, agent: &str, offers: &[v1::Offer]) -> anyhow::Result<Vec<v1::TaskInfo>> {
    // Per offer: the role whose cpus, mem and ports it holds, and its ports.
    let mut sources: Vec<(String, Vec<u64>)> = Vec::new();
    for offer in offers {
        let roles: Vec<&str> = offer
            .resources
            .iter()
            .filter(|r| r.name == "ports")
            .map(|r| r.role.as_str())
            .collect();
        for role in roles {
            let has = |name: &str| {
                offer
                    .resources
                    .iter()
                    .any(|r| r.name == name && r.role == role && r.scalar >= 100.0)
            };
            if !(has("cpus") && has("mem")) {
                continue;
            }
            let ports: Vec<u64> = offer
                .resources
                .iter()
                .filter(|r| r.name == "ports" && r.role == role)
                .flat_map(|r| r.ranges.iter().flat_map(|g| g.begin..=g.end))
                .collect();
            sources.push((role.to_string(), ports));
        }
    }
    anyhow::ensure!(
        !sources.is_empty(),
        "agent {agent}'s offers hold no cpus, mem and ports"
    );
    let mut tasks = Vec::with_capacity(limits::MAX_TASKS_PER_ACCEPT);
    for i in 0..limits::MAX_TASKS_PER_ACCEPT {
        let (role, ports) = &sources[i % sources.len()];
        let port = *ports
            .get(i / sources.len())
            .context("too few ports in the offers")?;
        let scalar = |name: &str, v: f64| v1::Resource {
            disk: None,
            name: name.into(),
            scalar: v,
            ranges: vec![],
            role: role.clone(),
        };
        let resources = vec![
            scalar("cpus", 0.01),
            scalar("mem", 1.0),
            v1::Resource {
                disk: None,
                name: "ports".into(),
                scalar: 0.0,
                ranges: vec![v1::Range {
                    begin: port,
                    end: port,
                }],
                role: role.clone(),
            },
        ];
        tasks.push(big_task(format!("l{rep}x{i}x"), agent, resources));
    }
    Ok(tasks)
}

/// 4096 tasks of the largest size for an ACCEPT whose offers are unknown.
fn unknown_tasks(rep: u32, agent: &str) -> Vec<v1::TaskInfo> {
    (0..limits::MAX_TASKS_PER_ACCEPT)
        .map(|i| {
            let resources = vec![v1::Resource {
                disk: None,
                name: "cpus".into(),
                scalar: 0.01,
                ranges: vec![],
                role: String::new(),
            }];
            big_task(format!("u{rep}x{i}x"), agent, resources)
        })
        .collect()
}

/// `n` distinct offer ids of the largest size that the master never made.
fn unknown_ids(rep: u32, tag: char, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| padded(&format!("{tag}{rep}x{i}x"), 'z', limits::MAX_ID_BYTES))
        .collect()
}

/// The launched tasks, then unknown tasks of the largest ids on known agents, as many
/// as one call may name (`MAX_TASKS_PER_RECONCILE`) and fit in one message.
fn reconcile_list(launched: &[(String, String)], agents: &[String]) -> Vec<v1::ReconcileTask> {
    let budget = limits::MAX_MESSAGE_BYTES - 64 * 1024;
    let mut size = 0usize;
    let mut tasks = Vec::new();
    let unknown = (0..).map(|i: usize| {
        (
            padded(&format!("r{i}x"), 'q', limits::MAX_ID_BYTES),
            agents[i % agents.len()].clone(),
        )
    });
    for (task_id, agent_id) in launched.iter().cloned().chain(unknown) {
        let t = v1::ReconcileTask { task_id, agent_id };
        let len = t.task_id.len() + t.agent_id.len() + 12;
        if size + len > budget || tasks.len() == limits::MAX_TASKS_PER_RECONCILE {
            break;
        }
        size += len;
        tasks.push(t);
    }
    tasks
}

/// About the encoded size of `task` (its strings and a few bytes of framing per
/// field; the bench has no `prost` of its own). Over-estimates a little: a message
/// that is too large after all is refused by the client's encoding limit.
fn task_len(task: &v1::TaskInfo) -> usize {
    let resources: usize = task
        .resources
        .iter()
        .map(|r| r.name.len() + r.role.len() + 16 + r.ranges.len() * 24)
        .sum();
    let labels: usize = task
        .labels
        .iter()
        .map(|(k, v)| k.len() + v.len() + 12)
        .sum();
    let command = task.command.as_ref().map_or(0, |c| c.value.len() + 8);
    task.task_id.len() + task.name.len() + task.agent_id.len() + 16 + resources + labels + command
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        anyhow::ensure!(started.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
