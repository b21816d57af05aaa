//! The one tokio runtime the FFI layer runs core futures on.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Runtime;

use crate::error::CoveyError;

/// Worker threads: small, mobile-sized; blocking work (SQLite, Argon2id, app callbacks) runs
/// on tokio's separate blocking pool.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The FFI layer's multi-thread tokio runtime, built on first use (2 workers, threads named
/// `covey-worker`). Fails with [`CoveyError::Internal`] if the OS refuses to start it.
pub fn runtime() -> Result<&'static Runtime, CoveyError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("covey-worker")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the covey runtime: {e}"))
        })
        .as_ref()
        .map_err(|message| CoveyError::Internal {
            message: message.clone(),
        })
}

/// Runs `fut` on [`runtime`] and waits for it from whatever executor polls the caller.
/// Core errors map by kind; a panic becomes [`CoveyError::Internal`].
///
/// The future is first polled once on the caller's thread inside the runtime's context: calls
/// that finish without waiting (status, reads of in-memory state) return at once, with no hop
/// to a worker thread and back, which is most of an FFI call's cost. A future that has to wait
/// moves to the runtime and is awaited through its join handle.
pub(crate) async fn run<T, F>(fut: F) -> Result<T, CoveyError>
where
    T: Send + 'static,
    F: Future<Output = covey_core::Result<T>> + Send + 'static,
{
    let rt = runtime()?;
    let mut fut = Box::pin(fut);
    let first = {
        let _context = rt.enter();
        let mut cx = Context::from_waker(Waker::noop());
        catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
    };
    match first {
        Ok(Poll::Ready(result)) => return result.map_err(CoveyError::from),
        Ok(Poll::Pending) => {}
        Err(payload) => {
            return Err(CoveyError::Internal {
                message: format!("covey panicked: {}", panic_message(payload.as_ref())),
            });
        }
    }
    // Re-polled by the task with a real waker; the no-op one from the first poll is replaced.
    match rt.spawn(fut).await {
        Ok(result) => result.map_err(CoveyError::from),
        Err(e) if e.is_panic() => Err(CoveyError::Internal {
            message: format!("covey panicked: {}", panic_message(e.into_panic().as_ref())),
        }),
        Err(e) => Err(CoveyError::Internal {
            message: format!("covey task did not finish: {e}"),
        }),
    }
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
#[path = "../tests/support/executor.rs"]
mod support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_becomes_internal() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("test runtime");
        let err = rt
            .block_on(run(async {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                Ok(())
            }))
            .expect_err("a panic is an error");
        match err {
            CoveyError::Internal { message } => assert!(message.contains("boom"), "{message}"),
            other => panic!("wrong kind: {other:?}"),
        }
    }

    #[test]
    fn runs_from_an_executor_that_is_not_tokio() {
        // A plain thread with a minimal block_on stands in for a foreign executor.
        let value = super::support::block_on(run(async { Ok::<_, covey_core::CoveyError>(7) }));
        assert_eq!(value.expect("ok"), 7);
    }
}
