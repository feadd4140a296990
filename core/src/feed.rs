//! The change feed: the authority's ordered, sequence-numbered log of every
//! change to the cluster state. Readers pull with `since`; the answer says
//! whether they are at the end, and says explicitly when they must take a
//! snapshot first (never a silent gap).

use crate::content::{ContentMeta, ContentRecord};
use crate::hash::ContentHash;
use crate::ids::{LogId, NodeId, NodeInfo};
use crate::purchase::{Purchase, Token};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    NodeUpserted(NodeInfo),
    NodeRemoved(NodeId),
    /// The observers assigned to `subject` (empty: none).
    Observers {
        subject: NodeId,
        observers: Vec<NodeId>,
    },
    Health {
        node: NodeId,
        down: bool,
    },
    /// `store` holds a durable, verified copy.
    ContentStored {
        hash: ContentHash,
        store: NodeId,
        meta: ContentMeta,
    },
    /// `store` no longer holds a copy (deleted, lost, failed its scrub).
    ContentDropped {
        hash: ContentHash,
        store: NodeId,
    },
    /// Content deleted by an admin: every copy is being dropped, and a store
    /// that reports one later is told to drop it too.
    ContentDeleted {
        hash: ContentHash,
    },
    PurchaseCreated(Purchase),
    /// Revoked by a client. A tombstone keeps it from coming back (from a
    /// replica handing purchases back) until it would have expired.
    PurchaseRemoved {
        token: Token,
    },
    /// Expired and pruned (no tombstone needed: expired purchases are never
    /// handed back).
    PurchaseExpired {
        token: Token,
    },
    /// Tombstones of purchases that would have expired by `until` are dropped.
    TombstonesExpired {
        until: crate::time::WallTime,
    },
    /// A store being drained: its copies no longer count, repair moves them.
    Draining {
        node: NodeId,
        draining: bool,
    },
    /// A revocation without the purchase (handed back after the authority
    /// lost its state, before any node handed back the purchase): the
    /// tombstone keeps the purchase from coming back.
    Revoked {
        token: Token,
        expires: crate::time::WallTime,
    },
    /// `node` left gracefully (`left`: down until it joins again, whatever
    /// the votes say), or joined again (`!left`: the votes decide again).
    Left {
        node: NodeId,
        left: bool,
    },
}

impl Change {
    /// Changes membership, addresses or observer assignments.
    pub fn is_topology(&self) -> bool {
        matches!(
            self,
            Change::NodeUpserted(_) | Change::NodeRemoved(_) | Change::Observers { .. }
        )
    }

    /// Changes the inventory or the purchases (what a membership-only
    /// replica leaves out).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Change::ContentStored { .. }
                | Change::ContentDropped { .. }
                | Change::ContentDeleted { .. }
                | Change::PurchaseCreated(_)
                | Change::PurchaseRemoved { .. }
                | Change::PurchaseExpired { .. }
                | Change::TombstonesExpired { .. }
                | Change::Revoked { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedEntry {
    pub seq: u64,
    pub change: Change,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedBody {
    /// Entries after `since` in order; `at_end` when the last one is `head`.
    Entries {
        entries: Vec<FeedEntry>,
        head: u64,
        at_end: bool,
    },
    /// `since` is older than the retained log (or from another history): take
    /// the snapshot, which is at `snapshot_seq` or later, then pull from there.
    SnapshotRequired { snapshot_seq: u64 },
}

/// The full state at sequence number `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: u64,
    pub nodes: Vec<NodeInfo>,
    pub observers: Vec<(NodeId, Vec<NodeId>)>,
    pub down: Vec<NodeId>,
    pub inventory: Vec<ContentRecord>,
    pub purchases: Vec<Purchase>,
    pub draining: Vec<NodeId>,
    pub deleted: Vec<ContentHash>,
    pub revoked: Vec<(Token, crate::time::WallTime)>,
    /// Nodes that left gracefully and have not joined again.
    pub left: Vec<NodeId>,
    /// Nodes an admin removed, with the start removed.
    pub removed: Vec<(NodeId, u64)>,
}

impl Snapshot {
    /// The state of a log with nothing in it (at `seq`).
    pub fn empty(seq: u64) -> Snapshot {
        Snapshot {
            seq,
            nodes: vec![],
            observers: vec![],
            down: vec![],
            inventory: vec![],
            purchases: vec![],
            draining: vec![],
            deleted: vec![],
            revoked: vec![],
            left: vec![],
            removed: vec![],
        }
    }
}

/// The retained tail of the log at the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedLog {
    id: LogId,
    entries: VecDeque<FeedEntry>,
    head: u64,
    retain: usize,
}

impl FeedLog {
    pub fn new(id: LogId, retain: usize) -> FeedLog {
        FeedLog {
            id,
            entries: VecDeque::new(),
            head: 0,
            retain: retain.max(1),
        }
    }

    pub fn id(&self) -> LogId {
        self.id
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Appends a change as the next sequence number.
    pub fn append(&mut self, change: Change) -> FeedEntry {
        let entry = FeedEntry {
            seq: self.head + 1,
            change,
        };
        self.push(entry.clone());
        entry
    }

    /// Restores a log whose retained entries start after `head` (entries
    /// up to `head` were compacted into a snapshot).
    pub fn resume(id: LogId, retain: usize, head: u64) -> FeedLog {
        FeedLog {
            id,
            entries: VecDeque::new(),
            head,
            retain: retain.max(1),
        }
    }

    /// Retained entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &FeedEntry> {
        self.entries.iter()
    }

    /// Stores an entry appended elsewhere (restoring from disk): it must be
    /// the next one.
    pub fn push(&mut self, entry: FeedEntry) {
        debug_assert_eq!(entry.seq, self.head + 1, "feed entries are stored in order");
        self.head = entry.seq;
        self.entries.push_back(entry);
        while self.entries.len() > self.retain {
            self.entries.pop_front();
        }
    }

    /// Everything after `since`, at most `limit` entries.
    pub fn read(&self, since: u64, limit: u32) -> FeedBody {
        let first = self.entries.front().map_or(self.head + 1, |e| e.seq);
        if since > self.head || since + 1 < first {
            return FeedBody::SnapshotRequired {
                snapshot_seq: self.head,
            };
        }
        let skip = (since + 1 - first) as usize;
        let entries: Vec<FeedEntry> = self
            .entries
            .iter()
            .skip(skip)
            .take(limit.max(1) as usize)
            .cloned()
            .collect();
        let last = entries.last().map_or(since, |e| e.seq);
        FeedBody::Entries {
            entries,
            head: self.head,
            at_end: last == self.head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(n: u64) -> Change {
        Change::Health {
            node: NodeId(n),
            down: n.is_multiple_of(2),
        }
    }

    fn seqs(body: &FeedBody) -> Vec<u64> {
        match body {
            FeedBody::Entries { entries, .. } => entries.iter().map(|e| e.seq).collect(),
            FeedBody::SnapshotRequired { .. } => panic!("unexpected snapshot required"),
        }
    }

    #[test]
    fn reads_follow_since_and_limit_and_say_when_at_end() {
        let mut log = FeedLog::new(LogId(1), 100);
        for n in 0..10 {
            log.append(health(n));
        }
        assert_eq!(seqs(&log.read(0, 3)), vec![1, 2, 3]);
        assert!(matches!(
            log.read(0, 3),
            FeedBody::Entries {
                at_end: false,
                head: 10,
                ..
            }
        ));
        assert_eq!(seqs(&log.read(7, 100)), vec![8, 9, 10]);
        assert!(matches!(
            log.read(7, 100),
            FeedBody::Entries { at_end: true, .. }
        ));
        assert!(
            matches!(log.read(10, 100), FeedBody::Entries { at_end: true, ref entries, .. } if entries.is_empty())
        );
    }

    #[test]
    fn reader_behind_retention_is_told_to_take_a_snapshot() {
        let mut log = FeedLog::new(LogId(1), 4);
        for n in 0..10 {
            log.append(health(n));
        }
        // Retained: 7..=10. A reader at 6 still gets a contiguous answer.
        assert_eq!(seqs(&log.read(6, 100)), vec![7, 8, 9, 10]);
        assert_eq!(
            log.read(5, 100),
            FeedBody::SnapshotRequired { snapshot_seq: 10 }
        );
        assert_eq!(
            log.read(0, 100),
            FeedBody::SnapshotRequired { snapshot_seq: 10 }
        );
    }

    #[test]
    fn reader_ahead_of_the_log_is_from_another_history() {
        let mut log = FeedLog::new(LogId(1), 4);
        log.append(health(1));
        assert_eq!(
            log.read(5, 10),
            FeedBody::SnapshotRequired { snapshot_seq: 1 }
        );
    }

    #[test]
    fn empty_log_answers_empty_at_end() {
        let log = FeedLog::new(LogId(1), 4);
        assert_eq!(
            log.read(0, 10),
            FeedBody::Entries {
                entries: vec![],
                head: 0,
                at_end: true
            }
        );
    }

    #[test]
    fn a_reader_exactly_at_the_oldest_retained_entry_gets_entries() {
        let mut log = FeedLog::new(LogId(4), 3);
        for n in 0..10 {
            log.append(health(n));
        }
        assert_eq!(log.id(), LogId(4));
        let kept: Vec<u64> = log.entries().map(|e| e.seq).collect();
        assert_eq!(kept, vec![8, 9, 10], "the last `retain` entries are kept");
        assert_eq!(seqs(&log.read(7, 10)), vec![8, 9, 10]);
        assert!(matches!(
            log.read(6, 10),
            FeedBody::SnapshotRequired { snapshot_seq: 10 }
        ));
    }

    #[test]
    fn only_membership_and_observer_changes_are_topology() {
        assert!(!health(1).is_topology());
        let removed = Change::NodeRemoved(NodeId(1));
        assert!(removed.is_topology());
        let left = Change::Left {
            node: NodeId(1),
            left: true,
        };
        assert!(!left.is_topology());
    }
}
