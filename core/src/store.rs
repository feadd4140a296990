//! The store role: keeps the authority's inventory true to what is on local
//! disk (the seed's algorithm: take the authority's view, compare it with the
//! local listing, report what is missing and what is new; afterwards report
//! every change as it happens, and re-sync periodically), scrubs local
//! copies, and runs the authority's clone and drop jobs. Bytes never pass
//! through here: the driver moves them and reports back.

use crate::config::ContentConfig;
use crate::content::ContentMeta;
use crate::hash::ContentHash;
use crate::ids::LogId;
use crate::io::{Outbox, Output, TransferSource};
use crate::message::{CloneJob, DropOrder, InventoryBatch, Message, VoteSeq};
use crate::state::ClusterState;
use crate::time::{earliest, Time};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;

/// Store operation ids carry this bit, so the node can route transfer
/// results to the right role.
pub const STORE_OP: u64 = 1 << 63;

#[derive(Clone, Debug)]
struct Batch {
    seq: VoteSeq,
    sync: Option<LogId>,
    adds: Vec<(ContentHash, ContentMeta)>,
    removes: Vec<ContentHash>,
    resend_at: Time,
}

/// What the authority's view lacks and what it has too much of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub new: Vec<(ContentHash, ContentMeta)>,
    pub missing: Vec<ContentHash>,
}

/// Compares the local listing with the authority's view of this store, both
/// in hash order, in one merge pass.
pub fn diff(
    local: &BTreeMap<ContentHash, ContentMeta>,
    authority: impl Iterator<Item = ContentHash>,
) -> Diff {
    let mut d = Diff::default();
    let mut l = local.iter().peekable();
    let mut a = authority.peekable();
    loop {
        match (l.peek(), a.peek()) {
            (Some((lh, meta)), Some(ah)) => match (*lh).cmp(ah) {
                std::cmp::Ordering::Less => {
                    d.new.push((**lh, **meta));
                    l.next();
                }
                std::cmp::Ordering::Greater => {
                    d.missing.push(*ah);
                    a.next();
                }
                std::cmp::Ordering::Equal => {
                    l.next();
                    a.next();
                }
            },
            (Some((lh, meta)), None) => {
                d.new.push((**lh, **meta));
                l.next();
            }
            (None, Some(ah)) => {
                d.missing.push(*ah);
                a.next();
            }
            (None, None) => return d,
        }
    }
}

/// What the store role reads of its node for one tick.
#[derive(Clone, Copy)]
pub struct StoreView<'a> {
    pub state: &'a ClusterState,
    pub me: crate::ids::NodeId,
    /// The feed log the replica follows.
    pub log: Option<LogId>,
    /// The replica has a snapshot and has caught up.
    pub ready: bool,
}

#[derive(Debug)]
pub struct StoreRole {
    cfg: ContentConfig,
    held: BTreeMap<ContentHash, ContentMeta>,
    /// The report batch that told the authority of each held copy (a copy
    /// found in a listing counts as reported at the start of this
    /// incarnation); a copy received since its last report has none. A
    /// drop order only applies to copies reported no later than its fence.
    reported: BTreeMap<ContentHash, VoteSeq>,
    listed: bool,
    listing_requested: bool,
    /// Changes since the outstanding listing was asked for: the listing may
    /// predate them.
    since_listing: BTreeMap<ContentHash, Option<ContentMeta>>,
    /// The log against which a full scan-and-diff was acknowledged.
    synced: Option<LogId>,
    /// The log a full scan-and-diff is under way against.
    syncing: Option<LogId>,
    /// Changes not yet sent: `Some` adds, `None` removes.
    pending: BTreeMap<ContentHash, Option<ContentMeta>>,
    in_flight: Option<Batch>,
    seq: VoteSeq,
    next_scrub: Time,
    scrub_cursor: Option<ContentHash>,
    /// The copy a scrub is reading, and whether a new copy of it arrived
    /// since: a bad result about the old bytes must not delete the new ones.
    scrubbing: Option<(ContentHash, bool)>,
    next_resync: Time,
    clones: BTreeMap<u64, u64>,
    next_op: u64,
}

impl StoreRole {
    pub fn new(cfg: ContentConfig, incarnation: u64, now: Time) -> StoreRole {
        StoreRole {
            next_resync: now + cfg.resync_interval,
            next_scrub: now + cfg.scrub_interval,
            cfg,
            held: BTreeMap::new(),
            reported: BTreeMap::new(),
            listed: false,
            listing_requested: false,
            since_listing: BTreeMap::new(),
            synced: None,
            syncing: None,
            pending: BTreeMap::new(),
            in_flight: None,
            seq: VoteSeq {
                incarnation,
                counter: 0,
            },
            scrub_cursor: None,
            scrubbing: None,
            clones: BTreeMap::new(),
            next_op: STORE_OP,
        }
    }

    pub fn held(&self) -> &BTreeMap<ContentHash, ContentMeta> {
        &self.held
    }

    /// The log this store's inventory is fully reported against.
    pub fn synced(&self) -> Option<LogId> {
        self.synced
    }

    pub fn on_listing(&mut self, items: Vec<(ContentHash, ContentMeta)>) {
        self.held = items.into_iter().collect();
        // Changes since the listing was asked for still apply.
        let since = std::mem::take(&mut self.since_listing);
        for (hash, change) in since.iter().chain(&self.pending) {
            match change {
                Some(meta) => {
                    self.held.insert(*hash, *meta);
                }
                None => {
                    self.held.remove(hash);
                }
            }
        }
        let start = VoteSeq {
            incarnation: self.seq.incarnation,
            counter: 0,
        };
        let held = &self.held;
        self.reported.retain(|h, _| held.contains_key(h));
        for hash in self.held.keys() {
            let fresh = matches!(self.pending.get(hash), Some(Some(_)));
            if !fresh {
                self.reported.entry(*hash).or_insert(start);
            }
        }
        self.listed = true;
        self.listing_requested = false;
        // A fresh listing is compared with the authority again.
        self.synced = None;
        self.syncing = None;
    }

    pub fn on_stored(&mut self, hash: ContentHash, meta: ContentMeta) {
        if self.listing_requested {
            self.since_listing.insert(hash, Some(meta));
        }
        self.held.insert(hash, meta);
        if let Some((h, replaced)) = &mut self.scrubbing {
            *replaced |= *h == hash;
        }
        // A new copy, even of bytes held before: no older order drops it.
        self.reported.remove(&hash);
        self.pending.insert(hash, Some(meta));
    }

    /// A copy is gone from local disk (a failed scrub, a drop order).
    fn on_removed(&mut self, hash: ContentHash) {
        if self.listing_requested {
            self.since_listing.insert(hash, None);
        }
        self.held.remove(&hash);
        self.reported.remove(&hash);
        self.pending.insert(hash, None);
    }

    pub fn on_scrub(&mut self, hash: ContentHash, ok: bool, out: &mut Outbox) {
        let stale = self.scrubbing == Some((hash, true));
        if self.scrubbing.is_some_and(|(h, _)| h == hash) {
            self.scrubbing = None;
        }
        if !ok && !stale {
            out.queue.push_back(Output::DeleteContent { hash });
            self.on_removed(hash);
        }
    }

    /// Drops the copy the order means; a copy received after the report
    /// the order is fenced by stays. An order that finds nothing to drop is
    /// answered by a report of what is here (a newer copy, or none), so the
    /// authority stops resending it and decides again on what it learns.
    /// Returns whether it dropped.
    pub fn on_drop(&mut self, order: &DropOrder, out: &mut Outbox) -> bool {
        let Some(meta) = self.held.get(&order.hash).cloned() else {
            if self.listed {
                self.pending.entry(order.hash).or_insert(None);
            }
            return false;
        };
        let meant = self
            .reported
            .get(&order.hash)
            .is_some_and(|seq| *seq <= order.upto);
        if meant {
            out.queue
                .push_back(Output::DeleteContent { hash: order.hash });
            self.on_removed(order.hash);
            return true;
        }
        self.pending.entry(order.hash).or_insert(Some(meta));
        false
    }

    pub fn on_clone(&mut self, job: CloneJob, authority: SocketAddr, out: &mut Outbox) {
        let CloneJob {
            job,
            hash,
            target,
            target_addr,
        } = job;
        if !self.held.contains_key(&hash) {
            out.send(authority, Message::CloneDone { job, ok: false });
            return;
        }
        self.next_op += 1;
        let op = self.next_op;
        self.clones.insert(op, job);
        let size = self.held.get(&hash).map_or(0, |m| m.size);
        out.queue.push_back(Output::Transfer {
            op,
            hash,
            to: target,
            to_addr: target_addr,
            source: TransferSource::Stored,
            timeout: self.cfg.transfer_deadline(size),
        });
    }

    pub fn on_transfer_done(&mut self, op: u64, ok: bool, authority: SocketAddr, out: &mut Outbox) {
        if let Some(job) = self.clones.remove(&op) {
            out.send(authority, Message::CloneDone { job, ok });
        }
    }

    pub fn on_ack(&mut self, seq: VoteSeq) {
        if self.in_flight.as_ref().is_some_and(|b| b.seq == seq) {
            if let Some(batch) = self.in_flight.take() {
                if batch.sync.is_some() && batch.sync == self.syncing {
                    self.synced = batch.sync;
                    self.syncing = None;
                }
            }
        }
    }

    /// Runs due work: listing, full sync, reports, scrub, periodic re-sync.
    pub fn on_tick(
        &mut self,
        now: Time,
        view: &StoreView<'_>,
        authority: SocketAddr,
        out: &mut Outbox,
    ) {
        let StoreView {
            state,
            me,
            log,
            ready,
        } = *view;
        if (!self.listed || now >= self.next_resync) && !self.listing_requested {
            self.listing_requested = true;
            self.since_listing.clear();
            self.next_resync = now + self.cfg.resync_interval;
            out.queue.push_back(Output::ListContent);
        }
        if self.listed && ready && log.is_some() && self.synced != log && self.syncing != log {
            let d = diff(&self.held, state.held_by(me));
            for (hash, meta) in d.new {
                self.pending.entry(hash).or_insert(Some(meta));
            }
            for hash in d.missing {
                self.pending.entry(hash).or_insert(None);
            }
            self.syncing = log;
            // A batch in flight for an older log is superseded.
            self.in_flight = None;
        }
        self.send_reports(now, authority, out);
        if self.listed && now >= self.next_scrub {
            self.next_scrub = now + self.cfg.scrub_interval;
            // The copy after the cursor, even if the cursor's own copy is
            // gone; wrap around at the end.
            let next = self
                .scrub_cursor
                .and_then(|c| {
                    self.held
                        .range((Bound::Excluded(c), Bound::Unbounded))
                        .next()
                })
                .or_else(|| self.held.iter().next());
            if let Some((hash, meta)) = next {
                let hash = *hash;
                // Paced by bytes: hashing a large copy earns a longer rest.
                self.next_scrub = now + self.cfg.scrub_pause(meta.size);
                self.scrub_cursor = Some(hash);
                self.scrubbing = Some((hash, false));
                out.queue.push_back(Output::Scrub { hash });
            }
        }
    }

    fn send_reports(&mut self, now: Time, authority: SocketAddr, out: &mut Outbox) {
        if let Some(b) = &mut self.in_flight {
            if b.resend_at <= now {
                b.resend_at = now + self.cfg.report_retransmit;
                out.send(authority, report(b));
            }
            return;
        }
        let sync_due = self.syncing.is_some() && self.synced != self.syncing;
        if self.pending.is_empty() && !sync_due {
            return;
        }
        let mut adds = Vec::new();
        let mut removes = Vec::new();
        while adds.len() + removes.len() < self.cfg.report_batch {
            let Some((hash, change)) = self.pending.pop_first() else {
                break;
            };
            match change {
                Some(meta) => adds.push((hash, meta)),
                None => removes.push(hash),
            }
        }
        self.seq.counter += 1;
        for (hash, _) in &adds {
            self.reported.insert(*hash, self.seq);
        }
        let batch = Batch {
            seq: self.seq,
            // The batch that empties the queue completes the sync.
            sync: if self.pending.is_empty() {
                self.syncing
            } else {
                None
            },
            adds,
            removes,
            resend_at: now + self.cfg.report_retransmit,
        };
        out.send(authority, report(&batch));
        self.in_flight = Some(batch);
    }

    pub fn next_deadline(&self, now: Time) -> Option<Time> {
        let mut next = Some(self.next_resync);
        if let Some(b) = &self.in_flight {
            next = earliest(next, Some(b.resend_at));
        } else if !self.pending.is_empty() {
            next = Some(now);
        }
        if self.listed && !self.held.is_empty() {
            next = earliest(next, Some(self.next_scrub));
        }
        next
    }
}

fn report(b: &Batch) -> Message {
    Message::InventoryReport(Box::new(InventoryBatch {
        seq: b.seq,
        sync: b.sync,
        adds: b.adds.clone(),
        removes: b.removes.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashKind;
    use crate::ids::NodeId;

    pub(super) fn view(state: &ClusterState, log: Option<LogId>, ready: bool) -> StoreView<'_> {
        StoreView {
            state,
            me: NodeId(5),
            log,
            ready,
        }
    }

    pub(super) fn h(i: u64) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &i.to_le_bytes())
    }

    fn meta() -> ContentMeta {
        ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 3,
        }
    }

    #[test]
    fn diff_reports_both_directions() {
        let local: BTreeMap<ContentHash, ContentMeta> =
            [1, 2, 3].iter().map(|i| (h(*i), meta())).collect();
        let mut auth: Vec<ContentHash> = [2, 3, 4, 5].iter().map(|i| h(*i)).collect();
        auth.sort();
        let d = diff(&local, auth.iter().copied());
        assert_eq!(d.new, vec![(h(1), meta())]);
        let mut missing = vec![h(4), h(5)];
        missing.sort();
        assert_eq!(d.missing, missing);
        assert_eq!(diff(&local, local.keys().copied()), Diff::default());
    }

    fn sent_reports(out: &mut Outbox) -> Vec<(VoteSeq, Option<LogId>, usize, usize)> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { envelope, .. } = o {
                if let Message::InventoryReport(b) = envelope.msg {
                    v.push((b.seq, b.sync, b.adds.len(), b.removes.len()));
                }
            }
        }
        v
    }

    #[test]
    fn full_sync_is_batched_acknowledged_and_marked() {
        let cfg = ContentConfig {
            report_batch: 2,
            ..ContentConfig::default()
        };
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut s = StoreRole::new(cfg, 1, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        let state = ClusterState::default();
        s.on_tick(Time::ZERO, &view(&state, None, false), auth, &mut out);
        assert!(out.queue.iter().any(|o| matches!(o, Output::ListContent)));
        out.queue.clear();
        s.on_listing((0..3).map(|i| (h(i), meta())).collect());
        let log = Some(LogId(9));
        s.on_tick(Time::ZERO, &view(&state, log, true), auth, &mut out);
        let first = sent_reports(&mut out);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].1, first[0].2), (None, 2));
        s.on_ack(first[0].0);
        s.on_tick(Time::ZERO, &view(&state, log, true), auth, &mut out);
        let second = sent_reports(&mut out);
        assert_eq!(
            (second[0].1, second[0].2),
            (log, 1),
            "last batch carries the sync"
        );
        assert_eq!(s.synced(), None, "not until acknowledged");
        s.on_ack(second[0].0);
        assert_eq!(s.synced(), log);
    }

    #[test]
    fn unacknowledged_report_is_resent_with_the_same_seq() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let cfg = ContentConfig::default();
        let resend = cfg.report_retransmit;
        let mut s = StoreRole::new(cfg, 1, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        let state = ClusterState::default();
        s.on_listing(vec![]);
        s.on_stored(h(1), meta());
        s.on_tick(Time::ZERO, &view(&state, None, false), auth, &mut out);
        let a = sent_reports(&mut out);
        s.on_tick(
            Time::ZERO + resend,
            &view(&state, None, false),
            auth,
            &mut out,
        );
        let b = sent_reports(&mut out);
        assert_eq!(a[0].0, b[0].0);
    }

    #[test]
    fn copy_stored_while_listing_is_outstanding_survives_the_listing() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        let state = ClusterState::default();
        s.on_tick(Time::ZERO, &view(&state, None, false), auth, &mut out);
        s.on_stored(h(7), meta());
        // The report goes out before the (older) listing arrives.
        s.on_tick(Time::ZERO, &view(&state, None, false), auth, &mut out);
        s.on_listing(vec![(h(1), meta())]);
        assert!(s.held().contains_key(&h(7)));
        assert!(s.held().contains_key(&h(1)));
    }

    #[test]
    fn failed_scrub_deletes_and_reports_removal() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        s.on_listing(vec![(h(1), meta())]);
        s.on_scrub(h(1), false, &mut out);
        assert!(s.held().is_empty());
        assert!(matches!(
            out.queue.pop_front(),
            Some(Output::DeleteContent { .. })
        ));
        assert_eq!(s.pending.get(&h(1)), Some(&None));
    }

    #[test]
    fn scrub_walks_every_copy_in_turn() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let cfg = ContentConfig::default();
        let every = cfg.scrub_interval;
        let mut s = StoreRole::new(cfg, 1, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        s.on_listing((0..3).map(|i| (h(i), meta())).collect());
        let state = ClusterState::default();
        let mut seen = Vec::new();
        let mut now = Time::ZERO;
        for _ in 0..6 {
            now += every;
            s.on_tick(now, &view(&state, None, false), auth, &mut out);
            while let Some(o) = out.queue.pop_front() {
                if let Output::Scrub { hash } = o {
                    seen.push(hash);
                }
            }
        }
        let mut all: Vec<ContentHash> = (0..3).map(h).collect();
        all.sort();
        assert_eq!(&seen[..3], all.as_slice());
        assert_eq!(&seen[3..], all.as_slice(), "wraps around");
    }

    #[test]
    fn a_drop_order_covers_only_copies_reported_under_its_fence() {
        let auth: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let state = ClusterState::default();
        let mut s = StoreRole::new(ContentConfig::default(), 2, Time::ZERO);
        let mut out = Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap());
        s.on_listing(vec![(h(1), meta())]);
        // A fence from before this store restarted covers nothing listed
        // since: the copy stays and is reported again.
        let old = VoteSeq {
            incarnation: 1,
            counter: 64,
        };
        let order = DropOrder {
            hash: h(1),
            upto: old,
        };
        assert!(!s.on_drop(&order, &mut out));
        assert_eq!(s.pending.get(&h(1)), Some(&Some(meta())));
        // Reported in batch 1 of this incarnation: an order fenced there
        // drops it; a copy received after that report is not covered.
        s.on_tick(Time::ZERO, &view(&state, None, false), auth, &mut out);
        let sent = sent_reports(&mut out);
        let batch = sent[0].0;
        s.on_ack(batch);
        s.on_stored(h(2), meta());
        let fenced = |hash| DropOrder { hash, upto: batch };
        assert!(
            !s.on_drop(&fenced(h(2)), &mut out),
            "received after the fence"
        );
        assert!(s.on_drop(&fenced(h(1)), &mut out));
        assert!(!s.held().contains_key(&h(1)));
        // Nothing here: answered with a removal.
        assert!(!s.on_drop(&fenced(h(9)), &mut out));
        assert_eq!(s.pending.get(&h(9)), Some(&None));
    }
}

#[cfg(test)]
mod job_tests {
    //! Clone jobs, scrub results racing new copies, the listing and sync
    //! schedule, report pacing and the store's deadlines.

    use super::tests::{h, view};
    use super::*;
    use crate::ids::NodeId;
    use crate::time::Duration;

    const AUTH: &str = "10.0.0.1:7000";

    fn meta(size: u64) -> ContentMeta {
        ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size,
        }
    }

    fn outbox() -> Outbox {
        Outbox::new(NodeId(5), "10.0.0.5:7000".parse().unwrap())
    }

    fn auth() -> SocketAddr {
        AUTH.parse().unwrap()
    }

    fn messages(out: &mut Outbox) -> Vec<Message> {
        out.queue
            .drain(..)
            .filter_map(|o| match o {
                Output::Send { to, envelope } => {
                    assert_eq!(to, auth());
                    Some(envelope.msg)
                }
                _ => None,
            })
            .collect()
    }

    fn listings(out: &Outbox) -> usize {
        out.queue
            .iter()
            .filter(|o| matches!(o, Output::ListContent))
            .count()
    }

    #[test]
    fn store_operations_carry_the_top_bit() {
        assert_eq!(STORE_OP, 0x8000_0000_0000_0000);
    }

    #[test]
    fn a_clone_job_transfers_a_held_copy_and_reports_how_it_went() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        s.on_listing(vec![(h(1), meta(5_000_000))]);
        let mut out = outbox();
        let job = |job, hash| CloneJob {
            job,
            hash,
            target: NodeId(7),
            target_addr: "10.0.0.7:7000".parse().unwrap(),
        };
        // Not here: failed at once.
        s.on_clone(job(3, h(2)), auth(), &mut out);
        assert_eq!(
            messages(&mut out),
            [Message::CloneDone { job: 3, ok: false }]
        );
        s.on_clone(job(4, h(1)), auth(), &mut out);
        s.on_clone(job(5, h(1)), auth(), &mut out);
        let ops: Vec<u64> = out
            .queue
            .drain(..)
            .map(|o| match o {
                Output::Transfer {
                    op,
                    hash,
                    to,
                    source,
                    timeout,
                    ..
                } => {
                    assert_eq!(
                        (hash, to, source),
                        (h(1), NodeId(7), TransferSource::Stored)
                    );
                    assert_eq!(timeout, s.cfg.transfer_deadline(5_000_000));
                    assert_ne!(op & STORE_OP, 0);
                    op
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ops, [STORE_OP + 1, STORE_OP + 2]);
        s.on_transfer_done(ops[1], true, auth(), &mut out);
        s.on_transfer_done(ops[0], false, auth(), &mut out);
        s.on_transfer_done(ops[0], true, auth(), &mut out);
        assert_eq!(
            messages(&mut out),
            [
                Message::CloneDone { job: 5, ok: true },
                Message::CloneDone { job: 4, ok: false }
            ],
            "once each"
        );
    }

    #[test]
    fn a_bad_scrub_of_bytes_replaced_meanwhile_deletes_nothing() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let state = ClusterState::default();
        let mut out = outbox();
        s.on_listing(vec![(h(1), meta(3)), (h(2), meta(3))]);
        let first = if h(1) < h(2) { h(1) } else { h(2) };
        let other = if first == h(1) { h(2) } else { h(1) };
        s.on_tick(s.next_scrub, &view(&state, None, false), auth(), &mut out);
        assert!(out
            .queue
            .iter()
            .any(|o| *o == Output::Scrub { hash: first }));
        out.queue.clear();
        // Another copy arriving does not make this result stale.
        s.on_stored(other, meta(3));
        // A new copy of the scrubbed hash arrives before the result.
        s.on_stored(first, meta(3));
        s.on_scrub(first, false, &mut out);
        assert!(out.queue.is_empty());
        assert!(s.held().contains_key(&first));
        // A good result deletes nothing either; a bad one of the next does.
        s.on_scrub(other, true, &mut out);
        assert!(out.queue.is_empty());
        s.on_scrub(other, false, &mut out);
        assert_eq!(
            out.queue.pop_front(),
            Some(Output::DeleteContent { hash: other })
        );
        assert!(!s.held().contains_key(&other));
    }

    #[test]
    fn a_bad_scrub_of_a_copy_not_being_scrubbed_still_deletes_it() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let state = ClusterState::default();
        let mut out = outbox();
        s.on_listing(vec![(h(1), meta(3)), (h(2), meta(3))]);
        s.on_tick(s.next_scrub, &view(&state, None, false), auth(), &mut out);
        out.queue.clear();
        let scrubbed = s.scrubbing.expect("scrubbing").0;
        let other = if scrubbed == h(1) { h(2) } else { h(1) };
        s.on_scrub(other, false, &mut out);
        assert_eq!(
            out.queue.pop_front(),
            Some(Output::DeleteContent { hash: other })
        );
        assert_eq!(s.scrubbing, Some((scrubbed, false)), "still waiting");
    }

    #[test]
    fn the_disk_is_listed_once_at_start_and_again_every_resync_interval() {
        let cfg = ContentConfig {
            resync_interval: Duration::from_secs(60),
            ..ContentConfig::default()
        };
        let mut s = StoreRole::new(cfg, 1, Time::ZERO);
        let state = ClusterState::default();
        let mut out = outbox();
        let v = view(&state, None, false);
        s.on_tick(Time::ZERO, &v, auth(), &mut out);
        s.on_tick(Time::from_secs(1), &v, auth(), &mut out);
        assert_eq!(listings(&out), 1, "not again while one is outstanding");
        out.queue.clear();
        s.on_listing(vec![]);
        s.on_tick(Time::from_secs(59), &v, auth(), &mut out);
        assert_eq!(listings(&out), 0);
        assert_eq!(
            s.next_deadline(Time::from_secs(59)),
            Some(Time::from_secs(60))
        );
        s.on_tick(Time::from_secs(60), &v, auth(), &mut out);
        assert_eq!(listings(&out), 1);
    }

    #[test]
    fn a_full_sync_starts_only_when_listed_ready_and_following_a_log() {
        let mut state = ClusterState::default();
        // The authority lists a copy this store no longer has.
        state.apply(&crate::feed::Change::ContentStored {
            hash: h(9),
            store: NodeId(5),
            meta: meta(3),
        });
        let log = Some(LogId(3));
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let mut out = outbox();
        s.on_tick(Time::ZERO, &view(&state, log, true), auth(), &mut out);
        assert!(messages(&mut out).is_empty(), "not listed yet");
        s.on_listing(vec![(h(1), meta(3))]);
        for (log, ready) in [(log, false), (None, true)] {
            s.on_tick(Time::ZERO, &view(&state, log, ready), auth(), &mut out);
            assert!(messages(&mut out).is_empty(), "no sync yet");
        }
        s.on_tick(Time::ZERO, &view(&state, log, true), auth(), &mut out);
        let sent = messages(&mut out);
        let [Message::InventoryReport(b)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(b.sync, log);
        assert_eq!(b.removes, [h(9)]);
        // A wrong acknowledgement completes nothing.
        s.on_ack(VoteSeq {
            incarnation: 1,
            counter: b.seq.counter + 1,
        });
        assert_eq!(s.synced(), None);
        s.on_ack(b.seq);
        assert_eq!(s.synced(), log);
        // Synced: the next tick sends nothing.
        s.on_tick(Time::ZERO, &view(&state, log, true), auth(), &mut out);
        assert!(messages(&mut out).is_empty());
        // A new log is synced against afresh.
        let other = Some(LogId(4));
        s.on_tick(Time::ZERO, &view(&state, other, true), auth(), &mut out);
        let sent = messages(&mut out);
        let [Message::InventoryReport(b)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(b.sync, other);
    }

    #[test]
    fn reports_go_in_batches_of_the_configured_size_and_are_resent_when_due() {
        let cfg = ContentConfig {
            report_batch: 2,
            report_retransmit: Duration::from_millis(300),
            scrub_interval: Duration::from_secs(10),
            ..ContentConfig::default()
        };
        let mut s = StoreRole::new(cfg, 4, Time::ZERO);
        let state = ClusterState::default();
        let v = view(&state, None, false);
        let mut out = outbox();
        s.on_listing(vec![]);
        for i in 0..3 {
            s.on_stored(h(i), meta(3));
        }
        assert_eq!(
            s.next_deadline(Time::from_millis(7)),
            Some(Time::from_millis(7)),
            "due now"
        );
        s.on_tick(Time::ZERO, &v, auth(), &mut out);
        let sent = messages(&mut out);
        let [Message::InventoryReport(b)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(b.adds.len(), 2);
        assert_eq!(
            b.seq,
            VoteSeq {
                incarnation: 4,
                counter: 1
            }
        );
        assert_eq!(s.next_deadline(Time::ZERO), Some(Time::from_millis(300)));
        s.on_tick(Time::from_millis(299), &v, auth(), &mut out);
        assert!(messages(&mut out).is_empty());
        s.on_tick(Time::from_millis(300), &v, auth(), &mut out);
        assert_eq!(messages(&mut out).len(), 1, "resent");
        assert_eq!(s.next_deadline(Time::ZERO), Some(Time::from_millis(600)));
        s.on_ack(b.seq);
        s.on_tick(Time::from_millis(301), &v, auth(), &mut out);
        let sent = messages(&mut out);
        let [Message::InventoryReport(c)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!((c.adds.len(), c.seq.counter), (1, 2));
    }

    #[test]
    fn scrub_is_due_only_with_copies_to_scrub() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let resync = Time::ZERO + s.cfg.resync_interval;
        assert_eq!(s.next_deadline(Time::ZERO), Some(resync));
        s.on_listing(vec![]);
        assert_eq!(s.next_deadline(Time::ZERO), Some(resync));
        s.on_listing(vec![(h(1), meta(3))]);
        assert_eq!(s.next_deadline(Time::ZERO), Some(s.next_scrub));
        assert!(s.next_scrub < resync);
        // A large copy earns a longer rest before the next scrub.
        let state = ClusterState::default();
        let mut out = outbox();
        let big = 40 << 20;
        s.on_listing(vec![(h(1), meta(big))]);
        let at = s.next_scrub;
        s.on_tick(at, &view(&state, None, false), auth(), &mut out);
        assert_eq!(s.next_scrub, at + s.cfg.scrub_pause(big));
    }

    #[test]
    fn a_listing_keeps_what_changed_since_it_was_asked_for() {
        let mut s = StoreRole::new(ContentConfig::default(), 1, Time::ZERO);
        let state = ClusterState::default();
        let mut out = outbox();
        s.on_listing(vec![(h(1), meta(3)), (h(2), meta(3))]);
        // A re-listing is asked for; meanwhile 2 is dropped by scrub.
        s.next_resync = Time::ZERO;
        s.on_tick(Time::ZERO, &view(&state, None, false), auth(), &mut out);
        assert_eq!(listings(&out), 1);
        s.on_scrub(h(2), false, &mut out);
        // The removal is reported (no longer pending) before the listing.
        s.on_tick(Time::ZERO, &view(&state, None, false), auth(), &mut out);
        assert!(s.pending.is_empty() && s.in_flight.is_some());
        s.on_listing(vec![(h(1), meta(3)), (h(2), meta(3))]);
        assert!(
            !s.held().contains_key(&h(2)),
            "the listing predates the drop"
        );
        assert!(s.held().contains_key(&h(1)));
        // Listed copies count as reported at the start of this run.
        let start = VoteSeq {
            incarnation: 1,
            counter: 0,
        };
        assert_eq!(s.reported.get(&h(1)), Some(&start));
        assert_eq!(s.reported.get(&h(2)), None);
    }
}
