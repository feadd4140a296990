//! The content oracles, checked on every client answer and at the end:
//!
//! - a ready prism never answers "not found" (or "expired") for a valid,
//!   unexpired purchase, nor "not found" for its content while an intact
//!   copy has been durable long enough for the inventory to know it;
//! - expired, removed and made-up purchases stop delivering within a bound
//!   (removals: for prisms connected to the authority);
//! - delivery never goes to a store the prism sees down while it sees a live
//!   copy, nor to a store crashed long ago while another copy is up;
//! - delivered bytes are the uploaded bytes;
//! - at the end: no acknowledged upload is lost unless W of its stores were
//!   permanently lost; repair has restored R intact copies; the inventory
//!   lists every intact copy, and every copy it lists on a running store is
//!   there and intact; no valid acknowledged purchase is missing.

use crate::clients::{Clients, Op, Pending};
use crate::clock::SimClock;
use crate::oracle::{Oracle, ViolationKind};
use crate::world::World;
use std::collections::BTreeSet;
use stretchfs_core::hash::ContentHash;
use stretchfs_core::{ClientError, ClientResponse, Duration, NodeId, Time};
use stretchfs_transport_sim::HostId;

impl Oracle {
    /// Checks one answer to a client. Returns a store whose copy turned out
    /// to be corrupt when the client fetched it (the store's read check
    /// catches it; the caller tells the store).
    pub fn on_client_reply(
        &mut self,
        w: &World,
        clients: &mut Clients,
        prism: HostId,
        pending: Pending,
        response: &ClientResponse,
    ) -> Option<(HostId, ContentHash)> {
        let now = w.now;
        use ClientResponse as R;
        match (&pending.op, response) {
            (_, R::Error(e @ ClientError::NotReady)) => {
                clients.stats.not_ready += 1;
                self.on_refusal(w, clients, prism, &pending, e);
            }
            (_, R::Error(e @ ClientError::Unavailable(_))) => {
                clients.stats.unavailable += 1;
                self.on_refusal(w, clients, prism, &pending, e);
            }
            (Op::Upload { .. }, R::Uploaded { hash, copies, .. }) => {
                clients.record_upload(*hash, copies.clone(), now, pending.issued_at, prism);
            }
            (Op::Purchase { life, .. }, R::Purchase(p)) => {
                let bounds = (
                    SimClock::EXACT.wall(pending.issued_at) + *life,
                    SimClock::EXACT.wall(now) + *life,
                );
                self.check_expiry_stated(now, prism, p, bounds);
                clients.record_purchase(p, bounds, now, prism);
            }
            (Op::Purchase { hash, .. }, R::Error(ClientError::NotFound(what))) => {
                clients.stats.not_found += 1;
                self.check_content_known(w, clients, prism, hash, what, pending.issued_at);
            }
            (Op::Delete { n }, R::Deleted) => clients.record_delete(*n, now),
            // An error leaves the outcome unknown: the delete may still run.
            (Op::Delete { .. }, R::Error(_)) => {}
            (Op::Remove { n }, R::Removed) => clients.record_removal(*n, now),
            (Op::Remove { n }, R::Error(ClientError::NotFound(_))) => {
                clients.stats.not_found += 1;
                self.check_revocable(w, clients, prism, *n);
            }
            (Op::Deliver { n, referrer }, R::Error(ClientError::Forbidden)) => {
                clients.stats.refused_referrers += 1;
                self.check_referrer(w, clients, prism, *n, *referrer, false);
            }
            (Op::Deliver { n, referrer }, R::Deliver { store, hash, .. }) => {
                clients.stats.deliveries_ok += 1;
                *clients.stats.delivered_by.entry(prism).or_default() += 1;
                self.check_referrer(w, clients, prism, *n, *referrer, true);
                self.check_valid_delivery(w, clients, prism, *n, pending.issued_at);
                self.check_store_choice(w, prism, *store, hash);
                return self.fetch(w, clients, prism, *store, hash);
            }
            (Op::Unknown { token }, R::Deliver { .. }) => self.violate(
                now,
                ViolationKind::InvalidDelivery,
                format!("made-up token {token} was delivered by host {prism}"),
            ),
            (
                Op::Deliver { n, .. },
                R::Error(e @ (ClientError::NotFound(_) | ClientError::Expired)),
            ) => {
                if matches!(e, ClientError::Expired) {
                    clients.stats.expired += 1;
                } else {
                    clients.stats.not_found += 1;
                }
                self.check_not_found(w, clients, prism, *n, e, pending.issued_at);
            }
            (_, R::Error(ClientError::NotFound(_))) => clients.stats.not_found += 1,
            _ => {}
        }
        None
    }

    /// True time on the wall: expiry is judged against what the client
    /// asked for, not against any node's clock.
    fn true_wall(&self, w: &World) -> stretchfs_core::WallTime {
        SimClock::EXACT.wall(w.now)
    }

    /// The expiry stated to the client follows the life it asked for, by
    /// true time, within the clocks' allowed error.
    fn check_expiry_stated(
        &mut self,
        now: Time,
        prism: HostId,
        p: &stretchfs_core::purchase::Purchase,
        (earliest, latest): (stretchfs_core::WallTime, stretchfs_core::WallTime),
    ) {
        let slack = self.expiry_slack;
        if p.expires + slack < earliest || p.expires > latest + slack {
            self.violate(
                now,
                ViolationKind::ExpiryWrong,
                format!(
                    "host {prism} stated expiry {:?} for purchase {}, expected {:?}..{:?} by true time",
                    p.expires, p.token, earliest, latest
                ),
            );
        }
    }

    fn check_not_found(
        &mut self,
        w: &World,
        clients: &Clients,
        prism: HostId,
        n: usize,
        e: &ClientError,
        issued_at: Time,
    ) {
        let Some(p) = clients.purchases.get(n) else {
            return;
        };
        if p.removal_requested.is_some() {
            return; // Possibly removed: either answer is right.
        }
        let valid_until = p.expires_earliest - self.expiry_slack;
        if self.true_wall(w) >= valid_until {
            return; // Expired, or close enough that clocks may disagree.
        }
        // A purchase acknowledged just before the authority lost its state
        // survives only if a replica had it; its creating prism keeps it,
        // unless that prism lost its memory too.
        let creator = &w.hosts[p.created_by];
        let lost_with_creator = self
            .wipes
            .iter()
            .any(|t| *t >= p.acked_at && creator.last_impaired >= p.acked_at);
        if lost_with_creator {
            return;
        }
        self.measured.not_found_checks += 1;
        let what = match e {
            ClientError::Expired => "expired",
            ClientError::NotFound(what) => what,
            _ => "?",
        };
        if what == "content" {
            if !clients.must_exist(&p.hash) {
                return; // Deleted by a client (or maybe): "not found" is right.
            }
            // Only wrong if some store has held an intact copy long enough.
            let known = w.hosts.iter().any(|h| {
                h.node.is_some()
                    && h.content
                        .read(&p.hash)
                        .is_some_and(|c| issued_at.since(c.synced_at) > self.report_bound)
                    && h.content.intact(&p.hash)
            });
            if !known {
                return;
            }
        }
        self.violate(
            w.now,
            ViolationKind::FalseNotFound,
            format!(
                "host {prism} answered {what} for purchase {} (valid until {:?} true time)",
                p.token, p.expires
            ),
        );
    }

    /// Some store has held an intact copy of `hash` for longer than the
    /// inventory needs to hear of it (a wiped authority must answer
    /// "unavailable" until the stores have handed back what they hold).
    fn known_durable(&self, w: &World, hash: &ContentHash, issued_at: Time) -> bool {
        let held = w.hosts.iter().any(|h| {
            h.node.is_some()
                && h.content
                    .read(hash)
                    .is_some_and(|c| issued_at.since(c.synced_at) > self.report_bound)
                && h.content.intact(hash)
        });
        held
    }

    /// A purchase of an acknowledged upload that no client deleted must
    /// not hear "not found" (a restarted authority that has not heard of
    /// it yet must say so, not deny it).
    fn check_content_known(
        &mut self,
        w: &World,
        clients: &Clients,
        prism: HostId,
        hash: &ContentHash,
        what: &str,
        issued_at: Time,
    ) {
        let Some(u) = clients.upload(hash) else {
            return;
        };
        if what != "content" || u.acked_at > issued_at || !clients.must_exist(hash) {
            return;
        }
        if !self.known_durable(w, hash, issued_at) {
            return;
        }
        self.measured.not_found_checks += 1;
        self.violate(
            w.now,
            ViolationKind::FalseNotFound,
            format!(
                "host {prism} answered not found to a purchase of {hash}, uploaded (acknowledged at {}) and never deleted",
                u.acked_at
            ),
        );
    }

    /// Revoking an acknowledged, unexpired purchase (again, or a retry
    /// whose first answer was lost) is never "not found".
    fn check_revocable(&mut self, w: &World, clients: &Clients, prism: HostId, n: usize) {
        let Some(p) = clients.purchases.get(n) else {
            return;
        };
        if self.true_wall(w) + self.expiry_slack >= p.expires_earliest {
            return; // Expired (and perhaps pruned): either answer is right.
        }
        let creator = &w.hosts[p.created_by];
        let lost = self
            .wipes
            .iter()
            .any(|t| *t >= p.acked_at && creator.last_impaired >= p.acked_at);
        if lost {
            return;
        }
        self.violate(
            w.now,
            ViolationKind::FalseNotFound,
            format!(
                "host {prism} answered not found to revoking purchase {} (valid until {:?})",
                p.token, p.expires
            ),
        );
    }

    /// A purchase with a referrer list delivers to the referrers it allows
    /// and refuses the others; one without a list delivers to anyone.
    fn check_referrer(
        &mut self,
        w: &World,
        clients: &Clients,
        prism: HostId,
        n: usize,
        referrer: Option<&str>,
        delivered: bool,
    ) {
        let Some(p) = clients.purchases.get(n) else {
            return;
        };
        let allowed = p.referrers.is_empty() || referrer == Some(crate::clients::ALLOWED_REFERRER);
        if allowed == delivered {
            return;
        }
        let (kind, what) = if delivered {
            (ViolationKind::InvalidDelivery, "delivered")
        } else {
            (ViolationKind::FalseNotFound, "refused")
        };
        self.violate(
            w.now,
            kind,
            format!(
                "host {prism} {what} purchase {} to referrer {referrer:?} (allowed: {:?})",
                p.token, p.referrers
            ),
        );
    }

    fn check_valid_delivery(
        &mut self,
        w: &World,
        clients: &Clients,
        prism: HostId,
        n: usize,
        issued_at: Time,
    ) {
        let Some(p) = clients.purchases.get(n) else {
            return;
        };
        self.measured.delivery_checks += 1;
        if self.true_wall(w) > p.expires_latest + self.expiry_slack {
            self.violate(
                w.now,
                ViolationKind::InvalidDelivery,
                format!(
                    "host {prism} delivered purchase {} after it expired",
                    p.token
                ),
            );
        }
        let Some(removed) = p.removed_at else { return };
        let late = issued_at > removed + self.removal_bound;
        // Only a prism that could hear from the authority the whole time is
        // bound; a removal just before the authority lost its state may come
        // back from a replica that had not seen it.
        let ph = &w.hosts[prism];
        let connected = ph.stable_since() <= removed
            && w.clean(prism, 0)
            && w.hosts[0].stable_since() <= removed;
        let resurrectable = self
            .wipes
            .iter()
            .any(|t| *t >= removed.max(Time::ZERO + self.removal_bound) - self.removal_bound);
        if late && connected && !resurrectable {
            self.violate(
                w.now,
                ViolationKind::InvalidDelivery,
                format!(
                    "host {prism} delivered purchase {} {:?} after its removal was acknowledged",
                    p.token,
                    issued_at.since(removed)
                ),
            );
        }
    }

    fn check_store_choice(&mut self, w: &World, prism: HostId, store: NodeId, hash: &ContentHash) {
        let Some(node) = w.hosts[prism].node.as_ref() else {
            return;
        };
        let health = node.health();
        let Some(rec) = node.replica().state().inventory.get(hash) else {
            return;
        };
        let live_other = rec
            .stores
            .iter()
            .any(|s| *s != store && health.may_contact(*s));
        if !health.may_contact(store) && live_other {
            self.violate(
                w.now,
                ViolationKind::DeliveredFromDownStore,
                format!("host {prism} sent a client to {store}, which it sees down, while another copy is live"),
            );
            return;
        }
        // Ground truth: a store crashed long ago, while another holder runs.
        let Some(sh) = w.host_of(store) else { return };
        let s = &w.hosts[sh];
        let window = self.detection_bound + self.removal_bound;
        let long_dead = s.node.is_none() && w.now.since(s.last_impaired) > window;
        let prism_connected = w.now.since(w.hosts[prism].stable_since()) > window
            && w.clean(prism, 0)
            && w.now.since(w.hosts[0].stable_since()) > window;
        let other_up = rec.stores.iter().filter(|o| **o != store).any(|o| {
            w.host_of(*o)
                .is_some_and(|h| w.hosts[h].is_up() && w.hosts[h].content.intact(hash))
        });
        if long_dead && prism_connected && other_up {
            self.violate(
                w.now,
                ViolationKind::DeliveredFromDownStore,
                format!(
                    "host {prism} sent a client to {store}, crashed {:?} ago",
                    w.now.since(s.last_impaired)
                ),
            );
        }
    }

    /// The client fetches from the chosen store and checks the bytes.
    fn fetch(
        &mut self,
        w: &World,
        clients: &mut Clients,
        prism: HostId,
        store: NodeId,
        hash: &ContentHash,
    ) -> Option<(HostId, ContentHash)> {
        let sh = w.host_of(store)?;
        let s = &w.hosts[sh];
        let copy = s.content.read(hash).filter(|_| s.is_up());
        let Some(copy) = copy else {
            clients.stats.fetches_failed += 1;
            // The store runs, as the store the prism named, and has no copy
            // of content that must exist: the client hears "not found" for
            // a live purchase (a copy dropped before the prisms unlisted it).
            // Judged for prisms that have heard the authority all along: a
            // cut-off prism cannot know what was dropped meanwhile.
            let same_store = s.node.as_ref().is_some_and(|n| n.id() == store);
            let destroyed = self.destroyed.get(hash).copied().unwrap_or(0) > 0;
            let connected = w.clean(prism, 0)
                && w.now.since(w.hosts[prism].stable_since()) > self.removal_bound
                && w.now.since(w.hosts[0].stable_since()) > self.removal_bound;
            if same_store && s.is_up() && connected && clients.must_exist(hash) && !destroyed {
                self.violate(
                    w.now,
                    ViolationKind::FetchMissed,
                    format!(
                        "host {sh} ({store}) has no copy of {hash}, where a prism sent a client"
                    ),
                );
            }
            return None;
        };
        if !s.content.intact(hash) {
            // The store checks what it reads: the client gets an error, the
            // store learns its copy is bad.
            clients.stats.fetches_failed += 1;
            return Some((sh, *hash));
        }
        match clients.bytes_of(hash) {
            Some(expected) if **expected == *copy.bytes => clients.stats.fetches_ok += 1,
            _ => self.violate(
                w.now,
                ViolationKind::WrongBytes,
                format!("store host {sh} served bytes that are not the upload of {hash}"),
            ),
        }
        None
    }

    /// After the liveness phase: uploads, copies, inventory, purchases.
    pub fn check_content_final(&mut self, w: &World, clients: &Clients) {
        let Some(authority) = w.authority() else {
            return;
        };
        let state = authority.state();
        let running_stores: Vec<HostId> = (0..w.hosts.len())
            .filter(|h| {
                let host = &w.hosts[*h];
                !host.lost
                    && host.node.as_ref().is_some_and(|n| {
                        n.config().roles.store && !state.draining.contains(&n.id())
                    })
            })
            .collect();
        for u in &clients.uploads {
            if !clients.must_exist(&u.hash) {
                continue; // Deleted by a client since (or maybe).
            }
            self.measured.upload_checks += 1;
            let intact: Vec<HostId> = (0..w.hosts.len())
                .filter(|h| !w.hosts[*h].lost && w.hosts[*h].node.is_some())
                .filter(|h| w.hosts[*h].content.intact(&u.hash))
                .collect();
            let destroyed = self.destroyed.get(&u.hash).copied().unwrap_or(0);
            if intact.is_empty() {
                if destroyed < self.write_quorum {
                    self.violate(
                        w.now,
                        ViolationKind::UploadLost,
                        format!(
                            "upload {} (acknowledged at {}; {} copies destroyed by faults) has no intact copy",
                            u.hash, u.acked_at, destroyed
                        ),
                    );
                }
                continue;
            }
            let healthy = intact.iter().filter(|h| running_stores.contains(h)).count();
            let expected = self.replicas.min(running_stores.len());
            if intact.len() > self.replicas && running_stores.len() >= self.replicas {
                // Drains and repair have settled: the surplus is gone. (With
                // fewer than R undrained stores running a drain cannot end,
                // and the draining copies stay.)
                self.violate(
                    w.now,
                    ViolationKind::Overreplicated,
                    format!(
                        "{} has {} intact copies on running nodes, R is {}",
                        u.hash,
                        intact.len(),
                        self.replicas
                    ),
                );
            }
            if healthy < expected {
                self.violate(
                    w.now,
                    ViolationKind::Underreplicated,
                    format!(
                        "{} has {healthy} intact copies, expected {expected}",
                        u.hash
                    ),
                );
            }
            // Ground truth: the zones of the hosts that hold intact copies.
            let zone = |h: &HostId| w.hosts[*h].node.as_ref().map(|n| n.config().zone.clone());
            let zones: BTreeSet<_> = running_stores.iter().filter_map(zone).collect();
            let held: BTreeSet<_> = intact
                .iter()
                .filter(|h| running_stores.contains(h))
                .filter_map(zone)
                .collect();
            let spread = self.replicas.min(zones.len());
            if healthy >= expected && held.len() < spread {
                self.violate(
                    w.now,
                    ViolationKind::ZonesNotDistinct,
                    format!(
                        "{} has copies in {} zones of {} with running stores",
                        u.hash,
                        held.len(),
                        zones.len()
                    ),
                );
            }
            let listed: BTreeSet<NodeId> = state
                .inventory
                .get(&u.hash)
                .map(|r| r.stores.iter().copied().collect())
                .unwrap_or_default();
            for h in &intact {
                let id = w.hosts[*h].node.as_ref().map(|n| n.id());
                if id.is_some_and(|id| !listed.contains(&id)) {
                    self.violate(
                        w.now,
                        ViolationKind::InventoryMismatch,
                        format!(
                            "host {h} holds {} intact but the inventory does not list it",
                            u.hash
                        ),
                    );
                }
            }
        }
        self.check_listed_copies(w, state);
        self.check_removed(w, state);
        let wall = self.true_wall(w);
        for p in &clients.purchases {
            if p.removal_requested.is_some() || wall + self.expiry_slack >= p.expires_earliest {
                continue;
            }
            let creator = &w.hosts[p.created_by];
            let excused = self
                .wipes
                .iter()
                .any(|t| *t >= p.acked_at && creator.last_impaired >= p.acked_at);
            self.measured.purchase_checks += 1;
            if !excused && !state.purchases.contains_key(&p.token) {
                self.violate(
                    w.now,
                    ViolationKind::PurchaseLost,
                    format!(
                        "purchase {} acknowledged at {} is missing at the authority",
                        p.token, p.acked_at
                    ),
                );
            }
        }
        let _ = Duration::ZERO;
    }

    /// The authority agreed to remove `node`, whose host goes for good with
    /// its disks. Every upload no client deleted that it held must have R
    /// intact copies on other store hosts that are not gone (stopped ones
    /// count: they come back; so do draining ones: a drain moves its copies
    /// before it drops them, which its own oracle checks), except for copies the
    /// authority lists on stores it counts that a fault destroyed without
    /// its knowing yet (rotted and not yet scrubbed, or the store lost and
    /// not yet voted down).
    pub fn on_removed(&mut self, w: &World, clients: &Clients, host: HostId, node: NodeId) {
        self.removed.insert(node, w.now);
        self.retired.insert(node);
        self.measured.removals += 1;
        let state = w.authority().map(|a| a.state());
        for (hash, _) in w.hosts[host].content.listing() {
            if !w.hosts[host].content.intact(&hash) || !clients.must_exist(&hash) {
                continue;
            }
            self.measured.removal_checks += 1;
            let elsewhere = (0..w.hosts.len())
                .filter(|h| *h != host && !w.hosts[*h].lost)
                .filter(|h| w.cfg.hosts[*h].roles.store)
                .filter(|h| w.hosts[*h].content.intact(&hash))
                .count();
            let listed = state
                .and_then(|s| s.inventory.get(&hash).map(|r| (s, r)))
                .map(|(s, r)| {
                    // What the authority could have counted: no wider.
                    let counted = |id: &&NodeId| **id != node && s.copy_counts(**id);
                    r.stores.iter().filter(counted).copied().collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let unnoticed = listed
                .iter()
                .filter(|id| {
                    w.node_hosts.get(id).is_none_or(|h| {
                        let s = &w.hosts[*h];
                        let same = s.disk.node() == Some(**id);
                        s.lost || !same || !s.content.intact(&hash)
                    })
                })
                .count();
            if elsewhere + unnoticed >= self.replicas {
                continue;
            }
            let (kind, what) = if elsewhere == 0 {
                (ViolationKind::UploadLost, "the last copy")
            } else {
                (ViolationKind::Underreplicated, "one of the last R copies")
            };
            self.violate(
                w.now,
                kind,
                format!(
                    "node {node} (host {host}) was removed holding {what} of {hash} \
                     ({elsewhere} intact elsewhere, {unnoticed} destroyed unnoticed)"
                ),
            );
        }
    }

    /// No trace of a removed node is left in what the authority publishes.
    fn check_removed(&mut self, w: &World, state: &stretchfs_core::state::ClusterState) {
        for node in self.removed.keys().copied().collect::<Vec<_>>() {
            let mut kept = Vec::new();
            if state.registry.contains(node) {
                kept.push("registered".to_string());
            }
            if let Some((s, _)) = state.observers.iter().find(|(_, o)| o.contains(&node)) {
                kept.push(format!("observer of {s}"));
            }
            if !state.observers_of(node).is_empty() {
                kept.push("observed".to_string());
            }
            if let Some((hash, _)) = state
                .inventory
                .iter()
                .find(|(_, r)| r.stores.contains(&node))
            {
                kept.push(format!("in the inventory of {hash}"));
            }
            if state.down.contains(&node) || state.has_left(node) {
                kept.push("published down".to_string());
            }
            if state.draining.contains(&node) {
                kept.push("draining".to_string());
            }
            if !kept.is_empty() {
                self.violate(
                    w.now,
                    ViolationKind::RemovedNodeKept,
                    format!("removed node {node} is still {}", kept.join(", ")),
                );
            }
        }
    }

    /// The other direction: every copy the inventory lists on a running
    /// store is there and intact (what the store lost, dropped or found
    /// rotten must have been reported and unlisted by now).
    fn check_listed_copies(&mut self, w: &World, state: &stretchfs_core::state::ClusterState) {
        for (hash, rec) in state.inventory.iter() {
            for store in &rec.stores {
                let Some(&h) = w.node_hosts.get(store) else {
                    self.violate(
                        w.now,
                        ViolationKind::InventoryMismatch,
                        format!("the inventory lists {hash} on {store}, which never ran"),
                    );
                    continue;
                };
                let host = &w.hosts[h];
                let running = host.node.as_ref().is_some_and(|n| n.id() == *store);
                if !running || host.lost {
                    continue; // Down or gone: repair's grace decides.
                }
                self.measured.listing_checks += 1;
                if !host.content.intact(&hash) {
                    self.violate(
                        w.now,
                        ViolationKind::InventoryMismatch,
                        format!("the inventory lists {hash} on host {h}, which has no intact copy"),
                    );
                }
            }
        }
    }
}
