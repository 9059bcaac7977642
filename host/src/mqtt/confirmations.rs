//! Knowing when the broker has a publish of the egress connection, so that the
//! mqtt sink removes a delivery from the outbox only then: a crash before it
//! sends the delivery again instead of losing it.
//!
//! rumqttc gives no per-publish notice. It does report each publish as it
//! goes out, with the packet id it chose, in the order of its request queue,
//! and each PUBACK (QoS 1) or PUBCOMP (QoS 2). So publishers queue in order
//! under a lock, each leaving a sender in a FIFO; "sent" moves the front one
//! under its packet id (QoS 0 is confirmed there), the acknowledgement
//! confirms it. A publish resent after a reconnection goes out under the id it
//! already has and is not matched again. When the broker has lost the session
//! rumqttc drops what was pending, and so every waiting publisher is told to
//! publish again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct Confirmations {
    /// Held while queueing a publish, so the FIFO follows the request queue.
    order: tokio::sync::Mutex<()>,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// Queued, not yet sent, in queue order.
    queued: VecDeque<oneshot::Sender<()>>,
    /// Sent, by packet id, until the broker acknowledges them.
    sent: HashMap<u16, oneshot::Sender<()>>,
}

impl Confirmations {
    /// Queues a publish with `queue`; the receiver resolves once the broker
    /// has it, and fails when it may not: the connection ended or lost its
    /// session first.
    pub(super) async fn queue(
        &self,
        queue: impl Future<Output = Result<(), String>>,
    ) -> Result<oneshot::Receiver<()>, String> {
        let _order = self.order.lock().await;
        let (confirm, confirmed) = oneshot::channel();
        self.waiting().queued.push_back(confirm);
        if let Err(error) = queue.await {
            // Never queued, so never sent: the entry is still the last.
            self.waiting().queued.pop_back();
            return Err(error);
        }
        Ok(confirmed)
    }

    /// A publish went out with `pkid` (0 for QoS 0).
    pub(super) fn sent(&self, pkid: u16) {
        let mut waiting = self.waiting();
        if pkid != 0 && waiting.sent.contains_key(&pkid) {
            return;
        }
        let Some(confirm) = waiting.queued.pop_front() else {
            return;
        };
        if pkid == 0 {
            let _ = confirm.send(());
        } else {
            waiting.sent.insert(pkid, confirm);
        }
    }

    /// The broker acknowledged publish `pkid`.
    pub(super) fn acknowledged(&self, pkid: u16) {
        if let Some(confirm) = self.waiting().sent.remove(&pkid) {
            let _ = confirm.send(());
        }
    }

    /// A (re)connection; without the previous session rumqttc has dropped
    /// whatever was pending.
    pub(super) fn connected(&self, session_present: bool) {
        if !session_present {
            self.abandon();
        }
    }

    /// Tells every waiting publisher that its publish is not confirmed.
    pub(super) fn abandon(&self) {
        let mut waiting = self.waiting();
        waiting.queued.clear();
        waiting.sent.clear();
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn queued(confirmations: &Arc<Confirmations>) -> tokio::task::JoinHandle<bool> {
        let confirmations = confirmations.clone();
        let waiting = tokio::spawn(async move {
            let confirmed = confirmations.queue(async { Ok(()) }).await.unwrap();
            confirmed.await.is_ok()
        });
        tokio::task::yield_now().await;
        waiting
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_publish_is_confirmed_by_its_acknowledgement_not_by_a_resend() {
        let confirmations = Arc::new(Confirmations::default());
        let first = queued(&confirmations).await;
        let second = queued(&confirmations).await;
        confirmations.sent(7);
        confirmations.sent(8);
        // After a reconnection with the session, 7 goes out again.
        confirmations.sent(7);
        confirmations.acknowledged(8);
        assert!(second.await.unwrap());
        assert!(!first.is_finished());
        confirmations.acknowledged(7);
        assert!(first.await.unwrap());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn qos_0_is_confirmed_when_sent_and_a_lost_session_fails_the_rest() {
        let confirmations = Arc::new(Confirmations::default());
        let qos0 = queued(&confirmations).await;
        let pending = queued(&confirmations).await;
        confirmations.sent(0);
        assert!(qos0.await.unwrap());
        confirmations.sent(3);
        confirmations.connected(false);
        assert!(
            !pending.await.unwrap(),
            "publish again: the broker may not have it"
        );
    }
}
