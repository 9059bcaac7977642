//! The outbox's database: one redb table per sink, deliveries under increasing
//! ids, each encoded with postcard behind a format byte. Synchronous; the
//! outbox runs it on blocking threads.

use super::{SinkId, WhenFull};
use crate::actions::Delivery;
use anyhow::Context as _;
use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use redb::{TableDefinition, TableHandle as _};
use std::path::Path;
use std::sync::Arc;

/// Bumped when [`Delivery`]'s encoding changes, so an old record is refused by
/// name instead of being misread.
const FORMAT: u8 = 1;
/// Table names are this prefix and the sink's name.
const TABLE_PREFIX: &str = "deliveries:";

type Records<'a> = TableDefinition<'a, u64, &'static [u8]>;
/// Facts about the outbox itself.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// The key of the outbox's epoch in [`META`].
const EPOCH: &str = "epoch";
/// Settled ids of a sink further apart than this are removed in separate
/// passes, so that a pass never reads through a long stretch of records it
/// keeps.
const MAX_REMOVAL_GAP: u64 = 256;

/// A write the outbox commits in one transaction.
#[derive(Default)]
pub(super) struct Batch {
    /// New deliveries in id order, each under the id the writer gave it
    /// ([`Ids::give`]); `None` where the delivery was settled before the
    /// batch was committed, so it is never written.
    appends: Vec<(u64, SinkId, Option<Arc<Delivery>>)>,
    /// Settled deliveries to remove, by sink and id.
    removals: Vec<(SinkId, u64)>,
    /// Appends still to write.
    unsettled: usize,
}

impl Batch {
    /// Adds `delivery` for `sink` under `id`, above every id in the batch.
    pub(super) fn append(&mut self, id: u64, sink: SinkId, delivery: Arc<Delivery>) {
        debug_assert!(self.appends.last().is_none_or(|&(last, ..)| last < id));
        self.appends.push((id, sink, Some(delivery)));
        self.unsettled += 1;
    }

    /// Settles delivery `id` of `sink`: appended in this batch, it is never
    /// written; stored before, it is removed.
    pub(super) fn settle(&mut self, sink: SinkId, id: u64) {
        if let Ok(position) = self.appends.binary_search_by_key(&id, |&(id, ..)| id)
            && self.appends[position].2.take().is_some()
        {
            self.unsettled -= 1;
            return;
        }
        self.removals.push((sink, id));
    }

    /// Appends and removals taken, settled appends included.
    pub(super) fn len(&self) -> usize {
        self.appends.len() + self.removals.len()
    }

    /// Whether committing the batch would leave the disk as it is.
    pub(super) fn writes_nothing(&self) -> bool {
        self.unsettled == 0 && self.removals.is_empty()
    }
}

/// What a committed batch changed.
pub(super) struct Committed {
    /// How full the outbox is now.
    pub(super) usage: Usage,
    /// The sinks that got new deliveries.
    pub(super) appended_to: Vec<SinkId>,
    /// Old deliveries removed to make room (`when_full = "drop_oldest"`).
    pub(super) dropped: u64,
}

/// How full the outbox is; kept by the one writer, so never read back from disk.
#[derive(Debug, Clone, Default)]
pub(super) struct Usage {
    /// Stored deliveries per configured sink, by [`SinkId`].
    pub(super) records: Vec<u64>,
    /// Encoded bytes of all stored deliveries, keys included.
    pub(super) bytes: u64,
}

/// Where the ids stand: read from the tables at open, then kept by the
/// outbox's writer, which gives each delivery its id as it takes it.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    pub(super) next: u64,
    /// The id of each configured sink's newest delivery, by [`SinkId`]; 0
    /// when it has had none.
    pub(super) newest: Vec<u64>,
}

impl Ids {
    /// The next id, for a delivery of `sink`, and the id of that sink's
    /// delivery before it (0: none).
    pub(super) fn give(&mut self, sink: SinkId) -> (u64, u64) {
        let id = self.next;
        self.next += 1;
        (id, std::mem::replace(&mut self.newest[sink.0], id))
    }
}

pub(super) struct Store {
    db: Arc<Database>,
    /// Table name by [`SinkId`].
    tables: Vec<String>,
    usage: Usage,
    /// Deliveries of sinks that are not configured now, found at open.
    foreign_records: u64,
    /// As they stood at open.
    ids: Ids,
    /// Made when the file is created: with a record's id, it names a delivery
    /// uniquely even after an emptied outbox was removed and ids start over.
    epoch: String,
}

impl Store {
    /// Opens (or creates) the database at `path` for `sinks`, and counts what
    /// it holds. Tables of sinks that are no longer configured are left alone.
    pub(super) fn open(path: &Path, sinks: &[String]) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
        }
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "another gateway process uses it: give each gateway its own `gateway.state_dir` or `outbox.path`"
            ),
            error => anyhow::Error::new(error),
        })?;
        let tables: Vec<String> = sinks
            .iter()
            .map(|sink| format!("{TABLE_PREFIX}{sink}"))
            .collect();
        let mut store = Store {
            db: Arc::new(db),
            tables,
            usage: Usage {
                records: vec![0; sinks.len()],
                bytes: 0,
            },
            foreign_records: 0,
            ids: Ids {
                next: 1,
                newest: vec![0; sinks.len()],
            },
            epoch: String::new(),
        };
        store.epoch = store.load_epoch()?;
        store.count()?;
        Ok(store)
    }

    /// The outbox's epoch, made and stored when the file is new.
    fn load_epoch(&self) -> anyhow::Result<String> {
        let txn = self.db.begin_write()?;
        let epoch = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(EPOCH)?.map(|epoch| epoch.value().to_owned());
            match stored {
                Some(epoch) => epoch,
                None => {
                    let epoch = uuid::Uuid::new_v4().simple().to_string();
                    meta.insert(EPOCH, epoch.as_str())?;
                    epoch
                }
            }
        };
        txn.commit()?;
        Ok(epoch)
    }

    pub(super) fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Fills in the usage and the ids from what the tables hold, and logs
    /// deliveries left from before.
    fn count(&mut self) -> anyhow::Result<()> {
        let txn = self.db.begin_read()?;
        for handle in txn.list_tables()? {
            let name = handle.name();
            let Some(sink) = name.strip_prefix(TABLE_PREFIX) else {
                continue;
            };
            let table = txn.open_table(Records::new(name))?;
            let (mut records, mut newest) = (0u64, 0);
            for entry in table.iter()? {
                let (id, value) = entry?;
                records += 1;
                self.usage.bytes += record_size(value.value());
                newest = id.value();
            }
            self.ids.next = self.ids.next.max(newest + 1);
            match self.tables.iter().position(|table| table == name) {
                Some(position) => {
                    self.usage.records[position] = records;
                    self.ids.newest[position] = newest;
                    if records > 0 {
                        tracing::info!(sink, records, "delivering what the outbox held at start");
                    }
                }
                None if records > 0 => {
                    self.foreign_records += records;
                    tracing::warn!(
                        sink,
                        records,
                        "the outbox holds deliveries for a sink that is no longer configured; they wait until it is"
                    );
                }
                None => {}
            }
        }
        Ok(())
    }

    pub(super) fn usage(&self) -> &Usage {
        &self.usage
    }

    /// Where the ids stood at open.
    pub(super) fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Whether no table holds a delivery.
    pub(super) fn holds_nothing(&self) -> bool {
        self.foreign_records == 0 && self.usage.records.iter().all(|&records| records == 0)
    }

    pub(super) fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    pub(super) fn table(&self, sink: SinkId) -> &str {
        &self.tables[sink.0]
    }

    /// Writes `batch` durably (fsync) in one transaction. With
    /// [`WhenFull::DropOldest`], the oldest deliveries go until the stored
    /// bytes are within `max_bytes` again. On error nothing of it is written.
    pub(super) fn commit(
        &mut self,
        batch: &Batch,
        max_bytes: u64,
        when_full: WhenFull,
    ) -> anyhow::Result<Committed> {
        let txn = self.db.begin_write()?;
        let (usage, appended_to, dropped) = {
            let mut writing = Writing {
                txn: &txn,
                names: &self.tables,
                open: self.tables.iter().map(|_| None).collect(),
                usage: self.usage.clone(),
                appended_to: Vec::new(),
            };
            for (id, sink, delivery) in &batch.appends {
                if let Some(delivery) = delivery {
                    writing.append(*id, *sink, delivery)?;
                }
            }
            let mut removals = batch.removals.clone();
            removals.sort_unstable_by_key(|&(sink, id)| (sink.0, id));
            for of_one_sink in removals.chunk_by(|(a, _), (b, _)| a == b) {
                writing.remove_all(of_one_sink)?;
            }
            let mut dropped = 0;
            if when_full == WhenFull::DropOldest {
                while writing.usage.bytes > max_bytes && writing.drop_oldest()? {
                    dropped += 1;
                }
            }
            // Its tables borrow the transaction, which the commit takes.
            (writing.usage, writing.appended_to, dropped)
        };
        txn.commit()?;
        self.usage = usage;
        Ok(Committed {
            usage: self.usage.clone(),
            appended_to,
            dropped,
        })
    }
}

/// One write transaction under way, and the usage it will leave.
struct Writing<'txn> {
    txn: &'txn redb::WriteTransaction,
    /// Table name by [`SinkId`].
    names: &'txn [String],
    /// Each table, opened once per transaction: opening costs as much as an insert.
    open: Vec<Option<redb::Table<'txn, u64, &'static [u8]>>>,
    usage: Usage,
    appended_to: Vec<SinkId>,
}

impl<'txn> Writing<'txn> {
    fn table(
        &mut self,
        sink: SinkId,
    ) -> anyhow::Result<&mut redb::Table<'txn, u64, &'static [u8]>> {
        let table = &mut self.open[sink.0];
        if table.is_none() {
            *table = Some(self.txn.open_table(Records::new(&self.names[sink.0]))?);
        }
        Ok(table.as_mut().expect("opened above"))
    }

    fn append(&mut self, id: u64, sink: SinkId, delivery: &Delivery) -> anyhow::Result<()> {
        let value = encode(delivery)?;
        self.table(sink)?.insert(id, value.as_slice())?;
        self.usage.records[sink.0] += 1;
        self.usage.bytes += record_size(&value);
        if !self.appended_to.contains(&sink) {
            self.appended_to.push(sink);
        }
        Ok(())
    }

    /// Removes the deliveries `removals` of one sink, in id order; those gone
    /// already (`drop_oldest` took them) are skipped. Each run of nearby ids
    /// goes in one pass of redb's cursor, which costs a fraction of a lookup
    /// and a removal per id; a sink settles its deliveries nearly in order.
    fn remove_all(&mut self, removals: &[(SinkId, u64)]) -> anyhow::Result<()> {
        let Some(&(sink, _)) = removals.first() else {
            return Ok(());
        };
        for run in removals.chunk_by(|(_, a), (_, b)| b - a <= MAX_REMOVAL_GAP) {
            let (first, last) = (run[0].1, run[run.len() - 1].1);
            let mut settled = run.iter().map(|&(_, id)| id).peekable();
            let (mut records, mut bytes) = (0, 0);
            self.table(sink)?.retain_in(first..=last, |id, value| {
                while settled.next_if(|&next| next < id).is_some() {}
                if settled.next_if_eq(&id).is_none() {
                    return true;
                }
                records += 1;
                bytes += record_size(value);
                false
            })?;
            self.usage.records[sink.0] -= records;
            self.usage.bytes -= bytes;
        }
        Ok(())
    }

    /// Removes the oldest delivery of all sinks; false when there is none.
    fn drop_oldest(&mut self) -> anyhow::Result<bool> {
        let mut oldest: Option<(u64, SinkId)> = None;
        for position in 0..self.names.len() {
            let sink = SinkId(position);
            if let Some((id, _)) = self.table(sink)?.first()? {
                let id = id.value();
                if oldest.is_none_or(|(oldest_id, _)| id < oldest_id) {
                    oldest = Some((id, sink));
                }
            }
        }
        let Some((id, sink)) = oldest else {
            return Ok(false);
        };
        self.remove_all(&[(sink, id)])?;
        Ok(true)
    }
}

/// Up to `limit` deliveries of table `table` with ids above `after`, in id
/// order; a record that cannot be decoded comes as its error.
pub(super) fn read(
    db: &Database,
    table: &str,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<(u64, Result<Delivery, String>)>> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(Records::new(table)) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut deliveries = Vec::new();
    for entry in table.range(after.saturating_add(1)..)?.take(limit) {
        let (id, value) = entry?;
        deliveries.push((id.value(), decode(value.value())));
    }
    Ok(deliveries)
}

fn record_size(value: &[u8]) -> u64 {
    // The key is a u64.
    value.len() as u64 + 8
}

fn encode(delivery: &Delivery) -> anyhow::Result<Vec<u8>> {
    postcard::to_extend(delivery, vec![FORMAT]).context("encoding a delivery")
}

fn decode(bytes: &[u8]) -> Result<Delivery, String> {
    match bytes.split_first() {
        Some((&FORMAT, record)) => postcard::from_bytes(record).map_err(|error| error.to_string()),
        Some((format, _)) => Err(format!(
            "stored in format {format}; this gateway reads format {FORMAT}"
        )),
        None => Err("empty record".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Target;
    use bytes::Bytes;

    fn delivery(payload: &str) -> Arc<Delivery> {
        Arc::new(Delivery {
            rule: "archive".into(),
            ordering_key: 7,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            target: Target::Object {
                key: format!("key/{payload}"),
            },
        })
    }

    fn payloads(store: &Store, sink: SinkId) -> Vec<String> {
        read(&store.database(), store.table(sink), 0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, delivery)| String::from_utf8(delivery.unwrap().payload.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn deliveries_survive_reopening_and_settled_ones_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let sinks = ["a".to_owned(), "b".to_owned()];
        let (a, b) = (SinkId(0), SinkId(1));
        {
            let mut store = Store::open(&path, &sinks).unwrap();
            let mut ids = store.ids().clone();
            let mut append = |batch: &mut Batch, sink, payload| {
                batch.append(ids.give(sink).0, sink, delivery(payload));
            };
            let mut batch = Batch::default();
            append(&mut batch, a, "1");
            append(&mut batch, b, "2");
            append(&mut batch, a, "3");
            store
                .commit(&batch, u64::MAX, WhenFull::StopIntake)
                .unwrap();
            // Delivery 1 failed for good; its report goes to sink b instead.
            let mut settle = Batch::default();
            append(&mut settle, b, "report");
            settle.settle(a, 1);
            store
                .commit(&settle, u64::MAX, WhenFull::StopIntake)
                .unwrap();
        }
        let store = Store::open(&path, &sinks).unwrap();
        assert_eq!(payloads(&store, a), ["3"]);
        assert_eq!(payloads(&store, b), ["2", "report"]);
        assert_eq!(store.usage().records, [1, 2]);
        // Ids keep increasing across restarts.
        assert_eq!(store.ids().next, 5);
        assert_eq!(store.ids().newest, [3, 4]);
    }

    #[test]
    fn a_delivery_settled_in_the_batch_that_appends_it_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = ["a".to_owned()];
        let mut store = Store::open(&dir.path().join("outbox.redb"), &sinks).unwrap();
        let mut batch = Batch::default();
        batch.append(1, SinkId(0), delivery("1"));
        batch.append(2, SinkId(0), delivery("2"));
        batch.settle(SinkId(0), 1);
        assert!(!batch.writes_nothing());
        batch.settle(SinkId(0), 2);
        assert!(batch.writes_nothing());
        batch.append(3, SinkId(0), delivery("3"));
        store
            .commit(&batch, u64::MAX, WhenFull::StopIntake)
            .unwrap();
        assert_eq!(payloads(&store, SinkId(0)), ["3"]);
        assert_eq!(store.usage().records, [1]);
        assert_eq!(
            store.usage().bytes,
            record_size(&encode(&delivery("3")).unwrap())
        );
    }

    #[test]
    fn settled_deliveries_go_and_the_others_stay_however_far_apart_their_ids_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let sinks = ["a".to_owned(), "b".to_owned()];
        let sink_of = |id: u64| SinkId(usize::from(id.is_multiple_of(3)));
        let mut store = Store::open(&path, &sinks).unwrap();
        let mut batch = Batch::default();
        for id in 1..=2000 {
            batch.append(id, sink_of(id), delivery(&id.to_string()));
        }
        store
            .commit(&batch, u64::MAX, WhenFull::StopIntake)
            .unwrap();
        // Runs, strays far from them, out of order, and ids never stored.
        let settled: Vec<u64> = (10..700)
            .chain([1999, 2, 1500, 1501, 4, 900, 5000])
            .filter(|id: &u64| !id.is_multiple_of(7))
            .collect();
        let mut settle = Batch::default();
        for &id in &settled {
            settle.settle(sink_of(id), id);
        }
        store
            .commit(&settle, u64::MAX, WhenFull::StopIntake)
            .unwrap();
        for sink in [SinkId(0), SinkId(1)] {
            let stored: Vec<u64> = read(&store.database(), store.table(sink), 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let expected: Vec<u64> = (1..=2000)
                .filter(|&id| sink_of(id) == sink && !settled.contains(&id))
                .collect();
            assert_eq!(stored, expected);
        }
        // The usage kept by the commits is what the disk holds.
        let kept = store.usage().clone();
        drop(store);
        let reopened = Store::open(&path, &sinks).unwrap();
        assert_eq!(reopened.usage().records, kept.records);
        assert_eq!(reopened.usage().bytes, kept.bytes);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_deliveries_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = ["a".to_owned(), "b".to_owned()];
        let mut store = Store::open(&dir.path().join("outbox.redb"), &sinks).unwrap();
        let one = record_size(&encode(&delivery("0")).unwrap());
        let mut batch = Batch::default();
        for n in 0..10 {
            batch.append(n as u64 + 1, SinkId(n % 2), delivery(&n.to_string()));
        }
        let committed = store.commit(&batch, 4 * one, WhenFull::DropOldest).unwrap();
        assert_eq!(committed.dropped, 6);
        assert_eq!(payloads(&store, SinkId(0)), ["6", "8"]);
        assert_eq!(payloads(&store, SinkId(1)), ["7", "9"]);
        assert_eq!(store.usage().bytes, 4 * one);
    }

    #[test]
    fn the_epoch_stays_with_the_file_and_a_new_file_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let first = Store::open(&path, &[]).unwrap().epoch().to_owned();
        assert_eq!(Store::open(&path, &[]).unwrap().epoch(), first);
        std::fs::remove_file(&path).unwrap();
        assert_ne!(Store::open(&path, &[]).unwrap().epoch(), first);
    }

    #[test]
    fn a_second_process_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let _first = Store::open(&path, &[]).unwrap();
        let error = Store::open(&path, &[]).err().unwrap().to_string();
        assert!(error.contains("another gateway process"), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn any_stored_bytes_decode_or_are_refused_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let _ = decode(&bytes);
        }

        #[test]
        fn every_delivery_comes_back_as_it_was_stored(
            rule in ".{0,40}",
            ordering_key in proptest::prelude::any::<u64>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            topic in ".{0,60}",
            retain in proptest::prelude::any::<bool>(),
        ) {
            let delivery = Delivery {
                rule: rule.as_str().into(),
                ordering_key,
                payload: Bytes::from(payload),
                target: Target::Publish {
                    topic,
                    qos: crate::message::QoS::AtLeastOnce,
                    retain,
                    user_properties: Vec::new(),
                },
            };
            let decoded = decode(&encode(&delivery).unwrap()).unwrap();
            proptest::prop_assert_eq!(format!("{decoded:?}"), format!("{delivery:?}"));
        }
    }

    #[test]
    fn a_record_of_another_format_is_refused_by_name() {
        let mut bytes = encode(&delivery("1")).unwrap();
        bytes[0] = 9;
        assert_eq!(
            decode(&bytes).unwrap_err(),
            "stored in format 9; this gateway reads format 1"
        );
    }
}
