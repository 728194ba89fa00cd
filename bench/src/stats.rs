//! Percentiles and summaries of measured durations: the one percentile rule every
//! bench reports with.

use std::time::Duration;

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measured durations, sorted once so that percentiles can be read off.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Ascending: every percentile reads this order.
    sorted: Vec<Duration>,
}

impl Samples {
    pub fn new(mut samples: Vec<Duration>) -> Samples {
        samples.sort_unstable();
        Samples { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile, `p` in `[0, 1]`: the smallest sample that at least
    /// `p` of all samples are at or below (the smallest for 0, the largest for 1). Zero
    /// when there are no samples.
    pub fn percentile(&self, p: f64) -> Duration {
        let n = self.sorted.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.sorted[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]
    }

    /// `p50 X ms, p99 Y ms, max Z ms`.
    pub fn summary_ms(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0))
        )
    }

    /// How many samples fall in each `bucket`-wide interval from zero (`[0, b)`,
    /// `[b, 2b)`, ...), up to the last interval that holds any.
    pub fn histogram(&self, bucket: Duration) -> Vec<u32> {
        let width = bucket.as_nanos().max(1);
        let mut counts = Vec::new();
        for s in &self.sorted {
            let i = (s.as_nanos() / width) as usize;
            if counts.len() <= i {
                counts.resize(i + 1, 0u32);
            }
            counts[i] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Samples {
        Samples::new(v.iter().map(|m| Duration::from_millis(*m)).collect())
    }

    #[test]
    fn percentiles_of_a_hundred_samples_are_their_ranks() {
        let s = millis(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(s.len(), 100);
        assert_eq!(s.percentile(0.0), Duration::from_millis(1));
        assert_eq!(s.percentile(0.5), Duration::from_millis(50));
        assert_eq!(s.percentile(0.99), Duration::from_millis(99));
        assert_eq!(s.percentile(1.0), Duration::from_millis(100));
    }

    #[test]
    fn a_percentile_between_ranks_takes_the_sample_above() {
        let s = millis(&[30, 10, 20]);
        assert_eq!(s.percentile(0.5), Duration::from_millis(20));
        assert_eq!(s.percentile(0.34), Duration::from_millis(20));
        assert_eq!(s.percentile(0.99), Duration::from_millis(30));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = millis(&[7]);
        for p in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(s.percentile(p), Duration::from_millis(7));
        }
    }

    #[test]
    fn no_samples_read_as_zero() {
        let s = Samples::default();
        assert_eq!(s.len(), 0);
        assert_eq!(s.percentile(0.5), Duration::ZERO);
        assert_eq!(s.summary_ms(), "p50 0.0 ms, p99 0.0 ms, max 0.0 ms");
        assert!(s.histogram(Duration::from_millis(100)).is_empty());
    }

    #[test]
    fn summary_names_the_median_the_p99_and_the_slowest() {
        let s = millis(&(1..=200).collect::<Vec<_>>());
        assert_eq!(s.summary_ms(), "p50 100.0 ms, p99 198.0 ms, max 200.0 ms");
    }

    #[test]
    fn histogram_counts_per_interval_with_empty_ones_between() {
        let s = millis(&[0, 99, 100, 250, 420]);
        assert_eq!(s.histogram(Duration::from_millis(100)), vec![2, 1, 1, 0, 1]);
    }

    #[test]
    fn ms_prints_fractions() {
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
