//! The master's observability listener (`--metrics ADDR`): `GET /metrics` in the Prometheus
//! text format, `GET /healthz` (the master is alive) and `GET /readyz` (every slot has a
//! ready worker and no shutdown started: take the host out of rotation otherwise).

use crate::error::{Error, ErrorKind};
use crate::inbox::{Framing, Inbox};
use crate::ipc::{MountStats, Stats};
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::time::Instant;

/// The dashboard: one self-contained page (no external assets) that polls
/// `/dashboard.json` once a second and plots, per worker, requests/s, connections, CPU, RSS
/// and io_uring enters and completions per second over the last five minutes, with the slots'
/// states and the last reload. The browser keeps the history; the master answers one small
/// JSON document per poll.
pub(crate) const DASHBOARD: &str = include_str!("assets/dashboard.html");

/// The content types the listener answers with.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JSON: &str = "application/json";

/// The largest request head the listener reads.
const HEAD_BYTES_MAX: usize = 4096;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics,
    /// `/`: the dashboard page ([`DASHBOARD`]).
    Dashboard,
    /// `/dashboard.json`: the sample the dashboard polls.
    DashboardJson,
    Healthz,
    Readyz,
    /// Anything else: 404 (or 405 for a method other than GET and HEAD).
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// The listener and its connections.
pub(crate) struct MetricsServer {
    inbox: Inbox<TcpListener>,
}

impl MetricsServer {
    pub(crate) fn bind(addr: SocketAddr) -> Result<MetricsServer, Error> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            Error::new(
                ErrorKind::Bind,
                format!("binding the metrics listener {addr} failed: {e}; choose another --metrics address"),
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::system("metrics listener", e))?;
        let framing = Framing {
            terminator: b"\r\n\r\n",
            bytes_max: HEAD_BYTES_MAX,
            too_long: b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            busy: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        };
        Ok(MetricsServer {
            inbox: Inbox::new(listener, framing),
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.inbox.listener().local_addr().ok()
    }

    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.poll_fds()
    }

    /// Every descriptor it owns (for a forked child to close).
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.inbox.descriptors()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.inbox.next_deadline()
    }

    /// Accepts, reads, and returns the requests that arrived, routed.
    pub(crate) fn poll(&mut self, out: &mut Vec<(u64, Route, bool)>) {
        let mut requests = Vec::new();
        self.inbox.poll(&mut requests);
        for (id, head) in requests {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let (route, head_only) = match req.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or("");
                    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
                    let route = match (method, path) {
                        ("GET" | "HEAD", "/metrics") => Route::Metrics,
                        ("GET" | "HEAD", "/") => Route::Dashboard,
                        ("GET" | "HEAD", "/dashboard.json") => Route::DashboardJson,
                        ("GET" | "HEAD", "/healthz") => Route::Healthz,
                        ("GET" | "HEAD", "/readyz") => Route::Readyz,
                        ("GET" | "HEAD", _) => Route::NotFound,
                        _ => Route::MethodNotAllowed,
                    };
                    (route, method == "HEAD")
                }
                _ => (Route::BadRequest, false),
            };
            out.push((id, route, head_only));
        }
    }

    /// Answers connection `id` with `status` and `body` of `content_type`, and closes.
    pub(crate) fn answer(
        &mut self,
        id: u64,
        status: u16,
        content_type: &str,
        body: &str,
        head_only: bool,
    ) {
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            crate::http::response::reason(status),
            body.len()
        );
        if !head_only {
            out.push_str(body);
        }
        self.inbox.answer(id, out.as_bytes());
    }
}

/// One worker's figures, as the master keeps them.
pub(crate) struct WorkerMetrics {
    pub(crate) slot: u32,
    /// Its CPU, or `none` when workers are not pinned.
    pub(crate) cpu: crate::config::CpuName,
    /// Counters of this slot's workers so far (earlier workers' totals added in).
    pub(crate) stats: Stats,
    pub(crate) restarts: u32,
    pub(crate) rss_bytes: u64,
    pub(crate) ready: bool,
    /// Its handled requests' durations so far (earlier workers' added in).
    pub(crate) durations: crate::durations::Durations,
    /// The handler's own metrics ([`crate::metric`]): counters with earlier workers' added
    /// in, gauges as the live worker's.
    pub(crate) custom: Vec<crate::metric::Sample>,
}

/// The master's own figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MasterMetrics {
    pub(crate) uptime_s: u64,
    pub(crate) shutting_down: bool,
    pub(crate) generation: u64,
    pub(crate) reloads_ok: u64,
    pub(crate) reloads_failed: u64,
    pub(crate) reopen_failures: u64,
}

/// One mount's figures, summed over the workers (see `Master::mount_totals`).
pub(crate) struct MountMetrics<'a> {
    pub(crate) prefix: &'a str,
    /// `static` or `proxy`.
    pub(crate) kind: &'static str,
    /// The directory, or the upstream URLs joined by `,`.
    pub(crate) target: &'a str,
    pub(crate) stats: MountStats,
}

impl MountMetrics<'_> {
    /// Whether the upstream figures mean anything here (a proxy's).
    pub(crate) fn has_upstreams(&self) -> bool {
        self.kind == "proxy"
    }
}

/// The counters exported per slot: (Stats field, metric name, help, type).
const EXPORTED: &[(&str, &str, &str, &str)] = &[
    (
        "requests",
        "ringmaster_requests_total",
        "Requests answered by the handler.",
        "counter",
    ),
    (
        "connections",
        "ringmaster_connections",
        "Connections open now.",
        "gauge",
    ),
    (
        "accepted",
        "ringmaster_connections_accepted_total",
        "Connections accepted.",
        "counter",
    ),
    (
        "bytes_in",
        "ringmaster_received_bytes_total",
        "Bytes received from clients.",
        "counter",
    ),
    (
        "bytes_out",
        "ringmaster_sent_bytes_total",
        "Bytes sent to clients.",
        "counter",
    ),
    (
        "errors",
        "ringmaster_request_parse_errors_total",
        "Requests refused as malformed or over a limit.",
        "counter",
    ),
    (
        "timeouts",
        "ringmaster_timeouts_total",
        "Connections closed for running out of time.",
        "counter",
    ),
    (
        "handler_failures",
        "ringmaster_handler_failures_total",
        "Requests answered 500 because the handler panicked or misused its response.",
        "counter",
    ),
    (
        "accept_overflow",
        "ringmaster_accept_overflow_total",
        "Connections accepted beyond the worker's bound and closed at once.",
        "counter",
    ),
    (
        "handlers_cancelled",
        "ringmaster_handlers_cancelled_total",
        "Async handlers' futures dropped because their client went away.",
        "counter",
    ),
    (
        "handlers_timed_out",
        "ringmaster_handlers_timed_out_total",
        "Async handlers' futures dropped at the handler timeout (answered 503).",
        "counter",
    ),
    (
        "bytes_spliced",
        "ringmaster_bytes_spliced_total",
        "Bytes of files sent by splice, with no copy through user space.",
        "counter",
    ),
    (
        "splice_pipes",
        "ringmaster_splice_pipes",
        "Pipes of the workers' splice pools lent to file ranges being sent now.",
        "gauge",
    ),
    (
        "handlers_in_flight",
        "ringmaster_handlers_in_flight",
        "Async handlers' futures waiting now.",
        "gauge",
    ),
    (
        "tasks_spawned",
        "ringmaster_tasks_spawned",
        "Spawned tasks running now.",
        "gauge",
    ),
    (
        "rt_ops_in_flight",
        "ringmaster_rt_ops_in_flight",
        "Ring operations of async handlers' futures now.",
        "gauge",
    ),
    (
        "access_log_dropped",
        "ringmaster_access_log_dropped_total",
        "Access log lines dropped because the disk fell behind.",
        "counter",
    ),
    (
        "uring_enters",
        "ringmaster_uring_enters_total",
        "io_uring_enter calls.",
        "counter",
    ),
    (
        "uring_submissions",
        "ringmaster_uring_submissions_total",
        "Submission queue entries the kernel took.",
        "counter",
    ),
    (
        "uring_completions",
        "ringmaster_uring_completions_total",
        "Completions reaped.",
        "counter",
    ),
    (
        "uring_enobufs",
        "ringmaster_uring_enobufs_total",
        "Receives re-armed after -ENOBUFS (provided buffers exhausted).",
        "counter",
    ),
];

/// Renders every family in the OpenMetrics text format, through `prometheus-client`'s encoder
/// (a [`Collector`](prometheus_client::collector::Collector) over this snapshot: the figures
/// are the workers' reports, merged by the master, not live instruments).
pub(crate) fn render(
    workers: &[WorkerMetrics],
    mounts: &[MountMetrics<'_>],
    master: MasterMetrics,
) -> String {
    let snapshot = Snapshot {
        workers: workers
            .iter()
            .map(|w| OwnedWorker {
                slot: w.slot.to_string(),
                cpu: w.cpu.to_string(),
                stats: w.stats,
                restarts: u64::from(w.restarts),
                rss_bytes: w.rss_bytes,
                ready: u64::from(w.ready),
                durations: w.durations,
                custom: w.custom.clone(),
            })
            .collect(),
        mounts: mounts
            .iter()
            .map(|m| OwnedMount {
                prefix: label_value(m.prefix),
                kind: m.kind,
                upstreams: m.has_upstreams(),
                stats: m.stats,
            })
            .collect(),
        master,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(16_384);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct OwnedWorker {
    slot: String,
    cpu: String,
    stats: Stats,
    restarts: u64,
    rss_bytes: u64,
    ready: u64,
    durations: crate::durations::Durations,
    custom: Vec<crate::metric::Sample>,
}

#[derive(Debug)]
struct OwnedMount {
    /// Escaped for the text format.
    prefix: String,
    kind: &'static str,
    upstreams: bool,
    stats: MountStats,
}

/// Everything one scrape shows.
#[derive(Debug)]
struct Snapshot {
    workers: Vec<OwnedWorker>,
    mounts: Vec<OwnedMount>,
    master: MasterMetrics,
}

impl Snapshot {
    fn worker_labels(w: &OwnedWorker) -> [(&'static str, &str); 2] {
        [("slot", w.slot.as_str()), ("cpu", w.cpu.as_str())]
    }
}

/// A family's name as the encoder takes it: a counter's without its `_total`, which the
/// encoder adds back.
fn family_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// Encodes one sample of `value` as `kind`.
fn encode_value(metric: &mut MetricEncoder<'_>, kind: MetricType, value: u64) -> fmt::Result {
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, u64, u64>(&value, None),
        _ => metric.encode_gauge(&value),
    }
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        for (field, name, help, kind) in EXPORTED {
            let kind = match *kind {
                "counter" => MetricType::Counter,
                _ => MetricType::Gauge,
            };
            let mut family =
                encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
            for w in &self.workers {
                let value = w
                    .stats
                    .named()
                    .iter()
                    .find(|(f, _)| f == field)
                    .map_or(0, |(_, v)| *v);
                let labels = Snapshot::worker_labels(w);
                encode_value(&mut family.encode_family(&labels)?, kind, value)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ringmaster_responses",
                "Responses sent, by status class.",
                None,
                MetricType::Counter,
            )?;
            for w in &self.workers {
                let s = &w.stats;
                for (class, value) in [
                    ("1xx", s.responses_1xx),
                    ("2xx", s.responses_2xx),
                    ("3xx", s.responses_3xx),
                    ("4xx", s.responses_4xx),
                    ("5xx", s.responses_5xx),
                ] {
                    let labels = [
                        ("slot", w.slot.as_str()),
                        ("cpu", w.cpu.as_str()),
                        ("class", class),
                    ];
                    encode_value(
                        &mut family.encode_family(&labels)?,
                        MetricType::Counter,
                        value,
                    )?;
                }
            }
        }
        self.encode_durations(&mut encoder)?;
        type Value = fn(&OwnedWorker) -> u64;
        let per_slot: [(&str, &str, MetricType, Value); 3] = [
            (
                "ringmaster_worker_restarts_total",
                "Times the slot's worker was replaced after dying.",
                MetricType::Counter,
                |w| w.restarts,
            ),
            (
                "ringmaster_worker_resident_bytes",
                "Resident memory of the slot's worker.",
                MetricType::Gauge,
                |w| w.rss_bytes,
            ),
            (
                "ringmaster_worker_ready",
                "1 when the slot has a ready worker.",
                MetricType::Gauge,
                |w| w.ready,
            ),
        ];
        for (name, help, kind, value) in per_slot {
            let mut family =
                encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
            for w in &self.workers {
                let labels = Snapshot::worker_labels(w);
                encode_value(&mut family.encode_family(&labels)?, kind, value(w))?;
            }
        }
        self.encode_mounts(&mut encoder)?;
        self.encode_custom(&mut encoder)?;
        let m = self.master;
        let master: [(&str, &str, MetricType, u64); 4] = [
            (
                "ringmaster_master_uptime_seconds",
                "Seconds since the master started.",
                MetricType::Gauge,
                m.uptime_s,
            ),
            (
                "ringmaster_shutting_down",
                "1 once a graceful shutdown started.",
                MetricType::Gauge,
                u64::from(m.shutting_down),
            ),
            (
                "ringmaster_generation",
                "The workers' current generation: 1 at start, one more for each completed reload.",
                MetricType::Gauge,
                m.generation,
            ),
            (
                "ringmaster_access_log_reopen_failures_total",
                "Access log reopens (SIGUSR1, ringmaster reopen) that failed in the master or a worker.",
                MetricType::Counter,
                m.reopen_failures,
            ),
        ];
        for (name, help, kind, value) in master {
            let mut family =
                encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
            encode_value(&mut family, kind, value)?;
        }
        let mut family = encoder.encode_descriptor(
            "ringmaster_reloads",
            "Reloads since the master started, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, value) in [("ok", m.reloads_ok), ("failed", m.reloads_failed)] {
            let labels = [("outcome", outcome)];
            encode_value(
                &mut family.encode_family(&labels)?,
                MetricType::Counter,
                value,
            )?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// The handler's own metrics, by slot: each name once, as the first worker reporting it
    /// defined it (a later build defining it as the other kind is left out).
    fn encode_custom(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        use crate::metric::Kind;
        let mut names: Vec<&crate::metric::Sample> = Vec::new();
        for s in self.workers.iter().flat_map(|w| &w.custom) {
            if !names.iter().any(|n| n.name == s.name) {
                names.push(s);
            }
        }
        for def in names {
            let kind = match def.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            // The handler's own help, escaped as OpenMetrics asks (`\\` and `"`; line breaks
            // were refused when it was defined): the encoder writes it as given.
            let help = def.help.replace('\\', "\\\\").replace('"', "\\\"");
            let mut family = encoder.encode_descriptor(&def.name, &help, None, kind)?;
            for w in &self.workers {
                let Some(s) = w
                    .custom
                    .iter()
                    .find(|s| s.name == def.name && s.kind == def.kind)
                else {
                    continue;
                };
                let labels = [("slot", w.slot.as_str())];
                let mut metric = family.encode_family(&labels)?;
                match def.kind {
                    Kind::Counter => {
                        metric.encode_counter::<NoLabelSet, u64, u64>(&s.value, None)?
                    }
                    Kind::Gauge => metric.encode_gauge(&(s.value as i64))?,
                    Kind::Histogram => {
                        // `+Inf` is f64::MAX to the encoder.
                        let buckets: Vec<(f64, u64)> = s
                            .buckets
                            .iter()
                            .map(|&(b, n)| (if b.is_finite() { b } else { f64::MAX }, n))
                            .collect();
                        let count = buckets.iter().map(|b| b.1).sum();
                        metric.encode_histogram::<NoLabelSet>(s.sum, count, &buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }

    /// `ringmaster_request_duration_seconds`, by slot and status class.
    fn encode_durations(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        use crate::durations::{BOUNDS_NS, CLASSES};
        let mut family = encoder.encode_descriptor(
            "ringmaster_request_duration_seconds",
            "Handled requests' durations, from the request's head in to its response handed to the connection, by status class.",
            None,
            MetricType::Histogram,
        )?;
        for w in &self.workers {
            for class in 0..CLASSES {
                let name = ["1xx", "2xx", "3xx", "4xx", "5xx"][class];
                let labels = [
                    ("slot", w.slot.as_str()),
                    ("cpu", w.cpu.as_str()),
                    ("class", name),
                ];
                let d = &w.durations;
                let buckets: Vec<(f64, u64)> = BOUNDS_NS
                    .iter()
                    .map(|&ns| ns as f64 / 1e9)
                    .chain([f64::MAX])
                    .zip(d.counts[class])
                    .collect();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        d.sum_ns[class] as f64 / 1e9,
                        d.count(class),
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }

    /// The mounts' families, labelled by prefix and kind; the upstream ones for proxies
    /// only. Nothing without mounts.
    fn encode_mounts(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        if self.mounts.is_empty() {
            return Ok(());
        }
        type Value = fn(&MountStats) -> u64;
        let families: [(&str, &str, bool, Value); 3] = [
            (
                "ringmaster_mount_requests",
                "Responses the mount's handler returned.",
                false,
                |s| s.requests,
            ),
            (
                "ringmaster_mount_bytes",
                "Response body bytes the mount handed out (whole bodies, and what streamed ones wrote; none for HEAD).",
                false,
                |s| s.bytes,
            ),
            (
                "ringmaster_mount_upstream_errors",
                "Failed tries at a proxy mount's upstreams (connect failures, 502 and 504 answers, bodies cut short).",
                true,
                |s| s.upstream_errors,
            ),
        ];
        for (name, help, upstream_only, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in self.mounts.iter().filter(|m| !upstream_only || m.upstreams) {
                let labels = [("prefix", m.prefix.as_str()), ("kind", m.kind)];
                encode_value(
                    &mut family.encode_family(&labels)?,
                    MetricType::Counter,
                    value(&m.stats),
                )?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "ringmaster_mount_upstream_connections",
            "A proxy mount's upstream connections now: open (pooled or busy) and idle (pooled).",
            None,
            MetricType::Gauge,
        )?;
        for m in self.mounts.iter().filter(|m| m.upstreams) {
            for (state, value) in [
                ("open", m.stats.upstream_open),
                ("idle", m.stats.upstream_idle),
            ] {
                let labels = [
                    ("prefix", m.prefix.as_str()),
                    ("kind", m.kind),
                    ("state", state),
                ];
                encode_value(
                    &mut family.encode_family(&labels)?,
                    MetricType::Gauge,
                    value,
                )?;
            }
        }
        Ok(())
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed
/// escaped.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        for (raw, escaped) in [
            ("/api", "/api"),
            ("/a\"b", "/a\\\"b"),
            ("/a\\b", "/a\\\\b"),
            ("/a\nb", "/a\\nb"),
        ] {
            assert_eq!(label_value(raw), escaped, "{raw:?}");
        }
    }

    #[test]
    fn mounts_render_with_upstream_families_for_proxies_only() {
        let stats = MountStats {
            requests: 3,
            bytes: 30,
            upstream_errors: 1,
            upstream_open: 2,
            upstream_idle: 1,
        };
        let mounts = [
            MountMetrics {
                prefix: "/api",
                kind: "proxy",
                target: "http://127.0.0.1:1",
                stats,
            },
            MountMetrics {
                prefix: "/s\"x",
                kind: "static",
                target: "/srv",
                stats,
            },
        ];
        let text = render(&[], &mounts, MASTER);
        for line in [
            "ringmaster_mount_requests_total{prefix=\"/api\",kind=\"proxy\"} 3",
            "ringmaster_mount_requests_total{prefix=\"/s\\\"x\",kind=\"static\"} 3",
            "ringmaster_mount_bytes_total{prefix=\"/api\",kind=\"proxy\"} 30",
            "ringmaster_mount_upstream_errors_total{prefix=\"/api\",kind=\"proxy\"} 1",
            "ringmaster_mount_upstream_connections{prefix=\"/api\",kind=\"proxy\",state=\"open\"} 2",
            "ringmaster_mount_upstream_connections{prefix=\"/api\",kind=\"proxy\",state=\"idle\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("upstream_errors_total{prefix=\"/s"));
        assert!(!render(&[], &[], MASTER).contains("ringmaster_mount_"));
    }

    const MASTER: MasterMetrics = MasterMetrics {
        uptime_s: 1,
        shutting_down: false,
        generation: 2,
        reloads_ok: 1,
        reloads_failed: 0,
        reopen_failures: 0,
    };

    #[test]
    fn a_slots_durations_render_as_a_cumulative_histogram_by_class() {
        let mut durations = crate::durations::Durations::default();
        durations.record(200, 50_000);
        durations.record(200, 300_000);
        durations.record(503, 20_000_000_000);
        let worker = WorkerMetrics {
            slot: 1,
            cpu: crate::config::CpuName(Some(3)),
            stats: Stats::default(),
            restarts: 0,
            rss_bytes: 0,
            ready: true,
            durations,
            custom: vec![crate::metric::Sample {
                kind: crate::metric::Kind::Gauge,
                name: "app_queue".into(),
                help: "Queued.".into(),
                value: (-4i64) as u64,
                buckets: Vec::new(),
                sum: 0.0,
            }],
        };
        let text = render(&[worker], &[], MASTER);
        let labels = "slot=\"1\",cpu=\"3\",class=\"2xx\"";
        for line in [
            format!("ringmaster_request_duration_seconds_count{{{labels}}} 2"),
            format!("ringmaster_request_duration_seconds_sum{{{labels}}} 0.00035"),
            format!("ringmaster_request_duration_seconds_bucket{{le=\"0.0001\",{labels}}} 1"),
            format!("ringmaster_request_duration_seconds_bucket{{le=\"0.0005\",{labels}}} 2"),
            format!("ringmaster_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}} 2"),
            "ringmaster_request_duration_seconds_bucket{le=\"+Inf\",slot=\"1\",cpu=\"3\",class=\"5xx\"} 1".to_string(),
            "ringmaster_generation 2".to_string(),
            "app_queue{slot=\"1\"} -4".to_string(),
            "ringmaster_reloads_total{outcome=\"ok\"} 1".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends so");
    }
}
