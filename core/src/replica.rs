//! A node's replica of the cluster state, fed from the authority's feed: a
//! snapshot first, then entries in order. Ready only once it has a snapshot
//! and has caught up with the end of the log.

use crate::config::FeedConfig;
use crate::feed::{Change, FeedBody, Snapshot};
use crate::ids::LogId;
use crate::io::{Notice, Outbox};
use crate::message::Message;
use crate::snapshot_transfer::{Assembled, SnapshotAssembly, SnapshotChunk};
use crate::state::ClusterState;
use crate::time::{Duration, Time};
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug)]
struct Inflight {
    req: u64,
    deadline: Time,
}

#[derive(Debug, Default)]
pub struct Replica {
    log: Option<LogId>,
    seq: u64,
    state: ClusterState,
    has_snapshot: bool,
    /// The feed said our snapshot is too old (or of another history): a new
    /// one is due. The old state still says whom to probe meanwhile.
    needs_snapshot: bool,
    at_end: bool,
    ready: bool,
    inflight: Option<Inflight>,
    next_req: u64,
    /// The log of the last snapshot taken.
    known_log: Option<LogId>,
    /// The pieces of the snapshot being taken.
    assembly: SnapshotAssembly,
    /// Test-only bug: ignore purchase removals.
    skip_removals: bool,
    /// Keeps membership, health and observers only, no inventory and no
    /// purchases: the replica of a node that is only the authority, whose
    /// authority already holds them (the replica would double its memory).
    membership_only: bool,
}

/// What a replica hands back to an authority that started over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handback {
    pub purchases: Vec<crate::purchase::Purchase>,
    pub revoked: Vec<(crate::purchase::Token, crate::time::WallTime)>,
    /// The nodes the old log had registered, but the authority: every
    /// store (down or gone ones too: they may come back with content) and
    /// the other nodes that were up. The authority waits to hear from them.
    pub nodes: Vec<crate::ids::NodeId>,
}

/// What applying an answer changed, for the node to react to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Membership, addresses or observer assignments changed.
    pub topology: bool,
    /// A snapshot of a log this replica had not followed before was taken;
    /// these are the purchases (and revocations) the replica held from the
    /// previous log.
    pub new_history: Option<Handback>,
}

impl Replica {
    /// A replica with the injected bug that ignores purchase removals.
    pub fn skipping_removals() -> Replica {
        Replica {
            skip_removals: true,
            ..Replica::default()
        }
    }

    /// This replica, keeping membership only (see `membership_only`).
    pub fn membership_only(self) -> Replica {
        Replica {
            membership_only: true,
            ..self
        }
    }

    /// Whether this replica keeps the inventory and the purchases.
    pub fn keeps_content(&self) -> bool {
        !self.membership_only
    }

    /// A replica that has taken `snapshot` of log `log` (benchmarks, tools).
    pub fn from_snapshot(log: LogId, snapshot: &Snapshot) -> Replica {
        Replica {
            log: Some(log),
            known_log: Some(log),
            seq: snapshot.seq,
            state: ClusterState::from_snapshot(snapshot),
            has_snapshot: true,
            ..Replica::default()
        }
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn log(&self) -> Option<LogId> {
        self.log
    }

    /// Has a snapshot that the feed continues.
    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot && !self.needs_snapshot
    }

    /// Has some state to go on (perhaps stale, while a new snapshot is due).
    pub fn has_state(&self) -> bool {
        self.has_snapshot
    }

    /// The last answer reached the end of the log.
    pub fn at_end(&self) -> bool {
        self.at_end
    }

    /// Has a snapshot and has caught up with the feed since taking it.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Sends the next request unless one is in flight and not yet overdue.
    pub fn poll(&mut self, now: Time, cfg: &FeedConfig, authority: SocketAddr, out: &mut Outbox) {
        if self.inflight.is_some_and(|f| f.deadline > now) {
            return;
        }
        self.next_req += 1;
        let req = self.next_req;
        let wait = if self.has_snapshot() {
            let wait = if self.at_end {
                cfg.long_poll
            } else {
                Duration::ZERO
            };
            out.send(
                authority,
                Message::FeedPull {
                    req,
                    since: self.seq,
                    limit: cfg.pull_limit,
                    wait,
                },
            );
            wait
        } else {
            out.send(
                authority,
                Message::SnapshotPull {
                    req,
                    resume: self.assembly.cursor(),
                },
            );
            Duration::ZERO
        };
        self.inflight = Some(Inflight {
            req,
            deadline: now + wait + cfg.rpc_margin,
        });
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.inflight.map(|f| f.deadline)
    }

    fn take_answer(&mut self, req: u64) -> bool {
        if self.inflight.is_some_and(|f| f.req == req) {
            self.inflight = None;
            true
        } else {
            false // Late answer to a request we already gave up on.
        }
    }

    /// An answer to our pull, or entries the authority pushed (a resend or a
    /// push after a lost pull). Pushed entries are applied when they continue
    /// our log; any answer that moves us forward ends the request in flight so
    /// the next pull (our acknowledgement) goes out at once.
    pub fn on_feed_reply(
        &mut self,
        req: u64,
        log: LogId,
        body: FeedBody,
        out: &mut Outbox,
    ) -> Applied {
        let mut applied = Applied::default();
        let ours = self.inflight.is_some_and(|f| f.req == req);
        if !self.has_snapshot() {
            return applied;
        }
        if self.log != Some(log) {
            if ours {
                // The authority's log is another history: start over.
                self.inflight = None;
                self.needs_snapshot = true;
                self.at_end = false;
                self.ready = false;
            }
            return applied;
        }
        match body {
            FeedBody::SnapshotRequired { .. } => {
                if ours {
                    // Fell behind the retained log: not ready until a new
                    // snapshot is taken and caught up.
                    self.inflight = None;
                    self.needs_snapshot = true;
                    self.at_end = false;
                    self.ready = false;
                }
            }
            FeedBody::Entries {
                entries,
                head,
                at_end: _,
            } => {
                let before = self.seq;
                for e in entries {
                    if e.seq <= self.seq {
                        continue;
                    }
                    if e.seq != self.seq + 1 {
                        break; // A gap: pull again from where we are.
                    }
                    applied.topology |= e.change.is_topology();
                    if let Change::Health { node, down } = e.change {
                        if self.state.is_down(node) != down {
                            out.notice(Notice::VerdictApplied { node, down });
                        }
                    }
                    let skip = (self.skip_removals
                        && matches!(e.change, Change::PurchaseRemoved { .. }))
                        || (self.membership_only && e.change.is_content());
                    if !skip {
                        self.state.apply(&e.change);
                    }
                    self.seq = e.seq;
                }
                if ours || self.seq > before {
                    self.inflight = None;
                    self.at_end = self.seq == head;
                }
                if self.at_end && !self.ready {
                    self.ready = true;
                    out.notice(Notice::Ready);
                }
            }
        }
        applied
    }

    /// A piece of the snapshot we are taking. Any piece that continues it
    /// counts (a late answer to an earlier pull too); when the last arrives
    /// the snapshot is taken.
    pub fn on_snapshot_chunk(
        &mut self,
        req: u64,
        log: LogId,
        chunk: SnapshotChunk,
        out: &mut Outbox,
    ) -> Applied {
        if self.has_snapshot() {
            return Applied::default(); // Not taking one.
        }
        let ours = self.inflight.is_some_and(|f| f.req == req);
        match self.assembly.on_chunk(log, chunk) {
            Assembled::Ignored => {
                if ours {
                    self.inflight = None; // Ask again from where we are.
                }
                Applied::default()
            }
            Assembled::Progress | Assembled::Corrupt(_) => {
                self.inflight = None;
                Applied::default()
            }
            Assembled::Complete(log, snapshot) => {
                self.inflight = None;
                self.take_snapshot(log, *snapshot, out)
            }
        }
    }

    /// A whole snapshot in answer to pull `req` (tests and tools).
    pub fn on_snapshot_reply(
        &mut self,
        req: u64,
        log: LogId,
        snapshot: Snapshot,
        out: &mut Outbox,
    ) -> Applied {
        if !self.take_answer(req) {
            return Applied::default();
        }
        self.take_snapshot(log, snapshot, out)
    }

    fn take_snapshot(&mut self, log: LogId, snapshot: Snapshot, out: &mut Outbox) -> Applied {
        self.assembly.clear();
        let mut snapshot = snapshot;
        if self.membership_only {
            // Never built, not built and then dropped.
            snapshot.inventory = Vec::new();
            snapshot.purchases = Vec::new();
            snapshot.deleted = Vec::new();
            snapshot.revoked = Vec::new();
        }
        let fresh = ClusterState::from_snapshot(&snapshot);
        for node in fresh.down.symmetric_difference(&self.state.down) {
            out.notice(Notice::VerdictApplied {
                node: *node,
                down: fresh.is_down(*node),
            });
        }
        let new_history = (self.known_log != Some(log)).then(|| {
            let old = std::mem::take(&mut self.state);
            // Not the old authority: it is the one that lost the state (and
            // came back as someone else, or as the one asking). Stores down
            // or gone in our view count too: a partition, a crash or a
            // graceful stop may have taken them away, and they may come back
            // holding content (the authority gives up on them after a
            // while). Other nodes only while up: every replica holds the
            // purchases a prism would hand back.
            let nodes = old
                .registry
                .iter()
                .filter(|n| !n.roles.authority)
                .filter(|n| n.roles.store || !old.is_down(n.id))
                .map(|n| n.id)
                .collect();
            Handback {
                purchases: old.purchases.into_values().collect(),
                revoked: old.revoked.into_iter().collect(),
                nodes,
            }
        });
        self.state = fresh;
        self.log = Some(log);
        self.known_log = Some(log);
        self.seq = snapshot.seq;
        self.has_snapshot = true;
        self.needs_snapshot = false;
        self.at_end = false;
        Applied {
            topology: true,
            new_history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::FeedEntry;
    use crate::ids::NodeId;
    use crate::io::Output;

    fn outbox() -> Outbox {
        Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap())
    }

    const AUTH: &str = "10.0.0.9:7000";

    fn last_req(out: &mut Outbox) -> (u64, Message) {
        let mut last = None;
        while let Some(o) = out.queue.pop_front() {
            if let Output::Send { envelope, .. } = o {
                let req = match envelope.msg {
                    Message::FeedPull { req, .. } | Message::SnapshotPull { req, .. } => req,
                    _ => continue,
                };
                last = Some((req, envelope.msg));
            }
        }
        last.expect("a request was sent")
    }

    fn health(seq: u64, node: u64, down: bool) -> FeedEntry {
        FeedEntry {
            seq,
            change: Change::Health {
                node: NodeId(node),
                down,
            },
        }
    }

    fn empty_snapshot(seq: u64) -> Snapshot {
        Snapshot::empty(seq)
    }

    #[test]
    fn not_ready_until_snapshot_and_caught_up() {
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::SnapshotPull { .. }));
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(10), &mut out);
        assert!(!r.is_ready());
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::FeedPull { since: 10, .. }));
        let body = FeedBody::Entries {
            entries: vec![health(11, 3, true)],
            head: 12,
            at_end: false,
        };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert!(!r.is_ready(), "not at the end yet");
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let body = FeedBody::Entries {
            entries: vec![health(12, 3, false)],
            head: 12,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert!(r.is_ready());
        assert_eq!(r.seq(), 12);
        assert!(!r.state().is_down(NodeId(3)));
    }

    #[test]
    fn gap_stops_application_and_duplicates_are_skipped() {
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(0), &mut out);
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let body = FeedBody::Entries {
            entries: vec![health(1, 3, true), health(1, 3, true), health(3, 4, true)],
            head: 3,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert_eq!(r.seq(), 1);
        assert!(!r.state().is_down(NodeId(4)));
        assert!(!r.is_ready(), "a gap is not the end");
    }

    #[test]
    fn other_log_or_snapshot_required_forces_a_new_snapshot() {
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(0), &mut out);
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let body = FeedBody::Entries {
            entries: vec![],
            head: 0,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(6), body, &mut out);
        assert!(!r.has_snapshot());
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::SnapshotPull { .. }));
        r.on_snapshot_reply(req, LogId(6), empty_snapshot(4), &mut out);
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        r.on_feed_reply(
            req,
            LogId(6),
            FeedBody::SnapshotRequired { snapshot_seq: 9 },
            &mut out,
        );
        assert!(!r.has_snapshot());
        assert!(r.has_state(), "the old state still says whom to probe");
    }

    #[test]
    fn falling_behind_the_retained_log_is_not_ready() {
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        let auth = AUTH.parse().unwrap();
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (req, _) = last_req(&mut out);
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(0), &mut out);
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (req, _) = last_req(&mut out);
        let body = FeedBody::Entries {
            entries: vec![],
            head: 0,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert!(r.is_ready());
        r.poll(Time::ZERO + cfg.long_poll * 2, &cfg, auth, &mut out);
        let (req, _) = last_req(&mut out);
        let body = FeedBody::SnapshotRequired { snapshot_seq: 50 };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert!(!r.is_ready(), "a replica behind the retained log is stale");
        r.poll(Time::ZERO + cfg.long_poll * 2, &cfg, auth, &mut out);
        let (_, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::SnapshotPull { .. }), "{msg:?}");
    }

    #[test]
    fn a_new_log_hands_back_the_old_purchases() {
        use crate::hash::{ContentHash, HashKind};
        use crate::ids::{NodeInfo, Roles, Zone};
        use crate::purchase::{Purchase, Token};
        use crate::time::WallTime;
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let mut snap = empty_snapshot(1);
        snap.purchases.push(Purchase {
            token: Token(5),
            hash: ContentHash::compute(HashKind::Sha1, b"x"),
            ext: crate::content::Ext::lit("bin"),
            expires: WallTime::from_secs(9),
            referrers: vec![],
        });
        // Node 1 the authority; stores 2 up, 3 down (cut off or crashed:
        // it may come back with content), 4 left (it may rejoin).
        for (id, roles) in [(1, Roles::AUTHORITY), (2, Roles::STORE), (3, Roles::STORE)] {
            snap.nodes.push(NodeInfo {
                id: NodeId(id),
                addr: ([10, 0, 0, id as u8], 7000).into(),
                roles,
                zone: Zone::default(),
                weight: 100,
                incarnation: 0,
            });
        }
        snap.nodes.push(NodeInfo {
            id: NodeId(4),
            ..snap.nodes[1].clone()
        });
        // 5 a prism that is up, 6 one that is down.
        for id in [5, 6] {
            snap.nodes.push(NodeInfo {
                id: NodeId(id),
                roles: Roles::PRISM,
                ..snap.nodes[1].clone()
            });
        }
        snap.down = vec![NodeId(3), NodeId(4), NodeId(6)];
        snap.left = vec![NodeId(4)];
        let first = r.on_snapshot_reply(req, LogId(1), snap, &mut out);
        assert_eq!(
            first.new_history,
            Some(Handback::default()),
            "first log: nothing to hand back"
        );
        // The authority lost its state: a new log.
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        r.on_feed_reply(
            req,
            LogId(2),
            FeedBody::SnapshotRequired { snapshot_seq: 0 },
            &mut out,
        );
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let applied = r.on_snapshot_reply(req, LogId(2), empty_snapshot(0), &mut out);
        let handback = applied.new_history.expect("a hand-back");
        assert_eq!(handback.purchases.len(), 1);
        assert_eq!(
            handback.nodes,
            vec![NodeId(2), NodeId(3), NodeId(4), NodeId(5)],
            "every store, up, down or gone, and the prism that was up"
        );
    }

    #[test]
    fn late_answers_are_ignored_and_overdue_requests_repeated() {
        let cfg = FeedConfig::default();
        let mut r = Replica::default();
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (old, _) = last_req(&mut out);
        // Not overdue: nothing new is sent.
        r.poll(Time::from_millis(1), &cfg, AUTH.parse().unwrap(), &mut out);
        assert!(out.queue.is_empty());
        let overdue = r.next_deadline().unwrap();
        r.poll(overdue, &cfg, AUTH.parse().unwrap(), &mut out);
        let (new, _) = last_req(&mut out);
        assert_ne!(old, new);
        r.on_snapshot_reply(old, LogId(1), empty_snapshot(3), &mut out);
        assert!(!r.has_snapshot());
        r.on_snapshot_reply(new, LogId(1), empty_snapshot(3), &mut out);
        assert!(r.has_snapshot());
    }

    /// Takes a snapshot of log 5 at seq 0 and applies `entries` after it.
    fn fed(mut r: Replica, entries: Vec<FeedEntry>, out: &mut Outbox) -> Replica {
        let cfg = FeedConfig::default();
        let auth = AUTH.parse().unwrap();
        r.poll(Time::ZERO, &cfg, auth, out);
        let (req, _) = last_req(out);
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(0), out);
        r.poll(Time::ZERO, &cfg, auth, out);
        let (req, _) = last_req(out);
        let head = entries.len() as u64;
        let body = FeedBody::Entries {
            entries,
            head,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(5), body, out);
        r
    }

    #[test]
    fn the_injected_replica_keeps_removed_purchases_and_the_real_one_does_not() {
        use crate::hash::{ContentHash, HashKind};
        use crate::purchase::{Purchase, Token};
        use crate::time::WallTime;
        let p = Purchase {
            token: Token(5),
            hash: ContentHash::compute(HashKind::Sha1, b"x"),
            ext: crate::content::Ext::lit("bin"),
            expires: WallTime::from_secs(9),
            referrers: vec![],
        };
        let entries = || {
            vec![
                FeedEntry {
                    seq: 1,
                    change: Change::PurchaseCreated(p.clone()),
                },
                FeedEntry {
                    seq: 2,
                    change: Change::PurchaseRemoved { token: Token(5) },
                },
            ]
        };
        let mut out = outbox();
        let real = fed(Replica::default(), entries(), &mut out);
        assert!(real.state().purchases.is_empty());
        let buggy = fed(Replica::skipping_removals(), entries(), &mut out);
        assert!(buggy.state().purchases.contains_key(&Token(5)));
        assert_eq!((real.seq(), buggy.seq()), (2, 2));
    }

    #[test]
    fn a_membership_only_replica_keeps_membership_and_no_content_from_entries_or_snapshots() {
        use crate::content::{ContentMeta, Ext};
        use crate::hash::{ContentHash, HashKind};
        use crate::ids::{NodeInfo, Roles, Zone};
        use crate::purchase::{Purchase, Token};
        use crate::time::WallTime;
        let h = ContentHash::compute(HashKind::Sha1, b"x");
        let entries = || {
            let changes = vec![
                Change::NodeUpserted(NodeInfo {
                    id: NodeId(2),
                    addr: ([10, 0, 0, 2], 7000).into(),
                    roles: Roles::STORE,
                    zone: Zone::default(),
                    weight: 100,
                    incarnation: 0,
                }),
                Change::ContentStored {
                    hash: h,
                    store: NodeId(2),
                    meta: ContentMeta {
                        ext: Ext::lit("bin"),
                        size: 1,
                    },
                },
                Change::PurchaseCreated(Purchase {
                    token: Token(5),
                    hash: h,
                    ext: Ext::lit("bin"),
                    expires: WallTime::from_secs(9),
                    referrers: vec![],
                }),
                Change::Revoked {
                    token: Token(6),
                    expires: WallTime::from_secs(9),
                },
                Change::ContentDeleted {
                    hash: ContentHash::compute(HashKind::Sha1, b"y"),
                },
                Change::Health {
                    node: NodeId(2),
                    down: true,
                },
            ];
            changes
                .into_iter()
                .enumerate()
                .map(|(i, change)| FeedEntry {
                    seq: i as u64 + 1,
                    change,
                })
                .collect::<Vec<_>>()
        };
        let mut out = outbox();
        let full = fed(Replica::default(), entries(), &mut out);
        let lean = fed(Replica::default().membership_only(), entries(), &mut out);
        assert!(full.keeps_content() && !lean.keeps_content());
        assert_eq!((full.seq(), lean.seq()), (6, 6), "every entry counted");
        assert_eq!(full.state().inventory.len(), 1);
        assert_eq!(full.state().purchases.len(), 1);
        let mut expected = full.state().clone();
        expected.strip_content();
        assert_eq!(lean.state(), &expected);
        assert!(lean.state().registry.contains(NodeId(2)));
        assert!(lean.state().is_down(NodeId(2)));
        assert!(lean.state().inventory.is_empty() && lean.state().purchases.is_empty());
        assert!(lean.state().revoked.is_empty() && lean.state().deleted.is_empty());

        // From a snapshot of the full state: the same.
        let snap = full.state().snapshot(6);
        let cfg = FeedConfig::default();
        let mut r = Replica::default().membership_only();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        r.on_snapshot_reply(req, LogId(5), snap, &mut out);
        assert_eq!(r.state(), &expected);
    }

    #[test]
    fn the_accessors_say_where_the_replica_is() {
        let cfg = FeedConfig::default();
        let auth = AUTH.parse().unwrap();
        let mut r = Replica::default();
        let mut out = outbox();
        assert!(!r.has_state() && !r.has_snapshot() && !r.at_end());
        assert_eq!(r.log(), None);
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (req, _) = last_req(&mut out);
        // Nothing more goes out before the request's deadline.
        r.poll(Time::ZERO + cfg.rpc_margin / 2, &cfg, auth, &mut out);
        assert!(out.queue.is_empty(), "one request in flight");
        assert_eq!(r.next_deadline(), Some(Time::ZERO + cfg.rpc_margin));
        r.on_snapshot_reply(req, LogId(5), empty_snapshot(3), &mut out);
        assert!(r.has_state() && r.has_snapshot() && !r.at_end());
        assert_eq!((r.log(), r.seq()), (Some(LogId(5)), 3));
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (req, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::FeedPull { since: 3, wait, .. } if wait == Duration::ZERO));
        let body = FeedBody::Entries {
            entries: vec![health(4, 7, true)],
            head: 4,
            at_end: true,
        };
        r.on_feed_reply(req, LogId(5), body, &mut out);
        assert!(r.at_end() && r.is_ready());
        assert!(r.state().is_down(NodeId(7)));
        // At the end: the next pull waits at the authority.
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (_, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::FeedPull { since: 4, wait, .. } if wait == cfg.long_poll));
        assert_eq!(
            r.next_deadline(),
            Some(Time::ZERO + cfg.long_poll + cfg.rpc_margin)
        );
    }

    #[test]
    fn a_replica_from_a_snapshot_continues_its_log() {
        let cfg = FeedConfig::default();
        let mut snap = empty_snapshot(8);
        snap.down = vec![NodeId(4)];
        let mut r = Replica::from_snapshot(LogId(6), &snap);
        assert!(r.has_snapshot() && r.has_state());
        assert_eq!((r.log(), r.seq()), (Some(LogId(6)), 8));
        assert!(r.state().is_down(NodeId(4)));
        let mut out = outbox();
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::FeedPull { since: 8, .. }), "{msg:?}");
        // Its own log: a new snapshot of it is no new history...
        let behind = FeedBody::SnapshotRequired { snapshot_seq: 20 };
        r.on_feed_reply(req, LogId(6), behind, &mut out);
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let applied = r.on_snapshot_reply(req, LogId(6), empty_snapshot(20), &mut out);
        assert_eq!(applied.new_history, None, "log 6 went on");
        // ...and a snapshot of another log is.
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let other = FeedBody::SnapshotRequired { snapshot_seq: 0 };
        r.on_feed_reply(req, LogId(7), other, &mut out);
        r.poll(Time::ZERO, &cfg, AUTH.parse().unwrap(), &mut out);
        let (req, _) = last_req(&mut out);
        let applied = r.on_snapshot_reply(req, LogId(7), empty_snapshot(0), &mut out);
        assert!(applied.new_history.is_some(), "log 6 was known");
    }

    fn verdict_notices(out: &mut Outbox) -> Vec<(NodeId, bool)> {
        let mut v = Vec::new();
        while let Some(o) = out.queue.pop_front() {
            if let Output::Notice(Notice::VerdictApplied { node, down }) = o {
                v.push((node, down));
            }
        }
        v
    }

    #[test]
    fn a_verdict_is_noticed_only_when_it_changes() {
        let mut out = outbox();
        let entries = vec![health(1, 3, true), health(2, 3, true), health(3, 3, false)];
        fed(Replica::default(), entries, &mut out);
        assert_eq!(
            verdict_notices(&mut out),
            vec![(NodeId(3), true), (NodeId(3), false)],
            "the repeated down changes nothing"
        );
    }

    #[test]
    fn pushed_entries_that_move_us_forward_end_the_pull_in_flight() {
        let cfg = FeedConfig::default();
        let auth = AUTH.parse().unwrap();
        let mut out = outbox();
        let mut r = fed(Replica::default(), vec![health(1, 3, true)], &mut out);
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (req, _) = last_req(&mut out);
        let push = |entries, head| FeedBody::Entries {
            entries,
            head,
            at_end: false,
        };
        // A push that repeats what we have: our pull stays in flight.
        r.on_feed_reply(
            req + 100,
            LogId(5),
            push(vec![health(1, 3, true)], 1),
            &mut out,
        );
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        assert!(out.queue.is_empty(), "still waiting for our pull");
        // A push that continues the log: the next pull goes out at once.
        r.on_feed_reply(
            req + 100,
            LogId(5),
            push(vec![health(2, 4, true)], 3),
            &mut out,
        );
        assert_eq!(r.seq(), 2);
        assert!(!r.at_end(), "the head is further on");
        r.poll(Time::ZERO, &cfg, auth, &mut out);
        let (_, msg) = last_req(&mut out);
        assert!(matches!(msg, Message::FeedPull { since: 2, .. }), "{msg:?}");
    }
}
