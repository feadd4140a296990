//! The cluster's wall clock: the median of the clocks of the nodes this node
//! hears from, its own included.
//!
//! Purchase expiry is decided by the authority and enforced by every prism,
//! each with its own wall clock. One node whose clock is seconds off (a bad
//! NTP, a VM restored from a snapshot) would otherwise move every expiry it
//! states or enforces by as much. Every envelope carries its sender's raw
//! wall clock; a node estimates each peer's offset from those stamps and
//! reads the time as its own clock plus the median offset, so a minority of
//! wrong clocks, its own included, moves nobody's time.
//!
//! A stamp arrives late by the message's delay, never early, so the estimate
//! per peer is the largest offset seen recently (the least-delayed sample,
//! as NTP prefers the sample with the smallest round trip).

use crate::ids::NodeId;
use crate::state::ClusterState;
use crate::time::{Duration, Time, WallTime};
use std::collections::BTreeMap;

/// How long one bucket of samples lasts; a peer's estimate is the largest
/// sample of its current and previous bucket, so a changed clock (a restart)
/// is followed within two buckets.
const BUCKET: Duration = Duration::from_secs(10);
/// Peers silent this long no longer count.
const FORGET: Duration = Duration::from_secs(30);
/// Offsets from this many live peers make the median robust to one wrong
/// clock (with our own, three values). With fewer, the time is the last one
/// that had them, or our own clock: never a midpoint between two clocks,
/// which would be half wrong whichever is.
const PEERS_TO_SETTLE: usize = 2;
/// A cluster of one or two settles on what it has only after this long. An
/// authority whose registry was lost does not know the cluster's size: it
/// waits as a larger cluster would (swarm seed 9658: wiped, with most of a
/// four-node cluster down, it settled on its own clock 7 s off).
const SETTLE_SMALL_AFTER: Duration = Duration::from_secs(3);
/// A larger cluster with fewer than two live peers heard (most of it down)
/// settles on our own clock after this long: two clocks cannot tell which
/// is wrong, so this waits for the others first.
const SETTLE_ALONE_AFTER: Duration = Duration::from_secs(10);
/// How often the median is recomputed (an authority hears from every node).
const REFRESH: Duration = Duration::from_millis(250);
/// A peer heard this recently is running, whatever the verdict on it says
/// (a restarted authority takes a while to bring its nodes back up).
const FRESH: Duration = Duration::from_secs(2);
/// A peer counts once it has been heard over this long: a burst of stamps
/// arriving at once is one sample, and may be all late. A dead node's
/// messages held up in the network come that way (swarm seed 7416: a
/// wiped node's old id, registered by its own delayed join, arrived with
/// stamps 4 s late and, with one wild clock, moved the median 1.6 s).
const MIN_SPAN: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
struct PeerOffset {
    /// When this peer was first heard (since it was last forgotten).
    first_heard: Time,
    bucket_start: Time,
    current: i64,
    previous: Option<i64>,
    heard: Time,
}

impl PeerOffset {
    fn estimate(&self) -> i64 {
        self.previous.map_or(self.current, |p| p.max(self.current))
    }
}

/// What the registry a refresh is given says of the cluster's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryView {
    /// The authority's own, recovered registry: its size is the cluster's.
    Complete,
    /// One that may be partial: a recovering authority's, rebuilt from
    /// hand-backs, or a replica's (its authority may be recovering, and
    /// serves what it has rebuilt so far). Not the size.
    Partial,
    /// A replica's while it is not synced (since its start, or since it
    /// fell behind): nothing yet. The time never settles on a timeout from
    /// here (a prism restarted while the authority is down would otherwise
    /// serve on its own clock the moment it syncs, swarm seed 7994).
    Unsynced,
}

#[derive(Clone, Debug)]
pub struct ClusterClock {
    me: NodeId,
    /// Since when the timeouts to settle on what we have run: our start,
    /// or the last refresh whose registry was `Unsynced`.
    waiting_since: Time,
    peers: BTreeMap<NodeId, PeerOffset>,
    /// Offset of the median from our own clock, in microseconds, as of the
    /// last refresh with enough peers.
    offset_us: i64,
    /// Set once the time was known from enough clocks; it stays known (the
    /// last good median is kept when peers fall silent).
    settled: bool,
    next_refresh: Time,
}

impl ClusterClock {
    pub fn new(me: NodeId, now: Time) -> ClusterClock {
        ClusterClock {
            me,
            waiting_since: now,
            peers: BTreeMap::new(),
            offset_us: 0,
            settled: false,
            next_refresh: now,
        }
    }

    /// A message stamped `sent` by `from` (a live member: the caller
    /// checks) arrived at `now`, when our own wall clock read `local`.
    pub fn sample(&mut self, now: Time, local: WallTime, from: NodeId, sent: WallTime) {
        if from == self.me || sent == WallTime::default() {
            return; // Our own loopback, or a sender that stamps nothing.
        }
        let off = sent.as_micros() as i64 - local.as_micros() as i64;
        let p = self.peers.entry(from).or_insert(PeerOffset {
            first_heard: now,
            bucket_start: now,
            current: off,
            previous: None,
            heard: now,
        });
        if now.since(p.bucket_start) >= BUCKET {
            // The old bucket stays even after a long silence: the first
            // samples after one may be messages queued while we were
            // stopped, late by the whole stop.
            p.previous = Some(p.current);
            p.current = off;
            p.bucket_start = now;
        } else {
            p.current = p.current.max(off);
        }
        p.heard = now;
    }

    /// Recomputes the median (at most every 250 ms) over peers heard over
    /// at least `MIN_SPAN`, recently or that `state` holds live; a cluster too small for
    /// three clocks settles on what it has, after a while.
    pub fn refresh(&mut self, now: Time, state: &ClusterState, view: RegistryView) {
        if view == RegistryView::Unsynced {
            self.waiting_since = now;
        }
        if now < self.next_refresh {
            return;
        }
        // A peer the registry does not hold counts only while it is heard
        // (a registry still syncing); one silent since it left the registry
        // is a ghost, such as a wiped node's old id (swarm seed 5924: a
        // wiped authority's clock 6 s off counted twice, under its old id
        // and its new one, and moved the median 3.5 s).
        let live =
            |id: NodeId| state.registry.contains(id) && !state.is_down(id) && !state.has_left(id);
        self.next_refresh = now + REFRESH;
        self.peers.retain(|_, p| now.since(p.heard) < FORGET);
        let mut offsets: Vec<i64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.heard.since(p.first_heard) >= MIN_SPAN)
            .filter(|(id, p)| live(**id) || now.since(p.heard) < FRESH)
            .map(|(_, p)| p.estimate())
            .collect();
        let waited = now.since(self.waiting_since);
        let small = view == RegistryView::Complete && state.registry.len() < PEERS_TO_SETTLE + 1;
        if offsets.len() >= PEERS_TO_SETTLE
            || (small && waited >= SETTLE_SMALL_AFTER)
            || waited >= SETTLE_ALONE_AFTER
        {
            self.settled = true;
        }
        if offsets.len() < PEERS_TO_SETTLE {
            return; // Keep the last median that had enough clocks.
        }
        offsets.push(0);
        offsets.sort_unstable();
        let n = offsets.len();
        self.offset_us = if n % 2 == 1 {
            offsets[n / 2]
        } else {
            // Four or more clocks: the two middle ones are both trusted.
            (offsets[n / 2 - 1] + offsets[n / 2]).div_euclid(2)
        };
    }

    /// The cluster's time when our own wall clock reads `local`: our own
    /// until enough peers have been heard.
    pub fn wall(&self, local: WallTime) -> WallTime {
        if !self.settled {
            return local;
        }
        let us = (local.as_micros() as i64).saturating_add(self.offset_us);
        WallTime::from_micros(us.max(0) as u64)
    }

    /// Whether enough peers have been heard for one wrong clock, ours
    /// included, not to move the time (or, in a cluster of one or two, all
    /// there are).
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// How far the cluster's time is from our own clock, in microseconds
    /// (zero until settled).
    pub fn offset_us(&self) -> i64 {
        if self.settled {
            self.offset_us
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeInfo, Roles, Zone};

    /// A registry of nodes 1..=n, all live, but `down`.
    fn members(n: u64, down: &[u64]) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=n {
            s.apply(&crate::feed::Change::NodeUpserted(NodeInfo {
                id: NodeId(id),
                addr: ([10, 0, 0, id as u8], 7000).into(),
                roles: Roles::default(),
                zone: Zone::default(),
                weight: 100,
                incarnation: 0,
            }));
        }
        for id in down {
            s.apply(&crate::feed::Change::Health {
                node: NodeId(*id),
                down: true,
            });
        }
        s
    }

    const SEC: i64 = 1_000_000;

    fn at(s: u64) -> Time {
        Time::from_secs(s)
    }

    fn w(us: i64) -> WallTime {
        WallTime::from_micros(us as u64)
    }

    /// Peers `ids` with clocks `skew` µs off true time, heard at `now` with
    /// `delay` µs of transit, by a node whose own clock is `mine` µs off.
    /// A peer never heard before is first heard `MIN_SPAN` earlier too, with
    /// the same clock and delay (a peer counts once heard over a while).
    fn hear(c: &mut ClusterClock, now: u64, mine: i64, peers: &[(u64, i64)], delay: i64) {
        let truth = 1_000 * SEC + now as i64 * SEC;
        for (id, skew) in peers {
            let sent = truth - delay + skew;
            if !c.peers.contains_key(&NodeId(*id)) {
                let before = at(now) - MIN_SPAN;
                let span = MIN_SPAN.as_micros() as i64;
                c.sample(before, w(truth + mine - span), NodeId(*id), w(sent - span));
            }
            c.sample(at(now), w(truth + mine), NodeId(*id), w(sent));
        }
        c.refresh(at(now), &members(10, &[]), RegistryView::Complete);
    }

    #[test]
    fn a_burst_of_late_stamps_from_a_peer_first_heard_in_it_does_not_count() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 0), (3, -3 * SEC)], 0);
        assert_eq!(c.offset_us(), 0);
        // Node 5's messages, held up in the network for 4 s, arrive at once.
        for k in 0..20 {
            let now = Time::from_micros(2 * SEC as u64 + k);
            let truth = 1_002 * SEC;
            c.sample(now, w(truth), NodeId(5), w(truth - 4 * SEC));
        }
        c.refresh(at(3), &members(10, &[]), RegistryView::Complete);
        assert_eq!(c.offset_us(), 0, "one burst is not a clock heard over time");
    }

    #[test]
    fn one_wrong_peer_does_not_move_the_time() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 0), (3, 7 * SEC), (4, 0)], 0);
        assert_eq!(c.offset_us(), 0);
        assert!(c.settled());
    }

    #[test]
    fn a_wrong_own_clock_is_corrected_by_the_peers() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 7 * SEC, &[(2, 0), (3, 0)], 0);
        assert_eq!(c.offset_us(), -7 * SEC);
        let truth = w(1_001 * SEC);
        assert_eq!(c.wall(w(1_001 * SEC + 7 * SEC)), truth);
    }

    #[test]
    fn delayed_stamps_are_discounted_by_the_least_delayed_sample() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 0), (3, 0)], 2_000);
        hear(&mut c, 2, 0, &[(2, 0), (3, 0)], 900_000);
        assert_eq!(c.offset_us(), -2_000, "the 0.9 s delays are ignored");
    }

    #[test]
    fn a_peer_whose_clock_changed_is_followed_within_two_buckets() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 5 * SEC), (3, 5 * SEC)], 0);
        assert_eq!(c.offset_us(), 5 * SEC);
        hear(&mut c, 12, 0, &[(2, 0), (3, 0)], 0);
        assert_eq!(c.offset_us(), 5 * SEC, "the previous bucket still counts");
        hear(&mut c, 23, 0, &[(2, 0), (3, 0)], 0);
        assert_eq!(c.offset_us(), 0);
    }

    #[test]
    fn messages_queued_through_our_own_stop_do_not_move_the_time() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 0), (3, 0)], 0);
        // Stopped for 25 s: what was queued arrives 25 s late.
        hear(&mut c, 26, 0, &[(2, 0), (3, 0)], 25 * SEC);
        assert_eq!(c.offset_us(), 0);
    }

    #[test]
    fn silent_or_dead_peers_no_longer_count() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 4 * SEC), (3, 4 * SEC), (4, 4 * SEC)], 0);
        assert_eq!(c.offset_us(), 4 * SEC);
        hear(&mut c, 40, 0, &[(5, 0), (6, 0)], 0);
        assert_eq!(c.offset_us(), 0, "three silent peers no longer count");
        // Three clocks 10 s ahead, heard over a span but not lately, that
        // would move the median (three zeros, ours included) if they counted.
        for t in [41, 42] {
            for id in [7, 8, 9] {
                let local = w(1_000 * SEC + t as i64 * SEC);
                c.sample(at(t), local, NodeId(id), w(1_010 * SEC + t as i64 * SEC));
            }
        }
        c.refresh(at(45), &members(10, &[7, 8, 9]), RegistryView::Complete);
        assert_eq!(
            c.offset_us(),
            0,
            "peers the caller says are down are left out"
        );
    }

    #[test]
    fn a_live_member_silent_for_a_while_still_counts() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 4 * SEC), (3, 4 * SEC)], 0);
        assert_eq!(c.offset_us(), 4 * SEC);
        // 2 and 3 are not heard since, but the registry holds them live:
        // they count with node 5 (a quiet peer is not a dead one), so the
        // median of -4, 0 (ours), 4, 4 is 2.
        hear(&mut c, 6, 0, &[(5, -4 * SEC)], 0);
        assert_eq!(c.offset_us(), 2 * SEC);
    }

    #[test]
    fn a_silent_peer_the_registry_does_not_hold_no_longer_counts() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        // Node 20 (not registered, e.g. a wiped node's old id) and node 3
        // share a clock 6 s off; node 2 is right.
        hear(&mut c, 1, 0, &[(2, 0), (3, 6 * SEC), (20, 6 * SEC)], 0);
        assert_eq!(c.offset_us(), 3 * SEC, "heard just now: it counts");
        hear(&mut c, 4, 0, &[(2, 0), (3, 6 * SEC)], 0);
        assert_eq!(c.offset_us(), 0, "silent and unregistered: a ghost");
    }

    #[test]
    fn two_clocks_never_meet_halfway_and_a_small_cluster_settles_on_what_it_has() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 4 * SEC)], 0);
        assert!(!c.settled(), "three live members: one peer is not enough");
        assert_eq!(c.wall(w(SEC)), w(SEC), "one peer alone moves nothing");
        c.refresh(at(9), &members(10, &[]), RegistryView::Complete);
        assert!(!c.settled(), "most of a larger cluster may come back");
        c.refresh(at(10), &members(10, &[]), RegistryView::Complete);
        assert!(c.settled(), "but not forever");
        assert_eq!(c.offset_us(), 0, "our own clock, not halfway");
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        c.sample(at(1), w(SEC), NodeId(2), w(5 * SEC));
        c.refresh(at(1), &members(2, &[]), RegistryView::Complete);
        assert!(!c.settled(), "a cluster of two waits for its nodes to join");
        c.refresh(at(3), &members(2, &[]), RegistryView::Complete);
        assert!(c.settled(), "then settles on what it has");
        assert_eq!(c.offset_us(), 0, "settled on our own clock, not halfway");
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        c.refresh(at(3), &members(1, &[]), RegistryView::Complete);
        assert!(c.settled(), "alone, after a while");
        // A wiped authority's registry of one says nothing of the cluster.
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        c.refresh(at(3), &members(1, &[]), RegistryView::Partial);
        assert!(!c.settled(), "the size is not known: wait as a larger one");
        c.refresh(at(10), &members(1, &[]), RegistryView::Partial);
        assert!(c.settled());
        // A replica that has not synced since its start settles on no
        // timeout; once synced, the timeouts count from then.
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        c.refresh(at(30), &ClusterState::default(), RegistryView::Unsynced);
        assert!(!c.settled(), "unsynced: never on a timeout");
        c.refresh(at(31), &members(2, &[]), RegistryView::Partial);
        assert!(!c.settled(), "synced a second ago: wait for the peers");
        c.refresh(at(35), &members(2, &[]), RegistryView::Partial);
        assert!(!c.settled(), "a replica's registry of two is not the size");
        c.refresh(at(40), &members(2, &[]), RegistryView::Partial);
        assert!(c.settled(), "then, as any larger cluster");
    }

    #[test]
    fn a_median_that_had_enough_clocks_is_kept_when_peers_fall_silent() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 6 * SEC, &[(2, 0), (3, 0)], 0);
        assert_eq!(c.offset_us(), -6 * SEC);
        hear(&mut c, 35, 6 * SEC, &[(2, 0)], 0);
        assert_eq!(c.offset_us(), -6 * SEC);
    }

    #[test]
    fn our_own_loopback_and_unstamped_messages_are_not_samples() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        // Each heard over a whole span, so only the guard keeps them out.
        for t in [1, 2] {
            let local = w(10 * SEC + t as i64 * SEC);
            c.sample(at(t), local, NodeId(1), w(20 * SEC));
            c.sample(at(t), local, NodeId(2), WallTime::default());
        }
        c.refresh(at(2), &members(10, &[]), RegistryView::Complete);
        assert_eq!(c.offset_us(), 0);
        assert!(!c.settled());
    }
}
