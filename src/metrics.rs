//! The master's observability listener (`--metrics ADDR`): `GET /metrics` in the Prometheus
//! text format, `GET /healthz` (the master is alive) and `GET /readyz` (every slot has a
//! ready worker and no shutdown started: take the host out of rotation otherwise).

use crate::error::{Error, ErrorKind};
use crate::inbox::{Framing, Inbox};
use crate::ipc::{MountStats, Stats};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::time::Instant;

/// The largest request head the listener reads.
const HEAD_BYTES_MAX: usize = 4096;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics,
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

    /// Answers connection `id` with `status`, a plain-text or Prometheus body, and closes.
    pub(crate) fn answer(&mut self, id: u64, status: u16, body: &str, head_only: bool) {
        let content_type = if body.starts_with("# HELP") {
            "text/plain; version=0.0.4; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
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

/// Renders the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(
    workers: &[WorkerMetrics],
    mounts: &[MountMetrics<'_>],
    master_up_s: u64,
    shutting_down: bool,
) -> String {
    let mut out = String::with_capacity(8192);
    for (field, name, help, kind) in EXPORTED {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for w in workers {
            let value = w
                .stats
                .named()
                .iter()
                .find(|(f, _)| f == field)
                .map_or(0, |(_, v)| *v);
            let _ = writeln!(
                out,
                "{name}{{slot=\"{}\",cpu=\"{}\"}} {value}",
                w.slot, w.cpu
            );
        }
    }
    let name = "ringmaster_responses_total";
    let _ = writeln!(
        out,
        "# HELP {name} Responses sent, by status class.\n# TYPE {name} counter"
    );
    for w in workers {
        let s = &w.stats;
        for (class, value) in [
            ("1xx", s.responses_1xx),
            ("2xx", s.responses_2xx),
            ("3xx", s.responses_3xx),
            ("4xx", s.responses_4xx),
            ("5xx", s.responses_5xx),
        ] {
            let _ = writeln!(
                out,
                "{name}{{slot=\"{}\",cpu=\"{}\",class=\"{class}\"}} {value}",
                w.slot, w.cpu
            );
        }
    }
    type Value = fn(&WorkerMetrics) -> u64;
    let per_slot: [(&str, &str, &str, Value); 3] = [
        (
            "ringmaster_worker_restarts_total",
            "Times the slot's worker was replaced after dying.",
            "counter",
            |w| u64::from(w.restarts),
        ),
        (
            "ringmaster_worker_resident_bytes",
            "Resident memory of the slot's worker.",
            "gauge",
            |w| w.rss_bytes,
        ),
        (
            "ringmaster_worker_ready",
            "1 when the slot has a ready worker.",
            "gauge",
            |w| u64::from(w.ready),
        ),
    ];
    for (name, help, kind, value) in per_slot {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for w in workers {
            let _ = writeln!(
                out,
                "{name}{{slot=\"{}\",cpu=\"{}\"}} {}",
                w.slot,
                w.cpu,
                value(w)
            );
        }
    }
    render_mounts(&mut out, mounts);
    let _ = writeln!(
        out,
        "# HELP ringmaster_master_uptime_seconds Seconds since the master started.\n\
         # TYPE ringmaster_master_uptime_seconds gauge\n\
         ringmaster_master_uptime_seconds {master_up_s}\n\
         # HELP ringmaster_shutting_down 1 once a graceful shutdown started.\n\
         # TYPE ringmaster_shutting_down gauge\n\
         ringmaster_shutting_down {}",
        u8::from(shutting_down)
    );
    out
}

/// The mounts' families, labelled by prefix and kind; the upstream ones for proxies only.
/// Nothing without mounts.
fn render_mounts(out: &mut String, mounts: &[MountMetrics<'_>]) {
    if mounts.is_empty() {
        return;
    }
    type Value = fn(&MountStats) -> u64;
    let families: [(&str, &str, &str, bool, Value); 3] = [
        (
            "ringmaster_mount_requests_total",
            "Responses the mount's handler returned.",
            "counter",
            false,
            |s| s.requests,
        ),
        (
            "ringmaster_mount_bytes_total",
            "Response body bytes the mount handed out (whole bodies, and what streamed ones wrote; none for HEAD).",
            "counter",
            false,
            |s| s.bytes,
        ),
        (
            "ringmaster_mount_upstream_errors_total",
            "Failed tries at a proxy mount's upstreams (connect failures, 502 and 504 answers, bodies cut short).",
            "counter",
            true,
            |s| s.upstream_errors,
        ),
    ];
    for (name, help, kind, upstream_only, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in mounts
            .iter()
            .filter(|m| !upstream_only || m.has_upstreams())
        {
            let _ = writeln!(out, "{name}{{{}}} {}", mount_labels(m), value(&m.stats));
        }
    }
    let name = "ringmaster_mount_upstream_connections";
    let _ = writeln!(
        out,
        "# HELP {name} A proxy mount's upstream connections now: open (pooled or busy) and idle (pooled).\n# TYPE {name} gauge"
    );
    for m in mounts.iter().filter(|m| m.has_upstreams()) {
        let labels = mount_labels(m);
        let s = &m.stats;
        let _ = writeln!(out, "{name}{{{labels},state=\"open\"}} {}", s.upstream_open);
        let _ = writeln!(out, "{name}{{{labels},state=\"idle\"}} {}", s.upstream_idle);
    }
}

/// `prefix="…",kind="…"`, the prefix escaped.
fn mount_labels(m: &MountMetrics<'_>) -> String {
    format!("prefix=\"{}\",kind=\"{}\"", label_value(m.prefix), m.kind)
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
        let text = render(&[], &mounts, 1, false);
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
        assert!(!render(&[], &[], 1, false).contains("ringmaster_mount_"));
    }
}
