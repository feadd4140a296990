//! Durable metadata: what core asks to persist (`Output::Persist`), kept in
//! an embedded database (redb) behind a trait another backend (Redis) can
//! implement. Writes are committed (fsynced) before the node sends anything
//! that depends on them.
//!
//! Layout: `meta` (identity, cluster, the authority's header and its latest
//! state snapshot), `log` (feed entries after the snapshot, by sequence),
//! `sets` (recovery progress). The log is compacted into the snapshot so the
//! database stays proportional to the state plus the retained feed.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use stretchfs_core::authority::AuthorityStore;
use stretchfs_core::codec::{decode_value, encode_value, DecodeError};
use stretchfs_core::compaction::{compaction_due, first_kept, FeedHeader, FeedLoader};
use stretchfs_core::feed::{FeedEntry, Snapshot};
use stretchfs_core::snapshot_transfer::encode_snapshot;
use stretchfs_core::state::ClusterState;
use stretchfs_core::{ClusterId, DurableState, LogId, NodeId, Record};

/// What compaction needs of the authority.
#[derive(Clone, Copy)]
pub struct Compaction<'a> {
    pub head: u64,
    pub state: &'a ClusterState,
}

impl<'a> Compaction<'a> {
    pub fn of(store: &'a AuthorityStore) -> Compaction<'a> {
        Compaction {
            head: store.log.head(),
            state: &store.state,
        }
    }
}

/// Where a node keeps what it must not lose.
pub trait MetadataStore: Send {
    /// Everything written so far.
    fn load(&self) -> Result<DurableState, MetaError>;
    /// Writes `records` durably, in one transaction. `authority` is the
    /// authority's feed head and state once they are applied (used to
    /// compact the log into a snapshot).
    fn write(
        &mut self,
        records: &[Record],
        authority: Option<Compaction<'_>>,
    ) -> Result<(), MetaError>;
}

/// The encoding of what this file keeps: bumped whenever a stored type
/// changes shape (3: registry entries carry the node's start; 4: snapshots
/// name the removed nodes).
const FORMAT: u16 = 4;

#[derive(Debug)]
pub enum MetaError {
    Db(String),
    Corrupt(String),
    /// Written by a version that encodes its records differently.
    Format(String),
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Db(e) => write!(f, "metadata database: {e}"),
            MetaError::Corrupt(e) => write!(f, "metadata database is corrupt: {e}"),
            MetaError::Format(found) => write!(
                f,
                "metadata database has format {found}, this version reads {FORMAT:?}: \
                 start with an empty data directory (or run the version that wrote it)"
            ),
        }
    }
}

impl std::error::Error for MetaError {}

impl<E: Into<redb::Error>> From<E> for MetaError {
    fn from(e: E) -> MetaError {
        MetaError::Db(e.into().to_string())
    }
}

fn corrupt(what: &str, e: DecodeError) -> MetaError {
    MetaError::Corrupt(format!("{what}: {e}"))
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SETS: TableDefinition<(u8, u64), ()> = TableDefinition::new("sets");
/// Copies of deleted content waiting for a re-upload: (hash, store) -> meta.
const ORPHANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("orphans");
/// Drop orders not yet answered: (hash, store) -> fence.
const DROPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("drops");
/// The last inventory report applied per store: (incarnation, counter).
const REPORTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("reports");

const SET_RESTORED: u8 = 1;
const SET_SYNCED: u8 = 2;
const SET_EXPECTED: u8 = 3;

/// The authority's durable header.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AuthorityHeader {
    cluster: ClusterId,
    log: LogId,
    retain: usize,
    recovered: bool,
}

pub struct RedbStore {
    db: Database,
    /// Compact once this many entries sit in the log table beyond `retain`.
    slack: u64,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, MetaError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("format")?.map(|v| v.value().to_vec());
            match found {
                Some(f) if f == FORMAT.to_le_bytes() => {}
                Some(f) => return Err(MetaError::Format(format!("{f:?}"))),
                None if meta.get("node")?.is_some() => {
                    return Err(MetaError::Format("none (an earlier version)".into()))
                }
                None => {
                    meta.insert("format", &FORMAT.to_le_bytes()[..])?;
                }
            }
            drop(meta);
            txn.open_table(LOG)?;
            txn.open_table(SETS)?;
            txn.open_table(REPORTS)?;
            txn.open_table(ORPHANS)?;
            txn.open_table(DROPS)?;
        }
        txn.commit()?;
        Ok(RedbStore { db, slack: 10_000 })
    }

    #[cfg(test)]
    fn with_slack(mut self, slack: u64) -> RedbStore {
        self.slack = slack;
        self
    }
}

impl MetadataStore for RedbStore {
    fn load(&self) -> Result<DurableState, MetaError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, MetaError> {
            Ok(meta.get(key)?.map(|v| v.value().to_vec()))
        };
        let mut d = DurableState::default();
        if let Some(b) = get("node")? {
            d.node = Some(decode_value::<NodeId>(&b).map_err(|e| corrupt("node", e))?);
        }
        if let Some(b) = get("incarnation")? {
            d.incarnation = decode_value(&b).map_err(|e| corrupt("incarnation", e))?;
        }
        if let Some(b) = get("cluster")? {
            d.cluster = Some(decode_value(&b).map_err(|e| corrupt("cluster", e))?);
        }
        let Some(h) = get("authority")? else {
            return Ok(d);
        };
        let header: AuthorityHeader = decode_value(&h).map_err(|e| corrupt("authority", e))?;
        let snapshot: Option<Snapshot> = match get("snapshot")? {
            Some(b) => Some(decode_value(&b).map_err(|e| corrupt("snapshot", e))?),
            None => None,
        };
        let mut loader = FeedLoader::new(
            FeedHeader {
                cluster: header.cluster,
                log: header.log,
                retain: header.retain,
                recovered: header.recovered,
            },
            snapshot.as_ref(),
        );
        let log = txn.open_table(LOG)?;
        for row in log.iter()? {
            let (k, v) = row?;
            let entry: FeedEntry = decode_value(v.value()).map_err(|e| corrupt("log", e))?;
            if entry.seq != k.value() {
                return Err(MetaError::Corrupt(format!(
                    "log entry {} under key {}",
                    entry.seq,
                    k.value()
                )));
            }
            loader
                .row(entry)
                .map_err(|e| MetaError::Corrupt(e.to_string()))?;
        }
        let mut store = loader
            .finish()
            .map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let sets = txn.open_table(SETS)?;
        for row in sets.iter()? {
            let (k, _) = row?;
            let (kind, node) = k.value();
            let set = match kind {
                SET_RESTORED => &mut store.restored,
                SET_SYNCED => &mut store.synced,
                SET_EXPECTED => &mut store.expected,
                other => return Err(MetaError::Corrupt(format!("set kind {other}"))),
            };
            set.insert(NodeId(node));
        }
        for row in txn.open_table(REPORTS)?.iter()? {
            let (k, v) = row?;
            let (incarnation, counter) = v.value();
            let seq = stretchfs_core::message::VoteSeq {
                incarnation,
                counter,
            };
            store.reports.insert(NodeId(k.value()), seq);
        }
        for row in txn.open_table(ORPHANS)?.iter()? {
            let (k, v) = row?;
            let key = decode_value(k.value()).map_err(|e| corrupt("orphans", e))?;
            let meta = decode_value(v.value()).map_err(|e| corrupt("orphans", e))?;
            store.orphans.insert(key, meta);
        }
        for row in txn.open_table(DROPS)?.iter()? {
            let (k, v) = row?;
            let key = decode_value(k.value()).map_err(|e| corrupt("drops", e))?;
            let upto = decode_value(v.value()).map_err(|e| corrupt("drops", e))?;
            store.drops_pending.insert(key, upto);
        }
        d.authority = Some(store);
        Ok(d)
    }

    fn write(
        &mut self,
        records: &[Record],
        authority: Option<Compaction<'_>>,
    ) -> Result<(), MetaError> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut log = txn.open_table(LOG)?;
            let mut sets = txn.open_table(SETS)?;
            let mut reports = txn.open_table(REPORTS)?;
            let mut orphans = txn.open_table(ORPHANS)?;
            let mut drops = txn.open_table(DROPS)?;
            for r in records {
                match r {
                    Record::Identity { node } => {
                        meta.insert("node", encode_value(node).as_slice())?;
                    }
                    Record::Incarnation(n) => {
                        meta.insert("incarnation", encode_value(n).as_slice())?;
                    }
                    Record::Cluster(c) => {
                        meta.insert("cluster", encode_value(c).as_slice())?;
                    }
                    Record::AuthorityCreated {
                        cluster,
                        log: log_id,
                        retain,
                    } => {
                        // A new log: nothing of an old one survives.
                        meta.remove("snapshot")?;
                        log.retain(|_, _| false)?;
                        sets.retain(|_, _| false)?;
                        reports.retain(|_, _| false)?;
                        orphans.retain(|_, _| false)?;
                        drops.retain(|_, _| false)?;
                        let header = AuthorityHeader {
                            cluster: *cluster,
                            log: *log_id,
                            retain: *retain,
                            recovered: false,
                        };
                        meta.insert("authority", encode_value(&header).as_slice())?;
                    }
                    Record::Appended(entry) => {
                        log.insert(entry.seq, encode_value(entry).as_slice())?;
                    }
                    Record::Recovered => {
                        if let Some(mut h) = header(&meta)? {
                            h.recovered = true;
                            meta.insert("authority", encode_value(&h).as_slice())?;
                        }
                    }
                    Record::Restored(n) => {
                        sets.insert((SET_RESTORED, n.0), ())?;
                    }
                    Record::Synced(n) => {
                        sets.insert((SET_SYNCED, n.0), ())?;
                    }
                    Record::Expected(n) => {
                        sets.insert((SET_EXPECTED, n.0), ())?;
                    }
                    Record::Orphan { hash, store, meta } => {
                        let key = encode_value(&(*hash, *store));
                        match meta {
                            Some(m) => {
                                orphans.insert(key.as_slice(), encode_value(m).as_slice())?;
                            }
                            None => {
                                orphans.remove(key.as_slice())?;
                            }
                        }
                    }
                    Record::DropPending { hash, store, upto } => {
                        let key = encode_value(&(*hash, *store));
                        match upto {
                            Some(u) => {
                                drops.insert(key.as_slice(), encode_value(u).as_slice())?;
                            }
                            None => {
                                drops.remove(key.as_slice())?;
                            }
                        }
                    }
                    Record::Reported { store, seq } => {
                        reports.insert(store.0, (seq.incarnation, seq.counter))?;
                    }
                    Record::Forgotten(n) => {
                        // Its orphans and drop orders went with records of
                        // their own.
                        for set in [SET_RESTORED, SET_SYNCED, SET_EXPECTED] {
                            sets.remove((set, n.0))?;
                        }
                    }
                }
            }
            if let (Some(a), Some(h)) = (authority, header(&meta)?) {
                // Compact: the state goes into one snapshot, the log keeps
                // only what readers may still ask for.
                if compaction_due(log.len()?, h.retain, self.slack, a.state.records()) {
                    let head = a.head;
                    // Encoded straight from the state: no second copy of it.
                    meta.insert("snapshot", encode_snapshot(a.state, head).as_slice())?;
                    let keep_from = first_kept(head, h.retain);
                    log.retain(|seq, _| seq >= keep_from)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn header(meta: &redb::Table<&str, &[u8]>) -> Result<Option<AuthorityHeader>, MetaError> {
    match meta.get("authority")? {
        Some(v) => Ok(Some(
            decode_value(v.value()).map_err(|e| corrupt("authority", e))?,
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stretchfs_core::feed::Change;
    use stretchfs_core::{NodeInfo, Roles, Zone};

    fn apply(d: &mut DurableState, recs: &[Record]) {
        for r in recs {
            d.apply(r);
        }
    }

    fn entry(seq: u64) -> FeedEntry {
        FeedEntry {
            seq,
            change: Change::NodeUpserted(NodeInfo {
                id: NodeId(seq),
                addr: "127.0.0.1:1".parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new("z"),
                weight: 100,
                incarnation: 0,
            }),
        }
    }

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "stretchfs-meta-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_database_of_another_format_is_refused_with_what_to_do() {
        let d = dir();
        let path = d.join("meta.redb");
        let mut db = RedbStore::open(&path).unwrap();
        db.write(&[Record::Identity { node: NodeId(9) }], None)
            .unwrap();
        drop(db);
        assert!(RedbStore::open(&path).is_ok(), "its own format opens");
        // As an earlier version left it: data, no format key.
        let raw = Database::create(&path).unwrap();
        let txn = raw.begin_write().unwrap();
        txn.open_table(META).unwrap().remove("format").unwrap();
        txn.commit().unwrap();
        drop(raw);
        let err = RedbStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("empty data directory"), "{err}");
    }

    #[test]
    fn everything_written_is_loaded_back() {
        let d = dir();
        let path = d.join("meta.redb");
        let mut mem = DurableState::default();
        let recs = vec![
            Record::Identity { node: NodeId(9) },
            Record::Incarnation(3),
            Record::AuthorityCreated {
                cluster: ClusterId(5),
                log: LogId(6),
                retain: 100,
            },
            Record::Cluster(ClusterId(5)),
            Record::Appended(entry(1)),
            Record::Appended(entry(2)),
            Record::Restored(NodeId(4)),
            Record::Recovered,
        ];
        {
            let mut db = RedbStore::open(&path).unwrap();
            apply(&mut mem, &recs);
            db.write(&recs, mem.authority.as_ref().map(Compaction::of))
                .unwrap();
        }
        let back = RedbStore::open(&path).unwrap().load().unwrap();
        assert_eq!(back.node, Some(NodeId(9)));
        assert_eq!(back.incarnation, 3);
        assert_eq!(back.cluster, Some(ClusterId(5)));
        let a = back.authority.unwrap();
        let m = mem.authority.unwrap();
        assert_eq!(a.log.head(), 2);
        assert_eq!(a.state.digest(), m.state.digest());
        assert!(a.recovered);
        assert!(a.restored.contains(&NodeId(4)));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn compaction_keeps_the_state_and_the_retained_log() {
        let d = dir();
        let path = d.join("meta.redb");
        let mut mem = DurableState::default();
        let mut db = RedbStore::open(&path).unwrap().with_slack(5);
        let create = vec![Record::AuthorityCreated {
            cluster: ClusterId(5),
            log: LogId(6),
            retain: 10,
        }];
        apply(&mut mem, &create);
        db.write(&create, mem.authority.as_ref().map(Compaction::of))
            .unwrap();
        // 20 nodes, then 80 appends that change the state but add no
        // record (health flips): compaction waits for max(slack, records).
        for seq in 1..=100 {
            let e = if seq <= 20 {
                entry(seq)
            } else {
                FeedEntry {
                    seq,
                    change: Change::Health {
                        node: NodeId(seq % 20 + 1),
                        down: seq % 2 == 0,
                    },
                }
            };
            let r = vec![Record::Appended(e)];
            apply(&mut mem, &r);
            db.write(&r, mem.authority.as_ref().map(Compaction::of))
                .unwrap();
        }
        drop(db);
        let db = RedbStore::open(&path).unwrap();
        let rows = db
            .db
            .begin_read()
            .unwrap()
            .open_table(LOG)
            .unwrap()
            .len()
            .unwrap();
        assert!(rows <= 10 + 20, "log compacted to {rows} rows");
        let a = db.load().unwrap().authority.unwrap();
        assert_eq!(a.log.head(), 100);
        assert_eq!(a.state.registry.len(), 20, "state survives compaction");
        assert_eq!(a.state.digest(), mem.authority.unwrap().state.digest());
        // Readers within the retained window still get contiguous entries.
        assert!(matches!(
            a.log.read(95, 100),
            stretchfs_core::feed::FeedBody::Entries { .. }
        ));
        let _ = std::fs::remove_dir_all(d);
    }
}
