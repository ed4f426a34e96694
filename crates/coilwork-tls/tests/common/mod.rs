//! What the in-memory handshake tests share: the test PKI (made once per
//! process) and its certificates and keys in rustls's types, from
//! `coilwork-test-support`.

pub use coilwork_test_support::pki::{self, cert, key, pki, roots};
