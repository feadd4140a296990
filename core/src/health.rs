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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InjectedBugs, PingConfig};
    use crate::feed::Change;
    use crate::ids::{NodeInfo, Roles, Zone};
    use crate::rng::SeededRng;

    #[test]
    fn a_node_may_be_contacted_when_registered_and_not_published_down() {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state.apply(&Change::NodeUpserted(NodeInfo {
                id: NodeId(id),
                addr: format!("10.0.0.{id}:7000").parse().unwrap(),
                roles: Roles::STORE,
                zone: Zone::new("z"),
                weight: 100,
                incarnation: 1,
            }));
        }
        state.apply(&Change::Health {
            node: NodeId(2),
            down: true,
        });
        let ping = PingNet::new(
            PingConfig::default(),
            InjectedBugs::default(),
            1,
            &mut SeededRng::new(1),
        );
        let h = HealthView {
            state: &state,
            ping: &ping,
        };
        assert!(h.is_down(NodeId(2)) && !h.is_down(NodeId(1)));
        assert!(!h.is_suspect(NodeId(1)));
        assert!(h.may_contact(NodeId(1)));
        assert!(!h.may_contact(NodeId(2)), "down");
        assert!(!h.may_contact(NodeId(9)), "not registered");
        assert_eq!(h.contactable(), [NodeId(1), NodeId(3)]);
    }
}
