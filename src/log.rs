//! Logging through `tracing`, the one facade: ringmaster's own events are `tracing` events
//! (target `ringmaster::…`, a level, and fields such as `slot`, `pid`, `cpu`), and so are a
//! handler's. Unless the program installed its own subscriber first (which then receives
//! ringmaster's events), [`set_format`] installs ringmaster's: `RUST_LOG` filters (default
//! `info`), and each event is one line on stderr, written with one `write(2)` so that lines
//! from the master and the workers never interleave: text
//! `TIMESTAMP PROGRAM[ROLE] LEVEL message` (`ringmaster`, or the application's name) (with ` key=value` for the fields of events not
//! ringmaster's own, whose messages already say them), or JSON
//! `{"ts":…,"role":"master"|"worker","slot":N|null,"msg":…,"level":…,"pid":…,"target":…,
//! "fields":{…}}` for log shippers (`slot` and `pid` are the process's; an event's own
//! fields, which may say another worker's, are under `fields`). A line is at most [`LINE_BYTES_MAX`] bytes (under `PIPE_BUF`,
//! so a write to a pipe stays whole): the message is cut at [`MESSAGE_BYTES_MAX`], a field's
//! value at [`FIELD_BYTES_MAX`], and fields past the bound are left out. The events' own
//! macros check the level before anything is formatted, so a level that is off costs no
//! formatting.
//!
//! Why a layer of our own rather than `tracing-subscriber`'s `fmt`: the line format above (the
//! role and slot of the process, kept from before `tracing`), the one write per line, and the
//! bounds; the filter (`EnvFilter`) and the registry are the crate's.

use crate::config::LogFormat;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The role of this process: `u32::MAX` for the master, else the worker's slot.
static ROLE: AtomicU32 = AtomicU32::new(MASTER);
const MASTER: u32 = u32::MAX;
/// Lines are JSON objects.
static JSON: AtomicBool = AtomicBool::new(false);

/// The longest log line, newline included: under `PIPE_BUF` (4,096), so that one write to a
/// pipe is never split.
pub(crate) const LINE_BYTES_MAX: usize = 4000;
/// The longest message; longer ones are cut.
pub(crate) const MESSAGE_BYTES_MAX: usize = 1024;
/// The longest value of one field; longer ones are cut.
pub(crate) const FIELD_BYTES_MAX: usize = 256;
/// The most bytes the message takes once escaped (cut there): room for a message of
/// control characters at [`MESSAGE_BYTES_MAX`] to show a good part of itself, with the
/// prefix, the target and the closing within [`LINE_BYTES_MAX`].
const MESSAGE_ESCAPED_MAX: usize = 2 * MESSAGE_BYTES_MAX;
/// The most bytes the target takes once escaped.
const TARGET_ESCAPED_MAX: usize = 256;

/// The program's name, as its log lines and its messages to the operator say it.
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the program (once, from `cli::run`): an application built on ringmaster logs and
/// speaks as itself.
pub(crate) fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// The program's name: the application's, else `ringmaster`.
pub(crate) fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("ringmaster")
}

/// The worker's span (`worker{slot, pid}`), for the threads it starts.
static WORKER_SPAN: std::sync::OnceLock<tracing::Span> = std::sync::OnceLock::new();

/// This worker's span; none outside a worker.
pub(crate) fn worker_span() -> tracing::Span {
    WORKER_SPAN
        .get()
        .cloned()
        .unwrap_or_else(tracing::Span::none)
}

/// Marks this process as the worker of `slot` (called once, right after fork) and enters
/// its span, kept for the threads it starts: every event of the worker (its own, its
/// handler's, a panic) happens in it, so that a program's own subscriber can tell the
/// workers apart. ringmaster's own lines say the same in their prefix and leave it out.
pub(crate) fn set_worker(slot: u32) -> tracing::span::EnteredSpan {
    ROLE.store(slot, Ordering::Relaxed);
    let span =
        tracing::info_span!(target: "ringmaster::worker", "worker", slot, pid = std::process::id());
    let _ = WORKER_SPAN.set(span.clone());
    span.entered()
}

/// Chooses the line format (before the first fork, so that workers inherit it) and installs
/// ringmaster's subscriber, unless the program set one of its own.
pub(crate) fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    install();
}

/// Installs ringmaster's subscriber as the global default, once, unless one is set: the
/// filter from `RUST_LOG` (default `info`; a filter that does not parse is said once and
/// `info` used), and [`Lines`].
pub(crate) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if tracing::dispatcher::has_been_set() {
            return;
        }
        let (filter, bad) = match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => {
                match tracing_subscriber::EnvFilter::try_new(&spec) {
                    Ok(filter) => (filter, None),
                    Err(e) => (
                        tracing_subscriber::EnvFilter::new("info"),
                        Some(format!(
                            "RUST_LOG={spec:?} is not a filter ({e}); logging at info"
                        )),
                    ),
                }
            }
            _ => (tracing_subscriber::EnvFilter::new("info"), None),
        };
        let subscriber = tracing_subscriber::registry().with(filter).with(Lines);
        if tracing::subscriber::set_global_default(subscriber).is_ok() {
            if let Some(bad) = bad {
                tracing::warn!("{bad}");
            }
        }
    });
}

/// ringmaster's layer: each event one line on stderr, in one write, with the fields of the
/// spans it happened in (a `tower_http` request span's method and URI, say).
struct Lines;

/// The most fields a span keeps (the first recorded).
const SPAN_FIELDS_MAX: usize = 16;

/// A span's fields as recorded, kept in its extensions for the events inside it.
struct SpanFields(Vec<(&'static str, Value)>);

/// A span as an event's line shows it.
struct SpanLine {
    name: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Lines {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut kept = fields.others;
        if !fields.message.is_empty() {
            kept.insert(0, ("message", Value::Text(fields.message)));
        }
        kept.truncate(SPAN_FIELDS_MAX);
        span.extensions_mut().insert(SpanFields(kept));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        let Some(SpanFields(kept)) = extensions.get_mut::<SpanFields>() else {
            return;
        };
        for (name, value) in fields.others {
            match kept.iter().position(|(n, _)| *n == name) {
                Some(i) => kept[i].1 = value,
                None if kept.len() < SPAN_FIELDS_MAX => kept.push((name, value)),
                None => {}
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let json = JSON.load(Ordering::Relaxed);
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = meta.target();
        let ours = target == "ringmaster" || target.starts_with("ringmaster::");
        let spans: Vec<SpanLine> = ctx.event_scope(event).map_or(Vec::new(), |scope| {
            scope
                .from_root()
                // The worker's own span: the line's prefix (or `role` and `slot`) says it.
                .filter(|span| {
                    WORKER_SPAN.get().and_then(tracing::Span::id).as_ref() != Some(&span.id())
                })
                .map(|span| SpanLine {
                    name: span.name(),
                    fields: span
                        .extensions()
                        .get::<SpanFields>()
                        .map_or(Vec::new(), |f| f.0.clone()),
                })
                .collect()
        });
        let line = format_line(
            json,
            ROLE.load(Ordering::Relaxed),
            *meta.level(),
            target,
            &fields.message,
            &spans,
            if ours && !json { &[] } else { &fields.others },
        );
        // Nothing useful can be done when stderr is gone.
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// A field's value as recorded: JSON keeps numbers and booleans as such.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Text(String),
    Number(String),
    Bool(bool),
}

/// An event's message and its other fields, each cut at its bound.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        match field.name() {
            "message" => {
                let _ = write!(Bounded(&mut self.message, MESSAGE_BYTES_MAX), "{value:?}");
            }
            name => {
                let _ = write!(Bounded(&mut text, FIELD_BYTES_MAX), "{value:?}");
                self.others.push((name, Value::Text(text)));
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => {
                let _ = Bounded(&mut self.message, MESSAGE_BYTES_MAX).write_str(value);
            }
            name => {
                let mut text = String::new();
                let _ = Bounded(&mut text, FIELD_BYTES_MAX).write_str(value);
                self.others.push((name, Value::Text(text)));
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others
            .push((field.name(), Value::Number(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others
            .push((field.name(), Value::Number(value.to_string())));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.push((field.name(), Value::Bool(value)));
    }
}

/// A string that takes at most `.1` bytes, cut at a character boundary.
struct Bounded<'a>(&'a mut String, usize);

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.1.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        Err(fmt::Error)
    }
}

/// One line, newline included, at most [`LINE_BYTES_MAX`] bytes. The spans the event
/// happened in, outermost first, go before the message in text (`outer{k=v}:inner: msg`)
/// and as `"spans":[{"name":…,"fields":{…}}]` in JSON; what does not fit is left out
/// whole, spans before the event's own fields.
fn format_line(
    json: bool,
    role: u32,
    level: Level,
    target: &str,
    message: &str,
    spans: &[SpanLine],
    fields: &[(&'static str, Value)],
) -> Vec<u8> {
    // Room for the closing braces and the newline.
    let room = LINE_BYTES_MAX - 3;
    let mut out = Vec::with_capacity(256);
    let _ = write_prefix(&mut out, json, role);
    // Escaping may grow a message up to six times (a control byte as `\u00XX`): each part
    // is escaped within its own budget, so that the line stays within its bound.
    let message_max = out.len() + MESSAGE_ESCAPED_MAX;
    if json {
        write_escaped(&mut out, message, true, message_max);
        let _ = write!(
            out,
            "\",\"level\":\"{level}\",\"pid\":{},\"target\":\"",
            std::process::id()
        );
        let target_max = out.len() + TARGET_ESCAPED_MAX;
        write_escaped(&mut out, target, true, target_max);
        out.push(b'"');
        if !spans.is_empty() {
            let mut part = b",\"spans\":[".to_vec();
            for (i, span) in spans.iter().enumerate() {
                if i > 0 {
                    part.push(b',');
                }
                let _ = write!(part, "{{\"name\":\"");
                write_escaped(&mut part, span.name, true, LINE_BYTES_MAX);
                part.extend_from_slice(b"\",\"fields\":{");
                for (j, (name, value)) in span.fields.iter().enumerate() {
                    part.extend_from_slice(&field_bytes(true, j > 0, name, value));
                }
                part.extend_from_slice(b"}}");
            }
            part.push(b']');
            // Room kept for the event's `,"fields":{` as well, which follows.
            let fields_open = if fields.is_empty() { 0 } else { 11 };
            if out.len() + part.len() + fields_open <= room {
                out.extend_from_slice(&part);
            }
        }
    } else {
        let _ = write!(out, "{level} ");
        if !spans.is_empty() {
            let mut part = Vec::new();
            for span in spans {
                part.extend_from_slice(span.name.as_bytes());
                if !span.fields.is_empty() {
                    part.push(b'{');
                    for (j, (name, value)) in span.fields.iter().enumerate() {
                        let field = field_bytes(false, false, name, value);
                        // ` k=v` as the event's fields go; inside braces without the space.
                        part.extend_from_slice(&field[usize::from(j == 0)..]);
                    }
                    part.push(b'}');
                }
                part.push(b':');
            }
            part.push(b' ');
            if out.len() + part.len() + MESSAGE_ESCAPED_MAX <= room {
                out.extend_from_slice(&part);
            }
        }
        let message_max = out.len() + MESSAGE_ESCAPED_MAX;
        write_escaped(&mut out, message, false, message_max);
    }
    if json && !fields.is_empty() {
        out.extend_from_slice(b",\"fields\":{");
    }
    for (i, (name, value)) in fields.iter().enumerate() {
        let field = field_bytes(json, i > 0, name, value);
        if out.len() + field.len() > room {
            break;
        }
        out.extend_from_slice(&field);
    }
    if json && !fields.is_empty() {
        out.push(b'}');
    }
    if json {
        out.push(b'}');
    }
    out.push(b'\n');
    out
}

/// One field as a line carries it: `"name":value` in JSON (after a comma where `comma`),
/// ` name=value` in text.
fn field_bytes(json: bool, comma: bool, name: &str, value: &Value) -> Vec<u8> {
    let mut field = Vec::with_capacity(64);
    if json && comma {
        field.push(b',');
    }
    match (json, value) {
        (true, Value::Text(t)) => {
            let _ = write!(field, "\"{name}\":\"");
            write_escaped(&mut field, t, true, LINE_BYTES_MAX);
            field.push(b'"');
        }
        (true, Value::Number(n)) => {
            let _ = write!(field, "\"{name}\":{n}");
        }
        (true, Value::Bool(b)) => {
            let _ = write!(field, "\"{name}\":{b}");
        }
        (false, Value::Text(t)) => {
            let _ = write!(field, " {name}=");
            write_escaped(&mut field, t, false, LINE_BYTES_MAX);
        }
        (false, Value::Number(n)) => {
            let _ = write!(field, " {name}={n}");
        }
        (false, Value::Bool(b)) => {
            let _ = write!(field, " {name}={b}");
        }
    }
    field
}

/// The line's start: timestamp and role, as text or as the first JSON fields up to the
/// message's opening quote.
fn write_prefix(out: &mut impl Write, json: bool, role: u32) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ts = format_args!(
        "{}.{:03}Z",
        crate::civil::DateTime(now.as_secs()),
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
        (false, MASTER) => write!(out, "{ts} {}[master] ", program()),
        (false, slot) => write!(out, "{ts} {}[worker {slot}] ", program()),
    }
}

/// `text`, escaped so that one event stays one line and says nothing to a terminal: line
/// breaks (a panic's, say) as `\n` and `\r`, other control characters as `\u00XX` in JSON
/// (with quotes and backslashes) and `\xXX` in text. It stops before `out` would pass
/// `limit` bytes, on a character's (and an escape's) boundary.
fn write_escaped(out: &mut Vec<u8>, text: &str, json: bool, limit: usize) {
    let mut utf8 = [0u8; 4];
    let mut control = [0u8; 6];
    for c in text.chars() {
        let piece: &[u8] = match (json, c) {
            (_, '\n') => b"\\n",
            (_, '\r') => b"\\r",
            (true, '"') => b"\\\"",
            (true, '\\') => b"\\\\",
            (true, '\0'..='\x1f') => {
                let _ = write!(&mut control[..], "\\u{:04x}", c as u32);
                &control[..6]
            }
            (false, '\0'..='\x1f' | '\x7f') => {
                let _ = write!(&mut control[..], "\\x{:02x}", c as u32);
                &control[..4]
            }
            _ => c.encode_utf8(&mut utf8).as_bytes(),
        };
        if out.len() + piece.len() > limit {
            return;
        }
        out.extend_from_slice(piece);
    }
}

/// Logs one event at `info`: `log!("worker {slot} started")`.
macro_rules! log {
    ($($arg:tt)*) => {
        ::tracing::info!($($arg)*)
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

/// Logs one event at `warn`, at most once a [`REPEAT_INTERVAL`] from this call site; the
/// next one that goes out says how many were held back meanwhile.
macro_rules! log_limited {
    ($($arg:tt)*) => {{
        static LIMITER: $crate::log::Limiter = $crate::log::Limiter::new();
        if let Some((held, since_ms)) = LIMITER.admit() {
            match held {
                0 => ::tracing::warn!($($arg)*),
                n => ::tracing::warn!(
                    "{} [and {n} more like this in the last {:.1}s]",
                    format_args!($($arg)*),
                    since_ms as f64 / 1000.0
                ),
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
        let escaped = |msg: &str, json: bool| {
            let mut out = Vec::new();
            write_escaped(&mut out, msg, json, usize::MAX);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(escaped("a\nb\rc \"q\" \\", false), "a\\nb\\rc \"q\" \\");
        assert_eq!(
            escaped("a\nb \"q\" \\ \x01", true),
            "a\\nb \\\"q\\\" \\\\ \\u0001"
        );
        // A terminal's escape sequence is shown, not obeyed.
        assert_eq!(escaped("\x1b[2Jé\x7f", false), "\\x1b[2Jé\\x7f");
        // Cut at the limit on an escape's and a character's boundary.
        let mut out = b"ab".to_vec();
        write_escaped(&mut out, "\x01é", true, 2 + 6 + 1);
        assert_eq!(out, b"ab\\u0001", "é's two bytes would pass the limit");
    }

    #[test]
    fn a_message_of_control_characters_keeps_the_line_within_its_bound() {
        let nasty: String = "\t\"\x01".repeat(MESSAGE_BYTES_MAX / 3);
        let fields = vec![("header", Value::Text("\x02".repeat(FIELD_BYTES_MAX)))];
        for json in [true, false] {
            let line = format_line(json, 0, Level::WARN, &"t".repeat(300), &nasty, &[], &fields);
            assert!(line.len() <= LINE_BYTES_MAX, "{}", line.len());
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            if json {
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                assert!(v["msg"].as_str().unwrap().starts_with("\t\"\x01"));
            }
        }
    }

    #[test]
    fn a_line_is_one_json_object_or_one_text_line_within_its_bound() {
        let fields = vec![
            ("slot", Value::Number("3".into())),
            ("ok", Value::Bool(true)),
            ("path", Value::Text("/a \"b\"\nc".into())),
        ];
        let line = format_line(true, 2, Level::WARN, "app::x", "hi \"there\"", &[], &fields);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["role"], "worker");
        assert_eq!(v["slot"], 2);
        assert_eq!(v["msg"], "hi \"there\"");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "app::x");
        assert_eq!(v["fields"]["slot"], 3);
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["fields"]["path"], "/a \"b\"\nc");
        let line = format_line(false, MASTER, Level::INFO, "app", "done", &[], &fields);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with(" ringmaster[master] INFO done slot=3 ok=true path=/a \"b\"\\nc\n"),
            "{text}"
        );
        // Past the bound, fields are left out whole and the line stays one object.
        let many: Vec<(&'static str, Value)> = (0..40)
            .map(|_| ("f", Value::Text("x".repeat(FIELD_BYTES_MAX))))
            .collect();
        for json in [true, false] {
            let line = format_line(
                json,
                0,
                Level::INFO,
                "app",
                &"m".repeat(MESSAGE_BYTES_MAX),
                &[],
                &many,
            );
            assert!(line.len() <= LINE_BYTES_MAX, "{}", line.len());
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            if json {
                serde_json::from_slice::<serde_json::Value>(&line).unwrap();
            }
        }
    }

    #[test]
    fn an_events_spans_go_before_its_message_outermost_first() {
        let spans = [
            SpanLine {
                name: "request",
                fields: vec![
                    ("method", Value::Text("GET".into())),
                    ("uri", Value::Text("/a b".into())),
                ],
            },
            SpanLine {
                name: "inner",
                fields: Vec::new(),
            },
        ];
        let fields = [("status", Value::Number("200".into()))];
        let line = format_line(false, 0, Level::DEBUG, "t", "done", &spans, &fields);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with(" DEBUG request{method=GET uri=/a b}:inner: done status=200\n"),
            "{text}"
        );
        let line = format_line(true, 0, Level::DEBUG, "t", "done", &spans, &fields);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["spans"][0]["name"], "request");
        assert_eq!(v["spans"][0]["fields"]["uri"], "/a b");
        assert_eq!(v["spans"][1]["name"], "inner");
        assert_eq!(v["fields"]["status"], 200);
    }

    #[test]
    fn spans_full_of_quotes_and_a_field_keep_a_json_line_within_its_bound() {
        let fields = [("x", Value::Number("1".into()))];
        // Spans that just fit, or just do not, beside messages of every length near it.
        for n in 1..=9 {
            for quotes in (150..=FIELD_BYTES_MAX).step_by(13) {
                let spans = [SpanLine {
                    name: "s",
                    fields: (0..n)
                        .map(|_| ("f", Value::Text("\"".repeat(quotes))))
                        .collect(),
                }];
                for len in (0..400).step_by(7) {
                    let message = "m".repeat(len);
                    let line = format_line(true, 0, Level::INFO, "t", &message, &spans, &fields);
                    assert!(
                        line.len() <= LINE_BYTES_MAX,
                        "{n} {quotes} {len}: {}",
                        line.len()
                    );
                    serde_json::from_slice::<serde_json::Value>(&line).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_message_and_a_field_are_cut_at_their_bounds_on_a_character() {
        let mut s = String::new();
        let _ = Bounded(&mut s, 5).write_str("ééé");
        assert_eq!(s, "éé", "4 bytes: the third would cross the bound");
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
