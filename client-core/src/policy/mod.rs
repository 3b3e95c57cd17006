//! Conflict policies (work in progress).

#[cfg(test)]
mod experiment {
    #![allow(clippy::unwrap_used)]
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ROOT, ReadDoc, ScalarValue};

    #[test]
    fn increment_on_conflict() {
        let mut a = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut b = Automerge::new().with_actor(ActorId::from([2u8; 16]));
        let mut tx = a.transaction();
        tx.put(ROOT, "q", ScalarValue::counter(1)).unwrap();
        tx.commit();
        let mut tx = b.transaction();
        tx.put(ROOT, "q", ScalarValue::counter(10)).unwrap();
        tx.commit();
        a.merge(&mut b).unwrap();
        println!("conflicts: {:?}", a.get_all(ROOT, "q").unwrap());
        let mut c = a.fork().with_actor(ActorId::from([3u8; 16]));
        let mut tx = a.transaction();
        tx.increment(ROOT, "q", 100).unwrap();
        tx.commit();
        println!("after inc: {:?}", a.get_all(ROOT, "q").unwrap());
        let mut tx = c.transaction();
        tx.increment(ROOT, "q", 1000).unwrap();
        tx.commit();
        a.merge(&mut c).unwrap();
        println!("after concurrent inc: {:?}", a.get_all(ROOT, "q").unwrap());
        // put vs concurrent increment
        let mut d = a.fork().with_actor(ActorId::from([4u8; 16]));
        let mut tx = a.transaction();
        tx.put(ROOT, "q", ScalarValue::counter(0)).unwrap();
        tx.commit();
        let mut tx = d.transaction();
        tx.increment(ROOT, "q", 7).unwrap();
        tx.commit();
        a.merge(&mut d).unwrap();
        println!("put vs inc: {:?}", a.get_all(ROOT, "q").unwrap());
        for c in a.get_changes(&[]) { println!("{:?} {:?} {}", c.message(), c.timestamp(), c.actor_id()); }
    }
}
