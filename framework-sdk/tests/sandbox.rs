//! SandboxClient against a fake agent: a tiny HTTP/1.1 server on 127.0.0.1:0 that
//! serves `/files/read` the way agents do, in deliberately small chunks.

use std::collections::HashMap;
use std::net::SocketAddr;

use strata_framework_sdk::{SandboxClient, SdkError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The stdout of task `t-1` of framework `fw-1`.
const STDOUT: &str = "line one\nline two\nthe answer is 42\n";
/// The fake agent answers at most this many bytes per read.
const CHUNK: usize = 10;

/// Starts the fake agent; it serves until the test's runtime ends.
async fn fake_agent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let target = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = answer(target);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

fn answer(target: &str) -> (&'static str, String) {
    let Some(query) = target.strip_prefix("/files/read?") else {
        return ("404 Not Found", "no such endpoint".into());
    };
    let params: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    // Misbehaving agents: one whose next_offset never advances, one whose offsets
    // are at the end of the u64 range.
    match params.get("task_id") {
        Some(&"stuck") => {
            let offset: u64 = params
                .get("offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            let body = serde_json::json!({
                "data": "again", "offset": offset, "next_offset": offset, "eof": false,
            });
            return ("200 OK", body.to_string());
        }
        Some(&"huge") => {
            let body = serde_json::json!({ "data": "tail", "offset": u64::MAX });
            return ("200 OK", body.to_string());
        }
        _ => {}
    }
    if params.get("framework_id") != Some(&"fw-1") || params.get("task_id") != Some(&"t-1") {
        return (
            "404 Not Found",
            "unknown task 't-2' of framework 'fw-1'".into(),
        );
    }
    if params.get("file") != Some(&"stdout") {
        return ("404 Not Found", "no stderr".into());
    }
    let offset: usize = params
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let start = offset.min(STDOUT.len());
    let end = (start + CHUNK).min(STDOUT.len());
    let body = serde_json::json!({
        "data": &STDOUT[start..end],
        "offset": offset,
        "next_offset": end,
        "eof": end == STDOUT.len(),
        "state": "TASK_FINISHED",
    });
    ("200 OK", body.to_string())
}

#[tokio::test]
async fn read_to_end_reassembles_a_file_served_in_chunks() {
    let agent = fake_agent().await.to_string();
    let client = SandboxClient::new();
    let text = client
        .read_to_end(&agent, "fw-1", "t-1", "stdout")
        .await
        .unwrap();
    assert_eq!(text, STDOUT);
}

#[tokio::test]
async fn a_read_from_an_offset_returns_the_next_chunk_and_where_to_resume() {
    let agent = fake_agent().await.to_string();
    let chunk = SandboxClient::new()
        .read(&agent, "fw-1", "t-1", "stdout", 9)
        .await
        .unwrap();
    assert_eq!(chunk.data, "line two\nt");
    assert_eq!(chunk.offset, 9);
    assert_eq!(chunk.resume_offset(), 19);
    assert_eq!(chunk.eof, Some(false));
    assert_eq!(chunk.state.as_deref(), Some("TASK_FINISHED"));
}

#[tokio::test]
async fn an_unknown_task_is_reported_with_the_agents_reason() {
    let agent = fake_agent().await.to_string();
    match SandboxClient::new()
        .read_to_end(&agent, "fw-1", "t-2", "stdout")
        .await
    {
        Err(e @ SdkError::Sandbox { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("404") && text.contains("unknown task") && text.contains("t-2"),
                "{text}"
            );
        }
        other => panic!("expected a sandbox error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_agent_is_an_error_not_a_hang() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let result = SandboxClient::new()
        .read(&addr.to_string(), "fw-1", "t-1", "stdout", 0)
        .await;
    assert!(matches!(result, Err(SdkError::Sandbox { .. })));
}

#[tokio::test]
async fn an_agent_whose_offsets_never_advance_is_an_error_not_a_hang() {
    let agent = fake_agent().await.to_string();
    let client = SandboxClient::new();
    let read = client.read_to_end(&agent, "fw-1", "stuck", "stdout");
    match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Err(e @ SdkError::Sandbox { .. })) => {
            assert!(e.to_string().contains("no progress"), "{e}")
        }
        Ok(other) => panic!("expected a sandbox error, got {other:?}"),
        Err(_) => panic!("read_to_end looped"),
    }
}

#[tokio::test]
async fn offsets_at_the_end_of_the_range_do_not_overflow() {
    let agent = fake_agent().await.to_string();
    let client = SandboxClient::new();
    let chunk = client
        .read(&agent, "fw-1", "huge", "stdout", 0)
        .await
        .unwrap();
    assert_eq!(chunk.resume_offset(), u64::MAX);
    assert_eq!(chunk.advance_from(u64::MAX), None);
    // The next read, at u64::MAX, cannot advance: an error, no panic, no loop.
    let result = client.read_to_end(&agent, "fw-1", "huge", "stdout").await;
    assert!(
        matches!(result, Err(SdkError::Sandbox { .. })),
        "{result:?}"
    );
}
