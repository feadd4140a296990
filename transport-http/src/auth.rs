//! Request authentication between nodes: every request carries the cluster
//! id, the protocol version, the address it is sent to, the time, a nonce
//! and an HMAC-SHA256 over all of them and the body digest, keyed with the
//! cluster secret. Unsigned, foreign, misdirected, stale or replayed
//! requests are refused with a reason.
//!
//! Checking is split in two so a receiver spends nothing on a body before
//! the request could be genuine: `precheck` looks at the headers alone
//! (cluster, version, destination, time window, a well-formed nonce and
//! signature); `verify_prechecked` then checks the MAC over the body digest
//! and the replay cache.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use stretchfs_core::{ClusterId, PROTOCOL_VERSION};

pub const H_CLUSTER: &str = "x-stretchfs-cluster";
pub const H_VERSION: &str = "x-stretchfs-version";
pub const H_TO: &str = "x-stretchfs-to";
pub const H_TIME: &str = "x-stretchfs-time";
pub const H_NONCE: &str = "x-stretchfs-nonce";
pub const H_SIGNATURE: &str = "x-stretchfs-signature";

/// Body digest for a streamed body whose integrity the receiver checks
/// another way (content is verified against its hash).
pub const STREAMED_BODY: &str = "streamed";

/// Signatures remembered at most: every entry is a request that passed the
/// MAC (only secret holders can add one), and past this many live ones the
/// receiver refuses (503) rather than grow.
pub const MAX_REMEMBERED: usize = 250_000;

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// A required header is absent or malformed.
    Missing(&'static str),
    /// The signature does not match: wrong secret or tampered request.
    BadSignature,
    /// The request time is outside the replay window.
    Stale {
        skew_secs: i64,
    },
    /// The same signed request was seen before.
    Replayed,
    ForeignCluster {
        got: String,
    },
    UnsupportedVersion(u16),
    /// Signed for another node's address.
    Misdirected {
        to: String,
    },
    /// The replay cache is full: try again shortly.
    Busy,
}

impl AuthError {
    /// 401 for missing or wrong credentials, 403 for a request that is well
    /// signed but not for us, 421 for one sent to another address, 503 when
    /// the replay cache is full.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::ForeignCluster { .. } | AuthError::UnsupportedVersion(_) => 403,
            AuthError::Misdirected { .. } => 421,
            AuthError::Busy => 503,
            _ => 401,
        }
    }

    /// A short stable name for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "unsigned",
            AuthError::BadSignature => "bad_signature",
            AuthError::Stale { .. } => "stale",
            AuthError::Replayed => "replayed",
            AuthError::ForeignCluster { .. } => "foreign_cluster",
            AuthError::UnsupportedVersion(_) => "unsupported_version",
            AuthError::Misdirected { .. } => "misdirected",
            AuthError::Busy => "busy",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing(h) => write!(f, "missing or malformed header {h}"),
            AuthError::BadSignature => {
                write!(f, "signature does not match (wrong cluster secret?)")
            }
            AuthError::Stale { skew_secs } => {
                write!(
                    f,
                    "request time is {skew_secs}s off, outside the replay window"
                )
            }
            AuthError::Replayed => write!(f, "request was already seen (replay)"),
            AuthError::ForeignCluster { got } => write!(f, "request is for cluster {got}"),
            AuthError::UnsupportedVersion(v) => write!(
                f,
                "protocol version {v}, this node speaks {PROTOCOL_VERSION}"
            ),
            AuthError::Misdirected { to } => write!(f, "request was signed for {to}"),
            AuthError::Busy => write!(f, "too many recent requests to remember; retry"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Why a delivery URL is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlError {
    BadSignature,
    Expired,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::BadSignature => write!(f, "the URL's signature does not match"),
            UrlError::Expired => write!(f, "the URL has expired"),
        }
    }
}

type Signature = [u8; 32];

/// Signs and verifies requests for one cluster.
pub struct Signer {
    cluster: ClusterId,
    /// `cluster` as it is signed (formatted once).
    cluster_text: String,
    /// The MAC with the key already absorbed (cloned per signature).
    keyed: Hmac<Sha256>,
    window_secs: i64,
    seen: Mutex<Seen>,
}

/// Signatures of accepted requests until they could no longer pass the time
/// check (`t + window`), each expiring at its own time, in expiry order.
#[derive(Default)]
struct Seen {
    expires: HashMap<Signature, i64>,
    by_expiry: BTreeSet<(i64, Signature)>,
}

impl Seen {
    fn forget_expired(&mut self, now: i64) {
        while let Some(&(at, sig)) = self.by_expiry.first() {
            if at >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.expires.remove(&sig);
        }
    }
}

/// What `precheck` found in a request's headers, for `verify_prechecked`.
#[derive(Clone, Debug)]
pub struct Prechecked {
    time: String,
    t: i64,
    nonce: String,
    signature: Signature,
}

/// The headers of one signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub cluster: String,
    pub version: String,
    pub to: String,
    pub time: String,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// One header's value, by name (what a receiver's lookup does).
    pub fn get(&self, name: &str) -> Option<String> {
        self.pairs()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }

    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            (H_CLUSTER, &self.cluster),
            (H_VERSION, &self.version),
            (H_TO, &self.to),
            (H_TIME, &self.time),
            (H_NONCE, &self.nonce),
            (H_SIGNATURE, &self.signature),
        ]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Lower- or upper-case hex of exactly `N` bytes.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

pub fn body_digest(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

impl Signer {
    /// `window_secs`: how far a request's time may be from ours.
    pub fn new(cluster: ClusterId, secret: &[u8], window_secs: i64) -> Signer {
        Signer {
            cluster,
            cluster_text: cluster.to_string(),
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .expect("HMAC accepts keys of any length"),
            window_secs,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The MAC over `parts`, the cluster and the protocol version, each
    /// line-terminated so no two part lists sign alike.
    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut m = self.keyed.clone();
        let version = PROTOCOL_VERSION.to_string();
        for part in parts
            .iter()
            .chain([&self.cluster_text.as_str(), &version.as_str()])
        {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        m
    }

    fn request_mac(
        &self,
        method: &str,
        path: &str,
        to: &str,
        time: &str,
        nonce: &str,
        digest: &str,
    ) -> Hmac<Sha256> {
        self.mac(&["REQ", method, path, to, time, nonce, digest])
    }

    /// Signs a request to the node listening at `to` (its `host:port`).
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        to: &str,
        unix_secs: i64,
        nonce: u64,
        digest: &str,
    ) -> SignedHeaders {
        let time = unix_secs.to_string();
        let nonce = format!("{nonce:016x}");
        let mac = self.request_mac(method, path, to, &time, &nonce, digest);
        SignedHeaders {
            cluster: self.cluster_text.clone(),
            version: PROTOCOL_VERSION.to_string(),
            to: to.to_string(),
            signature: hex(&mac.finalize().into_bytes()),
            time,
            nonce,
        }
    }

    /// The checks that need no body: cluster, version, destination (`me`,
    /// this node's `host:port`), time window, and a nonce and signature of
    /// the right form. Cheap, so a receiver refuses before reading a body.
    pub fn precheck(
        &self,
        me: &str,
        header: impl Fn(&str) -> Option<String>,
        unix_secs: i64,
    ) -> Result<Prechecked, AuthError> {
        let get = |name: &'static str| header(name).ok_or(AuthError::Missing(name));
        let version: u16 = get(H_VERSION)?
            .parse()
            .map_err(|_| AuthError::Missing(H_VERSION))?;
        if version != PROTOCOL_VERSION {
            return Err(AuthError::UnsupportedVersion(version));
        }
        let cluster = get(H_CLUSTER)?;
        if cluster != self.cluster_text {
            return Err(AuthError::ForeignCluster { got: cluster });
        }
        let to = get(H_TO)?;
        if to != me {
            return Err(AuthError::Misdirected { to });
        }
        let time = get(H_TIME)?;
        let t: i64 = time.parse().map_err(|_| AuthError::Missing(H_TIME))?;
        let skew = unix_secs.saturating_sub(t);
        if skew.saturating_abs() > self.window_secs {
            return Err(AuthError::Stale { skew_secs: skew });
        }
        let nonce = get(H_NONCE)?;
        if unhex::<8>(&nonce).is_none() {
            return Err(AuthError::Missing(H_NONCE));
        }
        let signature = unhex::<32>(&get(H_SIGNATURE)?).ok_or(AuthError::Missing(H_SIGNATURE))?;
        Ok(Prechecked {
            time,
            t,
            nonce,
            signature,
        })
    }

    /// The rest of `verify` once the body's digest is known: the MAC
    /// (constant time) and the replay cache.
    pub fn verify_prechecked(
        &self,
        checked: Prechecked,
        method: &str,
        path: &str,
        me: &str,
        digest: &str,
        unix_secs: i64,
    ) -> Result<(), AuthError> {
        let mac = self.request_mac(method, path, me, &checked.time, &checked.nonce, digest);
        mac.verify_slice(&checked.signature)
            .map_err(|_| AuthError::BadSignature)?;
        self.remember(checked.signature, checked.t, unix_secs)
    }

    /// Checks a request to `me` (looked up by `header`) at `unix_secs`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        me: &str,
        header: impl Fn(&str) -> Option<String>,
        digest: &str,
        unix_secs: i64,
    ) -> Result<(), AuthError> {
        let checked = self.precheck(me, header, unix_secs)?;
        self.verify_prechecked(checked, method, path, me, digest, unix_secs)
    }

    /// The signature of a delivery URL: the path (which names the content),
    /// the store it is for and its expiry, so a store serves it without any
    /// purchase lookup, and another store at the same address does not.
    pub fn sign_url(&self, path: &str, store: &str, expires_unix: i64) -> String {
        let mac = self.url_mac(path, store, expires_unix);
        hex(&mac.finalize().into_bytes())
    }

    fn url_mac(&self, path: &str, store: &str, expires_unix: i64) -> Hmac<Sha256> {
        self.mac(&["URL", path, store, &expires_unix.to_string()])
    }

    /// Checks a delivery URL's signature and expiry at `unix_secs`.
    pub fn verify_url(
        &self,
        path: &str,
        store: &str,
        expires_unix: i64,
        signature: &str,
        unix_secs: i64,
    ) -> Result<(), UrlError> {
        let sig = unhex::<32>(signature).ok_or(UrlError::BadSignature)?;
        self.url_mac(path, store, expires_unix)
            .verify_slice(&sig)
            .map_err(|_| UrlError::BadSignature)?;
        if unix_secs > expires_unix {
            return Err(UrlError::Expired);
        }
        Ok(())
    }

    /// Remembers an accepted signature until its request could no longer
    /// pass the time check: `t + window`, however far `t` is from `now`.
    fn remember(&self, signature: Signature, t: i64, now: i64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.forget_expired(now);
        if seen.expires.contains_key(&signature) {
            return Err(AuthError::Replayed);
        }
        if seen.expires.len() >= MAX_REMEMBERED {
            return Err(AuthError::Busy);
        }
        let expiry = t.saturating_add(self.window_secs);
        seen.expires.insert(signature, expiry);
        seen.by_expiry.insert((expiry, signature));
        Ok(())
    }

    /// How many signatures the replay cache holds now.
    pub fn remembered(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expires
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "10.0.0.1:7400";

    fn signer(secret: &[u8]) -> Signer {
        Signer::new(ClusterId(7), secret, 30)
    }

    fn lookup(h: &SignedHeaders) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| h.get(name)
    }

    #[test]
    fn delivery_urls_are_bound_to_path_store_expiry_and_secret() {
        let s = signer(b"secret");
        let sig = s.sign_url("/c/ab.jpg", "n1", 1000);
        assert_eq!(
            s.verify_url("/c/ab.jpg", "n2", 1000, &sig, 999),
            Err(UrlError::BadSignature)
        );
        assert_eq!(s.verify_url("/c/ab.jpg", "n1", 1000, &sig, 999), Ok(()));
        assert_eq!(
            s.verify_url("/c/ab.jpg", "n1", 1000, &sig, 1001),
            Err(UrlError::Expired)
        );
        assert_eq!(
            s.verify_url("/c/ac.jpg", "n1", 1000, &sig, 999),
            Err(UrlError::BadSignature)
        );
        assert_eq!(
            s.verify_url("/c/ab.jpg", "n1", 2000, &sig, 999),
            Err(UrlError::BadSignature)
        );
        let other = signer(b"other").sign_url("/c/ab.jpg", "n1", 1000);
        assert_eq!(
            s.verify_url("/c/ab.jpg", "n1", 1000, &other, 999),
            Err(UrlError::BadSignature)
        );
        for garbage in ["", "zz", &sig[..63], &format!("{sig}00")] {
            assert_eq!(
                s.verify_url("/c/ab.jpg", "n1", 1000, garbage, 999),
                Err(UrlError::BadSignature)
            );
        }
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let s = signer(b"secret");
        let d = body_digest(b"body");
        let h = s.sign("POST", "/internal/v1/message", ME, 1000, 1, &d);
        assert_eq!(
            s.verify("POST", "/internal/v1/message", ME, lookup(&h), &d, 1001),
            Ok(())
        );
        assert_eq!(
            s.verify("POST", "/internal/v1/message", ME, lookup(&h), &d, 1001),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn wrong_secret_tampering_staleness_and_foreign_cluster_are_refused() {
        let s = signer(b"secret");
        let d = body_digest(b"body");
        let h = signer(b"other").sign("POST", "/p", ME, 1000, 1, &d);
        assert_eq!(
            s.verify("POST", "/p", ME, lookup(&h), &d, 1000),
            Err(AuthError::BadSignature)
        );
        let h = s.sign("POST", "/p", ME, 1000, 2, &d);
        let tampered = body_digest(b"bodx");
        assert_eq!(
            s.verify("POST", "/p", ME, lookup(&h), &tampered, 1000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify("POST", "/q", ME, lookup(&h), &d, 1000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify("POST", "/p", ME, lookup(&h), &d, 1100),
            Err(AuthError::Stale { skew_secs: 100 })
        );
        let foreign = Signer::new(ClusterId(8), b"secret", 30).sign("POST", "/p", ME, 1000, 3, &d);
        let e = s
            .verify("POST", "/p", ME, lookup(&foreign), &d, 1000)
            .unwrap_err();
        assert!(matches!(e, AuthError::ForeignCluster { .. }));
        assert_eq!(e.status(), 403);
        assert_eq!(AuthError::BadSignature.status(), 401);
        let missing = s.verify("POST", "/p", ME, |_| None, &d, 1000).unwrap_err();
        assert_eq!(missing, AuthError::Missing(H_VERSION));
        // Overflowing and malformed times, nonces and signatures are refused
        // from the headers alone.
        let h = s.sign("POST", "/p", ME, 1000, 4, &d);
        for (name, value, want) in [
            (H_TIME, "9223372036854775807", None),
            (H_TIME, "-9223372036854775808", None),
            (H_TIME, "1e3", Some(AuthError::Missing(H_TIME))),
            (H_NONCE, "xyz", Some(AuthError::Missing(H_NONCE))),
            (H_SIGNATURE, "00", Some(AuthError::Missing(H_SIGNATURE))),
            (
                H_SIGNATURE,
                &"g".repeat(64),
                Some(AuthError::Missing(H_SIGNATURE)),
            ),
        ] {
            let header = |n: &str| {
                if n == name {
                    Some(value.to_string())
                } else {
                    h.get(n)
                }
            };
            let e = s.precheck(ME, header, 1000).unwrap_err();
            match want {
                Some(want) => assert_eq!(e, want, "{name}={value}"),
                None => assert!(matches!(e, AuthError::Stale { .. }), "{name}={value}"),
            }
        }
    }

    #[test]
    fn the_signature_binds_the_destination_and_the_protocol_version() {
        let s = signer(b"secret");
        let d = body_digest(b"drop this copy");
        // Captured on its way to one holder, replayed to another.
        let h = s.sign("POST", "/p", ME, 1000, 1, &d);
        let e = s
            .verify("POST", "/p", "10.0.0.2:7400", lookup(&h), &d, 1000)
            .unwrap_err();
        assert_eq!(e, AuthError::Misdirected { to: ME.into() });
        assert_eq!(e.status(), 421);
        // Relabelled as addressed to the other holder: the MAC says no.
        let relabelled = |n: &str| {
            if n == H_TO {
                Some("10.0.0.2:7400".to_string())
            } else {
                h.get(n)
            }
        };
        assert_eq!(
            s.verify("POST", "/p", "10.0.0.2:7400", relabelled, &d, 1000),
            Err(AuthError::BadSignature)
        );
        // The version header is checked, and it is what was signed.
        let older = |n: &str| {
            if n == H_VERSION {
                Some((PROTOCOL_VERSION - 1).to_string())
            } else {
                h.get(n)
            }
        };
        let e = s.verify("POST", "/p", ME, older, &d, 1000).unwrap_err();
        assert_eq!(e, AuthError::UnsupportedVersion(PROTOCOL_VERSION - 1));
        let mut m = s.keyed.clone();
        for part in [
            "REQ",
            "POST",
            "/p",
            ME,
            "1000",
            &h.nonce,
            &d,
            &s.cluster_text,
        ] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        let without_version = hex(&m.finalize().into_bytes());
        assert_ne!(without_version, h.signature, "the version is signed");
    }

    #[test]
    fn same_body_signed_twice_is_not_a_replay() {
        let s = signer(b"secret");
        let d = body_digest(b"b");
        let a = s.sign("POST", "/p", ME, 1000, 1, &d);
        let b = s.sign("POST", "/p", ME, 1000, 2, &d);
        assert_eq!(s.verify("POST", "/p", ME, lookup(&a), &d, 1000), Ok(()));
        assert_eq!(s.verify("POST", "/p", ME, lookup(&b), &d, 1000), Ok(()));
    }

    #[test]
    fn a_request_stamped_ahead_stays_remembered_until_its_own_expiry() {
        let s = signer(b"secret");
        let d = body_digest(b"b");
        // The sender's clock is 30 s ahead of ours: valid until 1060 here.
        let h = s.sign("POST", "/p", ME, 1030, 1, &d);
        assert_eq!(s.verify("POST", "/p", ME, lookup(&h), &d, 1000), Ok(()));
        for now in [1031, 1045, 1060] {
            assert_eq!(
                s.verify("POST", "/p", ME, lookup(&h), &d, now),
                Err(AuthError::Replayed),
                "at {now}"
            );
        }
        assert_eq!(
            s.verify("POST", "/p", ME, lookup(&h), &d, 1061),
            Err(AuthError::Stale { skew_secs: 31 })
        );
        let fresh = s.sign("POST", "/p", ME, 1061, 2, &d);
        assert_eq!(s.verify("POST", "/p", ME, lookup(&fresh), &d, 1061), Ok(()));
        assert_eq!(
            s.remembered(),
            1,
            "the first is forgotten once it cannot pass"
        );
    }

    #[test]
    fn entries_expire_in_their_own_order_not_arrival_order() {
        let s = signer(b"secret");
        // Arrival order: late expiry first, then an early one.
        assert_eq!(s.remember([1; 32], 1025, 1000), Ok(()));
        assert_eq!(s.remember([2; 32], 975, 1000), Ok(()));
        // At 1010 the early one (expiry 1005) is gone, the late one is not.
        assert_eq!(s.remember([3; 32], 1010, 1010), Ok(()));
        assert_eq!(s.remembered(), 2);
        assert_eq!(s.remember([1; 32], 1025, 1010), Err(AuthError::Replayed));
    }

    #[test]
    fn the_replay_cache_refuses_rather_than_grows() {
        let s = signer(b"secret");
        for i in 0..MAX_REMEMBERED as u64 {
            let mut sig = [0u8; 32];
            sig[..8].copy_from_slice(&i.to_le_bytes());
            assert_eq!(s.remember(sig, 1000, 1000), Ok(()));
        }
        let e = s.remember([0xff; 32], 1000, 1000).unwrap_err();
        assert_eq!(e, AuthError::Busy);
        assert_eq!(e.status(), 503);
        assert_eq!(s.remembered(), MAX_REMEMBERED);
        // Once they expire there is room again.
        assert_eq!(s.remember([0xff; 32], 1031, 1031), Ok(()));
        assert_eq!(s.remembered(), 1);
    }
}
