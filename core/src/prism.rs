//! The prism role: the decisions behind the public API. Uploads are placed on
//! R stores and acknowledged after W durable copies; purchases are created
//! at the authority (durable before acknowledged); deliveries pick a live
//! store holding the content. A ready prism that misses locally asks the
//! authority before it ever answers "not found".

use crate::config::{ContentConfig, InjectedBugs};
use crate::content::{normalize_ext, ContentMeta, ContentRecord};
use crate::hash::ContentHash;
use crate::health::HealthView;
use crate::ids::NodeId;
use crate::io::{ClientError, ClientRequest, ClientResponse, Outbox, Output, TransferSource};
use crate::message::{Answer, Ask, Lookup, Message};
use crate::placement::{rank, Candidate};
use crate::purchase::{Denied, Purchase, Token, MAX_LIFE, MIN_LIFE};
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
        ext: String,
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
            ClientRequest::Detail { hash } => match ctx.state.inventory.get(&hash) {
                Some(rec) => reply(out, id, ClientResponse::Detail(rec.clone())),
                None => self.ask(ctx, id, Ask::ContentLookup { hash }, Then::Detail, out),
            },
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
                    Some(rec) => self.create_purchase(ctx, id, rec.hash, then, rng, out),
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
        let meta = match normalize_ext(&meta.ext) {
            Ok(ext) => ContentMeta { ext, ..meta },
            Err(e) => return fail(out, id, ClientError::BadRequest(e.to_string())),
        };
        // Content-addressed: already stored well enough means done, once
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
                    meta: meta.clone(),
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
                meta: u.meta.clone(),
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
            .get(&purchase.hash)
            .filter(|rec| !self.live_holders(ctx, rec).is_empty());
        match local {
            Some(rec) => self.pick_store(ctx, id, &purchase, rec, rng, out),
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
                ext: purchase.ext.clone(),
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
