//! Endpoints from DNS: a name re-resolved periodically, every A and AAAA record an endpoint (as
//! Kubernetes publishes a headless service's pods).
//!
//! [`watch`] looks the name up at once and then every `every`, and sends the changes: addresses
//! that appeared are inserted, those gone are removed. An answer replaces the set, an answer with
//! no records included (the name is gone, so are its endpoints); a look-up that gets no answer
//! (the name server is unreachable, times out) changes nothing, and the next look-up tries again.
//! Records are cached for their TTL by the resolver, as DNS intends.
//!
//! ```
//! use rpc_balance::dns;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The system's name servers (resolv.conf).
//! let resolver = dns::system_resolver()?;
//! let discovery = dns::watch(resolver, "localhost", 4000, Duration::from_secs(30));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::ResolveError;
pub use hickory_resolver::TokioResolver as Resolver;

use crate::discover::{self, Discovery};

/// A resolver with the system's configuration (`/etc/resolv.conf` on Unix) that asks for both A
/// and AAAA records.
pub fn system_resolver() -> Result<Resolver, ResolveError> {
    let mut builder = Resolver::builder_tokio()?;
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}

/// A resolver that asks the name server at `server` alone (over UDP, and TCP for truncated
/// answers) for both A and AAAA records, and does not read the hosts file.
pub fn resolver_at(server: SocketAddr) -> Resolver {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
    let mut options = ResolverOpts::default();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = Duration::from_secs(2);
    Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}

/// The endpoints `name` resolves to, with `port`, looked up now and every `every` (see the
/// [module docs](self)); the look-ups stop when the discovery is dropped. Must be called within
/// a tokio runtime.
pub fn watch(
    resolver: Resolver,
    name: impl Into<String>,
    port: u16,
    every: Duration,
) -> Discovery<SocketAddr> {
    let name = name.into();
    let (endpoints, discovery) = discover::set();
    tokio::spawn(async move {
        // Looked up no more than a hundred times a second, whatever `every` says.
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = endpoints.closed() => return,
                _ = ticks.tick() => {}
            }
            match resolver.lookup_ip(name.as_str()).await {
                Ok(ips) => endpoints.replace(ips.iter().map(|ip| SocketAddr::new(ip, port))),
                Err(e) if e.is_no_records_found() => endpoints.replace([]),
                Err(error) => {
                    tracing::warn!(%error, name, "DNS look-up failed; keeping the endpoints")
                }
            }
        }
    });
    discovery
}
