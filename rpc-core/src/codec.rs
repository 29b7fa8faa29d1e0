//! Codecs: how whole messages (requests and responses with their ids) become frames.
//!
//! A codec is the envelope around a [`Format`]'s values. It reads one frame — a datagram, or
//! one frame cut from a stream by the transport's framing — into a [`Message`], and writes messages
//! into frames. Arguments and results stay encoded ([`Payload`]) until a handler or a caller decodes
//! them into their types, so a codec never needs to know those types.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ServerError};
use crate::format::{Format, Payload};
use crate::message::{Method, Response};

/// One decoded message.
#[derive(Debug, Clone)]
pub enum Message<Id> {
    /// A request to serve; `id` is `None` for a notification.
    Request {
        /// The id to answer to.
        id: Option<Id>,
        /// The method.
        method: Method,
        /// The encoded arguments, in the codec's [`Format`].
        args: Bytes,
        /// The time the caller allows the call, where the codec carries it: the server's
        /// [`Context`](crate::Context) gets the deadline it implies.
        timeout: Option<Duration>,
    },
    /// The answer to one of our calls.
    Response {
        /// The id of the call.
        id: Id,
        /// The encoded result, or the peer's error.
        result: Result<Bytes, ServerError>,
    },
    /// Several messages in one frame (a JSON-RPC batch). The transport serves the requests
    /// concurrently and answers them together with [`Codec::encode_batch`]; members that are not
    /// valid messages are answered as errors in the same batch.
    Batch(Vec<Result<Message<Id>, DecodeError<Id>>>),
}

/// A frame that is not a valid message.
#[derive(Debug, Clone)]
pub struct DecodeError<Id> {
    /// The id of the request, when it could be read and the peer should be told: the transport
    /// answers `error` to it if the codec can carry errors. `None`: drop the frame silently.
    pub reply_to: Option<Id>,
    /// What is wrong.
    pub error: ServerError,
}

impl<Id> DecodeError<Id> {
    /// An error that is not answered.
    pub fn drop(error: ServerError) -> Self {
        Self {
            reply_to: None,
            error,
        }
    }
}

impl<Id> fmt::Display for DecodeError<Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// What a transport gives a codec to make a fresh request id from ([`Codec::new_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSeed {
    /// The next number of the connection's own sequence, from 1: over a stream only the peer at
    /// the other end can answer, so ids need only tell its calls apart.
    Sequence(u64),
    /// 128 bits from a cryptographically secure generator: over datagrams anyone can send an
    /// answer from a forged source address, and only an id nobody can guess tells the real one.
    Unguessable(u128),
}

/// A message encoding: turns frames into [`Message`]s and back.
///
/// Implementations are cheap to clone (share state behind an `Arc`).
pub trait Codec: Clone + Send + Sync + 'static {
    /// The request id type (20 random bytes for rpcudp, a number or string for JSON-RPC, ...).
    type Id: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;

    /// The format of arguments and results, named in the codec's type: a codec is written for
    /// one format, and checks that the arguments it is given are in it ([`Payload::in_format`]).
    type Format: Format;

    /// The format of arguments and results.
    fn format(&self) -> &'static Self::Format;

    /// Bytes a frame carries beyond its payload (fixed headers); transports add it to their
    /// payload limit to get their frame limit.
    fn overhead(&self) -> usize {
        0
    }

    /// A fresh id for an outgoing call, made from what the transport gives ([`IdSeed`]): the
    /// transport knows whether an answer can be forged (datagrams) and so whether the id must be
    /// unguessable. A codec may make an id stronger than its seed (rpcudp's are always 20 random
    /// bytes, as its wire format has them), never weaker.
    fn new_id(&self, seed: IdSeed) -> Self::Id;

    /// Decodes one frame.
    fn decode(&self, frame: Bytes) -> Result<Message<Self::Id>, DecodeError<Self::Id>>;

    /// Whether [`encode_request_with_timeout`](Self::encode_request_with_timeout) sends the
    /// timeout; transports work it out only for codecs that do. The default, `false`, goes with
    /// the default `encode_request_with_timeout`, which ignores it.
    fn carries_timeout(&self) -> bool {
        false
    }

    /// Appends a request that allows the peer `timeout` to answer, for codecs that can carry it;
    /// the default ignores the timeout.
    fn encode_request_with_timeout(
        &self,
        id: Option<&Self::Id>,
        method: &Method,
        args: &Payload,
        timeout: Option<Duration>,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let _ = timeout;
        self.encode_request(id, method, args, dst)
    }

    /// Appends a request to `dst`; `id` is `None` for a notification.
    fn encode_request(
        &self,
        id: Option<&Self::Id>,
        method: &Method,
        args: &Payload,
        dst: &mut BytesMut,
    ) -> Result<(), Error>;

    /// Appends a response to `dst`. Returns `false`, writing nothing, when the protocol cannot carry
    /// it (a protocol without error replies): the caller is then left to time out.
    fn encode_response(
        &self,
        id: &Self::Id,
        result: Result<&Payload, &ServerError>,
        dst: &mut BytesMut,
    ) -> Result<bool, Error>;

    /// Appends an error about a frame as a whole, addressed to no request (JSON-RPC's error with
    /// id `null`): a batch whose answer cannot be sent whole is answered with it. Returns
    /// `false`, writing nothing, for protocols that cannot carry one; the default. Codecs
    /// without batches never need it.
    fn encode_frame_error(&self, error: &ServerError, dst: &mut BytesMut) -> Result<bool, Error> {
        let _ = (error, dst);
        Ok(false)
    }

    /// Appends the answers to a batch as one frame. Returns `false`, writing nothing, when there is
    /// nothing to send. Codecs without batches never decode one, so the default is never called.
    fn encode_batch(
        &self,
        responses: &[(Self::Id, Response)],
        dst: &mut BytesMut,
    ) -> Result<bool, Error> {
        let _ = (responses, dst);
        Err(Error::Codec("this codec has no batches".into()))
    }
}
