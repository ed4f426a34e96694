//! Fuzzes the simulator's HTTP request handling in process: method, path,
//! query, headers and body through `coilwork_sim::http::router`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coilwork_fuzz::sim::fuzz_sim_http(data));
