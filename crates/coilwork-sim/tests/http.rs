//! The simulator's REST API end to end over real HTTP (hyper client), with
//! a raw Modbus/TCP client checking that what the API does reaches the wire.

use coilwork_sim::{DEFAULT_CONFIG, Simulator, SimulatorHandle, SimulatorOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(60);

struct Sim {
    sim: Simulator,
    handle: SimulatorHandle,
    http: SocketAddr,
    modbus: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn sim_with(options: SimulatorOptions) -> Sim {
    let config = DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0");
    let sim = Simulator::from_json(&config, options.http("127.0.0.1", 0)).unwrap();
    let handle = sim.start().await.unwrap();
    Sim {
        http: handle.http_addr().unwrap(),
        modbus: handle.local_addr().unwrap(),
        handle,
        sim,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

async fn sim() -> Sim {
    sim_with(SimulatorOptions::default()).await
}

impl Sim {
    /// Sends a request; returns the status, the content type and the body.
    async fn raw(&self, method: &str, path: &str, body: Option<&str>, json_type: bool) -> (u16, String, String) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.http));
        if json_type {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned()))).unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A request with exactly these extra headers; returns the status, the
    /// `WWW-Authenticate` header and the body.
    async fn with_headers(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.http));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let auth = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, auth, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A JSON request; returns the status and the parsed body (`null` if empty).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (status, _, text) = self.raw(method, path, text.as_deref(), true).await;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Asserts a 4xx answer with a JSON error containing `needle`.
    async fn refused(&self, method: &str, path: &str, body: Option<Value>, code: u16, needle: &str) {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, code, "{method} {path}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error message: {v}"));
        assert!(msg.contains(needle), "{method} {path}: {msg:?} lacks {needle:?}");
    }
}

/// One Modbus/TCP request; returns the raw answer (`None` if nothing came in `wait`).
async fn modbus(addr: SocketAddr, pdu: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
    let mut adu = vec![0x12, 0x34, 0, 0, len[0], len[1], 1];
    adu.extend_from_slice(pdu);
    s.write_all(&adu).await.unwrap();
    read_adu(&mut s, wait).await
}

async fn read_adu(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut head = [0u8; 6];
    tokio::time::timeout(wait, s.read_exact(&mut head)).await.ok()?.ok()?;
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let mut rest = vec![0u8; len];
    tokio::time::timeout(wait, s.read_exact(&mut rest)).await.ok()?.ok()?;
    let mut out = head.to_vec();
    out.extend(rest);
    Some(out)
}

fn fc3(start: u16, count: u16) -> [u8; 5] {
    let [a, b] = start.to_be_bytes();
    let [c, d] = count.to_be_bytes();
    [0x03, a, b, c, d]
}

/// The registers of an FC3 answer, or the exception code.
fn regs(answer: &[u8]) -> Result<Vec<u16>, u8> {
    if answer[7] & 0x80 != 0 {
        return Err(answer[8]);
    }
    Ok(answer[9..]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

async fn read(addr: SocketAddr, start: u16, count: u16) -> Result<Vec<u16>, u8> {
    let answer = modbus(addr, &fc3(start, count), Duration::from_secs(5))
        .await
        .expect("no answer");
    regs(&answer)
}

fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(LIMIT, f).await.expect("test took too long");
        });
}

#[test]
fn registers_list_and_typed_set() {
    bounded(async {
        let s = sim().await;
        let v = s.get("/api/registers?start=0&count=40").await;
        assert_eq!((v["start"].clone(), v["size"].clone()), (json!(0), json!(100)));
        let regs_json = v["registers"].as_array().unwrap();
        let at = |a: u64| regs_json.iter().find(|r| r["address"] == a).unwrap().clone();
        assert_eq!(at(4)["decoded"], 17001);
        assert_eq!(at(4)["access"], "r");
        assert_eq!(at(5)["action"], "increment");
        assert_eq!(at(6)["parameters"], json!({"minval": 45, "maxval": 55}));
        assert_eq!(at(10)["type"], "uint32");
        assert_eq!(at(10)["decoded"], 617001);
        assert_eq!(at(11)["type"], "next");
        assert_eq!(at(20)["decoded"], 404.17);
        assert_eq!(at(24)["decoded"], -505.78);
        assert_eq!(at(30)["decoded"], "coilwork  ");
        assert!(
            regs_json.iter().all(|r| r["address"] != 1),
            "invalid registers are not listed"
        );
        // Defaults: 100 from 0.
        assert_eq!(s.get("/api/registers").await["count"], 100);

        // Typed writes, read back by a Modbus client.
        let (st, r) = s
            .call("PUT", "/api/registers/10", Some(json!({"value": 0x0102_0304u32})))
            .await;
        assert_eq!((st, r["decoded"].clone()), (200, json!(0x0102_0304u32)), "{r}");
        assert_eq!(read(s.modbus, 10, 2).await, Ok(vec![0x0102, 0x0304]));
        let (st, _) = s.call("POST", "/api/registers/20", Some(json!({"value": 1.5}))).await;
        assert_eq!(st, 200);
        assert_eq!(read(s.modbus, 20, 2).await, Ok(vec![0x3FC0, 0]));
        let (st, r) = s.call("PUT", "/api/registers/30", Some(json!({"value": "hi"}))).await;
        assert_eq!((st, r["decoded"].clone()), (200, json!("hi        ")));
        let (st, _) = s.call("PUT", "/api/registers/24", Some(json!({"value": 2.0}))).await;
        assert_eq!(st, 200);
        assert_eq!(read(s.modbus, 24, 4).await, Ok(vec![0x4000, 0, 0, 0]));
        // Raw 16 bits, any register (even the second of a uint32).
        let (st, r) = s.call("PUT", "/api/registers/11", Some(json!({"raw": 0xBEEF}))).await;
        assert_eq!((st, r["value"].clone()), (200, json!(0xBEEF)));
        assert_eq!(read(s.modbus, 10, 2).await, Ok(vec![0x0102, 0xBEEF]));

        // A Modbus client's write shows in the listing.
        let answer = modbus(s.modbus, &[0x06, 0x00, 0x03, 0x00, 0x2A], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&answer[7..], &[0x06, 0x00, 0x03, 0x00, 0x2A]);
        let v = s.get("/api/registers?start=3&count=1").await;
        assert_eq!(v["registers"][0]["value"], 42);
        assert_eq!(v["registers"][0]["writes"], 1);
        s.handle.shutdown().await;
    });
}

#[test]
fn registers_bad_requests() {
    bounded(async {
        let s = sim().await;
        // A percent-encoded segment that is not UTF-8 (found by the sim_http fuzz target):
        // a JSON 400 as for any other bad address, on every route with a path parameter.
        s.refused("GET", "/api/registers/%80", None, 400, "bad path: Invalid URL")
            .await;
        s.refused(
            "PUT",
            "/api/registers/07.0.5.%8080",
            Some(json!({"raw": 1})),
            400,
            "bad path",
        )
        .await;
        s.refused("DELETE", "/api/faults/%FF", None, 400, "bad path").await;
        s.refused(
            "GET",
            "/api/registers?start=100",
            None,
            400,
            "start=100: outside the device (100 registers",
        )
        .await;
        s.refused(
            "GET",
            "/api/registers?count=0",
            None,
            400,
            "count=0: expected 1..=10000",
        )
        .await;
        s.refused(
            "GET",
            "/api/registers?start=x",
            None,
            400,
            "start=\"x\": expected a register address",
        )
        .await;
        s.refused(
            "GET",
            "/api/registers?from=1",
            None,
            400,
            "unknown query parameter \"from\"",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/11",
            Some(json!({"value": 1})),
            400,
            "part of the uint32 at 10",
        )
        .await;
        s.refused("PUT", "/api/registers/1", Some(json!({"value": 1})), 400, "not defined")
            .await;
        s.refused(
            "PUT",
            "/api/registers/100",
            Some(json!({"value": 1})),
            404,
            "register 100 is outside the device",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/abc",
            Some(json!({"value": 1})),
            400,
            "\"abc\" is not a register address",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/4",
            Some(json!({"value": 70000})),
            400,
            "out of range 0..=65535",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/20",
            Some(json!({"value": "x"})),
            400,
            "float32 needs a number",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/30",
            Some(json!({"value": "much too long"})),
            400,
            "do not fit in 5 registers",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/4",
            Some(json!({"raw": 70000})),
            400,
            "expected 0..=65535",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/4",
            Some(json!({"value": 1, "raw": 1})),
            400,
            "exactly one of",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/4",
            Some(json!({"val": 1})),
            400,
            "unknown field \"val\"",
        )
        .await;
        s.refused("PUT", "/api/registers/4", Some(json!([1])), 400, "expected an object")
            .await;
        let (st, _, body) = s.raw("PUT", "/api/registers/4", Some("{"), true).await;
        assert_eq!(st, 400);
        assert!(body.contains("\"error\":\"bad JSON body"), "{body}");
        let (st, _, body) = s.raw("PUT", "/api/registers/4", Some("{\"value\": 1}"), false).await;
        assert_eq!(st, 415);
        assert!(body.contains("Content-Type"), "{body}");
        // Nothing changed.
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        s.refused(
            "DELETE",
            "/api/registers",
            None,
            405,
            "DELETE is not allowed on /api/registers",
        )
        .await;
        s.refused("GET", "/api/nothing", None, 404, "no API endpoint /api/nothing")
            .await;
        s.handle.shutdown().await;
    });
}

#[test]
fn calls_monitor_and_filters() {
    bounded(async {
        let s = sim().await;
        read(s.modbus, 4, 1).await.unwrap();
        assert_eq!(read(s.modbus, 1, 1).await, Err(2));
        modbus(s.modbus, &[0x06, 0x00, 0x02, 0x00, 0x01], Duration::from_secs(5))
            .await
            .unwrap();
        let calls = s.get("/api/calls").await["calls"].as_array().unwrap().clone();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(
            (
                calls[0]["function"].clone(),
                calls[0]["address"].clone(),
                calls[0]["count"].clone(),
                calls[0]["result"].clone()
            ),
            (json!(3), json!(4), json!(1), json!("ok"))
        );
        assert_eq!(
            (calls[1]["result"].clone(), calls[1]["exception"].clone()),
            (json!("exception"), json!(2))
        );
        assert_eq!(calls[2]["function"], 6);
        assert!(calls[2]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        let only3 = s.get("/api/calls?function=3").await["calls"].as_array().unwrap().len();
        assert_eq!(only3, 2);
        let range = s.get("/api/calls?start=2&end=3").await["calls"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(range.len(), 1);
        assert_eq!(range[0]["function"], 6);
        let last = s.get("/api/calls?limit=1").await["calls"].as_array().unwrap().clone();
        assert_eq!(last[0]["function"], 6);
        let seq = calls[0]["seq"].as_u64().unwrap();
        assert_eq!(
            s.get(&format!("/api/calls?since={seq}")).await["calls"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        s.refused(
            "GET",
            "/api/calls?function=0",
            None,
            400,
            "function=0: expected 1..=127",
        )
        .await;
        s.refused("GET", "/api/calls?function=300", None, 400, "expected a function code")
            .await;
        s.refused("GET", "/api/calls?start=5&end=2", None, 400, "start=5 is after end=2")
            .await;
        let (st, _) = s.call("DELETE", "/api/calls", None).await;
        assert_eq!(st, 204);
        assert_eq!(s.get("/api/calls").await["calls"], json!([]));
        s.handle.shutdown().await;
    });
}

/// The calls' `seq` is consecutive and stable with connections on both
/// runtime threads and a client polling `since=` while they run: every
/// request is seen exactly once, numbered 1, 2, 3, ... in the order seen.
#[test]
fn call_numbers_are_consecutive_under_concurrent_connections() {
    bounded(async {
        let s = sim().await;
        let (mut seen, mut since) = (Vec::new(), 0u64);
        for round in 0..6u16 {
            let mut tasks = Vec::new();
            for c in 0..4u16 {
                let addr = s.modbus;
                tasks.push(tokio::spawn(async move {
                    let mut conn = TcpStream::connect(addr).await.unwrap();
                    for i in 0..50u16 {
                        let adu = [0, i as u8, 0, 0, 0, 6, 1, 0x03, 0, 4, 0, 1 + ((round + c) % 3) as u8];
                        conn.write_all(&adu).await.unwrap();
                        read_adu(&mut conn, Duration::from_secs(5)).await.unwrap();
                    }
                }));
            }
            while tasks.iter().any(|t| !t.is_finished()) {
                let calls = s.get(&format!("/api/calls?since={since}")).await["calls"].clone();
                for c in calls.as_array().unwrap() {
                    since = c["seq"].as_u64().unwrap();
                    seen.push(since);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
            let calls = s.get(&format!("/api/calls?since={since}")).await["calls"].clone();
            for c in calls.as_array().unwrap() {
                since = c["seq"].as_u64().unwrap();
                seen.push(since);
            }
        }
        assert_eq!(seen, (1..=6 * 4 * 50).collect::<Vec<u64>>());
        let all = s.get("/api/calls?limit=500").await["calls"].clone();
        let all: Vec<u64> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            all,
            (701..=1200).collect::<Vec<u64>>(),
            "the last 500 calls, as numbered before"
        );
        assert_eq!(s.get("/api/server").await["requests_total"], 1200);
        s.handle.shutdown().await;
    });
}

#[test]
fn faults_reach_a_modbus_client() {
    bounded(async {
        let s = sim().await;
        // Exception, once.
        let (st, f) = s
            .call(
                "POST",
                "/api/faults",
                Some(json!({"function": 3, "kind": "exception", "code": 6, "count": 1})),
            )
            .await;
        assert_eq!(st, 201, "{f}");
        assert_eq!(
            (f["kind"].clone(), f["code"].clone(), f["remaining"].clone()),
            (json!("exception"), json!(6), json!(1))
        );
        assert_eq!(read(s.modbus, 4, 1).await, Err(6));
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        assert_eq!(s.get("/api/faults").await["faults"], json!([]));
        let calls = s.get("/api/calls?function=3").await["calls"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(
            (calls[0]["fault"].clone(), calls[0]["exception"].clone()),
            (json!("exception"), json!(6))
        );
        assert_eq!(calls[1]["fault"], Value::Null);

        // Only the function code given: FC3 swallowed, FC4 still answered.
        let (_, f) = s
            .call(
                "POST",
                "/api/faults",
                Some(json!({"function": 3, "kind": "no_response"})),
            )
            .await;
        assert_eq!(modbus(s.modbus, &fc3(4, 1), Duration::from_millis(400)).await, None);
        let fc4 = modbus(s.modbus, &[0x04, 0, 4, 0, 1], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(regs(&fc4), Ok(vec![17001]));
        let id = f["id"].as_u64().unwrap();
        assert_eq!(s.get("/api/faults").await["faults"][0]["applied"], 1);
        let (st, _) = s.call("DELETE", &format!("/api/faults/{id}"), None).await;
        assert_eq!(st, 204);
        s.refused(
            "DELETE",
            &format!("/api/faults/{id}"),
            None,
            404,
            &format!("no fault {id}"),
        )
        .await;
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));

        // Delay.
        s.call(
            "POST",
            "/api/faults",
            Some(json!({"kind": "delay", "delay_ms": 400, "count": 1})),
        )
        .await;
        let t = Instant::now();
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(4),
            "{took:?}"
        );

        // Split: 4 bytes, a pause, the rest.
        s.call(
            "POST",
            "/api/faults",
            Some(json!({"function": 3, "kind": "split", "split_at": 4, "pause_ms": 300, "count": 1})),
        )
        .await;
        let mut c = TcpStream::connect(s.modbus).await.unwrap();
        c.write_all(&[0, 9, 0, 0, 0, 6, 1, 3, 0, 4, 0, 1]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &[0, 9, 0, 0]);
        let t = Instant::now();
        let mut rest = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
        assert_eq!(rest, [0, 5, 1, 3, 2, 0x42, 0x69]);

        // Garbled: the protocol identifier is not 0.
        s.call("POST", "/api/faults", Some(json!({"kind": "garble", "count": 1})))
            .await;
        let answer = modbus(s.modbus, &fc3(4, 1), Duration::from_secs(5)).await.unwrap();
        assert_ne!(&answer[2..4], &[0, 0]);
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));

        // Clear all.
        s.call("POST", "/api/faults", Some(json!({"kind": "no_response"})))
            .await;
        let (st, _) = s.call("DELETE", "/api/faults", None).await;
        assert_eq!(st, 204);
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        s.handle.shutdown().await;
    });
}

#[test]
fn faults_bad_requests() {
    bounded(async {
        let s = sim().await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "explode"})),
            400,
            "unknown variant `explode`",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"function": 3})),
            400,
            "missing field `kind`",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "exception", "code": 9})),
            400,
            "exception code 9: not a Modbus exception code",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "exception"})),
            400,
            "missing field `code`",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "delay", "delay_ms": 100000})),
            400,
            "at most 60000",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "split", "split_at": 0, "pause_ms": 1})),
            400,
            "split_at 0",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "garble", "function": 200})),
            400,
            "function 200: a function code is 1..=127",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "garble", "count": 0})),
            400,
            "count 0",
        )
        .await;
        s.refused(
            "POST",
            "/api/faults",
            Some(json!({"kind": "garble", "when": 1})),
            400,
            "unknown field \"when\"",
        )
        .await;
        s.refused("DELETE", "/api/faults/x", None, 400, "\"x\" is not a fault id")
            .await;
        s.refused("PUT", "/api/faults", None, 405, "PUT is not allowed").await;
        assert_eq!(s.get("/api/faults").await["faults"], json!([]));
        s.handle.shutdown().await;
    });
}

#[test]
fn server_stop_restart_reset_and_log() {
    bounded(async {
        let s = sim().await;
        let v = s.get("/api/server").await;
        assert_eq!(v["modbus"]["running"], true);
        assert_eq!(v["modbus"]["address"], s.modbus.to_string());
        assert_eq!(v["http"], s.http.to_string());
        assert_eq!(
            (v["device"].clone(), v["server"].clone()),
            (json!("device"), json!("server"))
        );

        s.call("PUT", "/api/registers/4", Some(json!({"value": 5}))).await;
        let (st, v) = s.call("POST", "/api/server/reset", None).await;
        assert_eq!((st, v["modbus"]["running"].clone()), (200, json!(true)));
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));

        let (st, v) = s.call("POST", "/api/server/stop", None).await;
        assert_eq!((st, v["modbus"]["running"].clone()), (200, json!(false)), "{v}");
        assert!(TcpStream::connect(s.modbus).await.is_err(), "Modbus still listening");
        s.refused("POST", "/api/server/stop", None, 409, "not running").await;
        // HTTP stays up while Modbus is stopped.
        assert_eq!(s.get("/api/server").await["modbus"]["running"], false);

        let (st, v) = s.call("POST", "/api/server/restart", None).await;
        assert_eq!((st, v["modbus"]["running"].clone()), (200, json!(true)), "{v}");
        assert_eq!(v["modbus"]["address"], s.modbus.to_string());
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        // Restart while running.
        let (st, _) = s.call("POST", "/api/server/restart", None).await;
        assert_eq!(st, 200);
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        s.refused("GET", "/api/server/stop", None, 405, "GET is not allowed")
            .await;

        let log = s.get("/api/log").await["entries"].as_array().unwrap().clone();
        let text: Vec<&str> = log.iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert!(text.iter().any(|m| m.starts_with("serving Modbus/TCP")), "{text:?}");
        assert!(
            text.contains(&"registers reset to the configuration's values"),
            "{text:?}"
        );
        assert!(text.contains(&"Modbus server stopped"), "{text:?}");
        let last = log.last().unwrap()["seq"].as_u64().unwrap();
        assert_eq!(s.get(&format!("/api/log?since={last}")).await["entries"], json!([]));
        s.refused("GET", "/api/log?since=-1", None, 400, "expected a log entry number")
            .await;

        // The whole simulator stops: HTTP too.
        s.sim.stop();
        tokio::time::timeout(Duration::from_secs(10), s.handle.stopped())
            .await
            .unwrap();
        assert!(TcpStream::connect(s.http).await.is_err(), "HTTP still listening");
    });
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn cross_site_requests_change_nothing() {
    bounded(async {
        let mut options = SimulatorOptions::default();
        options.http_allow_hosts = vec!["plant.lan".into()];
        let s = sim_with(options).await;
        let port = s.http.port();
        let evil = [JSON, ("origin", "http://evil.example")];
        let (st, _, body) = s.with_headers("POST", "/api/server/stop", &evil).await;
        assert_eq!(st, 403, "{body}");
        assert!(body.contains("evil.example"), "{body}");
        let (st, _, body) = s
            .with_headers("POST", "/api/server/stop", &[JSON, ("origin", "null")])
            .await;
        assert_eq!(st, 403, "{body}");
        let cross = [JSON, ("sec-fetch-site", "cross-site")];
        assert_eq!(s.with_headers("POST", "/api/server/stop", &cross).await.0, 403);
        // Bodiless state changes need the JSON type too (a form cannot send it without a preflight).
        for ctype in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
            let headers: Vec<(&str, &str)> = ctype.map(|c| ("content-type", c)).into_iter().collect();
            for (method, path) in [
                ("POST", "/api/server/stop"),
                ("DELETE", "/api/faults"),
                ("PUT", "/api/registers/4"),
            ] {
                let (st, _, body) = s.with_headers(method, path, &headers).await;
                assert_eq!(st, 415, "{method} {path} {ctype:?}: {body}");
                assert!(body.contains("Content-Type: application/json"), "{body}");
            }
        }
        // DNS rebinding: a foreign name for this address.
        for host in ["attacker.example", &format!("attacker.example:{port}"), "10.9.9.9"] {
            for path in ["/api/server", "/", "/metrics"] {
                let (st, _, body) = s.with_headers("GET", path, &[("host", host)]).await;
                assert_eq!(st, 421, "{host} {path}: {body}");
            }
        }
        let (st, _, body) = s
            .with_headers("POST", "/api/server/stop", &[JSON, ("host", "attacker.example")])
            .await;
        assert_eq!(st, 421, "{body}");
        // Nothing stopped.
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]));
        assert_eq!(s.get("/api/server").await["modbus"]["running"], true);
        // The simulator's own names and page pass.
        let localhost = format!("localhost:{port}");
        let own_origin = format!("http://localhost:{port}");
        for host in [
            localhost.as_str(),
            "plant.lan",
            "PLANT.LAN.",
            &format!("127.0.0.1:{port}"),
        ] {
            assert_eq!(
                s.with_headers("GET", "/api/server", &[("host", host)]).await.0,
                200,
                "{host}"
            );
        }
        let page = [
            JSON,
            ("host", localhost.as_str()),
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let (st, _, body) = s.with_headers("POST", "/api/server/stop", &page).await;
        assert_eq!(st, 200, "{body}");
        assert!(TcpStream::connect(s.modbus).await.is_err(), "Modbus still listening");
        s.handle.shutdown().await;
    });
}

#[test]
fn token_needed_on_every_api_call() {
    bounded(async {
        let mut options = SimulatorOptions::default();
        options.http_token = Some("s3cret".into());
        let s = sim_with(options).await;
        for (method, path, headers) in [
            ("GET", "/api/server", vec![]),
            ("GET", "/metrics", vec![]),
            ("POST", "/api/server/stop", vec![JSON]),
            (
                "POST",
                "/api/server/stop",
                vec![JSON, ("authorization", "Bearer s3cre")],
            ),
            ("GET", "/api/registers", vec![("authorization", "Basic s3cret")]),
        ] {
            let (st, auth, body) = s.with_headers(method, path, &headers).await;
            assert_eq!(
                (st, auth.as_str()),
                (401, "Bearer"),
                "{method} {path} {headers:?}: {body}"
            );
            assert!(body.contains("Authorization: Bearer"), "{body}");
        }
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![17001]), "stopped without the token");
        let good = [("authorization", "Bearer s3cret")];
        let (st, _, body) = s.with_headers("GET", "/api/server", &good).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(s.with_headers("GET", "/metrics", &good).await.0, 200);
        // The page itself loads without it (it asks for the token in its address).
        assert_eq!(s.with_headers("GET", "/", &[]).await.0, 200);
        let (st, _, body) = s.with_headers("POST", "/api/server/stop", &[JSON, good[0]]).await;
        assert_eq!(st, 200, "{body}");
        s.handle.shutdown().await;
    });
}

#[test]
fn open_http_without_token_warns() {
    bounded(async {
        let config = DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0");
        for (host, warns) in [("0.0.0.0", true), ("127.0.0.1", false)] {
            let sim = Simulator::from_json(&config, SimulatorOptions::default().http(host, 0)).unwrap();
            let handle = sim.start().await.unwrap();
            let warned = sim
                .monitor()
                .log_entries(0)
                .iter()
                .any(|e| e.level == "warn" && e.message.contains("without a token"));
            assert_eq!(warned, warns, "{host}");
            handle.shutdown().await;
        }
    });
}

#[test]
fn register_map_names_in_the_api() {
    bounded(async {
        let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_plant.csv");
        std::fs::write(
            &file,
            "address,type,access,value,action,parameters,name\n\
             0,uint16,rw,7,,,setpoint\n\
             2,float32,rw,1.5,,,limit\n\
             4,int16,r,-3\n",
        )
        .unwrap();
        let mut options = SimulatorOptions::default();
        options.register_map = Some(file);
        let s = sim_with(options).await;
        let list = s.get("/api/registers").await;
        assert_eq!(list["size"], 5);
        let regs = list["registers"].as_array().unwrap();
        let names: Vec<(u64, Value)> = regs
            .iter()
            .map(|r| (r["address"].as_u64().unwrap(), r["name"].clone()))
            .collect();
        assert_eq!(names[0], (0, json!("setpoint")));
        assert_eq!(names[1], (2, json!("limit")));
        assert!(names.contains(&(4, Value::Null)), "{names:?}");
        let r = s.get("/api/registers/setpoint").await;
        assert_eq!((r["address"].clone(), r["value"].clone()), (json!(0), json!(7)));
        let (st, v) = s
            .call("PUT", "/api/registers/limit", Some(json!({"value": 22.5})))
            .await;
        assert_eq!((st, v["decoded"].clone()), (200, json!(22.5)), "{v}");
        assert_eq!(read(s.modbus, 2, 2).await, Ok(vec![0x41B4, 0x0000]));
        assert_eq!(read(s.modbus, 4, 1).await, Ok(vec![0xFFFD]));
        s.refused(
            "GET",
            "/api/registers/nothing",
            None,
            404,
            "no register named \"nothing\"",
        )
        .await;
        s.refused(
            "PUT",
            "/api/registers/-1",
            Some(json!({"raw": 1})),
            404,
            "no register named",
        )
        .await;
        s.handle.shutdown().await;
    });
}

#[test]
fn metrics_count_requests() {
    bounded(async {
        let s = sim().await;
        for _ in 0..3 {
            read(s.modbus, 4, 1).await.unwrap();
        }
        assert_eq!(read(s.modbus, 1, 1).await, Err(2));
        modbus(s.modbus, &[0x06, 0x00, 0x02, 0x00, 0x01], Duration::from_secs(5))
            .await
            .unwrap();
        // The same families as `coilwork serve --metrics`, labelled with the
        // server entry's name. Sessions fold their counts in when they close
        // (the client's close reaches the server a moment later): poll.
        let wanted: [(&str, u64); 10] = [
            (
                "coilwork_requests_total{server=\"server\",unit=\"1\",function=\"3\"}",
                4,
            ),
            (
                "coilwork_exceptions_total{server=\"server\",unit=\"1\",function=\"3\"}",
                1,
            ),
            (
                "coilwork_requests_total{server=\"server\",unit=\"1\",function=\"6\"}",
                1,
            ),
            (
                "coilwork_exceptions_total{server=\"server\",unit=\"1\",function=\"6\"}",
                0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"server\"}", 5),
            ("coilwork_connections_accepted_total{server=\"server\"}", 5),
            ("coilwork_bytes_in_total{server=\"server\"}", 5 * 12),
            // 3 × 11 (one register) + 9 (exception) + 12 (FC6 echo).
            ("coilwork_bytes_out_total{server=\"server\"}", 3 * 11 + 9 + 12),
            ("coilwork_connections_open{server=\"server\"}", 0),
            ("coilwork_modbus_up", 1),
        ];
        let metric = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .and_then(|v| v.parse().ok())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let text = loop {
            let (st, ctype, text) = s.raw("GET", "/metrics", None, false).await;
            assert_eq!(st, 200);
            assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
            if wanted.iter().all(|(name, v)| metric(&text, name) == Some(*v)) {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not as expected: {wanted:?}\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(text.contains("# TYPE coilwork_requests_total counter"));
        s.handle.shutdown().await;
    });
}

#[test]
fn web_page_built_in_and_user_directory() {
    bounded(async {
        let s = sim().await;
        let (st, ctype, body) = s.raw("GET", "/", None, false).await;
        assert_eq!(st, 200);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(body.contains("<script src=\"app.js\"></script>"));
        let (st, ctype, body) = s.raw("GET", "/app.js", None, false).await;
        assert_eq!((st, ctype.starts_with("text/javascript")), (200, true));
        assert!(body.contains("/api/registers"));
        let (st, ctype, _) = s.raw("GET", "/style.css", None, false).await;
        assert_eq!((st, ctype.starts_with("text/css")), (200, true));
        s.refused("GET", "/nope.html", None, 404, "no file /nope.html").await;
        s.handle.shutdown().await;

        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_app");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>mine</p>").unwrap();
        std::fs::write(dir.join("sub/x.js"), "let x = 1;").unwrap();
        let mut options = SimulatorOptions::default();
        let dir_copy = dir.clone();
        options.web_app_path = Some(dir);
        let s = sim_with(options).await;
        let (st, ctype, body) = s.raw("GET", "/", None, false).await;
        assert_eq!(
            (st, ctype.starts_with("text/html"), body.as_str()),
            (200, true, "<p>mine</p>")
        );
        let (st, ctype, body) = s.raw("GET", "/sub/x.js", None, false).await;
        assert_eq!(
            (st, ctype.starts_with("text/javascript"), body.as_str()),
            (200, true, "let x = 1;")
        );
        s.refused("GET", "/app.js", None, 404, "no file /app.js").await;
        s.refused(
            "GET",
            "/sub/../../etc/passwd",
            None,
            400,
            "bad path /sub/../../etc/passwd",
        )
        .await;
        // Decoded before the checks: an escaped `..` is refused, an escaped
        // name is found, a bad escape is refused.
        s.refused(
            "GET",
            "/sub/%2e%2e/index.html",
            None,
            400,
            "bad path /sub/%2e%2e/index.html",
        )
        .await;
        std::fs::write(dir_copy.join("sub/a b.js"), "let y = 2;").unwrap();
        let (st, _, body) = s.raw("GET", "/sub/a%20b.js", None, false).await;
        assert_eq!((st, body.as_str()), (200, "let y = 2;"));
        s.refused("GET", "/sub/%zz.js", None, 400, "bad path /sub/%zz.js").await;
        // The API stays.
        assert_eq!(s.get("/api/server").await["modbus"]["running"], true);
        s.handle.shutdown().await;
    });
}

#[test]
fn several_servers_each_with_its_device() {
    bounded(async {
        let mut config: Value = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        config["server_list"]["server"]["port"] = json!(0);
        let mut pump = config["server_list"]["server"].clone();
        pump["device"] = json!("pump");
        config["server_list"]["pump_server"] = pump;
        let mut device = config["device_list"]["device"].clone();
        device["uint16"][0]["value"] = json!(4242);
        config["device_list"]["pump"] = device;
        let mut options = SimulatorOptions::default();
        options.all_servers = true;
        let sim = Simulator::from_json(&config.to_string(), options.http("127.0.0.1", 0)).unwrap();
        let handle = sim.start().await.unwrap();
        let addrs = handle.local_addrs();
        let names: Vec<&str> = addrs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pump_server", "server"]);
        let pump_addr = addrs[0].1.unwrap();
        let main_addr = addrs[1].1.unwrap();
        assert_eq!(read(pump_addr, 4, 1).await, Ok(vec![4242]));
        assert_eq!(read(main_addr, 4, 1).await, Ok(vec![17001]));
        let s = Sim {
            http: handle.http_addr().unwrap(),
            modbus: main_addr,
            handle,
            sim,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let list = s.get("/api/servers").await;
        assert_eq!(list["servers"][0]["device"], "pump");
        assert_eq!(list["servers"][1]["device"], "device");
        // The API acts on the server chosen.
        let (st, v) = s
            .call("PUT", "/api/registers/4?server=server", Some(json!({"value": 7})))
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(read(main_addr, 4, 1).await, Ok(vec![7]));
        assert_eq!(read(pump_addr, 4, 1).await, Ok(vec![4242]));
        assert_eq!(s.get("/api/server?server=pump_server").await["device"], "pump");
        s.refused("GET", "/api/registers?server=boiler", None, 404, "no server \"boiler\"")
            .await;
        let (st, _) = s.call("POST", "/api/server/stop?server=pump_server", None).await;
        assert_eq!(st, 200);
        assert!(TcpStream::connect(pump_addr).await.is_err(), "pump still serves");
        assert_eq!(read(main_addr, 4, 1).await, Ok(vec![7]), "the other server stopped too");
        s.handle.shutdown().await;
        assert!(TcpStream::connect(main_addr).await.is_err());
    });
}

#[test]
fn several_servers_start_all_or_none() {
    bounded(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config: Value = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        config["server_list"]["server"]["port"] = json!(0);
        let mut second = config["server_list"]["server"].clone();
        second["port"] = json!(taken.local_addr().unwrap().port());
        config["server_list"]["second"] = second.clone();
        let mut options = SimulatorOptions::default();
        options.servers = vec!["server".into(), "second".into()];
        let sim = Simulator::from_json(&config.to_string(), options).unwrap();
        assert!(sim.start().await.is_err(), "started with a port taken");
        // The first server, started before the failure, was stopped.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = sim.monitor().log_entries(0);
        let served = log
            .iter()
            .find_map(|e| e.message.strip_prefix("serving Modbus/TCP on "))
            .expect("the first server never started");
        assert!(
            TcpStream::connect(served).await.is_err(),
            "{served} still serves after a failed start"
        );
        // An unknown device named by a server entry is refused at build.
        second["device"] = json!("boiler");
        config["server_list"]["second"] = second;
        let mut options = SimulatorOptions::default();
        options.all_servers = true;
        let err = Simulator::from_json(&config.to_string(), options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server_list.second.device = \"boiler\": no such entry"),
            "{err}"
        );
    });
}

/// A plain register map (no actions, no faults) keeps the engine's fast
/// path with the call monitor as its observer: requests over real TCP
/// connections, several at once on the runtime's two threads and some
/// pipelined in one segment, are still counted per register, per call and
/// per function, as the REST API shows.
#[test]
fn plain_map_counts_requests_per_register() {
    bounded(async {
        let config = json!({
            "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 0, "framer": "socket"}},
            "device_list": {"device": {
                "setup": {"co size": 100, "di size": 100, "hr size": 100, "ir size": 100,
                          "shared blocks": true, "type exception": false,
                          "defaults": {"value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                                       "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}},
                "invalid": [], "write": [[0, 99]], "uint16": [{"addr": [0, 99], "value": 0}], "repeat": []
            }}
        });
        let sim = Simulator::from_json(&config.to_string(), SimulatorOptions::default().http("127.0.0.1", 0)).unwrap();
        let handle = sim.start().await.unwrap();
        let s = Sim {
            http: handle.http_addr().unwrap(),
            modbus: handle.local_addr().unwrap(),
            handle,
            sim,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        // Four connections at once, each: 25 reads of 2..5, 10 writes (FC16)
        // of 4..8, then a read past the map (exception 02: counted as a call,
        // not per register).
        let mut tasks = Vec::new();
        for c in 0..4u16 {
            let addr = s.modbus;
            tasks.push(tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                for i in 0..35u16 {
                    let pdu: Vec<u8> = if i < 25 {
                        fc3(2, 3).to_vec()
                    } else {
                        vec![0x10, 0, 4, 0, 4, 8, 0, 1, 0, 2, 0, 3, 0, c as u8]
                    };
                    let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
                    let mut adu = vec![0, i as u8, 0, 0, len[0], len[1], 1];
                    adu.extend_from_slice(&pdu);
                    conn.write_all(&adu).await.unwrap();
                    let answer = read_adu(&mut conn, Duration::from_secs(5)).await.unwrap();
                    assert_eq!(answer[7], pdu[0], "{answer:02X?}");
                }
                conn.write_all(&[0, 99, 0, 0, 0, 6, 1, 0x03, 0, 98, 0, 5])
                    .await
                    .unwrap();
                let answer = read_adu(&mut conn, Duration::from_secs(5)).await.unwrap();
                assert_eq!(&answer[7..], &[0x83, 0x02]);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Two requests pipelined in one segment: FC3 of 0..10 and FC6 to 9.
        let mut conn = TcpStream::connect(s.modbus).await.unwrap();
        let mut two = vec![0, 1, 0, 0, 0, 6, 1, 0x03, 0, 0, 0, 10];
        two.extend_from_slice(&[0, 2, 0, 0, 0, 6, 1, 0x06, 0, 9, 0, 7]);
        conn.write_all(&two).await.unwrap();
        let first = read_adu(&mut conn, Duration::from_secs(5)).await.unwrap();
        let second = read_adu(&mut conn, Duration::from_secs(5)).await.unwrap();
        assert_eq!((first[7], first[8]), (0x03, 20));
        assert_eq!(&second[7..], &[0x06, 0, 9, 0, 7]);

        let v = s.get("/api/registers?start=0&count=12").await;
        let counts: Vec<(u64, u64, u64)> = v["registers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["address"].as_u64().unwrap(),
                    r["reads"].as_u64().unwrap(),
                    r["writes"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(u64, u64, u64)> = (0..12u64)
            .map(|a| {
                let reads = u64::from(a < 10) + if (2..5).contains(&a) { 100 } else { 0 };
                let writes = if (4..8).contains(&a) { 40 } else { u64::from(a == 9) };
                (a, reads, writes)
            })
            .collect();
        assert_eq!(counts, expected);
        let v = s.get("/api/registers?start=98&count=2").await;
        assert_eq!(v["registers"][0]["reads"], 0, "a refused read counts no register");
        // Every request is a call and counts for its function.
        assert_eq!(s.get("/api/server").await["requests_total"], 4 * 36 + 2);
        let calls = s.get("/api/calls?limit=500").await["calls"].as_array().unwrap().clone();
        assert_eq!(calls.len(), 4 * 36 + 2);
        let exceptions: Vec<&Value> = calls.iter().filter(|c| c["result"] == "exception").collect();
        assert_eq!(exceptions.len(), 4);
        assert!(
            exceptions
                .iter()
                .all(|c| c["exception"] == 2 && c["address"] == 98 && c["count"] == 5)
        );
        let last = calls.last().unwrap();
        assert_eq!(
            (last["function"].clone(), last["address"].clone()),
            (json!(6), json!(9))
        );
        let seqs: Vec<u64> = calls.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=4 * 36 + 2).collect::<Vec<u64>>(),
            "calls numbered 1, 2, 3, ..."
        );
        let since = seqs[seqs.len() - 2];
        let newer = s.get(&format!("/api/calls?since={since}")).await["calls"].clone();
        assert_eq!(newer.as_array().unwrap().len(), 1);
        s.handle.shutdown().await;
    });
}
