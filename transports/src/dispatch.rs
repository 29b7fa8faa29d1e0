//! What every transport does with a received frame: route it by shape, serve requests, deliver
//! responses, answer batches. Transports differ only in how they send and whom they answer, which
//! they describe as a [`Link`].

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rpc_core::codec::{Codec, DecodeError, Message};
use rpc_core::{
    Context, Error, ErrorCode, LocalServe, Method, Payload, Request, Response, Running, Served,
    ServerError,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What happened, for a transport's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Request,
    Malformed,
    Overloaded,
    ResponseSent,
    SendError,
}

/// The result a response carries, before it becomes a `Payload`.
pub(crate) type CallResult = Result<Bytes, ServerError>;

/// One peer as seen by the dispatcher: where answers go, and how requests are bounded.
pub(crate) trait Link<C: Codec>: Clone + Send + Sync + 'static {
    fn codec(&self) -> &C;
    /// Bounds the requests served at once.
    fn permits(&self) -> &Arc<Semaphore>;
    /// The context of a request from this peer.
    fn context(&self) -> Context;
    /// Encodes one frame with `encode` and sends it to the peer.
    fn send<F>(&self, encode: F) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync;
    /// Hands a response to the call waiting for it.
    fn deliver(&self, id: C::Id, result: CallResult);
    fn count(&self, event: Event);
    /// Whether to serve the request `id`; `false` drops it (a transport with a duplicate-request
    /// cache answers a retransmission itself).
    fn admit(&self, id: &C::Id) -> impl Future<Output = bool> + Send {
        let _ = id;
        std::future::ready(true)
    }
    /// Sends the response to request `id`.
    fn send_response<F>(
        &self,
        id: &C::Id,
        encode: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync,
    {
        let _ = id;
        self.send(encode)
    }
}

/// Handles one received frame; `serve` is the receive loop's instance of its service (see
/// [`Serve::local`](rpc_core::Serve::local)); without one, requests are answered "method not
/// found". Returns whether the frame was a response (handed to the call table).
pub(crate) async fn handle<C: Codec, L: Link<C>>(
    link: &L,
    serve: Option<&mut LocalServe>,
    frame: Bytes,
) -> bool {
    match link.codec().decode(frame) {
        Ok(Message::Batch(items)) => batch(link, serve, items).await,
        Ok(Message::Response { id, result }) => {
            link.deliver(id, result);
            return true;
        }
        Ok(Message::Request {
            id,
            method,
            args,
            timeout,
        }) => {
            link.count(Event::Request);
            if let Some(id) = &id {
                if !link.admit(id).await {
                    return false;
                }
            }
            match start(link, serve, id.is_none(), method, args, timeout) {
                Started::Ready(response) => {
                    if let Some(id) = id {
                        respond(link, &id, &response).await;
                    }
                }
                Started::Pending(fut, permit) => {
                    let link = link.clone();
                    tokio::spawn(async move {
                        let response = fut.await;
                        if let Some(id) = id {
                            respond(&link, &id, &response).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
        Err(e) => {
            malformed(link, e, |id, response| async move {
                respond(link, &id, &response).await;
            })
            .await
        }
    }
    false
}

async fn malformed<C, L, F, Fut>(link: &L, e: DecodeError<C::Id>, answer: F)
where
    C: Codec,
    L: Link<C>,
    F: FnOnce(C::Id, Response) -> Fut,
    Fut: Future<Output = ()>,
{
    link.count(Event::Malformed);
    tracing::debug!(error = %e, "malformed message");
    if let Some(id) = e.reply_to {
        answer(id, Response::error(e.error)).await;
    }
}

enum Started {
    Ready(Response),
    /// Still running, holding a slot of the limit (`None` past it; see `start`).
    Pending(Running, Option<OwnedSemaphorePermit>),
}

/// Starts serving a request; answers from here when the handler does not wait.
fn start<C: Codec, L: Link<C>>(
    link: &L,
    service: Option<&mut LocalServe>,
    notification: bool,
    method: Method,
    args: Bytes,
    timeout: Option<std::time::Duration>,
) -> Started {
    let Some(service) = service else {
        return Started::Ready(ServerError::method_not_found(&method).into());
    };
    // The limit counts requests still running after their first poll: one that is done at
    // once never holds a slot, so it costs no acquire and release (the release takes a lock).
    if link.permits().available_permits() == 0 {
        link.count(Event::Overloaded);
        let code = ErrorCode::OVERLOADED;
        let refused = ServerError::refused(code, code.default_message().unwrap_or("overloaded"));
        return Started::Ready(refused.into());
    }
    let args = Payload::new(args, link.codec().format());
    let mut context = link.context();
    if let Some(t) = timeout {
        context.set_timeout(t);
    }
    let req = if notification {
        Request::notification(method, args).with_context(context)
    } else {
        Request::from_parts(method, args, context)
    };
    // Polled once in `call`: a handler that is done at once answers from here.
    match service.call(req) {
        Served::Done(response) => Started::Ready(response),
        // Another receive loop may have taken the last slot since the check above; the request
        // runs all the same (it has started), one over the limit for a moment.
        Served::Running(fut) => {
            Started::Pending(fut, link.permits().clone().try_acquire_owned().ok())
        }
    }
}

/// Sends one response; a response over the size limit is replaced by an error saying so.
pub(crate) async fn respond<C: Codec, L: Link<C>>(link: &L, id: &C::Id, response: &Response) {
    let codec = link.codec();
    let sent = link
        .send_response(id, |dst| codec.encode_response(id, response.result(), dst))
        .await;
    let sent = match sent {
        Err(Error::TooLarge { size, limit }) => {
            tracing::warn!(
                size,
                limit,
                "response over the size limit; answering an error"
            );
            let e = ServerError::new(
                ErrorCode::MESSAGE_TOO_LARGE,
                format!("the response of {size} bytes exceeds the limit of {limit} bytes"),
            );
            // As an answer to `id`: a server that remembers answers (UDP's at-most-once
            // cache) answers copies of the request with this one.
            link.send_response(id, |dst| codec.encode_response(id, Err(&e), dst))
                .await
        }
        other => other,
    };
    match sent {
        Ok(()) => link.count(Event::ResponseSent),
        Err(error) => {
            link.count(Event::SendError);
            tracing::debug!(%error, "could not send a response");
        }
    }
}

/// Serves a batch's requests concurrently and answers them in one frame.
async fn batch<C: Codec, L: Link<C>>(
    link: &L,
    mut serve: Option<&mut LocalServe>,
    items: Vec<Result<Message<C::Id>, DecodeError<C::Id>>>,
) {
    let mut answers: Vec<(C::Id, Response)> = Vec::new();
    let mut pending = Vec::new();
    for item in items {
        match item {
            Ok(Message::Request {
                id,
                method,
                args,
                timeout,
            }) => {
                link.count(Event::Request);
                match start(
                    link,
                    serve.as_deref_mut(),
                    id.is_none(),
                    method,
                    args,
                    timeout,
                ) {
                    Started::Ready(r) => answers.extend(id.map(|id| (id, r))),
                    Started::Pending(fut, permit) => pending.push(async move {
                        // The permit is held until the batch's answer is sent: a graceful
                        // shutdown waits for every permit, so it waits for that answer too.
                        let r = fut.await;
                        (id.map(|id| (id, r)), permit)
                    }),
                }
            }
            Ok(Message::Response { id, result }) => link.deliver(id, result),
            Ok(Message::Batch(_)) => link.count(Event::Malformed),
            Err(e) => {
                let answers = &mut answers;
                malformed(link, e, |id, r| {
                    answers.push((id, r));
                    std::future::ready(())
                })
                .await
            }
        }
    }
    if pending.is_empty() {
        send_batch(link, &answers).await;
    } else {
        let link = link.clone();
        tokio::spawn(async move {
            let mut permits = Vec::with_capacity(pending.len());
            for (answer, permit) in futures::future::join_all(pending).await {
                answers.extend(answer);
                permits.push(permit);
            }
            send_batch(&link, &answers).await;
            drop(permits);
        });
    }
}

async fn send_batch<C: Codec, L: Link<C>>(link: &L, answers: &[(C::Id, Response)]) {
    if answers.is_empty() {
        return;
    }
    let codec = link.codec();
    match link.send(|dst| codec.encode_batch(answers, dst)).await {
        Ok(()) => link.count(Event::ResponseSent),
        Err(error) => {
            link.count(Event::SendError);
            tracing::warn!(%error, "could not send a batch's answers");
        }
    }
}
