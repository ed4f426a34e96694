//! `coilwork`: run a Modbus server from the command line.
//!
//! `coilwork` with no subcommand is `coilwork serve` with its defaults.
#![forbid(unsafe_code)]

mod gateway;
pub mod metrics_http;
mod overflow;
mod roles;
mod trace;

use clap::{Args, Parser, Subcommand, ValueEnum};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, EngineOptions, Framing, Identity, Metrics, ServerStats};
use coilwork_tokio::{
    Parity, SerialServer, SerialServerConfig, SerialStats, ServerHandle, TcpServer, TcpServerConfig, TlsClientAuth,
    TlsConfig, TlsServer, TlsServerConfig, UdpServer, UdpServerConfig,
};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// A Modbus server stack.
#[derive(Debug, Parser)]
#[command(name = "coilwork", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `coilwork` serves with these flags.
    #[command(flatten)]
    serve: ServeArgs,
    /// Worker threads (default: one per CPU the process may run on, one for
    /// `gateway`); with one, everything runs on a single thread without
    /// cross-thread wake-ups.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a Modbus device over a transport (the default command).
    Serve(ServeArgs),
    /// Simulate a device from a pymodbus simulator JSON file (default: a built-in one).
    Simulate(SimulateArgs),
    /// Forward Modbus clients to serial buses and remote devices (a gateway).
    Gateway(gateway::GatewayArgs),
}

/// Worker threads when `--threads` is not given: one per CPU, but one for
/// the gateway, whose every request hops between a client's task and its
/// upstream's: on one thread those hops are queue pushes, not futex
/// wake-ups between workers, and the upstream task runs after every client
/// woken in the same tick, so its writes carry more requests.
fn default_threads(command: &Command) -> usize {
    match command {
        Command::Gateway(_) => 1,
        Command::Serve(_) | Command::Simulate(_) => std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// Flags of pymodbus's simulator (`--json_file` etc. are accepted too).
#[derive(Debug, Clone, Args)]
struct SimulateArgs {
    /// Configuration in pymodbus's simulator format (default: the built-in configuration).
    #[arg(long = "json-file", visible_alias = "json_file", value_name = "FILE")]
    json_file: Option<std::path::PathBuf>,
    /// Server entry of `server_list` to run (default: "server", or the only one).
    /// Give it several times to serve several entries at once.
    #[arg(long = "modbus-server", visible_alias = "modbus_server", value_name = "NAME")]
    modbus_server: Vec<String>,
    /// Serve every entry of `server_list` at once (each with its `"device"`).
    #[arg(long, conflicts_with = "modbus_server")]
    all: bool,
    /// Device entry of `device_list` to simulate (default: "device", or the only one).
    #[arg(long = "modbus-device", visible_alias = "modbus_device", value_name = "NAME")]
    modbus_device: Option<String>,
    /// Host for the web page and REST API.
    #[arg(
        long = "http-host",
        visible_alias = "http_host",
        value_name = "HOST",
        default_value = "127.0.0.1"
    )]
    http_host: String,
    /// Port for the web page and REST API (0: a free one).
    #[arg(
        long = "http-port",
        visible_alias = "http_port",
        value_name = "PORT",
        default_value_t = 8080
    )]
    http_port: u16,
    /// Save register values to FILE when they change (at most 4 times a second) and at stop; restore them
    /// at start.
    #[arg(long = "state-file", value_name = "FILE")]
    state_file: Option<std::path::PathBuf>,
    /// Read the device from a CSV register map (columns address,type,access,value,action,parameters,name)
    /// instead of `device_list`.
    #[arg(long = "register-map", value_name = "CSV")]
    register_map: Option<std::path::PathBuf>,
    /// A TOML role policy for the TLS server entries (what each certificate role may do; deny by
    /// default, exception 01; every chosen server must be TLS). See docs/roles.md.
    #[arg(long, value_name = "FILE")]
    roles: Option<PathBuf>,
    /// Simulated seconds per real second for time-based actions (sine, ramp, ...; 0 stops time).
    #[arg(long = "time-scale", value_name = "FACTOR", default_value_t = 1.0, value_parser = time_scale, allow_negative_numbers = true)]
    time_scale: f64,
    /// Bearer token every REST API call must carry (default: $COILWORK_HTTP_TOKEN); open the page as
    /// http://HOST:PORT/#token=TOKEN.
    #[arg(long = "http-token", value_name = "TOKEN")]
    http_token: Option<String>,
    /// Another host name the web page and REST API answer to (repeatable; loopback names and the bound
    /// address always work).
    #[arg(long = "http-allow-host", value_name = "NAME")]
    http_allow_host: Vec<String>,
    /// Serve this directory's files as the web page instead of the built-in one (the API stays).
    #[arg(long = "web-app-path", visible_alias = "web_app_path", value_name = "DIR")]
    web_app_path: Option<std::path::PathBuf>,
    /// Log level on stderr, as pymodbus's simulator (`RUST_LOG`, if set, wins).
    #[arg(long, value_enum, value_name = "LEVEL")]
    log: Option<LogLevel>,
    /// Serve Prometheus metrics on http://ADDR/metrics (the same families as
    /// `serve --metrics`, one `server` label per server entry).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// pymodbus's Python module of custom actions: not supported (refused with a message).
    #[arg(
        long = "custom-actions-module",
        visible_alias = "custom_actions_module",
        value_name = "MODULE"
    )]
    custom_actions_module: Option<String>,
}

/// Log levels of pymodbus's `--log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogLevel {
    /// Errors only (tracing has no separate critical level).
    Critical,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational messages too.
    Info,
    /// Everything, for debugging.
    Debug,
}

impl LogLevel {
    /// The `tracing` filter for this level.
    fn filter(self) -> &'static str {
        match self {
            LogLevel::Critical | LogLevel::Error => "error",
            LogLevel::Warning => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// Modbus/TCP.
    Tcp,
    /// Modbus over UDP.
    Udp,
    /// Modbus/TCP Security over TLS (see --cert, --key, --ca).
    Tls,
    /// A serial line (RTU or ASCII; see --port).
    Serial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FramerArg {
    /// MBAP header (the Modbus/TCP framing).
    Mbap,
    /// RTU (binary with CRC).
    Rtu,
    /// ASCII (':' hex LRC CR LF).
    Ascii,
}

impl From<FramerArg> for Framing {
    fn from(f: FramerArg) -> Self {
        match f {
            FramerArg::Mbap => Framing::Mbap,
            FramerArg::Rtu => Framing::Rtu,
            FramerArg::Ascii => Framing::Ascii,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ParityArg {
    /// No parity.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Transport to serve on.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5020")]
    address: SocketAddr,
    /// Frame format (default: mbap on tcp/udp, rtu on serial).
    #[arg(long, value_enum)]
    framer: Option<FramerArg>,
    /// Serial: device path (with --transport serial).
    #[arg(long, required_if_eq("transport", "serial"))]
    port: Option<String>,
    /// Serial: baud rate.
    #[arg(long, default_value_t = 19200, value_parser = clap::value_parser!(u32).range(1..))]
    baudrate: u32,
    /// Serial: parity.
    #[arg(long, value_enum, default_value_t = ParityArg::Even)]
    parity: ParityArg,
    /// Serial: stop bits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    stopbits: u8,
    /// Serial: data bits.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    bytesize: u8,
    /// Serial: drop the line's echo of what is sent (2-wire RS-485).
    #[arg(long)]
    local_echo: bool,
    /// TCP/TLS: most connections open at once; past it --overflow decides.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// TCP/TLS: past --max-connections, refuse the new client or evict the
    /// oldest open connection to serve it.
    #[arg(long, value_enum, default_value_t = overflow::OverflowArg::RefuseNew)]
    overflow: overflow::OverflowArg,
    /// TCP/TLS: listen backlog, connections the kernel queues before they are accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,
    /// Unit ids served, each by its own device (default: every unit id served by one device).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    units: Vec<u8>,
    /// Number of coils (addresses 0..N-1).
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(0..=65536))]
    coils: u32,
    /// Number of discrete inputs.
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(0..=65536))]
    discrete_inputs: u32,
    /// Number of holding registers.
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(0..=65536))]
    holding_registers: u32,
    /// Number of input registers.
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u32).range(0..=65536))]
    input_registers: u32,
    /// Identity: VendorName.
    #[arg(long, default_value = "coilwork")]
    vendor_name: String,
    /// Identity: ProductCode.
    #[arg(long, default_value = "")]
    product_code: String,
    /// Identity: MajorMinorRevision.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    revision: String,
    /// Identity: ProductName.
    #[arg(long)]
    product_name: Option<String>,
    /// Identity: ModelName.
    #[arg(long)]
    model_name: Option<String>,
    /// Send no answer at all for a unit id without a device (default: exception 0x0B on TCP/UDP).
    #[arg(long)]
    ignore_missing_devices: bool,
    /// Treat unit 0 as a broadcast on serial lines.
    #[arg(long)]
    broadcast: bool,
    /// TLS: the server's PEM certificate chain (with --transport tls).
    #[arg(long, value_name = "FILE", required_if_eq("transport", "tls"))]
    cert: Option<PathBuf>,
    /// TLS: the server's PEM private key (with --transport tls).
    #[arg(long, value_name = "FILE", required_if_eq("transport", "tls"))]
    key: Option<PathBuf>,
    /// TLS: PEM CA certificates; clients must present a certificate they
    /// signed (Modbus/TCP Security, roles from the certificates).
    #[arg(long, value_name = "FILE", conflicts_with = "tls_server_only")]
    ca: Option<PathBuf>,
    /// TLS without client certificates (not Modbus/TCP Security): needed
    /// to serve TLS without --ca.
    #[arg(long)]
    tls_server_only: bool,
    /// TLS: a TOML role policy (what each certificate role may do; deny by
    /// default, exception 01). See docs/roles.md.
    #[arg(long, value_name = "FILE")]
    roles: Option<PathBuf>,
    /// Log each request and answer: app (function and fields), frame (plus
    /// transport, peer, lengths) or raw (plus PDU hex); target coilwork::trace
    /// (RUST_LOG=coilwork::trace=info|debug|trace asks for the same levels).
    #[arg(long, value_enum, value_name = "LEVEL")]
    trace: Option<trace::TraceLevel>,
    /// Most trace lines per second; the rest are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 100)]
    trace_limit: u32,
    /// Serve Prometheus metrics on http://ADDR/metrics (requests, exceptions,
    /// latency, connections, bytes, dropped frames; serial: port opens too).
    /// See docs/metrics.md.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The flags given on the command line (not defaulted), by clap id.
    #[arg(skip)]
    given: Vec<String>,
}

/// The TLS configuration from --cert, --key and --ca / --tls-server-only,
/// loaded (and checked) before any socket is opened.
fn tls_config(args: &ServeArgs) -> Result<TlsConfig, String> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        return Err("transport tls needs --cert FILE and --key FILE".to_owned());
    };
    // Report the files in the order given: certificate, key, then CA.
    coilwork_tokio::tls::load_certificates(cert).map_err(|e| e.to_string())?;
    coilwork_tokio::tls::load_private_key(key).map_err(|e| e.to_string())?;
    let client_auth = match (&args.ca, args.tls_server_only) {
        (Some(ca), _) => TlsClientAuth::ca_file(ca).map_err(|e| e.to_string())?,
        (None, true) => TlsClientAuth::None,
        (None, false) => {
            return Err("transport tls needs --ca FILE to verify client certificates \
                        (Modbus/TCP Security), or --tls-server-only to serve TLS without them"
                .to_owned());
        }
    };
    TlsConfig::from_pem_files(cert, key, client_auth).map_err(|e| e.to_string())
}

fn build_engine(args: &ServeArgs, metrics: Option<&Arc<Metrics>>) -> Result<Engine, String> {
    let device = || {
        DeviceContext::with_sizes(
            args.coils as usize,
            args.discrete_inputs as usize,
            args.holding_registers as usize,
            args.input_registers as usize,
        )
        .map_err(|e| format!("cannot build the device: {e}"))
    };
    let context = if args.units.is_empty() {
        ServerContext::single(device()?)
    } else {
        let mut ctx = ServerContext::multi();
        for &unit in &args.units {
            ctx = ctx.with_device(unit, device()?);
        }
        ctx
    };
    let mut identity = Identity::new()
        .vendor_name(&args.vendor_name)
        .product_code(&args.product_code)
        .major_minor_revision(&args.revision);
    if let Some(name) = &args.product_name {
        identity = identity.product_name(name);
    }
    if let Some(name) = &args.model_name {
        identity = identity.model_name(name);
    }
    let options = EngineOptions {
        ignore_missing_devices: args.ignore_missing_devices.then_some(true),
        broadcast_enable: args.broadcast,
    };
    let mut builder = Engine::builder(context).identity(identity).options(options);
    if let Some(path) = &args.roles {
        let policy = roles::load(path)?;
        tracing::info!("{}", roles::summary(&policy));
        builder = builder.authorizer(policy);
    }
    if let Some(level) = args.trace.or_else(trace::level_from_env) {
        builder = builder.hook(Arc::new(trace::Tracer::new(level, args.trace_limit)));
    }
    if let Some(metrics) = metrics {
        builder = builder.metrics(Arc::clone(metrics));
    }
    Ok(builder.build())
}

fn units_label(units: &[u8]) -> String {
    if units.is_empty() {
        "all".to_owned()
    } else {
        units.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    }
}

fn framing_label(transport: &str, framer: FramerArg) -> String {
    match framer {
        FramerArg::Mbap => format!("Modbus/{transport}"),
        FramerArg::Rtu => format!("Modbus RTU over {transport}"),
        FramerArg::Ascii => format!("Modbus ASCII over {transport}"),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
#[cfg(unix)]
fn termination() -> impl std::future::Future<Output = ()> + Send {
    // Registered now, not when first polled: a signal sent right after the
    // listening line is announced must not kill the process.
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn termination() -> impl std::future::Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Stops `handle` on SIGINT or SIGTERM.
fn stop_on_signal(handle: ServerHandle) {
    let termination = termination();
    tokio::spawn(async move {
        termination.await;
        tracing::debug!("signal received: shutting down");
        handle.stop();
    });
}

/// Flags that only one kind of transport reads, and which kinds read them.
const TRANSPORT_FLAGS: [(&str, &str, &[TransportArg]); 9] = [
    (
        "address",
        "--address",
        &[TransportArg::Tcp, TransportArg::Udp, TransportArg::Tls],
    ),
    (
        "max_connections",
        "--max-connections",
        &[TransportArg::Tcp, TransportArg::Tls],
    ),
    ("overflow", "--overflow", &[TransportArg::Tcp, TransportArg::Tls]),
    ("backlog", "--backlog", &[TransportArg::Tcp, TransportArg::Tls]),
    ("baudrate", "--baudrate", &[TransportArg::Serial]),
    ("parity", "--parity", &[TransportArg::Serial]),
    ("stopbits", "--stopbits", &[TransportArg::Serial]),
    ("bytesize", "--bytesize", &[TransportArg::Serial]),
    ("local_echo", "--local-echo", &[TransportArg::Serial]),
];

/// Refuses a flag given on the command line that `transport` would ignore.
fn check_transport_flags(transport: TransportArg, given: &[String]) -> Result<(), String> {
    let ignored = TRANSPORT_FLAGS
        .iter()
        .find(|(id, _, kinds)| !kinds.contains(&transport) && given.iter().any(|g| g == id));
    match ignored {
        Some((_, flag, kinds)) => {
            let names: Vec<_> = kinds.iter().map(|k| transport_name(*k)).collect();
            Err(format!("{flag} is only for --transport {}", names.join(", ")))
        }
        None => Ok(()),
    }
}

/// The name `--transport` takes for `t`.
fn transport_name(t: TransportArg) -> &'static str {
    match t {
        TransportArg::Tcp => "tcp",
        TransportArg::Udp => "udp",
        TransportArg::Tls => "tls",
        TransportArg::Serial => "serial",
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let framer = args.framer.unwrap_or(match args.transport {
        TransportArg::Serial => FramerArg::Rtu,
        _ => FramerArg::Mbap,
    });
    check_transport_flags(args.transport, &args.given)?;
    if args.transport != TransportArg::Tls {
        let flag = [
            (args.cert.is_some(), "--cert"),
            (args.key.is_some(), "--key"),
            (args.ca.is_some(), "--ca"),
            (args.tls_server_only, "--tls-server-only"),
            (args.roles.is_some(), "--roles"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name));
        if let Some(flag) = flag {
            return Err(format!("{flag} is only for --transport tls"));
        }
    }
    let transport = match args.transport {
        TransportArg::Tcp => "TCP",
        TransportArg::Udp => "UDP",
        TransportArg::Tls => {
            if framer != FramerArg::Mbap {
                return Err("transport tls uses MBAP framing only (Modbus/TCP Security)".to_owned());
            }
            "TLS"
        }
        TransportArg::Serial => {
            if framer == FramerArg::Mbap {
                return Err("transport serial needs --framer rtu or ascii".to_owned());
            }
            "serial"
        }
    };
    // Bound first: a metrics address in use stops the start before any Modbus port opens.
    let metrics = match args.metrics {
        Some(addr) => Some((metrics_http::bind(addr)?, Arc::new(Metrics::new()))),
        None => None,
    };
    let engine = Arc::new(build_engine(&args, metrics.as_ref().map(|(_, m)| m))?);
    let units = units_label(&args.units);
    match args.transport {
        TransportArg::Serial => {
            let port = args.port.clone().unwrap_or_default();
            let parity = match args.parity {
                ParityArg::None => Parity::None,
                ParityArg::Even => Parity::Even,
                ParityArg::Odd => Parity::Odd,
            };
            let config = SerialServerConfig {
                framing: framer.into(),
                baud_rate: args.baudrate,
                data_bits: args.bytesize,
                parity,
                stop_bits: args.stopbits,
                local_echo: args.local_echo,
                ..SerialServerConfig::new(port.clone())
            };
            let server = SerialServer::new(engine, config);
            server.open().map_err(|e| e.to_string())?;
            serve_metrics(
                metrics,
                "serial",
                Arc::clone(server.server_stats()),
                Some(Arc::clone(server.stats())),
            )?;
            let parity_char = match args.parity {
                ParityArg::None => 'N',
                ParityArg::Even => 'E',
                ParityArg::Odd => 'O',
            };
            let kind = if framer == FramerArg::Ascii { "ASCII" } else { "RTU" };
            stop_on_signal(server.handle());
            announce(&format!(
                "coilwork: serving Modbus {kind} on {port} at {} {}{parity_char}{} (units: {units})",
                args.baudrate, args.bytesize, args.stopbits
            ));
            server.serve_forever().await.map_err(|e| e.to_string())
        }
        TransportArg::Udp => {
            let config = UdpServerConfig {
                framing: framer.into(),
                ..UdpServerConfig::new(args.address)
            };
            let server = UdpServer::new(engine, config);
            let addr = server.bind().map_err(|e| e.to_string())?;
            serve_metrics(metrics, "udp", Arc::clone(server.stats()), None)?;
            stop_on_signal(server.handle());
            announce(&format!(
                "coilwork: serving {} on {addr} (units: {units})",
                framing_label(transport, framer)
            ));
            server.serve_forever().await.map_err(|e| e.to_string())
        }
        TransportArg::Tls => {
            let tls = tls_config(&args)?;
            let label = if tls.is_server_only() {
                "Modbus/TCP over TLS without client certificates"
            } else {
                "Modbus/TCP Security"
            };
            let mut config = TlsServerConfig::new(args.address);
            config.tcp.max_connections = args.max_connections as usize;
            config.tcp.overflow = args.overflow.into();
            config.tcp.backlog = args.backlog;
            let server = TlsServer::new(engine, config, tls);
            let addr = server.bind().map_err(|e| e.to_string())?;
            serve_metrics(metrics, "tls", Arc::clone(server.stats()), None)?;
            stop_on_signal(server.handle());
            announce(&format!("coilwork: serving {label} on {addr} (units: {units})"));
            server.serve_forever().await.map_err(|e| e.to_string())
        }
        TransportArg::Tcp => {
            let config = TcpServerConfig {
                framing: framer.into(),
                max_connections: args.max_connections as usize,
                overflow: args.overflow.into(),
                backlog: args.backlog,
                ..TcpServerConfig::new(args.address)
            };
            let server = TcpServer::new(engine, config);
            let addr = server.bind().map_err(|e| e.to_string())?;
            serve_metrics(metrics, "tcp", Arc::clone(server.stats()), None)?;
            stop_on_signal(server.handle());
            announce(&format!(
                "coilwork: serving {} on {addr} (units: {units})",
                framing_label(transport, framer)
            ));
            server.serve_forever().await.map_err(|e| e.to_string())
        }
    }
}

/// Starts the metrics endpoint bound by `serve` (if asked for), rendering
/// `metrics` and the server's `stats` (labelled `server="<name>"`), and on a
/// serial line its port counters too.
fn serve_metrics(
    metrics: Option<(std::net::TcpListener, Arc<Metrics>)>,
    name: &'static str,
    stats: Arc<ServerStats>,
    serial: Option<Arc<SerialStats>>,
) -> Result<(), String> {
    let Some((listener, metrics)) = metrics else {
        return Ok(());
    };
    let render: metrics_http::Render = Arc::new(move || {
        let mut text = coilwork_core::metrics::render(&[coilwork_core::metrics::Source {
            name,
            metrics: Some(&metrics),
            stats: Some(&stats),
        }]);
        if let Some(serial) = &serial {
            render_serial(name, serial, &mut text);
        }
        text
    });
    let local = metrics_http::spawn(listener, render)?;
    announce(&format!("coilwork: metrics on http://{local}/metrics"));
    Ok(())
}

/// The serial port's families: opens, open failures, line errors.
fn render_serial(server: &str, stats: &SerialStats, out: &mut String) {
    use std::fmt::Write as _;
    let families: [(&str, &str, u64); 3] = [
        (
            "coilwork_serial_port_opens_total",
            "Times the serial port was opened.",
            stats.opened(),
        ),
        (
            "coilwork_serial_open_failures_total",
            "Failed attempts to open the serial port.",
            stats.open_failures(),
        ),
        (
            "coilwork_serial_line_errors_total",
            "Times an open serial line failed while being served.",
            stats.line_errors(),
        ),
    ];
    for (family, help, value) in families {
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} counter");
        let _ = writeln!(out, "{family}{{server=\"{server}\"}} {value}");
    }
}

async fn simulate(args: SimulateArgs) -> Result<(), String> {
    use coilwork_sim::{Simulator, SimulatorOptions};
    if let Some(module) = &args.custom_actions_module {
        return Err(format!(
            "--custom_actions_module {module}: custom actions are Python code, which coilwork cannot load; \
             use the built-in actions (increment, random, timestamp, reset, uptime), or register a Rust action \
             with coilwork-sim's SimulatorOptions::action"
        ));
    }
    let mut options = SimulatorOptions::default();
    options.modbus_server = args.modbus_server.first().cloned();
    options.servers = args.modbus_server;
    options.all_servers = args.all;
    options.modbus_device = args.modbus_device;
    options.http_host = Some(args.http_host);
    options.http_port = Some(args.http_port);
    options.web_app_path = args.web_app_path;
    options.http_token = http_token(args.http_token)?;
    options.http_allow_hosts = args.http_allow_host;
    options.time_scale = Some(args.time_scale);
    options.register_map = args.register_map;
    options.state_file = args.state_file;
    if let Some(path) = &args.roles {
        let policy = roles::load(path)?;
        tracing::info!("{}", roles::summary(&policy));
        options.roles = Some(policy);
    }
    let sim = match &args.json_file {
        Some(path) => Simulator::from_file(path, options),
        None => Simulator::with_default_config(options),
    }
    .map_err(|e| e.to_string())?;
    // Bound first: a metrics address in use stops the start before any Modbus port opens.
    let metrics = args.metrics.map(metrics_http::bind).transpose()?;
    let handle = sim.start().await.map_err(|e| e.to_string())?;
    if let Some(listener) = metrics {
        let h = handle.clone();
        let local = metrics_http::spawn(listener, Arc::new(move || h.prometheus()))?;
        announce(&format!("coilwork: metrics on http://{local}/metrics"));
    }
    let termination = termination();
    for ((server, device, _), (_, endpoint)) in sim.servers().iter().zip(handle.describe_all()) {
        announce(&format!(
            "coilwork: simulating device {device:?} (server {server:?}): serving {endpoint}"
        ));
    }
    if let Some(http) = handle.http_addr() {
        let note = if sim.options().http_token.is_some() {
            " (open the page as http://HOST:PORT/#token=TOKEN)"
        } else {
            ""
        };
        announce(&format!("coilwork: web page and REST API on http://{http}/{note}"));
    }
    let stopper = handle.clone();
    tokio::spawn(async move {
        termination.await;
        stopper.stop();
    });
    handle.stopped().await;
    Ok(())
}

/// A `--time-scale`: a finite number, 0 or more.
fn time_scale(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a factor of 0 or more (1: real time, 10: ten times as fast)"))
}

/// `--http-token`, else `COILWORK_HTTP_TOKEN`; an empty one is refused.
fn http_token(flag: Option<String>) -> Result<Option<String>, String> {
    let (token, source) = match flag {
        Some(t) => (t, "--http-token"),
        None => match std::env::var("COILWORK_HTTP_TOKEN") {
            Ok(t) => (t, "COILWORK_HTTP_TOKEN"),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => return Err("COILWORK_HTTP_TOKEN: not valid UTF-8".into()),
        },
    };
    if token.trim().is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{source}: the token must be non-empty, without spaces or control characters"
        ));
    }
    Ok(Some(token))
}

fn init_logging(level: Option<LogLevel>, trace: bool) {
    use tracing_subscriber::EnvFilter;
    let default = level.map_or("warn", LogLevel::filter);
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if trace && let Ok(directive) = format!("{}=info", trace::TARGET).parse() {
        filter = filter.add_directive(directive);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Raises the soft limit on open descriptors to the hard limit: each client
/// is a descriptor, and the usual soft limit (1024) is far below the
/// default `--max-connections` of 10,000.
fn raise_descriptor_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            limit.current = limit.maximum;
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::debug!(error = %e, "could not raise the descriptor limit");
            }
        }
    }
}

/// Parses the command line, noting which `serve` flags were given rather than defaulted.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let serve = matches.subcommand_matches("serve").unwrap_or(&matches);
    let given: Vec<String> = serve
        .ids()
        .filter(|id| serve.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .map(|id| id.as_str().to_owned())
        .collect();
    match &mut cli.command {
        Some(Command::Serve(args)) => args.given = given,
        _ => cli.serve.given = given,
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            // One line: clap's message (up to its first blank line) without the usage block.
            let text = e.render().to_string();
            let message = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("coilwork: error: {message} (see 'coilwork --help')");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    init_logging(
        match &command {
            Command::Simulate(args) => args.log,
            Command::Gateway(args) => Some(args.log),
            Command::Serve(_) => None,
        },
        matches!(&command, Command::Serve(args) if args.trace.is_some()),
    );
    raise_descriptor_limit();
    let threads = cli.threads.map_or_else(|| default_threads(&command), usize::from);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coilwork: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async move {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Simulate(args) => simulate(args).await,
            Command::Gateway(args) => gateway::run(args).await,
        }
    };
    // On a worker: the thread in `block_on` does not drive I/O, so a server
    // run from it (the UDP loop, the accept loop) would cost a cross-thread
    // wake-up per event.
    let run = async move { tokio::spawn(run).await.map_err(|e| e.to_string())? };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coilwork: error: {e}");
            ExitCode::FAILURE
        }
    }
}
