//! The CPU of the servers under load, per process: the nodes of a cluster (`--server-pid`, one
//! or several) and the database behind them (`--db-pid`: PostgreSQL's postmaster and its
//! backends), read from `/proc` around each step.

use std::fmt::Write;

use super::Args;
use crate::procstat::{self, Cpu};

/// The processes whose CPU a run reports.
#[derive(Debug)]
pub struct Nodes {
    pids: Vec<u32>,
    db: Option<u32>,
}

/// One reading of every process (`None`: could not be read).
#[derive(Debug)]
pub struct Reading {
    nodes: Vec<Option<Cpu>>,
    db: Option<Cpu>,
}

impl Nodes {
    pub fn new(args: &Args) -> Self {
        Self {
            pids: args.server_pid.clone(),
            db: args.db_pid,
        }
    }

    pub fn read(&self) -> Reading {
        Reading {
            nodes: self
                .pids
                .iter()
                .map(|p| procstat::cpu(&p.to_string()))
                .collect(),
            db: self.db.and_then(procstat::tree_cpu),
        }
    }

    /// The nodes' CPU together (`None` without pids or when one cannot be read).
    pub fn server_cpu(&self) -> Option<Cpu> {
        if self.pids.is_empty() {
            return None;
        }
        self.read()
            .nodes
            .into_iter()
            .try_fold(Cpu::default(), |sum, c| Some(sum.plus(c?)))
    }

    /// CPU per delivery (microseconds) of every node, of all of them, of the database and of
    /// everything, since `before`; `None` when there is only one server and no database.
    pub fn line(&self, step: usize, before: &Reading, delivered: u64) -> Option<String> {
        if self.pids.len() < 2 && self.db.is_none() {
            return None;
        }
        let now = self.read();
        let per = |c: Option<Cpu>| {
            c.filter(|_| delivered > 0).map_or_else(
                || "n/a".to_owned(),
                |c| format!("{:.1}", c.total().as_secs_f64() * 1e6 / delivered as f64),
            )
        };
        let since = |a: Option<Cpu>, b: Option<Cpu>| a.zip(b).map(|(a, b)| a.since(b));
        let mut out = format!("#   step {step} CPU us/delivery:");
        let mut nodes = Some(Cpu::default());
        for (i, (a, b)) in now.nodes.iter().zip(&before.nodes).enumerate() {
            let c = since(*a, *b);
            nodes = nodes.zip(c).map(|(s, c)| s.plus(c));
            let _ = write!(out, " node{} {} |", i + 1, per(c));
        }
        let db = since(now.db, before.db);
        let _ = write!(
            out,
            " nodes {} | postgres {} | total {}",
            per(nodes),
            per(db),
            per(nodes.zip(db).map(|(n, d)| n.plus(d)))
        );
        Some(out)
    }
}
