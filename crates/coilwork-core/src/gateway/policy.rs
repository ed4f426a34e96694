//! What the gateway lets through: read-only mode and mbaps roles.

use crate::ExceptionCode;
use crate::engine::{Authorizer, authorized};
use crate::pdu::Request;
use crate::storage::RequestContext;
use std::sync::Arc;

/// Function codes that only read (as far as data goes).
const READ_CODES: [u8; 12] = [0x01, 0x02, 0x03, 0x04, 0x07, 0x08, 0x0B, 0x0C, 0x11, 0x14, 0x18, 0x2B];

/// FC8 sub-functions that change a device's state: restart, ASCII
/// delimiter, listen-only, clear counters, clear overrun counter.
const DIAGNOSTIC_WRITES: [u16; 5] = [0x01, 0x03, 0x04, 0x0A, 0x14];

/// True if `request` changes anything upstream.
fn changes_state(request: &Request<'_>) -> bool {
    match request {
        Request::Diagnostics(d) => DIAGNOSTIC_WRITES.contains(&d.sub_function()),
        Request::Custom { .. } => true,
        r => r.is_write(),
    }
}

/// The checks a request passes before it is forwarded.
#[derive(Clone, Default)]
pub struct Policy {
    /// Writes, state-changing diagnostics (FC8 restart, listen-only, clear
    /// counters) and codes not known to be reads get exception 01.
    pub read_only: bool,
    /// Modbus/TCP Security roles: a denied access gets exception 01.
    pub authorizer: Option<Arc<dyn Authorizer>>,
}

impl core::fmt::Debug for Policy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Policy")
            .field("read_only", &self.read_only)
            .field("authorizer", &self.authorizer.is_some())
            .finish()
    }
}

impl Policy {
    /// `Err(code)`: answer the client with this exception instead of forwarding.
    pub fn check(&self, ctx: &RequestContext<'_>, pdu: &[u8]) -> Result<(), ExceptionCode> {
        if !self.read_only && self.authorizer.is_none() {
            return Ok(());
        }
        let function = pdu.first().copied().unwrap_or(0);
        let decoded = Request::decode(pdu);
        if self.read_only {
            let write = match &decoded {
                Ok(r) => changes_state(r),
                Err(_) => !READ_CODES.contains(&function),
            };
            if write {
                return Err(ExceptionCode::IllegalFunction);
            }
        }
        if let Some(auth) = &self.authorizer {
            let ctx = RequestContext { function, ..*ctx };
            // A request that does not decode cannot be checked: refused.
            let allowed = decoded.is_ok_and(|r| authorized(auth.as_ref(), &ctx, &r));
            if !allowed {
                return Err(ExceptionCode::IllegalFunction);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Access, AccessRequest};

    struct ReadersOnly;
    impl Authorizer for ReadersOnly {
        fn authorize(&self, r: &AccessRequest<'_>) -> bool {
            r.access == Access::Read || r.role == Some("writer")
        }
    }

    #[test]
    fn read_only_refuses_writes() {
        let p = Policy {
            read_only: true,
            authorizer: None,
        };
        let ctx = RequestContext::application(1);
        assert_eq!(p.check(&ctx, &[3, 0, 0, 0, 1]), Ok(()));
        assert_eq!(p.check(&ctx, &[6, 0, 0, 0, 1]), Err(ExceptionCode::IllegalFunction));
        assert_eq!(
            p.check(&ctx, &[0x10, 0, 0, 0, 1, 2, 0, 1]),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(p.check(&ctx, &[0x41, 1]), Err(ExceptionCode::IllegalFunction));
        // FC8: return query data passes; force listen-only would silence a bus device.
        assert_eq!(p.check(&ctx, &[8, 0, 0, 0x12, 0x34]), Ok(()));
        assert_eq!(p.check(&ctx, &[8, 0, 4, 0, 0]), Err(ExceptionCode::IllegalFunction));
        assert_eq!(p.check(&ctx, &[8, 0, 1, 0, 0]), Err(ExceptionCode::IllegalFunction));
        // A malformed read is still a read: the upstream answers it.
        assert_eq!(p.check(&ctx, &[3, 0]), Ok(()));
        assert_eq!(Policy::default().check(&ctx, &[6, 0, 0, 0, 1]), Ok(()));
    }

    #[test]
    fn roles_go_through_the_authorizer() {
        let p = Policy {
            read_only: false,
            authorizer: Some(Arc::new(ReadersOnly)),
        };
        let reader = RequestContext {
            tls_role: Some("reader"),
            ..RequestContext::application(1)
        };
        let writer = RequestContext {
            tls_role: Some("writer"),
            ..reader
        };
        assert_eq!(p.check(&reader, &[3, 0, 0, 0, 1]), Ok(()));
        assert_eq!(p.check(&reader, &[6, 0, 0, 0, 1]), Err(ExceptionCode::IllegalFunction));
        assert_eq!(p.check(&writer, &[6, 0, 0, 0, 1]), Ok(()));
    }
}
