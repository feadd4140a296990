//! The authority's vote tally. A subject is down when a strict majority of its
//! live observers (observers not themselves down) hold an unexpired down vote;
//! it comes back up when that majority is gone, unless flap damping holds it.
//! Either way only while its live observers are a strict majority of those
//! assigned: without one nobody can vouch for it, and it keeps its verdict
//! (the authority reassigns observers away from down nodes meanwhile).

use crate::config::{InjectedBugs, TallyConfig};
use crate::feed::Change;
use crate::ids::NodeId;
use crate::message::VoteSeq;
use crate::state::ClusterState;
use crate::time::{earliest, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One observer's current vote set.
#[derive(Clone, Debug)]
struct Ballot {
    seq: VoteSeq,
    down: BTreeSet<NodeId>,
    expires: Time,
    /// Down votes that expired unrefreshed: the observer went silent after
    /// saying "down", which says nothing about the subject being up (the
    /// observer may only have lost the authority, or the authority may be
    /// the one cut off).
    stale: BTreeSet<NodeId>,
    /// An observer vouches for nobody until it has had the time to probe
    /// and vote: a vote TTL after the first set of its incarnation (a
    /// restarted observer's empty set says nothing yet).
    vouch_after: Time,
}

#[derive(Clone, Debug, Default)]
struct FlapHistory {
    downs: VecDeque<Time>,
    hold_until: Time,
}

/// What a tally says about one subject right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub down_votes: usize,
    pub live_observers: usize,
    /// Observers assigned, live or not.
    pub assigned: usize,
    /// Live observers assigned long enough to have voted if they would,
    /// whose last word on the subject was not a down vote: they vouch for
    /// it being up.
    pub vouching: usize,
}

impl Count {
    /// Strict majority of live observers (or, with the injected bug, any vote).
    pub fn is_down(&self, bugs: &InjectedBugs) -> bool {
        if bugs.single_vote_downs {
            return self.down_votes >= 1;
        }
        if bugs.tie_downs {
            return self.live_observers > 0 && self.down_votes * 2 >= self.live_observers;
        }
        // Down votes come from live observers only, so a majority of them
        // implies there is at least one.
        self.down_votes * 2 > self.live_observers
    }

    /// Enough live observers to decide either way.
    pub fn can_decide(&self) -> bool {
        self.live_observers * 2 > self.assigned
    }

    /// Enough of them have been watching long enough that the absence of
    /// their down votes says the subject is up (new observers have not had
    /// the time to vote yet).
    pub fn can_vouch(&self) -> bool {
        self.vouching * 2 > self.assigned
    }
}

#[derive(Clone, Debug)]
pub struct VoteTally {
    cfg: TallyConfig,
    bugs: InjectedBugs,
    ballots: BTreeMap<NodeId, Ballot>,
    /// When each non-empty ballot expires, earliest first.
    expiries: BTreeSet<(Time, NodeId)>,
    flaps: BTreeMap<NodeId, FlapHistory>,
    /// When flap-damping holds end, earliest first.
    holds: BTreeSet<(Time, NodeId)>,
    grace_until: Time,
    /// The end of the startup grace, until it has been handled: every node
    /// held down by it is evaluated then.
    grace_wake: Option<Time>,
    /// When each (subject, observer) assignment was made while this tally
    /// ran (one made before it started counts as seasoned: the startup
    /// grace gives its observers the time to vote again).
    assigned_at: BTreeMap<(NodeId, NodeId), Time>,
    /// When assignments made at the time become seasoned, per subject.
    seasoning: BTreeSet<(Time, NodeId)>,
    /// When observers' first sets of an incarnation start to vouch.
    vouch_deadlines: BTreeSet<(Time, NodeId)>,
    /// Subjects whose verdict may have changed since the last evaluation.
    dirty: BTreeSet<NodeId>,
    all_dirty: bool,
}

impl VoteTally {
    /// A tally starting at `now`: for `startup_grace` it lets no node come back
    /// up, so observers have time to refresh the votes a restart forgot.
    pub fn new(cfg: TallyConfig, bugs: InjectedBugs, now: Time) -> VoteTally {
        let grace_until = now + cfg.startup_grace;
        VoteTally {
            cfg,
            bugs,
            ballots: BTreeMap::new(),
            expiries: BTreeSet::new(),
            flaps: BTreeMap::new(),
            holds: BTreeSet::new(),
            grace_until,
            grace_wake: Some(grace_until),
            assigned_at: BTreeMap::new(),
            seasoning: BTreeSet::new(),
            vouch_deadlines: BTreeSet::new(),
            dirty: BTreeSet::new(),
            all_dirty: true,
        }
    }

    /// Records an observer's vote set. Returns false (and changes nothing) for
    /// a set older than the one already held (reordered or duplicated).
    pub fn record(&mut self, now: Time, observer: NodeId, seq: VoteSeq, down: &[NodeId]) -> bool {
        if let Some(b) = self.ballots.get(&observer) {
            if seq < b.seq {
                return false;
            }
        }
        let down: BTreeSet<NodeId> = down.iter().copied().filter(|d| *d != observer).collect();
        let expires = now + self.cfg.vote_ttl;
        let vouch_after = match self.ballots.get(&observer) {
            Some(old) if old.seq.incarnation == seq.incarnation => old.vouch_after,
            _ => {
                let at = now + self.cfg.vote_ttl;
                self.vouch_deadlines.insert((at, observer));
                at
            }
        };
        if let Some(old) = self.ballots.remove(&observer) {
            self.expiries.remove(&(old.expires, observer));
            self.dirty
                .extend(old.down.symmetric_difference(&down).copied());
            // A fresh word replaces the silence after expired votes.
            self.dirty.extend(old.stale.iter().copied());
        } else {
            self.dirty.extend(down.iter().copied());
        }
        if !down.is_empty() {
            self.expiries.insert((expires, observer));
        }
        self.ballots.insert(
            observer,
            Ballot {
                seq,
                down,
                expires,
                stale: BTreeSet::new(),
                vouch_after,
            },
        );
        true
    }

    /// The vote set held for `observer`, if any.
    pub fn held_seq(&self, observer: NodeId) -> Option<VoteSeq> {
        self.ballots.get(&observer).map(|b| b.seq)
    }

    /// Marks what a change applied to the state may affect.
    pub fn note_applied(&mut self, now: Time, change: &Change, state: &ClusterState) {
        match change {
            // Whether `node` counts as a live observer changed.
            Change::Health { node, .. } => self.dirty.extend(state.subjects_of(*node)),
            Change::Observers { subject, observers } => {
                self.dirty.insert(*subject);
                let old: Vec<NodeId> = self
                    .assigned_at
                    .range((*subject, NodeId(0))..=(*subject, NodeId(u64::MAX)))
                    .map(|((_, o), _)| *o)
                    .collect();
                for o in old.iter().filter(|o| !observers.contains(o)) {
                    self.assigned_at.remove(&(*subject, *o));
                }
                let mut fresh = false;
                for o in observers {
                    if let std::collections::btree_map::Entry::Vacant(e) =
                        self.assigned_at.entry((*subject, *o))
                    {
                        e.insert(now);
                        fresh = true;
                    }
                }
                if fresh {
                    self.seasoning.insert((now + self.cfg.vote_ttl, *subject));
                }
            }
            Change::NodeUpserted(info) => {
                self.dirty.insert(info.id);
            }
            // Leaving gracefully holds a node down; joining again lets the
            // votes decide.
            Change::Left { node, .. } => {
                self.dirty.insert(*node);
                self.dirty.extend(state.subjects_of(*node));
            }
            Change::NodeRemoved(id) => {
                self.forget(*id);
                self.all_dirty = true;
            }
            Change::ContentStored { .. }
            | Change::ContentDropped { .. }
            | Change::ContentDeleted { .. }
            | Change::PurchaseCreated(_)
            | Change::PurchaseRemoved { .. }
            | Change::PurchaseExpired { .. }
            | Change::TombstonesExpired { .. }
            | Change::Revoked { .. }
            | Change::Draining { .. } => {}
        }
    }

    /// Forgets a node removed from the cluster (it may join again under
    /// the same id, as a new member: nothing of it is seasoned).
    fn forget(&mut self, id: NodeId) {
        if let Some(b) = self.ballots.remove(&id) {
            self.expiries.remove(&(b.expires, id));
        }
        self.assigned_at.retain(|(s, o), _| *s != id && *o != id);
        self.vouch_deadlines.retain(|(_, o)| *o != id);
        self.seasoning.retain(|(_, s)| *s != id);
        if let Some(h) = self.flaps.remove(&id) {
            self.holds.remove(&(h.hold_until, id));
        }
    }

    pub fn count(&self, now: Time, subject: NodeId, state: &ClusterState) -> Count {
        let observers = state.observers_of(subject);
        let mut count = Count {
            down_votes: 0,
            live_observers: 0,
            assigned: observers.len(),
            vouching: 0,
        };
        for obs in observers {
            if state.is_down(*obs) || !state.registry.contains(*obs) {
                continue;
            }
            count.live_observers += 1;
            let since = self.assigned_at.get(&(subject, *obs));
            let ballot = self.ballots.get(obs);
            let seasoned = since.is_none_or(|t| now >= *t + self.cfg.vote_ttl)
                && ballot.is_some_and(|b| now >= b.vouch_after);
            let voted = ballot.is_some_and(|b| b.expires > now && b.down.contains(&subject));
            let silent_since_voting = !self.bugs.stale_votes_vouch
                && ballot.is_some_and(|b| {
                    b.stale.contains(&subject) || (b.expires <= now && b.down.contains(&subject))
                });
            if voted {
                count.down_votes += 1;
            } else if seasoned && !silent_since_voting {
                count.vouching += 1;
            }
        }
        count
    }

    /// Verdict changes due now. `exempt` (the authority itself) never gets a
    /// verdict. Changes are computed against `state` as given; the caller
    /// applies them (telling [`VoteTally::note_applied`]) and calls again
    /// until nothing changes.
    pub fn evaluate(&mut self, now: Time, state: &ClusterState, exempt: NodeId) -> Vec<Change> {
        while let Some(&(t, observer)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(b) = self.ballots.get_mut(&observer) {
                let expired = std::mem::take(&mut b.down);
                self.dirty.extend(expired.iter().copied());
                b.stale = expired;
            }
        }
        while let Some(&(t, subject)) = self.holds.first() {
            if t > now {
                break;
            }
            self.holds.pop_first();
            self.dirty.insert(subject);
        }
        while let Some(&(t, observer)) = self.vouch_deadlines.first() {
            if t > now {
                break;
            }
            self.vouch_deadlines.pop_first();
            self.dirty.extend(state.subjects_of(observer));
        }
        while let Some(&(t, subject)) = self.seasoning.first() {
            if t > now {
                break;
            }
            self.seasoning.pop_first();
            self.dirty.insert(subject);
        }
        if self.grace_wake.is_some_and(|t| now >= t) {
            self.grace_wake = None;
            self.dirty.extend(state.down.iter().copied());
        }
        let subjects: Vec<NodeId> = if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            state.registry.iter().map(|n| n.id).collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let mut changes = Vec::new();
        for subject in subjects {
            if subject == exempt || !state.registry.contains(subject) || state.has_left(subject) {
                continue;
            }
            let count = self.count(now, subject, state);
            let is_down = state.is_down(subject);
            let bug_up = self.bugs.up_without_live_majority && is_down;
            if !count.can_decide() && !self.bugs.single_vote_downs && !bug_up {
                continue; // No live majority to vouch: the verdict stands.
            }
            let down_now = count.is_down(&self.bugs);
            if down_now && !is_down {
                self.note_down(now, subject);
                changes.push(Change::Health {
                    node: subject,
                    down: true,
                });
            } else if !down_now
                && is_down
                && (count.can_vouch() || bug_up)
                && self.may_come_up(now, subject)
            {
                changes.push(Change::Health {
                    node: subject,
                    down: false,
                });
            }
        }
        changes
    }

    fn note_down(&mut self, now: Time, subject: NodeId) {
        let window = self.cfg.flap_window;
        let h = self.flaps.entry(subject).or_default();
        while h.downs.front().is_some_and(|t| now.since(*t) > window) {
            h.downs.pop_front();
        }
        h.downs.push_back(now);
        let downs = h.downs.len() as u32;
        if downs > self.cfg.flap_threshold {
            let doublings = (downs - self.cfg.flap_threshold - 1).min(16);
            let hold = self
                .cfg
                .flap_hold_base
                .saturating_mul(1 << doublings)
                .min(self.cfg.flap_hold_max);
            self.holds.remove(&(h.hold_until, subject));
            h.hold_until = now + hold;
            self.holds.insert((h.hold_until, subject));
        }
    }

    fn may_come_up(&self, now: Time, subject: NodeId) -> bool {
        now >= self.grace_until && self.flaps.get(&subject).is_none_or(|h| now >= h.hold_until)
    }

    /// Until when flap damping holds `subject` down (`None`: no hold).
    pub fn held_until(&self, subject: NodeId) -> Option<Time> {
        self.flaps.get(&subject).map(|h| h.hold_until)
    }

    /// The next time a verdict could change without new votes arriving.
    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = self.expiries.first().map(|(t, _)| *t);
        next = earliest(next, self.holds.first().map(|(t, _)| *t));
        next = earliest(next, self.seasoning.first().map(|(t, _)| *t));
        next = earliest(next, self.vouch_deadlines.first().map(|(t, _)| *t));
        next = earliest(next, self.grace_wake);
        if self.all_dirty || !self.dirty.is_empty() {
            next = Some(Time::ZERO);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeInfo, Roles, Zone};
    use crate::time::Duration;
    use proptest::prelude::*;
    use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

    const AUTH: NodeId = NodeId(100);

    fn cluster(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let ids: Vec<NodeId> = (0..n).map(NodeId).collect();
        for id in &ids {
            s.apply(&Change::NodeUpserted(NodeInfo {
                id: *id,
                addr: format!("10.0.0.{}:7000", id.0 + 1).parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new("z"),
                weight: 100,
                incarnation: 0,
            }));
        }
        for id in &ids {
            s.apply(&Change::Observers {
                subject: *id,
                observers: ids.iter().copied().filter(|o| o != id).collect(),
            });
        }
        s
    }

    fn seq(c: u64) -> VoteSeq {
        VoteSeq {
            incarnation: 1,
            counter: c,
        }
    }

    const SETTLE_ROUNDS: usize = 16;

    fn settle(t: &mut VoteTally, now: Time, s: &mut ClusterState) -> Vec<Change> {
        let mut all = Vec::new();
        for _ in 0..SETTLE_ROUNDS {
            let changes = t.evaluate(now, s, AUTH);
            if changes.is_empty() {
                break;
            }
            for c in &changes {
                s.apply(c);
                t.note_applied(now, c, s);
            }
            all.extend(changes);
        }
        all
    }

    fn cfg() -> TallyConfig {
        TallyConfig {
            startup_grace: Duration::ZERO,
            ..TallyConfig::default()
        }
    }

    /// Every count of up to eight observers against the rules in words:
    /// down takes more down votes than live observers without one (a tie
    /// only with the injected bug, any vote with the other), deciding takes
    /// more live observers than dead ones, vouching more vouchers than
    /// others.
    #[test]
    fn count_rules_match_their_definition_in_words() {
        let normal = InjectedBugs::default();
        let tie = InjectedBugs {
            tie_downs: true,
            ..InjectedBugs::default()
        };
        let single = InjectedBugs {
            single_vote_downs: true,
            ..InjectedBugs::default()
        };
        for assigned in 0..=8usize {
            for live_observers in 0..=assigned {
                for down_votes in 0..=live_observers {
                    for vouching in 0..=live_observers - down_votes {
                        let c = Count {
                            down_votes,
                            live_observers,
                            assigned,
                            vouching,
                        };
                        let others = live_observers - down_votes;
                        assert_eq!(c.is_down(&normal), down_votes > others, "{c:?}");
                        assert_eq!(
                            c.is_down(&tie),
                            down_votes > 0 && down_votes >= others,
                            "{c:?}"
                        );
                        assert_eq!(c.is_down(&single), down_votes > 0, "{c:?}");
                        assert_eq!(
                            c.can_decide(),
                            live_observers > assigned - live_observers,
                            "{c:?}"
                        );
                        assert_eq!(c.can_vouch(), vouching > assigned - vouching, "{c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn majority_downs_minority_does_not() {
        let mut s = cluster(5); // subject 0 has 4 observers: 3 votes needed
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        let now = Time::from_secs(1);
        t.record(now, NodeId(1), seq(1), &[NodeId(0)]);
        t.record(now, NodeId(2), seq(1), &[NodeId(0)]);
        assert!(settle(&mut t, now, &mut s).is_empty());
        t.record(now, NodeId(3), seq(1), &[NodeId(0)]);
        assert_eq!(
            settle(&mut t, now, &mut s),
            vec![Change::Health {
                node: NodeId(0),
                down: true
            }]
        );
    }

    #[test]
    fn single_vote_bug_downs_on_one_vote() {
        let mut s = cluster(5);
        let bugs = InjectedBugs {
            single_vote_downs: true,
            ..InjectedBugs::default()
        };
        let mut t = VoteTally::new(cfg(), bugs, Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        assert_eq!(settle(&mut t, Time::ZERO, &mut s).len(), 1);
    }

    #[test]
    fn down_observers_do_not_count_toward_the_majority() {
        let mut s = cluster(5);
        s.apply(&Change::Health {
            node: NodeId(4),
            down: true,
        });
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        // Live observers of 0: 1, 2, 3. Two votes are a majority of three.
        t.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[NodeId(0)]);
        let changes = settle(&mut t, Time::ZERO, &mut s);
        assert!(changes.contains(&Change::Health {
            node: NodeId(0),
            down: true
        }));
    }

    #[test]
    fn expired_votes_stop_counting_but_only_a_withdrawal_brings_the_subject_back() {
        let mut s = cluster(3);
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[NodeId(0)]);
        assert_eq!(settle(&mut t, Time::ZERO, &mut s).len(), 1);
        let deadline = t.next_deadline().unwrap();
        assert_eq!(deadline, Time::ZERO + cfg().vote_ttl);
        // Silence after a down vote: the observers may only have lost the
        // authority (or the authority them). The verdict stands.
        assert!(settle(&mut t, deadline, &mut s).is_empty());
        let count = t.count(deadline, NodeId(0), &s);
        assert_eq!((count.down_votes, count.vouching), (0, 0));
        t.record(deadline, NodeId(1), seq(2), &[]);
        t.record(deadline, NodeId(2), seq(2), &[]);
        assert_eq!(
            settle(&mut t, deadline, &mut s),
            vec![Change::Health {
                node: NodeId(0),
                down: false
            }]
        );
    }

    fn down(node: u64) -> Change {
        Change::Health {
            node: NodeId(node),
            down: true,
        }
    }

    #[test]
    fn a_refreshed_vote_set_outlives_its_first_ttl() {
        let s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        // The same set again (an observer's periodic refresh) is news.
        let refresh = Time::ZERO + ttl - Duration::from_millis(1);
        assert!(t.record(refresh, NodeId(1), seq(1), &[NodeId(0)]));
        let later = Time::ZERO + ttl + Duration::from_millis(1);
        assert_eq!(t.count(later, NodeId(0), &s).down_votes, 1);
        assert_eq!(t.held_seq(NodeId(1)), Some(seq(1)));
        assert_eq!(t.held_seq(NodeId(2)), None);
    }

    #[test]
    fn a_down_vote_stops_counting_at_its_expiry_and_the_tally_wakes_for_it() {
        let mut s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[]);
        let voted = Time::ZERO + ttl * 2;
        settle(&mut t, voted, &mut s); // past every other deadline
        t.record(voted, NodeId(1), seq(2), &[NodeId(0)]);
        settle(&mut t, voted, &mut s);
        assert_eq!(t.next_deadline(), Some(voted + ttl));
        let expired = t.count(voted + ttl, NodeId(0), &s);
        assert_eq!(
            (expired.down_votes, expired.vouching),
            (0, 0),
            "silent, not up"
        );
        let just_before = voted + ttl - Duration::from_millis(1);
        assert_eq!(t.count(just_before, NodeId(0), &s).down_votes, 1);
        settle(&mut t, voted + ttl, &mut s);
        assert_eq!(t.next_deadline(), None, "the expiry was handled");
    }

    #[test]
    fn a_restarted_observer_vouches_only_a_ttl_after_its_new_start() {
        let mut s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[]);
        s.apply(&down(0));
        let restart = Time::ZERO + ttl * 3;
        assert_eq!(t.count(restart, NodeId(0), &s).vouching, 2);
        let second_start = VoteSeq {
            incarnation: 2,
            counter: 0,
        };
        t.record(restart, NodeId(1), second_start, &[]);
        assert_eq!(t.count(restart, NodeId(0), &s).vouching, 1);
        assert_eq!(t.count(restart + ttl, NodeId(0), &s).vouching, 2);
    }

    #[test]
    fn new_observers_vouch_a_ttl_after_their_assignment_and_kept_ones_stay_seasoned() {
        let mut s = cluster(5);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        for o in 1..5 {
            t.record(Time::ZERO, NodeId(o), seq(1), &[]);
        }
        s.apply(&down(0));
        t.note_applied(Time::ZERO, &down(0), &s);
        let assigned = Time::ZERO + ttl * 2;
        let all = Change::Observers {
            subject: NodeId(0),
            observers: (1..5).map(NodeId).collect(),
        };
        s.apply(&all);
        t.note_applied(assigned, &all, &s);
        assert!(settle(&mut t, assigned, &mut s).is_empty(), "just assigned");
        assert_eq!(t.next_deadline(), Some(assigned + ttl));
        // Nothing else happens: the tally must wake for the seasoning.
        assert_eq!(
            settle(&mut t, assigned + ttl, &mut s),
            vec![Change::Health {
                node: NodeId(0),
                down: false
            }]
        );
        let fewer = Change::Observers {
            subject: NodeId(0),
            observers: (1..4).map(NodeId).collect(),
        };
        let later = assigned + ttl + Duration::from_millis(1);
        s.apply(&fewer);
        t.note_applied(later, &fewer, &s);
        assert_eq!(
            t.count(later, NodeId(0), &s).vouching,
            3,
            "kept observers stay seasoned"
        );
    }

    #[test]
    fn a_removed_node_is_forgotten() {
        let mut s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(2), seq(1), &[]);
        let now = Time::ZERO + ttl * 2;
        settle(&mut t, now, &mut s); // past every other deadline
        t.record(now, NodeId(2), seq(2), &[NodeId(0)]);
        let removed = Change::NodeRemoved(NodeId(2));
        s.apply(&removed);
        t.note_applied(now, &removed, &s);
        assert_eq!(t.held_seq(NodeId(2)), None);
        assert_eq!(
            t.next_deadline(),
            Some(Time::ZERO),
            "everything re-evaluated"
        );
        settle(&mut t, now, &mut s);
        assert_eq!(t.next_deadline(), None, "its vote's expiry went with it");
    }

    #[test]
    fn a_node_removed_and_back_under_its_id_has_no_seasoned_observers() {
        let mut s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        let watch = Change::Observers {
            subject: NodeId(2),
            observers: vec![NodeId(0), NodeId(1)],
        };
        s.apply(&watch);
        t.note_applied(Time::ZERO, &watch, &s);
        t.record(Time::ZERO, NodeId(0), seq(1), &[]);
        t.record(Time::ZERO, NodeId(1), seq(1), &[]);
        let now = Time::ZERO + ttl * 2;
        settle(&mut t, now, &mut s);
        let removed = Change::NodeRemoved(NodeId(2));
        s.apply(&removed);
        t.note_applied(now, &removed, &s);
        let back = Change::NodeUpserted(NodeInfo {
            id: NodeId(2),
            addr: "10.0.0.3:7000".parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new("z"),
            weight: 100,
            incarnation: 1,
        });
        for c in [back, watch, down(2)] {
            s.apply(&c);
            t.note_applied(now, &c, &s);
        }
        // Its observers have not probed it since: they vouch a TTL later.
        assert_eq!(t.count(now, NodeId(2), &s).vouching, 0);
        assert_eq!(t.count(now + ttl, NodeId(2), &s).vouching, 2);
    }

    #[test]
    fn a_node_that_left_stays_down_whatever_its_observers_say() {
        let mut s = cluster(3);
        let ttl = cfg().vote_ttl;
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[]);
        let left = Change::Left {
            node: NodeId(0),
            left: true,
        };
        s.apply(&left);
        t.note_applied(Time::ZERO, &left, &s);
        let count = t.count(Time::ZERO + ttl, NodeId(0), &s);
        assert!(count.can_vouch(), "its observers would bring it back");
        assert!(settle(&mut t, Time::ZERO + ttl, &mut s).is_empty());
    }

    #[test]
    fn the_end_of_the_startup_grace_wakes_the_tally_for_the_nodes_it_held() {
        let mut s = cluster(3);
        s.apply(&down(0));
        let grace = Duration::from_secs(20);
        let c = TallyConfig {
            startup_grace: grace,
            vote_ttl: Duration::from_secs(3),
            ..TallyConfig::default()
        };
        let mut t = VoteTally::new(c, InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[]);
        let mid = Time::ZERO + grace - Duration::from_secs(1);
        assert!(settle(&mut t, mid, &mut s).is_empty(), "held by the grace");
        assert_eq!(t.next_deadline(), Some(Time::ZERO + grace));
        assert_eq!(settle(&mut t, Time::ZERO + grace, &mut s).len(), 1);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn older_vote_sets_are_ignored() {
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        assert!(t.record(Time::ZERO, NodeId(1), seq(5), &[]));
        assert!(!t.record(Time::ZERO, NodeId(1), seq(4), &[NodeId(0)]));
        let restarted = VoteSeq {
            incarnation: 2,
            counter: 0,
        };
        assert!(t.record(Time::ZERO, NodeId(1), restarted, &[NodeId(0)]));
    }

    #[test]
    fn startup_grace_delays_coming_up_and_silence_is_no_word_for_up() {
        let mut s = cluster(3);
        s.apply(&Change::Health {
            node: NodeId(0),
            down: true,
        });
        let mut t = VoteTally::new(TallyConfig::default(), InjectedBugs::default(), Time::ZERO);
        // Observers never heard from since the restart (cut off, or dead)
        // vouch for nobody: swarm seed 7351 published a lost store up.
        assert!(settle(&mut t, Time::from_secs(4), &mut s).is_empty());
        t.record(Time::from_secs(4), NodeId(1), seq(1), &[]);
        t.record(Time::from_secs(4), NodeId(2), seq(1), &[]);
        assert!(settle(&mut t, Time::from_secs(5), &mut s).is_empty());
        let after = Time::from_secs(4) + TallyConfig::default().vote_ttl;
        assert_eq!(settle(&mut t, after, &mut s).len(), 1);
    }

    #[test]
    fn flapping_node_is_held_down_longer_each_time() {
        let mut s = cluster(3);
        let c = cfg();
        let mut t = VoteTally::new(c.clone(), InjectedBugs::default(), Time::ZERO);
        // Observers heard from for a vote TTL already: they may vouch.
        t.record(Time::ZERO, NodeId(1), seq(0), &[]);
        t.record(Time::ZERO, NodeId(2), seq(0), &[]);
        let mut now = Time::ZERO + c.vote_ttl;
        let mut holds = Vec::new();
        for i in 0..6u64 {
            t.record(now, NodeId(1), seq(2 * i + 1), &[NodeId(0)]);
            t.record(now, NodeId(2), seq(2 * i + 1), &[NodeId(0)]);
            assert_eq!(settle(&mut t, now, &mut s).len(), 1, "flap {i} goes down");
            t.record(now, NodeId(1), seq(2 * i + 2), &[]);
            t.record(now, NodeId(2), seq(2 * i + 2), &[]);
            let hold = t.held_until(NodeId(0)).unwrap_or(Time::ZERO);
            holds.push(hold.since(now));
            if hold > now {
                assert!(settle(&mut t, now, &mut s).is_empty(), "flap {i} is held");
                assert_eq!(t.next_deadline(), Some(hold));
                // Nothing else happens: the hold's end must wake the tally.
                now = hold;
            }
            assert_eq!(settle(&mut t, now, &mut s).len(), 1, "flap {i} comes up");
            now += Duration::from_millis(10);
        }
        let zero = Duration::ZERO;
        assert_eq!(&holds[..3], &[zero, zero, zero]);
        assert_eq!(holds[3], c.flap_hold_base);
        assert_eq!(holds[4], c.flap_hold_base * 2);
        assert_eq!(holds[5], c.flap_hold_base * 4);
    }

    #[test]
    fn authority_is_never_given_a_verdict() {
        let mut s = cluster(3);
        let mut t = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        t.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        t.record(Time::ZERO, NodeId(2), seq(1), &[NodeId(0)]);
        assert!(t.evaluate(Time::ZERO, &s, NodeId(0)).is_empty());
        let mut other = VoteTally::new(cfg(), InjectedBugs::default(), Time::ZERO);
        other.record(Time::ZERO, NodeId(1), seq(1), &[NodeId(0)]);
        other.record(Time::ZERO, NodeId(2), seq(1), &[NodeId(0)]);
        assert_eq!(settle(&mut other, Time::ZERO, &mut s).len(), 1);
    }

    // Model-based test: verdicts equal a direct majority count over the model,
    // with no startup grace and no flap damping.

    const N: u64 = 5;

    #[derive(Clone, Debug)]
    enum Op {
        Vote { observer: u64, down: Vec<u64> },
        Advance { ms: u64 },
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        now_ms: u64,
        votes: BTreeMap<u64, (Vec<u64>, u64)>, // observer -> (down set, expiry ms)
        first_vote_ms: BTreeMap<u64, u64>,
        down: BTreeSet<u64>,
    }

    const TTL_MS: u64 = 3000;

    impl Model {
        /// Same batch semantics as the authority: every verdict of a round is
        /// computed against the verdicts of the previous round.
        fn settle(&mut self) {
            for _ in 0..SETTLE_ROUNDS {
                let mut next = self.down.clone();
                for subject in 0..N {
                    let live: Vec<u64> = (0..N)
                        .filter(|o| *o != subject && !self.down.contains(o))
                        .collect();
                    let votes = live
                        .iter()
                        .filter(|o| {
                            self.votes
                                .get(o)
                                .is_some_and(|(d, exp)| *exp > self.now_ms && d.contains(&subject))
                        })
                        .count();
                    // Silent since a down vote (expired or not) is no word
                    // for "up".
                    // Nor is a word said less than a TTL after the first.
                    let vouching = live
                        .iter()
                        .filter(|o| !self.votes.get(o).is_some_and(|(d, _)| d.contains(&subject)))
                        .filter(|o| {
                            self.first_vote_ms
                                .get(o)
                                .is_some_and(|t| self.now_ms >= t + TTL_MS)
                        })
                        .count();
                    let assigned = N as usize - 1;
                    if live.len() * 2 <= assigned {
                        // No live majority of its observers: it stands.
                    } else if votes * 2 > live.len() {
                        next.insert(subject);
                    } else if vouching * 2 > assigned {
                        next.remove(&subject);
                    }
                }
                if next == self.down {
                    return;
                }
                self.down = next;
            }
        }
    }

    struct TallyModel;

    impl ReferenceStateMachine for TallyModel {
        type State = Model;
        type Transition = Op;

        fn init_state() -> BoxedStrategy<Model> {
            Just(Model::default()).boxed()
        }

        fn transitions(_: &Model) -> BoxedStrategy<Op> {
            prop_oneof![
                3 => (0..N, proptest::collection::btree_set(0..N, 0..3))
                    .prop_map(|(observer, down)| Op::Vote { observer, down: down.into_iter().collect() }),
                1 => (0u64..2500).prop_map(|ms| Op::Advance { ms }),
            ]
            .boxed()
        }

        fn apply(mut m: Model, op: &Op) -> Model {
            match op {
                Op::Vote { observer, down } => {
                    let down = down.iter().copied().filter(|d| d != observer).collect();
                    m.votes.insert(*observer, (down, m.now_ms + TTL_MS));
                    m.first_vote_ms.entry(*observer).or_insert(m.now_ms);
                }
                Op::Advance { ms } => m.now_ms += ms,
            }
            m.settle();
            m
        }
    }

    struct Sut {
        tally: VoteTally,
        state: ClusterState,
        counter: u64,
        now: Time,
    }

    impl StateMachineTest for TallyModel {
        type SystemUnderTest = Sut;
        type Reference = TallyModel;

        fn init_test(_: &Model) -> Sut {
            let cfg = TallyConfig {
                vote_ttl: Duration::from_millis(TTL_MS),
                startup_grace: Duration::ZERO,
                flap_threshold: u32::MAX,
                ..TallyConfig::default()
            };
            Sut {
                tally: VoteTally::new(cfg, InjectedBugs::default(), Time::ZERO),
                state: cluster(N),
                counter: 0,
                now: Time::ZERO,
            }
        }

        fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
            let now = Time::from_millis(model.now_ms);
            if let Op::Vote { observer, down } = op {
                sut.counter += 1;
                let down: Vec<NodeId> = down.into_iter().map(NodeId).collect();
                assert!(sut
                    .tally
                    .record(now, NodeId(observer), seq(sut.counter), &down));
            }
            settle(&mut sut.tally, now, &mut sut.state);
            sut.now = now;
            sut
        }

        fn check_invariants(sut: &Sut, model: &Model) {
            let got: BTreeSet<u64> = sut.state.down.iter().map(|d| d.0).collect();
            assert_eq!(got, model.down, "verdicts differ from the model");
            // Evaluating only what changed must reach what evaluating
            // every subject would: nothing left to change.
            let mut full = sut.tally.clone();
            full.all_dirty = true;
            assert_eq!(
                full.evaluate(sut.now, &sut.state, AUTH),
                vec![],
                "a subject whose verdict was due was not re-evaluated"
            );
        }
    }

    prop_state_machine! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn tally_matches_model(sequential 1..40 => TallyModel);
    }
}
