//! What goes into a node and what comes out of it.

use crate::content::{ContentMeta, ContentRecord};
use crate::durable::Record;
use crate::hash::ContentHash;
use crate::ids::{ClusterId, NodeId};
use crate::message::{Envelope, Message, PROTOCOL_VERSION};
use crate::purchase::{Purchase, Token};
use crate::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An envelope arrived from the network.
    Message(Envelope),
    /// Time passed (the driver calls this at or after `poll_timeout`).
    Tick,
    /// A client request to this prism; answered by `Output::Reply` with the
    /// same id.
    Client { id: u64, request: ClientRequest },
    /// A transfer this node asked for (`Output::Transfer`) finished.
    TransferDone { op: u64, ok: bool },
    /// Store: the content on local disk, in answer to `Output::ListContent`.
    ContentListing(Vec<(ContentHash, ContentMeta)>),
    /// The node is shutting down: tell the authority.
    Leave,
    /// Store: a verified copy is now durable on local disk.
    ContentStored {
        hash: ContentHash,
        meta: ContentMeta,
    },
    /// Store: the result of `Output::Scrub` (false: the bytes no longer
    /// match the hash, or the file is gone).
    ScrubResult { hash: ContentHash, ok: bool },
}

/// What clients ask a prism for. Uploads arrive with their hash already
/// computed: the driver hashes the bytes as they stream in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    Upload {
        hash: ContentHash,
        meta: ContentMeta,
    },
    Detail {
        hash: ContentHash,
    },
    Exists {
        hashes: Vec<ContentHash>,
    },
    Delete {
        hash: ContentHash,
    },
    Purchase {
        hash: ContentHash,
        ext: String,
        life: Duration,
        referrers: Vec<String>,
    },
    GetPurchase {
        token: Token,
    },
    RemovePurchase {
        token: Token,
    },
    Deliver {
        token: Token,
        referrer: Option<String>,
    },
    Drain {
        node: NodeId,
        draining: bool,
    },
    /// Decommission a stopped node (see `Ask::RemoveNode`).
    RemoveNode {
        node: NodeId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    Uploaded {
        hash: ContentHash,
        size: u64,
        copies: Vec<NodeId>,
    },
    Detail(ContentRecord),
    Exists(Vec<bool>),
    Deleted,
    Purchase(Purchase),
    Removed,
    /// Fetch the content from this store.
    Deliver {
        store: NodeId,
        addr: std::net::SocketAddr,
        hash: ContentHash,
        ext: crate::content::Ext,
    },
    Draining,
    NodeRemoved,
    Error(ClientError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The prism has not taken a snapshot and caught up yet (503).
    NotReady,
    /// No such purchase or content; the answer is authoritative (404).
    NotFound(&'static str),
    /// The purchase expired (410).
    Expired,
    /// The referrer is not allowed (403).
    Forbidden,
    /// Cannot answer now; try again (503 with Retry-After).
    Unavailable(&'static str),
    /// The request itself is wrong (400).
    BadRequest(String),
}

/// Something the driver must do or may observe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send {
        to: SocketAddr,
        envelope: Envelope,
    },
    /// Write to durable storage before sending anything that follows.
    Persist(Record),
    Notice(Notice),
    /// The answer to `Input::Client` with this id.
    Reply {
        id: u64,
        response: ClientResponse,
    },
    /// Copy the content `hash` (spooled upload on a prism, stored copy on a
    /// store) to the store `to`; report with `Input::TransferDone`. The
    /// receiving store acknowledges only a verified, synced copy.
    Transfer {
        op: u64,
        hash: ContentHash,
        to: NodeId,
        to_addr: SocketAddr,
        /// Where the bytes come from.
        source: TransferSource,
        /// Give up (and report failure) after this long.
        timeout: Duration,
    },
    /// Store: list local content; answer with `Input::ContentListing`.
    ListContent,
    /// Store: verify the local copy of `hash`; answer with `Input::ScrubResult`.
    Scrub {
        hash: ContentHash,
    },
    /// Store: delete the local copy of `hash`.
    DeleteContent {
        hash: ContentHash,
    },
}

/// Where the bytes of a transfer come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferSource {
    /// A prism's spooled upload.
    Spool,
    /// A store's own stored copy (a repair clone).
    Stored,
}

/// Observable state changes, for logs, metrics and the simulator's oracles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The authority recorded this node; it belongs to `cluster`.
    Joined { cluster: ClusterId },
    /// The node's replica took a snapshot and caught up with the feed.
    Ready,
    /// This node's replica applied a verdict.
    VerdictApplied { node: NodeId, down: bool },
    /// The authority published a verdict (emitted by the authority only).
    VerdictPublished { node: NodeId, down: bool },
    /// The authority recorded that `node` left gracefully: down because it
    /// said so, not by votes (emitted by the authority only).
    Left { node: NodeId },
    /// This node started or stopped suspecting a peer locally.
    Suspicion { node: NodeId, suspect: bool },
    /// This node voted a peer down or withdrew that vote.
    VoteCast { subject: NodeId, down: bool },
    /// The authority finished rebuilding a state it started without.
    Recovered,
    /// An admin removed this node's start from the cluster: it no longer
    /// probes, stores or serves until it is started again.
    Removed,
    /// A message was dropped; `why` says which check refused it.
    Dropped { from: NodeId, why: DropReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    ForeignCluster,
    UnsupportedVersion,
    NotJoined,
    NotAuthority,
}

/// Outputs under construction. Messages to the node's own address are looped
/// back instead of being sent, so an authority talks to itself like any node.
#[derive(Debug)]
pub struct Outbox {
    pub(crate) cluster: ClusterId,
    pub(crate) from: NodeId,
    pub(crate) from_addr: SocketAddr,
    /// The node's own wall clock, stamped on every envelope.
    pub(crate) wall: crate::time::WallTime,
    pub(crate) queue: VecDeque<Output>,
    pub(crate) loopback: VecDeque<Envelope>,
}

impl Outbox {
    pub fn new(from: NodeId, from_addr: SocketAddr) -> Outbox {
        Outbox {
            cluster: ClusterId::UNSET,
            from,
            from_addr,
            wall: crate::time::WallTime::default(),
            queue: VecDeque::new(),
            loopback: VecDeque::new(),
        }
    }

    /// Outputs produced so far (drivers use `Node::poll_output` instead).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn envelope(&self, msg: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: self.cluster,
            from: self.from,
            from_addr: self.from_addr,
            sent_at: self.wall,
            msg,
        }
    }

    pub(crate) fn send(&mut self, to: SocketAddr, msg: Message) {
        let envelope = self.envelope(msg);
        if to == self.from_addr {
            self.loopback.push_back(envelope);
        } else {
            self.queue.push_back(Output::Send { to, envelope });
        }
    }

    pub(crate) fn persist(&mut self, record: Record) {
        self.queue.push_back(Output::Persist(record));
    }

    pub(crate) fn notice(&mut self, notice: Notice) {
        self.queue.push_back(Output::Notice(notice));
    }
}

/// The boundary every transport implements (the seeded simulated network,
/// HTTP): carry an envelope to an address, best effort. Loss, delay and
/// duplication are the transport's business; core tolerates all three.
pub trait Transport {
    fn send(&mut self, to: SocketAddr, envelope: Envelope);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_to_our_own_address_loop_back_and_the_rest_queue_stamped() {
        let me: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut out = Outbox::new(NodeId(1), me);
        out.cluster = ClusterId(5);
        out.wall = crate::time::WallTime::from_secs(9);
        assert!(out.is_empty());
        out.send(me, Message::Ping { probe: 1 });
        assert!(out.is_empty(), "looped back, not an output");
        assert_eq!(out.loopback.len(), 1);
        let peer: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        out.send(peer, Message::Ping { probe: 2 });
        out.notice(Notice::Ready);
        out.persist(Record::Recovered);
        assert_eq!(out.len(), 3);
        assert!(!out.is_empty());
        let Some(Output::Send { to, envelope }) = out.queue.front() else {
            panic!("{:?}", out.queue)
        };
        assert_eq!(*to, peer);
        assert_eq!(envelope.version, PROTOCOL_VERSION);
        assert_eq!(envelope.cluster, ClusterId(5));
        assert_eq!((envelope.from, envelope.from_addr), (NodeId(1), me));
        assert_eq!(envelope.sent_at, crate::time::WallTime::from_secs(9));
        assert_eq!(envelope.msg, Message::Ping { probe: 2 });
        assert_eq!(out.queue[1], Output::Notice(Notice::Ready));
        assert_eq!(out.queue[2], Output::Persist(Record::Recovered));
    }
}
