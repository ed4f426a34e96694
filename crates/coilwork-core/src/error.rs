//! Error types of the core.

/// Why bytes on the wire did not form a usable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// MBAP protocol identifier was not 0 (fatal on a stream).
    #[error("MBAP protocol id {0} is not 0 (not Modbus)")]
    BadProtocolId(u16),
    /// MBAP length field outside 2..=254 (fatal on a stream).
    #[error("MBAP length {0} outside 2..=254")]
    BadLength(u16),
    /// RTU CRC did not match.
    #[error("RTU CRC mismatch: frame says {expected:#06x}, computed {computed:#06x}")]
    BadCrc {
        /// CRC carried by the frame.
        expected: u16,
        /// CRC computed over the frame.
        computed: u16,
    },
    /// ASCII LRC did not match.
    #[error("ASCII LRC mismatch: frame says {expected:#04x}, computed {computed:#04x}")]
    BadLrc {
        /// LRC carried by the frame.
        expected: u8,
        /// LRC computed over the frame.
        computed: u8,
    },
    /// ASCII frame held a character that is not a hex digit.
    #[error("ASCII frame holds a non-hex character")]
    BadHex,
    /// Bytes before a frame start were discarded.
    #[error("{0} byte(s) of garbage discarded")]
    Garbage(usize),
    /// A frame was cut off by line silence or was too short to be a frame.
    #[error("truncated frame ({0} bytes) discarded")]
    Truncated(usize),
    /// A frame longer than the protocol allows.
    #[error("frame too long ({0} bytes)")]
    TooLong(usize),
    /// A PDU too short to hold a function code.
    #[error("empty PDU")]
    EmptyPdu,
}

impl FrameError {
    /// True if the stream cannot be resynchronised and the adapter should drop the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::BadProtocolId(_) | Self::BadLength(_))
    }
}

/// Why a connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer sent a frame header that can never be valid.
    #[error("unrecoverable frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent more unframed bytes than the configured cap.
    #[error("receive buffer cap of {0} bytes exceeded")]
    BufferFull(usize),
}

/// A configuration that cannot work (caught when it is built, before serving).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A block would pass address 0xFFFF.
    #[error("block passes address 0xFFFF")]
    BlockTooLarge,
    /// A file would hold more than 10000 records, or has number 0.
    #[error("file {0}: number must be 1..=65535 and hold at most 10000 records")]
    BadFile(u16),
    /// An identity object id is in the wrong range for the setter used.
    #[error("identity object {0:#04x}: {1}")]
    BadIdentityObject(u8, &'static str),
    /// An identity object value does not fit a PDU.
    #[error("identity object {0:#04x} is {1} bytes; at most 244 fit a response")]
    IdentityObjectTooLong(u8, usize),
    /// A custom handler was registered for a public function code or twice.
    #[error("function code {0:#04x} is taken")]
    FunctionCodeTaken(u8),
    /// A custom handler was registered for an invalid code (0, or >= 0x80).
    #[error("function code {0:#04x} is not a valid function code")]
    BadFunctionCode(u8),
}
