//! A node's metadata disk in the simulation. Metadata writes are
//! synchronous, so every record survives a crash; the authority's feed is
//! kept as production keeps it (core's compaction rules: a snapshot plus
//! the rows readers may still ask for), and a start rebuilds the authority
//! from that snapshot and tail, not from the state it had in memory.

use std::collections::BTreeMap;
use stretchfs_core::compaction::{compaction_due, first_kept, FeedHeader, FeedLoader};
use stretchfs_core::feed::{FeedEntry, Snapshot};
use stretchfs_core::{DurableState, NodeId, Record};

/// Compact once this many rows sit beyond the retained ones: small, so
/// that most seeds restart an authority from a snapshot (production: 10,000).
const SLACK: u64 = 8;

#[derive(Clone, Debug, Default)]
pub struct MetaDisk {
    /// Every record applied; its feed and state are replaced at load.
    written: DurableState,
    header: Option<FeedHeader>,
    snapshot: Option<Snapshot>,
    rows: BTreeMap<u64, FeedEntry>,
    /// Compactions so far (the report shows that they happen).
    pub compactions: u64,
}

impl MetaDisk {
    pub fn node(&self) -> Option<NodeId> {
        self.written.node
    }

    /// A start would rebuild an authority from a snapshot.
    pub fn has_snapshot(&self) -> bool {
        self.snapshot.is_some() && self.written.authority.is_some()
    }

    pub fn apply(&mut self, record: &Record) {
        self.written.apply(record);
        match record {
            Record::AuthorityCreated {
                cluster,
                log,
                retain,
            } => {
                self.header = Some(FeedHeader {
                    cluster: *cluster,
                    log: *log,
                    retain: *retain,
                    recovered: false,
                });
                self.snapshot = None;
                self.rows.clear();
            }
            Record::Recovered => {
                if let Some(h) = &mut self.header {
                    h.recovered = true;
                }
            }
            Record::Appended(entry) => {
                self.rows.insert(entry.seq, entry.clone());
                self.compact();
            }
            _ => {}
        }
    }

    fn compact(&mut self) {
        let (Some(h), Some(a)) = (&self.header, &self.written.authority) else {
            return;
        };
        // At the slack alone (no records term), so that most seeds restart
        // an authority from a snapshot; the records term is a cost rule,
        // tested in core and on redb.
        if compaction_due(self.rows.len() as u64, h.retain, SLACK, 0) {
            let head = a.log.head();
            self.snapshot = Some(a.state.snapshot(head));
            self.rows = self.rows.split_off(&first_kept(head, h.retain));
            self.compactions += 1;
        }
    }

    /// What a starting node reads back.
    pub fn load(&self) -> DurableState {
        let mut d = self.written.clone();
        if let (Some(h), Some(written)) = (self.header, &mut d.authority) {
            let mut loader = FeedLoader::new(h, self.snapshot.as_ref());
            for row in self.rows.values() {
                if let Err(e) = loader.row(row.clone()) {
                    panic!("the simulated metadata disk broke core's compaction rules: {e}");
                }
            }
            let mut store = match loader.finish() {
                Ok(s) => s,
                Err(e) => panic!("the simulated metadata disk broke core's compaction rules: {e}"),
            };
            store.restored = std::mem::take(&mut written.restored);
            store.synced = std::mem::take(&mut written.synced);
            store.expected = std::mem::take(&mut written.expected);
            store.reports = std::mem::take(&mut written.reports);
            store.orphans = std::mem::take(&mut written.orphans);
            store.drops_pending = std::mem::take(&mut written.drops_pending);
            *written = store;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stretchfs_core::feed::Change;
    use stretchfs_core::{ClusterId, LogId, NodeInfo, Roles, Zone};

    fn upsert(seq: u64, id: u64) -> Record {
        Record::Appended(FeedEntry {
            seq,
            change: Change::NodeUpserted(NodeInfo {
                id: NodeId(id),
                addr: "10.0.0.1:1".parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new("z"),
                weight: 100,
                incarnation: 0,
            }),
        })
    }

    #[test]
    fn a_restart_reads_the_state_back_from_a_snapshot_and_its_tail() {
        let mut d = MetaDisk::default();
        d.apply(&Record::AuthorityCreated {
            cluster: ClusterId(1),
            log: LogId(2),
            retain: 4,
        });
        for seq in 1..=50 {
            d.apply(&upsert(seq, seq % 7));
        }
        assert!(d.compactions >= 3, "{} compactions", d.compactions);
        assert!(d.rows.len() as u64 <= 4 + SLACK);
        let loaded = d.load().authority.unwrap();
        let written = d.written.authority.as_ref().unwrap();
        assert_eq!(loaded.log.head(), 50);
        assert_eq!(loaded.state.digest(), written.state.digest());
        assert_eq!(loaded.state.registry.len(), 7);
    }
}
