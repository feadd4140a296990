//! The simulated machines: each host has a clock, a disk that survives
//! crashes, an address, and (while running) a core node.

use crate::clock::SimClock;
use crate::config::SimConfig;
use crate::disk::ContentDisk;
use crate::meta_disk::MetaDisk;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use stretchfs_core::authority::Authority;
use stretchfs_core::content::ContentMeta;
use stretchfs_core::hash::ContentHash;
use stretchfs_core::{Input, Node, NodeId, Time};
use stretchfs_transport_sim::{HostId, SimNet};

pub struct Host {
    pub id: HostId,
    pub addr: SocketAddr,
    pub clock: SimClock,
    pub node: Option<Node>,
    /// Every record the node persisted (metadata writes are synchronous).
    pub disk: MetaDisk,
    /// Content files (stores).
    pub content: ContentDisk,
    /// Uploads a prism is holding while it places them.
    pub spool: BTreeMap<ContentHash, (Arc<Vec<u8>>, ContentMeta)>,
    /// Gone for good: never restarts.
    pub lost: bool,
    pub paused: bool,
    /// Inputs (messages, driver answers) that arrived while paused,
    /// delivered at resume.
    pub deferred: Vec<Input>,
    /// Global time of the wake-up currently scheduled, if any.
    pub wake: Option<Time>,
    /// Starts so far (first start included).
    pub starts: u64,
    /// Address changes so far (picks the next port).
    pub moves: u16,
    /// Bumped on every crash, so checks scheduled for one crash can tell
    /// whether the host restarted since.
    pub crash_id: u64,
    pub first_started: Option<Time>,
    /// Last crash, restart, pause or resume.
    pub last_impaired: Time,
    /// Last change to any network link touching this host.
    pub net_changed: Time,
}

impl Host {
    pub fn is_up(&self) -> bool {
        self.node.is_some() && !self.paused
    }

    /// Since when nothing about this host (process or links) changed.
    pub fn stable_since(&self) -> Time {
        self.last_impaired.max(self.net_changed)
    }
}

pub fn host_addr(host: HostId, moves: u16) -> SocketAddr {
    let h = host as u32;
    SocketAddr::from(([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 7000 + moves))
}

pub struct World {
    pub cfg: SimConfig,
    pub now: Time,
    pub hosts: Vec<Host>,
    pub net: SimNet,
    pub node_hosts: BTreeMap<NodeId, HostId>,
    pub authority_addr: SocketAddr,
    /// When the authority appended each entry of its current log.
    pub appended_at: BTreeMap<u64, Time>,
}

impl World {
    pub fn new(cfg: SimConfig) -> World {
        let hosts = cfg
            .hosts
            .iter()
            .enumerate()
            .map(|(i, spec)| Host {
                id: i,
                addr: host_addr(i, 0),
                clock: spec.clock,
                node: None,
                disk: MetaDisk::default(),
                content: ContentDisk::default(),
                spool: BTreeMap::new(),
                lost: false,
                paused: false,
                deferred: Vec::new(),
                wake: None,
                starts: 0,
                moves: 0,
                crash_id: 0,
                first_started: None,
                last_impaired: Time::ZERO,
                net_changed: Time::ZERO,
            })
            .collect();
        let net = SimNet::new(cfg.seed, cfg.net.clone());
        World {
            authority_addr: host_addr(0, 0),
            cfg,
            now: Time::ZERO,
            hosts,
            net,
            node_hosts: BTreeMap::new(),
            appended_at: BTreeMap::new(),
        }
    }

    pub fn host_of(&self, node: NodeId) -> Option<HostId> {
        self.node_hosts.get(&node).copied()
    }

    /// The authority's state machine, if the authority is running.
    pub fn authority(&self) -> Option<&Authority> {
        self.hosts[0].node.as_ref()?.authority()
    }

    /// No partition or clog between `a` and `b` in either direction.
    pub fn clean(&self, a: HostId, b: HostId) -> bool {
        a == b || (self.net.is_clean(self.now, a, b) && self.net.is_clean(self.now, b, a))
    }

    pub fn mark_net_changed(&mut self, hosts: impl IntoIterator<Item = HostId>) {
        let now = self.now;
        for h in hosts {
            if let Some(host) = self.hosts.get_mut(h) {
                host.net_changed = now;
            }
        }
    }

    pub fn mark_all_net_changed(&mut self) {
        let all: Vec<HostId> = (0..self.hosts.len()).collect();
        self.mark_net_changed(all);
    }
}
