//! Fuzzes the simulator's CSV register-map loader: parsing, validation and
//! the device build, through `coilwork_sim::csv::RegisterMap::build_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coilwork_fuzz::sim::fuzz_sim_csv(data));
