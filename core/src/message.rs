//! Every message between nodes, and the envelope that carries it.

use crate::feed::{FeedBody, Snapshot};
use crate::ids::{ClusterId, LogId, NodeId, NodeInfo};
use crate::time::Duration;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Bumped on any incompatible change to [`Message`] or [`Envelope`].
pub const PROTOCOL_VERSION: u16 = 1;

/// What travels on the wire: a message with the header every receiver checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub cluster: ClusterId,
    pub from: NodeId,
    /// Where answers go; the registry may not know a restarted sender's new
    /// address yet.
    pub from_addr: SocketAddr,
    pub msg: Message,
}

/// Orders one observer's vote sets: a restarted observer (higher incarnation)
/// supersedes everything it sent before.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct VoteSeq {
    pub incarnation: u64,
    pub counter: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// To the authority: register or update this node (idempotent by node id).
    Join {
        info: Box<NodeInfo>,
    },
    /// From the authority: the join is recorded as of feed entry `seq` of log
    /// `log`; the envelope carries the cluster id.
    JoinAck {
        node: NodeId,
        log: LogId,
        seq: u64,
    },
    /// Direct probe.
    Ping {
        probe: u64,
    },
    /// Answer to a ping, echoing its probe id.
    Ack {
        probe: u64,
    },
    /// Ask a helper to probe `target` for us.
    PingReq {
        probe: u64,
        target: NodeId,
        target_addr: SocketAddr,
    },
    /// A helper reached `target` on our behalf.
    IndirectAck {
        probe: u64,
        target: NodeId,
    },
    /// An observer's complete set of down votes (replaces its previous set).
    Votes {
        seq: VoteSeq,
        down: Vec<NodeId>,
    },
    VotesAck {
        seq: VoteSeq,
    },
    /// Entries after `since`; the authority may hold the pull up to `wait`.
    FeedPull {
        req: u64,
        since: u64,
        limit: u32,
        wait: Duration,
    },
    FeedReply {
        req: u64,
        log: LogId,
        body: FeedBody,
    },
    SnapshotPull {
        req: u64,
    },
    SnapshotReply {
        req: u64,
        log: LogId,
        snapshot: Box<Snapshot>,
    },
}

impl Message {
    /// Short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Join { .. } => "Join",
            Message::JoinAck { .. } => "JoinAck",
            Message::Ping { .. } => "Ping",
            Message::Ack { .. } => "Ack",
            Message::PingReq { .. } => "PingReq",
            Message::IndirectAck { .. } => "IndirectAck",
            Message::Votes { .. } => "Votes",
            Message::VotesAck { .. } => "VotesAck",
            Message::FeedPull { .. } => "FeedPull",
            Message::FeedReply { .. } => "FeedReply",
            Message::SnapshotPull { .. } => "SnapshotPull",
            Message::SnapshotReply { .. } => "SnapshotReply",
        }
    }

    /// Part of the failure detector's own traffic (counted as probe load).
    pub fn is_probe(&self) -> bool {
        matches!(
            self,
            Message::Ping { .. }
                | Message::Ack { .. }
                | Message::PingReq { .. }
                | Message::IndirectAck { .. }
        )
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Envelopes are moved through queues on every hop; keep them small by
    /// boxing the rare large payloads.
    #[test]
    fn envelope_stays_small() {
        assert!(
            std::mem::size_of::<Message>() <= 64,
            "{}",
            std::mem::size_of::<Message>()
        );
        assert!(
            std::mem::size_of::<Envelope>() <= 128,
            "{}",
            std::mem::size_of::<Envelope>()
        );
    }
}
