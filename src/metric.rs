//! A handler's own metrics: counters, gauges and histograms it updates in its worker,
//! reported to the master with the worker's stats each second and exposed on `/metrics`
//! beside ringmaster's own, labelled by slot. A counter or histogram keeps what replaced workers counted (it
//! never goes down across a reload, a recycle or a crash); a gauge is its live workers'
//! values.
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
//! Bounds: at most [`METRICS_MAX`] metrics per program, [`HISTOGRAMS_MAX`] of them
//! histograms of at most [`BOUNDS_MAX`] bounds (all its reports must fit one atomic pipe
//! write), names of at most [`NAME_BYTES_MAX`] bytes matching
//! `[a-zA-Z_:][a-zA-Z0-9_:]*` and not starting with `ringmaster_`, help of at most
//! [`HELP_BYTES_MAX`] bytes. Updating one is an atomic add: no lock, no formatting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most metrics one program defines.
pub const METRICS_MAX: usize = 16;
/// The most of them that are histograms (a histogram's report is the largest).
pub const HISTOGRAMS_MAX: usize = 4;
/// The most bounds a histogram has (a last bucket, `+Inf`, takes the rest).
pub const BOUNDS_MAX: usize = 10;
/// The longest metric name.
pub const NAME_BYTES_MAX: usize = 64;
/// The longest help text.
pub const HELP_BYTES_MAX: usize = 96;

/// Why a metric cannot be defined.
///
/// See [`metric`](crate::metric)'s example.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricError {
    /// [`METRICS_MAX`] are defined already, or [`HISTOGRAMS_MAX`] histograms.
    TooMany,
    /// The name is not a Prometheus name, is too long, or is ringmaster's.
    BadName(String),
    /// The help is too long or holds a line break.
    BadHelp,
    /// A histogram's bounds are not 1 to [`BOUNDS_MAX`] finite values, each above the one
    /// before.
    BadBounds,
    /// The name is defined already, as another kind (or a histogram with other bounds).
    KindConflict(String),
}

impl std::fmt::Display for MetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricError::TooMany => write!(
                f,
                "at most {METRICS_MAX} metrics may be defined, {HISTOGRAMS_MAX} of them histograms"
            ),
            MetricError::BadName(n) => write!(
                f,
                "metric name {n:?} is not [a-zA-Z_:][a-zA-Z0-9_:]* of at most {NAME_BYTES_MAX} \
                 bytes, or starts with ringmaster_"
            ),
            MetricError::BadHelp => write!(
                f,
                "a metric's help is at most {HELP_BYTES_MAX} bytes, on one line"
            ),
            MetricError::BadBounds => write!(
                f,
                "a histogram has 1 to {BOUNDS_MAX} finite bounds, each above the one before"
            ),
            MetricError::KindConflict(n) => {
                write!(f, "metric {n:?} is defined already as something else")
            }
        }
    }
}

impl std::error::Error for MetricError {}

/// What a metric is.
///
/// See [`metric`](crate::metric)'s example.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Kind {
    /// Only goes up; exposed as `NAME_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets; exposed as `NAME_bucket`, `NAME_sum`, `NAME_count`.
    Histogram,
}

/// One metric's definition and value, as a worker reports it.
///
/// See [`metric`](crate::metric)'s example.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// What it is.
    pub kind: Kind,
    /// Its name (a counter's without `_total`).
    pub name: String,
    /// Its help.
    pub help: String,
    /// A counter's or gauge's value (a gauge's as the two's complement of an `i64`); 0 for
    /// a histogram.
    pub value: u64,
    /// A histogram's buckets: each bound with the observations at most it and above the
    /// bound before (not cumulative), the last bound `f64::INFINITY`; empty otherwise.
    pub buckets: Vec<(f64, u64)>,
    /// A histogram's observations added up.
    pub sum: f64,
}

/// A histogram's counts, updated with atomic adds.
struct HistCell {
    bounds: &'static [f64],
    /// One per bound, then `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum, as `f64` bits.
    sum_bits: AtomicU64,
}

enum Cell {
    Value(Arc<AtomicU64>),
    Hist(Arc<HistCell>),
}

struct Defined {
    kind: Kind,
    name: &'static str,
    help: &'static str,
    cell: Cell,
}

/// The program's metrics, in the order defined.
static DEFINED: Mutex<Vec<Defined>> = Mutex::new(Vec::new());

fn check(name: &str, help: &str) -> Result<(), MetricError> {
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
    Ok(())
}

/// Defines `name` as `kind`, or finds it defined so: its cell.
fn define(
    kind: Kind,
    name: &'static str,
    help: &'static str,
    make: impl FnOnce() -> Cell,
    same: impl Fn(&Cell) -> bool,
) -> Result<Cell, MetricError> {
    check(name, help)?;
    let mut defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = defined.iter().find(|d| d.name == name) {
        if d.kind != kind || !same(&d.cell) {
            return Err(MetricError::KindConflict(name.to_string()));
        }
        return Ok(match &d.cell {
            Cell::Value(v) => Cell::Value(Arc::clone(v)),
            Cell::Hist(h) => Cell::Hist(Arc::clone(h)),
        });
    }
    let histograms = defined.iter().filter(|d| d.kind == Kind::Histogram).count();
    if defined.len() >= METRICS_MAX || (kind == Kind::Histogram && histograms >= HISTOGRAMS_MAX) {
        return Err(MetricError::TooMany);
    }
    let cell = make();
    let kept = match &cell {
        Cell::Value(v) => Cell::Value(Arc::clone(v)),
        Cell::Hist(h) => Cell::Hist(Arc::clone(h)),
    };
    defined.push(Defined {
        kind,
        name,
        help,
        cell: kept,
    });
    Ok(cell)
}

fn value_cell(
    kind: Kind,
    name: &'static str,
    help: &'static str,
) -> Result<Arc<AtomicU64>, MetricError> {
    let make = || Cell::Value(Arc::new(AtomicU64::new(0)));
    match define(kind, name, help, make, |_| true)? {
        Cell::Value(v) => Ok(v),
        Cell::Hist(_) => unreachable!("a counter or gauge is a value"),
    }
}

/// A counter: only goes up. Defining the same name again gives the same counter.
///
/// See [`metric`](crate::metric)'s example.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Defines the counter `name` (exposed as `name_total`).
    pub fn new(name: &'static str, help: &'static str) -> Result<Counter, MetricError> {
        value_cell(Kind::Counter, name, help).map(Counter)
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
///
/// See [`metric`](crate::metric)'s example.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Defines the gauge `name`.
    pub fn new(name: &'static str, help: &'static str) -> Result<Gauge, MetricError> {
        value_cell(Kind::Gauge, name, help).map(Gauge)
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

/// A histogram of observations (sizes, durations in seconds...) over fixed bounds.
/// Defining the same name again with the same bounds gives the same histogram.
///
/// See [`metric`](crate::metric)'s example.
#[derive(Clone)]
pub struct Histogram(Arc<HistCell>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("bounds", &self.0.bounds)
            .finish()
    }
}

impl Histogram {
    /// Defines the histogram `name` with the buckets' upper `bounds` (1 to [`BOUNDS_MAX`],
    /// finite, each above the one before; a last bucket takes the rest).
    pub fn new(
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
    ) -> Result<Histogram, MetricError> {
        let ordered = bounds.windows(2).all(|w| w[0] < w[1]);
        if bounds.is_empty()
            || bounds.len() > BOUNDS_MAX
            || !ordered
            || bounds.iter().any(|b| !b.is_finite())
        {
            return Err(MetricError::BadBounds);
        }
        let make = || {
            Cell::Hist(Arc::new(HistCell {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_bits: AtomicU64::new(0f64.to_bits()),
            }))
        };
        let same = |c: &Cell| matches!(c, Cell::Hist(h) if h.bounds == bounds);
        match define(Kind::Histogram, name, help, make, same)? {
            Cell::Hist(h) => Ok(Histogram(h)),
            Cell::Value(_) => unreachable!("a histogram is a histogram"),
        }
    }

    /// Counts one observation of `v` (a NaN is not counted).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let h = &self.0;
        let bucket = h.bounds.partition_point(|&b| b < v);
        h.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // The sum: a compare-and-swap loop on its bits, as there is no atomic f64 add.
        let mut old = h.sum_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match h
                .sum_bits
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
    }
}

/// Every metric defined in this process, with its value now (empty when none is).
pub(crate) fn samples() -> Vec<Sample> {
    let defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
    defined
        .iter()
        .map(|d| {
            let mut s = Sample {
                kind: d.kind,
                name: d.name.to_string(),
                help: d.help.to_string(),
                value: 0,
                buckets: Vec::new(),
                sum: 0.0,
            };
            match &d.cell {
                Cell::Value(v) => s.value = v.load(Ordering::Relaxed),
                Cell::Hist(h) => {
                    s.buckets = h
                        .bounds
                        .iter()
                        .copied()
                        .chain([f64::INFINITY])
                        .zip(h.counts.iter().map(|c| c.load(Ordering::Relaxed)))
                        .collect();
                    s.sum = f64::from_bits(h.sum_bits.load(Ordering::Relaxed));
                }
            }
            s
        })
        .collect()
}

/// Adds the counters and histograms of `samples` into `past` (by name; a gauge is not
/// carried over): what an exited worker counted.
pub(crate) fn add_totals(past: &mut Vec<Sample>, samples: &[Sample]) {
    for s in samples.iter().filter(|s| s.kind != Kind::Gauge) {
        let same_shape = |p: &Sample| {
            p.kind == s.kind
                && p.buckets.len() == s.buckets.len()
                && p.buckets.iter().zip(&s.buckets).all(|(a, b)| a.0 == b.0)
        };
        match past.iter().position(|p| p.name == s.name) {
            Some(i) if same_shape(&past[i]) => {
                let p = &mut past[i];
                p.value = p.value.wrapping_add(s.value);
                p.sum += s.sum;
                for (a, b) in p.buckets.iter_mut().zip(&s.buckets) {
                    a.1 = a.1.wrapping_add(b.1);
                }
            }
            Some(_) => {}
            // Bounded: a later build may define other names; each build at most METRICS_MAX.
            None if past.len() < METRICS_MAX * 2 => past.push(s.clone()),
            None => {}
        }
    }
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
    fn samples_cross_the_pipe_and_counters_and_histograms_add_up() {
        let samples = vec![
            Sample {
                kind: Kind::Counter,
                name: "a".into(),
                help: "A.".into(),
                value: 7,
                buckets: Vec::new(),
                sum: 0.0,
            },
            Sample {
                kind: Kind::Gauge,
                name: "b".into(),
                help: String::new(),
                value: (-3i64) as u64,
                buckets: Vec::new(),
                sum: 0.0,
            },
            Sample {
                kind: Kind::Histogram,
                name: "c".into(),
                help: "C.".into(),
                value: 0,
                buckets: vec![(0.5, 1), (1.0, 0), (f64::INFINITY, 2)],
                sum: 7.25,
            },
        ];
        let msg = crate::ipc::Message::Metrics(samples.clone());
        let mut bytes = Vec::new();
        crate::ipc::encode(&msg, &mut bytes).unwrap();
        let (back, _) = crate::ipc::decode(&bytes).unwrap().unwrap();
        assert_eq!(back, msg);
        let mut past = Vec::new();
        add_totals(&mut past, &samples);
        add_totals(&mut past, &samples);
        assert_eq!(past.len(), 2, "the gauge is not carried");
        assert_eq!(past[0].value, 14);
        assert_eq!(
            past[1].buckets,
            vec![(0.5, 2), (1.0, 0), (f64::INFINITY, 4)]
        );
        assert_eq!(past[1].sum, 14.5);
    }

    #[test]
    fn the_most_metrics_fit_one_frame() {
        let longest = Sample {
            kind: Kind::Counter,
            name: "n".repeat(NAME_BYTES_MAX),
            help: "h".repeat(HELP_BYTES_MAX),
            value: u64::MAX,
            buckets: Vec::new(),
            sum: 0.0,
        };
        let histogram = Sample {
            kind: Kind::Histogram,
            buckets: vec![(1.0, u64::MAX); BOUNDS_MAX + 1],
            ..longest.clone()
        };
        let mut all = vec![histogram; HISTOGRAMS_MAX];
        all.extend(vec![longest; METRICS_MAX - HISTOGRAMS_MAX]);
        let mut frame = Vec::new();
        crate::ipc::encode(&crate::ipc::Message::Metrics(all), &mut frame)
            .expect("the most metrics fit one frame");
        assert!(frame.len() <= crate::ipc::FRAME_BYTES_MAX);
    }

    #[test]
    fn a_histogram_counts_into_its_buckets_and_checks_its_bounds() {
        static BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];
        let h = Histogram::new("unit_hist", "A histogram.", &BOUNDS).unwrap();
        for v in [0.05, 0.1, 0.5, 20.0, f64::NAN] {
            h.observe(v);
        }
        let s = samples()
            .into_iter()
            .find(|s| s.name == "unit_hist")
            .unwrap();
        assert_eq!(
            s.buckets,
            vec![(0.1, 2), (1.0, 1), (10.0, 0), (f64::INFINITY, 1)]
        );
        assert!((s.sum - 20.65).abs() < 1e-9);
        static OTHER: [f64; 1] = [5.0];
        assert!(matches!(
            Histogram::new("unit_hist", "x", &OTHER),
            Err(MetricError::KindConflict(_))
        ));
        static UNORDERED: [f64; 2] = [2.0, 1.0];
        assert_eq!(
            Histogram::new("unit_bad", "x", &UNORDERED).err(),
            Some(MetricError::BadBounds)
        );
        assert_eq!(
            Histogram::new("unit_empty", "x", &[]).err(),
            Some(MetricError::BadBounds)
        );
    }
}
