//! Every message between nodes, and the envelope that carries it.

use crate::content::{ContentMeta, ContentRecord};
use crate::feed::FeedBody;
use crate::hash::ContentHash;
use crate::ids::{ClusterId, LogId, NodeId, NodeInfo};
use crate::purchase::{Purchase, Token};
use crate::snapshot_transfer::{SnapshotChunk, SnapshotCursor};
use crate::time::Duration;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Bumped on any incompatible change to [`Message`] or [`Envelope`].
pub const PROTOCOL_VERSION: u16 = 6;

/// What travels on the wire: a message with the header every receiver checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub cluster: ClusterId,
    pub from: NodeId,
    /// Where answers go; the registry may not know a restarted sender's new
    /// address yet.
    pub from_addr: SocketAddr,
    /// The sender's own wall clock when it made this (see `cluster_clock`).
    pub sent_at: crate::time::WallTime,
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
    /// Asks for the next piece of a snapshot (the first, without `resume`).
    SnapshotPull {
        req: u64,
        resume: Option<SnapshotCursor>,
    },
    SnapshotReply {
        req: u64,
        log: LogId,
        chunk: Box<SnapshotChunk>,
    },
    /// A store's inventory changes.
    InventoryReport(Box<InventoryBatch>),
    InventoryAck {
        seq: VoteSeq,
    },
    /// Authority to a store: copy content to another store.
    CloneTo(Box<CloneJob>),
    CloneDone {
        job: u64,
        ok: bool,
    },
    /// Authority to a store: delete your copy (surplus or deleted content).
    DropCopy(Box<DropOrder>),
    /// To the authority: this node is shutting down; mark it down now rather
    /// than waiting for its observers (it comes back when it joins again).
    Leaving {
        /// The sender's start this leave is from: a leave delayed past the
        /// node's next start is ignored.
        incarnation: u64,
    },
    /// A request to the authority from a prism (or any node).
    Ask {
        req: u64,
        ask: Box<Ask>,
    },
    Answer {
        req: u64,
        answer: Box<Answer>,
    },
}

/// A batch of one store's inventory changes. With `sync`, the batch
/// completes a full scan-and-diff against log `sync`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InventoryBatch {
    pub seq: VoteSeq,
    pub sync: Option<LogId>,
    pub adds: Vec<(ContentHash, ContentMeta)>,
    pub removes: Vec<ContentHash>,
}

/// Copy `hash` to `target`.
/// "Drop your copy of `hash`, if it is one you reported in a batch no
/// later than `upto`." A copy received since (a re-upload, a clone) is not
/// the one the authority meant, so a late or duplicated order cannot
/// delete it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DropOrder {
    pub hash: ContentHash,
    pub upto: VoteSeq,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CloneJob {
    pub job: u64,
    pub hash: ContentHash,
    pub target: NodeId,
    pub target_addr: SocketAddr,
}

/// Requests to the authority.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ask {
    /// A prism placed content on these stores (they acknowledged durable copies).
    ContentPlaced {
        hash: ContentHash,
        meta: ContentMeta,
        stores: Vec<NodeId>,
        /// True when the prism just transferred the bytes to `stores`;
        /// false when it only read them from its replica (already stored),
        /// which the authority checks against its own inventory.
        transferred: bool,
    },
    ContentLookup {
        hash: ContentHash,
    },
    ContentExists {
        hashes: Vec<ContentHash>,
    },
    /// Delete content everywhere (admin).
    ContentDelete {
        hash: ContentHash,
    },
    /// Create a purchase; the authority sets its expiry from `life`.
    PurchaseCreate {
        purchase: Purchase,
        life: Duration,
    },
    PurchaseLookup {
        token: Token,
    },
    PurchaseRemove {
        token: Token,
    },
    /// Start or stop draining a store (admin).
    Drain {
        node: NodeId,
        draining: bool,
    },
    /// Remove a stopped node from the cluster for good (admin): refused
    /// while it is up or while a copy it holds is among the last R.
    RemoveNode {
        node: NodeId,
    },
    /// Purchases (and revocations, with when the purchase would have
    /// expired) a node held in its replica of an earlier log, handed back
    /// after the authority lost its state; `done` when this was the last batch.
    RestorePurchases {
        purchases: Vec<Purchase>,
        revoked: Vec<(Token, crate::time::WallTime)>,
        /// Nodes the old log knew (every store, the others only if up):
        /// the authority waits for them.
        nodes: Vec<NodeId>,
        done: bool,
    },
}

/// The authority's answer to a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lookup<T> {
    Found(T),
    /// The authority's state is complete and it has no such thing.
    NotFound,
    /// The authority cannot say (it is rebuilding its state after a loss).
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    Done,
    Content(Lookup<ContentRecord>),
    Purchase(Lookup<Purchase>),
    Exists(Vec<bool>),
    Removed(bool),
    /// The stores of a `ContentPlaced` the authority recorded as holding
    /// the content.
    Placed(Vec<NodeId>),
    Refused(String),
    /// The authority cannot answer now (rebuilding its state after a loss).
    Unavailable,
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
            Message::InventoryReport(_) => "InventoryReport",
            Message::InventoryAck { .. } => "InventoryAck",
            Message::CloneTo(_) => "CloneTo",
            Message::CloneDone { .. } => "CloneDone",
            Message::DropCopy(_) => "DropCopy",
            Message::Leaving { .. } => "Leaving",
            Message::Ask { .. } => "Ask",
            Message::Answer { .. } => "Answer",
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

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn probes_are_the_failure_detectors_four_messages_and_each_kind_is_named() {
        let probes = [
            Message::Ping { probe: 1 },
            Message::Ack { probe: 1 },
            Message::PingReq {
                probe: 1,
                target: NodeId(2),
                target_addr: "10.0.0.2:7000".parse().unwrap(),
            },
            Message::IndirectAck {
                probe: 1,
                target: NodeId(2),
            },
        ];
        let names: Vec<&str> = probes.iter().map(Message::kind).collect();
        assert_eq!(names, ["Ping", "Ack", "PingReq", "IndirectAck"]);
        assert!(probes.iter().all(Message::is_probe));
        let others = [
            Message::Leaving { incarnation: 1 },
            Message::VotesAck {
                seq: VoteSeq::default(),
            },
            Message::SnapshotPull {
                req: 1,
                resume: None,
            },
        ];
        let names: Vec<&str> = others.iter().map(Message::kind).collect();
        assert_eq!(names, ["Leaving", "VotesAck", "SnapshotPull"]);
        assert!(!others.iter().any(Message::is_probe));
    }
}
