//! Narrated scenarios: a server asked for a document it does not hold asks the peers that could
//! hold it (`client-core/src/core/availability.rs`), on the seeded simulated network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use automerge::ROOT;
use automerge::transaction::Transactable;
use concord::core::{CoreConfig, DocScope, Event, FindOutcome, Grant, GrantPolicy, Limits};
use concord::sim::Sim;
use concord::{DocumentId, PeerId, StorageId};
use serde_json::json;

/// A server enforcing grants, as `concord serve` does.
fn server(sim: &mut Sim) -> usize {
    let config = CoreConfig::new(PeerId::from("server"), Some(StorageId::from("server")), 99)
        .with_policy(Arc::new(GrantPolicy::default()));
    sim.add_peer_with("server", config)
}

/// A client connected to `s` with `grant`; returns (peer, link).
fn client(sim: &mut Sim, s: usize, name: &str, grant: Grant) -> (usize, usize) {
    let c = sim.add_peer(name);
    let link = sim.connect_with_grant(c, s, Some(grant));
    (c, link)
}

fn find_outcome(sim: &Sim, peer: usize, doc: DocumentId) -> Option<FindOutcome> {
    sim.peer(peer).events.iter().find_map(|e| match e {
        Event::FindResolved {
            doc: d, outcome, ..
        } if *d == doc => Some(outcome.clone()),
        _ => None,
    })
}

/// The frames delivered to `name` that concern `doc`, as logged (`sync doc=... heads=[...]`).
fn frames_to(sim: &Sim, name: &str, doc: DocumentId) -> Vec<String> {
    let to = format!("deliver to {name} on link");
    let about = format!("doc={doc}");
    sim.log()
        .iter()
        .filter(|l| l.contains(&to) && l.contains(&about))
        .cloned()
        .collect()
}

/// A grant-enforcing server, Alice and `others` connected with full access, and a document
/// Alice has just created (`key` = `value`) whose frames to the server are held back.
struct Held {
    sim: Sim,
    alice: usize,
    to_server: usize,
    doc: DocumentId,
    others: Vec<usize>,
}

fn held_creation(seed: u64, others: &[&str], key: &str, value: i64) -> Held {
    let mut sim = Sim::new(seed);
    let s = server(&mut sim);
    let (alice, to_server) = client(&mut sim, s, "alice", Grant::full("alice"));
    let others = others
        .iter()
        .map(|name| client(&mut sim, s, name, Grant::full(*name)).0)
        .collect();
    sim.run_until_quiescent(1_000).unwrap();
    sim.hold(to_server, s);
    let doc = sim.create(alice).unwrap();
    sim.change(alice, doc, |tx| tx.put(ROOT, key, value))
        .unwrap();
    Held {
        sim,
        alice,
        to_server,
        doc,
        others,
    }
}

fn only(docs: &[DocumentId], write: bool, principal: &str) -> Grant {
    Grant {
        principal: principal.into(),
        docs: DocScope::Only(docs.iter().copied().collect::<BTreeSet<_>>()),
        write,
        replicate: false,
    }
}

/// Alice creates a document; her first sync is held back on the way to the server. Bob asks the
/// server for it in the meantime. Instead of answering doc-unavailable, the server asks Alice
/// (with a `sync` carrying its empty heads, which stock JS clients do not mistake for a request),
/// and Bob's find resolves once her answer arrives.
#[test]
fn a_request_before_the_creators_first_sync_is_answered_by_the_creator() {
    for seed in 0..50 {
        let Held {
            mut sim,
            to_server,
            doc,
            others,
            ..
        } = held_creation(seed, &["bob"], "n", 1);
        let bob = others[0];
        sim.find(bob, doc);
        sim.run_until_quiescent(1_000).unwrap();
        assert_eq!(
            find_outcome(&sim, bob, doc),
            None,
            "seed {seed}: bob still waits"
        );
        let asks = frames_to(&sim, "alice", doc);
        assert!(
            asks.iter()
                .any(|l| l.contains(": sync doc=") && l.contains("heads=[]")),
            "seed {seed}: the server asked alice with a sync: {asks:?}"
        );
        assert!(
            !asks.iter().any(|l| l.contains(": request doc=")),
            "seed {seed}: never with a request: {asks:?}"
        );

        sim.release(to_server);
        sim.run_until_quiescent(1_000).unwrap();
        assert_eq!(find_outcome(&sim, bob, doc), Some(FindOutcome::Found));
        assert_eq!(sim.json(bob, doc), json!({"n": 1}));
    }
}

/// When nobody has the document, every asked client answers at once (a Concord client answers
/// doc-unavailable to an empty `sync` and keeps nothing of the question), so the requester
/// hears doc-unavailable without waiting for the timeout. If the document turns up later, the
/// requester gets it; the clients that were only asked do not.
#[test]
fn nobody_has_it_answered_at_once_then_delivered_only_to_the_requester() {
    let mut sim = Sim::new(7);
    let s = server(&mut sim);
    let (bob, _) = client(&mut sim, s, "bob", Grant::full("bob"));
    let (carol, _) = client(&mut sim, s, "carol", Grant::full("carol"));
    let dave = sim.add_peer("dave");
    let doc = sim.create(dave).unwrap();
    sim.change(dave, doc, |tx| tx.put(ROOT, "from", "dave"))
        .unwrap();
    sim.run_until_quiescent(1_000).unwrap();
    let start = sim.now();

    sim.find(bob, doc);
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(find_outcome(&sim, bob, doc), Some(FindOutcome::Unavailable));
    assert!(
        sim.now() - start < Limits::default().ask_timeout_ms,
        "answered before any timeout"
    );
    assert!(
        frames_to(&sim, "server", doc)
            .iter()
            .any(|l| l.contains("doc-unavailable")),
        "carol told the server she does not have it"
    );
    assert_eq!(
        sim.peer(carol).core.resident_documents(),
        0,
        "the question left nothing resident at carol"
    );
    assert!(sim.peer(carol).disk.load_sync(&doc).unwrap().is_empty());

    // Dave, who has it, connects: the server gets it and forwards it to Bob, not to Carol.
    sim.connect_with_grant(dave, s, Some(Grant::full("dave")));
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(sim.json(bob, doc), json!({"from": "dave"}));
    assert!(
        sim.heads(carol, doc).is_empty(),
        "carol did not ask for it: {:#?}",
        sim.log()
    );
}

/// The server asks only clients whose grant covers the document with write access: a client
/// with a token for another document never hears of it, nor does a read-only one (it could not
/// give it to us). A client with full access is asked.
#[test]
fn only_clients_whose_grant_allows_the_document_are_asked() {
    let mut sim = Sim::new(8);
    let s = server(&mut sim);
    let (alice, to_server) = client(&mut sim, s, "alice", Grant::full("alice"));
    sim.run_until_quiescent(1_000).unwrap();
    sim.hold(to_server, s);
    let doc = sim.create(alice).unwrap();
    let other = DocumentId::from_bytes([9; 16]);
    client(&mut sim, s, "carol", only(&[other], true, "carol"));
    client(&mut sim, s, "dave", only(&[doc], false, "dave"));
    client(&mut sim, s, "erin", Grant::full("erin"));
    let (bob, _) = client(&mut sim, s, "bob", only(&[doc], true, "bob"));
    sim.run_until_quiescent(1_000).unwrap();

    sim.find(bob, doc);
    sim.run_until_quiescent(1_000).unwrap();
    assert!(!frames_to(&sim, "alice", doc).is_empty(), "alice was asked");
    assert!(!frames_to(&sim, "erin", doc).is_empty(), "erin was asked");
    assert_eq!(frames_to(&sim, "carol", doc), Vec::<String>::new());
    assert_eq!(frames_to(&sim, "dave", doc), Vec::<String>::new());

    sim.release(to_server);
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(find_outcome(&sim, bob, doc), Some(FindOutcome::Found));
    assert_eq!(frames_to(&sim, "carol", doc), Vec::<String>::new());
    assert_eq!(frames_to(&sim, "dave", doc), Vec::<String>::new());
}

/// A peer that never answers (here: everything Alice sends stays held) is given up after
/// `Limits::ask_timeout_ms`, counted on the core's ticks from Bob's request; Bob is told
/// doc-unavailable. When Alice's frames finally arrive, Bob still gets the document.
#[test]
fn a_silent_peer_is_given_up_after_the_timeout_and_the_document_still_arrives() {
    let timeout = Limits::default().ask_timeout_ms;
    let Held {
        mut sim,
        alice,
        to_server,
        doc,
        others,
    } = held_creation(9, &["bob"], "late", 1);
    let bob = others[0];
    sim.find(bob, doc);
    sim.run_until_quiescent(1_000).unwrap();

    sim.advance(timeout - 100);
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(
        find_outcome(&sim, bob, doc),
        None,
        "still waiting for alice"
    );
    sim.advance(200);
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(find_outcome(&sim, bob, doc), Some(FindOutcome::Unavailable));

    sim.release(to_server);
    sim.run_until_quiescent(1_000).unwrap();
    assert_eq!(sim.json(bob, doc), json!({"late": 1}));
    assert_eq!(sim.heads(bob, doc), sim.heads(alice, doc));
}

/// Two clients look for the same new document at once while its creator's first sync is held:
/// whatever the order of the frames (the server's question may cross a client's own request),
/// neither find gives up, and both resolve once the creator's frames arrive.
#[test]
fn concurrent_finds_of_a_held_document_all_resolve_for_many_seeds() {
    for seed in 0..100 {
        let Held {
            mut sim,
            to_server,
            doc,
            others,
            ..
        } = held_creation(seed, &["bob", "carol"], "n", seed as i64);
        let (bob, carol) = (others[0], others[1]);
        sim.find(bob, doc);
        for _ in 0..(seed % 5) {
            sim.step();
        }
        sim.find(carol, doc);
        sim.run_until_quiescent(1_000).unwrap();
        for p in [bob, carol] {
            assert_eq!(find_outcome(&sim, p, doc), None, "seed {seed}: peer {p}");
        }
        sim.release(to_server);
        sim.run_until_quiescent(1_000).unwrap();
        for p in [bob, carol] {
            assert_eq!(
                find_outcome(&sim, p, doc),
                Some(FindOutcome::Found),
                "seed {seed}: peer {p}"
            );
            assert_eq!(sim.json(p, doc), json!({"n": seed}));
        }
    }
}

/// Region links are asked with `request`; a region that does not answer (its frames held) is
/// given up after the timeout like any other peer, and what it sends later is still delivered.
#[test]
fn a_stalled_region_link_is_given_up_after_the_timeout() {
    let timeout = Limits::default().ask_timeout_ms;
    let mut sim = Sim::new(10);
    let (eu, us) = (sim.add_region("eu", 60_000), sim.add_region("us", 60_000));
    let link = sim.connect_region(us, eu);
    let (bob, _) = client(&mut sim, eu, "bob", Grant::full("bob"));
    sim.run_until_quiescent(10_000).unwrap();
    sim.hold(link, eu);
    let writer = sim.add_peer("writer");
    let doc = sim.create(writer).unwrap();
    sim.connect_with_grant(writer, us, Some(Grant::full("writer")));
    sim.run_until_quiescent(10_000).unwrap();
    assert!(!sim.heads(us, doc).is_empty(), "us has it");

    sim.find(bob, doc);
    sim.run_until_quiescent(10_000).unwrap();
    assert!(
        frames_to(&sim, "us", doc)
            .iter()
            .any(|l| l.contains(": request doc=")),
        "eu asked us with a request"
    );
    assert_eq!(find_outcome(&sim, bob, doc), None);
    sim.advance(timeout + 600);
    sim.run_until_quiescent(10_000).unwrap();
    assert_eq!(find_outcome(&sim, bob, doc), Some(FindOutcome::Unavailable));

    sim.release(link);
    sim.run_until_quiescent(10_000).unwrap();
    assert_eq!(sim.heads(bob, doc), sim.heads(us, doc));
}

/// A client the server asked for a document and that never answered (here: Erin's frames to the
/// server stay held) did not ask for it: when the document arrives from its creator, Erin is
/// sent neither the document nor any later change of it; Bob, who asked, gets it all.
#[test]
fn a_client_asked_that_never_answered_is_not_sent_the_document() {
    let Held {
        mut sim,
        alice,
        to_server,
        doc,
        others,
    } = held_creation(11, &["bob"], "n", 1);
    let bob = others[0];
    let erin = sim.add_peer("erin");
    let server = 0; // the first peer held_creation added
    let erin_link = sim.connect_with_grant(erin, server, Some(Grant::full("erin")));
    sim.run_until_quiescent(1_000).unwrap();
    sim.hold(erin_link, server);
    sim.find(bob, doc);
    sim.run_until_quiescent(1_000).unwrap();
    let asked = frames_to(&sim, "erin", doc).len();
    assert!(asked > 0, "erin was asked");

    sim.release(to_server);
    sim.run_until_quiescent(1_000).unwrap();
    for i in 2..6 {
        sim.change(alice, doc, |tx| tx.put(ROOT, "n", i)).unwrap();
        sim.run_until_quiescent(1_000).unwrap();
    }
    assert_eq!(sim.json(bob, doc), json!({"n": 5}));
    assert_eq!(
        frames_to(&sim, "erin", doc).len(),
        asked,
        "nothing more reached erin: {:#?}",
        frames_to(&sim, "erin", doc)
    );
    sim.release(erin_link);
    sim.run_until_quiescent(1_000).unwrap();
    assert!(sim.heads(erin, doc).is_empty(), "erin never got it");
}

/// A request for a document nobody here holds costs at most `Limits::max_clients_asked` frames,
/// however many clients could hold it: 24 clients with full access are connected, and only the
/// first 16 (Alice among them) are asked. Bob is still answered, and still gets the document once it arrives.
#[test]
fn a_request_asks_a_bounded_number_of_clients() {
    let names: Vec<String> = (0..24).map(|i| format!("c{i:02}")).collect();
    let mut all: Vec<&str> = vec!["bob"];
    all.extend(names.iter().map(String::as_str));
    let Held {
        mut sim,
        to_server,
        doc,
        others,
        ..
    } = held_creation(12, &all, "n", 1);
    let bob = others[0];
    sim.find(bob, doc);
    sim.run_until_quiescent(10_000).unwrap();
    let asked = names
        .iter()
        .filter(|n| !frames_to(&sim, n, doc).is_empty())
        .count();
    let limit = Limits::default().max_clients_asked;
    assert_eq!(
        asked + 1,
        limit,
        "alice and {asked} others asked (limit {limit})"
    );
    sim.release(to_server);
    sim.run_until_quiescent(10_000).unwrap();
    assert_eq!(sim.json(bob, doc), json!({"n": 1}));
}
