//! Driving a server's service: what every transport does with a decoded request.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
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
            Box::pin(async move {
                match svc.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => Response::error(ServerError::from_service_error(e.into())),
                }
            })
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
