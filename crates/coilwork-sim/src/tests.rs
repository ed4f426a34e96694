//! Unit tests of building a simulator from configurations: layout, actions and errors.
use super::*;
use coilwork_core::ExceptionCode;
use coilwork_core::{RequestContext, Storage};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 5020, "framer": "socket"}},
        "device_list": {"device": {
            "setup": {
                "co size": 20, "di size": 20, "hr size": 20, "ir size": 20,
                "shared blocks": true, "type exception": false,
                "defaults": {
                    "value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                    "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}
                }
            },
            "invalid": [], "write": [], "repeat": []
        }}
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let mut cur = &mut v;
    for (i, k) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur[*k] = value.clone();
        } else {
            cur = &mut cur[*k];
        }
    }
    v
}

fn build(v: &Value) -> Result<Simulator, SimError> {
    Simulator::from_json(&v.to_string(), SimulatorOptions::default())
}

fn err(v: &Value) -> String {
    match build(v) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

const DEV: [&str; 2] = ["device_list", "device"];

fn dev(key: &str, value: Value) -> Value {
    with(&[DEV[0], DEV[1], key], value)
}

const APP: RequestContext<'static> = RequestContext::application(1);

fn hr(sim: &Simulator, start: u16, n: usize) -> Result<Vec<u16>, ExceptionCode> {
    let mut out = vec![0; n];
    sim.device().read_holding_registers(&APP, start, &mut out)?;
    Ok(out)
}

#[test]
fn default_config_builds() {
    let sim = Simulator::with_default_config(SimulatorOptions::default()).unwrap();
    assert_eq!(
        sim.endpoint(),
        &Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 5020,
            framer: config::FramerName::Socket
        }
    );
    assert_eq!(sim.device().decoded(10), Some(DecodedValue::Uint32(617001)));
    assert_eq!(
        sim.device().decoded(30),
        Some(DecodedValue::String("coilwork  ".into()))
    );
}

#[test]
fn layout_words_big_endian() {
    let v = dev("uint32", json!([{"addr": [0, 1], "value": 0x1234_5678u32}]));
    let v = {
        let mut v = v;
        v["device_list"]["device"]["float32"] = json!([{"addr": [2, 3], "value": 1.0}]);
        v["device_list"]["device"]["float64"] = json!([{"addr": [4, 7], "value": 2.0}]);
        v["device_list"]["device"]["string"] = json!([{"addr": [8, 10], "value": "abc"}]);
        v["device_list"]["device"]["int16"] = json!([{"addr": 11, "value": -2}]);
        v
    };
    let sim = build(&v).unwrap();
    assert_eq!(
        hr(&sim, 0, 12).unwrap(),
        [
            0x1234, 0x5678, 0x3F80, 0, 0x4000, 0, 0, 0, 0x6162, 0x6320, 0x2020, 0xFFFE
        ]
    );
}

#[test]
fn undefined_and_write_protection() {
    let mut v = dev("uint16", json!([[0, 3], {"addr": 5, "value": 9}]));
    v["device_list"]["device"]["write"] = json!([[2, 3]]);
    let sim = build(&v).unwrap();
    assert_eq!(hr(&sim, 4, 1), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(hr(&sim, 3, 3), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(hr(&sim, 5, 1).unwrap(), [9]);
    let d = sim.device();
    assert_eq!(
        d.write_holding_registers(&APP, 1, &[1]),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // All or nothing: 2 is writable, 1 is not.
    assert_eq!(
        d.write_holding_registers(&APP, 1, &[7, 7]),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(hr(&sim, 2, 1).unwrap(), [0]);
    d.write_holding_registers(&APP, 2, &[7, 8]).unwrap();
    assert_eq!(hr(&sim, 0, 4).unwrap(), [0, 0, 7, 8]);
    // Past the end of the device.
    assert_eq!(hr(&sim, 19, 2), Err(ExceptionCode::IllegalDataAddress));
}

#[test]
fn type_exception_whole_values() {
    let mut v = dev("uint32", json!([[0, 1], [2, 3]]));
    v["device_list"]["device"]["setup"]["type exception"] = json!(true);
    v["device_list"]["device"]["string"] = json!([{"addr": [4, 6], "value": "abcdef"}]);
    v["device_list"]["device"]["write"] = json!([[0, 1], 2]);
    let sim = build(&v).unwrap();
    assert!(hr(&sim, 0, 4).is_ok());
    assert_eq!(hr(&sim, 1, 2), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(hr(&sim, 0, 3), Err(ExceptionCode::IllegalDataAddress));
    assert!(hr(&sim, 4, 2).is_ok());
    assert_eq!(hr(&sim, 5, 1), Err(ExceptionCode::IllegalDataAddress));
    let d = sim.device();
    d.write_holding_registers(&APP, 0, &[1, 2]).unwrap();
    assert_eq!(
        d.write_holding_registers(&APP, 0, &[1]),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // 3 is not writable: the value at 2 cannot be written whole.
    assert_eq!(
        d.write_holding_registers(&APP, 2, &[1, 2]),
        Err(ExceptionCode::IllegalDataAddress)
    );
}

#[test]
fn separate_blocks_and_bits() {
    let mut v = dev(
        "bits",
        json!([{"addr": 0, "value": 0x8001}, {"addr": 1, "value": 2}, {"addr": 2, "value": 4}]),
    );
    v["device_list"]["device"]["setup"]["shared blocks"] = json!(false);
    v["device_list"]["device"]["setup"]["co size"] = json!(1);
    v["device_list"]["device"]["setup"]["di size"] = json!(1);
    v["device_list"]["device"]["setup"]["ir size"] = json!(1);
    v["device_list"]["device"]["setup"]["hr size"] = json!(1);
    v["device_list"]["device"]["write"] = json!([0]);
    let sim = build(&v).unwrap();
    let d = sim.device();
    let mut bits = [false; 16];
    d.read_coils(&APP, 0, &mut bits).unwrap();
    assert!(bits[0] && bits[15] && !bits[1]);
    let mut one = [false; 2];
    d.read_discrete_inputs(&APP, 0, &mut one).unwrap();
    assert_eq!(one, [false, true]);
    let mut r = [0u16; 1];
    d.read_input_registers(&APP, 0, &mut r).unwrap();
    assert_eq!(r, [4]);
    // Coil 16 would be in the discrete input block: not a coil.
    assert_eq!(d.read_coils(&APP, 15, &mut one), Err(ExceptionCode::IllegalDataAddress));
    d.write_coils(&APP, 1, &[true]).unwrap();
    assert_eq!(sim.device().register(0).unwrap().value, 0x8003);
    assert_eq!(d.write_coils(&APP, 16, &[true]), Err(ExceptionCode::IllegalDataAddress));
    // Holding register 0 is cell 3, undefined.
    assert_eq!(hr(&sim, 0, 1), Err(ExceptionCode::IllegalDataAddress));
}

#[test]
fn increment_and_reset_actions() {
    let mut v = dev(
        "uint16",
        json!([{"addr": 0, "value": 65534, "action": "increment"},
               {"addr": 1, "value": 50, "action": "increment", "parameters": {"minval": 45, "maxval": 51}},
               {"addr": 2, "value": 5}, {"addr": 3, "action": "reset"}]),
    );
    v["device_list"]["device"]["write"] = json!([2]);
    let sim = build(&v).unwrap();
    assert_eq!(hr(&sim, 0, 2).unwrap(), [65535, 51]);
    assert_eq!(hr(&sim, 0, 2).unwrap(), [0, 45]);
    sim.device().write_holding_registers(&APP, 2, &[99]).unwrap();
    assert_eq!(hr(&sim, 2, 1).unwrap(), [99]);
    assert_eq!(hr(&sim, 3, 1), Err(ExceptionCode::ServerDeviceFailure));
    assert_eq!(hr(&sim, 2, 1).unwrap(), [5]);
    assert_eq!(hr(&sim, 0, 1).unwrap(), [65535]);
}

#[test]
fn repeat_copies_cyclically() {
    let mut v = dev("uint16", json!([{"addr": 0, "value": 1}, {"addr": 1, "value": 2}]));
    v["device_list"]["device"]["repeat"] = json!([{"addr": [0, 1], "to": [4, 8]}]);
    let sim = build(&v).unwrap();
    assert_eq!(hr(&sim, 4, 5).unwrap(), [1, 2, 1, 2, 1]);
}

#[test]
fn custom_action() {
    let v = dev("uint16", json!([{"addr": 0, "action": "double", "value": 3}]));
    let opts = SimulatorOptions::default().action("double", |ctx| {
        let c = &mut ctx.cells[ctx.index];
        c.value = c.value.wrapping_mul(2);
        Ok(())
    });
    let sim = Simulator::from_json(&v.to_string(), opts).unwrap();
    assert_eq!(hr(&sim, 0, 1).unwrap(), [6]);
    assert_eq!(hr(&sim, 0, 1).unwrap(), [12]);
}

// --- one test per configuration error ---

#[test]
fn error_bad_json() {
    let e = Simulator::from_json("{", SimulatorOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("EOF"), "{e}");
}

#[test]
fn error_unknown_server_key() {
    let e = err(&with(&["server_list", "server", "hots"], json!("x")));
    assert!(e.contains("unknown field `hots`"), "{e}");
}

#[test]
fn error_unknown_identity_key() {
    let e = err(&with(&["server_list", "server", "identity"], json!({"Vendor": "x"})));
    assert!(e.contains("unknown field `Vendor`"), "{e}");
}

#[test]
fn error_unknown_device_section() {
    let e = err(&dev("uint64", json!([])));
    assert!(e.contains("unknown field `uint64`"), "{e}");
}

#[test]
fn error_bad_comm_and_framer() {
    let e = err(&with(&["server_list", "server", "comm"], json!("http")));
    assert!(e.contains("unknown variant `http`"), "{e}");
    let e = err(&with(&["server_list", "server", "framer"], json!("tls")));
    assert!(
        e.contains("server_list.server.framer = tls: comm tcp needs framer"),
        "{e}"
    );
    let mut v = base();
    v["server_list"]["server"] = json!({"comm": "serial", "port": "/dev/null", "framer": "socket"});
    assert!(err(&v).contains("comm serial needs framer rtu or ascii"));
}

#[test]
fn error_bad_port_and_host() {
    let e = err(&with(&["server_list", "server", "port"], json!(70000)));
    assert!(
        e.contains("server_list.server.port = 70000: expected a port number"),
        "{e}"
    );
    let mut v = base();
    v["server_list"]["server"].as_object_mut().unwrap().remove("host");
    assert!(err(&v).contains("server_list.server.host = (missing)"));
    let mut v = base();
    v["server_list"]["server"] = json!({"comm": "serial", "port": 3, "framer": "rtu"});
    assert!(err(&v).contains("server_list.server.port = 3: a serial server needs a device path"));
    let mut v = base();
    v["server_list"]["server"] = json!({"comm": "serial", "port": "/dev/x", "framer": "rtu", "parity": "X"});
    assert!(err(&v).contains("server_list.server.parity = \"X\""));
}

#[test]
fn error_missing_setup_key() {
    let mut v = base();
    v["device_list"]["device"]["setup"]
        .as_object_mut()
        .unwrap()
        .remove("hr size");
    let e = err(&v);
    assert!(e.contains("missing field `hr size`"), "{e}");
}

#[test]
fn error_size_exceeded() {
    let e = err(&with(&[DEV[0], DEV[1], "setup", "hr size"], json!(70000)));
    assert!(
        e.contains("device_list.device.setup.hr size = 70000: more than 65536"),
        "{e}"
    );
}

#[test]
fn error_address_outside_device() {
    let e = err(&dev("uint16", json!([[18, 20]])));
    assert!(
        e.contains("device_list.device.uint16[0].addr = [18, 20]: outside the device (20 registers"),
        "{e}"
    );
    assert!(err(&dev("invalid", json!([25]))).contains("device_list.device.invalid[0] = 25: outside"));
    assert!(err(&dev("write", json!([[0, 30]]))).contains("device_list.device.write[0] = [0, 30]: outside"));
    let e = err(&dev("repeat", json!([{"addr": [0, 1], "to": [10, 40]}])));
    assert!(e.contains("device_list.device.repeat[0].to = [10, 40]: outside"), "{e}");
}

#[test]
fn error_overlap() {
    let mut v = dev("uint16", json!([[0, 3]]));
    v["device_list"]["device"]["uint32"] = json!([[2, 3]]);
    let e = err(&v);
    assert!(
        e.contains("device_list.device.uint32[0].addr = [2, 3]: register 2 is already defined as uint16"),
        "{e}"
    );
}

#[test]
fn error_write_undefined() {
    let e = err(&dev("write", json!([4])));
    assert!(
        e.contains("device_list.device.write[0] = 4: register 4 is not defined"),
        "{e}"
    );
}

#[test]
fn error_bad_addresses() {
    let e = err(&dev("uint16", json!([[5, 2]])));
    assert!(e.contains("ends before it starts"), "{e}");
    let e = err(&dev("uint16", json!([-1])));
    assert!(e.contains("non-negative integers, found -1"), "{e}");
    let e = err(&dev("uint16", json!([{"value": 1}])));
    assert!(e.contains("missing \"addr\""), "{e}");
    let e = err(&dev("uint32", json!([[0, 2]])));
    assert!(e.contains("3 registers are not a whole number of uint32 values"), "{e}");
}

#[test]
fn error_bad_values() {
    let e = err(&dev("uint16", json!([{"addr": 0, "value": 70000}])));
    assert!(
        e.contains("device_list.device.uint16[0].value = 70000: out of range 0..=65535"),
        "{e}"
    );
    let e = err(&dev("uint32", json!([{"addr": [0, 1], "value": "x"}])));
    assert!(e.contains("uint32[0].value = \"x\": uint32 needs an integer"), "{e}");
    let e = err(&dev("float32", json!([{"addr": [0, 1], "value": 1e300}])));
    assert!(e.contains("out of range for float32"), "{e}");
    let e = err(&dev("string", json!([{"addr": [0, 1], "value": "too long"}])));
    assert!(
        e.contains("string[0].value = \"too long\": 8 bytes do not fit in 2 registers"),
        "{e}"
    );
    let e = err(&dev("string", json!([{"addr": [0, 1], "value": 3}])));
    assert!(e.contains("a string needs a string value"), "{e}");
}

#[test]
fn error_missing_default_value() {
    let mut v = dev("uint16", json!([0]));
    v["device_list"]["device"]["setup"]["defaults"]["value"] = json!({});
    let e = err(&v);
    assert!(e.contains("setup.defaults.value.uint16 = (missing)"), "{e}");
}

#[test]
fn error_unknown_action() {
    let e = err(&dev("uint16", json!([{"addr": 0, "action": "jump"}])));
    assert!(
        e.contains("device_list.device.uint16[0].action = \"jump\": unknown action"),
        "{e}"
    );
    let e = err(&with(
        &[DEV[0], DEV[1], "setup", "defaults", "action", "bits"],
        json!("jump"),
    ));
    assert!(
        e.contains("setup.defaults.action.bits = \"jump\": unknown action"),
        "{e}"
    );
}

#[test]
fn error_action_misuse() {
    let e = err(&dev("string", json!([{"addr": [0, 1], "action": "increment"}])));
    assert!(e.contains("cannot run on a string"), "{e}");
    let e = err(&dev(
        "uint16",
        json!([{"addr": 0, "action": "increment", "parameters": {"min": 1}}]),
    ));
    assert!(
        e.contains("takes parameters \"minval\" and \"maxval\", not \"min\""),
        "{e}"
    );
    let e = err(&dev(
        "uint16",
        json!([{"addr": 0, "action": "random", "parameters": {"minval": 9, "maxval": 1}}]),
    ));
    assert!(e.contains("minval 9 is above maxval 1"), "{e}");
}

#[test]
fn error_unknown_server_or_device_name() {
    let e = Simulator::from_json(&base().to_string(), SimulatorOptions::default().server("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("modbus_server = \"nope\": no such entry (there are: server)"),
        "{e}"
    );
    let e = Simulator::from_json(&base().to_string(), SimulatorOptions::default().device("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("modbus_device = \"nope\""), "{e}");
    let e = Simulator::from_json(r#"{"server_list": {}, "device_list": {}}"#, SimulatorOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("modbus_server = (none given): the list has no entries"),
        "{e}"
    );
}

#[test]
fn error_tls_files() {
    let tls = |extra: Value| {
        let mut server = json!({"comm": "tls", "host": "127.0.0.1", "port": 0, "framer": "tls"});
        for (k, v) in extra.as_object().unwrap() {
            server[k] = v.clone();
        }
        with(&["server_list", "server"], server)
    };
    let e = err(&tls(json!({"keyfile": "k"})));
    assert!(
        e.contains("server_list.server.certfile = (missing): a TLS server needs"),
        "{e}"
    );
    let e = err(&tls(json!({"certfile": "c"})));
    assert!(e.contains("server_list.server.keyfile = (missing)"), "{e}");
    let e = err(&tls(json!({"certfile": "c", "keyfile": "k", "cafile": ""})));
    assert!(
        e.contains("server_list.server.cafile = \"\": a TLS server needs"),
        "{e}"
    );
    // Checked before anything is opened: the file is read at load.
    let e = err(&tls(json!({"certfile": "no-such-cert.pem", "keyfile": "k"})));
    assert!(
        e.contains("server_list.server.certfile = \"no-such-cert.pem\": cannot read no-such-cert.pem"),
        "{e}"
    );
    // Not PEM.
    let e = err(&tls(json!({"certfile": "Cargo.toml", "keyfile": "k"})));
    assert!(
        e.contains("server_list.server.certfile = \"Cargo.toml\": Cargo.toml: no PEM certificate"),
        "{e}"
    );
}

/// FC3 as the engine reads it: big-endian bytes.
fn hr_be(sim: &Simulator, start: u16, n: usize) -> Result<Vec<u16>, ExceptionCode> {
    let mut out = vec![0u8; n * 2];
    sim.device().read_holding_registers_be(&APP, start, &mut out)?;
    Ok(out.chunks(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect())
}

#[test]
fn big_endian_reads_copy_plain_runs_and_run_actions_elsewhere() {
    let mut v = dev(
        "uint16",
        json!([{"addr": [0, 3], "value": 7}, {"addr": 4, "value": 1, "action": "increment"},
               {"addr": [5, 9], "value": 300}]),
    );
    v["device_list"]["device"]["invalid"] = json!([10]);
    v["device_list"]["device"]["write"] = json!([[0, 8]]);
    let sim = build(&v).unwrap();
    // Plain runs: copied, counted.
    assert_eq!(hr_be(&sim, 0, 4).unwrap(), [7, 7, 7, 7]);
    assert_eq!(hr_be(&sim, 5, 5).unwrap(), [300; 5]);
    // A range over the action runs it on every read.
    assert_eq!(hr_be(&sim, 3, 3).unwrap(), [7, 2, 300]);
    assert_eq!(hr_be(&sim, 4, 1).unwrap(), [3]);
    // An undefined register in the range: 02, whichever path.
    assert_eq!(hr_be(&sim, 8, 3), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(hr_be(&sim, 10, 1), Err(ExceptionCode::IllegalDataAddress));
    // Writes from big-endian bytes land, all or nothing.
    sim.device()
        .write_holding_registers_be(&APP, 0, &[0x12, 0x34, 0, 9])
        .unwrap();
    assert_eq!(hr_be(&sim, 0, 2).unwrap(), [0x1234, 9]);
    for at in [7, 8, 9] {
        // 9 is read-only, 10 undefined: refused whole.
        let refused = sim.device().write_holding_registers_be(&APP, at, &[0, 1, 0, 2, 0, 3]);
        assert_eq!(refused, Err(ExceptionCode::IllegalDataAddress), "at {at}");
    }
    assert_eq!(hr_be(&sim, 7, 3).unwrap(), [300; 3]);
    sim.device()
        .write_holding_registers_be(&APP, 6, &[0, 1, 0, 2, 0, 3])
        .unwrap();
    assert_eq!(hr_be(&sim, 6, 4).unwrap(), [1, 2, 3, 300]);
    assert_eq!(sim.device().register(0).unwrap().count_read, 2);
    assert_eq!(sim.device().register(0).unwrap().count_write, 1);
}

/// Plain registers are read from the lock-free mirror: every way their
/// cells change (client writes, the API, a custom action writing another
/// register, an action's second register, a reset) must show in those reads.
#[test]
fn plain_reads_see_every_change() {
    let mut v = dev(
        "uint16",
        json!([{"addr": [0, 3], "value": 1}, {"addr": 4, "value": 0, "action": "poke"}]),
    );
    v["device_list"]["device"]["uint32"] = json!([{"addr": [6, 7], "value": 5, "action": "increment"}]);
    v["device_list"]["device"]["write"] = json!([[0, 3]]);
    let poke = |a: &mut ActionContext<'_>| {
        if let Some(c) = a.cells.get_mut(2) {
            c.value = c.value.wrapping_add(100);
        }
        Ok(())
    };
    let sim = Simulator::from_json(&v.to_string(), SimulatorOptions::default().action("poke", poke)).unwrap(); // ok: test code
    assert_eq!(hr_be(&sim, 0, 4).unwrap(), [1, 1, 1, 1]); // ok: test code
    sim.device().write_holding_registers_be(&APP, 0, &[0, 9]).unwrap(); // ok: test code
    sim.device().set_register(1, 8).unwrap(); // ok: test code
    assert_eq!(hr_be(&sim, 0, 4).unwrap(), [9, 8, 1, 1]); // ok: test code
    // The custom action on 4 changes 2, a plain register.
    hr_be(&sim, 4, 1).unwrap(); // ok: test code
    assert_eq!(hr_be(&sim, 2, 1).unwrap(), [101]); // ok: test code
    // increment on the uint32 at 6: its low word is register 7.
    hr_be(&sim, 6, 1).unwrap(); // ok: test code
    assert_eq!(hr_be(&sim, 7, 1).unwrap(), [6]); // ok: test code
    sim.device().set_value(0, &json!(77)).unwrap(); // ok: test code
    assert_eq!(hr_be(&sim, 0, 1).unwrap(), [77]); // ok: test code
    sim.device().reset();
    assert_eq!(hr_be(&sim, 0, 4).unwrap(), [1, 1, 1, 1]); // ok: test code
}
