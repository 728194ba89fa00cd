//! The guard in front of every Strata HTTP API that changes something (the master's
//! operator endpoints, the container framework's App API): a change must come from a
//! program (curl, the CLI, a script), never from a web page the user happens to have
//! open, which could otherwise deploy a root command to `127.0.0.1:8080` with one
//! `fetch` (a "simple" cross-origin request needs no CORS preflight).
//!
//! ```text
//!  request ─▶ GET/HEAD/OPTIONS ─────────────────────────────────────────▶ handler
//!          └▶ POST/PUT/PATCH/DELETE ─▶ Origin not this host, or
//!                                      Sec-Fetch-Site: cross-site ──▶ 403
//!                                   ─▶ a body whose Content-Type is not
//!                                      application/json ──────────────▶ 415
//!                                   ─▶ handler
//! ```
//!
//! Browsers send `Origin` on every cross-origin POST and `Sec-Fetch-Site` on every
//! request; curl, the CLI and the SDK send neither. The content types a page may send
//! without a preflight (`text/plain`, forms) are exactly the ones refused, so even a
//! browser that sent no `Origin` could not get a body through.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Content types of a JSON API.
pub const JSON: &[&str] = &["application/json"];

/// Why a request was refused, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

/// Checks a request's method and headers against the rules in the module docs.
pub fn check(method: &Method, headers: &HeaderMap, accepted: &[&str]) -> Result<(), Refusal> {
    check_at(method, headers, None, accepted)
}

/// [`check`], where `authority` is the request URI's `host:port`: over HTTP/2 a
/// browser names the host there (`:authority`), not in a `Host` header, so a page of
/// this server (the dashboard) is same-origin by it.
pub fn check_at(
    method: &Method,
    headers: &HeaderMap,
    authority: Option<&str>,
    accepted: &[&str],
) -> Result<(), Refusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if text(header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return Err(cross_origin("Sec-Fetch-Site: cross-site"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = text(header::HOST).or(authority).unwrap_or("");
        if host.is_empty() || origin_authority(origin) != Some(host) {
            return Err(cross_origin(&format!("Origin: {}", shown(origin))));
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || text(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0");
    if has_body {
        let media = text(header::CONTENT_TYPE)
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if !accepted.contains(&media.as_str()) {
            let got = if media.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!("Content-Type {}", shown(&media))
            };
            return Err(Refusal {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!(
                    "the body has {got}; send it with Content-Type: {} (e.g. curl -H 'Content-Type: application/json')",
                    accepted.join(" or ")
                ),
            });
        }
    }
    Ok(())
}

fn cross_origin(what: &str) -> Refusal {
    Refusal {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "cross-origin request refused ({what}): changes are taken from programs (curl, the strata CLI) and this server's own pages, not from other web pages"
        ),
    }
}

/// `host:port` of an origin such as `http://127.0.0.1:8080` (`None` for `null` or
/// anything without a scheme).
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.trim_end_matches('/'))
}

/// A client's string as echoed back: at most 64 bytes.
fn shown(s: &str) -> String {
    strata_proto::limits::shown(s).into_owned()
}

/// Middleware for a JSON API (`axum::middleware::from_fn(guard::json)`).
pub async fn json(request: Request, next: Next) -> Response {
    guarded(request, next, JSON).await
}

async fn guarded(request: Request, next: Next, accepted: &[&str]) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str());
    match check_at(request.method(), request.headers(), authority, accepted) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), reason = %refusal.message, "HTTP request refused");
            let body = serde_json::json!({ "error": refusal.message });
            (refusal.status, axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn programs_pass_and_pages_do_not() {
        let host = ("host", "127.0.0.1:8080");
        let json = ("content-type", "application/json; charset=utf-8");
        let len = ("content-length", "12");
        // curl, the CLI: no Origin, a JSON body.
        assert!(check(&Method::PUT, &headers(&[host, json, len]), JSON).is_ok());
        // Bodyless POSTs (restart, kill) and reads.
        assert!(check(&Method::POST, &headers(&[host]), JSON).is_ok());
        assert!(
            check(
                &Method::GET,
                &headers(&[("origin", "http://evil.example")]),
                JSON
            )
            .is_ok()
        );
        // The same origin (a page served by the API itself) passes.
        let same = ("origin", "http://127.0.0.1:8080");
        assert!(check(&Method::POST, &headers(&[host, same, json, len]), JSON).is_ok());

        // A page elsewhere: refused, body or not.
        let evil = ("origin", "http://evil.example");
        let refused = check(&Method::POST, &headers(&[host, evil]), JSON).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.message.contains("evil.example"),
            "{}",
            refused.message
        );
        for origin in [
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080.evil",
        ] {
            let r = check(&Method::DELETE, &headers(&[host, ("origin", origin)]), JSON);
            assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN, "{origin}");
        }
        let site = ("sec-fetch-site", "cross-site");
        let r = check(&Method::POST, &headers(&[host, site]), JSON);
        assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN);

        // Bodies a page can send without a preflight.
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let r = check(
                &Method::POST,
                &headers(&[host, ("content-type", t), len]),
                JSON,
            );
            let r = r.unwrap_err();
            assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{t}");
            assert!(
                r.message.contains("Content-Type: application/json"),
                "{}",
                r.message
            );
        }
        let r = check(&Method::POST, &headers(&[host, len]), JSON).unwrap_err();
        assert!(r.message.contains("no Content-Type"), "{}", r.message);
        let yaml = ("content-type", "application/yaml");
        assert!(check(&Method::PUT, &headers(&[host, yaml, len]), JSON).is_err());
    }

    /// Over HTTP/2 a browser sends no `Host`: the URI's authority names the host, so a
    /// page of this server (the dashboard) may change things, and another still may not.
    #[test]
    fn over_http2_the_authority_is_the_host() {
        let json = ("content-type", "application/json");
        let len = ("content-length", "2");
        let same = ("origin", "https://10.0.0.1:5050");
        let h = headers(&[same, json, len]);
        assert!(check_at(&Method::POST, &h, Some("10.0.0.1:5050"), JSON).is_ok());
        let evil = headers(&[("origin", "https://evil.example"), json, len]);
        assert!(check_at(&Method::POST, &evil, Some("10.0.0.1:5050"), JSON).is_err());
        // Without either, an Origin is refused as before.
        assert!(check_at(&Method::POST, &h, None, JSON).is_err());
    }
}
