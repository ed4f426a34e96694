//! CRC-16/MODBUS (RTU) and LRC (ASCII).

/// CRC-16/MODBUS initial value.
const CRC_INIT: u16 = 0xFFFF;

/// Reflected polynomial of CRC-16/MODBUS (0x8005 bit-reversed).
const CRC_POLY: u16 = 0xA001;

/// One table entry per byte value: the CRC register after shifting that
/// byte's 8 bits through the polynomial.
const CRC_TABLE: [u16; 256] = build_crc_table();

/// Builds [`CRC_TABLE`] at compile time.
const fn build_crc_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16; // ok: i < 256
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ CRC_POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc; // ok: i < 256 = table length
        i += 1;
    }
    table
}

/// Feeds one more byte into a running CRC-16/MODBUS register.
#[inline]
pub(crate) fn crc16_update(crc: u16, byte: u8) -> u16 {
    let [low, _] = crc.to_le_bytes();
    // ok: a u8 index is always < 256, the table length.
    (crc >> 8) ^ CRC_TABLE[usize::from(low ^ byte)]
}

/// Feeds `bytes` into a running CRC-16/MODBUS register.
#[inline]
pub(crate) fn crc16_continue(crc: u16, bytes: &[u8]) -> u16 {
    bytes.iter().fold(crc, |crc, &b| crc16_update(crc, b))
}

/// CRC-16/MODBUS over `bytes` (poly 0xA001 reflected, init 0xFFFF). On the
/// wire the low byte goes first.
pub fn crc16(bytes: &[u8]) -> u16 {
    crc16_continue(CRC_INIT, bytes)
}

/// LRC over `bytes`: two's complement of the 8-bit sum.
pub fn lrc(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-by-bit reference implementation, to check the table.
    fn crc16_bitwise(bytes: &[u8]) -> u16 {
        let mut crc = 0xFFFFu16;
        for &b in bytes {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            }
        }
        crc
    }

    #[test]
    fn crc16_check_value() {
        // The catalogue check value of CRC-16/MODBUS.
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn crc16_empty_is_init() {
        assert_eq!(crc16(&[]), 0xFFFF);
    }

    #[test]
    fn crc16_rtu_read_holding_frame() {
        // 01 03 00 00 00 0A goes on the wire followed by C5 CD.
        let crc = crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
        assert_eq!(crc.to_le_bytes(), [0xC5, 0xCD]);
    }

    #[test]
    fn crc16_modicon_example() {
        // Modicon guide: slave 17 reads 3 registers from 40108: 11 03 00 6B 00 03 76 87.
        let crc = crc16(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(crc.to_le_bytes(), [0x76, 0x87]);
    }

    #[test]
    fn crc16_over_frame_with_crc_is_zero() {
        // Appending the CRC low byte first makes the CRC of the whole frame 0.
        assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]), 0);
    }

    #[test]
    fn crc_table_known_entries() {
        assert_eq!(CRC_TABLE[0], 0x0000);
        assert_eq!(CRC_TABLE[1], 0xC0C1);
        assert_eq!(CRC_TABLE[0x80], 0xA001);
        assert_eq!(CRC_TABLE[0xFF], 0x4040);
    }

    #[test]
    fn lrc_spec_examples() {
        // Modicon guide ASCII example ":1103006B00037E".
        assert_eq!(lrc(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x7E);
        // ":010300000001FB" (read one holding register of unit 1).
        assert_eq!(lrc(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), 0xFB);
    }

    #[test]
    fn lrc_edge_cases() {
        assert_eq!(lrc(&[]), 0);
        assert_eq!(lrc(&[0x00]), 0);
        assert_eq!(lrc(&[0x01]), 0xFF);
        // The sum wraps: 0xFF + 0x02 = 0x01 -> 0xFF.
        assert_eq!(lrc(&[0xFF, 0x02]), 0xFF);
        assert_eq!(lrc(&[0x80, 0x80]), 0x00);
    }

    proptest! {
        #[test]
        fn crc16_table_matches_bitwise(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(crc16(&bytes), crc16_bitwise(&bytes));
        }

        #[test]
        fn crc16_continue_splits(bytes in proptest::collection::vec(any::<u8>(), 0..300), at in any::<prop::sample::Index>()) {
            let at = at.index(bytes.len() + 1);
            let (a, b) = bytes.split_at(at);
            prop_assert_eq!(crc16_continue(crc16(a), b), crc16(&bytes));
        }

        #[test]
        fn lrc_plus_sum_is_zero(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let sum = bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b));
            prop_assert_eq!(sum.wrapping_add(lrc(&bytes)), 0);
        }
    }
}
