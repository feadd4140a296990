//! The ping net on one node: probe the subjects this node observes, go
//! through helpers before blaming a subject, and tell the authority whom this
//! node believes down.

use crate::config::{InjectedBugs, PingConfig};
use crate::ids::NodeId;
use crate::io::{Notice, Outbox};
use crate::message::{Message, VoteSeq};
use crate::rng::Rng;
use crate::time::{earliest, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Direct,
    Indirect,
}

#[derive(Clone, Copy, Debug)]
struct Round {
    probe: u64,
    phase: Phase,
    deadline: Time,
}

#[derive(Clone, Debug)]
struct Subject {
    addr: SocketAddr,
    /// Other observers of this subject, asked for indirect probes.
    helpers: Vec<(NodeId, SocketAddr)>,
    failures: u32,
    suspect: bool,
    voted_down: bool,
    round: Option<Round>,
    next_round_at: Time,
}

/// A probe this node runs on behalf of another observer.
#[derive(Clone, Debug)]
struct Relay {
    requester: SocketAddr,
    requester_probe: u64,
    target: NodeId,
    expires: Time,
}

/// The down votes this node has told (or is telling) the authority.
#[derive(Clone, Debug)]
struct VoteSender {
    seq: VoteSeq,
    down: BTreeSet<NodeId>,
    acked: bool,
    next_send: Option<Time>,
}

#[derive(Debug)]
pub struct PingNet {
    cfg: PingConfig,
    bugs: InjectedBugs,
    subjects: BTreeMap<NodeId, Subject>,
    relays: BTreeMap<u64, Relay>,
    next_probe: u64,
    votes: VoteSender,
    /// Rounds start on this node's grid (`phase + k * probe_interval`), so all
    /// subjects share one wake-up per interval.
    phase: Time,
    /// Cached `next_deadline`, refreshed after every change.
    deadline: Option<Time>,
}

/// One subject as the node assigns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub subject: NodeId,
    pub addr: SocketAddr,
    pub helpers: Vec<(NodeId, SocketAddr)>,
}

impl PingNet {
    pub fn new(cfg: PingConfig, bugs: InjectedBugs, incarnation: u64, rng: &mut dyn Rng) -> Self {
        let interval = cfg.probe_interval.as_micros() as u64;
        let phase = Time::from_micros(rng.below(interval.max(1)));
        PingNet {
            phase,
            deadline: None,
            cfg,
            bugs,
            subjects: BTreeMap::new(),
            relays: BTreeMap::new(),
            // Random start so acks meant for a previous incarnation miss.
            next_probe: rng.next_u64() >> 1,
            votes: VoteSender {
                seq: VoteSeq {
                    incarnation,
                    counter: 0,
                },
                down: BTreeSet::new(),
                // A new incarnation says at once that it votes nobody down:
                // that replaces the down votes of its previous life, which
                // the tally holds as silence, not as "up".
                acked: false,
                next_send: Some(Time::ZERO),
            },
        }
    }

    /// The first grid point strictly after `after`.
    fn next_grid(&self, after: Time) -> Time {
        let p = self.cfg.probe_interval.as_micros() as u64;
        let (a, phase) = (after.as_micros(), self.phase.as_micros());
        if a < phase || p == 0 {
            return self.phase;
        }
        Time::from_micros(phase + ((a - phase) / p + 1) * p)
    }

    /// Replaces the set of subjects. New subjects are first probed at the next
    /// grid point; dropped subjects lose their votes.
    pub fn assign(&mut self, now: Time, assignments: Vec<Assignment>, out: &mut Outbox) {
        let keep: BTreeSet<NodeId> = assignments.iter().map(|a| a.subject).collect();
        let dropped: Vec<NodeId> = self
            .subjects
            .keys()
            .filter(|s| !keep.contains(s))
            .copied()
            .collect();
        for s in dropped {
            self.subjects.remove(&s);
            if self.votes.down.contains(&s) {
                self.change_vote(now, s, false);
                out.notice(Notice::VoteCast {
                    subject: s,
                    down: false,
                });
            }
        }
        let first = self.next_grid(now);
        for a in assignments {
            match self.subjects.get_mut(&a.subject) {
                Some(s) => {
                    if s.addr != a.addr {
                        // Moved: the round in flight went to the old address.
                        s.addr = a.addr;
                        s.round = None;
                        s.next_round_at = now;
                    }
                    s.helpers = a.helpers;
                }
                None => {
                    self.subjects.insert(
                        a.subject,
                        Subject {
                            addr: a.addr,
                            helpers: a.helpers,
                            failures: 0,
                            suspect: false,
                            voted_down: false,
                            round: None,
                            next_round_at: first,
                        },
                    );
                }
            }
        }
        self.refresh_deadline();
    }

    pub fn subjects(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.subjects.keys().copied()
    }

    pub fn is_suspect(&self, id: NodeId) -> bool {
        self.subjects.get(&id).is_some_and(|s| s.suspect)
    }

    /// The subjects this node currently votes down.
    pub fn down_votes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.votes.down.iter().copied()
    }

    fn new_probe_id(&mut self) -> u64 {
        self.next_probe = self.next_probe.wrapping_add(1);
        self.next_probe
    }

    /// Runs every timer that is due.
    pub fn on_tick(
        &mut self,
        now: Time,
        authority: SocketAddr,
        usable: &dyn Fn(NodeId) -> bool,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        self.relays.retain(|_, r| r.expires > now);
        let ids: Vec<NodeId> = self.subjects.keys().copied().collect();
        for id in ids {
            self.advance_subject(now, id, usable, rng, out);
        }
        if self.votes.next_send.is_some_and(|t| t <= now) {
            self.send_votes(now, authority, out);
        }
        self.refresh_deadline();
    }

    fn advance_subject(
        &mut self,
        now: Time,
        id: NodeId,
        usable: &dyn Fn(NodeId) -> bool,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        let cfg = self.cfg.clone();
        let next_grid = self.next_grid(now);
        let Some(s) = self.subjects.get_mut(&id) else {
            return;
        };
        if let Some(round) = s.round {
            if round.deadline <= now {
                if now.since(round.deadline) > cfg.stall_tolerance {
                    // We were not running when the answer was due: the round
                    // says nothing about the subject. Start afresh.
                    s.round = None;
                    s.next_round_at = now;
                } else if round.phase == Phase::Direct {
                    let helpers = pick_helpers(&s.helpers, id, cfg.indirect_probes, usable, rng);
                    let addr = s.addr;
                    s.round = Some(Round {
                        phase: Phase::Indirect,
                        deadline: now + cfg.indirect_timeout,
                        ..round
                    });
                    // Each missing helper is replaced by one more direct
                    // ping, so a subject with few co-observers is not judged
                    // on fewer attempts.
                    let direct = 1 + cfg.indirect_probes.saturating_sub(helpers.len());
                    for _ in 0..direct {
                        out.send(addr, Message::Ping { probe: round.probe });
                    }
                    for (_, helper_addr) in helpers {
                        out.send(
                            helper_addr,
                            Message::PingReq {
                                probe: round.probe,
                                target: id,
                                target_addr: addr,
                            },
                        );
                    }
                } else {
                    s.round = None;
                    s.next_round_at = now;
                    s.failures = s.failures.saturating_add(1);
                    let newly_suspect = !s.suspect;
                    s.suspect = true;
                    let vote = s.failures >= cfg.failure_threshold
                        && !s.voted_down
                        && !self.bugs.never_vote_down;
                    if vote {
                        s.voted_down = true;
                    }
                    if newly_suspect {
                        out.notice(Notice::Suspicion {
                            node: id,
                            suspect: true,
                        });
                    }
                    if vote {
                        self.change_vote(now, id, true);
                        out.notice(Notice::VoteCast {
                            subject: id,
                            down: true,
                        });
                    }
                }
            }
        }
        let Some(s) = self.subjects.get_mut(&id) else {
            return;
        };
        if s.round.is_none() && s.next_round_at <= now {
            self.next_probe = self.next_probe.wrapping_add(1);
            let probe = self.next_probe;
            s.round = Some(Round {
                probe,
                phase: Phase::Direct,
                deadline: now + cfg.probe_timeout,
            });
            s.next_round_at = next_grid;
            out.send(s.addr, Message::Ping { probe });
        }
    }

    /// An ack from `from`: either for a relay we run or for our own round.
    pub fn on_ack(&mut self, now: Time, from: NodeId, probe: u64, out: &mut Outbox) {
        if let Some(relay) = self.relays.get(&probe) {
            if relay.target == from {
                let relay = self.relays.remove(&probe).expect("present");
                out.send(
                    relay.requester,
                    Message::IndirectAck {
                        probe: relay.requester_probe,
                        target: relay.target,
                    },
                );
                return;
            }
        }
        self.on_reached(now, from, probe, out);
        self.refresh_deadline();
    }

    /// A helper reached `target` for us.
    pub fn on_indirect_ack(&mut self, now: Time, target: NodeId, probe: u64, out: &mut Outbox) {
        self.on_reached(now, target, probe, out);
        self.refresh_deadline();
    }

    /// Another observer asks us to probe `target` for it.
    pub fn on_ping_req(
        &mut self,
        now: Time,
        requester: SocketAddr,
        requester_probe: u64,
        target: NodeId,
        target_addr: SocketAddr,
        out: &mut Outbox,
    ) {
        let probe = self.new_probe_id();
        self.relays.insert(
            probe,
            Relay {
                requester,
                requester_probe,
                target,
                expires: now + self.cfg.indirect_timeout,
            },
        );
        out.send(target_addr, Message::Ping { probe });
        self.refresh_deadline();
    }

    fn on_reached(&mut self, now: Time, id: NodeId, probe: u64, out: &mut Outbox) {
        let Some(s) = self.subjects.get_mut(&id) else {
            return;
        };
        if s.round.is_none_or(|r| r.probe != probe) {
            return; // A late answer to a round already decided.
        }
        s.round = None;
        s.failures = 0;
        if s.suspect {
            s.suspect = false;
            out.notice(Notice::Suspicion {
                node: id,
                suspect: false,
            });
        }
        if s.voted_down && !self.bugs.never_withdraw_votes {
            s.voted_down = false;
            self.change_vote(now, id, false);
            out.notice(Notice::VoteCast {
                subject: id,
                down: false,
            });
        }
    }

    fn change_vote(&mut self, now: Time, subject: NodeId, down: bool) {
        let changed = if down {
            self.votes.down.insert(subject)
        } else {
            self.votes.down.remove(&subject)
        };
        if changed {
            self.votes.seq.counter += 1;
            self.votes.acked = false;
            self.votes.next_send = Some(now);
        }
    }

    fn send_votes(&mut self, now: Time, authority: SocketAddr, out: &mut Outbox) {
        out.send(
            authority,
            Message::Votes {
                seq: self.votes.seq,
                down: self.votes.down.iter().copied().collect(),
            },
        );
        // Every send, refreshes included, is retransmitted until acknowledged.
        self.votes.acked = false;
        self.votes.next_send = Some(now + self.cfg.vote_retransmit);
    }

    pub fn on_votes_ack(&mut self, now: Time, seq: VoteSeq) {
        if seq > self.votes.seq {
            // The authority holds a newer set from us than we remember
            // sending (our disk went back): continue past it.
            // As a new life: the tally then waits before it counts this
            // observer's silence as vouching.
            self.votes.seq = VoteSeq {
                incarnation: seq.incarnation + 1,
                counter: 0,
            };
            self.votes.acked = false;
            self.votes.next_send = Some(now);
            self.refresh_deadline();
            return;
        }
        if seq != self.votes.seq || self.votes.acked {
            return;
        }
        self.votes.acked = true;
        // An empty set is refreshed too, less often: a restarted authority
        // holds no ballot of ours, and without one we vouch for nobody.
        self.votes.next_send = Some(if self.votes.down.is_empty() {
            now + self.cfg.vote_refresh * 3
        } else {
            now + self.cfg.vote_refresh
        });
        self.refresh_deadline();
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.deadline
    }

    fn refresh_deadline(&mut self) {
        let mut next = self.votes.next_send;
        for s in self.subjects.values() {
            next = earliest(next, Some(s.round.map_or(s.next_round_at, |r| r.deadline)));
        }
        for r in self.relays.values() {
            next = earliest(next, Some(r.expires));
        }
        self.deadline = next;
    }
}

fn pick_helpers(
    helpers: &[(NodeId, SocketAddr)],
    subject: NodeId,
    want: usize,
    usable: &dyn Fn(NodeId) -> bool,
    rng: &mut dyn Rng,
) -> Vec<(NodeId, SocketAddr)> {
    let mut pool: Vec<(NodeId, SocketAddr)> = helpers
        .iter()
        .filter(|(id, _)| *id != subject && usable(*id))
        .copied()
        .collect();
    // Partial Fisher-Yates: the first `want` are a uniform sample.
    let take = want.min(pool.len());
    for i in 0..take {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(take);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Output;
    use crate::rng::SeededRng;

    const AUTH: &str = "10.0.0.100:7000";

    fn addr(i: u64) -> SocketAddr {
        format!("10.0.0.{i}:7000").parse().unwrap()
    }

    fn setup(subjects: &[u64]) -> (PingNet, Outbox, SeededRng) {
        let mut rng = SeededRng::new(1);
        let mut p = PingNet::new(PingConfig::default(), InjectedBugs::default(), 1, &mut rng);
        let assignments = subjects
            .iter()
            .map(|&s| Assignment {
                subject: NodeId(s),
                addr: addr(s),
                helpers: (10..14).map(|h| (NodeId(h), addr(h))).collect(),
            })
            .collect();
        let mut out = Outbox::new(NodeId(99), addr(99));
        p.assign(Time::ZERO, assignments, &mut out);
        // The first, empty vote set goes out at once; answered here, so the
        // tests see only what their rounds send.
        p.on_tick(
            Time::ZERO,
            AUTH.parse().unwrap(),
            &|_| true,
            &mut rng,
            &mut out,
        );
        let first = VoteSeq {
            incarnation: 1,
            counter: 0,
        };
        assert!(sent(&mut out).iter().any(
            |(_, m)| matches!(m, Message::Votes { seq, down } if *seq == first && down.is_empty())
        ));
        p.on_votes_ack(Time::ZERO, first);
        (p, out, rng)
    }

    fn sent(out: &mut Outbox) -> Vec<(SocketAddr, Message)> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { to, envelope } = o {
                v.push((to, envelope.msg));
            }
        }
        v
    }

    fn tick(p: &mut PingNet, now: Time, rng: &mut SeededRng, out: &mut Outbox) {
        p.on_tick(now, AUTH.parse().unwrap(), &|_| true, rng, out);
    }

    /// Runs the net until `until`, answering nothing.
    fn run_silent(p: &mut PingNet, rng: &mut SeededRng, out: &mut Outbox, until: Time) -> Time {
        let mut now = Time::ZERO;
        while let Some(t) = p.next_deadline() {
            if t > until {
                break;
            }
            now = t;
            tick(p, now, rng, out);
        }
        now
    }

    #[test]
    fn silent_subject_goes_indirect_then_is_voted_down() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let cfg = PingConfig::default();
        run_silent(&mut p, &mut rng, &mut out, Time::ZERO + cfg.vote_bound());
        let msgs = sent(&mut out);
        assert!(msgs
            .iter()
            .any(|(_, m)| matches!(m, Message::PingReq { .. })));
        let votes: Vec<_> = msgs
            .iter()
            .filter_map(|(to, m)| match m {
                Message::Votes { down, .. } => Some((*to, down.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            votes.first(),
            Some(&(AUTH.parse().unwrap(), vec![NodeId(1)]))
        );
        assert!(p.is_suspect(NodeId(1)));
        // A changed set is a new set: the next number after the empty one.
        let seqs: Vec<VoteSeq> = msgs
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Votes { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(
            seqs.first().map(|s| (s.incarnation, s.counter)),
            Some((1, 1))
        );
        assert_eq!(p.down_votes().collect::<Vec<_>>(), vec![NodeId(1)]);
    }

    #[test]
    fn one_failed_round_suspects_but_does_not_vote() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out); // direct ping
        let cfg = PingConfig::default();
        tick(&mut p, first + cfg.probe_timeout, &mut rng, &mut out); // indirect
        tick(&mut p, first + cfg.round_time(), &mut rng, &mut out); // fails, re-probes
        assert!(p.is_suspect(NodeId(1)));
        assert_eq!(p.down_votes().count(), 0);
        // The next round's direct ack clears the suspicion.
        let probe = sent(&mut out)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Ping { probe } if to == addr(1) => Some(probe),
                _ => None,
            })
            .next_back()
            .unwrap();
        p.on_ack(first + cfg.round_time(), NodeId(1), probe, &mut out);
        assert!(!p.is_suspect(NodeId(1)));
    }

    #[test]
    fn indirect_ack_saves_the_round() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let cfg = PingConfig::default();
        let mut now = p.next_deadline().unwrap();
        for _ in 0..10 {
            tick(&mut p, now, &mut rng, &mut out);
            let msgs = sent(&mut out);
            // Only the helpers' path works.
            for (_, m) in msgs {
                if let Message::PingReq { probe, target, .. } = m {
                    p.on_indirect_ack(now, target, probe, &mut out);
                }
            }
            now = p.next_deadline().unwrap();
        }
        assert!(now > Time::ZERO + cfg.probe_interval * 3);
        assert_eq!(p.down_votes().count(), 0);
    }

    #[test]
    fn votes_are_retransmitted_until_acked_then_refreshed() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let cfg = PingConfig::default();
        let now = run_silent(&mut p, &mut rng, &mut out, Time::ZERO + cfg.vote_bound());
        let _ = sent(&mut out);
        let resend = now + cfg.vote_retransmit;
        tick(&mut p, resend, &mut rng, &mut out);
        let again: Vec<_> = sent(&mut out)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::Votes { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(again.len(), 1, "retransmitted once");
        p.on_votes_ack(resend, again[0]);
        assert_eq!(p.votes.next_send, Some(resend + cfg.vote_refresh));
    }

    #[test]
    fn stalled_node_does_not_blame_its_subjects() {
        let (mut p, mut out, mut rng) = setup(&[1, 2, 3]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        // Asleep for five seconds: every deadline is long past.
        let mut now = first + crate::time::Duration::from_secs(5);
        for _ in 0..3 {
            tick(&mut p, now, &mut rng, &mut out);
            now += crate::time::Duration::from_millis(1);
        }
        assert!(p.subjects().all(|s| !p.is_suspect(s)));
    }

    #[test]
    fn missing_helpers_are_replaced_by_direct_pings() {
        let mut rng = SeededRng::new(1);
        let mut p = PingNet::new(PingConfig::default(), InjectedBugs::default(), 1, &mut rng);
        let mut out = Outbox::new(NodeId(99), addr(99));
        p.assign(
            Time::ZERO,
            vec![Assignment {
                subject: NodeId(1),
                addr: addr(1),
                helpers: vec![(NodeId(2), addr(2))],
            }],
            &mut out,
        );
        tick(&mut p, Time::ZERO, &mut rng, &mut out);
        let first_votes = VoteSeq {
            incarnation: 1,
            counter: 0,
        };
        p.on_votes_ack(Time::ZERO, first_votes);
        let _ = sent(&mut out);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        let _ = sent(&mut out);
        tick(
            &mut p,
            first + PingConfig::default().probe_timeout,
            &mut rng,
            &mut out,
        );
        let msgs = sent(&mut out);
        let direct = msgs
            .iter()
            .filter(|(to, m)| *to == addr(1) && matches!(m, Message::Ping { .. }))
            .count();
        let via = msgs
            .iter()
            .filter(|(_, m)| matches!(m, Message::PingReq { .. }))
            .count();
        assert_eq!((direct, via), (3, 1));
    }

    #[test]
    fn relay_forwards_the_ack_to_the_requester() {
        let (mut p, mut out, _) = setup(&[]);
        p.on_ping_req(Time::ZERO, addr(5), 77, NodeId(6), addr(6), &mut out);
        let relay_probe = match sent(&mut out).as_slice() {
            [(to, Message::Ping { probe })] if *to == addr(6) => *probe,
            other => panic!("unexpected {other:?}"),
        };
        p.on_ack(Time::ZERO, NodeId(6), relay_probe, &mut out);
        assert_eq!(
            sent(&mut out),
            vec![(
                addr(5),
                Message::IndirectAck {
                    probe: 77,
                    target: NodeId(6)
                }
            )]
        );
    }

    #[test]
    fn never_vote_bug_suppresses_votes() {
        let mut rng = SeededRng::new(1);
        let bugs = InjectedBugs {
            never_vote_down: true,
            ..InjectedBugs::default()
        };
        let mut p = PingNet::new(PingConfig::default(), bugs, 1, &mut rng);
        let mut out = Outbox::new(NodeId(99), addr(99));
        p.assign(
            Time::ZERO,
            vec![Assignment {
                subject: NodeId(1),
                addr: addr(1),
                helpers: vec![],
            }],
            &mut out,
        );
        run_silent(&mut p, &mut rng, &mut out, Time::from_secs(5));
        assert_eq!(p.down_votes().count(), 0);
        assert!(p.is_suspect(NodeId(1)));
    }

    /// What one tick at `at` sends: pings and ping requests.
    fn pings_at(
        p: &mut PingNet,
        at: Time,
        rng: &mut SeededRng,
        out: &mut Outbox,
    ) -> (usize, usize) {
        tick(p, at, rng, out);
        let sent = sent(out);
        let pings = sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::Ping { .. }))
            .count();
        let reqs = sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::PingReq { .. }))
            .count();
        (pings, reqs)
    }

    #[test]
    fn a_round_overdue_past_the_stall_tolerance_starts_afresh() {
        let cfg = PingConfig::default();
        let (mut p, mut out, mut rng) = setup(&[1]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        sent(&mut out);
        let due = first + cfg.probe_timeout;
        let late = due + cfg.stall_tolerance + crate::time::Duration::from_micros(1);
        assert_eq!(
            pings_at(&mut p, late, &mut rng, &mut out),
            (1, 0),
            "a new direct ping, no indirect probes"
        );
    }

    #[test]
    fn a_round_overdue_by_the_stall_tolerance_goes_on() {
        let cfg = PingConfig::default();
        let (mut p, mut out, mut rng) = setup(&[1]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        sent(&mut out);
        let at = first + cfg.probe_timeout + cfg.stall_tolerance;
        let (_, reqs) = pings_at(&mut p, at, &mut rng, &mut out);
        assert_eq!(
            reqs, cfg.indirect_probes,
            "the indirect phase, on time enough"
        );
    }

    #[test]
    fn suspicion_is_noticed_once_per_spell() {
        let cfg = PingConfig::default();
        let (mut p, mut out, mut rng) = setup(&[1]);
        let suspicions = |out: &mut Outbox| {
            let mut n = 0;
            while let Some(o) = out.queue.pop_front() {
                if let Output::Notice(Notice::Suspicion {
                    node,
                    suspect: true,
                }) = o
                {
                    assert_eq!(node, NodeId(1));
                    n += 1;
                }
            }
            n
        };
        let first = p.next_deadline().unwrap();
        run_silent(&mut p, &mut rng, &mut out, first + cfg.round_time());
        assert!(p.is_suspect(NodeId(1)));
        assert_eq!(suspicions(&mut out), 1, "the first failed round");
        run_silent(
            &mut p,
            &mut rng,
            &mut out,
            Time::ZERO + cfg.round_time() * 4,
        );
        assert_eq!(suspicions(&mut out), 0, "later failed rounds: no more");
    }

    #[test]
    fn a_relay_forwards_an_ack_until_its_indirect_timeout_only() {
        let cfg = PingConfig::default();
        let (mut p, mut out, mut rng) = setup(&[]);
        let relay = |p: &mut PingNet, out: &mut Outbox, requester_probe| {
            p.on_ping_req(
                Time::ZERO,
                addr(5),
                requester_probe,
                NodeId(6),
                addr(6),
                out,
            );
            match sent(out).as_slice() {
                [(_, Message::Ping { probe })] => *probe,
                other => panic!("unexpected {other:?}"),
            }
        };
        let kept = relay(&mut p, &mut out, 77);
        let late = relay(&mut p, &mut out, 78);
        let almost = Time::ZERO + cfg.indirect_timeout - crate::time::Duration::from_micros(1);
        tick(&mut p, almost, &mut rng, &mut out);
        sent(&mut out);
        p.on_ack(almost, NodeId(6), kept, &mut out);
        let forwarded = sent(&mut out);
        assert!(
            matches!(
                forwarded.as_slice(),
                [(_, Message::IndirectAck { probe: 77, .. })]
            ),
            "within the timeout: {forwarded:?}"
        );
        let after = Time::ZERO + cfg.indirect_timeout + crate::time::Duration::from_millis(1);
        tick(&mut p, after, &mut rng, &mut out);
        sent(&mut out);
        p.on_ack(after, NodeId(6), late, &mut out);
        assert!(
            sent(&mut out).is_empty(),
            "the requester has given up by then"
        );
    }

    #[test]
    fn reaching_a_subject_never_voted_down_casts_no_vote() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        let probe = sent(&mut out)
            .into_iter()
            .find_map(|(_, m)| match m {
                Message::Ping { probe } => Some(probe),
                _ => None,
            })
            .expect("a direct ping");
        p.on_ack(first, NodeId(1), probe, &mut out);
        let votes = out
            .queue
            .iter()
            .filter(|o| matches!(o, Output::Notice(Notice::VoteCast { .. })))
            .count();
        assert_eq!(votes, 0);
    }

    fn votes_sent(out: &mut Outbox) -> Vec<VoteSeq> {
        sent(out)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::Votes { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_the_ack_of_the_set_in_flight_stops_its_retransmission() {
        let cfg = PingConfig::default();
        let (mut p, mut out, mut rng) = setup(&[]);
        let seq = |counter| VoteSeq {
            incarnation: 1,
            counter,
        };
        // A new set (counter 1) goes out; a late ack of the old one (0)
        // neither stops its retransmission nor starts a new life.
        p.change_vote(Time::ZERO, NodeId(1), true);
        tick(&mut p, Time::ZERO, &mut rng, &mut out);
        assert_eq!(votes_sent(&mut out), vec![seq(1)]);
        p.on_votes_ack(Time::ZERO, seq(0));
        let again = Time::ZERO + cfg.vote_retransmit;
        assert_eq!(p.next_deadline(), Some(again));
        tick(&mut p, again, &mut rng, &mut out);
        assert_eq!(
            votes_sent(&mut out),
            vec![seq(1)],
            "retransmitted as it was"
        );
        // Its own ack stops it.
        p.on_votes_ack(again, seq(1));
        tick(&mut p, again + cfg.vote_retransmit, &mut rng, &mut out);
        assert!(votes_sent(&mut out).is_empty());
    }

    #[test]
    fn an_ack_of_a_set_we_never_sent_starts_a_new_life_past_it() {
        let (mut p, mut out, mut rng) = setup(&[]);
        // The authority holds incarnation 5 from us: our disk went back.
        p.on_votes_ack(
            Time::ZERO,
            VoteSeq {
                incarnation: 5,
                counter: 3,
            },
        );
        tick(&mut p, Time::ZERO, &mut rng, &mut out);
        assert_eq!(
            votes_sent(&mut out),
            vec![VoteSeq {
                incarnation: 6,
                counter: 0
            }]
        );
    }

    #[test]
    fn helpers_are_a_uniform_sample_of_the_usable_others() {
        let mut rng = SeededRng::new(7);
        // The subject itself and an unusable node are never picked.
        let helpers: Vec<_> = (1..=6).map(|i| (NodeId(i), addr(i))).collect();
        let usable = |id: NodeId| id != NodeId(6);
        let mut picked = BTreeMap::<NodeId, u32>::new();
        let draws = 2_000;
        for _ in 0..draws {
            let got = pick_helpers(&helpers, NodeId(1), 2, &usable, &mut rng);
            assert_eq!(got.len(), 2);
            assert_ne!(got[0].0, got[1].0);
            for (id, _) in got {
                *picked.entry(id).or_default() += 1;
            }
        }
        assert_eq!(
            picked.keys().copied().collect::<Vec<_>>(),
            [2, 3, 4, 5].map(NodeId)
        );
        // Each of the four usable others in half the draws (2 of 4).
        for (id, n) in picked {
            let share = f64::from(n) / f64::from(draws);
            assert!((0.42..0.58).contains(&share), "{id}: {share}");
        }
        // Fewer than asked for: all there are.
        let got = pick_helpers(&helpers[..2], NodeId(1), 3, &usable, &mut rng);
        assert_eq!(got, vec![(NodeId(2), addr(2))]);
    }

    #[test]
    fn a_subject_that_moved_is_probed_at_once_at_its_new_address() {
        let (mut p, mut out, mut rng) = setup(&[1]);
        let first = p.next_deadline().unwrap();
        tick(&mut p, first, &mut rng, &mut out);
        sent(&mut out);
        let again = |p: &mut PingNet, out: &mut Outbox, at: SocketAddr| {
            let a = Assignment {
                subject: NodeId(1),
                addr: at,
                helpers: (10..14).map(|h| (NodeId(h), addr(h))).collect(),
            };
            p.assign(first, vec![a], out);
        };
        // The same address: the round in flight goes on.
        again(&mut p, &mut out, addr(1));
        tick(&mut p, first, &mut rng, &mut out);
        assert!(sent(&mut out).is_empty(), "no new round");
        // A new one: a new round there, now.
        let moved: SocketAddr = "10.0.1.1:7000".parse().unwrap();
        again(&mut p, &mut out, moved);
        tick(&mut p, first, &mut rng, &mut out);
        let pings: Vec<_> = sent(&mut out)
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Ping { .. }))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(pings, vec![moved]);
    }
}
