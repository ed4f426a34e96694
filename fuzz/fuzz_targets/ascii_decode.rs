//! Fuzzes the ascii decoder through the Connection's buffer loop, whole vs. split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coilwork_fuzz::fuzz_ascii(data));
