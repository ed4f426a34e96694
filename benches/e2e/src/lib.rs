//! Shared pieces of the end-to-end benchmark tools (`benches/e2e.sh`,
//! `benches/udp.sh`): the served data set, the register pattern of the shared
//! load generator, and MBAP request encoding / answer checking for the UDP
//! load generator.
#![forbid(unsafe_code)]

use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, Identity};

/// Entries per table (coils, discrete inputs, holding and input registers).
pub const TABLE: usize = 10_000;

/// The engine `coilwork serve` builds with its defaults: one device for every
/// unit id with [`TABLE`] entries per table.
pub fn server_engine() -> Result<Engine, coilwork_core::ConfigError> {
    let device = DeviceContext::with_sizes(TABLE, TABLE, TABLE, TABLE)?;
    let identity = Identity::new()
        .vendor_name("coilwork")
        .major_minor_revision(env!("CARGO_PKG_VERSION"));
    Ok(Engine::builder(ServerContext::single(device))
        .identity(identity)
        .build())
}

/// Value the shared load generator's setup phase writes in holding register `addr`.
#[inline]
pub fn reg_pattern(addr: u16) -> u16 {
    addr.wrapping_mul(0x9E37).wrapping_add(0x79B9)
}

/// Big-endian u16 at `i` (0 when out of range).
#[inline]
pub fn be16(b: &[u8], i: usize) -> u16 {
    match (b.get(i), b.get(i + 1)) {
        (Some(&h), Some(&l)) => u16::from_be_bytes([h, l]),
        _ => 0,
    }
}

/// Appends an FC3 request (read `qty` holding registers at `addr`).
pub fn encode_read(out: &mut Vec<u8>, tid: u16, unit: u8, addr: u16, qty: u16) {
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 6, unit, 3]);
    out.extend_from_slice(&addr.to_be_bytes());
    out.extend_from_slice(&qty.to_be_bytes());
}

/// Appends an FC16 request writing the pattern to `qty` registers at `addr` (`qty` ≤ 123).
pub fn encode_write_pattern(out: &mut Vec<u8>, tid: u16, unit: u8, addr: u16, qty: u16) {
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(7 + 2 * qty).to_be_bytes());
    out.extend_from_slice(&[unit, 16]);
    out.extend_from_slice(&addr.to_be_bytes());
    out.extend_from_slice(&qty.to_be_bytes());
    out.push((2 * qty) as u8);
    for a in addr..addr.wrapping_add(qty) {
        out.extend_from_slice(&reg_pattern(a).to_be_bytes());
    }
}

/// Why an answer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Protocol id not 0, or MBAP length not the datagram's length.
    Header,
    /// Unit id differs from the request's.
    Unit,
    /// Function code differs (or an exception answer).
    Function,
    /// Byte count / echo fields wrong.
    Length,
    /// Register values differ from the pattern.
    Value,
}

impl Bad {
    /// Name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Bad::Header => "header",
            Bad::Unit => "unit_id",
            Bad::Function => "function_code",
            Bad::Length => "length",
            Bad::Value => "value",
        }
    }
}

fn check_header(f: &[u8], unit: u8, fc: u8) -> Result<(), Bad> {
    if f.len() < 8 || be16(f, 2) != 0 || be16(f, 4) as usize != f.len() - 6 {
        return Err(Bad::Header);
    }
    if f[6] != unit {
        return Err(Bad::Unit);
    }
    if f[7] != fc {
        return Err(Bad::Function);
    }
    Ok(())
}

/// Checks a whole FC3 answer (after its transaction id matched): header,
/// byte count, and every register against [`reg_pattern`].
pub fn check_read(f: &[u8], unit: u8, addr: u16, qty: u16) -> Result<(), Bad> {
    check_header(f, unit, 3)?;
    let bc = 2 * qty as usize;
    if f.len() != 9 + bc || f[8] as usize != bc {
        return Err(Bad::Length);
    }
    for j in 0..qty {
        if be16(f, 9 + 2 * j as usize) != reg_pattern(addr.wrapping_add(j)) {
            return Err(Bad::Value);
        }
    }
    Ok(())
}

/// Checks an FC16 echo.
pub fn check_write(f: &[u8], unit: u8, addr: u16, qty: u16) -> Result<(), Bad> {
    check_header(f, unit, 16)?;
    if f.len() != 12 || be16(f, 8) != addr || be16(f, 10) != qty {
        return Err(Bad::Length);
    }
    Ok(())
}

/// Value the shared load generator's setup phase writes in coil `addr`.
#[inline]
pub fn coil_pattern(addr: u16) -> bool {
    addr.is_multiple_of(3) != addr.is_multiple_of(7)
}

/// Answers every complete MBAP frame at the front of a TCP stream's buffered
/// bytes with [`ceiling_answer`] (the TCP ceilings' framing, no Modbus work).
/// Returns the bytes used, or `None` when a length field is out of 2..=254
/// (the stream lost framing: close it).
pub fn ceiling_stream(inp: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut used = 0;
    while let Some(rest) = inp.get(used..).filter(|r| r.len() >= 7) {
        let len = be16(rest, 4) as usize;
        if !(2..=254).contains(&len) {
            return None;
        }
        let Some(frame) = rest.get(..6 + len) else { break };
        ceiling_answer(frame, out);
        used += frame.len();
    }
    Some(used)
}

/// The ceilings' answer to one MBAP frame, from the canned pattern with no
/// Modbus work: FC3 registers, FC1 coils, FC16/FC15 echo, exception 01 for
/// anything else. Returns false (no answer) for bytes that are not one MBAP frame.
pub fn ceiling_answer(f: &[u8], out: &mut Vec<u8>) -> bool {
    if f.len() < 8 || be16(f, 4) as usize != f.len() - 6 {
        return false;
    }
    let (head, unit, fc) = (&f[..4], f[6], f[7]);
    match fc {
        3 if f.len() == 12 && (1..=125).contains(&be16(f, 10)) => {
            let (addr, qty) = (be16(f, 8), be16(f, 10));
            out.extend_from_slice(head);
            out.extend_from_slice(&(3 + 2 * qty).to_be_bytes());
            out.extend_from_slice(&[unit, 3, (2 * qty) as u8]);
            for a in 0..qty {
                out.extend_from_slice(&reg_pattern(addr.wrapping_add(a)).to_be_bytes());
            }
        }
        1 if f.len() == 12 && (1..=2000).contains(&be16(f, 10)) => {
            let (addr, qty) = (be16(f, 8), be16(f, 10));
            let bytes = qty.div_ceil(8);
            out.extend_from_slice(head);
            out.extend_from_slice(&(3 + bytes).to_be_bytes());
            out.extend_from_slice(&[unit, 1, bytes as u8]);
            let start = out.len();
            out.resize(start + usize::from(bytes), 0);
            for j in 0..qty {
                if coil_pattern(addr.wrapping_add(j)) {
                    out[start + usize::from(j / 8)] |= 1 << (j % 8);
                }
            }
        }
        15 | 16 if f.len() >= 12 => {
            out.extend_from_slice(head);
            out.extend_from_slice(&[0, 6]);
            out.extend_from_slice(&f[6..12]);
        }
        _ => {
            out.extend_from_slice(head);
            out.extend_from_slice(&[0, 3, unit, fc | 0x80, 1]);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_answers_pass_the_checks() {
        let mut req = Vec::new();
        encode_read(&mut req, 7, 1, 100, 10);
        let mut out = Vec::new();
        assert!(ceiling_answer(&req, &mut out));
        assert_eq!(&out[..9], &[0, 7, 0, 0, 0, 23, 1, 3, 20]);
        assert_eq!(check_read(&out, 1, 100, 10), Ok(()));
        assert_eq!(check_read(&out, 1, 101, 10), Err(Bad::Value));
        assert_eq!(check_read(&out, 2, 100, 10), Err(Bad::Unit));
        req.clear();
        out.clear();
        encode_write_pattern(&mut req, 8, 1, 5, 3);
        assert_eq!(req.len(), 13 + 6);
        assert!(ceiling_answer(&req, &mut out));
        assert_eq!(out, [0, 8, 0, 0, 0, 6, 1, 16, 0, 5, 0, 3]);
        assert_eq!(check_write(&out, 1, 5, 3), Ok(()));
        assert_eq!(check_write(&out, 1, 5, 4), Err(Bad::Length));
    }

    #[test]
    fn the_stream_framer_answers_whole_frames_and_keeps_the_rest() {
        let mut req = Vec::new();
        encode_read(&mut req, 1, 1, 0, 2);
        encode_write_pattern(&mut req, 2, 1, 9, 1);
        encode_read(&mut req, 3, 1, 4, 1);
        let cut = req.len() - 3;
        let mut out = Vec::new();
        assert_eq!(ceiling_stream(&req[..cut], &mut out), Some(12 + 15));
        assert_eq!(out.len(), 13 + 12);
        assert_eq!(check_read(&out[..13], 1, 0, 2), Ok(()));
        assert_eq!(check_write(&out[13..], 1, 9, 1), Ok(()));
        out.clear();
        assert_eq!(ceiling_stream(&req[27..], &mut out), Some(12));
        assert_eq!(check_read(&out, 1, 4, 1), Ok(()));
        assert_eq!(ceiling_stream(&[0, 1, 0, 0, 0, 255, 1, 3], &mut out), None);
        assert_eq!(ceiling_stream(&[0, 1, 0, 0, 0, 1, 1], &mut out), None);
    }

    #[test]
    fn coils_follow_the_load_generators_pattern() {
        let req = [0, 9, 0, 0, 0, 6, 1, 1, 0, 0, 0, 10];
        let mut out = Vec::new();
        assert!(ceiling_answer(&req, &mut out));
        // Of coils 0..10, 3, 6, 7 and 9 are set (0 is a multiple of both 3 and 7).
        assert_eq!(out, [0, 9, 0, 0, 0, 5, 1, 1, 2, 0b1100_1000, 0b0000_0010]);
    }
}
