//! Run it with `cargo run -p concord-example-cart`.
//!
//! A shopping cart shared by a phone and a laptop, edited on both while offline, then merged with
//! Concord's conflict policies:
//!
//! - `cart/items` is an add-wins set: an item removed on one device and added again on the other
//!   stays in the cart;
//! - `cart/quantities/*` are counters: "+1" on both devices makes "+2";
//! - `cart/shipping` is last-writer-wins by hybrid logical clock: the address entered last wins
//!   (the phone's clock is 90 seconds slow; both devices still settle on the same address);
//! - `cart/note` keeps conflicts: both gift notes are shown until the user picks one.
//!
//! The replicas exchange changes with Automerge's sync protocol, as they would over Concord's
//! WebSocket. The document stays plain JSON for any other Automerge client.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transaction;
use automerge::{ActorId, AutoSerde, Automerge};
use concord::path;
use concord::policy::{self, Candidate, Hlc, Policy, PolicyError, Schema};
use serde_json::{Value as Json, json};

/// 2023-11-15 10:00:00 UTC, in milliseconds.
const T0: u64 = 1_700_042_400_000;

/// One device: its copy of the cart, its clock and how wrong that clock is.
struct Device {
    name: &'static str,
    doc: Automerge,
    hlc: Hlc,
    clock_error_ms: i64,
    sync: sync::State,
}

impl Device {
    fn new(name: &'static str, actor: u8, clock_error_ms: i64, doc: Automerge) -> Self {
        let actor = ActorId::from([actor; 16]);
        let mut hlc = Hlc::new(actor.clone());
        // Resume the clock after every stamp already in the document.
        policy::observe_changes(&mut hlc, &doc, &[], T0);
        Self {
            name,
            doc: doc.with_actor(actor),
            hlc,
            clock_error_ms,
            sync: sync::State::new(),
        }
    }

    /// Makes one change, stamped with this device's (possibly wrong) clock at real time `real`.
    fn edit(
        &mut self,
        real: u64,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), PolicyError>,
    ) -> anyhow::Result<()> {
        let physical = real.saturating_add_signed(self.clock_error_ms);
        policy::change(&mut self.doc, &mut self.hlc, physical, f)?;
        Ok(())
    }
}

/// Exchanges sync messages until both devices hold the same changes.
fn sync_devices(a: &mut Device, b: &mut Device, real: u64) -> anyhow::Result<()> {
    let (a_before, b_before) = (a.doc.get_heads(), b.doc.get_heads());
    loop {
        let to_b = a.doc.generate_sync_message(&mut a.sync);
        let to_a = b.doc.generate_sync_message(&mut b.sync);
        if to_b.is_none() && to_a.is_none() {
            break;
        }
        if let Some(m) = to_b {
            b.doc.receive_sync_message(&mut b.sync, m)?;
        }
        if let Some(m) = to_a {
            a.doc.receive_sync_message(&mut a.sync, m)?;
        }
    }
    for (d, before) in [(a, a_before), (b, b_before)] {
        let physical = real.saturating_add_signed(d.clock_error_ms);
        policy::observe_changes(&mut d.hlc, &d.doc, &before, physical);
    }
    Ok(())
}

fn schema() -> anyhow::Result<Schema> {
    Ok(Schema::new()
        .with("cart/items", Policy::AddWinsSet)?
        .with("cart/quantities/*", Policy::Counter)?
        .with("cart/shipping", Policy::Lww)?
        .with("cart/note", Policy::KeepConflicts)?)
}

/// `10:01:00.000` for a timestamp in milliseconds.
fn clock_time(ms: u64) -> String {
    let day = ms % 86_400_000;
    let (h, m, s, milli) = (
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

fn who(c: &Candidate, phone: &Device, laptop: &Device) -> &'static str {
    if &c.actor == phone.doc.get_actor() {
        phone.name
    } else if &c.actor == laptop.doc.get_actor() {
        laptop.name
    } else {
        "someone else"
    }
}

fn print_cart(schema: &Schema, device: &Device, other: &Device) -> anyhow::Result<()> {
    let cart = schema.resolved(&device.doc, "cart")?;
    println!("  items:");
    for item in cart["items"].as_array().into_iter().flatten() {
        let name = item.as_str().unwrap_or("?");
        let qty = cart["quantities"][name].as_i64().unwrap_or(1);
        println!("    {name:<8} x{qty}");
    }
    let shipping = policy::candidates(&device.doc, "cart/shipping")?;
    if let Some(winner) = shipping.last() {
        println!(
            "  ship to: {}, {} (written on the {}, HLC time {})",
            cart["shipping"]["street"].as_str().unwrap_or("?"),
            cart["shipping"]["city"].as_str().unwrap_or("?"),
            who(winner, device, other),
            clock_time(winner.hlc.ms),
        );
    }
    if let Some(note) = cart["note"].as_str() {
        println!("  note:    {note:?}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let schema = schema()?;

    // The phone creates the cart; the laptop gets a copy the first time they sync.
    let mut phone = Device::new("phone", 1, -90_000, Automerge::new());
    phone.edit(T0, |tx| {
        path::put(tx, &"cart".parse()?, &json!({ "quantities": {} }))?;
        for item in ["coffee", "mug"] {
            schema.add(tx, "cart/items", item)?;
            schema.increment(tx, format!("cart/quantities/{item}"), 1)?;
        }
        schema.put(
            tx,
            "cart/shipping",
            &json!({"street": "3 Home Lane", "city": "Lyon"}),
        )
    })?;
    let mut laptop = Device::new("laptop", 2, 0, Automerge::new());
    sync_devices(&mut phone, &mut laptop, T0 + 1_000)?;

    // Both go offline (the phone's clock is 90 s slow) and edit the same cart.
    phone.edit(T0 + 10_000, |tx| {
        schema.remove(tx, "cart/items", "mug")?; // "I don't need a mug"
        schema.add(tx, "cart/items", "tea")?;
        schema.increment(tx, "cart/quantities/tea", 2)?;
        schema.increment(tx, "cart/quantities/coffee", 1)
    })?;
    laptop.edit(T0 + 20_000, |tx| {
        schema.add(tx, "cart/items", "mug")?; // "buy again", concurrently with the removal
        schema.increment(tx, "cart/quantities/coffee", 2)
    })?;
    phone.edit(T0 + 40_000, |tx| {
        schema.put(tx, "cart/note", &json!("Leave it at the door"))
    })?;
    laptop.edit(T0 + 50_000, |tx| {
        schema.put(tx, "cart/note", &json!("Happy birthday!"))
    })?;
    // Both change the shipping address: the phone at 10:00:30, the laptop at 10:01:00. The
    // laptop's is the later write, and its HLC stamp is later too (the phone's clock being slow
    // only widens the gap). Concurrent writes are ordered by their devices' clocks: the HLC keeps
    // every device's clock monotonic and causal, not correct.
    phone.edit(T0 + 30_000, |tx| {
        schema.put(
            tx,
            "cart/shipping",
            &json!({"street": "9 Station Road", "city": "Lyon"}),
        )
    })?;
    laptop.edit(T0 + 60_000, |tx| {
        schema.put(
            tx,
            "cart/shipping",
            &json!({"street": "5 Office Street", "city": "Paris"}),
        )
    })?;

    println!("offline, on the phone:");
    print_cart(&schema, &phone, &laptop)?;
    println!("offline, on the laptop:");
    print_cart(&schema, &laptop, &phone)?;

    // Back online.
    sync_devices(&mut phone, &mut laptop, T0 + 120_000)?;
    let on_phone = schema.resolved(&phone.doc, "")?;
    let on_laptop = schema.resolved(&laptop.doc, "")?;
    anyhow::ensure!(on_phone == on_laptop, "the devices disagree after merging");
    println!("\nmerged (identical on both devices):");
    print_cart(&schema, &phone, &laptop)?;

    let conflicts = policy::conflicted_paths(&phone.doc, &schema)?;
    println!("\nconflicts to show the user: {}", conflicts.len());
    for conflict in &conflicts {
        println!("  {}:", conflict.path);
        for c in &conflict.candidates {
            println!(
                "    {} (written on the {}, HLC time {}, change {})",
                c.value,
                who(c, &phone, &laptop),
                clock_time(c.hlc.ms),
                &c.change.to_string()[..8],
            );
        }
    }

    // Stock Automerge clients do not know the policies: where concurrent values are still in the
    // document they show Automerge's own pick (for the address, the phone's). The app settles
    // both: the user keeps the birthday note, and the phone writes back the address the LWW
    // policy picked, so every client shows the same cart. The change replicates and supersedes
    // the concurrent values everywhere.
    let shipping = schema.resolved(&phone.doc, "cart/shipping")?;
    phone.edit(T0 + 130_000, |tx| {
        schema.resolve(tx, "cart/note", &json!("Happy birthday!"))?;
        schema.resolve(tx, "cart/shipping", &shipping)
    })?;
    sync_devices(&mut phone, &mut laptop, T0 + 140_000)?;
    anyhow::ensure!(policy::conflicted_paths(&laptop.doc, &schema)?.is_empty());
    println!("\nafter the user picked a note and the address was settled, on the laptop:");
    print_cart(&schema, &laptop, &phone)?;

    // Sanity checks, so the example fails loudly if the policies ever change behaviour.
    let cart = schema.resolved(&laptop.doc, "cart")?;
    anyhow::ensure!(cart["items"] == json!(["coffee", "mug", "tea"]), "{cart}");
    anyhow::ensure!(cart["quantities"]["coffee"] == json!(4), "{cart}");
    anyhow::ensure!(
        cart["shipping"]["street"] == json!("5 Office Street"),
        "{cart}"
    );
    anyhow::ensure!(cart["note"] == json!("Happy birthday!"), "{cart}");

    // What any other Automerge client sees: plain JSON, now the same cart.
    let plain: Json = serde_json::to_value(AutoSerde::from(&laptop.doc))?;
    anyhow::ensure!(plain["cart"]["shipping"] == cart["shipping"], "{plain}");
    println!(
        "\nthe document as plain JSON:\n{}",
        serde_json::to_string_pretty(&plain)?
    );
    Ok(())
}
