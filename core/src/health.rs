//! "May I contact X now?" — the published verdicts plus this node's own
//! suspicion between a local failure and the authority's verdict.

use crate::ids::NodeId;
use crate::ping_net::PingNet;
use crate::state::ClusterState;

/// A read-only view over a node's health knowledge.
#[derive(Clone, Copy)]
pub struct HealthView<'a> {
    pub(crate) state: &'a ClusterState,
    pub(crate) ping: &'a PingNet,
}

impl HealthView<'_> {
    /// The authority has published `id` as down.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.state.is_down(id)
    }

    /// This node's own probes failed to reach `id` recently and have not
    /// reached it since.
    pub fn is_suspect(&self, id: NodeId) -> bool {
        self.ping.is_suspect(id)
    }

    /// Registered, not published down, not locally suspected.
    pub fn may_contact(&self, id: NodeId) -> bool {
        self.state.registry.contains(id) && !self.is_down(id) && !self.is_suspect(id)
    }

    /// Every registered node that may be contacted now, in id order.
    pub fn contactable(&self) -> Vec<NodeId> {
        self.state
            .registry
            .iter()
            .map(|n| n.id)
            .filter(|id| self.may_contact(*id))
            .collect()
    }
}
