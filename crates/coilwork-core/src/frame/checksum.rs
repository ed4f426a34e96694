//! CRC-16/MODBUS (RTU) and LRC (ASCII).

/// CRC-16/MODBUS over `bytes` (poly 0xA001 reflected, init 0xFFFF). On the
/// wire the low byte goes first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let _ = bytes;
    0
}

/// LRC over `bytes`: two's complement of the 8-bit sum.
pub fn lrc(bytes: &[u8]) -> u8 {
    let _ = bytes;
    0
}
