//! What the master tells: `ringmaster status` (text and JSON), `/metrics`, `/healthz` and
//! `/readyz`.

use super::child::Child;
use super::slot::Slot;
use super::supervisor::Life;
use super::Master;
use crate::config::CpuName;
use crate::ipc;
use crate::metrics::{MountMetrics, Route, WorkerMetrics};
use crate::Serve;
use nix::unistd::Pid;

/// What `status` shows of one worker (zeros for a slot without one).
pub(super) struct StatusRow {
    pub(super) pid: i32,
    pub(super) state: &'static str,
    pub(super) uptime_s: u64,
    pub(super) rss_kib: u64,
    pub(super) stats: ipc::Stats,
    /// Its generation (0 for a slot without a worker).
    pub(super) generation: u64,
    /// Its rates for the dashboard ([`super::child::Rates::per_s`]).
    pub(super) rates: [f64; 4],
}

impl StatusRow {
    pub(super) fn of(child: Option<&Child>, state: &'static str) -> StatusRow {
        match child {
            Some(c) => StatusRow {
                pid: c.pid.as_raw(),
                state,
                uptime_s: c.started.elapsed().as_secs(),
                rss_kib: rss_kib(c.pid),
                stats: c.stats,
                generation: c.generation,
                rates: c.rates.per_s,
            },
            None => StatusRow {
                pid: 0,
                state,
                uptime_s: 0,
                rss_kib: 0,
                stats: ipc::Stats::default(),
                generation: 0,
                rates: [0.0; 4],
            },
        }
    }
}

/// A process's CPU time (user and system) in milliseconds, from `/proc` (0 if it cannot be
/// read, or for pid 0).
pub(super) fn cpu_ms(pid: Pid) -> u64 {
    if pid.as_raw() <= 0 {
        return 0;
    }
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // After the command's closing parenthesis: state, then 10 fields, then utime and
            // stime (fields 14 and 15 of proc(5)).
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) * 1000 / ticks)
        })
        .unwrap_or(0)
}

/// A process's resident memory in KiB, from `/proc` (0 if it cannot be read).
pub(super) fn rss_kib(pid: Pid) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl<H: Serve> Master<'_, H> {
    /// One row per slot and the totals, as `ringmaster status` prints them.
    pub(super) fn status_text(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{:<5} {:<8} {:<4} {:<11} {:>9} {:>8} {:>12} {:>11} {:>9}\n",
            "slot", "pid", "cpu", "state", "uptime", "restarts", "requests", "connections", "rss"
        );
        let mut rss = 0;
        for (s, row) in self.status_rows() {
            rss += row.rss_kib;
            let _ = writeln!(
                out,
                "{:<5} {:<8} {:<4} {:<11} {:>8}s {:>8} {:>12} {:>11} {:>6} MiB",
                s.index,
                row.pid,
                CpuName(s.cpu),
                row.state,
                row.uptime_s,
                s.restarts,
                row.stats.requests,
                row.stats.connections,
                row.rss_kib / 1024
            );
        }
        let b = &self.binary;
        let mut generations: Vec<u64> = self
            .status_rows()
            .iter()
            .map(|(_, r)| r.generation)
            .collect();
        generations.retain(|&g| g > 0);
        generations.sort_unstable();
        generations.dedup();
        for g in generations {
            let _ = writeln!(out, "generation {g}: {}", b.identity_of(g));
        }
        let _ = writeln!(
            out,
            "reloads: {} completed, {} failed{}",
            b.reloads_ok,
            b.reloads_failed,
            b.last_reload
                .as_ref()
                .map_or(String::new(), |(_, answer)| format!("; last: {answer}"))
        );
        let totals = self.totals();
        let _ = writeln!(
            out,
            "master pid {}, up {}s, {} workers: {} requests since start, {} connections, \
             {} MiB RSS in workers",
            self.pid,
            self.started.elapsed().as_secs(),
            self.sup.slots.len(),
            totals.requests,
            totals.connections,
            rss / 1024
        );
        if let Some(path) = &self.config.access_log {
            let _ = writeln!(
                out,
                "access log {}: {} lines dropped, {} reopen failures",
                path.display(),
                totals.access_log_dropped,
                self.reopening.failures
            );
        }
        let mounts = self.mount_totals();
        if !mounts.is_empty() {
            let _ = writeln!(
                out,
                "{:<16} {:<6} {:>12} {:>14} {:>15} {:>5} {:>5}  target",
                "mount", "kind", "requests", "bytes", "upstream_errors", "open", "idle"
            );
        }
        for m in &mounts {
            let s = &m.stats;
            let upstream = |v: u64| match m.has_upstreams() {
                true => v.to_string(),
                false => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<6} {:>12} {:>14} {:>15} {:>5} {:>5}  {}",
                m.prefix,
                m.kind,
                s.requests,
                s.bytes,
                upstream(s.upstream_errors),
                upstream(s.upstream_open),
                upstream(s.upstream_idle),
                m.target
            );
        }
        out
    }

    /// Each mount's counters since the master started, as [`Self::totals`] sums the
    /// workers' stats: every slot's exited workers plus every live worker for the totals,
    /// the live workers only for the gauges (`upstream_open`, `upstream_idle`). Empty
    /// without mounts.
    pub(super) fn mount_totals(&self) -> Vec<MountMetrics<'_>> {
        let Some(table) = self.handler.mounts() else {
            return Vec::new();
        };
        let mut past = Vec::new();
        for s in self.sup.slots.iter().chain(&self.sup.parked) {
            ipc::add_mounts(&mut past, &s.past_mounts);
        }
        let mut live = Vec::new();
        for c in self.sup.children() {
            ipc::add_mounts(&mut live, &c.mounts);
        }
        table
            .iter()
            .enumerate()
            .map(|(i, mount)| {
                let past = past.get(i).copied().unwrap_or_default();
                let live = live.get(i).copied().unwrap_or_default();
                MountMetrics {
                    prefix: &mount.prefix,
                    kind: mount.kind.name(),
                    target: &mount.target,
                    stats: past.plus(&live).gauges_from(&live),
                }
            })
            .collect()
    }

    /// Every counter since the master started: each slot's exited workers (parked slots'
    /// too: [`super::scale`]) plus every live worker (starting, serving or draining), so that totals never go down when workers are
    /// replaced. Gauges (`connections`, ...: [`ipc::STATS_GAUGES`]) are the live workers' only.
    pub(super) fn totals(&self) -> ipc::Stats {
        let past = self
            .sup
            .slots
            .iter()
            .chain(&self.sup.parked)
            .fold(ipc::Stats::default(), |sum, s| sum.plus(&s.past));
        let live = self
            .sup
            .children()
            .fold(ipc::Stats::default(), |sum, c| sum.plus(&c.stats));
        past.plus(&live).gauges_from(&live)
    }

    /// The same as JSON: every counter of every worker.
    pub(super) fn status_json(&self) -> String {
        let rows: Vec<String> = self
            .status_rows()
            .into_iter()
            .map(|(s, row)| {
                let counters: Vec<String> = row
                    .stats
                    .named()
                    .iter()
                    .map(|(name, value)| format!("\"{name}\":{value}"))
                    .collect();
                format!(
                    "{{\"slot\":{},\"pid\":{},\"cpu\":{},\"state\":\"{}\",\"uptime_s\":{},\
                     \"restarts\":{},\"rss_kib\":{},\"generation\":{},\"binary\":{},{}}}",
                    s.index,
                    row.pid,
                    s.cpu.map_or("null".to_string(), |id| id.to_string()),
                    row.state,
                    row.uptime_s,
                    s.restarts,
                    row.rss_kib,
                    row.generation,
                    json_string(self.binary.identity_of(row.generation)),
                    counters.join(",")
                )
            })
            .collect();
        let totals: Vec<String> = self
            .totals()
            .named()
            .iter()
            .map(|(name, value)| format!("\"{name}\":{value}"))
            .collect();
        let mounts: Vec<String> = self.mount_totals().iter().map(mount_json).collect();
        let b = &self.binary;
        let last_reload = b
            .last_reload
            .as_ref()
            .map_or("null".to_string(), |(at, answer)| {
                format!(
                    "{{\"at\":{at},\"outcome\":\"{}\",\"answer\":{}}}",
                    if answer.starts_with("ok") {
                        "ok"
                    } else {
                        "failed"
                    },
                    json_string(answer)
                )
            });
        format!(
            "{{\"master_pid\":{},\"uptime_s\":{},\"started_at\":{},\"generation\":{},\
             \"binary\":{},\"reloads_completed\":{},\"reloads_failed\":{},\"last_reload\":{},\
             \"access_log_reopen_failures\":{},\
             \"totals\":{{{}}},\"workers\":[{}],\"mounts\":[{}]}}\n",
            self.pid,
            self.started.elapsed().as_secs(),
            self.started_at,
            b.generation,
            json_string(b.identity_of(b.generation)),
            b.reloads_ok,
            b.reloads_failed,
            last_reload,
            self.reopening.failures,
            totals.join(","),
            rows.join(","),
            mounts.join(",")
        )
    }

    /// One row per worker: each slot's, its successor's while one starts, and the retiring
    /// ones that still drain (a scale down's too, under their parked slot).
    pub(super) fn status_rows(&self) -> Vec<(&Slot, StatusRow)> {
        let sup = &self.sup;
        let mut rows = Vec::with_capacity(sup.slots.len() + sup.retiring.len());
        for s in &sup.slots {
            rows.push((s, StatusRow::of(s.child(), s.state_name())));
            if let Some((c, _)) = s.successor() {
                rows.push((s, StatusRow::of(Some(c), "starting")));
            }
        }
        for c in &sup.retiring {
            if let Some(s) = sup.slot_or_parked(c.slot as usize) {
                rows.push((s, StatusRow::of(Some(c), "draining")));
            }
        }
        rows
    }

    /// Answers `/metrics`, `/healthz` and `/readyz`.
    pub(super) fn on_metrics(&mut self) {
        let Some(mut server) = self.metrics.take() else {
            return;
        };
        let mut requests = Vec::new();
        server.poll(&mut requests);
        for (id, route, head_only) in requests {
            use crate::metrics::{HTML, JSON, OPENMETRICS, TEXT};
            let (status, kind, body) = match route {
                Route::Metrics => (200, OPENMETRICS, self.metrics_text()),
                Route::Dashboard => (200, HTML, crate::metrics::DASHBOARD.to_string()),
                Route::DashboardJson => (200, JSON, self.dashboard_json()),
                Route::Healthz => (200, TEXT, "ok\n".to_string()),
                Route::Readyz => match self.readiness() {
                    Ok(()) => (200, TEXT, "ready\n".to_string()),
                    Err(why) => (503, TEXT, format!("not ready: {why}\n")),
                },
                Route::NotFound => (
                    404,
                    TEXT,
                    "not found: try /, /metrics, /healthz or /readyz\n".into(),
                ),
                Route::MethodNotAllowed => (405, TEXT, "only GET and HEAD\n".to_string()),
                Route::BadRequest => (400, TEXT, "bad request\n".to_string()),
            };
            server.answer(id, status, kind, &body, head_only);
        }
        self.metrics = Some(server);
    }

    /// The dashboard's sample: the time, the master, and each worker's row (the slot's
    /// current one marked `current`; successors and draining ones too) with its CPU time.
    pub(super) fn dashboard_json(&self) -> String {
        let rows: Vec<String> = self
            .status_rows()
            .into_iter()
            .map(|(s, row)| {
                let current = s.child().is_some_and(|c| c.pid.as_raw() == row.pid);
                format!(
                    "{{\"slot\":{},\"pid\":{},\"state\":\"{}\",\"current\":{current},\
                     \"generation\":{},\"requests\":{},\"connections\":{},\"rss_kib\":{},\
                     \"requests_per_s\":{:.1},\"enters_per_s\":{:.1},\
                     \"completions_per_s\":{:.1},\"cpu_percent\":{:.1}}}",
                    s.index,
                    row.pid,
                    row.state,
                    row.generation,
                    row.stats.requests,
                    row.stats.connections,
                    row.rss_kib,
                    row.rates[0],
                    row.rates[1],
                    row.rates[2],
                    row.rates[3],
                )
            })
            .collect();
        let t_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let last_reload = self
            .binary
            .last_reload
            .as_ref()
            .map_or("null".to_string(), |(_, answer)| json_string(answer));
        format!(
            "{{\"t_ms\":{t_ms},\"master_pid\":{},\"generation\":{},\"last_reload\":{last_reload},\
             \"workers\":[{}]}}\n",
            self.pid,
            self.binary.generation,
            rows.join(",")
        )
    }

    /// Whether a load balancer should send traffic: every slot has a ready worker and no
    /// shutdown started.
    pub(super) fn readiness(&self) -> Result<(), String> {
        if self.sup.life != Life::Running {
            return Err("shutting down".into());
        }
        let waiting: Vec<String> = self
            .sup
            .slots
            .iter()
            .filter(|s| s.ready_child().is_none())
            .map(|s| format!("slot {} {}", s.index, s.state_name()))
            .collect();
        match waiting.is_empty() {
            true => Ok(()),
            false => Err(waiting.join(", ")),
        }
    }

    pub(super) fn metrics_text(&self) -> String {
        let workers: Vec<WorkerMetrics> = self
            .sup
            .slots
            .iter()
            .map(|s| {
                // Every worker of the slot that has not exited: its own, its successor while
                // one starts, and those that left it and drain (a reload's, a recycle's).
                // Their totals join `past` only when they exit, so leaving them out would
                // take a draining worker's counts away for the drain: a counter that went
                // down, which Prometheus reads as a reset.
                // Oldest first, so that a histogram whose bounds a new build changed takes
                // the newest build's shape ([`crate::metric::add_totals`]).
                let alive: Vec<&super::child::Child> = self
                    .sup
                    .retiring
                    .iter()
                    .filter(|c| c.slot == s.index)
                    .chain(s.child())
                    .chain(s.successor().map(|(c, _)| c))
                    .collect();
                let current = s.child().map(|c| c.stats).unwrap_or_default();
                // Gauges, not totals (connections, descriptors...): the live worker's alone.
                let stats = alive
                    .iter()
                    .fold(s.past, |sum, c| sum.plus(&c.stats))
                    .gauges_from(&current);
                let durations = alive
                    .iter()
                    .fold(s.past_durations, |sum, c| sum.plus(&c.durations));
                // The handler's counters: the slot's exited workers' plus those alive; its
                // gauges: the live one's.
                let mut custom = s.past_metrics.clone();
                for c in &alive {
                    crate::metric::add_totals(&mut custom, &c.metrics);
                }
                if let Some(c) = s.child() {
                    custom.extend(
                        c.metrics
                            .iter()
                            .filter(|m| m.kind == crate::metric::Kind::Gauge)
                            .cloned(),
                    );
                }
                WorkerMetrics {
                    slot: s.index,
                    cpu: CpuName(s.cpu),
                    stats,
                    restarts: s.restarts,
                    rss_bytes: s.child().map_or(0, |c| rss_kib(c.pid) * 1024),
                    ready: s.ready_child().is_some(),
                    durations,
                    custom,
                }
            })
            .collect();
        let b = &self.binary;
        let master = crate::metrics::MasterMetrics {
            uptime_s: self.started.elapsed().as_secs(),
            shutting_down: self.sup.life != Life::Running,
            generation: b.generation,
            reloads_ok: b.reloads_ok,
            reloads_failed: b.reloads_failed,
            reopen_failures: self.reopening.failures,
        };
        crate::metrics::render(&workers, &self.mount_totals(), master)
    }
}

/// One mount as `status --json` shows it; the upstream fields for a proxy only.
fn mount_json(m: &MountMetrics<'_>) -> String {
    let s = &m.stats;
    let mut out = format!(
        "{{\"prefix\":{},\"kind\":\"{}\",\"target\":{},\"requests\":{},\"bytes\":{}",
        json_string(m.prefix),
        m.kind,
        json_string(m.target),
        s.requests,
        s.bytes
    );
    if m.has_upstreams() {
        out.push_str(&format!(
            ",\"upstream_errors\":{},\"upstream_open\":{},\"upstream_idle\":{}",
            s.upstream_errors, s.upstream_open, s.upstream_idle
        ));
    }
    out.push('}');
    out
}

/// `s` as a JSON string, quoted and escaped.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        for (raw, json) in [
            ("/api", "\"/api\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("a\nb\u{1}", "\"a\\u000ab\\u0001\""),
            ("/données", "\"/données\""),
        ] {
            assert_eq!(json_string(raw), json, "{raw:?}");
        }
    }

    #[test]
    fn static_mounts_leave_the_upstream_fields_out() {
        let stats = ipc::MountStats {
            requests: 2,
            bytes: 20,
            upstream_errors: 1,
            upstream_open: 1,
            upstream_idle: 1,
        };
        let m = |kind| MountMetrics {
            prefix: "/p",
            kind,
            target: "t",
            stats,
        };
        assert_eq!(
            mount_json(&m("static")),
            r#"{"prefix":"/p","kind":"static","target":"t","requests":2,"bytes":20}"#
        );
        assert_eq!(
            mount_json(&m("proxy")),
            r#"{"prefix":"/p","kind":"proxy","target":"t","requests":2,"bytes":20,"upstream_errors":1,"upstream_open":1,"upstream_idle":1}"#
        );
    }
}
