//! Handlers: plain async functions with typed arguments.
//!
//! Any `async fn` (or closure returning a future) whose parameters are `DeserializeOwned` is a
//! handler, optionally taking the call's [`Context`] first:
//!
//! ```
//! use rpc_core::Context;
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! async fn sayhi(ctx: Context, name: String) -> String {
//!     let peer = ctx.peer_addr().expect("served over an IP transport");
//!     format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
//! }
//!
//! let router = rpc_core::Router::new().route("add", add).route("sayhi", sayhi);
//! # let _ = router;
//! ```
//!
//! A handler returns any `Serialize` value through [`IntoReply`]: plain values, or
//! `Result<T, E>` where `E: Into<ServerError>` to fail the call with an error the caller sees.
//! A handler that panics answers [`ErrorCode::INTERNAL_ERROR`](crate::ErrorCode::INTERNAL_ERROR);
//! the server keeps serving.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::future::{BoxFuture, FutureExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::error::ServerError;
use crate::format::{FromArgs, Payload};
use crate::message::{Request, Response};

/// A value a handler can return: any `T: Serialize`, a `Result<T, E>` whose error converts into a
/// [`ServerError`], a [`ServerError`], or a ready-made [`Response`].
///
/// `M` only tells the implementations apart and is always inferred. (A `Result` whose error type
/// is itself `Serialize` is ambiguous; convert the error into a `ServerError` first.)
pub trait IntoReply<M> {
    /// Encodes the value as a response in the request's format.
    fn into_reply(self, format: &'static dyn crate::Format) -> Response;
}

/// Marks [`IntoReply`] for plain values.
#[derive(Debug)]
pub enum Value {}

/// Marks [`IntoReply`] for `Result`s.
#[derive(Debug)]
pub enum Fallible {}

/// Marks [`IntoReply`] for responses and errors.
#[derive(Debug)]
pub enum Direct {}

fn encode_reply<T: Serialize + ?Sized>(value: &T, format: &'static dyn crate::Format) -> Response {
    match Payload::encode(format, value) {
        Ok(p) => Response::ok(p),
        Err(e) => {
            tracing::warn!(error = %e, "could not encode a handler's result");
            Response::error(ServerError::internal("could not encode the result"))
        }
    }
}

impl<T: Serialize> IntoReply<Value> for T {
    fn into_reply(self, format: &'static dyn crate::Format) -> Response {
        encode_reply(&self, format)
    }
}

impl<T: Serialize, E: Into<ServerError>> IntoReply<Fallible> for Result<T, E> {
    fn into_reply(self, format: &'static dyn crate::Format) -> Response {
        match self {
            Ok(v) => encode_reply(&v, format),
            Err(e) => Response::error(e.into()),
        }
    }
}

impl IntoReply<Direct> for Response {
    fn into_reply(self, _: &'static dyn crate::Format) -> Response {
        self
    }
}

impl IntoReply<Direct> for ServerError {
    fn into_reply(self, _: &'static dyn crate::Format) -> Response {
        Response::error(self)
    }
}

/// Marks handlers whose first parameter is the call's [`Context`].
#[derive(Debug)]
pub struct WithContext;

/// Marks handlers that take only their arguments.
#[derive(Debug)]
pub struct ArgsOnly;

/// An async function that can serve a method. `T` is inferred; it only tells implementations apart.
pub trait Handler<T>: Clone + Send + Sync + 'static {
    /// Decodes the arguments and runs the handler.
    #[doc(hidden)]
    fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response>;

    /// How many arguments the handler takes, not counting the context.
    #[doc(hidden)]
    fn arity(&self) -> usize;
}

fn run<Fut, R, M>(fut: Fut, format: &'static dyn crate::Format) -> BoxFuture<'static, Response>
where
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply<M>,
{
    Box::pin(AssertUnwindSafe(fut).catch_unwind().map(move |r| match r {
        Ok(r) => r.into_reply(format),
        Err(_) => {
            tracing::error!("handler panicked");
            Response::error(ServerError::internal("the handler panicked"))
        }
    }))
}

macro_rules! handlers {
    ($($t:ident $v:ident),*) => {
        impl<F, Fut, R, M, $($t,)*> Handler<(ArgsOnly, M, $($t,)*)> for F
        where
            F: Fn($($t,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply<M>,
            $($t: DeserializeOwned + Send + 'static,)*
        {
            fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
                let format = req.args().format();
                match <($($t,)*) as FromArgs>::from_args(req.args(), names) {
                    Ok(($($v,)*)) => run((self)($($v,)*), format),
                    Err(e) => bad_args(&req, e),
                }
            }

            fn arity(&self) -> usize {
                <($($t,)*) as FromArgs>::ARITY
            }
        }

        impl<F, Fut, R, M, S, $($t,)*> Handler<(WithState, M, S, $($t,)*)> for F
        where
            F: Fn(State<S>, $($t,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply<M>,
            S: Clone + Send + Sync + 'static,
            $($t: DeserializeOwned + Send + 'static,)*
        {
            fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
                let format = req.args().format();
                let Some(state) = req.context().extensions().get::<S>().cloned() else {
                    return Box::pin(futures::future::ready(Response::error(no_state::<S>(req.method()))));
                };
                match <($($t,)*) as FromArgs>::from_args(req.args(), names) {
                    Ok(($($v,)*)) => run((self)(State(state), $($v,)*), format),
                    Err(e) => bad_args(&req, e),
                }
            }

            fn arity(&self) -> usize {
                <($($t,)*) as FromArgs>::ARITY
            }
        }

        impl<F, Fut, R, M, $($t,)*> Handler<(WithContext, M, $($t,)*)> for F
        where
            F: Fn(Context, $($t,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply<M>,
            $($t: DeserializeOwned + Send + 'static,)*
        {
            fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
                let format = req.args().format();
                match <($($t,)*) as FromArgs>::from_args(req.args(), names) {
                    Ok(($($v,)*)) => {
                        let (_, _, ctx) = req.into_parts();
                        run((self)(ctx, $($v,)*), format)
                    }
                    Err(e) => bad_args(&req, e),
                }
            }

            fn arity(&self) -> usize {
                <($($t,)*) as FromArgs>::ARITY
            }
        }
    };
}

/// State shared by a [`Router::with_state`](crate::Router::with_state) with its handlers: a
/// handler takes `State<T>` as its first parameter (instead of a closure and clones per route).
///
/// ```
/// use rpc_core::{handler::State, Router};
///
/// #[derive(Clone)]
/// struct Config {
///     greeting: String,
/// }
///
/// async fn greet(State(config): State<Config>, name: String) -> String {
///     format!("{} {name}", config.greeting)
/// }
///
/// let router = Router::new()
///     .route("greet", greet)
///     .with_state(Config { greeting: "Hello".into() });
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

/// Marks handlers that take a [`State`].
#[derive(Debug)]
pub struct WithState;

/// The answer to arguments that do not fit the handler: the error goes to the caller, and the
/// log says which method and peer.
fn bad_args(req: &Request, e: ServerError) -> BoxFuture<'static, Response> {
    tracing::debug!(method = %req.method(), peer = ?req.context().peer(), error = e.message(), "arguments that do not fit the handler");
    Box::pin(futures::future::ready(Response::error(e)))
}

/// The answer of a handler whose router was given no state of its type: a server's mistake, so
/// an internal error that names no internals to the peer (the log says which type).
fn no_state<S>(method: &crate::Method) -> ServerError {
    tracing::error!(%method, state = std::any::type_name::<S>(), "a handler's state was not given to its router: add it with Router::with_state");
    ServerError::internal("the server is not configured for this method")
}

handlers!();
handlers!(A1 a1);
handlers!(A1 a1, A2 a2);
handlers!(A1 a1, A2 a2, A3 a3);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11);
handlers!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11, A12 a12);

/// A handler over the raw request: for methods whose arguments are not a fixed list of types
/// (variadic methods, caller-supplied byte payloads, proxies).
///
/// ```
/// use rpc_core::{handler::raw, Request, Response};
///
/// // Answers with its arguments, whatever they are.
/// let echo = raw(|req: Request| async move { Response::ok(req.args().clone()) });
/// let router = rpc_core::Router::new().route("echo", echo);
/// # let _ = router;
/// ```
pub fn raw<F, Fut, R, M>(f: F) -> Raw<F>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply<M>,
{
    Raw(f)
}

/// A handler over the raw request; see [`raw`].
#[derive(Clone, Debug)]
pub struct Raw<F>(F);

/// Marks [`Raw`] handlers.
#[derive(Debug)]
pub struct RawRequest;

impl<F, Fut, R, M> Handler<(RawRequest, M)> for Raw<F>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply<M>,
{
    fn call(&self, req: Request, _: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
        let format = req.args().format();
        run((self.0)(req), format)
    }

    fn arity(&self) -> usize {
        0
    }
}
