//! A fixed-bucket histogram of durations: the buckets the exporter publishes, and enough for
//! a TUI to show percentiles. Latencies use [`LATENCY_BOUNDS_NS`], object lifetimes
//! [`LIFETIME_BOUNDS_NS`].

/// Upper bounds of the latency buckets, nanoseconds (1 µs to 1 s, 1-2.5-5 steps); a last,
/// implicit bucket holds everything above.
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
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
];

/// Upper bounds of the lifetime buckets, nanoseconds: 1 ms to 1 day. iommufd objects live
/// from microseconds (a failed create's cleanup) to the life of a VM.
pub const LIFETIME_BOUNDS_NS: [u64; 10] = [
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    60_000_000_000,
    600_000_000_000,
    3_600_000_000_000,
    21_600_000_000_000,
    86_400_000_000_000,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); the last one is above every bound.
    counts: Vec<u64>,
    count: u64,
    sum_ns: u64,
}

/// A latency histogram.
impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(&LATENCY_BOUNDS_NS)
    }
}

impl Histogram {
    pub fn with_bounds(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum_ns: 0,
        }
    }

    pub fn observe(&mut self, ns: u64) {
        let i = self.bounds.partition_point(|b| *b < ns);
        self.counts[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// (upper bound in ns, observations ≤ it) for every finite bound, as Prometheus wants.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.counts.iter())
            .scan(0u64, |acc, (b, n)| {
                *acc += n;
                Some((*b, *acc))
            })
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): an over-estimate by at
    /// most one bucket. `None` when empty or above the last bound.
    pub fn quantile_upper_ns(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        self.cumulative().find(|(_, c)| *c >= rank).map(|(b, _)| b)
    }
}
