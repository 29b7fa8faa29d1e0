//! RPC over Unix stream sockets: the same frames and connections as TCP, plus peer credentials.
//!
//! Handlers read the caller's uid, gid and pid from [`Peer::Unix`](rpc_core::Peer::Unix). The socket file is created
//! with the permissions [`Builder::permissions`] sets (bound in a private directory and linked
//! in place once they are set, so no one connects before), and removed when the server shuts
//! down, if it is still the server's own. Binding over a socket file that a live server listens
//! on fails with `AddrInUse`, over a file that is not a socket with `AlreadyExists`; a stale
//! socket file (one that refuses connections) is replaced.
//!
//! ```
//! use rpc_codecs::msgpack::RpcudpCodec;
//! use rpc_core::{Context, Peer, Router};
//! use rpc_transports::unix;
//!
//! async fn whoami(ctx: Context) -> u32 {
//!     match ctx.peer() {
//!         Some(Peer::Unix { credentials: Some(c) }) => c.uid,
//!         _ => u32::MAX,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::env::temp_dir().join(format!("rpc-doc-{}.sock", std::process::id()));
//! let server = unix::Builder::new()
//!     .permissions(0o600)
//!     .serve(Router::new().route("whoami", whoami))
//!     .bind(&path, RpcudpCodec::new())
//!     .await?;
//! let client = unix::Builder::new().client(&path, RpcudpCodec::new());
//! let uid: u32 = client.call("whoami", ()).await?;
//! assert_ne!(uid, u32::MAX);
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! assert!(!path.exists());
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rpc_core::codec::Codec;
use rpc_core::Client;
use tokio::net::{UnixListener, UnixStream};

use crate::stream::{self, Accept, Io};

/// The Unix socket transport, and its own setting: the socket file's permissions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unix {
    mode: Option<u32>,
}

/// Configures Unix socket servers and clients.
pub type Builder = crate::Builder<stream::Stream<Unix>>;

/// A channel to a Unix socket server.
pub type Channel<C> = stream::Channel<C, Unix>;

impl stream::Transport for Unix {
    type Addr = PathBuf;
    type Local = PathBuf;

    async fn connect(path: &PathBuf) -> io::Result<Io> {
        Ok(Io::from(UnixStream::connect(path).await?))
    }
}

pub(crate) struct Listener {
    listener: UnixListener,
    /// The socket file's device and inode: the server removes the file only while it is this one.
    pub(crate) file: SocketFile,
}

/// A socket file as its server made it: its path, device and inode.
#[derive(Debug, Clone)]
pub(crate) struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn of(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Removes the file if it is still this server's (not one another server bound since).
    pub(crate) fn remove(&self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a socket file: refuses a live server's and any file that is not a socket, replaces a
/// stale socket (one that refuses connections), and gives the file its permissions before
/// anyone can connect.
pub(crate) async fn listen(path: &Path, mode: Option<u32>) -> io::Result<Listener> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket"),
            ))
        }
        Ok(_) => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already listening on {shown}"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %shown, "replacing a stale socket file");
                std::fs::remove_file(path)?;
            }
            // A server too busy to accept now (its queue is full) is still a server.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already listening on {shown} (busy)"),
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{shown}: cannot tell whether a server listens there: {e}"),
                ))
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = match mode {
        None => UnixListener::bind(path)?,
        Some(mode) => bind_with_mode(path, mode)?,
    };
    Ok(Listener {
        listener,
        file: SocketFile::of(path)?,
    })
}

/// Binds in a directory only this process can enter, sets the mode, then links the socket in
/// place (never over an existing file): no one can connect while the mode is the umask's.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = parent.join(format!(
        ".rpc-bind-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::hard_link(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

impl Accept for Listener {
    async fn accept(&mut self) -> io::Result<Io> {
        let (s, _) = self.listener.accept().await?;
        Ok(Io::from(s))
    }
}

impl Builder {
    /// The socket file's permission bits, such as `0o600` (owner only). Default: as the umask leaves them.
    pub fn permissions(mut self, mode: u32) -> Self {
        self.transport.kind.mode = Some(mode);
        self
    }

    /// Binds the socket file at `path` and serves until [`Server::shutdown`].
    ///
    /// Fails with `AddrInUse` if a server is listening there; replaces a stale socket file.
    pub async fn bind<C: Codec>(self, path: impl AsRef<Path>, codec: C) -> io::Result<Server> {
        let path = path.as_ref().to_path_buf();
        let listener = listen(&path, self.transport.kind.mode).await?;
        let file = listener.file.clone();
        Ok(self
            .start_server(listener, codec, path)
            .on_stop(move || file.remove()))
    }

    /// A typed client for the server at `path`; it connects on its first call.
    pub fn client<C: Codec>(self, path: impl AsRef<Path>, codec: C) -> Client<Channel<C>> {
        self.channel(path, codec).into_client()
    }

    /// A channel (a `tower::Service`) to the server at `path`.
    pub fn channel<C: Codec>(self, path: impl AsRef<Path>, codec: C) -> Channel<C> {
        stream::Channel::new(self, path.as_ref().to_path_buf(), codec)
    }
}

/// A running Unix socket server; see [`stream::Server`]. [`shutdown`](stream::Server::shutdown)
/// and dropping the handle both remove the socket file, if it is still the server's own.
pub type Server = stream::Server<Unix>;

impl Server {
    /// The socket file's path.
    pub fn path(&self) -> PathBuf {
        self.local_addr()
    }
}
