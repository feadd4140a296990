//! What `GET /v1/status` and `stretchfs status` show: this node, and the
//! cluster as its replica of the feed sees it.

use crate::config::FileConfig;
use serde::{Deserialize, Serialize};
use stretchfs_core::{Node, NodeId, Roles};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub addr: String,
    pub roles: Vec<String>,
    pub zone: String,
    pub cluster: Option<String>,
    pub joined: bool,
    pub ready: bool,
    /// The feed sequence this node's replica has applied.
    pub feed_seq: u64,
    pub nodes: Vec<PeerStatus>,
    pub content: ContentStatus,
    pub purchases: usize,
    /// Authority only: its feed head and repair work under way.
    pub authority: Option<AuthorityStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    pub addr: String,
    pub roles: Vec<String>,
    pub zone: String,
    pub down: bool,
    /// Down because it left gracefully (not by votes).
    pub left: bool,
    pub draining: bool,
    /// Content copies this node holds (stores).
    pub copies: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentStatus {
    pub items: usize,
    pub bytes: u64,
    /// Items with fewer than R copies on stores not marked down: the repair
    /// backlog.
    pub under_replicated: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorityStatus {
    pub head: u64,
    pub recovering: bool,
    pub repair_jobs: usize,
}

pub fn role_names(r: Roles) -> Vec<String> {
    let mut v = Vec::new();
    for (on, name) in [
        (r.authority, "authority"),
        (r.store, "store"),
        (r.prism, "prism"),
    ] {
        if on {
            v.push(name.to_string());
        }
    }
    v
}

impl NodeStatus {
    pub fn of(node: &Node, cfg: &FileConfig) -> NodeStatus {
        // The authority's own state where this node is the authority: its
        // replica may keep membership only.
        let state = node
            .authority()
            .map_or_else(|| node.replica().state(), |a| a.state());
        let info = node.info();
        // Copies per store in one pass over the inventory (it has no
        // per-store index: one scan per node would be nodes × records).
        let mut copies: std::collections::BTreeMap<NodeId, usize> = Default::default();
        for rec in state.inventory.values() {
            for s in &rec.stores {
                *copies.entry(*s).or_default() += 1;
            }
        }
        let nodes = state
            .registry
            .iter()
            .map(|n| PeerStatus {
                id: n.id.to_string(),
                addr: n.addr.to_string(),
                roles: role_names(n.roles),
                zone: n.zone.to_string(),
                down: state.is_down(n.id),
                left: state.has_left(n.id),
                draining: state.draining.contains(&n.id),
                copies: copies.get(&n.id).copied().unwrap_or(0),
            })
            .collect();
        let replicas = cfg.replicas;
        let content = ContentStatus {
            items: state.inventory.len(),
            bytes: state.inventory.values().map(|rec| rec.meta.size).sum(),
            under_replicated: state.under_replicated(replicas),
        };
        NodeStatus {
            node: info.id.to_string(),
            addr: info.addr.to_string(),
            roles: role_names(info.roles),
            zone: info.zone.to_string(),
            cluster: node.cluster().map(|c| c.to_string()),
            joined: node.is_joined(),
            ready: node.is_ready(),
            feed_seq: node.replica().seq(),
            nodes,
            content,
            purchases: state.purchases.len(),
            authority: node.authority().map(|a| AuthorityStatus {
                head: a.head(),
                recovering: a.is_recovering(),
                repair_jobs: a.repair_jobs(),
            }),
        }
    }
}
