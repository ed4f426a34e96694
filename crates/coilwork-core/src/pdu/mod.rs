//! Protocol data units: function code + data, independent of framing.
//!
//! [`Request`] and [`Response`] borrow from the bytes they were decoded from
//! (no allocation). Decoding a request runs the spec's checks in order:
//! function code supported (else 01), quantity / value / byte count (else 03),
//! address + quantity within 65536 (else 02). Checks against what a storage
//! holds come later, in the engine.

pub mod buf;
pub mod request;
pub mod response;

pub use buf::PduBuf;
pub use request::{
    DeviceIdCode, DiagnosticRequest, FileRecordReads, FileRecordRef, FileRecordWrites, PackedBits, RegisterBytes,
    Request,
};
pub use response::{DeviceIdObjects, Response};

/// Why a PDU could not be decoded: the function code it carried and the
/// exception the spec prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("function {function:#04x}: {exception}")]
pub struct DecodeError {
    /// The function code of the request (without the exception bit).
    pub function: u8,
    /// The exception to answer with.
    pub exception: crate::ExceptionCode,
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The PDU would exceed 253 bytes.
    #[error("PDU would exceed 253 bytes")]
    TooLong,
    /// A field is out of its allowed range (e.g. a quantity of 0).
    #[error("field out of range: {0}")]
    OutOfRange(&'static str),
}
