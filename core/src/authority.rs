//! The authority: master registry, observer assignment, vote tally and the
//! feed log that publishes all of it. Its durable part is [`AuthorityStore`];
//! votes and held pulls are volatile and rebuilt by the nodes after a restart.

use crate::config::{FeedConfig, InjectedBugs, TallyConfig};
use crate::durable::Record;
use crate::feed::{Change, FeedEntry, FeedLog};
use crate::feed_server::FeedServer;
use crate::ids::{ClusterId, LogId, NodeId, Zone};
use crate::io::{Notice, Outbox};
use crate::message::{Envelope, Message};
use crate::observers::assign_observers;
use crate::state::ClusterState;
use crate::time::{earliest, Time};
use crate::vote_tally::VoteTally;

/// The authority's durable state: the log and the state it describes.
#[derive(Clone, Debug)]
pub struct AuthorityStore {
    pub cluster: ClusterId,
    pub log: FeedLog,
    pub state: ClusterState,
}

impl AuthorityStore {
    pub fn new(cluster: ClusterId, log: LogId, retain: usize) -> AuthorityStore {
        AuthorityStore {
            cluster,
            log: FeedLog::new(log, retain),
            state: ClusterState::default(),
        }
    }

    /// Replays an entry written before (restoring from disk).
    pub fn apply(&mut self, entry: FeedEntry) {
        self.state.apply(&entry.change);
        self.log.push(entry);
    }
}

/// Tally rounds per event: verdicts that change who counts as a live
/// observer are settled in the same event, up to this many rounds.
const SETTLE_ROUNDS: usize = 4;

#[derive(Debug)]
pub struct Authority {
    me: NodeId,
    tally_cfg: TallyConfig,
    feed_cfg: FeedConfig,
    store: AuthorityStore,
    tally: VoteTally,
    feed: FeedServer,
    observers_due: Option<Time>,
    last_assignment: Option<Time>,
}

impl Authority {
    pub fn new(
        me: NodeId,
        tally_cfg: TallyConfig,
        feed_cfg: FeedConfig,
        bugs: InjectedBugs,
        store: AuthorityStore,
        now: Time,
    ) -> Authority {
        Authority {
            me,
            tally: VoteTally::new(tally_cfg.clone(), bugs, now),
            tally_cfg,
            feed_cfg,
            store,
            feed: FeedServer::default(),
            // Recompute at start: the configured K may have changed.
            observers_due: Some(now),
            last_assignment: None,
        }
    }

    pub fn cluster(&self) -> ClusterId {
        self.store.cluster
    }

    pub fn state(&self) -> &ClusterState {
        &self.store.state
    }

    pub fn log_id(&self) -> LogId {
        self.store.log.id()
    }

    pub fn head(&self) -> u64 {
        self.store.log.head()
    }

    pub fn tally(&self) -> &VoteTally {
        &self.tally
    }

    /// Handles a message addressed to the authority. Returns false if it is
    /// not an authority message.
    pub fn handle(&mut self, now: Time, env: &Envelope, out: &mut Outbox) -> bool {
        match &env.msg {
            Message::Join { info } => {
                if info.id != env.from {
                    return true; // A node may only register itself.
                }
                if let Some(change) = self.store.state.registry.join_change(info) {
                    self.append(now, change, out);
                }
                out.send(
                    env.from_addr,
                    Message::JoinAck {
                        node: info.id,
                        log: self.log_id(),
                        seq: self.head(),
                    },
                );
            }
            Message::Votes { seq, down } => {
                if !self.store.state.registry.contains(env.from) {
                    return true; // Unknown voter: it will rejoin and retry.
                }
                self.tally.record(now, env.from, *seq, down);
                out.send(env.from_addr, Message::VotesAck { seq: *seq });
                self.settle(now, out);
            }
            Message::FeedPull {
                req,
                since,
                limit,
                wait,
            } => self.feed.on_pull(
                now,
                &self.feed_cfg,
                &self.store.log,
                env.from,
                env.from_addr,
                *req,
                *since,
                *limit,
                *wait,
                out,
            ),
            Message::SnapshotPull { req } => {
                let snapshot = self.store.state.snapshot(self.head());
                let log = self.log_id();
                out.send(
                    env.from_addr,
                    Message::SnapshotReply {
                        req: *req,
                        log,
                        snapshot: Box::new(snapshot),
                    },
                );
            }
            _ => return false,
        }
        self.feed.flush(now, &self.feed_cfg, &self.store.log, out);
        true
    }

    fn append(&mut self, now: Time, change: Change, out: &mut Outbox) {
        let membership_before = self.store.state.registry.membership_version();
        if let Change::Health { node, down } = &change {
            out.notice(Notice::VerdictPublished {
                node: *node,
                down: *down,
            });
        }
        let entry = self.store.log.append(change);
        self.store.state.apply(&entry.change);
        self.tally.note_applied(&entry.change, &self.store.state);
        out.persist(Record::Appended(entry));
        if self.store.state.registry.membership_version() != membership_before
            && self.observers_due.is_none()
        {
            let earliest_allowed = self
                .last_assignment
                .map_or(now, |t| t + self.tally_cfg.observer_debounce);
            self.observers_due = Some(now.max(earliest_allowed));
        }
    }

    /// Publishes the observer assignments that differ from the current ones.
    fn reassign_observers(&mut self, now: Time, out: &mut Outbox) {
        self.observers_due = None;
        self.last_assignment = Some(now);
        let members: Vec<(NodeId, Zone)> = self
            .store
            .state
            .registry
            .iter()
            .map(|n| (n.id, n.zone.clone()))
            .collect();
        let refs: Vec<(NodeId, &Zone)> = members.iter().map(|(id, z)| (*id, z)).collect();
        let assigned = assign_observers(&refs, self.tally_cfg.observers);
        let stale: Vec<NodeId> = self
            .store
            .state
            .observers
            .keys()
            .filter(|s| !assigned.contains_key(s))
            .copied()
            .collect();
        for subject in stale {
            self.append(
                now,
                Change::Observers {
                    subject,
                    observers: vec![],
                },
                out,
            );
        }
        for (subject, observers) in assigned {
            if self.store.state.observers_of(subject) != observers.as_slice() {
                self.append(now, Change::Observers { subject, observers }, out);
            }
        }
    }

    fn settle(&mut self, now: Time, out: &mut Outbox) {
        for _ in 0..SETTLE_ROUNDS {
            let changes = self.tally.evaluate(now, &self.store.state, self.me);
            if changes.is_empty() {
                break;
            }
            for c in changes {
                self.append(now, c, out);
            }
        }
    }

    pub fn on_tick(&mut self, now: Time, out: &mut Outbox) {
        if self.observers_due.is_some_and(|t| t <= now) {
            self.reassign_observers(now, out);
        }
        self.settle(now, out);
        self.feed.flush(now, &self.feed_cfg, &self.store.log, out);
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let next = earliest(self.observers_due, self.tally.next_deadline());
        earliest(next, self.feed.next_deadline())
    }
}
