//! `rpc`: serve, call and benchmark rpc-stack endpoints from the shell.
//!
//! Endpoints are URLs: `udp://HOST:PORT`, `tcp://HOST:PORT`, `tls://HOST:PORT`,
//! `unix:///absolute/path`, with options as query parameters (`?codec=msgpack`,
//! `?framing=newline`), and `exec:COMMAND ARGS...` (a program started and called over its stdin
//! and stdout). Run `rpc --help` for the commands and exit codes.

mod bench;
mod demo;
mod many;
mod raw_args;
mod target;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::future::BoxFuture;
use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_codecs::msgpack::{MsgpackRpcCodec, RpcudpCodec};
use rpc_core::{BoxChannel, Client, Codec, Error};
use rpc_transports::{process, raw, tcp, tls, udp, unix, Connected, Serving};

use crate::target::{Address, CodecName, FramingName, Target};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the peer answered with an error
  2  usage error: bad arguments, URL, codec or ARG, or a feature not supported yet
  3  no response within the timeout
  4  transport failure (cannot bind, connect, send or receive)";

/// Exit code: the peer answered with an error.
const EXIT_REMOTE: u8 = 1;
/// Exit code: usage error.
const EXIT_USAGE: u8 = 2;
/// Exit code: timeout.
const EXIT_TIMEOUT: u8 = 3;
/// Exit code: transport failure.
const EXIT_TRANSPORT: u8 = 4;

#[derive(Parser)]
#[command(name = "rpc", version, about = "Serve, call and benchmark rpc-stack endpoints", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the demo service on one or more endpoints until SIGINT or SIGTERM.
    #[command(after_help = "Examples:
  rpc serve --listen udp://127.0.0.1:0
  rpc serve --listen udp://127.0.0.1:4000 --listen tcp://127.0.0.1:4000 --listen unix:///tmp/rpc.sock
  rpc serve --listen tcp://127.0.0.1:4000 --rate-per-peer 100 --max-concurrent 256 --request-timeout 10s
  rpc serve --listen tls://127.0.0.1:4443 --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem]

Methods: sayhi(name), whoami(), echo(args...), add(a, b), sleep(ms), fail(message),
subtract(minuend, subtrahend), sum(numbers...), get_data(), update(...),
notify_hello(...), notify_sum(...); hello, goodbye, add_2_words, func_no_args
(also command ids 0-3).")]
    Serve(ServeArgs),
    /// Call a method and print its result as JSON.
    #[command(
        after_help = "Each ARG is a JSON value: quote strings for the shell and for JSON.

Examples:
  rpc call udp://127.0.0.1:4000 sayhi '\"Ada\"'
  rpc call udp://127.0.0.1:4000 add 2 40
  rpc call udp://127.0.0.1:4000 echo '[1, {\"k\": null}]' --timeout 500ms
  rpc call udp://127.0.0.1:4000 notify_hello 7 --notify
  rpc call tls://localhost:4443 whoami --tls-ca ca.pem [--tls-cert me.pem --tls-key me.key]
  rpc call 'unix:///tmp/nvim.sock?codec=msgpack-rpc' nvim_eval '\"1+2\"'
  rpc call 'exec:nvim --embed --headless --clean' nvim_eval '\"1+2\"' --codec msgpack-rpc"
    )]
    Call(CallArgs),
    /// Load an endpoint with calls and report throughput and latency (of the calls that
    /// succeeded). Exits 0 if any call succeeded; if none did, with the code of the commonest
    /// failure.
    #[command(after_help = "Examples:
  rpc bench udp://127.0.0.1:4000 add 1 2 --concurrency 64 --duration 10s
  rpc bench udp://127.0.0.1:4000 sayhi '\"x\"' --connections 4 --concurrency 32 --json
  rpc bench udp://127.0.0.1:4000 sleep 10 --rate 1000 --duration 5s")]
    Bench(BenchArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// An endpoint URL to listen on; repeat for more. Port 0 picks a free port.
    #[arg(long = "listen", value_name = "URL", required = true)]
    listen: Vec<String>,
    /// The codec, unless a URL names its own (`?codec=`): msgpack, jsonrpc, raw or
    /// msgpack-rpc.
    #[arg(long, default_value = "msgpack", value_parser = CodecName::parse)]
    codec: CodecName,
    /// How frames are delimited on streams, unless a URL names its own (`?framing=`): length,
    /// newline, eot, content-length or msgpack. Default: msgpack for the msgpack-rpc codec,
    /// length otherwise.
    #[arg(long, value_parser = FramingName::parse)]
    framing: Option<FramingName>,
    /// How long shutdown waits for calls in progress.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
    #[command(flatten)]
    transport: TransportLimits,
    #[command(flatten)]
    limits: demo::Limits,
    /// Serve every listener's counters, and the calls' (started, ok, failed, refused, in
    /// flight, latency), in Prometheus' text format at http://HOST:PORT/metrics; they are
    /// brought up to date every second.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
    /// Register every listener in etcd, under the prefix of etcd://HOST:PORT/PREFIX, on a lease
    /// kept alive while serving and revoked at shutdown; callers given the same URL follow it.
    #[arg(long, value_name = "URL")]
    register: Option<String>,
    /// The lease of --register: how long the listeners stay registered after this process dies
    /// without shutting down (whole seconds, at least 1 s; etcd may round it up).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, requires = "register")]
    register_ttl: Duration,
    #[command(flatten)]
    tls: ServeTls,
}

/// The server's side of TLS, for `tls://` listeners.
#[derive(Args)]
struct ServeTls {
    /// For tls:// listeners: the server's certificate chain (PEM, its own certificate first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// For tls:// listeners: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// For tls:// listeners: require client certificates that chain to the CA certificates in
    /// FILE (PEM), mutual TLS; a client without one is refused in the handshake.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

impl ServeTls {
    /// The server configuration, if a certificate was given.
    fn config(&self) -> Result<Option<Arc<tls::rustls::ServerConfig>>, Failure> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = tls::Identity::from_pem_files(cert, key)
            .map_err(|e| Failure::usage(format!("--tls-cert/--tls-key: {e}")))?;
        let client_roots = match &self.tls_client_ca {
            Some(path) => Some(
                tls::Roots::from_pem_file(path)
                    .map_err(|e| Failure::usage(format!("--tls-client-ca: {e}")))?,
            ),
            None => None,
        };
        tls::server_config(identity, client_roots.as_ref())
            .map(Some)
            .map_err(|e| Failure::usage(format!("the TLS configuration: {e}")))
    }
}

/// The client's side of TLS, for `tls://` endpoints.
#[derive(Args)]
pub(crate) struct ClientTls {
    /// For tls:// endpoints: the CA certificates (PEM) the server's certificate must chain to;
    /// without it, the platform's trust store. The server's name is always checked.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// For tls:// endpoints: a client certificate chain (PEM), for servers that ask for one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// For tls:// endpoints: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ClientTls {
    /// The client configuration for `target`, if it is a `tls://` endpoint.
    pub(crate) fn config(
        &self,
        target: &Target,
    ) -> Result<Option<Arc<tls::rustls::ClientConfig>>, Failure> {
        self.config_if(matches!(target.address, Address::Tls { .. }))
    }

    /// Whether any of the TLS options is given.
    pub(crate) fn is_given(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    /// The client configuration if `needed` (some endpoint is a `tls://` one); the options
    /// given when none is are refused.
    pub(crate) fn config_if(
        &self,
        needed: bool,
    ) -> Result<Option<Arc<tls::rustls::ClientConfig>>, Failure> {
        if !needed {
            if self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err(Failure::usage(
                    "--tls-ca, --tls-cert and --tls-key are for tls:// endpoints",
                ));
            }
            return Ok(None);
        }
        let roots = match &self.tls_ca {
            Some(path) => tls::Roots::from_pem_file(path),
            None => tls::Roots::platform(),
        }
        .map_err(|e| Failure::usage(format!("--tls-ca: {e}")))?;
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                tls::Identity::from_pem_files(cert, key)
                    .map_err(|e| Failure::usage(format!("--tls-cert/--tls-key: {e}")))?,
            ),
            _ => None,
        };
        tls::client_config(&roots, identity)
            .map(Some)
            .map_err(|e| Failure::usage(format!("the TLS configuration: {e}")))
    }
}

/// The transports' own bounds on what peers may hold, as `rpc serve` sets them on every listener.
#[derive(Args)]
struct TransportLimits {
    /// Connections kept from one IP address over TCP (a host, whatever its ports); more from it
    /// are closed at once, so one host cannot lock the others out.
    #[arg(long, value_name = "N", default_value_t = rpc_transports::DEFAULT_MAX_CONNECTIONS_PER_IP, value_parser = demo::positive)]
    max_connections_per_ip: usize,
    /// Requests from one IP address served at once, over UDP (of a listener's) and TCP (over
    /// all of the address's connections); more from it are answered "overloaded".
    #[arg(long, value_name = "N", default_value_t = rpc_transports::DEFAULT_MAX_CONCURRENT_REQUESTS_PER_IP, value_parser = demo::positive)]
    max_concurrent_requests_per_ip: usize,
    /// Bytes a listener's connections may hold in frames still arriving and frames being
    /// served; past it the connection holding the most of an unfinished frame is closed.
    #[arg(long, value_name = "BYTES", default_value_t = rpc_transports::DEFAULT_MAX_FRAME_MEMORY, value_parser = demo::positive)]
    max_frame_memory: usize,
    /// In frames over 4 KiB, arguments with more than one value per this many bytes are
    /// answered "message too large" before they are decoded (0: no check).
    #[arg(long, value_name = "BYTES", default_value_t = rpc_transports::DEFAULT_MIN_BYTES_PER_VALUE)]
    min_bytes_per_value: usize,
}

impl TransportLimits {
    /// The settings every transport has.
    fn shared<T>(&self, b: rpc_transports::Builder<T>) -> rpc_transports::Builder<T> {
        b.max_concurrent_requests_per_ip(self.max_concurrent_requests_per_ip)
            .min_bytes_per_value(self.min_bytes_per_value)
    }

    /// The settings of transports over connections too.
    fn connected<T: Connected>(&self, b: rpc_transports::Builder<T>) -> rpc_transports::Builder<T> {
        self.shared(b)
            .max_connections_per_ip(self.max_connections_per_ip)
            .max_frame_memory(self.max_frame_memory)
    }
}

/// What to call: the endpoint, the method and its arguments.
#[derive(Args)]
pub(crate) struct CallTarget {
    /// The endpoint URL; several, comma-separated, or etcd://HOST:PORT/PREFIX, to balance the
    /// calls over them; or exec:COMMAND ARGS... (one argument: quote it for the shell).
    pub(crate) url: String,
    /// The method name.
    pub(crate) method: String,
    /// Arguments, each a JSON value.
    #[arg(value_name = "ARG", allow_negative_numbers = true)]
    pub(crate) args: Vec<String>,
    /// The codec, unless the URL names its own (`?codec=`): msgpack, jsonrpc, raw or
    /// msgpack-rpc.
    #[arg(long, default_value = "msgpack", value_parser = CodecName::parse)]
    pub(crate) codec: CodecName,
    /// How frames are delimited on streams, unless the URL names its own (`?framing=`):
    /// length, newline, eot, content-length or msgpack. Default: msgpack for the msgpack-rpc
    /// codec, length otherwise.
    #[arg(long, value_parser = FramingName::parse)]
    pub(crate) framing: Option<FramingName>,
    #[command(flatten)]
    pub(crate) tls: ClientTls,
}

impl CallTarget {
    /// A client of the endpoint, or a balanced one over the endpoints of a list or an etcd
    /// prefix (counting their successful calls in `successes`, retrying `idempotent` calls that
    /// may have been lost), and the codec it speaks.
    pub(crate) async fn client(
        &self,
        timeout: Duration,
        idempotent: Option<String>,
        successes: Option<&many::Successes>,
    ) -> Result<(Client<BoxChannel>, CodecName), Failure> {
        match many::Many::parse(&self.url).map_err(Failure::usage)? {
            Some(list) => {
                let settings = many::Settings {
                    codec: self.codec,
                    framing: self.framing,
                    timeout,
                    tls: &self.tls,
                    idempotent,
                };
                let client =
                    many::client(&list, settings, successes.unwrap_or(&Default::default())).await?;
                Ok((client, self.codec))
            }
            None => {
                let target =
                    Target::parse(&self.url, self.codec, self.framing).map_err(Failure::usage)?;
                let tls = self.tls.config(&target)?;
                Ok((client_for(&target, timeout, tls.as_ref())?, target.codec))
            }
        }
    }
}

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    target: CallTarget,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How many times to send again after a timeout (the method may then run more than once).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Send a notification: no answer is expected or printed.
    #[arg(long)]
    notify: bool,
    /// Raw codec only: the result's types, comma-separated (u32, str, bytes, ...); without it the
    /// result is printed as hex.
    #[arg(long, value_name = "TYPES")]
    returns: Option<String>,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) target: CallTarget,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) concurrency: u32,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = demo::nonzero_duration)]
    pub(crate) duration: Duration,
    /// Sockets or connections to spread the calls over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) connections: u32,
    /// Calls per second in total; as fast as possible when absent.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// How long each call may wait for its answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Over several endpoints: the method may run more than once, so a call that may have been
    /// lost (its connection lost mid-call, no answer in time) is retried on another endpoint.
    /// Calls that provably did not run are retried either way.
    #[arg(long)]
    pub(crate) idempotent: bool,
}

/// A failure with its exit code.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    fn transport(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_TRANSPORT,
            message: message.into(),
        }
    }

    fn from_call(e: &Error) -> Self {
        let code = match e {
            Error::Server(_) => EXIT_REMOTE,
            Error::Timeout => EXIT_TIMEOUT,
            Error::TooLarge { .. } | Error::Codec(_) => EXIT_USAGE,
            _ => EXIT_TRANSPORT,
        };
        let message = match e {
            Error::Server(s) => match s.data() {
                Some(data) => format!("error {}: {} (data: {data})", s.code(), s.message()),
                None => format!("error {}: {}", s.code(), s.message()),
            },
            other => other.to_string(),
        };
        Self { code, message }
    }
}

/// Parses each ARG as JSON.
pub(crate) fn parse_args(args: &[String]) -> Result<Vec<serde_json::Value>, Failure> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::from_str(a).map_err(|e| {
                // A bare word was most likely meant as a string.
                let bare = !a.contains('"')
                    && !a.starts_with(|c: char| c.is_ascii_digit() || "-[{.".contains(c));
                let hint = if bare {
                    format!("; strings need JSON quotes, as '\"{a}\"'")
                } else {
                    String::new()
                };
                Failure::usage(format!("argument {} ({a:?}) is not JSON: {e}{hint}", i + 1))
            })
        })
        .collect()
}

/// A local address to call `peer` from: loopback or any address, of the peer's family.
fn local_udp_addr(peer: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = match (peer.ip().is_loopback(), peer.is_ipv4()) {
        (true, true) => std::net::Ipv4Addr::LOCALHOST.into(),
        (true, false) => std::net::Ipv6Addr::LOCALHOST.into(),
        (false, true) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (false, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// A client for `target`; `tls` is the configuration of `tls://` targets.
pub(crate) fn client_for(
    target: &Target,
    timeout: Duration,
    tls: Option<&Arc<tls::rustls::ClientConfig>>,
) -> Result<Client<BoxChannel>, Failure> {
    let channel = channel_for(target, timeout, tls)?;
    Ok(Client::new(channel, format_of(target.codec)))
}

/// The format arguments are encoded in for `codec`.
pub(crate) fn format_of(codec: CodecName) -> &'static dyn rpc_core::Format {
    match codec {
        CodecName::Msgpack => RpcudpCodec::new().format(),
        CodecName::MsgpackRpc => MsgpackRpcCodec::new().format(),
        CodecName::JsonRpc => JsonRpcCodec::new().format(),
        CodecName::Raw => &rpc_codecs::raw::LE,
    }
}

/// A channel to `target` (it connects on its first call); `tls` is the configuration of
/// `tls://` targets.
pub(crate) fn channel_for(
    target: &Target,
    timeout: Duration,
    tls: Option<&Arc<tls::rustls::ClientConfig>>,
) -> Result<BoxChannel, Failure> {
    match target.codec {
        CodecName::Msgpack => channel_with(target, RpcudpCodec::new(), timeout, tls),
        CodecName::JsonRpc => channel_with(target, JsonRpcCodec::new(), timeout, tls),
        CodecName::MsgpackRpc => channel_with(target, MsgpackRpcCodec::new(), timeout, tls),
        CodecName::Raw => match &target.address {
            Address::Tcp(addr) => Ok(raw::Builder::new()
                .timeout(timeout)
                .client_tcp(*addr)
                .boxed()
                .into_inner()),
            Address::Tls { addr, host } => Ok(raw::Builder::new()
                .timeout(timeout)
                .client_tls(tls_address(*addr, host, tls)?)
                .boxed()
                .into_inner()),
            Address::Unix(path) => Ok(raw::Builder::new()
                .timeout(timeout)
                .client_unix(path)
                .boxed()
                .into_inner()),
            Address::Udp(_) | Address::Exec(_) => Err(Failure::usage(
                "the raw codec (basic-socket-rpc) runs over tcp://, tls:// or unix://",
            )),
        },
    }
}

/// The request for METHOD and ARGs in `codec`: named methods and JSON arguments, or for
/// the raw codec a command id and typed arguments.
pub(crate) fn request_for(
    codec: CodecName,
    client: &Client<BoxChannel>,
    method: &str,
    args: &[String],
) -> Result<rpc_core::Request, Failure> {
    if codec == CodecName::Raw {
        let id: u16 = method.parse().map_err(|_| {
            Failure::usage(format!(
                "the raw codec calls commands by number (0-65535), not {method:?}"
            ))
        })?;
        let bytes = raw_args::encode(args)?;
        return Ok(rpc_core::Request::new(
            id,
            rpc_core::Payload::new(bytes.into(), &rpc_codecs::raw::LE),
        ));
    }
    let values = parse_args(args)?;
    client
        .request(method.to_string(), &values)
        .map_err(|e| Failure::from_call(&e))
}

/// Where a TLS client connects, with the configuration made for it.
fn tls_address(
    addr: SocketAddr,
    host: &str,
    config: Option<&Arc<tls::rustls::ClientConfig>>,
) -> Result<tls::Address, Failure> {
    let config = config
        .cloned()
        .ok_or_else(|| Failure::usage("a tls:// endpoint needs a TLS configuration"))?;
    tls::Address::new(addr, host, config).map_err(|e| Failure::usage(e.to_string()))
}

/// A channel to `target` whose calls wait at most `timeout` for their answers (the transport's
/// timeout: no request is changed per call).
fn channel_with<C: Codec>(
    target: &Target,
    codec: C,
    timeout: Duration,
    tls: Option<&Arc<tls::rustls::ClientConfig>>,
) -> Result<BoxChannel, Failure> {
    let framing = target.stream_framing();
    Ok(match &target.address {
        Address::Udp(peer) => {
            let cannot =
                |e: std::io::Error| Failure::transport(format!("cannot bind a UDP socket: {e}"));
            let socket = std::net::UdpSocket::bind(local_udp_addr(*peer)).map_err(cannot)?;
            socket.set_nonblocking(true).map_err(cannot)?;
            let socket = tokio::net::UdpSocket::from_std(socket).map_err(cannot)?;
            BoxChannel::new(
                udp::Builder::new()
                    .timeout(timeout)
                    .from_socket(socket, codec)
                    .map_err(cannot)?
                    .channel(*peer),
            )
        }
        Address::Tcp(addr) => BoxChannel::new(
            tcp::Builder::new()
                .timeout(timeout)
                .framing(framing)
                .channel(*addr, codec),
        ),
        Address::Tls { addr, host } => BoxChannel::new(
            tls::Builder::new()
                .timeout(timeout)
                .framing(framing)
                .channel(tls_address(*addr, host, tls)?, codec),
        ),
        Address::Unix(path) => BoxChannel::new(
            unix::Builder::new()
                .timeout(timeout)
                .framing(framing)
                .channel(path, codec),
        ),
        Address::Exec(words) => {
            let mut command = std::process::Command::new(&words[0]);
            command.args(&words[1..]);
            // The child lives as long as its connection: when this process drops it, the
            // child's stdin closes.
            process::builder()
                .timeout(timeout)
                .framing(framing)
                .spawn(command, codec)
                .map_err(|e| Failure::transport(e.to_string()))?
                .client()
                .boxed()
                .into_inner()
        }
    })
}

/// A server started by `rpc serve`, whatever its transport, codec and address type.
trait Running: Send + Sync {
    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, bool>;
    fn stats(&self) -> rpc_transports::Stats;
}

impl<S: Serving> Running for S {
    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, bool> {
        Serving::shutdown(self, grace)
    }

    fn stats(&self) -> rpc_transports::Stats {
        Serving::stats(self)
    }
}

/// A server's counters on one line, as `rpc serve` prints them when it stops.
fn counters_line(url: &str, s: &rpc_transports::Stats) -> String {
    let e = &s.errors_sent;
    format!(
        "counters {url}: requests {}, answers {}, errors {} (method not found {}, invalid params {}, \
         overloaded {}, rate limited {}, deadline exceeded {}, too large {}, internal {}, other {}), \
         malformed {}, withheld {}, overloaded by the transport {}, too dense {}, connections {} \
         (refused {}, closed over the frame memory budget {}), TLS handshakes failed {} (timed \
         out {})",
        s.requests,
        s.responses_sent,
        e.total(),
        e.method_not_found,
        e.invalid_params,
        e.overloaded,
        e.rate_limited,
        e.deadline_exceeded,
        e.message_too_large,
        e.internal_error,
        e.other + e.parse_error + e.invalid_request,
        s.malformed,
        s.withheld,
        s.overloaded,
        s.too_dense,
        s.connections,
        s.connections_refused,
        s.over_budget,
        s.handshakes_failed,
        s.handshakes_timed_out,
    )
}

/// Serves `service` at `target`; returns the server and the URL it listens on.
async fn start(
    target: &Target,
    url: &str,
    service: &demo::Service,
    limits: &TransportLimits,
    tls: Option<&Arc<tls::rustls::ServerConfig>>,
) -> Result<(Box<dyn Running>, String), Failure> {
    let tls_config = || {
        tls.cloned().ok_or_else(|| {
            Failure::usage(format!(
                "{url}: a tls:// listener needs --tls-cert and --tls-key"
            ))
        })
    };
    match target.codec {
        CodecName::Msgpack => {
            start_with(target, RpcudpCodec::new(), url, service, limits, tls_config).await
        }
        CodecName::JsonRpc => {
            start_with(
                target,
                JsonRpcCodec::new(),
                url,
                service,
                limits,
                tls_config,
            )
            .await
        }
        CodecName::MsgpackRpc => {
            start_with(
                target,
                MsgpackRpcCodec::new(),
                url,
                service,
                limits,
                tls_config,
            )
            .await
        }
        CodecName::Raw => {
            let builder = limits.connected(raw::Builder::new()).serve(service.clone());
            let cannot =
                |e: std::io::Error| Failure::transport(format!("cannot listen on {url}: {e}"));
            match &target.address {
                Address::Tcp(addr) => {
                    let s = builder.bind_tcp(*addr).await.map_err(cannot)?;
                    let url = format!("tcp://{}?codec=raw", s.local_addr());
                    Ok((Box::new(s), url))
                }
                Address::Tls { addr, .. } => {
                    let s = builder
                        .bind_tls(*addr, tls_config()?)
                        .await
                        .map_err(cannot)?;
                    let url = format!("tls://{}?codec=raw", s.local_addr());
                    Ok((Box::new(s), url))
                }
                Address::Unix(path) => {
                    let s = builder.bind_unix(path).await.map_err(cannot)?;
                    Ok((Box::new(s), format!("unix://{}?codec=raw", path.display())))
                }
                Address::Udp(_) => Err(Failure::usage(
                    "the raw codec (basic-socket-rpc) runs over tcp:// or unix://, not udp://",
                )),
                Address::Exec(_) => Err(serve_exec()),
            }
        }
    }
}

fn serve_exec() -> Failure {
    Failure::usage("exec: endpoints are for rpc call and rpc bench: rpc serve listens")
}

async fn start_with<C: Codec>(
    target: &Target,
    codec: C,
    url: &str,
    service: &demo::Service,
    limits: &TransportLimits,
    tls: impl FnOnce() -> Result<Arc<tls::rustls::ServerConfig>, Failure>,
) -> Result<(Box<dyn Running>, String), Failure> {
    let cannot = |e: std::io::Error| Failure::transport(format!("cannot listen on {url}: {e}"));
    let suffix = match url.split_once('?') {
        Some((_, query)) => format!("?{query}"),
        None => String::new(),
    };
    let framing = target.stream_framing();
    Ok(match &target.address {
        Address::Udp(addr) => {
            let e = limits
                .shared(udp::Builder::new())
                .serve(service.clone())
                .bind(*addr, codec)
                .await
                .map_err(cannot)?;
            let url = format!("udp://{}{suffix}", e.local_addr());
            (Box::new(e), url)
        }
        Address::Tcp(addr) => {
            let s = limits
                .connected(tcp::Builder::new())
                .framing(framing)
                .serve(service.clone())
                .bind(*addr, codec)
                .await
                .map_err(cannot)?;
            let url = format!("tcp://{}{suffix}", s.local_addr());
            (Box::new(s), url)
        }
        Address::Tls { addr, .. } => {
            let s = limits
                .connected(tls::Builder::new())
                .framing(framing)
                .serve(service.clone())
                .bind(*addr, tls()?, codec)
                .await
                .map_err(cannot)?;
            let url = format!("tls://{}{suffix}", s.local_addr());
            (Box::new(s), url)
        }
        Address::Unix(path) => {
            let s = limits
                .connected(unix::Builder::new())
                .framing(framing)
                .serve(service.clone())
                .bind(path, codec)
                .await
                .map_err(cannot)?;
            (Box::new(s), format!("unix://{}{suffix}", path.display()))
        }
        Address::Exec(_) => return Err(serve_exec()),
    })
}

/// Turns a msgpack value into JSON for printing: byte strings become arrays of numbers, map keys
/// that are not strings are written as their JSON text.
pub(crate) fn to_json(v: rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match v {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(b),
        M::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(J::Null, J::Number),
        M::F64(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        M::String(s) => J::String(s.into_str().unwrap_or_default()),
        M::Binary(b) => J::Array(b.into_iter().map(J::from).collect()),
        M::Array(a) => J::Array(a.into_iter().map(to_json).collect()),
        M::Map(m) => J::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.into_str().unwrap_or_default(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        M::Ext(t, data) => serde_json::json!({ "ext": t, "data": data }),
    }
}

async fn call(args: CallArgs) -> Result<(), Failure> {
    let (client, codec) = args.target.client(args.timeout, None, None).await?;
    if args.returns.is_some() && codec != CodecName::Raw {
        return Err(Failure::usage(
            "--returns is for the raw codec (basic-socket-rpc), whose results carry no types",
        ));
    }
    let request = request_for(codec, &client, &args.target.method, &args.target.args)?;
    if args.notify {
        if codec == CodecName::Raw {
            return Err(Failure::usage("basic-socket-rpc has no notifications"));
        }
        let (method, payload, _) = request.into_parts();
        return client
            .send(rpc_core::Request::notification(method, payload))
            .await
            .map(drop)
            .map_err(|e| Failure::from_call(&e));
    }
    let mut attempt = 0;
    let result = loop {
        // Each attempt gets the whole timeout.
        let mut req = request.clone();
        req.context_mut()
            .set_deadline(Some(rpc_core::context::deadline_after(
                tokio::time::Instant::now(),
                args.timeout,
            )));
        match client.send(req).await {
            Err(Error::Timeout) if attempt < args.retries => attempt += 1,
            other => break other,
        }
    };
    let payload = result.map_err(|e| Failure::from_call(&e))?;
    let json = if codec == CodecName::Raw {
        raw_args::decode(payload.bytes(), args.returns.as_deref())?
    } else {
        to_json(payload.decode().map_err(|e| Failure::from_call(&e))?)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}");
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let signal = shutdown_signal();
    // One service for every listener: its limits ("in all", per IP address) count the calls
    // of all of them together.
    let calls = rpc_middleware::trace::Metrics::new();
    let service = demo::service(&args.limits, calls.clone());
    let tls = args.tls.config()?;
    let targets = args
        .listen
        .iter()
        .map(|url| Target::parse(url, args.codec, args.framing).map_err(Failure::usage))
        .collect::<Result<Vec<_>, _>>()?;
    if tls.is_some()
        && !targets
            .iter()
            .any(|t| matches!(t.address, Address::Tls { .. }))
    {
        return Err(Failure::usage(
            "--tls-cert and --tls-key are for tls:// listeners, and none is given",
        ));
    }
    let mut running: Vec<(Arc<dyn Running>, String)> = Vec::new();
    for (url, target) in args.listen.iter().zip(&targets) {
        // On a failure the process exits, which stops those already started.
        let (server, url) = start(target, url, &service, &args.transport, tls.as_ref()).await?;
        running.push((server.into(), url));
    }
    if let Some(addr) = args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| Failure::transport(format!("cannot serve metrics on {addr}: {e}")))?;
        tokio::spawn(publish_metrics(running.clone(), calls));
    }
    let registration = match &args.register {
        Some(url) => {
            let urls = running
                .iter()
                .zip(&targets)
                .map(|((_, bound), target)| registered_url(bound, target))
                .collect::<Vec<_>>();
            Some(register(url, urls, args.register_ttl).await?)
        }
        None => None,
    };
    // Announced once every listener is up: a script that waits for these lines may use them all.
    let mut out = std::io::stdout();
    for (_, bound) in &running {
        let _ = writeln!(out, "listening on {bound}");
    }
    let _ = out.flush();
    signal.await;
    let _ = writeln!(out, "shutting down");
    let _ = out.flush();
    // Out of the registry first, so that callers stop sending while the listeners drain.
    if let Some(registration) = registration {
        if let Err(e) = registration.deregister().await {
            eprintln!("rpc: leaving etcd: {e}");
        }
    }
    // The listeners drain together: the grace period is the whole wait, not one per listener.
    let drained = running.iter().map(|(server, url)| async move {
        if !server.shutdown(args.grace).await {
            eprintln!(
                "some calls on {url} were still running after {:?}",
                args.grace
            );
        }
    });
    futures::future::join_all(drained).await;
    for (server, url) in &running {
        let _ = writeln!(out, "{}", counters_line(url, &server.stats()));
    }
    let _ = out.flush();
    Ok(())
}

/// The URL a listener is registered under: where it listens, with its codec and (when one was
/// named) its framing, so that callers need not be told them.
fn registered_url(bound: &str, target: &Target) -> String {
    let base = bound.split_once('?').map_or(bound, |(base, _)| base);
    match target.framing {
        Some(framing) => format!("{base}?codec={}&framing={framing}", target.codec),
        None => format!("{base}?codec={}", target.codec),
    }
}

/// Registers `urls` under the prefix of the etcd URL `url`.
async fn register(
    url: &str,
    urls: Vec<String>,
    ttl: Duration,
) -> Result<rpc_balance::etcd::Registration, Failure> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        Failure::usage(format!(
            "--register {url:?}: expected etcd://HOST:PORT/PREFIX"
        ))
    })?;
    let (addr, prefix) = many::etcd_url(url, rest).map_err(Failure::usage)?;
    if let Some(wild) = urls
        .iter()
        .find(|u| u.contains("://0.0.0.0:") || u.contains("://[::]:"))
    {
        return Err(Failure::usage(format!(
            "--register: {wild} names no address a caller can reach; listen on a specific one"
        )));
    }
    let cannot = |e: String| Failure::transport(format!("cannot register in etcd at {addr}: {e}"));
    let client = rpc_balance::etcd::connect([addr.as_str()])
        .await
        .map_err(|e| cannot(e.to_string()))?;
    rpc_balance::etcd::register(client, prefix, urls, ttl)
        .await
        .map_err(|e| cannot(e.to_string()))
}

/// Brings the exporter's counters up to date every second, as long as the process serves.
async fn publish_metrics(
    running: Vec<(Arc<dyn Running>, String)>,
    calls: rpc_middleware::trace::Metrics,
) {
    let labels: Vec<_> = running
        .iter()
        .map(|(_, url)| [metrics::Label::new("listener", url.clone())])
        .collect();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        for ((server, _), labels) in running.iter().zip(&labels) {
            server.stats().publish(labels);
        }
        calls.publish(&[]);
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, before the
/// caller announces that it listens, so a signal sent right after the announcement is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
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
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Command::Bench(a) = &cli.command {
        // `rpc bench` drives each connection's workers from one task: worker threads beyond
        // one per connection would only take a connection's reader away from its callers (more
        // system calls and context switches per call, measured), so it uses no more.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        runtime.worker_threads((a.connections as usize).clamp(1, cores));
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rpc: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_TRANSPORT);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Call(a) => call(a).await,
            Command::Bench(a) => bench::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("rpc: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
