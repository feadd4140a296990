//! The authority: master registry, observer assignment, vote tally,
//! inventory, purchases, repair, and the feed log that publishes all of it.
//! Its durable part is [`AuthorityStore`]; votes, held pulls, report
//! sequence numbers and repair jobs are volatile and rebuilt after a restart.
//!
//! An authority that starts without its state (first start, or its database
//! was lost) is *recovering*: until every node that comes back has handed in
//! the purchases its replica held and every store has reported its
//! inventory, it answers "unavailable" instead of "not found".

use crate::config::{ContentConfig, FeedConfig, InjectedBugs, TallyConfig};
use crate::content::ContentMeta;
use crate::durable::Record;
use crate::feed::{Change, FeedEntry, FeedLog};
use crate::feed_server::FeedServer;
use crate::hash::ContentHash;
use crate::ids::{ClusterId, LogId, NodeId, NodeInfo, Zone};
use crate::io::{Notice, Outbox};
use crate::message::{Answer, Ask, DropOrder, Envelope, InventoryBatch, Lookup, Message, VoteSeq};
use crate::observers::assign_observers_among;
use crate::purchase::{Token, MAX_LIFE, MIN_LIFE};
use crate::repair::Repair;
use crate::snapshot_transfer::SnapshotSource;
use crate::state::ClusterState;
use crate::time::{earliest, Duration, Time, WallTime};
use crate::vote_tally::VoteTally;
use std::collections::{BTreeMap, BTreeSet};

/// The authority's durable state: the log and the state it describes.
#[derive(Clone, Debug)]
pub struct AuthorityStore {
    pub cluster: ClusterId,
    pub log: FeedLog,
    pub state: ClusterState,
    /// False until the state this log started without has been rebuilt.
    pub recovered: bool,
    /// Nodes that handed back their purchases for this log.
    pub restored: BTreeSet<NodeId>,
    /// Stores whose full inventory scan against this log was applied.
    pub synced: BTreeSet<NodeId>,
    /// During recovery: nodes the lost state knew, as the nodes reported.
    pub expected: BTreeSet<NodeId>,
    /// The last inventory report applied per store.
    pub reports: BTreeMap<NodeId, VoteSeq>,
    /// Copies of deleted content reported and not yet claimed or dropped.
    pub orphans: BTreeMap<(ContentHash, NodeId), ContentMeta>,
    /// Drop orders not yet answered, with their fences.
    pub drops_pending: BTreeMap<(ContentHash, NodeId), VoteSeq>,
}

impl AuthorityStore {
    pub fn new(cluster: ClusterId, log: LogId, retain: usize) -> AuthorityStore {
        AuthorityStore {
            cluster,
            log: FeedLog::new(log, retain),
            state: ClusterState::default(),
            recovered: false,
            restored: BTreeSet::new(),
            synced: BTreeSet::new(),
            expected: BTreeSet::new(),
            reports: BTreeMap::new(),
            orphans: BTreeMap::new(),
            drops_pending: BTreeMap::new(),
        }
    }

    /// Drops what was kept per node for `node`, which was removed.
    pub fn forget(&mut self, node: NodeId) {
        // The report fence stays: a delayed report from the removed start
        // must not count for a later one (reports order by start first).
        self.restored.remove(&node);
        self.synced.remove(&node);
        self.expected.remove(&node);
        self.orphans.retain(|(_, s), _| *s != node);
        self.drops_pending.retain(|(_, s), _| *s != node);
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

/// How often a recovery past its minimum window is checked again.
const RECOVERY_RECHECK: Duration = Duration::from_millis(500);

/// An expected node that does not come back within this many recovery
/// windows is presumed gone.
const EXPECT_WINDOWS: u32 = 4;

/// Expired tombstones are dropped in batches of at least this many (or all
/// at once when only expired ones are left), one feed entry per batch.
const TOMBSTONE_BATCH: usize = 256;

/// Recovery ends at the latest after this many recovery windows, so one node
/// that never hands in its purchases cannot keep the cluster unavailable.
const RECOVERY_MAX_WINDOWS: u32 = 12;

/// An unanswered drop order is sent again this often.
const DROP_RESEND: Duration = Duration::from_secs(1);

/// Answers to changing asks are kept this long per (node, request), so a
/// retried or duplicated ask gets the first answer instead of running
/// again (a late duplicate of a create must not undo a revocation, nor a
/// late delete remove a re-upload).
const ANSWER_MEMORY: Duration = Duration::from_secs(30);

/// Remembered answers, at most (the oldest are forgotten first).
const ANSWER_MEMORY_MAX: usize = 100_000;

#[derive(Debug)]
struct Recovery {
    until: Time,
    /// An expected node that has not registered again by then is presumed
    /// gone and no longer waited for.
    expect_until: Time,
    hard_until: Time,
}

/// Settings the authority needs.
#[derive(Clone, Debug)]
pub struct AuthorityConfig {
    pub tally: TallyConfig,
    pub feed: FeedConfig,
    pub content: ContentConfig,
    pub bugs: InjectedBugs,
}

#[derive(Debug)]
pub struct Authority {
    me: NodeId,
    cfg: AuthorityConfig,
    store: AuthorityStore,
    tally: VoteTally,
    feed: FeedServer,
    /// The encoded snapshot readers are being served from.
    snapshots: SnapshotSource,
    observers_due: Option<Time>,
    last_assignment: Option<Time>,
    recovery: Option<Recovery>,
    /// Purchase expiries, earliest first, for pruning.
    expiries: BTreeSet<(WallTime, Token)>,
    /// When each store went down, for repair's grace period.
    down_since: BTreeMap<NodeId, Time>,
    /// Nodes that registered a new start, and when: not removed until it
    /// was published up, or long enough went by that a running start would
    /// have been (a restart forgets: every node down counts from it).
    rejoined: BTreeMap<NodeId, Time>,
    /// Copies that are gone or going: a store reported them removed in
    /// batch `seq`, or we told it to drop those reported up to `seq`. A
    /// prism's claim must not bring them back; a later report of a new
    /// copy clears the mark.
    gone: BTreeMap<(ContentHash, NodeId), (VoteSeq, Time)>,
    /// Placement claims waiting for a store's own report of the new copy
    /// (a mark from an earlier drop would refuse it): when first seen.
    claims_waiting: BTreeMap<(NodeId, u64), Time>,
    /// Surplus copies unlisted whose drop order has not gone out yet.
    unlisted: BTreeMap<(ContentHash, NodeId), ContentMeta>,
    /// Drop orders not yet answered by the store's report of the removal
    /// (or of a newer copy, which the order does not cover): resent while
    /// the store is up, since an order lost on the way would leave a copy
    /// nobody lists.
    drops_pending: BTreeMap<(ContentHash, NodeId), (VoteSeq, Time)>,
    /// Copies of deleted content reported since the delete, waiting for
    /// the placement of a re-upload (batch, arrival, meta).
    orphans: BTreeMap<(ContentHash, NodeId), (VoteSeq, Time, ContentMeta)>,
    /// Answers to changing asks, by (node, request), and their ages.
    answered: BTreeMap<(NodeId, u64), (Time, Answer)>,
    answered_order: std::collections::VecDeque<(Time, NodeId, u64)>,
    repair: Repair,
    now: Time,
    wall: WallTime,
    wall_settled: bool,
}

impl Authority {
    pub fn new(me: NodeId, cfg: AuthorityConfig, store: AuthorityStore, now: Time) -> Authority {
        let expiries = store
            .state
            .purchases
            .values()
            .map(|p| (p.expires, p.token))
            .collect();
        let recovery = (!store.recovered).then(|| Recovery {
            until: now + cfg.content.recovery_window,
            expect_until: now + cfg.content.recovery_window * EXPECT_WINDOWS,
            hard_until: now + cfg.content.recovery_window * RECOVERY_MAX_WINDOWS,
        });
        // Stores already down count from now: the restart forgot since when
        // (and whether a new start of theirs came up meanwhile).
        let down_since: BTreeMap<NodeId, Time> =
            store.state.down.iter().map(|d| (*d, now)).collect();
        let rejoined = down_since.clone();
        // Unanswered drop orders go out again, after an unlist wait: one may
        // be for a surplus copy unlisted just before the restart.
        let first = now + cfg.content.unlist_wait();
        let drops_pending = store
            .drops_pending
            .iter()
            .map(|(k, upto)| (*k, (*upto, first)))
            .collect();
        // Orphans wait afresh: a re-upload may still claim them.
        let orphans = store
            .orphans
            .iter()
            .map(|((h, s), m)| {
                let seq = store.reports.get(s).copied().unwrap_or_default();
                ((*h, *s), (seq, now, *m))
            })
            .collect();
        Authority {
            me,
            tally: VoteTally::new(cfg.tally.clone(), cfg.bugs.clone(), now),
            cfg,
            store,
            feed: FeedServer::default(),
            snapshots: SnapshotSource::default(),
            // Recompute at start: the configured K may have changed.
            observers_due: Some(now),
            last_assignment: None,
            recovery,
            expiries,
            down_since,
            rejoined,
            gone: BTreeMap::new(),
            claims_waiting: BTreeMap::new(),
            unlisted: BTreeMap::new(),
            drops_pending,
            orphans,
            answered: BTreeMap::new(),
            answered_order: std::collections::VecDeque::new(),
            repair: Repair::default(),
            now,
            wall: WallTime::default(),
            wall_settled: true,
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

    /// The published log (read by the simulator's verdict audit).
    pub fn log(&self) -> &crate::feed::FeedLog {
        &self.store.log
    }

    pub fn tally(&self) -> &VoteTally {
        &self.tally
    }

    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Stores whose full inventory scan against this log was applied.
    pub fn synced_stores(&self) -> &BTreeSet<NodeId> {
        &self.store.synced
    }

    pub fn repair_jobs(&self) -> usize {
        self.repair.jobs_in_flight()
    }

    fn clock(&mut self, now: Time, wall: WallTime) {
        self.now = self.now.max(now);
        // Until the cluster's time is known the wall stands still (at zero
        // after a start: nothing expires, nothing is pruned). It follows the
        // cluster's clock even backwards: a ratchet would keep an early
        // overshoot (a lone authority on its own wrong clock) for as long as
        // it was wrong, in every expiry it states.
        if self.wall_settled {
            self.wall = wall;
        }
    }

    /// Whether the cluster's time is known well enough to state expiries
    /// (see `cluster_clock`); until then purchases are not created.
    pub fn set_wall_settled(&mut self, settled: bool) {
        self.wall_settled = settled;
    }

    /// Handles a message addressed to the authority. Returns false if it is
    /// not an authority message.
    pub fn handle(&mut self, now: Time, wall: WallTime, env: &Envelope, out: &mut Outbox) -> bool {
        self.clock(now, wall);
        match &env.msg {
            Message::Join { info } => {
                if info.id != env.from {
                    return true; // A node may only register itself.
                }
                let state = &self.store.state;
                let registered = state.registry.get(info.id).map(|i| i.incarnation);
                // A join from an earlier start (delayed), or from the start
                // that has since left, changes nothing: acknowledged only, so
                // a node whose disk went back learns it must move past the
                // registered start (`Node::check_registration`).
                // So is one from a start an admin removed.
                let stale = registered.is_some_and(|r| {
                    info.incarnation < r || (info.incarnation == r && state.has_left(info.id))
                }) || state.was_removed(info.id, info.incarnation);
                if !stale {
                    if let Some(change) = state.registry.join_change(info) {
                        // Votes name no start: a down verdict may still
                        // follow about the start before this one.
                        if registered != Some(info.incarnation) {
                            self.rejoined.insert(info.id, now);
                        }
                        self.append(change, out);
                    }
                }
                if !stale && self.store.state.has_left(info.id) {
                    let change = Change::Left {
                        node: info.id,
                        left: false,
                    };
                    self.append(change, out);
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
                // A set older than the one held is answered with the one
                // held: an observer whose counter went back (its disk did)
                // jumps past it instead of falling silent.
                let held = if self.tally.record(now, env.from, *seq, down) {
                    *seq
                } else {
                    self.tally.held_seq(env.from).unwrap_or(*seq)
                };
                out.send(env.from_addr, Message::VotesAck { seq: held });
                self.settle(out);
            }
            Message::FeedPull {
                req,
                since,
                limit,
                wait,
            } => self.feed.on_pull(
                now,
                &self.cfg.feed,
                &self.store.log,
                env.from,
                env.from_addr,
                *req,
                *since,
                *limit,
                *wait,
                out,
            ),
            Message::SnapshotPull { req, resume } => {
                // Half the retained log: room for the reader to follow it
                // from the snapshot once it has all of it.
                let max_lag = (self.cfg.feed.retain / 2) as u64;
                let head = self.head();
                let chunk = self
                    .snapshots
                    .serve(now, &self.store.state, head, max_lag, *resume);
                let log = self.log_id();
                out.send(
                    env.from_addr,
                    Message::SnapshotReply {
                        req: *req,
                        log,
                        chunk: Box::new(chunk),
                    },
                );
            }
            Message::InventoryReport(batch) => {
                let InventoryBatch {
                    seq,
                    sync,
                    adds,
                    removes,
                } = &**batch;
                let is_store = self
                    .store
                    .state
                    .registry
                    .get(env.from)
                    .is_some_and(|i| i.roles.store);
                if !is_store {
                    return true; // Not registered (yet): it will rejoin and retry.
                }
                if self
                    .store
                    .reports
                    .get(&env.from)
                    .is_none_or(|last| seq > last)
                {
                    self.store.reports.insert(env.from, *seq);
                    out.persist(Record::Reported {
                        store: env.from,
                        seq: *seq,
                    });
                    self.apply_report(env.from, *seq, *sync, adds, removes, out);
                }
                out.send(env.from_addr, Message::InventoryAck { seq: *seq });
            }
            Message::CloneDone { job, ok } => self.repair.on_clone_done(now, env.from, *job, *ok),
            Message::Leaving { incarnation } => {
                let node = env.from;
                let state = &self.store.state;
                let known = state.registry.get(node).cloned();
                let this_life = known
                    .as_ref()
                    .is_some_and(|i| i.incarnation <= *incarnation);
                if node != self.me && this_life && !state.has_left(node) {
                    // The start that left is on record: its own joins,
                    // delayed, do not bring it back.
                    if let Some(info) = known.filter(|i| i.incarnation < *incarnation) {
                        let info = NodeInfo {
                            incarnation: *incarnation,
                            ..info
                        };
                        self.append(Change::NodeUpserted(info), out);
                    }
                    self.append(Change::Left { node, left: true }, out);
                }
            }
            Message::Ask { req, ask } => {
                // No answer yet: the asker retries.
                let Some(answer) = self.answer_once(env.from, *req, ask, out) else {
                    return true;
                };
                out.send(
                    env.from_addr,
                    Message::Answer {
                        req: *req,
                        answer: Box::new(answer),
                    },
                );
            }
            _ => return false,
        }
        let progress = matches!(&env.msg, Message::InventoryReport(_) | Message::Ask { .. });
        if progress {
            // Only a hand-back or a store's sync can complete a recovery
            // early; otherwise the periodic check in `on_tick` does.
            self.check_recovery(out);
        }
        self.feed.flush(now, &self.cfg.feed, &self.store.log, out);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_report(
        &mut self,
        store: NodeId,
        seq: VoteSeq,
        sync: Option<LogId>,
        adds: &[(ContentHash, ContentMeta)],
        removes: &[ContentHash],
        out: &mut Outbox,
    ) {
        for (hash, meta) in adds {
            // A copy reported after a drop or removal is a new copy; an
            // order sent before this report does not cover it.
            self.gone.remove(&(*hash, store));
            if self
                .drops_pending
                .get(&(*hash, store))
                .is_some_and(|(upto, _)| *upto < seq)
            {
                self.drop_answered(*hash, store, out);
            }
            if self.store.state.deleted.contains(hash) {
                if self.cfg.bugs.drop_reported_deleted {
                    self.send_drop(*hash, store, out);
                    continue;
                }
                // Deleted, or a re-upload whose placement is on its way:
                // decided in `drop_orphans`.
                self.add_orphan(*hash, store, seq, *meta, out);
                continue;
            }
            if !self.holds(hash, store) {
                self.append(
                    Change::ContentStored {
                        hash: *hash,
                        store,
                        meta: *meta,
                    },
                    out,
                );
            }
        }
        let removes = if self.cfg.bugs.ignore_reported_removals {
            &[]
        } else {
            removes
        };
        for hash in removes {
            self.gone.insert((*hash, store), (seq, self.now));
            self.drop_answered(*hash, store, out);
            self.take_orphan(*hash, store, out);
            if self.holds(hash, store) {
                self.append(Change::ContentDropped { hash: *hash, store }, out);
            }
        }
        if sync.is_some() && sync == Some(self.log_id()) && self.store.synced.insert(store) {
            out.persist(Record::Synced(store));
        }
    }

    /// The fence for a drop order to `store`: the copies it reported so far.
    fn report_fence(&self, store: NodeId) -> VoteSeq {
        self.store.reports.get(&store).copied().unwrap_or_default()
    }

    /// Why `node` may not be removed now, if it may not: it is not
    /// registered, is us, we are still rebuilding our state, it is not
    /// published down (stop it first) or started again since, it is a store
    /// whose whole listing we have not seen, or it holds a copy of content
    /// that has fewer than R counting copies elsewhere (drain it first, or
    /// wait for repair).
    fn removal_refused(&self, node: NodeId) -> Option<String> {
        let state = &self.store.state;
        let Some(info) = state.registry.get(node) else {
            return Some(format!("{node} is not a registered node"));
        };
        if node == self.me {
            return Some("the authority cannot remove itself".into());
        }
        if self.recovery.is_some() {
            // What it holds is not known until every store has listed again.
            return Some("the authority is rebuilding its state: ask again later".into());
        }
        if !state.is_down(node) {
            return Some(format!("{node} is up: stop it first"));
        }
        if let Some(at) = self.rejoined.get(&node) {
            let t = &self.cfg.tally;
            if self.now < *at + t.vote_ttl + t.flap_hold_max + t.observer_debounce {
                return Some(format!(
                    "{node} may have started again since it went down: stop it, or ask again later"
                ));
            }
        }
        if info.roles.store && !self.store.synced.contains(&node) {
            // A store that went down before listing everything to this log
            // may hold copies we have never heard of.
            return Some(format!(
                "{node} has not listed all its copies to this authority: start it until it has"
            ));
        }
        let r = self.cfg.content.replicas;
        let among_last_r = |hash: &ContentHash| {
            let others = state.inventory.get(hash).map_or(0, |rec| {
                rec.stores
                    .iter()
                    .filter(|s| **s != node && state.copy_counts(**s))
                    .count()
            });
            others < r && !self.cfg.bugs.remove_last_copies
        };
        // Copies on it already unlisted (surplus after a drain or repair)
        // but not yet dropped count too: if what they were surplus to has
        // failed since, they may be the last ones.
        let doomed: BTreeSet<ContentHash> = self
            .unlisted
            .keys()
            .chain(self.drops_pending.keys())
            .filter(|(h, s)| *s == node && !state.deleted.contains(h))
            .map(|(h, _)| *h)
            .collect();
        let short = state.held_by(node).filter(|h| among_last_r(h)).count()
            + doomed.iter().filter(|h| among_last_r(h)).count();
        (short > 0).then(|| {
            format!("{short} of the copies on {node} are among the last {r}: drain it or wait for repair")
        })
    }

    /// Removes `node` from the registry, its observer duties and the
    /// inventory; what we still held for it (orphans, surplus copies waiting
    /// for their drop) is forgotten with it.
    fn remove_node(&mut self, node: NodeId, out: &mut Outbox) {
        self.append(Change::NodeRemoved(node), out);
        let orphans: Vec<ContentHash> = self
            .orphans
            .keys()
            .filter(|(_, s)| *s == node)
            .map(|(h, _)| *h)
            .collect();
        for hash in orphans {
            self.take_orphan(hash, node, out);
        }
        let drops: Vec<ContentHash> = self
            .drops_pending
            .keys()
            .filter(|(_, s)| *s == node)
            .map(|(h, _)| *h)
            .collect();
        for hash in drops {
            self.drops_pending.remove(&(hash, node));
            self.store.drops_pending.remove(&(hash, node));
            out.persist(Record::DropPending {
                hash,
                store: node,
                upto: None,
            });
        }
        self.unlisted.retain(|(_, s), _| *s != node);
        self.gone.retain(|(_, s), _| *s != node);
        // A later start under the same id is a new member: it must list
        // everything again and is fenced afresh.
        self.store.forget(node);
        out.persist(Record::Forgotten(node));
    }

    /// Tells `store` to drop the copy of `hash` it has reported.
    fn send_drop(&mut self, hash: ContentHash, store: NodeId, out: &mut Outbox) {
        self.order_drop(hash, store, Duration::ZERO, out);
    }

    /// Records a drop order for the copy of `hash` on `store` (durably, so
    /// a restart sends it again) and sends it `after` from now.
    fn order_drop(&mut self, hash: ContentHash, store: NodeId, after: Duration, out: &mut Outbox) {
        let upto = self.report_fence(store);
        self.gone.insert((hash, store), (upto, self.now));
        let next = if after > Duration::ZERO {
            self.now + after
        } else {
            self.now + DROP_RESEND
        };
        self.drops_pending.insert((hash, store), (upto, next));
        self.store.drops_pending.insert((hash, store), upto);
        out.persist(Record::DropPending {
            hash,
            store,
            upto: Some(upto),
        });
        if after > Duration::ZERO {
            return; // `resend_drops` sends it when it is due.
        }
        if let Some(info) = self.store.state.registry.get(store) {
            out.send(
                info.addr,
                Message::DropCopy(Box::new(DropOrder { hash, upto })),
            );
        }
    }

    /// A surplus copy leaves the inventory first; its store is told to drop
    /// it only once the prisms have had the time to hear of that, so no
    /// client is sent to a copy that is already gone. A new copy reported
    /// meanwhile cancels the order (see `apply_report`).
    fn unlist(&mut self, hash: ContentHash, store: NodeId, out: &mut Outbox) {
        if self.drops_pending.contains_key(&(hash, store)) {
            return;
        }
        if self.cfg.bugs.drop_before_unlist {
            return self.send_drop(hash, store, out);
        }
        if self.holds(&hash, store) {
            if let Some(rec) = self.store.state.inventory.get(&hash) {
                self.unlisted.insert((hash, store), rec.meta);
            }
            self.append(Change::ContentDropped { hash, store }, out);
        }
        let wait = self.cfg.content.unlist_wait();
        self.order_drop(hash, store, wait, out);
    }

    /// An unlisted copy whose drop is due is kept after all if the copies
    /// it was surplus to no longer make R (a holder failed meanwhile).
    fn rescue_unlisted(&mut self, out: &mut Outbox) {
        let now = self.now;
        let due: Vec<(ContentHash, NodeId)> = self
            .unlisted
            .keys()
            .filter(|k| {
                self.drops_pending
                    .get(*k)
                    .is_none_or(|(_, next)| *next <= now)
            })
            .copied()
            .collect();
        for (hash, store) in due {
            let Some(meta) = self.unlisted.remove(&(hash, store)) else {
                continue;
            };
            if !self.drops_pending.contains_key(&(hash, store)) {
                continue; // Answered or cancelled meanwhile.
            }
            let state = &self.store.state;
            let counting = state.inventory.get(&hash).map_or(0, |r| {
                r.stores.iter().filter(|s| state.copy_counts(**s)).count()
            });
            if counting < self.cfg.content.replicas && state.copy_counts(store) {
                self.drop_answered(hash, store, out);
                self.gone.remove(&(hash, store));
                self.append(Change::ContentStored { hash, store, meta }, out);
            }
        }
    }

    /// Resends drop orders the stores have not answered, to stores that
    /// are up (one that comes back from a crash lists its disk again).
    fn resend_drops(&mut self, out: &mut Outbox) {
        let now = self.now;
        let state = &self.store.state;
        for ((hash, store), (upto, next)) in self.drops_pending.iter_mut() {
            if *next > now || state.is_down(*store) {
                continue;
            }
            *next = now + DROP_RESEND;
            if let Some(info) = state.registry.get(*store) {
                let order = DropOrder {
                    hash: *hash,
                    upto: *upto,
                };
                out.send(info.addr, Message::DropCopy(Box::new(order)));
            }
        }
        let gone: Vec<(ContentHash, NodeId)> = self
            .drops_pending
            .keys()
            .filter(|(_, s)| !state.registry.contains(*s))
            .copied()
            .collect();
        for (hash, store) in gone {
            self.drop_answered(hash, store, out);
        }
    }

    /// The store answered a drop order (or left the registry).
    fn drop_answered(&mut self, hash: ContentHash, store: NodeId, out: &mut Outbox) {
        if self.drops_pending.remove(&(hash, store)).is_some() {
            self.store.drops_pending.remove(&(hash, store));
            out.persist(Record::DropPending {
                hash,
                store,
                upto: None,
            });
        }
    }

    /// Copies of deleted content that no placement claimed in time are
    /// dropped; those whose content was uploaded again are recorded.
    fn drop_orphans(&mut self, out: &mut Outbox) {
        // Stores report a new copy before the prism that placed it hears
        // from every store: a re-upload's placement gets this long.
        let wait = self.cfg.content.orphan_wait();
        let due: Vec<(ContentHash, NodeId)> = self
            .orphans
            .iter()
            .filter(|((h, _), (_, at, _))| {
                !self.store.state.deleted.contains(h) || self.now.since(*at) >= wait
            })
            .map(|(k, _)| *k)
            .collect();
        for (hash, store) in due {
            let Some(meta) = self.take_orphan(hash, store, out) else {
                continue;
            };
            if self.store.state.deleted.contains(&hash) {
                self.send_drop(hash, store, out);
            } else {
                self.adopt(hash, store, meta, out);
            }
        }
    }

    fn add_orphan(
        &mut self,
        hash: ContentHash,
        store: NodeId,
        seq: VoteSeq,
        meta: ContentMeta,
        out: &mut Outbox,
    ) {
        out.persist(Record::Orphan {
            hash,
            store,
            meta: Some(meta),
        });
        self.store.orphans.insert((hash, store), meta);
        self.orphans.insert((hash, store), (seq, self.now, meta));
    }

    fn take_orphan(
        &mut self,
        hash: ContentHash,
        store: NodeId,
        out: &mut Outbox,
    ) -> Option<ContentMeta> {
        let (_, _, meta) = self.orphans.remove(&(hash, store))?;
        self.store.orphans.remove(&(hash, store));
        out.persist(Record::Orphan {
            hash,
            store,
            meta: None,
        });
        Some(meta)
    }

    /// Records a copy reported while its content was deleted, now that it
    /// was uploaded again (the same bytes: content is addressed by hash).
    fn adopt(&mut self, hash: ContentHash, store: NodeId, meta: ContentMeta, out: &mut Outbox) {
        let is_store = self
            .store
            .state
            .registry
            .get(store)
            .is_some_and(|i| i.roles.store);
        if is_store && !self.holds(&hash, store) && !self.gone.contains_key(&(hash, store)) {
            self.append(Change::ContentStored { hash, store, meta }, out);
        }
    }

    fn holds(&self, hash: &ContentHash, store: NodeId) -> bool {
        self.store
            .state
            .inventory
            .get(hash)
            .is_some_and(|r| r.stores.contains(&store))
    }

    /// Revoked, and the purchase would not have expired yet (expired
    /// tombstones are pruned in batches, so they may linger).
    fn revoked_until_expiry(&self, token: &Token) -> bool {
        self.store
            .state
            .revoked
            .get(token)
            .is_some_and(|e| *e > self.wall)
    }

    fn lookup<T>(&self, found: Option<T>) -> Lookup<T> {
        match found {
            Some(x) => Lookup::Found(x),
            None if self.recovery.is_some() && !self.cfg.bugs.deny_while_recovering => {
                Lookup::Unavailable
            }
            None => Lookup::NotFound,
        }
    }

    /// Answers an ask; a changing ask seen before from the same node and
    /// request gets the answer it got then. `None`: not yet (a placement
    /// waiting for its stores' reports).
    fn answer_once(
        &mut self,
        from: NodeId,
        req: u64,
        ask: &Ask,
        out: &mut Outbox,
    ) -> Option<Answer> {
        let changes = matches!(
            ask,
            Ask::ContentPlaced { .. }
                | Ask::ContentDelete { .. }
                | Ask::PurchaseCreate { .. }
                | Ask::PurchaseRemove { .. }
                | Ask::Drain { .. }
                | Ask::RemoveNode { .. }
        );
        if !changes {
            return Some(self.answer(from, ask, out));
        }
        while let Some(&(at, node, r)) = self.answered_order.front() {
            if self.now.since(at) < ANSWER_MEMORY && self.answered_order.len() < ANSWER_MEMORY_MAX {
                break;
            }
            self.answered_order.pop_front();
            if self.answered.get(&(node, r)).is_some_and(|(t, _)| *t == at) {
                self.answered.remove(&(node, r));
            }
        }
        if let Some((_, answer)) = self.answered.get(&(from, req)) {
            return Some(answer.clone());
        }
        if let Ask::ContentPlaced {
            hash,
            stores,
            transferred: true,
            ..
        } = ask
        {
            if self.claim_waits(from, req, hash, stores) {
                return None;
            }
        }
        let answer = self.answer(from, ask, out);
        // An unavailable answer is not an outcome: a retry runs again.
        if !matches!(answer, Answer::Unavailable) {
            self.answered
                .insert((from, req), (self.now, answer.clone()));
            self.answered_order.push_back((self.now, from, req));
        }
        Some(answer)
    }

    /// A prism claims copies it just wrote, and a store among them is
    /// marked from an earlier drop of the same hash (a delete, then a
    /// re-upload). The mark refuses a claim that could bring back a copy
    /// already dropped; the store's own report of a new copy clears it,
    /// usually moments later. So a claim short of the write quorum without
    /// them waits for that report (the prism retries) up to `claim_wait`,
    /// rather than refuse a copy that exists.
    fn claim_waits(
        &mut self,
        from: NodeId,
        req: u64,
        hash: &ContentHash,
        stores: &[NodeId],
    ) -> bool {
        let is_marked = |s: &NodeId| {
            self.gone.contains_key(&(*hash, *s)) || self.drops_pending.contains_key(&(*hash, *s))
        };
        let marked = stores.iter().any(is_marked);
        // Enough unmarked copies for the quorum: answer now (the marked
        // store's own report of its new copy lists it later anyway).
        let unmarked = stores.iter().filter(|s| !is_marked(s)).count();
        let quorum = unmarked >= self.cfg.content.write_quorum;
        if !marked
            || quorum
            || self.cfg.bugs.drop_reported_deleted
            || self.cfg.bugs.refuse_marked_claims
        {
            self.claims_waiting.remove(&(from, req));
            return false;
        }
        let since = *self.claims_waiting.entry((from, req)).or_insert(self.now);
        let waits = self.now.since(since) < self.cfg.content.claim_wait();
        if !waits {
            self.claims_waiting.remove(&(from, req));
        }
        waits
    }

    fn answer(&mut self, from: NodeId, ask: &Ask, out: &mut Outbox) -> Answer {
        match ask {
            Ask::ContentPlaced {
                hash,
                meta,
                stores,
                transferred,
            } => self.placed(*hash, meta, stores, *transferred, out),
            Ask::ContentLookup { hash } => {
                Answer::Content(self.lookup(self.store.state.inventory.record(hash)))
            }
            Ask::ContentExists { hashes } => {
                let found: Vec<bool> = hashes
                    .iter()
                    .map(|h| self.store.state.inventory.contains_key(h))
                    .collect();
                if self.recovery.is_some() && found.iter().any(|f| !f) {
                    Answer::Unavailable
                } else {
                    Answer::Exists(found)
                }
            }
            Ask::ContentDelete { hash } => {
                let holders: Vec<NodeId> = self
                    .store
                    .state
                    .inventory
                    .get(hash)
                    .into_iter()
                    .flat_map(|r| r.stores.iter().copied())
                    .collect();
                for store in holders {
                    self.send_drop(*hash, store, out);
                }
                // Copies reported since an earlier delete go too.
                let orphans: Vec<NodeId> = self
                    .orphans
                    .range((*hash, NodeId(0))..=(*hash, NodeId(u64::MAX)))
                    .map(|((_, s), _)| *s)
                    .collect();
                for store in orphans {
                    self.take_orphan(*hash, store, out);
                    self.send_drop(*hash, store, out);
                }
                if !self.store.state.deleted.contains(hash) {
                    self.append(Change::ContentDeleted { hash: *hash }, out);
                }
                Answer::Done
            }
            Ask::PurchaseCreate { purchase, life } => {
                if !self.wall_settled {
                    // An expiry stated now could be off by our own clock's error.
                    return Answer::Unavailable;
                }
                if !(MIN_LIFE..=MAX_LIFE).contains(life) {
                    return Answer::Refused(format!(
                        "life must be between {MIN_LIFE:?} and {MAX_LIFE:?}"
                    ));
                }
                if self.revoked_until_expiry(&purchase.token) {
                    // A late retry of a create the client has since revoked.
                    return Answer::Refused("purchase was revoked".into());
                }
                if let Some(existing) = self.store.state.purchases.get(&purchase.token) {
                    // A retried create: same answer. Anything else is a clash.
                    return if existing.hash == purchase.hash {
                        Answer::Purchase(Lookup::Found(existing.clone()))
                    } else {
                        Answer::Refused("token already in use".into())
                    };
                }
                let mut p = purchase.clone();
                p.expires = self.wall + *life;
                self.append(Change::PurchaseCreated(p.clone()), out);
                Answer::Purchase(Lookup::Found(p))
            }
            Ask::PurchaseLookup { token } => {
                Answer::Purchase(self.lookup(self.store.state.purchases.get(token).cloned()))
            }
            Ask::PurchaseRemove { token } => {
                if self.store.state.purchases.contains_key(token) {
                    self.append(Change::PurchaseRemoved { token: *token }, out);
                    Answer::Removed(true)
                } else if self.revoked_until_expiry(token) && !self.cfg.bugs.revoke_retry_not_found
                {
                    // Revoked already (by this request's lost first answer,
                    // or by another): revoking is idempotent.
                    Answer::Removed(true)
                } else if self.recovery.is_some() {
                    Answer::Unavailable
                } else {
                    Answer::Removed(false)
                }
            }
            Ask::Drain { node, draining } => {
                let state = &self.store.state;
                let is_store = state.registry.get(*node).is_some_and(|i| i.roles.store);
                if !is_store {
                    return Answer::Refused(format!("{node} is not a registered store"));
                }
                if state.draining.contains(node) != *draining {
                    self.append(
                        Change::Draining {
                            node: *node,
                            draining: *draining,
                        },
                        out,
                    );
                }
                Answer::Done
            }
            Ask::RemoveNode { node } => match self.removal_refused(*node) {
                // A retry whose first answer was lost: done already.
                Some(_) if self.store.state.removed.contains_key(node) => Answer::Done,
                Some(why) => Answer::Refused(why),
                None => {
                    if !self.cfg.bugs.removal_not_recorded {
                        self.remove_node(*node, out);
                    }
                    Answer::Done
                }
            },
            Ask::RestorePurchases {
                purchases,
                revoked,
                nodes,
                done,
            } => {
                if !self.wall_settled {
                    // Expired hand-backs cannot be told from live ones yet.
                    return Answer::Unavailable;
                }
                if self.recovery.is_some() {
                    for n in nodes {
                        if *n != self.me && self.store.expected.insert(*n) {
                            out.persist(Record::Expected(*n));
                        }
                    }
                }
                for (token, expires) in revoked {
                    if self.store.state.purchases.contains_key(token) {
                        self.append(Change::PurchaseRemoved { token: *token }, out);
                    } else if !self.store.state.revoked.contains_key(token) && *expires > self.wall
                    {
                        // A revocation handed back before the purchase is:
                        // the tombstone keeps a later hand-back out.
                        let change = Change::Revoked {
                            token: *token,
                            expires: *expires,
                        };
                        self.append(change, out);
                    }
                }
                for p in purchases {
                    let state = &self.store.state;
                    let known = state.purchases.contains_key(&p.token)
                        || state.revoked.contains_key(&p.token)
                        || revoked.iter().any(|(t, _)| *t == p.token);
                    if !known && !p.is_expired(self.wall) {
                        self.append(Change::PurchaseCreated(p.clone()), out);
                    }
                }
                if *done && self.recovery.is_some() && self.store.restored.insert(from) {
                    out.persist(Record::Restored(from));
                }
                Answer::Done
            }
        }
    }

    /// A prism placed `hash` on `stores` (or, `transferred` false, found it
    /// placed there in its replica). Records the copies that can count and
    /// answers which. A copy that is gone or going never counts, and a
    /// claim read from a replica counts only where the inventory agrees.
    fn placed(
        &mut self,
        hash: ContentHash,
        meta: &ContentMeta,
        stores: &[NodeId],
        transferred: bool,
        out: &mut Outbox,
    ) -> Answer {
        let state = &self.store.state;
        let accepted: Vec<NodeId> = stores
            .iter()
            .copied()
            .filter(|s| state.registry.get(*s).is_some_and(|i| i.roles.store))
            .filter(|s| self.cfg.bugs.drop_reported_deleted || !self.gone.contains_key(&(hash, *s)))
            .filter(|s| {
                self.cfg.bugs.drop_reported_deleted || !self.drops_pending.contains_key(&(hash, *s))
            })
            .filter(|s| transferred || self.holds(&hash, *s))
            .collect();
        if !transferred {
            return Answer::Placed(accepted);
        }
        for store in &accepted {
            if !self.holds(&hash, *store) {
                let change = Change::ContentStored {
                    hash,
                    store: *store,
                    meta: *meta,
                };
                self.append(change, out);
            }
        }
        // Uploaded again: copies reported while it was deleted count too.
        if !accepted.is_empty() {
            let orphans: Vec<(NodeId, ContentMeta)> = self
                .orphans
                .range((hash, NodeId(0))..=(hash, NodeId(u64::MAX)))
                .map(|((_, s), (_, _, m))| (*s, *m))
                .collect();
            for (store, meta) in orphans {
                self.take_orphan(hash, store, out);
                self.adopt(hash, store, meta, out);
            }
        }
        Answer::Placed(accepted)
    }

    fn append(&mut self, change: Change, out: &mut Outbox) {
        let now = self.now;
        let membership_before = self.store.state.registry.membership_version();
        match &change {
            Change::Health { node, down } => {
                out.notice(Notice::VerdictPublished {
                    node: *node,
                    down: *down,
                });
                if *down {
                    self.down_since.insert(*node, now);
                } else {
                    self.down_since.remove(node);
                    self.rejoined.remove(node);
                }
            }
            Change::Left { node, left: true } => {
                out.notice(Notice::Left { node: *node });
                if !self.store.state.is_down(*node) {
                    self.down_since.insert(*node, now);
                }
            }
            Change::PurchaseCreated(p) => {
                self.expiries.insert((p.expires, p.token));
            }
            Change::PurchaseRemoved { token } | Change::PurchaseExpired { token } => {
                if let Some(p) = self.store.state.purchases.get(token) {
                    self.expiries.remove(&(p.expires, *token));
                }
            }
            Change::NodeRemoved(id) => {
                self.down_since.remove(id);
                self.rejoined.remove(id);
            }
            _ => {}
        }
        let entry = self.store.log.append(change);
        self.store.state.apply(&entry.change);
        self.tally
            .note_applied(now, &entry.change, &self.store.state);
        // Who may observe changes with membership and with verdicts.
        let observers_change = matches!(entry.change, Change::Health { .. } | Change::Left { .. })
            || self.store.state.registry.membership_version() != membership_before;
        out.persist(Record::Appended(entry));
        if observers_change && self.observers_due.is_none() {
            let earliest_allowed = self
                .last_assignment
                .map_or(now, |t| t + self.cfg.tally.observer_debounce);
            self.observers_due = Some(now.max(earliest_allowed));
        }
    }

    /// Publishes the observer assignments that differ from the current ones.
    fn reassign_observers(&mut self, out: &mut Outbox) {
        self.observers_due = None;
        self.last_assignment = Some(self.now);
        let members: Vec<(NodeId, Zone)> = self
            .store
            .state
            .registry
            .iter()
            .map(|n| (n.id, n.zone.clone()))
            .collect();
        let refs: Vec<(NodeId, &Zone)> = members.iter().map(|(id, z)| (*id, z)).collect();
        let state = &self.store.state;
        let assigned =
            assign_observers_among(&refs, |id| !state.is_down(id), self.cfg.tally.observers);
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
                Change::Observers {
                    subject,
                    observers: vec![],
                },
                out,
            );
        }
        for (subject, observers) in assigned {
            if self.store.state.observers_of(subject) != observers.as_slice() {
                self.append(Change::Observers { subject, observers }, out);
            }
        }
    }

    fn settle(&mut self, out: &mut Outbox) {
        for _ in 0..SETTLE_ROUNDS {
            let changes = self.tally.evaluate(self.now, &self.store.state, self.me);
            if changes.is_empty() {
                break;
            }
            for c in changes {
                self.append(c, out);
            }
        }
    }

    fn prune_purchases(&mut self, out: &mut Outbox) {
        let grace = self.cfg.content.purchase_prune_grace;
        while let Some(&(expires, token)) = self.expiries.first() {
            if expires + grace > self.wall {
                break;
            }
            self.expiries.pop_first();
            if self.store.state.purchases.contains_key(&token) {
                self.append(Change::PurchaseExpired { token }, out);
            }
        }
        // Tombstones are needed only until the purchase would have expired.
        let stale = self
            .store
            .state
            .revoked
            .values()
            .filter(|e| **e <= self.wall)
            .count();
        if stale >= TOMBSTONE_BATCH || (stale > 0 && self.store.state.revoked.len() == stale) {
            let until = self.wall;
            self.append(Change::TombstonesExpired { until }, out);
        }
    }

    fn check_recovery(&mut self, out: &mut Outbox) {
        let Some(r) = &self.recovery else {
            return;
        };
        let state = &self.store.state;
        let restored = &self.store.restored;
        // Someone besides us must have handed back: until then we cannot
        // know who else is out there.
        let mut complete = restored.iter().any(|n| *n != self.me);
        for n in state.registry.iter().filter(|n| !state.is_down(n.id)) {
            complete &= restored.contains(&n.id);
            complete &= !n.roles.store || self.store.synced.contains(&n.id);
        }
        for n in &self.store.expected {
            let gone = !state.registry.contains(*n) && self.now >= r.expect_until;
            complete &= restored.contains(n) || state.is_down(*n) || gone;
        }
        if (complete && self.now >= r.until) || self.now >= r.hard_until {
            self.recovery = None;
            self.store.recovered = true;
            out.persist(Record::Recovered);
            out.notice(Notice::Recovered);
        }
    }

    pub fn on_tick(&mut self, now: Time, wall: WallTime, out: &mut Outbox) {
        self.clock(now, wall);
        if self.observers_due.is_some_and(|t| t <= now) {
            self.reassign_observers(out);
        }
        self.settle(out);
        self.prune_purchases(out);
        let keep = (self.cfg.content.clone_timeout * 6)
            .max(self.cfg.content.orphan_wait() + self.cfg.content.rpc_timeout);
        self.gone.retain(|_, (_, t)| now.since(*t) < keep);
        let wait = self.cfg.content.claim_wait() + self.cfg.content.rpc_timeout;
        self.claims_waiting.retain(|_, t| now.since(*t) < wait);
        self.drop_orphans(out);
        self.rescue_unlisted(out);
        self.resend_drops(out);
        let scan = self.repair.on_tick(
            now,
            &self.cfg.content,
            &self.cfg.bugs,
            &self.store.state,
            &self.down_since,
            &self.drops_pending,
            out,
        );
        for (hash, store) in scan.map(|s| s.drops).unwrap_or_default() {
            self.unlist(hash, store, out);
        }
        self.check_recovery(out);
        self.feed.flush(now, &self.cfg.feed, &self.store.log, out);
        self.snapshots.expire(now, self.snapshot_idle());
    }

    /// How long an encoded snapshot is kept after its last reader asked.
    fn snapshot_idle(&self) -> Duration {
        self.cfg.feed.pull_timeout() * 5
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = earliest(self.observers_due, self.tally.next_deadline());
        next = earliest(next, self.feed.next_deadline());
        next = earliest(next, self.snapshots.next_deadline(self.snapshot_idle()));
        next = earliest(next, self.repair.next_deadline());
        if let Some(&(expires, _)) = self.expiries.first() {
            let due = expires + self.cfg.content.purchase_prune_grace;
            let wait = Duration::from_micros(due.as_micros().saturating_sub(self.wall.as_micros()));
            next = earliest(next, Some(self.now + wait));
        }
        if let Some(r) = &self.recovery {
            // Completion is checked on every message; the timers only cover
            // the minimum window and the hard limit.
            let t = if self.now < r.until {
                r.until
            } else {
                // Completion can also follow nodes going down or expected
                // nodes timing out: look again now and then.
                (self.now + RECOVERY_RECHECK).min(r.hard_until)
            };
            next = earliest(next, Some(t));
        }
        next
    }
}

#[cfg(test)]
/// Hands the authority one ask from node `from` at `now` seconds (its wall
/// clock at `wall`) and returns its answer.
fn answer_to(a: &mut Authority, now: u64, wall: WallTime, from: u8, req: u64, ask: Ask) -> Answer {
    use crate::message::PROTOCOL_VERSION;
    let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
    let env = Envelope {
        version: PROTOCOL_VERSION,
        cluster: ClusterId(1),
        from: NodeId(u64::from(from)),
        from_addr: ([10, 0, 0, from], 7000).into(),
        sent_at: WallTime::default(),
        msg: Message::Ask {
            req,
            ask: Box::new(ask),
        },
    };
    a.handle(Time::from_secs(now), wall, &env, &mut out);
    out.queue
        .into_iter()
        .find_map(|o| match o {
            crate::io::Output::Send { envelope, .. } => match envelope.msg {
                Message::Answer { answer, .. } => Some(*answer),
                _ => None,
            },
            _ => None,
        })
        .expect("an answer")
}

#[cfg(test)]
mod purchase_model {
    //! Purchases at the authority (create, look up, revoke, expire, hand
    //! back after a loss) against a plain map.

    use super::*;
    use crate::hash::HashKind;
    use crate::purchase::Purchase;
    use proptest::prelude::*;
    use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

    const GRACE: u64 = 10;
    /// When the purchases of handed-back revocations would have expired.
    const REVOKED_HANDBACK_EXPIRY: u64 = 100;

    #[derive(Clone, Debug)]
    enum Op {
        Create {
            t: u8,
            h: u8,
            life: u64,
        },
        Remove {
            t: u8,
        },
        Lookup {
            t: u8,
        },
        Advance {
            secs: u64,
        },
        Restore {
            items: Vec<(u8, u8, i64)>,
            revoked: Vec<u8>,
        },
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        wall: u64,
        purchases: BTreeMap<u8, (u8, u64)>,
        revoked: BTreeMap<u8, u64>,
        /// Every purchase ever created: a replica hands back the same
        /// purchase (same hash, same expiry), never a different one.
        ever: BTreeMap<u8, (u8, u64)>,
        /// What the last op should have answered.
        answer: Option<Answer>,
    }

    fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    fn wall(s: u64) -> WallTime {
        WallTime::from_secs(1_000_000 + s)
    }

    fn purchase(t: u8, h: u8, expires: u64) -> Purchase {
        Purchase {
            token: Token(u128::from(t)),
            hash: hash(h),
            ext: crate::content::Ext::lit("bin"),
            expires: wall(expires),
            referrers: vec![],
        }
    }

    struct PurchaseModel;

    impl ReferenceStateMachine for PurchaseModel {
        type State = Model;
        type Transition = Op;

        fn init_state() -> BoxedStrategy<Model> {
            Just(Model::default()).boxed()
        }

        fn transitions(_: &Model) -> BoxedStrategy<Op> {
            prop_oneof![
                4 => (0u8..8, 0u8..3, 1u64..30).prop_map(|(t, h, life)| Op::Create { t, h, life }),
                2 => (0u8..8).prop_map(|t| Op::Remove { t }),
                2 => (0u8..8).prop_map(|t| Op::Lookup { t }),
                2 => (0u64..20).prop_map(|secs| Op::Advance { secs }),
                1 => (
                    proptest::collection::vec((0u8..8, 0u8..3, -20i64..30), 0..4),
                    proptest::collection::vec(0u8..8, 0..2),
                )
                    .prop_map(|(items, revoked)| Op::Restore { items, revoked }),
            ]
            .boxed()
        }

        fn apply(mut m: Model, op: &Op) -> Model {
            m.answer = None;
            match op {
                Op::Create { t, .. } if m.revoked.contains_key(t) => {
                    m.answer = Some(Answer::Refused("purchase was revoked".into()));
                }
                Op::Create { t, h, life } => {
                    m.answer = Some(match m.purchases.get(t) {
                        Some((eh, exp)) if eh == h => {
                            Answer::Purchase(Lookup::Found(purchase(*t, *h, *exp)))
                        }
                        Some(_) => Answer::Refused("token already in use".into()),
                        None => {
                            m.purchases.insert(*t, (*h, m.wall + life));
                            m.ever.insert(*t, (*h, m.wall + life));
                            Answer::Purchase(Lookup::Found(purchase(*t, *h, m.wall + life)))
                        }
                    });
                }
                Op::Remove { t } => {
                    let removed = m.purchases.remove(t);
                    if let Some((_, exp)) = removed {
                        m.revoked.insert(*t, exp);
                    }
                    let was_revoked = removed.is_some() || m.revoked.contains_key(t);
                    m.answer = Some(Answer::Removed(was_revoked));
                }
                Op::Lookup { t } => {
                    m.answer = Some(Answer::Purchase(match m.purchases.get(t) {
                        Some((h, exp)) => Lookup::Found(purchase(*t, *h, *exp)),
                        None => Lookup::NotFound,
                    }));
                }
                Op::Advance { secs } => m.wall += secs,
                Op::Restore { items, revoked } => {
                    // A replica hands back the purchase as it was created.
                    for (t, h, offset) in items {
                        m.ever
                            .entry(*t)
                            .or_insert((*h, (m.wall as i64 + offset).max(0) as u64));
                    }
                    for t in revoked {
                        if let Some((_, exp)) = m.purchases.remove(t) {
                            m.revoked.insert(*t, exp);
                        } else if !m.revoked.contains_key(t) {
                            // Handed back revoked before the purchase: the
                            // tombstone lasts until the purchase would have
                            // expired.
                            let exp = m.ever.get(t).map_or(REVOKED_HANDBACK_EXPIRY, |e| e.1);
                            if exp > m.wall {
                                m.revoked.insert(*t, exp);
                            }
                        }
                    }
                    for (t, _, _) in items {
                        let (h, exp) = m.ever[t];
                        let known = m.purchases.contains_key(t)
                            || m.revoked.contains_key(t)
                            || revoked.contains(t);
                        if !known && exp > m.wall {
                            m.purchases.insert(*t, (h, exp));
                        }
                    }
                    m.answer = Some(Answer::Done);
                }
            }
            let w = m.wall;
            m.purchases.retain(|_, (_, exp)| *exp + GRACE > w);
            m.revoked.retain(|_, exp| *exp > w);
            m
        }
    }

    struct Sut {
        authority: Authority,
    }

    fn ask(a: &mut Authority, now: u64, ask: Ask) -> Answer {
        // Every call is a new request (same id: the remembered answer).
        static REQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let req = REQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer_to(a, now, wall(now), 2, req, ask)
    }

    impl StateMachineTest for PurchaseModel {
        type SystemUnderTest = Sut;
        type Reference = PurchaseModel;

        fn init_test(_: &Model) -> Sut {
            let mut store = AuthorityStore::new(ClusterId(1), LogId(1), 10_000);
            store.recovered = true;
            let content = ContentConfig {
                purchase_prune_grace: Duration::from_secs(GRACE),
                ..ContentConfig::default()
            };
            let cfg = AuthorityConfig {
                tally: TallyConfig::default(),
                feed: FeedConfig::default(),
                content,
                bugs: InjectedBugs::default(),
            };
            Sut {
                authority: Authority::new(NodeId(1), cfg, store, Time::ZERO),
            }
        }

        fn apply(mut sut: Sut, m: &Model, op: Op) -> Sut {
            let a = &mut sut.authority;
            let got = match op {
                Op::Create { t, h, life } => Some(ask(
                    a,
                    m.wall,
                    Ask::PurchaseCreate {
                        purchase: purchase(t, h, 0),
                        life: Duration::from_secs(life),
                    },
                )),
                Op::Remove { t } => Some(ask(
                    a,
                    m.wall,
                    Ask::PurchaseRemove {
                        token: Token(u128::from(t)),
                    },
                )),
                Op::Lookup { t } => Some(ask(
                    a,
                    m.wall,
                    Ask::PurchaseLookup {
                        token: Token(u128::from(t)),
                    },
                )),
                Op::Advance { .. } => None,
                Op::Restore { items, revoked } => {
                    // The model recorded every handed-back purchase in `ever`.
                    let purchases = items
                        .iter()
                        .map(|(t, _, _)| {
                            let (h, exp) = m.ever[t];
                            purchase(*t, h, exp)
                        })
                        .collect();
                    let revoked = revoked
                        .iter()
                        .map(|t| {
                            let exp = m.ever.get(t).map_or(REVOKED_HANDBACK_EXPIRY, |e| e.1);
                            (Token(u128::from(*t)), wall(exp))
                        })
                        .collect();
                    Some(ask(
                        a,
                        m.wall,
                        Ask::RestorePurchases {
                            purchases,
                            revoked,
                            nodes: vec![],
                            done: true,
                        },
                    ))
                }
            };
            let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
            a.on_tick(Time::from_secs(m.wall), wall(m.wall), &mut out);
            // A create answer carries the model's expiry; the wall clock the
            // model used is the one before the op (Advance is separate).
            assert_eq!(got, m.answer.clone());
            sut
        }

        fn check_invariants(sut: &Sut, m: &Model) {
            let got: BTreeMap<u8, (u8, u64)> = sut
                .authority
                .state()
                .purchases
                .values()
                .map(|p| {
                    let h = (0u8..3).find(|h| hash(*h) == p.hash).expect("known hash");
                    (p.token.0 as u8, (h, p.expires.as_secs() - 1_000_000))
                })
                .collect();
            assert_eq!(got, m.purchases);
        }
    }

    prop_state_machine! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn purchases_match_model(sequential 1..50 => PurchaseModel);
    }
}

#[cfg(test)]
mod removal {
    //! Removing a node: refused while it is up or holds any of the last R
    //! copies of something; then nothing of it is left.

    use super::*;
    use crate::hash::HashKind;
    use crate::ids::Roles;
    use crate::message::PROTOCOL_VERSION;

    pub(super) fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    /// The authority (node 1) with stores 2..=5, `down` published down,
    /// and `copies` listed: (content, stores holding it).
    pub(super) fn authority(down: &[u64], copies: &[(u8, &[u64])]) -> Authority {
        let mut store = AuthorityStore::new(ClusterId(1), LogId(1), 10_000);
        store.recovered = true;
        for id in 1..=5u64 {
            let roles = if id == 1 {
                Roles::AUTHORITY
            } else {
                Roles::STORE
            };
            store.state.apply(&Change::NodeUpserted(NodeInfo {
                id: NodeId(id),
                addr: ([10, 0, 0, id as u8], 7000).into(),
                roles,
                zone: Zone::default(),
                weight: 100,
                incarnation: 1,
            }));
        }
        for id in down {
            let node = NodeId(*id);
            store.state.apply(&Change::Health { node, down: true });
        }
        // Every store has listed everything to this log.
        store.synced.extend((2..=5).map(NodeId));
        for (h, stores) in copies {
            for s in *stores {
                store.state.apply(&Change::ContentStored {
                    hash: hash(*h),
                    store: NodeId(*s),
                    meta: ContentMeta {
                        ext: crate::content::Ext::lit("bin"),
                        size: 1,
                    },
                });
            }
        }
        let cfg = AuthorityConfig {
            tally: TallyConfig::default(),
            feed: FeedConfig::default(),
            content: ContentConfig::default(),
            bugs: InjectedBugs::default(),
        };
        assert_eq!(cfg.content.replicas, 2, "the cases below assume R = 2");
        Authority::new(NodeId(1), cfg, store, Time::ZERO)
    }

    /// Seconds after the authority's start when a node down since then
    /// can no longer be a start that came up unseen (vote TTL, the longest
    /// flap hold and the observer debounce: 19.05 s by default).
    const SETTLED: u64 = 20;

    /// Asks the authority to remove `node`, settled.
    fn remove(a: &mut Authority, node: u64, req: u64) -> Answer {
        remove_at(a, SETTLED, node, req)
    }

    fn remove_at(a: &mut Authority, now: u64, node: u64, req: u64) -> Answer {
        let wall = WallTime::from_secs(now);
        answer_to(a, now, wall, 9, req, Ask::RemoveNode { node: NodeId(node) })
    }

    #[test]
    fn a_down_store_holding_an_unlisted_copy_that_is_now_among_the_last_r_is_not_removed() {
        // Store 3's copy of content 0 was unlisted as surplus (a drain made
        // copies elsewhere) and is not dropped yet; one of those failed since.
        let meta = ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        };
        let mut a = authority(&[3, 5], &[(0, &[2, 5])]);
        a.unlisted.insert((hash(0), NodeId(3)), meta);
        let answer = remove(&mut a, 3, 1);
        assert!(refused(&answer, "1 of the copies"), "{answer:?}");
        // With R counting copies elsewhere it goes.
        let mut a = authority(&[3], &[(0, &[2, 5])]);
        a.unlisted.insert((hash(0), NodeId(3)), meta);
        assert_eq!(remove(&mut a, 3, 1), Answer::Done);
    }

    #[test]
    fn a_restarted_authority_does_not_remove_a_node_down_since_before_at_once() {
        let mut a = authority(&[3], &[]);
        let t = &a.cfg.tally;
        assert!(t.vote_ttl + t.flap_hold_max + t.observer_debounce < Duration::from_secs(SETTLED));
        let answer = remove_at(&mut a, 1, 3, 1);
        assert!(refused(&answer, "may have started again"), "{answer:?}");
        assert_eq!(remove_at(&mut a, SETTLED, 3, 2), Answer::Done);
    }

    fn refused(answer: &Answer, why: &str) -> bool {
        matches!(answer, Answer::Refused(w) if w.contains(why))
    }

    #[test]
    fn a_node_that_is_up_unknown_or_the_authority_is_not_removed() {
        let mut a = authority(&[], &[]);
        assert!(refused(&remove(&mut a, 3, 1), "is up"));
        assert!(refused(&remove(&mut a, 7, 2), "not a registered node"));
        assert!(refused(&remove(&mut a, 1, 3), "cannot remove itself"));
        assert!(a.state().registry.contains(NodeId(3)));
    }

    #[test]
    fn a_down_store_holding_one_of_the_last_r_copies_is_not_removed() {
        // Content 0 has two more counting copies; content 1 one more, and
        // a copy on a down store does not count.
        let mut a = authority(&[3, 5], &[(0, &[2, 3, 4]), (1, &[3, 4, 5])]);
        let answer = remove(&mut a, 3, 1);
        assert!(refused(&answer, "1 of the copies"), "{answer:?}");
        assert!(a.state().registry.contains(NodeId(3)));
    }

    #[test]
    fn a_down_store_whose_copies_are_all_elsewhere_is_removed_for_good() {
        let mut a = authority(&[3], &[(0, &[2, 3, 4]), (1, &[2, 4])]);
        assert_eq!(remove(&mut a, 3, 1), Answer::Done);
        let state = a.state();
        assert!(!state.registry.contains(NodeId(3)));
        assert!(!state.is_down(NodeId(3)));
        assert_eq!(state.held_by(NodeId(3)).count(), 0);
        let rec = &state.inventory[&hash(0)];
        assert_eq!(
            rec.stores.iter().copied().collect::<Vec<_>>(),
            [NodeId(2), NodeId(4)]
        );
        // A retry of the same request gets the same answer, and so does a
        // new one (the first answer may have been lost with a restart).
        assert_eq!(remove(&mut a, 3, 1), Answer::Done);
        assert_eq!(remove(&mut a, 3, 2), Answer::Done);
        assert!(!a.store.synced.contains(&NodeId(3)), "its sync forgotten");
    }

    /// Node `id`'s start `incarnation` says it is leaving, at `now` seconds.
    fn leaving(a: &mut Authority, id: u64, incarnation: u64, now: u64) {
        hand(a, id, now, Message::Leaving { incarnation });
    }

    /// Hands the authority `msg` from node `id` at `now` seconds.
    fn hand(a: &mut Authority, id: u64, now: u64, msg: Message) {
        hand_at(a, id, Time::from_secs(now), msg);
    }

    /// Hands the authority `msg` from node `id` at `now`; what came out.
    pub(super) fn hand_at(a: &mut Authority, id: u64, now: Time, msg: Message) -> Outbox {
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        let env = Envelope {
            version: PROTOCOL_VERSION,
            cluster: ClusterId(1),
            from: NodeId(id),
            from_addr: ([10, 0, 0, id as u8], 7000).into(),
            sent_at: WallTime::default(),
            msg,
        };
        let wall = WallTime::from_secs(now.as_micros() / 1_000_000);
        a.handle(now, wall, &env, &mut out);
        out
    }

    #[test]
    fn a_start_that_leaves_is_on_record_once_and_with_its_own_incarnation() {
        // The registered start leaves: only the Left goes in the log.
        let mut a = authority(&[], &[]);
        let head = a.head();
        leaving(&mut a, 3, 1, 1);
        assert_eq!(a.head(), head + 1, "one entry");
        assert!(a.state().has_left(NodeId(3)));
        // A later start, never registered (its join lost), leaves: that
        // start is recorded, then its leaving.
        leaving(&mut a, 4, 2, 1);
        assert_eq!(a.head(), head + 3);
        assert_eq!(a.state().registry.get(NodeId(4)).unwrap().incarnation, 2);
        assert!(a.state().has_left(NodeId(4)));
    }

    #[test]
    fn an_answer_is_remembered_for_its_memory_and_not_a_moment_longer() {
        let mut a = authority(&[], &[]);
        let ask = || Ask::RemoveNode { node: NodeId(3) };
        let first = answer_to(&mut a, 1, WallTime::from_secs(1), 9, 7, ask());
        assert!(refused(&first, "is up"), "{first:?}");
        a.store.state.apply(&Change::Health {
            node: NodeId(3),
            down: true,
        });
        let memory = ANSWER_MEMORY.as_secs();
        let again = answer_to(&mut a, memory, WallTime::from_secs(memory), 9, 7, ask());
        assert_eq!(again, first, "a retry within the memory: the same answer");
        let after = 1 + memory;
        let anew = answer_to(&mut a, after, WallTime::from_secs(after), 9, 7, ask());
        assert_eq!(anew, Answer::Done, "asked anew once the memory is over");
    }

    /// Node `id`'s start `incarnation` joins at `now` seconds.
    fn join(a: &mut Authority, id: u64, incarnation: u64, now: u64) {
        let info = Box::new(NodeInfo {
            id: NodeId(id),
            addr: ([10, 0, 0, id as u8], 7000).into(),
            roles: Roles::STORE,
            zone: Zone::default(),
            weight: 100,
            incarnation,
        });
        hand(a, id, now, Message::Join { info });
    }

    #[test]
    fn a_join_from_the_removed_start_is_stale_and_a_later_start_is_a_new_member() {
        let mut a = authority(&[3], &[]);
        assert_eq!(remove(&mut a, 3, 1), Answer::Done);
        join(&mut a, 3, 1, SETTLED + 1);
        assert!(!a.state().registry.contains(NodeId(3)), "a delayed join");
        join(&mut a, 3, 2, SETTLED + 2);
        let info = a.state().registry.get(NodeId(3)).expect("a new start");
        assert_eq!(info.incarnation, 2);
        assert!(!a.state().removed.contains_key(&NodeId(3)));
    }

    #[test]
    fn a_store_that_started_again_since_its_down_verdict_is_not_removed_yet() {
        let mut a = authority(&[3], &[]);
        join(&mut a, 3, 2, SETTLED);
        assert!(
            a.state().is_down(NodeId(3)),
            "still down until the votes say"
        );
        let answer = remove(&mut a, 3, 1);
        assert!(refused(&answer, "may have started again"), "{answer:?}");
        // Long after, still down without a verdict: it is not running.
        let later = 2 * SETTLED;
        let answer = answer_to(
            &mut a,
            later,
            WallTime::from_secs(later),
            9,
            2,
            Ask::RemoveNode { node: NodeId(3) },
        );
        assert_eq!(answer, Answer::Done);
    }

    #[test]
    fn a_store_that_has_not_listed_everything_or_a_recovering_authority_removes_nothing() {
        let mut a = authority(&[3], &[]);
        a.store.synced.remove(&NodeId(3));
        let answer = remove(&mut a, 3, 1);
        assert!(
            refused(&answer, "has not listed all its copies"),
            "{answer:?}"
        );
        let mut a = authority(&[3], &[]);
        a.recovery = Some(Recovery {
            until: Time::from_secs(100),
            expect_until: Time::from_secs(100),
            hard_until: Time::from_secs(100),
        });
        let answer = remove(&mut a, 3, 1);
        assert!(refused(&answer, "rebuilding"), "{answer:?}");
        assert!(a.state().registry.contains(NodeId(3)));
    }

    #[test]
    fn a_removed_store_takes_its_orphans_and_unanswered_drop_orders_with_it() {
        let mut a = authority(&[3], &[]);
        let meta = ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        };
        for h in 0..4 {
            let deleted = Change::ContentDeleted { hash: hash(h) };
            a.store.state.apply(&deleted);
        }
        let fence = VoteSeq::default();
        // Each store's own content: what goes must be found by store.
        for (node, dropped, orphan) in [(3, 0, 1), (4, 2, 3)] {
            let n = NodeId(node);
            let later = Time::from_secs(100);
            a.drops_pending.insert((hash(dropped), n), (fence, later));
            a.store.drops_pending.insert((hash(dropped), n), fence);
            let orphaned = (fence, Time::ZERO, meta);
            a.orphans.insert((hash(orphan), n), orphaned);
            a.store.orphans.insert((hash(orphan), n), meta);
        }
        assert_eq!(remove(&mut a, 3, 1), Answer::Done);
        let nodes = |keys: Vec<NodeId>| keys.into_iter().map(|n| n.0).collect::<Vec<_>>();
        assert_eq!(nodes(a.drops_pending.keys().map(|k| k.1).collect()), [4]);
        assert_eq!(
            nodes(a.store.drops_pending.keys().map(|k| k.1).collect()),
            [4]
        );
        assert_eq!(nodes(a.orphans.keys().map(|k| k.1).collect()), [4]);
        assert_eq!(nodes(a.store.orphans.keys().map(|k| k.1).collect()), [4]);
    }
}

#[cfg(test)]
mod content_flow {
    //! Copies at the authority: store reports, deletes and re-uploads,
    //! drop orders and their answers, placement claims, drains, lookups
    //! while rebuilding.

    use super::removal::{authority, hand_at, hash};
    use super::*;
    use crate::io::Output;
    use std::net::SocketAddr;

    fn meta() -> ContentMeta {
        ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        }
    }

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn seq(counter: u64) -> VoteSeq {
        VoteSeq {
            incarnation: 1,
            counter,
        }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Store `id` reports batch `counter` at `now` ms.
    fn report(
        a: &mut Authority,
        id: u64,
        now: u64,
        counter: u64,
        adds: &[u8],
        removes: &[u8],
        sync: Option<LogId>,
    ) -> Outbox {
        let batch = InventoryBatch {
            seq: seq(counter),
            sync,
            adds: adds.iter().map(|h| (hash(*h), meta())).collect(),
            removes: removes.iter().map(|h| hash(*h)).collect(),
        };
        hand_at(a, id, at(now), Message::InventoryReport(Box::new(batch)))
    }

    /// Node `from` asks at `now` ms: the answer, if any, and what came out.
    fn ask_at(
        a: &mut Authority,
        now: u64,
        from: u64,
        req: u64,
        ask: Ask,
    ) -> (Option<Answer>, Outbox) {
        let msg = Message::Ask {
            req,
            ask: Box::new(ask),
        };
        let out = hand_at(a, from, at(now), msg);
        let answer = sent(&out).into_iter().find_map(|(_, m)| match m {
            Message::Answer { answer, .. } => Some(*answer),
            _ => None,
        });
        (answer, out)
    }

    fn tick(a: &mut Authority, now: u64) -> Outbox {
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        a.on_tick(at(now), WallTime::from_secs(now / 1000), &mut out);
        out
    }

    fn node_at(addr: &SocketAddr) -> u64 {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => u64::from(ip.octets()[3]),
            std::net::IpAddr::V6(_) => unreachable!("the tests use IPv4"),
        }
    }

    /// Messages sent, with the node they went to (the authority's own
    /// loop included).
    fn sent(out: &Outbox) -> Vec<(u64, Message)> {
        let queued = out.queue.iter().filter_map(|o| match o {
            Output::Send { to, envelope } => Some((node_at(to), envelope.msg.clone())),
            _ => None,
        });
        let looped = out.loopback.iter().map(|e| (1, e.msg.clone()));
        queued.chain(looped).collect()
    }

    /// The stores told to drop their copy of content `h`.
    fn drops(out: &Outbox, h: u8) -> Vec<u64> {
        sent(out)
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::DropCopy(d) if d.hash == hash(h) => Some(to),
                _ => None,
            })
            .collect()
    }

    fn acked(out: &Outbox, counter: u64) -> bool {
        sent(out)
            .iter()
            .any(|(_, m)| *m == Message::InventoryAck { seq: seq(counter) })
    }

    fn holders(a: &Authority, h: u8) -> Vec<u64> {
        a.state()
            .inventory
            .get(&hash(h))
            .map(|r| r.stores.iter().map(|s| s.0).collect())
            .unwrap_or_default()
    }

    fn placed(h: u8, stores: &[u64], transferred: bool) -> Ask {
        Ask::ContentPlaced {
            hash: hash(h),
            meta: meta(),
            stores: stores.iter().copied().map(NodeId).collect(),
            transferred,
        }
    }

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn delete(h: u8) -> Ask {
        Ask::ContentDelete { hash: hash(h) }
    }

    fn has(out: &Outbox, record: &Record) -> bool {
        out.queue.contains(&Output::Persist(record.clone()))
    }

    fn recovering(a: &mut Authority, until: u64, expect_until: u64, hard_until: u64) {
        a.store.recovered = false;
        a.recovery = Some(Recovery {
            until: at(until),
            expect_until: at(expect_until),
            hard_until: at(hard_until),
        });
    }

    #[test]
    fn a_report_lists_new_copies_and_drops_removed_ones_in_batch_order() {
        let mut a = authority(&[], &[]);
        let out = report(&mut a, 2, 0, 1, &[0, 1], &[], None);
        assert_eq!(holders(&a, 0), [2]);
        assert_eq!(holders(&a, 1), [2]);
        assert!(acked(&out, 1));
        let reported = Record::Reported {
            store: NodeId(2),
            seq: seq(1),
        };
        assert!(has(&out, &reported));
        // A duplicate batch is acknowledged and changes nothing.
        let head = a.head();
        let out = report(&mut a, 2, 1, 1, &[], &[0], None);
        assert!(acked(&out, 1));
        assert_eq!(a.head(), head);
        assert_eq!(holders(&a, 0), [2]);
        // A later one removes.
        report(&mut a, 2, 2, 2, &[], &[0], None);
        assert!(holders(&a, 0).is_empty());
        assert_eq!(holders(&a, 1), [2]);
        // A copy listed already is not recorded again.
        let head = a.head();
        report(&mut a, 2, 3, 3, &[1], &[], None);
        assert_eq!(a.head(), head);
        // A removal of a copy not listed records nothing either.
        report(&mut a, 3, 4, 1, &[], &[1], None);
        assert_eq!(a.head(), head);
        assert_eq!(holders(&a, 1), [2]);
    }

    #[test]
    fn a_report_from_a_node_that_is_not_a_store_is_not_acknowledged() {
        let mut a = authority(&[], &[]);
        // Node 1 is registered as the authority only; node 9 is unknown.
        for id in [1, 9] {
            let out = report(&mut a, id, 0, 1, &[0], &[], None);
            assert!(!acked(&out, 1), "node {id}");
        }
        assert!(holders(&a, 0).is_empty());
    }

    #[test]
    fn a_store_is_synced_by_a_full_listing_against_this_log_only() {
        let mut a = authority(&[], &[]);
        a.store.synced.clear();
        report(&mut a, 2, 0, 1, &[], &[], Some(LogId(2)));
        report(&mut a, 2, 0, 2, &[], &[], None);
        assert!(!a.synced_stores().contains(&NodeId(2)));
        let out = report(&mut a, 2, 1, 3, &[], &[], Some(LogId(1)));
        assert!(a.synced_stores().contains(&NodeId(2)));
        assert!(has(&out, &Record::Synced(NodeId(2))));
        let out = report(&mut a, 2, 2, 4, &[], &[], Some(LogId(1)));
        assert!(!has(&out, &Record::Synced(NodeId(2))), "recorded once");
    }

    #[test]
    fn a_delete_tells_every_holder_to_drop_and_is_recorded_once() {
        let mut a = authority(&[], &[(0, &[2, 3]), (1, &[2])]);
        let head = a.head();
        let (answer, out) = ask_at(&mut a, 0, 9, 1, delete(0));
        assert_eq!(answer, Some(Answer::Done));
        assert_eq!(drops(&out, 0), [2, 3]);
        assert!(drops(&out, 1).is_empty());
        assert_eq!(a.head(), head + 1);
        assert!(a.state().deleted.contains(&hash(0)));
        assert_eq!(holders(&a, 1), [2], "other content stays");
        let (answer, out) = ask_at(&mut a, 1, 9, 2, delete(0));
        assert_eq!(answer, Some(Answer::Done));
        assert_eq!(a.head(), head + 1, "deleted once");
        assert!(drops(&out, 0).is_empty());
        let lookup = Ask::ContentLookup { hash: hash(0) };
        let (answer, _) = ask_at(&mut a, 1, 9, 3, lookup);
        assert_eq!(answer, Some(Answer::Content(Lookup::NotFound)));
    }

    #[test]
    fn a_copy_reported_after_a_delete_is_dropped_once_no_placement_claimed_it() {
        let mut a = authority(&[], &[]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        let out = report(&mut a, 2, 0, 1, &[0], &[], None);
        assert!(drops(&out, 0).is_empty(), "a re-upload may claim it");
        assert!(holders(&a, 0).is_empty(), "not listed while deleted");
        let wait = ms(a.cfg.content.orphan_wait());
        assert!(drops(&tick(&mut a, wait - 1), 0).is_empty());
        assert_eq!(drops(&tick(&mut a, wait), 0), [2]);
        assert!(drops(&tick(&mut a, wait + 1), 0).is_empty(), "once");
        // A second delete finds nothing more to drop on 2.
        let (_, out) = ask_at(&mut a, wait + 2, 9, 2, delete(0));
        assert!(drops(&out, 0).is_empty());
    }

    #[test]
    fn a_delete_drops_the_copies_reported_since_an_earlier_delete() {
        let mut a = authority(&[], &[]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        report(&mut a, 3, 0, 1, &[0], &[], None);
        let (_, out) = ask_at(&mut a, 10, 9, 2, delete(0));
        assert_eq!(drops(&out, 0), [3]);
        assert!(a.orphans.is_empty() && a.store.orphans.is_empty(), "taken");
    }

    #[test]
    fn a_reupload_counts_the_copies_reported_while_it_was_deleted() {
        let mut a = authority(&[], &[]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        report(&mut a, 2, 0, 1, &[0], &[], None);
        report(&mut a, 3, 0, 1, &[0], &[], None);
        let head = a.head();
        let (answer, _) = ask_at(&mut a, 100, 9, 2, placed(0, &[2], true));
        assert_eq!(answer, Some(Answer::Placed(ids(&[2]))));
        assert_eq!(holders(&a, 0), [2, 3]);
        assert_eq!(a.head(), head + 2, "each copy recorded once");
        assert!(!a.state().deleted.contains(&hash(0)));
        let wait = ms(a.cfg.content.orphan_wait());
        let out = tick(&mut a, wait + 1000);
        assert!(drops(&out, 0).is_empty(), "nothing dropped later");
        assert_eq!(holders(&a, 0), [2, 3]);
    }

    #[test]
    fn a_copy_reported_while_deleted_is_adopted_once_the_content_is_stored_again() {
        // The placement lists another store; the orphan is adopted at the
        // next tick, not dropped.
        let mut a = authority(&[], &[]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        report(&mut a, 3, 0, 1, &[0], &[], None);
        a.store.state.apply(&Change::ContentStored {
            hash: hash(0),
            store: NodeId(2),
            meta: meta(),
        });
        let out = tick(&mut a, 10);
        assert!(drops(&out, 0).is_empty());
        assert_eq!(holders(&a, 0), [2, 3]);
    }

    #[test]
    fn a_claim_on_a_store_told_to_drop_waits_for_its_report_of_the_new_copy() {
        let mut a = authority(&[], &[(0, &[2, 3])]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        // Uploaded again to 2 and 3; the claim comes before their reports.
        let (answer, _) = ask_at(&mut a, 100, 9, 5, placed(0, &[2, 3], true));
        assert_eq!(answer, None, "waits");
        let out = report(&mut a, 2, 200, 1, &[0], &[], None);
        let answered = Record::DropPending {
            hash: hash(0),
            store: NodeId(2),
            upto: None,
        };
        assert!(has(&out, &answered), "the new copy answers the old order");
        report(&mut a, 3, 200, 1, &[0], &[], None);
        let (answer, _) = ask_at(&mut a, 300, 9, 5, placed(0, &[2, 3], true));
        assert_eq!(answer, Some(Answer::Placed(ids(&[2, 3]))));
        assert_eq!(holders(&a, 0), [2, 3]);
        // The order answered is not sent again.
        assert!(drops(&tick(&mut a, 5000), 0).is_empty());
    }

    #[test]
    fn a_claim_waits_for_marked_stores_at_most_claim_wait_then_leaves_them_out() {
        let mut a = authority(&[], &[(0, &[2, 3])]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        let wait = ms(a.cfg.content.claim_wait());
        let claim = || placed(0, &[2, 3], true);
        assert_eq!(ask_at(&mut a, 100, 9, 5, claim()).0, None);
        assert_eq!(ask_at(&mut a, 99 + wait, 9, 5, claim()).0, None);
        let (answer, _) = ask_at(&mut a, 100 + wait, 9, 5, claim());
        assert_eq!(answer, Some(Answer::Placed(vec![])));
        assert!(holders(&a, 0).is_empty());
    }

    #[test]
    fn a_removal_mark_lasts_as_long_as_a_clone_or_orphan_could_still_arrive() {
        let mut a = authority(&[], &[(0, &[2])]);
        report(&mut a, 2, 0, 1, &[], &[0], None);
        let c = &a.cfg.content;
        let keep = ms((c.clone_timeout * 6).max(c.orphan_wait() + c.rpc_timeout));
        tick(&mut a, keep - 1);
        let (answer, _) = ask_at(&mut a, keep - 1, 9, 1, placed(0, &[2, 3], true));
        assert_eq!(answer, None, "2 is marked: the claim waits");
        tick(&mut a, keep);
        let (answer, _) = ask_at(&mut a, keep, 9, 2, placed(0, &[2, 3], true));
        assert_eq!(
            answer,
            Some(Answer::Placed(ids(&[2, 3]))),
            "the mark is gone"
        );
    }

    #[test]
    fn a_waiting_claim_is_forgotten_once_its_prism_has_given_up() {
        let mut a = authority(&[], &[(0, &[2, 3])]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        let claim = || placed(0, &[2, 3], true);
        assert_eq!(ask_at(&mut a, 0, 9, 5, claim()).0, None);
        let c = &a.cfg.content;
        let forget = ms(c.claim_wait() + c.rpc_timeout);
        tick(&mut a, forget - 1);
        assert!(a.claims_waiting.contains_key(&(NodeId(9), 5)));
        tick(&mut a, forget);
        assert!(a.claims_waiting.is_empty());
        // The same request again waits afresh.
        assert_eq!(ask_at(&mut a, forget, 9, 5, claim()).0, None);
    }

    #[test]
    fn a_claim_with_a_quorum_of_unmarked_copies_is_answered_at_once() {
        let mut a = authority(&[], &[(0, &[2])]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        let (answer, _) = ask_at(&mut a, 100, 9, 2, placed(0, &[2, 3, 4], true));
        assert_eq!(answer, Some(Answer::Placed(ids(&[3, 4]))));
        assert_eq!(holders(&a, 0), [3, 4]);
        let (answer, _) = ask_at(&mut a, 100, 9, 3, placed(0, &[2, 5], true));
        assert_eq!(answer, None, "one unmarked copy is short of the quorum");
    }

    #[test]
    fn a_claim_read_from_a_replica_counts_only_where_the_inventory_agrees() {
        let mut a = authority(&[], &[(0, &[2])]);
        let head = a.head();
        let (answer, _) = ask_at(&mut a, 0, 9, 1, placed(0, &[2, 3], false));
        assert_eq!(answer, Some(Answer::Placed(ids(&[2]))));
        assert_eq!(a.head(), head, "records nothing");
        // A transferred claim counts stores only (node 1 is not one).
        let (answer, _) = ask_at(&mut a, 0, 9, 2, placed(1, &[1, 3], true));
        assert_eq!(answer, Some(Answer::Placed(ids(&[3]))));
        assert_eq!(holders(&a, 1), [3]);
        // A retry of a changing ask gets the first answer.
        let (answer, _) = ask_at(&mut a, 1, 9, 2, placed(1, &[4], true));
        assert_eq!(answer, Some(Answer::Placed(ids(&[3]))));
        assert_eq!(holders(&a, 1), [3]);
    }

    #[test]
    fn an_unanswered_drop_order_is_resent_while_the_store_is_up_until_answered() {
        let mut a = authority(&[], &[(0, &[2, 3])]);
        ask_at(&mut a, 0, 9, 1, delete(0));
        let resend = ms(DROP_RESEND);
        assert!(drops(&tick(&mut a, resend - 1), 0).is_empty());
        assert_eq!(drops(&tick(&mut a, resend), 0), [2, 3]);
        assert!(drops(&tick(&mut a, resend + 1), 0).is_empty());
        // Store 2 reports the removal; store 3 goes down.
        let out = report(&mut a, 2, resend + 2, 1, &[], &[0], None);
        let answered = Record::DropPending {
            hash: hash(0),
            store: NodeId(2),
            upto: None,
        };
        assert!(has(&out, &answered));
        let down = |down| Change::Health {
            node: NodeId(3),
            down,
        };
        a.store.state.apply(&down(true));
        assert!(drops(&tick(&mut a, 2 * resend), 0).is_empty());
        // Store 3 is back: resent at once.
        a.store.state.apply(&down(false));
        assert_eq!(drops(&tick(&mut a, 2 * resend + 1), 0), [3]);
    }

    #[test]
    fn an_unlisted_surplus_copy_is_dropped_when_due_while_r_copies_count() {
        let mut a = authority(&[], &[(0, &[2, 3, 4])]);
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        a.unlist(hash(0), NodeId(4), &mut out);
        assert_eq!(holders(&a, 0), [2, 3], "unlisted first");
        assert!(drops(&out, 0).is_empty());
        let wait = ms(a.cfg.content.unlist_wait());
        assert!(drops(&tick(&mut a, wait - 1), 0).is_empty());
        assert_eq!(drops(&tick(&mut a, wait), 0), [4]);
        assert_eq!(holders(&a, 0), [2, 3]);
    }

    #[test]
    fn an_unlisted_surplus_copy_is_kept_if_the_others_no_longer_make_r() {
        let mut a = authority(&[], &[(0, &[2, 3, 4])]);
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        a.unlist(hash(0), NodeId(4), &mut out);
        // Before its drop is due, a holder fails.
        a.store.state.apply(&Change::Health {
            node: NodeId(3),
            down: true,
        });
        let wait = ms(a.cfg.content.unlist_wait());
        let out = tick(&mut a, wait);
        assert!(drops(&out, 0).is_empty());
        assert!(holders(&a, 0).contains(&4), "listed again");
        assert!(drops(&tick(&mut a, 10 * wait), 0).is_empty(), "for good");
    }

    #[test]
    fn an_unlisted_copy_on_a_down_store_is_not_listed_again() {
        let mut a = authority(&[], &[(0, &[2, 3, 4])]);
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        a.unlist(hash(0), NodeId(4), &mut out);
        for node in [3, 4] {
            a.store.state.apply(&Change::Health {
                node: NodeId(node),
                down: true,
            });
        }
        let wait = ms(a.cfg.content.unlist_wait());
        tick(&mut a, wait);
        assert_eq!(holders(&a, 0), [2, 3]);
    }

    #[test]
    fn drain_is_for_stores_and_recorded_only_when_it_changes() {
        let mut a = authority(&[], &[]);
        let drain = |node, draining| Ask::Drain {
            node: NodeId(node),
            draining,
        };
        for (req, node) in [(1, 1), (2, 9)] {
            let (answer, _) = ask_at(&mut a, 0, 9, req, drain(node, true));
            assert!(
                matches!(answer, Some(Answer::Refused(ref w)) if w.contains("not a registered store")),
                "{answer:?}"
            );
        }
        let head = a.head();
        assert_eq!(
            ask_at(&mut a, 0, 9, 3, drain(2, true)).0,
            Some(Answer::Done)
        );
        assert!(a.state().draining.contains(&NodeId(2)));
        assert_eq!(a.head(), head + 1);
        assert_eq!(
            ask_at(&mut a, 0, 9, 4, drain(2, true)).0,
            Some(Answer::Done)
        );
        assert_eq!(a.head(), head + 1, "no change, no entry");
        assert_eq!(
            ask_at(&mut a, 0, 9, 5, drain(2, false)).0,
            Some(Answer::Done)
        );
        assert!(!a.state().draining.contains(&NodeId(2)));
        assert_eq!(a.head(), head + 2);
    }

    #[test]
    fn lookups_while_rebuilding_answer_unavailable_for_anything_missing() {
        let mut a = authority(&[], &[(0, &[2])]);
        let exists = |hs: &[u8]| Ask::ContentExists {
            hashes: hs.iter().map(|h| hash(*h)).collect(),
        };
        let lookup = |h| Ask::ContentLookup { hash: hash(h) };
        let answer = ask_at(&mut a, 0, 9, 1, exists(&[0, 1])).0;
        assert_eq!(answer, Some(Answer::Exists(vec![true, false])));
        recovering(&mut a, 100_000, 100_000, 100_000);
        let answer = ask_at(&mut a, 0, 9, 2, exists(&[0])).0;
        assert_eq!(answer, Some(Answer::Exists(vec![true])));
        let answer = ask_at(&mut a, 0, 9, 3, exists(&[0, 1])).0;
        assert_eq!(answer, Some(Answer::Unavailable));
        let answer = ask_at(&mut a, 0, 9, 4, lookup(1)).0;
        assert_eq!(answer, Some(Answer::Content(Lookup::Unavailable)));
        let answer = ask_at(&mut a, 0, 9, 5, lookup(0)).0;
        assert!(matches!(answer, Some(Answer::Content(Lookup::Found(_)))));
    }

    fn info(id: u64, incarnation: u64) -> Box<NodeInfo> {
        Box::new(NodeInfo {
            id: NodeId(id),
            addr: ([10, 0, 0, id as u8], 7000).into(),
            roles: crate::ids::Roles::STORE,
            zone: Zone::default(),
            weight: 100,
            incarnation,
        })
    }

    fn join_acks(out: &Outbox) -> Vec<Message> {
        sent(out)
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| matches!(m, Message::JoinAck { .. }))
            .collect()
    }

    #[test]
    fn a_join_registers_only_its_sender_and_is_acknowledged_with_the_head() {
        let mut a = authority(&[], &[]);
        let out = hand_at(&mut a, 9, at(0), Message::Join { info: info(9, 1) });
        assert!(a.state().registry.contains(NodeId(9)));
        let ack = Message::JoinAck {
            node: NodeId(9),
            log: LogId(1),
            seq: a.head(),
        };
        assert_eq!(join_acks(&out), std::slice::from_ref(&ack));
        // The same start again: acknowledged, nothing recorded.
        let head = a.head();
        let out = hand_at(&mut a, 9, at(1), Message::Join { info: info(9, 1) });
        assert_eq!(a.head(), head);
        assert_eq!(join_acks(&out), [ack]);
        // Node 9 may not register node 8.
        let out = hand_at(&mut a, 9, at(2), Message::Join { info: info(8, 1) });
        assert!(!a.state().registry.contains(NodeId(8)));
        assert!(join_acks(&out).is_empty());
    }

    #[test]
    fn a_node_that_left_comes_back_only_with_a_later_start() {
        let mut a = authority(&[], &[]);
        hand_at(&mut a, 3, at(0), Message::Leaving { incarnation: 1 });
        assert!(a.state().has_left(NodeId(3)));
        hand_at(&mut a, 3, at(1), Message::Join { info: info(3, 1) });
        assert!(
            a.state().has_left(NodeId(3)),
            "a delayed join of that start"
        );
        hand_at(&mut a, 3, at(2), Message::Join { info: info(3, 2) });
        assert!(!a.state().has_left(NodeId(3)));
        assert_eq!(a.state().registry.get(NodeId(3)).unwrap().incarnation, 2);
        // Leaving from an earlier start, or from the authority itself, is
        // not this start leaving.
        hand_at(&mut a, 3, at(3), Message::Leaving { incarnation: 1 });
        hand_at(&mut a, 1, at(3), Message::Leaving { incarnation: 1 });
        assert!(!a.state().has_left(NodeId(3)));
        assert!(!a.state().has_left(NodeId(1)));
    }

    fn votes_acks(out: &Outbox) -> Vec<VoteSeq> {
        sent(out)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::VotesAck { seq } => Some(seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn votes_from_an_unknown_node_are_ignored_and_an_older_set_is_answered_with_the_held_one() {
        let mut a = authority(&[], &[]);
        let votes = |counter| Message::Votes {
            seq: seq(counter),
            down: vec![],
        };
        assert!(votes_acks(&hand_at(&mut a, 9, at(0), votes(1))).is_empty());
        assert_eq!(votes_acks(&hand_at(&mut a, 2, at(0), votes(5))), [seq(5)]);
        assert_eq!(votes_acks(&hand_at(&mut a, 2, at(1), votes(3))), [seq(5)]);
        assert_eq!(votes_acks(&hand_at(&mut a, 2, at(2), votes(6))), [seq(6)]);
    }

    fn revoked(a: &mut Authority, token: u128, expires: u64) {
        a.store.state.apply(&Change::Revoked {
            token: Token(token),
            expires: WallTime::from_secs(expires),
        });
    }

    #[test]
    fn expired_tombstones_go_in_a_full_batch_or_once_only_expired_ones_are_left() {
        let mut a = authority(&[], &[]);
        revoked(&mut a, 1, 10);
        revoked(&mut a, 2, 100);
        tick(&mut a, 0);
        let head = a.head();
        tick(&mut a, 20_000);
        assert_eq!(a.state().revoked.len(), 2, "one expired of two: kept");
        assert_eq!(a.head(), head);
        tick(&mut a, 100_000);
        assert!(a.state().revoked.is_empty(), "all expired");
        assert_eq!(a.head(), head + 1, "one entry");
        // A full batch goes even while a live one is left.
        for t in 0..TOMBSTONE_BATCH as u128 {
            revoked(&mut a, 10 + t, 150);
        }
        revoked(&mut a, 1, 1_000);
        tick(&mut a, 149_000);
        assert_eq!(a.state().revoked.len(), TOMBSTONE_BATCH + 1);
        tick(&mut a, 150_000);
        assert_eq!(a.state().revoked.len(), 1);
        // One fewer than a batch waits.
        for t in 1..TOMBSTONE_BATCH as u128 {
            revoked(&mut a, 1000 + t, 200);
        }
        tick(&mut a, 200_000);
        assert_eq!(a.state().revoked.len(), TOMBSTONE_BATCH);
    }

    fn hand_back(a: &mut Authority, id: u64, now: u64, req: u64, nodes: &[u64]) -> Option<Answer> {
        let ask = Ask::RestorePurchases {
            purchases: vec![],
            revoked: vec![],
            nodes: ids(nodes),
            done: true,
        };
        ask_at(a, now, id, req, ask).0
    }

    fn notices_recovered(out: &Outbox) -> bool {
        out.queue
            .iter()
            .any(|o| *o == Output::Notice(Notice::Recovered))
    }

    #[test]
    fn recovery_ends_once_every_live_node_handed_back_and_every_store_listed() {
        let mut a = authority(&[], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        a.store.synced.clear();
        hand_back(&mut a, 1, 0, 1, &[]);
        for id in 2..=4 {
            assert_eq!(hand_back(&mut a, id, 0, 1, &[]), Some(Answer::Done));
            report(&mut a, id, 0, 1, &[], &[], Some(LogId(1)));
        }
        assert!(!notices_recovered(&tick(&mut a, 5_000)));
        assert!(a.is_recovering(), "5 has not handed back");
        hand_back(&mut a, 5, 5_001, 1, &[]);
        assert!(a.is_recovering(), "5 has not listed");
        let out = report(&mut a, 5, 5_002, 1, &[], &[], Some(LogId(1)));
        assert!(!a.is_recovering());
        assert!(has(&out, &Record::Recovered));
        assert!(notices_recovered(&out));
    }

    #[test]
    fn recovery_lasts_its_window_even_when_everyone_is_back_at_once() {
        let mut a = authority(&[], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        for id in 1..=5 {
            hand_back(&mut a, id, 0, 1, &[]);
        }
        tick(&mut a, 4_999);
        assert!(a.is_recovering());
        assert_eq!(a.next_deadline(), Some(at(5_000)));
        assert!(notices_recovered(&tick(&mut a, 5_000)));
    }

    #[test]
    fn recovery_does_not_wait_for_down_nodes_and_ends_at_the_hard_limit() {
        let mut a = authority(&[4, 5], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        hand_back(&mut a, 1, 0, 1, &[]);
        hand_back(&mut a, 2, 0, 1, &[]);
        tick(&mut a, 5_000);
        assert!(a.is_recovering(), "3 is up and has not handed back");
        hand_back(&mut a, 3, 5_001, 1, &[]);
        assert!(!a.is_recovering(), "4 and 5 are down");
        // Nobody hands back: the hard limit ends it.
        let mut a = authority(&[], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        tick(&mut a, 59_999);
        assert!(a.is_recovering());
        assert_eq!(a.next_deadline(), Some(at(60_000)), "the hard limit");
        tick(&mut a, 60_000);
        assert!(!a.is_recovering());
    }

    #[test]
    fn a_hand_back_that_is_not_done_does_not_count_yet() {
        let mut a = authority(&[3, 4, 5], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        hand_back(&mut a, 1, 0, 1, &[]);
        let partial = Ask::RestorePurchases {
            purchases: vec![],
            revoked: vec![],
            nodes: vec![],
            done: false,
        };
        assert_eq!(ask_at(&mut a, 6_000, 2, 2, partial).0, Some(Answer::Done));
        assert!(a.is_recovering(), "2 has more to hand back");
        hand_back(&mut a, 2, 6_001, 3, &[]);
        assert!(!a.is_recovering());
    }

    #[test]
    fn an_expected_node_that_registered_again_is_waited_for() {
        let mut a = authority(&[], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        // Node 1's hand-back names node 5, which is registered and up.
        hand_back(&mut a, 1, 0, 1, &[5]);
        for id in 2..=4 {
            hand_back(&mut a, id, 0, 1, &[]);
        }
        tick(&mut a, 30_000);
        assert!(a.is_recovering(), "5 is registered: never presumed gone");
        hand_back(&mut a, 5, 30_001, 1, &[]);
        assert!(!a.is_recovering());
    }

    #[test]
    fn recovery_needs_someone_besides_the_authority_to_hand_back() {
        let mut a = authority(&[2, 3, 4, 5], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        hand_back(&mut a, 1, 0, 1, &[]);
        tick(&mut a, 10_000);
        assert!(a.is_recovering());
        hand_back(&mut a, 2, 10_001, 1, &[]);
        assert!(!a.is_recovering());
    }

    #[test]
    fn recovery_waits_for_an_expected_node_until_it_is_presumed_gone() {
        let mut a = authority(&[], &[]);
        recovering(&mut a, 5_000, 20_000, 60_000);
        for id in 1..=5 {
            // Node 2 remembers node 8, which has not registered again.
            let out_nodes: &[u64] = if id == 2 { &[8, 1] } else { &[] };
            hand_back(&mut a, id, 0, 1, out_nodes);
        }
        assert!(a.store.expected.contains(&NodeId(8)));
        assert!(!a.store.expected.contains(&NodeId(1)), "not ourselves");
        tick(&mut a, 19_999);
        assert!(a.is_recovering());
        tick(&mut a, 20_000);
        assert!(!a.is_recovering());
    }

    #[test]
    fn forgetting_a_node_keeps_what_is_held_for_the_others() {
        let mut a = authority(&[], &[]);
        assert_eq!(a.cluster(), ClusterId(1));
        let st = &mut a.store;
        for node in [3, 4] {
            let n = NodeId(node);
            st.orphans.insert((hash(0), n), meta());
            st.drops_pending.insert((hash(0), n), seq(1));
            st.restored.insert(n);
            st.expected.insert(n);
        }
        st.reports.insert(NodeId(3), seq(7));
        st.forget(NodeId(3));
        assert_eq!(st.reports.get(&NodeId(3)), Some(&seq(7)), "the fence stays");
        assert_eq!(st.orphans.keys().map(|(_, n)| n.0).collect::<Vec<_>>(), [4]);
        assert_eq!(
            st.drops_pending
                .keys()
                .map(|(_, n)| n.0)
                .collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(st.restored.iter().map(|n| n.0).collect::<Vec<_>>(), [4]);
        assert_eq!(st.expected.iter().map(|n| n.0).collect::<Vec<_>>(), [4]);
        assert!(st.synced.contains(&NodeId(4)) && !st.synced.contains(&NodeId(3)));
    }

    #[test]
    fn a_copy_short_of_r_gets_one_clone_job_until_it_is_done() {
        let mut a = authority(&[], &[(0, &[2])]);
        assert_eq!(a.repair_jobs(), 0);
        let mut job = None;
        for s in 1..=20 {
            let out = tick(&mut a, s * 1000);
            for (to, m) in sent(&out) {
                if let Message::CloneTo(j) = m {
                    assert_eq!((to, j.hash), (2, hash(0)), "from the holder");
                    assert_ne!(j.target, NodeId(2));
                    job = Some(j.job);
                }
            }
            if job.is_some() {
                break;
            }
        }
        let job = job.expect("a clone job");
        assert_eq!(a.repair_jobs(), 1);
        hand_at(&mut a, 2, at(21_000), Message::CloneDone { job, ok: true });
        assert_eq!(a.repair_jobs(), 0);
    }
}
