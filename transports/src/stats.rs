//! What a server, endpoint, connection or client counted: one [`Stats`] for every transport.

use std::sync::atomic::{AtomicU64, Ordering};

use rpc_core::{ErrorCode, ServerError};

/// What a server, endpoint, connection or client counted since it started. Every transport
/// counts into the same fields; a field a transport has nothing to count for stays 0 (UDP has
/// no connections, streams drop no datagrams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted (servers) or opened (clients).
    pub connections: u64,
    /// Connections closed at once because the server had `max_connections`.
    pub connections_refused: u64,
    /// Connections closed for being idle.
    pub idle_closed: u64,
    /// Connections closed because their peer took no bytes for the write timeout.
    pub write_stalled: u64,
    /// Connections closed for a bad frame (over the size limit, malformed framing, cut short).
    pub bad_frames: u64,
    /// Datagrams dropped for exceeding the size limit.
    pub oversize: u64,
    /// Frames or datagrams that were not valid messages.
    pub malformed: u64,
    /// Requests and notifications received.
    pub requests: u64,
    /// Answers sent, error answers included; each answer in a batch counts.
    pub responses_sent: u64,
    /// Error answers sent, by code; every one is also in `responses_sent`.
    pub errors_sent: ErrorCounts,
    /// Responses received and handed to a waiting call.
    pub responses_received: u64,
    /// Responses dropped for carrying no id in flight: late, duplicated or forged, or answers to
    /// notifications sent over a codec without notifications (rpcudp answers every request).
    pub unknown_responses: u64,
    /// Responses dropped for coming from another address than the request went to (UDP).
    pub spoofed_responses: u64,
    /// Requests refused because too many were being served (the transport's own limit).
    pub overloaded: u64,
    /// Frames or datagrams that could not be sent.
    pub send_errors: u64,
    /// Retransmitted requests not run again (UDP with `at_most_once`).
    pub duplicates: u64,
    /// Error answers not sent because they would have been larger than the amplification limit
    /// allows (UDP: [`max_error_amplification`](crate::udp::Builder::max_error_amplification)
    /// times the datagram they answer).
    pub withheld: u64,
    /// Connections closed to keep the server's memory for unfinished frames within its budget
    /// ([`max_frame_memory`](crate::Builder::max_frame_memory)).
    pub over_budget: u64,
    /// Requests refused for arguments with more values than their size allows
    /// ([`min_bytes_per_value`](crate::Builder::min_bytes_per_value)).
    pub too_dense: u64,
    /// TLS handshakes that failed: plaintext or garbage sent to a TLS port, a client
    /// certificate missing or not trusted, no protocol in common.
    pub handshakes_failed: u64,
    /// TLS handshakes that did not finish within the handshake timeout, or were ended to make
    /// room when the most handshakes were running.
    pub handshakes_timed_out: u64,
}

impl Stats {
    /// Publishes every counter through the [`metrics`](::metrics) facade (feature `metrics`), so
    /// whatever exporter the program installed shows them: `rpc_<name>_total` for each of
    /// [`counters`](Stats::counters), with `labels` (the listener's address, say). The counters
    /// are set to this reading's values (`absolute`), so publishing readings of a server now and
    /// then, from one task, keeps the exporter's counters as they are here.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// use std::time::Duration;
    /// use rpc_transports::tcp;
    ///
    /// let server = tcp::Builder::new()
    ///     .bind("127.0.0.1:0", rpc_codecs::jsonrpc::JsonRpcCodec::new())
    ///     .await?;
    /// let labels = [metrics::Label::new("listener", server.local_addr().to_string())];
    /// // Publishes a reading each second while the server runs (here: twice).
    /// let mut every = tokio::time::interval(Duration::from_secs(1));
    /// for _ in 0..2 {
    ///     every.tick().await;
    ///     server.stats().publish(&labels);
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn publish(&self, labels: &[::metrics::Label]) {
        for (name, help, value) in self.counters() {
            let name = format!("rpc_{name}_total");
            ::metrics::describe_counter!(name.clone(), help);
            ::metrics::counter!(name, labels.iter()).absolute(value);
        }
    }

    /// Every counter with its name (as in the Prometheus exposition, without the `rpc_` prefix
    /// and `_total` suffix) and what it counts, error answers by code last, named
    /// `errors_sent_<code>`: for printing and exporting them all.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 30] {
        let e = &self.errors_sent;
        [
            (
                "connections",
                "connections accepted or opened",
                self.connections,
            ),
            (
                "connections_refused",
                "connections closed at once by a connection limit",
                self.connections_refused,
            ),
            (
                "idle_closed",
                "connections closed for being idle",
                self.idle_closed,
            ),
            (
                "write_stalled",
                "connections closed because the peer took no bytes",
                self.write_stalled,
            ),
            (
                "bad_frames",
                "connections closed for a bad frame",
                self.bad_frames,
            ),
            (
                "over_budget",
                "connections closed to keep frame memory within its budget",
                self.over_budget,
            ),
            (
                "oversize",
                "datagrams dropped for their size",
                self.oversize,
            ),
            (
                "malformed",
                "frames or datagrams that were not valid messages",
                self.malformed,
            ),
            (
                "requests",
                "requests and notifications received",
                self.requests,
            ),
            (
                "responses_sent",
                "answers sent, error answers included",
                self.responses_sent,
            ),
            (
                "responses_received",
                "responses handed to a waiting call",
                self.responses_received,
            ),
            (
                "unknown_responses",
                "responses to no call in flight",
                self.unknown_responses,
            ),
            (
                "spoofed_responses",
                "responses from another address than asked",
                self.spoofed_responses,
            ),
            (
                "overloaded",
                "requests refused by the transport's concurrency limits",
                self.overloaded,
            ),
            (
                "too_dense",
                "requests refused for arguments too dense to decode",
                self.too_dense,
            ),
            (
                "handshakes_failed",
                "TLS handshakes that failed",
                self.handshakes_failed,
            ),
            (
                "handshakes_timed_out",
                "TLS handshakes that did not finish in time or were ended for room",
                self.handshakes_timed_out,
            ),
            (
                "send_errors",
                "frames or datagrams that could not be sent",
                self.send_errors,
            ),
            (
                "duplicates",
                "retransmitted requests not run again",
                self.duplicates,
            ),
            (
                "withheld",
                "error answers withheld by the amplification limit",
                self.withheld,
            ),
            (
                "errors_sent_parse_error",
                "error answers: parse error",
                e.parse_error,
            ),
            (
                "errors_sent_invalid_request",
                "error answers: invalid request",
                e.invalid_request,
            ),
            (
                "errors_sent_method_not_found",
                "error answers: method not found",
                e.method_not_found,
            ),
            (
                "errors_sent_invalid_params",
                "error answers: invalid params",
                e.invalid_params,
            ),
            (
                "errors_sent_internal_error",
                "error answers: internal error",
                e.internal_error,
            ),
            (
                "errors_sent_overloaded",
                "error answers: overloaded",
                e.overloaded,
            ),
            (
                "errors_sent_rate_limited",
                "error answers: rate limited",
                e.rate_limited,
            ),
            (
                "errors_sent_deadline_exceeded",
                "error answers: deadline exceeded",
                e.deadline_exceeded,
            ),
            (
                "errors_sent_message_too_large",
                "error answers: message too large",
                e.message_too_large,
            ),
            (
                "errors_sent_other",
                "error answers: the application's own codes",
                e.other,
            ),
        ]
    }
}

/// Error answers sent, by code ([`ErrorCode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorCounts {
    /// [`ErrorCode::PARSE_ERROR`].
    pub parse_error: u64,
    /// [`ErrorCode::INVALID_REQUEST`].
    pub invalid_request: u64,
    /// [`ErrorCode::METHOD_NOT_FOUND`].
    pub method_not_found: u64,
    /// [`ErrorCode::INVALID_PARAMS`].
    pub invalid_params: u64,
    /// [`ErrorCode::INTERNAL_ERROR`].
    pub internal_error: u64,
    /// [`ErrorCode::OVERLOADED`], whoever refused: the transport's limit or a layer.
    pub overloaded: u64,
    /// [`ErrorCode::RATE_LIMITED`].
    pub rate_limited: u64,
    /// [`ErrorCode::DEADLINE_EXCEEDED`].
    pub deadline_exceeded: u64,
    /// [`ErrorCode::MESSAGE_TOO_LARGE`].
    pub message_too_large: u64,
    /// Every other code: the application's own.
    pub other: u64,
}

impl ErrorCounts {
    /// All error answers.
    pub fn total(&self) -> u64 {
        self.parse_error
            + self.invalid_request
            + self.method_not_found
            + self.invalid_params
            + self.internal_error
            + self.overloaded
            + self.rate_limited
            + self.deadline_exceeded
            + self.message_too_large
            + self.other
    }
}

/// What happened, for [`Counters::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Connection,
    ConnectionRefused,
    IdleClosed,
    WriteStalled,
    BadFrame,
    Oversize,
    Malformed,
    Request,
    ResponseSent,
    ResponseReceived,
    UnknownResponse,
    SpoofedResponse,
    Overloaded,
    SendError,
    Duplicate,
    Withheld,
    OverBudget,
    TooDense,
    HandshakeFailed,
    HandshakeTimedOut,
}

/// The live counters behind a [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    events: [AtomicU64; EVENTS],
    /// By `CODES`' order, then one for every other code.
    errors: [AtomicU64; CODES.len() + 1],
}

const EVENTS: usize = Event::HandshakeTimedOut as usize + 1;

/// The codes counted apart, in `ErrorCounts`' order.
const CODES: [ErrorCode; 9] = [
    ErrorCode::PARSE_ERROR,
    ErrorCode::INVALID_REQUEST,
    ErrorCode::METHOD_NOT_FOUND,
    ErrorCode::INVALID_PARAMS,
    ErrorCode::INTERNAL_ERROR,
    ErrorCode::OVERLOADED,
    ErrorCode::RATE_LIMITED,
    ErrorCode::DEADLINE_EXCEEDED,
    ErrorCode::MESSAGE_TOO_LARGE,
];

impl Counters {
    pub(crate) fn record(&self, event: Event) {
        self.record_n(event, 1);
    }

    pub(crate) fn record_n(&self, event: Event, n: u64) {
        self.events[event as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// An answer went out to `peer`; an error answer is also counted by code, and told at
    /// debug level.
    pub(crate) fn answered(&self, peer: &dyn std::fmt::Display, error: Option<&ServerError>) {
        self.record(Event::ResponseSent);
        let Some(error) = error else {
            return;
        };
        let code = error.code();
        let i = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len());
        self.errors[i].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, code = code.code(), message = error.message(), "answered an error");
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let e = |event: Event| self.events[event as usize].load(Ordering::Relaxed);
        let c = |i: usize| self.errors[i].load(Ordering::Relaxed);
        Stats {
            connections: e(Event::Connection),
            connections_refused: e(Event::ConnectionRefused),
            idle_closed: e(Event::IdleClosed),
            write_stalled: e(Event::WriteStalled),
            bad_frames: e(Event::BadFrame),
            oversize: e(Event::Oversize),
            malformed: e(Event::Malformed),
            requests: e(Event::Request),
            responses_sent: e(Event::ResponseSent),
            errors_sent: ErrorCounts {
                parse_error: c(0),
                invalid_request: c(1),
                method_not_found: c(2),
                invalid_params: c(3),
                internal_error: c(4),
                overloaded: c(5),
                rate_limited: c(6),
                deadline_exceeded: c(7),
                message_too_large: c(8),
                other: c(9),
            },
            responses_received: e(Event::ResponseReceived),
            unknown_responses: e(Event::UnknownResponse),
            spoofed_responses: e(Event::SpoofedResponse),
            overloaded: e(Event::Overloaded),
            send_errors: e(Event::SendError),
            duplicates: e(Event::Duplicate),
            withheld: e(Event::Withheld),
            over_budget: e(Event::OverBudget),
            too_dense: e(Event::TooDense),
            handshakes_failed: e(Event::HandshakeFailed),
            handshakes_timed_out: e(Event::HandshakeTimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "metrics")]
    #[test]
    fn every_counter_is_published_with_its_labels() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let c = Counters::default();
        c.record_n(Event::Request, 3);
        c.answered(&"peer", Some(&ServerError::overloaded()));
        let stats = c.snapshot();
        let labels = [::metrics::Label::new("listener", "tcp://127.0.0.1:1")];
        metrics::with_local_recorder(&recorder, || stats.publish(&labels));
        let published = snapshotter.snapshot().into_vec();
        assert_eq!(published.len(), stats.counters().len());
        let value = |name: &str| {
            published
                .iter()
                .find(|(key, ..)| key.key().name() == name)
                .map(|(key, _, _, value)| {
                    let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
                    assert_eq!(labels, ["tcp://127.0.0.1:1"]);
                    match value {
                        DebugValue::Counter(n) => *n,
                        other => panic!("{name} is not a counter: {other:?}"),
                    }
                })
        };
        assert_eq!(value("rpc_requests_total"), Some(3));
        assert_eq!(value("rpc_errors_sent_overloaded_total"), Some(1));
        assert_eq!(value("rpc_responses_sent_total"), Some(1));
    }

    #[test]
    fn errors_are_counted_by_code_and_every_event_has_its_field() {
        let c = Counters::default();
        for code in CODES {
            c.answered(&"peer", Some(&ServerError::from_code(code)));
        }
        c.answered(&"peer", Some(&ServerError::new(ErrorCode::new(7), "mine")));
        c.answered(&"peer", None);
        let s = c.snapshot();
        assert_eq!(s.errors_sent.total(), 10);
        assert_eq!(s.responses_sent, 11, "every error answer is an answer");
        // The events below start from none.
        let c = Counters::default();
        let e = s.errors_sent;
        for n in [
            e.parse_error,
            e.invalid_request,
            e.method_not_found,
            e.invalid_params,
            e.internal_error,
            e.overloaded,
            e.rate_limited,
            e.deadline_exceeded,
            e.message_too_large,
            e.other,
        ] {
            assert_eq!(n, 1);
        }
        let events = [
            Event::Connection,
            Event::ConnectionRefused,
            Event::IdleClosed,
            Event::WriteStalled,
            Event::BadFrame,
            Event::Oversize,
            Event::Malformed,
            Event::Request,
            Event::ResponseSent,
            Event::ResponseReceived,
            Event::UnknownResponse,
            Event::SpoofedResponse,
            Event::Overloaded,
            Event::SendError,
            Event::Duplicate,
            Event::Withheld,
            Event::OverBudget,
            Event::TooDense,
            Event::HandshakeFailed,
            Event::HandshakeTimedOut,
        ];
        assert_eq!(events.len(), EVENTS);
        for (i, event) in events.into_iter().enumerate() {
            for _ in 0..=i {
                c.record(event);
            }
        }
        let s = c.snapshot();
        let got = [
            s.connections,
            s.connections_refused,
            s.idle_closed,
            s.write_stalled,
            s.bad_frames,
            s.oversize,
            s.malformed,
            s.requests,
            s.responses_sent,
            s.responses_received,
            s.unknown_responses,
            s.spoofed_responses,
            s.overloaded,
            s.send_errors,
            s.duplicates,
            s.withheld,
            s.over_budget,
            s.too_dense,
            s.handshakes_failed,
            s.handshakes_timed_out,
        ];
        let want: Vec<u64> = (1..=EVENTS as u64).collect();
        assert_eq!(got.to_vec(), want);
    }
}
