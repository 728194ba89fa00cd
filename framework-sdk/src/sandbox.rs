//! Reading a task's `stdout` / `stderr` from its agent's HTTP API.
//!
//! Every agent serves `GET /files/read?framework_id=F&task_id=T&file=stdout&offset=N`
//! on the address found in `Offer.agent_address`, answering
//! `{"data": "...", "offset": N, "next_offset": M, "eof": bool, "size": S, "state": "TASK_RUNNING"}`.
//! Batch schedulers use it to collect results ([`SandboxClient::read_to_end`]);
//! `strata run` polls it with a growing offset to
//! follow a running task.

use std::time::Duration;

use serde::Deserialize;

use crate::SdkError;
use crate::error::chain;

/// One chunk of a sandbox file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct FileChunk {
    /// Text read from the file, starting at `offset`. Empty at the end of the file.
    #[serde(default)]
    pub data: String,
    /// Where `data` starts in the file (a byte offset).
    #[serde(default)]
    pub offset: u64,
    /// Where the next read should start (a byte offset; `data` may have been decoded
    /// lossily, so its length is not always the byte count). Absent on agents that do
    /// not say.
    #[serde(default)]
    pub next_offset: Option<u64>,
    /// Whether `data` reaches the end of the file as it is now (a running task may
    /// still write more); absent on agents that do not say.
    #[serde(default)]
    pub eof: Option<bool>,
    /// The task's state as the agent knows it, e.g. `TASK_RUNNING`.
    #[serde(default)]
    pub state: Option<String>,
    /// The file's size when read; absent on agents that do not say.
    #[serde(default)]
    pub size: Option<u64>,
}

impl FileChunk {
    /// The offset to ask for next (saturating: an agent's numbers cannot overflow it).
    pub fn resume_offset(&self) -> u64 {
        self.next_offset
            .unwrap_or_else(|| self.offset.saturating_add(self.data.len() as u64))
    }

    /// Whether the file is now shorter than `requested`, where the previous read
    /// left off: it was truncated (or replaced) since, and a follower starts again
    /// from 0, as `tail -f` does.
    pub fn truncated_before(&self, requested: u64) -> bool {
        self.data.is_empty() && self.size.is_some_and(|size| size < requested)
    }

    /// The offset to ask for next after a read at `requested` that returned data, or
    /// `None` when the agent's answer does not move past `requested`: reading on
    /// would ask for the same bytes forever, so stop.
    pub fn advance_from(&self, requested: u64) -> Option<u64> {
        let next = self.resume_offset();
        (next > requested).then_some(next)
    }
}

/// Reads sandbox files from agents. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SandboxClient {
    http: reqwest::Client,
    /// `http` or `https` (agents of a secure cluster).
    scheme: &'static str,
}

impl Default for SandboxClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest chunk asked for at once.
const CHUNK: u64 = 64 * 1024;
/// A bound on [`SandboxClient::read_to_end`], so a runaway task cannot exhaust memory.
const MAX_READ: u64 = 64 * 1024 * 1024;

impl SandboxClient {
    /// A client with a 10 s request timeout.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        SandboxClient {
            http,
            scheme: "http",
        }
    }

    /// A client for the agents of a secure cluster: HTTPS, verifying each agent's
    /// certificate against the cluster CA of `tls` (agents' certificates name their
    /// address), and sending `tls`'s credential. With [`ClientTls::insecure`] this is
    /// [`SandboxClient::new`].
    ///
    /// [`ClientTls::insecure`]: crate::ClientTls::insecure
    pub fn with_tls(tls: &crate::ClientTls) -> Result<Self, SdkError> {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let http = tls
            .reqwest(builder)
            .and_then(|b| {
                b.build().map_err(|e| {
                    strata_security::SecurityError::Certificate(format!(
                        "cannot build an HTTPS client: {e}"
                    ))
                })
            })
            .map_err(|e| {
                SdkError::InvalidArgument(format!("the sandbox client's TLS settings: {e}"))
            })?;
        Ok(SandboxClient {
            http,
            scheme: tls.scheme(),
        })
    }

    /// Reads up to 64 KiB of `file` (`stdout` or `stderr`) of a task from `offset`.
    pub async fn read(
        &self,
        agent_address: &str,
        framework_id: &str,
        task_id: &str,
        file: &str,
        offset: u64,
    ) -> Result<FileChunk, SdkError> {
        let fail = |reason: String| SdkError::Sandbox {
            agent: agent_address.to_string(),
            task_id: task_id.to_string(),
            file: file.to_string(),
            reason,
        };
        if agent_address.is_empty() {
            return Err(fail("the offer named no agent address".into()));
        }
        let url = format!("{}://{agent_address}/files/read", self.scheme);
        let response = self
            .http
            .get(&url)
            .query(&[
                ("framework_id", framework_id),
                ("task_id", task_id),
                ("file", file),
                ("offset", &offset.to_string()),
                ("length", &CHUNK.to_string()),
            ])
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {}", chain(&e.without_url()))))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(fail(format!("HTTP {status}: {}", body.trim())));
        }
        let mut chunk: FileChunk = response
            .json()
            .await
            .map_err(|e| fail(format!("unreadable answer: {e}")))?;
        if chunk.offset == 0 && offset != 0 && !chunk.data.is_empty() {
            // An agent that does not echo the offset: trust the request.
            chunk.offset = offset;
        }
        Ok(chunk)
    }

    /// Reads `file` of a task from the start to its current end (64 MiB at most;
    /// beyond that the rest is left unread). An agent whose answers do not advance
    /// is an error, not an endless loop.
    pub async fn read_to_end(
        &self,
        agent_address: &str,
        framework_id: &str,
        task_id: &str,
        file: &str,
    ) -> Result<String, SdkError> {
        let mut out = String::new();
        let mut offset = 0;
        while (out.len() as u64) < MAX_READ {
            let chunk = self
                .read(agent_address, framework_id, task_id, file, offset)
                .await?;
            if chunk.data.is_empty() {
                break;
            }
            let Some(next) = chunk.advance_from(offset) else {
                return Err(SdkError::Sandbox {
                    agent: agent_address.to_string(),
                    task_id: task_id.to_string(),
                    file: file.to_string(),
                    reason: format!(
                        "the agent returned data at offset {offset} but next_offset {}: no progress",
                        chunk.resume_offset()
                    ),
                });
            };
            offset = next;
            out.push_str(&chunk.data);
            if chunk.eof == Some(true) {
                break;
            }
        }
        Ok(out)
    }
}
