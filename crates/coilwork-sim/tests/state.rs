//! `state_file`: values written by a Modbus client over loopback survive a
//! restart; saves are coalesced and atomic; a file of another configuration
//! is refused naming the first difference.

use coilwork_sim::{DEFAULT_CONFIG, Simulator, SimulatorOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> String {
    DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0")
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn options(state: &Path) -> SimulatorOptions {
    let mut o = SimulatorOptions::default();
    o.state_file = Some(state.to_owned());
    o
}

/// One MBAP request; the answer's PDU.
async fn request(addr: SocketAddr, pdu: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
    let mut adu = vec![0, 1, 0, 0, len[0], len[1], 1];
    adu.extend_from_slice(pdu);
    s.write_all(&adu).await.unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await.unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
    s.read_exact(&mut body).await.unwrap();
    body
}

async fn write_u32(addr: SocketAddr, at: u16, v: u32) {
    let [a, b] = at.to_be_bytes();
    let w = v.to_be_bytes();
    let answer = request(addr, &[0x10, a, b, 0, 2, 4, w[0], w[1], w[2], w[3]]).await;
    assert_eq!(answer[0], 0x10, "write refused: {answer:?}");
}

async fn read_u32(addr: SocketAddr, at: u16) -> u32 {
    let [a, b] = at.to_be_bytes();
    let r = request(addr, &[3, a, b, 0, 2]).await;
    u32::from_be_bytes([r[2], r[3], r[4], r[5]])
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
fn written_values_survive_a_restart() {
    run(async {
        let d = dir("state_survive");
        let state = d.join("plant.state");
        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        assert!(!state.exists(), "saved before any change");
        write_u32(addr, 10, 123_456).await;
        // Saved on change, within a few periods of 250 ms, without a stop.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("[10,\"uint32\",1]")) {
            assert!(Instant::now() < deadline, "not saved after a change");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Saved at stop, right after a write.
        write_u32(addr, 10, 654_321).await;
        handle.shutdown().await;
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["plant.state".to_owned()], "a temporary file was left");

        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        assert_eq!(read_u32(handle.local_addr().unwrap(), 10).await, 654_321);
        handle.shutdown().await;
    });
}

#[test]
fn many_writes_make_few_saves() {
    run(async {
        let d = dir("state_coalesced");
        let state = d.join("s.state");
        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut saves = 0;
        let mut last = None;
        for i in 0..300u32 {
            let w = i.to_be_bytes();
            s.write_all(&[0, 1, 0, 0, 0, 11, 1, 0x10, 0, 10, 0, 2, 4, w[0], w[1], w[2], w[3]])
                .await
                .unwrap();
            let mut answer = [0u8; 12];
            s.read_exact(&mut answer).await.unwrap();
            let modified = std::fs::metadata(&state).and_then(|m| m.modified()).ok();
            if modified.is_some() && modified != last {
                saves += 1;
                last = modified;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        // At most 4 saves a second (+1 for a partly used period).
        assert!(f64::from(saves) <= secs * 4.0 + 1.0, "{saves} saves in {secs:.2} s");
        handle.shutdown().await;
        let text = std::fs::read_to_string(&state).unwrap();
        assert!(text.contains("[10,\"uint32\",0],[11,\"next\",299]"), "{text}");
    });
}

#[test]
fn a_file_of_another_configuration_is_refused() {
    let d = dir("state_mismatch");
    let state = d.join("s.state");
    run(async {
        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        write_u32(handle.local_addr().unwrap(), 10, 7).await;
        handle.shutdown().await;
    });
    let saved = std::fs::read_to_string(&state).unwrap();
    let refused = |text: &str, cfg: &str| {
        std::fs::write(&state, text).unwrap();
        let e = Simulator::from_json(cfg, options(&state)).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with(&format!("state file {}: ", state.display())), "{e}");
        e
    };
    let moved = config()
        .replace("[20, 21], \"value\": 404.17}", "[40, 41], \"value\": 404.17}")
        .replace(
            "[10, 11],\n                [20, 21]",
            "[10, 11],\n                [40, 41]",
        );
    let e = refused(&saved, &moved);
    assert!(e.contains("register 20 ("), "{e}");
    let retyped = saved.replace("[20,\"float32\"", "[20,\"uint32\"");
    let e = refused(&retyped, &config());
    assert!(
        e.contains("register 20 is uint32 in the file but float32 in the configuration"),
        "{e}"
    );
    let e = refused(&saved[..saved.len() / 2], &config());
    assert!(e.contains("not a coilwork state file") && e.contains("line 1"), "{e}");
    let e = refused(
        &saved.replace("\"device\":\"device\"", "\"device\":\"pump\""),
        &config(),
    );
    assert!(e.contains("saved for device \"pump\""), "{e}");
    // Nothing was started: a good file still works.
    std::fs::write(&state, &saved).unwrap();
    assert!(Simulator::from_json(&config(), options(&state)).is_ok());
}

/// The default configuration with servers `names` (each on a free port, the same device).
fn servers_config(names: &[&str]) -> String {
    let entries: Vec<String> = names
        .iter()
        .map(|n| {
            format!("\"{n}\": {{\"comm\": \"tcp\", \"host\": \"127.0.0.1\", \"port\": 0, \"framer\": \"socket\"}}")
        })
        .collect();
    config().replace(
        "\"server_list\": {",
        &format!("\"server_list\": {{{},", entries.join(",")),
    )
}

fn all_options(state: &Path) -> SimulatorOptions {
    let mut o = options(state);
    o.all_servers = true;
    o
}

#[test]
fn every_server_state_is_saved_and_restored() {
    let d = dir("state_servers");
    let state = d.join("plant.state");
    let three = servers_config(&["pump", "valve"]);
    run(async {
        let sim = Simulator::from_json(&three, all_options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let addrs = handle.local_addrs();
        assert_eq!(addrs.len(), 3);
        for (i, (_, addr)) in addrs.iter().enumerate() {
            write_u32(addr.unwrap(), 10, 1000 + i as u32).await;
        }
        handle.shutdown().await;
        let sim = Simulator::from_json(&three, all_options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let again = handle.local_addrs();
        for (i, (name, addr)) in again.iter().enumerate() {
            assert_eq!(addrs[i].0, *name);
            assert_eq!(read_u32(addr.unwrap(), 10).await, 1000 + i as u32, "server {name}");
        }
        handle.shutdown().await;
    });
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"server\":\"valve\""), "{text}");
    // Another set of servers: refused, naming the first mismatch.
    let refused = |cfg: &str, o: SimulatorOptions| {
        let e = Simulator::from_json(cfg, o).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let four = servers_config(&["pump", "valve", "fan"]);
    let e = refused(&four, all_options(&state));
    assert!(e.ends_with("server \"fan\" is not in the file"), "{e}");
    let mut two = options(&state);
    two.servers = vec!["pump".into(), "server".into()];
    let e = refused(&three, two);
    assert!(e.ends_with("server \"valve\" in the file is not served"), "{e}");
    let retyped = text.replacen("[20,\"float32\"", "[20,\"uint32\"", 1);
    std::fs::write(&state, retyped).unwrap();
    let e = refused(&three, all_options(&state));
    assert!(
        e.ends_with("server \"pump\": register 20 is uint32 in the file but float32 in the configuration"),
        "{e}"
    );
}

#[test]
fn a_file_of_the_first_format_is_restored() {
    let d = dir("state_format_1");
    let state = d.join("old.state");
    run(async {
        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        write_u32(handle.local_addr().unwrap(), 10, 4242).await;
        handle.shutdown().await;
    });
    let text = std::fs::read_to_string(&state).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let one = &v["servers"][0];
    let old = serde_json::json!({
        "format": "coilwork-sim-state 1", "device": one["device"], "size": one["size"], "registers": one["registers"],
    });
    std::fs::write(&state, old.to_string()).unwrap();
    run(async {
        let sim = Simulator::from_json(&config(), options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        assert_eq!(read_u32(handle.local_addr().unwrap(), 10).await, 4242);
        handle.shutdown().await;
    });
}

/// One MBAP request to `unit`; the answer's PDU.
async fn request_unit(addr: SocketAddr, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
    let mut adu = vec![0, 1, 0, 0, len[0], len[1], unit];
    adu.extend_from_slice(pdu);
    s.write_all(&adu).await.unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await.unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
    s.read_exact(&mut body).await.unwrap();
    body
}

#[test]
fn every_unit_of_device_ids_is_saved_and_restored() {
    let d = dir("state_units");
    let state = d.join("units.state");
    let cfg = config().replace(
        "\"framer\": \"socket\"",
        "\"framer\": \"socket\", \"device_ids\": [1, 2, 3]",
    );
    run(async {
        let sim = Simulator::from_json(&cfg, options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        let unit_1 = request_unit(addr, 1, &[3, 0, 10, 0, 2]).await;
        assert_ne!(unit_1, [3, 4, 0, 0, 0, 20]);
        for unit in [2u8, 3] {
            let answer = request_unit(addr, unit, &[0x10, 0, 10, 0, 2, 4, 0, 0, 0, unit * 10]).await;
            assert_eq!(answer[0], 0x10, "unit {unit}: {answer:?}");
        }
        handle.shutdown().await;
        let sim = Simulator::from_json(&cfg, options(&state)).unwrap();
        let handle = sim.start().await.unwrap();
        let addr = handle.local_addr().unwrap();
        for unit in [1u8, 2, 3] {
            let answer = request_unit(addr, unit, &[3, 0, 10, 0, 2]).await;
            let expected = if unit == 1 {
                unit_1.clone()
            } else {
                vec![3, 4, 0, 0, 0, unit * 10]
            };
            assert_eq!(answer, expected, "unit {unit}");
        }
        handle.shutdown().await;
    });
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"server\":\"server:3\""), "{text}");
}
