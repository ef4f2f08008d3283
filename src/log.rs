//! Log lines on stderr, one `write(2)` per line so that lines from the master and the
//! workers never interleave mid-line. Text: `TIMESTAMP ringmaster[ROLE] message`; JSON:
//! `{"ts":...,"role":"master"|"worker","slot":N|null,"msg":...}` for log shippers.

use crate::config::LogFormat;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The role of this process: `u32::MAX` for the master, else the worker's slot.
static ROLE: AtomicU32 = AtomicU32::new(MASTER);
const MASTER: u32 = u32::MAX;
/// Lines are JSON objects.
static JSON: AtomicBool = AtomicBool::new(false);

/// The longest log line; longer messages are cut.
const LINE_BYTES_MAX: usize = 1024;

/// Marks this process as the worker of `slot` (called once, right after fork).
pub(crate) fn set_worker(slot: u32) {
    ROLE.store(slot, Ordering::Relaxed);
}

/// Chooses the line format (before the first fork, so that workers inherit it).
pub(crate) fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// Writes one line.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    // The message first, cut at the line bound: a full buffer is the only way these writes
    // fail, so their results are not looked at.
    let mut msg = [0u8; LINE_BYTES_MAX];
    let mut m = std::io::Cursor::new(&mut msg[..]);
    let _ = m.write_fmt(args);
    let msg_len = m.position() as usize;
    let mut buf = [0u8; LINE_BYTES_MAX];
    // Room is kept for the closing `"}` of a JSON line and the newline.
    let mut cursor = std::io::Cursor::new(&mut buf[..LINE_BYTES_MAX - 3]);
    let json = JSON.load(Ordering::Relaxed);
    let _ = write_prefix(&mut cursor, json, ROLE.load(Ordering::Relaxed));
    write_escaped(&mut cursor, &msg[..msg_len], json);
    let mut len = cursor.position() as usize;
    if json {
        buf[len..len + 2].copy_from_slice(b"\"}");
        len += 2;
    }
    buf[len] = b'\n';
    len += 1;
    // Nothing useful can be done when stderr is gone.
    let _ = std::io::stderr().lock().write_all(&buf[..len]);
}

/// The line's start: timestamp and role, as text or as the first JSON fields.
fn write_prefix(out: &mut impl Write, json: bool, role: u32) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d) = crate::civil::civil_from_days((now.as_secs() / 86_400) as i64);
    let secs = now.as_secs() % 86_400;
    let ts = format_args!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    );
    match (json, role) {
        (true, MASTER) => write!(
            out,
            "{{\"ts\":\"{ts}\",\"role\":\"master\",\"slot\":null,\"msg\":\""
        ),
        (true, slot) => write!(
            out,
            "{{\"ts\":\"{ts}\",\"role\":\"worker\",\"slot\":{slot},\"msg\":\""
        ),
        (false, MASTER) => write!(out, "{ts} ringmaster[master] "),
        (false, slot) => write!(out, "{ts} ringmaster[worker {slot}] "),
    }
}

/// The message, escaped so that one event stays one line: line breaks (a panic's, say) as
/// `\n` and `\r`, and for JSON quotes, backslashes and other control bytes too.
fn write_escaped(out: &mut impl Write, msg: &[u8], json: bool) {
    for &b in msg {
        let _ = match (json, b) {
            (_, b'\n') => out.write_all(b"\\n"),
            (_, b'\r') => out.write_all(b"\\r"),
            (true, b'"') => out.write_all(b"\\\""),
            (true, b'\\') => out.write_all(b"\\\\"),
            (true, 0..=0x1f) => write!(out, "\\u{b:04x}"),
            _ => out.write_all(&[b]),
        };
    }
}

/// Logs one line: `log!("worker {slot} started")`.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;

/// The shortest time between two lines from one [`log_limited!`] call site.
pub(crate) const REPEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Lets one line a [`REPEAT_INTERVAL`] through and counts the others: a condition that
/// repeats (out of descriptors, a handler that panics on every request) is said once a
/// second with a count, not thousands of times.
pub(crate) struct Limiter {
    /// When the last line went out, in milliseconds of `CLOCK_MONOTONIC`; 0 before the first.
    last_ms: AtomicU64,
    /// Lines held back since then.
    held: AtomicU64,
}

impl Limiter {
    pub(crate) const fn new() -> Limiter {
        Limiter {
            last_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some((held, since_ms))` when a line may go out now: how many were held back since
    /// the last one, and how long ago that was; `None` (and one more held) otherwise.
    pub(crate) fn admit(&self) -> Option<(u64, u64)> {
        self.admit_at(monotonic_ms())
    }

    fn admit_at(&self, now_ms: u64) -> Option<(u64, u64)> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < REPEAT_INTERVAL.as_millis() as u64 {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms.store(now_ms.max(1), Ordering::Relaxed);
        Some((
            self.held.swap(0, Ordering::Relaxed),
            now_ms.saturating_sub(last),
        ))
    }
}

/// Milliseconds of `CLOCK_MONOTONIC`.
fn monotonic_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1000) + t.tv_nsec() as u64 / 1_000_000
    })
}

/// Logs one line, at most once a [`REPEAT_INTERVAL`] from this call site; the next line
/// that goes out says how many were held back meanwhile.
macro_rules! log_limited {
    ($($arg:tt)*) => {{
        static LIMITER: $crate::log::Limiter = $crate::log::Limiter::new();
        if let Some((held, since_ms)) = LIMITER.admit() {
            match held {
                0 => $crate::log::line(format_args!($($arg)*)),
                n => $crate::log::line(format_args!(
                    "{} [and {n} more like this in the last {:.1}s]",
                    format_args!($($arg)*),
                    since_ms as f64 / 1000.0
                )),
            }
        }
    }};
}
pub(crate) use log_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_stays_one_line_in_either_format() {
        let escaped = |msg: &[u8], json: bool| {
            let mut out = Vec::new();
            write_escaped(&mut out, msg, json);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(escaped(b"a\nb\rc \"q\" \\", false), "a\\nb\\rc \"q\" \\");
        assert_eq!(
            escaped(b"a\nb \"q\" \\ \x01", true),
            "a\\nb \\\"q\\\" \\\\ \\u0001"
        );
    }

    #[test]
    fn a_limiter_lets_one_line_a_second_through_and_counts_the_rest() {
        let l = Limiter::new();
        assert_eq!(l.admit_at(5_000), Some((0, 5_000)));
        assert_eq!(l.admit_at(5_001), None);
        assert_eq!(l.admit_at(5_999), None);
        assert_eq!(
            l.admit_at(6_000),
            Some((2, 1_000)),
            "at the interval, with the count"
        );
        assert_eq!(l.admit_at(9_000), Some((0, 3_000)), "the count starts over");
    }
}
