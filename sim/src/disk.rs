//! A store's content disk in the simulation: writes land unsynced and
//! become durable at sync; a crash loses what was not synced; bit-rot
//! silently changes stored bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use stretchfs_core::content::ContentMeta;
use stretchfs_core::hash::ContentHash;

#[derive(Clone, Debug)]
pub struct StoredCopy {
    pub bytes: Arc<Vec<u8>>,
    pub meta: ContentMeta,
    pub synced: bool,
    /// When it became durable.
    pub synced_at: stretchfs_core::Time,
    /// Which write put it there (a newer write supersedes an older sync).
    pub write: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ContentDisk {
    files: BTreeMap<ContentHash, StoredCopy>,
    next_write: u64,
}

impl ContentDisk {
    /// Starts a write; returns its id for `sync`. A second write of the
    /// same content while the first is not yet durable joins it (the bytes
    /// are the same: both were checked against the hash), so both writers
    /// hear success at its sync, as both renames succeed in production.
    pub fn write(&mut self, hash: ContentHash, meta: ContentMeta, bytes: Arc<Vec<u8>>) -> u64 {
        if let Some(f) = self.files.get(&hash).filter(|f| !f.synced) {
            return f.write;
        }
        self.next_write += 1;
        let write = self.next_write;
        self.files.insert(
            hash,
            StoredCopy {
                bytes,
                meta,
                synced: false,
                synced_at: stretchfs_core::Time::MAX,
                write,
            },
        );
        write
    }

    /// Makes write `write` durable; false if it was superseded or lost.
    pub fn sync(
        &mut self,
        hash: &ContentHash,
        write: u64,
        now: stretchfs_core::Time,
    ) -> Option<ContentMeta> {
        let f = self.files.get_mut(hash)?;
        if f.write != write {
            return None;
        }
        if !f.synced {
            f.synced = true;
            f.synced_at = now;
        }
        Some(f.meta)
    }

    /// A crash: everything not synced is gone.
    pub fn crash(&mut self) {
        self.files.retain(|_, f| f.synced);
    }

    pub fn has_synced(&self, hash: &ContentHash) -> bool {
        self.files.get(hash).is_some_and(|f| f.synced)
    }

    /// The durable copy, if any.
    pub fn read(&self, hash: &ContentHash) -> Option<&StoredCopy> {
        self.files.get(hash).filter(|f| f.synced)
    }

    /// A durable copy whose bytes still match its hash.
    pub fn intact(&self, hash: &ContentHash) -> bool {
        self.read(hash)
            .is_some_and(|f| ContentHash::compute(hash.kind(), &f.bytes) == *hash)
    }

    pub fn delete(&mut self, hash: &ContentHash) {
        self.files.remove(hash);
    }

    pub fn listing(&self) -> Vec<(ContentHash, ContentMeta)> {
        self.files
            .iter()
            .filter(|(_, f)| f.synced)
            .map(|(h, f)| (*h, f.meta))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Flips one byte of the `nth` durable file (bit-rot). Returns its hash.
    pub fn rot(&mut self, nth: usize, at: usize) -> Option<ContentHash> {
        let (hash, f) = self.files.iter_mut().filter(|(_, f)| f.synced).nth(nth)?;
        let bytes = Arc::make_mut(&mut f.bytes);
        if bytes.is_empty() {
            return None;
        }
        let i = at % bytes.len();
        bytes[i] ^= 0x5a;
        Some(*hash)
    }

    pub fn synced_count(&self) -> usize {
        self.files.values().filter(|f| f.synced).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stretchfs_core::hash::HashKind;

    fn meta() -> ContentMeta {
        ContentMeta {
            ext: stretchfs_core::content::Ext::lit("bin"),
            size: 3,
        }
    }

    #[test]
    fn unsynced_writes_die_in_a_crash() {
        let mut d = ContentDisk::default();
        let a = ContentHash::compute(HashKind::Sha1, b"a");
        let b = ContentHash::compute(HashKind::Sha1, b"b");
        let wa = d.write(a, meta(), Arc::new(b"a".to_vec()));
        d.write(b, meta(), Arc::new(b"b".to_vec()));
        assert!(d.sync(&a, wa, stretchfs_core::Time::ZERO).is_some());
        d.crash();
        assert!(d.has_synced(&a));
        assert!(d.read(&b).is_none());
        assert_eq!(d.listing().len(), 1);
    }

    #[test]
    fn two_writes_of_the_same_content_both_hear_its_sync() {
        let mut d = ContentDisk::default();
        let a = ContentHash::compute(HashKind::Sha1, b"a");
        let first = d.write(a, meta(), Arc::new(b"a".to_vec()));
        let second = d.write(a, meta(), Arc::new(b"a".to_vec()));
        let at = stretchfs_core::Time::from_secs(1);
        assert!(d.sync(&a, first, at).is_some());
        assert!(d
            .sync(&a, second, stretchfs_core::Time::from_secs(2))
            .is_some());
        assert_eq!(
            d.read(&a).unwrap().synced_at,
            at,
            "durable since the first sync"
        );
        // Once durable, a new write is a new one.
        let third = d.write(a, meta(), Arc::new(b"a".to_vec()));
        assert_ne!(third, first);
    }

    #[test]
    fn rot_is_caught_by_intact() {
        let mut d = ContentDisk::default();
        let a = ContentHash::compute(HashKind::Sha1, b"abc");
        let w = d.write(a, meta(), Arc::new(b"abc".to_vec()));
        d.sync(&a, w, stretchfs_core::Time::ZERO);
        assert!(d.intact(&a));
        assert_eq!(d.rot(0, 1), Some(a));
        assert!(!d.intact(&a));
        assert!(d.has_synced(&a));
    }

    #[test]
    fn a_write_after_a_durable_one_supersedes_it() {
        let mut d = ContentDisk::default();
        let a = ContentHash::compute(HashKind::Sha1, b"a");
        let w1 = d.write(a, meta(), Arc::new(b"a".to_vec()));
        assert!(d.sync(&a, w1, stretchfs_core::Time::ZERO).is_some());
        let w2 = d.write(a, meta(), Arc::new(b"a".to_vec()));
        assert!(d.sync(&a, w1, stretchfs_core::Time::ZERO).is_none());
        assert!(d.sync(&a, w2, stretchfs_core::Time::ZERO).is_some());
    }
}
