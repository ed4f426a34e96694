//! Harnesses for the simulator's CSV register-map loader and its HTTP API.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use std::sync::OnceLock;
use tower::ServiceExt as _;

/// Most bytes of an answer body the HTTP harness reads (the biggest answer,
/// 10,000 registers of JSON, is well under it).
const MAX_BODY: usize = 16 << 20;

/// Any CSV text gives a device or a one-line error naming a line inside the
/// text; never a panic, a hang or unbounded memory.
pub fn fuzz_sim_csv(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A `series` action reads the file its parameters name: the fuzzer must
    // not make the harness read arbitrary files (`/dev/zero`).
    if text.contains("file") {
        return;
    }
    match coilwork_sim::csv::RegisterMap::build_text(text, None) {
        Ok((map, device)) => {
            for (addr, name) in &map.names {
                assert!(!name.is_empty(), "empty name at {addr}");
            }
            drop(device);
        }
        Err(e) => {
            assert!(!e.is_empty() && !e.contains('\n'), "error is not one line: {e:?}");
            if let Some(line) = line_of(&e) {
                let lines = text.lines().count().max(1);
                assert!(line >= 1 && line <= lines, "error names line {line} of {lines}: {e:?}");
            }
        }
    }
}

/// The line number an error names (`... line N, column ...`).
fn line_of(error: &str) -> Option<usize> {
    let at = error.find("line ")? + 5;
    let digits: String = error[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The simulator behind the HTTP harness and the runtime that drives it,
/// built once per process (the default configuration, Modbus on a free port).
struct World {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let json = coilwork_sim::DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0");
        let sim = coilwork_sim::Simulator::from_json(&json, coilwork_sim::SimulatorOptions::default())
            .expect("default configuration");
        let router = coilwork_sim::http::router(&sim);
        World { runtime, router }
    })
}

/// A request in the harness's text layout:
///
/// ```text
/// METHOD TARGET\n
/// Name: value\n      (any number of headers)
/// \n
/// body                (the rest, bytes)
/// ```
///
/// `None` when the bytes do not make an `http::Request` (hyper would refuse
/// them before the router sees them).
pub fn parse_request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        request = request.header(name, value.trim_start());
    }
    request.body(Body::from(body.to_vec())).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request through the router: never a panic, a hang or a 5xx,
/// except 500 from `POST /api/server/restart` when the Modbus port cannot be
/// bound again (the API's one 5xx, `server_restart` in the simulator's
/// `http/mod.rs`; the OpenAPI description covers it as the default `Error`
/// answer); an API error is a JSON object with an `error` text.
pub fn fuzz_sim_http(data: &[u8]) {
    let Some(request) = parse_request(data) else { return };
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let world = world();
    let (status, body) = world.runtime.block_on(async {
        let response = world.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .expect("bounded body");
        (status, body)
    });
    let restart = method == Method::POST && path == "/api/server/restart";
    assert!(
        !status.is_server_error() || (restart && status == StatusCode::INTERNAL_SERVER_ERROR),
        "{method} {path}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    if path.starts_with("/api/") && (status.is_client_error() || status.is_server_error()) && method != Method::HEAD {
        let value: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: {status}: body is not JSON ({e}): {body:?}"));
        assert!(
            value["error"].is_string(),
            "{method} {path}: {status}: no error text: {value}"
        );
    }
}
