//! Typed calls over any client service.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::error::{BoxError, Error};
use crate::format::{Args, AsSeq, Format, Payload};
use crate::message::{Method, Request};

/// A type-erased client service, as a [`Context`](crate::Context) hands out to call a peer back.
pub type BoxChannel = BoxCloneSyncService<Request, Payload, Error>;

/// A typed front for a client service: encodes arguments, sends, decodes the result.
///
/// `S` is any `tower::Service<Request, Response = Payload>` whose error converts into [`BoxError`]:
/// a transport's channel to a peer, or that channel wrapped in tower layers (timeouts, retries,
/// concurrency and rate limits), which [`layer`](Client::layer) adds without losing the typed calls.
/// A `Client` is itself such a service. Cloning is as cheap as cloning `S`.
///
/// Arguments are a tuple of positional values (see [`Args`]).
///
/// ```no_run
/// # async fn demo<S>(client: rpc_core::Client<S>) -> Result<(), rpc_core::Error>
/// # where S: tower::Service<rpc_core::Request, Response = rpc_core::format::Payload> + Clone + Send + 'static,
/// #       S::Error: Into<rpc_core::BoxError>, S::Future: Send {
/// let greeting: String = client.call("sayhi", ("Snake Plissken",)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client<S> {
    service: S,
    format: &'static dyn Format,
    timeout: Option<Duration>,
}

impl<S> Client<S> {
    /// A client that sends through `service`, encoding arguments in `format`.
    pub fn new(service: S, format: &'static dyn Format) -> Self {
        Self {
            service,
            format,
            timeout: None,
        }
    }

    /// Gives every call this timeout, as its deadline, unless a request already has an earlier one.
    /// The transport stops waiting at the deadline and, where the codec can carry it, the peer
    /// learns it too.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Wraps the service in a tower layer (or a whole `ServiceBuilder`), keeping the typed calls.
    pub fn layer<L: Layer<S>>(self, layer: L) -> Client<L::Service> {
        Client {
            service: layer.layer(self.service),
            format: self.format,
            timeout: self.timeout,
        }
    }

    /// The format arguments are encoded in.
    pub fn format(&self) -> &'static dyn Format {
        self.format
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// Takes the service.
    pub fn into_inner(self) -> S {
        self.service
    }

    /// Builds a request for `method` with encoded `args`, with this client's timeout applied.
    pub fn request<A: Args + ?Sized>(
        &self,
        method: impl Into<Method>,
        args: &A,
    ) -> Result<Request, Error> {
        let mut req = Request::new(method, Payload::encode(self.format, &AsSeq(args))?);
        if let Some(t) = self.timeout {
            req.context_mut().set_timeout(t);
        }
        Ok(req)
    }
}

impl<S> Client<S>
where
    S: Service<Request, Response = Payload> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    /// Calls `method` with `args` and decodes its result as `R`.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: impl Into<Method>,
        args: impl Args,
    ) -> Result<R, Error> {
        let req = self.request(method, &args)?;
        self.send(req).await?.decode()
    }

    /// Sends a notification: the peer runs `method` and answers nothing. Returns once it is sent.
    pub async fn notify(&self, method: impl Into<Method>, args: impl Args) -> Result<(), Error> {
        let req = self.request(method, &args)?;
        let (method, args, ctx) = req.into_parts();
        self.send(Request::notification(method, args).with_context(ctx))
            .await
            .map(drop)
    }

    /// Sends a prepared request and returns the encoded result.
    pub async fn send(&self, req: Request) -> Result<Payload, Error> {
        self.service
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| Error::from_boxed(e.into()))
    }

    /// Erases the service type, for storing clients of different stacks together.
    pub fn boxed(self) -> Client<BoxChannel>
    where
        S: Sync,
    {
        let format = self.format;
        let timeout = self.timeout;
        let service = self
            .service
            .map_err(|e: S::Error| Error::from_boxed(e.into()));
        Client {
            service: BoxCloneSyncService::new(service),
            format,
            timeout,
        }
    }
}

impl<S: Service<Request>> Service<Request> for Client<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(t) = self.timeout {
            req.context_mut().set_timeout(t);
        }
        self.service.call(req)
    }
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("format", &self.format.name())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
