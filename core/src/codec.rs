//! The one place messages become bytes and back (bincode 2.x), so the wire
//! format can be swapped here alone.

use crate::message::{Envelope, PROTOCOL_VERSION};
use std::fmt;

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

/// Encoding an in-memory envelope cannot fail: every field is serialisable.
pub fn encode(env: &Envelope) -> Vec<u8> {
    bincode::serde::encode_to_vec(env, config()).expect("envelopes always serialise")
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    // The version is the first field: read it alone first so a newer peer gets
    // a precise error even if the rest of its message does not parse for us.
    let (version, _) = bincode::serde::decode_from_slice::<u16, _>(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (env, used) = bincode::serde::decode_from_slice::<Envelope, _>(bytes, config())
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
    let (v, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
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
}
