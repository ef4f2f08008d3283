//! A handler's own metrics: counters and gauges it updates in its worker, reported to the
//! master with the worker's stats each second and exposed on `/metrics` beside ringmaster's
//! own, labelled by slot. A counter keeps what replaced workers counted (it never goes
//! down across a reload, a recycle or a crash); a gauge is its live workers' values.
//!
//! ```no_run
//! use ringmaster::metric::Counter;
//! use ringmaster::{Request, Response, Server};
//! use std::sync::LazyLock;
//!
//! static SIGNUPS: LazyLock<Counter> =
//!     LazyLock::new(|| Counter::new("myapp_signups", "Accounts created.").expect("a name"));
//!
//! let server = Server::new(|_: &Request<'_>, res: &mut Response| {
//!     SIGNUPS.inc();
//!     res.body("welcome\n");
//! });
//! // /metrics then has `myapp_signups_total{slot="0"} N` for each worker slot.
//! ```
//!
//! Bounds: at most [`METRICS_MAX`] metrics per program (all its reports must fit one atomic
//! pipe write), names of at most [`NAME_BYTES_MAX`] bytes matching
//! `[a-zA-Z_:][a-zA-Z0-9_:]*` and not starting with `ringmaster_`, help of at most
//! [`HELP_BYTES_MAX`] bytes. Updating one is an atomic add: no lock, no formatting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most metrics one program defines.
pub const METRICS_MAX: usize = 16;
/// The longest metric name.
pub const NAME_BYTES_MAX: usize = 64;
/// The longest help text.
pub const HELP_BYTES_MAX: usize = 96;

/// Why a metric cannot be defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricError {
    /// [`METRICS_MAX`] are defined already.
    TooMany,
    /// The name is not a Prometheus name, is too long, or is ringmaster's.
    BadName(String),
    /// The help is too long or holds a line break.
    BadHelp,
    /// The name is defined already, as the other kind.
    KindConflict(String),
}

impl std::fmt::Display for MetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricError::TooMany => write!(f, "at most {METRICS_MAX} metrics may be defined"),
            MetricError::BadName(n) => write!(
                f,
                "metric name {n:?} is not [a-zA-Z_:][a-zA-Z0-9_:]* of at most {NAME_BYTES_MAX} \
                 bytes, or starts with ringmaster_"
            ),
            MetricError::BadHelp => write!(
                f,
                "a metric's help is at most {HELP_BYTES_MAX} bytes, on one line"
            ),
            MetricError::KindConflict(n) => {
                write!(f, "metric {n:?} is defined already as the other kind")
            }
        }
    }
}

impl std::error::Error for MetricError {}

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; exposed as `NAME_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric's definition and value, as a worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// What it is.
    pub kind: Kind,
    /// Its name (a counter's without `_total`).
    pub name: String,
    /// Its help.
    pub help: String,
    /// Its value (a gauge's as the two's complement of an `i64`).
    pub value: u64,
}

struct Defined {
    kind: Kind,
    name: &'static str,
    help: &'static str,
    value: Arc<AtomicU64>,
}

/// The program's metrics, in the order defined.
static DEFINED: Mutex<Vec<Defined>> = Mutex::new(Vec::new());

fn define(
    kind: Kind,
    name: &'static str,
    help: &'static str,
) -> Result<Arc<AtomicU64>, MetricError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && !name.starts_with("ringmaster_")
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
        });
    if !valid {
        return Err(MetricError::BadName(name.to_string()));
    }
    if help.len() > HELP_BYTES_MAX || help.contains(['\n', '\r']) {
        return Err(MetricError::BadHelp);
    }
    let mut defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = defined.iter().find(|d| d.name == name) {
        return match d.kind == kind {
            true => Ok(Arc::clone(&d.value)),
            false => Err(MetricError::KindConflict(name.to_string())),
        };
    }
    if defined.len() >= METRICS_MAX {
        return Err(MetricError::TooMany);
    }
    let value = Arc::new(AtomicU64::new(0));
    defined.push(Defined {
        kind,
        name,
        help,
        value: Arc::clone(&value),
    });
    Ok(value)
}

/// A counter: only goes up. Defining the same name again gives the same counter.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Defines the counter `name` (exposed as `name_total`).
    pub fn new(name: &'static str, help: &'static str) -> Result<Counter, MetricError> {
        define(Kind::Counter, name, help).map(Counter)
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A gauge: a value that goes up and down. Defining the same name again gives the same
/// gauge.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Defines the gauge `name`.
    pub fn new(name: &'static str, help: &'static str) -> Result<Gauge, MetricError> {
        define(Kind::Gauge, name, help).map(Gauge)
    }

    /// Sets it to `v`.
    pub fn set(&self, v: i64) {
        self.0.store(v as u64, Ordering::Relaxed);
    }

    /// Adds `d` (negative to subtract).
    pub fn add(&self, d: i64) {
        // Two's complement: adding the bits of a negative `d` subtracts.
        self.0.fetch_add(d as u64, Ordering::Relaxed);
    }

    /// Its value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

/// Every metric defined in this process, with its value now (empty when none is).
pub(crate) fn samples() -> Vec<Sample> {
    let defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
    defined
        .iter()
        .map(|d| Sample {
            kind: d.kind,
            name: d.name.to_string(),
            help: d.help.to_string(),
            value: d.value.load(Ordering::Relaxed),
        })
        .collect()
}

/// Adds the counters of `samples` into `past` (by name; a gauge is not carried over): what
/// an exited worker counted.
pub(crate) fn add_counters(past: &mut Vec<Sample>, samples: &[Sample]) {
    for s in samples.iter().filter(|s| s.kind == Kind::Counter) {
        match past.iter().position(|p| p.name == s.name) {
            Some(i) if past[i].kind == Kind::Counter => {
                past[i].value = past[i].value.wrapping_add(s.value)
            }
            Some(_) => {}
            // Bounded: a later build may define other names; each build at most METRICS_MAX.
            None if past.len() < METRICS_MAX * 2 => past.push(s.clone()),
            None => {}
        }
    }
}

/// Encodes `samples` as one frame's payload: for each, its kind, name and help (each with a
/// length byte) and value.
pub(crate) fn encode(samples: &[Sample], out: &mut Vec<u8>) {
    for s in samples.iter().take(METRICS_MAX) {
        out.push(match s.kind {
            Kind::Counter => 0,
            Kind::Gauge => 1,
        });
        for text in [&s.name, &s.help] {
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&s.value.to_le_bytes());
    }
}

/// The payload bytes `samples` take.
pub(crate) fn encoded_len(samples: &[Sample]) -> usize {
    samples
        .iter()
        .take(METRICS_MAX)
        .map(|s| 1 + 1 + s.name.len() + 1 + s.help.len() + 8)
        .sum()
}

/// Decodes [`encode`]'s payload; `None` when it is not one.
pub(crate) fn decode(mut payload: &[u8]) -> Option<Vec<Sample>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        if out.len() >= METRICS_MAX {
            return None;
        }
        let kind = match payload[0] {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            _ => return None,
        };
        payload = &payload[1..];
        let mut text = || -> Option<String> {
            let (&len, rest) = payload.split_first()?;
            let bytes = rest.get(..usize::from(len))?;
            payload = &rest[usize::from(len)..];
            String::from_utf8(bytes.to_vec()).ok()
        };
        let name = text()?;
        let help = text()?;
        let value = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        payload = &payload[8..];
        out.push(Sample {
            kind,
            name,
            help,
            value,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_help_are_checked_and_a_name_defined_again_is_the_same_metric() {
        for bad in ["", "9lives", "a-b", "ringmaster_x", "é"] {
            assert!(
                matches!(Counter::new(bad, ""), Err(MetricError::BadName(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Counter::new("unit_long_help", &"h".repeat(HELP_BYTES_MAX + 1).leak()[..]).err(),
            Some(MetricError::BadHelp)
        );
        let a = Counter::new("unit_again", "Again.").unwrap();
        let b = Counter::new("unit_again", "Again.").unwrap();
        a.inc();
        b.add(2);
        assert_eq!(a.0.load(Ordering::Relaxed), 3);
        assert!(matches!(
            Gauge::new("unit_again", "x"),
            Err(MetricError::KindConflict(_))
        ));
        let g = Gauge::new("unit_gauge", "A gauge.").unwrap();
        g.set(5);
        g.add(-7);
        assert_eq!(g.get(), -2);
    }

    #[test]
    fn samples_cross_the_pipe_and_counters_add_up() {
        let samples = vec![
            Sample {
                kind: Kind::Counter,
                name: "a".into(),
                help: "A.".into(),
                value: 7,
            },
            Sample {
                kind: Kind::Gauge,
                name: "b".into(),
                help: String::new(),
                value: (-3i64) as u64,
            },
        ];
        let mut bytes = Vec::new();
        encode(&samples, &mut bytes);
        assert_eq!(bytes.len(), encoded_len(&samples));
        assert_eq!(decode(&bytes), Some(samples.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut past = Vec::new();
        add_counters(&mut past, &samples);
        add_counters(&mut past, &samples);
        assert_eq!(past.len(), 1, "the gauge is not carried");
        assert_eq!(past[0].value, 14);
    }

    #[test]
    fn the_most_metrics_fit_one_frame() {
        let longest = Sample {
            kind: Kind::Counter,
            name: "n".repeat(NAME_BYTES_MAX),
            help: "h".repeat(HELP_BYTES_MAX),
            value: u64::MAX,
        };
        let all = vec![longest; METRICS_MAX];
        assert!(encoded_len(&all) <= crate::ipc::USER_BYTES_MAX);
    }
}
