//! Per-call cost of applying ONE remote change (and a batch of 100) to a text document typed
//! 10 characters per change, for automerge 0.5.12, 0.6.1, 0.7.4 and 0.12.0.
//! Usage: automerge-versions [sizes, comma separated; default 1000,10000,100000,1000000]
use std::time::Instant;

macro_rules! probe {
    ($am:ident, $name:expr, $size:expr) => {{
        use $am::transaction::Transactable;
        use $am::ReadDoc;
        let size: usize = $size;
        let t0 = Instant::now();
        let mut doc = $am::AutoCommit::new().with_actor($am::ActorId::from([1u8; 16]));
        let text = doc.put_object($am::ROOT, "text", $am::ObjType::Text).unwrap();
        doc.commit();
        let mut written = 0;
        while written < size {
            for i in 0..10 {
                let len = doc.length(&text);
                let pos = if (written + i) % 97 == 0 { len / 2 } else { len };
                doc.splice_text(&text, pos, 0, "a").unwrap();
            }
            doc.commit();
            written += 10;
        }
        let bytes = doc.save();
        let build = t0.elapsed().as_secs_f64();
        let t = Instant::now();
        let base = $am::Automerge::load(&bytes).unwrap();
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        // 120 one-character changes by another actor.
        let mut fork = base.fork().with_actor($am::ActorId::from([7u8; 16]));
        let mut changes = Vec::new();
        for _ in 0..120 {
            let mut tx = fork.transaction();
            let len = tx.length(&text);
            tx.splice_text(&text, len, 0, "x").unwrap();
            tx.commit();
            changes.push(fork.get_last_local_change().unwrap().clone());
        }
        let mut doc = base.clone();
        let mut samples = Vec::new();
        for c in &changes[..20] {
            let t = Instant::now();
            doc.apply_changes([c.clone()]).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        samples.sort_by(f64::total_cmp);
        // The batch continues the same chain, on the document that has the first 20.
        let t = Instant::now();
        doc.apply_changes(changes[20..].to_vec()).unwrap();
        assert_eq!(doc.get_heads(), fork.get_heads());
        let batch = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{:<8} {:>8} ops  apply 1 change p50 {:>9.4} ms p99 {:>9.4} ms | 100 in one call {:>9.3} ms ({:.4} ms/change) | load {:>8.1} ms | built in {:.1} s",
            $name, size, samples[10], samples[19], batch, batch / 100.0, load_ms, build
        );
    }};
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "1000,10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    for &s in &sizes {
        probe!(am05, "0.5.12", s);
        probe!(am06, "0.6.1", s);
        probe!(am07, "0.7.4", s);
        probe!(am12, "0.12.0", s);
    }
}
