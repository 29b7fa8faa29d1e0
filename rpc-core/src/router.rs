//! Routing requests to handlers by method name or command id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::{BoxFuture, FutureExt, Map};

use crate::context::Extensions;
use crate::error::ServerError;
use crate::handler::Handler;
use crate::hash::FoldState;
use crate::message::{Method, Request, Response};

type Dispatch =
    Arc<dyn Fn(Request, Option<&[&'static str]>) -> BoxFuture<'static, Response> + Send + Sync>;

/// One method: a handler with its name, command id and parameter names.
///
/// ```
/// use rpc_core::{Route, Router};
///
/// async fn subtract(minuend: i64, subtrahend: i64) -> i64 {
///     minuend - subtrahend
/// }
///
/// let router = Router::new().add_route(
///     Route::new(subtract)
///         .name("subtract")
///         .params(["minuend", "subtrahend"])
///         .command(7),
/// );
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct Route {
    name: Option<Box<str>>,
    command: Option<u16>,
    entry: Arc<Entry>,
}

struct Entry {
    dispatch: Dispatch,
    params: Option<Box<[&'static str]>>,
    arity: usize,
}

impl Route {
    /// A route to `handler`; give it a [`name`](Route::name), a [`command`](Route::command) id, or both.
    pub fn new<H: Handler<T>, T: 'static>(handler: H) -> Self {
        let arity = handler.arity();
        Self {
            name: None,
            command: None,
            entry: Arc::new(Entry {
                dispatch: Arc::new(move |req, names| handler.call(req, names)),
                params: None,
                arity,
            }),
        }
    }

    /// Serves the route under a method name.
    pub fn name(mut self, name: impl Into<Box<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Serves the route under a 16-bit command id (binary protocols).
    pub fn command(mut self, id: u16) -> Self {
        self.command = Some(id);
        self
    }

    /// Declares the handler's parameter names, in order, for codecs that pass arguments by name
    /// (JSON-RPC's named params).
    ///
    /// # Panics
    ///
    /// If the number of names differs from the number of the handler's arguments.
    pub fn params<const N: usize>(mut self, names: [&'static str; N]) -> Self {
        let entry =
            Arc::get_mut(&mut self.entry).expect("params are set before the route is shared");
        assert!(
            entry.arity == N,
            "the handler takes {} argument(s) but {} parameter name(s) were given",
            entry.arity,
            N
        );
        entry.params = Some(Box::new(names));
        self
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("params", &self.entry.params)
            .finish()
    }
}

/// Maps methods to handlers. The whole is a `tower::Service<Request>`, so any tower layer wraps it,
/// and one router is served over any number of transports and codecs at once.
///
/// Unknown methods answer [`ErrorCode::METHOD_NOT_FOUND`](crate::ErrorCode::METHOD_NOT_FOUND);
/// arguments that do not fit the handler answer
/// [`ErrorCode::INVALID_PARAMS`](crate::ErrorCode::INVALID_PARAMS). Cloning is cheap.
///
/// ```
/// use rpc_core::{format::Payload, Request, Router};
/// use tower::ServiceExt;
/// # use rpc_core::format::Format;
/// # #[derive(Debug)] struct Json;
/// # impl Format for Json {
/// #   fn name(&self) -> &'static str { "json" }
/// #   fn encode(&self, v: &dyn erased_serde::Serialize, dst: &mut bytes::BytesMut) -> Result<(), rpc_core::BoxError> {
/// #     use bytes::BufMut; let mut w = dst.writer();
/// #     erased_serde::serialize(v, &mut serde_json::Serializer::new(&mut w))?; Ok(()) }
/// #   fn decode(&self, src: &[u8], _: Option<&[&'static str]>, visit: &mut rpc_core::format::DeserializeFn<'_>) -> Result<(), rpc_core::BoxError> {
/// #     let mut de = serde_json::Deserializer::from_slice(src);
/// #     visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))?; de.end()?; Ok(()) }
/// # }
///
/// async fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::Error> {
/// let router = Router::new().route("add", add);
/// let args = Payload::encode(&Json, &(2, 3))?;
/// let response = router.oneshot(Request::new("add", args)).await.unwrap();
/// assert_eq!(response.into_result()?.decode::<i64>()?, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Router {
    // Keys chosen by the application, looked up by peers: a fold hash is enough.
    /// Keyed by the names' bytes: a request's name is looked up without checking its UTF-8 again.
    names: Arc<HashMap<Box<[u8]>, Arc<Entry>, FoldState>>,
    commands: Arc<HashMap<u16, Arc<Entry>, FoldState>>,
    /// Given to every request's context ([`Router::with_state`]).
    state: Extensions,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `handler` under `name`.
    ///
    /// # Panics
    ///
    /// If `name` is already routed.
    pub fn route<H: Handler<T>, T: 'static>(self, name: &str, handler: H) -> Self {
        self.add_route(Route::new(handler).name(name))
    }

    /// Serves `handler` under the command id `id`.
    ///
    /// # Panics
    ///
    /// If `id` is already routed.
    pub fn command<H: Handler<T>, T: 'static>(self, id: u16, handler: H) -> Self {
        self.add_route(Route::new(handler).command(id))
    }

    /// Shares `state` with the handlers: a handler that takes [`State<T>`](crate::handler::State)
    /// as its first parameter gets a clone of it (and any layer or handler finds it in the
    /// request's context's extensions). Several states of different types may be added; merged
    /// routers keep each other's.
    ///
    /// ```
    /// use std::sync::{atomic::AtomicU64, atomic::Ordering, Arc};
    /// use rpc_core::{handler::State, Router};
    ///
    /// async fn hit(State(hits): State<Arc<AtomicU64>>, by: u64) -> u64 {
    ///     hits.fetch_add(by, Ordering::Relaxed) + by
    /// }
    ///
    /// let router = Router::new().route("hit", hit).with_state(Arc::new(AtomicU64::new(0)));
    /// # let _ = router;
    /// ```
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// Adds a fully described [`Route`].
    ///
    /// # Panics
    ///
    /// If its name or command id is already routed, or it has neither.
    pub fn add_route(mut self, route: Route) -> Self {
        assert!(
            route.name.is_some() || route.command.is_some(),
            "a route needs a name or a command id"
        );
        if let Some(name) = route.name {
            let old =
                Arc::make_mut(&mut self.names).insert(name.as_bytes().into(), route.entry.clone());
            assert!(old.is_none(), "method {name:?} is routed twice");
        }
        if let Some(id) = route.command {
            let old = Arc::make_mut(&mut self.commands).insert(id, route.entry);
            assert!(old.is_none(), "command id {id} is routed twice");
        }
        self
    }

    /// Adds every route of `other`.
    ///
    /// # Panics
    ///
    /// If both route the same name or command id.
    pub fn merge(mut self, other: Router) -> Self {
        for (name, entry) in other.names.iter() {
            let old = Arc::make_mut(&mut self.names).insert(name.clone(), entry.clone());
            assert!(
                old.is_none(),
                "method {:?} is routed twice",
                String::from_utf8_lossy(name)
            );
        }
        for (id, entry) in other.commands.iter() {
            let old = Arc::make_mut(&mut self.commands).insert(*id, entry.clone());
            assert!(old.is_none(), "command id {id} is routed twice");
        }
        self.state.extend_from(&other.state);
        self
    }

    /// Whether a method is routed.
    pub fn has(&self, method: &Method) -> bool {
        self.entry(method).is_some()
    }

    fn entry(&self, method: &Method) -> Option<&Arc<Entry>> {
        match method {
            Method::Name(n) => self.names.get(n.as_bytes()),
            Method::Id(id) => self.commands.get(id),
        }
    }

    /// Runs the request's handler.
    pub fn dispatch(&self, mut req: Request) -> BoxFuture<'static, Response> {
        if !self.state.is_empty() {
            req.context_mut().extensions_mut().extend_from(&self.state);
        }
        match self.entry(req.method()) {
            Some(entry) => (entry.dispatch)(req, entry.params.as_deref()),
            None => {
                let e = ServerError::method_not_found(req.method());
                Box::pin(futures::future::ready(Response::error(e)))
            }
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self
            .names
            .keys()
            .map(|n| String::from_utf8_lossy(n))
            .collect();
        names.sort();
        let mut ids: Vec<_> = self.commands.keys().collect();
        ids.sort();
        f.debug_struct("Router")
            .field("methods", &names)
            .field("commands", &ids)
            .finish()
    }
}

type RouterFuture = Map<BoxFuture<'static, Response>, fn(Response) -> Result<Response, Infallible>>;

impl tower::Service<Request> for Router {
    type Response = Response;
    type Error = Infallible;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.dispatch(req)
            .map(Ok as fn(Response) -> Result<Response, Infallible>)
    }
}
