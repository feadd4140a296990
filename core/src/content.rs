//! What the inventory knows about a piece of content, in forms that stay
//! small when there are millions of them: an extension inline in 16 bytes,
//! the holders of a copy inline for the usual R of 2.

use crate::hash::ContentHash;
use crate::ids::NodeId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use std::fmt;

/// Facts about content that do not depend on where it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentMeta {
    /// File extension without the dot, lower case (`mp4`, `jpg`).
    pub ext: Ext,
    pub size: u64,
}

impl ContentMeta {
    pub fn content_type(&self) -> &'static str {
        content_type(&self.ext)
    }
}

/// One inventory record as the wire carries it: the content and the stores
/// holding a copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentRecord {
    pub hash: ContentHash,
    pub meta: ContentMeta,
    pub stores: StoreSet,
}

/// A checked extension: 1 to 16 characters of a-z and 0-9, kept inline
/// (zero-padded) so a million records allocate nothing for it. On the wire
/// it is a string, as before; one that does not check is refused there.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ext([u8; 16]);

impl Ext {
    /// Lower-cases and checks `ext` (a leading dot is allowed and dropped).
    pub fn new(ext: &str) -> Result<Ext, BadExtension> {
        let e = ext.trim_start_matches('.');
        let ok = (1..=16).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(BadExtension(ext.to_string()));
        }
        let mut bytes = [0u8; 16];
        for (to, from) in bytes.iter_mut().zip(e.bytes()) {
            *to = from.to_ascii_lowercase();
        }
        Ok(Ext(bytes))
    }

    /// An extension written in the code (a test's `"txt"`): a bad one is
    /// a bug in that code, not input.
    pub fn lit(ext: &'static str) -> Ext {
        match Ext::new(ext) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|b| *b == 0).unwrap_or(16);
        // Only ASCII letters and digits are ever stored.
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }
}

impl std::ops::Deref for Ext {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Ext {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Ext {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Ext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Ext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Ext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ext::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The stores holding copies of one piece of content, in id order, without
/// repeats. Inline up to two (the default R); more spill to the heap.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StoreSet(SmallVec<[NodeId; 2]>);

impl StoreSet {
    /// Adds `store`; false if it was there.
    pub fn insert(&mut self, store: NodeId) -> bool {
        match self.0.binary_search(&store) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, store);
                true
            }
        }
    }

    /// Removes `store`; false if it was not there.
    pub fn remove(&mut self, store: &NodeId) -> bool {
        match self.0.binary_search(store) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, store: &NodeId) -> bool {
        self.0.binary_search(store).is_ok()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, NodeId> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for StoreSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a StoreSet {
    type Item = &'a NodeId;
    type IntoIter = std::slice::Iter<'a, NodeId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for StoreSet {
    type Item = NodeId;
    type IntoIter = smallvec::IntoIter<[NodeId; 2]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<NodeId> for StoreSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> StoreSet {
        let mut s = StoreSet::default();
        for id in iter {
            s.insert(id);
        }
        s
    }
}

/// The same bytes as the `BTreeSet<NodeId>` it replaced: a sequence.
impl Serialize for StoreSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for StoreSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<NodeId>::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// Why an extension is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadExtension(pub String);

impl std::fmt::Display for BadExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "extension {:?} must be 1 to 16 characters of a-z and 0-9",
            self.0
        )
    }
}

impl std::error::Error for BadExtension {}

/// The most hashes one exists query may ask about: the question travels to
/// the authority as one message, and its answer back.
pub const MAX_EXISTS_HASHES: usize = 256;

/// Lower-cases and checks an extension (a leading dot is allowed and dropped).
pub fn normalize_ext(ext: &str) -> Result<Ext, BadExtension> {
    Ext::new(ext)
}

/// Content type for an extension; `application/octet-stream` when unknown.
pub fn content_type(ext: &str) -> &'static str {
    match ext {
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_normalized_or_refused() {
        assert_eq!(
            normalize_ext(".MP4").map(|e| e.to_string()),
            Ok("mp4".to_string())
        );
        assert_eq!(normalize_ext("tar"), Ok(Ext::lit("tar")));
        assert!(normalize_ext("").is_err());
        assert!(normalize_ext("../etc").is_err());
        assert!(normalize_ext("a b").is_err());
        assert!(normalize_ext(&"x".repeat(17)).is_err());
    }

    #[test]
    fn content_types_follow_the_extension() {
        let m = ContentMeta {
            ext: crate::content::Ext::lit("mp4"),
            size: 1,
        };
        assert_eq!(m.content_type(), "video/mp4");
        assert_eq!(content_type("weird"), "application/octet-stream");
        // Every extension named, with its type: browsers and players rely
        // on it, and no arm may fall through to octet-stream.
        let table = [
            ("txt", "text/plain; charset=utf-8"),
            ("html", "text/html; charset=utf-8"),
            ("htm", "text/html; charset=utf-8"),
            ("css", "text/css"),
            ("js", "text/javascript"),
            ("json", "application/json"),
            ("xml", "application/xml"),
            ("csv", "text/csv"),
            ("pdf", "application/pdf"),
            ("zip", "application/zip"),
            ("gz", "application/gzip"),
            ("tar", "application/x-tar"),
            ("jpg", "image/jpeg"),
            ("jpeg", "image/jpeg"),
            ("png", "image/png"),
            ("gif", "image/gif"),
            ("webp", "image/webp"),
            ("svg", "image/svg+xml"),
            ("ico", "image/x-icon"),
            ("mp3", "audio/mpeg"),
            ("ogg", "audio/ogg"),
            ("wav", "audio/wav"),
            ("flac", "audio/flac"),
            ("mp4", "video/mp4"),
            ("m4v", "video/mp4"),
            ("webm", "video/webm"),
            ("mkv", "video/x-matroska"),
            ("mov", "video/quicktime"),
            ("avi", "video/x-msvideo"),
            ("m3u8", "application/vnd.apple.mpegurl"),
            ("ts", "video/mp2t"),
            ("wasm", "application/wasm"),
        ];
        for (ext, ty) in table {
            assert_eq!(content_type(ext), ty, "{ext}");
        }
    }
}
