//! Fuzzes the simulator's JSON configuration loader (validation and device build).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Either a simulator or an error; never a panic or an endless build.
        let _ = coilwork_sim::Simulator::from_json(text, coilwork_sim::SimulatorOptions::default());
    }
});
