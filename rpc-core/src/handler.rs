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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::error::ServerError;
use crate::format::{FromArgs, Payload};
use crate::message::{Request, Response};

/// A value a handler can return.
pub trait IntoReply {
    /// Encodes the value as a response in the request's format.
    fn into_reply(self, format: &'static dyn crate::Format) -> Response;
}

impl<T: Serialize, E: Into<ServerError>> IntoReply for Result<T, E> {
    fn into_reply(self, format: &'static dyn crate::Format) -> Response {
        match self {
            Ok(v) => match Payload::encode(format, &v) {
                Ok(p) => Response::ok(p),
                Err(e) => {
                    tracing::warn!(error = %e, "could not encode a handler's result");
                    Response::error(ServerError::internal("could not encode the result"))
                }
            },
            Err(e) => Response::error(e.into()),
        }
    }
}

impl IntoReply for Response {
    fn into_reply(self, _: &'static dyn crate::Format) -> Response {
        self
    }
}

impl IntoReply for ServerError {
    fn into_reply(self, _: &'static dyn crate::Format) -> Response {
        Response::error(self)
    }
}

macro_rules! plain_reply {
    ($($t:ty),* $(,)?) => {$(
        impl IntoReply for $t {
            fn into_reply(self, format: &'static dyn crate::Format) -> Response {
                Ok::<_, ServerError>(self).into_reply(format)
            }
        }
    )*};
}

plain_reply!(
    (),
    bool,
    char,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    String,
    &'static str,
    Bytes,
    serde_json::Value,
);

macro_rules! generic_reply {
    ($($t:ident<$($p:ident),*>),* $(,)?) => {$(
        impl<$($p: Serialize),*> IntoReply for $t<$($p),*> {
            fn into_reply(self, format: &'static dyn crate::Format) -> Response {
                Ok::<_, ServerError>(self).into_reply(format)
            }
        }
    )*};
}

generic_reply!(Vec<T>, Option<T>, HashMap<K, V>, BTreeMap<K, V>, Box<T>);

macro_rules! tuple_reply {
    ($($t:ident),*) => {
        impl<$($t: Serialize),*> IntoReply for ($($t,)*) {
            fn into_reply(self, format: &'static dyn crate::Format) -> Response {
                Ok::<_, ServerError>(self).into_reply(format)
            }
        }
    };
}

tuple_reply!(A);
tuple_reply!(A, B);
tuple_reply!(A, B, C);
tuple_reply!(A, B, C, D);
tuple_reply!(A, B, C, D, E);
tuple_reply!(A, B, C, D, E, F);
tuple_reply!(A, B, C, D, E, F, G);
tuple_reply!(A, B, C, D, E, F, G, H);
tuple_reply!(A, B, C, D, E, F, G, H, I);
tuple_reply!(A, B, C, D, E, F, G, H, I, J);
tuple_reply!(A, B, C, D, E, F, G, H, I, J, K);
tuple_reply!(A, B, C, D, E, F, G, H, I, J, K, L);

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

fn run<Fut, R>(fut: Fut, format: &'static dyn crate::Format) -> BoxFuture<'static, Response>
where
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply,
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
        impl<F, Fut, R, $($t,)*> Handler<(ArgsOnly, $($t,)*)> for F
        where
            F: Fn($($t,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            $($t: DeserializeOwned + Send + 'static,)*
        {
            fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
                let format = req.args().format();
                match <($($t,)*) as FromArgs>::from_args(req.args(), names) {
                    Ok(($($v,)*)) => run((self)($($v,)*), format),
                    Err(e) => Box::pin(futures::future::ready(Response::error(e))),
                }
            }

            fn arity(&self) -> usize {
                <($($t,)*) as FromArgs>::ARITY
            }
        }

        impl<F, Fut, R, $($t,)*> Handler<(WithContext, $($t,)*)> for F
        where
            F: Fn(Context, $($t,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            $($t: DeserializeOwned + Send + 'static,)*
        {
            fn call(&self, req: Request, names: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
                let format = req.args().format();
                match <($($t,)*) as FromArgs>::from_args(req.args(), names) {
                    Ok(($($v,)*)) => {
                        let (_, _, ctx) = req.into_parts();
                        run((self)(ctx, $($v,)*), format)
                    }
                    Err(e) => Box::pin(futures::future::ready(Response::error(e))),
                }
            }

            fn arity(&self) -> usize {
                <($($t,)*) as FromArgs>::ARITY
            }
        }
    };
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
pub fn raw<F, Fut, R>(f: F) -> Raw<F>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply,
{
    Raw(f)
}

/// A handler over the raw request; see [`raw`].
#[derive(Clone, Debug)]
pub struct Raw<F>(F);

/// Marks [`Raw`] handlers.
#[derive(Debug)]
pub struct RawRequest;

impl<F, Fut, R> Handler<RawRequest> for Raw<F>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoReply,
{
    fn call(&self, req: Request, _: Option<&[&'static str]>) -> BoxFuture<'static, Response> {
        let format = req.args().format();
        run((self.0)(req), format)
    }

    fn arity(&self) -> usize {
        0
    }
}
