//! Log lines on stderr: `TIMESTAMP ringmaster[ROLE] message`, one `write(2)` per line so
//! lines from the master and the workers never interleave mid-line.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The role of this process: `u32::MAX` for the master, else the worker's slot.
static ROLE: AtomicU32 = AtomicU32::new(MASTER);
const MASTER: u32 = u32::MAX;

/// The longest log line; longer messages are cut.
const LINE_BYTES_MAX: usize = 1024;

/// Marks this process as the worker of `slot` (called once, right after fork).
pub(crate) fn set_worker(slot: u32) {
    ROLE.store(slot, Ordering::Relaxed);
}

/// Writes one line.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut buf = [0u8; LINE_BYTES_MAX];
    let mut cursor = std::io::Cursor::new(&mut buf[..LINE_BYTES_MAX - 1]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d) = crate::http::date::civil_from_days((now.as_secs() / 86_400) as i64);
    let secs = now.as_secs() % 86_400;
    let _ = write!(
        cursor,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z ",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    );
    let _ = match ROLE.load(Ordering::Relaxed) {
        MASTER => write!(cursor, "ringmaster[master] "),
        slot => write!(cursor, "ringmaster[worker {slot}] "),
    };
    // A message too long for the line is cut: that is the only way this write fails.
    let _ = cursor.write_fmt(args);
    let mut len = cursor.position() as usize;
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
