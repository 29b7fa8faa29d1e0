//! The request and response that flow through every service.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::context::Context;
use crate::error::ServerError;
use crate::format::Payload;

/// A method name: UTF-8 text shared with the frame it was read from, so routing copies nothing.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MethodName(Bytes);

impl MethodName {
    /// A name from a static string, without allocating.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Bytes::from_static(name.as_bytes()))
    }

    /// A name from bytes, which must be UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Checked at construction; the bytes are immutable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&'static str> for MethodName {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for MethodName {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

/// What a request asks for: a method by name, or a numeric command id (binary protocols).
///
/// A [`Router`](crate::Router) can register one handler under both.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Method {
    /// A named method, as msgpack and JSON-RPC use.
    Name(MethodName),
    /// A 16-bit command id, as basic-socket-rpc uses.
    Id(u16),
}

impl Method {
    /// A named method from a name of any lifetime (read from a file, built at run time),
    /// copied. A `&'static str` converts without copying (`"sayhi".into()`), and so does a
    /// `String` (moved); a borrowed `&str` of a shorter life goes through here, since a
    /// conversion from every `&str` would copy the literals too, on every call.
    ///
    /// ```
    /// use rpc_core::Method;
    /// let prefix = String::from("greeter");
    /// let m = Method::named(&format!("{prefix}.sayhi"));
    /// assert_eq!(m.name(), Some("greeter.sayhi"));
    /// assert_eq!(Method::from(String::from("x")), Method::named("x"));
    /// ```
    pub fn named(name: &str) -> Self {
        Method::Name(MethodName(Bytes::copy_from_slice(name.as_bytes())))
    }

    /// The name, if the method is named.
    pub fn name(&self) -> Option<&str> {
        match self {
            Method::Name(n) => Some(n.as_str()),
            Method::Id(_) => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Name(n) => f.pad(n.as_str()),
            Method::Id(id) => write!(f, "#{id}"),
        }
    }
}

impl From<&'static str> for Method {
    fn from(s: &'static str) -> Self {
        Method::Name(MethodName::from_static(s))
    }
}

impl From<String> for Method {
    fn from(s: String) -> Self {
        Method::Name(MethodName::from(s))
    }
}

impl From<&String> for Method {
    fn from(s: &String) -> Self {
        Method::named(s)
    }
}

impl From<Box<str>> for Method {
    fn from(s: Box<str>) -> Self {
        Method::from(String::from(s))
    }
}

impl From<MethodName> for Method {
    fn from(n: MethodName) -> Self {
        Method::Name(n)
    }
}

impl From<u16> for Method {
    fn from(id: u16) -> Self {
        Method::Id(id)
    }
}

/// One call: a method, its encoded arguments, and its [`Context`].
///
/// The same type goes into a server's service (built by the transport from a received frame)
/// and into a client's service (built by [`Client`](crate::Client) from typed arguments).
///
/// A request is one pointer wide and cloning it counts a reference: each layer of a stack moves
/// it on in a register, and a retry layer keeps its copy for free. Changing the context of a
/// request that has been cloned copies it first, so clones never see each other's changes.
///
/// ```
/// use rpc_core::{msgpack::MsgPack, Payload, Request};
/// use std::time::Duration;
///
/// let args = Payload::encode(&MsgPack, &(1, 2)).unwrap();
/// let first = Request::new("add", args);
/// let mut second = first.clone();
/// second.context_mut().set_timeout(Duration::from_secs(1));
/// assert!(second.context().deadline().is_some());
/// assert!(first.context().deadline().is_none());
/// ```
#[derive(Clone)]
pub struct Request(Arc<Parts>);

#[derive(Clone)]
struct Parts {
    method: Method,
    args: Payload,
    context: Context,
    notification: bool,
}

impl Request {
    /// A call that expects a response.
    pub fn new(method: impl Into<Method>, args: Payload) -> Self {
        Self::from_parts(method, args, Context::default())
    }

    /// A notification: the peer runs it and sends nothing back.
    pub fn notification(method: impl Into<Method>, args: Payload) -> Self {
        Self(Arc::new(Parts {
            method: method.into(),
            args,
            context: Context::default(),
            notification: true,
        }))
    }

    /// A call from its parts: the inverse of [`into_parts`](Self::into_parts) for a call (a
    /// notification is made with [`notification`](Self::notification) and
    /// [`with_context`](Self::with_context)).
    ///
    /// ```
    /// use rpc_core::{msgpack::MsgPack, Payload, Request};
    ///
    /// let req = Request::new("add", Payload::encode(&MsgPack, &(1, 2)).unwrap());
    /// let (method, args, context) = req.into_parts();
    /// let again = Request::from_parts(method, args, context);
    /// assert_eq!(again.method().name(), Some("add"));
    /// assert!(!again.is_notification());
    /// ```
    pub fn from_parts(method: impl Into<Method>, args: Payload, context: Context) -> Self {
        Self(Arc::new(Parts {
            method: method.into(),
            args,
            context,
            notification: false,
        }))
    }

    /// Replaces the context.
    pub fn with_context(mut self, context: Context) -> Self {
        Arc::make_mut(&mut self.0).context = context;
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.0.method
    }

    /// The encoded arguments.
    pub fn args(&self) -> &Payload {
        &self.0.args
    }

    /// The context.
    pub fn context(&self) -> &Context {
        &self.0.context
    }

    /// The context, to change.
    pub fn context_mut(&mut self) -> &mut Context {
        &mut Arc::make_mut(&mut self.0).context
    }

    /// Whether no response is expected.
    pub fn is_notification(&self) -> bool {
        self.0.notification
    }

    /// Splits the request into its method, arguments and context.
    pub fn into_parts(self) -> (Method, Payload, Context) {
        let p = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Parts::clone(&shared));
        (p.method, p.args, p.context)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.0.method)
            .field("args", &self.0.args)
            .field("context", &self.0.context)
            .field("notification", &self.0.notification)
            .finish()
    }
}

/// What a server's service answers: an encoded result, or an error for the caller.
///
/// Application errors are responses, not `Service::Error`: a transport sends both back the same way.
#[derive(Debug, Clone)]
pub struct Response {
    result: Result<Payload, ServerError>,
}

impl Response {
    /// A successful result.
    pub fn ok(result: Payload) -> Self {
        Self { result: Ok(result) }
    }

    /// An error for the caller.
    pub fn error(error: ServerError) -> Self {
        Self { result: Err(error) }
    }

    /// The result.
    pub fn result(&self) -> Result<&Payload, &ServerError> {
        self.result.as_ref()
    }

    /// Takes the result.
    pub fn into_result(self) -> Result<Payload, ServerError> {
        self.result
    }
}

impl From<ServerError> for Response {
    fn from(e: ServerError) -> Self {
        Response::error(e)
    }
}
