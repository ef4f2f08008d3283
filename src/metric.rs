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
///
/// # Examples
///
/// ```
/// use ringmaster::metric::{Counter, MetricError, METRICS_MAX};
///
/// for i in 0..METRICS_MAX {
///     Counter::new(format!("myapp_c{i}").leak(), "One of many.")?;
/// }
/// assert_eq!(Counter::new("myapp_one_more", "").err(), Some(MetricError::TooMany));
/// # Ok::<(), MetricError>(())
/// ```
pub const METRICS_MAX: usize = 16;
/// The most of them that are histograms (a histogram's report is the largest).
///
/// # Examples
///
/// ```
/// use ringmaster::metric::{Counter, Histogram, MetricError, HISTOGRAMS_MAX};
///
/// for i in 0..HISTOGRAMS_MAX {
///     Histogram::new(format!("myapp_h{i}").leak(), "", &[0.1, 1.0])?;
/// }
/// let fifth = Histogram::new("myapp_one_more", "", &[0.1, 1.0]);
/// assert_eq!(fifth.err(), Some(MetricError::TooMany));
/// // Counters and gauges still fit, up to `METRICS_MAX` in all.
/// assert!(Counter::new("myapp_requests", "").is_ok());
/// # Ok::<(), MetricError>(())
/// ```
pub const HISTOGRAMS_MAX: usize = 4;
/// The most bounds a histogram has (a last bucket, `+Inf`, takes the rest).
///
/// # Examples
///
/// ```
/// use ringmaster::metric::{Histogram, MetricError, BOUNDS_MAX};
///
/// let bounds: &'static [f64] = (0..=BOUNDS_MAX).map(|i| i as f64).collect::<Vec<_>>().leak();
/// assert_eq!(bounds.len(), BOUNDS_MAX + 1);
/// assert_eq!(Histogram::new("myapp_fine", "", bounds).err(), Some(MetricError::BadBounds));
/// assert!(Histogram::new("myapp_fine", "", &bounds[..BOUNDS_MAX]).is_ok());
/// ```
pub const BOUNDS_MAX: usize = 10;
/// The longest metric name.
///
/// # Examples
///
/// ```
/// use ringmaster::metric::{Gauge, MetricError, NAME_BYTES_MAX};
///
/// let long: &'static str = "q".repeat(NAME_BYTES_MAX + 1).leak();
/// assert!(matches!(Gauge::new(long, ""), Err(MetricError::BadName(_))));
/// assert!(Gauge::new(&long[..NAME_BYTES_MAX], "").is_ok());
/// ```
pub const NAME_BYTES_MAX: usize = 64;
/// The longest help text.
///
/// # Examples
///
/// ```
/// use ringmaster::metric::{Counter, MetricError, HELP_BYTES_MAX};
///
/// let help: &'static str = "h".repeat(HELP_BYTES_MAX + 1).leak();
/// assert_eq!(Counter::new("myapp_jobs", help).err(), Some(MetricError::BadHelp));
/// assert!(Counter::new("myapp_jobs", &help[..HELP_BYTES_MAX]).is_ok());
/// ```
pub const HELP_BYTES_MAX: usize = 96;

/// Why a metric cannot be defined.
///
/// See [`Counter::new`]'s and [`Histogram::new`]'s examples.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricError {
    /// [`METRICS_MAX`] are defined already, or [`HISTOGRAMS_MAX`] histograms.
    TooMany,
    /// The name is not a Prometheus name, is too long, is ringmaster's, or is a counter's
    /// ending in `_total` (which the exposition adds).
    BadName(String),
    /// The help is too long or holds a line break.
    BadHelp,
    /// A histogram's bounds are not 1 to [`BOUNDS_MAX`] finite values (`f64::MAX` is not
    /// one), each above the one before.
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
                 bytes, starts with ringmaster_, or is a counter's ending in _total (which the \
                 exposition adds: name it without)"
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

fn check(kind: Kind, name: &str, help: &str) -> Result<(), MetricError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && !name.starts_with("ringmaster_")
        // The exposition adds `_total` to a counter's name: `jobs_total` would be
        // `jobs_total_total`.
        && (kind != Kind::Counter || !name.ends_with("_total"))
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
    check(kind, name, help)?;
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
    /// Defines the counter `name` (exposed as `name_total`; a `name` ending in `_total` is
    /// refused, as it would be exposed as `name_total_total`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Counter, Gauge, MetricError};
    ///
    /// let signups = Counter::new("myapp_signups", "Accounts created.")?;
    /// // The same name again is the same counter; as another kind it is refused.
    /// let again = Counter::new("myapp_signups", "Accounts created.")?;
    /// assert!(matches!(Gauge::new("myapp_signups", ""), Err(MetricError::KindConflict(_))));
    /// // ringmaster's own names are taken.
    /// assert!(matches!(Counter::new("ringmaster_requests", ""), Err(MetricError::BadName(_))));
    /// // The exposition adds `_total`: name a counter without it.
    /// assert!(matches!(Counter::new("myapp_jobs_total", ""), Err(MetricError::BadName(_))));
    /// # let _ = (signups, again);
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn new(name: &'static str, help: &'static str) -> Result<Counter, MetricError> {
        value_cell(Kind::Counter, name, help).map(Counter)
    }

    /// Adds one.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::Counter;
    /// use ringmaster::{Request, Response};
    /// use std::sync::LazyLock;
    ///
    /// static NOT_FOUND: LazyLock<Counter> =
    ///     LazyLock::new(|| Counter::new("myapp_not_found", "Pages not found.").expect("a name"));
    ///
    /// fn not_found(_: &Request<'_>, res: &mut Response) {
    ///     NOT_FOUND.inc();
    ///     res.status(404).body("no such page\n");
    /// }
    /// ```
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::Counter;
    /// use ringmaster::{Request, Response};
    /// use std::sync::LazyLock;
    ///
    /// static UPLOADED: LazyLock<Counter> = LazyLock::new(|| {
    ///     Counter::new("myapp_uploaded_bytes", "Bytes uploaded.").expect("a name")
    /// });
    ///
    /// fn upload(req: &Request<'_>, res: &mut Response) {
    ///     UPLOADED.add(req.body().len() as u64);
    ///     res.status(201).body("stored\n");
    /// }
    /// ```
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A gauge: a value that goes up and down. Defining the same name again gives the same
/// gauge.
///
/// See [`Gauge::new`]'s and [`Gauge::add`]'s examples, and [`metric`](crate::metric)'s.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Defines the gauge `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Gauge, MetricError};
    ///
    /// let queued = Gauge::new("myapp_jobs_queued", "Jobs waiting to run.")?;
    /// assert_eq!(queued.get(), 0);
    /// // The same name again is the same gauge.
    /// Gauge::new("myapp_jobs_queued", "Jobs waiting to run.")?.set(3);
    /// assert_eq!(queued.get(), 3);
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn new(name: &'static str, help: &'static str) -> Result<Gauge, MetricError> {
        value_cell(Kind::Gauge, name, help).map(Gauge)
    }

    /// Sets it to `v`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Gauge, MetricError};
    ///
    /// let skew = Gauge::new("myapp_clock_skew_ms", "Our clock minus the upstream's.")?;
    /// skew.set(-40);
    /// assert_eq!(skew.get(), -40);
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn set(&self, v: i64) {
        self.0.store(v as u64, Ordering::Relaxed);
    }

    /// Adds `d` (negative to subtract).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Gauge, MetricError};
    ///
    /// let active = Gauge::new("myapp_uploads_active", "Uploads in progress.")?;
    /// active.add(1); // one starts
    /// active.add(1); // another
    /// active.add(-1); // the first ends
    /// assert_eq!(active.get(), 1);
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn add(&self, d: i64) {
        // Two's complement: adding the bits of a negative `d` subtracts.
        self.0.fetch_add(d as u64, Ordering::Relaxed);
    }

    /// Its value now.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Gauge, MetricError};
    ///
    /// // Takes a job unless 100 are waiting already.
    /// fn enqueue(waiting: &Gauge) -> bool {
    ///     if waiting.get() >= 100 {
    ///         return false;
    ///     }
    ///     waiting.add(1);
    ///     true
    /// }
    ///
    /// let waiting = Gauge::new("myapp_jobs_waiting", "Jobs waiting to run.")?;
    /// waiting.set(99);
    /// assert!(enqueue(&waiting));
    /// assert!(!enqueue(&waiting));
    /// assert_eq!(waiting.get(), 100);
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed) as i64
    }
}

/// A histogram of observations (sizes, durations in seconds...) over fixed bounds.
/// Defining the same name again with the same bounds gives the same histogram.
///
/// See [`Histogram::observe`]'s example, and [`metric`](crate::metric)'s.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::{Histogram, MetricError};
    ///
    /// let render = Histogram::new(
    ///     "myapp_render_seconds",
    ///     "Time to render a page.",
    ///     &[0.005, 0.05, 0.5, 5.0],
    /// )?;
    /// // Bounds out of order are refused, and so is the name again with other bounds.
    /// let unordered = Histogram::new("myapp_size_bytes", "", &[1e6, 1e3]);
    /// assert_eq!(unordered.err(), Some(MetricError::BadBounds));
    /// let other = Histogram::new("myapp_render_seconds", "", &[1.0]);
    /// assert!(matches!(other, Err(MetricError::KindConflict(_))));
    /// # let _ = render;
    /// # Ok::<(), MetricError>(())
    /// ```
    pub fn new(
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
    ) -> Result<Histogram, MetricError> {
        let ordered = bounds.windows(2).all(|w| w[0] < w[1]);
        if bounds.is_empty()
            || bounds.len() > BOUNDS_MAX
            || !ordered
            // `f64::MAX` would be written as `+Inf`, beside the `+Inf` bucket.
            || bounds.iter().any(|b| !b.is_finite() || b.abs() == f64::MAX)
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

    /// Counts one observation of `v`. A NaN or an infinity is not counted: its sum would
    /// be NaN for good (sums are kept across worker replacements), which Prometheus refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringmaster::metric::Histogram;
    /// use ringmaster::{Request, Response};
    /// use std::sync::LazyLock;
    /// use std::time::Instant;
    ///
    /// static RENDER: LazyLock<Histogram> = LazyLock::new(|| {
    ///     Histogram::new("myapp_render_seconds", "Time to render a page.", &[0.005, 0.05, 0.5])
    ///         .expect("a name and bounds")
    /// });
    ///
    /// fn page(_: &Request<'_>, res: &mut Response) {
    ///     let started = Instant::now();
    ///     res.body("<h1>hello</h1>\n");
    ///     RENDER.observe(started.elapsed().as_secs_f64());
    /// }
    /// ```
    pub fn observe(&self, v: f64) {
        if !v.is_finite() {
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
/// carried over): what an exited worker counted. A metric whose kind or bounds changed (a
/// new build's) replaces the old one.
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
            // A build that changed the metric's kind or its bounds: the newest shape wins, its
            // counts start over (Prometheus sees a reset), rather than the old one frozen.
            Some(i) => past[i] = s.clone(),
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
        for bad in ["", "9lives", "a-b", "ringmaster_x", "é", "unit_jobs_total"] {
            assert!(
                matches!(Counter::new(bad, ""), Err(MetricError::BadName(_))),
                "{bad}"
            );
        }
        // Only a counter's name gets `_total` added.
        assert!(Gauge::new("unit_seen_total", "").is_ok());
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
        // A new build's histogram with other bounds takes the name's place, counts and all.
        let rebounded = Sample {
            buckets: vec![(2.0, 5), (f64::INFINITY, 0)],
            sum: 3.0,
            ..samples[2].clone()
        };
        add_totals(&mut past, std::slice::from_ref(&rebounded));
        assert_eq!(past[1], rebounded);
        add_totals(&mut past, std::slice::from_ref(&rebounded));
        assert_eq!(past[1].buckets, vec![(2.0, 10), (f64::INFINITY, 0)]);
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
        for v in [
            0.05,
            0.1,
            0.5,
            20.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
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
        static HUGE: [f64; 2] = [1.0, f64::MAX];
        assert_eq!(
            Histogram::new("unit_huge", "x", &HUGE).err(),
            Some(MetricError::BadBounds),
            "f64::MAX is written +Inf"
        );
    }
}
