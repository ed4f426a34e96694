//! `coilwork gateway`: Modbus/TCP (UDP, TLS) clients onto serial buses and
//! remote devices, through `coilwork_gateway::Gateway`.

use super::{LogLevel, ParityArg, announce, metrics_http, termination};
use crate::overflow::OverflowArg;
use clap::{Args, ValueEnum};
use coilwork_core::Parity;
use coilwork_core::engine::Authorizer;
use coilwork_core::gateway::{Policy, Route, Target, parse_units};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{AdmissionOptions, Engine, Framing};
use coilwork_gateway::{Gateway, GatewayConfig, SerialUpstream, UpstreamConfig, UpstreamTarget};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Framing of serial upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SerialFramer {
    /// RTU (binary with CRC).
    Rtu,
    /// ASCII (':' hex LRC CR LF).
    Ascii,
}

/// Flags of `coilwork gateway`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GatewayArgs {
    /// Modbus/TCP address to listen on for clients.
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Also serve Modbus/UDP clients on this address.
    #[arg(long, value_name = "ADDR")]
    listen_udp: Option<SocketAddr>,
    /// Also serve Modbus/TCP Security (TLS) clients on this address (needs --cert, --key, --ca).
    #[arg(long, value_name = "ADDR", requires_all = ["cert", "key", "ca"])]
    listen_tls: Option<SocketAddr>,
    /// TLS: the gateway's PEM certificate chain.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// TLS: the gateway's PEM private key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// TLS: PEM CA certificates the clients' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The upstream for every unit id no --route names: tcp:HOST:PORT,
    /// rtu+tcp:HOST:PORT or serial:PATH.
    #[arg(long, value_name = "SPEC")]
    upstream: Option<String>,
    /// UNITS=SPEC: units N, N-M or N-M@BASE (renumbered from BASE upstream)
    /// to an upstream (as --upstream) or to `local`. Repeatable.
    #[arg(long, value_name = "UNITS=SPEC")]
    route: Vec<String>,
    /// Serial upstreams: framing.
    #[arg(long, value_enum, default_value_t = SerialFramer::Rtu)]
    framer: SerialFramer,
    /// Serial upstreams: baud rate.
    #[arg(long, default_value_t = 19200, value_parser = clap::value_parser!(u32).range(1..))]
    baudrate: u32,
    /// Serial upstreams: parity.
    #[arg(long, value_enum, default_value_t = ParityArg::Even)]
    parity: ParityArg,
    /// Serial upstreams: stop bits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    stopbits: u8,
    /// Serial upstreams: data bits.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    bytesize: u8,
    /// No answer from an upstream in this time: exception 0x0B.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    response_timeout_ms: u64,
    /// Requests waiting per upstream at most; past it: exception 06.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    queue_depth: u32,
    /// TCP upstreams: requests in flight at once (transaction ids mapped).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    max_in_flight: u32,
    /// Longest wait between reconnect attempts (they start at 100 ms and double).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    max_backoff_ms: u64,
    /// Writes get exception 01 (Illegal Function).
    #[arg(long)]
    read_only: bool,
    /// Modbus/TCP Security roles: only TLS clients whose certificate role is
    /// one of these may write; everyone else (TCP and UDP clients too) gets
    /// exception 01 for a write. Reads stay open.
    #[arg(long, value_name = "ROLE", value_delimiter = ',', num_args = 1..)]
    write_roles: Vec<String>,
    /// With --listen-tls: a TOML role policy (as `serve --roles`, see
    /// docs/roles.md) checked on each request as the client sent it, before
    /// any unit renumbering; denied: exception 01. TCP and UDP clients get
    /// its "no role" entry.
    #[arg(long, value_name = "FILE", requires = "listen_tls", conflicts_with = "write_roles")]
    roles: Option<PathBuf>,
    /// TCP and TLS clients open at once (together); past it --overflow decides.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Past --max-connections: refuse the new client, or evict the oldest.
    #[arg(long, value_enum, default_value_t = OverflowArg::RefuseNew)]
    overflow: OverflowArg,
    /// Serve Prometheus metrics on http://ADDR/metrics: the client side's
    /// (requests, exceptions, latency, connections, bytes, dropped frames;
    /// server="gateway") and each upstream's. See docs/metrics.md.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Log level on stderr (`RUST_LOG`, if set, wins); upstream state changes log at info.
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "info")]
    pub(crate) log: LogLevel,
}

/// `--write-roles`: reads for everyone, writes for the listed roles only.
struct WriteRoles(Vec<String>);

impl Authorizer for WriteRoles {
    fn authorize(&self, r: &coilwork_core::engine::AccessRequest<'_>) -> bool {
        r.access == coilwork_core::engine::Access::Read || r.role.is_some_and(|role| self.0.iter().any(|w| w == role))
    }
}

/// Parses an upstream spec into a target.
fn target(spec: &str, args: &GatewayArgs) -> Result<UpstreamTarget, String> {
    if let Some(addr) = spec.strip_prefix("tcp:") {
        return host_port(spec, addr).map(UpstreamTarget::Tcp);
    }
    if let Some(addr) = spec.strip_prefix("rtu+tcp:") {
        return host_port(spec, addr).map(UpstreamTarget::RtuOverTcp);
    }
    if let Some(port) = spec.strip_prefix("serial:").filter(|p| !p.is_empty()) {
        return Ok(UpstreamTarget::Serial(SerialUpstream {
            port: port.to_owned(),
            framing: match args.framer {
                SerialFramer::Rtu => Framing::Rtu,
                SerialFramer::Ascii => Framing::Ascii,
            },
            baud_rate: args.baudrate,
            data_bits: args.bytesize,
            parity: match args.parity {
                ParityArg::None => Parity::None,
                ParityArg::Even => Parity::Even,
                ParityArg::Odd => Parity::Odd,
            },
            stop_bits: args.stopbits,
        }));
    }
    Err(format!(
        "upstream {spec:?}: expected tcp:HOST:PORT, rtu+tcp:HOST:PORT or serial:PATH"
    ))
}

/// `addr` if it reads `HOST:PORT` (a name or an address; `[v6]:PORT`) with
/// a port from 1 to 65535. The name is looked up at each connect, so an
/// upstream whose name does not resolve yet is down, not refused.
fn host_port(spec: &str, addr: &str) -> Result<String, String> {
    let host_ok = |h: &str| !h.is_empty() && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']')));
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| host_ok(host) && port.parse::<u16>().is_ok_and(|p| p != 0));
    if valid {
        Ok(addr.to_owned())
    } else {
        Err(format!(
            "upstream {spec:?}: expected HOST:PORT after the scheme, with a port from 1 to 65535"
        ))
    }
}

/// The access check from `--roles FILE` (read and checked now, before any
/// socket opens) or `--write-roles`, if either is given.
fn authorizer(args: &GatewayArgs) -> Result<Option<Arc<dyn Authorizer>>, String> {
    if let Some(path) = &args.roles {
        let policy = crate::roles::load(path)?;
        tracing::info!("{}", crate::roles::summary(&policy));
        return Ok(Some(policy));
    }
    Ok((!args.write_roles.is_empty()).then(|| Arc::new(WriteRoles(args.write_roles.clone())) as Arc<dyn Authorizer>))
}

/// The gateway's configuration from the flags; upstreams named the same are one upstream.
fn config(args: &GatewayArgs) -> Result<GatewayConfig, String> {
    let mut config = GatewayConfig {
        policy: Policy {
            read_only: args.read_only,
            authorizer: authorizer(args)?,
        },
        admission: AdmissionOptions {
            max_connections: args.max_connections as usize,
            overflow: args.overflow.into(),
            allow_list: None,
        },
        // Counted only when someone can read the counts.
        metrics: args.metrics.is_some(),
        ..GatewayConfig::default()
    };
    let upstream_index = |spec: &str, config: &mut GatewayConfig| -> Result<Target, String> {
        if spec == "local" {
            if config.local.is_none() {
                let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000).map_err(|e| e.to_string())?;
                config.local = Some(Arc::new(Engine::builder(ServerContext::single(device)).build()));
            }
            return Ok(Target::Local);
        }
        if let Some(i) = config.upstreams.iter().position(|u| u.name == spec) {
            return Ok(Target::Upstream(i));
        }
        let mut u = UpstreamConfig::new(spec, target(spec, args)?);
        u.response_timeout = Duration::from_millis(args.response_timeout_ms);
        u.queue_depth = args.queue_depth as usize;
        u.max_in_flight = args.max_in_flight as usize;
        u.backoff_max = Duration::from_millis(args.max_backoff_ms);
        config.upstreams.push(u);
        Ok(Target::Upstream(config.upstreams.len() - 1))
    };
    for r in &args.route {
        let (units, spec) = r
            .split_once('=')
            .ok_or_else(|| format!("route {r:?}: expected UNITS=SPEC"))?;
        let (units, rewrite_base) = parse_units(units).map_err(|e| e.to_string())?;
        let target = upstream_index(spec, &mut config)?;
        config.routes.push(Route {
            units,
            target,
            rewrite_base,
        });
    }
    if let Some(spec) = &args.upstream {
        config.fallback = Some(upstream_index(spec, &mut config)?);
    }
    if config.routes.is_empty() && config.fallback.is_none() {
        return Err("gateway needs --upstream SPEC or --route UNITS=SPEC".to_owned());
    }
    Ok(config)
}

/// Runs the gateway until SIGINT/SIGTERM. Everything that can fail (the
/// flags, the TLS files, the metrics address, every Modbus address) fails
/// before any client is served: the gateway never opens partially.
pub(crate) async fn run(args: GatewayArgs) -> Result<(), String> {
    let config = config(&args)?;
    let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    let tls = match (&args.listen_tls, &args.cert, &args.key, &args.ca) {
        (Some(_), Some(cert), Some(key), Some(ca)) => {
            let auth = coilwork_tokio::TlsClientAuth::ca_file(ca).map_err(|e| e.to_string())?;
            Some(coilwork_tokio::TlsConfig::from_pem_files(cert, key, auth).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    // Bound first: a metrics address in use stops the start before any Modbus port opens.
    let metrics = args.metrics.map(metrics_http::bind).transpose()?;
    let bind = |a: SocketAddr| async move { tokio::net::TcpListener::bind(a).await.map_err(|e| format!("{a}: {e}")) };
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let udp = match args.listen_udp {
        Some(a) => Some(tokio::net::UdpSocket::bind(a).await.map_err(|e| format!("{a}: {e}"))?),
        None => None,
    };
    let tls = match (args.listen_tls, tls) {
        (Some(a), Some(tls)) => Some((bind(a).await?, tls)),
        _ => None,
    };
    // Registered before any line is announced: a signal right after it must not kill us.
    let stop = termination();
    let gw = Gateway::start(config).map_err(|e| e.to_string())?;
    if let Some(listener) = metrics {
        let g = gw.clone();
        let local = metrics_http::spawn(listener, Arc::new(move || g.prometheus()))?;
        announce(&format!("coilwork: gateway metrics on http://{local}/metrics"));
    }
    if let Some(socket) = udp {
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let g = gw.clone();
        tokio::spawn(async move { g.serve_udp(socket).await });
        announce(&format!("coilwork: gateway on Modbus/UDP {local}"));
    }
    if let Some((listener, tls)) = tls {
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let g = gw.clone();
        tokio::spawn(async move { g.serve_tls(listener, tls).await });
        announce(&format!("coilwork: gateway on Modbus/TLS {local}"));
    }
    let g = gw.clone();
    tokio::spawn(async move { g.serve_tcp(listener).await });
    announce(&format!(
        "coilwork: gateway on Modbus/TCP {addr} to {}",
        names.join(", ")
    ));
    stop.await;
    gw.stop();
    Ok(())
}
