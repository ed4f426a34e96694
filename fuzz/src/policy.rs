//! Harness for the Modbus/TCP Security targets: role policy and certificate role.

use coilwork_core::AddressRange;
use coilwork_core::Table;
use coilwork_core::engine::{Access, AccessRequest, Authorizer};
use coilwork_core::role_policy::RolePolicy;
use coilwork_core::security::{role_from_certificate, role_from_extension_value};

/// Parses the input as a policy; a refusal names a line within the text, and
/// a parsed policy decides requests built from the input's bytes.
pub fn fuzz_role_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match RolePolicy::parse("fuzz.toml", text) {
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.reason.is_empty());
        }
        Ok(policy) => {
            let tables = [
                Table::Coils,
                Table::DiscreteInputs,
                Table::HoldingRegisters,
                Table::InputRegisters,
            ];
            for chunk in data.chunks(6) {
                let b = |i: usize| chunk.get(i).copied().unwrap_or(0);
                let start = u16::from_be_bytes([b(2), b(3)]);
                let count = u16::from(b(4)).max(1);
                let data = AddressRange::new(start, count).map(|r| (tables[usize::from(b(5) & 3)], r));
                let role = match b(0) % 3 {
                    0 => None,
                    1 => Some("operator"),
                    _ => Some("a"),
                };
                let request = AccessRequest {
                    role,
                    unit: b(1),
                    function: b(5) >> 2,
                    access: if b(0) & 0x80 != 0 { Access::Write } else { Access::Read },
                    data: if b(0) & 0x40 != 0 { None } else { data },
                };
                let allowed = policy.authorize(&request);
                // Deny by default: no entry, no right.
                if policy.rights(role).is_none() {
                    assert!(!allowed);
                }
            }
        }
    }
}

/// Reads a role from the input as a whole DER certificate and as an
/// extension value; an extension value's role is its exact content.
pub fn fuzz_cert_role(data: &[u8]) {
    let _ = role_from_certificate(data);
    if let Ok(role) = role_from_extension_value(data) {
        assert!(data.len() >= role.len() + 2);
        assert!(data.ends_with(role.as_bytes()));
    }
}
