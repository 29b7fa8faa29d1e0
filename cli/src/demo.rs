//! The demo service `rpc serve` serves.

use std::time::Duration;

use rpc_core::handler::raw;
use rpc_core::{Context, ErrorCode, Request, Route, Router, ServerError};
use serde::{Deserialize, Serialize};

/// The error code `fail` answers with.
pub(crate) const FAIL_CODE: i32 = 1;
/// The longest `sleep` accepted, in milliseconds.
const MAX_SLEEP_MS: u64 = 60_000;

/// A JSON-ish number: integers stay integers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a number")]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }

    fn neg(self) -> Num {
        match self {
            Num::Int(i) => i.checked_neg().map_or(Num::Float(-(i as f64)), Num::Int),
            Num::Float(f) => Num::Float(-f),
        }
    }
}

async fn sayhi(ctx: Context, name: String) -> String {
    match ctx.peer_addr() {
        Some(peer) => format!("Hello {name} you live at {}:{}", peer.ip(), peer.port()),
        None => format!("Hello {name}"),
    }
}

/// Who calls, as the server sees it.
#[derive(Serialize)]
struct Caller {
    /// The caller's address: `IP:PORT`, `unix`, or a stream's name.
    address: String,
    /// Over TLS with a client certificate: its subject, `CN=...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// Over TLS with a client certificate: its subject alternative names (`DNS:...`, `IP:...`,
    /// `email:...`, `URI:...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    /// Over a Unix socket: the caller's user and group ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
}

async fn whoami(ctx: Context) -> Caller {
    let peer = ctx.peer();
    let certificate = peer.and_then(|p| p.certificate());
    let credentials = peer.and_then(|p| p.credentials());
    Caller {
        address: match (ctx.peer_addr(), peer) {
            (Some(a), _) => a.to_string(),
            (None, Some(p)) => p.to_string(),
            (None, None) => "unknown".to_owned(),
        },
        subject: certificate.map(|c| c.subject().to_owned()),
        names: certificate.map(|c| c.names().iter().map(ToString::to_string).collect()),
        uid: credentials.map(|c| c.uid),
        gid: credentials.map(|c| c.gid),
    }
}

async fn add(a: Num, b: Num) -> Num {
    a.add(b)
}

async fn subtract(minuend: Num, subtrahend: Num) -> Num {
    minuend.add(subtrahend.neg())
}

async fn sleep(ms: u64) -> Result<(), ServerError> {
    if ms > MAX_SLEEP_MS {
        return Err(ServerError::invalid_params(format!(
            "sleep is limited to {MAX_SLEEP_MS} ms"
        )));
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

async fn fail(message: String) -> Result<(), ServerError> {
    Err(ServerError::new(ErrorCode::new(FAIL_CODE), message))
}

async fn get_data() -> (&'static str, i64) {
    ("hello", 5)
}

async fn hello(name: String) -> String {
    format!("hello {name}")
}

async fn goodbye(name: String) -> String {
    format!("goodbye {name}")
}

async fn add_2_words(a: u32, b: u32) -> u32 {
    a.wrapping_add(b)
}

async fn func_no_args() {}

/// Any arguments: the list, or its only element.
async fn echo(req: Request) -> Result<rmpv::Value, ServerError> {
    let mut args: Vec<rmpv::Value> = req.args().decode().map_err(ServerError::invalid_params)?;
    Ok(if args.len() == 1 {
        args.pop().unwrap_or(rmpv::Value::Nil)
    } else {
        rmpv::Value::Array(args)
    })
}

async fn sum(req: Request) -> Result<Num, ServerError> {
    let numbers: Vec<Num> = req.args().decode().map_err(ServerError::invalid_params)?;
    Ok(numbers.into_iter().fold(Num::Int(0), Num::add))
}

/// Accepts anything, answers null: for notifications.
async fn accept(_: Request) {}

/// A count of at least one.
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration of more than nothing (`0s` would fail every call).
pub(crate) fn nonzero_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Server-side limits for the demo service.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Limits {
    /// Calls per second allowed to each peer; over it, calls are refused as rate limited.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_peer: Option<u32>,
    /// Calls per second allowed to each IP address, whatever its connections, ports or the
    /// `--listen` they reach; over it, calls are refused as rate limited. Unix socket clients
    /// share one budget.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_ip: Option<u32>,
    /// Calls per second allowed in all, every `--listen` together; over it, calls are refused
    /// as rate limited.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// Calls served at once per peer; more are refused as overloaded.
    #[arg(long, value_name = "N", value_parser = positive)]
    max_concurrent_per_peer: Option<usize>,
    /// Calls served at once per IP address (Unix socket clients share one count); more are
    /// refused as overloaded.
    #[arg(long, value_name = "N", value_parser = positive)]
    max_concurrent_per_ip: Option<usize>,
    /// Calls served at once in all, every `--listen` together; more are refused as overloaded
    /// (load shedding).
    #[arg(long, value_name = "N", value_parser = positive)]
    max_concurrent: Option<usize>,
    /// The time a call may take when its caller set no deadline; longer calls are cancelled.
    #[arg(long, value_name = "DURATION", value_parser = nonzero_duration)]
    request_timeout: Option<Duration>,
}

/// The demo router under the limits asked for, counted in `calls` (outermost first): calls
/// traced and counted, per-peer, per-IP and global rate limits, per-peer and per-IP concurrency,
/// load shedding over a global concurrency limit, and deadlines.
pub(crate) fn service(limits: &Limits, calls: rpc_middleware::trace::Metrics) -> Service {
    use rpc_middleware::deadline::DeadlineLayer;
    use rpc_middleware::limit::{KeyedConcurrencyLimitLayer, RateLimitLayer};
    use tower::{Layer, ServiceBuilder, ServiceExt};

    let second = Duration::from_secs(1);
    let mut deadline = DeadlineLayer::new();
    if let Some(t) = limits.request_timeout {
        deadline = deadline.default_timeout(t);
    }
    let mut svc = Service::new(
        deadline
            .layer(router())
            .map_err(|e: std::convert::Infallible| -> rpc_core::BoxError { match e {} }),
    );
    if let Some(n) = limits.max_concurrent {
        svc = Service::new(
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(n)
                .service(svc),
        );
    }
    if let Some(n) = limits.max_concurrent_per_peer {
        svc = Service::new(KeyedConcurrencyLimitLayer::per_peer(n).layer(svc));
    }
    if let Some(n) = limits.max_concurrent_per_ip {
        svc = Service::new(KeyedConcurrencyLimitLayer::per_ip(n).layer(svc));
    }
    if let Some(n) = limits.rate {
        svc = Service::new(RateLimitLayer::global(n, second).layer(svc));
    }
    if let Some(n) = limits.rate_per_ip {
        svc = Service::new(RateLimitLayer::per_ip(n, second).layer(svc));
    }
    if let Some(n) = limits.rate_per_peer {
        svc = Service::new(RateLimitLayer::per_peer(n, second).layer(svc));
    }
    Service::new(rpc_middleware::trace::TraceLayer::new(calls).layer(svc))
}

/// The demo service with its layers, type-erased.
pub(crate) type Service =
    tower::util::BoxCloneSyncService<Request, rpc_core::Response, rpc_core::BoxError>;

/// The demo router.
pub(crate) fn router() -> Router {
    Router::new()
        .route("sayhi", sayhi)
        .route("whoami", whoami)
        .route("echo", raw(echo))
        .route("add", add)
        .route("sleep", sleep)
        .route("fail", fail)
        .add_route(
            Route::new(subtract)
                .name("subtract")
                .params(["minuend", "subtrahend"]),
        )
        .route("sum", raw(sum))
        .route("get_data", get_data)
        .route("update", raw(accept))
        .route("notify_hello", raw(accept))
        .route("notify_sum", raw(accept))
        .add_route(Route::new(hello).name("hello").command(0))
        .add_route(Route::new(goodbye).name("goodbye").command(1))
        .add_route(Route::new(add_2_words).name("add_2_words").command(2))
        .add_route(Route::new(func_no_args).name("func_no_args").command(3))
}
