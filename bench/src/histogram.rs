//! A lock-free latency histogram shared by every client task.
//!
//! Log-linear buckets in the style of HdrHistogram with 64 sub-buckets per
//! power of two (about 1.6 % relative precision), one `AtomicU64` each: a
//! record is one `fetch_add`, so 10 000 reader tasks can share one histogram
//! without a lock and without 10 000 private copies.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `2 * SUB` are exact, one bucket each.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Counts of nanosecond values.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
    sum: AtomicU64,
}

/// Percentiles read from a [`Histogram`], in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value (nanoseconds).
    pub fn record(&self, nanos: u64) {
        self.buckets[index(nanos)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(nanos, Relaxed);
        if nanos > self.max.load(Relaxed) {
            self.max.fetch_max(nanos, Relaxed);
        }
    }

    /// Forgets everything recorded. Call only while nothing records, or
    /// accept that a concurrent record may straddle the reset.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum.store(0, Relaxed);
        self.max.store(0, Relaxed);
    }

    /// Reads the percentiles of what was recorded so far.
    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Summary::default();
        }
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return value(i);
                }
            }
            value(BUCKETS - 1)
        };
        let max = self.max.load(Relaxed);
        Summary {
            p50: at(0.50).min(max),
            p99: at(0.99).min(max),
            p999: at(0.999).min(max),
            max,
            mean: self.sum.load(Relaxed) / count.max(1),
        }
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2 * SUB)
    (LINEAR + (shift as u64 - 1) * SUB + (mantissa - SUB)) as usize
}

/// The middle of bucket `i`'s range.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = (i - LINEAR) / SUB + 1;
    let mantissa = (i - LINEAR) % SUB + SUB;
    (mantissa << shift) + (1 << (shift - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 1_000, 65_537, 1_000_000, 123_456_789, u64::MAX / 2] {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            let back = value(i) as f64;
            assert!((back - v as f64).abs() <= v as f64 * 0.02 + 1.0, "{v} -> {back}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles() {
        let h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.max, 1_000_000);
        assert!((490_000..=510_000).contains(&s.p50), "{s:?}");
        assert!((980_000..=1_000_000).contains(&s.p99), "{s:?}");
    }
}
