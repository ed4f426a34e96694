//! Modbus/TCP Security (mbaps): the role carried by a client certificate.
//!
//! The Modbus/TCP Security spec puts the client's role in an X.509v3
//! extension with OID 1.3.6.1.4.1.50316.802.1 whose value is one ASN.1
//! `UTF8String`. [`role_from_certificate`] reads it from a DER certificate
//! (the one the TLS layer already verified); the adapter puts it in
//! [`ConnectionConfig::tls_role`](crate::ConnectionConfig::tls_role), and an
//! [`Authorizer`](crate::engine::Authorizer) decides per request.
//!
//! Sans-IO: bytes in, a role out. Available with the `mbaps` feature (on by
//! default).

use x509_parser::prelude::X509Certificate;

/// The role extension's OID, dotted.
pub const ROLE_OID: &str = "1.3.6.1.4.1.50316.802.1";

/// DER content octets of [`ROLE_OID`] (1.3 = 0x2B, 50316 = 83 89 0C, 802 = 86 22).
pub const ROLE_OID_DER: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x83, 0x89, 0x0C, 0x86, 0x22, 0x01];

/// ASN.1 tag of a `UTF8String`.
const UTF8_STRING_TAG: u8 = 0x0C;

/// Why a certificate's role could not be read; the connection must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The bytes are not one DER X.509 certificate.
    #[error("not a DER X.509 certificate")]
    BadCertificate,
    /// The role extension appears more than once.
    #[error("the role extension ({ROLE_OID}) appears {0} times")]
    Duplicate(usize),
    /// The role extension's value is not exactly one DER `UTF8String`.
    #[error("the role extension ({ROLE_OID}) is not exactly one UTF8String")]
    BadValue,
}

/// The role in a DER client certificate: `Ok(None)` if it has no role
/// extension, `Ok(Some(role))` if it has exactly one whose value is exactly
/// one `UTF8String`, an error otherwise.
pub fn role_from_certificate(der: &[u8]) -> Result<Option<String>, RoleError> {
    let (rest, cert): (_, X509Certificate<'_>) =
        x509_parser::parse_x509_certificate(der).map_err(|_| RoleError::BadCertificate)?;
    if !rest.is_empty() {
        return Err(RoleError::BadCertificate);
    }
    let mut found = cert
        .extensions()
        .iter()
        .filter(|ext| ext.oid.as_bytes() == ROLE_OID_DER);
    let Some(ext) = found.next() else {
        return Ok(None);
    };
    let extra = found.count();
    if extra > 0 {
        return Err(RoleError::Duplicate(extra.saturating_add(1)));
    }
    role_from_extension_value(ext.value).map(|role| Some(role.to_owned()))
}

/// The role in the role extension's value (the content of its `extnValue`
/// OCTET STRING): exactly one DER `UTF8String`, nothing after it.
pub fn role_from_extension_value(value: &[u8]) -> Result<&str, RoleError> {
    let (&tag, rest) = value.split_first().ok_or(RoleError::BadValue)?;
    if tag != UTF8_STRING_TAG {
        return Err(RoleError::BadValue);
    }
    let (&first, rest) = rest.split_first().ok_or(RoleError::BadValue)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: 0x80 | number of length octets; DER wants the fewest.
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err(RoleError::BadValue);
        }
        let octets = rest.get(..n).ok_or(RoleError::BadValue)?;
        if octets.first() == Some(&0) {
            return Err(RoleError::BadValue);
        }
        let len = octets.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return Err(RoleError::BadValue);
        }
        (len, rest.get(n..).ok_or(RoleError::BadValue)?)
    };
    if rest.len() != len {
        return Err(RoleError::BadValue);
    }
    core::str::from_utf8(rest).map_err(|_| RoleError::BadValue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_bytes_match_dotted_form() {
        let oid = x509_parser::der_parser::oid::Oid::new(ROLE_OID_DER.into());
        assert_eq!(oid.to_id_string(), ROLE_OID);
    }

    #[test]
    fn short_utf8_string() {
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x05, b'a', b'd', b'm', b'i', b'n']),
            Ok("admin")
        );
        assert_eq!(role_from_extension_value(&[0x0C, 0x00]), Ok(""));
    }

    #[test]
    fn long_form_length() {
        let mut v = vec![0x0C, 0x81, 200];
        v.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(role_from_extension_value(&v).map(str::len), Ok(200));
        // Not minimal: 0x81 with a length below 128.
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x81, 0x01, b'x']),
            Err(RoleError::BadValue)
        );
        // Leading zero length octet.
        let mut v = vec![0x0C, 0x82, 0x00, 200];
        v.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(role_from_extension_value(&v), Err(RoleError::BadValue));
        // Indefinite length.
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x80, b'x', 0, 0]),
            Err(RoleError::BadValue)
        );
    }

    #[test]
    fn refuses_anything_but_one_utf8_string() {
        // PrintableString, not UTF8String.
        assert_eq!(role_from_extension_value(&[0x13, 0x01, b'a']), Err(RoleError::BadValue));
        // Trailing bytes, a second string, truncated content, empty value.
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x01, b'a', 0x00]),
            Err(RoleError::BadValue)
        );
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x01, b'a', 0x0C, 0x01, b'b']),
            Err(RoleError::BadValue)
        );
        assert_eq!(role_from_extension_value(&[0x0C, 0x03, b'a']), Err(RoleError::BadValue));
        assert_eq!(role_from_extension_value(&[]), Err(RoleError::BadValue));
        assert_eq!(role_from_extension_value(&[0x0C]), Err(RoleError::BadValue));
        // A SEQUENCE holding a UTF8String.
        assert_eq!(
            role_from_extension_value(&[0x30, 0x03, 0x0C, 0x01, b'a']),
            Err(RoleError::BadValue)
        );
        // Invalid UTF-8.
        assert_eq!(
            role_from_extension_value(&[0x0C, 0x02, 0xC3, 0x28]),
            Err(RoleError::BadValue)
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(role_from_certificate(&[]), Err(RoleError::BadCertificate));
        assert_eq!(
            role_from_certificate(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(RoleError::BadCertificate)
        );
    }
}
