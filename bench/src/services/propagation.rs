//! `strata-bench propagation`: from a task's KILL to its removal from the service
//! proxy of every agent.
//!
//! An in-process master and `--agents` agents (fake containerizer, each agent's proxy
//! bound on its own loopback address, 127.0.0.2, 127.0.0.3, ...), and a raw framework
//! (the `TASK_KILLING_STATE` capability, as the container framework has) that launches
//! `--kills` + `--keep` × agents tasks spread evenly over the agents, each publishing
//! one discovery port with the service-port label of one service port. Once every
//! proxy lists every task, the framework kills the tasks one at a time (round robin
//! over the agents) and the bench measures from the KILL call until every agent's
//! proxy counts one backend fewer; the next kill starts after that. The tasks are not
//! relaunched: the table shrinks from `kills + keep × agents` backends to
//! `keep × agents`.
//!
//! The agents run in this process, but `strata_agent::run` does not hand out its
//! proxy, so the bench reads each agent's `/state` (`service_proxy[].backends`), one
//! poller per agent, a request every `--poll` (1 ms): a figure is late by up to one
//! poll interval plus one `/state` answer (its mean is printed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_proto::v1::{self, scheduler_client::SchedulerClient};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct PropagationArgs {
    /// Agents, each with its proxy on 127.0.0.(2+i).
    #[arg(long, default_value_t = 3)]
    pub agents: u32,
    /// Tasks killed (and measured), one at a time.
    #[arg(long, default_value_t = 30)]
    pub kills: u32,
    /// Tasks per agent left running at the end.
    #[arg(long, default_value_t = 1)]
    pub keep: u32,
    /// How often each agent's /state is read while a kill propagates.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

const AGENT_RESOURCES: &str = "cpus:100;mem:102400;disk:10000;ports:[31000-32000]";

pub async fn bench_propagation(args: PropagationArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!((1..=200).contains(&args.agents), "--agents must be 1-200");
    anyhow::ensure!(args.kills >= 1, "--kills must be at least 1");
    let work = work_dir("strata-bench-propagation")?;
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), run(&args, &work))
        .await
        .map_err(|_| anyhow::anyhow!("bench did not finish within {} s", args.timeout))
        .and_then(|r| r);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// An agent of the bench: its HTTP API's address.
struct Agent {
    api: SocketAddr,
}

async fn run(args: &PropagationArgs, work: &Path) -> anyhow::Result<Outcome> {
    let mut parts = Parts::new();
    let mut master_options = strata_master::MasterOptions::new(work.join("master"));
    master_options.allocation_interval = Duration::from_millis(50);
    let master = parts.master(master_options).await?;
    // The agents are started here rather than with `Parts::agent`, which does not say
    // where their API listens.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agent_tasks = JoinSet::new();
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let mut opts =
            strata_agent::AgentOptions::new(master.to_string(), work.join(format!("agent-{i}")));
        opts.resources = strata_proto::Resources::parse(AGENT_RESOURCES)?;
        opts.hostname = Some(format!("fake-{i}"));
        opts.containerizer = strata_agent::ContainerizerConfig::Fake {
            task_duration: Duration::from_secs(3600),
        };
        opts.service_proxy = Some(proxy_ip(i));
        let mut stop = stop_rx.clone();
        agent_tasks.spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
                strata_agent::Shutdown::KillTasks
            };
            strata_agent::run(listener, opts, stop).await
        });
        agents.push(Agent { api });
    }
    let service_port = super::proxy::free_port()?;
    eprintln!(
        "bench: master on {master}, {} fake agents (proxies on {}..{}), service port {service_port}, {} kills",
        args.agents,
        proxy_ip(0),
        proxy_ip(args.agents - 1),
        args.kills
    );

    let result = measure(args, master, &agents, service_port).await;

    stop_tx.send_replace(true);
    while agent_tasks.join_next().await.is_some() {}
    parts.stop().await;
    let (samples, poll_cost) = result?;
    let samples = Samples::new(samples);
    println!("kills: {}", samples.len());
    println!(
        "state_poll_mean: {:.3} ms (one /state answer; the figures are late by up to it plus the poll interval)",
        ms(poll_cost)
    );
    let p50 = ms(samples.percentile(0.5));
    let p99 = ms(samples.percentile(0.99));
    let max = ms(samples.percentile(1.0));
    println!("propagation_p50: {p50:.1} ms");
    println!("propagation_max: {max:.1} ms");
    println!("propagation_p99: {p99:.1} ms");
    println!(
        "goal (p99 < 100 ms): {}",
        if p99 < 100.0 { "met" } else { "NOT met" }
    );
    Ok(Outcome {
        code: 0,
        figure: format!(
            "kill to out of every proxy ({} agents, {} kills): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            args.agents,
            samples.len()
        ),
    })
}

/// The address agent `i`'s proxy binds.
fn proxy_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
}

/// The backends agent `api`'s proxy counts on `port`: `None` while the port is not
/// listed, or not listening, or the agent does not answer.
async fn backends(http: &reqwest::Client, api: SocketAddr, port: u16) -> Option<u64> {
    let state: serde_json::Value = http
        .get(format!("http://{api}/state"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    state["service_proxy"]
        .as_array()?
        .iter()
        .find(|p| p["port"] == port && p["protocol"] == "tcp" && p["listening"] == true)?["backends"]
        .as_u64()
}

/// Polls every agent until each counts `want` backends; when the last did. The mean
/// duration of one poll is added to `cost`.
async fn wait_all(
    http: &reqwest::Client,
    agents: &[Agent],
    port: u16,
    want: u64,
    poll: Duration,
    cost: &mut (Duration, u32),
) -> Instant {
    let mut pollers = JoinSet::new();
    for agent in agents {
        let http = http.clone();
        let api = agent.api;
        pollers.spawn(async move {
            let mut spent = (Duration::ZERO, 0u32);
            loop {
                let asked = Instant::now();
                let seen = backends(&http, api, port).await;
                let answered = Instant::now();
                spent.0 += answered - asked;
                spent.1 += 1;
                if seen == Some(want) {
                    return (answered, spent);
                }
                tokio::time::sleep(poll).await;
            }
        });
    }
    let mut last = Instant::now();
    let mut first = true;
    while let Some(done) = pollers.join_next().await {
        if let Ok((at, spent)) = done {
            if first || at > last {
                last = at;
                first = false;
            }
            cost.0 += spent.0;
            cost.1 += spent.1;
        }
    }
    last
}

/// The framework's side: launch, wait for every proxy, kill one at a time. Returns
/// each kill's propagation time and the mean cost of one `/state` poll.
async fn measure(
    args: &PropagationArgs,
    master: SocketAddr,
    agents: &[Agent],
    service_port: u16,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{master}"))?
        .connect()
        .await
        .context("connect to the master")?;
    let mut client = SchedulerClient::new(channel);
    let info = v1::FrameworkInfo {
        name: "strata-bench-propagation".into(),
        roles: vec!["*".into()],
        capabilities: vec![v1::FrameworkCapability::TaskKillingState as i32],
        ..Default::default()
    };
    let mut events = client
        .subscribe(v1::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();

    let agent_count = args.agents as usize;
    let total = args.kills + args.keep * args.agents;
    let per_agent = total.div_ceil(args.agents);
    // The event loop runs on its own: offers, acknowledgements, running tasks.
    let (running_tx, mut running_rx) = mpsc::unbounded_channel::<(String, String)>();
    let (header_tx, mut header_rx) = watch::channel(None::<v1::CallHeader>);
    let mut loop_client = client.clone();
    let events_task = tokio::spawn(async move {
        let mut header = v1::CallHeader::default();
        let mut placed: std::collections::HashMap<String, (u32, u32)> = Default::default();
        let mut next = 0u32;
        while let Some(event) = events.next().await {
            let event = event.context("event stream")?;
            match event.event {
                Some(v1::event::Event::Subscribed(s)) => {
                    header = v1::CallHeader {
                        framework_id: s.framework_id,
                        stream_id: s.stream_id,
                    };
                    header_tx.send_replace(Some(header.clone()));
                }
                Some(v1::event::Event::Offers(offers)) => {
                    for offer in offers.offers {
                        // The first `total % agents` agents to offer take one more.
                        let index = placed.len() as u32;
                        let (on_agent, quota) =
                            placed.entry(offer.agent_id.clone()).or_insert_with(|| {
                                let agents = agent_count as u32;
                                (0, total / agents + u32::from(index < total % agents))
                            });
                        let mut tasks = Vec::new();
                        while next < total && *on_agent < *quota {
                            tasks.push(task(next, &offer.agent_id, service_port));
                            next += 1;
                            *on_agent += 1;
                        }
                        loop_client
                            .accept(v1::AcceptRequest {
                                header: Some(header.clone()),
                                offer_ids: vec![offer.id.clone()],
                                operations: if tasks.is_empty() {
                                    vec![]
                                } else {
                                    vec![v1::Operation {
                                        operation: Some(v1::operation::Operation::Launch(
                                            v1::Launch { task_infos: tasks },
                                        )),
                                    }]
                                },
                                filters: Some(v1::Filters {
                                    refuse_seconds: Some(3600.0),
                                }),
                            })
                            .await
                            .context("accept")?;
                    }
                }
                Some(v1::event::Event::Update(u)) => {
                    let Some(status) = u.status else { continue };
                    if !status.uuid.is_empty() {
                        let _ = loop_client
                            .acknowledge(v1::AcknowledgeRequest {
                                header: Some(header.clone()),
                                agent_id: status.agent_id.clone(),
                                task_id: status.task_id.clone(),
                                uuid: status.uuid.clone(),
                            })
                            .await;
                    }
                    match status.state() {
                        v1::TaskState::TaskRunning => {
                            let _ = running_tx.send((status.task_id, status.agent_id));
                        }
                        v1::TaskState::TaskStaging
                        | v1::TaskState::TaskStarting
                        | v1::TaskState::TaskKilling
                        | v1::TaskState::TaskKilled => {}
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
        Ok::<(), anyhow::Error>(())
    });

    let result = async {
        let header = header_rx
            .wait_for(|h| h.is_some())
            .await
            .map_err(|_| anyhow::anyhow!("the framework was not subscribed"))?
            .clone()
            .context("no header")?;
        // Every task running, grouped by agent.
        let launched = Instant::now();
        let mut by_agent: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut running = 0;
        while running < total {
            let (task_id, agent_id) = running_rx
                .recv()
                .await
                .context("the framework's event stream ended")?;
            by_agent.entry(agent_id).or_default().push(task_id);
            running += 1;
        }
        anyhow::ensure!(
            by_agent.len() == agent_count.min(total as usize),
            "tasks on {} agents, not {agent_count}",
            by_agent.len()
        );
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()?;
        let mut cost = (Duration::ZERO, 0u32);
        let all_in = wait_all(
            &http,
            agents,
            service_port,
            u64::from(total),
            args.poll,
            &mut cost,
        )
        .await;
        eprintln!(
            "bench: {total} tasks running and in every proxy {:.0} ms after the first launch",
            ms(all_in - launched)
        );
        // Round robin over the agents, the first tasks of each.
        let mut order = Vec::new();
        let lists: Vec<(String, Vec<String>)> = by_agent.into_iter().collect();
        for k in 0..per_agent as usize {
            for (agent, tasks) in &lists {
                if let Some(t) = tasks.get(k) {
                    order.push((agent.clone(), t.clone()));
                }
            }
        }
        let mut samples = Vec::new();
        let mut left = u64::from(total);
        let mut cost = (Duration::ZERO, 0u32);
        for (agent_id, task_id) in order.into_iter().take(args.kills as usize) {
            let started = Instant::now();
            client
                .kill(v1::KillRequest {
                    header: Some(header.clone()),
                    task_id,
                    agent_id,
                    kill_policy: None,
                })
                .await
                .context("kill")?;
            left -= 1;
            let done = wait_all(&http, agents, service_port, left, args.poll, &mut cost).await;
            samples.push(done - started);
        }
        let poll_cost = if cost.1 == 0 {
            Duration::ZERO
        } else {
            cost.0 / cost.1
        };
        let _ = client
            .teardown(v1::TeardownRequest {
                header: Some(header),
            })
            .await;
        Ok((samples, poll_cost))
    }
    .await;
    events_task.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(10), events_task).await {
        return Err(e.context("the framework's event loop failed"));
    }
    result
}

/// Task `n`: a fake task on `agent_id` publishing one TCP port with the service port.
fn task(n: u32, agent_id: &str, service_port: u16) -> v1::TaskInfo {
    let id = format!("prop-{n}");
    let mut labels = std::collections::HashMap::new();
    labels.insert(
        strata_proto::discovery::SERVICE_PORT_LABEL.to_string(),
        service_port.to_string(),
    );
    v1::TaskInfo {
        task_id: id.clone(),
        name: id,
        agent_id: agent_id.to_string(),
        resources: strata_proto::Resources::cpus_mem(0.1, 1.0).to_proto(),
        command: Some(v1::CommandInfo {
            shell: true,
            value: "true".into(),
            ..Default::default()
        }),
        discovery: Some(v1::DiscoveryInfo {
            name: "propagation".into(),
            ports: Some(v1::Ports {
                ports: vec![v1::Port {
                    number: 31000 + n,
                    name: "http".into(),
                    protocol: "tcp".into(),
                    labels,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
