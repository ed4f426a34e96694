//! Fuzzes certificate role extraction: DER certificates and extension values.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coilwork_fuzz::policy::fuzz_cert_role(data));
