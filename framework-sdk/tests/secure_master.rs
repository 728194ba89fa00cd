//! The driver against the real master in its secure mode (`Security::Tls`): what a
//! framework author does with the files a master keeps in its work dir: the CA in
//! `tls/ca.crt`, a principal of `credentials.json`.

use std::path::Path;
use std::time::Duration;

use strata_framework_sdk::{
    ClientTls, Credential, Driver, DriverHandle, DriverOptions, Scheduler, SdkError, v1,
};
use strata_master::{MasterOptions, Security, TlsOptions};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

struct Master {
    addr: String,
    work_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Master {
    async fn start() -> Master {
        let work_dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let options = MasterOptions {
            security: Security::Tls(TlsOptions::default()),
            ..MasterOptions::new(work_dir.path())
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            strata_master::serve(listener, options, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the master runs");
        });
        // The master writes its CA and credentials before it serves.
        let ca = work_dir.path().join("tls/ca.crt");
        let credentials = work_dir.path().join("credentials.json");
        for _ in 0..200 {
            if ca.exists() && credentials.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Master {
            addr,
            work_dir,
            stop: Some(stop),
            task,
        }
    }

    fn dir(&self) -> &Path {
        self.work_dir.path()
    }

    fn tls(&self, credential: Option<Credential>) -> ClientTls {
        ClientTls {
            ca_pem: Some(std::fs::read_to_string(self.dir().join("tls/ca.crt")).unwrap()),
            credential,
            ..ClientTls::default()
        }
    }

    fn admin(&self) -> Credential {
        let secret = strata_security::credentials::secret_in_file(
            &self.dir().join("credentials.json"),
            strata_security::credentials::ADMIN,
        )
        .unwrap();
        Credential::new(strata_security::credentials::ADMIN, secret)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

enum Heard {
    Registered(String, Result<(), String>),
    Error(String),
}

struct Probe {
    heard: mpsc::UnboundedSender<Heard>,
}

impl Scheduler for Probe {
    async fn registered(&mut self, driver: &DriverHandle, framework_id: &str, _master_id: &str) {
        let revived = driver.revive().await.map_err(|e| e.to_string());
        let _ = self
            .heard
            .send(Heard::Registered(framework_id.to_string(), revived));
        driver.stop();
    }

    async fn offers(&mut self, _driver: &DriverHandle, _offers: Vec<v1::Offer>) {}

    async fn status_update(&mut self, _driver: &DriverHandle, _status: v1::TaskStatus) {}

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        let _ = self.heard.send(Heard::Error(message.to_string()));
    }
}

fn driver(master: &Master, tls: ClientTls) -> (Driver<Probe>, mpsc::UnboundedReceiver<Heard>) {
    let (heard, rx) = mpsc::unbounded_channel();
    let framework = v1::FrameworkInfo {
        name: "secure-probe".into(),
        ..Default::default()
    };
    let options = DriverOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        subscribe_timeout: Some(Duration::from_secs(20)),
        tls,
        ..DriverOptions::default()
    };
    let driver = Driver::new(master.addr.clone(), framework, Probe { heard }).with_options(options);
    (driver, rx)
}

async fn run(driver: Driver<Probe>) -> Result<Probe, SdkError> {
    tokio::time::timeout(Duration::from_secs(30), driver.run())
        .await
        .expect("the driver stops")
}

/// With the CA and the admin's credential from the master's work dir, a framework
/// subscribes and its calls go through.
#[tokio::test]
async fn a_framework_with_the_masters_ca_and_a_credential_subscribes() {
    let master = Master::start().await;
    let (driver, mut heard) = driver(&master, master.tls(Some(master.admin())));
    run(driver).await.expect("subscribed, then stopped");
    match heard.try_recv() {
        Ok(Heard::Registered(framework_id, Ok(()))) => assert!(!framework_id.is_empty()),
        Ok(Heard::Registered(_, Err(e))) => panic!("the revive failed: {e}"),
        Ok(Heard::Error(e)) => panic!("refused: {e}"),
        Err(_) => panic!("the scheduler heard nothing"),
    }
    master.stop().await;
}

/// A wrong secret or no credential at all: the real master refuses, and the driver
/// says so at once instead of retrying in silence.
#[tokio::test]
async fn the_real_master_refuses_a_wrong_or_missing_credential() {
    let master = Master::start().await;
    let wrong = Credential::new(strata_security::credentials::ADMIN, "not-the-secret-at-all");
    for credential in [Some(wrong), None] {
        let (driver, mut heard) = driver(&master, master.tls(credential));
        match run(driver).await {
            Err(SdkError::Rpc(status)) => assert_eq!(status.code(), Code::Unauthenticated),
            other => panic!("expected UNAUTHENTICATED, got {:?}", other.err()),
        }
        assert!(
            matches!(heard.try_recv(), Ok(Heard::Error(m)) if m.contains("UNAUTHENTICATED")),
            "the scheduler is told"
        );
    }
    master.stop().await;
}
