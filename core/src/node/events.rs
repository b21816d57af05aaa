//! Event subscriptions.

use tokio::sync::broadcast;

use super::types::Event;

/// A stream of [`Event`]s; dropping it (or calling [`Subscription::cancel`]) stops delivery.
#[derive(Debug)]
pub struct Subscription {
    rx: Option<broadcast::Receiver<Event>>,
}

impl Subscription {
    pub(super) fn new(rx: Option<broadcast::Receiver<Event>>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once cancelled or the node is gone. A subscriber too slow to
    /// keep up gets a `Warning` of kind `events-dropped` saying how many it missed, never a
    /// silent gap.
    pub async fn recv(&mut self) -> Option<Event> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Warning {
                kind: crate::sync::WarnKind::EventsDropped.as_str().into(),
                message: format!("subscriber fell behind; {n} events were dropped"),
            }),
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                None
            }
        }
    }

    /// Stops delivery; later `recv` calls return `None`.
    pub fn cancel(&mut self) {
        self.rx = None;
    }
}
