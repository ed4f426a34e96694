//! Refuses requests a web page of another site could make (CSRF, DNS
//! rebinding) and, with a token configured, API calls without it.
//!
//! Order of the checks: `Host` (421), bearer token (401), `Origin` and
//! `Sec-Fetch-Site` of state-changing requests (403), JSON content type of
//! state-changing requests (415).

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The names a request may address the simulator by, and the API token.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// Lower-case host names and IP literals (`[v6]` bracketed), no port.
    hosts: Vec<String>,
    /// Any IP literal is the simulator's own address (bound to 0.0.0.0 or ::).
    any_ip: bool,
    token: Option<String>,
}

impl Guard {
    /// The allowed hosts: loopback names, the bound address, the configured
    /// HTTP host and `allow`.
    pub(crate) fn new(
        bound: Option<SocketAddr>,
        configured: Option<&str>,
        allow: &[String],
        token: Option<String>,
    ) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        let mut any_ip = false;
        if let Some(addr) = bound {
            any_ip = addr.ip().is_unspecified();
            hosts.push(ip_literal(addr.ip()));
        }
        hosts.extend(configured.into_iter().map(|h| normal(h).to_owned()));
        hosts.extend(allow.iter().map(|h| normal(h).to_owned()));
        Self { hosts, any_ip, token }
    }

    /// Whether the `Host` (or the authority of an `Origin`) names the simulator.
    fn host_allowed(&self, authority: &str) -> bool {
        let host = normal(strip_port(authority));
        if host.is_empty() {
            return false;
        }
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return true;
        }
        self.any_ip && parse_ip(host).is_some()
    }

    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = text(headers, header::HOST).unwrap_or("");
        if !self.host_allowed(host) {
            return Err(ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not this simulator's address (allowed: {}; add names with --http-allow-host)",
                    self.hosts.join(", ")
                ),
            ));
        }
        if let Some(token) = &self.token
            && (path.starts_with("/api") || path == "/metrics")
            && !bearer_matches(headers, token)
        {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "this API needs the token: send the header \"Authorization: Bearer TOKEN\"".into(),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        self.check_origin(method, headers)?;
        if !is_json(headers) {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{method} needs the header \"Content-Type: application/json\", also without a body"),
            ));
        }
        Ok(())
    }

    fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        if text(headers, "sec-fetch-site") == Some("cross-site") {
            return Err(forbidden(format!(
                "{method} from another site (Sec-Fetch-Site: cross-site)"
            )));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .map(|(_, rest)| rest);
        match authority {
            Some(a) if self.host_allowed(a) => Ok(()),
            _ => Err(forbidden(format!(
                "{method} from origin {origin:?}, not this simulator's page"
            ))),
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, message)
}

/// Runs the checks before every handler.
pub(crate) async fn middleware(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.check(req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let unauthorized = e.0 == StatusCode::UNAUTHORIZED;
            let mut res = e.into_response();
            if unauthorized {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            res
        }
    }
}

fn text(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    text(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Compares the bearer token in time independent of where it differs.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = text(headers, header::AUTHORIZATION)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `host` of `host:port`, `[v6]` of `[v6]:port`.
fn strip_port(authority: &str) -> &str {
    if let Some(end) = authority.find(']')
        && authority.starts_with('[')
    {
        return &authority[..=end];
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// Without a trailing dot (`localhost.` is `localhost`).
fn normal(host: &str) -> &str {
    host.trim().trim_end_matches('.')
}

fn ip_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str, allow: &[&str]) -> Guard {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        Guard::new(bound.parse().ok(), None, &allow, None)
    }

    #[test]
    fn hosts_of_the_simulator_only() {
        let g = guard("127.0.0.1:8080", &["plant.lan"]);
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
            "plant.lan:1",
            "localhost.",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "10.0.0.1:8080",
            "",
            "localhost.attacker.example",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let any = guard("0.0.0.0:8080", &[]);
        assert!(any.host_allowed("10.1.2.3:8080"));
        assert!(any.host_allowed("[fe80::1]:8080"));
        assert!(!any.host_allowed("attacker.example"));
    }

    #[test]
    fn bearer_token_compared_whole() {
        let mut h = HeaderMap::new();
        for (value, expected) in [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("Bearer s3cre", false),
            ("Bearer s3cretX", false),
            ("Basic s3cret", false),
            ("s3cret", false),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_matches(&h, "s3cret"), expected, "{value}");
        }
    }
}
