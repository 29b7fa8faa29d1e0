//! Counters an endpoint keeps.

use std::sync::atomic::{AtomicU64, Ordering};

/// What an [`Endpoint`](super::Endpoint) received, sent and dropped since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests and notifications received and routed.
    pub requests: u64,
    /// Responses (and error replies) sent.
    pub responses_sent: u64,
    /// Responses received and handed to a waiting call.
    pub responses_received: u64,
    /// Datagrams dropped for exceeding the size limit.
    pub oversize: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// Responses dropped for carrying no id in flight: late, duplicated or forged, or answers to
    /// notifications sent over a codec without notifications (rpcudp answers every request).
    pub unknown_responses: u64,
    /// Responses dropped for coming from another address than the request went to.
    pub spoofed_responses: u64,
    /// Requests refused because too many were being served.
    pub overloaded: u64,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
    /// Retransmitted requests not run again (with [`at_most_once`](super::Builder::at_most_once)).
    pub duplicates: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) responses_sent: AtomicU64,
    pub(super) responses_received: AtomicU64,
    pub(super) oversize: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) unknown_responses: AtomicU64,
    pub(super) spoofed_responses: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) duplicates: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            responses_sent: get(&self.responses_sent),
            responses_received: get(&self.responses_received),
            oversize: get(&self.oversize),
            malformed: get(&self.malformed),
            unknown_responses: get(&self.unknown_responses),
            spoofed_responses: get(&self.spoofed_responses),
            overloaded: get(&self.overloaded),
            send_errors: get(&self.send_errors),
            duplicates: get(&self.duplicates),
        }
    }
}
