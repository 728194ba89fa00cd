//! A load probe of the gRPC layer and the driver without real agents: simulated
//! agents answer every RunTask with TASK_RUNNING at once, one framework launches
//! tasks as fast as offers come. Ignored by default (run with `--ignored --nocapture`,
//! preferably with `--release`); it prints the launch throughput.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use strata_proto::v1;
use strata_proto::v1::event::Event as Ev;
use strata_proto::v1::master_message::Message as Down;

const AGENTS: usize = 100;
const TASKS: usize = 20_000;

async fn run_agent(master_addr: String, i: usize, ready: tokio::sync::mpsc::Sender<()>) {
    let channel = tonic::transport::Channel::from_shared(master_addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = v1::agent_link_client::AgentLinkClient::new(channel);
    let (up, rx) = tokio::sync::mpsc::channel(1024);
    let mut info = agent_info(&format!("sim-{i}"));
    info.resources = strata_proto::Resources::parse("cpus:100;mem:100000")
        .unwrap()
        .to_proto();
    up.send(register(info)).await.unwrap();
    let mut down = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut agent_id = String::new();
    while let Ok(Some(m)) = down.message().await {
        match m.message {
            Some(Down::Registered(r)) => {
                agent_id = r.agent_id;
                let _ = ready.send(()).await;
            }
            Some(Down::RunTask(r)) => {
                let task = r.task.unwrap_or_default();
                let fw = r.framework.unwrap_or_default();
                let status = v1::TaskStatus {
                    task_id: task.task_id.clone(),
                    state: v1::TaskState::TaskRunning as i32,
                    source: v1::TaskStatusSource::SourceAgent as i32,
                    agent_id: agent_id.clone(),
                    framework_id: fw.id,
                    uuid: format!("{}-running", task.task_id),
                    ..Default::default()
                };
                let msg = v1::AgentMessage {
                    message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                        status: Some(status),
                    })),
                };
                if up.send(msg).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load probe; run explicitly"]
async fn launch_throughput_with_simulated_agents() {
    let dir = tempfile::tempdir().unwrap();
    let master = TestMaster::start(dir.path()).await;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(AGENTS);
    let started = Instant::now();
    for i in 0..AGENTS {
        tokio::spawn(run_agent(
            format!("http://{}", master.addr),
            i,
            ready_tx.clone(),
        ));
    }
    for _ in 0..AGENTS {
        tokio::time::timeout(Duration::from_secs(30), ready.recv())
            .await
            .unwrap();
    }
    println!("{AGENTS} agents registered in {:?}", started.elapsed());

    let (mut events, s) = subscribe(&master, framework_info("load")).await;
    let header = Some(v1::CallHeader {
        framework_id: s.framework_id,
        stream_id: s.stream_id,
    });
    let mut client = master.scheduler().await;
    let mut launched = 0usize;
    let mut running = HashSet::new();
    let started = Instant::now();
    let per_task = strata_proto::Resources::cpus_mem(0.1, 1.0);
    while running.len() < TASKS {
        let event = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        match event.event {
            Some(Ev::Offers(o)) => {
                for offer in o.offers {
                    let cpus = strata_proto::Resources::try_from_proto(&offer.resources)
                        .unwrap()
                        .cpus();
                    let fit = (cpus.milli() / 100) as usize;
                    let n = fit.min(TASKS - launched);
                    let tasks: Vec<v1::TaskInfo> = (0..n)
                        .map(|k| v1::TaskInfo {
                            task_id: format!("t{}", launched + k),
                            name: "t".into(),
                            agent_id: offer.agent_id.clone(),
                            resources: per_task.to_proto(),
                            command: Some(v1::CommandInfo {
                                shell: true,
                                value: "true".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect();
                    launched += n;
                    let ops = if tasks.is_empty() {
                        vec![]
                    } else {
                        vec![v1::Operation {
                            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                                task_infos: tasks,
                            })),
                        }]
                    };
                    client
                        .accept(v1::AcceptRequest {
                            header: header.clone(),
                            offer_ids: vec![offer.id],
                            operations: ops,
                            filters: None,
                        })
                        .await
                        .unwrap();
                }
            }
            Some(Ev::Update(u)) => {
                let st = u.status.unwrap();
                if st.state == v1::TaskState::TaskRunning as i32 {
                    running.insert(st.task_id.clone());
                }
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{TASKS} tasks running in {elapsed:?}: {:.0} tasks/s",
        TASKS as f64 / elapsed.as_secs_f64()
    );
    let metrics = http_get(&master, "/metrics").await.text().await.unwrap();
    for line in metrics.lines().filter(|l| {
        l.starts_with("strata_master_allocation_run_ms")
            || l.starts_with("strata_master_tasks_running")
    }) {
        println!("{line}");
    }
    master.stop().await.unwrap();
}
