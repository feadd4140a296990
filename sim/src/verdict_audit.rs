//! The verdict audit: every "down" the authority publishes is recounted
//! from the vote sets the authority actually received (recorded as it
//! handled them, with their seq order and expiry) and the observer
//! assignments published before it in the log; a tie is not a majority,
//! and a verdict needs a live majority of the assigned observers. It never
//! reads the tally.

use crate::oracle::{Oracle, ViolationKind};
use crate::world::World;
use std::collections::{BTreeMap, BTreeSet};
use stretchfs_core::feed::{Change, FeedEntry};
use stretchfs_core::message::VoteSeq;
use stretchfs_core::state::ClusterState;
use stretchfs_core::{Duration, NodeId, Time};

/// One observer's latest vote set at the authority, in authority time.
#[derive(Clone, Debug)]
struct Ballot {
    seq: VoteSeq,
    down: BTreeSet<NodeId>,
    received: Time,
}

#[derive(Debug, Default)]
pub struct VerdictAudit {
    ballots: BTreeMap<NodeId, Ballot>,
    pub vote_ttl: Duration,
    /// The published state, followed entry by entry as the authority
    /// writes them, so each verdict is judged against the assignments and
    /// verdicts it was decided on.
    mirror: ClusterState,
    /// Entries the authority wrote in the step being handled.
    pending: Vec<FeedEntry>,
    /// The authority's own votes travel inside its process (never through
    /// the network): taken from its vote notices.
    own: BTreeSet<NodeId>,
    /// `own` as it was when the step began: the step's own vote notices are
    /// taken before its entries are audited, and the tally may have counted
    /// a vote the same step withdrew (reassignment after a verdict).
    own_at_step_start: BTreeSet<NodeId>,
}

impl VerdictAudit {
    pub fn new(vote_ttl: Duration) -> VerdictAudit {
        VerdictAudit {
            vote_ttl,
            ..VerdictAudit::default()
        }
    }

    /// The authority handled a vote set (at its local time `local`).
    pub fn on_votes(&mut self, local: Time, from: NodeId, seq: VoteSeq, down: &[NodeId]) {
        if self.ballots.get(&from).is_some_and(|b| seq < b.seq) {
            return; // Older than the one held: the authority ignores it too.
        }
        let down = down.iter().copied().filter(|d| *d != from).collect();
        self.ballots.insert(
            from,
            Ballot {
                seq,
                down,
                received: local,
            },
        );
    }

    /// The authority's own ping net voted `subject` down or withdrew it.
    pub fn on_own_vote(&mut self, subject: NodeId, down: bool) {
        if down {
            self.own.insert(subject);
        } else {
            self.own.remove(&subject);
        }
    }

    /// The authority restarted: it remembers no votes.
    pub fn forget(&mut self) {
        self.ballots.clear();
        self.own.clear();
        self.own_at_step_start.clear();
        self.pending.clear();
    }

    /// The authority lost its database: a new log begins.
    pub fn reset(&mut self) {
        self.forget();
        self.mirror = ClusterState::default();
    }

    /// The authority wrote a log entry.
    pub fn on_appended(&mut self, entry: &FeedEntry) {
        self.pending.push(entry.clone());
    }

    /// Whether a strict majority of live observers voted `subject` down,
    /// with `live` deciding who is live.
    fn majority(
        &self,
        local: Time,
        me: Option<NodeId>,
        subject: NodeId,
        observers: &[NodeId],
        live: impl Fn(NodeId) -> bool,
    ) -> bool {
        let live_obs: Vec<NodeId> = observers.iter().copied().filter(|o| live(*o)).collect();
        let votes = live_obs
            .iter()
            .filter(|o| self.voted(local, me, **o, subject))
            .count();
        votes * 2 > live_obs.len() && live_obs.len() * 2 > observers.len()
    }
}

impl VerdictAudit {
    fn voted(&self, local: Time, me: Option<NodeId>, observer: NodeId, subject: NodeId) -> bool {
        if Some(observer) == me {
            return self.own.contains(&subject) || self.own_at_step_start.contains(&subject);
        }
        self.ballots
            .get(&observer)
            .is_some_and(|b| b.received + self.vote_ttl > local && b.down.contains(&subject))
    }
}

impl Oracle {
    /// The authority handled an input: follows its log and recounts every
    /// down verdict appended meanwhile. The tally decides rounds of
    /// verdicts, each against the state before any of its own apply, and a
    /// step may run several rounds (and reassign observers between them).
    /// The log does not show where one round ends, so a verdict stands if a
    /// live majority voted under the state at the start of the step, or
    /// before any verdict of its run of verdicts up to itself.
    pub fn audit_step(&mut self, w: &World) {
        let entries = std::mem::take(&mut self.audit.pending);
        if entries.is_empty() {
            self.audit.own_at_step_start = self.audit.own.clone();
            return;
        }
        let a = &mut self.audit;
        let downs = entries
            .iter()
            .any(|e| matches!(e.change, Change::Health { down: true, .. }));
        let step_start = downs.then(|| a.mirror.clone());
        let local = w.hosts[0].clock.local(w.now);
        let me = w.hosts[0].node.as_ref().map(|n| n.id());
        // The down sets before each verdict of the current run.
        let mut run: Vec<BTreeSet<NodeId>> = Vec::new();
        for e in entries {
            match e.change {
                Change::Health { node, down } => {
                    run.push(self.audit.mirror.down.clone());
                    if down {
                        self.audit_down(w.now, local, me, node, step_start.as_ref(), &run);
                    }
                }
                _ => run.clear(),
            }
            if let Change::NodeRemoved(id) = e.change {
                // The tally forgets a removed observer's votes too.
                self.audit.ballots.remove(&id);
            }
            self.audit.mirror.apply(&e.change);
        }
        self.audit.own_at_step_start = self.audit.own.clone();
    }

    fn audit_down(
        &mut self,
        at: Time,
        local: Time,
        me: Option<NodeId>,
        node: NodeId,
        step_start: Option<&ClusterState>,
        run: &[BTreeSet<NodeId>],
    ) {
        self.measured.verdict_audits += 1;
        let a = &self.audit;
        let state = &a.mirror;
        let observers = state.observers_of(node);
        let in_run = run.iter().any(|down| {
            a.majority(local, me, node, observers, |o| {
                !down.contains(&o) && state.registry.contains(o)
            })
        });
        let at_step_start = step_start.is_some_and(|s| {
            a.majority(local, me, node, s.observers_of(node), |o| {
                !s.is_down(o) && s.registry.contains(o)
            })
        });
        if in_run || at_step_start {
            return;
        }
        let votes: Vec<String> = observers
            .iter()
            .map(|o| {
                let l = if state.is_down(*o) { "down" } else { "live" };
                let v = if a.voted(local, me, *o, node) {
                    "+vote"
                } else {
                    ""
                };
                format!("{o}:{l}{v}")
            })
            .collect();
        self.violate(
            at,
            ViolationKind::VerdictWithoutMajority,
            format!("{node} published down without a live majority's votes: {votes:?}"),
        );
    }
}
