//! A tiny hand-written Modbus client on `std::net`, with timeouts on every
//! read and write so no case can hang, and PDU / frame builders written out
//! here so the cases do not trust the codecs under test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Every single step (connect, one answer) is bounded by this.
pub const STEP: Duration = Duration::from_secs(5);

/// An MBAP ADU: header (protocol id 0) + PDU.
pub fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    adu_with_protocol(tid, 0, unit, pdu)
}

/// An MBAP ADU with any protocol id.
pub fn adu_with_protocol(tid: u16, protocol: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let len = u16::try_from(pdu.len() + 1).expect("short pdu");
    let mut v = Vec::with_capacity(7 + pdu.len());
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&protocol.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// CRC-16/MODBUS, low byte first as sent.
pub fn crc(bytes: &[u8]) -> [u8; 2] {
    let mut c: u16 = 0xFFFF;
    for b in bytes {
        c ^= u16::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xA001 } else { c >> 1 };
        }
    }
    c.to_le_bytes()
}

/// An RTU ADU: unit + PDU + CRC.
pub fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = vec![unit];
    v.extend_from_slice(pdu);
    let c = crc(&v);
    v.extend_from_slice(&c);
    v
}

/// An ASCII ADU: ':' + hex(unit + PDU + LRC) + CR LF.
pub fn ascii(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut body = vec![unit];
    body.extend_from_slice(pdu);
    let lrc = body.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg();
    body.push(lrc);
    let mut v = vec![b':'];
    for b in body {
        v.extend_from_slice(format!("{b:02X}").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

/// A request PDU: function code, then big-endian u16s.
pub fn pdu(function: u8, words: &[u16]) -> Vec<u8> {
    let mut v = vec![function];
    for w in words {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v
}

/// FC3 request PDU.
pub fn fc3(addr: u16, qty: u16) -> Vec<u8> {
    pdu(0x03, &[addr, qty])
}

/// FC16 request PDU.
pub fn fc16(addr: u16, values: &[u16]) -> Vec<u8> {
    let n = u16::try_from(values.len()).expect("few values");
    let mut v = pdu(0x10, &[addr, n]);
    v.push(u8::try_from(values.len() * 2).expect("few values"));
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// FC1 request PDU.
pub fn fc1(addr: u16, qty: u16) -> Vec<u8> {
    pdu(0x01, &[addr, qty])
}

/// FC15 request PDU (bits packed LSB first).
pub fn fc15(addr: u16, bits: &[bool]) -> Vec<u8> {
    let packed = pack(bits);
    let mut v = pdu(0x0F, &[addr, u16::try_from(bits.len()).expect("few bits")]);
    v.push(u8::try_from(packed.len()).expect("few bits"));
    v.extend_from_slice(&packed);
    v
}

/// Packs bits LSB first, as Modbus does.
pub fn pack(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Expected FC3 (or FC4 with `function` 4, FC23 with 0x17) answer PDU.
pub fn registers_answer(function: u8, values: &[u16]) -> Vec<u8> {
    let mut v = vec![function, u8::try_from(values.len() * 2).expect("few values")];
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// Expected FC3 answer PDU.
pub fn fc3_answer(values: &[u16]) -> Vec<u8> {
    registers_answer(0x03, values)
}

/// One MBAP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Transaction id.
    pub tid: u16,
    /// Unit id.
    pub unit: u8,
    /// PDU.
    pub pdu: Vec<u8>,
}

impl Answer {
    /// Checks an MBAP answer header (protocol id 0, a length field of 2 to
    /// 254) and returns the length of the PDU that follows it.
    pub fn pdu_len(head: &[u8; 7]) -> usize {
        assert_eq!(&head[2..4], &[0, 0], "protocol id of the answer");
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        assert!((2..=254).contains(&len), "answer length {len}");
        len - 1
    }

    /// The answer whose header is `head` (checked by [`Answer::pdu_len`]) and whose PDU is `pdu`.
    pub fn new(head: &[u8; 7], pdu: Vec<u8>) -> Self {
        Self {
            tid: u16::from_be_bytes([head[0], head[1]]),
            unit: head[6],
            pdu,
        }
    }
}

/// A blocking Modbus/TCP client with timeouts.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects (bounded by [`STEP`]); Nagle off, so each write is its own segment.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, STEP).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(STEP)).expect("read timeout");
        stream.set_write_timeout(Some(STEP)).expect("write timeout");
        Self { stream }
    }

    /// Wraps a connected stream (read timeout [`STEP`]).
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(STEP)).expect("read timeout");
        Self { stream }
    }

    /// Writes all of `bytes` in one call.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads exactly `n` bytes (bounded by [`STEP`]).
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.stream
            .read_exact(&mut v)
            .unwrap_or_else(|e| panic!("reading {n} answer bytes: {e}"));
        v
    }

    /// Reads one MBAP answer (bounded by [`STEP`]).
    pub fn read_answer(&mut self) -> Answer {
        let mut head = [0u8; 7];
        head.copy_from_slice(&self.read_n(7));
        let pdu = self.read_n(Answer::pdu_len(&head));
        Answer::new(&head, pdu)
    }

    /// Sends one request and reads its answer; checks the transaction id and unit echo.
    pub fn call(&mut self, tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        self.send(&adu(tid, unit, pdu));
        let a = self.read_answer();
        assert_eq!(a.tid, tid, "transaction id echoed");
        assert_eq!(a.unit, unit, "unit echoed");
        a.pdu
    }

    /// Writes all of `bytes`, returning an error instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Shuts the write side (sends FIN); reads still work.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).expect("shutdown write");
    }

    /// True if the server closes the stream (EOF or reset) within `d`;
    /// false if data arrives or nothing happens.
    pub fn closed_by_server(&mut self, d: Duration) -> bool {
        self.stream.set_read_timeout(Some(d)).expect("read timeout");
        let mut b = [0u8; 16];
        let r = match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        self.stream.set_read_timeout(Some(STEP)).expect("read timeout");
        r
    }

    /// True if nothing arrives (and the stream stays open) for `d`.
    pub fn silent_for(&mut self, d: Duration) -> bool {
        self.stream.set_read_timeout(Some(d)).expect("read timeout");
        let mut b = [0u8; 16];
        let r = matches!(self.stream.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        self.stream.set_read_timeout(Some(STEP)).expect("read timeout");
        r
    }
}

/// A blocking Modbus/UDP client with timeouts.
#[derive(Debug)]
pub struct UdpClient {
    socket: UdpSocket,
}

impl UdpClient {
    /// A socket on loopback connected to `server`.
    pub fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
        socket.connect(server).expect("connect udp");
        socket.set_read_timeout(Some(STEP)).expect("read timeout");
        Self { socket }
    }

    /// Sends one datagram.
    pub fn send(&self, bytes: &[u8]) {
        self.socket.send(bytes).expect("send datagram");
    }

    /// Receives one datagram within `d`, if any.
    pub fn recv_within(&self, d: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(d)).expect("read timeout");
        let mut b = [0u8; 512];
        let r = match self.socket.recv(&mut b) {
            Ok(n) => Some(b[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv: {e}"),
        };
        self.socket.set_read_timeout(Some(STEP)).expect("read timeout");
        r
    }

    /// Sends a request and returns the whole answer datagram (bounded by [`STEP`]).
    pub fn call(&self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.recv_within(STEP).expect("udp answer in time")
    }
}

/// Polls `cond` every 5 ms for up to `d`; true once it holds.
pub fn eventually(d: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
