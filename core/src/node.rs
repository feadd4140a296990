//! A node: composes identity, joining, the feed replica, the ping net, local
//! health and (on the authority) the authority, behind one sans-IO interface.

use crate::authority::{Authority, AuthorityConfig, AuthorityStore};
use crate::cluster_clock::{ClusterClock, RegistryView};
use crate::config::{ConfigError, NodeConfig};
use crate::durable::{DurableState, Record};
use crate::health::HealthView;
use crate::ids::{ClusterId, LogId, NodeId, NodeInfo};
use crate::io::{ClientError, ClientResponse};
use crate::io::{DropReason, Input, Notice, Outbox, Output};
use crate::message::{Envelope, Message, PROTOCOL_VERSION};
use crate::observers::rendezvous_score;
use crate::ping_net::{Assignment, PingNet};
use crate::prism::{PrismCtx, PrismRole};
use crate::replica::{Applied, Replica};
use crate::restore::{Restore, RESTORE_REQ};
use crate::rng::Rng;
use crate::store::{StoreRole, StoreView, STORE_OP};
use crate::time::{earliest, Time, WallTime};

/// The prism's view of this node for one decision. A macro, not a method,
/// so the borrow covers only the fields read (the prism itself is borrowed
/// mutably alongside).
macro_rules! prism_ctx {
    ($node:ident) => {
        PrismCtx {
            now: $node.now,
            wall: $node.wall,
            ready: $node.replica.is_ready() && $node.clock.settled(),
            state: $node.replica.state(),
            health: HealthView {
                state: $node.replica.state(),
                ping: &$node.ping,
            },
            authority: $node.cfg.authority_addr,
        }
    };
}

/// Messages this node refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub foreign_cluster: u64,
    pub unsupported_version: u64,
    pub not_joined: u64,
    pub not_authority: u64,
}

#[derive(Debug)]
struct JoinState {
    joined: bool,
    next_attempt: Time,
    /// Where in which log the authority recorded our join.
    ack: Option<(LogId, u64)>,
}

/// Loopback rounds per input; each round is bounded work, this only guards
/// against a bug turning into a hang.
const MAX_PUMP_ROUNDS: usize = 64;

pub struct Node {
    cfg: NodeConfig,
    rng: Box<dyn Rng>,
    id: NodeId,
    incarnation: u64,
    /// Told to stop (`Input::Leave`): this start has left.
    leaving: bool,
    /// An admin removed this start: it no longer probes, stores or serves.
    removed: bool,
    cluster: Option<ClusterId>,
    join: JoinState,
    replica: Replica,
    ping: PingNet,
    authority: Option<Authority>,
    store: Option<StoreRole>,
    prism: Option<PrismRole>,
    restore: Restore,
    out: Outbox,
    now: Time,
    /// The cluster's time (see `cluster_clock`); `local_wall` is our own.
    wall: WallTime,
    local_wall: WallTime,
    clock: ClusterClock,
    topology_dirty: bool,
    counters: Counters,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("addr", &self.cfg.addr)
            .field("incarnation", &self.incarnation)
            .field("joined", &self.join.joined)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node from what its disk holds (empty on the first start).
    /// The records this start writes (identity, incarnation, a new cluster)
    /// are the first outputs.
    pub fn new(
        cfg: NodeConfig,
        disk: &DurableState,
        mut rng: Box<dyn Rng>,
        now: Time,
    ) -> Result<Node, ConfigError> {
        cfg.validate()?;
        let mut records = Vec::new();
        let id = match disk.node {
            Some(id) => id,
            None => {
                let id = NodeId(rng.next_u64() | 1);
                records.push(Record::Identity { node: id });
                id
            }
        };
        let incarnation = disk.incarnation + 1;
        records.push(Record::Incarnation(incarnation));
        let mut cluster = disk.cluster.or(cfg.cluster);
        let authority = if cfg.roles.authority {
            let store = match &disk.authority {
                Some(store) => store.clone(),
                None => {
                    let c = cluster.unwrap_or_else(|| {
                        ClusterId(((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) | 1)
                    });
                    let log = LogId(rng.next_u64());
                    records.push(Record::AuthorityCreated {
                        cluster: c,
                        log,
                        retain: cfg.feed.retain,
                    });
                    AuthorityStore::new(c, log, cfg.feed.retain)
                }
            };
            if disk.cluster != Some(store.cluster) {
                records.push(Record::Cluster(store.cluster));
            }
            cluster = Some(store.cluster);
            let acfg = AuthorityConfig {
                tally: cfg.tally.clone(),
                feed: cfg.feed.clone(),
                content: cfg.content.clone(),
                bugs: cfg.bugs.clone(),
            };
            Some(Authority::new(id, acfg, store, now))
        } else {
            None
        };
        let mut out = Outbox::new(id, cfg.addr);
        out.cluster = cluster.unwrap_or(ClusterId::UNSET);
        for r in records {
            out.persist(r);
        }
        let ping = PingNet::new(cfg.ping.clone(), cfg.bugs.clone(), incarnation, &mut *rng);
        let store = cfg
            .roles
            .store
            .then(|| StoreRole::new(cfg.content.clone(), incarnation, now));
        let prism = cfg
            .roles
            .prism
            .then(|| PrismRole::new(cfg.content.clone(), cfg.bugs.clone(), incarnation));
        let replica = if cfg.bugs.replica_skips_removals {
            Replica::skipping_removals()
        } else {
            Replica::default()
        };
        // A node that is only the authority reads content from its
        // authority: its replica keeps membership only.
        let replica = if cfg.roles.authority && !cfg.roles.prism && !cfg.roles.store {
            replica.membership_only()
        } else {
            replica
        };
        let mut node = Node {
            cfg,
            rng,
            id,
            incarnation,
            leaving: false,
            removed: false,
            cluster,
            join: JoinState {
                joined: false,
                next_attempt: now,
                ack: None,
            },
            replica,
            ping,
            authority,
            store,
            prism,
            restore: Restore::default(),
            out,
            now,
            wall: WallTime::default(),
            local_wall: WallTime::default(),
            clock: ClusterClock::new(id, now),
            topology_dirty: false,
            counters: Counters::default(),
        };
        node.pump();
        Ok(node)
    }

    /// `now` is this node's monotonic clock; `wall` its wall clock (used for
    /// purchase expiry only).
    pub fn handle(&mut self, now: Time, wall: WallTime, input: Input) {
        self.now = self.now.max(now);
        self.local_wall = self.local_wall.max(wall);
        self.out.wall = self.local_wall;
        // Only a recovered authority knows the cluster's size; a replica
        // may hold what a recovering one has rebuilt so far, or nothing
        // (swarm seed 7994: a prism restarted while the authority was down
        // took its empty registry for a small cluster, settled on its own
        // clock 8 s behind, and delivered an expired purchase).
        let view = match &self.authority {
            Some(a) if a.is_recovering() => RegistryView::Partial,
            Some(_) => RegistryView::Complete,
            None if self.replica.is_ready() => RegistryView::Partial,
            None => RegistryView::Unsynced,
        };
        self.clock.refresh(self.now, self.replica.state(), view);
        self.wall = if self.cfg.bugs.own_wall_clock {
            self.local_wall
        } else {
            self.clock.wall(self.local_wall)
        };
        if let Some(a) = &mut self.authority {
            a.set_wall_settled(self.clock.settled());
        }
        match input {
            Input::Message(env) => self.receive(env),
            Input::Tick => {}
            Input::Client { id, request } => self.client(id, request),
            Input::Leave => {
                self.leaving = true;
                if self.join.joined && !self.cfg.roles.authority {
                    let incarnation = self.incarnation;
                    self.out
                        .send(self.cfg.authority_addr, Message::Leaving { incarnation });
                    // Resent until the feed says we left (`left_unconfirmed`).
                    self.join.next_attempt = self.now + self.cfg.join_retry;
                }
            }
            Input::TransferDone { op, ok } => {
                if op & STORE_OP != 0 {
                    if let Some(s) = &mut self.store {
                        s.on_transfer_done(op, ok, self.cfg.authority_addr, &mut self.out);
                    }
                } else if let Some(p) = &mut self.prism {
                    let ctx = prism_ctx!(self);
                    p.on_transfer_done(&ctx, op, ok, &mut self.out);
                }
            }
            Input::ContentListing(items) => {
                if let Some(s) = &mut self.store {
                    s.on_listing(items);
                }
            }
            Input::ContentStored { hash, meta } => {
                if let Some(s) = &mut self.store {
                    s.on_stored(hash, meta);
                }
            }
            Input::ScrubResult { hash, ok } => {
                if let Some(s) = &mut self.store {
                    s.on_scrub(hash, ok, &mut self.out);
                }
            }
        }
        self.pump();
    }

    fn client(&mut self, id: u64, request: crate::io::ClientRequest) {
        if self.removed {
            let why = "this node was removed from the cluster";
            self.out.queue.push_back(Output::Reply {
                id,
                response: ClientResponse::Error(ClientError::Unavailable(why)),
            });
            return;
        }
        let Some(p) = &mut self.prism else {
            let why = "this node is not a prism".to_string();
            self.out.queue.push_back(Output::Reply {
                id,
                response: ClientResponse::Error(ClientError::BadRequest(why)),
            });
            return;
        };
        let ctx = prism_ctx!(self);
        p.on_request(&ctx, id, request, &mut *self.rng, &mut self.out);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.queue.pop_front()
    }

    /// When the node next needs `handle(now, Input::Tick)`.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.cfg.bugs.wake_without_work {
            return Some(self.now);
        }
        let mut next = if self.join.joined {
            self.replica.next_deadline()
        } else {
            Some(self.join.next_attempt)
        };
        if self.left_unconfirmed() {
            next = earliest(next, Some(self.join.next_attempt));
        }
        if self.probing() {
            next = earliest(next, self.ping.next_deadline());
        }
        if let Some(a) = &self.authority {
            next = earliest(next, a.next_deadline());
        }
        if self.join.joined && !self.removed {
            if let Some(s) = &self.store {
                next = earliest(next, s.next_deadline(self.now));
            }
            next = earliest(next, self.restore.next_deadline(self.now));
        }
        if let Some(p) = &self.prism {
            next = earliest(next, p.next_deadline());
        }
        next
    }

    pub fn store_role(&self) -> Option<&StoreRole> {
        self.store.as_ref()
    }

    pub fn prism_role(&self) -> Option<&PrismRole> {
        self.prism.as_ref()
    }

    pub fn wall(&self) -> WallTime {
        self.wall
    }

    /// How far the cluster's time is from this node's own wall clock, in
    /// microseconds (see `cluster_clock`).
    pub fn clock_offset_us(&self) -> i64 {
        if self.cfg.bugs.own_wall_clock {
            0
        } else {
            self.clock.offset_us()
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn cluster(&self) -> Option<ClusterId> {
        self.cluster
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn is_joined(&self) -> bool {
        self.join.joined
    }

    /// Has a snapshot of the cluster state and has caught up with the feed.
    /// Synced with the feed, and the cluster's time known (see
    /// `cluster_clock`).
    pub fn is_ready(&self) -> bool {
        self.replica.is_ready() && self.clock.settled()
    }

    pub fn replica(&self) -> &crate::replica::Replica {
        &self.replica
    }

    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    pub fn ping_net(&self) -> &PingNet {
        &self.ping
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn health(&self) -> HealthView<'_> {
        HealthView {
            state: self.replica.state(),
            ping: &self.ping,
        }
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            addr: self.cfg.addr,
            roles: self.cfg.roles,
            zone: self.cfg.zone.clone(),
            weight: self.cfg.weight,
            incarnation: self.incarnation,
        }
    }

    fn probing(&self) -> bool {
        self.join.joined && self.replica.has_state() && !self.removed
    }

    /// Runs loopback messages and due timers until neither produces more.
    fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            self.run_timers();
            if self.out.loopback.is_empty() {
                return;
            }
            while let Some(env) = self.out.loopback.pop_front() {
                self.receive(env);
            }
        }
    }

    fn dropped(&mut self, from: NodeId, why: DropReason) {
        let c = &mut self.counters;
        match why {
            DropReason::ForeignCluster => c.foreign_cluster += 1,
            DropReason::UnsupportedVersion => c.unsupported_version += 1,
            DropReason::NotJoined => c.not_joined += 1,
            DropReason::NotAuthority => c.not_authority += 1,
        }
        self.out.notice(Notice::Dropped { from, why });
    }

    fn receive(&mut self, env: Envelope) {
        if env.version != PROTOCOL_VERSION {
            return self.dropped(env.from, DropReason::UnsupportedVersion);
        }
        let first_join = matches!(env.msg, Message::Join { .. }) && !env.cluster.is_set();
        match self.cluster {
            Some(c) if env.cluster == c => {}
            Some(_) if first_join && self.authority.is_some() => {}
            Some(_) => return self.dropped(env.from, DropReason::ForeignCluster),
            None => {
                // Before joining only the authority's answer can name the cluster.
                let from_authority = env.from_addr == self.cfg.authority_addr;
                if !matches!(env.msg, Message::JoinAck { .. }) || !from_authority {
                    return self.dropped(env.from, DropReason::NotJoined);
                }
            }
        }
        let now = self.now;
        // Clock samples from this cluster's nodes that have not left: a
        // message is word that its sender runs, whatever the verdict on it
        // (the clock weighs verdicts for peers it has not heard lately); a
        // node not in our registry yet counts (ours may not be synced yet).
        let state = self.replica.state();
        if !state.has_left(env.from) {
            self.clock
                .sample(now, self.local_wall, env.from, env.sent_at);
        }
        if let Some(a) = &mut self.authority {
            if a.handle(now, self.wall, &env, &mut self.out) {
                return;
            }
        }
        let from_authority = env.from_addr == self.cfg.authority_addr;
        match env.msg {
            Message::Join { .. }
            | Message::Votes { .. }
            | Message::FeedPull { .. }
            | Message::SnapshotPull { .. }
            | Message::InventoryReport(_)
            | Message::CloneDone { .. }
            | Message::Leaving { .. }
            | Message::Ask { .. } => self.dropped(env.from, DropReason::NotAuthority),
            Message::InventoryAck { seq } => {
                if let Some(s) = &mut self.store {
                    s.on_ack(seq);
                }
            }
            Message::CloneTo(job) if from_authority => {
                if let Some(s) = &mut self.store {
                    let authority = self.cfg.authority_addr;
                    s.on_clone(*job, authority, &mut self.out);
                }
            }
            Message::DropCopy(order) if from_authority => {
                if let Some(s) = &mut self.store {
                    s.on_drop(&order, &mut self.out);
                }
            }
            Message::CloneTo(_) | Message::DropCopy(_) => {}
            Message::Answer { req, answer } if from_authority => {
                if req & RESTORE_REQ != 0 {
                    self.restore.on_answer(req, &answer);
                } else if let Some(p) = &mut self.prism {
                    let ctx = prism_ctx!(self);
                    p.on_answer(&ctx, req, *answer, &mut *self.rng, &mut self.out);
                }
            }
            Message::Answer { .. } => {}
            Message::JoinAck { node, log, seq } => {
                if node == self.id && from_authority {
                    self.on_join_ack(env.from, env.cluster, log, seq);
                }
            }
            Message::Ping { probe } => self.out.send(env.from_addr, Message::Ack { probe }),
            Message::Ack { probe } => self.ping.on_ack(now, env.from, probe, &mut self.out),
            Message::PingReq {
                probe,
                target,
                target_addr,
            } => self.ping.on_ping_req(
                now,
                env.from_addr,
                probe,
                target,
                target_addr,
                &mut self.out,
            ),
            Message::IndirectAck { probe, target } => {
                self.ping.on_indirect_ack(now, target, probe, &mut self.out)
            }
            Message::VotesAck { seq } if from_authority => self.ping.on_votes_ack(now, seq),
            Message::VotesAck { .. } => {}
            Message::FeedReply { req, log, body } if from_authority => {
                let applied = self.replica.on_feed_reply(req, log, body, &mut self.out);
                self.after_apply(applied);
            }
            Message::SnapshotReply { req, log, chunk } if from_authority => {
                let applied = self
                    .replica
                    .on_snapshot_chunk(req, log, *chunk, &mut self.out);
                self.after_apply(applied);
            }
            Message::FeedReply { .. } | Message::SnapshotReply { .. } => {}
        }
    }

    fn after_apply(&mut self, applied: Applied) {
        self.topology_dirty |= applied.topology;
        if let Some(mut handback) = applied.new_history {
            // Purchases this prism created may not have reached any replica.
            if let Some(p) = &self.prism {
                handback.purchases.extend(p.created().cloned());
            }
            self.restore
                .start(handback.purchases, handback.revoked, handback.nodes);
        }
        if let Some(p) = &mut self.prism {
            let state = self.replica.state();
            p.forget_created(|t| state.purchases.contains_key(t) || state.revoked.contains_key(t));
        }
    }

    fn on_join_ack(&mut self, from: NodeId, cluster: ClusterId, log: LogId, seq: u64) {
        if self.cluster.is_none() {
            if self.cfg.cluster.is_some_and(|c| c != cluster) {
                return self.dropped(from, DropReason::ForeignCluster);
            }
            self.cluster = Some(cluster);
            self.out.cluster = cluster;
            self.out.persist(Record::Cluster(cluster));
        }
        self.join.ack = Some((log, seq));
        if !self.join.joined {
            self.join.joined = true;
            self.out.notice(Notice::Joined { cluster });
            if self.leaving && !self.cfg.roles.authority {
                // A join sent before this start was told to leave has
                // registered it: it leaves now, or it would be voted down.
                let incarnation = self.incarnation;
                self.out
                    .send(self.cfg.authority_addr, Message::Leaving { incarnation });
            }
        }
    }

    /// Told to leave, registered, and the feed has not yet said this node
    /// left: the `Leaving` may have been lost, so it is sent again (a node
    /// that stops before then is voted down instead of leaving).
    fn left_unconfirmed(&self) -> bool {
        self.leaving
            && self.join.joined
            && !self.cfg.roles.authority
            && !self.replica.state().has_left(self.id)
    }

    /// Told to leave, and the cluster has recorded it (or there was nothing
    /// to leave: never registered, or the authority itself). A driver stops
    /// once this holds, or after a bound of its own.
    pub fn has_left(&self) -> bool {
        self.leaving && !self.left_unconfirmed()
    }

    fn run_timers(&mut self) {
        let now = self.now;
        let authority_addr = self.cfg.authority_addr;
        if self.left_unconfirmed() && now >= self.join.next_attempt {
            let incarnation = self.incarnation;
            self.out
                .send(authority_addr, Message::Leaving { incarnation });
            self.join.next_attempt = now + self.cfg.join_retry;
        }
        if !self.join.joined {
            if now >= self.join.next_attempt {
                // A start told to leave does not join any more.
                if !self.leaving {
                    self.out.send(
                        authority_addr,
                        Message::Join {
                            info: Box::new(self.info()),
                        },
                    );
                }
                self.join.next_attempt = now + self.cfg.join_retry;
            }
        } else {
            self.replica
                .poll(now, &self.cfg.feed, authority_addr, &mut self.out);
            self.check_registration();
        }
        if self.topology_dirty && self.replica.has_state() {
            self.topology_dirty = false;
            self.reassign();
        }
        if self.probing() && self.ping.next_deadline().is_some_and(|t| t <= now) {
            let state = self.replica.state();
            self.ping.on_tick(
                now,
                authority_addr,
                &|id| !state.is_down(id),
                &mut *self.rng,
                &mut self.out,
            );
        }
        if self.join.joined && !self.removed {
            if let Some(s) = &mut self.store {
                let view = StoreView {
                    state: self.replica.state(),
                    me: self.id,
                    log: self.replica.log(),
                    ready: self.replica.is_ready(),
                };
                s.on_tick(now, &view, authority_addr, &mut self.out);
            }
            let retry = self.cfg.content.rpc_retry;
            self.restore
                .on_tick(now, retry, authority_addr, &mut self.out);
        }
        if let Some(p) = &mut self.prism {
            if p.next_deadline().is_some_and(|t| t <= now) {
                let ctx = prism_ctx!(self);
                p.on_tick(&ctx, &mut self.out);
            }
        }
        if let Some(a) = &mut self.authority {
            if a.next_deadline().is_some_and(|t| t <= now) {
                a.on_tick(now, self.wall, &mut self.out);
            }
        }
    }

    /// Once the replica has caught up past our join, our registry entry must
    /// be there and current; if it is not (the authority lost it), join
    /// again.
    fn check_registration(&mut self) {
        if !self.replica.is_ready() || !self.replica.at_end() {
            return;
        }
        let Some((log, seq)) = self.join.ack else {
            return;
        };
        let past_join = self.replica.log() != Some(log) || self.replica.seq() >= seq;
        let state = self.replica.state();
        if state.was_removed(self.id, self.incarnation) {
            // An admin removed this start: it stays out and idle (a restart
            // is a new start and joins as a new member).
            if !self.removed {
                self.removed = true;
                self.out.notice(Notice::Removed);
            }
            return;
        }
        let registered = state.registry.get(self.id);
        // Marked left, yet this start never said it was leaving (its disk
        // went back to the start that left): it must come back as a new one.
        let left_elsewhere = state.has_left(self.id) && !self.leaving;
        if past_join && (registered != Some(&self.info()) || left_elsewhere) {
            let later = |r: &&NodeInfo| {
                r.incarnation > self.incarnation
                    || (r.incarnation == self.incarnation && left_elsewhere)
            };
            if let Some(r) = registered.filter(later) {
                // Registered from a later start than ours (our disk went
                // back): the authority ignores joins from earlier starts, so
                // this start moves past it.
                self.incarnation = r.incarnation + 1;
                self.out.persist(Record::Incarnation(self.incarnation));
            }
            self.join.joined = false;
            self.join.ack = None;
            self.join.next_attempt = self.now;
        }
    }

    /// Recomputes this node's subjects and their helpers from the replica.
    fn reassign(&mut self) {
        let state = self.replica.state();
        let want = self.cfg.ping.indirect_probes;
        let me = self.id;
        let assignments: Vec<Assignment> = state
            .subjects_of(me)
            .into_iter()
            .filter_map(|subject| {
                let addr = state.registry.get(subject)?.addr;
                let mut helpers: Vec<(NodeId, std::net::SocketAddr)> = state
                    .observers_of(subject)
                    .iter()
                    .filter(|o| **o != me && **o != subject)
                    .filter_map(|o| state.registry.get(*o).map(|i| (*o, i.addr)))
                    .collect();
                if helpers.len() < want {
                    // Few co-observers (small cluster): borrow other members,
                    // the same ones every time for a given subject.
                    let mut extra: Vec<(u64, NodeId, std::net::SocketAddr)> = state
                        .registry
                        .iter()
                        .filter(|i| i.id != me && i.id != subject)
                        .filter(|i| helpers.iter().all(|(h, _)| *h != i.id))
                        .map(|i| (rendezvous_score(subject, i.id), i.id, i.addr))
                        .collect();
                    extra.sort_unstable_by(|a, b| b.cmp(a));
                    helpers.extend(
                        extra
                            .into_iter()
                            .take(want - helpers.len())
                            .map(|(_, id, a)| (id, a)),
                    );
                }
                Some(Assignment {
                    subject,
                    addr,
                    helpers,
                })
            })
            .collect();
        self.ping.assign(self.now, assignments, &mut self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock for the test cluster (every node's, no skew).
    fn wall(now: Time) -> WallTime {
        WallTime::from_micros(1_700_000_000_000_000 + now.as_micros())
    }
    use crate::config::NodeConfig;
    use crate::ids::{Roles, Zone};
    use crate::rng::SeededRng;
    use crate::time::Duration;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    use std::net::SocketAddr;

    /// A tiny in-memory driver: instant, lossless delivery; `down` hosts
    /// neither send nor receive.
    struct Cluster {
        nodes: Vec<Node>,
        disks: Vec<DurableState>,
        queue: VecDeque<(SocketAddr, Envelope)>,
        inputs: VecDeque<(usize, Input)>,
        notices: Vec<(usize, Notice)>,
        down: BTreeSet<usize>,
        now: Time,
        /// Every message sent: (sender, to, message).
        sent: Vec<(usize, SocketAddr, Message)>,
        /// Transfers ordered (node, op) and client replies (node, id, response).
        transfers: Vec<(usize, u64)>,
        replies: Vec<(usize, u64, ClientResponse)>,
    }

    fn addr(i: usize) -> SocketAddr {
        format!("10.0.0.{}:7000", i + 1).parse().unwrap()
    }

    fn config(i: usize) -> NodeConfig {
        let roles = if i == 0 {
            Roles::AUTHORITY
        } else {
            Roles::STORE
        };
        NodeConfig::new(addr(i), roles, Zone::new("z"), addr(0))
    }

    impl Cluster {
        fn new(n: usize) -> Cluster {
            let mut c = Cluster {
                nodes: Vec::new(),
                disks: vec![DurableState::default(); n],
                queue: VecDeque::new(),
                inputs: VecDeque::new(),
                notices: Vec::new(),
                down: BTreeSet::new(),
                now: Time::from_secs(1),
                sent: Vec::new(),
                transfers: Vec::new(),
                replies: Vec::new(),
            };
            for i in 0..n {
                let node = Node::new(
                    config(i),
                    &c.disks[i],
                    Box::new(SeededRng::new(i as u64)),
                    c.now,
                )
                .unwrap();
                c.nodes.push(node);
            }
            c.drain();
            c
        }

        fn drain(&mut self) {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while let Some(out) = node.poll_output() {
                    match out {
                        Output::Send { to, envelope } => {
                            if !self.down.contains(&i) {
                                self.sent.push((i, to, envelope.msg.clone()));
                                self.queue.push_back((to, envelope));
                            }
                        }
                        Output::Persist(r) => self.disks[i].apply(&r),
                        Output::Notice(n) => self.notices.push((i, n)),
                        // These nodes hold no content.
                        Output::ListContent => {
                            self.inputs.push_back((i, Input::ContentListing(vec![])))
                        }
                        Output::Reply { id, response } => self.replies.push((i, id, response)),
                        Output::Transfer { op, .. } => self.transfers.push((i, op)),
                        Output::Scrub { .. } | Output::DeleteContent { .. } => {}
                    }
                }
            }
        }

        fn deliver(&mut self, to: SocketAddr, env: Envelope) {
            if let Some(i) = (0..self.nodes.len()).find(|i| addr(*i) == to) {
                if !self.down.contains(&i) {
                    self.nodes[i].handle(self.now, wall(self.now), Input::Message(env));
                }
            }
        }

        fn run_for(&mut self, d: Duration) {
            let until = self.now + d;
            loop {
                self.drain();
                if let Some((to, env)) = self.queue.pop_front() {
                    self.deliver(to, env);
                    continue;
                }
                if let Some((i, input)) = self.inputs.pop_front() {
                    self.nodes[i].handle(self.now, wall(self.now), input);
                    continue;
                }
                let next = (0..self.nodes.len())
                    .filter(|i| !self.down.contains(i))
                    .filter_map(|i| self.nodes[i].poll_timeout())
                    .min();
                match next {
                    Some(t) if t <= until => {
                        self.now = self.now.max(t);
                        for i in 0..self.nodes.len() {
                            let due = self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now);
                            if due && !self.down.contains(&i) {
                                self.nodes[i].handle(self.now, wall(self.now), Input::Tick);
                            }
                        }
                    }
                    _ => break,
                }
            }
            self.now = until;
        }
    }

    /// Adds a node with `roles` to the cluster (it joins as it runs).
    fn add(c: &mut Cluster, roles: Roles) -> usize {
        let i = c.nodes.len();
        let cfg = NodeConfig::new(addr(i), roles, Zone::new("z"), addr(0));
        c.disks.push(DurableState::default());
        let rng = Box::new(SeededRng::new(i as u64));
        c.nodes
            .push(Node::new(cfg, &DurableState::default(), rng, c.now).unwrap());
        i
    }

    #[test]
    fn an_upload_whose_every_transfer_fails_is_answered() {
        let mut c = Cluster::new(4);
        let p = add(&mut c, Roles::PRISM);
        c.run_for(Duration::from_secs(3));
        assert!(c.nodes[p].is_ready());
        let hash = crate::hash::ContentHash::compute(crate::hash::HashKind::Sha1, b"x");
        let meta = crate::content::ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        };
        let request = crate::io::ClientRequest::Upload { hash, meta };
        c.inputs.push_back((p, Input::Client { id: 7, request }));
        // Every copy fails, the failovers too.
        let mut failed = 0;
        for _ in 0..10 {
            c.run_for(Duration::from_millis(10));
            for (i, op) in std::mem::take(&mut c.transfers) {
                failed += 1;
                c.inputs
                    .push_back((i, Input::TransferDone { op, ok: false }));
            }
        }
        assert_eq!(failed, 3, "one try at each store");
        let answer =
            ClientResponse::Error(ClientError::Unavailable("could not store enough copies"));
        assert_eq!(c.replies, [(p, 7, answer)]);
    }

    /// The indirect probe requests sent about node `dead` of `n` while it
    /// is down: (asker, probe, asked).
    fn probe_requests(n: usize, dead: usize) -> (Cluster, Vec<(usize, u64, SocketAddr)>) {
        let mut c = Cluster::new(n);
        c.run_for(Duration::from_secs(2));
        c.down.insert(dead);
        c.run_for(Duration::from_secs(3));
        let asks = c
            .sent
            .iter()
            .filter_map(|(from, to, m)| match m {
                Message::PingReq {
                    probe, target_addr, ..
                } if *target_addr == addr(dead) => Some((*from, *probe, *to)),
                _ => None,
            })
            .collect();
        (c, asks)
    }

    #[test]
    fn an_observer_asks_every_other_node_but_itself_and_the_subject_to_probe() {
        // Five nodes: each observer of node 4 has three others to ask, as
        // many as it asks (asking itself would only go round its loopback).
        let (c, asks) = probe_requests(5, 4);
        assert_eq!(c.nodes[1].cfg.ping.indirect_probes, 3);
        let mut rounds: BTreeMap<(usize, u64), BTreeSet<SocketAddr>> = BTreeMap::new();
        for (from, probe, to) in asks {
            assert_ne!(to, addr(4), "the subject was asked");
            rounds.entry((from, probe)).or_default().insert(to);
        }
        assert!(!rounds.is_empty(), "node 4 was probed indirectly");
        for ((from, _), asked) in rounds {
            let others: BTreeSet<SocketAddr> = (0..4).filter(|i| *i != from).map(addr).collect();
            assert_eq!(asked, others, "node {from}");
        }
    }

    #[test]
    fn an_observer_asks_the_subjects_other_observers_first() {
        let (c, asks) = probe_requests(12, 11);
        let state = c.nodes[1].replica().state();
        let subject = c.nodes[11].id();
        let observers: Vec<SocketAddr> = state
            .observers_of(subject)
            .iter()
            .map(|o| state.registry.get(*o).unwrap().addr)
            .collect();
        assert!(observers.len() > c.nodes[1].cfg.ping.indirect_probes + 1);
        assert!(!asks.is_empty());
        let mut asked: BTreeMap<usize, BTreeSet<SocketAddr>> = BTreeMap::new();
        for (from, _, to) in asks {
            assert!(
                observers.contains(&to),
                "node {from} asked {to}, not an observer"
            );
            asked.entry(from).or_default().insert(to);
        }
        // Over its rounds each observer asks every one of the others.
        for (from, asked) in asked {
            let others: BTreeSet<SocketAddr> = observers
                .iter()
                .copied()
                .filter(|a| *a != addr(from))
                .collect();
            assert_eq!(asked, others, "node {from}");
        }
    }

    #[test]
    fn a_removed_start_that_comes_back_stays_out_and_idle() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        c.down.insert(3);
        c.run_for(Duration::from_secs(25));
        let id = c.nodes[3].id();
        assert!(c.nodes[0].authority().unwrap().state().is_down(id));
        let ask = Message::Ask {
            req: 1,
            ask: Box::new(crate::message::Ask::RemoveNode { node: id }),
        };
        let env = c.nodes[1].out.envelope(ask);
        c.nodes[0].handle(c.now, wall(c.now), Input::Message(env));
        c.run_for(Duration::from_secs(1));
        let registered = |c: &Cluster| {
            c.nodes[0]
                .authority()
                .unwrap()
                .state()
                .registry
                .contains(id)
        };
        assert!(!registered(&c));
        // Node 3 was only cut off: it hears it was removed and stops.
        c.down.remove(&3);
        c.run_for(Duration::from_secs(2));
        assert!(c.notices.contains(&(3, Notice::Removed)));
        c.sent.clear();
        c.run_for(Duration::from_secs(3));
        let sent: Vec<_> = c.sent.iter().filter(|(from, _, _)| *from == 3).collect();
        assert!(
            sent.iter()
                .all(|(_, _, m)| matches!(m, Message::FeedPull { .. })),
            "only follows the feed: {sent:?}"
        );
        assert!(!registered(&c), "it stays out");
        let request = crate::io::ClientRequest::Exists { hashes: vec![] };
        c.inputs.push_back((3, Input::Client { id: 5, request }));
        c.run_for(Duration::from_millis(10));
        let refused = ClientResponse::Error(ClientError::Unavailable(
            "this node was removed from the cluster",
        ));
        assert_eq!(c.replies, [(3, 5, refused)]);
    }

    #[test]
    fn a_votes_ack_from_anyone_but_the_authority_is_ignored() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        // The authority hears nothing; node 3 dies; node 1 votes it down
        // and keeps sending its vote set.
        c.down.insert(0);
        c.down.insert(3);
        c.run_for(Duration::from_secs(3));
        let votes_of_1 = |c: &Cluster| -> Vec<crate::message::VoteSeq> {
            c.sent
                .iter()
                .filter_map(|(from, _, m)| match m {
                    Message::Votes { seq, down } if *from == 1 && !down.is_empty() => Some(*seq),
                    _ => None,
                })
                .collect()
        };
        let seq = *votes_of_1(&c).last().expect("node 1 voted");
        let ack = c.nodes[2].out.envelope(Message::VotesAck { seq });
        c.nodes[1].handle(c.now, wall(c.now), Input::Message(ack));
        // Unacknowledged, a set goes out again every 150 ms (acknowledged,
        // only at the next refresh, a second later).
        c.sent.clear();
        c.run_for(Duration::from_millis(900));
        let resent = votes_of_1(&c);
        assert!(
            resent.len() >= 3,
            "still resent after a forged ack: {resent:?}"
        );
        assert!(resent.iter().all(|s| *s == seq));
    }

    #[test]
    fn nodes_join_become_ready_and_observe_each_other() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        for n in &c.nodes {
            assert!(n.is_joined() && n.is_ready(), "{n:?}");
            assert_eq!(n.replica().state().registry.len(), 3);
            assert_eq!(n.ping_net().subjects().count(), 2);
            assert_eq!(n.cluster(), c.nodes[0].cluster());
        }
        assert!(c
            .notices
            .iter()
            .any(|(i, n)| *i == 1 && *n == Notice::Ready));
    }

    #[test]
    fn foreign_cluster_and_version_are_dropped_and_counted() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        let mut env = c.nodes[1].out.envelope(Message::Ping { probe: 1 });
        env.cluster = ClusterId(12345);
        c.nodes[2].handle(c.now, wall(c.now), Input::Message(env.clone()));
        env.cluster = c.nodes[1].cluster().unwrap();
        env.version = PROTOCOL_VERSION + 1;
        c.nodes[2].handle(c.now, wall(c.now), Input::Message(env));
        let counters = c.nodes[2].counters();
        assert_eq!(counters.foreign_cluster, 1);
        assert_eq!(counters.unsupported_version, 1);
        assert!(c.nodes[2].poll_output().is_some_and(|o| matches!(
            o,
            Output::Notice(Notice::Dropped {
                why: DropReason::ForeignCluster,
                ..
            })
        )));
    }

    #[test]
    fn node_pinned_to_another_cluster_never_joins() {
        let mut c = Cluster::new(1);
        let mut cfg = config(1);
        cfg.cluster = Some(ClusterId(999));
        c.disks.push(DurableState::default());
        c.nodes.push(
            Node::new(
                cfg,
                &DurableState::default(),
                Box::new(SeededRng::new(9)),
                c.now,
            )
            .unwrap(),
        );
        c.run_for(Duration::from_secs(3));
        assert!(!c.nodes[1].is_joined());
        assert_eq!(c.nodes[1].cluster(), Some(ClusterId(999)));
        // The authority refuses its joins as foreign traffic.
        assert!(c.nodes[0].counters().foreign_cluster >= 1);
        assert_eq!(c.nodes[0].authority().unwrap().state().registry.len(), 1);
    }

    #[test]
    fn restart_keeps_identity_and_bumps_incarnation() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        let id = c.nodes[2].id();
        let head = c.nodes[0].authority().unwrap().head();
        c.nodes[2] =
            Node::new(config(2), &c.disks[2], Box::new(SeededRng::new(77)), c.now).unwrap();
        c.run_for(Duration::from_secs(2));
        assert_eq!(c.nodes[2].id(), id);
        assert_eq!(c.nodes[2].incarnation(), 2);
        assert!(c.nodes[2].is_ready());
        // Rejoining with the same identity and address records only the new
        // start (so that a leave from the old one is told apart).
        let a = c.nodes[0].authority().unwrap();
        assert_eq!(a.head(), head + 1);
        assert_eq!(a.state().registry.get(id).unwrap().incarnation, 2);
    }

    #[test]
    fn silent_node_is_voted_down_and_avoided_then_returns() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        let victim = c.nodes[3].id();
        c.down.insert(3);
        let bound = config(0).detection_bound();
        c.run_for(bound);
        for i in 0..3 {
            let h = c.nodes[i].health();
            assert!(h.is_down(victim), "node {i} sees the verdict");
            assert!(!h.may_contact(victim));
            assert!(h.may_contact(c.nodes[(i + 1) % 3].id()));
        }
        c.down.remove(&3);
        c.run_for(Duration::from_secs(2));
        for n in &c.nodes {
            assert!(!n.health().is_down(victim));
        }
    }

    #[test]
    fn a_join_or_leave_from_an_earlier_start_changes_nothing() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        let id = c.nodes[3].id();
        let first = c.nodes[3].info();
        c.nodes[3] = Node::new(config(3), &c.disks[3], Box::new(SeededRng::new(5)), c.now).unwrap();
        c.run_for(Duration::from_secs(2));
        // The first start's join and leave, delayed, arrive now.
        for msg in [
            Message::Join {
                info: Box::new(first.clone()),
            },
            Message::Leaving {
                incarnation: first.incarnation,
            },
        ] {
            let env = c.nodes[3].out.envelope(msg);
            c.nodes[0].handle(c.now, wall(c.now), Input::Message(env));
        }
        c.run_for(Duration::from_secs(1));
        let state = c.nodes[0].authority().unwrap().state();
        assert_eq!(state.registry.get(id).unwrap().incarnation, 2);
        assert!(!state.has_left(id) && !state.is_down(id));
        // The second start leaves; its own join, delayed, does not undo it.
        c.nodes[3].handle(c.now, wall(c.now), Input::Leave);
        c.run_for(Duration::from_millis(50));
        c.down.insert(3);
        let env = c.nodes[3].out.envelope(Message::Join {
            info: Box::new(c.nodes[3].info()),
        });
        c.nodes[0].handle(c.now, wall(c.now), Input::Message(env));
        c.run_for(Duration::from_secs(1));
        assert!(c.nodes[0].authority().unwrap().state().has_left(id));
    }

    #[test]
    fn leaving_node_is_down_at_once_and_up_when_it_rejoins() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        let leaver = c.nodes[3].id();
        c.nodes[3].handle(c.now, wall(c.now), Input::Leave);
        c.run_for(Duration::from_millis(50));
        assert!(c.nodes[0].authority().unwrap().state().is_down(leaver));
        c.down.insert(3);
        // Observers never vote, yet it stays down: it left.
        c.run_for(Duration::from_secs(5));
        assert!(c.nodes[1].health().is_down(leaver));
        // It restarts from its disk and joins again: back up.
        c.down.remove(&3);
        c.nodes[3] = Node::new(config(3), &c.disks[3], Box::new(SeededRng::new(5)), c.now).unwrap();
        c.run_for(Duration::from_secs(2));
        assert!(!c.nodes[1].health().is_down(leaver));
    }

    #[test]
    fn a_lost_leave_is_sent_again_until_the_feed_says_the_node_left() {
        let mut c = Cluster::new(4);
        c.run_for(Duration::from_secs(2));
        let leaver = c.nodes[3].id();
        c.nodes[3].handle(c.now, wall(c.now), Input::Leave);
        assert!(!c.nodes[3].has_left(), "nothing recorded yet");
        // The first Leaving is lost on the way.
        c.drain();
        let before = c.queue.len();
        c.queue
            .retain(|(_, env)| !matches!(env.msg, Message::Leaving { .. }));
        assert_eq!(c.queue.len(), before - 1, "one Leaving was in flight");
        c.run_for(Duration::from_secs(2));
        let state = c.nodes[0].authority().unwrap().state();
        assert!(state.has_left(leaver), "a resent Leaving got through");
        assert!(c.nodes[3].has_left(), "and the node's feed says so");
        let leavings = |c: &Cluster| {
            c.sent
                .iter()
                .filter(|(_, _, m)| matches!(m, Message::Leaving { .. }))
                .count()
        };
        let resent = leavings(&c);
        assert!(resent >= 2, "sent again: {resent}");
        // Stops once it is recorded: no stream of Leavings after.
        c.run_for(Duration::from_secs(3));
        assert_eq!(leavings(&c), resent);
        // A node that was never registered has nothing to wait for.
        let i = add(&mut c, Roles::STORE);
        c.nodes[i].handle(c.now, wall(c.now), Input::Leave);
        assert!(c.nodes[i].has_left());
    }

    #[test]
    fn authority_with_a_different_join_address_is_refused() {
        let mut cfg = config(0);
        cfg.authority_addr = addr(5);
        let err = Node::new(
            cfg,
            &DurableState::default(),
            Box::new(SeededRng::new(1)),
            Time::ZERO,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::AuthorityAddrMismatch { .. }));
    }

    fn hash(b: &[u8]) -> crate::hash::ContentHash {
        crate::hash::ContentHash::compute(crate::hash::HashKind::Sha1, b)
    }

    #[test]
    fn a_client_request_to_a_node_without_the_prism_role_is_refused() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        let request = crate::io::ClientRequest::Exists { hashes: vec![] };
        c.inputs.push_back((1, Input::Client { id: 3, request }));
        c.run_for(Duration::from_millis(10));
        let why = "this node is not a prism".to_string();
        assert_eq!(
            c.replies,
            [(1, 3, ClientResponse::Error(ClientError::BadRequest(why)))]
        );
    }

    #[test]
    fn every_dropped_message_is_counted_once_by_its_reason() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        // Authority messages to a node that is not the authority.
        for _ in 0..2 {
            let votes = Message::Votes {
                seq: crate::message::VoteSeq::default(),
                down: vec![],
            };
            let env = c.nodes[1].out.envelope(votes);
            c.nodes[2].handle(c.now, wall(c.now), Input::Message(env));
        }
        assert_eq!(c.nodes[2].counters().not_authority, 2);
        // A node that has not joined hears only the authority's JoinAck.
        let p = add(&mut c, Roles::PRISM);
        let ping = c.nodes[1].out.envelope(Message::Ping { probe: 1 });
        c.nodes[p].handle(c.now, wall(c.now), Input::Message(ping));
        let ack = c.nodes[1].out.envelope(Message::JoinAck {
            node: c.nodes[p].id(),
            log: LogId(1),
            seq: 0,
        });
        c.nodes[p].handle(c.now, wall(c.now), Input::Message(ack));
        assert_eq!(c.nodes[p].counters().not_joined, 2);
        assert!(!c.nodes[p].is_joined(), "a JoinAck from a peer");
        let counters = c.nodes[p].counters();
        assert_eq!((counters.foreign_cluster, counters.not_authority), (0, 0));
    }

    #[test]
    fn clone_orders_and_answers_count_only_from_the_authority() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        let h = hash(b"x");
        let meta = crate::content::ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        };
        c.inputs
            .push_back((1, Input::ContentStored { hash: h, meta }));
        c.run_for(Duration::from_millis(10));
        let target = c.nodes[2].id();
        let job = || {
            Message::CloneTo(Box::new(crate::message::CloneJob {
                job: 4,
                hash: h,
                target,
                target_addr: addr(2),
            }))
        };
        let forged = c.nodes[2].out.envelope(job());
        c.nodes[1].handle(c.now, wall(c.now), Input::Message(forged));
        c.drain();
        assert!(c.transfers.is_empty(), "a clone order from a peer");
        let real = c.nodes[0].out.envelope(job());
        c.nodes[1].handle(c.now, wall(c.now), Input::Message(real));
        c.drain();
        let [(1, op)] = c.transfers[..] else {
            panic!("{:?}", c.transfers)
        };
        assert_ne!(op & STORE_OP, 0, "a store's operation");
        // Its result goes back to the authority as the job's.
        c.sent.clear();
        c.nodes[1].handle(c.now, wall(c.now), Input::TransferDone { op, ok: true });
        c.drain();
        let done: Vec<_> = c
            .sent
            .iter()
            .filter(|(from, to, m)| {
                *from == 1 && *to == addr(0) && matches!(m, Message::CloneDone { job: 4, ok: true })
            })
            .collect();
        assert_eq!(done.len(), 1, "{:?}", c.sent);
        // An answer from a peer is not the authority's.
        let p = add(&mut c, Roles::PRISM);
        c.run_for(Duration::from_secs(3));
        let request = crate::io::ClientRequest::Delete { hash: h };
        c.inputs.push_back((p, Input::Client { id: 8, request }));
        c.down.insert(0);
        c.run_for(Duration::from_millis(10));
        let req = c
            .sent
            .iter()
            .rev()
            .find_map(|(from, _, m)| match m {
                Message::Ask { req, .. } if *from == p => Some(*req),
                _ => None,
            })
            .expect("asked");
        let answer = Message::Answer {
            req,
            answer: Box::new(crate::message::Answer::Done),
        };
        let forged = c.nodes[1].out.envelope(answer.clone());
        c.nodes[p].handle(c.now, wall(c.now), Input::Message(forged));
        c.drain();
        assert!(c.replies.is_empty(), "{:?}", c.replies);
        let real = c.nodes[0].out.envelope(answer);
        c.nodes[p].handle(c.now, wall(c.now), Input::Message(real));
        c.drain();
        assert_eq!(c.replies, [(p, 8, ClientResponse::Deleted)]);
    }

    #[test]
    fn a_start_told_to_leave_before_it_joined_joins_no_more_and_leaves_if_it_was_registered() {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(2));
        let p = add(&mut c, Roles::PRISM);
        // Its first join is on the way when it is told to leave.
        c.drain();
        c.nodes[p].handle(c.now, wall(c.now), Input::Leave);
        c.nodes[0].handle(c.now, wall(c.now), Input::Leave);
        c.run_for(Duration::from_secs(3));
        let sent_by = |c: &Cluster, f: fn(&Message) -> bool| {
            c.sent
                .iter()
                .filter(|(from, _, m)| *from == p && f(m))
                .count()
        };
        assert_eq!(sent_by(&c, |m| matches!(m, Message::Join { .. })), 1);
        assert_eq!(sent_by(&c, |m| matches!(m, Message::Leaving { .. })), 1);
        let id = c.nodes[p].id();
        let state = c.nodes[0].authority().unwrap().state();
        assert!(
            state.has_left(id) && state.is_down(id),
            "left, not voted down"
        );
        assert!(
            !c.sent
                .iter()
                .any(|(from, _, m)| *from == 0 && matches!(m, Message::Leaving { .. })),
            "the authority does not leave itself"
        );
        // A start whose join never got through: only the join it sent at
        // its start, no retry, nothing to leave.
        let q = add(&mut c, Roles::PRISM);
        c.down.insert(0);
        c.nodes[q].handle(c.now, wall(c.now), Input::Leave);
        c.run_for(Duration::from_secs(2));
        let from_q: Vec<_> = c.sent.iter().filter(|(from, _, _)| *from == q).collect();
        assert_eq!(from_q.len(), 1, "{from_q:?}");
        assert!(matches!(from_q[0].2, Message::Join { .. }));
    }

    #[test]
    fn a_node_describes_its_own_start() {
        let mut c = Cluster::new(2);
        c.run_for(Duration::from_secs(2));
        let n = &c.nodes[1];
        let info = n.info();
        assert_eq!(info.id, n.id());
        assert_eq!(info.addr, addr(1));
        assert_eq!(info.roles, Roles::STORE);
        assert_eq!(info.zone, Zone::new("z"));
        assert_eq!(info.weight, n.config().weight);
        assert_eq!(info.incarnation, 1);
        assert_eq!(n.incarnation(), 1);
        assert_eq!(n.config().addr, addr(1));
        assert!(n.store_role().is_some() && n.prism_role().is_none());
        assert!(n.authority().is_none() && c.nodes[0].authority().is_some());
        let debug = format!("{n:?}");
        assert!(debug.contains(&format!("{:?}", n.id())) && debug.contains("joined: true"));
        assert_eq!(n.clock_offset_us(), 0, "every clock agrees");
        let now = c.now;
        c.nodes[1].handle(now, wall(now), Input::Tick);
        assert_eq!(c.nodes[1].wall(), wall(now));
    }

    #[test]
    fn a_node_not_joined_wakes_for_its_next_attempt() {
        let mut c = Cluster::new(1);
        let p = add(&mut c, Roles::PRISM);
        c.down.insert(0);
        c.drain();
        let retry = c.nodes[p].config().join_retry;
        assert_eq!(c.nodes[p].poll_timeout(), Some(c.now + retry));
        let joins = c
            .sent
            .iter()
            .filter(|(from, _, m)| *from == p && matches!(m, Message::Join { .. }))
            .count();
        assert_eq!(joins, 1);
    }
}
