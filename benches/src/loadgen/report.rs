//! One row per step of a load-generator run (printed, and appended as JSON lines), and the
//! comparison of several runs (`concord-bench loadgen-compare`): the ratios of issue 16's
//! targets, computed from runs of the same load against each server.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::record::StepSummary;
use crate::procstat::Cpu;

/// One step of one run, flat (the JSON line format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub server: String,
    pub step: usize,
    pub docs: usize,
    pub readers: usize,
    /// Offered keystrokes (changes) per second, all writers together.
    pub rate: f64,
    /// Seconds of offered load.
    pub secs: f64,
    /// Deliveries the readers saw during the step's load window.
    pub delivered_in_window: u64,
    pub written: u64,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Server CPU over the step and its drain (seconds), when its pid was given.
    pub server_user_s: Option<f64>,
    pub server_sys_s: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub server_rss_before_bytes: Option<u64>,
    /// The generator's CPU during the load window (seconds).
    pub gen_cpu_s: Option<f64>,
    /// Clients that had failed by the end of the step.
    pub failed: u64,
}

/// What a step measured, before it is flattened.
#[derive(Debug)]
pub struct StepInput {
    pub server: String,
    pub step: usize,
    pub docs: usize,
    pub readers: usize,
    pub rate: f64,
    pub secs: f64,
    pub delivered_in_window: u64,
    pub summary: StepSummary,
    pub server_cpu: Option<Cpu>,
    pub server_rss: Option<u64>,
    pub server_rss_before: Option<u64>,
    pub gen_cpu_window: Option<Cpu>,
    pub failed: u64,
}

impl From<StepInput> for StepReport {
    fn from(i: StepInput) -> Self {
        let s = i.summary;
        Self {
            server: i.server,
            step: i.step,
            docs: i.docs,
            readers: i.readers,
            rate: i.rate,
            secs: i.secs,
            delivered_in_window: i.delivered_in_window,
            written: s.written,
            expected: s.expected,
            delivered: s.delivered,
            missing: s.missing,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            p999_ms: s.p999_ms,
            max_ms: s.max_ms,
            server_user_s: i.server_cpu.map(|c| c.user.as_secs_f64()),
            server_sys_s: i.server_cpu.map(|c| c.system.as_secs_f64()),
            server_rss_bytes: i.server_rss,
            server_rss_before_bytes: i.server_rss_before,
            gen_cpu_s: i.gen_cpu_window.map(|c| c.total().as_secs_f64()),
            failed: i.failed,
        }
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

impl StepReport {
    /// Offered deliveries per second (keystrokes × readers).
    pub fn offered_per_sec(&self) -> f64 {
        self.rate * self.readers as f64
    }

    /// Deliveries per second the readers saw during the load window.
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered_in_window as f64 / self.secs
    }

    /// Server CPU (user + system) per delivery, microseconds.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.server_user_s? + self.server_sys_s?;
        (self.delivered > 0).then(|| cpu * 1e6 / self.delivered as f64)
    }

    /// The kernel's share of the server's CPU (socket writes, fsync).
    pub fn server_sys_share(&self) -> Option<f64> {
        let total = self.server_user_s? + self.server_sys_s?;
        (total > 0.0).then(|| self.server_sys_s.unwrap_or(0.0) / total)
    }

    /// Server RSS growth per document over the run, bytes.
    pub fn rss_per_doc(&self) -> Option<f64> {
        let grown = self
            .server_rss_bytes?
            .saturating_sub(self.server_rss_before_bytes?);
        Some(grown as f64 / self.docs as f64)
    }

    /// The generator's CPU as a fraction of one core during the load window.
    pub fn gen_core_share(&self) -> Option<f64> {
        Some(self.gen_cpu_s? / self.secs)
    }

    /// Whether the step kept up: every delivery arrived and the p99 is within `p99_ms`.
    pub fn within(&self, p99_ms: f64) -> bool {
        self.missing == 0 && self.failed == 0 && self.p99_ms <= p99_ms
    }

    pub fn header() -> String {
        "step | chg/s offered | dlv/s offered | dlv/s seen | missing | p50 ms | p99 ms | p99.9 ms | max ms | server us/dlv | sys share | server RSS MiB | gen core".to_owned()
    }

    pub fn line(&self) -> String {
        format!(
            "{:4} | {:13.0} | {:13.0} | {:10.0} | {:7} | {:6.2} | {:6.2} | {:8.2} | {:6.1} | {:>13} | {:>9} | {:>13} | {:>8}",
            self.step,
            self.rate,
            self.offered_per_sec(),
            self.delivered_per_sec(),
            self.missing,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            opt(self.server_us_per_delivery(), 1),
            opt(self.server_sys_share(), 2),
            opt(
                self.server_rss_bytes.map(|b| b as f64 / (1 << 20) as f64),
                1
            ),
            opt(self.gen_core_share(), 2),
        )
    }

    pub fn append_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }
}

/// The step with the most deliveries per second among those within `p99_ms`.
pub fn saturation(rows: &[StepReport], p99_ms: f64) -> Option<&StepReport> {
    rows.iter()
        .filter(|r| r.within(p99_ms))
        .max_by(|a, b| a.delivered_per_sec().total_cmp(&b.delivered_per_sec()))
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// JSON-lines files written by `loadgen --json` (any number of runs; rows are grouped by
    /// their `server` name). Expected names: concord, automerge-repo, samod, relay, and the
    /// fixed-rate runs concord-half and relay-half.
    files: Vec<PathBuf>,
    /// The p99 bound of "saturation" (milliseconds).
    #[arg(long, default_value_t = 100.0)]
    p99_ms: f64,
    /// Print only half of this server's saturation rate (keystrokes per second; half of its
    /// first step's when no step kept up), for a fixed-rate run.
    #[arg(long)]
    half_rate_of: Option<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_owned(),
    }
}

/// `concord-bench loadgen-compare`: the targets of issue 16 as ratios of the runs given.
pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let mut by: BTreeMap<String, Vec<StepReport>> = BTreeMap::new();
    for f in &args.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: StepReport =
                serde_json::from_str(line).with_context(|| format!("a line of {}", f.display()))?;
            by.entry(row.server.clone()).or_default().push(row);
        }
    }
    let p = args.p99_ms;
    if let Some(name) = &args.half_rate_of {
        let rows = by
            .get(name)
            .with_context(|| format!("no run named {name}"))?;
        let rate = saturation(rows, p).or(rows.first()).map_or(0.0, |r| r.rate);
        println!("{:.0}", (rate / 2.0).max(1.0));
        return Ok(());
    }
    println!(
        "server         | saturation dlv/s (p99 <= {p} ms) | at step | server us/dlv there | gen core there | RSS/doc KB"
    );
    let mut sat = BTreeMap::new();
    for (name, rows) in &by {
        let best = saturation(rows, p);
        sat.insert(name.as_str(), best.map(StepReport::delivered_per_sec));
        let last = rows.last();
        println!(
            "{name:14} | {:>31} | {:>7} | {:>19} | {:>14} | {:>10}",
            opt(best.map(StepReport::delivered_per_sec), 0),
            best.map_or_else(|| "none".to_owned(), |b| b.step.to_string()),
            opt(best.and_then(StepReport::server_us_per_delivery), 1),
            opt(best.and_then(StepReport::gen_core_share), 2),
            opt(
                last.and_then(StepReport::rss_per_doc).map(|b| b / 1000.0),
                1
            ),
        );
    }
    // CPU per delivery at the same offered rate: every rate that at least two servers ran.
    let names: Vec<&str> = ["concord", "automerge-repo", "samod", "relay"]
        .into_iter()
        .filter(|n| by.contains_key(*n))
        .collect();
    let mut rates: Vec<f64> = names.iter().flat_map(|n| &by[*n]).map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    println!(
        "\nserver CPU per delivery (us) at the same offered rate (keystrokes/s; * = p99 over {p} ms or deliveries missing):"
    );
    println!(
        "rate     | {}",
        names
            .iter()
            .map(|n| format!("{n:>16}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let at = |name: &str, rate: f64| {
        by.get(name)
            .and_then(|rows| rows.iter().find(|r| r.rate == rate))
    };
    for &rate in &rates {
        let cells: Vec<String> = names
            .iter()
            .map(|n| match at(n, rate) {
                Some(r) => format!(
                    "{:>15}{}",
                    opt(r.server_us_per_delivery(), 1),
                    if r.within(p) { " " } else { "*" }
                ),
                None => format!("{:>16}", "-"),
            })
            .collect();
        println!("{rate:8.0} | {}", cells.join(" | "));
    }
    // Ratios at the highest rate where concord and the reference both kept up.
    let cpu_ratio = |reference: &str| -> (String, String) {
        let common = rates.iter().rev().find(|&&r| {
            at("concord", r).is_some_and(|c| c.within(p))
                && at(reference, r).is_some_and(|x| x.within(p))
        });
        match common {
            Some(&r) => (
                ratio(
                    at(reference, r).and_then(StepReport::server_us_per_delivery),
                    at("concord", r).and_then(StepReport::server_us_per_delivery),
                ),
                format!("{r:.0}/s"),
            ),
            None => (
                "n/a".to_owned(),
                "no common rate within the p99 bound".to_owned(),
            ),
        }
    };
    println!("\ntargets (issue 16):");
    let (node_cpu, node_at) = cpu_ratio("automerge-repo");
    println!(
        "- server CPU per delivery, automerge-repo / concord: {node_cpu} at {node_at} (target >= 10)"
    );
    let (samod_cpu, samod_at) = cpu_ratio("samod");
    println!("- server CPU per delivery, samod / concord: {samod_cpu} at {samod_at} (target > 1)");
    let s = |n: &str| sat.get(n).copied().flatten();
    println!(
        "- saturation, concord / automerge-repo: {} (target >= 10); concord / samod: {} (target >= 1)",
        ratio(s("concord"), s("automerge-repo")),
        ratio(s("concord"), s("samod"))
    );
    let half = |n: &str| by.get(n).and_then(|rows| rows.first());
    match (half("concord-half"), half("relay-half")) {
        (Some(c), Some(r)) => println!(
            "- p99 at {:.0} keystrokes/s (half of concord's saturation), concord / relay: {:.2} ms / {:.2} ms = {} (target <= 5)",
            c.rate,
            c.p99_ms,
            r.p99_ms,
            ratio(Some(c.p99_ms), Some(r.p99_ms))
        ),
        _ => println!(
            "- p99 at half of concord's saturation: not run (needs concord-half and relay-half)"
        ),
    }
    let rss = |n: &str| {
        by.get(n)
            .and_then(|rows| rows.last())
            .and_then(StepReport::rss_per_doc)
    };
    println!(
        "- server RSS growth per active document (with its 1 + readers connections), concord / automerge-repo: {} (target <= 0.1)",
        ratio(rss("concord"), rss("automerge-repo"))
    );
    Ok(())
}
