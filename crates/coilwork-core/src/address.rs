//! Validated address ranges: a start and a count that cannot overflow 65536.

/// A non-empty range of protocol addresses with `start + count <= 65536`.
///
/// The invariant is checked once, at construction, so code holding an
/// `AddressRange` can compute `start + count` without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange {
    start: u16,
    count: u16,
}

impl AddressRange {
    /// Builds a range; `None` if `count` is 0 or the range passes 0xFFFF.
    pub const fn new(start: u16, count: u16) -> Option<Self> {
        if count == 0 || start as u32 + count as u32 > 0x1_0000 {
            None
        } else {
            Some(Self { start, count })
        }
    }

    /// First address.
    pub const fn start(self) -> u16 {
        self.start
    }

    /// Number of addresses (at least 1).
    pub const fn count(self) -> u16 {
        self.count
    }

    /// Number of addresses as a `usize`, for slicing.
    pub const fn len(self) -> usize {
        self.count as usize
    }

    /// Always false: a range holds at least one address.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// One past the last address (at most 65536).
    pub const fn end(self) -> u32 {
        self.start as u32 + self.count as u32
    }

    /// Last address in the range.
    pub const fn last(self) -> u16 {
        // start + count - 1 <= 0xFFFF by the invariant.
        (self.start as u32 + self.count as u32 - 1) as u16
    }

    /// True if `address` lies in the range.
    pub const fn contains(self, address: u16) -> bool {
        address >= self.start && (address as u32) < self.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(AddressRange::new(0, 0).is_none());
        assert!(AddressRange::new(0xFFFF, 2).is_none());
        let r = AddressRange::new(0xFFFF, 1).unwrap();
        assert_eq!(r.end(), 0x1_0000);
        assert_eq!(r.last(), 0xFFFF);
        let r = AddressRange::new(0, 0xFFFF).unwrap();
        assert!(r.contains(0xFFFE));
        assert!(!r.contains(0xFFFF));
    }
}
