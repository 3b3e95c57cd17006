//! Percentiles of latency samples.

use std::fmt;

/// p50/p99/mean of a set of samples (milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Summary {
    /// Sorts `samples` and summarises them (all zero when empty).
    pub fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        if n == 0 {
            return Self {
                n,
                p50: 0.0,
                p99: 0.0,
                mean: 0.0,
            };
        }
        let at = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
        Self {
            n,
            p50: at(0.5),
            p99: at(0.99),
            mean: samples.iter().sum::<f64>() / n as f64,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:9.4} ms  p99 {:9.4} ms  mean {:9.4} ms  (n={})",
            self.p50, self.p99, self.mean, self.n
        )
    }
}
