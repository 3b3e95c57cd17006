//! Scenarios: two datacenters replicating one document with the Automerge sync protocol, and a
//! conflict arriving over a real WebSocket.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transaction;
use automerge::{ActorId, AutoSerde, Automerge};
use concord::core::ServerPolicy;
use concord::path::{self, DocPath};
use concord::policy::{self, Hlc, Policy, PolicyError, Schema};
use concord::storage::MemoryStorage;
use concord::{Repo, RepoConfig};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use super::T0;

/// A datacenter: its copy of the document, its clock, its clock's error, and its sync state with
/// the other datacenter.
pub(crate) struct Datacenter {
    pub(crate) name: &'static str,
    pub(crate) doc: Automerge,
    pub(crate) hlc: Hlc,
    pub(crate) skew_ms: i64,
    pub(crate) peer: sync::State,
}

impl Datacenter {
    fn new(name: &'static str, actor: u8, skew_ms: i64, doc: &Automerge) -> Self {
        let actor = ActorId::from([actor; 16]);
        let mut hlc = Hlc::new(actor.clone());
        policy::observe_changes(&mut hlc, doc, &[], T0.saturating_add_signed(skew_ms));
        Self {
            name,
            doc: doc.fork().with_actor(actor.clone()),
            hlc,
            skew_ms,
            peer: sync::State::new(),
        }
    }

    pub(crate) fn write(
        &mut self,
        real: u64,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), PolicyError>,
    ) {
        let physical = real.saturating_add_signed(self.skew_ms);
        policy::change(&mut self.doc, &mut self.hlc, physical, f).unwrap();
    }
}

/// Replicates until both sides are in sync (the link between the regions comes back).
pub(crate) fn replicate(a: &mut Datacenter, b: &mut Datacenter, real: u64) {
    let (a_before, b_before) = (a.doc.get_heads(), b.doc.get_heads());
    for _ in 0..20 {
        let to_b = a.doc.generate_sync_message(&mut a.peer);
        let to_a = b.doc.generate_sync_message(&mut b.peer);
        if to_b.is_none() && to_a.is_none() {
            break;
        }
        if let Some(m) = to_b {
            b.doc.receive_sync_message(&mut b.peer, m).unwrap();
        }
        if let Some(m) = to_a {
            a.doc.receive_sync_message(&mut a.peer, m).unwrap();
        }
    }
    assert_eq!(
        a.doc.get_heads(),
        b.doc.get_heads(),
        "{} and {} in sync",
        a.name,
        b.name
    );
    // Each side's clock learns the stamps the other side's changes carried.
    policy::observe_changes(
        &mut a.hlc,
        &a.doc,
        &a_before,
        real.saturating_add_signed(a.skew_ms),
    );
    policy::observe_changes(
        &mut b.hlc,
        &b.doc,
        &b_before,
        real.saturating_add_signed(b.skew_ms),
    );
}

pub(crate) fn two_datacenters(schema: &Schema) -> (Datacenter, Datacenter) {
    let mut origin = Automerge::new();
    let mut clock = Hlc::new(origin.get_actor().clone());
    policy::change(&mut origin, &mut clock, T0, |tx| {
        schema.put(tx, "name", &json!("Alice"))
    })
    .unwrap();
    // us-east's actor sorts after eu-west's: Automerge's own pick would be us-east's value.
    (
        Datacenter::new("eu-west", 0x10, 0, &origin),
        Datacenter::new("us-east", 0xf0, 0, &origin),
    )
}

#[test]
fn two_datacenters_rename_concurrently_and_the_later_hlc_wins() {
    let schema = Schema::new().with("name", Policy::Lww).unwrap();
    let (mut eu, mut us) = two_datacenters(&schema);

    // The link between the regions is down. us-east writes first, eu-west two seconds later.
    us.write(T0 + 1_000, |tx| {
        schema.put(tx, "name", &json!("Alice Jones"))
    });
    eu.write(T0 + 3_000, |tx| {
        schema.put(tx, "name", &json!("Alice Smith"))
    });

    // The link comes back; both regions settle on the later write.
    replicate(&mut eu, &mut us, T0 + 4_000);
    assert_eq!(
        schema.resolved(&eu.doc, "name").unwrap(),
        json!("Alice Smith")
    );
    assert_eq!(
        schema.resolved(&us.doc, "name").unwrap(),
        json!("Alice Smith")
    );
    assert_eq!(
        Schema::new().resolved(&eu.doc, "name").unwrap(),
        json!("Alice Jones"),
        "without the policy, Automerge's pick would have been us-east's value"
    );

    // The losing value is still there, with who wrote it and when.
    let candidates = policy::conflicts(&us.doc, "name").unwrap();
    let who: Vec<(&Json, u64)> = candidates.iter().map(|c| (&c.value, c.hlc.ms)).collect();
    assert_eq!(
        who,
        vec![
            (&json!("Alice Jones"), T0 + 1_000),
            (&json!("Alice Smith"), T0 + 3_000)
        ]
    );
    assert_eq!(candidates[0].actor, ActorId::from([0xf0; 16]));
    let loser = policy::history(&eu.doc, "name")
        .unwrap()
        .into_iter()
        .find(|h| h.value == Some(json!("Alice Jones")))
        .unwrap();
    assert_eq!(loser.change, candidates[0].change);
}

#[test]
fn a_clock_ahead_wins_concurrent_writes_but_never_beats_a_write_that_saw_it() {
    let schema = Schema::new().with("name", Policy::Lww).unwrap();
    let (mut eu, mut us) = two_datacenters(&schema);
    eu.skew_ms = 120_000; // eu-west's clock runs two minutes fast

    // Concurrent writes: eu-west's stamp is two minutes "later" although it wrote first.
    eu.write(T0 + 1_000, |tx| {
        schema.put(tx, "name", &json!("Alice Smith"))
    });
    us.write(T0 + 5_000, |tx| {
        schema.put(tx, "name", &json!("Alice Jones"))
    });
    replicate(&mut eu, &mut us, T0 + 6_000);
    assert_eq!(
        schema.resolved(&us.doc, "name").unwrap(),
        json!("Alice Smith")
    );

    // us-east has now seen eu-west's stamp: its next write is later, whatever its clock says.
    us.write(T0 + 7_000, |tx| {
        schema.put(tx, "name", &json!("Alice Jones"))
    });
    replicate(&mut eu, &mut us, T0 + 8_000);
    assert_eq!(
        schema.resolved(&eu.doc, "name").unwrap(),
        json!("Alice Jones")
    );
    assert!(policy::conflicts(&eu.doc, "name").unwrap().is_empty());
    let stamp = policy::candidates(&eu.doc, "name").unwrap()[0].hlc.clone();
    assert!(
        stamp.ms >= T0 + 121_000,
        "us-east's clock was carried forward: {stamp}"
    );
}

#[test]
fn two_datacenters_keep_both_names_until_someone_resolves() {
    let schema = Schema::new().with("name", Policy::KeepConflicts).unwrap();
    let (mut eu, mut us) = two_datacenters(&schema);

    eu.write(T0 + 1_000, |tx| {
        schema.put(tx, "name", &json!("Alice Smith"))
    });
    us.write(T0 + 1_000, |tx| {
        schema.put(tx, "name", &json!("Alice Jones"))
    });
    let (eu_before, us_before) = (eu.doc.get_heads(), us.doc.get_heads());
    replicate(&mut eu, &mut us, T0 + 2_000);

    // Each region is told a conflict appeared, with both values.
    for (dc, before) in [(&eu, &eu_before), (&us, &us_before)] {
        let events = policy::new_conflicts(&dc.doc, before, &dc.doc.get_heads(), &schema).unwrap();
        assert_eq!(events.len(), 1, "{}", dc.name);
        assert_eq!(events[0].path, "name".parse::<DocPath>().unwrap());
        let names: BTreeSet<String> = events[0]
            .candidates
            .iter()
            .map(|c| c.value.to_string())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["\"Alice Jones\"".into(), "\"Alice Smith\"".into()])
        );
    }
    // Reads stay deterministic meanwhile.
    assert_eq!(
        schema.resolved(&eu.doc, "name").unwrap(),
        schema.resolved(&us.doc, "name").unwrap()
    );

    // An operator in us-east settles it; the resolution replicates and supersedes both.
    us.write(T0 + 3_000, |tx| {
        schema.resolve(tx, "name", &json!("Alice Smith-Jones"))
    });
    let eu_before = eu.doc.get_heads();
    replicate(&mut eu, &mut us, T0 + 4_000);
    for dc in [&eu, &us] {
        assert!(
            policy::conflicts(&dc.doc, "name").unwrap().is_empty(),
            "{}",
            dc.name
        );
        assert_eq!(
            schema.resolved(&dc.doc, "name").unwrap(),
            json!("Alice Smith-Jones")
        );
        assert!(
            policy::conflicted_paths(&dc.doc, &schema)
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        policy::new_conflicts(&eu.doc, &eu_before, &eu.doc.get_heads(), &schema)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn policies_leave_plain_json_for_other_clients() {
    let schema = Schema::new()
        .with("cart/items", Policy::AddWinsSet)
        .unwrap()
        .with("cart/qty/*", Policy::Counter)
        .unwrap()
        .with("cart/address", Policy::Lww)
        .unwrap();
    let mut doc = Automerge::new();
    let mut hlc = Hlc::new(doc.get_actor().clone());
    policy::change(&mut doc, &mut hlc, T0, |tx| {
        path::put(tx, &"cart".parse()?, &json!({"qty": {}}))?;
        schema.add(tx, "cart/items", "apple")?;
        schema.increment(tx, "cart/qty/apple", 3)?;
        schema.put(tx, "cart/address", &json!({"city": "Lyon"}))
    })
    .unwrap();
    // What a stock automerge-repo client sees (AutoSerde is the JSON view of the document).
    let plain = serde_json::to_value(AutoSerde::from(&doc)).unwrap();
    assert_eq!(
        plain,
        json!({"cart": {"items": {"apple": true}, "qty": {"apple": 3}, "address": {"city": "Lyon"}}})
    );
    // The HLC rides in the change's message; its time is in seconds.
    let change = doc.get_last_local_change().unwrap();
    assert_eq!(change.message(), Some("concord-hlc:1700000000000:0"));
    assert_eq!(change.timestamp(), 1_700_000_000);
}

/// A repo on its own in-memory disk; with `server`, it dials it.
async fn repo_on(disk: &Arc<MemoryStorage>, server: Option<&str>) -> Repo {
    let mut config = RepoConfig::default();
    config.servers.extend(server.map(str::to_owned));
    config.backoff.initial = Duration::from_millis(20);
    let storage: Arc<dyn concord::storage::Storage> = disk.clone();
    Repo::open(storage, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_arriving_from_the_network_is_announced_to_the_app() {
    const WAIT: Duration = Duration::from_secs(10);
    let schema = Arc::new(Schema::new().with("name", Policy::KeepConflicts).unwrap());

    // The eu-west server listens; it holds the customer record and watches it for conflicts.
    let config = RepoConfig {
        policy: Arc::new(ServerPolicy),
        ..RepoConfig::default()
    };
    let eu = Repo::open(Arc::new(MemoryStorage::new()), config)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = eu.clone();
    tokio::spawn(async move { server.serve(listener).await });
    let record = eu.create().await.unwrap();
    record
        .change(|tx| schema.put(tx, "name", &json!("Alice")))
        .await
        .unwrap();
    let mut conflicts = policy::watch_conflicts(&record, schema.clone()).unwrap();

    // A us-east replica takes a copy, then loses the link.
    let us_disk = Arc::new(MemoryStorage::new());
    let us = repo_on(&us_disk, Some(&url)).await;
    let copy = tokio::time::timeout(WAIT, us.find(record.url()))
        .await
        .unwrap()
        .unwrap();
    drop(copy);
    us.flush().await;
    us.shutdown().await;

    // Both rename the customer while apart.
    record
        .change(|tx| schema.put(tx, "name", &json!("Alice Smith")))
        .await
        .unwrap();
    let us = repo_on(&us_disk, None).await;
    let copy = us.find_local(record.id()).await.unwrap();
    copy.change(|tx| schema.put(tx, "name", &json!("Alice Jones")))
        .await
        .unwrap();
    drop(copy);
    us.flush().await;
    us.shutdown().await;

    // The link comes back: eu-west is told a conflict appeared, with both names.
    let us = repo_on(&us_disk, Some(&url)).await;
    let _copy = us.find(record.url()).await.unwrap();
    let event = tokio::time::timeout(WAIT, conflicts.recv())
        .await
        .expect("a conflict event in time")
        .expect("the watch is running")
        .unwrap();
    assert_eq!(event.path, "name".parse::<DocPath>().unwrap());
    let names: BTreeSet<String> = event
        .candidates
        .iter()
        .map(|c| c.value.to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["\"Alice Jones\"".into(), "\"Alice Smith\"".into()])
    );
    us.shutdown().await;
    eu.shutdown().await;
}
