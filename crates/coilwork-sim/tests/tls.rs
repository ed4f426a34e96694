//! `comm: "tls"` servers of the simulator: server-only TLS from a
//! pymodbus-style entry (certfile/keyfile only), Modbus/TCP Security with
//! the `cafile` extension, and certificate files checked at load.
//!
//! Certificates are made fresh with rcgen (coilwork-tokio's test PKI) and
//! written next to the JSON file, which names them by relative paths. The
//! pymodbus client test needs `COILWORK_PYTHON` (skipped without it unless
//! `COILWORK_REQUIRE_CLIENTS` is set).

use coilwork_test_support::pki;

use coilwork_sim::{SimError, Simulator, SimulatorHandle, SimulatorOptions};
use pki::{Identity, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound of every network step.
const STEP: Duration = Duration::from_secs(10);

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("coilwork-sim-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config whose server is TLS with `tls` keys; holding registers 3 = 1234
/// and 4..=5 = uint32 70000.
fn config(tls: Value) -> Value {
    let mut server = json!({"comm": "tls", "host": "127.0.0.1", "port": 0, "framer": "tls"});
    for (k, v) in tls.as_object().unwrap() {
        server[k] = v.clone();
    }
    json!({
        "server_list": {"server": server},
        "device_list": {"device": {
            "setup": {
                "co size": 10, "di size": 10, "hr size": 10, "ir size": 10,
                "shared blocks": true, "type exception": false,
                "defaults": {
                    "value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "string": " "},
                    "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "string": null}
                }
            },
            "invalid": [], "write": [3], "repeat": [],
            "uint16": [{"addr": 3, "value": 1234}],
            "uint32": [{"addr": [4, 5], "value": 70000}]
        }}
    })
}

/// Writes the server's (and the CA's) PEM files under `certs/` and the JSON
/// file naming them relatively; returns the JSON file's path.
fn setup(dir: &TempDir, with_ca: bool) -> PathBuf {
    let p = pki();
    dir.write("certs/server.pem", &p.server.cert_pem);
    dir.write("certs/server.key", &p.server.key_pem);
    let mut tls = json!({"certfile": "certs/server.pem", "keyfile": "certs/server.key"});
    if with_ca {
        dir.write("certs/ca.pem", &p.ca.cert_pem);
        tls["cafile"] = json!("certs/ca.pem");
    }
    dir.write("setup.json", &config(tls).to_string())
}

fn client_config(identity: Option<&Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki().ca.cert_der.clone())).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(id.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(STEP, async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    })
    .await
    .expect("TLS connect in time")
}

/// FC3 of `count` registers from `start`, unit 1; the answer's PDU.
async fn read_holding(s: &mut TlsStream<TcpStream>, start: u16, count: u16) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(STEP, async {
        let [a, b] = start.to_be_bytes();
        let [c, d] = count.to_be_bytes();
        s.write_all(&[0, 7, 0, 0, 0, 6, 1, 3, a, b, c, d]).await?;
        s.flush().await?;
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await?;
        assert_eq!(head[..4], [0, 7, 0, 0], "transaction and protocol id echoed");
        assert_eq!(head[6], 1, "unit echoed");
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let mut pdu = vec![0u8; len - 1];
        s.read_exact(&mut pdu).await?;
        Ok(pdu)
    })
    .await
    .expect("answer in time")
}

/// True if the server refused the client: no handshake, or (TLS 1.3, the
/// server checks the client's certificate after the client finished) no answer.
async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match connect(addr, config).await {
        Err(_) => true,
        Ok(mut s) => read_holding(&mut s, 3, 1).await.is_err(),
    }
}

async fn start(json_file: &Path) -> (Simulator, SimulatorHandle, SocketAddr) {
    let sim = Simulator::from_file(json_file, SimulatorOptions::default()).expect("config loads");
    let handle = sim.start().await.expect("TLS server starts");
    let addr = handle.local_addr().expect("bound");
    (sim, handle, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_style_entry_serves_server_only_tls() {
    let dir = TempDir::new("server-only");
    let (sim, handle, addr) = start(&setup(&dir, false)).await;
    assert!(
        sim.describe(Some(addr)).contains("server-only TLS"),
        "{}",
        sim.describe(Some(addr))
    );
    let log = sim.monitor().log_entries(0);
    assert!(
        log.iter()
            .any(|e| e.level == "warn" && e.message.contains("without client certificates")),
        "no warning logged: {log:?}"
    );
    let mut c = connect(addr, client_config(None))
        .await
        .expect("served without a certificate");
    assert_eq!(read_holding(&mut c, 3, 1).await.unwrap(), [3, 2, 0x04, 0xD2]);
    assert_eq!(
        read_holding(&mut c, 4, 2).await.unwrap(),
        [3, 4, 0x00, 0x01, 0x11, 0x70],
        "uint32 70000, high word first"
    );
    // An undefined register: exception 02, through TLS.
    assert_eq!(read_holding(&mut c, 0, 1).await.unwrap(), [0x83, 0x02]);
    // A restart (as from the REST API) serves TLS again on the same address.
    drop(c);
    tokio::time::timeout(STEP, handle.shutdown())
        .await
        .expect("stops in time");
    let handle = sim.start().await.expect("starts again");
    let addr = handle.local_addr().unwrap();
    let mut c = connect(addr, client_config(None)).await.unwrap();
    assert_eq!(read_holding(&mut c, 3, 1).await.unwrap(), [3, 2, 0x04, 0xD2]);
    tokio::time::timeout(STEP, handle.shutdown())
        .await
        .expect("stops in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cafile_requires_a_client_certificate_from_that_ca() {
    let dir = TempDir::new("mutual");
    let (sim, handle, addr) = start(&setup(&dir, true)).await;
    assert!(
        sim.describe(Some(addr)).starts_with("Modbus/TCP Security on"),
        "{}",
        sim.describe(Some(addr))
    );
    assert!(
        refused(addr, client_config(None)).await,
        "a client without a certificate was served"
    );
    assert!(
        refused(addr, client_config(Some(&pki().other_ca))).await,
        "a client certificate of another CA was served"
    );
    assert!(
        refused(addr, client_config(Some(&pki().two_roles))).await,
        "a certificate with two roles was served (the adapter's role check is off)"
    );
    let mut c = connect(addr, client_config(Some(&pki().operator)))
        .await
        .expect("CA-signed client served");
    assert_eq!(read_holding(&mut c, 3, 1).await.unwrap(), [3, 2, 0x04, 0xD2]);
    // Only the served client reached the engine.
    let calls = sim.monitor().calls(&Default::default());
    assert_eq!(calls.len(), 1, "{calls:?}");
    tokio::time::timeout(STEP, handle.shutdown())
        .await
        .expect("stops in time");
}

fn config_error(json_file: &Path) -> String {
    match Simulator::from_file(json_file, SimulatorOptions::default()) {
        Err(e @ SimError::Config { .. }) => e.to_string(),
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("the configuration was accepted"),
    }
}

#[test]
fn missing_or_bad_certificate_files_are_configuration_errors() {
    let dir = TempDir::new("errors");
    dir.write("certs/server.key", &pki().server.key_pem);
    dir.write("certs/other.key", &pki().operator.key_pem);
    dir.write("certs/server.pem", &pki().server.cert_pem);
    let json_dir = dir.0.display().to_string();
    let write = |tls: Value| dir.write("setup.json", &config(tls).to_string());

    let e = config_error(&write(
        json!({"certfile": "certs/missing.pem", "keyfile": "certs/server.key"}),
    ));
    assert!(
        e.contains(&format!(
            "server_list.server.certfile = \"certs/missing.pem\": cannot read {json_dir}/certs/missing.pem"
        )),
        "{e}"
    );
    assert!(e.contains("(looked for ") && e.contains(", certs/missing.pem)"), "{e}");

    let e = config_error(&write(
        json!({"certfile": "certs/server.pem", "keyfile": "certs/server.pem"}),
    ));
    assert!(
        e.contains("server_list.server.keyfile = \"certs/server.pem\"") && e.contains("no PEM private key"),
        "{e}"
    );

    let e = config_error(&write(
        json!({"certfile": "certs/server.pem", "keyfile": "certs/server.pem", "password": "secret"}),
    ));
    assert!(
        e.contains("`password` is not used: encrypted keys are not supported"),
        "{e}"
    );

    let e = config_error(&write(
        json!({"certfile": "certs/server.pem", "keyfile": "certs/other.key"}),
    ));
    assert!(
        e.contains("server_list.server.certfile = \"certs/server.pem\": certificate ")
            && e.contains("cannot be used together"),
        "{e}"
    );

    let e = config_error(&write(
        json!({"certfile": "certs/server.pem", "keyfile": "certs/server.key", "cafile": "certs/server.key"}),
    ));
    assert!(
        e.contains("server_list.server.cafile = \"certs/server.key\"") && e.contains("no PEM certificate"),
        "{e}"
    );

    let e = config_error(&write(json!({"keyfile": "certs/server.key"})));
    assert!(e.contains("server_list.server.certfile = (missing)"), "{e}");
}

/// pymodbus's own TLS client (Python's ssl), no client certificate, against
/// a pymodbus-style entry.
const CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
client = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=3, retries=0)
try:
    assert client.connect(), "connect"
    rr = client.read_holding_registers(3, count=1, device_id=1)
    assert not rr.isError(), f"read: {rr}"
    print("registers", rr.registers)
finally:
    client.close()
"#;

#[test]
fn pymodbus_tls_client_reads_the_configured_value() {
    let Some(py) = std::env::var_os("COILWORK_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    else {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let dir = TempDir::new("pymodbus");
    let ca = dir.write("certs/ca.pem", &pki().ca.cert_pem);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_sim, handle, addr) = rt.block_on(start(&setup(&dir, false)));
    let mut child = Command::new(py)
        .args(["-c", CLIENT, &addr.port().to_string(), ca.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    // Bounded: pymodbus's own timeouts are 3 s; kill it past 30 s.
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the pymodbus TLS client did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pymodbus TLS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registers [1234]"), "{stdout}");
    rt.block_on(async {
        tokio::time::timeout(STEP, handle.shutdown())
            .await
            .expect("stops in time")
    });
}

/// pymodbus's own `setup.json` (its simulator cannot start the
/// `server_try_tls` entry): copied with its certificate paths as they are
/// (`certificates/pymodbus_tls.crt`, `.key`, written next to it), only the
/// host and port changed; coilwork serves it, register 3 holds 17001.
#[test]
fn pymodbus_setup_json_tls_example_is_served() {
    let Some(py) = std::env::var_os("COILWORK_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    else {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let out = Command::new(py)
        .args([
            "-c",
            "import os, pymodbus.server.simulator as s; print(os.path.join(os.path.dirname(s.__file__), 'setup.json'))",
        ])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let setup_json = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&setup_json).unwrap()).unwrap();
    let entry = &mut config["server_list"]["server_try_tls"];
    assert_eq!(entry["certfile"], "certificates/pymodbus_tls.crt");
    assert_eq!(entry["keyfile"], "certificates/pymodbus_tls.key");
    entry["host"] = json!("127.0.0.1");
    entry["port"] = json!(0);
    let dir = TempDir::new("pymodbus-setup");
    std::fs::create_dir_all(dir.0.join("certificates")).unwrap();
    dir.write("certificates/pymodbus_tls.crt", &pki().server.cert_pem);
    dir.write("certificates/pymodbus_tls.key", &pki().server.key_pem);
    let file = dir.write("setup.json", &config.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::from_file(&file, SimulatorOptions::default().server("server_try_tls"))
            .expect("pymodbus's setup.json loads");
        let handle = sim.start().await.expect("its TLS entry starts");
        let addr = handle.local_addr().unwrap();
        let mut c = connect(addr, client_config(None)).await.expect("served");
        assert_eq!(read_holding(&mut c, 3, 1).await.unwrap(), [3, 2, 0x42, 0x69]);
        tokio::time::timeout(STEP, handle.shutdown())
            .await
            .expect("stops in time");
    });
}
