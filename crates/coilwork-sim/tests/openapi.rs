//! Keeps `/api/openapi.json` true: every operation it describes is called
//! over real HTTP, the answer's status must be described, and its body must
//! match the described schema; every route of the server is described.

use coilwork_sim::{DEFAULT_CONFIG, Simulator, SimulatorOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Checks `v` against the OpenAPI 3.0 schema `s` (the subset the document
/// uses); the first mismatch as `path: why`.
fn check(doc: &Value, s: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return check(doc, resolve(doc, r), v, path);
    }
    if v.is_null() {
        let nullable = s.get("nullable") == Some(&json!(true)) || s.as_object().is_some_and(|o| o.is_empty());
        return if nullable {
            Ok(())
        } else {
            Err(format!("{path}: null where {s} is expected"))
        };
    }
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let fits = options.iter().filter(|o| check(doc, o, v, path).is_ok()).count();
        return if fits == 1 {
            Ok(())
        } else {
            Err(format!("{path}: {v} fits {fits} of oneOf"))
        };
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} not in {e:?}"));
    }
    let ok_type = match s.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => return Err(format!("{path}: schema type {t} not handled")),
    };
    if !ok_type {
        return Err(format!("{path}: {v} is not {}", s["type"]));
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m) {
            return Err(format!("{path}: {n} below {}", s["minimum"]));
        }
        if s.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m) {
            return Err(format!("{path}: {n} above {}", s["maximum"]));
        }
    }
    if let Some(items) = s.get("items") {
        for (i, item) in v.as_array().into_iter().flatten().enumerate() {
            check(doc, items, item, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(obj) = v.as_object() {
        check_object(doc, s, obj, path)?;
    }
    Ok(())
}

fn check_object(doc: &Value, s: &Value, obj: &serde_json::Map<String, Value>, path: &str) -> Result<(), String> {
    let empty = serde_json::Map::new();
    let props = s.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
        let r = r.as_str().unwrap();
        if !obj.contains_key(r) {
            return Err(format!("{path}: required {r:?} missing"));
        }
    }
    for (k, val) in obj {
        match props.get(k) {
            Some(p) => check(doc, p, val, &format!("{path}.{k}"))?,
            None if s.get("additionalProperties") == Some(&json!(false)) => {
                return Err(format!("{path}: {k:?} is not described"));
            }
            None => {}
        }
    }
    Ok(())
}

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
    doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"))
}

/// The response object for `status` (or `default`), resolved.
fn response<'a>(doc: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    let responses = &op["responses"];
    let r = responses.get(status.to_string()).or_else(|| responses.get("default"))?;
    Some(match r.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference),
        None => r,
    })
}

#[test]
fn every_operation_answers_as_described() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let config = DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0");
            let sim = Simulator::from_json(&config, SimulatorOptions::default().http("127.0.0.1", 0)).unwrap();
            let handle = sim.start().await.unwrap();
            let base = format!("http://{}", handle.http_addr().unwrap());
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let send = |method: &str, path: String, body: Option<Value>| {
                let req = hyper::Request::builder()
                    .method(method)
                    .uri(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
                    .unwrap();
                let client = client.clone();
                async move {
                    let res = client.request(req).await.unwrap();
                    let status = res.status().as_u16();
                    let ctype = res
                        .headers()
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let bytes = res.into_body().collect().await.unwrap().to_bytes();
                    (status, ctype, bytes)
                }
            };
            let (status, _, bytes) = send("GET", "/api/openapi.json".into(), None).await;
            assert_eq!(status, 200);
            let doc: Value = serde_json::from_slice(&bytes).unwrap();
            assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

            // (method, path template, concrete path, body): good and bad calls.
            let calls: Vec<(&str, &str, String, Option<Value>)> = vec![
                ("get", "/api/registers", "/api/registers?start=0&count=100".into(), None),
                ("get", "/api/registers", "/api/registers?count=0".into(), None),
                ("get", "/api/registers/{addr}", "/api/registers/4".into(), None),
                ("get", "/api/registers/{addr}", "/api/registers/99999".into(), None),
                (
                    "put",
                    "/api/registers/{addr}",
                    "/api/registers/4".into(),
                    Some(json!({"value": 5})),
                ),
                (
                    "put",
                    "/api/registers/{addr}",
                    "/api/registers/4".into(),
                    Some(json!({"bad": 5})),
                ),
                (
                    "post",
                    "/api/registers/{addr}",
                    "/api/registers/4".into(),
                    Some(json!({"raw": 6})),
                ),
                (
                    "post",
                    "/api/faults",
                    "/api/faults".into(),
                    Some(json!({"kind": "delay", "delay_ms": 1, "count": 1})),
                ),
                (
                    "post",
                    "/api/faults",
                    "/api/faults".into(),
                    Some(json!({"kind": "exception", "code": 9})),
                ),
                ("get", "/api/faults", "/api/faults".into(), None),
                ("delete", "/api/faults/{id}", "/api/faults/1".into(), None),
                ("delete", "/api/faults/{id}", "/api/faults/1".into(), None),
                ("delete", "/api/faults", "/api/faults".into(), None),
                ("get", "/api/calls", "/api/calls?limit=5".into(), None),
                ("get", "/api/calls", "/api/calls?function=200".into(), None),
                ("delete", "/api/calls", "/api/calls".into(), None),
                ("get", "/api/server", "/api/server".into(), None),
                ("get", "/api/server", "/api/server?server=server".into(), None),
                ("get", "/api/server", "/api/server?server=nope".into(), None),
                ("get", "/api/servers", "/api/servers".into(), None),
                ("get", "/api/clients", "/api/clients".into(), None),
                ("post", "/api/server/reset", "/api/server/reset".into(), None),
                ("post", "/api/server/stop", "/api/server/stop".into(), None),
                ("post", "/api/server/stop", "/api/server/stop".into(), None),
                ("post", "/api/server/restart", "/api/server/restart".into(), None),
                ("get", "/api/log", "/api/log?since=0".into(), None),
                ("get", "/api/openapi.json", "/api/openapi.json".into(), None),
                ("get", "/metrics", "/metrics".into(), None),
            ];
            let mut succeeded = BTreeSet::new();
            for (method, template, path, body) in calls {
                let op = &doc["paths"][template][method];
                assert!(op.is_object(), "{method} {template} is not described");
                let (status, ctype, bytes) = send(&method.to_uppercase(), path.clone(), body).await;
                let described = response(&doc, op, status)
                    .unwrap_or_else(|| panic!("{method} {path}: status {status} not described"));
                if (200..300).contains(&status) {
                    succeeded.insert((method, template));
                }
                let Some(content) = described.get("content").and_then(Value::as_object) else {
                    assert!(
                        bytes.is_empty(),
                        "{method} {path}: {status} has a body it does not describe"
                    );
                    continue;
                };
                let (media, spec) = content.iter().next().unwrap();
                assert!(
                    ctype.starts_with(media.as_str()),
                    "{method} {path}: {ctype} is not {media}"
                );
                if media == "application/json" {
                    let v: Value = serde_json::from_slice(&bytes).unwrap();
                    if let Err(e) = check(&doc, &spec["schema"], &v, "body") {
                        panic!("{method} {path} ({status}): {e}\n{v}");
                    }
                }
            }
            // Every described operation was seen to succeed.
            let mut described = BTreeSet::new();
            for (template, item) in doc["paths"].as_object().unwrap() {
                for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
                    described.insert((method.clone(), template.clone()));
                }
            }
            let seen: BTreeSet<(String, String)> = succeeded
                .iter()
                .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
                .collect();
            assert_eq!(described, seen, "described operations vs. those that answered 2xx");
            // A method the document does not list is refused.
            for (method, path) in [
                ("DELETE", "/api/server"),
                ("PUT", "/api/log"),
                ("POST", "/api/registers"),
            ] {
                assert_eq!(send(method, path.into(), None).await.0, 405, "{method} {path}");
            }
            handle.shutdown().await;
        });
}
