//! What the load generator records: the intended send time of every change, which changes each
//! reader has seen, and one HDR histogram of writer-to-reader latency per step.
//!
//! Latency is measured from the time a change was *due* (its place in the fixed-rate
//! schedule), not from when the writer got round to making it: a slow server (or a busy
//! generator) cannot hide its tail by slowing the load down (no coordinated omission).
//! A delivery still missing when its step is closed counts with the time waited so far, a lower
//! bound of its latency.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The schedule slot of one change.
#[derive(Debug, Clone, Copy)]
struct Intended {
    /// Due time, microseconds after the recorder's epoch.
    at_us: u64,
    /// The step it belongs to.
    step: usize,
}

/// How far one reader has got: it has seen every change up to `last` of document `doc`.
#[derive(Debug, Clone, Copy)]
struct Progress {
    doc: usize,
    last: u64,
    /// The reader sits on another server than its document's writer.
    cross: bool,
}

/// One step's latencies and counts.
#[derive(Debug)]
struct StepRec {
    hist: Histogram<u64>,
    /// The same latencies split by where the reader sits: same node as the writer, another.
    by_node: [Histogram<u64>; 2],
    written: u64,
    expected: u64,
    delivered: u64,
    missing: u64,
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    /// Per document, per change (seq 1 at index 0).
    intended: Vec<Vec<Intended>>,
    readers_of: Vec<u64>,
    progress: Vec<Progress>,
    steps: Vec<StepRec>,
    delivered_total: u64,
}

/// Shared by the writers, the readers and the driver of the run.
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// A closed step's latency distribution and counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSummary {
    /// Changes written in the step.
    pub written: u64,
    /// Deliveries the step owes (changes × readers of their document).
    pub expected: u64,
    /// Deliveries seen before the step was closed.
    pub delivered: u64,
    /// Deliveries not seen by then (counted in the percentiles with the time waited so far).
    pub missing: u64,
    /// Latency percentiles in milliseconds: p50, p99, p99.9, max.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// 1 µs .. 1 h, 3 significant digits.
fn histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
}

impl Recorder {
    /// A recorder for `readers_of.len()` documents; reader `r` of the run reads document
    /// `reader_docs[r]`.
    pub fn new(readers_of: Vec<u64>, reader_docs: &[usize]) -> Self {
        Self {
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                intended: vec![Vec::new(); readers_of.len()],
                readers_of,
                progress: reader_docs
                    .iter()
                    .map(|&doc| Progress {
                        doc,
                        last: 0,
                        cross: false,
                    })
                    .collect(),
                steps: Vec::new(),
                delivered_total: 0,
            }),
        }
    }

    /// Marks the readers whose `cross[r]` is true as cross-node (their latencies are also
    /// reported apart: [`Recorder::split`]).
    pub fn with_cross(self, cross: &[bool]) -> Self {
        {
            let mut g = self.lock();
            for (p, &c) in g.progress.iter_mut().zip(cross) {
                p.cross = c;
            }
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking task cannot leave the counters half-updated in a way that matters here.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Opens the next step; returns its index.
    pub fn open_step(&self) -> Result<usize, hdrhistogram::CreationError> {
        let hist = histogram()?;
        let by_node = [histogram()?, histogram()?];
        let mut g = self.lock();
        g.steps.push(StepRec {
            hist,
            by_node,
            written: 0,
            expected: 0,
            delivered: 0,
            missing: 0,
            closed: false,
        });
        Ok(g.steps.len() - 1)
    }

    /// A writer of `doc` is about to make the change due at `due`, in `step`: returns its
    /// sequence number (the length of the document's text once it is applied).
    pub fn intend(&self, doc: usize, due: Instant, step: usize) -> u64 {
        let at_us = self.micros(due);
        let mut g = self.lock();
        let readers = g.readers_of.get(doc).copied().unwrap_or(0);
        if let Some(s) = g.steps.get_mut(step) {
            s.written += 1;
            s.expected += readers;
        }
        let list = &mut g.intended[doc];
        list.push(Intended { at_us, step });
        list.len() as u64
    }

    /// Reader `reader` now sees the first `n` changes of its document (at `now`).
    pub fn seen(&self, reader: usize, n: u64, now: Instant) {
        let now_us = self.micros(now);
        let mut g = self.lock();
        let Inner {
            intended,
            progress,
            steps,
            delivered_total,
            ..
        } = &mut *g;
        let Some(p) = progress.get_mut(reader) else {
            return;
        };
        let list = &intended[p.doc];
        let n = n.min(list.len() as u64);
        for seq in p.last + 1..=n {
            let it = list[(seq - 1) as usize];
            let s = &mut steps[it.step];
            if !s.closed {
                let us = now_us.saturating_sub(it.at_us).max(1);
                s.hist.saturating_record(us);
                s.by_node[usize::from(p.cross)].saturating_record(us);
                s.delivered += 1;
                *delivered_total += 1;
            }
        }
        p.last = p.last.max(n);
    }

    /// Every delivery ever recorded (for throughput over a window).
    pub fn delivered_total(&self) -> u64 {
        self.lock().delivered_total
    }

    /// Whether every delivery `step` owes has been seen.
    pub fn step_complete(&self, step: usize) -> bool {
        let g = self.lock();
        g.steps
            .get(step)
            .is_none_or(|s| s.delivered + s.missing >= s.expected)
    }

    /// Closes `step` at `now`: deliveries still missing count with the time waited so far.
    pub fn close_step(&self, step: usize, now: Instant) -> StepSummary {
        let now_us = self.micros(now);
        let mut g = self.lock();
        let Inner {
            intended,
            progress,
            steps,
            ..
        } = &mut *g;
        let s = &mut steps[step];
        for p in progress.iter() {
            for it in intended[p.doc].iter().skip(p.last as usize) {
                if it.step == step && !s.closed {
                    let us = now_us.saturating_sub(it.at_us).max(1);
                    s.hist.saturating_record(us);
                    s.by_node[usize::from(p.cross)].saturating_record(us);
                    s.missing += 1;
                }
            }
        }
        s.closed = true;
        let ms = |q: f64| Duration::from_micros(s.hist.value_at_quantile(q)).as_secs_f64() * 1000.0;
        StepSummary {
            written: s.written,
            expected: s.expected,
            delivered: s.delivered,
            missing: s.missing,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: Duration::from_micros(s.hist.max()).as_secs_f64() * 1000.0,
        }
    }
}

impl Recorder {
    /// A closed step's latencies split into same-node and cross-node readers (count, p50, p99),
    /// as one printable line; `None` when no reader is cross-node.
    pub fn split(&self, step: usize) -> Option<String> {
        let g = self.lock();
        if !g.progress.iter().any(|p| p.cross) {
            return None;
        }
        let s = g.steps.get(step)?;
        let part = |h: &Histogram<u64>| {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            format!(
                "{} deliveries p50 {:.2} ms p99 {:.2} ms",
                h.len(),
                ms(0.5),
                ms(0.99)
            )
        };
        Some(format!(
            "#   step {step} same-node: {} | cross-node: {}",
            part(&s.by_node[0]),
            part(&s.by_node[1])
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_due_time_and_missing_deliveries_count_as_waited() {
        // One document, two readers (0 and 1).
        let r = Recorder::new(vec![2], &[0, 0]);
        let step = r.open_step().unwrap();
        let t0 = r.epoch + Duration::from_millis(10);
        assert_eq!(r.intend(0, t0, step), 1);
        assert_eq!(r.intend(0, t0 + Duration::from_millis(10), step), 2);
        // Reader 0 sees both changes 5 ms after the second was due; reader 1 sees only the first.
        r.seen(0, 2, t0 + Duration::from_millis(15));
        r.seen(1, 1, t0 + Duration::from_millis(1));
        r.seen(1, 1, t0 + Duration::from_millis(2)); // nothing new: not counted twice
        assert!(!r.step_complete(step));
        assert_eq!(r.delivered_total(), 3);
        let s = r.close_step(step, t0 + Duration::from_millis(110));
        assert_eq!(
            (s.written, s.expected, s.delivered, s.missing),
            (2, 4, 3, 1)
        );
        // Latencies: 15, 5, 1 ms delivered; 100 ms waited for the missing one.
        assert!((s.max_ms - 100.0).abs() < 0.5, "{s:?}");
        assert!((s.p50_ms - 5.0).abs() < 0.1, "{s:?}");
        // A late arrival after the close is not recorded again.
        r.seen(1, 2, t0 + Duration::from_millis(200));
        assert_eq!(r.delivered_total(), 3);
    }

    #[test]
    fn cross_node_readers_are_reported_apart() {
        // One document, reader 0 on the writer's node, reader 1 on another.
        let r = Recorder::new(vec![2], &[0, 0]).with_cross(&[false, true]);
        let step = r.open_step().unwrap();
        let t0 = r.epoch + Duration::from_millis(10);
        r.intend(0, t0, step);
        r.seen(0, 1, t0 + Duration::from_millis(2));
        r.seen(1, 1, t0 + Duration::from_millis(8));
        r.close_step(step, t0 + Duration::from_millis(20));
        let line = r.split(step).unwrap();
        assert!(
            line.contains("same-node: 1 deliveries p50 2.00 ms")
                && line.contains("cross-node: 1 deliveries p50 8.00 ms"),
            "{line}"
        );
        // Without cross-node readers there is nothing to split.
        let plain = Recorder::new(vec![1], &[0]);
        let step = plain.open_step().unwrap();
        assert_eq!(plain.split(step), None);
    }
}
