//! The replicated cluster state: what the feed describes. The authority holds
//! the master copy; every node's replica is built from a snapshot plus entries.

use crate::feed::{Change, Snapshot};
use crate::hash::ContentHash;
use crate::ids::NodeId;
use crate::inventory::Inventory;
use crate::purchase::{Purchase, Token};
use crate::registry::Registry;
use crate::time::WallTime;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub registry: Registry,
    /// Observers assigned to each subject.
    pub observers: BTreeMap<NodeId, Vec<NodeId>>,
    /// Nodes the authority has published as down.
    pub down: BTreeSet<NodeId>,
    /// Reverse of `observers`: the subjects each node observes.
    observing: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Which stores hold which content.
    pub inventory: Inventory,
    pub purchases: BTreeMap<Token, Purchase>,
    /// Stores being drained.
    pub draining: BTreeSet<NodeId>,
    /// Content deleted by an admin (until uploaded again).
    pub deleted: BTreeSet<ContentHash>,
    /// Revoked purchases and when they would have expired.
    pub revoked: BTreeMap<Token, WallTime>,
    /// Nodes that left gracefully: down because they said so, not by votes.
    pub left: BTreeSet<NodeId>,
    /// Nodes an admin removed, with the start (incarnation) removed: a join
    /// from that start or an earlier one is stale; a later start is new.
    pub removed: BTreeMap<NodeId, u64>,
}

impl ClusterState {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::NodeUpserted(info) => {
                if self
                    .removed
                    .get(&info.id)
                    .is_some_and(|r| info.incarnation > *r)
                {
                    self.removed.remove(&info.id);
                }
                self.registry.upsert(info.clone());
            }
            Change::NodeRemoved(id) => {
                if let Some(info) = self.registry.get(*id) {
                    self.removed.insert(*id, info.incarnation);
                }
                self.registry.remove(*id);
                self.set_observers(*id, Vec::new());
                self.down.remove(id);
                self.left.remove(id);
                self.draining.remove(id);
                self.inventory.retain(|_, rec| {
                    rec.stores.remove(id);
                    !rec.stores.is_empty()
                });
            }
            Change::Observers { subject, observers } => {
                self.set_observers(*subject, observers.clone());
            }
            Change::Health { node, down } => {
                if *down {
                    self.down.insert(*node);
                } else {
                    self.down.remove(node);
                }
            }
            Change::ContentDeleted { hash } => {
                self.inventory.remove(hash);
                self.deleted.insert(*hash);
            }
            Change::ContentStored { hash, store, meta } => {
                self.deleted.remove(hash);
                self.inventory.entry_or(hash, *meta).stores.insert(*store);
            }
            Change::ContentDropped { hash, store } => {
                self.drop_copy(*hash, *store);
            }
            Change::PurchaseCreated(p) => {
                self.purchases.insert(p.token, p.clone());
            }
            Change::PurchaseRemoved { token } => {
                if let Some(p) = self.purchases.remove(token) {
                    self.revoked.insert(*token, p.expires);
                }
            }
            Change::PurchaseExpired { token } => {
                self.purchases.remove(token);
            }
            Change::TombstonesExpired { until } => {
                self.revoked.retain(|_, expires| *expires > *until);
            }
            Change::Draining { node, draining } => {
                if *draining {
                    self.draining.insert(*node);
                } else {
                    self.draining.remove(node);
                }
            }
            Change::Revoked { token, expires } => {
                if !self.purchases.contains_key(token) {
                    self.revoked.insert(*token, *expires);
                }
            }
            Change::Left { node, left } => {
                if *left {
                    self.left.insert(*node);
                    self.down.insert(*node);
                } else {
                    self.left.remove(node);
                }
            }
        }
    }

    /// Leaves out the inventory and the purchases (with their deletions and
    /// tombstones): what `Change::is_content` changes.
    pub fn strip_content(&mut self) {
        self.inventory = Inventory::default();
        self.purchases.clear();
        self.deleted.clear();
        self.revoked.clear();
    }

    /// How many records the state holds (what a snapshot of it writes).
    pub fn records(&self) -> u64 {
        (self.registry.len()
            + self.inventory.len()
            + self.purchases.len()
            + self.revoked.len()
            + self.deleted.len()) as u64
    }

    /// Whether `id` left gracefully and has not joined again.
    pub fn has_left(&self, id: NodeId) -> bool {
        self.left.contains(&id)
    }

    /// Whether the start `incarnation` of `id` (or an earlier one) was
    /// removed by an admin.
    pub fn was_removed(&self, id: NodeId, incarnation: u64) -> bool {
        self.removed.get(&id).is_some_and(|r| incarnation <= *r)
    }

    fn drop_copy(&mut self, hash: ContentHash, store: NodeId) {
        if let Some(rec) = self.inventory.get_mut(&hash) {
            rec.stores.remove(&store);
            if rec.stores.is_empty() {
                self.inventory.remove(&hash);
            }
        }
    }

    /// The content `store` holds according to the inventory (a scan of
    /// every record: see `Inventory::held_by`).
    pub fn held_by(&self, store: NodeId) -> impl Iterator<Item = ContentHash> + '_ {
        self.inventory.held_by(store)
    }

    fn set_observers(&mut self, subject: NodeId, observers: Vec<NodeId>) {
        let old = if observers.is_empty() {
            self.observers.remove(&subject)
        } else {
            self.observers.insert(subject, observers)
        };
        for o in old.iter().flatten() {
            if let Some(set) = self.observing.get_mut(o) {
                set.remove(&subject);
                if set.is_empty() {
                    self.observing.remove(o);
                }
            }
        }
        for o in self.observers.get(&subject).into_iter().flatten() {
            self.observing.entry(*o).or_default().insert(subject);
        }
    }

    pub fn is_down(&self, id: NodeId) -> bool {
        self.down.contains(&id)
    }

    /// Whether a copy on `store` counts toward R: the store is registered
    /// as a store, not draining and not published down. The one rule for
    /// "under-replicated" (status) and for what repair restores (which also
    /// waits out a grace period before a down store's copy is lost).
    pub fn copy_counts(&self, store: NodeId) -> bool {
        self.registry.get(store).is_some_and(|i| i.roles.store)
            && !self.draining.contains(&store)
            && !self.is_down(store)
    }

    /// Content with fewer than `r` copies that count.
    pub fn under_replicated(&self, r: usize) -> usize {
        self.inventory
            .values()
            .filter(|rec| rec.stores.iter().filter(|s| self.copy_counts(**s)).count() < r)
            .count()
    }

    pub fn observers_of(&self, subject: NodeId) -> &[NodeId] {
        self.observers.get(&subject).map_or(&[], |v| v.as_slice())
    }

    /// Subjects that `observer` is assigned to probe.
    pub fn subjects_of(&self, observer: NodeId) -> Vec<NodeId> {
        self.observing
            .get(&observer)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    pub fn snapshot(&self, seq: u64) -> Snapshot {
        Snapshot {
            seq,
            nodes: self.registry.iter().cloned().collect(),
            observers: self
                .observers
                .iter()
                .map(|(s, o)| (*s, o.clone()))
                .collect(),
            down: self.down.iter().copied().collect(),
            inventory: self.inventory.records().collect(),
            purchases: self.purchases.values().cloned().collect(),
            draining: self.draining.iter().copied().collect(),
            deleted: self.deleted.iter().copied().collect(),
            revoked: self.revoked.iter().map(|(t, e)| (*t, *e)).collect(),
            left: self.left.iter().copied().collect(),
            removed: self.removed.iter().map(|(n, i)| (*n, *i)).collect(),
        }
    }

    pub fn from_snapshot(snap: &Snapshot) -> ClusterState {
        let mut state = ClusterState::default();
        for info in &snap.nodes {
            state.registry.upsert(info.clone());
        }
        for (s, o) in &snap.observers {
            state.set_observers(*s, o.clone());
        }
        state.down = snap.down.iter().copied().collect();
        for rec in &snap.inventory {
            state.inventory.insert(
                rec.hash,
                crate::inventory::Holding {
                    meta: rec.meta,
                    stores: rec.stores.clone(),
                },
            );
        }
        for p in &snap.purchases {
            state.purchases.insert(p.token, p.clone());
        }
        state.draining = snap.draining.iter().copied().collect();
        state.deleted = snap.deleted.iter().copied().collect();
        state.revoked = snap.revoked.iter().copied().collect();
        state.left = snap.left.iter().copied().collect();
        state.removed = snap.removed.iter().copied().collect();
        state
    }

    /// Names the parts in which two states differ (for diagnostics).
    pub fn differences(&self, other: &ClusterState) -> Vec<String> {
        let mut d = Vec::new();
        if self.registry != other.registry {
            d.push("registry".to_string());
        }
        if self.observers != other.observers {
            d.push("observers".to_string());
        }
        if self.down != other.down {
            d.push(format!("down {:?} vs {:?}", self.down, other.down));
        }
        if self.inventory != other.inventory {
            let a: BTreeSet<_> = self.inventory.keys().collect();
            let b: BTreeSet<_> = other.inventory.keys().collect();
            let differing = self
                .inventory
                .iter()
                .filter(|(h, r)| other.inventory.get(h).is_some_and(|o| o != *r))
                .count();
            d.push(format!(
                "inventory: {} only here, {} only there, {} records differ",
                a.difference(&b).count(),
                b.difference(&a).count(),
                differing
            ));
        }
        if self.purchases != other.purchases {
            let a: BTreeSet<_> = self.purchases.keys().collect();
            let b: BTreeSet<_> = other.purchases.keys().collect();
            d.push(format!(
                "purchases: {:?} only here, {:?} only there",
                a.difference(&b).collect::<Vec<_>>(),
                b.difference(&a).collect::<Vec<_>>()
            ));
        }
        if self.draining != other.draining {
            d.push("draining".to_string());
        }
        if self.deleted != other.deleted {
            d.push("deleted".to_string());
        }
        if self.left != other.left {
            d.push(format!("left {:?} vs {:?}", self.left, other.left));
        }
        if self.removed != other.removed {
            d.push(format!("removed {:?} vs {:?}", self.removed, other.removed));
        }
        if self.revoked != other.revoked {
            d.push(format!(
                "revoked: {} vs {}",
                self.revoked.len(),
                other.revoked.len()
            ));
        }
        d
    }

    /// Order-independent fingerprint used to compare replicas with the
    /// authority (equal states have equal digests).
    pub fn digest(&self) -> u64 {
        use crate::rng::mix64;
        let mut h = 0u64;
        for n in self.registry.iter() {
            h = mix64(h ^ n.id.0);
            h = mix64(h ^ u64::from(n.addr.port()));
            for b in n.addr.ip().to_string().bytes().chain(n.zone.0.bytes()) {
                h = mix64(h ^ u64::from(b));
            }
            h = mix64(h ^ u64::from(n.roles.authority) ^ (u64::from(n.roles.store) << 1));
            h = mix64(h ^ (u64::from(n.roles.prism) << 2) ^ (u64::from(n.weight) << 8));
            h = mix64(h ^ n.incarnation);
        }
        for (s, obs) in &self.observers {
            h = mix64(h ^ s.0 ^ 0x5151);
            for o in obs {
                h = mix64(h ^ o.0);
            }
        }
        for d in &self.down {
            h = mix64(h ^ d.0 ^ 0xd0d0);
        }
        for (hash, rec) in self.inventory.iter() {
            h = mix64(h ^ hash.key64() ^ rec.meta.size);
            for b in rec.meta.ext.bytes() {
                h = mix64(h ^ u64::from(b));
            }
            for s in &rec.stores {
                h = mix64(h ^ s.0 ^ 0x5707e);
            }
        }
        for p in self.purchases.values() {
            h = mix64(h ^ p.token.0 as u64 ^ (p.token.0 >> 64) as u64);
            h = mix64(h ^ p.hash.key64() ^ p.expires.as_micros());
            for b in p.ext.bytes() {
                h = mix64(h ^ u64::from(b));
            }
            h = mix64(h ^ p.referrers.len() as u64);
            for r in &p.referrers {
                // The length first: ["ab"] and ["a", "b"] differ.
                h = mix64(h ^ r.len() as u64);
                for b in r.bytes() {
                    h = mix64(h ^ u64::from(b));
                }
            }
        }
        for d in &self.draining {
            h = mix64(h ^ d.0 ^ 0xd7a1);
        }
        for d in &self.deleted {
            h = mix64(h ^ d.key64() ^ 0xde1);
        }
        for (t, e) in &self.revoked {
            h = mix64(h ^ t.0 as u64 ^ e.as_micros() ^ 0x7e7);
        }
        for l in &self.left {
            h = mix64(h ^ l.0 ^ 0x1ef7);
        }
        for (n, i) in &self.removed {
            h = mix64(h ^ n.0 ^ 0x7e0d);
            h = mix64(h ^ i);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeInfo, Roles, Zone};

    fn info(id: u64) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: format!("10.0.0.{id}:7000").parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new("z"),
            weight: 100,
            incarnation: 0,
        }
    }

    #[test]
    fn snapshot_round_trip_preserves_state_and_digest() {
        let mut s = ClusterState::default();
        for c in [
            Change::NodeUpserted(info(1)),
            Change::NodeUpserted(info(2)),
            Change::Observers {
                subject: NodeId(1),
                observers: vec![NodeId(2)],
            },
            Change::Health {
                node: NodeId(2),
                down: true,
            },
        ] {
            s.apply(&c);
        }
        let back = ClusterState::from_snapshot(&s.snapshot(4));
        assert_eq!(back.digest(), s.digest());
        assert_eq!(back.down, s.down);
        assert_eq!(back.observers, s.observers);
        assert_eq!(s.subjects_of(NodeId(2)), vec![NodeId(1)]);
        assert_eq!(back.subjects_of(NodeId(2)), vec![NodeId(1)]);
        s.apply(&Change::Observers {
            subject: NodeId(1),
            observers: vec![],
        });
        assert!(s.subjects_of(NodeId(2)).is_empty());
    }

    #[test]
    fn inventory_and_purchases_apply_and_survive_a_snapshot() {
        use crate::content::ContentMeta;
        use crate::hash::{ContentHash, HashKind};
        use crate::purchase::{Purchase, Token};

        use crate::time::WallTime;
        let h = ContentHash::compute(HashKind::Sha1, b"a");
        let meta = ContentMeta {
            ext: crate::content::Ext::lit("txt"),
            size: 1,
        };
        let mut s = ClusterState::default();
        s.apply(&Change::NodeUpserted(info(1)));
        s.apply(&Change::NodeUpserted(info(2)));
        for store in [1, 2] {
            s.apply(&Change::ContentStored {
                hash: h,
                store: NodeId(store),
                meta,
            });
        }
        s.apply(&Change::PurchaseCreated(Purchase {
            token: Token(1),
            hash: h,
            ext: crate::content::Ext::lit("txt"),
            expires: WallTime::from_secs(5),
            referrers: vec![],
        }));
        assert_eq!(s.inventory[&h].stores.len(), 2);
        let back = ClusterState::from_snapshot(&s.snapshot(9));
        assert_eq!(back.digest(), s.digest());
        assert_eq!(back.held_by(NodeId(2)).count(), 1);
        s.apply(&Change::ContentDropped {
            hash: h,
            store: NodeId(1),
        });
        assert_eq!(s.held_by(NodeId(1)).count(), 0);
        s.apply(&Change::NodeRemoved(NodeId(2)));
        assert!(s.inventory.is_empty(), "last copy gone, record gone");
        s.apply(&Change::PurchaseRemoved { token: Token(1) });
        assert!(s.purchases.is_empty());
        assert_eq!(s.revoked.get(&Token(1)), Some(&WallTime::from_secs(5)));
        s.apply(&Change::TombstonesExpired {
            until: WallTime::from_secs(5),
        });
        assert!(s.revoked.is_empty());
        assert_ne!(back.digest(), s.digest());
    }

    #[test]
    fn removing_a_node_clears_its_verdict_and_observers() {
        let mut s = ClusterState::default();
        s.apply(&Change::NodeUpserted(info(1)));
        s.apply(&Change::Health {
            node: NodeId(1),
            down: true,
        });
        let before = s.digest();
        s.apply(&Change::NodeRemoved(NodeId(1)));
        assert!(!s.is_down(NodeId(1)));
        assert!(s.registry.is_empty());
        assert_ne!(before, s.digest());
    }
}

#[cfg(test)]
mod inventory_model {
    //! The inventory (records, the per-store index, deletions) against a
    //! plain map of hash -> stores.

    use super::*;
    use crate::content::ContentMeta;
    use crate::hash::{ContentHash, HashKind};
    use proptest::prelude::*;
    use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

    #[derive(Clone, Debug)]
    enum Op {
        Stored { h: u8, s: u8 },
        Dropped { h: u8, s: u8 },
        Deleted { h: u8 },
        StoreRemoved { s: u8 },
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        copies: BTreeMap<u8, BTreeSet<u8>>,
        deleted: BTreeSet<u8>,
    }

    fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    fn change(op: &Op) -> Change {
        let meta = ContentMeta {
            ext: crate::content::Ext::lit("bin"),
            size: 1,
        };
        match *op {
            Op::Stored { h, s } => Change::ContentStored {
                hash: hash(h),
                store: NodeId(u64::from(s)),
                meta,
            },
            Op::Dropped { h, s } => Change::ContentDropped {
                hash: hash(h),
                store: NodeId(u64::from(s)),
            },
            Op::Deleted { h } => Change::ContentDeleted { hash: hash(h) },
            Op::StoreRemoved { s } => Change::NodeRemoved(NodeId(u64::from(s))),
        }
    }

    struct InventoryModel;

    impl ReferenceStateMachine for InventoryModel {
        type State = Model;
        type Transition = Op;

        fn init_state() -> BoxedStrategy<Model> {
            Just(Model::default()).boxed()
        }

        fn transitions(_: &Model) -> BoxedStrategy<Op> {
            prop_oneof![
                5 => (0u8..6, 0u8..4).prop_map(|(h, s)| Op::Stored { h, s }),
                3 => (0u8..6, 0u8..4).prop_map(|(h, s)| Op::Dropped { h, s }),
                1 => (0u8..6).prop_map(|h| Op::Deleted { h }),
                1 => (0u8..4).prop_map(|s| Op::StoreRemoved { s }),
            ]
            .boxed()
        }

        fn apply(mut m: Model, op: &Op) -> Model {
            match *op {
                Op::Stored { h, s } => {
                    m.copies.entry(h).or_default().insert(s);
                    m.deleted.remove(&h);
                }
                Op::Dropped { h, s } => {
                    if let Some(set) = m.copies.get_mut(&h) {
                        set.remove(&s);
                    }
                }
                Op::Deleted { h } => {
                    m.copies.remove(&h);
                    m.deleted.insert(h);
                }
                Op::StoreRemoved { s } => {
                    for set in m.copies.values_mut() {
                        set.remove(&s);
                    }
                }
            }
            m.copies.retain(|_, set| !set.is_empty());
            m
        }
    }

    impl StateMachineTest for InventoryModel {
        type SystemUnderTest = ClusterState;
        type Reference = InventoryModel;

        fn init_test(_: &Model) -> ClusterState {
            ClusterState::default()
        }

        fn apply(mut state: ClusterState, _: &Model, op: Op) -> ClusterState {
            state.apply(&change(&op));
            state
        }

        fn check_invariants(state: &ClusterState, m: &Model) {
            let got: BTreeMap<u8, BTreeSet<u8>> = (0u8..6)
                .filter_map(|h| {
                    let rec = state.inventory.get(&hash(h))?;
                    Some((h, rec.stores.iter().map(|s| s.0 as u8).collect()))
                })
                .collect();
            assert_eq!(got, m.copies);
            for s in 0u8..4 {
                let held: BTreeSet<ContentHash> = state.held_by(NodeId(u64::from(s))).collect();
                let want: BTreeSet<ContentHash> = m
                    .copies
                    .iter()
                    .filter(|(_, set)| set.contains(&s))
                    .map(|(h, _)| hash(*h))
                    .collect();
                assert_eq!(held, want, "index for store {s}");
            }
            let deleted: BTreeSet<ContentHash> = m.deleted.iter().map(|h| hash(*h)).collect();
            assert_eq!(state.deleted, deleted);
            let back = ClusterState::from_snapshot(&state.snapshot(0));
            assert_eq!(back.digest(), state.digest());
        }
    }

    prop_state_machine! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn inventory_matches_model(sequential 1..60 => InventoryModel);
    }

    proptest! {
        /// Applying a store's scan-and-diff to the authority's view of that
        /// store gives exactly the store's listing.
        #[test]
        fn diff_reconciles_both_directions(
            local in proptest::collection::btree_set(0u8..40, 0..30),
            authority in proptest::collection::btree_set(0u8..40, 0..30),
        ) {
            let meta = ContentMeta { ext: crate::content::Ext::lit("bin"), size: 1 };
            let local_map: BTreeMap<ContentHash, ContentMeta> =
                local.iter().map(|h| (hash(*h), meta)).collect();
            let auth: BTreeSet<ContentHash> = authority.iter().map(|h| hash(*h)).collect();
            let d = crate::store::diff(&local_map, auth.iter().copied());
            let mut view = auth.clone();
            for (h, _) in &d.new {
                prop_assert!(view.insert(*h), "reported new but already known");
            }
            for h in &d.missing {
                prop_assert!(view.remove(h), "reported missing but not known");
            }
            let want: BTreeSet<ContentHash> = local_map.keys().copied().collect();
            prop_assert_eq!(view, want);
        }
    }
}

#[cfg(test)]
pub(crate) mod field_tests {
    //! Each part of the state: how changes set it, what the queries read,
    //! and that snapshots, differences and the digest see all of it.

    use super::*;
    use crate::content::ContentMeta;
    use crate::hash::HashKind;
    use crate::ids::{NodeInfo, Roles, Zone};

    fn info(id: u64, roles: Roles, incarnation: u64) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            addr: format!("10.0.0.{id}:7000").parse().unwrap(),
            roles,
            zone: Zone::new(if id.is_multiple_of(2) { "a" } else { "b" }),
            weight: 100,
            incarnation,
        }
    }

    fn hash(h: u8) -> ContentHash {
        ContentHash::compute(HashKind::Sha1, &[h])
    }

    fn stored(h: u8, store: u64) -> Change {
        Change::ContentStored {
            hash: hash(h),
            store: NodeId(store),
            meta: ContentMeta {
                ext: crate::content::Ext::lit("bin"),
                size: 3,
            },
        }
    }

    fn purchase(t: u128, expires: u64) -> Purchase {
        Purchase {
            token: Token(t),
            hash: hash(0),
            ext: crate::content::Ext::lit("bin"),
            expires: WallTime::from_secs(expires),
            referrers: vec!["example.com".into()],
        }
    }

    /// A state with something in every part.
    pub(crate) fn rich() -> ClusterState {
        let mut s = ClusterState::default();
        let changes = [
            Change::NodeUpserted(info(1, Roles::AUTHORITY, 1)),
            Change::NodeUpserted(info(2, Roles::STORE, 1)),
            Change::NodeUpserted(info(3, Roles::STORE, 2)),
            Change::NodeUpserted(info(4, Roles::PRISM, 1)),
            Change::NodeUpserted(info(5, Roles::STORE, 1)),
            Change::NodeRemoved(NodeId(5)),
            Change::Observers {
                subject: NodeId(2),
                observers: vec![NodeId(3), NodeId(4)],
            },
            Change::Health {
                node: NodeId(3),
                down: true,
            },
            stored(0, 2),
            stored(0, 3),
            stored(1, 2),
            Change::ContentDeleted { hash: hash(2) },
            Change::PurchaseCreated(purchase(1, 100)),
            Change::Revoked {
                token: Token(2),
                expires: WallTime::from_secs(200),
            },
            Change::Draining {
                node: NodeId(2),
                draining: true,
            },
            Change::Left {
                node: NodeId(4),
                left: true,
            },
        ];
        for c in &changes {
            s.apply(c);
        }
        s
    }

    #[test]
    fn a_snapshot_restores_every_part_of_the_state() {
        let s = rich();
        let snap = s.snapshot(42);
        assert_eq!(snap.seq, 42);
        let back = ClusterState::from_snapshot(&snap);
        // The registry's membership counter is local: compare the members.
        assert!(back.registry.iter().eq(s.registry.iter()));
        let rest = ClusterState {
            registry: s.registry.clone(),
            ..back.clone()
        };
        assert_eq!(rest, s);
        assert_eq!(back.held_by(NodeId(2)).count(), 2);
        assert_eq!(back.subjects_of(NodeId(4)), [NodeId(2)]);
    }

    /// Variations of the rich state, each differing in one part, named.
    fn variations() -> Vec<(&'static str, ClusterState)> {
        let one = |c: Change| {
            let mut s = rich();
            s.apply(&c);
            s
        };
        vec![
            (
                "registry",
                one(Change::NodeUpserted(info(6, Roles::STORE, 1))),
            ),
            (
                "registry",
                one(Change::NodeUpserted(info(2, Roles::STORE, 2))),
            ),
            ("registry", {
                let mut i = info(2, Roles::STORE, 1);
                i.weight = 50;
                one(Change::NodeUpserted(i))
            }),
            ("registry", {
                let mut i = info(2, Roles::STORE, 1);
                i.zone = Zone::new("c");
                one(Change::NodeUpserted(i))
            }),
            (
                "registry",
                one(Change::NodeUpserted(info(2, Roles::PRISM, 1))),
            ),
            (
                "registry",
                one(Change::NodeUpserted(info(1, Roles::STORE, 1))),
            ),
            ("registry", {
                let mut i = info(2, Roles::STORE, 1);
                i.addr = "10.0.0.2:7001".parse().unwrap();
                one(Change::NodeUpserted(i))
            }),
            ("registry", {
                let mut i = info(2, Roles::STORE, 1);
                i.addr = "10.0.0.9:7000".parse().unwrap();
                one(Change::NodeUpserted(i))
            }),
            (
                "observers",
                one(Change::Observers {
                    subject: NodeId(2),
                    observers: vec![NodeId(3)],
                }),
            ),
            (
                "observers",
                one(Change::Observers {
                    subject: NodeId(3),
                    observers: vec![NodeId(2)],
                }),
            ),
            (
                "down",
                one(Change::Health {
                    node: NodeId(3),
                    down: false,
                }),
            ),
            ("inventory", one(stored(1, 3))),
            ("inventory", one(stored(3, 2))),
            (
                "inventory",
                one(Change::ContentDropped {
                    hash: hash(0),
                    store: NodeId(3),
                }),
            ),
            ("purchases", one(Change::PurchaseCreated(purchase(3, 100)))),
            ("purchases", one(Change::PurchaseCreated(purchase(1, 101)))),
            ("purchases", {
                let mut p = purchase(1, 100);
                p.referrers.clear();
                one(Change::PurchaseCreated(p))
            }),
            ("purchases", {
                let mut p = purchase(1, 100);
                p.hash = hash(1);
                one(Change::PurchaseCreated(p))
            }),
            ("purchases", {
                let mut p = purchase(1, 100);
                p.ext = crate::content::Ext::lit("mp4");
                one(Change::PurchaseCreated(p))
            }),
            ("purchases", {
                let mut p = purchase(1, 100);
                p.referrers = vec!["example.org".into()];
                one(Change::PurchaseCreated(p))
            }),
            (
                "draining",
                one(Change::Draining {
                    node: NodeId(3),
                    draining: true,
                }),
            ),
            ("deleted", one(Change::ContentDeleted { hash: hash(4) })),
            (
                "revoked",
                one(Change::Revoked {
                    token: Token(9),
                    expires: WallTime::from_secs(200),
                }),
            ),
            (
                "revoked",
                one(Change::Revoked {
                    token: Token(2),
                    expires: WallTime::from_secs(201),
                }),
            ),
            (
                "left",
                one(Change::Left {
                    node: NodeId(4),
                    left: false,
                }),
            ),
        ]
    }

    #[test]
    fn differences_name_the_part_that_differs_and_nothing_else() {
        let base = rich();
        assert!(base.differences(&rich()).is_empty());
        for (part, s) in variations() {
            let d = s.differences(&base);
            assert_eq!(d.len(), 1, "{part}: {d:?}");
            assert!(d[0].starts_with(part), "{part}: {d:?}");
        }
        let mut removed = rich();
        removed.removed.insert(NodeId(7), 1);
        let d = removed.differences(&base);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("removed"), "{d:?}");
    }

    #[test]
    fn every_part_moves_the_digest() {
        let base = rich().digest();
        for (i, (part, s)) in variations().into_iter().enumerate() {
            assert_ne!(s.digest(), base, "{part} ({i})");
        }
        let mut removed = rich();
        removed.removed.insert(NodeId(7), 1);
        assert_ne!(removed.digest(), base, "removed");
        let mut again = rich();
        again.removed.insert(NodeId(5), 2);
        assert_ne!(again.digest(), base, "removed start");
        // Referrers are told apart by where one ends.
        let with = |referrers: [&str; 2]| {
            let mut p = purchase(1, 100);
            p.referrers = referrers.iter().map(|r| r.to_string()).collect();
            let mut s = rich();
            s.apply(&Change::PurchaseCreated(p));
            s.digest()
        };
        assert_ne!(with(["ab", "c"]), with(["a", "bc"]));
    }

    /// Digests are compared across nodes, which may run different builds
    /// during an upgrade: the formula changes only on purpose.
    #[test]
    fn the_digest_formula_is_pinned() {
        assert_eq!(ClusterState::default().digest(), 0);
        assert_eq!(rich().digest(), 8_686_547_327_253_490_051);
    }

    #[test]
    fn a_removed_start_stays_removed_until_a_later_start_registers() {
        let mut s = rich();
        assert_eq!(s.removed.get(&NodeId(5)), Some(&1));
        assert!(s.was_removed(NodeId(5), 0));
        assert!(s.was_removed(NodeId(5), 1));
        assert!(!s.was_removed(NodeId(5), 2));
        assert!(!s.was_removed(NodeId(2), 1), "never removed");
        s.apply(&Change::NodeUpserted(info(5, Roles::STORE, 1)));
        assert!(s.removed.contains_key(&NodeId(5)), "the same start");
        s.apply(&Change::NodeUpserted(info(5, Roles::STORE, 2)));
        assert!(!s.removed.contains_key(&NodeId(5)));
        assert!(s.registry.contains(NodeId(5)));
    }

    #[test]
    fn removing_a_node_clears_everything_it_was_part_of() {
        let mut s = rich();
        s.apply(&Change::Left {
            node: NodeId(2),
            left: true,
        });
        s.apply(&Change::NodeRemoved(NodeId(2)));
        assert!(!s.registry.contains(NodeId(2)));
        assert!(s.observers_of(NodeId(2)).is_empty());
        assert!(s.subjects_of(NodeId(3)).is_empty());
        assert!(!s.is_down(NodeId(2)) && !s.has_left(NodeId(2)));
        assert!(!s.draining.contains(&NodeId(2)));
        assert_eq!(s.held_by(NodeId(2)).count(), 0);
        assert!(!s.inventory.contains_key(&hash(1)), "its only copy");
        let rec = &s.inventory[&hash(0)];
        assert_eq!(rec.stores.iter().copied().collect::<Vec<_>>(), [NodeId(3)]);
        // Removing an unknown node records no removal.
        s.apply(&Change::NodeRemoved(NodeId(9)));
        assert!(!s.removed.contains_key(&NodeId(9)));
    }

    #[test]
    fn health_left_and_draining_set_and_clear() {
        let mut s = rich();
        assert!(s.is_down(NodeId(3)) && !s.is_down(NodeId(2)));
        assert!(
            s.has_left(NodeId(4)) && s.is_down(NodeId(4)),
            "left is down"
        );
        s.apply(&Change::Left {
            node: NodeId(4),
            left: false,
        });
        assert!(!s.has_left(NodeId(4)));
        assert!(s.is_down(NodeId(4)), "up only by a verdict");
        s.apply(&Change::Draining {
            node: NodeId(2),
            draining: false,
        });
        assert!(s.draining.is_empty());
    }

    #[test]
    fn a_copy_counts_on_a_registered_store_not_draining_nor_down() {
        let mut s = rich();
        s.apply(&Change::NodeUpserted(info(6, Roles::STORE, 1)));
        assert!(s.copy_counts(NodeId(6)));
        assert!(!s.copy_counts(NodeId(2)), "draining");
        assert!(!s.copy_counts(NodeId(3)), "down");
        assert!(!s.copy_counts(NodeId(4)), "a prism");
        assert!(!s.copy_counts(NodeId(9)), "unknown");
        // Content 0 on 2 (draining) and 3 (down), 1 on 2: none counts.
        assert_eq!(s.under_replicated(1), 2);
        s.apply(&stored(1, 6));
        assert_eq!(s.under_replicated(1), 1);
        assert_eq!(s.under_replicated(2), 2);
        s.apply(&stored(0, 6));
        assert_eq!(s.under_replicated(1), 0);
        assert_eq!(s.under_replicated(0), 0);
    }

    #[test]
    fn a_revocation_handed_back_does_not_hide_a_live_purchase() {
        let mut s = rich();
        s.apply(&Change::Revoked {
            token: Token(1),
            expires: WallTime::from_secs(100),
        });
        assert!(!s.revoked.contains_key(&Token(1)));
        assert!(s.purchases.contains_key(&Token(1)));
        s.apply(&Change::PurchaseExpired { token: Token(1) });
        assert!(s.purchases.is_empty());
        assert!(!s.revoked.contains_key(&Token(1)), "expired, not revoked");
        s.apply(&Change::TombstonesExpired {
            until: WallTime::from_secs(199),
        });
        assert!(s.revoked.contains_key(&Token(2)), "not yet");
    }

    #[test]
    fn stored_content_is_no_longer_deleted() {
        let mut s = rich();
        assert!(s.deleted.contains(&hash(2)));
        s.apply(&stored(2, 2));
        assert!(!s.deleted.contains(&hash(2)));
        s.apply(&Change::ContentDeleted { hash: hash(0) });
        assert!(!s.inventory.contains_key(&hash(0)));
        assert_eq!(s.held_by(NodeId(3)).count(), 0);
        assert_eq!(s.held_by(NodeId(2)).count(), 2, "1 and 2");
    }
}
