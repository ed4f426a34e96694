//! Values that move with time, read by a Modbus/TCP client over loopback:
//! each value is the generator's at the instant of the read, with simulated
//! time sped up by `time_scale`.

use coilwork_sim::{Simulator, SimulatorOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(device: Value) -> String {
    json!({
        "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 0, "framer": "socket"}},
        "device_list": {"device": device}
    })
    .to_string()
}

fn device(entries: Value) -> Value {
    let mut d = json!({
        "setup": {
            "co size": 100, "di size": 100, "hr size": 100, "ir size": 100,
            "shared blocks": true, "type exception": true,
            "defaults": {
                "value": {"bits": 0, "int16": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}
            }
        },
        "invalid": [], "write": [], "repeat": []
    });
    for (k, v) in entries.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

/// FC3 of `count` registers at `start`.
async fn read(addr: SocketAddr, start: u16, count: u16) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let [sh, sl] = start.to_be_bytes();
    let [ch, cl] = count.to_be_bytes();
    s.write_all(&[0, 1, 0, 0, 0, 6, 1, 3, sh, sl, ch, cl]).await.unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[7], 3, "exception {:02X}", head[8]);
    let mut body = vec![0u8; head[8] as usize];
    s.read_exact(&mut body).await.unwrap();
    body.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

fn run(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), f).await.unwrap() });
}

#[test]
fn ramp_and_counter_follow_scaled_time() {
    run(async {
        let dev = device(json!({
            "uint16": [{"addr": 10, "value": 0, "action": "ramp", "parameters": {"period_s": 60000, "min": 0, "max": 60000}}],
            "uint32": [{"addr": [20, 21], "value": 5, "action": "counter", "parameters": {"rate_per_s": 1}}]
        }));
        let options = SimulatorOptions::default().time_scale(1000.0);
        let before = Instant::now();
        let sim = Simulator::from_json(&config(dev), options).unwrap();
        let built = Instant::now();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        // Simulated seconds = 1000 × real seconds since the device was built.
        let bounds = |sent: Instant| {
            let lo = sent.duration_since(built).as_secs_f64() * 1000.0;
            let hi = before.elapsed().as_secs_f64() * 1000.0;
            (lo, hi)
        };
        let sent = Instant::now();
        let v1 = f64::from(read(addr, 10, 1).await[0]);
        let (lo, hi) = bounds(sent);
        assert!(
            v1 >= lo.floor() - 1.0 && v1 <= hi.ceil() + 1.0,
            "ramp {v1} outside {lo}..{hi}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        let v2 = f64::from(read(addr, 10, 1).await[0]);
        let (lo, hi) = bounds(sent);
        assert!(
            v2 >= lo.floor() - 1.0 && v2 <= hi.ceil() + 1.0,
            "ramp {v2} outside {lo}..{hi}"
        );
        assert!(v2 - v1 >= 299.0, "ramp moved {v1} -> {v2} in 300 ms × 1000");

        let sent = Instant::now();
        let words = read(addr, 20, 2).await;
        let c = f64::from((u32::from(words[0]) << 16) | u32::from(words[1]));
        let (lo, hi) = bounds(sent);
        assert!(
            c >= 5.0 + lo.floor() - 1.0 && c <= 5.0 + hi.ceil() + 1.0,
            "counter {c} outside 5+{lo}..{hi}"
        );
        handle.shutdown().await;
    });
}

#[test]
fn frozen_time_gives_the_generators_start() {
    run(async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("time_series");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("flow.csv"), "time_s,value\n0,1234\n10,99\n").unwrap();
        let dev = device(json!({
            "float32": [{"addr": [30, 31], "action": "sine", "parameters": {"period_s": 8, "min": 10, "max": 20, "phase_s": 2}}],
            "int16": [
                {"addr": 40, "action": "square", "parameters": {"period_s": 1, "min": -5, "max": 5}},
                {"addr": 41, "action": "series", "parameters": {"file": "flow.csv", "loop": true}},
                {"addr": 42, "value": 7, "action": "random_walk", "parameters": {"step": 1, "min": 0, "max": 10, "interval_s": 1}}
            ]
        }));
        let file = dir.join("plant.json");
        std::fs::write(&file, config(dev)).unwrap();
        let options = SimulatorOptions::default().time_scale(0.0);
        // `flow.csv` is found next to the JSON file.
        let sim = Simulator::from_file(&file, options).unwrap();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        let w = read(addr, 30, 2).await;
        // sin(2π·2/8) = 1: the maximum.
        assert_eq!(f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])), 20.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(read(addr, 40, 3).await, vec![5, 1234, 7]);
        let listed = sim.device().registers(40..43);
        assert_eq!(listed[0].action.as_deref(), Some("square"));
        handle.shutdown().await;
    });
}

#[test]
fn bad_generators_are_refused_naming_file_key_and_field() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("time_bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.csv"), "time_s,value\n0,1\n1,oops\n").unwrap();
    for (entry, needles) in [
        (
            json!({"addr": 1, "action": "sine", "parameters": {"period_s": 1, "min": 0, "max": 1, "freq": 3}}),
            vec![
                "plant.json",
                "device_list.device.uint16[0].parameters.freq",
                "sine takes no \"freq\"",
            ],
        ),
        (
            json!({"addr": 1, "action": "ramp", "parameters": {"period_s": -1, "min": 0, "max": 1}}),
            vec!["device_list.device.uint16[0].parameters.period_s = -1", "above 0"],
        ),
        (
            json!({"addr": 1, "action": "series", "parameters": {"file": "missing.csv"}}),
            vec![
                "device_list.device.uint16[0].file = \"missing.csv\"",
                "cannot read missing.csv",
            ],
        ),
        (
            json!({"addr": 1, "action": "series", "parameters": {"file": "bad.csv"}}),
            vec!["bad.csv line 3, field value: \"oops\" is not a number"],
        ),
        (
            json!({"addr": 1, "action": "wobble"}),
            vec!["device_list.device.uint16[0].action = \"wobble\": unknown action"],
        ),
    ] {
        let file = dir.join("plant.json");
        std::fs::write(&file, config(device(json!({"uint16": [entry]})))).unwrap();
        let err = Simulator::from_file(&file, SimulatorOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        for n in needles {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
    }
    let options = SimulatorOptions::default().time_scale(-1.0);
    let err = Simulator::from_json(&config(device(json!({}))), options).unwrap_err();
    assert!(err.to_string().contains("time_scale = -1"), "{err}");
}
