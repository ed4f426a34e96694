//! Fuzzes the role policy parser: any text either parses or is refused with
//! a line inside the text; a parsed policy answers any request without panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coilwork_fuzz::policy::fuzz_role_policy(data));
