//! The error model shared by every transport, codec and middleware.
//!
//! Two types cover every failure:
//!
//! - [`ServerError`] is what a handler (or the serving side of the framework) answers with. It travels
//!   on the wire as a response, carries a numeric [`ErrorCode`], a message and optional data, and never
//!   tears down a socket or a connection.
//! - [`Error`] is what a caller sees: a [`ServerError`] that came back, or a failure on the caller's side
//!   (could not send, no response in time, connection closed, message too large, rejected by middleware).

use std::borrow::Cow;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// Alias for a type-erased error type, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `Result` whose error is the caller-side [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A numeric error code, in the JSON-RPC 2.0 numbering that every codec maps onto.
///
/// The standard codes are the JSON-RPC 2.0 ones; the framework's own conditions use the
/// server-defined range `-32000..=-32099`; applications may use any other value.
///
/// ```
/// use rpc_core::ErrorCode;
/// assert_eq!(ErrorCode::METHOD_NOT_FOUND.code(), -32601);
/// assert!(ErrorCode::OVERLOADED.is_server_defined());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(i32);

impl ErrorCode {
    /// Invalid data was received: the message could not be parsed.
    pub const PARSE_ERROR: Self = Self(-32700);
    /// The message is not a valid request.
    pub const INVALID_REQUEST: Self = Self(-32600);
    /// No handler is registered under the requested method.
    pub const METHOD_NOT_FOUND: Self = Self(-32601);
    /// The arguments do not match the handler's parameters.
    pub const INVALID_PARAMS: Self = Self(-32602);
    /// The handler failed in a way it did not describe (it panicked, or returned an internal error).
    pub const INTERNAL_ERROR: Self = Self(-32603);
    /// The server is saturated and refused the call without running it.
    pub const OVERLOADED: Self = Self(-32000);
    /// The caller exceeded its rate limit; the call was not run.
    pub const RATE_LIMITED: Self = Self(-32001);
    /// The call's deadline passed before it completed.
    pub const DEADLINE_EXCEEDED: Self = Self(-32002);
    /// The request or its response exceeds a configured size limit.
    pub const MESSAGE_TOO_LARGE: Self = Self(-32003);
    /// The caller is not allowed to call this method (who it is, where it calls from); the call
    /// was not run. Distinct from [`METHOD_NOT_FOUND`](Self::METHOD_NOT_FOUND): the method may
    /// exist.
    pub const NOT_AUTHORIZED: Self = Self(-32004);

    /// A code with the given number.
    pub const fn new(code: i32) -> Self {
        Self(code)
    }

    /// The number.
    pub const fn code(self) -> i32 {
        self.0
    }

    /// Whether the code is in JSON-RPC's server-defined range, `-32099..=-32000`.
    pub const fn is_server_defined(self) -> bool {
        self.0 >= -32099 && self.0 <= -32000
    }

    /// The standard message for a code the framework defines, if it is one.
    pub const fn default_message(self) -> Option<&'static str> {
        Some(match self.0 {
            -32700 => "parse error",
            -32600 => "invalid request",
            -32601 => "method not found",
            -32602 => "invalid params",
            -32603 => "internal error",
            -32000 => "overloaded",
            -32001 => "rate limited",
            -32002 => "deadline exceeded",
            -32003 => "message too large",
            -32004 => "not authorized",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.default_message() {
            Some(m) => write!(f, "{} ({m})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<i32> for ErrorCode {
    fn from(code: i32) -> Self {
        Self(code)
    }
}

/// An error answered by the serving side: a code, a message and optional data.
///
/// Handlers return it (or any error that converts into it) to fail a call; the framework produces it
/// for unknown methods, bad arguments, overload and expired deadlines. It is sent back as a response.
///
/// ```
/// use rpc_core::{ErrorCode, ServerError};
/// let e = ServerError::new(ErrorCode::new(42), "no such account").with_data(serde_json::json!({"id": 7}));
/// assert_eq!(e.code().code(), 42);
/// assert_eq!(e.to_string(), "no such account (code 42)");
/// ```
///
/// It is deliberately not `Serialize`: each codec writes errors in its own protocol's shape, and a
/// handler's `Result<T, ServerError>` is a result or an error, never a serialized `Result`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerError {
    code: ErrorCode,
    message: Cow<'static, str>,
    data: Option<serde_json::Value>,
}

impl ServerError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches data to the error.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// A refusal: the call was not run (a limit was reached, the server is overloaded). Its data
    /// says so (`{"not_run": true}`), which is how a caller's retry policy tells it from an
    /// error that merely has the same code: -32000 is the first of JSON-RPC's server-defined
    /// codes, and many servers answer any failure with it.
    ///
    /// ```
    /// use rpc_core::{ErrorCode, ServerError};
    /// let e = ServerError::refused(ErrorCode::OVERLOADED, "too busy");
    /// assert!(e.was_refused());
    /// assert!(!ServerError::from_code(ErrorCode::OVERLOADED).was_refused());
    /// ```
    pub fn refused(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code, message).with_data(serde_json::json!({ "not_run": true }))
    }

    /// Whether the error is a [refusal](Self::refused): the call was not run.
    pub fn was_refused(&self) -> bool {
        self.data
            .as_ref()
            .and_then(|d| d.get("not_run"))
            .and_then(serde_json::Value::as_bool)
            == Some(true)
    }

    /// An error with the code's standard message.
    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message().unwrap_or("error"))
    }

    /// [`ErrorCode::METHOD_NOT_FOUND`] naming the method.
    pub fn method_not_found(method: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )
    }

    /// [`ErrorCode::INVALID_PARAMS`] with the reason.
    pub fn invalid_params(reason: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_PARAMS,
            format!("invalid params: {reason}"),
        )
    }

    /// [`ErrorCode::INVALID_REQUEST`] with the reason.
    pub fn invalid_request(reason: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::INVALID_REQUEST,
            format!("invalid request: {reason}"),
        )
    }

    /// [`ErrorCode::INTERNAL_ERROR`] with a message. Say no more than a caller may know.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::INTERNAL_ERROR, message)
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The data, if any.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.data.as_ref()
    }

    /// Turns an error from a service stack into the response a caller gets.
    ///
    /// Known middleware errors keep their meaning: a `ServerError` is itself, tower's `Elapsed`
    /// becomes [`ErrorCode::DEADLINE_EXCEEDED`], tower's `Overloaded` becomes [`ErrorCode::OVERLOADED`].
    /// Anything else becomes a bare internal error: its text is logged, not sent, since it may
    /// describe the server's internals.
    pub fn from_service_error(error: BoxError) -> Self {
        let error = match error.downcast::<ServerError>() {
            Ok(e) => return *e,
            Err(e) => e,
        };
        match Error::of_tower(&*error) {
            Some(Error::Timeout) => Self::from_code(ErrorCode::DEADLINE_EXCEEDED),
            Some(_) => Self::overloaded(),
            None => {
                tracing::warn!(%error, "service failed; answering internal error");
                Self::from_code(ErrorCode::INTERNAL_ERROR)
            }
        }
    }

    /// The refusal of a request the server has no room for: [`ErrorCode::OVERLOADED`], marked
    /// refused (it did not run), with the code's message.
    pub fn overloaded() -> Self {
        let code = ErrorCode::OVERLOADED;
        Self::refused(code, code.default_message().unwrap_or("overloaded"))
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code.0)
    }
}

impl std::error::Error for ServerError {}

/// Why a call failed, as its caller sees it.
///
/// Match on it, or use the predicates ([`is_timeout`](Error::is_timeout) and others), which also
/// recognise the same condition reported by the peer (an overloaded peer and a local load shedder
/// are both [`is_overloaded`](Error::is_overloaded)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be sent, or the transport failed while the call was in flight.
    Transport(io::Error),
    /// No response arrived before the call's deadline. Over a datagram transport this is also what a
    /// lost request, a lost response, or a peer that never answers errors looks like.
    Timeout,
    /// The peer answered with an error.
    Server(ServerError),
    /// The encoded request is larger than the transport or codec accepts; it was not sent.
    TooLarge {
        /// The size of the encoded message, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// Arguments could not be encoded, or a response could not be decoded into the expected type.
    Codec(BoxError),
    /// The endpoint or connection is closed.
    Closed,
    /// Local middleware shed the call before it was sent (tower's load shedding).
    Overloaded,
    /// Local middleware refused the call before it was sent (a rate or concurrency limit); the
    /// error says why, with the same codes a server would use (and a retry-after hint in its data
    /// where there is one).
    Rejected(ServerError),
    /// Any other failure raised by middleware.
    Other(BoxError),
}

impl Error {
    /// A result that did not decode, saying of which method's call.
    pub(crate) fn in_result_of(self, method: &crate::Method) -> Self {
        match self {
            Error::Codec(e) => Error::Codec(format!("the result of {method}: {e}").into()),
            other => other,
        }
    }

    /// Whether the call ran out of time, locally or at the peer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout) || self.code() == Some(ErrorCode::DEADLINE_EXCEEDED)
    }

    /// Whether the call was refused for load, locally or by the peer.
    pub fn is_overloaded(&self) -> bool {
        let code = match self {
            Error::Overloaded => return true,
            Error::Rejected(e) => Some(e.code()),
            _ => self.code(),
        };
        matches!(
            code,
            Some(ErrorCode::OVERLOADED) | Some(ErrorCode::RATE_LIMITED)
        )
    }

    /// Whether the endpoint or connection is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// Whether the peer answered that the method does not exist.
    pub fn is_method_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::METHOD_NOT_FOUND)
    }

    /// Whether the peer answered that the arguments were invalid.
    pub fn is_invalid_params(&self) -> bool {
        self.code() == Some(ErrorCode::INVALID_PARAMS)
    }

    /// The peer's error code, when the peer answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(e) => Some(e.code()),
            _ => None,
        }
    }

    /// The peer's error, when the peer answered with one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// Recovers an `Error` from the boxed error of a middleware stack.
    ///
    /// An `Error` is unboxed; tower's `Elapsed` becomes [`Error::Timeout`] and its `Overloaded`
    /// [`Error::Overloaded`]; a [`ServerError`] becomes [`Error::Server`]; an `io::Error` becomes
    /// [`Error::Transport`]; anything else is kept as [`Error::Other`].
    pub fn from_boxed(error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(e) => return *e,
            Err(e) => e,
        };
        let error = match error.downcast::<ServerError>() {
            Ok(e) => return Error::Server(*e),
            Err(e) => e,
        };
        let error = match error.downcast::<io::Error>() {
            Ok(e) => return Error::Transport(*e),
            Err(e) => e,
        };
        Self::of_tower(&*error).unwrap_or(Error::Other(error))
    }

    /// The errors of tower's own layers that the error model knows, recognised here and nowhere
    /// else: a `Timeout` layer's `Elapsed` is [`Error::Timeout`], a `LoadShed` layer's
    /// `Overloaded` is [`Error::Overloaded`]; `None` for any other error.
    ///
    /// ```
    /// use rpc_core::Error;
    ///
    /// let shed = tower::load_shed::error::Overloaded::new();
    /// assert!(matches!(Error::of_tower(&shed), Some(Error::Overloaded)));
    /// assert!(Error::of_tower(&std::fmt::Error).is_none());
    /// ```
    pub fn of_tower(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        if error.is::<tower::timeout::error::Elapsed>() {
            Some(Error::Timeout)
        } else if error.is::<tower::load_shed::error::Overloaded>() {
            Some(Error::Overloaded)
        } else {
            None
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(e) => write!(f, "transport error: {e}"),
            Error::Timeout => f.pad("no response within the timeout"),
            Error::Server(e) => write!(f, "the peer answered with an error: {e}"),
            Error::TooLarge { size, limit } => write!(
                f,
                "message of {size} bytes exceeds the limit of {limit} bytes"
            ),
            Error::Codec(e) => write!(f, "codec error: {e}"),
            Error::Closed => f.pad("the endpoint is closed"),
            Error::Overloaded => f.pad("rejected by local middleware: overloaded"),
            Error::Rejected(e) => write!(f, "rejected by local middleware: {e}"),
            Error::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            Error::Server(e) | Error::Rejected(e) => Some(e),
            Error::Codec(e) | Error::Other(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A failed call made by a handler, as the handler's own caller sees it: the call ran out of
/// time ([`ErrorCode::DEADLINE_EXCEEDED`]), or it failed (an internal error), without the
/// details, which may name addresses, peers or their messages: those are logged at warn level,
/// not sent. `?` in a handler returning `Result<T, ServerError>` uses it; a handler that means to
/// pass a peer's error on matches on [`Error::Server`] itself.
///
/// ```
/// use rpc_core::{Error, ErrorCode, ServerError};
///
/// let told: ServerError = Error::Timeout.into();
/// assert_eq!(told.code(), ErrorCode::DEADLINE_EXCEEDED);
/// let told: ServerError = Error::Transport(std::io::Error::other("10.0.0.7:9 refused")).into();
/// assert_eq!(told.code(), ErrorCode::INTERNAL_ERROR);
/// assert!(!told.message().contains("10.0.0.7"));
/// ```
impl From<Error> for ServerError {
    fn from(e: Error) -> Self {
        tracing::warn!(error = %e, "a call made by a handler failed");
        if e.is_timeout() {
            ServerError::new(
                ErrorCode::DEADLINE_EXCEEDED,
                "a call made by the handler ran out of time",
            )
        } else {
            ServerError::internal("a call made by the handler failed")
        }
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Self {
        Error::Server(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Transport(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middleware_errors_keep_their_meaning() {
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(Error::from_boxed(elapsed).is_timeout());
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert!(Error::from_boxed(shed).is_overloaded());
        let inner: BoxError = Box::new(Error::Closed);
        assert!(Error::from_boxed(inner).is_closed());

        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            ServerError::from_service_error(elapsed).code(),
            ErrorCode::DEADLINE_EXCEEDED
        );
        let other: BoxError = "secret path /etc/x".into();
        let e = ServerError::from_service_error(other);
        assert_eq!(e.code(), ErrorCode::INTERNAL_ERROR);
        assert!(!e.message().contains("secret"));
    }
}
