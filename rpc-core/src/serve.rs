//! Driving a server's service: what every transport does with a decoded request.

use std::fmt;
use std::sync::Arc;

use std::panic::AssertUnwindSafe;

use futures::future::{BoxFuture, FutureExt};
use tower::{Service, ServiceExt};

use crate::error::{BoxError, ServerError};
use crate::message::{Request, Response};

/// A server's service with its type erased, as transports hold it: every call gets a fresh clone
/// of the service, driven to readiness and called, and any `Service::Error` becomes the
/// [`ServerError`] the caller sees (see [`ServerError::from_service_error`]).
#[derive(Clone)]
pub struct Serve(Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>);

impl Serve {
    /// Wraps a service: a [`Router`](crate::Router), or a router under tower layers.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self(Arc::new(move |req| {
            let svc = service.clone();
            // Routers catch their handlers' panics; this catches any other service's, so a
            // panic never takes a transport's receive loop or connection down with it.
            Box::pin(
                AssertUnwindSafe(svc.oneshot(req))
                    .catch_unwind()
                    .map(|r| match r {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => Response::error(ServerError::from_service_error(e.into())),
                        Err(_) => {
                            tracing::error!("service panicked");
                            Response::error(ServerError::internal("the service panicked"))
                        }
                    }),
            )
        }))
    }

    /// Serves one request.
    pub fn call(&self, req: Request) -> BoxFuture<'static, Response> {
        (self.0)(req)
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve").finish_non_exhaustive()
    }
}
