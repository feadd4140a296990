//! What goes into a node and what comes out of it.

use crate::durable::Record;
use crate::ids::{ClusterId, NodeId};
use crate::message::{Envelope, Message, PROTOCOL_VERSION};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Everything that can happen to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An envelope arrived from the network.
    Message(Envelope),
    /// Time passed (the driver calls this at or after `poll_timeout`).
    Tick,
    /// A call this node made to a peer failed: suspect it locally until the
    /// ping net reaches it again.
    ContactFailed(NodeId),
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
    /// This node started or stopped suspecting a peer locally.
    Suspicion { node: NodeId, suspect: bool },
    /// This node voted a peer down or withdrew that vote.
    VoteCast { subject: NodeId, down: bool },
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
    pub(crate) queue: VecDeque<Output>,
    pub(crate) loopback: VecDeque<Envelope>,
}

impl Outbox {
    pub(crate) fn new(from: NodeId, from_addr: SocketAddr) -> Outbox {
        Outbox {
            cluster: ClusterId::UNSET,
            from,
            from_addr,
            queue: VecDeque::new(),
            loopback: VecDeque::new(),
        }
    }

    pub(crate) fn envelope(&self, msg: Message) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            cluster: self.cluster,
            from: self.from,
            from_addr: self.from_addr,
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
