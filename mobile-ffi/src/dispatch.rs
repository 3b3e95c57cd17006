//! Listener delivery: a bounded queue per subscription, filled by a task on the engine runtime and
//! drained by a dedicated thread that calls the app's listener. The engine never waits for a
//! listener: the filling side only pushes (applying the overflow policy when the queue is full).
//! See [`crate::listeners`] for the policies.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::{ConcordError, Result};
use crate::listeners::QUEUE_CAPACITY;

/// What to do when the queue is full: gets the queue and the new event; true when an event was
/// dropped.
pub(crate) type Overflow<E> = fn(&mut VecDeque<E>, E) -> bool;

struct State<E> {
    items: VecDeque<E>,
    closed: bool,
}

struct Queue<E> {
    state: Mutex<State<E>>,
    ready: Condvar,
    overflow: Overflow<E>,
}

impl<E> Queue<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `e`; true when the overflow policy dropped something.
    fn push(&self, e: E) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let dropped = if state.items.len() >= QUEUE_CAPACITY {
            (self.overflow)(&mut state.items, e)
        } else {
            state.items.push_back(e);
            false
        };
        self.ready.notify_one();
        dropped
    }

    /// The next event; `None` once closed and drained.
    fn pop(&self) -> Option<E> {
        let mut state = self.lock();
        loop {
            if let Some(e) = state.items.pop_front() {
                return Some(e);
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// No more events; with `discard`, queued ones are dropped too.
    fn close(&self, discard: bool) {
        let mut state = self.lock();
        state.closed = true;
        if discard {
            state.items.clear();
        }
        self.ready.notify_all();
    }
}

/// Shared state of one subscription.
pub(crate) struct Control {
    cancelled: AtomicBool,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    close: Box<dyn Fn() + Send + Sync>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Control {
    /// Stops delivery: no listener call starts after this returns (one in progress finishes).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        (self.close)();
    }

    pub(crate) fn is_active(&self) -> bool {
        !self.cancelled.load(Ordering::SeqCst)
    }
}

/// A listener registration. Delivery goes on until [`Subscription::cancel`] or the repo's
/// `shutdown`; dropping this object does *not* cancel it (keep it to cancel later, like a
/// Couchbase Lite `ListenerToken`).
#[derive(uniffi::Object)]
pub struct Subscription {
    control: Arc<Control>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("active", &self.control.is_active())
            .finish()
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops delivery. Idempotent; safe to call from inside the listener.
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// False once cancelled (or the repo shut down).
    pub fn is_active(&self) -> bool {
        self.control.is_active()
    }

    /// Events handed to the listener so far.
    pub fn delivered(&self) -> u64 {
        self.control.delivered.load(Ordering::SeqCst)
    }

    /// Events dropped because the listener was too slow (coalesced changes are not counted).
    pub fn dropped(&self) -> u64 {
        self.control.dropped.load(Ordering::SeqCst)
    }

    /// Listener calls that threw (or panicked); delivery went on.
    pub fn failures(&self) -> u64 {
        self.control.failures.load(Ordering::SeqCst)
    }
}

/// Starts a subscription: `initial` events first, then `map` of everything `source` yields,
/// delivered to `deliver` on a thread of its own. `registry` gets a weak reference for cancel-all.
pub(crate) fn start<X, E, M, D>(
    mut source: broadcast::Receiver<X>,
    initial: Vec<E>,
    mut map: M,
    overflow: Overflow<E>,
    deliver: D,
    registry: &Mutex<Vec<Weak<Control>>>,
) -> Result<Arc<Subscription>>
where
    X: Clone + Send + 'static,
    E: Send + 'static,
    M: FnMut(X) -> Option<E> + Send + 'static,
    D: Fn(E) -> Result<(), ConcordError> + Send + 'static,
{
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        ready: Condvar::new(),
        overflow,
    });
    let closer = queue.clone();
    let control = Arc::new(Control {
        cancelled: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        close: Box::new(move || closer.close(true)),
        task: Mutex::new(None),
    });
    for e in initial {
        queue.push(e);
    }
    let (thread_queue, thread_control) = (queue.clone(), control.clone());
    std::thread::Builder::new()
        .name("concord-listener".to_owned())
        .spawn(move || {
            while let Some(e) = thread_queue.pop() {
                if !thread_control.is_active() {
                    break;
                }
                let counter = match catch_unwind(AssertUnwindSafe(|| deliver(e))) {
                    Ok(Ok(())) => &thread_control.delivered,
                    Ok(Err(_)) | Err(_) => &thread_control.failures,
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .map_err(|e| ConcordError::Internal(format!("cannot start a listener thread: {e}")))?;
    let (task_queue, task_control) = (queue, control.clone());
    let task = crate::runtime::spawn(async move {
        loop {
            match source.recv().await {
                Ok(x) => {
                    if let Some(e) = map(x)
                        && task_queue.push(e)
                    {
                        task_control.dropped.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    task_control.dropped.fetch_add(n, Ordering::SeqCst);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    task_queue.close(false);
                    return;
                }
            }
        }
    });
    match task {
        Ok(task) => {
            *control.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        Err(e) => {
            control.cancel();
            return Err(e);
        }
    }
    let mut subs = registry.lock().unwrap_or_else(PoisonError::into_inner);
    subs.retain(|w| w.strong_count() > 0);
    subs.push(Arc::downgrade(&control));
    Ok(Arc::new(Subscription { control }))
}

/// Cancels every live subscription of a registry.
pub(crate) fn cancel_all(registry: &Mutex<Vec<Weak<Control>>>) {
    let subs: Vec<Weak<Control>> =
        std::mem::take(&mut *registry.lock().unwrap_or_else(PoisonError::into_inner));
    for control in subs.iter().filter_map(Weak::upgrade) {
        control.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_slow_listener_never_blocks_the_sender_and_overflow_is_counted() -> Result<()> {
        let registry = Mutex::new(Vec::new());
        let (tx, rx) = broadcast::channel::<u32>(1024);
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let thread_gate = gate.clone();
        let sub = start(
            rx,
            vec![],
            Some,
            crate::listeners::drop_newest,
            move |_n: u32| {
                let _g = thread_gate.lock();
                Ok(())
            },
            &registry,
        )?;
        let t = Instant::now();
        for i in 0..500 {
            let _ = tx.send(i);
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        // The listener is stuck on the first event; the queue holds 64, the rest are dropped.
        assert!(wait_until(|| sub.dropped() >= 500 - 1 - 64));
        drop(held);
        assert!(wait_until(|| sub.delivered() + sub.dropped() == 500));
        sub.cancel();
        assert!(!sub.is_active());
        Ok(())
    }

    #[test]
    fn failing_listeners_are_counted_and_cancel_all_stops_everything() -> Result<()> {
        let registry = Mutex::new(Vec::new());
        let (tx, rx) = broadcast::channel::<u32>(16);
        let sub = start(
            rx,
            vec![0],
            Some,
            crate::listeners::drop_newest,
            |n: u32| {
                #[allow(clippy::panic)]
                if n == 2 {
                    panic!("listener bug");
                }
                Err(ConcordError::Internal("thrown".into()))
            },
            &registry,
        )?;
        let _ = tx.send(1);
        let _ = tx.send(2);
        assert!(wait_until(|| sub.failures() == 3));
        cancel_all(&registry);
        assert!(!sub.is_active());
        Ok(())
    }
}
