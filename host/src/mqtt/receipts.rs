//! Acknowledging inbound messages only once they are safe. Subscriber
//! connections take QoS 1 messages with manual acks: a message's PUBACK goes
//! out when the last clone of its [`Receipt`] is dropped — for the gateway,
//! after its rules ran and their outputs are in the outbox. Until then the
//! broker keeps the message for the session, so a crash loses nothing it had
//! delivered. PUBACKs leave in the order the messages came (MQTT 3.1.1 §4.6):
//! a slow message holds back the acknowledgements behind it, never the
//! messages.

use super::connection::Client;
use crate::message::QoS;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Held by whatever still has to take care of a message; dropping the last
/// clone acknowledges it.
#[derive(Clone)]
pub struct Receipt(Arc<Unsettled>);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Receipt").field(&self.0.position).finish()
    }
}

struct Unsettled {
    position: Position,
    settled: mpsc::UnboundedSender<Position>,
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        // The connection's task may have ended; the broker then resends.
        let _ = self.settled.send(self.position);
    }
}

/// Which message of which connection a receipt stands for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Position {
    connection: u64,
    sequence: u64,
}

/// The unacknowledged messages of one subscriber connection, in arrival order.
pub(super) struct AckQueue {
    /// Counts (re)connections: packet ids are only valid on the connection
    /// that received them, and after a reconnection the broker resends
    /// whatever was not acknowledged.
    connection: u64,
    /// The sequence number of `pending.front()`.
    first: u64,
    pending: VecDeque<Pending>,
    settled: mpsc::UnboundedSender<Position>,
}

struct Pending {
    qos: QoS,
    pkid: u16,
    settled: bool,
}

impl AckQueue {
    /// A queue, and where dropped receipts report to: feed what arrives there
    /// to [`AckQueue::settle`].
    pub(super) fn new() -> (AckQueue, mpsc::UnboundedReceiver<Position>) {
        let (settled, reports) = mpsc::unbounded_channel();
        let queue = AckQueue {
            connection: 0,
            first: 0,
            pending: VecDeque::new(),
            settled,
        };
        (queue, reports)
    }

    /// Whether every message received has been acknowledged.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A new connection: what the previous one left unacknowledged comes again.
    pub(super) fn reconnected(&mut self) {
        self.connection += 1;
        self.first = 0;
        self.pending.clear();
    }

    /// A message arrived with `qos` and packet id `pkid`; its receipt, or
    /// `None` when QoS 0 needs no acknowledgement.
    pub(super) fn receive(&mut self, qos: QoS, pkid: u16) -> Option<Receipt> {
        if qos == QoS::AtMostOnce {
            return None;
        }
        let position = Position {
            connection: self.connection,
            sequence: self.first + self.pending.len() as u64,
        };
        self.pending.push_back(Pending {
            qos,
            pkid,
            settled: false,
        });
        Some(Receipt(Arc::new(Unsettled {
            position,
            settled: self.settled.clone(),
        })))
    }

    /// A receipt was dropped: acknowledges every settled message at the head.
    pub(super) fn settle(&mut self, position: Position, client: &Client) {
        if position.connection != self.connection {
            return;
        }
        let index = position.sequence.wrapping_sub(self.first);
        if let Some(pending) = usize::try_from(index)
            .ok()
            .and_then(|index| self.pending.get_mut(index))
        {
            pending.settled = true;
        }
        self.flush(client);
    }

    /// Sends the PUBACKs that are due. A full request queue leaves them for
    /// the next call: this runs on the task that drains that queue.
    pub(super) fn flush(&mut self, client: &Client) {
        while let Some(head) = self.pending.front().filter(|head| head.settled) {
            if client.ack(head.qos, head.pkid).is_err() {
                return;
            }
            self.pending.pop_front();
            self.first += 1;
        }
    }
}
