//! `coilwork serve --trace LEVEL --trace-limit N` over a real loopback socket:
//! requests, answers and rejected requests are logged decoded (raw: with
//! PDU hex), and no more than N lines a second are written.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One MBAP request, its answer read back whole.
fn ask(s: &mut TcpStream, tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut adu = tid.to_be_bytes().to_vec();
    adu.extend([0, 0]);
    adu.extend(u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
    adu.push(1);
    adu.extend(pdu);
    s.write_all(&adu).unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
    s.read_exact(&mut body).unwrap();
    body
}

#[test]
fn trace_raw_logs_decoded_requests_answers_and_hex_under_a_cap() {
    let port = coilwork_test_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--address", &address, "--trace", "raw", "--trace-limit", "6"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coilwork");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains(&address), "{line}");
    let mut s = TcpStream::connect(&address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    assert_eq!(ask(&mut s, 1, &[0x55]), [0xD5, 0x01]);
    assert_eq!(
        ask(&mut s, 2, &[0x03, 0x00, 0x00, 0x00, 0x02]),
        [0x03, 0x04, 0, 0, 0, 0]
    );
    for tid in 3..20 {
        ask(&mut s, tid, &[0x03, 0x00, 0x00, 0x00, 0x01]);
    }
    std::thread::sleep(Duration::from_millis(1200));
    ask(&mut s, 30, &[0x03, 0x00, 0x05, 0x00, 0x01]);
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let traced: Vec<&str> = err.lines().filter(|l| l.contains("coilwork::trace")).collect();

    // An unknown function decodes as a custom request: answered with 01.
    assert!(
        traced[0].contains("request unit=1 Custom { function: 85") && traced[0].contains("hex=[55]"),
        "{err}"
    );
    assert!(
        traced[1].contains("answer unit=1 exception 0x01 to function 0x55"),
        "{err}"
    );
    assert!(traced[2].contains("request unit=1 ReadHoldingRegisters"), "{err}");
    assert!(
        traced[2].contains("transport=Tcp") && traced[2].contains("hex=[03 00 00 00 02]"),
        "{err}"
    );
    assert!(
        traced[3].contains("answer unit=1 function 0x03") && traced[3].contains("hex=[03 04 00 00 00 00]"),
        "{err}"
    );
    // 40 lines were due (20 requests, 20 answers): at most 6 a second were
    // written, and the rest were counted as dropped.
    let dropped: u64 = traced
        .iter()
        .filter_map(|l| l.split("dropped=").nth(1))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum();
    let written = traced.iter().filter(|l| !l.contains("dropped=")).count() as u64;
    assert!(dropped > 0 && written <= 18, "{err}");
    assert_eq!(written + dropped, 40, "{err}");
    assert!(traced.last().unwrap().contains("answer unit=1 function 0x03"), "{err}");
    assert!(traced.iter().any(|l| l.contains("hex=[03 00 05 00 01]")), "{err}");
}

#[test]
fn rust_log_naming_the_trace_target_picks_the_level() {
    let port = coilwork_test_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--address", &address])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn,coilwork::trace=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coilwork");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut s = TcpStream::connect(&address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        ask(&mut s, 1, &[0x06, 0x00, 0x07, 0x12, 0x34]),
        [0x06, 0x00, 0x07, 0x12, 0x34]
    );
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let traced: Vec<&str> = err.lines().filter(|l| l.contains("coilwork::trace")).collect();
    // debug = frame: fields and lengths, no hex.
    assert_eq!(traced.len(), 2, "{err}");
    assert!(
        traced[0].contains("WriteSingleRegister") && traced[0].contains("pdu_len=5"),
        "{err}"
    );
    assert!(!traced[0].contains("hex="), "{err}");
    assert!(traced[1].contains("function 0x06 answered"), "{err}");
}
