//! The outbox: rule outputs on their way to the sinks, kept in an embedded
//! database (redb) so that a crash, a power cut or a dead sink loses none.
//!
//! Every delivery is appended here before the message that produced it is
//! acknowledged to the broker: one writer task commits appends in batches
//! (one fsync for many outputs) and only then drops their receipts. Each
//! sink reads its own table in id order ([`Outbox::read`]) and settles a
//! delivery once the service has it, or once its failure report took its
//! place in the same transaction. After a restart the sinks simply start
//! reading again: what was stored is delivered.
//!
//! A sink's reader that has read everything stored also gets each new
//! delivery straight from the writer ([`Outbox::follow`]) as the writer takes
//! it, before the fsync, so delivering does not wait for the disk; the writer
//! takes the next batch while one is being committed. A delivery settled
//! before its batch is committed is never written, and a batch waits
//! [`SETTLE_WINDOW`] for such settles before it is committed. The message
//! is still acknowledged only once each of its outputs is on disk or
//! delivered: after a crash in between, the broker sends it again and the
//! output goes out twice, never zero times.
//!
//! A following reader sets the pace: when its short hand-over queue is full,
//! the writer waits for room (up to [`HANDOVER_PATIENCE`]) before it takes
//! the next append, so the intake slows to what the sink delivers and the
//! deliveries are settled before their batch is written. Writing, reading
//! back and removing each delivery costs about as much as the rule's work. A
//! reader that does not make room in time (a sink slower than the intake, or
//! failing) is given up on until it follows again: its deliveries wait in the
//! outbox, and the other sinks' deliveries flow on.
//!
//! An outbox that holds nothing when the gateway stops is removed.
//!
//! The outbox is bounded (`max_bytes`); when it is full it either stops
//! taking appends, so the pipeline and then the intake wait and the broker
//! holds the messages, or drops the oldest deliveries and counts them.

mod store;

use crate::actions::Delivery;
use crate::mqtt::Receipt;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Batch, Ids, Store};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Requests one commit takes at most, so that receipts are released steadily.
const MAX_BATCH: usize = 4096;
/// Deliveries handed to a sink's reader and not taken yet, at most. Short, so
/// that a reader setting the pace is close behind the writer and settles
/// most deliveries before the batch that took them is committed.
const HANDOVER_QUEUE: usize = 64;
/// How long the writer waits for room in a following reader's hand-over
/// queue before it goes on without that reader, which then finds its
/// deliveries in the outbox: long enough for a reader that was not scheduled
/// for a while, short enough that a stuck sink stalls the others only once.
const HANDOVER_PATIENCE: Duration = Duration::from_millis(20);
/// A batch is committed no sooner than this after it took its first request,
/// unless it is full or a sync waits for it: a delivery that its sink settles
/// meanwhile is never written. Delays only the receipts of deliveries not yet
/// delivered, and by less than a commit takes.
const SETTLE_WINDOW: Duration = Duration::from_millis(2);
/// Appends waiting for the writer; when full, submitters wait.
const APPEND_QUEUE: usize = 8192;
/// The wait before a failed commit (a full or failing disk) is tried again.
const RETRY_COMMIT_AFTER: Duration = Duration::from_secs(1);

/// What to do when the outbox holds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Take no more outputs until deliveries make room: the rules, then the
    /// intake wait, and the broker keeps the unacknowledged messages.
    #[default]
    StopIntake,
    /// Remove the oldest stored deliveries to make room, counting each.
    DropOldest,
}

/// Where the outbox lives and how large it may grow.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

/// A sink's position in the outbox, given by [`Outbox::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkId(usize);

/// The outbox's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Deliveries stored for the configured sinks, not yet settled.
    pub records: u64,
    /// Bytes those deliveries take, keys included.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Deliveries removed unsent to make room (`when_full = "drop_oldest"`).
    pub dropped: u64,
    /// Transactions committed.
    pub commits: u64,
}

/// A handle on the outbox; cheap to clone. The writer ends once every handle
/// is dropped, after committing what they sent.
#[derive(Clone)]
pub struct Outbox {
    appends: mpsc::Sender<Request>,
    settles: mpsc::UnboundedSender<Settle>,
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<redb::Database>,
    /// See [`Outbox::delivery_name`].
    epoch: String,
    /// By [`SinkId`].
    sinks: Vec<SinkShared>,
    /// Stored deliveries of the configured sinks; the sinks' readers watch it
    /// to know when everything is delivered.
    records: watch::Sender<u64>,
    bytes: AtomicU64,
    dropped: AtomicU64,
    commits: AtomicU64,
    max_bytes: u64,
}

/// What the writer and a sink's reader share.
struct SinkShared {
    table: String,
    /// Notified after each commit that stored deliveries for the sink.
    stored: Notify,
    /// Where new deliveries are handed over, once the reader follows.
    follower: Mutex<Option<mpsc::Sender<Handed>>>,
}

/// A delivery handed to its sink's reader as the writer takes it, before it
/// is on disk.
pub struct Handed {
    /// Its id in the outbox, once committed.
    pub id: u64,
    /// The id of the sink's delivery before it (0: none). The reader takes
    /// this one only if that was the last it took; otherwise one between was
    /// not handed over, and the outbox has them all in order.
    pub after: u64,
    /// Shared with the batch that stores it unless it is settled first.
    pub delivery: Arc<Delivery>,
}

/// What goes through the writer's queue of appends, in order.
enum Request {
    Append {
        sink: SinkId,
        delivery: Delivery,
        /// Dropped once the delivery is on disk: acknowledges its message.
        receipt: Option<Receipt>,
    },
    /// Answered once every append queued before it is on disk.
    Sync(oneshot::Sender<()>),
}

/// A finished delivery to remove and, when it has one, the delivery (its
/// failure report) to store in its place in the same transaction.
struct Settle {
    sink: SinkId,
    id: u64,
    replacement: Option<(SinkId, Delivery)>,
}

/// See [`Outbox::delivery_name`]; written out (`<epoch>-<id>`) only by the
/// sinks that use it.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryName<'a> {
    epoch: &'a str,
    id: u64,
}

impl std::fmt::Display for DeliveryName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.id)
    }
}

/// The outbox has stopped; nothing more can be stored.
#[derive(Debug, thiserror::Error)]
#[error("the outbox has stopped")]
pub struct OutboxClosed;

impl Outbox {
    /// Opens the outbox for `sinks` (in the order their [`SinkId`]s follow)
    /// and starts its writer. Deliveries stored before are kept and counted.
    pub fn open(
        settings: &OutboxSettings,
        sinks: &[String],
    ) -> anyhow::Result<(Outbox, JoinHandle<()>)> {
        let store = Store::open(&settings.path, sinks)
            .map_err(|error| error.context(format!("outbox {}", settings.path.display())))?;
        let usage = store.usage().clone();
        let shared = Arc::new(Shared {
            db: store.database(),
            epoch: store.epoch().to_owned(),
            sinks: (0..sinks.len())
                .map(|sink| SinkShared {
                    table: store.table(SinkId(sink)).to_owned(),
                    stored: Notify::new(),
                    follower: Mutex::new(None),
                })
                .collect(),
            records: watch::Sender::new(usage.records.iter().sum()),
            bytes: AtomicU64::new(usage.bytes),
            dropped: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            max_bytes: settings.max_bytes,
        });
        let (appends, append_queue) = mpsc::channel(APPEND_QUEUE);
        let (settles, settle_queue) = mpsc::unbounded_channel();
        let writer = Writer {
            ids: store.ids().clone(),
            behind: vec![false; sinks.len()],
            store: Arc::new(Mutex::new(store)),
            shared: shared.clone(),
            when_full: settings.when_full,
            path: settings.path.clone(),
        };
        let task = tokio::spawn(writer.run(append_queue, settle_queue));
        let outbox = Outbox {
            appends,
            settles,
            shared,
        };
        Ok((outbox, task))
    }

    /// The id of the `position`-th sink given to [`Outbox::open`].
    pub fn sink(&self, position: usize) -> SinkId {
        assert!(position < self.shared.sinks.len(), "no sink at {position}");
        SinkId(position)
    }

    /// Stores `delivery` for `sink`; `receipt` is released once it is on
    /// disk. Waits while the writer is behind or the outbox is full.
    pub async fn append(
        &self,
        sink: SinkId,
        delivery: Delivery,
        receipt: Option<Receipt>,
    ) -> Result<(), OutboxClosed> {
        let append = Request::Append {
            sink,
            delivery,
            receipt,
        };
        self.appends.send(append).await.map_err(|_| OutboxClosed)
    }

    /// Returns once everything appended before the call is on disk.
    pub async fn sync(&self) -> Result<(), OutboxClosed> {
        let (synced, done) = oneshot::channel();
        self.appends
            .send(Request::Sync(synced))
            .await
            .map_err(|_| OutboxClosed)?;
        done.await.map_err(|_| OutboxClosed)
    }

    /// Removes delivery `id` of `sink`, which is finished; with a
    /// `replacement`, stores that in the same transaction. Never waits, and
    /// is taken even when the outbox is full.
    pub fn settle(
        &self,
        sink: SinkId,
        id: u64,
        replacement: Option<(SinkId, Delivery)>,
    ) -> Result<(), OutboxClosed> {
        let settle = Settle {
            sink,
            id,
            replacement,
        };
        self.settles.send(settle).map_err(|_| OutboxClosed)
    }

    /// A name for delivery `id` that no other delivery from this outbox has
    /// had, even after an emptied outbox was removed and ids started over;
    /// services that deduplicate (SNS FIFO topics) drop a repeat by it.
    pub fn delivery_name(&self, id: u64) -> DeliveryName<'_> {
        DeliveryName {
            epoch: &self.shared.epoch,
            id,
        }
    }

    /// Up to `limit` of `sink`'s deliveries with ids above `after`, in order;
    /// a record that cannot be decoded comes as its error.
    pub async fn read(
        &self,
        sink: SinkId,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Result<Delivery, String>)>> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            store::read(&shared.db, &shared.sinks[sink.0].table, after, limit)
        })
        .await?
    }

    /// Resolves after the next commit that stored deliveries for `sink` (at
    /// once when one came since the last call).
    pub async fn stored(&self, sink: SinkId) {
        self.shared.sinks[sink.0].stored.notified().await;
    }

    /// From now on, `sink`'s new deliveries are also handed over as the
    /// writer takes them, as long as the reader keeps up. One reader per
    /// sink: a second call ends the first's hand-over.
    pub fn follow(&self, sink: SinkId) -> mpsc::Receiver<Handed> {
        let (handing, handed) = mpsc::channel(HANDOVER_QUEUE);
        *lock(&self.shared.sinks[sink.0].follower) = Some(handing);
        handed
    }

    /// The number of stored deliveries of the configured sinks, as it changes.
    pub fn records(&self) -> watch::Receiver<u64> {
        self.shared.records.subscribe()
    }

    pub fn stats(&self) -> OutboxStats {
        let shared = &self.shared;
        OutboxStats {
            records: *shared.records.borrow(),
            bytes: shared.bytes.load(Ordering::Relaxed),
            max_bytes: shared.max_bytes,
            dropped: shared.dropped.load(Ordering::Relaxed),
            commits: shared.commits.load(Ordering::Relaxed),
        }
    }
}

/// What the writer takes for one commit. Its deliveries were handed to their
/// sinks' readers as they were taken.
#[derive(Default)]
struct Taken {
    batch: Batch,
    on_disk: OnDisk,
    /// When the first request was taken.
    since: Option<tokio::time::Instant>,
}

impl Taken {
    /// When the batch is to be committed, if it writes anything.
    fn due(&self) -> Option<tokio::time::Instant> {
        if self.batch.writes_nothing() {
            return None;
        }
        let since = self.since.expect("a batch that writes has taken a request");
        if self.batch.len() >= MAX_BATCH || !self.on_disk.syncs.is_empty() {
            return Some(since);
        }
        Some(since + SETTLE_WINDOW)
    }
}

/// What waits for a batch to be on disk.
#[derive(Default)]
struct OnDisk {
    /// Dropped: the messages behind the batch's outputs may be acknowledged.
    receipts: Vec<Receipt>,
    syncs: Vec<oneshot::Sender<()>>,
}

impl OnDisk {
    fn release(self) {
        drop(self.receipts);
        for sync in self.syncs {
            let _ = sync.send(());
        }
    }
}

/// A new delivery waiting for room in its sink reader's hand-over queue; the
/// writer takes no other append meanwhile.
struct Held {
    sink: SinkId,
    follower: mpsc::Sender<Handed>,
    handed: Handed,
    /// When the writer goes on without the reader.
    until: tokio::time::Instant,
}

impl Held {
    /// Room for the delivery, or `None` once the reader has not made any in
    /// time or has gone.
    async fn room(&self) -> Option<mpsc::OwnedPermit<Handed>> {
        let reserved = self.follower.clone().reserve_owned();
        tokio::time::timeout_at(self.until, reserved)
            .await
            .ok()?
            .ok()
    }
}

/// A batch being committed, and what waits for it.
struct Committing {
    task: JoinHandle<store::Committed>,
    on_disk: OnDisk,
}

/// The one task that writes: takes appends and settles, commits them in
/// batches, then releases receipts and wakes the sinks. While one batch is
/// being committed it takes the next, so a new delivery reaches its sink's
/// reader without waiting for that commit's fsync.
struct Writer {
    /// Locked by a commit on a blocking thread; by the writer only at close.
    store: Arc<Mutex<Store>>,
    shared: Arc<Shared>,
    when_full: WhenFull,
    /// The database file, for logs.
    path: PathBuf,
    /// The ids given out so far, committed or not.
    ids: Ids,
    /// By [`SinkId`]: whether the writer gave up waiting for the sink's
    /// reader, which has not made room in its hand-over queue since.
    behind: Vec<bool>,
}

impl Writer {
    async fn run(
        mut self,
        mut appends: mpsc::Receiver<Request>,
        mut settles: mpsc::UnboundedReceiver<Settle>,
    ) {
        let mut paused = false;
        let mut taking = Taken::default();
        let mut committing: Option<Committing> = None;
        let mut held: Option<Held> = None;
        loop {
            let full = self.when_full == WhenFull::StopIntake
                && self.shared.bytes.load(Ordering::Relaxed) >= self.shared.max_bytes;
            // With nothing left that could settle, waiting for room would be forever.
            let take_appends = !full || settles.is_closed();
            if paused == take_appends {
                paused = !take_appends;
                self.log_pause(paused);
            }
            let room = taking.batch.len() < MAX_BATCH;
            let due = committing.is_none().then(|| taking.due()).flatten();
            tokio::select! {
                biased;
                committed = async { (&mut committing.as_mut().expect("a commit").task).await },
                    if committing.is_some() =>
                {
                    self.committed(committed.expect("an outbox commit does not panic"));
                    committing.take().expect("a commit").on_disk.release();
                }
                Some(settle) = settles.recv(), if room => self.take_settle(&mut taking, settle),
                Some(request) = appends.recv(), if take_appends && held.is_none() && room => {
                    held = self.take(&mut taking, request);
                }
                permit = async { held.as_ref().expect("a held delivery").room().await }, if held.is_some() => {
                    let Held { sink, handed, .. } = held.take().expect("a held delivery");
                    match permit {
                        Some(permit) => {
                            permit.send(handed);
                        }
                        None => self.behind[sink.0] = true,
                    }
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {}
                // Both queues closed and empty, nothing being committed: every handle is gone.
                else => return self.close(),
            }
            while taking.batch.len() < MAX_BATCH {
                if let Ok(settle) = settles.try_recv() {
                    self.take_settle(&mut taking, settle);
                } else if let Some(request) = (take_appends && held.is_none())
                    .then(|| appends.try_recv().ok())
                    .flatten()
                {
                    held = self.take(&mut taking, request);
                } else {
                    break;
                }
            }
            if taking.batch.len() > 0 || !taking.on_disk.syncs.is_empty() {
                taking.since.get_or_insert_with(tokio::time::Instant::now);
            }
            if committing.is_some() {
                continue;
            }
            match taking.due() {
                None => {
                    // Everything before is on disk already, and what the
                    // batch took is delivered.
                    std::mem::take(&mut taking).on_disk.release();
                }
                Some(due) if due <= tokio::time::Instant::now() => {
                    let Taken { batch, on_disk, .. } = std::mem::take(&mut taking);
                    let task = tokio::spawn(self.commit(batch));
                    committing = Some(Committing { task, on_disk });
                }
                Some(_) => {}
            }
        }
    }

    /// Takes an append or a sync; an append whose sink's reader has no room
    /// for it comes back held.
    fn take(&mut self, taking: &mut Taken, request: Request) -> Option<Held> {
        match request {
            Request::Append {
                sink,
                delivery,
                receipt,
            } => {
                taking.on_disk.receipts.extend(receipt);
                self.add(taking, sink, delivery, true)
            }
            Request::Sync(synced) => {
                taking.on_disk.syncs.push(synced);
                None
            }
        }
    }

    /// The removal and the replacement of a settle go into the same batch,
    /// so that a failure report takes its delivery's place atomically.
    fn take_settle(&mut self, taking: &mut Taken, settle: Settle) {
        taking.batch.settle(settle.sink, settle.id);
        if let Some((sink, delivery)) = settle.replacement {
            // A settle never waits: the sinks' workers must not stall on each other.
            self.add(taking, sink, delivery, false);
        }
    }

    /// Gives `delivery` the next id and hands it to `sink`'s reader, where
    /// that follows and has room. Where it has none but kept up so far, and
    /// the writer may `wait`, the delivery comes back held for room.
    fn add(
        &mut self,
        taking: &mut Taken,
        sink: SinkId,
        delivery: Delivery,
        wait: bool,
    ) -> Option<Held> {
        let (id, after) = self.ids.give(sink);
        let delivery = Arc::new(delivery);
        let handed = || Handed {
            id,
            after,
            delivery: delivery.clone(),
        };
        let held = match lock(&self.shared.sinks[sink.0].follower).as_ref() {
            None => None,
            Some(follower) => match follower.try_reserve() {
                Ok(room) => {
                    self.behind[sink.0] = false;
                    room.send(handed());
                    None
                }
                Err(mpsc::error::TrySendError::Full(())) if wait && !self.behind[sink.0] => {
                    Some(Held {
                        sink,
                        follower: follower.clone(),
                        handed: handed(),
                        until: tokio::time::Instant::now() + HANDOVER_PATIENCE,
                    })
                }
                Err(_) => None,
            },
        };
        taking.batch.append(id, sink, delivery);
        held
    }

    /// Commits `batch` on a blocking thread, trying again until it succeeds:
    /// a delivery taken is never dropped, and meanwhile nothing is
    /// acknowledged.
    fn commit(&self, mut batch: Batch) -> impl Future<Output = store::Committed> + use<> {
        let (store, path) = (self.store.clone(), self.path.clone());
        let (max_bytes, when_full) = (self.shared.max_bytes, self.when_full);
        async move {
            loop {
                let store = store.clone();
                let (returned, result) = tokio::task::spawn_blocking(move || {
                    let result = lock(&store).commit(&batch, max_bytes, when_full);
                    (batch, result)
                })
                .await
                .expect("an outbox commit does not panic");
                batch = returned;
                match result {
                    Ok(committed) => return committed,
                    Err(error) => {
                        tracing::error!(
                            outbox = %path.display(),
                            "writing the outbox: {error:#}; trying again in {RETRY_COMMIT_AFTER:?}"
                        );
                        tokio::time::sleep(RETRY_COMMIT_AFTER).await;
                    }
                }
            }
        }
    }

    /// Publishes the new usage and wakes the sinks that got deliveries.
    fn committed(&self, committed: store::Committed) {
        let shared = &self.shared;
        let usage = &committed.usage;
        shared.commits.fetch_add(1, Ordering::Relaxed);
        shared.bytes.store(usage.bytes, Ordering::Relaxed);
        shared.records.send_replace(usage.records.iter().sum());
        if committed.dropped > 0 {
            shared
                .dropped
                .fetch_add(committed.dropped, Ordering::Relaxed);
            tracing::warn!(
                outbox = %self.path.display(),
                dropped = committed.dropped,
                "outbox full: dropped the oldest deliveries (outbox.when_full = \"drop_oldest\")"
            );
        }
        for sink in committed.appended_to {
            shared.sinks[sink.0].stored.notify_one();
        }
    }

    /// Every handle is gone: an outbox that holds nothing is removed, so a
    /// state directory keeps only outboxes with something to deliver.
    fn close(self) {
        if !lock(&self.store).holds_nothing() {
            return;
        }
        drop(self.store);
        drop(self.shared);
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(outbox = %self.path.display(), "removing the empty outbox: {error}");
        }
    }

    fn log_pause(&self, paused: bool) {
        if paused {
            tracing::warn!(
                outbox = %self.path.display(),
                max_bytes = self.shared.max_bytes,
                "outbox full: taking no more outputs until deliveries make room"
            );
        } else {
            tracing::info!(outbox = %self.path.display(), "outbox has room again");
        }
    }
}

/// Also after a panic elsewhere: the store's state is only replaced by a
/// commit that succeeded, and a follower is replaced whole.
fn lock<T>(locked: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    locked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Target;
    use bytes::Bytes;

    fn delivery(key: &str) -> Delivery {
        Delivery {
            rule: "archive".into(),
            ordering_key: 7,
            payload: Bytes::from_static(b"{}"),
            target: Target::Object {
                key: key.to_owned(),
            },
        }
    }

    fn unbounded_in(dir: &std::path::Path) -> OutboxSettings {
        OutboxSettings {
            path: dir.join("outbox.redb"),
            max_bytes: u64::MAX,
            when_full: WhenFull::StopIntake,
        }
    }

    #[tokio::test]
    async fn a_follower_is_handed_each_new_delivery_with_the_id_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let settings = unbounded_in(dir.path());
        let sinks = ["a".to_owned(), "b".to_owned()];
        {
            let (outbox, writer) = Outbox::open(&settings, &sinks).unwrap();
            outbox
                .append(outbox.sink(0), delivery("stored before"), None)
                .await
                .unwrap();
            drop(outbox);
            writer.await.unwrap();
        }
        let (outbox, _writer) = Outbox::open(&settings, &sinks).unwrap();
        let (a, b) = (outbox.sink(0), outbox.sink(1));
        let mut handed = outbox.follow(a);
        for (sink, key) in [(a, "1"), (b, "2"), (a, "3")] {
            outbox.append(sink, delivery(key), None).await.unwrap();
        }
        outbox.sync().await.unwrap();

        let handed: Vec<_> = std::iter::from_fn(|| handed.try_recv().ok())
            .map(|handed| (handed.after, handed.id, handed.delivery.target.clone()))
            .collect();
        let object = |key: &str| Target::Object {
            key: key.to_owned(),
        };
        assert_eq!(handed, [(1, 2, object("1")), (2, 4, object("3"))]);
        // The ids are the ones the deliveries were stored under.
        let stored: Vec<_> = outbox
            .read(a, 1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, delivery)| (id, delivery.unwrap().target))
            .collect();
        assert_eq!(stored, [(2, object("1")), (4, object("3"))]);
    }

    /// An outbox in `dir` with one sink, "a", whose reader follows.
    fn followed_in(dir: &std::path::Path) -> (Outbox, SinkId, mpsc::Receiver<Handed>) {
        let (outbox, _writer) = Outbox::open(&unbounded_in(dir), &["a".to_owned()]).unwrap();
        let a = outbox.sink(0);
        let handed = outbox.follow(a);
        (outbox, a, handed)
    }

    /// Appends `count` deliveries for `sink`.
    async fn append_some(outbox: &Outbox, sink: SinkId, count: u64) {
        for key in 0..count {
            let delivery = delivery(&key.to_string());
            outbox.append(sink, delivery, None).await.unwrap();
        }
    }

    /// The ids of the first deliveries `sink` has stored.
    async fn stored_ids(outbox: &Outbox, sink: SinkId) -> Vec<u64> {
        let stored = outbox.read(sink, 0, 10).await.unwrap();
        stored.into_iter().map(|(id, _)| id).collect()
    }

    /// Receives what `handed` holds now, as (after, id) pairs.
    fn handed_now(handed: &mut mpsc::Receiver<Handed>) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| handed.try_recv().ok())
            .map(|handed| (handed.after, handed.id))
            .collect()
    }

    // Paused time: it moves on only when every task waits, so the writer's
    // patience runs out only where the test takes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_reader_with_a_full_queue_sets_the_pace_instead_of_missing_a_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, a, mut handed) = followed_in(dir.path());
        let count = HANDOVER_QUEUE as u64 + 2;
        append_some(&outbox, a, count).await;
        for id in 1..=count {
            let next = tokio::time::timeout(Duration::from_secs(5), handed.recv()).await;
            let next = next.expect("handed over in time").expect("a delivery");
            assert_eq!((next.after, next.id), (id - 1, id));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_makes_no_room_in_time_is_waited_for_once_until_it_follows_again() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, a, mut handed) = followed_in(dir.path());
        let count = HANDOVER_QUEUE as u64 + 3;
        let started = tokio::time::Instant::now();
        append_some(&outbox, a, count).await;
        outbox.sync().await.unwrap();
        let waited = started.elapsed();
        assert!(
            (HANDOVER_PATIENCE..2 * HANDOVER_PATIENCE).contains(&waited),
            "waited {waited:?}"
        );
        let expected: Vec<_> = (1..=HANDOVER_QUEUE as u64).map(|id| (id - 1, id)).collect();
        assert_eq!(handed_now(&mut handed), expected);
        let stored = outbox.read(a, 0, 1000).await.unwrap();
        assert_eq!(
            stored.len() as u64,
            count,
            "every delivery is in the outbox"
        );

        // With room again, the next delivery is handed over at once.
        outbox.append(a, delivery("next"), None).await.unwrap();
        outbox.sync().await.unwrap();
        assert_eq!(handed_now(&mut handed), [(count, count + 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_settled_within_the_settle_window_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, a, mut handed) = followed_in(dir.path());
        let mut stored = outbox.records();
        append_some(&outbox, a, 2).await;
        // The writer has taken both; without the window it would commit them now.
        let settled = handed.recv().await.expect("a delivery");
        tokio::task::yield_now().await;
        outbox.settle(a, settled.id, None).unwrap();

        let one_stored = tokio::time::timeout(Duration::from_secs(5), stored.wait_for(|&n| n == 1));
        one_stored
            .await
            .expect("committed after the window")
            .unwrap();
        assert_eq!(stored_ids(&outbox, a).await, [2]);
        assert_eq!(outbox.stats().commits, 1);
    }

    /// Appends deliveries 1 and 2 of sink 0 while the test holds the
    /// database's write lock, with a sync after the first, so that the
    /// writer's first commit starts at once and waits, and the second
    /// delivery goes into the next batch; requires each handed over
    /// meanwhile. Runs `while_held`, releases the lock, and returns the ids
    /// then stored and the number of commits.
    async fn behind_a_waiting_commit(while_held: impl AsyncFnOnce(&Outbox)) -> (Vec<u64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, a, mut handed) = followed_in(dir.path());
        let mut hand_over = async || {
            let handed = tokio::time::timeout(Duration::from_secs(5), handed.recv()).await;
            handed.expect("handed over in time").expect("a delivery").id
        };
        let held = outbox.shared.db.begin_write().unwrap();
        outbox.append(a, delivery("1"), None).await.unwrap();
        let (synced, first_commit) = oneshot::channel();
        outbox.appends.send(Request::Sync(synced)).await.unwrap();
        assert_eq!(hand_over().await, 1);
        outbox.append(a, delivery("2"), None).await.unwrap();
        assert_eq!(hand_over().await, 2);
        while_held(&outbox).await;

        drop(held);
        first_commit.await.unwrap();
        outbox.sync().await.unwrap();
        (stored_ids(&outbox, a).await, outbox.stats().commits)
    }

    #[tokio::test]
    async fn a_delivery_is_handed_over_while_the_commit_before_it_is_under_way() {
        let nothing_committed = async |outbox: &Outbox| assert_eq!(outbox.stats().commits, 0);
        let (stored, commits) = behind_a_waiting_commit(nothing_committed).await;
        assert_eq!(stored, [1, 2]);
        assert_eq!(commits, 2);
    }

    #[tokio::test]
    async fn a_delivery_settled_before_its_batch_is_committed_is_never_written() {
        let settle_the_second =
            async |outbox: &Outbox| outbox.settle(outbox.sink(0), 2, None).unwrap();
        let (stored, commits) = behind_a_waiting_commit(settle_the_second).await;
        assert_eq!(stored, [1]);
        assert_eq!(commits, 1);
    }
}
