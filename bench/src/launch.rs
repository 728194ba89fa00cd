//! The default bench: launch throughput and latency of the whole loop in one process
//! — a master, N agents with the fake containerizer (which runs nothing: this is a
//! scale run) and one framework, all talking gRPC over loopback.
//!
//! The framework launches `--tasks` tasks as offers arrive, packing as many as fit
//! into each offer, and measures each task from the ACCEPT that launched it to its
//! TASK_RUNNING. The last two lines printed are `launch_throughput: N tasks/s` and
//! `launch_latency_p99: X ms`.
//!
//! `--secure` runs the same loop as a secure cluster does: the master with TLS and
//! authentication (a credentials file the bench writes, principal `bench`), the agents
//! joining with the master's join token (each gets its certificate and links with
//! mutual TLS) and the framework over TLS with the `bench` credential on every call,
//! each call asked of the master's authorizer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_proto::v1::{self, scheduler_client::SchedulerClient};
use strata_security::ClientTls;
use strata_security::credentials::AuthInterceptor;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::secure;
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// Fake agents to run.
    #[arg(long, default_value_t = 100)]
    pub agents: u32,
    /// Tasks to launch.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u32,
    /// cpus per task (each agent has 100 cpus).
    #[arg(long, default_value_t = 0.1)]
    pub cpus: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// TLS and authentication: the master secure (as without `--insecure`), agents
    /// joining with its join token, the framework with a credential.
    #[arg(long)]
    pub secure: bool,
}

/// A launch run's figures.
#[derive(Debug, Clone, Copy)]
pub struct LaunchFigures {
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

const AGENT_RESOURCES: &str = "cpus:100;mem:1024000;disk:1000000;ports:[31000-32000]";

pub async fn launch(args: LaunchArgs) -> anyhow::Result<Outcome> {
    let figures = measure(&args).await?;
    Ok(Outcome {
        code: 0,
        figure: format!(
            "{:.0} tasks/s, p99 {:.1} ms{}",
            figures.throughput,
            figures.p99_ms,
            if args.secure { " (secure)" } else { "" }
        ),
    })
}

/// One launch run: prints its lines and returns its figures.
pub async fn measure(args: &LaunchArgs) -> anyhow::Result<LaunchFigures> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(
        args.cpus > 0.0 && args.cpus.is_finite(),
        "--cpus must be positive"
    );
    let capacity = f64::from(args.agents) * 100.0 / args.cpus;
    anyhow::ensure!(
        capacity >= f64::from(args.tasks),
        "{} agents of 100 cpus hold only {capacity:.0} tasks of {} cpus",
        args.agents,
        args.cpus
    );
    let work = work_dir("strata-bench")?;
    let result = run(args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(args: &LaunchArgs, work: &std::path::Path) -> anyhow::Result<LaunchFigures> {
    let master_dir = work.join("master");
    let mut master_options = strata_master::MasterOptions::new(&master_dir);
    let mut tls = ClientTls::insecure();
    let mut join_token = None;
    if args.secure {
        // The CA and the join token are made before the master starts (it loads them),
        // so that the agents have the token at once.
        let (credentials, credential) = secure::write_credentials(work)?;
        let options = secure::tls_options(&credentials);
        let prepared = strata_master::security::prepare(&master_dir, &options)?;
        join_token = Some(prepared.join_token.to_string());
        master_options.security = strata_master::Security::Tls(options);
        tls = secure::user_tls(&master_dir, &credential)?;
    }
    let mut parts = Parts::new();
    let master_addr = parts.master(master_options).await?;
    for i in 0..args.agents {
        let mut opts = strata_agent::AgentOptions::new(
            master_addr.to_string(),
            work.join(format!("agent-{i}")),
        );
        opts.resources = strata_proto::Resources::parse(AGENT_RESOURCES)?;
        opts.hostname = Some(format!("fake-{i}"));
        opts.containerizer = strata_agent::ContainerizerConfig::Fake {
            task_duration: Duration::from_secs(3600),
        };
        opts.insecure = !args.secure;
        opts.join_token = join_token.clone();
        parts.agent(opts).await?;
    }
    eprintln!(
        "bench: master on {master_addr}, {} fake agents, {} tasks of {} cpus{}",
        args.agents,
        args.tasks,
        args.cpus,
        if args.secure {
            ", secure (TLS, agent certificates, credentials)"
        } else {
            ", insecure"
        }
    );

    // Every agent registered before the framework starts, so that the figures are
    // launches, not agents arriving (a secure agent first joins: a certificate
    // request, then its own TLS link).
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), async {
        let (http, url) = secure::http(&tls, master_addr)?;
        let started = Instant::now();
        while agents_active(&http, &url).await < u64::from(args.agents) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "bench: all {} agents registered {:.3} s after the master started",
            args.agents,
            started.elapsed().as_secs_f64()
        );
        framework(master_addr.to_string(), &tls, args).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("bench did not finish within {} s", args.timeout))
    .and_then(|r| r);

    parts.stop().await;

    let (elapsed, latencies) = result?;
    let latencies = Samples::new(latencies);
    let throughput = latencies.len() as f64 / elapsed.as_secs_f64();
    let p99 = ms(latencies.percentile(0.99));
    println!("tasks: {}", latencies.len());
    println!("elapsed: {:.3} s", elapsed.as_secs_f64());
    let p50 = ms(latencies.percentile(0.50));
    println!("launch_latency_p50: {p50:.1} ms");
    println!("launch_throughput: {throughput:.0} tasks/s");
    println!("launch_latency_p99: {p99:.1} ms");
    Ok(LaunchFigures {
        throughput,
        p50_ms: p50,
        p99_ms: p99,
    })
}

/// `strata_master_agents_active` from the master's /metrics (0 while it does not
/// answer).
async fn agents_active(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(resp) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let Ok(text) = resp.text().await else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("strata_master_agents_active "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The benchmark's framework. Returns the time from the first ACCEPT to the last
/// TASK_RUNNING, and every task's accept-to-running latency.
async fn framework(
    master: String,
    tls: &ClientTls,
    args: &LaunchArgs,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let channel = tls
        .endpoint(&master, strata_security::MASTER_NAME)?
        .connect()
        .await
        .context("connect to the master")?;
    let mut client =
        SchedulerClient::with_interceptor(channel, AuthInterceptor::new(tls.credential.as_ref()));
    let info = v1::FrameworkInfo {
        name: "strata-bench".into(),
        roles: vec!["*".into()],
        ..Default::default()
    };
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();

    // Acknowledgements go out from a few workers so that they never hold up the event loop.
    let (ack_tx, ack_rx) = mpsc::channel::<v1::AcknowledgeRequest>(65_536);
    let ack_rx = std::sync::Arc::new(tokio::sync::Mutex::new(ack_rx));
    let mut ackers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let rx = ack_rx.clone();
        let mut c = client.clone();
        ackers.spawn(async move {
            loop {
                let next = { rx.lock().await.recv().await };
                let Some(req) = next else { break };
                let _ = c.acknowledge(req).await;
            }
        });
    }

    let mut header = v1::CallHeader::default();
    let mut launched_at: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(args.tasks as usize);
    let mut next_task = 0u32;
    let mut first_accept: Option<Instant> = None;
    let task_res = strata_proto::Resources::cpus_mem(args.cpus, 1.0);

    while let Some(event) = events.next().await {
        let event = event.context("event stream")?;
        match event.event {
            Some(v1::event::Event::Subscribed(s)) => {
                header = v1::CallHeader {
                    framework_id: s.framework_id,
                    stream_id: s.stream_id,
                };
            }
            Some(v1::event::Event::Offers(offers)) => {
                for offer in offers.offers {
                    let mut left = strata_proto::Resources::try_from_proto(&offer.resources)?;
                    let mut tasks = Vec::new();
                    while next_task < args.tasks && left.contains(&task_res) {
                        left.subtract(&task_res);
                        let id = format!("bench-{next_task}");
                        next_task += 1;
                        tasks.push(v1::TaskInfo {
                            task_id: id.clone(),
                            name: id,
                            agent_id: offer.agent_id.clone(),
                            resources: task_res.to_proto(),
                            command: Some(v1::CommandInfo {
                                shell: true,
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                    }
                    let now = Instant::now();
                    first_accept.get_or_insert(now);
                    for t in &tasks {
                        launched_at.insert(t.task_id.clone(), now);
                    }
                    let req = v1::AcceptRequest {
                        header: Some(header.clone()),
                        offer_ids: vec![offer.id.clone()],
                        operations: if tasks.is_empty() {
                            vec![]
                        } else {
                            vec![v1::Operation {
                                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                                    task_infos: tasks,
                                })),
                            }]
                        },
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(3600.0),
                        }),
                    };
                    client.accept(req).await.context("accept")?;
                }
                if next_task >= args.tasks {
                    let _ = client
                        .suppress(v1::SuppressRequest {
                            header: Some(header.clone()),
                            roles: vec![],
                        })
                        .await;
                }
            }
            Some(v1::event::Event::Update(u)) => {
                let Some(status) = u.status else { continue };
                if !status.uuid.is_empty() {
                    let _ = ack_tx
                        .send(v1::AcknowledgeRequest {
                            header: Some(header.clone()),
                            agent_id: status.agent_id.clone(),
                            task_id: status.task_id.clone(),
                            uuid: status.uuid.clone(),
                        })
                        .await;
                }
                match status.state() {
                    v1::TaskState::TaskRunning => {
                        if let Some(at) = launched_at.remove(&status.task_id) {
                            latencies.push(at.elapsed());
                            if latencies.len() == args.tasks as usize {
                                break;
                            }
                        }
                    }
                    v1::TaskState::TaskStaging | v1::TaskState::TaskStarting => {}
                    other => anyhow::bail!(
                        "task {} went {}: {}",
                        status.task_id,
                        other.as_str_name(),
                        status.message
                    ),
                }
            }
            Some(v1::event::Event::Error(e)) => anyhow::bail!("master error: {}", e.message),
            _ => {}
        }
    }
    let elapsed = first_accept.map(|t| t.elapsed()).unwrap_or_default();
    anyhow::ensure!(
        latencies.len() == args.tasks as usize,
        "the event stream ended early"
    );
    let _ = client
        .teardown(v1::TeardownRequest {
            header: Some(header),
        })
        .await;
    drop(ack_tx);
    while ackers.join_next().await.is_some() {}
    Ok((elapsed, latencies))
}
