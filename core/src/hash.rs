//! Content addresses: a digest and the algorithm that made it. sha1 is the
//! default; sha224, sha256, sha384, sha512 and md5 are accepted. Each has a
//! distinct hex length, so a hex string alone names its algorithm.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum HashKind {
    #[default]
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Md5,
}

impl HashKind {
    pub const ALL: [HashKind; 6] = [
        HashKind::Sha1,
        HashKind::Sha224,
        HashKind::Sha256,
        HashKind::Sha384,
        HashKind::Sha512,
        HashKind::Md5,
    ];

    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Md5 => 16,
            HashKind::Sha1 => 20,
            HashKind::Sha224 => 28,
            HashKind::Sha256 => 32,
            HashKind::Sha384 => 48,
            HashKind::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashKind::Sha1 => "sha1",
            HashKind::Sha224 => "sha224",
            HashKind::Sha256 => "sha256",
            HashKind::Sha384 => "sha384",
            HashKind::Sha512 => "sha512",
            HashKind::Md5 => "md5",
        }
    }

    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn from_digest_len(len: usize) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|k| k.digest_len() == len)
    }
}

/// A content address. Fixed size and `Copy`, so millions of them sort and
/// compare without allocation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash {
    kind: HashKind,
    bytes: [u8; 64],
}

/// Why a string is not a content address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashError {
    /// Not 32, 40, 56, 64, 96 or 128 hex digits.
    BadLength(usize),
    NotHex,
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::BadLength(n) => write!(
                f,
                "a content hash has 32 (md5), 40 (sha1), 56 (sha224), 64 (sha256), 96 (sha384) or 128 (sha512) hex digits, not {n}"
            ),
            HashError::NotHex => write!(f, "a content hash is made of hex digits 0-9 and a-f"),
        }
    }
}

impl std::error::Error for HashError {}

impl ContentHash {
    pub fn from_digest(kind: HashKind, digest: &[u8]) -> ContentHash {
        let mut bytes = [0u8; 64];
        let n = kind.digest_len().min(digest.len());
        bytes[..n].copy_from_slice(&digest[..n]);
        ContentHash { kind, bytes }
    }

    /// Hashes `data` with `kind`.
    pub fn compute(kind: HashKind, data: &[u8]) -> ContentHash {
        let mut h = Hasher::new(kind);
        h.update(data);
        h.finish()
    }

    pub fn kind(&self) -> HashKind {
        self.kind
    }

    pub fn digest(&self) -> &[u8] {
        &self.bytes[..self.kind.digest_len()]
    }

    pub fn parse(s: &str) -> Result<ContentHash, HashError> {
        let s = s.trim();
        let kind = HashKind::from_digest_len(s.len() / 2)
            .filter(|_| s.len().is_multiple_of(2))
            .ok_or(HashError::BadLength(s.len()))?;
        let mut bytes = [0u8; 64];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(HashError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(HashError::NotHex)?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(ContentHash { kind, bytes })
    }

    /// A stable 64-bit key for hashing-based placement.
    pub fn key64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[..8]);
        u64::from_le_bytes(b)
    }

    /// Directory shard (two levels of two hex digits) for on-disk layout.
    pub fn shard(&self) -> (String, String) {
        let hex = self.to_string();
        (hex[0..2].to_string(), hex[2..4].to_string())
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.digest() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.kind, self.digest()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, digest): (HashKind, Vec<u8>) = Deserialize::deserialize(d)?;
        if digest.len() != kind.digest_len() {
            return Err(serde::de::Error::custom(format!(
                "{} digest of {} bytes",
                kind.name(),
                digest.len()
            )));
        }
        Ok(ContentHash::from_digest(kind, &digest))
    }
}

/// Incremental hashing, for data that arrives in pieces.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn new(kind: HashKind) -> Hasher {
        use sha2::Digest;
        match kind {
            HashKind::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashKind::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            HashKind::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashKind::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashKind::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            HashKind::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> ContentHash {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => ContentHash::from_digest(HashKind::Sha1, &h.finalize()),
            Hasher::Sha224(h) => ContentHash::from_digest(HashKind::Sha224, &h.finalize()),
            Hasher::Sha256(h) => ContentHash::from_digest(HashKind::Sha256, &h.finalize()),
            Hasher::Sha384(h) => ContentHash::from_digest(HashKind::Sha384, &h.finalize()),
            Hasher::Sha512(h) => ContentHash::from_digest(HashKind::Sha512, &h.finalize()),
            Hasher::Md5(h) => ContentHash::from_digest(HashKind::Md5, &h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let cases = [
            (HashKind::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (HashKind::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (
                HashKind::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (kind, hex) in cases {
            let h = ContentHash::compute(kind, b"abc");
            assert_eq!(h.to_string(), hex);
            assert_eq!(ContentHash::parse(hex), Ok(h));
        }
    }

    #[test]
    fn every_kind_round_trips_through_hex_and_serde() {
        for kind in HashKind::ALL {
            let h = ContentHash::compute(kind, b"stretchfs");
            assert_eq!(h.to_string().len(), kind.digest_len() * 2);
            assert_eq!(ContentHash::parse(&h.to_string()).unwrap(), h);
            let bytes = bincode::serde::encode_to_vec(h, bincode::config::standard()).unwrap();
            let (back, _): (ContentHash, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            assert_eq!(back, h);
            assert_eq!(HashKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new(HashKind::Sha1);
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), ContentHash::compute(HashKind::Sha1, b"abc"));
    }

    #[test]
    fn bad_strings_are_clear_errors() {
        assert_eq!(ContentHash::parse("abc"), Err(HashError::BadLength(3)));
        let not_hex = "z".repeat(40);
        assert_eq!(ContentHash::parse(&not_hex), Err(HashError::NotHex));
        assert!(HashError::BadLength(3).to_string().contains("sha1"));
    }

    #[test]
    fn upper_case_hex_names_the_same_content() {
        let h = ContentHash::compute(HashKind::Sha1, b"abc");
        let upper = h.to_string().to_uppercase();
        assert_eq!(ContentHash::parse(&upper), Ok(h));
    }

    #[test]
    fn forged_digest_length_is_rejected_on_decode() {
        let bytes = bincode::serde::encode_to_vec(
            (HashKind::Sha256, vec![1u8; 5]),
            bincode::config::standard(),
        )
        .unwrap();
        let r: Result<(ContentHash, usize), _> =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard());
        assert!(r.is_err());
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn digest_lengths_names_and_debug_form_are_the_documented_ones() {
        let lens: Vec<usize> = HashKind::ALL.iter().map(|k| k.digest_len()).collect();
        assert_eq!(lens, [20, 28, 32, 48, 64, 16]);
        let names: Vec<&str> = HashKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            ["sha1", "sha224", "sha256", "sha384", "sha512", "md5"]
        );
        assert_eq!(HashKind::from_name("sha3"), None);
        assert_eq!(HashKind::from_digest_len(28), Some(HashKind::Sha224));
        assert_eq!(HashKind::from_digest_len(21), None);
        let h = ContentHash::compute(HashKind::Md5, b"abc");
        assert_eq!(format!("{h:?}"), "md5:900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.kind(), HashKind::Md5);
        assert_eq!(h.digest().len(), 16);
    }

    #[test]
    fn every_hex_digit_parses_to_its_value() {
        let hex = "0123456789abcdefABCDEF0123456789abcdef01";
        let h = ContentHash::parse(hex).unwrap();
        assert_eq!(h.kind(), HashKind::Sha1);
        assert_eq!(
            h.digest(),
            [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45,
                0x67, 0x89, 0xab, 0xcd, 0xef, 0x01
            ]
        );
        assert_eq!(ContentHash::parse(&format!(" {hex}\n")), Ok(h), "trimmed");
        for bad in ["g", "G", "/", ":", "@", "`"] {
            let s = format!("{bad}{}", &hex[1..]);
            assert_eq!(ContentHash::parse(&s), Err(HashError::NotHex), "{bad}");
        }
        // 41 digits: half of it is a sha1's length, but not whole bytes.
        let odd = format!("{hex}0");
        assert_eq!(ContentHash::parse(&odd), Err(HashError::BadLength(41)));
        assert!(HashError::NotHex.to_string().contains("hex digits"));
    }

    #[test]
    fn placement_key_and_disk_shard_come_from_the_leading_bytes() {
        let h = ContentHash::parse("0123456789abcdefABCDEF0123456789abcdef01").unwrap();
        assert_eq!(h.key64(), 0xefcd_ab89_6745_2301);
        assert_eq!(h.shard(), ("01".to_string(), "23".to_string()));
        // A digest longer than the kind's is cut to it.
        let long = ContentHash::from_digest(HashKind::Md5, &[7u8; 20]);
        assert_eq!(long.digest(), [7u8; 16]);
        assert_eq!(long, ContentHash::from_digest(HashKind::Md5, &[7u8; 16]));
    }
}
