//! The built-in web page in headless Chromium, driven over WebDriver
//! (chromedriver's HTTP protocol by hand): the page loads, a register edited
//! on the page reaches a Modbus client, a client's write appears on the
//! page, a fault injected from the page reaches the client, and the trend
//! plot, request-rate sparkline and client list draw.
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped with a message
//! when they are missing, unless `COILWORK_REQUIRE_CLIENTS` is set.

use coilwork_sim::{DEFAULT_CONFIG, Simulator, SimulatorOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        let ok = Command::new(n)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| (*n).to_owned())
    })
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Driver {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
}

impl Driver {
    async fn send(client: &Client<HttpConnector, Full<Bytes>>, method: &str, url: &str, body: Option<Value>) -> Value {
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v = Self::send(&self.client, method, &url, body).await;
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
            .await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({}))).await;
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({"text": text})))
            .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Polls `script` (a JS expression) until it returns `want`, for at most 10 s.
    async fn wait_for(&self, script: &str, want: Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.js(&format!("return {script};")).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{script}: {got} after 10 s, want {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn fc3(addr: SocketAddr, start: u16, count: u16) -> Result<Vec<u16>, u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let [a, b] = start.to_be_bytes();
    let [c, d] = count.to_be_bytes();
    s.write_all(&[0, 1, 0, 0, 0, 6, 1, 3, a, b, c, d]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    if head[7] & 0x80 != 0 {
        return Err(head[8]);
    }
    let mut body = vec![0u8; usize::from(head[8])];
    s.read_exact(&mut body).await.unwrap();
    Ok(body.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
}

fn row_text(addr: u16, column: &str) -> String {
    format!("(document.querySelector('#registers tr[data-addr=\"{addr}\"] td.{column}') || {{}}).textContent || null")
}

#[test]
fn web_page_in_headless_chromium() {
    let required = std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_some();
    let (Some(chromium), Some(driver)) = (
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
        find_program(&["chromedriver"]),
    ) else {
        assert!(
            !required,
            "COILWORK_REQUIRE_CLIENTS is set but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromedriver (Debian: chromium, chromium-driver) are not installed");
        return;
    };
    let chromium_path = String::from_utf8(Command::new("which").arg(&chromium).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), run(&chromium_path, &driver))
                .await
                .expect("browser test took too long");
        });
}

async fn run(chromium: &str, driver: &str) {
    let config = DEFAULT_CONFIG.replace("\"port\": 5020", "\"port\": 0");
    let sim = Simulator::from_json(&config, SimulatorOptions::default().http("127.0.0.1", 0)).unwrap();
    let handle = sim.start().await.unwrap();
    let (http, modbus) = (handle.http_addr().unwrap(), handle.local_addr().unwrap());

    // Named before chromedriver binds it: below the ephemeral range, where
    // no outgoing connection takes it first.
    let port = coilwork_test_support::free_port();
    let _driver = Killed(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            && Driver::send(&client, "GET", &format!("{base}/status"), None).await["value"]["ready"] == true
        {
            break;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = std::env::temp_dir().join(format!("coilwork-chromium-{}-{port}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", format!("--user-data-dir={}", profile.display())]
    }}}});
    let created = Driver::send(&client, "POST", &format!("{base}/session"), Some(caps)).await;
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    let d = Driver { client, base, session };

    // The page loads and shows the registers.
    d.cmd("POST", "/url", Some(json!({"url": format!("http://{http}/")})))
        .await;
    d.wait_for("document.title", json!("coilwork simulator")).await;
    d.wait_for(&row_text(4, "decoded"), json!("17001")).await;
    d.wait_for(&row_text(30, "decoded"), json!("coilwork  ")).await;

    // A register edited on the page reaches a Modbus client (uint32 at 10).
    d.type_into("#set-addr", "10").await;
    d.type_into("#set-value", "123456").await;
    d.click("#set-btn").await;
    d.wait_for(&row_text(10, "decoded"), json!("123456")).await;
    assert_eq!(fc3(modbus, 10, 2).await, Ok(vec![0x0001, 0xE240]));

    // A Modbus client's write appears on the page.
    let mut s = TcpStream::connect(modbus).await.unwrap();
    s.write_all(&[0, 2, 0, 0, 0, 6, 1, 6, 0, 3, 0, 77]).await.unwrap();
    let mut echo = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    d.wait_for(&row_text(3, "decoded"), json!("77")).await;
    // ... and in the calls table.
    d.wait_for(
        "[...document.querySelectorAll('#calls tbody tr')].some(r => r.children[3].textContent === '6')",
        json!(true),
    )
    .await;

    // A fault injected on the page reaches the client: exception 04 on FC3, once.
    d.type_into("#fault-function", "3").await;
    d.click("#fault-kind option[value=exception]").await;
    d.click("#fault-code option[value='4']").await;
    d.type_into("#fault-count", "1").await;
    d.click("#fault-add").await;
    d.wait_for("document.querySelectorAll('#faults tbody tr').length", json!(1))
        .await;
    assert_eq!(fc3(modbus, 4, 1).await, Err(4));
    assert_eq!(fc3(modbus, 4, 1).await, Ok(vec![17001]));
    d.wait_for("document.querySelectorAll('#faults tbody tr').length", json!(0))
        .await;
    // A delay fault, removed from the page with its button.
    d.click("#fault-kind option[value=delay]").await;
    // Long enough that an answer sooner than it cannot have been delayed.
    let delay = Duration::from_millis(1500);
    d.type_into("#fault-delay", "1500").await;
    d.type_into("#fault-count", "").await;
    d.click("#fault-add").await;
    d.wait_for("document.querySelectorAll('#faults tbody tr').length", json!(1))
        .await;
    let t = Instant::now();
    assert_eq!(fc3(modbus, 4, 1).await, Ok(vec![17001]));
    assert!(t.elapsed() >= delay, "{:?}", t.elapsed());
    d.wait_for(
        "document.querySelector('#log').textContent.includes('fault 2 added: delay 1500 ms on function 3')",
        json!(true),
    )
    .await;

    // The trend plot draws a chosen register (5 counts up at each read),
    // the sparkline shows the request rate, and the client list our client.
    d.type_into("#trend-addrs", "5").await;
    d.wait_for(
        "document.querySelector('#trend-legend').textContent.startsWith('■ 5:')",
        json!(true),
    )
    .await;
    d.wait_for(
        "(() => { const c = document.querySelector('#trend'); \
         const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
         for (let i = 0; i < px.length; i += 4) if (px[i] < 100 && px[i + 2] > 150) n++; return n > 8; })()",
        json!(true),
    )
    .await;
    d.wait_for(
        "document.querySelector('#rate-now').textContent.endsWith('req/s')",
        json!(true),
    )
    .await;
    d.wait_for(
        "[...document.querySelectorAll('#clients tbody td')].some(td => td.textContent.startsWith('127.0.0.1:'))",
        json!(true),
    )
    .await;

    // A screenshot for people to look at.
    let png = d.cmd("GET", "/screenshot", None).await;
    let png = png.as_str().unwrap_or("");
    assert!(png.len() > 1000, "screenshot too small");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulator-page.png.b64");
    std::fs::write(&shot, png).unwrap();

    d.click("#faults tbody button.remove").await;
    d.wait_for("document.querySelectorAll('#faults tbody tr').length", json!(0))
        .await;
    let t = Instant::now();
    assert_eq!(fc3(modbus, 4, 1).await, Ok(vec![17001]));
    assert!(t.elapsed() < delay, "no longer delayed: {:?}", t.elapsed());

    let _ = Driver::send(&d.client, "DELETE", &format!("{}/session/{}", d.base, d.session), None).await;
    let _ = std::fs::remove_dir_all(&profile);
    handle.shutdown().await;
}
