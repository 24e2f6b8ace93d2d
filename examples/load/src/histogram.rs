//! A log-bucketed latency histogram, shared by every client task.

use std::sync::atomic::{AtomicU64, Ordering};

/// Log-bucketed latency histogram in microseconds: exact below 64 µs, then
/// 32 buckets per power of two (~3% resolution).
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const SUB_BITS: u32 = 5;

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: (0..64 + 64 * 32).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros(); // >= 6
        let sub = (us >> (e - SUB_BITS)) & 31;
        64 + (e as usize - 6) * 32 + sub as usize
    }

    /// The upper bound (µs) of bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 64 {
            return i as u64;
        }
        let e = (i - 64) / 32 + 6;
        let sub = ((i - 64) % 32) as u64;
        ((32 + sub + 1) << (e - SUB_BITS as usize)) - 1
    }

    pub(crate) fn record(&self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Latency (ms) at quantile `q`, from bucket upper bounds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let max = self.max_us.load(Ordering::Relaxed);
                return Self::upper(i).min(max) as f64 / 1000.0;
            }
        }
        self.max_ms()
    }

    /// The largest latency recorded, in ms.
    pub(crate) fn max_ms(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// p50, p95, p99 and the maximum, as the report's latency line shows
    /// them.
    pub(crate) fn summary(&self) -> String {
        let (p50, p95, p99) = self.percentiles_ms();
        let max_ms = self.max_ms();
        format!("p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  max {max_ms:.3}")
    }

    /// The same as the `RESULT` line's fields.
    pub(crate) fn result_fields(&self) -> String {
        let (p50, p95, p99) = self.percentiles_ms();
        let max_ms = self.max_ms();
        format!("p50_ms={p50:.3} p95_ms={p95:.3} p99_ms={p99:.3} max_ms={max_ms:.3}")
    }

    /// p50, p95 and p99, in ms.
    pub(crate) fn percentiles_ms(&self) -> (f64, f64, f64) {
        (
            self.quantile_ms(0.50),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for us in [0, 1, 63, 64, 65, 100, 1_000, 12_345, 1 << 40] {
            let i = Histogram::index(us);
            assert!(Histogram::upper(i) >= us, "{us}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < us, "{us}");
            }
        }
        let h = Histogram::new();
        for us in 1..=100 {
            h.record(us * 1000);
        }
        let (p50, _, p99) = h.percentiles_ms();
        assert!((p50 - 50.0).abs() / 50.0 < 0.04, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.04, "{p99}");
        assert_eq!(h.max_ms(), 100.0);
    }
}
