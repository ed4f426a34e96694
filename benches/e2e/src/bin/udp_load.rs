//! `coilwork-udp-load`: a Modbus/UDP load generator (the shared harness's
//! loadgen speaks TCP only).
//!
//! One thread, `--conns` non-blocking UDP sockets (each connected to the
//! server) on one mio poll, `--pipeline` requests in flight per socket.
//! Socket `i` uses registers `i*count .. i*count+count` (wrapping inside the
//! table). Before the run a setup phase writes the shared loadgen's pattern
//! (`a*0x9E37 + 0x79B9`) over every address used and reads it back. Every
//! answer is checked: transaction id, protocol id, MBAP length, unit, function
//! code, byte count or echo fields, and each register value.
//!
//! UDP may drop datagrams: a request unanswered after `--timeout` ms is sent
//! again under a new transaction id and counted in `timeouts`; an answer
//! that arrives for a request already re-sent is counted in `late` (not an
//! error, not a completed request). req/s and latency percentiles cover the
//! measured window only (requests sent and answered inside it); error
//! counters cover the whole run.
#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use coilwork_bench::{Bad, TABLE, be16, check_read, check_write, encode_read, encode_write_pattern};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// FC3: read `--count` holding registers.
    ReadHolding,
    /// FC16: write `--count` registers (the pattern again).
    WriteMultiple,
}

/// Modbus/UDP load generator with answer validation.
#[derive(Debug, Parser)]
#[command(name = "coilwork-udp-load")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:5020")]
    addr: SocketAddr,
    /// UDP sockets (the "connections").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    conns: u16,
    /// Request kind.
    #[arg(long, value_enum, default_value_t = Op::ReadHolding)]
    op: Op,
    /// Registers per request (1..=123).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=123))]
    count: u16,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Requests in flight per socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pipeline: u16,
    /// Re-send a request unanswered after this many milliseconds.
    #[arg(long, default_value_t = 200)]
    timeout: u64,
    /// Unit id.
    #[arg(long, default_value_t = 1)]
    unit: u8,
    /// Also report that process's CPU time per answered request (from /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name echoed in the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Skip writing / reading back the pattern before the run.
    #[arg(long)]
    no_setup: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// One request in flight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    tid: u16,
    sent: Instant,
}

struct Sock {
    udp: UdpSocket,
    base: u16,
    next_tid: u16,
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Stats {
    ok: u64,
    answered: u64,
    lat_ns: Vec<u64>,
    errors: [u64; 6],
    timeouts: u64,
    late: u64,
    send_failures: u64,
    first_error: Option<String>,
}

const UNKNOWN_TID: usize = 5;
const ERR_NAMES: [&str; 6] = ["header", "unit_id", "function_code", "length", "value", "unknown_tid"];

fn bad_index(b: Bad) -> usize {
    match b {
        Bad::Header => 0,
        Bad::Unit => 1,
        Bad::Function => 2,
        Bad::Length => 3,
        Bad::Value => 4,
    }
}

/// utime + stime of `pid` in seconds (USER_HZ = 100, as on every Linux build).
fn proc_cpu(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Blocking request/answer with re-sends (setup phase).
fn transact(s: &std::net::UdpSocket, req: &[u8], buf: &mut [u8]) -> Result<usize, String> {
    for _ in 0..20 {
        s.send(req).map_err(|e| format!("send: {e}"))?;
        loop {
            match s.recv(buf) {
                Ok(n) if n >= 2 && buf[..2] == req[..2] => return Ok(n),
                Ok(_) => continue, // an answer to an earlier try
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }
    Err("no answer after 20 tries".into())
}

/// Writes the pattern over `lo..hi` and reads it back.
fn setup(args: &Args, lo: u16, hi: u16) -> Result<(), String> {
    let bind: SocketAddr = if args.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| "bad bind address")?;
    let s = std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(args.addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let (mut req, mut buf, mut tid) = (Vec::new(), vec![0u8; 512], 0xC000u16);
    for (step, write) in [(123u16, true), (125u16, false)] {
        let mut a = lo;
        while a < hi {
            let q = step.min(hi - a);
            tid = tid.wrapping_add(1);
            req.clear();
            if write {
                encode_write_pattern(&mut req, tid, args.unit, a, q);
            } else {
                encode_read(&mut req, tid, args.unit, a, q);
            }
            let n = transact(&s, &req, &mut buf)?;
            let f = &buf[..n];
            let r = if write {
                check_write(f, args.unit, a, q)
            } else {
                check_read(f, args.unit, a, q)
            };
            r.map_err(|e| {
                format!(
                    "setup {} at {a}+{q}: {e:?}: {:02x?}",
                    if write { "FC16" } else { "FC3" },
                    f
                )
            })?;
            a += q;
        }
    }
    Ok(())
}

fn encode(args: &Args, out: &mut Vec<u8>, tid: u16, base: u16) {
    out.clear();
    match args.op {
        Op::ReadHolding => encode_read(out, tid, args.unit, base, args.count),
        Op::WriteMultiple => encode_write_pattern(out, tid, args.unit, base, args.count),
    }
}

/// Sends a new request in `slot` of `sock`.
fn send_new(args: &Args, sock: &mut Sock, slot: usize, req: &mut Vec<u8>, st: &mut Stats) {
    let tid = sock.next_tid;
    sock.next_tid = tid.wrapping_add(1);
    encode(args, req, tid, sock.base);
    let now = Instant::now();
    if let Some(s) = sock.slots.get_mut(slot) {
        *s = Slot { tid, sent: now };
    }
    match sock.udp.send(req) {
        Ok(_) => {}
        // Counted; the request times out and is sent again.
        Err(_) => st.send_failures += 1,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn run(args: &Args) -> Result<String, String> {
    let span = (TABLE as u32 - args.count as u32 + 1) as u64;
    let bases: Vec<u16> = (0..args.conns as u64)
        .map(|i| ((i * args.count as u64) % span) as u16)
        .collect();
    if !args.no_setup {
        let lo = bases.iter().copied().min().unwrap_or(0);
        let hi = bases.iter().map(|&b| b + args.count).max().unwrap_or(0);
        setup(args, lo, hi)?;
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if args.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| "bad bind address")?;
    let mut socks = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let mut udp = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        udp.connect(args.addr).map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut udp, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        socks.push(Sock {
            udp,
            base,
            next_tid: (i as u16).wrapping_mul(4099),
            slots: vec![Slot { tid: 0, sent: now }; args.pipeline as usize],
        });
    }
    let timeout = Duration::from_millis(args.timeout.max(1));
    let mut st = Stats {
        lat_ns: Vec::with_capacity(1 << 20),
        ..Stats::default()
    };
    let mut req = Vec::with_capacity(512);
    let mut buf = vec![0u8; 1024];
    let mut events = Events::with_capacity(1024);
    let pid = args.server_pid.map(|p| p.to_string());
    let t0 = Instant::now();
    let t_warm = t0 + Duration::from_secs_f64(args.warmup.max(0.0));
    let t_end = t_warm + Duration::from_secs_f64(args.duration.max(0.01));
    for sock in socks.iter_mut() {
        for slot in 0..sock.slots.len() {
            send_new(args, sock, slot, &mut req, &mut st);
        }
    }
    let (mut cpu0, mut self0, mut warm_seen) = (None, None, false);
    let mut last_scan = t0;
    loop {
        let now = Instant::now();
        if !warm_seen && now >= t_warm {
            warm_seen = true;
            cpu0 = pid.as_deref().and_then(proc_cpu);
            self0 = proc_cpu("self");
        }
        if now >= t_end {
            break;
        }
        let wait = (t_end - now).min(Duration::from_millis(5));
        let wait = if warm_seen { wait } else { wait.min(t_warm - now) };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        for ev in events.iter() {
            let Some(sock) = socks.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                let n = match sock.udp.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        return Err("server not answering (ICMP port unreachable)".into());
                    }
                    Err(e) => return Err(format!("recv: {e}")),
                };
                let at = Instant::now();
                let f = &buf[..n];
                let tid = be16(f, 0);
                let Some(slot) = sock.slots.iter().position(|s| s.tid == tid) else {
                    // Issued earlier (re-sent since) or never issued.
                    let age = sock.next_tid.wrapping_sub(tid);
                    if (1..=32768).contains(&age) {
                        st.late += 1;
                    } else {
                        st.errors[UNKNOWN_TID] += 1;
                        st.first_error
                            .get_or_insert_with(|| format!("unknown tid {tid}: {:02x?}", f));
                    }
                    continue;
                };
                let sent = sock.slots[slot].sent;
                let check = match args.op {
                    Op::ReadHolding => check_read(f, args.unit, sock.base, args.count),
                    Op::WriteMultiple => check_write(f, args.unit, sock.base, args.count),
                };
                st.answered += 1;
                match check {
                    Ok(()) => {
                        if sent >= t_warm && at <= t_end {
                            st.ok += 1;
                            st.lat_ns.push(at.duration_since(sent).as_nanos() as u64);
                        }
                    }
                    Err(b) => {
                        st.errors[bad_index(b)] += 1;
                        st.first_error
                            .get_or_insert_with(|| format!("{}: {:02x?}", b.name(), f));
                    }
                }
                send_new(args, sock, slot, &mut req, &mut st);
            }
        }
        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(1) {
            last_scan = now;
            for sock in socks.iter_mut() {
                for slot in 0..sock.slots.len() {
                    if now.duration_since(sock.slots[slot].sent) >= timeout {
                        st.timeouts += 1;
                        send_new(args, sock, slot, &mut req, &mut st);
                    }
                }
            }
        }
    }
    let cpu1 = pid.as_deref().and_then(proc_cpu);
    let self1 = proc_cpu("self");
    let window = t_end.duration_since(t_warm).as_secs_f64();
    let rps = st.ok as f64 / window;
    let per_req = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if st.ok > 0 => Some(1e6 * (b - a) / st.ok as f64),
        _ => None,
    };
    let srv_us = per_req(cpu0, cpu1);
    let srv_pct = cpu0.zip(cpu1).map(|(a, b)| 100.0 * (b - a) / window);
    let cli_us = per_req(self0, self1);
    let mut lat = std::mem::take(&mut st.lat_ns);
    lat.sort_unstable();
    let errors: u64 = st.errors.iter().sum();
    let by: serde_json::Map<String, serde_json::Value> = ERR_NAMES
        .iter()
        .zip(st.errors)
        .map(|(n, c)| ((*n).to_owned(), c.into()))
        .collect();
    let out = serde_json::json!({
        "label": args.label,
        "transport": "udp",
        "addr": args.addr.to_string(),
        "op": match args.op { Op::ReadHolding => "read-holding", Op::WriteMultiple => "write-multiple" },
        "count": args.count,
        "conns": args.conns,
        "pipeline": args.pipeline,
        "duration_s": window,
        "warmup_s": args.warmup,
        "ok": st.ok,
        "answered": st.answered,
        "rps": (rps * 10.0).round() / 10.0,
        "lat_us": {
            "p50": pct(&lat, 50.0), "p90": pct(&lat, 90.0), "p99": pct(&lat, 99.0),
            "p999": pct(&lat, 99.9), "max": lat.last().map_or(0.0, |&x| x as f64 / 1000.0),
        },
        "errors": errors,
        "errors_by_kind": by,
        "timeouts": st.timeouts,
        "late": st.late,
        "send_failures": st.send_failures,
        "server_cpu_pct": srv_pct.map(|v| (v * 10.0).round() / 10.0),
        "server_cpu_us_per_req": srv_us.map(|v| (v * 100.0).round() / 100.0),
        "client_cpu_us_per_req": cli_us.map(|v| (v * 100.0).round() / 100.0),
        "loadavg_1m": loadavg(),
        "first_error": st.first_error.unwrap_or_default(),
    });
    if args.json {
        Ok(out.to_string())
    } else {
        Ok(format!(
            "{} udp op={:?} count={} sockets={} pipeline={}: {rps:.0} req/s, p50 {:.1} us, p99 {:.1} us, \
             errors {errors}, timeouts {}, late {}, server {} us/req",
            if args.label.is_empty() { "udp-load" } else { &args.label },
            args.op,
            args.count,
            args.conns,
            args.pipeline,
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            st.timeouts,
            st.late,
            srv_us.map_or("-".to_owned(), |v| format!("{v:.2}")),
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coilwork-udp-load: {e}");
            ExitCode::from(2)
        }
    }
}
