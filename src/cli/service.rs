//! `strata service list`: the apps' service ports (issue 15) and the instances behind
//! them, from the App API (`GET /v1/apps`: each app's `ports` and `endpoints`).

use serde::Serialize;

use super::Global;
use super::app::endpoint_status;
use super::output::{Output, Table, print_json};
use crate::app::view::AppView;

/// `strata service ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ServiceCommand {
    /// List the service ports: app, port, protocol, and the instances the service
    /// proxies send connections to (ready/running).
    #[command(visible_alias = "ls")]
    List,
}

impl ServiceCommand {
    /// Runs the command; the result is the exit code.
    pub async fn run(self, global: &Global) -> anyhow::Result<u8> {
        let client = global.client()?;
        match self {
            ServiceCommand::List => {
                let rows = services(&client.apps().await?);
                match global.output {
                    Output::Json => print_json(&rows)?,
                    Output::Table => services_table(&rows).print_or("No service ports."),
                }
                Ok(0)
            }
        }
    }
}

/// One service port: what `strata service list -o json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub app: String,
    pub service_port: u16,
    pub protocol: String,
    /// The app's port it leads to: its index in the spec and its name.
    pub port_index: usize,
    pub port_name: String,
    /// Instances in the service proxies' rotation, of `total` running.
    pub ready: usize,
    pub total: usize,
    pub endpoints: Vec<ServiceEndpoint>,
}

/// One running instance behind a service port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEndpoint {
    pub task_id: String,
    /// host:port of the instance's port.
    pub address: String,
    /// ready, killing, unhealthy or not ready.
    pub status: String,
    pub ready: bool,
}

/// The service ports of `apps`, by port number.
pub fn services(apps: &[AppView]) -> Vec<ServiceView> {
    let mut out: Vec<ServiceView> = apps
        .iter()
        .flat_map(|app| {
            app.ports.iter().filter_map(move |port| {
                let service_port = port.service_port?;
                let endpoints: Vec<ServiceEndpoint> = app
                    .endpoints
                    .iter()
                    .filter_map(|e| {
                        Some(ServiceEndpoint {
                            task_id: e.task_id.clone(),
                            address: e.address(port.index)?,
                            status: endpoint_status(e).to_string(),
                            ready: e.ready,
                        })
                    })
                    .collect();
                Some(ServiceView {
                    app: app.id.clone(),
                    service_port,
                    protocol: port.protocol.clone(),
                    port_index: port.index,
                    port_name: port.name.clone(),
                    ready: endpoints.iter().filter(|e| e.ready).count(),
                    total: endpoints.len(),
                    endpoints,
                })
            })
        })
        .collect();
    out.sort_by(|a, b| (a.service_port, &a.protocol).cmp(&(b.service_port, &b.protocol)));
    out
}

/// `APP SERVICE-PORT PROTOCOL ENDPOINTS`: the endpoints as `ready/total` then the
/// addresses of the ready ones.
pub fn services_table(rows: &[ServiceView]) -> Table {
    let mut table = Table::new(&["app", "service-port", "protocol", "endpoints"]);
    for row in rows {
        let ready: Vec<&str> = row
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| e.address.as_str())
            .collect();
        let mut endpoints = format!("{}/{}", row.ready, row.total);
        if !ready.is_empty() {
            endpoints.push(' ');
            endpoints.push_str(&ready.join(","));
        }
        table.row([
            row.app.clone(),
            row.service_port.to_string(),
            row.protocol.clone(),
            endpoints,
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::spec::AppSpec;
    use crate::app::view::{EndpointView, PortView};

    fn app(id: &str, ports: &[(&str, &str, Option<u16>)], endpoints: &[(&str, bool)]) -> AppView {
        AppView {
            id: id.into(),
            spec: AppSpec::parse(&format!("id: {id}\ncmd: x\n")).unwrap(),
            version: "v".into(),
            instances: endpoints.len() as u32,
            tasks_staged: 0,
            tasks_running: endpoints.len() as u32,
            tasks_healthy: 0,
            tasks_unhealthy: 0,
            tasks_old_version: 0,
            deployment: None,
            last_failure: None,
            backoff_seconds: None,
            ports: ports
                .iter()
                .enumerate()
                .map(|(index, (name, protocol, service_port))| PortView {
                    index,
                    name: name.to_string(),
                    protocol: protocol.to_string(),
                    service_port: *service_port,
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .enumerate()
                .map(|(i, (host, ready))| EndpointView {
                    task_id: format!("{id}.{i}"),
                    host: host.to_string(),
                    ports: (0..ports.len() as u16).map(|p| 31000 + p).collect(),
                    state: "TASK_RUNNING".into(),
                    healthy: Some(*ready),
                    ready: *ready,
                })
                .collect(),
            objects: Default::default(),
            version_cause: None,
            residents: Vec::new(),
        }
    }

    #[test]
    fn one_row_per_service_port_with_ready_of_running_endpoints() {
        let apps = [
            app(
                "web",
                &[("http", "tcp", Some(10001)), ("admin", "tcp", None)],
                &[("n1", true), ("n2", false), ("n3", true)],
            ),
            app("dns", &[("dns", "udp", Some(10000))], &[]),
            app("plain", &[("port0", "tcp", None)], &[("n1", true)]),
        ];
        let rows = services(&apps);
        assert_eq!(
            services_table(&rows).render(),
            "APP   SERVICE-PORT   PROTOCOL   ENDPOINTS\n\
             dns   10000          udp        0/0\n\
             web   10001          tcp        2/3 n1:31000,n3:31000\n"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[1]["app"], "web");
        assert_eq!(json[1]["port_name"], "http");
        assert_eq!(json[1]["endpoints"][1]["address"], "n2:31000");
        assert_eq!(json[1]["endpoints"][1]["status"], "unhealthy");
        assert_eq!(
            (json[1]["ready"].clone(), json[1]["total"].clone()),
            (2.into(), 3.into())
        );
        assert!(services(&[]).is_empty());
    }
}
