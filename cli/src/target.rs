//! Endpoint URLs: `udp://HOST:PORT`, `tcp://HOST:PORT`, `tls://HOST:PORT`, `unix:///path`, with
//! `?codec=NAME` and `?framing=NAME`; and `exec:COMMAND ARGS...`, a program to start and talk to
//! over its stdin and stdout.

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
    /// MessagePack-RPC (neovim's).
    MsgpackRpc,
}

impl CodecName {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "msgpack" => Ok(Self::Msgpack),
            "jsonrpc" => Ok(Self::JsonRpc),
            "raw" => Ok(Self::Raw),
            "msgpack-rpc" => Ok(Self::MsgpackRpc),
            other => Err(format!(
                "unknown codec {other:?}: expected msgpack, jsonrpc, raw or msgpack-rpc"
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
            Self::MsgpackRpc => "msgpack-rpc",
        })
    }
}

/// How frames are delimited on a stream, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingName {
    /// A 4-byte big-endian length before each frame.
    Length,
    /// A newline after each frame.
    Newline,
    /// The byte 0x04 after each frame.
    Eot,
    /// `Content-Length` headers before each frame (the Language Server Protocol's).
    ContentLength,
    /// Each frame one msgpack value, nothing around it.
    Msgpack,
}

impl FramingName {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "length" => Ok(Self::Length),
            "newline" => Ok(Self::Newline),
            "eot" => Ok(Self::Eot),
            "content-length" => Ok(Self::ContentLength),
            "msgpack" => Ok(Self::Msgpack),
            other => Err(format!(
                "unknown framing {other:?}: expected length, newline, eot, content-length or msgpack"
            )),
        }
    }

    /// The framing of a stream with `codec` when none is named: msgpack-rpc's messages delimit
    /// themselves, as neovim sends them; the others are length-prefixed.
    pub(crate) fn default_for(codec: CodecName) -> Self {
        match codec {
            CodecName::MsgpackRpc => Self::Msgpack,
            _ => Self::Length,
        }
    }

    pub(crate) fn framing(self) -> rpc_transports::stream::Framing {
        use rpc_transports::stream::Framing;
        match self {
            Self::Length => Framing::LengthPrefixed,
            Self::Newline => Framing::Newline,
            Self::Eot => Framing::Eot,
            Self::ContentLength => Framing::ContentLength,
            Self::Msgpack => Framing::MsgPack,
        }
    }
}

impl fmt::Display for FramingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Length => "length",
            Self::Newline => "newline",
            Self::Eot => "eot",
            Self::ContentLength => "content-length",
            Self::Msgpack => "msgpack",
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
    /// A program to start, and its arguments: its stdin and stdout are the stream.
    Exec(Vec<String>),
}

/// A parsed endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) address: Address,
    pub(crate) codec: CodecName,
    /// The framing named, if any (streams only).
    pub(crate) framing: Option<FramingName>,
}

impl Target {
    /// Parses `url`; `default_codec` and `default_framing` apply when the URL names none.
    pub(crate) fn parse(
        url: &str,
        default_codec: CodecName,
        default_framing: Option<FramingName>,
    ) -> Result<Self, String> {
        if let Some(line) = url.strip_prefix("exec:") {
            let words = shlex::split(line)
                .ok_or_else(|| format!("{url:?}: an unfinished quote or escape"))?;
            if words.is_empty() {
                return Err(format!(
                    "{url:?}: exec: takes a command, as exec:nvim --embed"
                ));
            }
            return Self {
                address: Address::Exec(words),
                codec: default_codec,
                framing: default_framing,
            }
            .checked(false);
        }
        let parsed = Url::parse(url).map_err(|e| {
            format!("bad endpoint URL {url:?}: {e} (expected udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH or exec:COMMAND)")
        })?;
        let mut codec = default_codec;
        let mut framing = default_framing;
        let mut framing_in_url = false;
        for (k, v) in parsed.query_pairs() {
            match &*k {
                "codec" => codec = CodecName::parse(&v)?,
                "framing" => {
                    framing = Some(FramingName::parse(&v)?);
                    framing_in_url = true;
                }
                other => {
                    return Err(format!(
                        "unknown URL option {other:?} in {url:?}: expected codec or framing"
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
                    "unknown scheme {other:?} in {url:?}: expected udp, tcp, tls, unix or exec"
                ))
            }
        };
        Self {
            address,
            codec,
            framing,
        }
        .checked(framing_in_url)
    }

    /// Where a framing means nothing (over UDP, with basic-socket-rpc's own frames), one the URL
    /// names is refused and one from `--framing` (meant for the other URLs) left out; msgpack
    /// framing carries MessagePack-RPC alone (other codecs' frames are not one msgpack value).
    fn checked(mut self, framing_in_url: bool) -> Result<Self, String> {
        let pointless = match (&self.address, self.codec) {
            (Address::Udp(_), _) => {
                Some("a framing is for streams; over udp:// a datagram is a message")
            }
            (_, CodecName::Raw) => {
                Some("the raw codec (basic-socket-rpc) has frames of its own: no framing")
            }
            _ => None,
        };
        match (pointless, self.framing) {
            (Some(why), Some(_)) if framing_in_url => return Err(why.into()),
            (Some(_), _) => self.framing = None,
            (None, Some(FramingName::Msgpack)) if self.codec != CodecName::MsgpackRpc => {
                return Err(format!(
                    "msgpack framing carries the msgpack-rpc codec only, not {}",
                    self.codec
                ))
            }
            (None, _) => {}
        }
        Ok(self)
    }

    /// The framing of this stream: the one named, or the codec's.
    pub(crate) fn stream_framing(&self) -> rpc_transports::stream::Framing {
        self.framing
            .unwrap_or_else(|| FramingName::default_for(self.codec))
            .framing()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Udp(a) => write!(f, "udp://{a}"),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Tls { addr, .. } => write!(f, "tls://{addr}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Exec(words) => write!(
                f,
                "exec:{}",
                shlex::try_join(words.iter().map(String::as_str)).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let t = Target::parse("udp://127.0.0.1:1234", CodecName::Msgpack, None).unwrap();
        assert_eq!(t.address, Address::Udp("127.0.0.1:1234".parse().unwrap()));
        let t = Target::parse("tcp://[::1]:80?codec=jsonrpc", CodecName::Msgpack, None).unwrap();
        assert_eq!(t.address, Address::Tcp("[::1]:80".parse().unwrap()));
        let tls = Target::parse("tls://localhost:443", CodecName::Msgpack, None).unwrap();
        assert!(
            matches!(&tls.address, Address::Tls { host, addr } if host == "localhost" && addr.port() == 443),
            "{:?}",
            tls.address
        );
        assert_eq!(t.codec, CodecName::JsonRpc);
        let t = Target::parse("unix:///tmp/x.sock", CodecName::Raw, None).unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/x.sock".into()));
        assert_eq!(t.codec, CodecName::Raw);
        // Percent-encoded characters are decoded.
        let t = Target::parse("unix:///tmp/a%20b%C3%A9.sock", CodecName::Msgpack, None).unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/a bé.sock".into()));
        // A command line, split as a shell would, and run without one.
        let t = Target::parse(
            "exec:nvim --embed --cmd 'let g:x = \"a b\"'",
            CodecName::MsgpackRpc,
            None,
        )
        .unwrap();
        assert_eq!(
            t.address,
            Address::Exec(vec![
                "nvim".into(),
                "--embed".into(),
                "--cmd".into(),
                "let g:x = \"a b\"".into()
            ])
        );
        assert!(matches!(
            t.stream_framing(),
            rpc_transports::stream::Framing::MsgPack
        ));
        let t = Target::parse(
            "unix:///tmp/n.sock?codec=jsonrpc&framing=content-length",
            CodecName::Msgpack,
            None,
        )
        .unwrap();
        assert!(matches!(
            t.stream_framing(),
            rpc_transports::stream::Framing::ContentLength
        ));
        let t = Target::parse(
            "tcp://127.0.0.1:1",
            CodecName::JsonRpc,
            Some(FramingName::Newline),
        )
        .unwrap();
        assert!(matches!(
            t.stream_framing(),
            rpc_transports::stream::Framing::Newline
        ));
        // `--framing` is for the streams among several URLs: left out where it means nothing.
        let t = Target::parse(
            "udp://127.0.0.1:1",
            CodecName::Msgpack,
            Some(FramingName::Newline),
        )
        .unwrap();
        assert_eq!(t.framing, None);
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
            ("exec:", "takes a command"),
            ("exec:nvim 'unfinished", "unfinished quote"),
            ("tcp://127.0.0.1:1?framing=xml", "unknown framing"),
            ("udp://127.0.0.1:1?framing=newline", "for streams"),
            (
                "tcp://127.0.0.1:1?codec=raw&framing=newline",
                "frames of its own",
            ),
            (
                "tcp://127.0.0.1:1?codec=jsonrpc&framing=msgpack",
                "msgpack-rpc codec only",
            ),
        ] {
            let e = Target::parse(url, CodecName::Msgpack, None).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
