//! `rpc bench`: a closed-loop (or rate-paced) load generator with HDR latency percentiles.
//!
//! Each of `--concurrency` workers keeps one call in flight; workers are spread over
//! `--connections` sockets, and the workers of one socket run in one task (the answers one read
//! brings wake it once). Requests are encoded once per worker and re-sent as shared bytes, and
//! every worker records into its own histogram and counters (merged at the end), so the
//! generator does little work per call and shares nothing hot between workers.
//!
//! With `--rate`, calls are scheduled at the rate asked for, the workers' schedules staggered so
//! that the calls are spread evenly, and each call's latency counts from its scheduled time: a
//! server that falls behind shows as latency, not as a lower rate alone. The exit code is 0 if
//! any call succeeded; if none did, it is the code of the commonest failure (3 timeouts,
//! 4 transport failures, 1 error answers). Throughput (`rps`) and the latency percentiles are
//! of the calls that succeeded; `requests` counts every call made, `errors` those that failed.
//!
//! Over several endpoints (a list, an etcd prefix: see `many`), each of the `--connections`
//! clients is a balancer with a connection to every endpoint, and the report adds each
//! endpoint's successful calls (`per_endpoint`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;
use rpc_core::Error;
use serde::Serialize;
use tokio::time::Instant;

use crate::many::{Many, Successes};
use crate::{request_for, BenchArgs, Failure};
use crate::{EXIT_REMOTE, EXIT_TIMEOUT, EXIT_TRANSPORT, EXIT_USAGE};
use rpc_core::context::deadline_after;

/// Errors by kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Errors {
    timeout: u64,
    remote: u64,
    transport: u64,
    other: u64,
}

impl Errors {
    fn count(&mut self, e: &Error) {
        match e {
            Error::Timeout => self.timeout += 1,
            Error::Server(_) => self.remote += 1,
            Error::Transport(_) | Error::Closed => self.transport += 1,
            _ => self.other += 1,
        }
    }

    fn total(&self) -> u64 {
        self.timeout + self.remote + self.transport + self.other
    }

    fn merge(&mut self, o: &Errors) {
        self.timeout += o.timeout;
        self.remote += o.remote;
        self.transport += o.transport;
        self.other += o.other;
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    requests: u64,
    errors: u64,
    errors_by_kind: Errors,
    duration_s: f64,
    rps: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// The CPU time (user and system) this process used per call made, in µs, where the
    /// platform tells it (`/proc/self/stat`): what the generator itself costs, to compare with
    /// the server's.
    cpu_us_per_call: Option<f64>,
    concurrency: u32,
    connections: u32,
    /// Over several endpoints: each one's successful calls, by URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_endpoint: Option<std::collections::BTreeMap<String, u64>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour, 3 significant figures.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    // Each worker paces itself to its share of the total rate: one call every `interval`.
    let interval = match args.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(
            Duration::try_from_secs_f64(f64::from(args.concurrency) / rate).map_err(|_| {
                Failure::usage("--rate is too small: calls would be further apart than any clock")
            })?,
        ),
        Some(_) => {
            return Err(Failure::usage(
                "--rate must be a positive number of calls per second",
            ))
        }
    };
    let balanced = Many::parse(&args.target.url)
        .map_err(Failure::usage)?
        .is_some();
    let successes = Successes::default();
    let idempotent = args.idempotent.then(|| args.target.method.clone());
    let mut clients = Vec::new();
    let mut codec = args.target.codec;
    for _ in 0..args.connections {
        let (client, c) = args
            .target
            .client(args.timeout, idempotent.clone(), Some(&successes))
            .await?;
        codec = c;
        clients.push(client);
    }
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let start = Instant::now();
    let end = deadline_after(start, args.duration);

    let progress = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                eprint!(
                    "\r{secs:5.1}s  {n:>10} calls  {:>10.0} calls/s ",
                    n as f64 / secs.max(1e-9)
                );
                let _ = std::io::stderr().flush();
            }
        })
    });

    // Workers that share a connection run in one task: the answers one read brings wake that
    // task once, not a task per worker, and the workers' next calls are queued together.
    let mut groups: Vec<Vec<_>> = (0..clients.len()).map(|_| Vec::new()).collect();
    for i in 0..args.concurrency {
        // The worker's own clone: calls go through it in place (`send_mut`), not through a
        // clone per call.
        let mut client = clients[i as usize % clients.len()].clone();
        let request = request_for(codec, &client, &args.target.method, &args.target.args)?;
        let done = progress.as_ref().map(|_| done.clone());
        // Worker i's first call is i/concurrency of an interval in: the calls of all workers
        // together come evenly spaced, not in bursts of `concurrency`.
        let first = match interval {
            Some(iv) => {
                let offset = iv.mul_f64(f64::from(i) / f64::from(args.concurrency));
                match start.checked_add(offset) {
                    Some(at) => Some(at),
                    // Due later than any clock can tell: this worker has no call to make.
                    None => continue,
                }
            }
            None => None,
        };
        groups[i as usize % clients.len()].push(async move {
            let mut hist = histogram();
            let mut errors = Errors::default();
            let mut calls = 0u64;
            let mut next = first;
            // After a transport failure (a refused connection, say), the next call waits: from
            // 10 ms, doubling to 1 s while they go on failing.
            let mut backoff = None::<Duration>;
            loop {
                // When this call was due: its latency counts from then.
                let due = match interval {
                    Some(iv) => {
                        let Some(at) = next.filter(|at| *at < end) else {
                            break;
                        };
                        tokio::time::sleep_until(at).await;
                        next = at.checked_add(iv);
                        at
                    }
                    None => Instant::now(),
                };
                if due >= end {
                    break;
                }
                // The transport's timeout bounds the call: the shared request is sent as it is
                // (changing its context would copy it, every call).
                match client.send_mut(request.clone()).await {
                    Ok(_) => {
                        backoff = None;
                        let us = due.elapsed().as_micros().max(1);
                        hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                    }
                    Err(e) => {
                        if matches!(e, rpc_core::Error::Transport(_)) {
                            let wait = backoff.map_or(Duration::from_millis(10), |b| {
                                (b * 2).min(Duration::from_secs(1))
                            });
                            backoff = Some(wait);
                            tokio::time::sleep_until(end.min(Instant::now() + wait)).await;
                        }
                        errors.count(&e);
                    }
                }
                calls += 1;
                // The progress line's count, shared between the workers: updated now and then
                // rather than by every call.
                if let Some(done) = &done {
                    if calls % 64 == 0 {
                        done.fetch_add(64, Ordering::Relaxed);
                    }
                }
            }
            (hist, errors, calls)
        });
    }
    let mut workers = tokio::task::JoinSet::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        workers.spawn(
            group
                .into_iter()
                .collect::<futures::stream::FuturesUnordered<_>>()
                .collect::<Vec<_>>(),
        );
    }
    let mut hist = histogram();
    let mut errors = Errors::default();
    // A paced run lasts its whole duration, not until its last scheduled call.
    if interval.is_some() {
        tokio::time::sleep_until(end).await;
    }
    let mut requests = 0;
    while let Some(r) = workers.join_next().await {
        let group = r.map_err(|e| Failure::usage(format!("a worker failed: {e}")))?;
        for (h, e, calls) in group {
            hist.add(&h)
                .map_err(|e| Failure::usage(format!("merging histograms: {e}")))?;
            errors.merge(&e);
            requests += calls;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let ok = hist.len();
    let report = Report {
        requests,
        errors: errors.total(),
        errors_by_kind: errors,
        duration_s: elapsed,
        rps: ok as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p90_us: hist.value_at_quantile(0.9),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        cpu_us_per_call: cpu
            .filter(|_| requests > 0)
            .map(|c| c.as_secs_f64() * 1e6 / requests as f64),
        concurrency: args.concurrency,
        connections: args.connections,
        per_endpoint: balanced.then(|| successes.snapshot()),
    };
    let mut out = std::io::stdout().lock();
    let failed = (ok == 0 && report.errors > 0).then(|| {
        let e = &report.errors_by_kind;
        let (n, code, what) = [
            (e.timeout, EXIT_TIMEOUT, "timed out"),
            (e.transport, EXIT_TRANSPORT, "failed in the transport"),
            (e.remote, EXIT_REMOTE, "were answered with an error"),
            (e.other, EXIT_USAGE, "failed"),
        ]
        .into_iter()
        .max_by_key(|(n, _, _)| *n)
        .unwrap_or((0, EXIT_USAGE, "failed"));
        Failure {
            code,
            message: format!("no call succeeded: {n} of {} calls {what}", report.requests),
        }
    });
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&report).unwrap_or_default()
        );
    } else {
        let e = &report.errors_by_kind;
        let _ = writeln!(
            out,
            "requests    {}\nerrors      {} (timeout {}, remote {}, transport {}, other {})\nthroughput  {:.0} successful calls/s over {:.2} s ({} in flight on {} socket(s))\nlatency     p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
            report.requests, report.errors, e.timeout, e.remote, e.transport, e.other,
            report.rps, report.duration_s, report.concurrency, report.connections,
            report.p50_us, report.p90_us, report.p99_us, report.p999_us, report.max_us
        );
        if let Some(us) = report.cpu_us_per_call {
            let _ = writeln!(out, "cpu         {us:.2} µs per call (this process)");
        }
        for (url, n) in report.per_endpoint.iter().flatten() {
            let _ = writeln!(out, "endpoint    {url}  {n} successful calls");
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The CPU time (user and system) this process has used, from `/proc/self/stat`: `None` where
/// there is no such file.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15, in clock
    // ticks of USER_HZ, which is 100 a second on Linux.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
