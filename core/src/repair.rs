//! Repair, at the authority: content with fewer than R healthy copies gets
//! store-to-store clone jobs toward its placement targets (rate-limited);
//! content with more than R copies loses the surplus once R healthy copies
//! are in place. A copy is healthy when its store is registered, not
//! draining, and not down for longer than the grace period, so draining a
//! store never takes content below R copies.

use crate::config::{ContentConfig, InjectedBugs};
use crate::hash::ContentHash;
use crate::ids::NodeId;
use crate::io::Outbox;
use crate::message::{CloneJob, Message};
use crate::placement::{rank, Candidate};
use crate::state::ClusterState;
use crate::time::Duration;
use crate::time::{earliest, Time};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    hash: ContentHash,
    source: NodeId,
    target: NodeId,
    deadline: Time,
}

/// How soon after a finished job the next scan runs, and how close two
/// scans may follow each other.
const RESCAN_AFTER_DONE: Duration = Duration::from_millis(20);
const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct Repair {
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    next_scan: Time,
    last_scan: Time,
    /// Surplus copies we asked a store to drop, until when we wait: they
    /// count as gone, so no later scan drops another copy in their place.
    drops: BTreeMap<(ContentHash, NodeId), Time>,
}

/// What one due scan did: its figures, and the surplus copies to drop as
/// (content, store); the caller fences and sends those orders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub stats: ScanStats,
    pub drops: Vec<(ContentHash, NodeId)>,
}

/// What one scan found and did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub under: usize,
    pub surplus: usize,
    /// Content with R healthy copies in fewer zones than it could have
    /// (copies made while a zone's stores were unavailable).
    pub misplaced: usize,
    pub clones_started: usize,
    pub drops_sent: usize,
}

impl Repair {
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// A finished job frees a slot on its source: the next scan comes soon
    /// (at most ten a second) instead of a whole interval later, so a lost
    /// store is rebuilt as fast as its sources can copy, not a few jobs a
    /// second.
    ///
    /// Only the job's source can finish it (ids restart with the authority);
    /// a failed job frees its slot but waits for the regular scan, so a
    /// target that keeps refusing is not retried ten times a second.
    pub fn on_clone_done(&mut self, now: Time, from: NodeId, job: u64, ok: bool) {
        if self.jobs.get(&job).is_none_or(|j| j.source != from) {
            return;
        }
        self.jobs.remove(&job);
        if ok {
            let soon = (now + RESCAN_AFTER_DONE).max(self.last_scan + MIN_SCAN_GAP);
            self.next_scan = self.next_scan.min(soon);
        }
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = Some(self.next_scan);
        for j in self.jobs.values() {
            next = earliest(next, Some(j.deadline));
        }
        next
    }

    /// Runs a scan if one is due: sends clone jobs, returns the surplus
    /// copies to drop (the caller fences and sends the orders).
    // What repair reads of the authority is passed piece by piece; a view
    // struct is due with the regrouping of core (issue 12).
    #[allow(clippy::too_many_arguments)]
    pub fn on_tick(
        &mut self,
        now: Time,
        cfg: &ContentConfig,
        bugs: &InjectedBugs,
        state: &ClusterState,
        down_since: &BTreeMap<NodeId, Time>,
        // Drop orders the authority still resends: those copies are going.
        unanswered: &BTreeMap<(ContentHash, NodeId), (crate::message::VoteSeq, Time)>,
        out: &mut Outbox,
    ) -> Option<Scan> {
        self.jobs.retain(|_, j| j.deadline > now);
        self.drops.retain(|_, until| *until > now);
        if now < self.next_scan {
            return None;
        }
        self.next_scan = now + cfg.repair_interval;
        self.last_scan = now;
        let mut scan = Scan::default();
        if !bugs.no_repair {
            scan.stats = self.scan(
                now,
                cfg,
                state,
                down_since,
                unanswered,
                out,
                &mut scan.drops,
            );
            if bugs.keep_surplus {
                scan.drops.clear();
            }
        }
        Some(scan)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan(
        &mut self,
        now: Time,
        cfg: &ContentConfig,
        state: &ClusterState,
        down_since: &BTreeMap<NodeId, Time>,
        unanswered: &BTreeMap<(ContentHash, NodeId), (crate::message::VoteSeq, Time)>,
        out: &mut Outbox,
        drops: &mut Vec<(ContentHash, NodeId)>,
    ) -> ScanStats {
        let mut stats = ScanStats::default();
        let is_store = |s: NodeId| state.registry.get(s).is_some_and(|i| i.roles.store);
        let up = |s: NodeId| is_store(s) && !state.is_down(s);
        // A copy on a store down for less than the grace still counts: a
        // restart should not set off a clone of everything it holds.
        let healthy = |s: NodeId| {
            state.copy_counts(s)
                || (is_store(s)
                    && !state.draining.contains(&s)
                    && down_since
                        .get(&s)
                        .is_some_and(|t| now.since(*t) < cfg.repair_grace))
        };
        let candidates: Vec<Candidate<'_>> = state
            .registry
            .iter()
            .filter(|n| n.roles.store && !state.is_down(n.id) && !state.draining.contains(&n.id))
            .map(|n| Candidate {
                id: n.id,
                zone: &n.zone,
                weight: n.weight,
            })
            .collect();
        let mut per_source: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut busy: BTreeSet<ContentHash> = BTreeSet::new();
        for j in self.jobs.values() {
            *per_source.entry(j.source).or_default() += 1;
            busy.insert(j.hash);
        }
        let r = cfg.replicas;
        let zone_of = |s: NodeId| state.registry.get(s).map(|i| &i.zone);
        let live_zones: BTreeSet<&crate::ids::Zone> = candidates.iter().map(|c| c.zone).collect();
        for (hash, rec) in state.inventory.iter() {
            let healthy_copies: Vec<NodeId> =
                rec.stores.iter().copied().filter(|s| healthy(*s)).collect();
            let copy_zones: BTreeSet<&crate::ids::Zone> =
                healthy_copies.iter().filter_map(|s| zone_of(*s)).collect();
            // R copies in fewer zones than live stores span: one more copy
            // in a missing zone, then the surplus rule drops the worst
            // placed (the placement order puts that zone first, so the new
            // copy is kept).
            let misplaced = healthy_copies.len() == r && copy_zones.len() < r.min(live_zones.len());
            if healthy_copies.len() < r || misplaced {
                if misplaced {
                    stats.misplaced += 1;
                } else {
                    stats.under += 1;
                }
                // Zone moves take at most half the slots: content short of
                // copies comes first.
                let limit = if misplaced {
                    cfg.max_clone_jobs / 2
                } else {
                    cfg.max_clone_jobs
                };
                if busy.contains(&hash) || self.jobs.len() >= limit {
                    continue;
                }
                let ranked = rank(&hash, &candidates, r);
                let target = if misplaced {
                    ranked
                        .into_iter()
                        .find(|t| zone_of(*t).is_some_and(|z| !copy_zones.contains(z)))
                } else {
                    ranked.into_iter().find(|t| !rec.stores.contains(t))
                };
                let Some(target) = target else {
                    continue; // Nowhere to put another copy.
                };
                let source = rec
                    .stores
                    .iter()
                    .copied()
                    .filter(|s| up(*s))
                    .filter(|s| {
                        per_source.get(s).copied().unwrap_or(0) < cfg.max_clone_jobs_per_store
                    })
                    .min_by_key(|s| per_source.get(s).copied().unwrap_or(0));
                let (Some(source), Some(target_info)) = (source, state.registry.get(target)) else {
                    continue;
                };
                let Some(source_info) = state.registry.get(source) else {
                    continue;
                };
                self.next_job += 1;
                let job = self.next_job;
                self.jobs.insert(
                    job,
                    Job {
                        hash,
                        source,
                        target,
                        deadline: now + cfg.clone_timeout,
                    },
                );
                *per_source.entry(source).or_default() += 1;
                busy.insert(hash);
                stats.clones_started += 1;
                out.send(
                    source_info.addr,
                    Message::CloneTo(Box::new(CloneJob {
                        job,
                        hash,
                        target,
                        target_addr: target_info.addr,
                    })),
                );
            } else if rec.stores.len() > r && !busy.contains(&hash) {
                // Copies already told to drop count as gone: what is left
                // must keep R healthy, up copies, the best placed first.
                let left: Vec<NodeId> = rec
                    .stores
                    .iter()
                    .copied()
                    .filter(|s| !self.drops.contains_key(&(hash, *s)))
                    .filter(|s| !unanswered.contains_key(&(hash, *s)))
                    .collect();
                if left.len() <= r {
                    continue;
                }
                // The placement among the copies that can stay: zones first,
                // so a copy added for zone spread is never the one dropped.
                let holders: Vec<Candidate<'_>> = candidates
                    .iter()
                    .filter(|c| left.contains(&c.id) && healthy(c.id) && up(c.id))
                    .cloned()
                    .collect();
                let keep: Vec<NodeId> = rank(&hash, &holders, r).into_iter().take(r).collect();
                if keep.len() < r {
                    continue;
                }
                stats.surplus += 1;
                for s in left.iter().copied().filter(|s| !keep.contains(s)) {
                    if state.registry.contains(s) {
                        self.drops.insert((hash, s), now + cfg.clone_timeout);
                        stats.drops_sent += 1;
                        drops.push((hash, s));
                    }
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentMeta;
    use crate::feed::Change;
    use crate::hash::HashKind;
    use crate::ids::{NodeInfo, Roles, Zone};
    use crate::io::Output;

    fn state(stores: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for i in 1..=stores {
            s.apply(&Change::NodeUpserted(NodeInfo {
                id: NodeId(i),
                addr: format!("10.0.0.{i}:7000").parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new(format!("z{}", i % 2)),
                weight: 100,
                incarnation: 0,
            }));
        }
        s
    }

    fn h(i: u64) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &i.to_le_bytes())
    }

    fn store(s: &mut ClusterState, hash: ContentHash, on: &[u64]) {
        for st in on {
            s.apply(&Change::ContentStored {
                hash,
                store: NodeId(*st),
                meta: ContentMeta {
                    ext: crate::content::Ext::lit("bin"),
                    size: 1,
                },
            });
        }
    }

    fn messages(out: &mut Outbox) -> Vec<Message> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { envelope, .. } = o {
                v.push(envelope.msg);
            }
        }
        v
    }

    fn outbox() -> Outbox {
        Outbox::new(NodeId(100), "10.0.0.100:7000".parse().unwrap())
    }

    /// A scan that is due, with no bugs injected.
    fn tick(
        r: &mut Repair,
        now: Time,
        cfg: &ContentConfig,
        s: &ClusterState,
        down_since: &BTreeMap<NodeId, Time>,
        out: &mut Outbox,
    ) -> Scan {
        r.on_tick(
            now,
            cfg,
            &InjectedBugs::default(),
            s,
            down_since,
            &BTreeMap::new(),
            out,
        )
        .expect("a scan was due")
    }

    #[test]
    fn copy_on_a_store_down_past_grace_is_recloned() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1, 2]);
        s.apply(&Change::Health {
            node: NodeId(2),
            down: true,
        });
        let mut down = BTreeMap::new();
        down.insert(NodeId(2), Time::ZERO);
        let mut r = Repair::default();
        let mut out = outbox();
        // Within the grace period the copy still counts.
        let st = tick(&mut r, Time::from_secs(1), &cfg, &s, &down, &mut out);
        assert_eq!(st.stats.under, 0);
        let later = Time::ZERO + cfg.repair_grace + cfg.repair_interval * 2;
        let st = tick(&mut r, later, &cfg, &s, &down, &mut out);
        assert_eq!((st.stats.under, st.stats.clones_started), (1, 1));
        match messages(&mut out).as_slice() {
            [Message::CloneTo(job)] => {
                assert!(job.target == NodeId(3) || job.target == NodeId(4))
            }
            other => panic!("{other:?}"),
        }
        // One job per hash at a time.
        let st = tick(
            &mut r,
            later + cfg.repair_interval,
            &cfg,
            &s,
            &down,
            &mut out,
        );
        assert_eq!(st.stats.clones_started, 0);
    }

    #[test]
    fn draining_store_is_copied_off_then_dropped() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1, 2]);
        s.apply(&Change::Draining {
            node: NodeId(1),
            draining: true,
        });
        let mut r = Repair::default();
        let mut out = outbox();
        let st = tick(&mut r, Time::ZERO, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(st.stats.clones_started, 1);
        let target = match messages(&mut out).as_slice() {
            [Message::CloneTo(job)] => {
                let src = r.jobs[&job.job].source;
                r.on_clone_done(Time::ZERO, src, job.job, true);
                job.target
            }
            other => panic!("{other:?}"),
        };
        // Not dropped before the new copy is in place: never below R.
        assert!(s.inventory[&h(1)].stores.contains(&NodeId(1)));
        store(&mut s, h(1), &[target.0]);
        let st = tick(
            &mut r,
            Time::ZERO + cfg.repair_interval,
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        );
        assert_eq!(st.stats.drops_sent, 1);
        assert_eq!(st.drops, vec![(h(1), NodeId(1))]);
    }

    #[test]
    fn a_finished_job_brings_the_next_scan_forward() {
        let cfg = ContentConfig::default();
        let mut s = state(3);
        store(&mut s, h(1), &[1]);
        let mut r = Repair::default();
        let mut out = outbox();
        tick(&mut r, Time::ZERO, &cfg, &s, &BTreeMap::new(), &mut out);
        let job = match messages(&mut out).as_slice() {
            [Message::CloneTo(job)] => job.job,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.next_scan, Time::ZERO + cfg.repair_interval);
        let done = Time::from_millis(30);
        let src = r.jobs[&job].source;
        r.on_clone_done(done, NodeId(99), job, true);
        assert_eq!(r.jobs_in_flight(), 1, "only the job's source finishes it");
        r.on_clone_done(done, src, job, true);
        assert_eq!(
            r.next_scan,
            Time::from_millis(100),
            "no closer than 100 ms to the last"
        );
        r.on_clone_done(done, src, job, true);
        assert_eq!(
            r.next_scan,
            Time::from_millis(100),
            "an unknown job changes nothing"
        );
    }

    #[test]
    fn copies_in_one_zone_get_one_in_the_other_and_then_the_worst_placed_goes() {
        let cfg = ContentConfig::default();
        // Stores 1..=4 in zones z1, z0, z1, z0 (see `state`).
        let mut s = state(5);
        let zones = s.clone();
        let zone = |id: u64| zones.registry.get(NodeId(id)).unwrap().zone.clone();
        let (a, b) = (1u64, 3u64);
        assert_eq!(zone(a), zone(b));
        store(&mut s, h(1), &[a, b]);
        let mut r = Repair::default();
        let mut out = outbox();
        let st = tick(&mut r, Time::ZERO, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!((st.stats.misplaced, st.stats.clones_started), (1, 1));
        let job = match messages(&mut out).as_slice() {
            [Message::CloneTo(job)] => (**job).clone(),
            other => panic!("{other:?}"),
        };
        assert_ne!(
            zone(job.target.0),
            zone(a),
            "the new copy is in the other zone"
        );
        let src = r.jobs[&job.job].source;
        r.on_clone_done(Time::ZERO, src, job.job, true);
        store(&mut s, h(1), &[job.target.0]);
        let later = Time::ZERO + cfg.repair_interval;
        let st = tick(&mut r, later, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(st.drops.len(), 1);
        let (_, dropped) = st.drops[0];
        assert!(
            dropped == NodeId(a) || dropped == NodeId(b),
            "a copy in the crowded zone goes"
        );
    }

    #[test]
    fn clone_jobs_are_rate_limited_per_source() {
        let cfg = ContentConfig {
            max_clone_jobs_per_store: 2,
            ..ContentConfig::default()
        };
        let mut s = state(3);
        for i in 0..10 {
            store(&mut s, h(i), &[1]);
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let st = tick(&mut r, Time::ZERO, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!((st.stats.under, st.stats.clones_started), (10, 2));
        assert_eq!(r.jobs_in_flight(), 2);
    }

    #[test]
    fn no_repair_bug_does_nothing() {
        let cfg = ContentConfig::default();
        let mut s = state(3);
        store(&mut s, h(1), &[1]);
        let bugs = InjectedBugs {
            no_repair: true,
            ..InjectedBugs::default()
        };
        let mut r = Repair::default();
        let mut out = outbox();
        r.on_tick(
            Time::ZERO,
            &cfg,
            &bugs,
            &s,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut out,
        );
        assert!(messages(&mut out).is_empty());
    }

    #[test]
    fn a_drop_in_flight_counts_as_gone_when_health_changes() {
        // Three copies, R = 2: one drop goes out. If health then changes
        // the ranking, the next scan must not drop a second copy while the
        // first order is still on its way (that would leave one copy).
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1, 2, 3]);
        let mut r = Repair::default();
        let mut out = outbox();
        let first = tick(&mut r, Time::ZERO, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(first.drops.len(), 1, "{first:?}");
        let dropped = first.drops[0].1;
        // One of the two kept copies' store goes down: the ranking of what
        // to keep changes.
        let kept: Vec<u64> = [1, 2, 3]
            .into_iter()
            .filter(|i| NodeId(*i) != dropped)
            .collect();
        s.apply(&Change::Health {
            node: NodeId(kept[0]),
            down: true,
        });
        let later = Time::ZERO + cfg.repair_interval;
        let second = tick(&mut r, later, &cfg, &s, &BTreeMap::new(), &mut out);
        assert!(second.drops.is_empty(), "dropped again: {second:?}");
    }

    #[test]
    fn a_finished_clone_brings_the_next_scan_forward_and_the_deadline_says_when() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1]);
        let mut r = Repair::default();
        let mut out = outbox();
        let t0 = Time::from_secs(100);
        tick(&mut r, t0, &cfg, &s, &BTreeMap::new(), &mut out);
        let job = messages(&mut out)
            .into_iter()
            .find_map(|m| match m {
                Message::CloneTo(j) => Some(j),
                _ => None,
            })
            .expect("an under-replicated copy gets a clone job");
        // Woken for the next scan or the job's time-out, whichever is first.
        let scan = t0 + cfg.repair_interval;
        assert_eq!(r.next_deadline(), Some(scan.min(t0 + cfg.clone_timeout)));
        // Done soon after: the next scan comes forward, but not closer to
        // the last one than the minimum gap.
        r.on_clone_done(t0 + Duration::from_millis(10), NodeId(1), job.job, true);
        assert_eq!(r.next_deadline(), Some(t0 + MIN_SCAN_GAP));
        // Done later: a short while after it.
        let mut r2 = Repair::default();
        tick(&mut r2, t0, &cfg, &s, &BTreeMap::new(), &mut out);
        let job2 = messages(&mut out)
            .into_iter()
            .find_map(|m| match m {
                Message::CloneTo(j) => Some(j),
                _ => None,
            })
            .expect("a clone job");
        let done = t0 + Duration::from_millis(500);
        r2.on_clone_done(done, NodeId(1), job2.job, true);
        assert_eq!(r2.next_deadline(), Some(done + RESCAN_AFTER_DONE));
    }

    #[test]
    fn a_surplus_drop_is_remembered_until_the_clone_timeout_then_sent_again() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1, 2, 3]);
        let mut r = Repair::default();
        let mut out = outbox();
        let t0 = Time::from_secs(100);
        let first = tick(&mut r, t0, &cfg, &s, &BTreeMap::new(), &mut out).drops;
        assert_eq!(first.len(), 1, "R is 2: one of three copies goes");
        // Unanswered so far: no scan drops another copy in its place...
        let mut t = t0;
        while t + cfg.repair_interval < t0 + cfg.clone_timeout {
            t += cfg.repair_interval;
            let again = tick(&mut r, t, &cfg, &s, &BTreeMap::new(), &mut out).drops;
            assert!(again.is_empty(), "at {t}: {again:?}");
        }
        // ...until the wait is over: then the same copy is told again.
        let due = t0 + cfg.clone_timeout;
        let again = tick(&mut r, due, &cfg, &s, &BTreeMap::new(), &mut out).drops;
        assert_eq!(again, first);
    }

    #[test]
    fn a_clone_job_is_given_up_at_its_deadline_and_sent_again() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1]);
        let mut r = Repair::default();
        let mut out = outbox();
        let t0 = Time::from_secs(100);
        let clones = |out: &mut Outbox| {
            messages(out)
                .into_iter()
                .filter(|m| matches!(m, Message::CloneTo(_)))
                .count()
        };
        tick(&mut r, t0, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(clones(&mut out), 1);
        // The last scan before the deadline leaves the next one due at it.
        let before = t0 + cfg.clone_timeout - cfg.repair_interval;
        tick(&mut r, before, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(clones(&mut out), 0, "still in flight");
        tick(
            &mut r,
            t0 + cfg.clone_timeout,
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        );
        assert_eq!(clones(&mut out), 1, "timed out at its deadline: retried");
    }

    fn clone_targets(out: &mut Outbox) -> Vec<(ContentHash, NodeId)> {
        messages(out)
            .into_iter()
            .filter_map(|m| match m {
                Message::CloneTo(j) => Some((j.hash, j.target)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn clones_go_only_to_up_undrained_stores_and_come_from_up_ones() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        // Store 1 is down past the grace, store 3 draining: content on 1
        // and 2 has one healthy copy, on 2, and only 4 can take another.
        s.apply(&Change::Health {
            node: NodeId(1),
            down: true,
        });
        s.apply(&Change::Draining {
            node: NodeId(3),
            draining: true,
        });
        let mut down = BTreeMap::new();
        down.insert(NodeId(1), Time::ZERO);
        for i in 0..20 {
            store(&mut s, h(i), &[1, 2]);
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let now = Time::ZERO + cfg.repair_grace * 2;
        tick(&mut r, now, &cfg, &s, &down, &mut out);
        let mut sources = Vec::new();
        let mut out2 = outbox();
        for o in std::mem::take(&mut out.queue) {
            if let Output::Send { to, envelope } = &o {
                if matches!(envelope.msg, Message::CloneTo(_)) {
                    sources.push(*to);
                }
            }
            out2.queue.push_back(o);
        }
        let targets = clone_targets(&mut out2);
        assert_eq!(targets.len(), 8, "one source, its job limit");
        assert!(targets.iter().all(|(_, t)| *t == NodeId(4)), "{targets:?}");
        let store2: std::net::SocketAddr = "10.0.0.2:7000".parse().unwrap();
        assert!(sources.iter().all(|a| *a == store2), "{sources:?}");
    }

    #[test]
    fn a_copy_on_a_down_store_stops_counting_at_the_end_of_the_grace() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1, 2]);
        s.apply(&Change::Health {
            node: NodeId(2),
            down: true,
        });
        let t0 = Time::from_secs(100);
        let mut down = BTreeMap::new();
        down.insert(NodeId(2), t0);
        let mut r = Repair::default();
        let mut out = outbox();
        let before = t0 + cfg.repair_grace - cfg.repair_interval;
        tick(&mut r, before, &cfg, &s, &down, &mut out);
        assert!(clone_targets(&mut out).is_empty(), "still within the grace");
        tick(&mut r, t0 + cfg.repair_grace, &cfg, &s, &down, &mut out);
        assert_eq!(clone_targets(&mut out).len(), 1, "the grace is over");
    }

    #[test]
    fn jobs_in_flight_count_against_their_source_in_later_scans() {
        let cfg = ContentConfig {
            max_clone_jobs_per_store: 1,
            ..ContentConfig::default()
        };
        let mut s = state(4);
        for i in 0..5 {
            store(&mut s, h(i), &[1]);
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let t0 = Time::from_secs(100);
        tick(&mut r, t0, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(clone_targets(&mut out).len(), 1);
        tick(
            &mut r,
            t0 + cfg.repair_interval,
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        );
        assert!(clone_targets(&mut out).is_empty(), "store 1 is still busy");
    }

    #[test]
    fn a_surplus_drop_keeps_r_of_the_copies_that_exist() {
        let cfg = ContentConfig::default();
        let mut s = state(5);
        for i in 0..20 {
            store(&mut s, h(i), &[1, 2, 3]);
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let drops = tick(
            &mut r,
            Time::from_secs(100),
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        )
        .drops;
        // Stores 4 and 5 hold nothing: keeping one of them would drop a
        // second real copy.
        for i in 0..20 {
            let n = drops.iter().filter(|(hash, _)| *hash == h(i)).count();
            assert_eq!(n, 1, "content {i}: {drops:?}");
        }
    }

    #[test]
    fn nothing_is_dropped_while_a_clone_of_the_same_content_is_in_flight() {
        let cfg = ContentConfig::default();
        let mut s = state(4);
        store(&mut s, h(1), &[1]);
        let mut r = Repair::default();
        let mut out = outbox();
        let t0 = Time::from_secs(100);
        tick(&mut r, t0, &cfg, &s, &BTreeMap::new(), &mut out);
        assert_eq!(clone_targets(&mut out).len(), 1);
        // Copies show up before the job is reported done.
        store(&mut s, h(1), &[2, 3]);
        let scan = tick(
            &mut r,
            t0 + cfg.repair_interval,
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        );
        assert!(scan.drops.is_empty(), "{:?}", scan.drops);
    }

    #[test]
    fn zone_moves_take_at_most_half_the_clone_slots() {
        let cfg = ContentConfig {
            max_clone_jobs: 4,
            ..ContentConfig::default()
        };
        let mut s = state(4);
        // Stores 1 and 3 are both in zone z1: content on them is misplaced.
        for i in 0..10 {
            store(&mut s, h(i), &[1, 3]);
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let scan = tick(
            &mut r,
            Time::from_secs(100),
            &cfg,
            &s,
            &BTreeMap::new(),
            &mut out,
        );
        assert_eq!(scan.stats.misplaced, 10);
        assert_eq!(clone_targets(&mut out).len(), 2);
    }

    #[test]
    fn a_surplus_is_not_trimmed_while_fewer_than_r_of_its_copies_are_up() {
        // Three copies, two on stores published down (within the grace, so
        // nothing is cloned yet): one up copy cannot be the R that stay.
        let cfg = ContentConfig::default();
        let mut s = state(5);
        store(&mut s, h(1), &[1, 2, 3]);
        store(&mut s, h(2), &[3, 4, 5]);
        let mut down = BTreeMap::new();
        for n in [1, 2] {
            s.apply(&Change::Health {
                node: NodeId(n),
                down: true,
            });
            down.insert(NodeId(n), Time::from_secs(99));
        }
        let mut r = Repair::default();
        let mut out = outbox();
        let scan = tick(&mut r, Time::from_secs(100), &cfg, &s, &down, &mut out);
        assert!(
            scan.drops.iter().all(|(hash, _)| *hash != h(1)),
            "{:?}",
            scan.drops
        );
        // The other content is a surplus of three up copies: one goes.
        assert_eq!(scan.stats.surplus, 1);
        assert_eq!(scan.drops.len(), 1, "{:?}", scan.drops);
    }
}
