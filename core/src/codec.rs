//! The one place messages become bytes and back (bincode 2.x), so the wire
//! format can be swapped here alone.

use crate::message::{Envelope, PROTOCOL_VERSION};
use std::fmt;

/// The largest encoded envelope a node sends or accepts. The biggest ones
/// are bounded by construction: a snapshot chunk (512 KiB), an inventory
/// report (`report_batch`, 10,000 records of at most ~100 bytes), a feed
/// reply (`pull_limit`, 1,000 entries; a purchase is at most ~4.3 KiB with
/// its referrers capped), a restore batch (1,000 purchases). The size
/// tests below encode each at its worst.
pub const MAX_ENVELOPE_BYTES: usize = 8 << 20;

/// What decoding one envelope may claim (bincode counts the bytes each
/// string, buffer and container asks for): twice its largest encoding, so
/// a forged length prefix fails instead of allocating.
const ENVELOPE_DECODE_LIMIT: usize = 2 * MAX_ENVELOPE_BYTES;

/// The same for other values: metadata records and whole snapshots, which
/// grow with the cluster, read from the local disk or reassembled from
/// signed chunks.
const VALUE_DECODE_LIMIT: usize = 4 << 30;

/// Why bytes could not become an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a well-formed envelope.
    Malformed(String),
    /// Bytes left over after a complete envelope.
    TrailingBytes(usize),
    /// A well-formed envelope of a protocol version we do not speak.
    UnsupportedVersion(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed envelope: {why}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the envelope"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v} (this node speaks {PROTOCOL_VERSION})"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn envelope_limit() -> impl bincode::config::Config {
    config().with_limit::<ENVELOPE_DECODE_LIMIT>()
}

fn value_limit() -> impl bincode::config::Config {
    config().with_limit::<VALUE_DECODE_LIMIT>()
}

/// Encoding an in-memory envelope cannot fail: every field is serialisable.
pub fn encode(env: &Envelope) -> Vec<u8> {
    bincode::serde::encode_to_vec(env, config()).expect("envelopes always serialise")
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    // The version is the first field: read it alone first so a newer peer gets
    // a precise error even if the rest of its message does not parse for us.
    let (version, _) = bincode::serde::decode_from_slice::<u16, _>(bytes, envelope_limit())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::Malformed(format!(
            "{} bytes, more than the {MAX_ENVELOPE_BYTES} an envelope may have",
            bytes.len()
        )));
    }
    let (env, used) = bincode::serde::decode_from_slice::<Envelope, _>(bytes, envelope_limit())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(env)
}

/// Encodes any serialisable value (metadata records on disk use this too,
/// so bincode stays in this one module).
pub fn encode_value<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("values always serialise")
}

pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (v, used) = bincode::serde::decode_from_slice::<T, _>(bytes, value_limit())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Change, FeedBody, FeedEntry};
    use crate::ids::{ClusterId, LogId, NodeId, NodeInfo, Roles, Zone};
    use crate::message::{Message, VoteSeq};
    use crate::time::Duration;

    fn env(msg: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: ClusterId(42),
            from: NodeId(7),
            from_addr: "10.0.0.7:7000".parse().unwrap(),
            sent_at: crate::time::WallTime::default(),
            msg,
        }
    }

    fn samples() -> Vec<Envelope> {
        let info = NodeInfo {
            id: NodeId(3),
            addr: "10.0.0.3:7000".parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new("z1"),
            weight: 100,
            incarnation: 0,
        };
        vec![
            env(Message::Join {
                info: Box::new(info.clone()),
            }),
            env(Message::Ping { probe: 9 }),
            env(Message::PingReq {
                probe: 1,
                target: NodeId(2),
                target_addr: "[::1]:80".parse().unwrap(),
            }),
            env(Message::Votes {
                seq: VoteSeq {
                    incarnation: 2,
                    counter: 5,
                },
                down: vec![NodeId(1), NodeId(4)],
            }),
            env(Message::FeedPull {
                req: 1,
                since: 10,
                limit: 100,
                wait: Duration::from_millis(500),
            }),
            env(Message::FeedReply {
                req: 1,
                log: LogId(77),
                body: FeedBody::Entries {
                    entries: vec![
                        FeedEntry {
                            seq: 11,
                            change: Change::NodeUpserted(info),
                        },
                        FeedEntry {
                            seq: 12,
                            change: Change::Health {
                                node: NodeId(3),
                                down: true,
                            },
                        },
                    ],
                    head: 12,
                    at_end: true,
                },
            }),
        ]
    }

    #[test]
    fn every_sample_round_trips() {
        for e in samples() {
            let bytes = encode(&e);
            assert_eq!(decode(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn decode_errors_say_what_went_wrong() {
        let cases = [
            (
                DecodeError::Malformed("eof".into()),
                "malformed envelope: eof".to_string(),
            ),
            (
                DecodeError::TrailingBytes(3),
                "3 bytes after the envelope".to_string(),
            ),
            (
                DecodeError::UnsupportedVersion(PROTOCOL_VERSION + 1),
                format!(
                    "protocol version {} (this node speaks {PROTOCOL_VERSION})",
                    PROTOCOL_VERSION + 1
                ),
            ),
        ];
        for (e, said) in cases {
            assert_eq!(e.to_string(), said);
        }
    }

    #[test]
    fn foreign_version_is_named_in_the_error() {
        let mut e = env(Message::Ping { probe: 1 });
        e.version = PROTOCOL_VERSION + 1;
        let err = decode(&encode(&e)).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(PROTOCOL_VERSION + 1));
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = encode(&samples()[5]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes(1)));
        long.extend([0, 0]);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes(3)));
        let mut value = encode_value(&(7u64, "x".to_string()));
        assert_eq!(decode_value::<(u64, String)>(&value), Ok((7, "x".into())));
        value.extend([1, 2, 3]);
        let trailing = decode_value::<(u64, String)>(&value);
        assert_eq!(trailing, Err(DecodeError::TrailingBytes(3)));
        assert!(decode(&[0xff; 3]).is_err());
    }

    /// A Join whose zone name claims `len` bytes, cut right after the
    /// claim: what a forged length prefix looks like on the wire.
    fn join_claiming(len: u64) -> Vec<u8> {
        let marker = "ZZZZZZZZZZZZ";
        let info = NodeInfo {
            id: NodeId(3),
            addr: "10.0.0.3:7000".parse().unwrap(),
            roles: Roles::STORE,
            zone: Zone::new(marker),
            weight: 100,
            incarnation: 0,
        };
        let bytes = encode(&env(Message::Join {
            info: Box::new(info),
        }));
        let mut needle = vec![marker.len() as u8];
        needle.extend_from_slice(marker.as_bytes());
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the zone is in the encoding");
        let mut forged = bytes[..at].to_vec();
        // bincode's varint: 0xfd then a little-endian u64.
        forged.push(0xfd);
        forged.extend_from_slice(&len.to_le_bytes());
        forged.extend_from_slice(&[b'Z'; 64]);
        forged
    }

    #[test]
    fn a_forged_length_prefix_is_refused_without_allocating_it() {
        for len in [1u64 << 60, u64::MAX, (MAX_ENVELOPE_BYTES as u64) * 4] {
            let forged = join_claiming(len);
            assert!(
                matches!(decode(&forged), Err(DecodeError::Malformed(_))),
                "claim of {len} bytes"
            );
            let value = decode_value::<Envelope>(&forged);
            assert!(matches!(value, Err(DecodeError::Malformed(_))), "{len}");
        }
    }

    /// The largest messages at their worst stay under `MAX_ENVELOPE_BYTES`
    /// and decode: the cap on node messages never refuses a legitimate one.
    #[test]
    fn the_largest_legitimate_messages_fit_the_cap() {
        use crate::content::ContentMeta;
        use crate::hash::{ContentHash, HashKind};
        use crate::message::{Ask, InventoryBatch};
        use crate::purchase::{Purchase, Token, MAX_REFERRERS, MAX_REFERRER_LEN};
        use crate::snapshot_transfer::{SnapshotChunk, CHUNK_BYTES};
        let cfg = crate::config::NodeConfig::new(
            "10.0.0.1:1".parse().unwrap(),
            Roles::STORE,
            Zone::new("z"),
            "10.0.0.1:1".parse().unwrap(),
        );
        let hash = |i: usize| ContentHash::compute(HashKind::Sha512, &i.to_le_bytes());
        let ext = crate::content::Ext::lit("xxxxxxxxxxxxxxxx");
        let purchase = |i: usize| Purchase {
            token: Token(u128::MAX - i as u128),
            hash: hash(i),
            ext,
            expires: crate::time::WallTime::from_micros(u64::MAX),
            referrers: vec!["r".repeat(MAX_REFERRER_LEN); MAX_REFERRERS],
        };
        let feed = FeedBody::Entries {
            entries: (0..cfg.feed.pull_limit as usize)
                .map(|i| FeedEntry {
                    seq: u64::MAX - i as u64,
                    change: Change::PurchaseCreated(purchase(i)),
                })
                .collect(),
            head: u64::MAX,
            at_end: true,
        };
        let report = InventoryBatch {
            seq: VoteSeq {
                incarnation: u64::MAX,
                counter: u64::MAX,
            },
            sync: Some(LogId(u64::MAX)),
            adds: (0..cfg.content.report_batch)
                .map(|i| {
                    let meta = ContentMeta {
                        ext,
                        size: u64::MAX,
                    };
                    (hash(i), meta)
                })
                .collect(),
            removes: Vec::new(),
        };
        let restore = Ask::RestorePurchases {
            purchases: (0..1_000).map(purchase).collect(),
            revoked: Vec::new(),
            nodes: Vec::new(),
            done: true,
        };
        let chunk = SnapshotChunk {
            seq: u64::MAX,
            offset: u64::MAX,
            total: u64::MAX,
            bytes: vec![0xff; CHUNK_BYTES],
        };
        for msg in [
            Message::FeedReply {
                req: u64::MAX,
                log: LogId(u64::MAX),
                body: feed,
            },
            Message::InventoryReport(Box::new(report)),
            Message::Ask {
                req: u64::MAX,
                ask: Box::new(restore),
            },
            Message::SnapshotReply {
                req: u64::MAX,
                log: LogId(u64::MAX),
                chunk: Box::new(chunk),
            },
        ] {
            let kind = msg.kind();
            let bytes = encode(&env(msg));
            assert!(
                bytes.len() <= MAX_ENVELOPE_BYTES,
                "{kind}: {} bytes",
                bytes.len()
            );
            assert!(decode(&bytes).is_ok(), "{kind} decodes");
        }
    }
}
