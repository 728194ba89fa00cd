//! The typed HTTP client of the App API (`strata serve`), with errors that say which
//! address failed and why. (The master is asked through its operator gRPC API:
//! [`super::master_client`].)

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::spec::AppSpec;
use crate::app::view::{AppTaskView, AppView, ErrorBody, InfoView, ScaleRequest};

/// What a call to the App API failed on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered at the address (refused, timed out, DNS, ...).
    #[error("cannot reach {service} at {addr}: {reason} ({hint})")]
    Unreachable {
        service: &'static str,
        addr: String,
        reason: String,
        hint: &'static str,
    },
    /// The server answered with an error status. `body` is its `ErrorBody`, or one
    /// made up from the status and text when the answer was not one.
    #[error("{}", status_text(*.code, .body))]
    Status { code: u16, body: ErrorBody },
    /// The client could not be set up: an address that does not resolve, a CA that
    /// does not parse.
    #[error("cannot set up a connection to {service} at {addr}: {reason}")]
    Setup {
        service: &'static str,
        addr: String,
        reason: String,
    },
    /// The server answered 2xx with a body that is not what the call expects.
    #[error("unreadable answer from {addr} to {call}: {reason}")]
    Decode {
        addr: String,
        call: String,
        reason: String,
    },
}

impl ApiError {
    /// Whether the server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { code: 404, .. })
    }

    /// Whether the server could not be reached (worth retrying while waiting).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Unreachable { .. })
    }
}

/// The text of an error answer: `app "web" not found`, or for a refused spec
/// `spec refused: instances: must be at most 1000`. `strata serve` already writes
/// refusals that way (`error` starts with `spec refused: FIELD:`); bodies that do not
/// get the prefix and the field added.
fn status_text(code: u16, body: &ErrorBody) -> String {
    if body.error.starts_with("spec refused") {
        return body.error.clone();
    }
    let field = body.field.as_deref().filter(|f| !f.is_empty());
    let mut text = String::new();
    if field.is_some() || code == 422 {
        text.push_str("spec refused: ");
    }
    if let Some(field) = field {
        // Servers may already start the message with the field; say it once.
        if !body.error.starts_with(&format!("{field}:")) {
            text.push_str(field);
            text.push_str(": ");
        }
    }
    text.push_str(&body.error);
    text
}

/// A client of the App API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// The address as given, for messages.
    addr: String,
    /// `http://host:port`, or with TLS `https://strata-apps:port` (the name the App
    /// API's certificate carries, resolved to `addr`), without a trailing slash.
    base: String,
    http: reqwest::Client,
    /// Whether the connection is TLS (for hints).
    tls: bool,
    /// Whose credential is sent, for messages.
    principal: Option<String>,
}

const SERVICE: &str = "the Strata app server";

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    /// A client of the App API at `addr` (`host:port` or `http://host:port`), plain
    /// text, no credential (`--insecure`).
    pub fn new(addr: &str) -> ApiClient {
        let addr = addr.trim().to_string();
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let http = builder().build().unwrap_or_else(|_| reqwest::Client::new());
        ApiClient {
            addr,
            base,
            http,
            tls: false,
            principal: None,
        }
    }

    /// A client of the App API at `addr` (`host:port`) with `tls`: the server is
    /// verified as [`strata_security::APPS_NAME`] by the cluster CA alone, and the
    /// credential goes with every call. Plain text when `tls` has no CA.
    pub fn with_tls(addr: &str, tls: &strata_security::ClientTls) -> Result<ApiClient, ApiError> {
        if !tls.is_tls() {
            return Ok(ApiClient::new(addr));
        }
        let addr = addr.trim().to_string();
        let setup = |reason: String| ApiError::Setup {
            service: SERVICE,
            addr: addr.clone(),
            reason,
        };
        let host_port = bare(&addr);
        let resolved: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(host_port)
                .map_err(|e| setup(format!("'{host_port}' is not a reachable host:port: {e}")))?
                .collect();
        let port = resolved
            .first()
            .map(std::net::SocketAddr::port)
            .ok_or_else(|| setup(format!("'{host_port}' resolves to no address")))?;
        let http = tls
            .reqwest(builder())
            .map_err(|e| setup(e.to_string()))?
            .resolve_to_addrs(strata_security::APPS_NAME, &resolved)
            .build()
            .map_err(|e| setup(innermost(&e)))?;
        Ok(ApiClient {
            base: format!("https://{}:{port}", strata_security::APPS_NAME),
            addr,
            http,
            tls: true,
            principal: tls.credential.as_ref().map(|c| c.principal.clone()),
        })
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<InfoView, ApiError> {
        self.get("/v1/info").await
    }

    /// `GET /v1/apps`.
    pub async fn apps(&self) -> Result<Vec<AppView>, ApiError> {
        self.get("/v1/apps").await
    }

    /// `GET /v1/apps/{id}`.
    pub async fn app(&self, id: &str) -> Result<AppView, ApiError> {
        self.get(&format!("/v1/apps/{}", segment(id))).await
    }

    /// `PUT /v1/apps/{id}`: create or update; starts a deployment.
    pub async fn put_app(&self, spec: &AppSpec) -> Result<AppView, ApiError> {
        let path = format!("/v1/apps/{}", segment(&spec.id));
        self.call(Method::PUT, &path, Some(spec)).await
    }

    /// `DELETE /v1/apps/{id}`: starts a destroy deployment.
    /// With `wipe`, a resident app's volumes are destroyed (their data with them)
    /// and its reservations released: `?wipe=true`.
    pub async fn delete_app(&self, id: &str, wipe: bool) -> Result<AppView, ApiError> {
        let query = if wipe { "?wipe=true" } else { "" };
        let path = format!("/v1/apps/{}{query}", segment(id));
        self.call::<_, ()>(Method::DELETE, &path, None).await
    }

    /// `POST /v1/apps/{id}/scale`.
    pub async fn scale_app(&self, id: &str, instances: u32) -> Result<AppView, ApiError> {
        let path = format!("/v1/apps/{}/scale", segment(id));
        self.call(Method::POST, &path, Some(&ScaleRequest { instances }))
            .await
    }

    /// `POST /v1/apps/{id}/restart`.
    pub async fn restart_app(&self, id: &str) -> Result<AppView, ApiError> {
        let path = format!("/v1/apps/{}/restart", segment(id));
        self.call::<_, ()>(Method::POST, &path, None).await
    }

    /// `GET /v1/apps/{id}/tasks`.
    pub async fn app_tasks(&self, id: &str) -> Result<Vec<AppTaskView>, ApiError> {
        self.get(&format!("/v1/apps/{}/tasks", segment(id))).await
    }

    /// `GET /v1/tasks`, or `GET /v1/tasks?app=ID`.
    pub async fn tasks(&self, app: Option<&str>) -> Result<Vec<AppTaskView>, ApiError> {
        match app {
            Some(app) => self.get(&format!("/v1/tasks?app={}", segment(app))).await,
            None => self.get("/v1/tasks").await,
        }
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn task(&self, id: &str) -> Result<AppTaskView, ApiError> {
        self.get(&format!("/v1/tasks/{}", segment(id))).await
    }

    /// `POST /v1/tasks/{id}/kill`: the app replaces the task.
    pub async fn kill_task(&self, id: &str) -> Result<AppTaskView, ApiError> {
        let path = format!("/v1/tasks/{}/kill", segment(id));
        self.call::<_, ()>(Method::POST, &path, None).await
    }

    /// `GET path`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call::<T, ()>(Method::GET, path, None).await
    }

    /// One call: `method path` with an optional JSON body; a 2xx answer is decoded as
    /// `T`, anything else becomes an [`ApiError`].
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let call = format!("{method} {path}");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(self.status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            addr: self.addr.clone(),
            call,
            reason: e.to_string(),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        let reason = if e.is_timeout() {
            format!("no answer within {}s", CALL_TIMEOUT.as_secs())
        } else {
            innermost(e)
        };
        ApiError::Unreachable {
            service: SERVICE,
            addr: self.addr.clone(),
            reason,
            hint: if self.tls {
                "is `strata serve` running there, with TLS? Point the CLI at it with --server ADDR \
                 or STRATA_SERVER; a TLS error means its certificate is not from the CA in the CLI \
                 config's ca_file, or it runs with --insecure (then pass --insecure)"
            } else {
                "is `strata serve` running there? Point the CLI at it with --server ADDR or \
                 STRATA_SERVER (a server with TLS needs the CLI config, not --insecure)"
            },
        }
    }

    fn status_error(&self, status: StatusCode, bytes: &[u8]) -> ApiError {
        let code = status.as_u16();
        let body = match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(body) if !body.error.is_empty() => body,
            _ => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim();
                let mut error = format!("{} answered {status}", self.addr);
                if !text.is_empty() {
                    error.push_str(": ");
                    // A whole HTML page is no message; its first line will do.
                    error.push_str(text.lines().next().unwrap_or_default());
                }
                ErrorBody { error, field: None }
            }
        };
        let body = match (code, &self.principal) {
            (401, Some(principal)) => ErrorBody {
                error: format!(
                    "the app server at {} refused the credential of '{principal}': {} \
                     (check principal and secret in the CLI config)",
                    self.addr, body.error
                ),
                field: None,
            },
            (401, None) => ErrorBody {
                error: format!(
                    "the app server at {} wants a credential: {} (put principal and secret in \
                     the CLI config)",
                    self.addr, body.error
                ),
                field: None,
            },
            (403, _) => ErrorBody {
                error: format!(
                    "the app server at {} does not permit this to '{}': {}",
                    self.addr,
                    self.principal.as_deref().unwrap_or("anonymous"),
                    body.error
                ),
                field: None,
            },
            _ => body,
        };
        ApiError::Status { code, body }
    }
}

/// The client's settings but TLS and credential: timeouts.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
}

/// `host:port` of an address given as `host:port` or `scheme://host:port/`.
pub(super) fn bare(addr: &str) -> &str {
    let addr = addr.trim().trim_end_matches('/');
    addr.split_once("://").map_or(addr, |(_, rest)| rest)
}

/// The innermost cause of an error: for a refused connection that is
/// `Connection refused (os error 111)` rather than reqwest's "error sending request".
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    if text.is_empty() { e.to_string() } else { text }
}

/// Percent-encodes a path segment or query value (ids are plain, but a stray `/`,
/// `?` or space must not change the route).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A request the fake server received.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub body: String,
    }

    /// A canned answer: status and body (JSON unless it does not parse).
    pub type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

    /// A tiny HTTP/1.1 server on 127.0.0.1 that answers each request with `handler`
    /// and records what it saw. Stops when the test's runtime ends.
    pub async fn fake_server(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    // One request per connection, `Connection: close`.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let mut words = head.split_whitespace();
                    let request = Seen {
                        method: words.next().unwrap_or_default().to_string(),
                        path: words.next().unwrap_or_default().to_string(),
                        body: String::from_utf8_lossy(&buf[head_end..]).to_string(),
                    };
                    let (code, body) = handler(&request);
                    log.lock().unwrap().push(request);
                    let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                        "application/json"
                    } else {
                        "text/plain"
                    };
                    let answer = format!(
                        "HTTP/1.1 {code} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        StatusCode::from_u16(code)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Whatever"),
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (addr, seen)
    }

    /// A minimal AppView as JSON.
    pub fn app_json(id: &str, instances: u32, running: u32, deployment: Option<&str>) -> String {
        let deployment = deployment.map_or(String::new(), |waiting| {
            format!(
                r#", "deployment": {{"id": "d1", "app_id": "{id}", "kind": "update",
                   "version": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:00Z",
                   "target_instances": {instances}, "ready_instances": {running},
                   "waiting": "{waiting}"}}"#
            )
        });
        format!(
            r#"{{"id": "{id}", "spec": {{"id": "{id}", "instances": {instances}, "cmd": "sleep 100"}},
               "version": "2026-01-01T00:00:00Z", "instances": {instances},
               "tasks_staged": 0, "tasks_running": {running}, "tasks_healthy": {running},
               "tasks_unhealthy": 0, "tasks_old_version": 0{deployment}}}"#
        )
    }

    #[tokio::test]
    async fn maps_a_404_error_body_to_its_text() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (404, r#"{"error": "app \"web\" not found"}"#.into())
        }))
        .await;
        let err = ApiClient::new(&addr).app("web").await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(err.to_string(), r#"app "web" not found"#);
    }

    #[tokio::test]
    async fn maps_a_422_with_a_field_to_spec_refused() {
        let (addr, seen) = fake_server(Arc::new(|_| {
            (
                422,
                r#"{"error": "must be at most 1000, not 5000", "field": "instances"}"#.into(),
            )
        }))
        .await;
        let spec = AppSpec::parse("id: web\ninstances: 5000\ncmd: sleep 10\n").unwrap();
        let err = ApiClient::new(&addr).put_app(&spec).await.unwrap_err();
        assert!(matches!(err, ApiError::Status { code: 422, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "spec refused: instances: must be at most 1000, not 5000"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].method, "PUT");
        assert_eq!(seen[0].path, "/v1/apps/web");
        let sent: AppSpec = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(sent, spec);
    }

    #[tokio::test]
    async fn a_refusal_as_strata_serve_words_it_is_shown_as_is() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (
                422,
                r#"{"error": "spec refused: id: the body names app \"web\" but the path names \"web2\"", "field": "id"}"#
                    .into(),
            )
        }))
        .await;
        let spec = AppSpec::parse("id: web\ncmd: sleep 10\n").unwrap();
        let err = ApiClient::new(&addr).put_app(&spec).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"spec refused: id: the body names app "web" but the path names "web2""#
        );
    }

    #[tokio::test]
    async fn a_422_without_a_field_is_still_a_refusal() {
        let (addr, _) = fake_server(Arc::new(|_| (422, r#"{"error": "bad spec"}"#.into()))).await;
        let err = ApiClient::new(&addr).scale_app("web", 2).await.unwrap_err();
        assert_eq!(err.to_string(), "spec refused: bad spec");
    }

    #[test]
    fn status_text_says_each_part_once() {
        let body = |error: &str, field: Option<&str>| ErrorBody {
            error: error.into(),
            field: field.map(str::to_string),
        };
        assert_eq!(
            status_text(409, &body(r#"app "web" already exists"#, None)),
            r#"app "web" already exists"#
        );
        assert_eq!(
            status_text(400, &body("instances: too many", Some("instances"))),
            "spec refused: instances: too many"
        );
        assert_eq!(
            status_text(422, &body("spec refused: x", Some(""))),
            "spec refused: x"
        );
        // What `strata serve` sends for a refused spec, and for a refused scale.
        assert_eq!(
            status_text(
                422,
                &body(
                    "spec refused: health_checks[0].port_index: port_index 1 but the app has 1 port(s)",
                    Some("health_checks[0].port_index")
                )
            ),
            "spec refused: health_checks[0].port_index: port_index 1 but the app has 1 port(s)"
        );
        assert_eq!(
            status_text(422, &body("instances: 50000 is more than 10000", None)),
            "spec refused: instances: 50000 is more than 10000"
        );
        assert_eq!(
            status_text(500, &body("the master is gone", None)),
            "the master is gone"
        );
    }

    #[tokio::test]
    async fn a_plain_text_error_names_the_address_and_status() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (
                404,
                "no such endpoint /v1/apps: try /state, /health or /metrics\n".into(),
            )
        }))
        .await;
        let err = ApiClient::new(&addr).apps().await.unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            format!(
                "{addr} answered 404 Not Found: no such endpoint /v1/apps: try /state, /health or /metrics"
            )
        );
        let (addr, _) = fake_server(Arc::new(|_| (503, String::new()))).await;
        let err = ApiClient::new(&addr).apps().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{addr} answered 503 Service Unavailable")
        );
    }

    #[tokio::test]
    async fn a_wrong_body_is_a_decode_error() {
        let (addr, _) = fake_server(Arc::new(|_| (200, r#"{"apps": []}"#.into()))).await;
        let err = ApiClient::new(&addr).apps().await.unwrap_err();
        assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("unreadable answer from {addr} to GET /v1/apps: ")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_with_a_hint() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = ApiClient::new(&addr).apps().await.unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the Strata app server at {addr}: ")),
            "{text}"
        );
        assert!(text.contains("strata serve"), "{text}");
        assert!(text.contains("--server"), "{text}");
    }

    #[tokio::test]
    async fn decodes_answers_and_sends_the_right_requests() {
        let (addr, seen) = fake_server(Arc::new(|req| match req.path.as_str() {
            "/v1/apps" => (200, format!("[{}]", app_json("web", 2, 2, None))),
            "/v1/apps/web/scale" => (200, app_json("web", 5, 2, Some(""))),
            "/v1/tasks?app=my%20app" => (200, "[]".into()),
            _ => (404, r#"{"error": "nope"}"#.into()),
        }))
        .await;
        let client = ApiClient::new(&format!("http://{addr}"));
        let apps = client.apps().await.unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].tasks_running, 2);
        let scaled = client.scale_app("web", 5).await.unwrap();
        assert_eq!(scaled.deployment.unwrap().target_instances, 5);
        assert!(client.tasks(Some("my app")).await.unwrap().is_empty());
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1].method, "POST");
        let body: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
        assert_eq!(body, serde_json::json!({"instances": 5}));
    }

    #[tokio::test]
    async fn a_refused_credential_names_its_principal() {
        let (addr, _) = fake_server(Arc::new(|_| {
            (
                401,
                r#"{"error": "the credential of 'ops' is not valid"}"#.into(),
            )
        }))
        .await;
        let mut client = ApiClient::new(&addr);
        client.principal = Some("ops".into());
        assert_eq!(
            client.apps().await.unwrap_err().to_string(),
            format!(
                "the app server at {addr} refused the credential of 'ops': the credential of \
                 'ops' is not valid (check principal and secret in the CLI config)"
            )
        );
    }

    #[test]
    fn with_tls_the_app_api_is_called_by_its_certificate_name() {
        let ca = strata_security::ClusterCa::create().unwrap();
        let tls = strata_security::ClientTls {
            ca_pem: Some(ca.cert_pem().to_string()),
            identity: None,
            credential: Some(strata_security::Credential::new(
                "admin",
                "0123456789abcdef",
            )),
        };
        let client = ApiClient::with_tls("127.0.0.1:8443", &tls).unwrap();
        assert_eq!(client.base, "https://strata-apps:8443");
        assert_eq!(client.principal.as_deref(), Some("admin"));
        let err = ApiClient::with_tls("no such host:1", &tls).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "cannot set up a connection to the Strata app server at no such host:1: "
            ),
            "{err}"
        );
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
