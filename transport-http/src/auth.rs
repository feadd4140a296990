//! Request authentication between nodes: every request carries the cluster
//! id, the protocol version, the time, a nonce and an HMAC-SHA256 over
//! method, path, time, nonce and body digest, keyed with the cluster secret.
//! Unsigned, foreign, stale or replayed requests are refused with a reason.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use stretchfs_core::{ClusterId, PROTOCOL_VERSION};

pub const H_CLUSTER: &str = "x-stretchfs-cluster";
pub const H_VERSION: &str = "x-stretchfs-version";
pub const H_TIME: &str = "x-stretchfs-time";
pub const H_NONCE: &str = "x-stretchfs-nonce";
pub const H_SIGNATURE: &str = "x-stretchfs-signature";

/// Body digest for a streamed body whose integrity the receiver checks
/// another way (content is verified against its hash).
pub const STREAMED_BODY: &str = "streamed";

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
}

impl AuthError {
    /// 401 for missing or wrong credentials, 403 for a request that is well
    /// signed but not for us.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::ForeignCluster { .. } | AuthError::UnsupportedVersion(_) => 403,
            _ => 401,
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

#[derive(Default)]
struct Seen {
    by_sig: BTreeMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

/// The headers of one signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub cluster: String,
    pub version: String,
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

    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (H_CLUSTER, &self.cluster),
            (H_VERSION, &self.version),
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

    fn mac(&self, method: &str, path: &str, time: &str, nonce: &str, digest: &str) -> String {
        let mut m = self.keyed.clone();
        for part in [method, path, time, nonce, digest, &self.cluster_text] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        hex(&m.finalize().into_bytes())
    }

    pub fn sign(
        &self,
        method: &str,
        path: &str,
        unix_secs: i64,
        nonce: u64,
        digest: &str,
    ) -> SignedHeaders {
        let time = unix_secs.to_string();
        let nonce = format!("{nonce:016x}");
        SignedHeaders {
            cluster: self.cluster.to_string(),
            version: PROTOCOL_VERSION.to_string(),
            signature: self.mac(method, path, &time, &nonce, digest),
            time,
            nonce,
        }
    }

    /// Checks a request's headers (looked up by `header`) at `unix_secs`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<String>,
        digest: &str,
        unix_secs: i64,
    ) -> Result<(), AuthError> {
        let get = |name: &'static str| header(name).ok_or(AuthError::Missing(name));
        let version: u16 = get(H_VERSION)?
            .parse()
            .map_err(|_| AuthError::Missing(H_VERSION))?;
        if version != PROTOCOL_VERSION {
            return Err(AuthError::UnsupportedVersion(version));
        }
        let cluster = get(H_CLUSTER)?;
        if cluster != self.cluster.to_string() {
            return Err(AuthError::ForeignCluster { got: cluster });
        }
        let time = get(H_TIME)?;
        let t: i64 = time.parse().map_err(|_| AuthError::Missing(H_TIME))?;
        let nonce = get(H_NONCE)?;
        let signature = get(H_SIGNATURE)?;
        let want = self.mac(method, path, &time, &nonce, digest);
        if !constant_time_eq(want.as_bytes(), signature.as_bytes()) {
            return Err(AuthError::BadSignature);
        }
        let skew = unix_secs - t;
        if skew.abs() > self.window_secs {
            return Err(AuthError::Stale { skew_secs: skew });
        }
        self.remember(signature, t, unix_secs)
    }

    /// The signature of a delivery URL: the path (which names the content),
    /// the store it is for and its expiry, so a store serves it without any
    /// purchase lookup, and another store at the same address does not.
    pub fn sign_url(&self, path: &str, store: &str, expires_unix: i64) -> String {
        self.mac("URL", path, &expires_unix.to_string(), store, "")
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
        let want = self.sign_url(path, store, expires_unix);
        if !constant_time_eq(want.as_bytes(), signature.as_bytes()) {
            return Err(UrlError::BadSignature);
        }
        if unix_secs > expires_unix {
            return Err(UrlError::Expired);
        }
        Ok(())
    }

    fn remember(&self, signature: String, t: i64, now: i64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while seen
            .order
            .front()
            .is_some_and(|(at, _)| now - *at > self.window_secs)
        {
            if let Some((_, sig)) = seen.order.pop_front() {
                seen.by_sig.remove(&sig);
            }
        }
        if seen.by_sig.contains_key(&signature) {
            return Err(AuthError::Replayed);
        }
        seen.by_sig.insert(signature.clone(), t);
        seen.order.push_back((t.min(now), signature));
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let s = signer(b"secret");
        let d = body_digest(b"body");
        let h = s.sign("POST", "/internal/v1/message", 1000, 1, &d);
        assert_eq!(
            s.verify("POST", "/internal/v1/message", lookup(&h), &d, 1001),
            Ok(())
        );
        assert_eq!(
            s.verify("POST", "/internal/v1/message", lookup(&h), &d, 1001),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn wrong_secret_tampering_staleness_and_foreign_cluster_are_refused() {
        let s = signer(b"secret");
        let d = body_digest(b"body");
        let h = signer(b"other").sign("POST", "/p", 1000, 1, &d);
        assert_eq!(
            s.verify("POST", "/p", lookup(&h), &d, 1000),
            Err(AuthError::BadSignature)
        );
        let h = s.sign("POST", "/p", 1000, 2, &d);
        let tampered = body_digest(b"bodx");
        assert_eq!(
            s.verify("POST", "/p", lookup(&h), &tampered, 1000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify("POST", "/q", lookup(&h), &d, 1000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify("POST", "/p", lookup(&h), &d, 1100),
            Err(AuthError::Stale { skew_secs: 100 })
        );
        let foreign = Signer::new(ClusterId(8), b"secret", 30).sign("POST", "/p", 1000, 3, &d);
        let e = s
            .verify("POST", "/p", lookup(&foreign), &d, 1000)
            .unwrap_err();
        assert!(matches!(e, AuthError::ForeignCluster { .. }));
        assert_eq!(e.status(), 403);
        assert_eq!(AuthError::BadSignature.status(), 401);
        let missing = s.verify("POST", "/p", |_| None, &d, 1000).unwrap_err();
        assert_eq!(missing, AuthError::Missing(H_VERSION));
    }

    #[test]
    fn same_body_signed_twice_is_not_a_replay() {
        let s = signer(b"secret");
        let d = body_digest(b"b");
        let a = s.sign("POST", "/p", 1000, 1, &d);
        let b = s.sign("POST", "/p", 1000, 2, &d);
        assert_eq!(s.verify("POST", "/p", lookup(&a), &d, 1000), Ok(()));
        assert_eq!(s.verify("POST", "/p", lookup(&b), &d, 1000), Ok(()));
    }
}
