//! The tokio runtime the engine runs on, and the bridge from foreign async calls to it.
//!
//! Every `Repo`'s engine tasks (driver, storage, WebSocket transport) run on one process-wide
//! multi-threaded tokio runtime owned by this crate (2 worker threads named `concord-rt`), not on
//! whatever thread or executor the app calls from. An exported `async fn` spawns its work onto this
//! runtime and awaits the result, so:
//!
//! - the foreign executor (Kotlin coroutines, Swift tasks, Python asyncio) only waits; it never
//!   drives the engine and may be single-threaded;
//! - a panic inside the work becomes [`ConcordError::Internal`] (the task's `JoinError`), never an
//!   unwind across the boundary;
//! - cancelling the foreign call (coroutine cancellation, task cancellation) aborts the waiting;
//!   a write that was already applied still commits.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::{ConcordError, Result};

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime, created on first use.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("concord-rt")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ConcordError::Internal(format!("cannot start the tokio runtime: {e}")))
}

/// Aborts the task when the awaiting future is dropped (the foreign call was cancelled).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on the engine runtime and waits for it from any executor.
pub(crate) async fn run<T, F>(work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = AbortOnDrop(runtime()?.spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(ConcordError::Internal(format!(
            "the engine task panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(_) => Err(ConcordError::Closed(
            "the engine task was cancelled".to_owned(),
        )),
    }
}

/// Runs `work` on the engine runtime and blocks the calling (foreign) thread until it ends.
/// Refuses to run on a runtime thread, where blocking would stall the engine.
pub(crate) fn block_on<T, F>(work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(ConcordError::Internal(
            "a blocking call was made from an engine thread; use the async variant".to_owned(),
        ));
    }
    let rt = runtime()?;
    rt.block_on(run(work))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Spawns a background task on the engine runtime (listener forwarding).
pub(crate) fn spawn<F>(work: F) -> Result<JoinHandle<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(runtime()?.spawn(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let r: Result<()> = block_on(async {
            #[allow(clippy::panic)]
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(())
        });
        assert!(matches!(r, Err(ConcordError::Internal(m)) if m.contains("boom")));
    }

    #[test]
    fn results_come_back() {
        assert_eq!(block_on(async { Ok(41 + 1) }), Ok(42));
    }
}
