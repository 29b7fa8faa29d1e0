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

use crate::budget::Held;
use crate::slots::{IpSlot, PerIp, Slot, Slots};
pub(crate) use crate::stats::{Counters, Event};

/// The result a response carries, before it becomes a `Payload`.
pub(crate) type CallResult = Result<Bytes, ServerError>;

/// One peer as seen by the dispatcher: where answers go, and how requests are bounded.
pub(crate) trait Link<C: Codec>: Clone + Send + Sync + 'static {
    fn codec(&self) -> &C;
    /// Bounds the requests served at once.
    fn slots(&self) -> &Arc<Slots>;
    /// The peer's IP address and what each address may hold of the requests served at once,
    /// where requests from one address must not take them all; `None` for no share.
    fn share(&self) -> Option<(&Arc<PerIp>, std::net::IpAddr)>;
    /// In frames over 4 KiB, arguments with more than one value per this many bytes are refused; 0 for no
    /// check ([`Builder::min_bytes_per_value`](crate::Builder::min_bytes_per_value)).
    fn min_bytes_per_value(&self) -> usize;
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
    /// The most bytes an error answer to this frame may take: over UDP a multiple of the
    /// datagram it answers (a forged source address must not turn a small datagram into a large
    /// one aimed at a third party); `None`, the default, for no bound.
    fn error_budget(&self) -> Option<usize> {
        None
    }
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
/// found". `held` counts the frame against its server's memory budget until every request in it
/// has been answered. Returns whether the frame was a response (handed to the call table).
pub(crate) async fn handle<C: Codec, L: Link<C>>(
    link: &L,
    serve: Option<&mut LocalServe>,
    frame: Bytes,
    held: Held,
) -> bool {
    // Small frames are decoded whatever their density: however dense, they decode small.
    let check = frame.len() > crate::builder::DENSITY_CHECKED_FROM;
    match link.codec().decode(frame) {
        Ok(Message::Batch(items)) => batch(link, serve, items, held, check).await,
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
            match start(link, serve, id.is_none(), method, args, timeout, check) {
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
                        drop((slot, held));
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
    /// Still running, holding its slot (and its address's share).
    Pending(Running, (Slot, Option<IpSlot>)),
}

/// Starts serving a request; answers from here when the handler does not wait. `check`: the
/// frame is large enough for its arguments' density to be checked.
fn start<C: Codec, L: Link<C>>(
    link: &L,
    service: Option<&mut LocalServe>,
    notification: bool,
    method: Method,
    args: Bytes,
    timeout: Option<std::time::Duration>,
    check: bool,
) -> Started {
    let Some(service) = service else {
        return Started::Ready(ServerError::method_not_found(&method).into());
    };
    // The limit counts requests still running after their first poll: one that is done at
    // once never takes a slot (see `slots`).
    let share = link.share();
    let slots = link.slots();
    if slots.is_full() || share.is_some_and(|(per_ip, ip)| per_ip.is_full(ip)) {
        link.counters().record(Event::Overloaded);
        return Started::Ready(ServerError::overloaded().into());
    }
    if let Some(refusal) = check.then(|| too_dense(link, &args)).flatten() {
        link.counters().record(Event::TooDense);
        return Started::Ready(refusal.into());
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
        Served::Running(fut) => {
            let share = share.map(|(per_ip, ip)| per_ip.take(ip));
            Started::Pending(fut, (link.slots().take(), share))
        }
    }
}

/// The refusal of arguments with more values than their size allows, if they have
/// ([`Builder::min_bytes_per_value`](crate::Builder::min_bytes_per_value)), counting a few more
/// for small arguments (a batch's items).
fn too_dense<C: Codec, L: Link<C>>(link: &L, args: &[u8]) -> Option<ServerError> {
    const SLACK: usize = 16;
    let per = link.min_bytes_per_value();
    if per == 0 {
        return None;
    }
    let allowed = args.len() / per + SLACK;
    let values = rpc_core::Format::count_values(link.codec().format(), args, allowed)?;
    (values > allowed).then(|| {
        ServerError::new(
            ErrorCode::MESSAGE_TOO_LARGE,
            format!(
                "arguments of {} bytes hold more than {allowed} values (one per {per} bytes): too many to decode",
                args.len()
            ),
        )
    })
}

/// Sends one response; a response over the size limit is replaced by an error saying so.
pub(crate) async fn respond<C: Codec, L: Link<C>>(link: &L, id: &C::Id, response: &Response) {
    let codec = link.codec();
    let budget = link.error_budget();
    // Whether the codec wrote anything: a protocol without error replies writes nothing.
    let wrote = AtomicBool::new(false);
    let encode = |dst: &mut BytesMut, result: Result<&Payload, &ServerError>| {
        let wrote_one = codec.encode_response(id, result, dst)?;
        wrote.store(wrote_one, Ordering::Relaxed);
        Ok(wrote_one)
    };
    // An error answer over the budget is cut to fit it, or withheld.
    let fitted;
    let result = match (response.result(), budget) {
        (Err(e), Some(budget)) => {
            fitted = fit(e, budget, |e| {
                encoded_len(|dst| codec.encode_response(id, Err(e), dst))
            });
            match &fitted {
                Some(e) => Err(e),
                None => return withhold(link),
            }
        }
        (result, _) => result,
    };
    let sent = link.send_response(id, |dst| encode(dst, result)).await;
    let too_large;
    let (sent, error) = match sent {
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
            too_large = match budget {
                Some(b) => fit(&e, b, |e| {
                    encoded_len(|dst| codec.encode_response(id, Err(e), dst))
                }),
                None => Some(e),
            };
            let Some(too_large) = &too_large else {
                return withhold(link);
            };
            // As an answer to `id`: a server that remembers answers (UDP's at-most-once
            // cache) answers copies of the request with this one.
            let sent = link
                .send_response(id, |dst| encode(dst, Err(too_large)))
                .await;
            (sent, Some(too_large))
        }
        other => (other, result.err()),
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
    held: Held,
    check: bool,
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
                    check,
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
            drop((slots, held));
        });
    }
}

async fn send_batch<C: Codec, L: Link<C>>(link: &L, answers: &[(C::Id, Response)]) {
    let codec = link.codec();
    let answers = within_budget(link, answers);
    if answers.is_empty() {
        return;
    }
    let wrote = AtomicBool::new(false);
    let encode = |dst: &mut BytesMut| {
        let wrote_one = codec.encode_batch(&answers, dst)?;
        wrote.store(wrote_one, Ordering::Relaxed);
        Ok(wrote_one)
    };
    match link.send(encode).await {
        Ok(()) if wrote.load(Ordering::Relaxed) => {
            for (_, r) in answers.iter() {
                link.counters().answered(link.peer(), r.result().err());
            }
        }
        Ok(()) => {}
        Err(Error::TooLarge { size, limit }) => {
            // Not sent whole, so not at all: one error about the batch says why.
            tracing::warn!(
                size,
                limit,
                "a batch's answer over the size limit; answering an error"
            );
            let e = ServerError::new(
                ErrorCode::MESSAGE_TOO_LARGE,
                format!("the batch's answer of {size} bytes exceeds the limit of {limit} bytes"),
            );
            let fits = link
                .error_budget()
                .is_none_or(|b| encoded_len(|dst| codec.encode_frame_error(&e, dst)) <= b);
            if !fits {
                return withhold(link);
            }
            match link.send(|dst| codec.encode_frame_error(&e, dst)).await {
                Ok(()) => link.counters().answered(link.peer(), Some(&e)),
                Err(error) => {
                    link.counters().record(Event::SendError);
                    tracing::warn!(%error, "could not send a batch's answers");
                }
            }
        }
        Err(error) => {
            link.counters().record(Event::SendError);
            tracing::warn!(%error, "could not send a batch's answers");
        }
    }
}

/// A batch's answers without the error items past the link's error budget (taken in order).
fn within_budget<'a, C: Codec, L: Link<C>>(
    link: &L,
    answers: &'a [(C::Id, Response)],
) -> std::borrow::Cow<'a, [(C::Id, Response)]> {
    let Some(budget) = link.error_budget() else {
        return answers.into();
    };
    if answers.iter().all(|(_, r)| r.result().is_ok()) {
        return answers.into();
    }
    let codec = link.codec();
    let mut left = budget;
    let mut withheld = 0;
    let mut kept = Vec::with_capacity(answers.len());
    for (id, r) in answers {
        let Err(e) = r.result() else {
            kept.push((id.clone(), r.clone()));
            continue;
        };
        let len = |e: &ServerError| encoded_len(|dst| codec.encode_response(id, Err(e), dst));
        match fit(e, left, len) {
            Some(e) => {
                left -= len(&e);
                kept.push((id.clone(), Response::error(e)));
            }
            None => withheld += 1,
        }
    }
    // The batch's own framing (brackets, separators) counts too: error items go, last first,
    // until the whole fits.
    let over = |kept: &[(C::Id, Response)]| {
        encoded_len(|dst| codec.encode_batch(kept, dst)) > budget
            && kept.iter().any(|(_, r)| r.result().is_err())
    };
    while over(&kept) {
        if let Some(i) = kept.iter().rposition(|(_, r)| r.result().is_err()) {
            kept.remove(i);
            withheld += 1;
        }
    }
    if withheld > 0 {
        withhold_n(link, withheld);
    }
    kept.into()
}

/// `e`, or a shorter copy of it, whose encoding (`len`) takes at most `budget` bytes: its
/// message cut (at a character boundary, ending in "…"), then its data left out (but for a
/// refusal's mark, which retry policies read); `None` if even that does not fit.
fn fit(e: &ServerError, budget: usize, len: impl Fn(&ServerError) -> usize) -> Option<ServerError> {
    if len(e) <= budget {
        return Some(e.clone());
    }
    let data = e
        .was_refused()
        .then(|| ServerError::refused(e.code(), "").data().cloned())
        .flatten();
    let with = |message: &str, data: Option<serde_json::Value>| {
        let cut = ServerError::new(e.code(), message.to_owned());
        match data {
            Some(d) => cut.with_data(d),
            None => cut,
        }
    };
    for data in [e.data().cloned(), data] {
        let bare = len(&with("…", data.clone()));
        if bare > budget {
            continue;
        }
        // Cut the message to the room left (escaping may make it longer: shorten until it fits).
        let mut room = (budget - bare).min(e.message().len());
        loop {
            let mut end = room;
            while !e.message().is_char_boundary(end) {
                end -= 1;
            }
            let cut = with(&format!("{}…", &e.message()[..end]), data.clone());
            if len(&cut) <= budget || end == 0 {
                return (len(&cut) <= budget).then_some(cut);
            }
            room = end.saturating_sub(1 + (len(&cut) - budget));
        }
    }
    None
}

/// The bytes `encode` writes.
fn encoded_len(encode: impl FnOnce(&mut BytesMut) -> Result<bool, Error>) -> usize {
    let mut scratch = BytesMut::new();
    match encode(&mut scratch) {
        Ok(true) => scratch.len(),
        _ => 0,
    }
}

/// An error answer held back for being over the link's budget: counted and told.
fn withhold<C: Codec, L: Link<C>>(link: &L) {
    withhold_n(link, 1);
}

/// `n` error answers held back (a batch's: counted each, told once, so a batch of a thousand
/// bad items is not a thousand log lines).
fn withhold_n<C: Codec, L: Link<C>>(link: &L, n: usize) {
    link.counters().record_n(Event::Withheld, n as u64);
    tracing::debug!(peer = %link.peer(), n, "error answers withheld: larger than the amplification limit allows");
}
