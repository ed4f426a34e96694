//! `coilwork serve --transport tls`: flag checks and certificate errors, each
//! one clear line and a non-zero exit before any port is opened.

use coilwork_test_support::pki;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coilwork");

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("coilwork did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `coilwork args` to completion (bounded): (status, stderr).
fn run(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coilwork");
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, err)
}

/// Certificates and junk files in a temporary directory removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("coilwork-cli-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = pki::Pki::new();
        let f = Self { dir };
        f.write("ca.pem", &p.ca.cert_pem);
        f.write("server.pem", &p.server.cert_pem);
        f.write("server.key", &p.server.key_pem);
        f.write("other.key", &p.viewer.key_pem);
        f.write("junk.pem", "this is not PEM\n");
        f
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port we hold, so a server that tried to bind it would fail with
/// "address in use" instead of the certificate error the test expects.
fn held_port() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn assert_one_line_error(status: ExitStatus, err: &str, needles: &[&str]) {
    assert!(!status.success(), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains("in use"), "bound a port first: {err:?}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
}

#[test]
fn missing_or_bad_files_are_named_before_binding() {
    let f = Files::new("bad");
    let (_held, addr) = held_port();
    let ca = f.path("ca.pem");
    let cert = f.path("server.pem");
    let key = f.path("server.key");
    let missing = f.path("missing.pem");
    let junk = f.path("junk.pem");
    let other_key = f.path("other.key");
    let tls = |c: &str, k: &str, a: &str| -> (ExitStatus, String) {
        run(&[
            "serve",
            "--transport",
            "tls",
            "--address",
            &addr,
            "--cert",
            c,
            "--key",
            k,
            "--ca",
            a,
        ])
    };
    let (s, e) = tls(&missing, &key, &ca);
    assert_one_line_error(s, &e, &["missing.pem", "cannot read"]);
    let (s, e) = tls(&cert, &missing, &ca);
    assert_one_line_error(s, &e, &["missing.pem"]);
    let (s, e) = tls(&junk, &key, &ca);
    assert_one_line_error(s, &e, &["junk.pem", "no PEM certificate"]);
    let (s, e) = tls(&cert, &junk, &ca);
    assert_one_line_error(s, &e, &["junk.pem", "no PEM private key"]);
    let (s, e) = tls(&cert, &key, &junk);
    assert_one_line_error(s, &e, &["junk.pem"]);
    let (s, e) = tls(&cert, &missing, &missing);
    assert_one_line_error(s, &e, &["missing.pem"]);
    let (s, e) = tls(&cert, &other_key, &ca);
    assert_one_line_error(s, &e, &["other.key", "server.pem"]);
}

#[test]
fn tls_without_ca_needs_server_only_flag() {
    let f = Files::new("noca");
    let (_held, addr) = held_port();
    let (s, e) = run(&[
        "serve",
        "--transport",
        "tls",
        "--address",
        &addr,
        "--cert",
        &f.path("server.pem"),
        "--key",
        &f.path("server.key"),
    ]);
    assert_one_line_error(s, &e, &["--ca", "--tls-server-only"]);
    // Both at once is a usage error.
    let (s, e) = run(&[
        "serve",
        "--transport",
        "tls",
        "--cert",
        &f.path("server.pem"),
        "--key",
        &f.path("server.key"),
        "--ca",
        &f.path("ca.pem"),
        "--tls-server-only",
    ]);
    assert_eq!(s.code(), Some(2), "{e:?}");
    assert_eq!(e.lines().count(), 1, "{e:?}");
}

#[test]
fn tls_flags_need_transport_tls() {
    let (s, e) = run(&["serve", "--address", "127.0.0.1:0", "--cert", "x.pem"]);
    assert_one_line_error(s, &e, &["--cert", "--transport tls"]);
    let (s, e) = run(&[
        "serve",
        "--transport",
        "udp",
        "--address",
        "127.0.0.1:0",
        "--tls-server-only",
    ]);
    assert_one_line_error(s, &e, &["--tls-server-only"]);
}

#[test]
fn framer_other_than_mbap_is_refused_for_tls() {
    let (s, e) = run(&[
        "serve",
        "--transport",
        "tls",
        "--framer",
        "rtu",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
        "--ca",
        "a.pem",
    ]);
    assert_one_line_error(s, &e, &["MBAP"]);
}

#[test]
fn server_only_mode_starts_with_a_warning() {
    let f = Files::new("warn");
    let port = coilwork_test_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--transport",
            "tls",
            "--address",
            &address,
            "--tls-server-only",
        ])
        .args(["--cert", &f.path("server.pem"), "--key", &f.path("server.key")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coilwork");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(("out", line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(("err", line));
        }
    });
    let (mut listening, mut warned) = (None, None);
    let t0 = Instant::now();
    while (listening.is_none() || warned.is_none()) && t0.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(("out", line)) => listening = Some(line),
            Ok((_, line)) => warned = Some(line),
            Err(_) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = listening.expect("a listening line");
    assert!(
        listening.contains(&address) && listening.contains("without client certificates"),
        "{listening}"
    );
    let warned = warned.expect("a warning on stderr");
    assert!(
        warned.contains("WARN") && warned.contains("not Modbus/TCP Security"),
        "{warned}"
    );
}

#[test]
fn bad_role_policy_is_refused_at_start_with_file_line_and_reason() {
    let f = Files::new("roles");
    let (_held, addr) = held_port();
    let with_roles = |roles: &str| {
        run(&[
            "serve",
            "--transport",
            "tls",
            "--address",
            &addr,
            "--cert",
            &f.path("server.pem"),
            "--key",
            &f.path("server.key"),
            "--ca",
            &f.path("ca.pem"),
            "--roles",
            roles,
        ])
    };
    let head = "[[role]]\nname = \"operator\"\nunits = [1]\n";
    f.write("unknown.toml", &format!("{head}acess = [\"read\"]\n"));
    let (s, e) = with_roles(&f.path("unknown.toml"));
    assert_one_line_error(s, &e, &["unknown.toml:4:", "acess"]);
    f.write("overlap.toml", &format!("{head}coils = [\"0-9\",\n  \"5-20\"]\n"));
    let (s, e) = with_roles(&f.path("overlap.toml"));
    assert_one_line_error(s, &e, &["overlap.toml:5:", "overlaps"]);
    f.write("empty.toml", &format!("{head}coils = [\"9-0\"]\n"));
    let (s, e) = with_roles(&f.path("empty.toml"));
    assert_one_line_error(s, &e, &["empty.toml:4:", "empty"]);
    f.write("twice.toml", &format!("{head}{head}"));
    let (s, e) = with_roles(&f.path("twice.toml"));
    assert_one_line_error(s, &e, &["twice.toml:5:", "operator", "listed twice"]);
    let (s, e) = with_roles(&f.path("missing.toml"));
    assert_one_line_error(s, &e, &["missing.toml", "cannot read"]);
    // --roles needs TLS: roles come from client certificates.
    let (s, e) = run(&["serve", "--address", &addr, "--roles", &f.path("twice.toml")]);
    assert_one_line_error(s, &e, &["--roles", "--transport tls"]);
}
