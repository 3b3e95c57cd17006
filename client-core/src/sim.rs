//! A deterministic, seeded network of sans-IO cores for scenario tests and simulations.
//!
//! Each [`Sim`] owns several peers (a [`Core`] plus a [`MemoryStorage`] "disk"), links between
//! them, the frames in flight and the storage operations not yet executed. Every choice (which
//! frame or storage operation goes next, duplicates, delays) comes from one seeded RNG, so a seed
//! replays identically; [`Sim::log`] records what happened.
//!
//! ```
//! use concord::sim::Sim;
//! use automerge::{ROOT, transaction::Transactable};
//!
//! let mut sim = Sim::new(7);
//! let (a, b) = (sim.add_peer("a"), sim.add_peer("b"));
//! let doc = sim.create(a).unwrap();
//! sim.change(a, doc, |tx| tx.put(ROOT, "k", 1)).unwrap();
//! sim.connect(a, b);
//! sim.run_until_quiescent(10_000).unwrap();
//! assert_eq!(sim.heads(a, doc), sim.heads(b, doc));
//! ```

use std::collections::VecDeque;
use std::fmt::Display;

use automerge::transaction::Transaction;
use automerge::{AutoSerde, ChangeHash};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::{Core, CoreConfig, CoreError, Effect, Event, OpId, StorageOp};
use crate::id::{ConnId, DocumentId, PeerId, StorageId};
use crate::storage::MemoryStorage;

/// Faults the network injects. All default to off.
#[derive(Debug, Clone, Default)]
pub struct Chaos {
    /// Deliver frames in random order, also within one link.
    pub reorder: bool,
    /// Percent of deliveries that are duplicated (the copy stays in flight).
    pub duplicate_pct: u32,
    /// Percent of deliveries that are "dropped" and retried later (re-queued at the back).
    pub retry_pct: u32,
    /// Execute storage operations at random moments instead of at once.
    pub async_storage: bool,
}

/// A peer of the simulation.
#[derive(Debug)]
pub struct SimPeer {
    /// Its name in logs.
    pub name: String,
    /// The engine.
    pub core: Core,
    /// Its durable storage ("disk"): survives [`Sim::crash`].
    pub disk: MemoryStorage,
    config: CoreConfig,
    pending_storage: VecDeque<(OpId, StorageOp)>,
    /// Events the core emitted, in order.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    a: usize,
    a_conn: ConnId,
    b: usize,
    b_conn: ConnId,
    up: bool,
    /// A region link (`b` verified `a` as a region server).
    region: bool,
}

#[derive(Debug, Clone)]
struct Packet {
    link: usize,
    to: usize,
    conn: ConnId,
    bytes: Vec<u8>,
}

/// The simulation did not go quiet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not quiescent after {steps} steps ({in_flight} frames in flight)")]
pub struct NotQuiescent {
    /// Steps taken.
    pub steps: usize,
    /// Frames still in flight.
    pub in_flight: usize,
}

/// A seeded network of peers.
#[derive(Debug)]
pub struct Sim {
    rng: StdRng,
    now: u64,
    next_conn: u64,
    peers: Vec<SimPeer>,
    links: Vec<Link>,
    in_flight: Vec<Packet>,
    /// Frames held back: (link, receiving peer); see [`Sim::hold`].
    held: Vec<(usize, usize)>,
    /// Faults to inject.
    pub chaos: Chaos,
    log: Vec<String>,
    /// Frames delivered so far.
    pub delivered: u64,
}

impl Sim {
    /// An empty network whose every random choice derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            next_conn: 0,
            peers: Vec::new(),
            links: Vec::new(),
            in_flight: Vec::new(),
            held: Vec::new(),
            chaos: Chaos::default(),
            log: Vec::new(),
            delivered: 0,
        }
    }

    /// Adds a client-policy peer with its own disk. Returns its index.
    pub fn add_peer(&mut self, name: &str) -> usize {
        let seed = self.rng.random();
        let config = CoreConfig::new(
            PeerId::from(name),
            Some(StorageId::from(format!("{name}-store"))),
            seed,
        );
        self.add_peer_with(name, config)
    }

    /// Adds a peer with a custom configuration.
    pub fn add_peer_with(&mut self, name: &str, config: CoreConfig) -> usize {
        self.peers.push(SimPeer {
            name: name.to_owned(),
            core: Core::new(config.clone()),
            disk: MemoryStorage::new(),
            config,
            pending_storage: VecDeque::new(),
            events: Vec::new(),
        });
        self.peers.len() - 1
    }

    /// Adds a region server (server policy, anti-entropy every `anti_entropy_ms`).
    pub fn add_region(&mut self, name: &str, anti_entropy_ms: u64) -> usize {
        let seed = self.rng.random();
        let mut region = crate::core::RegionConfig::new(name);
        region.anti_entropy_ms = anti_entropy_ms;
        let config = CoreConfig::new(
            PeerId::from(name),
            Some(StorageId::from(format!("{name}-store"))),
            seed,
        )
        .with_policy(std::sync::Arc::new(crate::core::ServerPolicy))
        .with_region(region)
        .with_defer_apply(Self::server_defer());
        let config = crate::core::CoreConfig {
            retain_deleted: true,
            ..config
        };
        self.add_peer_with(name, config)
    }

    /// How simulated servers defer applying changes: on every document, applied 64 at a time
    /// or after 500 ms without changes, so that simulations exercise the deferred path.
    pub fn server_defer() -> crate::core::DeferApply {
        crate::core::DeferApply {
            min_ops: 0,
            max_pending: 64,
            idle_ms: 500,
        }
    }

    /// `doc` on peer `i` with every received change applied (see [`Core::materialize`]).
    pub fn document(&mut self, i: usize, doc: DocumentId) -> Option<&automerge::Automerge> {
        let core = &mut self.peers[i].core;
        core.materialize(&doc).ok()?;
        core.document(&doc)
    }

    /// The peer at `i`.
    pub fn peer(&self, i: usize) -> &SimPeer {
        &self.peers[i]
    }

    /// The peer at `i`, mutably; call [`Sim::drain`] after changing its core directly.
    pub fn peer_mut(&mut self, i: usize) -> &mut SimPeer {
        &mut self.peers[i]
    }

    /// Current simulated time (milliseconds).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// What happened, one line per delivery or fault.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// `a` dials `b` (a client connecting to a server). Returns the link index.
    pub fn connect(&mut self, a: usize, b: usize) -> usize {
        self.connect_with(a, b, false)
    }

    /// Region server `a` dials region server `b`, which verifies `a` as a region link.
    pub fn connect_region(&mut self, a: usize, b: usize) -> usize {
        self.connect_with(a, b, true)
    }

    /// `a` dials `b`, whose transport verified `grant` for it (a client with a token).
    pub fn connect_with_grant(
        &mut self,
        a: usize,
        b: usize,
        grant: Option<crate::core::Grant>,
    ) -> usize {
        self.dial(a, b, grant, false)
    }

    fn connect_with(&mut self, a: usize, b: usize, region: bool) -> usize {
        let grant = region.then(|| crate::core::Grant::region(self.peers[a].name.clone()));
        self.dial(a, b, grant, region)
    }

    fn dial(
        &mut self,
        a: usize,
        b: usize,
        grant: Option<crate::core::Grant>,
        region: bool,
    ) -> usize {
        let (a_conn, b_conn) = (self.conn(), self.conn());
        self.links.push(Link {
            a,
            a_conn,
            b,
            b_conn,
            up: true,
            region,
        });
        let now = self.now;
        self.peers[b]
            .core
            .handle_accept_with_grant(now, b_conn, grant);
        self.peers[a].core.handle_connect(now, a_conn);
        self.log.push(format!(
            "t={now} connect {}->{}",
            self.peers[a].name, self.peers[b].name
        ));
        self.drain();
        self.links.len() - 1
    }

    /// Cuts a link: both ends see a disconnect and frames in flight on it are lost.
    pub fn disconnect(&mut self, link: usize) {
        let l = self.links[link];
        if !l.up {
            return;
        }
        self.links[link].up = false;
        self.in_flight.retain(|p| p.link != link);
        let now = self.now;
        self.peers[l.a].core.handle_disconnect(now, l.a_conn);
        self.peers[l.b].core.handle_disconnect(now, l.b_conn);
        self.log.push(format!("t={now} disconnect link {link}"));
        self.drain();
    }

    /// Crashes peer `i`: storage operations not yet executed are lost (its disk rolls back to the
    /// last commit), its links drop, and it restarts from its disk with a fresh core.
    pub fn crash(&mut self, i: usize) {
        let links: Vec<usize> = (0..self.links.len())
            .filter(|l| self.links[*l].up && (self.links[*l].a == i || self.links[*l].b == i))
            .collect();
        for l in links {
            self.disconnect(l);
        }
        let p = &mut self.peers[i];
        p.pending_storage.clear();
        let mut config = p.config.clone();
        config.seed = self.rng.random();
        p.core = Core::new(config);
        // What a driver does at start-up.
        p.core
            .seed_tombstones(p.disk.tombstones_sync().unwrap_or_default());
        if p.core.is_region_server() {
            let index = p.disk.heads_index_sync().unwrap_or_default();
            p.core.seed_heads_index(index);
        }
        self.log
            .push(format!("t={} crash {}", self.now, self.peers[i].name));
    }

    /// Creates a document on peer `i` with a random id.
    pub fn create(&mut self, i: usize) -> Result<DocumentId, CoreError> {
        let doc = DocumentId::from_bytes(self.rng.random());
        let now = self.now;
        self.peers[i].core.create(now, doc)?;
        self.drain();
        Ok(doc)
    }

    /// Applies a local change on peer `i` (loading the document from its disk if needed).
    pub fn change<R, E: Display>(
        &mut self,
        i: usize,
        doc: DocumentId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, CoreError> {
        self.ensure_loaded(i, doc);
        let now = self.now;
        let r = self.peers[i].core.change(now, &doc, f).map(|(r, _)| r);
        self.drain();
        r
    }

    /// Deletes `doc` on peer `i` (see [`Core::delete`]), as that peer's id.
    pub fn delete(&mut self, i: usize, doc: DocumentId) -> Result<(), CoreError> {
        let now = self.now;
        let by = self.peers[i].name.clone();
        self.peers[i].core.delete(now, doc, by, false)?;
        self.drain();
        Ok(())
    }

    /// Makes peer `i` look for `doc` (storage, then peers).
    pub fn find(&mut self, i: usize, doc: DocumentId) {
        let now = self.now;
        let _ = self.peers[i].core.find(now, doc);
        self.drain();
    }

    fn ensure_loaded(&mut self, i: usize, doc: DocumentId) {
        if self.peers[i].core.document(&doc).is_none() {
            let now = self.now;
            self.peers[i].core.load(now, doc);
            self.drain();
            self.flush_storage(i);
        }
    }

    /// Heads of `doc` on peer `i` (empty when it does not have it).
    pub fn heads(&self, i: usize, doc: DocumentId) -> Vec<ChangeHash> {
        self.peers[i].core.heads(&doc).unwrap_or_default()
    }

    /// The document on peer `i` as JSON (`null` when absent).
    pub fn json(&mut self, i: usize, doc: DocumentId) -> serde_json::Value {
        self.document(i, doc)
            .and_then(|d| serde_json::to_value(AutoSerde::from(d)).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Moves every peer's queued effects into the network and storage queues.
    pub fn drain(&mut self) {
        let now = self.now;
        loop {
            let mut progressed = false;
            for i in 0..self.peers.len() {
                while let Some(effect) = self.peers[i].core.poll_effect() {
                    progressed = true;
                    self.apply_effect(i, effect, now);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn apply_effect(&mut self, i: usize, effect: Effect, now: u64) {
        match effect {
            Effect::Send { conn, bytes } => {
                if let Some((link, to, to_conn)) = self.route(i, conn) {
                    self.in_flight.push(Packet {
                        link,
                        to,
                        conn: to_conn,
                        bytes,
                    });
                }
            }
            Effect::Close { conn, reason } => {
                if let Some((link, _, _)) = self.route(i, conn) {
                    self.log.push(format!(
                        "t={now} {} closes: {}",
                        self.peers[i].name, reason.reason
                    ));
                    self.disconnect(link);
                }
            }
            Effect::Storage { id, op } => {
                self.peers[i].pending_storage.push_back((id, op));
                if !self.chaos.async_storage {
                    self.flush_storage(i);
                }
            }
            Effect::Event(e) => self.peers[i].events.push(e),
        }
    }

    fn route(&self, from: usize, conn: ConnId) -> Option<(usize, usize, ConnId)> {
        self.links.iter().enumerate().find_map(|(idx, l)| {
            if !l.up {
                None
            } else if l.a == from && l.a_conn == conn {
                Some((idx, l.b, l.b_conn))
            } else if l.b == from && l.b_conn == conn {
                Some((idx, l.a, l.a_conn))
            } else {
                None
            }
        })
    }

    fn exec_storage(&mut self, i: usize) -> bool {
        let Some((id, op)) = self.peers[i].pending_storage.pop_front() else {
            return false;
        };
        let reply = op.run_on(&self.peers[i].disk);
        let now = self.now;
        self.peers[i].core.handle_storage_result(now, id, reply);
        true
    }

    /// Executes all of peer `i`'s pending storage operations.
    pub fn flush_storage(&mut self, i: usize) {
        while self.exec_storage(i) {
            let mut effects = Vec::new();
            while let Some(e) = self.peers[i].core.poll_effect() {
                effects.push(e);
            }
            let now = self.now;
            let was_async = self.chaos.async_storage;
            self.chaos.async_storage = true;
            for e in effects {
                self.apply_effect(i, e, now);
            }
            self.chaos.async_storage = was_async;
        }
        self.drain();
    }

    /// Advances time by `ms` and ticks every core.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        for p in &mut self.peers {
            p.core.handle_tick(now);
        }
        self.drain();
    }

    /// Holds back the frames travelling on `link` towards peer `to`: they stay in flight, in
    /// order, undelivered (a slow or stalled direction) until [`Sim::release`].
    pub fn hold(&mut self, link: usize, to: usize) {
        self.held.push((link, to));
    }

    /// Lets the frames held on `link` go (see [`Sim::hold`]).
    pub fn release(&mut self, link: usize) {
        self.held.retain(|(l, _)| *l != link);
    }

    fn deliverable(&self, p: &Packet) -> bool {
        !self.held.contains(&(p.link, p.to))
    }

    /// Performs one random step (a delivery or a storage completion). Returns false when idle
    /// (held frames do not count).
    pub fn step(&mut self) -> bool {
        self.drain();
        let storage_peers: Vec<usize> = (0..self.peers.len())
            .filter(|i| !self.peers[*i].pending_storage.is_empty())
            .collect();
        let frames: Vec<usize> = (0..self.in_flight.len())
            .filter(|i| self.deliverable(&self.in_flight[*i]))
            .collect();
        let choices = frames.len() + storage_peers.len();
        if choices == 0 {
            return false;
        }
        self.now += 1;
        let pick = self.rng.random_range(0..choices);
        if pick >= frames.len() {
            let i = storage_peers[pick - frames.len()];
            self.log.push(format!(
                "t={} storage op of {}",
                self.now, self.peers[i].name
            ));
            self.exec_storage(i);
            self.drain();
            return true;
        }
        // Without reordering, deliver the oldest (deliverable) frame of the chosen frame's link.
        let pick = frames[pick];
        let idx = if self.chaos.reorder {
            pick
        } else {
            let link = self.in_flight[pick].link;
            self.in_flight
                .iter()
                .position(|p| p.link == link && self.deliverable(p))
                .unwrap_or(pick)
        };
        if self.rng.random_range(0..100) < self.chaos.retry_pct {
            let p = self.in_flight.remove(idx);
            self.log
                .push(format!("t={} retry later on link {}", self.now, p.link));
            self.in_flight.push(p);
            return true;
        }
        let packet = if self.rng.random_range(0..100) < self.chaos.duplicate_pct {
            self.log.push(format!(
                "t={} duplicate on link {}",
                self.now, self.in_flight[idx].link
            ));
            self.in_flight[idx].clone()
        } else {
            self.in_flight.remove(idx)
        };
        self.delivered += 1;
        self.log.push(format!(
            "t={} deliver to {} on link {}: {}",
            self.now,
            self.peers[packet.to].name,
            packet.link,
            crate::wire::summarize(&packet.bytes)
        ));
        let now = self.now;
        self.peers[packet.to]
            .core
            .handle_message(now, packet.conn, &packet.bytes);
        self.drain();
        true
    }

    /// Steps until nothing is in flight and no storage operation is pending.
    pub fn run_until_quiescent(&mut self, max_steps: usize) -> Result<usize, NotQuiescent> {
        for steps in 0..max_steps {
            if !self.step() {
                return Ok(steps);
            }
        }
        Err(NotQuiescent {
            steps: max_steps,
            in_flight: self.in_flight.len(),
        })
    }

    /// Whether link `link` is up.
    pub fn link_up(&self, link: usize) -> bool {
        self.links.get(link).is_some_and(|l| l.up)
    }

    /// Re-dials a link that is down (same direction and kind). Returns the new link index.
    pub fn redial(&mut self, link: usize) -> usize {
        let Link { a, b, region, .. } = self.links[link];
        self.connect_with(a, b, region)
    }

    /// Drops and re-dials every link that is up, so sync restarts from persisted state (what a
    /// real reconnect does).
    pub fn reconnect_all(&mut self) {
        let up: Vec<usize> = (0..self.links.len())
            .filter(|l| self.links[*l].up)
            .collect();
        for l in up {
            self.disconnect(l);
            self.redial(l);
        }
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}
