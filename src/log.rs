//! Log lines on stderr, one `write(2)` per line so that lines from the master and the
//! workers never interleave mid-line. Text: `TIMESTAMP ringmaster[ROLE] message`; JSON:
//! `{"ts":...,"role":"master"|"worker","slot":N|null,"msg":...}` for log shippers.

use crate::config::LogFormat;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    let mut buf = [0u8; LINE_BYTES_MAX];
    // Room is kept for the closing `"}` of a JSON line and the newline.
    let mut cursor = std::io::Cursor::new(&mut buf[..LINE_BYTES_MAX - 3]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d) = crate::http::date::civil_from_days((now.as_secs() / 86_400) as i64);
    let secs = now.as_secs() % 86_400;
    let ts = format_args!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    );
    let role = ROLE.load(Ordering::Relaxed);
    // A line too long for the buffer is cut: that is the only way these writes fail.
    let json = JSON.load(Ordering::Relaxed);
    if json {
        let mut msg = [0u8; LINE_BYTES_MAX];
        let mut m = std::io::Cursor::new(&mut msg[..]);
        let _ = m.write_fmt(args);
        let len = m.position() as usize;
        let _ = match role {
            MASTER => write!(
                cursor,
                "{{\"ts\":\"{ts}\",\"role\":\"master\",\"slot\":null,\"msg\":\""
            ),
            slot => write!(
                cursor,
                "{{\"ts\":\"{ts}\",\"role\":\"worker\",\"slot\":{slot},\"msg\":\""
            ),
        };
        for &b in &msg[..len] {
            let _ = match b {
                b'"' => cursor.write_all(b"\\\""),
                b'\\' => cursor.write_all(b"\\\\"),
                b'\n' => cursor.write_all(b"\\n"),
                0..=0x1f => write!(cursor, "\\u{b:04x}"),
                _ => cursor.write_all(&[b]),
            };
        }
    } else {
        let _ = match role {
            MASTER => write!(cursor, "{ts} ringmaster[master] "),
            slot => write!(cursor, "{ts} ringmaster[worker {slot}] "),
        };
        let _ = cursor.write_fmt(args);
    }
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

/// Logs one line: `log!("worker {slot} started")`.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;
