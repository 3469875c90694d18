//! Tells an outside system (a chat or ticketing system) about approval requests: each new
//! request, and each decision on one, is POSTed as JSON to the configured URL by a thread of its
//! own, and retried with backoff when the call fails. The queue is bounded: what does not fit
//! is dropped, logged and counted, so a slow receiver never holds up a request. Deliveries,
//! failures (after every retry) and drops are counted for the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::outbound::Url;

impl warrant_control::Notifier for Webhook {
    fn notify(&self, event: &serde_json::Value) {
        Webhook::notify(self, event);
    }
}

/// How many notifications may wait to be sent.
const QUEUE: usize = 1_000;
/// Tries per notification, and the pause before the first retry (doubled each time).
const TRIES: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

pub struct Webhook {
    queue: SyncSender<Vec<u8>>,
    url: String,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl Webhook {
    /// Starts the sender thread; it ends when the `Webhook` is dropped.
    pub fn start(url: Url) -> std::io::Result<Arc<Webhook>> {
        let (queue, notifications) = sync_channel::<Vec<u8>>(QUEUE);
        let webhook = Arc::new(Webhook {
            queue,
            url: url.as_str().to_owned(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let counters: Weak<Webhook> = Arc::downgrade(&webhook);
        std::thread::Builder::new()
            .name("warrant-webhook".to_owned())
            .spawn(move || {
                for body in notifications {
                    let outcome = deliver(&url, &body);
                    let Some(webhook) = counters.upgrade() else {
                        return;
                    };
                    match outcome {
                        Ok(()) => webhook.delivered.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            tracing::error!(url = webhook.url, %error, "cannot notify the approval request webhook; giving up on this notification");
                            webhook.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })?;
        Ok(webhook)
    }

    /// Queues `event` (JSON) for delivery; never waits.
    pub fn notify(&self, event: &serde_json::Value) {
        match self.queue.try_send(event.to_string().into_bytes()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    url = self.url,
                    "the approval request webhook's queue is full; a notification is dropped"
                );
            }
        }
    }
}

/// POSTs `body`, trying again after a pause (doubling) until it is accepted or `TRIES` fail.
fn deliver(url: &Url, body: &[u8]) -> Result<(), String> {
    let mut pause = FIRST_PAUSE;
    let mut last = String::new();
    for attempt in 1..=TRIES {
        match url.send("POST", Some(body)) {
            Ok(_) => return Ok(()),
            Err(error) => {
                tracing::debug!(attempt, %error, "the approval request webhook failed; retrying");
                last = error;
            }
        }
        if attempt < TRIES {
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
    Err(format!("{TRIES} tries failed; the last: {last}"))
}
