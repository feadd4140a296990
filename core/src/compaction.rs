//! How the authority's feed log is kept on disk: a snapshot of the state at
//! some head plus the log rows after the oldest one readers may still ask
//! for, and how a start rebuilds the store from them. Both drivers (redb in
//! production, the simulated disk) follow these rules, so the simulator
//! restarts an authority from a snapshot and a tail just as production does.

use crate::authority::AuthorityStore;
use crate::feed::{FeedEntry, FeedLog, Snapshot};
use crate::ids::{ClusterId, LogId};
use crate::state::ClusterState;
use std::fmt;

/// True when a log of `rows` rows should be compacted: the rows past what
/// readers may ask for (`retain`) have grown beyond the larger of `slack`
/// and the state's size in records. A compaction writes the whole state, so
/// waiting for at least as many appends as the state has records keeps its
/// cost per append flat however large the state grows (at a million objects
/// one compaction every 10,000 appends was a whole snapshot per 10,000
/// uploads); the log on disk stays within `retain` + the state's size.
pub fn compaction_due(rows: u64, retain: usize, slack: u64, records: u64) -> bool {
    rows > retain as u64 + slack.max(records)
}

/// The oldest row a compaction at `head` keeps: readers within `retain` of
/// the head still get entries instead of a snapshot.
pub fn first_kept(head: u64, retain: usize) -> u64 {
    head.saturating_sub(retain as u64) + 1
}

/// What a disk holds that does not fit the rules: the store refuses to
/// start on it rather than serve a state with a hole in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The first row comes after the snapshot's next entry.
    GapAfterSnapshot { snapshot: u64, first_row: u64 },
    /// A row is not the one after the previous row.
    GapInLog { expected: u64, found: u64 },
    /// A row's seq no log can have.
    BadSeq(u64),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::GapAfterSnapshot {
                snapshot,
                first_row,
            } => write!(
                f,
                "the snapshot ends at entry {snapshot} but the log starts at {first_row}"
            ),
            LoadError::GapInLog { expected, found } => {
                write!(f, "log entry {expected} is missing (found {found})")
            }
            LoadError::BadSeq(seq) => write!(f, "a log entry numbered {seq}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The authority's header as a disk keeps it.
#[derive(Clone, Copy, Debug)]
pub struct FeedHeader {
    pub cluster: ClusterId,
    pub log: LogId,
    pub retain: usize,
    pub recovered: bool,
}

/// Rebuilds an [`AuthorityStore`] from a snapshot and the log rows, fed
/// oldest first (one at a time, so a driver can stream them). Rows the
/// snapshot covers are kept only to serve readers; the rest are applied.
/// The driver adds the recovery sets, reports, orphans and drops after.
pub struct FeedLoader {
    store: AuthorityStore,
    snapshot_seq: u64,
    header: FeedHeader,
    /// The seq the next row must have; `None` before the first row.
    next: Option<u64>,
}

impl FeedLoader {
    pub fn new(header: FeedHeader, snapshot: Option<&Snapshot>) -> FeedLoader {
        let mut store = AuthorityStore::new(header.cluster, header.log, header.retain);
        store.recovered = header.recovered;
        if let Some(s) = snapshot {
            store.state = ClusterState::from_snapshot(s);
        }
        let snapshot_seq = snapshot.map_or(0, |s| s.seq);
        store.log = FeedLog::resume(header.log, header.retain, snapshot_seq);
        FeedLoader {
            store,
            snapshot_seq,
            header,
            next: None,
        }
    }

    pub fn row(&mut self, entry: FeedEntry) -> Result<(), LoadError> {
        // Seq 0 is never written (the first entry is 1), nor u64::MAX.
        let (Some(previous), Some(after)) = (entry.seq.checked_sub(1), entry.seq.checked_add(1))
        else {
            return Err(LoadError::BadSeq(entry.seq));
        };
        match self.next {
            None => {
                if previous > self.snapshot_seq {
                    return Err(LoadError::GapAfterSnapshot {
                        snapshot: self.snapshot_seq,
                        first_row: entry.seq,
                    });
                }
                self.store.log = FeedLog::resume(self.header.log, self.header.retain, previous);
            }
            Some(expected) if entry.seq != expected => {
                return Err(LoadError::GapInLog {
                    expected,
                    found: entry.seq,
                });
            }
            Some(_) => {}
        }
        self.next = Some(after);
        if entry.seq <= self.snapshot_seq {
            self.store.log.push(entry);
        } else {
            self.store.apply(entry);
        }
        Ok(())
    }

    pub fn finish(self) -> Result<AuthorityStore, LoadError> {
        // Rows that end before the snapshot leave the log behind its state.
        if let Some(next) = self.next {
            if next <= self.snapshot_seq {
                return Err(LoadError::GapInLog {
                    expected: next,
                    found: self.snapshot_seq,
                });
            }
        }
        Ok(self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Change;
    use crate::ids::{NodeId, NodeInfo, Roles, Zone};

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

    fn header(retain: usize) -> FeedHeader {
        FeedHeader {
            cluster: ClusterId(1),
            log: LogId(2),
            retain,
            recovered: true,
        }
    }

    /// The store as it was before a restart: every entry applied.
    fn applied(upto: u64, retain: usize) -> AuthorityStore {
        let mut s = AuthorityStore::new(ClusterId(1), LogId(2), retain);
        s.recovered = true;
        for seq in 1..=upto {
            s.apply(entry(seq));
        }
        s
    }

    /// What a disk would hold after compacting at `compacted_at` and
    /// appending up to `head`.
    fn load(compacted_at: u64, head: u64, retain: usize) -> Result<AuthorityStore, LoadError> {
        let before = applied(compacted_at, retain);
        let snap = (compacted_at > 0).then(|| before.state.snapshot(compacted_at));
        let mut l = FeedLoader::new(header(retain), snap.as_ref());
        for seq in first_kept(compacted_at, retain).min(compacted_at + 1)..=head {
            l.row(entry(seq))?;
        }
        l.finish()
    }

    #[test]
    fn compaction_is_due_only_past_the_slack() {
        assert!(!compaction_due(15, 10, 5, 0));
        assert!(compaction_due(16, 10, 5, 0));
        assert!(!compaction_due(0, 0, 0, 0));
        assert!(compaction_due(1, 0, 0, 0));
    }

    #[test]
    fn a_large_state_waits_for_as_many_appends_as_it_has_records() {
        assert!(!compaction_due(10 + 1_000, 10, 5, 1_000));
        assert!(compaction_due(10 + 1_001, 10, 5, 1_000));
        // A small state still waits for the slack.
        assert!(!compaction_due(15, 10, 5, 3));
    }

    #[test]
    fn a_compaction_keeps_exactly_the_retained_rows() {
        assert_eq!(first_kept(100, 10), 91);
        assert_eq!(first_kept(5, 10), 1);
        assert_eq!(first_kept(10, 10), 1);
        assert_eq!(first_kept(11, 10), 2);
    }

    #[test]
    fn snapshot_and_tail_load_the_state_and_the_retained_log() {
        for (compacted_at, head) in [(0, 0), (0, 7), (40, 40), (40, 55), (3, 9)] {
            let a = load(compacted_at, head, 10).unwrap();
            let want = applied(head, 10);
            assert_eq!(a.log.head(), head, "{compacted_at}/{head}");
            assert_eq!(
                a.state.digest(),
                want.state.digest(),
                "{compacted_at}/{head}"
            );
            assert!(a.recovered);
            let got: Vec<u64> = a.log.entries().map(|e| e.seq).collect();
            let want: Vec<u64> = want.log.entries().map(|e| e.seq).collect();
            assert_eq!(
                got, want,
                "{compacted_at}/{head}: readers see the same rows"
            );
        }
    }

    #[test]
    fn a_hole_between_snapshot_and_log_is_refused() {
        let snap = applied(10, 5).state.snapshot(10);
        let mut l = FeedLoader::new(header(5), Some(&snap));
        assert_eq!(
            l.row(entry(12)),
            Err(LoadError::GapAfterSnapshot {
                snapshot: 10,
                first_row: 12
            })
        );
        let mut l = FeedLoader::new(header(5), Some(&snap));
        l.row(entry(11)).unwrap();
        assert_eq!(
            l.row(entry(13)),
            Err(LoadError::GapInLog {
                expected: 12,
                found: 13
            })
        );
        let mut l = FeedLoader::new(header(5), None);
        assert_eq!(l.row(entry(0)), Err(LoadError::BadSeq(0)));
        assert_eq!(l.row(entry(u64::MAX)), Err(LoadError::BadSeq(u64::MAX)));
        // Rows that stop short of the snapshot: the log would lag its state.
        let mut l = FeedLoader::new(header(5), Some(&snap));
        l.row(entry(7)).unwrap();
        l.row(entry(8)).unwrap();
        assert!(l.finish().is_err());
    }
}
