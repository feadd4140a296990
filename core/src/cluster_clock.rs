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
use crate::time::{Duration, Time, WallTime};
use std::collections::BTreeMap;

/// How long one bucket of samples lasts; a peer's estimate is the largest
/// sample of its current and previous bucket, so a changed clock (a restart)
/// is followed within two buckets.
const BUCKET: Duration = Duration::from_secs(10);
/// Peers silent this long no longer count.
const FORGET: Duration = Duration::from_secs(30);
/// Offsets from this many peers make the median robust to one wrong clock
/// (with our own, three values).
const PEERS_TO_SETTLE: usize = 2;
/// A node that hears from fewer peers (a tiny cluster) trusts what it has
/// after this long.
const SETTLE_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
struct PeerOffset {
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

#[derive(Clone, Debug)]
pub struct ClusterClock {
    me: NodeId,
    started: Time,
    peers: BTreeMap<NodeId, PeerOffset>,
    /// Offset of the median from our own clock, in microseconds, as of the
    /// last sample.
    offset_us: i64,
}

impl ClusterClock {
    pub fn new(me: NodeId, now: Time) -> ClusterClock {
        ClusterClock {
            me,
            started: now,
            peers: BTreeMap::new(),
            offset_us: 0,
        }
    }

    /// A message stamped `sent` by `from` arrived at `now`, when our own wall
    /// clock read `local`.
    pub fn sample(&mut self, now: Time, local: WallTime, from: NodeId, sent: WallTime) {
        if from == self.me || sent == WallTime::default() {
            return; // Our own loopback, or a sender that stamps nothing.
        }
        let off = sent.as_micros() as i64 - local.as_micros() as i64;
        let p = self.peers.entry(from).or_insert(PeerOffset {
            bucket_start: now,
            current: off,
            previous: None,
            heard: now,
        });
        if now.since(p.bucket_start) >= BUCKET {
            // A whole bucket of silence forgets the old one too.
            p.previous = (now.since(p.bucket_start) < BUCKET * 2).then_some(p.current);
            p.current = off;
            p.bucket_start = now;
        } else {
            p.current = p.current.max(off);
        }
        p.heard = now;
        self.recompute(now);
    }

    fn recompute(&mut self, now: Time) {
        self.peers.retain(|_, p| now.since(p.heard) < FORGET);
        let mut offsets: Vec<i64> = self.peers.values().map(PeerOffset::estimate).collect();
        offsets.push(0);
        offsets.sort_unstable();
        let n = offsets.len();
        self.offset_us = if n % 2 == 1 {
            offsets[n / 2]
        } else {
            // Midway between the two middle values, so that two clocks that
            // disagree meet halfway whichever is ours.
            (offsets[n / 2 - 1] + offsets[n / 2]).div_euclid(2)
        };
    }

    /// The cluster's time when our own wall clock reads `local`: our own
    /// until enough peers have been heard (one peer alone could be the
    /// wrong one).
    pub fn wall(&self, now: Time, local: WallTime) -> WallTime {
        if !self.settled(now) {
            return local;
        }
        let us = (local.as_micros() as i64).saturating_add(self.offset_us);
        WallTime::from_micros(us.max(0) as u64)
    }

    /// Whether enough peers have been heard for one wrong clock, ours
    /// included, not to move the time.
    pub fn settled(&self, now: Time) -> bool {
        let peers = self
            .peers
            .values()
            .filter(|p| now.since(p.heard) < FORGET)
            .count();
        peers >= PEERS_TO_SETTLE || now.since(self.started) >= SETTLE_AFTER
    }

    /// How far the cluster's time is from our own clock, in microseconds.
    pub fn offset_us(&self) -> i64 {
        self.offset_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn at(s: u64) -> Time {
        Time::from_secs(s)
    }

    fn w(us: i64) -> WallTime {
        WallTime::from_micros(us as u64)
    }

    /// Peers `ids` with clocks `skew` µs off true time, heard at `now` with
    /// `delay` µs of transit, by a node whose own clock is `mine` µs off.
    fn hear(c: &mut ClusterClock, now: u64, mine: i64, peers: &[(u64, i64)], delay: i64) {
        let truth = 1_000 * SEC + now as i64 * SEC;
        for (id, skew) in peers {
            let sent = truth - delay + skew;
            c.sample(at(now), w(truth + mine), NodeId(*id), w(sent));
        }
    }

    #[test]
    fn one_wrong_peer_does_not_move_the_time() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 0), (3, 7 * SEC), (4, 0)], 0);
        assert_eq!(c.offset_us(), 0);
        assert!(c.settled(at(1)));
    }

    #[test]
    fn a_wrong_own_clock_is_corrected_by_the_peers() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 7 * SEC, &[(2, 0), (3, 0)], 0);
        assert_eq!(c.offset_us(), -7 * SEC);
        let truth = w(1_001 * SEC);
        assert_eq!(c.wall(at(1), w(1_001 * SEC + 7 * SEC)), truth);
        assert!(c.settled(at(1)));
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
    fn silent_peers_are_forgotten_and_unsettle_the_clock() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 4 * SEC), (3, 4 * SEC)], 0);
        assert!(c.settled(at(1)));
        hear(&mut c, 40, 0, &[(4, 0)], 0);
        assert_eq!(c.offset_us(), 0, "two silent peers no longer count");
    }

    #[test]
    fn two_clocks_meet_halfway_and_a_lone_node_settles_in_time() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        hear(&mut c, 1, 0, &[(2, 4 * SEC)], 0);
        assert_eq!(c.offset_us(), 2 * SEC);
        assert!(!c.settled(at(1)));
        assert_eq!(
            c.wall(at(1), w(SEC)),
            w(SEC),
            "one peer alone moves nothing"
        );
        assert!(c.settled(at(3)));
    }

    #[test]
    fn our_own_loopback_and_unstamped_messages_are_not_samples() {
        let mut c = ClusterClock::new(NodeId(1), Time::ZERO);
        c.sample(at(1), w(10 * SEC), NodeId(1), w(20 * SEC));
        c.sample(at(1), w(10 * SEC), NodeId(2), WallTime::default());
        assert_eq!(c.offset_us(), 0);
        assert!(!c.settled(at(1)));
    }
}
