//! Processes as peers: a child's stdin and stdout as a connection ([`Builder::spawn`]), and a
//! program's own stdin and stdout ([`Builder::stdio`]), for a language server, a neovim plugin
//! host or any program that a parent talks to through its standard streams.
//!
//! They are stream connections like any other (see [`stream`](crate::stream)): both ends serve and
//! call, with the builder's framing (a language server's is
//! [`Framing::ContentLength`](crate::stream::Framing::ContentLength), neovim's
//! [`Framing::MsgPack`](crate::stream::Framing::MsgPack)) and limits. [`builder`] starts with no
//! idle timeout: a parent or child that says nothing for an hour has not gone.
//!
//! ```
//! use rpc_codecs::jsonrpc::JsonRpcCodec;
//! use rpc_transports::process;
//! use rpc_transports::stream::Framing;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A child that answers one JSON-RPC call on its stdout, then exits with status 3.
//! let mut command = std::process::Command::new("sh");
//! command.args(["-c", r#"read -r call; echo '{"jsonrpc":"2.0","id":1,"result":42}'; exit 3"#]);
//! let child = process::builder()
//!     .framing(Framing::Newline)
//!     .spawn(command, JsonRpcCodec::new())?;
//! let answer: i64 = child.client().call("answer", ()).await?;
//! assert_eq!(answer, 42);
//! assert_eq!(child.wait().await?.code(), Some(3));
//! # Ok(())
//! # }
//! ```
//!
//! # Children
//!
//! The child's stdin and stdout are the connection; its stderr is left as the command says
//! (inherited unless set). When the child exits, what it wrote before is still read, and the
//! calls still waiting fail at once with a transport error (not at their deadlines), even if a
//! process the child started holds its stdout open: that one gets 1 s to close it, then the
//! connection is closed. [`Child::wait`] gives the exit status (the calls' error may not name
//! it: the end of the child's stdout often comes before its status).
//!
//! Closing the connection ([`Connection::close`], or dropping every handle of it and of the
//! `Child`) closes the child's stdin, which tells a well-behaved child to exit; a child still
//! running 5 s after its connection closed is killed, so none outlives its handles for long.
//! [`Child::kill`] kills it at once.
//!
//! # One's own stdio
//!
//! [`Builder::stdio`] serves and calls over the program's stdin and stdout. Nothing else may
//! write to stdout then (log to stderr). tokio reads stdin on a thread of its blocking pool, so
//! a program whose parent never closes stdin waits for that read as its runtime shuts down.

use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::codec::Codec;
use rpc_core::{Client, Peer};
use tokio::sync::{watch, Notify};

use crate::stream::{Builder, Connection, Io, Stream};

/// How long the stdout of a child that exited may stay open (held by a process it started)
/// before its connection is closed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How long a child may run on once its connection is closed before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The settings of stream connections, with no idle timeout: see the [module](self).
pub fn builder() -> Builder<Stream<()>> {
    crate::stream::builder().idle_timeout(None)
}

impl<K> Builder<Stream<K>> {
    /// Starts `command` with its stdin and stdout piped and runs a connection over them: the
    /// child is the peer. Must be called within a tokio runtime. Fails if the program cannot be
    /// started.
    ///
    /// The peer is named after the program and its process id (`Peer::Stream("nvim[4242]")`).
    pub fn spawn<C: Codec>(
        self,
        command: impl Into<tokio::process::Command>,
        codec: C,
    ) -> io::Result<Child<C>> {
        let mut command: tokio::process::Command = command.into();
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {program:?}: {e}")))?;
        let id = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("stdin and stdout are piped above")
        };
        let name = match id {
            Some(pid) => format!("{program}[{pid}]"),
            None => program,
        };
        let io = Io::from_halves(stdout, stdin).with_peer(Peer::Stream(name.as_str().into()));
        let connection = self.start(io, codec);
        let (status_tx, status) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        tokio::spawn(watch_child(
            child,
            connection.weak(),
            name,
            status_tx,
            kill.clone(),
        ));
        Ok(Child {
            connection,
            id,
            status,
            kill,
        })
    }

    /// Runs a connection over this program's own stdin and stdout: the parent is the peer
    /// (`Peer::Stream("stdio")`). Must be called within a tokio runtime; see the
    /// [module](self) for what it asks of the program.
    pub fn stdio<C: Codec>(self, codec: C) -> Connection<C> {
        let io = Io::from_halves(tokio::io::stdin(), tokio::io::stdout())
            .with_peer(Peer::Stream("stdio".into()));
        self.start(io, codec)
    }
}

/// How a child ended, as [`Child::wait`] gives it.
type Ended = Option<Result<ExitStatus, Arc<io::Error>>>;

/// Waits for the child to exit (killing it when asked, or once it outlives its connection by
/// [`STOP_GRACE`]), publishes how it ended, and then makes sure the connection ends too.
async fn watch_child<C: Codec>(
    mut child: tokio::process::Child,
    connection: Connection<C>,
    name: String,
    status: watch::Sender<Ended>,
    kill: Arc<Notify>,
) {
    let outlived = async {
        connection.closed().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    let ended = tokio::select! {
        ended = child.wait() => ended,
        _ = kill.notified() => {
            let _ = child.start_kill();
            child.wait().await
        }
        _ = outlived => {
            tracing::debug!(peer = %name, "killing a child that outlived its connection");
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let why = match &ended {
        Ok(s) => format!("{name} exited ({s})"),
        Err(e) => format!("{name} could not be waited for: {e}"),
    };
    tracing::debug!(peer = %name, "{why}");
    status.send_replace(Some(ended.map_err(Arc::new)));
    // What it wrote before it exited is in the pipe: the reader takes it, then sees the end
    // of the stream. A process it started may hold the pipe open, hence the limit.
    if tokio::time::timeout(EXIT_GRACE, connection.closed())
        .await
        .is_err()
    {
        connection.lose(io::ErrorKind::BrokenPipe, why);
    }
}

/// A child process and the connection over its stdin and stdout, made by [`Builder::spawn`].
///
/// It is the connection's handle (as [`Connection`], which [`connection`](Child::connection)
/// gives) and the process's: its id, its exit status, a way to kill it. Cloning is cheap.
pub struct Child<C: Codec> {
    connection: Connection<C>,
    id: Option<u32>,
    status: watch::Receiver<Ended>,
    kill: Arc<Notify>,
}

impl<C: Codec> Child<C> {
    /// A typed client of the child.
    pub fn client(&self) -> Client<Connection<C>> {
        self.connection.client()
    }

    /// The connection over the child's stdin and stdout (a `tower::Service` of calls to it).
    pub fn connection(&self) -> &Connection<C> {
        &self.connection
    }

    /// The child's process id, if it was running when started (it is, unless it exited at
    /// once).
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// Waits for the child to exit and gives its exit status. It does not close the
    /// connection first: a child that waits for its stdin to end needs
    /// [`Connection::close`] (or [`Connection::shutdown`]) called on
    /// [`connection`](Child::connection) first.
    pub async fn wait(&self) -> io::Result<ExitStatus> {
        let mut status = self.status.clone();
        let ended = status
            .wait_for(Option::is_some)
            .await
            .map_err(|_| io::Error::other("the child's watcher stopped"))?;
        match ended.as_ref().expect("waited for Some") {
            Ok(s) => Ok(*s),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// The exit status, if the child has exited (`None` while it runs, and if waiting for it
    /// failed: [`wait`](Child::wait) says why).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        match &*self.status.borrow() {
            Some(Ok(s)) => Some(*s),
            _ => None,
        }
    }

    /// Kills the child (SIGKILL on Unix), if it still runs; [`wait`](Child::wait) then gives
    /// the status it ended with.
    pub fn kill(&self) {
        self.kill.notify_one();
    }
}

impl<C: Codec> Clone for Child<C> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            id: self.id,
            status: self.status.clone(),
            kill: self.kill.clone(),
        }
    }
}

impl<C: Codec> fmt::Debug for Child<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.id)
            .field("connection", &self.connection)
            .field("exited", &self.try_wait())
            .finish()
    }
}
