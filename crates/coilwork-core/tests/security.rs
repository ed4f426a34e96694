//! Reading the Modbus/TCP Security role from real certificates made by rcgen.
#![cfg(feature = "mbaps")]

use coilwork_test_support::pki;

use coilwork_core::security::{RoleError, role_from_certificate};

#[test]
fn roles_of_the_test_certificates() {
    let p = pki::Pki::new();
    assert_eq!(
        role_from_certificate(&p.operator.cert_der),
        Ok(Some("operator".to_owned()))
    );
    assert_eq!(role_from_certificate(&p.viewer.cert_der), Ok(Some("viewer".to_owned())));
    assert_eq!(role_from_certificate(&p.no_role.cert_der), Ok(None));
    assert_eq!(role_from_certificate(&p.server.cert_der), Ok(None));
    assert_eq!(
        role_from_certificate(&p.two_roles.cert_der),
        Err(RoleError::Duplicate(2))
    );
    assert_eq!(role_from_certificate(&p.bad_role.cert_der), Err(RoleError::BadValue));
    // Trailing bytes after the certificate.
    let mut padded = p.operator.cert_der.clone();
    padded.push(0);
    assert_eq!(role_from_certificate(&padded), Err(RoleError::BadCertificate));
    // Truncated.
    let cut = &p.operator.cert_der[..p.operator.cert_der.len() - 1];
    assert_eq!(role_from_certificate(cut), Err(RoleError::BadCertificate));
}

#[test]
fn role_with_non_ascii_text() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let role = "opérateur-Ω";
    let mut content = vec![0x0C, role.len() as u8];
    content.extend_from_slice(role.as_bytes());
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(pki::ROLE_OID, content));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(role_from_certificate(cert.der()), Ok(Some(role.to_owned())));
}
