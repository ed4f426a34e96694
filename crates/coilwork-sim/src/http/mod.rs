//! The simulator's HTTP server (axum): a JSON REST API, Prometheus
//! metrics and the built-in web page. Every endpoint is described in the
//! crate's README.md.

use crate::device::{CellType, DecodedValue, RegisterInfo};
use crate::monitor::{CallFilter, FaultSpec};
use crate::{Inner, SimError, SimulatorOptions, lock};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

mod guard;

/// Default HTTP host when only the port is given.
pub const DEFAULT_HTTP_HOST: &str = "127.0.0.1";
/// Default HTTP port when only the host is given (pymodbus's default too).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Most registers one `GET /api/registers` returns.
pub const MAX_REGISTERS_PER_REQUEST: usize = 10_000;

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");
/// The OpenAPI 3 description of the REST API (`GET /api/openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every server of the simulator; requests choose one with `?server=NAME`
/// (default: the first).
#[derive(Debug)]
pub(crate) struct Fleet {
    servers: Vec<Arc<Inner>>,
}

/// The server a request is about (its `server` query parameter).
struct Sel(Arc<Inner>);

impl axum::extract::FromRequestParts<Arc<Fleet>> for Sel {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        fleet: &Arc<Fleet>,
    ) -> Result<Self, Self::Rejection> {
        let wanted = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "server")
                .map(|(_, v)| percent_decode(&v.replace('+', " ")).unwrap_or_default())
        });
        let found = match &wanted {
            None => fleet.servers.first(),
            Some(name) => fleet.servers.iter().find(|s| &s.server_name == name),
        };
        found.cloned().map(Sel).ok_or_else(|| {
            let names: Vec<&str> = fleet.servers.iter().map(|s| s.server_name.as_str()).collect();
            not_found(format!(
                "no server {:?} (servers: {})",
                wanted.unwrap_or_default(),
                names.join(", ")
            ))
        })
    }
}

/// The HTTP host and port to serve, if HTTP is configured.
pub(crate) fn address(options: &SimulatorOptions) -> Option<(String, u16)> {
    if options.http_host.is_none() && options.http_port.is_none() {
        return None;
    }
    Some((
        options
            .http_host
            .clone()
            .unwrap_or_else(|| DEFAULT_HTTP_HOST.to_owned()),
        options.http_port.unwrap_or(DEFAULT_HTTP_PORT),
    ))
}

/// Binds `host:port` and serves the API and page in a spawned task until the simulator stops.
pub(crate) async fn start(servers: Vec<Arc<Inner>>, host: &str, port: u16) -> Result<SocketAddr, SimError> {
    let fleet = Arc::new(Fleet { servers });
    let inner = fleet
        .servers
        .first()
        .cloned()
        .ok_or_else(|| SimError::Unsupported("no server to serve over HTTP".into()))?;
    let err = |source| SimError::Http {
        addr: format!("{host}:{port}"),
        source,
    };
    let listener = tokio::net::TcpListener::bind((host, port)).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    *lock(&inner.http_addr) = Some(addr);
    inner.set_http_running(true);
    if !addr.ip().is_loopback() && inner.options.http_token.is_none() {
        inner.monitor.log(
            "warn",
            format!(
                "HTTP on {addr} is reachable beyond this machine without a token: anyone who can reach it can \
                 change registers and stop the server (set --http-token or COILWORK_HTTP_TOKEN)"
            ),
        );
    }
    let mut shutdown = inner.shutdown_signal();
    let app = build(fleet);
    let task_inner = inner.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            task_inner.monitor.log("error", format!("HTTP server failed: {e}"));
        }
        task_inner.set_http_running(false);
    });
    inner.monitor.log("info", format!("HTTP on http://{addr}/"));
    Ok(addr)
}

/// The REST API and the web page as an axum `Router`, with the same
/// checks as the served one (usable in-process, e.g. by fuzz targets).
pub fn router(sim: &crate::Simulator) -> Router {
    build(Arc::new(Fleet {
        servers: sim.servers.clone(),
    }))
}

fn build(fleet: Arc<Fleet>) -> Router {
    let Some(inner) = fleet.servers.first().cloned() else {
        return Router::new();
    };
    let guard = Arc::new(guard::Guard::new(
        *lock(&inner.http_addr),
        inner.options.http_host.as_deref(),
        &inner.options.http_allow_hosts,
        inner.options.http_token.clone(),
    ));
    Router::new()
        .route("/api/registers", get(get_registers))
        .route(
            "/api/registers/{addr}",
            get(get_register).put(set_register).post(set_register),
        )
        .route("/api/calls", get(get_calls).delete(clear_calls))
        .route("/api/faults", get(get_faults).post(add_fault).delete(clear_faults))
        .route("/api/faults/{id}", axum::routing::delete(delete_fault))
        .route("/api/servers", get(get_servers))
        .route("/api/server", get(get_server))
        .route("/api/server/stop", post(server_stop))
        .route("/api/server/restart", post(server_restart))
        .route("/api/server/reset", post(server_reset))
        .route("/api/log", get(get_log))
        .route("/api/clients", get(get_clients))
        .route(
            "/api/openapi.json",
            get(|| async { file("openapi.json", OPENAPI_JSON) }),
        )
        .route("/metrics", get(metrics))
        .fallback(static_files)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(fleet)
        .layer(axum::middleware::from_fn_with_state(guard, guard::middleware))
}

/// A 4xx/5xx answer with `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Query parameters, refusing any not in `allowed`.
fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|e| bad(format!("bad query string: {}", e.body_text())))?;
    if let Some(k) = q.keys().find(|k| *k != "server" && !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown query parameter {k:?} (allowed: {})",
            allowed.join(", ")
        )));
    }
    Ok(q)
}

fn number<T: std::str::FromStr>(q: &HashMap<String, String>, key: &str, what: &str) -> Result<Option<T>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{key}={v:?}: expected {what}"))),
    }
}

/// The path parameter, or a JSON 400 (a percent-encoded segment that is not UTF-8).
fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|e| bad(format!("bad path: {}", e.body_text())))
}

fn body(b: Result<axum::Json<Value>, JsonRejection>) -> Result<Value, ApiError> {
    match b {
        Ok(axum::Json(v)) => Ok(v),
        Err(e) => Err(ApiError(
            match e {
                JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            },
            format!("bad JSON body: {}", e.body_text()),
        )),
    }
}

fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn decoded_json(d: Option<DecodedValue>) -> Value {
    match d {
        None => Value::Null,
        Some(DecodedValue::Bits(v) | DecodedValue::Uint16(v)) => json!(v),
        Some(DecodedValue::Int16(v)) => json!(v),
        Some(DecodedValue::Uint32(v)) => json!(v),
        // Shortest decimal of the f32 (404.17, not 404.1700134277344).
        Some(DecodedValue::Float32(v)) => json_number(v.to_string().parse().unwrap_or(f64::from(v))),
        Some(DecodedValue::Float64(v)) => json_number(v),
        Some(DecodedValue::String(s)) => json!(s),
    }
}

fn register_json(inner: &Inner, r: &RegisterInfo) -> Value {
    json!({
        "address": r.address,
        "name": r.name,
        "type": r.kind.name(),
        "access": if r.writable { "rw" } else { "r" },
        "value": r.value,
        "action": r.action,
        "parameters": r.parameters,
        "reads": r.count_read,
        "writes": r.count_write,
        "decoded": if r.kind == CellType::Next { Value::Null } else { decoded_json(inner.device.decoded(r.address)) },
    })
}

async fn get_registers(Sel(inner): Sel, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
    let q = query(q, &["start", "count"])?;
    let size = inner.device.size();
    let start: usize = number(&q, "start", "a register address")?.unwrap_or(0);
    let count: usize = number(&q, "count", "a number of registers")?.unwrap_or(100);
    if count == 0 || count > MAX_REGISTERS_PER_REQUEST {
        return Err(bad(format!("count={count}: expected 1..={MAX_REGISTERS_PER_REQUEST}")));
    }
    if start >= size {
        return Err(bad(format!(
            "start={start}: outside the device ({size} registers: 0..={})",
            size.saturating_sub(1)
        )));
    }
    let end = start.saturating_add(count).min(size);
    let registers: Vec<Value> = inner
        .device
        .registers(start..end)
        .iter()
        .map(|r| register_json(&inner, r))
        .collect();
    ok(json!({
        "start": start,
        "count": end - start,
        "size": size,
        "type_exception": inner.device.type_exception(),
        "registers": registers,
    }))
}

/// A register address, or the name of a value (CSV register maps).
fn parse_address(s: &str, device: &crate::SimDevice) -> Result<usize, ApiError> {
    let size = device.size();
    let a: usize = match s.parse() {
        Ok(a) => a,
        Err(_) if device.has_names() && !s.bytes().all(|b| b.is_ascii_digit()) => device
            .address_of(s)
            .ok_or_else(|| not_found(format!("no register named {s:?}")))?,
        Err(_) => {
            return Err(bad(format!(
                "{s:?} is not a register address (0..={})",
                size.saturating_sub(1)
            )));
        }
    };
    if a >= size {
        return Err(not_found(format!(
            "register {a} is outside the device ({size} registers: 0..={})",
            size.saturating_sub(1)
        )));
    }
    Ok(a)
}

async fn get_register(Sel(inner): Sel, addr: Result<Path<String>, PathRejection>) -> ApiResult {
    let address = parse_address(&path(addr)?, &inner.device)?;
    let info = inner
        .device
        .register(address)
        .ok_or_else(|| not_found(format!("register {address} is outside the device")))?;
    ok(register_json(&inner, &info))
}

async fn set_register(
    Sel(inner): Sel,
    addr: Result<Path<String>, PathRejection>,
    b: Result<axum::Json<Value>, JsonRejection>,
) -> ApiResult {
    let address = parse_address(&path(addr)?, &inner.device)?;
    let b = body(b)?;
    let Some(obj) = b.as_object() else {
        return Err(bad(r#"expected an object: {"value": ...} or {"raw": 0..65535}"#));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "value" | "raw")) {
        return Err(bad(format!("unknown field {k:?} (expected \"value\" or \"raw\")")));
    }
    match (obj.get("value"), obj.get("raw")) {
        (Some(v), None) => inner.device.set_value(address, v).map_err(|e| bad(e.to_string()))?,
        (None, Some(raw)) => {
            let raw = raw
                .as_u64()
                .and_then(|r| u16::try_from(r).ok())
                .ok_or_else(|| bad(format!("raw = {raw}: expected 0..=65535")))?;
            inner
                .device
                .set_register(address, raw)
                .map_err(|e| bad(e.to_string()))?;
        }
        _ => return Err(bad(r#"give exactly one of "value" (typed) or "raw" (16 bits)"#)),
    }
    inner
        .monitor
        .log("info", format!("register {address} set to {b} via HTTP"));
    let info = inner
        .device
        .register(address)
        .ok_or_else(|| not_found(format!("register {address} is outside the device")))?;
    ok(register_json(&inner, &info))
}

async fn get_calls(Sel(inner): Sel, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
    let q = query(q, &["function", "start", "end", "since", "limit"])?;
    let function: Option<u8> = number(&q, "function", "a function code 1..=127")?;
    if function.is_some_and(|f| f == 0 || f >= 0x80) {
        return Err(bad(format!("function={}: expected 1..=127", function.unwrap_or(0))));
    }
    let filter = CallFilter {
        function,
        start: number(&q, "start", "an address 0..=65535")?,
        end: number(&q, "end", "an address 0..=65535")?,
        since: number(&q, "since", "a call number")?,
        limit: number(&q, "limit", "a number of calls")?,
    };
    if let (Some(s), Some(e)) = (filter.start, filter.end)
        && s > e
    {
        return Err(bad(format!("start={s} is after end={e}")));
    }
    ok(json!({ "calls": inner.monitor.calls(&filter) }))
}

async fn clear_calls(Sel(inner): Sel) -> StatusCode {
    inner.monitor.clear_calls();
    StatusCode::NO_CONTENT
}

async fn get_faults(Sel(inner): Sel) -> ApiResult {
    ok(json!({ "faults": inner.monitor.faults() }))
}

async fn add_fault(Sel(inner): Sel, b: Result<axum::Json<Value>, JsonRejection>) -> ApiResult {
    let b = body(b)?;
    if let Some(k) = b
        .as_object()
        .and_then(|o| o.keys().find(|k| !crate::monitor::FAULT_FIELDS.contains(&k.as_str())))
    {
        return Err(bad(format!(
            "unknown field {k:?} (allowed: {})",
            crate::monitor::FAULT_FIELDS.join(", ")
        )));
    }
    let spec: FaultSpec = serde_json::from_value(b).map_err(|e| {
        bad(format!(
            "bad fault: {e} (kinds: exception {{code}}, no_response, delay {{delay_ms}}, split {{split_at, pause_ms}}, garble)"
        ))
    })?;
    spec.check().map_err(bad)?;
    let fault = inner.monitor.add_fault(spec);
    Ok((StatusCode::CREATED, axum::Json(json!(fault))).into_response())
}

async fn clear_faults(Sel(inner): Sel) -> StatusCode {
    inner.monitor.clear_faults();
    StatusCode::NO_CONTENT
}

async fn delete_fault(Sel(inner): Sel, id: Result<Path<String>, PathRejection>) -> Result<StatusCode, ApiError> {
    let id = path(id)?;
    let id: u64 = id.parse().map_err(|_| bad(format!("{id:?} is not a fault id")))?;
    if inner.monitor.remove_fault(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(format!("no fault {id}")))
    }
}

fn server_json(inner: &Inner) -> Value {
    let (local, started) = {
        let m = lock(&inner.modbus);
        (m.local_addr, m.started)
    };
    let running = inner.modbus_running();
    json!({
        "server": inner.server_name,
        "device": inner.device_name,
        "modbus": {
            "running": running,
            "address": local.map(|a| a.to_string()),
            "endpoint": inner.describe(local),
            "uptime_s": started.filter(|_| running).map(|t| t.elapsed().as_secs_f64()),
        },
        "http": lock(&inner.http_addr).map(|a| a.to_string()),
        "device_uptime_s": inner.device.uptime().as_secs_f64(),
        "simulator_uptime_s": inner.created.elapsed().as_secs_f64(),
        "size": inner.device.size(),
        "type_exception": inner.device.type_exception(),
        "faults": inner.monitor.faults().len(),
        "requests_total": inner.monitor.counters().iter().map(|(_, r, _)| r).sum::<u64>(),
    })
}

async fn get_servers(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    let servers: Vec<Value> = fleet
        .servers
        .iter()
        .map(|s| {
            let local = lock(&s.modbus).local_addr;
            json!({
                "server": s.server_name,
                "device": s.device_name,
                "endpoint": s.describe(local),
                "running": s.modbus_running(),
            })
        })
        .collect();
    ok(json!({ "servers": servers }))
}

async fn get_server(Sel(inner): Sel) -> ApiResult {
    ok(server_json(&inner))
}

async fn server_stop(Sel(inner): Sel) -> ApiResult {
    if !inner.stop_modbus().await {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the Modbus server is not running".into(),
        ));
    }
    ok(server_json(&inner))
}

async fn server_restart(Sel(inner): Sel) -> ApiResult {
    if let Err(e) = inner.restart_modbus().await {
        inner.monitor.log("error", format!("restart failed: {e}"));
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("restart failed: {e}"),
        ));
    }
    ok(server_json(&inner))
}

async fn server_reset(Sel(inner): Sel) -> ApiResult {
    coilwork_core::Storage::reset(&*inner.device);
    inner
        .monitor
        .log("info", "registers reset to the configuration's values".into());
    ok(server_json(&inner))
}

/// Clients seen in the recent calls (the last 500), newest first, and the
/// number of open connections.
async fn get_clients(Sel(inner): Sel) -> ApiResult {
    let calls = inner.monitor.calls(&CallFilter::default());
    let mut clients: Vec<(String, u64, String)> = Vec::new();
    for c in calls.iter().rev() {
        let peer = c.peer.clone().unwrap_or_else(|| "(serial line)".to_owned());
        match clients.iter_mut().find(|(p, _, _)| *p == peer) {
            Some(entry) => entry.1 += 1,
            None => clients.push((peer, 1, c.time.clone())),
        }
    }
    let list: Vec<Value> = clients
        .into_iter()
        .map(|(peer, calls, last)| json!({"peer": peer, "recent_calls": calls, "last_seen": last}))
        .collect();
    ok(json!({ "connections_active": inner.traffic().connections_active, "clients": list }))
}

async fn get_log(Sel(inner): Sel, q: Result<Query<HashMap<String, String>>, QueryRejection>) -> ApiResult {
    let q = query(q, &["since"])?;
    let since: u64 = number(&q, "since", "a log entry number")?.unwrap_or(0);
    ok(json!({ "entries": inner.monitor.log_entries(since) }))
}

/// The core's families for the selected server (the same text `coilwork
/// simulate --metrics` serves), then the simulator's own.
async fn metrics(Sel(inner): Sel) -> Response {
    let mut out = inner.prometheus();
    for (name, kind, help, v) in [
        (
            "coilwork_faults_active",
            "gauge",
            "Faults injected and active.",
            inner.monitor.faults().len() as u64,
        ),
        (
            "coilwork_modbus_up",
            "gauge",
            "1 while the Modbus server serves.",
            u64::from(inner.modbus_running()),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file(path: &str, bytes: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes.into(),
    )
        .into_response()
}

/// Decodes `%XX` escapes of a URL path; `None` for a bad escape or bytes
/// that are not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let mut out = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The web page: built in, or the files of `--web-app-path`.
async fn static_files(Sel(inner): Sel, method: Method, uri: Uri) -> ApiResult {
    let path = uri.path();
    if path.starts_with("/api/") || path == "/api" {
        return Err(not_found(format!("no API endpoint {path}")));
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ));
    }
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    match &inner.options.web_app_path {
        None => match rel {
            "index.html" => Ok(file(rel, INDEX_HTML)),
            "app.js" => Ok(file(rel, APP_JS)),
            "style.css" => Ok(file(rel, STYLE_CSS)),
            _ => Err(not_found(format!("no file {path}"))),
        },
        Some(dir) => {
            // Checked after decoding: `%2e%2e` is `..` to the file system too.
            let rel = percent_decode(rel).ok_or_else(|| bad(format!("bad path {path}")))?;
            if rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.contains(['\\', '\0']))
            {
                return Err(bad(format!("bad path {path}")));
            }
            let full = dir.join(&rel);
            let full = if full.is_dir() { full.join("index.html") } else { full };
            let name = full.to_string_lossy().into_owned();
            match tokio::task::spawn_blocking(move || std::fs::read(full)).await {
                Ok(Ok(bytes)) => Ok(file(&name, bytes)),
                _ => Err(not_found(format!("no file {path}"))),
            }
        }
    }
}
