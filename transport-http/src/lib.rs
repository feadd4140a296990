//! StretchFS over HTTP: core envelopes (bincode) posted to one internal
//! endpoint, every request signed with the cluster secret (HMAC over method,
//! path, destination, time, nonce, body digest, cluster and protocol
//! version) and refused with 401/403/421 and a reason when unsigned,
//! foreign, misdirected, stale or replayed.

pub mod auth;
pub mod client;

pub use auth::{AuthError, Prechecked, Signer, UrlError};
pub use client::{HttpClient, HttpTransport, SendError};

pub use stretchfs_core::codec::MAX_ENVELOPE_BYTES;
use stretchfs_core::codec::{self, DecodeError};
use stretchfs_core::Envelope;

/// Where node-to-node messages go.
pub const MESSAGE_PATH: &str = "/internal/v1/message";

/// Why an incoming message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Auth(AuthError),
    Decode(DecodeError),
    /// Signed for this cluster, but the envelope inside names another.
    EnvelopeCluster,
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::Auth(e) => e.status(),
            Refused::Decode(DecodeError::UnsupportedVersion(_)) | Refused::EnvelopeCluster => 403,
            Refused::Decode(_) => 400,
        }
    }

    /// A short stable name for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Auth(e) => e.code(),
            Refused::Decode(DecodeError::UnsupportedVersion(_)) => "unsupported_version",
            Refused::Decode(_) => "malformed",
            Refused::EnvelopeCluster => "foreign_cluster",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Auth(e) => write!(f, "{e}"),
            Refused::Decode(e) => write!(f, "{e}"),
            Refused::EnvelopeCluster => write!(f, "envelope names another cluster"),
        }
    }
}

/// Checks a posted message's headers before its body is read: refused
/// here, the body costs the receiver nothing.
pub fn precheck_message(
    signer: &Signer,
    me: &str,
    header: impl Fn(&str) -> Option<String>,
    unix_secs: i64,
) -> Result<Prechecked, Refused> {
    signer
        .precheck(me, header, unix_secs)
        .map_err(Refused::Auth)
}

/// Verifies (MAC, replay) and decodes a prechecked message's body.
pub fn open_prechecked(
    signer: &Signer,
    checked: Prechecked,
    me: &str,
    body: &[u8],
    unix_secs: i64,
) -> Result<Envelope, Refused> {
    let digest = auth::body_digest(body);
    signer
        .verify_prechecked(checked, "POST", MESSAGE_PATH, me, &digest, unix_secs)
        .map_err(Refused::Auth)?;
    let env = codec::decode(body).map_err(Refused::Decode)?;
    if env.cluster != signer.cluster() {
        return Err(Refused::EnvelopeCluster);
    }
    Ok(env)
}

/// Verifies and decodes a posted message sent to `me` (`host:port`).
pub fn open_message(
    signer: &Signer,
    me: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    unix_secs: i64,
) -> Result<Envelope, Refused> {
    let checked = precheck_message(signer, me, header, unix_secs)?;
    open_prechecked(signer, checked, me, body, unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stretchfs_core::{ClusterId, Message, NodeId, PROTOCOL_VERSION};

    const ME: &str = "127.0.0.1:2";

    fn env(cluster: ClusterId) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster,
            from: NodeId(1),
            from_addr: "127.0.0.1:1".parse().unwrap(),
            sent_at: stretchfs_core::WallTime::default(),
            msg: Message::Ping { probe: 3 },
        }
    }

    #[test]
    fn signed_message_opens_and_garbage_is_refused() {
        let s = Signer::new(ClusterId(5), b"k", 30);
        let body = codec::encode(&env(ClusterId(5)));
        let h = s.sign("POST", MESSAGE_PATH, ME, 100, 1, &auth::body_digest(&body));
        let lookup = |n: &str| h.get(n);
        assert_eq!(
            open_message(&s, ME, lookup, &body, 100),
            Ok(env(ClusterId(5)))
        );
        let garbage = vec![stretchfs_core::PROTOCOL_VERSION as u8, 0xff, 0xff, 0xff];
        let h = s.sign(
            "POST",
            MESSAGE_PATH,
            ME,
            100,
            2,
            &auth::body_digest(&garbage),
        );
        let lookup = |n: &str| h.get(n);
        let e = open_message(&s, ME, lookup, &garbage, 100).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn envelope_for_another_cluster_inside_a_valid_signature_is_refused() {
        let s = Signer::new(ClusterId(5), b"k", 30);
        let body = codec::encode(&env(ClusterId(6)));
        let h = s.sign("POST", MESSAGE_PATH, ME, 100, 1, &auth::body_digest(&body));
        let lookup = |n: &str| h.get(n);
        assert_eq!(
            open_message(&s, ME, lookup, &body, 100),
            Err(Refused::EnvelopeCluster)
        );
    }
}
