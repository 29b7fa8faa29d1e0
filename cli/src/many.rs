//! Many endpoints for `rpc call` and `rpc bench`: a comma-separated list of URLs
//! (`tcp://127.0.0.1:4000,tcp://127.0.0.1:4001`), or `etcd://HOST:PORT/PREFIX`, the endpoints
//! `rpc serve --register` put there, followed as they come and go.
//!
//! Calls are spread with `rpc_balance` (tower's p2c over peak EWMA), endpoints that fail are
//! ejected for a backoff, and a call that provably did not run (a refused connection) is retried
//! on another endpoint; with `--idempotent` (bench), so is a call that may have been lost (a
//! connection lost mid-call, no answer in time). Every endpoint must speak the codec the
//! command is given (`--codec`, or a URL's own `?codec=`). `exec:` endpoints are one program
//! each, and are not balanced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rpc_balance::discover::Discovery;
use rpc_core::{BoxChannel, Client, Error, Request};
use rpc_middleware::retry::RetryPolicy;
use tower::ServiceExt;

use crate::target::{Address, CodecName, FramingName, Target};
use crate::{channel_for, format_of, ClientTls, Failure};

/// Where the endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Many {
    /// These URLs.
    List(Vec<String>),
    /// The values under `prefix` in the etcd at `addr`.
    Etcd { addr: String, prefix: String },
}

impl Many {
    /// `Some` for a list or an etcd URL, `None` for a single endpoint.
    pub(crate) fn parse(url: &str) -> Result<Option<Many>, String> {
        if let Some(rest) = url.strip_prefix("etcd://") {
            return etcd_url(url, rest).map(|(addr, prefix)| Some(Many::Etcd { addr, prefix }));
        }
        // A command line may hold commas.
        if url.starts_with("exec:") || !url.contains(',') {
            return Ok(None);
        }
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(exec) = urls.iter().find(|u| u.starts_with("exec:")) {
            return Err(format!(
                "{exec:?}: exec: endpoints are one program each, and cannot be listed"
            ));
        }
        Ok(Some(Many::List(urls)))
    }
}

/// `etcd://HOST:PORT/PREFIX`: the address and the key prefix (with its leading `/`).
pub(crate) fn etcd_url(url: &str, rest: &str) -> Result<(String, String), String> {
    match rest.split_once('/') {
        Some((addr, prefix)) if !addr.is_empty() && !prefix.is_empty() => Ok((
            addr.to_owned(),
            format!("/{}", prefix.trim_end_matches('/')),
        )),
        _ => Err(format!(
            "{url:?}: expected etcd://HOST:PORT/PREFIX, as etcd://127.0.0.1:2379/services/echo"
        )),
    }
}

/// The successful calls of each endpoint, by URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct Successes(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Successes {
    fn counter(&self, url: &str) -> Arc<AtomicU64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(url.to_owned())
            .or_default()
            .clone()
    }

    /// What was counted so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(url, n)| (url.clone(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What the endpoints' channels are made with.
pub(crate) struct Settings<'a> {
    pub(crate) codec: CodecName,
    pub(crate) framing: Option<FramingName>,
    pub(crate) timeout: Duration,
    pub(crate) tls: &'a ClientTls,
    /// A method that may run more than once, retried also when its call may have been lost.
    pub(crate) idempotent: Option<String>,
}

/// A balanced client over `many`, counting each endpoint's successful calls in `successes`.
pub(crate) async fn client(
    many: &Many,
    settings: Settings<'_>,
    successes: &Successes,
) -> Result<Client<BoxChannel>, Failure> {
    let (discovery, tls) = match many {
        Many::List(urls) => {
            // Checked now: a typo fails the command rather than one endpoint's calls.
            let mut any_tls = false;
            for url in urls {
                let target =
                    Target::parse(url, settings.codec, settings.framing).map_err(Failure::usage)?;
                if target.codec != settings.codec {
                    return Err(Failure::usage(format!(
                        "{url}: every endpoint of a list speaks one codec ({}), not {}",
                        settings.codec, target.codec
                    )));
                }
                any_tls |= matches!(target.address, Address::Tls { .. });
            }
            let tls = settings.tls.config_if(any_tls)?;
            (Discovery::fixed(urls.clone()), tls)
        }
        Many::Etcd { addr, prefix } => {
            let client = rpc_balance::etcd::connect([addr.as_str()])
                .await
                .map_err(|e| Failure::transport(format!("etcd at {addr}: {e}")))?;
            let tls = settings.tls.config_if(settings.tls.is_given())?;
            (rpc_balance::etcd::watch(client, prefix.clone()), tls)
        }
    };
    let (codec, framing, timeout) = (settings.codec, settings.framing, settings.timeout);
    let successes = successes.clone();
    let connect = move |url: &String| -> BoxChannel {
        let counter = successes.counter(url);
        let channel = Target::parse(url, codec, framing)
            .map_err(Failure::usage)
            .and_then(|target| match target.codec == codec {
                true => channel_for(&target, timeout, tls.as_ref()),
                false => Err(Failure::usage(format!(
                    "it speaks {}, and these calls {codec}",
                    target.codec
                ))),
            });
        match channel {
            Ok(channel) => BoxChannel::new(channel.map_response(move |answer| {
                counter.fetch_add(1, Ordering::Relaxed);
                answer
            })),
            // A registered URL this tool cannot call: its calls fail without running, and are
            // retried on the other endpoints.
            Err(failure) => {
                eprintln!("rpc: endpoint {url}: {}", failure.message);
                let why = failure.message;
                BoxChannel::new(tower::service_fn(move |_: Request| {
                    let why = why.clone();
                    async move {
                        Err::<rpc_core::Payload, _>(Error::Transport(std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            why,
                        )))
                    }
                }))
            }
        }
    };
    let balanced = rpc_balance::builder(connect)
        .timeout(settings.timeout)
        .build(discovery);
    let policy = match settings.idempotent {
        Some(method) => RetryPolicy::new().idempotent([method]),
        None => RetryPolicy::new(),
    };
    let retried = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service(balanced);
    Ok(Client::new(BoxChannel::new(retried), format_of(codec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_etcd_urls() {
        assert_eq!(Many::parse("tcp://127.0.0.1:1"), Ok(None));
        assert_eq!(Many::parse("exec:sh -c 'a,b'"), Ok(None));
        assert_eq!(
            Many::parse("tcp://127.0.0.1:1, tcp://127.0.0.1:2,"),
            Ok(Some(Many::List(vec![
                "tcp://127.0.0.1:1".into(),
                "tcp://127.0.0.1:2".into()
            ])))
        );
        assert_eq!(
            Many::parse("etcd://127.0.0.1:2379/services/echo/"),
            Ok(Some(Many::Etcd {
                addr: "127.0.0.1:2379".into(),
                prefix: "/services/echo".into()
            }))
        );
        assert!(Many::parse("etcd://127.0.0.1:2379").is_err());
        assert!(Many::parse("etcd:///services").is_err());
        assert!(Many::parse("tcp://127.0.0.1:1,exec:cat").is_err());
    }
}
