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
                ((*h, *s), (seq, now, m.clone()))
            })
            .collect();
        Authority {
            me,
            tally: VoteTally::new(cfg.tally.clone(), cfg.bugs.clone(), now),
            cfg,
            store,
            feed: FeedServer::default(),
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
                self.add_orphan(*hash, store, seq, meta.clone(), out);
                continue;
            }
            if !self.holds(hash, store) {
                self.append(
                    Change::ContentStored {
                        hash: *hash,
                        store,
                        meta: meta.clone(),
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
        let among_last_r = |hash: &&ContentHash| {
            let others = state.inventory.get(*hash).map_or(0, |rec| {
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
        let short = state.held_by(node).filter(among_last_r).count()
            + doomed.iter().filter(among_last_r).count();
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
                self.unlisted.insert((hash, store), rec.meta.clone());
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
            meta: Some(meta.clone()),
        });
        self.store.orphans.insert((hash, store), meta.clone());
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
                Answer::Content(self.lookup(self.store.state.inventory.get(hash).cloned()))
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
                    meta: meta.clone(),
                };
                self.append(change, out);
            }
        }
        // Uploaded again: copies reported while it was deleted count too.
        if !accepted.is_empty() {
            let orphans: Vec<(NodeId, ContentMeta)> = self
                .orphans
                .range((hash, NodeId(0))..=(hash, NodeId(u64::MAX)))
                .map(|((_, s), (_, _, m))| (*s, m.clone()))
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
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = earliest(self.observers_due, self.tally.next_deadline());
        next = earliest(next, self.feed.next_deadline());
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
            ext: "bin".into(),
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

    fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    /// The authority (node 1) with stores 2..=5, `down` published down,
    /// and `copies` listed: (content, stores holding it).
    fn authority(down: &[u64], copies: &[(u8, &[u64])]) -> Authority {
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
                        ext: "bin".into(),
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
            ext: "bin".into(),
            size: 1,
        };
        let mut a = authority(&[3, 5], &[(0, &[2, 5])]);
        a.unlisted.insert((hash(0), NodeId(3)), meta.clone());
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
        let mut out = Outbox::new(NodeId(1), "10.0.0.1:7000".parse().unwrap());
        let env = Envelope {
            version: PROTOCOL_VERSION,
            cluster: ClusterId(1),
            from: NodeId(id),
            from_addr: ([10, 0, 0, id as u8], 7000).into(),
            sent_at: WallTime::default(),
            msg,
        };
        a.handle(
            Time::from_secs(now),
            WallTime::from_secs(now),
            &env,
            &mut out,
        );
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
}
