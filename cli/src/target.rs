//! Endpoint URLs: `udp://HOST:PORT`, `tcp://HOST:PORT`, `tls://HOST:PORT`, `unix:///path`, with
//! `?codec=NAME`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use url::Url;

/// The codecs the tool knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodecName {
    /// msgpack in rpcudp's datagram format.
    Msgpack,
    /// JSON-RPC 2.0.
    JsonRpc,
    /// basic-socket-rpc's binary frames.
    Raw,
}

impl CodecName {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "msgpack" => Ok(Self::Msgpack),
            "jsonrpc" => Ok(Self::JsonRpc),
            "raw" => Ok(Self::Raw),
            other => Err(format!(
                "unknown codec {other:?}: expected msgpack, jsonrpc or raw"
            )),
        }
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Msgpack => "msgpack",
            Self::JsonRpc => "jsonrpc",
            Self::Raw => "raw",
        })
    }
}

/// Where to serve or call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    /// TLS over TCP: the address, and the host as the URL names it (the name the server's
    /// certificate must carry).
    Tls {
        addr: SocketAddr,
        host: String,
    },
    Unix(PathBuf),
}

/// A parsed endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) address: Address,
    pub(crate) codec: CodecName,
}

impl Target {
    /// Parses `url`; `default_codec` applies when the URL names none.
    pub(crate) fn parse(url: &str, default_codec: CodecName) -> Result<Self, String> {
        let parsed = Url::parse(url).map_err(|e| {
            format!("bad endpoint URL {url:?}: {e} (expected udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or unix:///PATH)")
        })?;
        let mut codec = default_codec;
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "codec" => codec = CodecName::parse(&v)?,
                other => {
                    return Err(format!(
                        "unknown URL option {other:?} in {url:?}: expected codec"
                    ))
                }
            }
        }
        let socket = || -> Result<SocketAddr, String> {
            let host = parsed
                .host_str()
                .ok_or_else(|| format!("{url:?} has no host"))?;
            let port = parsed
                .port()
                .ok_or_else(|| format!("{url:?} has no port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host:?} resolves to no address"))
        };
        let address = match parsed.scheme() {
            "udp" => Address::Udp(socket()?),
            "tcp" => Address::Tcp(socket()?),
            "tls" => Address::Tls {
                addr: socket()?,
                host: parsed
                    .host_str()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            },
            "unix" => {
                // The path percent-decoded (`%20` is a space), and absolute.
                let path = parsed
                    .to_file_path()
                    .ok()
                    .filter(|p| p.is_absolute() && parsed.path().starts_with('/'))
                    .filter(|_| parsed.host_str().is_none_or(str::is_empty));
                match path {
                    Some(path) => Address::Unix(path),
                    None => {
                        return Err(format!(
                            "{url:?}: a unix URL takes an absolute path, as unix:///tmp/rpc.sock"
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown scheme {other:?} in {url:?}: expected udp, tcp, tls or unix"
                ))
            }
        };
        Ok(Self { address, codec })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Udp(a) => write!(f, "udp://{a}"),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Tls { addr, .. } => write!(f, "tls://{addr}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let t = Target::parse("udp://127.0.0.1:1234", CodecName::Msgpack).unwrap();
        assert_eq!(t.address, Address::Udp("127.0.0.1:1234".parse().unwrap()));
        let t = Target::parse("tcp://[::1]:80?codec=jsonrpc", CodecName::Msgpack).unwrap();
        assert_eq!(t.address, Address::Tcp("[::1]:80".parse().unwrap()));
        let tls = Target::parse("tls://localhost:443", CodecName::Msgpack).unwrap();
        assert!(
            matches!(&tls.address, Address::Tls { host, addr } if host == "localhost" && addr.port() == 443),
            "{:?}",
            tls.address
        );
        assert_eq!(t.codec, CodecName::JsonRpc);
        let t = Target::parse("unix:///tmp/x.sock", CodecName::Raw).unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/x.sock".into()));
        assert_eq!(t.codec, CodecName::Raw);
        // Percent-encoded characters are decoded.
        let t = Target::parse("unix:///tmp/a%20b%C3%A9.sock", CodecName::Msgpack).unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/a bé.sock".into()));
    }

    #[test]
    fn explains_bad_urls() {
        for (url, says) in [
            ("127.0.0.1:5", "expected udp://HOST:PORT"),
            ("udp://127.0.0.1", "no port"),
            ("http://x:1", "unknown scheme"),
            ("udp://127.0.0.1:1?codec=xml", "unknown codec"),
            ("udp://127.0.0.1:1?speed=9", "unknown URL option"),
            ("not a url", "bad endpoint URL"),
            ("unix:tmp/x.sock", "absolute path"),
            ("unix://host/tmp/x.sock", "absolute path"),
        ] {
            let e = Target::parse(url, CodecName::Msgpack).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
