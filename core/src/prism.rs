//! The prism role: the decisions behind the public API. Uploads are placed on
//! R stores and acknowledged after W durable copies; purchases are created
//! at the authority (durable before acknowledged); deliveries pick a live
//! store holding the content. A ready prism that misses locally asks the
//! authority before it ever answers "not found".

use crate::config::{ContentConfig, InjectedBugs};
use crate::content::{normalize_ext, ContentMeta, ContentRecord, Ext, MAX_EXISTS_HASHES};
use crate::hash::ContentHash;
use crate::health::HealthView;
use crate::ids::NodeId;
use crate::io::{ClientError, ClientRequest, ClientResponse, Outbox, Output, TransferSource};
use crate::message::{Answer, Ask, Lookup, Message};
use crate::placement::{rank, Candidate};
use crate::purchase::{check_referrers, Denied, Purchase, Token, MAX_LIFE, MIN_LIFE};
use crate::rng::Rng;
use crate::state::ClusterState;
use crate::time::{earliest, Time, WallTime};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Everything a prism decision may read, for one input.
pub struct PrismCtx<'a> {
    pub now: Time,
    pub wall: WallTime,
    pub ready: bool,
    pub state: &'a ClusterState,
    pub health: HealthView<'a>,
    pub authority: SocketAddr,
}

/// What to do with the authority's answer.
#[derive(Clone, Debug)]
enum Then {
    /// The bytes went to the stores: acknowledge what the authority
    /// recorded, if that is W copies.
    Uploaded {
        hash: ContentHash,
        size: u64,
    },
    /// The replica says it is stored already: acknowledge if the authority
    /// agrees, else store it.
    AlreadyStored {
        hash: ContentHash,
        meta: ContentMeta,
    },
    Detail,
    Exists,
    Deleted,
    PurchaseContent {
        ext: Ext,
        life: crate::time::Duration,
        referrers: Vec<String>,
    },
    PurchaseCreated,
    GetPurchase,
    Removed,
    DeliverPurchase {
        referrer: Option<String>,
    },
    DeliverContent {
        purchase: Purchase,
    },
    Drained,
    NodeRemoved,
}

#[derive(Clone, Debug)]
struct PendingAsk {
    client: u64,
    ask: Ask,
    then: Then,
    retry_at: Time,
    deadline: Time,
}

#[derive(Clone, Debug)]
struct Upload {
    hash: ContentHash,
    meta: ContentMeta,
    ranked: Vec<(NodeId, SocketAddr)>,
    next: usize,
    in_flight: usize,
    copies: Vec<NodeId>,
    /// When the first copy was durable: the authority may drop a copy of
    /// deleted content that no placement claimed for `orphan_wait`.
    first_copy_at: Option<Time>,
    done: bool,
}

#[derive(Debug)]
pub struct PrismRole {
    cfg: ContentConfig,
    bugs: InjectedBugs,
    uploads: BTreeMap<u64, Upload>,
    transfers: BTreeMap<u64, (u64, NodeId)>,
    asks: BTreeMap<u64, PendingAsk>,
    next_op: u64,
    next_req: u64,
    /// Purchases this prism created that its replica has not seen yet: if
    /// the authority loses its state now, this prism hands them back.
    created: BTreeMap<Token, Purchase>,
}

fn reply(out: &mut Outbox, id: u64, response: ClientResponse) {
    out.queue.push_back(Output::Reply { id, response });
}

fn fail(out: &mut Outbox, id: u64, e: ClientError) {
    reply(out, id, ClientResponse::Error(e));
}

impl PrismRole {
    /// Request ids start at `incarnation << 32`, so the authority never
    /// mistakes a request of this run for one of an earlier run.
    pub fn new(cfg: ContentConfig, bugs: InjectedBugs, incarnation: u64) -> PrismRole {
        PrismRole {
            cfg,
            bugs,
            uploads: BTreeMap::new(),
            transfers: BTreeMap::new(),
            asks: BTreeMap::new(),
            next_op: 0,
            next_req: (incarnation & 0x3fff_ffff) << 32,
            created: BTreeMap::new(),
        }
    }

    pub fn created(&self) -> impl Iterator<Item = &Purchase> {
        self.created.values()
    }

    /// Forgets created purchases the replica now knows about.
    pub fn forget_created(&mut self, known: impl Fn(&Token) -> bool) {
        if !self.created.is_empty() {
            self.created.retain(|t, _| !known(t));
        }
    }

    pub fn on_request(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        request: ClientRequest,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        if !ctx.ready {
            return fail(out, id, ClientError::NotReady);
        }
        match request {
            ClientRequest::Upload { hash, meta } => self.upload(ctx, id, hash, meta, out),
            ClientRequest::Detail { hash } => match ctx.state.inventory.record(&hash) {
                Some(rec) => reply(out, id, ClientResponse::Detail(rec)),
                None => self.ask(ctx, id, Ask::ContentLookup { hash }, Then::Detail, out),
            },
            ClientRequest::Exists { hashes } if hashes.len() > MAX_EXISTS_HASHES => {
                let why = format!("at most {MAX_EXISTS_HASHES} hashes per query");
                fail(out, id, ClientError::BadRequest(why))
            }
            ClientRequest::Exists { hashes } => {
                if hashes.iter().all(|h| ctx.state.inventory.contains_key(h)) {
                    let all = vec![true; hashes.len()];
                    reply(out, id, ClientResponse::Exists(all));
                } else {
                    self.ask(ctx, id, Ask::ContentExists { hashes }, Then::Exists, out);
                }
            }
            ClientRequest::Delete { hash } => {
                self.ask(ctx, id, Ask::ContentDelete { hash }, Then::Deleted, out)
            }
            ClientRequest::Purchase {
                hash,
                ext,
                life,
                referrers,
            } => {
                let ext = match normalize_ext(&ext) {
                    Ok(e) => e,
                    Err(e) => return fail(out, id, ClientError::BadRequest(e.to_string())),
                };
                if !(MIN_LIFE..=MAX_LIFE).contains(&life) {
                    let why = format!("life must be between {MIN_LIFE:?} and {MAX_LIFE:?}");
                    return fail(out, id, ClientError::BadRequest(why));
                }
                if let Err(why) = check_referrers(&referrers) {
                    return fail(out, id, ClientError::BadRequest(why));
                }
                let referrers = referrers
                    .iter()
                    .map(|r| r.trim().to_ascii_lowercase())
                    .filter(|r| !r.is_empty())
                    .collect();
                let then = Then::PurchaseContent {
                    ext,
                    life,
                    referrers,
                };
                match ctx.state.inventory.get(&hash) {
                    Some(_) => self.create_purchase(ctx, id, hash, then, rng, out),
                    None => self.ask(ctx, id, Ask::ContentLookup { hash }, then, out),
                }
            }
            ClientRequest::GetPurchase { token } => match ctx.state.purchases.get(&token) {
                Some(p) => reply(out, id, ClientResponse::Purchase(p.clone())),
                None => self.miss(
                    ctx,
                    id,
                    Ask::PurchaseLookup { token },
                    Then::GetPurchase,
                    "purchase",
                    out,
                ),
            },
            ClientRequest::RemovePurchase { token } => {
                self.ask(ctx, id, Ask::PurchaseRemove { token }, Then::Removed, out)
            }
            ClientRequest::Deliver { token, referrer } => {
                self.deliver(ctx, id, token, referrer, rng, out)
            }
            ClientRequest::Drain { node, draining } => {
                self.ask(ctx, id, Ask::Drain { node, draining }, Then::Drained, out)
            }
            ClientRequest::RemoveNode { node } => {
                self.ask(ctx, id, Ask::RemoveNode { node }, Then::NodeRemoved, out)
            }
        }
    }

    /// A local miss: ask the authority (never answer "not found" from a
    /// replica alone), unless the injected bug says otherwise.
    fn miss(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        ask: Ask,
        then: Then,
        what: &'static str,
        out: &mut Outbox,
    ) {
        if self.bugs.no_authority_fallback {
            return fail(out, id, ClientError::NotFound(what));
        }
        self.ask(ctx, id, ask, then, out);
    }

    fn upload(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        hash: ContentHash,
        meta: ContentMeta,
        out: &mut Outbox,
    ) {
        // The extension was checked where `meta` was made (`Ext` holds only
        // checked ones). Content-addressed: already stored well enough means done, once
        // the authority confirms it (the replica may not have seen a
        // deletion or a drop yet).
        if let Some(rec) = ctx.state.inventory.get(&hash) {
            let live: Vec<NodeId> = rec
                .stores
                .iter()
                .copied()
                .filter(|s| ctx.health.may_contact(*s))
                .collect();
            if live.len() >= self.quorum() {
                let ask = Ask::ContentPlaced {
                    hash,
                    meta,
                    stores: live,
                    transferred: false,
                };
                return self.ask(ctx, id, ask, Then::AlreadyStored { hash, meta }, out);
            }
        }
        self.store_copies(ctx, id, hash, meta, out);
    }

    /// Sends the upload to its R best-placed live stores.
    fn store_copies(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        hash: ContentHash,
        meta: ContentMeta,
        out: &mut Outbox,
    ) {
        let w = self.quorum();
        let candidates: Vec<Candidate<'_>> = ctx
            .state
            .registry
            .iter()
            .filter(|n| n.roles.store && !ctx.state.draining.contains(&n.id))
            .filter(|n| ctx.health.may_contact(n.id))
            .map(|n| Candidate {
                id: n.id,
                zone: &n.zone,
                weight: n.weight,
            })
            .collect();
        let ranked: Vec<(NodeId, SocketAddr)> = rank(&hash, &candidates, self.cfg.replicas)
            .into_iter()
            .filter_map(|s| ctx.state.registry.get(s).map(|i| (s, i.addr)))
            .collect();
        if ranked.len() < w {
            return fail(out, id, ClientError::Unavailable("not enough live stores"));
        }
        let mut u = Upload {
            hash,
            meta,
            ranked,
            next: 0,
            in_flight: 0,
            copies: Vec::new(),
            first_copy_at: None,
            done: false,
        };
        for _ in 0..self.cfg.replicas.min(u.ranked.len()) {
            self.start_transfer(id, &mut u, out);
        }
        self.uploads.insert(id, u);
    }

    fn quorum(&self) -> usize {
        if self.bugs.ack_after_one_copy {
            1
        } else {
            self.cfg.write_quorum
        }
    }

    fn start_transfer(&mut self, id: u64, u: &mut Upload, out: &mut Outbox) -> bool {
        let Some(&(store, addr)) = u.ranked.get(u.next) else {
            return false;
        };
        u.next += 1;
        u.in_flight += 1;
        self.next_op += 1;
        let op = self.next_op;
        self.transfers.insert(op, (id, store));
        out.queue.push_back(Output::Transfer {
            op,
            hash: u.hash,
            to: store,
            to_addr: addr,
            source: TransferSource::Spool,
            timeout: self.cfg.transfer_deadline(u.meta.size),
        });
        true
    }

    pub fn on_transfer_done(&mut self, ctx: &PrismCtx<'_>, op: u64, ok: bool, out: &mut Outbox) {
        let Some((id, store)) = self.transfers.remove(&op) else {
            return;
        };
        let Some(mut u) = self.uploads.remove(&id) else {
            return;
        };
        u.in_flight -= 1;
        if ok {
            u.copies.push(store);
            u.first_copy_at.get_or_insert(ctx.now);
        } else if !u.done {
            // Fail over to the next store in placement order.
            self.start_transfer(id, &mut u, out);
        }
        // A re-upload of deleted content placed too late to be sure its
        // first copy is still claimable (the authority drops unclaimed
        // copies of deleted content): not stored; the client retries.
        let late = ctx.state.deleted.contains(&u.hash)
            && u.first_copy_at
                .is_some_and(|t| ctx.now.since(t) + self.cfg.rpc_timeout >= self.cfg.orphan_wait());
        if !u.done && late && (u.copies.len() >= self.quorum() || u.in_flight == 0) {
            u.done = true;
            fail(
                out,
                id,
                ClientError::Unavailable("copies took too long; retry"),
            );
        } else if !u.done && u.copies.len() >= self.quorum() {
            u.done = true;
            let ask = Ask::ContentPlaced {
                hash: u.hash,
                meta: u.meta,
                stores: u.copies.clone(),
                transferred: true,
            };
            let then = Then::Uploaded {
                hash: u.hash,
                size: u.meta.size,
            };
            self.ask(ctx, id, ask, then, out);
        } else if !u.done && u.in_flight == 0 {
            u.done = true;
            fail(
                out,
                id,
                ClientError::Unavailable("could not store enough copies"),
            );
        }
        if u.in_flight > 0 {
            self.uploads.insert(id, u);
        }
    }

    fn create_purchase(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        hash: ContentHash,
        then: Then,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        let Then::PurchaseContent {
            ext,
            life,
            referrers,
        } = then
        else {
            return;
        };
        let token = Token((rng.next_u64() as u128) << 64 | rng.next_u64() as u128);
        let purchase = Purchase {
            token,
            hash,
            ext,
            expires: WallTime::default(),
            referrers,
        };
        self.ask(
            ctx,
            id,
            Ask::PurchaseCreate { purchase, life },
            Then::PurchaseCreated,
            out,
        );
    }

    fn deliver(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        token: Token,
        referrer: Option<String>,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        match ctx.state.purchases.get(&token) {
            Some(p) => self.deliver_purchase(ctx, id, p.clone(), referrer, rng, out),
            None => self.miss(
                ctx,
                id,
                Ask::PurchaseLookup { token },
                Then::DeliverPurchase { referrer },
                "purchase",
                out,
            ),
        }
    }

    fn deliver_purchase(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        purchase: Purchase,
        referrer: Option<String>,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        if !self.bugs.deliver_invalid_purchases {
            let check = match purchase.check(ctx.wall, referrer.as_deref()) {
                Err(Denied::Referrer) if self.bugs.ignore_referrers => Ok(()),
                other => other,
            };
            match check {
                Ok(()) => {}
                Err(Denied::Expired) => return fail(out, id, ClientError::Expired),
                Err(Denied::Referrer) => return fail(out, id, ClientError::Forbidden),
            }
        }
        let local = ctx
            .state
            .inventory
            .record(&purchase.hash)
            .filter(|rec| !self.live_holders(ctx, rec).is_empty());
        match local {
            Some(rec) => self.pick_store(ctx, id, &purchase, &rec, rng, out),
            None => {
                let hash = purchase.hash;
                self.ask(
                    ctx,
                    id,
                    Ask::ContentLookup { hash },
                    Then::DeliverContent { purchase },
                    out,
                )
            }
        }
    }

    fn live_holders(&self, ctx: &PrismCtx<'_>, rec: &ContentRecord) -> Vec<NodeId> {
        rec.stores
            .iter()
            .copied()
            .filter(|s| ctx.state.registry.contains(*s))
            .filter(|s| self.bugs.deliver_from_down_stores || ctx.health.may_contact(*s))
            .collect()
    }

    fn pick_store(
        &mut self,
        ctx: &PrismCtx<'_>,
        id: u64,
        purchase: &Purchase,
        rec: &ContentRecord,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        let live = self.live_holders(ctx, rec);
        if live.is_empty() {
            return fail(out, id, ClientError::Unavailable("no live copy"));
        }
        // Random among live holders spreads load over every copy.
        let store = live[rng.below(live.len() as u64) as usize];
        let Some(info) = ctx.state.registry.get(store) else {
            return fail(out, id, ClientError::Unavailable("no live copy"));
        };
        reply(
            out,
            id,
            ClientResponse::Deliver {
                store,
                addr: info.addr,
                hash: purchase.hash,
                ext: purchase.ext,
            },
        );
    }

    fn ask(&mut self, ctx: &PrismCtx<'_>, client: u64, ask: Ask, then: Then, out: &mut Outbox) {
        self.next_req += 1;
        let req = self.next_req;
        out.send(
            ctx.authority,
            Message::Ask {
                req,
                ask: Box::new(ask.clone()),
            },
        );
        self.asks.insert(
            req,
            PendingAsk {
                client,
                ask,
                then,
                retry_at: ctx.now + self.cfg.rpc_retry,
                deadline: ctx.now + self.cfg.rpc_timeout,
            },
        );
    }

    pub fn on_answer(
        &mut self,
        ctx: &PrismCtx<'_>,
        req: u64,
        answer: Answer,
        rng: &mut dyn Rng,
        out: &mut Outbox,
    ) {
        let Some(p) = self.asks.remove(&req) else {
            return; // A duplicate, or an answer after we gave up.
        };
        let id = p.client;
        use ClientResponse as R;
        match (p.then, answer) {
            (_, Answer::Refused(why)) => fail(out, id, ClientError::BadRequest(why)),
            (Then::Uploaded { hash, size }, Answer::Placed(copies)) => {
                if copies.len() >= self.quorum() {
                    reply(out, id, R::Uploaded { hash, size, copies })
                } else {
                    // A drop or deletion overtook the copies: not stored.
                    let why = "copies were dropped while placing; retry";
                    fail(out, id, ClientError::Unavailable(why))
                }
            }
            (Then::AlreadyStored { hash, meta }, Answer::Placed(copies)) => {
                if copies.len() >= self.quorum() {
                    let size = meta.size;
                    reply(out, id, R::Uploaded { hash, size, copies })
                } else {
                    self.store_copies(ctx, id, hash, meta, out)
                }
            }
            (_, Answer::Unavailable) => {
                fail(out, id, ClientError::Unavailable("authority is recovering"))
            }
            (Then::Detail, Answer::Content(l)) => match l {
                Lookup::Found(rec) => reply(out, id, R::Detail(rec)),
                Lookup::NotFound => fail(out, id, ClientError::NotFound("content")),
                Lookup::Unavailable => {
                    fail(out, id, ClientError::Unavailable("authority is recovering"))
                }
            },
            (Then::Exists, Answer::Exists(v)) => reply(out, id, R::Exists(v)),
            (Then::Deleted, Answer::Done) => reply(out, id, R::Deleted),
            (then @ Then::PurchaseContent { .. }, Answer::Content(l)) => match l {
                Lookup::Found(rec) => self.create_purchase(ctx, id, rec.hash, then, rng, out),
                Lookup::NotFound => fail(out, id, ClientError::NotFound("content")),
                Lookup::Unavailable => {
                    fail(out, id, ClientError::Unavailable("authority is recovering"))
                }
            },
            (Then::PurchaseCreated, Answer::Purchase(Lookup::Found(p))) => {
                self.created.insert(p.token, p.clone());
                reply(out, id, R::Purchase(p))
            }
            (Then::PurchaseCreated | Then::GetPurchase, Answer::Purchase(l)) => match l {
                Lookup::Found(p) => reply(out, id, R::Purchase(p)),
                Lookup::NotFound => fail(out, id, ClientError::NotFound("purchase")),
                Lookup::Unavailable => {
                    fail(out, id, ClientError::Unavailable("authority is recovering"))
                }
            },
            (Then::Removed, Answer::Removed(true)) => reply(out, id, R::Removed),
            (Then::Removed, Answer::Removed(false)) => {
                fail(out, id, ClientError::NotFound("purchase"))
            }
            (Then::DeliverPurchase { referrer }, Answer::Purchase(l)) => match l {
                Lookup::Found(p) => self.deliver_purchase(ctx, id, p, referrer, rng, out),
                Lookup::NotFound => fail(out, id, ClientError::NotFound("purchase")),
                Lookup::Unavailable => {
                    fail(out, id, ClientError::Unavailable("authority is recovering"))
                }
            },
            (Then::DeliverContent { purchase }, Answer::Content(l)) => match l {
                // Time passed while we asked: the purchase may have expired.
                Lookup::Found(_)
                    if !self.bugs.deliver_invalid_purchases && purchase.is_expired(ctx.wall) =>
                {
                    fail(out, id, ClientError::Expired)
                }
                Lookup::Found(rec) => self.pick_store(ctx, id, &purchase, &rec, rng, out),
                Lookup::NotFound => fail(out, id, ClientError::NotFound("content")),
                Lookup::Unavailable => fail(out, id, ClientError::Unavailable("no live copy")),
            },
            (Then::Drained, Answer::Done) => reply(out, id, R::Draining),
            (Then::NodeRemoved, Answer::Done) => reply(out, id, R::NodeRemoved),
            (_, other) => fail(
                out,
                id,
                ClientError::Unavailable(if matches!(other, Answer::Done) {
                    "unexpected answer"
                } else {
                    "authority answered something else"
                }),
            ),
        }
    }

    /// Re-sends unanswered asks and gives up on overdue ones.
    pub fn on_tick(&mut self, ctx: &PrismCtx<'_>, out: &mut Outbox) {
        let now = ctx.now;
        let overdue: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in overdue {
            if let Some(p) = self.asks.remove(&req) {
                // Uploads too: acknowledged only once the authority recorded
                // the copies, so a deletion cannot overtake them unseen.
                fail(
                    out,
                    p.client,
                    ClientError::Unavailable("authority unavailable"),
                );
            }
        }
        for (req, p) in self.asks.iter_mut() {
            if p.retry_at <= now {
                p.retry_at = now + self.cfg.rpc_retry;
                out.send(
                    ctx.authority,
                    Message::Ask {
                        req: *req,
                        ask: Box::new(p.ask.clone()),
                    },
                );
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = None;
        for p in self.asks.values() {
            next = earliest(next, Some(p.retry_at.min(p.deadline)));
        }
        next
    }

    /// Client requests still waiting for stores or the authority.
    pub fn in_progress(&self) -> usize {
        self.asks.len() + self.uploads.len()
    }
}

#[cfg(test)]
mod tests {
    //! The prism's decisions, driven directly: a replica state, the
    //! authority's answers and the stores' transfer results by hand.

    use super::*;
    use crate::config::PingConfig;
    use crate::feed::Change;
    use crate::hash::HashKind;
    use crate::ids::{NodeInfo, Roles, Zone};
    use crate::ping_net::PingNet;
    use crate::purchase::{MAX_REFERRERS, MAX_REFERRER_LEN};
    use crate::rng::SeededRng;
    use crate::time::Duration;

    const AUTHORITY: &str = "10.0.0.1:7000";
    const SEED: u64 = 7;

    struct Fixture {
        state: ClusterState,
        ping: PingNet,
        prism: PrismRole,
        rng: SeededRng,
        now: Time,
        wall: WallTime,
        ready: bool,
        out: Outbox,
        cfg: ContentConfig,
    }

    fn addr(id: u64) -> SocketAddr {
        ([10, 0, 0, id as u8], 7000).into()
    }

    fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    fn meta(size: u64) -> ContentMeta {
        ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size,
        }
    }

    fn ctx<'a>(
        f: &'a ClusterState,
        ping: &'a PingNet,
        now: Time,
        wall: WallTime,
        ready: bool,
    ) -> PrismCtx<'a> {
        PrismCtx {
            now,
            wall,
            ready,
            state: f,
            health: HealthView { state: f, ping },
            authority: AUTHORITY.parse().unwrap(),
        }
    }

    /// A ready prism (node 6, first start) with the authority (node 1)
    /// and stores 2..=5 in its replica.
    fn fixture() -> Fixture {
        let mut state = ClusterState::default();
        let roles = |id| match id {
            1 => Roles::AUTHORITY,
            6 => Roles::PRISM,
            _ => Roles::STORE,
        };
        for id in 1..=6u64 {
            state.apply(&Change::NodeUpserted(NodeInfo {
                id: NodeId(id),
                addr: addr(id),
                roles: roles(id),
                zone: Zone::new(if id.is_multiple_of(2) { "a" } else { "b" }),
                weight: 100,
                incarnation: 1,
            }));
        }
        let cfg = ContentConfig::default();
        let mut rng = SeededRng::new(SEED);
        let ping = PingNet::new(PingConfig::default(), InjectedBugs::default(), 1, &mut rng);
        Fixture {
            state,
            ping,
            prism: PrismRole::new(cfg.clone(), InjectedBugs::default(), 1),
            rng: SeededRng::new(SEED),
            now: Time::from_secs(10),
            wall: WallTime::from_secs(1_000),
            ready: true,
            out: Outbox::new(NodeId(6), addr(6)),
            cfg,
        }
    }

    impl Fixture {
        fn request(&mut self, id: u64, request: ClientRequest) -> Vec<Output> {
            let c = ctx(&self.state, &self.ping, self.now, self.wall, self.ready);
            self.prism
                .on_request(&c, id, request, &mut self.rng, &mut self.out);
            self.take()
        }

        fn answer(&mut self, req: u64, answer: Answer) -> Vec<Output> {
            let c = ctx(&self.state, &self.ping, self.now, self.wall, self.ready);
            self.prism
                .on_answer(&c, req, answer, &mut self.rng, &mut self.out);
            self.take()
        }

        fn done(&mut self, op: u64, ok: bool) -> Vec<Output> {
            let c = ctx(&self.state, &self.ping, self.now, self.wall, self.ready);
            self.prism.on_transfer_done(&c, op, ok, &mut self.out);
            self.take()
        }

        fn tick(&mut self) -> Vec<Output> {
            let c = ctx(&self.state, &self.ping, self.now, self.wall, self.ready);
            self.prism.on_tick(&c, &mut self.out);
            self.take()
        }

        /// Client request 1 (made anew by `request`) asked the authority,
        /// which answers not found, then unavailable: the client gets
        /// "not found: `what`", then "unavailable: `why`".
        fn misses_answer<T>(
            &mut self,
            request: impl Fn() -> ClientRequest,
            wrap: fn(Lookup<T>) -> Answer,
            (what, why): (&'static str, &'static str),
        ) {
            for (answer, e) in [
                (Lookup::NotFound, ClientError::NotFound(what)),
                (Lookup::Unavailable, ClientError::Unavailable(why)),
            ] {
                let (req, _) = the_ask(&self.request(1, request()));
                assert_eq!(reply_to_1(&self.answer(req, wrap(answer))), error(e));
            }
        }

        fn take(&mut self) -> Vec<Output> {
            self.out.queue.drain(..).collect()
        }

        fn store(&mut self, h: u8, stores: &[u64]) {
            for s in stores {
                self.state.apply(&Change::ContentStored {
                    hash: hash(h),
                    store: NodeId(*s),
                    meta: meta(1),
                });
            }
        }

        fn down(&mut self, node: u64) {
            self.state.apply(&Change::Health {
                node: NodeId(node),
                down: true,
            });
        }

        fn purchase(&mut self, token: u128, h: u8, expires: u64, referrers: &[&str]) -> Purchase {
            let p = Purchase {
                token: Token(token),
                hash: hash(h),
                ext: crate::content::Ext::lit("bin"),
                expires: WallTime::from_secs(expires),
                referrers: referrers.iter().map(|r| r.to_string()).collect(),
            };
            self.state.apply(&Change::PurchaseCreated(p.clone()));
            p
        }
    }

    fn replies(outs: &[Output]) -> Vec<(u64, ClientResponse)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Reply { id, response } => Some((*id, response.clone())),
                _ => None,
            })
            .collect()
    }

    /// The one reply to client request 1.
    fn reply_to_1(outs: &[Output]) -> ClientResponse {
        let r = replies(outs);
        assert_eq!(r.len(), 1, "{outs:?}");
        assert_eq!(r[0].0, 1);
        r[0].1.clone()
    }

    fn error(e: ClientError) -> ClientResponse {
        ClientResponse::Error(e)
    }

    /// Asks sent to the authority: (req, ask).
    fn asks(outs: &[Output]) -> Vec<(u64, Ask)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Send { to, envelope } => match &envelope.msg {
                    Message::Ask { req, ask } => {
                        assert_eq!(*to, AUTHORITY.parse().unwrap());
                        Some((*req, (**ask).clone()))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The one ask sent.
    fn the_ask(outs: &[Output]) -> (u64, Ask) {
        let a = asks(outs);
        assert_eq!(a.len(), 1, "{outs:?}");
        a[0].clone()
    }

    /// Transfers ordered: (op, store).
    fn transfers(outs: &[Output]) -> Vec<(u64, u64)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Transfer {
                    op,
                    to,
                    to_addr,
                    source,
                    ..
                } => {
                    assert_eq!(*to_addr, addr(to.0));
                    assert_eq!(*source, TransferSource::Spool);
                    Some((*op, to.0))
                }
                _ => None,
            })
            .collect()
    }

    fn upload(h: u8, size: u64) -> ClientRequest {
        ClientRequest::Upload {
            hash: hash(h),
            meta: meta(size),
        }
    }

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn a_prism_that_is_not_ready_answers_not_ready() {
        let mut f = fixture();
        f.ready = false;
        let outs = f.request(1, upload(0, 1));
        assert_eq!(reply_to_1(&outs), error(ClientError::NotReady));
        assert_eq!(f.prism.in_progress(), 0);
    }

    #[test]
    fn an_upload_goes_to_r_stores_and_is_acknowledged_once_the_authority_records_w() {
        let mut f = fixture();
        let outs = f.request(1, upload(0, 1 << 20));
        let t = transfers(&outs);
        assert_eq!(t.len(), f.cfg.replicas);
        assert_ne!(t[0].1, t[1].1);
        for (_, s) in &t {
            assert!((2..=5).contains(s), "a store");
        }
        let deadline = f.cfg.transfer_deadline(1 << 20);
        assert!(outs
            .iter()
            .all(|o| !matches!(o, Output::Transfer { timeout, .. } if *timeout != deadline)));
        assert!(replies(&outs).is_empty());
        assert_eq!(f.prism.in_progress(), 1);
        // One copy is not enough.
        assert!(f.done(t[0].0, true).is_empty());
        let outs = f.done(t[1].0, true);
        let (req, ask) = the_ask(&outs);
        assert_eq!(req, (1 << 32) + 1, "request ids start at the incarnation");
        let stores = ids(&[t[0].1, t[1].1]);
        assert_eq!(
            ask,
            Ask::ContentPlaced {
                hash: hash(0),
                meta: meta(1 << 20),
                stores: stores.clone(),
                transferred: true,
            }
        );
        assert_eq!(f.prism.in_progress(), 1, "the ask");
        let outs = f.answer(req, Answer::Placed(stores.clone()));
        let uploaded = ClientResponse::Uploaded {
            hash: hash(0),
            size: 1 << 20,
            copies: stores,
        };
        assert_eq!(reply_to_1(&outs), uploaded);
        assert_eq!(f.prism.in_progress(), 0);
        // A duplicate answer finds nothing waiting.
        assert!(f.answer(req, Answer::Placed(vec![])).is_empty());
    }

    #[test]
    fn an_upload_the_authority_records_short_of_w_is_not_acknowledged() {
        let mut f = fixture();
        let t = transfers(&f.request(1, upload(0, 1)));
        f.done(t[0].0, true);
        let (req, _) = the_ask(&f.done(t[1].0, true));
        let outs = f.answer(req, Answer::Placed(ids(&[t[0].1])));
        let why = "copies were dropped while placing; retry";
        assert_eq!(reply_to_1(&outs), error(ClientError::Unavailable(why)));
    }

    #[test]
    fn a_failed_copy_fails_over_to_the_next_store_in_placement_order() {
        let mut f = fixture();
        let t = transfers(&f.request(1, upload(0, 1)));
        let outs = f.done(t[0].0, false);
        let next = transfers(&outs);
        assert_eq!(next.len(), 1);
        assert!(!t.iter().any(|(_, s)| *s == next[0].1), "another store");
        assert!(f.done(t[1].0, true).is_empty(), "one copy so far");
        assert_eq!(f.prism.in_progress(), 1);
        let (_, ask) = the_ask(&f.done(next[0].0, true));
        let Ask::ContentPlaced { stores, .. } = ask else {
            panic!("{ask:?}")
        };
        assert_eq!(stores, ids(&[t[1].1, next[0].1]));
        // A result for a transfer nobody ordered changes nothing.
        assert!(f.done(999, true).is_empty());
    }

    #[test]
    fn a_copy_finishing_after_the_upload_was_acknowledged_is_let_go() {
        let mut f = fixture();
        f.prism.cfg.replicas = 3;
        let t = transfers(&f.request(1, upload(0, 1)));
        assert_eq!(t.len(), 3);
        f.done(t[0].0, true);
        let (req, _) = the_ask(&f.done(t[1].0, true));
        // The third fails: no failover for an upload that is done.
        assert!(f.done(t[2].0, false).is_empty());
        assert_eq!(f.prism.in_progress(), 1, "only the ask is left");
        f.answer(req, Answer::Placed(ids(&[t[0].1, t[1].1])));
        assert_eq!(f.prism.in_progress(), 0);
    }

    #[test]
    fn an_upload_needs_w_live_stores_that_are_not_draining() {
        let mut f = fixture();
        f.down(2);
        f.down(3);
        f.state.apply(&Change::Draining {
            node: NodeId(4),
            draining: true,
        });
        let outs = f.request(1, upload(0, 1));
        let e = error(ClientError::Unavailable("not enough live stores"));
        assert_eq!(reply_to_1(&outs), e);
        let mut f = fixture();
        f.down(2);
        f.down(3);
        let t = transfers(&f.request(1, upload(0, 1)));
        assert_eq!(t.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn an_upload_is_recorded_with_its_extension_normalized() {
        let mut f = fixture();
        let request = ClientRequest::Upload {
            hash: hash(0),
            meta: ContentMeta {
                ext: Ext::new(".MP4").expect("a good extension"),
                size: 1,
            },
        };
        let t = transfers(&f.request(1, request));
        f.done(t[0].0, true);
        let (_, ask) = the_ask(&f.done(t[1].0, true));
        let Ask::ContentPlaced { meta, .. } = ask else {
            panic!("{ask:?}")
        };
        assert_eq!(meta.ext, "mp4");
    }

    #[test]
    fn an_upload_with_a_bad_extension_cannot_be_made() {
        // `Ext` holds only checked extensions, so a bad one is refused where
        // a request is decoded, before any prism sees it.
        assert!(Ext::new("../x").is_err());
        let mut wire = crate::codec::encode_value(&ContentMeta {
            ext: Ext::lit("abcd"),
            size: 1,
        });
        let at = wire
            .iter()
            .position(|b| *b == b'a')
            .expect("the ext's bytes");
        wire[at..at + 4].copy_from_slice(b"../x");
        assert!(crate::codec::decode_value::<ContentMeta>(&wire).is_err());
    }

    #[test]
    fn content_stored_well_enough_is_confirmed_with_the_authority_not_sent_again() {
        let mut f = fixture();
        f.store(0, &[2, 3, 4]);
        f.down(4);
        let outs = f.request(1, upload(0, 1));
        assert!(transfers(&outs).is_empty());
        let (req, ask) = the_ask(&outs);
        assert_eq!(
            ask,
            Ask::ContentPlaced {
                hash: hash(0),
                meta: meta(1),
                stores: ids(&[2, 3]),
                transferred: false,
            }
        );
        let outs = f.answer(req, Answer::Placed(ids(&[2, 3])));
        let uploaded = ClientResponse::Uploaded {
            hash: hash(0),
            size: 1,
            copies: ids(&[2, 3]),
        };
        assert_eq!(reply_to_1(&outs), uploaded);
        // The authority knows fewer: stored afresh.
        let (req, _) = the_ask(&f.request(2, upload(0, 1)));
        let outs = f.answer(req, Answer::Placed(ids(&[2])));
        assert_eq!(transfers(&outs).len(), 2);
        assert!(replies(&outs).is_empty());
    }

    #[test]
    fn content_with_fewer_than_w_live_holders_is_stored_again() {
        let mut f = fixture();
        f.store(0, &[2, 3]);
        f.down(3);
        let outs = f.request(1, upload(0, 1));
        assert!(asks(&outs).is_empty());
        assert_eq!(transfers(&outs).len(), 2);
    }

    #[test]
    fn a_reupload_of_deleted_content_whose_copies_took_too_long_is_not_acknowledged() {
        // The authority drops unclaimed copies of deleted content after
        // `orphan_wait`; a claim must reach it well before.
        let limit = {
            let c = ContentConfig::default();
            c.orphan_wait() - c.rpc_timeout
        };
        for (after, late) in [(limit - Duration::from_millis(1), false), (limit, true)] {
            let mut f = fixture();
            f.state.apply(&Change::ContentDeleted { hash: hash(0) });
            let t = transfers(&f.request(1, upload(0, 1)));
            f.done(t[0].0, true);
            f.now += after;
            let outs = f.done(t[1].0, true);
            if late {
                let e = error(ClientError::Unavailable("copies took too long; retry"));
                assert_eq!(reply_to_1(&outs), e);
                assert!(asks(&outs).is_empty());
            } else {
                assert_eq!(asks(&outs).len(), 1, "{after:?}");
            }
        }
        // Content that was not deleted may take its time.
        let mut f = fixture();
        let t = transfers(&f.request(1, upload(0, 1)));
        f.done(t[0].0, true);
        f.now += limit * 2;
        assert_eq!(asks(&f.done(t[1].0, true)).len(), 1);
    }

    #[test]
    fn a_late_reupload_whose_last_copy_fails_is_answered_once() {
        let mut f = fixture();
        f.state.apply(&Change::ContentDeleted { hash: hash(0) });
        f.prism.cfg.replicas = 3;
        let t = transfers(&f.request(1, upload(0, 1)));
        f.done(t[0].0, true);
        f.now += Duration::from_secs(60);
        let outs = f.done(t[1].0, false);
        // Failed over (a fourth store), one copy, still late and in flight.
        let next = transfers(&outs);
        assert_eq!(next.len(), 1);
        assert_eq!(replies(&outs).len(), 0);
        // The second copy makes W, too late: refused, once.
        let outs = f.done(t[2].0, true);
        let e = error(ClientError::Unavailable("copies took too long; retry"));
        assert_eq!(reply_to_1(&outs), e);
        assert!(asks(&outs).is_empty());
        assert!(f.done(next[0].0, true).is_empty());
        assert_eq!(f.prism.in_progress(), 0);
    }

    #[test]
    fn detail_and_exists_answer_from_the_replica_and_ask_the_authority_on_a_miss() {
        let mut f = fixture();
        f.store(0, &[2]);
        let outs = f.request(1, ClientRequest::Detail { hash: hash(0) });
        let rec = f.state.inventory.record(&hash(0)).expect("stored");
        assert_eq!(reply_to_1(&outs), ClientResponse::Detail(rec.clone()));
        let outs = f.request(
            1,
            ClientRequest::Exists {
                hashes: vec![hash(0)],
            },
        );
        assert_eq!(reply_to_1(&outs), ClientResponse::Exists(vec![true]));
        // Misses.
        let (req, ask) = the_ask(&f.request(1, ClientRequest::Detail { hash: hash(1) }));
        assert_eq!(ask, Ask::ContentLookup { hash: hash(1) });
        let outs = f.answer(req, Answer::Content(Lookup::NotFound));
        assert_eq!(reply_to_1(&outs), error(ClientError::NotFound("content")));
        let (req, _) = the_ask(&f.request(1, ClientRequest::Detail { hash: hash(1) }));
        let outs = f.answer(req, Answer::Content(Lookup::Found(rec.clone())));
        assert_eq!(reply_to_1(&outs), ClientResponse::Detail(rec));
        let (req, _) = the_ask(&f.request(1, ClientRequest::Detail { hash: hash(1) }));
        let outs = f.answer(req, Answer::Content(Lookup::Unavailable));
        let e = error(ClientError::Unavailable("authority is recovering"));
        assert_eq!(reply_to_1(&outs), e);
        let hashes = vec![hash(0), hash(1)];
        let (req, ask) = the_ask(&f.request(
            1,
            ClientRequest::Exists {
                hashes: hashes.clone(),
            },
        ));
        assert_eq!(ask, Ask::ContentExists { hashes });
        let outs = f.answer(req, Answer::Exists(vec![true, false]));
        assert_eq!(reply_to_1(&outs), ClientResponse::Exists(vec![true, false]));
    }

    #[test]
    fn admin_asks_are_answered_with_what_the_authority_did() {
        let mut f = fixture();
        let cases = [
            (
                ClientRequest::Delete { hash: hash(0) },
                ClientResponse::Deleted,
            ),
            (
                ClientRequest::Drain {
                    node: NodeId(2),
                    draining: true,
                },
                ClientResponse::Draining,
            ),
            (
                ClientRequest::RemoveNode { node: NodeId(2) },
                ClientResponse::NodeRemoved,
            ),
        ];
        for (request, response) in cases {
            let (req, _) = the_ask(&f.request(1, request.clone()));
            assert_eq!(reply_to_1(&f.answer(req, Answer::Done)), response);
            let (req, _) = the_ask(&f.request(1, request));
            let outs = f.answer(req, Answer::Refused("no".into()));
            assert_eq!(
                reply_to_1(&outs),
                error(ClientError::BadRequest("no".into()))
            );
        }
        let (req, ask) = the_ask(&f.request(1, ClientRequest::RemovePurchase { token: Token(5) }));
        assert_eq!(ask, Ask::PurchaseRemove { token: Token(5) });
        assert_eq!(
            reply_to_1(&f.answer(req, Answer::Removed(true))),
            ClientResponse::Removed
        );
        let (req, _) = the_ask(&f.request(1, ClientRequest::RemovePurchase { token: Token(5) }));
        let outs = f.answer(req, Answer::Removed(false));
        assert_eq!(reply_to_1(&outs), error(ClientError::NotFound("purchase")));
        // An answer that fits no question.
        let (req, _) = the_ask(&f.request(1, ClientRequest::Detail { hash: hash(9) }));
        let outs = f.answer(req, Answer::Done);
        assert_eq!(
            reply_to_1(&outs),
            error(ClientError::Unavailable("unexpected answer"))
        );
        let (req, _) = the_ask(&f.request(1, ClientRequest::Detail { hash: hash(9) }));
        let outs = f.answer(req, Answer::Removed(true));
        let e = error(ClientError::Unavailable(
            "authority answered something else",
        ));
        assert_eq!(reply_to_1(&outs), e);
        let (req, _) = the_ask(&f.request(1, ClientRequest::Delete { hash: hash(9) }));
        let outs = f.answer(req, Answer::Unavailable);
        let e = error(ClientError::Unavailable("authority is recovering"));
        assert_eq!(reply_to_1(&outs), e);
    }

    fn purchase_request(h: u8, ext: &str, life: Duration, referrers: &[&str]) -> ClientRequest {
        ClientRequest::Purchase {
            hash: hash(h),
            ext: ext.into(),
            life,
            referrers: referrers.iter().map(|r| r.to_string()).collect(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_purchase_is_created_at_the_authority_with_a_random_token() {
        let mut f = fixture();
        f.store(0, &[2]);
        let outs = f.request(1, purchase_request(0, "MP4", HOUR, &[" Example.COM ", ""]));
        let (req, ask) = the_ask(&outs);
        let mut rng = SeededRng::new(SEED);
        let (hi, lo) = (rng.next_u64(), rng.next_u64());
        let token = Token((u128::from(hi) << 64) | u128::from(lo));
        let expected = Purchase {
            token,
            hash: hash(0),
            ext: crate::content::Ext::lit("mp4"),
            expires: WallTime::default(),
            referrers: vec!["example.com".into()],
        };
        assert_eq!(
            ask,
            Ask::PurchaseCreate {
                purchase: expected.clone(),
                life: HOUR,
            }
        );
        let created = Purchase {
            expires: f.wall + HOUR,
            ..expected
        };
        let outs = f.answer(req, Answer::Purchase(Lookup::Found(created.clone())));
        assert_eq!(reply_to_1(&outs), ClientResponse::Purchase(created.clone()));
        assert_eq!(f.prism.created().collect::<Vec<_>>(), [&created]);
        f.prism.forget_created(|t| *t != token);
        assert_eq!(f.prism.created().count(), 1, "not known yet");
        f.prism.forget_created(|t| *t == token);
        assert_eq!(f.prism.created().count(), 0);
    }

    #[test]
    fn a_purchase_of_content_the_replica_misses_asks_the_authority_first() {
        let mut f = fixture();
        let (req, ask) = the_ask(&f.request(1, purchase_request(0, "bin", HOUR, &[])));
        assert_eq!(ask, Ask::ContentLookup { hash: hash(0) });
        let rec = ContentRecord {
            hash: hash(0),
            meta: meta(1),
            stores: [NodeId(2)].into_iter().collect(),
        };
        let (_, ask) = the_ask(&f.answer(req, Answer::Content(Lookup::Found(rec))));
        assert!(matches!(ask, Ask::PurchaseCreate { purchase, .. } if purchase.hash == hash(0)));
        f.misses_answer(
            || purchase_request(0, "bin", HOUR, &[]),
            Answer::Content,
            ("content", "authority is recovering"),
        );
        // The authority's purchase answers.
        f.store(0, &[2]);
        f.misses_answer(
            || purchase_request(0, "bin", HOUR, &[]),
            Answer::Purchase,
            ("purchase", "authority is recovering"),
        );
        assert_eq!(f.prism.created().count(), 0);
    }

    #[test]
    fn a_purchase_with_a_bad_extension_or_life_is_refused_here() {
        let mut f = fixture();
        f.store(0, &[2]);
        for request in [
            purchase_request(0, "a/b", HOUR, &[]),
            purchase_request(0, "bin", MIN_LIFE - Duration::from_micros(1), &[]),
            purchase_request(0, "bin", MAX_LIFE + Duration::from_secs(1), &[]),
            purchase_request(0, "bin", HOUR, &["r.example"; MAX_REFERRERS + 1]),
            purchase_request(0, "bin", HOUR, &[&"x".repeat(MAX_REFERRER_LEN + 1)]),
        ] {
            let outs = f.request(1, request);
            assert!(asks(&outs).is_empty());
            assert!(
                matches!(
                    reply_to_1(&outs),
                    ClientResponse::Error(ClientError::BadRequest(_))
                ),
                "{outs:?}"
            );
        }
        for life in [MIN_LIFE, MAX_LIFE] {
            assert_eq!(
                asks(&f.request(1, purchase_request(0, "bin", life, &[]))).len(),
                1
            );
        }
        let longest = "x".repeat(MAX_REFERRER_LEN);
        let most = vec![longest.as_str(); MAX_REFERRERS];
        assert_eq!(
            asks(&f.request(1, purchase_request(0, "bin", HOUR, &most))).len(),
            1
        );
    }

    #[test]
    fn an_exists_query_of_too_many_hashes_is_refused_here() {
        let mut f = fixture();
        let hashes = (0..=MAX_EXISTS_HASHES).map(|i| hash(i as u8)).collect();
        let outs = f.request(1, ClientRequest::Exists { hashes });
        assert!(asks(&outs).is_empty());
        assert!(
            matches!(
                reply_to_1(&outs),
                ClientResponse::Error(ClientError::BadRequest(_))
            ),
            "{outs:?}"
        );
    }

    #[test]
    fn get_purchase_answers_from_the_replica_and_asks_on_a_miss() {
        let mut f = fixture();
        let p = f.purchase(5, 0, 2_000, &[]);
        let outs = f.request(1, ClientRequest::GetPurchase { token: Token(5) });
        assert_eq!(reply_to_1(&outs), ClientResponse::Purchase(p.clone()));
        let (req, ask) = the_ask(&f.request(1, ClientRequest::GetPurchase { token: Token(6) }));
        assert_eq!(ask, Ask::PurchaseLookup { token: Token(6) });
        let outs = f.answer(req, Answer::Purchase(Lookup::Found(p.clone())));
        assert_eq!(reply_to_1(&outs), ClientResponse::Purchase(p));
        assert_eq!(f.prism.created().count(), 0, "not one this prism created");
        let (req, _) = the_ask(&f.request(1, ClientRequest::GetPurchase { token: Token(6) }));
        let outs = f.answer(req, Answer::Purchase(Lookup::NotFound));
        assert_eq!(reply_to_1(&outs), error(ClientError::NotFound("purchase")));
        // With the injected bug the miss is answered from the replica.
        f.prism.bugs.no_authority_fallback = true;
        let outs = f.request(1, ClientRequest::GetPurchase { token: Token(6) });
        assert_eq!(reply_to_1(&outs), error(ClientError::NotFound("purchase")));
    }

    fn deliver(token: u128, referrer: Option<&str>) -> ClientRequest {
        ClientRequest::Deliver {
            token: Token(token),
            referrer: referrer.map(str::to_string),
        }
    }

    fn delivered_from(response: &ClientResponse) -> u64 {
        match response {
            ClientResponse::Deliver {
                store,
                addr: a,
                hash: h,
                ext,
            } => {
                assert_eq!(*a, addr(store.0));
                assert_eq!(*h, hash(0));
                assert_eq!(ext, "bin");
                store.0
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_goes_to_a_random_live_holder() {
        let mut f = fixture();
        f.store(0, &[2, 3, 4]);
        f.down(4);
        f.purchase(5, 0, 2_000, &[]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let outs = f.request(1, deliver(5, None));
            seen.insert(delivered_from(&reply_to_1(&outs)));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_delivery_never_goes_to_a_holder_that_left_the_registry() {
        let mut f = fixture();
        f.store(0, &[2, 9]);
        f.purchase(5, 0, 2_000, &[]);
        for _ in 0..20 {
            let outs = f.request(1, deliver(5, None));
            assert_eq!(delivered_from(&reply_to_1(&outs)), 2);
        }
    }

    #[test]
    fn a_delivery_checks_expiry_and_referrer() {
        let mut f = fixture();
        f.store(0, &[2]);
        f.purchase(5, 0, 2_000, &["example.com"]);
        let outs = f.request(1, deliver(5, Some("https://www.example.com/x")));
        assert_eq!(delivered_from(&reply_to_1(&outs)), 2);
        let outs = f.request(1, deliver(5, Some("https://evil.test/")));
        assert_eq!(reply_to_1(&outs), error(ClientError::Forbidden));
        let outs = f.request(1, deliver(5, None));
        assert_eq!(reply_to_1(&outs), error(ClientError::Forbidden));
        f.prism.bugs.ignore_referrers = true;
        let outs = f.request(1, deliver(5, None));
        assert_eq!(delivered_from(&reply_to_1(&outs)), 2);
        f.prism.bugs.ignore_referrers = false;
        f.wall = WallTime::from_secs(2_000);
        let outs = f.request(1, deliver(5, Some("https://example.com/")));
        assert_eq!(reply_to_1(&outs), error(ClientError::Expired));
    }

    #[test]
    fn a_delivery_the_replica_cannot_serve_asks_the_authority() {
        let mut f = fixture();
        f.store(0, &[2]);
        f.down(2);
        let p = f.purchase(5, 0, 2_000, &[]);
        // The only holder is down here: the authority may know another.
        let (req, ask) = the_ask(&f.request(1, deliver(5, None)));
        assert_eq!(ask, Ask::ContentLookup { hash: hash(0) });
        let rec = ContentRecord {
            hash: hash(0),
            meta: meta(1),
            stores: [NodeId(2), NodeId(3)].into_iter().collect(),
        };
        let outs = f.answer(req, Answer::Content(Lookup::Found(rec.clone())));
        assert_eq!(delivered_from(&reply_to_1(&outs)), 3);
        // It knows only the down one.
        let (req, _) = the_ask(&f.request(1, deliver(5, None)));
        let only_down = ContentRecord {
            stores: [NodeId(2)].into_iter().collect(),
            ..rec.clone()
        };
        let outs = f.answer(req, Answer::Content(Lookup::Found(only_down)));
        assert_eq!(
            reply_to_1(&outs),
            error(ClientError::Unavailable("no live copy"))
        );
        // It expired while we asked.
        let (req, _) = the_ask(&f.request(1, deliver(5, None)));
        f.wall = p.expires;
        let outs = f.answer(req, Answer::Content(Lookup::Found(rec)));
        assert_eq!(reply_to_1(&outs), error(ClientError::Expired));
        f.wall = WallTime::from_secs(1_000);
        f.misses_answer(
            || deliver(5, None),
            Answer::Content,
            ("content", "no live copy"),
        );
    }

    #[test]
    fn a_delivery_of_a_purchase_the_replica_misses_asks_for_it() {
        let mut f = fixture();
        f.store(0, &[3]);
        let p = Purchase {
            token: Token(5),
            hash: hash(0),
            ext: crate::content::Ext::lit("bin"),
            expires: WallTime::from_secs(2_000),
            referrers: vec![],
        };
        let (req, ask) = the_ask(&f.request(1, deliver(5, None)));
        assert_eq!(ask, Ask::PurchaseLookup { token: Token(5) });
        let outs = f.answer(req, Answer::Purchase(Lookup::Found(p.clone())));
        assert_eq!(delivered_from(&reply_to_1(&outs)), 3);
        let expired = Purchase {
            expires: f.wall,
            ..p
        };
        let (req, _) = the_ask(&f.request(1, deliver(5, None)));
        let outs = f.answer(req, Answer::Purchase(Lookup::Found(expired)));
        assert_eq!(reply_to_1(&outs), error(ClientError::Expired));
        f.misses_answer(
            || deliver(5, None),
            Answer::Purchase,
            ("purchase", "authority is recovering"),
        );
    }

    #[test]
    fn an_unanswered_ask_is_resent_every_retry_and_given_up_at_its_deadline() {
        let mut f = fixture();
        let start = f.now;
        let (req, ask) = the_ask(&f.request(1, ClientRequest::Delete { hash: hash(0) }));
        assert_eq!(f.prism.next_deadline(), Some(start + f.cfg.rpc_retry));
        f.now = start + f.cfg.rpc_retry - Duration::from_micros(1);
        assert!(f.tick().is_empty());
        f.now = start + f.cfg.rpc_retry;
        assert_eq!(the_ask(&f.tick()), (req, ask));
        assert_eq!(f.prism.next_deadline(), Some(f.now + f.cfg.rpc_retry));
        f.now = start + f.cfg.rpc_timeout - Duration::from_micros(1);
        assert_eq!(asks(&f.tick()).len(), 1);
        f.now = start + f.cfg.rpc_timeout;
        let outs = f.tick();
        let e = error(ClientError::Unavailable("authority unavailable"));
        assert_eq!(reply_to_1(&outs), e);
        assert!(asks(&outs).is_empty(), "given up, not resent");
        assert_eq!(f.prism.in_progress(), 0);
        assert_eq!(f.prism.next_deadline(), None);
        // A late answer finds nothing.
        assert!(f.answer(req, Answer::Done).is_empty());
    }

    #[test]
    fn the_next_deadline_is_the_earliest_of_every_ask() {
        let mut f = fixture();
        f.request(1, ClientRequest::Delete { hash: hash(0) });
        let first = f.now + f.cfg.rpc_retry;
        f.now += Duration::from_millis(50);
        f.request(2, ClientRequest::Delete { hash: hash(1) });
        assert_eq!(f.prism.next_deadline(), Some(first));
        assert_eq!(f.prism.in_progress(), 2);
        // Retry later than the deadline: the deadline comes first.
        let mut g = fixture();
        g.prism.cfg.rpc_retry = Duration::from_secs(60);
        g.request(1, ClientRequest::Delete { hash: hash(0) });
        assert_eq!(g.prism.next_deadline(), Some(g.now + g.cfg.rpc_timeout));
    }
}
