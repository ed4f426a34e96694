//! Modbus exception codes (Modbus Application Protocol v1.1b3, section 7).

/// An exception code carried in an exception response (function code | 0x80).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum ExceptionCode {
    /// 0x01: the function code is not supported.
    #[error("illegal function (0x01)")]
    IllegalFunction = 0x01,
    /// 0x02: the data address is not allowed.
    #[error("illegal data address (0x02)")]
    IllegalDataAddress = 0x02,
    /// 0x03: a value in the request is not allowed.
    #[error("illegal data value (0x03)")]
    IllegalDataValue = 0x03,
    /// 0x04: an unrecoverable error occurred while executing the request.
    #[error("server device failure (0x04)")]
    ServerDeviceFailure = 0x04,
    /// 0x05: accepted, will take long to process.
    #[error("acknowledge (0x05)")]
    Acknowledge = 0x05,
    /// 0x06: the server is busy with a long-duration command.
    #[error("server device busy (0x06)")]
    ServerDeviceBusy = 0x06,
    /// 0x07: negative acknowledge (programming functions).
    #[error("negative acknowledge (0x07)")]
    NegativeAcknowledge = 0x07,
    /// 0x08: memory parity error (file record access).
    #[error("memory parity error (0x08)")]
    MemoryParityError = 0x08,
    /// 0x0A: gateway path unavailable.
    #[error("gateway path unavailable (0x0A)")]
    GatewayPathUnavailable = 0x0A,
    /// 0x0B: gateway target device failed to respond.
    #[error("gateway target device failed to respond (0x0B)")]
    GatewayTargetFailedToRespond = 0x0B,
}

impl ExceptionCode {
    /// The code as it travels on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Parses a wire code; `None` for a value the spec does not define.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::IllegalFunction,
            0x02 => Self::IllegalDataAddress,
            0x03 => Self::IllegalDataValue,
            0x04 => Self::ServerDeviceFailure,
            0x05 => Self::Acknowledge,
            0x06 => Self::ServerDeviceBusy,
            0x07 => Self::NegativeAcknowledge,
            0x08 => Self::MemoryParityError,
            0x0A => Self::GatewayPathUnavailable,
            0x0B => Self::GatewayTargetFailedToRespond,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            if let Some(e) = ExceptionCode::from_code(c) {
                assert_eq!(e.code(), c);
            }
        }
        assert_eq!(ExceptionCode::from_code(9), None);
    }
}
