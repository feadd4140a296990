//! Snapshots travel in bounded chunks. The authority encodes its state once
//! per snapshot and serves every reader's chunks from that one copy, so a
//! reader's retries, or many readers starting at once, cost one chunk each
//! instead of one whole snapshot each (a whole snapshot per retry is what
//! made a restart with 80k objects run out of memory: each retry came before
//! the previous snapshot had even been sent). A reader assembles the chunks
//! of one snapshot and decodes it once.

use crate::codec::{decode_value, DecodeError};
use crate::feed::Snapshot;
use crate::ids::LogId;
use crate::state::ClusterState;
use crate::time::{Duration, Time};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Most snapshot bytes in one message.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Where a reader is in the snapshot it is assembling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotCursor {
    pub seq: u64,
    pub offset: u64,
}

/// One piece of an encoded snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The head the snapshot was taken at.
    pub seq: u64,
    pub offset: u64,
    /// The encoded snapshot's whole length.
    pub total: u64,
    pub bytes: Vec<u8>,
}

/// The snapshot `ClusterState::snapshot(seq)` would give, encoded straight
/// from the state: the same bytes, without a second copy of the state.
pub fn encode_snapshot(state: &ClusterState, seq: u64) -> Vec<u8> {
    crate::codec::encode_value(&SnapshotView { state, seq })
}

struct SnapshotView<'a> {
    state: &'a ClusterState,
    seq: u64,
}

/// A sequence written from an iterator (once).
struct Seq<I>(RefCell<Option<I>>);

fn seq<I>(iter: I) -> Seq<I> {
    Seq(RefCell::new(Some(iter)))
}

impl<I> Serialize for Seq<I>
where
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(iter) => s.collect_seq(iter),
            None => Err(serde::ser::Error::custom("sequence written twice")),
        }
    }
}

impl Serialize for SnapshotView<'_> {
    /// Field for field as `Snapshot` derives it (a test holds the two equal).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.state;
        let mut out = s.serialize_struct("Snapshot", 11)?;
        out.serialize_field("seq", &self.seq)?;
        out.serialize_field("nodes", &seq(st.registry.iter()))?;
        out.serialize_field("observers", &seq(st.observers.iter()))?;
        out.serialize_field("down", &seq(st.down.iter()))?;
        out.serialize_field("inventory", &seq(st.inventory.records()))?;
        out.serialize_field("purchases", &seq(st.purchases.values()))?;
        out.serialize_field("draining", &seq(st.draining.iter()))?;
        out.serialize_field("deleted", &seq(st.deleted.iter()))?;
        out.serialize_field("revoked", &seq(st.revoked.iter()))?;
        out.serialize_field("left", &seq(st.left.iter()))?;
        out.serialize_field("removed", &seq(st.removed.iter()))?;
        out.end()
    }
}

/// The authority's side: the one encoded snapshot readers are served from.
#[derive(Debug, Default)]
pub struct SnapshotSource {
    cached: Option<Encoded>,
    builds: u64,
}

#[derive(Debug)]
struct Encoded {
    seq: u64,
    bytes: Vec<u8>,
    last_used: Time,
}

impl SnapshotSource {
    /// The chunk a reader asked for. A reader starting (`resume` empty) gets
    /// the first chunk of the snapshot held, unless the head has moved more
    /// than `max_lag` past it (the reader could not follow the log from it):
    /// then a new one is taken. A reader resuming a snapshot no longer held
    /// is served as one starting: it gets a first chunk and starts over.
    pub fn serve(
        &mut self,
        now: Time,
        state: &ClusterState,
        head: u64,
        max_lag: u64,
        resume: Option<SnapshotCursor>,
    ) -> SnapshotChunk {
        let held = self.cached.as_ref().map(|c| c.seq);
        let resumes = resume.filter(|c| held == Some(c.seq));
        let fresh_enough = held.is_some_and(|s| head.saturating_sub(s) <= max_lag);
        if resumes.is_none() && !fresh_enough {
            self.cached = None;
        }
        let builds = &mut self.builds;
        let c = self.cached.get_or_insert_with(|| {
            *builds += 1;
            Encoded {
                seq: head,
                bytes: encode_snapshot(state, head),
                last_used: now,
            }
        });
        let offset = resumes.map_or(0, |r| r.offset);
        c.last_used = now;
        let total = c.bytes.len() as u64;
        let start = offset.min(total) as usize;
        let end = (start + CHUNK_BYTES).min(c.bytes.len());
        SnapshotChunk {
            seq: c.seq,
            offset: start as u64,
            total,
            bytes: c.bytes[start..end].to_vec(),
        }
    }

    /// Lets go of a snapshot nobody has asked for in `idle`.
    pub fn expire(&mut self, now: Time, idle: Duration) {
        if self
            .cached
            .as_ref()
            .is_some_and(|c| now.since(c.last_used) > idle)
        {
            self.cached = None;
        }
    }

    /// When the snapshot held may be let go of.
    pub fn next_deadline(&self, idle: Duration) -> Option<Time> {
        self.cached
            .as_ref()
            .map(|c| c.last_used + idle + Duration::from_micros(1))
    }

    /// Snapshots encoded so far (each costs the whole state).
    pub fn builds(&self) -> u64 {
        self.builds
    }

    /// Bytes held for readers.
    pub fn held_bytes(&self) -> usize {
        self.cached.as_ref().map_or(0, |c| c.bytes.len())
    }
}

/// The reader's side: the chunks of one snapshot, in order.
#[derive(Debug, Default)]
pub struct SnapshotAssembly {
    building: Option<Building>,
}

#[derive(Debug)]
struct Building {
    log: LogId,
    seq: u64,
    total: u64,
    bytes: Vec<u8>,
}

/// What a chunk did to the assembly.
#[derive(Debug)]
pub enum Assembled {
    /// Not the next piece of the snapshot being assembled (a duplicate or a
    /// late answer): nothing changed.
    Ignored,
    /// Taken; more to come.
    Progress,
    /// The last piece: the whole snapshot.
    Complete(LogId, Box<Snapshot>),
    /// The pieces do not decode: start over.
    Corrupt(DecodeError),
}

impl SnapshotAssembly {
    /// What to ask for next.
    pub fn cursor(&self) -> Option<SnapshotCursor> {
        self.building.as_ref().map(|b| SnapshotCursor {
            seq: b.seq,
            offset: b.bytes.len() as u64,
        })
    }

    pub fn clear(&mut self) {
        self.building = None;
    }

    pub fn on_chunk(&mut self, log: LogId, chunk: SnapshotChunk) -> Assembled {
        let same = |b: &Building| b.log == log && b.seq == chunk.seq && b.total == chunk.total;
        match &mut self.building {
            Some(b) if same(b) => {
                // An empty piece of a non-empty snapshot is no progress.
                if chunk.offset != b.bytes.len() as u64 || chunk.bytes.is_empty() && b.total > 0 {
                    return Assembled::Ignored;
                }
                b.bytes.extend_from_slice(&chunk.bytes);
            }
            // Another snapshot: only its first piece starts it over.
            _ if chunk.offset != 0 => return Assembled::Ignored,
            _ => {
                self.building = Some(Building {
                    log,
                    seq: chunk.seq,
                    total: chunk.total,
                    bytes: chunk.bytes,
                });
            }
        }
        match self.building.take() {
            Some(b) if (b.bytes.len() as u64) < b.total => {
                self.building = Some(b);
                Assembled::Progress
            }
            Some(b) => Self::decode(b),
            None => Assembled::Ignored,
        }
    }

    fn decode(b: Building) -> Assembled {
        if b.bytes.len() as u64 != b.total {
            return Assembled::Corrupt(DecodeError::TrailingBytes(
                b.bytes.len().saturating_sub(b.total as usize),
            ));
        }
        match decode_value::<Snapshot>(&b.bytes) {
            Ok(s) if s.seq == b.seq => Assembled::Complete(b.log, Box::new(s)),
            Ok(s) => Assembled::Corrupt(DecodeError::Malformed(format!(
                "snapshot {} sent as {}",
                s.seq, b.seq
            ))),
            Err(e) => Assembled::Corrupt(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_value;
    use crate::feed::Change;
    use crate::hash::{ContentHash, HashKind};
    use crate::ids::{NodeId, NodeInfo, Roles, Zone};

    fn state(objects: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for n in 1..=3 {
            s.apply(&Change::NodeUpserted(NodeInfo {
                id: NodeId(n),
                addr: format!("10.0.0.{n}:7000").parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new("z"),
                weight: 100,
                incarnation: 1,
            }));
        }
        for i in 0..objects {
            s.apply(&Change::ContentDeleted {
                hash: ContentHash::compute(HashKind::Sha1, &i.to_le_bytes()),
            });
        }
        s
    }

    #[test]
    fn the_view_encodes_exactly_as_the_snapshot_does() {
        let s = crate::state::field_tests::rich();
        assert_eq!(encode_snapshot(&s, 77), encode_value(&s.snapshot(77)));
        let empty = ClusterState::default();
        assert_eq!(encode_snapshot(&empty, 0), encode_value(&empty.snapshot(0)));
    }

    #[test]
    fn retries_and_many_readers_share_one_encoding_and_get_bounded_chunks() {
        let s = state(60_000);
        let mut src = SnapshotSource::default();
        let t = Time::ZERO;
        for _ in 0..20 {
            let c = src.serve(t, &s, 9, 100, None);
            assert!(c.bytes.len() <= CHUNK_BYTES);
            assert_eq!((c.seq, c.offset), (9, 0));
            assert!(
                c.total as usize > CHUNK_BYTES,
                "the test needs several chunks"
            );
        }
        assert_eq!(src.builds(), 1, "one encoding for every reader");
        // Within the lag, a new reader still gets the one held.
        src.serve(t, &s, 109, 100, None);
        assert_eq!(src.builds(), 1);
        // Past it, a new one is taken.
        let c = src.serve(t, &s, 110, 100, None);
        assert_eq!((src.builds(), c.seq), (2, 110));
    }

    #[test]
    fn chunks_assemble_into_the_snapshot_whatever_arrives_twice_or_late() {
        let s = state(60_000);
        let mut src = SnapshotSource::default();
        let mut a = SnapshotAssembly::default();
        let t = Time::ZERO;
        let first = src.serve(t, &s, 5, 100, None);
        assert!(matches!(
            a.on_chunk(LogId(3), first.clone()),
            Assembled::Progress
        ));
        // The same first piece again (a retry's answer) changes nothing.
        assert!(matches!(a.on_chunk(LogId(3), first), Assembled::Ignored));
        let mut late = None;
        let done = loop {
            let c = src.serve(t, &s, 5, 100, a.cursor());
            late.get_or_insert_with(|| c.clone());
            match a.on_chunk(LogId(3), c) {
                Assembled::Progress => {}
                Assembled::Complete(log, snap) => break (log, snap),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(done.0, LogId(3));
        assert_eq!(done.1.seq, 5);
        assert_eq!(
            ClusterState::from_snapshot(&done.1).digest(),
            s.digest(),
            "the reader holds the authority's state"
        );
        assert!(matches!(
            a.on_chunk(LogId(3), late.unwrap()),
            Assembled::Ignored
        ));
    }

    #[test]
    fn a_reader_resuming_a_snapshot_no_longer_held_starts_over() {
        let s = state(60_000);
        let mut src = SnapshotSource::default();
        let mut a = SnapshotAssembly::default();
        let t = Time::ZERO;
        a.on_chunk(LogId(1), src.serve(t, &s, 5, 100, None));
        // The authority let go of it and took a newer one for someone else.
        src.expire(t + Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(src.held_bytes(), 0);
        src.serve(t, &s, 50, 100, None);
        let c = src.serve(t, &s, 50, 100, a.cursor());
        assert_eq!((c.seq, c.offset), (50, 0));
        assert!(matches!(a.on_chunk(LogId(1), c), Assembled::Progress));
        assert_eq!(a.cursor().unwrap().seq, 50);
        // A piece of another log's snapshot from the middle is ignored.
        let mid = SnapshotChunk {
            seq: 50,
            offset: 7,
            total: 9,
            bytes: vec![0; 2],
        };
        assert!(matches!(a.on_chunk(LogId(2), mid), Assembled::Ignored));
    }

    #[test]
    fn pieces_that_do_not_decode_are_refused() {
        let mut a = SnapshotAssembly::default();
        let junk = SnapshotChunk {
            seq: 1,
            offset: 0,
            total: 3,
            bytes: vec![0xff; 3],
        };
        assert!(matches!(a.on_chunk(LogId(1), junk), Assembled::Corrupt(_)));
        assert_eq!(a.cursor(), None, "starts over");
        let mut src = SnapshotSource::default();
        let s = state(1);
        let mut c = src.serve(Time::ZERO, &s, 4, 0, None);
        c.seq = 8; // Says one head, holds another.
        assert!(matches!(a.on_chunk(LogId(1), c), Assembled::Corrupt(_)));
    }
}
