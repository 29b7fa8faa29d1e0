//! How a layer refuses a call on either side.

use rpc_core::{BoxError, Error, Payload, Response, ServerError};

/// What a refusal looks like for a service's result type: an answer on the server side, an
/// [`Error::Rejected`] on the client side.
pub trait Reject<E>: Sized {
    /// The refusal, as the inner service's result.
    fn reject(error: ServerError) -> Result<Self, E>;
}

impl<E> Reject<E> for Response {
    fn reject(error: ServerError) -> Result<Self, E> {
        Ok(Response::error(error))
    }
}

impl Reject<Error> for Payload {
    fn reject(error: ServerError) -> Result<Self, Error> {
        Err(Error::Rejected(error))
    }
}

impl Reject<BoxError> for Payload {
    fn reject(error: ServerError) -> Result<Self, BoxError> {
        Err(Box::new(Error::Rejected(error)))
    }
}
