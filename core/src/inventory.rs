//! The inventory: which stores hold which content. Every node keeps one
//! (the authority's, and each replica's), so it is laid out for millions of
//! records: one map per hash kind keyed by the digest alone (20 bytes for
//! sha1, not the 65 of a `ContentHash`), the hash not repeated in the value,
//! the extension and the usual two holders inline. A record costs about
//! 70-100 bytes with the map's own overhead instead of the 600 it took as
//! `BTreeMap<ContentHash, ContentRecord>` plus a per-store index.
//!
//! Iteration is in `ContentHash` order (kind, then digest), as the map it
//! replaces iterated, so snapshots and digests are unchanged.

use crate::content::{ContentMeta, ContentRecord, StoreSet};
use crate::hash::{ContentHash, HashKind};
use crate::ids::NodeId;
use std::collections::BTreeMap;

/// What the inventory keeps for one piece of content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub meta: ContentMeta,
    pub stores: StoreSet,
}

type Map<const N: usize> = BTreeMap<[u8; N], Holding>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    sha1: Map<20>,
    sha224: Map<28>,
    sha256: Map<32>,
    sha384: Map<48>,
    sha512: Map<64>,
    md5: Map<16>,
}

/// The digest of `hash` as its kind's key. A `ContentHash` always holds
/// exactly its kind's digest length.
fn key<const N: usize>(hash: &ContentHash) -> [u8; N] {
    let mut k = [0u8; N];
    k.copy_from_slice(&hash.digest()[..N]);
    k
}

/// Runs `$body` with `$m` bound to `hash`'s map (through `$borrow`, `&` or
/// `&mut`) and `$k` to its key.
macro_rules! with_map {
    ($inv:expr, $hash:expr, |$m:ident, $k:ident| $body:expr, $($borrow:tt)+) => {{
        let hash: &ContentHash = $hash;
        match hash.kind() {
            HashKind::Sha1 => { let $m = $($borrow)+ $inv.sha1; let $k = key::<20>(hash); $body }
            HashKind::Sha224 => { let $m = $($borrow)+ $inv.sha224; let $k = key::<28>(hash); $body }
            HashKind::Sha256 => { let $m = $($borrow)+ $inv.sha256; let $k = key::<32>(hash); $body }
            HashKind::Sha384 => { let $m = $($borrow)+ $inv.sha384; let $k = key::<48>(hash); $body }
            HashKind::Sha512 => { let $m = $($borrow)+ $inv.sha512; let $k = key::<64>(hash); $body }
            HashKind::Md5 => { let $m = $($borrow)+ $inv.md5; let $k = key::<16>(hash); $body }
        }
    }};
}

fn tagged<const N: usize>(
    kind: HashKind,
    m: &Map<N>,
) -> impl Iterator<Item = (ContentHash, &Holding)> + '_ {
    m.iter()
        .map(move |(k, v)| (ContentHash::from_digest(kind, k), v))
}

fn retain_kind<const N: usize>(
    kind: HashKind,
    m: &mut Map<N>,
    keep: &mut impl FnMut(ContentHash, &mut Holding) -> bool,
) {
    m.retain(|k, v| keep(ContentHash::from_digest(kind, k), v));
}

impl Inventory {
    pub fn get(&self, hash: &ContentHash) -> Option<&Holding> {
        with_map!(self, hash, |m, k| m.get(&k), &)
    }

    pub fn get_mut(&mut self, hash: &ContentHash) -> Option<&mut Holding> {
        with_map!(self, hash, |m, k| m.get_mut(&k), &mut)
    }

    pub fn contains_key(&self, hash: &ContentHash) -> bool {
        self.get(hash).is_some()
    }

    /// The record for `hash`, or a new empty one with `meta`.
    pub fn entry_or(&mut self, hash: &ContentHash, meta: ContentMeta) -> &mut Holding {
        with_map!(
            self,
            hash,
            |m, k| m.entry(k).or_insert_with(|| Holding {
                meta,
                stores: StoreSet::default(),
            }),
            &mut
        )
    }

    pub fn insert(&mut self, hash: ContentHash, holding: Holding) -> Option<Holding> {
        with_map!(self, &hash, |m, k| m.insert(k, holding), &mut)
    }

    pub fn remove(&mut self, hash: &ContentHash) -> Option<Holding> {
        with_map!(self, hash, |m, k| m.remove(&k), &mut)
    }

    pub fn len(&self) -> usize {
        self.sha1.len()
            + self.sha224.len()
            + self.sha256.len()
            + self.sha384.len()
            + self.sha512.len()
            + self.md5.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record in `ContentHash` order.
    pub fn iter(&self) -> impl Iterator<Item = (ContentHash, &Holding)> + '_ {
        tagged(HashKind::Sha1, &self.sha1)
            .chain(tagged(HashKind::Sha224, &self.sha224))
            .chain(tagged(HashKind::Sha256, &self.sha256))
            .chain(tagged(HashKind::Sha384, &self.sha384))
            .chain(tagged(HashKind::Sha512, &self.sha512))
            .chain(tagged(HashKind::Md5, &self.md5))
    }

    pub fn keys(&self) -> impl Iterator<Item = ContentHash> + '_ {
        self.iter().map(|(h, _)| h)
    }

    pub fn values(&self) -> impl Iterator<Item = &Holding> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Every record as the wire carries it, in `ContentHash` order.
    pub fn records(&self) -> impl Iterator<Item = ContentRecord> + '_ {
        self.iter().map(|(hash, h)| ContentRecord {
            hash,
            meta: h.meta,
            stores: h.stores.clone(),
        })
    }

    /// The record for `hash` as the wire carries it.
    pub fn record(&self, hash: &ContentHash) -> Option<ContentRecord> {
        self.get(hash).map(|h| ContentRecord {
            hash: *hash,
            meta: h.meta,
            stores: h.stores.clone(),
        })
    }

    /// The content `store` holds, in `ContentHash` order. A scan of every
    /// record: asked for by a store's sync and an admin's removal, both rare,
    /// so no per-store index is kept (it cost more than the records).
    pub fn held_by(&self, store: NodeId) -> impl Iterator<Item = ContentHash> + '_ {
        self.iter()
            .filter(move |(_, h)| h.stores.contains(&store))
            .map(|(hash, _)| hash)
    }

    /// Keeps the records for which `keep` says so (it may change them).
    pub fn retain(&mut self, mut keep: impl FnMut(ContentHash, &mut Holding) -> bool) {
        retain_kind(HashKind::Sha1, &mut self.sha1, &mut keep);
        retain_kind(HashKind::Sha224, &mut self.sha224, &mut keep);
        retain_kind(HashKind::Sha256, &mut self.sha256, &mut keep);
        retain_kind(HashKind::Sha384, &mut self.sha384, &mut keep);
        retain_kind(HashKind::Sha512, &mut self.sha512, &mut keep);
        retain_kind(HashKind::Md5, &mut self.md5, &mut keep);
    }
}

impl std::ops::Index<&ContentHash> for Inventory {
    type Output = Holding;
    fn index(&self, hash: &ContentHash) -> &Holding {
        match self.get(hash) {
            Some(h) => h,
            None => panic!("no inventory record for {hash:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Ext;
    use std::collections::BTreeSet;

    fn meta(size: u64) -> ContentMeta {
        ContentMeta {
            ext: Ext::lit("bin"),
            size,
        }
    }

    fn every_kind() -> Vec<ContentHash> {
        let mut v = Vec::new();
        for (i, kind) in HashKind::ALL.into_iter().enumerate() {
            for j in 0..5u8 {
                v.push(ContentHash::compute(kind, &[i as u8, j]));
            }
        }
        v
    }

    #[test]
    fn iterates_in_content_hash_order_whatever_the_kinds() {
        let mut inv = Inventory::default();
        let hashes = every_kind();
        for (i, h) in hashes.iter().enumerate() {
            inv.entry_or(h, meta(i as u64)).stores.insert(NodeId(1));
        }
        let sorted: Vec<ContentHash> = hashes
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(inv.keys().collect::<Vec<_>>(), sorted);
        assert_eq!(inv.len(), hashes.len());
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(inv[h].meta.size, i as u64, "{h:?} found under its own kind");
        }
    }

    #[test]
    fn held_by_and_retain_see_every_kind() {
        let mut inv = Inventory::default();
        let hashes = every_kind();
        for (i, h) in hashes.iter().enumerate() {
            let rec = inv.entry_or(h, meta(0));
            rec.stores.insert(NodeId(1 + (i % 2) as u64));
            rec.stores.insert(NodeId(9));
        }
        assert_eq!(inv.held_by(NodeId(9)).count(), hashes.len());
        assert_eq!(inv.held_by(NodeId(1)).count(), hashes.len().div_ceil(2));
        inv.retain(|_, h| {
            h.stores.remove(&NodeId(9));
            h.stores.contains(&NodeId(1))
        });
        assert_eq!(inv.len(), hashes.len().div_ceil(2));
        assert_eq!(inv.held_by(NodeId(9)).count(), 0);
        let r = inv.record(&hashes[0]).expect("kept");
        assert_eq!(r.hash, hashes[0]);
        assert_eq!(
            r.stores.iter().copied().collect::<Vec<_>>(),
            vec![NodeId(1)]
        );
        assert!(inv.remove(&hashes[0]).is_some());
        assert!(!inv.contains_key(&hashes[0]));
    }

    #[test]
    fn a_record_stays_small() {
        // The inline parts: the extension, the size and two holders. What
        // the per-kind key saves shows in the scale benchmark.
        assert!(
            std::mem::size_of::<Holding>() <= 48,
            "{}",
            std::mem::size_of::<Holding>()
        );
    }
}
