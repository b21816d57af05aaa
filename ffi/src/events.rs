//! Event delivery to an app-implemented listener, behind a cancellable [`Subscription`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::error::{CoveyError, ListenerError};
use crate::runtime::{panic_message, runtime};
use crate::types::Event;

/// Receives a node's events; the app implements it. Calls come one at a time, in order, on
/// a background thread (never the app's main thread), so a slow listener delays only its own
/// subscription. An exception it raises is logged and delivery goes on.
#[uniffi::export(foreign)]
pub trait EventListener: Send + Sync {
    /// Handles one event.
    fn on_event(&self, event: Event) -> Result<(), ListenerError>;
}

/// A live event subscription from `Node.subscribe`. Delivery stops on [`Subscription::cancel`],
/// when the subscription is dropped (garbage-collected), or when the node shuts down.
#[derive(Debug, uniffi::Object)]
pub struct Subscription {
    cancelled: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
}

#[uniffi::export]
impl Subscription {
    /// Stops delivery. No call starts after this returns; one already running completes.
    /// Calling it twice is fine.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.stop.send_replace(true);
    }

    /// Whether delivery has stopped through [`Subscription::cancel`].
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Subscription {
    /// Starts delivering `events` to `listener` until cancelled, dropped, or `node_closed`
    /// turns true.
    pub(crate) fn start(
        mut events: covey_core::Subscription,
        listener: Arc<dyn EventListener>,
        mut node_closed: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, CoveyError> {
        let rt = runtime()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        rt.spawn(async move {
            loop {
                let event = tokio::select! {
                    biased;
                    // Changed (cancelled) or closed (the Subscription was dropped).
                    _ = stop_rx.changed() => break,
                    _ = node_closed.wait_for(|closed| *closed) => break,
                    event = events.recv() => match event {
                        Some(event) => Event::from(event),
                        None => break,
                    },
                };
                let listener = listener.clone();
                let flag = flag.clone();
                let delivered = tokio::task::spawn_blocking(move || {
                    if flag.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    listener.on_event(event)
                })
                .await;
                match delivered {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::warn!("event listener raised (delivery goes on): {e}"),
                    Err(e) if e.is_panic() => log::error!(
                        "event listener panicked (delivery goes on): {}",
                        panic_message(e.into_panic().as_ref())
                    ),
                    Err(e) => log::error!("event listener call did not finish: {e}"),
                }
            }
            log::debug!("event subscription ended");
        });
        Ok(Arc::new(Self { cancelled, stop }))
    }
}
