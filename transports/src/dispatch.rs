//! What every transport does with a received frame: route it by shape, serve requests, deliver
//! responses, answer batches. Transports differ only in how they send and whom they answer, which
//! they describe as a [`Link`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::serve::{LocalServe, Running, Served};
use bytes::{Bytes, BytesMut};
use rpc_core::codec::{Codec, DecodeError, Message};
use rpc_core::{Context, Error, ErrorCode, Method, Payload, Request, Response, ServerError};

use crate::slots::{Slot, Slots};
pub(crate) use crate::stats::{Counters, Event};

/// The result a response carries, before it becomes a `Payload`.
pub(crate) type CallResult = Result<Bytes, ServerError>;

/// One peer as seen by the dispatcher: where answers go, and how requests are bounded.
pub(crate) trait Link<C: Codec>: Clone + Send + Sync + 'static {
    fn codec(&self) -> &C;
    /// Bounds the requests served at once.
    fn slots(&self) -> &Arc<Slots>;
    /// The context of a request from this peer.
    fn context(&self) -> Context;
    /// Encodes one frame with `encode` and sends it to the peer.
    fn send<F>(&self, encode: F) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: Fn(&mut BytesMut) -> Result<bool, Error> + Send + Sync;
    /// Hands a response to the call waiting for it.
    fn deliver(&self, id: C::Id, result: CallResult);
    /// What this peer's requests and answers are counted in.
    fn counters(&self) -> &Counters;
    /// Who is answered, for the log.
    fn peer(&self) -> &dyn std::fmt::Display;
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
/// [`Serve::local`](crate::serve::Serve::local)); without one, requests are answered "method not
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
            link.counters().record(Event::Request);
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
                Started::Pending(fut, slot) => {
                    let link = link.clone();
                    tokio::spawn(async move {
                        let response = fut.await;
                        if let Some(id) = id {
                            respond(&link, &id, &response).await;
                        }
                        drop(slot);
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
    link.counters().record(Event::Malformed);
    tracing::debug!(error = %e, "malformed message");
    if let Some(id) = e.reply_to {
        answer(id, Response::error(e.error)).await;
    }
}

enum Started {
    Ready(Response),
    /// Still running, holding its slot.
    Pending(Running, Slot),
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
    // once never takes a slot (see `slots`).
    if link.slots().is_full() {
        link.counters().record(Event::Overloaded);
        return Started::Ready(ServerError::overloaded().into());
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
        // Started, so it has its slot, even if another receive loop took the last one since
        // the check above: a shutdown then waits for it too.
        Served::Running(fut) => Started::Pending(fut, link.slots().take()),
    }
}

/// Sends one response; a response over the size limit is replaced by an error saying so.
pub(crate) async fn respond<C: Codec, L: Link<C>>(link: &L, id: &C::Id, response: &Response) {
    let codec = link.codec();
    // Whether the codec wrote anything: a protocol without error replies writes nothing.
    let wrote = AtomicBool::new(false);
    let encode = |dst: &mut BytesMut, result| {
        let wrote_one = codec.encode_response(id, result, dst)?;
        wrote.store(wrote_one, Ordering::Relaxed);
        Ok(wrote_one)
    };
    let sent = link
        .send_response(id, |dst| encode(dst, response.result()))
        .await;
    let too_large;
    let (sent, error) = match sent {
        Err(Error::TooLarge { size, limit }) => {
            tracing::warn!(
                size,
                limit,
                "response over the size limit; answering an error"
            );
            too_large = ServerError::new(
                ErrorCode::MESSAGE_TOO_LARGE,
                format!("the response of {size} bytes exceeds the limit of {limit} bytes"),
            );
            // As an answer to `id`: a server that remembers answers (UDP's at-most-once
            // cache) answers copies of the request with this one.
            let sent = link
                .send_response(id, |dst| encode(dst, Err(&too_large)))
                .await;
            (sent, Some(&too_large))
        }
        other => (other, response.result().err()),
    };
    match sent {
        Ok(()) if wrote.load(Ordering::Relaxed) => link.counters().answered(link.peer(), error),
        Ok(()) => {}
        Err(error) => {
            link.counters().record(Event::SendError);
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
                link.counters().record(Event::Request);
                match start(
                    link,
                    serve.as_deref_mut(),
                    id.is_none(),
                    method,
                    args,
                    timeout,
                ) {
                    Started::Ready(r) => answers.extend(id.map(|id| (id, r))),
                    Started::Pending(fut, slot) => pending.push(async move {
                        // The slot is held until the batch's answer is sent: a graceful
                        // shutdown waits for every slot, so it waits for that answer too.
                        let r = fut.await;
                        (id.map(|id| (id, r)), slot)
                    }),
                }
            }
            Ok(Message::Response { id, result }) => link.deliver(id, result),
            Ok(Message::Batch(_)) => link.counters().record(Event::Malformed),
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
            let mut slots = Vec::with_capacity(pending.len());
            for (answer, slot) in futures::future::join_all(pending).await {
                answers.extend(answer);
                slots.push(slot);
            }
            send_batch(&link, &answers).await;
            drop(slots);
        });
    }
}

async fn send_batch<C: Codec, L: Link<C>>(link: &L, answers: &[(C::Id, Response)]) {
    if answers.is_empty() {
        return;
    }
    let codec = link.codec();
    let wrote = AtomicBool::new(false);
    let encode = |dst: &mut BytesMut| {
        let wrote_one = codec.encode_batch(answers, dst)?;
        wrote.store(wrote_one, Ordering::Relaxed);
        Ok(wrote_one)
    };
    match link.send(encode).await {
        Ok(()) if wrote.load(Ordering::Relaxed) => {
            for (_, r) in answers {
                link.counters().answered(link.peer(), r.result().err());
            }
        }
        Ok(()) => {}
        Err(error) => {
            link.counters().record(Event::SendError);
            tracing::warn!(%error, "could not send a batch's answers");
        }
    }
}
