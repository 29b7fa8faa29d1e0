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
        let method = req.method().clone();
        self.send(req)
            .await?
            .decode()
            .map_err(|e| e.in_result_of(&method))
    }

    /// Calls `method` with `args` through this client's own instance of the service, and decodes
    /// its result as `R`.
    ///
    /// [`call`](Self::call) takes `&self`, so it clones the service for every call; under a
    /// stack of layers, that clone and its drop cost an atomic operation or more per layer. A
    /// task that makes calls one after another can keep its own clone of the client and call
    /// through it with `call_mut`, which waits until the service is ready and calls it in place.
    ///
    /// ```
    /// use rpc_core::{msgpack::MsgPack, Client, Error, Payload, Request};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// // Stands in for a transport's channel: answers every call with 42.
    /// let channel = tower::service_fn(|_: Request| async { Payload::encode(&MsgPack, &42i64) });
    /// let mut client = Client::new(channel, &MsgPack);
    /// for _ in 0..3 {
    ///     let n: i64 = client.call_mut("answer", ()).await?;
    ///     assert_eq!(n, 42);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn call_mut<R: DeserializeOwned>(
        &mut self,
        method: impl Into<Method>,
        args: impl Args,
    ) -> Result<R, Error> {
        let req = self.request(method, &args)?;
        self.send_mut(req).await?.decode()
    }

    /// Sends a prepared request through this client's own instance of the service (see
    /// [`call_mut`](Self::call_mut)) and returns the encoded result.
    ///
    /// ```
    /// use rpc_core::{msgpack::MsgPack, Client, Error, Request};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// // Stands in for a transport's channel: echoes the arguments.
    /// let channel =
    ///     tower::service_fn(|req: Request| async move { Ok::<_, Error>(req.args().clone()) });
    /// let mut client = Client::new(channel, &MsgPack);
    /// let request = client.request("echo", &(7i64,))?;
    /// let answer = client.send_mut(request).await?;
    /// assert_eq!(answer.decode::<(i64,)>()?, (7,));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_mut(&mut self, req: Request) -> Result<Payload, Error> {
        let error = |e: S::Error| Error::from_boxed(e.into());
        std::future::poll_fn(|cx| self.service.poll_ready(cx))
            .await
            .map_err(error)?;
        self.service.call(req).await.map_err(error)
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Ready;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use super::*;
    use crate::msgpack::MsgPack;

    /// Answers every call with its count of calls so far, and counts its clones.
    struct Counting {
        clones: Arc<AtomicUsize>,
        calls: i64,
    }

    impl Clone for Counting {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::Relaxed);
            Self {
                clones: self.clones.clone(),
                calls: self.calls,
            }
        }
    }

    impl Service<Request> for Counting {
        type Response = Payload;
        type Error = Infallible;
        type Future = Ready<Result<Payload, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            self.calls += 1;
            let answer = Payload::encode(&MsgPack, &self.calls).expect("an integer encodes");
            std::future::ready(Ok(answer))
        }
    }

    #[tokio::test]
    async fn call_mut_calls_the_clients_own_instance_and_call_a_clone() {
        let clones = Arc::new(AtomicUsize::new(0));
        let mut client = Client::new(
            Counting {
                clones: clones.clone(),
                calls: 0,
            },
            &MsgPack,
        );
        for n in 1..=3 {
            assert_eq!(client.call_mut::<i64>("count", ()).await.unwrap(), n);
        }
        assert_eq!(clones.load(Ordering::Relaxed), 0);
        // `call` clones the instance (with its count) and calls the clone.
        assert_eq!(client.call::<i64>("count", ()).await.unwrap(), 4);
        assert_eq!(client.call::<i64>("count", ()).await.unwrap(), 4);
        assert_eq!(clones.load(Ordering::Relaxed), 2);
    }
}
