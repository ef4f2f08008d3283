//! Request durations as a histogram by status class: each worker counts every response its
//! handler gave (from the request's head in to the response handed to the connection) into
//! fixed buckets, reports the counts to the master with its stats, and the master merges them
//! per slot for `/metrics` (`ringmaster_request_duration_seconds`). Fixed buckets, so that
//! workers' counts add up and a worker's report has a bounded size: [`BOUNDS_NS`].

/// The buckets' upper bounds in nanoseconds (Prometheus's defaults, from 100 µs to 10 s);
/// a last bucket takes the rest (`+Inf`).
pub const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets per status class: one per bound, and `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Status classes: 1xx to 5xx.
pub const CLASSES: usize = 5;

/// Counts of responses by status class and duration bucket (not cumulative), and each
/// class's total duration in nanoseconds.
///
/// Exposed as `ringmaster_request_duration_seconds` on `/metrics` (README, Operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Durations {
    /// `counts[class][bucket]`: responses of class `class` (0 for 1xx) that took at most
    /// `BOUNDS_NS[bucket]` and more than the bound before it.
    pub counts: [[u64; BUCKETS]; CLASSES],
    /// Each class's durations added up, in nanoseconds.
    pub sum_ns: [u64; CLASSES],
}

impl Default for Durations {
    fn default() -> Durations {
        Durations {
            counts: [[0; BUCKETS]; CLASSES],
            sum_ns: [0; CLASSES],
        }
    }
}

impl Durations {
    /// Counts one response of `status` that took `ns` nanoseconds.
    #[inline]
    pub fn record(&mut self, status: u16, ns: u64) {
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[class][bucket] += 1;
        self.sum_ns[class] = self.sum_ns[class].wrapping_add(ns);
    }

    /// Both added up.
    pub fn plus(&self, other: &Durations) -> Durations {
        let mut out = *self;
        for class in 0..CLASSES {
            for b in 0..BUCKETS {
                out.counts[class][b] += other.counts[class][b];
            }
            out.sum_ns[class] = out.sum_ns[class].wrapping_add(other.sum_ns[class]);
        }
        out
    }

    /// Responses of class `class` counted.
    pub fn count(&self, class: usize) -> u64 {
        self.counts[class].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_goes_to_the_first_bucket_whose_bound_it_does_not_pass() {
        let mut d = Durations::default();
        d.record(200, 0);
        d.record(200, 100_000); // at a bound: that bucket
        d.record(200, 100_001);
        d.record(404, 3_000_000);
        d.record(503, 11_000_000_000); // past the last bound: +Inf
        d.record(99, 1); // a status below 100 counts as 1xx, one past 599 as 5xx
        d.record(600, 1);
        assert_eq!(d.counts[1][0], 2);
        assert_eq!(d.counts[1][1], 1);
        assert_eq!(d.counts[3][5], 1);
        assert_eq!(d.counts[4][BUCKETS - 1], 1);
        assert_eq!(d.counts[4][0], 1);
        assert_eq!(d.counts[0][0], 1);
        assert_eq!(d.count(1), 3);
        assert_eq!(d.sum_ns[1], 200_001);
    }

    #[test]
    fn histograms_add_up() {
        let mut a = Durations::default();
        a.record(200, 700);
        let mut b = Durations::default();
        b.record(200, 900);
        b.record(500, 2_000_000_000);
        let sum = a.plus(&b);
        assert_eq!(sum.count(1), 2);
        assert_eq!(sum.sum_ns[1], 1_600);
    }
}
