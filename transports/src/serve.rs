//! Driving a server's service: what every transport does with a decoded request.
//!
//! Transports wrap the service a builder is given ([`Builder::serve`](crate::Builder::serve)) in a
//! [`Serve`]; code outside the transports needs it only to drive a service the way they do (the
//! dispatch benchmark).

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use futures::future::{BoxFuture, FutureExt};
use tokio_util::sync::ReusableBoxFuture;
use tower::{Service, ServiceExt};

use rpc_core::{BoxError, Request, Response, ServerError};

/// A server's service with its type erased, as transports hold it.
///
/// [`call`](Serve::call) serves one request with a fresh clone of the service, driven to
/// readiness and called. A receive loop instead takes a [`LocalServe`] ([`Serve::local`]), which
/// keeps one instance and calls it directly whenever it is ready at once: no clone of the whole
/// stack per request. Either way, any `Service::Error` becomes the [`ServerError`] the caller
/// sees (see [`ServerError::from_service_error`]) and a panic in the service becomes an internal
/// error, never a lost receive loop.
///
/// ```
/// use rpc_core::{format::Payload, Request, Router};
/// use rpc_transports::serve::Serve;
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
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::Error> {
/// let serve = Serve::new(Router::new().route("double", |n: i64| async move { 2 * n }));
/// // A receive loop's instance: called in place while ready, no clone per request.
/// let mut local = serve.local();
/// for n in 1..=3i64 {
///     let response = local.call(Request::new("double", Payload::encode(&Json, &(n,))?)).await;
///     assert_eq!(response.into_result()?.decode::<i64>()?, 2 * n);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Serve(Arc<dyn Prototype>);

/// What `Serve` keeps: the service to clone.
trait Prototype: Send + Sync {
    fn call(&self, req: Request) -> BoxFuture<'static, Response>;
    fn local(&self) -> Box<dyn LocalCall>;
}

/// One instance of the service, called in place while it is ready.
trait LocalCall: Send {
    fn call(&mut self, req: Request) -> Served;
}

struct Proto<S>(S);

/// One instance, with the prototype to replace it from.
struct Local<S> {
    proto: S,
    ready: Option<S>,
    /// The allocation of the last call's future, when it answered at once: the next call's
    /// future takes its place.
    spare: Option<ReusableBoxFuture<'static, Response>>,
}

impl<S> Prototype for Proto<S>
where
    S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<'static, Response> {
        Box::pin(guarded(self.0.clone().oneshot(req)))
    }

    fn local(&self) -> Box<dyn LocalCall> {
        Box::new(Local {
            proto: self.0.clone(),
            ready: None,
            spare: None,
        })
    }
}

impl<S> LocalCall for Local<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&mut self, req: Request) -> Served {
        // The instance stays in place: moving a stack of layers in and out per request costs
        // copies of it.
        let svc = match &mut self.ready {
            Some(svc) => svc,
            None => self.ready.insert(self.proto.clone()),
        };
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match catch_unwind(AssertUnwindSafe(|| svc.poll_ready(&mut cx))) {
            // Ready again next time, most likely; if not, the next call finds out.
            Ok(Poll::Ready(Ok(()))) => match catch_unwind(AssertUnwindSafe(|| svc.call(req))) {
                Ok(fut) => {
                    let fut = guarded(fut);
                    let mut boxed = match self.spare.take() {
                        Some(mut spare) => {
                            spare.set(fut);
                            spare
                        }
                        None => ReusableBoxFuture::new(fut),
                    };
                    // Polled once here (the guard catches a panic); a call still running is
                    // the caller's to drive, with a waker that will fire.
                    match boxed.poll(&mut cx) {
                        Poll::Ready(response) => {
                            self.spare = Some(boxed);
                            Served::Done(response)
                        }
                        Poll::Pending => Served::Running(Running(boxed)),
                    }
                }
                Err(_) => {
                    self.ready = None;
                    Served::Done(panic_response())
                }
            },
            // The instance is spent; the next call starts from a fresh clone.
            Ok(Poll::Ready(Err(e))) => {
                self.ready = None;
                Served::Done(Response::error(ServerError::from_service_error(e.into())))
            }
            // Not ready: this instance waits for readiness (with a real waker) and serves the
            // request; the next request gets a fresh clone.
            Ok(Poll::Pending) => {
                let svc = self.ready.take().unwrap_or_else(|| self.proto.clone());
                Served::Running(Running(ReusableBoxFuture::new(guarded(svc.oneshot(req)))))
            }
            Err(_) => {
                self.ready = None;
                Served::Done(panic_response())
            }
        }
    }
}

/// What [`LocalServe::call`] gives: the response, if the service answered at once, or the call
/// still running. Awaiting it gives the response either way.
///
/// ```
/// use rpc_core::{msgpack::MsgPack, Payload, Request, Router};
/// use rpc_transports::serve::{Serve, Served};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::Error> {
/// let serve = Serve::new(
///     Router::new()
///         .route("now", |n: i64| async move { n })
///         .route("later", |n: i64| async move {
///             tokio::task::yield_now().await;
///             n
///         }),
/// );
/// let mut local = serve.local();
/// let args = Payload::encode(&MsgPack, &(1i64,))?;
/// // A handler that does not wait answers from the first poll, inside `call`.
/// assert!(matches!(local.call(Request::new("now", args.clone())), Served::Done(_)));
/// // One that waits is still running; awaiting it (from a task) gives its answer.
/// let running = local.call(Request::new("later", args));
/// assert!(matches!(running, Served::Running(_)));
/// assert_eq!(running.await.into_result()?.decode::<i64>()?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub enum Served {
    /// Answered when first polled.
    Done(Response),
    /// Still running: poll it from a task, with a waker that will fire.
    Running(Running),
}

/// A call still running; see [`Served`].
pub struct Running(ReusableBoxFuture<'static, Response>);

impl Future for Running {
    type Output = Response;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Response> {
        self.0.poll(cx)
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl std::future::IntoFuture for Served {
    type Output = Response;
    type IntoFuture = futures::future::Either<std::future::Ready<Response>, Running>;

    fn into_future(self) -> Self::IntoFuture {
        match self {
            Served::Done(r) => futures::future::Either::Left(std::future::ready(r)),
            Served::Running(f) => futures::future::Either::Right(f),
        }
    }
}

fn panic_response() -> Response {
    tracing::error!("service panicked");
    Response::error(ServerError::internal("the service panicked"))
}

/// The response of a service's future: errors mapped, panics caught.
fn guarded<F, E>(fut: F) -> impl Future<Output = Response> + Send + 'static
where
    F: Future<Output = Result<Response, E>> + Send + 'static,
    E: Into<BoxError>,
{
    // Routers catch their handlers' panics; this catches any other service's, so a panic never
    // takes a transport's receive loop or connection down with it.
    AssertUnwindSafe(fut).catch_unwind().map(|r| match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Response::error(ServerError::from_service_error(e.into())),
        Err(_) => panic_response(),
    })
}

impl Serve {
    /// Wraps a service: a [`Router`](rpc_core::Router), or a router under tower layers.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self(Arc::new(Proto(service)))
    }

    /// Serves one request, with a fresh clone of the service.
    pub fn call(&self, req: Request) -> BoxFuture<'static, Response> {
        self.0.call(req)
    }

    /// A handle that serves requests one after another with one instance of the service, as a
    /// connection's or socket's receive loop does.
    pub fn local(&self) -> LocalServe {
        LocalServe(self.0.local())
    }
}

/// One instance of a [`Serve`]'s service, for a receive loop: see [`Serve::local`].
pub struct LocalServe(Box<dyn LocalCall>);

impl LocalServe {
    /// Serves one request: calls the instance at once if it is ready, else lets it wait for
    /// readiness with this request and takes a fresh clone for the next one. The call is polled
    /// once here: a service that answers at once gives [`Served::Done`], and its future's
    /// allocation is kept for the next call.
    pub fn call(&mut self, req: Request) -> Served {
        self.0.call(req)
    }
}

impl fmt::Debug for LocalServe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalServe").finish_non_exhaustive()
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Context as TaskContext;
    use std::time::Duration;

    use bytes::Bytes;
    use futures::future::{join_all, BoxFuture};

    use super::*;
    use rpc_core::format::{DeserializeFn, Format, Payload};
    use rpc_core::ErrorCode;

    /// Payloads here are never decoded.
    #[derive(Debug)]
    struct Opaque;

    impl Format for Opaque {
        fn name(&self) -> &'static str {
            "opaque"
        }
        fn encode(
            &self,
            _: &dyn erased_serde::Serialize,
            _: &mut bytes::BytesMut,
        ) -> Result<(), BoxError> {
            Err("not used".into())
        }
        fn decode(
            &self,
            _: &[u8],
            _: Option<&[&'static str]>,
            _: &mut DeserializeFn<'_>,
        ) -> Result<(), BoxError> {
            Err("not used".into())
        }
    }

    fn req(method: &str) -> Request {
        Request::new(method.to_owned(), Payload::new(Bytes::new(), &Opaque))
    }

    /// Answers with the method's name as an error message; panics on "panic"; counts clones;
    /// fails readiness once after "fail-ready".
    struct Echo {
        clones: Arc<AtomicUsize>,
        fail_ready: Arc<AtomicUsize>,
    }

    impl Clone for Echo {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::Relaxed);
            Self {
                clones: self.clones.clone(),
                fail_ready: self.fail_ready.clone(),
            }
        }
    }

    impl Service<Request> for Echo {
        type Response = Response;
        type Error = BoxError;
        type Future = BoxFuture<'static, Result<Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            if self.fail_ready.swap(0, Ordering::Relaxed) > 0 {
                return Poll::Ready(Err("not ready, ever".into()));
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request) -> Self::Future {
            let method = req.method().to_string();
            match method.as_str() {
                "panic" => panic!("a handler bug"),
                "fail-ready" => self.fail_ready.store(1, Ordering::Relaxed),
                _ => {}
            }
            Box::pin(async move { Ok(Response::error(ServerError::internal(method))) })
        }
    }

    fn echo() -> (Echo, Arc<AtomicUsize>) {
        let clones = Arc::new(AtomicUsize::new(0));
        let svc = Echo {
            clones: clones.clone(),
            fail_ready: Arc::default(),
        };
        (svc, clones)
    }

    fn message(r: &Response) -> String {
        r.result().unwrap_err().message().to_owned()
    }

    #[tokio::test]
    async fn a_local_instance_serves_without_a_clone_per_request() {
        let (svc, clones) = echo();
        let serve = Serve::new(svc);
        let mut local = serve.local();
        for i in 0..100 {
            let r = local.call(req(&format!("m{i}"))).await;
            assert_eq!(message(&r), format!("m{i}"));
        }
        // The prototype's copy and the one instance.
        assert!(clones.load(Ordering::Relaxed) <= 2, "{clones:?} clones");

        // `Serve::call` clones per request.
        let before = clones.load(Ordering::Relaxed);
        for _ in 0..10 {
            serve.call(req("m")).await;
        }
        assert_eq!(clones.load(Ordering::Relaxed) - before, 10);
    }

    #[tokio::test]
    async fn a_panic_or_a_failed_readiness_costs_one_request_only() {
        let (svc, _) = echo();
        let mut local = Serve::new(svc).local();
        let r = local.call(req("panic")).await;
        assert_eq!(r.result().unwrap_err().code(), ErrorCode::INTERNAL_ERROR);
        assert_eq!(message(&local.call(req("after")).await), "after");

        // The instance fails readiness for the next request, which gets the error; the one
        // after is served by a fresh clone.
        assert_eq!(message(&local.call(req("fail-ready")).await), "fail-ready");
        let r = local.call(req("refused")).await;
        assert_eq!(r.result().unwrap_err().code(), ErrorCode::INTERNAL_ERROR);
        assert_ne!(message(&r), "refused", "the request was not served");
        assert_eq!(message(&local.call(req("served")).await), "served");
    }

    #[tokio::test]
    async fn an_instance_that_is_not_ready_waits_and_the_next_request_is_not_held_up() {
        // One call at a time, each taking 20 ms: the second request finds the instance busy.
        let slow = tower::service_fn(|req: Request| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(Response::error(ServerError::internal(
                req.method().to_string(),
            )))
        });
        let serve = Serve::new(
            tower::ServiceBuilder::new()
                .concurrency_limit(1)
                .service(slow),
        );
        let mut local = serve.local();
        let calls: Vec<_> = (0..4)
            .map(|i| std::future::IntoFuture::into_future(local.call(req(&format!("m{i}")))))
            .collect();
        let answers = tokio::time::timeout(Duration::from_secs(5), join_all(calls))
            .await
            .expect("every request is served");
        let got: Vec<_> = answers.iter().map(message).collect();
        assert_eq!(got, ["m0", "m1", "m2", "m3"]);
    }
}
